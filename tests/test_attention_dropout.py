"""Attention dropout (pyaiml.ops and the torch bridge) and the bridge's float16/bfloat16 fallback.

Oracles: float64 torch autograd of the explicit formula softmax(q k^T * scale + mask) with
the very keep mask pyaiml draws (``dropout_keep_mask``), on every backend of the ``gemm`` op
the dropout path runs on; torch.autograd.gradcheck through the bridge (float64, a fixed
generator so every evaluation draws the same mask); a statistical check that the mean over
many seeds approaches the no-dropout output (bound: 6 standard errors, from the exact
per-element variance sum_j P_ij^2 v_j^2 p / (1 - p)); torch.library.opcheck for the
registered ops. dropout_p = 0 is compared bitwise with the op without dropout.
Fallback: torch's own functions and modules on the same half-precision inputs, bitwise.
Tolerance for float32 against the float64 oracle: 2e-5 * (1 + max|ref|) absolute (sums of
O(L) products of O(1) terms, measured errors ~3e-7).
"""
import math
import warnings

import numpy as np
import pytest
from helpers import backends_for

from pyaiml import ops
from pyaiml.ops.attention import dropout_keep_mask

torch = pytest.importorskip("torch")

import pyaiml.torch as pt
from pyaiml.torch import nn as pnn
from pyaiml.torch import ops as pto

GEMM_BACKENDS = backends_for("gemm")


def _inputs(r, lead, klead, Lq, Lk, D, Dv, dtype=np.float32):
    q = r.standard_normal(lead + (Lq, D)).astype(dtype)
    k = r.standard_normal(klead + (Lk, D)).astype(dtype)
    v = r.standard_normal(klead + (Lk, Dv)).astype(dtype)
    g = r.standard_normal(lead + (Lq, Dv)).astype(dtype)
    return q, k, v, g


def _reference(q, k, v, g, mask, causal, scale, keep, p):
    """float64 torch autograd of the explicit dropout formula: (out, dq, dk, dv)."""
    tq, tk, tv = (torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (q, k, v))
    G = q.shape[-3] // k.shape[-3] if q.ndim >= 3 else 1
    kk, vv = (t.repeat_interleave(G, dim=-3) if G > 1 else t for t in (tk, tv))
    s = tq @ kk.transpose(-1, -2) * scale
    Lq, Lk = q.shape[-2], k.shape[-2]
    vis = torch.ones(s.shape, dtype=torch.bool)
    if mask is not None:
        if mask.dtype == np.bool_:
            vis = vis & torch.tensor(mask)
        else:
            m = torch.tensor(mask, dtype=torch.float64)
            vis = vis & (m != -math.inf)
            s = s + m.masked_fill(m == -math.inf, 0.0)
    if causal:
        vis = vis & torch.ones(Lq, Lk, dtype=torch.bool).tril()
    s = s.masked_fill(~vis, -math.inf)
    P = torch.softmax(s, -1).nan_to_num(0.0)  # a row with no visible key: zeros
    c = 1.0 / (1.0 - p) if p < 1 else 0.0
    o = (P * torch.tensor(keep) * c) @ vv
    o.backward(torch.tensor(g, dtype=torch.float64))
    return o.detach().numpy(), tq.grad.numpy(), tk.grad.numpy(), tv.grad.numpy()


def _close(got, want, what):
    atol = 2e-5 * (1.0 + float(np.abs(want).max()))
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0, atol=atol, err_msg=what)


# --------------------------------------------------------------------------- pyaiml.ops

def test_keep_mask_is_a_function_of_seed_shape_and_p():
    a = dropout_keep_mask((3, 4, 50, 70), 0.3, 123)
    assert a.dtype == np.bool_ and a.shape == (3, 4, 50, 70)
    np.testing.assert_array_equal(a, dropout_keep_mask((3, 4, 50, 70), 0.3, 123))
    assert (a != dropout_keep_mask((3, 4, 50, 70), 0.3, 124)).any()
    # keep rate 0.7 over 42000 draws: standard error 0.0022, bound 5 of them
    assert abs(a.mean() - 0.7) < 0.011
    assert dropout_keep_mask((5, 6), 0.0, 1).all() and not dropout_keep_mask((5, 6), 1.0, 1).any()
    # the seed's whole 64-bit range is accepted
    assert dropout_keep_mask((4,), 0.5, 2**64 - 1).shape == (4,)


