"""pyaiml.torch.nn drop-in modules and torch.compile: state_dict swaps, MultiheadAttention
parity, the mission CNN training to torch's loss curve, fullgraph compilation.

Oracle: the same model built from torch.nn layers, from the same initialisation. The
inductor compile test is marked slow (it builds C++); the default run compiles with the
aot_eager backend, which traces forward and backward through the fake kernels. Skips
cleanly without torch.
"""
import copy

import pytest

torch = pytest.importorskip("torch")

import torch.nn as tnn  # noqa: E402

import pyaiml.torch as pt  # noqa: E402
from pyaiml.torch import nn as pnn  # noqa: E402


def _cnn(conv=tnn.Conv2d, pool=tnn.MaxPool2d):
    """The mission's CNN for 3x32x32 images."""
    return tnn.Sequential(conv(3, 32, 3), tnn.ReLU(), pool(2), conv(32, 64, 3), tnn.ReLU(), pool(2), tnn.Flatten(),
                          tnn.Linear(2304, 10))


def test_swap_layers_loads_old_checkpoint():
    torch.manual_seed(0)
    ref = _cnn()
    sd = ref.state_dict()
    mine = _cnn(pnn.Conv2d, pnn.MaxPool2d)
    assert list(mine.state_dict().keys()) == list(sd.keys())
    mine.load_state_dict(sd)
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(mine(x), ref(x), rtol=1e-4, atol=1e-5)


