"""Transformer layers: gradients by finite differences (float64) and against torch,
Keras lifecycle (config round trip, training through Sequential.fit), sinusoids."""
import numpy as np
import pytest

from pyaiml.autograd import GradientTape
from pyaiml.keras import layers as kl
from pyaiml.keras import losses, optimizers
from pyaiml.keras.models import Sequential
from pyaiml.keras.utils import set_random_seed
from pyaiml.seq import PositionalEmbedding, TransformerDecoderBlock, TransformerEncoderBlock
from pyaiml.seq.layers import sinusoidal_table


def _perturb(layer, rs):
    for n in layer._weight_names:
        w = getattr(layer, n)
        w += rs.standard_normal(w.shape) * 0.1


def _tape_grads(layer, call, inputs, R):
    """The tape's gradients of sum(call(*inputs) * R): (input gradients, {weight: gradient})."""
    with GradientTape() as tape:
        watched = [tape.watch(x) for x in inputs]
        y = call(*watched)
    names = layer._trainable_names
    gs = tape.gradient(y, watched + [layer._var(n) for n in names], output_gradients=R)
    return gs[:len(inputs)], dict(zip(names, gs[len(inputs):]))


def _fd(layer, fwd, call, inputs, rs, n_w=3):
    """Worst error of the tape's gradients (through ``call``) against central differences of
    the inference path ``fwd``, of sum(y * R), relative to max(|numeric|, 1e-3) (entries
    near zero are compared absolutely; central differences in float64 with eps 1e-6 are
    good to ~1e-8 absolute here)."""
    R = rs.standard_normal(fwd(*inputs).shape)
    gx, gw = _tape_grads(layer, call, inputs, R)
    eps, worst = 1e-6, 0.0

    def num(arr, idx):
        o = arr[idx]
        arr[idx] = o + eps
        lp = (fwd(*inputs) * R).sum()
        arr[idx] = o - eps
        lm = (fwd(*inputs) * R).sum()
        arr[idx] = o
        return (lp - lm) / (2 * eps)

    for n in layer._weight_names:
        w, g = getattr(layer, n), gw[n]
        for _ in range(n_w):
            idx = tuple(int(rs.integers(0, s)) for s in w.shape)
            d = num(w, idx)
            worst = max(worst, abs(d - g[idx]) / max(abs(d), 1e-3))
    for x, g in zip(inputs, gx):
        for _ in range(4):
            idx = tuple(int(rs.integers(0, s)) for s in x.shape)
            d = num(x, idx)
            worst = max(worst, abs(d - g[idx]) / max(abs(d), 1e-3))
    return worst


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_encoder_block_gradients_fd(causal, act):
    rs = np.random.default_rng(0)
    b = TransformerEncoderBlock(2, 12, causal=causal, activation=act)
    b.build((5, 8))
    b._cast(np.float64)
    _perturb(b, rs)
    x = rs.standard_normal((2, 5, 8))
    mask = np.ones((2, 5), bool)
    mask[1, 3:] = False
    # relu kinks make finite differences noisy at rare points: tolerance 1e-4
    assert _fd(b, lambda x: b.forward(x, False, mask), lambda x: b(x, mask=mask), [x], rs) < 1e-4


def test_decoder_block_gradients_fd():
    rs = np.random.default_rng(1)
    d = TransformerDecoderBlock(2, 12, activation="gelu")
    d.build((4, 8), (6, 10))
    d._cast(np.float64)
    _perturb(d, rs)
    c = rs.standard_normal((2, 6, 10))
    cm = np.ones((2, 6), bool)
    cm[0, 4:] = False
    x = rs.standard_normal((2, 4, 8))
    assert _fd(d, lambda x, c: d.forward(x, False, None, context=c, context_mask=cm),
               lambda x, c: d(x, c, context_mask=cm), [x, c], rs) < 1e-4