CASES = [
    # lead, klead, Lq, Lk, D, Dv, mask kind, causal
    ((2, 3), (2, 3), 5, 7, 8, 3, None, False),
    ((2, 4), (2, 2), 6, 6, 4, 5, "bool", True),       # GQA, mask and causal together
    ((1, 2), (1, 2), 7, 9, 3, 3, "float", False),
    ((3,), (3,), 4, 33, 16, 8, "pad", False),          # 3-D, key padding broadcast over queries
    ((1, 1), (1, 1), 1, 1, 1, 1, None, True),
]


def _mask(kind, lead, Lq, Lk, r):
    if kind is None:
        return None
    if kind == "bool":
        m = r.random((lead[0], 1, Lq, Lk)) > 0.4
        m[..., 0, :] = False  # query 0 sees nothing: a zero row
        return m
    if kind == "float":
        return np.where(r.random((Lq, Lk)) > 0.3, r.standard_normal((Lq, Lk)), -np.inf).astype(np.float32)
    m = r.random((lead[0], 1, Lk)) > 0.3
    m[..., 0] = True
    return m


@pytest.mark.parametrize("backend", GEMM_BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
@pytest.mark.parametrize("p", [0.25, 0.7])
def test_dropout_matches_reference_with_same_mask(backend, case, p, monkeypatch):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    lead, klead, Lq, Lk, D, Dv, kind, causal = case
    r = np.random.default_rng(7)
    q, k, v, g = _inputs(r, lead, klead, Lq, Lk, D, Dv)
    mask = _mask(kind, lead, Lq, Lk, r)
    gqa = lead != klead
    seed = 2024
    out, lse = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=gqa,
                                                dropout_p=p, dropout_seed=seed, return_lse=True)
    keep = dropout_keep_mask(lead + (Lq, Lk), p, seed)
    scale = 1 / math.sqrt(D)
    want = _reference(q, k, v, g, mask, causal, scale, keep, p)
    assert out.dtype == np.float32 and out.shape == lead + (Lq, Dv)
    _close(out, want[0], "out")
    # lse is that of the probabilities before dropout: the flash path's
    _, lse0 = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=gqa,
                                               return_lse=True)
    np.testing.assert_allclose(lse, lse0, rtol=1e-5, atol=1e-5)
    grads = ops.scaled_dot_product_attention_backward(g, q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=gqa,
                                                      dropout_p=p, dropout_seed=seed)
    for name, got, w in zip(("dq", "dk", "dv"), grads, want[1:]):
        assert got.shape == w.shape
        _close(got, w, name)


def test_dropout_float64_and_empty_rows():
    r = np.random.default_rng(3)
    q, k, v, g = _inputs(r, (2, 2), (2, 2), 4, 5, 3, 2, np.float64)
    mask = np.ones((4, 5), bool)
    mask[1] = False
    out = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.5, dropout_seed=9)
    want = _reference(q, k, v, g, mask, False, 1 / math.sqrt(3), dropout_keep_mask((2, 2, 4, 5), 0.5, 9), 0.5)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, want[0], rtol=1e-12, atol=1e-12)
    assert not out[:, :, 1].any()
    dq, dk, dv = ops.scaled_dot_product_attention_backward(g, q, k, v, attn_mask=mask, dropout_p=0.5, dropout_seed=9)
    np.testing.assert_allclose(dk, want[2], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dv, want[3], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dq, want[1], rtol=1e-10, atol=1e-12)
    assert not dq[:, :, 1].any()
    # p = 1 drops everything
    assert not ops.scaled_dot_product_attention(q, k, v, dropout_p=1.0, dropout_seed=1).any()