def test_conv_modules_options_and_unbatched():
    torch.manual_seed(1)
    for kw in [dict(padding="same", padding_mode="reflect"), dict(stride=2, padding=1, groups=2, bias=False),
               dict(padding=1, padding_mode="circular", dilation=2)]:
        ref = tnn.Conv2d(4, 6, 3, **kw)
        mine = pnn.Conv2d(4, 6, 3, **kw)
        mine.load_state_dict(ref.state_dict())
        x = torch.randn(2, 4, 9, 8)
        torch.testing.assert_close(mine(x), ref(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(mine(x[0]), ref(x[0]), rtol=1e-4, atol=1e-5)
    ref1 = tnn.Conv1d(3, 5, 4, stride=2, padding=2)
    mine1 = pnn.Conv1d(3, 5, 4, stride=2, padding=2)
    mine1.load_state_dict(ref1.state_dict())
    x1 = torch.randn(2, 3, 17)
    torch.testing.assert_close(mine1(x1), ref1(x1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pnn.MaxPool1d(3, 2, 1)(x1), tnn.MaxPool1d(3, 2, 1)(x1))
    torch.testing.assert_close(pnn.MaxPool2d(2)(x1), tnn.MaxPool2d(2)(x1))  # unbatched (C, H, W)
    for a, r in zip(pnn.MaxPool2d(3, 2, 1, return_indices=True)(x), tnn.MaxPool2d(3, 2, 1, return_indices=True)(x)):
        torch.testing.assert_close(a, r)
    assert repr(pnn.Conv2d(3, 4, 3)) == "Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1))"
    with pytest.raises(NotImplementedError, match="ceil_mode"):
        pnn.MaxPool2d(2, ceil_mode=True)


def test_convert_swaps_in_place():
    torch.manual_seed(2)
    m = _cnn()
    m.add_module("odd", tnn.MaxPool2d(2, ceil_mode=True))
    x = torch.randn(2, 3, 32, 32)
    y = m[:-1](x)
    pnn.convert(m)
    assert type(m[0]) is pnn.Conv2d and type(m[2]) is pnn.MaxPool2d and type(m.odd) is tnn.MaxPool2d
    torch.testing.assert_close(m[:-1](x), y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("masks", ["none", "bool", "float+padding", "causal"])
def test_multihead_attention_matches_torch(batch_first, masks):
    torch.manual_seed(3)
    E, H, L, S, B = 16, 4, 5, 7, 3
    ref = tnn.MultiheadAttention(E, H, batch_first=batch_first)
    mine = pnn.MultiheadAttention(E, H, batch_first=batch_first)
    assert list(mine.state_dict()) == list(ref.state_dict())
    assert {"in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"} <= set(mine.state_dict())
    mine.load_state_dict(ref.state_dict())
    shp = (lambda n: (B, n, E)) if batch_first else (lambda n: (n, B, E))
    q = torch.randn(shp(L), requires_grad=True)
    k = torch.randn(shp(S), requires_grad=True)
    v = torch.randn(shp(S), requires_grad=True)
    kw = {}
    if masks == "bool":
        am = torch.rand(L, S) > 0.7
        am[:, 0] = False
        kw = dict(attn_mask=am)
    elif masks == "float+padding":
        kp = torch.zeros(B, S, dtype=torch.bool)
        kp[:, -2:] = True
        kw = dict(attn_mask=torch.randn(B * H, L, S), key_padding_mask=kp)
    elif masks == "causal":
        q, k, v = q, q, q  # self-attention, one fused in-projection
        kw = dict(attn_mask=tnn.Transformer.generate_square_subsequent_mask(L), is_causal=True)
    calls = []
    orig = pt.ops.scaled_dot_product_attention
    pt.ops.scaled_dot_product_attention = lambda *a, **k_: calls.append(1) or orig(*a, **k_)
    try:
        y, w = mine(q, k, v, need_weights=False, **kw)
    finally:
        pt.ops.scaled_dot_product_attention = orig
    assert calls and w is None
    y_ref, _ = ref(q, k, v, need_weights=False, **kw)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    g = torch.randn_like(y)
    gs = torch.autograd.grad(y, [q, *mine.parameters()], g)
    gs_ref = torch.autograd.grad(y_ref, [q, *ref.parameters()], g)
    for a, r in zip(gs, gs_ref):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5)
    # need_weights=True falls back to torch's path and returns the weights.
    y2, w2 = mine(q, k, v, **kw)
    _, w_ref = ref(q, k, v, **kw)
    torch.testing.assert_close(w2, w_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y2, y_ref, rtol=1e-4, atol=1e-5)


def _train(model, xs, ys, steps, channels_last=False):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for i in range(steps):
        x = xs[i]
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        loss = tnn.functional.cross_entropy(model(x), ys[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("channels_last", [False, True])
def test_mission_cnn_trains_like_torch(channels_last):
    torch.manual_seed(4)
    ref = _cnn()
    mine = pnn.convert(copy.deepcopy(ref))
    if channels_last:
        ref, mine = ref.to(memory_format=torch.channels_last), mine.to(memory_format=torch.channels_last)
    steps, N = 6, 8
    xs = torch.randn(steps, N, 3, 32, 32)
    ys = torch.randint(0, 10, (steps, N))
    l_ref = _train(ref, xs, ys, steps, channels_last)
    l_mine = _train(mine, xs, ys, steps, channels_last)
    # float32 noise: different summation orders give ~1e-6 relative differences per step;
    # Adam amplifies them slightly over the steps. Measured max relative difference 2e-7
    # (C++ conv/pool kernels of pyaiml.ops, NCHW and channels_last).
    torch.testing.assert_close(torch.tensor(l_mine), torch.tensor(l_ref), rtol=1e-4, atol=1e-5)
    assert l_ref[-1] < l_ref[0]
    for a, b in zip(mine.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


class _AllOps(tnn.Module):
    """A small model using every pyaiml op, for torch.compile."""

    def __init__(self):
        super().__init__()
        self.c2 = pnn.Conv2d(3, 8, 3, padding=1)
        self.p2 = pnn.MaxPool2d(2)
        self.c1 = pnn.Conv1d(8, 8, 3, padding="same")
        self.p1 = pnn.MaxPool1d(2)
        self.att = pnn.MultiheadAttention(8, 2, batch_first=True)
        self.head = tnn.Linear(8, 4)
        self.log_A = tnn.Parameter(torch.randn(4, 4))
        self.log_pi = tnn.Parameter(torch.randn(4))

    def forward(self, x):
        h = self.p2(torch.relu(self.c2(x)))            # (N, 8, 4, 4)
        h = h.flatten(2)                                # (N, 8, 16)
        h = self.p1(torch.relu(self.c1(h)))             # (N, 8, 8)
        h = h.transpose(1, 2)                           # (N, 8 steps, 8 features)
        h, _ = self.att(h, h, h, need_weights=False)
        h = h + pt.scaled_dot_product_attention(h, h, h, is_causal=True)
        log_em = torch.log_softmax(self.head(h[0]), -1)  # (T=8, K=4)
        ll, post = pt.hmm_forward_backward(torch.log_softmax(self.log_pi, 0), torch.log_softmax(self.log_A, 1),
                                           log_em)
        return h.square().mean() - ll + post.sum() * 0


def _compile_matches_eager(backend):
    torch._dynamo.reset()
    torch.manual_seed(5)
    m = _AllOps()
    x = torch.randn(2, 3, 8, 8)
    y = m(x)
    g = torch.autograd.grad(y, list(m.parameters()))
    cm = torch.compile(m, fullgraph=True, backend=backend)
    yc = cm(x)
    gc = torch.autograd.grad(yc, list(m.parameters()))
    torch.testing.assert_close(yc, y, rtol=1e-4, atol=1e-5)
    for a, b in zip(gc, g):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # channels_last input through the compiled conv/pool: strides from the fake kernels.
    xcl = x.to(memory_format=torch.channels_last)
    torch.testing.assert_close(cm(xcl), m(xcl), rtol=1e-4, atol=1e-5)


def test_compile_fullgraph_aot_eager():
    _compile_matches_eager("aot_eager")


@pytest.mark.slow
def test_compile_fullgraph_inductor():
    _compile_matches_eager("inductor")