def test_encoder_block_matches_torch_float32():
    torch = pytest.importorskip("torch")
    rs = np.random.default_rng(2)
    D, H, F, B, T = 16, 4, 32, 3, 7
    b = TransformerEncoderBlock(H, F, causal=True, activation="gelu")
    b.build((T, D))
    _perturb(b, rs)
    x = rs.standard_normal((B, T, D)).astype(np.float32)
    tl = torch.nn.TransformerEncoderLayer(D, H, F, dropout=0.0, activation=lambda u: torch.nn.functional.gelu(
        u, approximate="tanh"), batch_first=True, norm_first=True, layer_norm_eps=1e-5)
    with torch.no_grad():
        tl.self_attn.in_proj_weight.copy_(torch.tensor(b.qkv_kernel.T))
        tl.self_attn.in_proj_bias.copy_(torch.tensor(b.qkv_bias))
        tl.self_attn.out_proj.weight.copy_(torch.tensor(b.out_kernel.T))
        tl.self_attn.out_proj.bias.copy_(torch.tensor(b.out_bias))
        tl.linear1.weight.copy_(torch.tensor(b.ff1_kernel.T))
        tl.linear1.bias.copy_(torch.tensor(b.ff1_bias))
        tl.linear2.weight.copy_(torch.tensor(b.ff2_kernel.T))
        tl.linear2.bias.copy_(torch.tensor(b.ff2_bias))
        tl.norm1.weight.copy_(torch.tensor(b.ln1_gamma))
        tl.norm1.bias.copy_(torch.tensor(b.ln1_beta))
        tl.norm2.weight.copy_(torch.tensor(b.ln2_gamma))
        tl.norm2.bias.copy_(torch.tensor(b.ln2_beta))
    xt = torch.tensor(x, requires_grad=True)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(T)
    yt = tl(xt, src_mask=mask, is_causal=True)
    R = rs.standard_normal(yt.shape).astype(np.float32)
    (yt * torch.tensor(R)).sum().backward()
    y = b.forward(x, False)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-4)
    (dx,), g = _tape_grads(b, lambda u: b(u), [x], R)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(g["qkv_kernel"], tl.self_attn.in_proj_weight.grad.numpy().T, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(g["ff1_kernel"], tl.linear1.weight.grad.numpy().T, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_positional_embedding(position):
    rs = np.random.default_rng(3)
    e = PositionalEmbedding(11, 9, 6, position=position, mask_zero=True)
    e.build((9,))
    ids = rs.integers(0, 11, (4, 7))
    y = e.forward(ids)
    P = e.positions if position == "learned" else sinusoidal_table(9, 6)
    np.testing.assert_allclose(y, e.embeddings[ids] + P[:7], rtol=1e-6)
    np.testing.assert_array_equal(e.compute_mask(None), ids != 0)
    g = rs.standard_normal(y.shape).astype(np.float32)
    _, grads = _tape_grads(e, lambda: e(ids), [], g)
    want = np.zeros_like(e.embeddings)
    np.add.at(want, ids.reshape(-1), g.reshape(-1, 6))
    np.testing.assert_allclose(grads["embeddings"], want, rtol=1e-5, atol=1e-6)
    if position == "learned":
        np.testing.assert_allclose(grads["positions"][:7], g.sum(0), rtol=1e-5, atol=1e-6)
        assert not grads["positions"][7:].any()
    with pytest.raises(ValueError, match="exceed max_length"):
        e.forward(rs.integers(0, 11, (1, 10)))
    with pytest.raises(ValueError, match=r"ids must be in \[0, 11\)"):
        e.forward(np.array([[11]]))


def test_sinusoidal_table_values():
    t = sinusoidal_table(4, 6)
    assert t.shape == (4, 6)
    np.testing.assert_allclose(t[0], [0, 1, 0, 1, 0, 1], atol=1e-7)
    np.testing.assert_allclose(t[3, 0], np.sin(3), rtol=1e-6)
    np.testing.assert_allclose(t[3, 3], np.cos(3 / 10000 ** (2 / 6)), rtol=1e-6)


def test_config_round_trip_and_errors():
    b = TransformerEncoderBlock(4, 64, dropout=0.1, causal=True, activation="relu", name="blk")
    b2 = TransformerEncoderBlock.from_config(b.get_config())
    assert b2.get_config() == b.get_config()
    d = TransformerDecoderBlock(2, 8)
    assert TransformerDecoderBlock.from_config(d.get_config()).get_config() == d.get_config()
    e = PositionalEmbedding(10, 5, 4, position="sinusoidal")
    assert PositionalEmbedding.from_config(e.get_config()).get_config() == e.get_config()
    with pytest.raises(ValueError, match="num_heads must be an integer >= 1"):
        TransformerEncoderBlock(0, 8)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        TransformerEncoderBlock(2, 8, dropout=1.0)
    with pytest.raises(ValueError, match="activation must be 'gelu' or 'relu'"):
        TransformerEncoderBlock(2, 8, activation="swish")
    with pytest.raises(ValueError, match="divisible by num_heads"):
        TransformerEncoderBlock(3, 8).build((4, 8))
    with pytest.raises(ValueError, match="position must be"):
        PositionalEmbedding(10, 5, 4, position="rotary")
    with pytest.raises(ValueError, match="needs the encoder output"):
        dd = TransformerDecoderBlock(2, 8)
        dd.build((3, 4))
        dd.forward(np.zeros((1, 3, 4), np.float32))


def test_trains_through_sequential_fit():
    """A tiny sequence-classification-by-position task: predict the previous token."""
    set_random_seed(0)
    rs = np.random.default_rng(0)
    V, T = 7, 6
    x = rs.integers(1, V, (256, T))
    y = np.concatenate([np.zeros((256, 1), np.int64), x[:, :-1]], axis=1)
    m = Sequential([PositionalEmbedding(V, T, 16, dropout=0.1), TransformerEncoderBlock(2, 32, causal=True,
                                                                                        dropout=0.1),
                    kl.LayerNormalization(epsilon=1e-5), kl.Dense(V)])
    m.compile(optimizers.Adam(3e-3), losses.SparseCategoricalCrossentropy(from_logits=True))
    h = m.fit(x, y, batch_size=32, epochs=12, verbose=0)
    assert h.history["loss"][-1] < 0.3 * h.history["loss"][0]


def test_dropout_only_in_training():
    b = TransformerEncoderBlock(2, 8, dropout=0.5)
    b.build((3, 4))
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(b.forward(x, False), b.forward(x, False))
    assert not np.allclose(b.forward(x, True), b.forward(x, False))


@pytest.mark.parametrize("position,scale", [("learned", False), ("sinusoidal", True)])
def test_positional_embedding_step_rows_equals_forward_per_row(position, scale):
    emb = PositionalEmbedding(50, 40, 16, position=position, scale_embeddings=scale)
    emb.build((40,))
    ids, starts = np.array([3, 0, 49, 7]), np.array([0, 39, 5, 12])
    got = emb.step_rows(ids, starts)
    for b in range(4):
        np.testing.assert_array_equal(got[b:b + 1], emb.forward(ids[b:b + 1, None], False, start=int(starts[b])))
    with pytest.raises(ValueError, match="positions must be in"):
        emb.step_rows(ids, [0, 40, 1, 2])
    with pytest.raises(ValueError, match="one start per row"):
        emb.step_rows(ids, [0, 1])
    with pytest.raises(ValueError, match="ids must be in"):
        emb.step_rows([50], [0])