def test_dropout_zero_is_the_plain_op_bitwise():
    r = np.random.default_rng(4)
    q, k, v, g = _inputs(r, (2, 3), (2, 3), 9, 11, 8, 8)
    a = ops.scaled_dot_product_attention(q, k, v, is_causal=True)
    b = ops.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=0.0, dropout_seed=5)
    np.testing.assert_array_equal(a, b)
    ga = ops.scaled_dot_product_attention_backward(g, q, k, v, is_causal=True)
    gb = ops.scaled_dot_product_attention_backward(g, q, k, v, is_causal=True, dropout_p=0.0)
    for x, y in zip(ga, gb):
        np.testing.assert_array_equal(x, y)


def test_mean_over_seeds_approaches_no_dropout_output():
    r = np.random.default_rng(5)
    q, k, v, _ = _inputs(r, (1, 2), (1, 2), 4, 6, 3, 3, np.float64)
    p, n = 0.5, 3000
    ref = ops.scaled_dot_product_attention(q, k, v)
    mean = sum(ops.scaled_dot_product_attention(q, k, v, dropout_p=p, dropout_seed=s) for s in range(n)) / n
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(3)
    P = np.exp(s - s.max(-1, keepdims=True))
    P /= P.sum(-1, keepdims=True)
    var = (P[..., None] ** 2 * v[..., None, :, :] ** 2).sum(-2) * p / (1 - p)
    se = np.sqrt(var / n)
    assert np.all(np.abs(mean - ref) < 6 * se + 1e-12), np.abs(mean - ref) / se
    # without the 1 / (1 - p) scaling the mean would sit at (1 - p) * ref: far outside
    assert np.abs((1 - p) * ref - ref).max() > 20 * se.max()


def test_ops_dropout_errors():
    q = np.zeros((1, 2, 3, 4), np.float32)
    sdpa = ops.scaled_dot_product_attention
    with pytest.raises(ValueError, match=r"dropout_p=0.1 needs dropout_seed .*Received dropout_seed=None"):
        sdpa(q, q, q, dropout_p=0.1)
    with pytest.raises(ValueError, match=r"dropout_p must lie in \[0, 1\]. Received 1.5"):
        sdpa(q, q, q, dropout_p=1.5, dropout_seed=1)
    with pytest.raises(ValueError, match=r"dropout_p must lie in \[0, 1\]. Received nan"):
        sdpa(q, q, q, dropout_p=float("nan"), dropout_seed=1)
    with pytest.raises(TypeError, match="dropout_p must be a real number in .* Received str"):
        sdpa(q, q, q, dropout_p="0.1", dropout_seed=1)
    with pytest.raises(TypeError, match="dropout_seed must be an int .* Received float"):
        sdpa(q, q, q, dropout_p=0.1, dropout_seed=1.5)
    with pytest.raises(ValueError, match=r"dropout_seed must lie in \[0, 2\*\*64\). Received -1"):
        sdpa(q, q, q, dropout_p=0.1, dropout_seed=-1)
    with pytest.raises(ValueError, match="scaled_dot_product_attention_backward: dropout_p=0.2 needs dropout_seed"):
        ops.scaled_dot_product_attention_backward(q, q, q, q, dropout_p=0.2)


# --------------------------------------------------------------------------- torch bridge

def _t(*shape, dtype=torch.float64):
    return torch.randn(*shape, dtype=dtype, requires_grad=True)


def test_bridge_seeding_follows_torch_generator():
    torch.manual_seed(0)
    q, k, v = _t(2, 3, 5, 4), _t(2, 3, 6, 4), _t(2, 3, 6, 2)
    torch.manual_seed(11)
    a = pt.scaled_dot_product_attention(q, k, v, dropout_p=0.3)
    b = pt.scaled_dot_product_attention(q, k, v, dropout_p=0.3)
    torch.manual_seed(11)
    a2 = pt.scaled_dot_product_attention(q, k, v, dropout_p=0.3)
    b2 = pt.scaled_dot_product_attention(q, k, v, dropout_p=0.3)
    assert torch.equal(a, a2) and torch.equal(b, b2)
    assert not torch.equal(a, b)  # each call draws a new seed
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    state = torch.get_rng_state()
    c1 = pt.scaled_dot_product_attention(q, k, v, dropout_p=0.3, generator=g1)
    c2 = pt.scaled_dot_product_attention(q, k, v, dropout_p=0.3, generator=g2)
    assert torch.equal(c1, c2) and torch.equal(state, torch.get_rng_state())  # the default generator untouched
    # dropout_p = 0: the op without dropout, bitwise, and no seed drawn
    state = torch.get_rng_state()
    z = pt.scaled_dot_product_attention(q, k, v, dropout_p=0.0)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(z, torch.ops.pyaiml.sdpa(q, k, v, None, False, None, False)[0])


def test_bridge_forward_backward_use_the_same_mask():
    """The bridge's result and gradients equal the explicit formula with the mask of the
    seed the call drew (replayed from the same generator state)."""
    torch.manual_seed(1)
    q, k, v = _t(2, 4, 5, 3), _t(2, 2, 7, 3), _t(2, 2, 7, 2)
    m = torch.rand(2, 1, 5, 7) > 0.3
    g = torch.randn(2, 4, 5, 2, dtype=torch.float64)
    gen = torch.Generator().manual_seed(77)
    out = pt.scaled_dot_product_attention(q, k, v, attn_mask=m, dropout_p=0.4, is_causal=True, enable_gqa=True,
                                          generator=gen)
    out.backward(g)
    seed = pto._dropout_seed(torch.Generator().manual_seed(77))
    keep = dropout_keep_mask((2, 4, 5, 7), 0.4, seed)
    want = _reference(q.detach().numpy(), k.detach().numpy(), v.detach().numpy(), g.numpy(), m.numpy(), True,
                      1 / math.sqrt(3), keep, 0.4)
    np.testing.assert_allclose(out.detach().numpy(), want[0], rtol=1e-12, atol=1e-12)
    for t, w in zip((q, k, v), want[1:]):
        np.testing.assert_allclose(t.grad.numpy(), w, rtol=1e-10, atol=1e-12)


def test_bridge_gradcheck_with_dropout():
    torch.manual_seed(2)
    q, k, v = _t(1, 2, 4, 3), _t(1, 2, 5, 3), _t(1, 2, 5, 2)
    mask = torch.randn(4, 5, dtype=torch.float64)

    def f(q, k, v):
        return pt.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.35,
                                               generator=torch.Generator().manual_seed(8))

    assert torch.autograd.gradcheck(f, (q, k, v))


def test_registered_dropout_ops_pass_opcheck():
    torch.manual_seed(3)
    q, k, v = _t(1, 2, 4, 3), _t(1, 2, 5, 3), _t(1, 2, 5, 2)
    args = (q, k, v, torch.rand(4, 5) > 0.2, False, None, False, 0.2, 12345)
    torch.library.opcheck(torch.ops.pyaiml.sdpa_dropout, args)
    g = torch.randn(1, 2, 4, 2, dtype=torch.float64)
    torch.library.opcheck(torch.ops.pyaiml.sdpa_dropout_backward, (g, *[a.detach() if isinstance(a, torch.Tensor)
                                                                          else a for a in args]))


def test_compiled_dropout_draws_fresh_seeds_like_eager():
    """torch.compile (aot_eager, fullgraph) keeps the seed a per-call draw from torch's
    generator: successive calls differ, and torch.manual_seed gives eager's result."""
    torch._dynamo.reset()
    q = torch.randn(1, 2, 4, 8)

    def f(q):
        return pt.scaled_dot_product_attention(q, q, q, dropout_p=0.3)

    cf = torch.compile(f, backend="aot_eager", fullgraph=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = cf(q), cf(q)
        torch.manual_seed(21)
        c = cf(q)
    assert not torch.equal(a, b)
    torch.manual_seed(21)
    assert torch.equal(c, f(q))


def test_bridge_dropout_errors():
    x = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match=r"dropout_p must lie in \[0, 1\]. Received -0.1"):
        pt.scaled_dot_product_attention(x, x, x, dropout_p=-0.1)
    with pytest.raises(TypeError, match="dropout_p must be a float in .* Received NoneType"):
        pt.scaled_dot_product_attention(x, x, x, dropout_p=None)
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None. Received int"):
        pt.scaled_dot_product_attention(x, x, x, dropout_p=0.1, generator=3)


def test_multihead_attention_trains_with_dropout():
    """pyaiml.torch.nn.MultiheadAttention in training with dropout > 0 still runs torch's
    implementation (it needs weights only with need_weights); the functional op is the
    path for dropout."""
    torch.manual_seed(4)
    mha = pnn.MultiheadAttention(8, 2, dropout=0.2, batch_first=True).train()
    x = torch.randn(2, 5, 8)
    y, _ = mha(x, x, x, need_weights=False)
    assert y.shape == (2, 5, 8)


# --------------------------------------------------------------------------- half-precision fallback

@pytest.fixture
def fresh_warnings():
    saved = set(pto._FALLBACK_WARNED)
    pto._FALLBACK_WARNED.clear()
    yield
    pto._FALLBACK_WARNED.clear()
    pto._FALLBACK_WARNED.update(saved)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_torch_with_one_warning(dtype, fresh_warnings):
    torch.manual_seed(5)
    F = torch.nn.functional
    x2, w2 = torch.randn(2, 3, 9, 9, dtype=dtype), torch.randn(4, 3, 3, 3, dtype=dtype)
    x1, w1 = torch.randn(2, 3, 11, dtype=dtype), torch.randn(4, 3, 3, dtype=dtype)
    q = torch.randn(2, 2, 5, 8, dtype=dtype)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        pairs = [
            (pt.conv2d(x2, w2, None, 2, 1), F.conv2d(x2, w2, None, 2, 1)),
            (pt.conv1d(x1, w1, padding="same"), F.conv1d(x1, w1, padding="same")),
            (pt.max_pool2d(x2, 2), F.max_pool2d(x2, 2)),
            (pt.max_pool1d(x1, 3, 2, 1, return_indices=True)[1], F.max_pool1d(x1, 3, 2, 1, return_indices=True)[1]),
            (pt.scaled_dot_product_attention(q, q, q, is_causal=True), F.scaled_dot_product_attention(q, q, q,
                                                                                                     is_causal=True)),
        ]
    for got, want in pairs:
        assert got.dtype == want.dtype and torch.equal(got, want)
    fallback = [w for w in rec if issubclass(w.category, pto.DtypeFallbackWarning)]
    assert len(fallback) == 1, [str(w.message) for w in rec]
    assert str(dtype) in str(fallback[0].message) and "pyaiml.torch.conv2d" in str(fallback[0].message)


def test_converted_half_model_runs_and_trains(fresh_warnings):
    """A model converted to pyaiml layers and then cast to bfloat16 runs (torch's kernels, one
    warning) and equals the unconverted bfloat16 model, forward and backward."""
    torch.manual_seed(6)
    tnn = torch.nn

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv = tnn.Conv2d(3, 8, 3, padding=1)
            self.pool = tnn.MaxPool2d(2)
            self.att = tnn.MultiheadAttention(8, 2, batch_first=True)
            self.out = tnn.Linear(8, 3)

        def forward(self, x):
            h = self.pool(torch.relu(self.conv(x))).flatten(2).transpose(1, 2)
            a, _ = self.att(h, h, h, need_weights=False)
            return self.out(a.mean(1))

    ref = Net().to(torch.bfloat16)
    mine = Net()
    mine.load_state_dict(ref.state_dict())
    pnn.convert(mine).to(torch.bfloat16)
    assert type(mine.conv) is pnn.Conv2d and type(mine.att) is pnn.MultiheadAttention
    x = torch.randn(2, 3, 8, 8, dtype=torch.bfloat16)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        y = mine(x)
        y.float().square().sum().backward()
    ry = ref(x)
    ry.float().square().sum().backward()
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, ry, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(mine.conv.weight.grad, ref.conv.weight.grad, rtol=5e-2, atol=5e-2)
    assert sum(issubclass(w.category, pto.DtypeFallbackWarning) for w in rec) == 1
    # float32 inputs still run pyaiml's kernels
    mine.float()
    calls = []
    orig = pto.K.conv2d
    pto.K.conv2d = lambda *a, **kw: calls.append(1) or orig(*a, **kw)
    try:
        mine(x.float())
    finally:
        pto.K.conv2d = orig
    assert calls
