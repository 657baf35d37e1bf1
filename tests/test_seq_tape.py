"""pyaiml.seq's layers on the tape: each layer's ``call`` (pyaiml.autograd's ops) in float64:
its output against the layer's inference path (``forward``, what generation runs), its input
gradients and every weight gradient against central finite differences of that path; and the
layers training inside functional and subclassed keras.Models."""
import numpy as np
import pytest

from pyaiml import keras
from pyaiml.autograd import GradientTape
from pyaiml.autograd import functional as F
from pyaiml.seq import (
    PositionalEmbedding,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
)


def _perturb(layer, rs):
    for n in layer._weight_names:
        a = layer._arr(n)
        a[...] = a + 0.3 * rs.standard_normal(a.shape)


def _numeric(layer, fwd, dy, inputs=(), eps=1e-6):
    """(y, [d sum(fwd() * dy) / d input], {weight: gradient}) by central differences of
    ``fwd`` (which reads ``inputs`` and the weights, changed in place here)."""
    def grad(a):
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + eps
            hi = float((fwd() * dy).sum())
            a[i] = old - eps
            lo = float((fwd() * dy).sum())
            a[i] = old
            g[i] = (hi - lo) / (2 * eps)
        return g
    return fwd(), [grad(x) for x in inputs], {n: grad(layer._arr(n)) for n in layer._trainable_names}


def _tape(layer, call, inputs, dy):
    with GradientTape() as tape:
        watched = [tape.watch(x) for x in inputs]
        y = call(*watched)
        loss = F.sum(y * dy)
    names = layer._trainable_names
    grads = tape.gradient(loss, watched + [layer._var(n) for n in names])
    return y.value, grads[:len(watched)], dict(zip(names, grads[len(watched):]))


@pytest.mark.parametrize("causal, masked", [(False, False), (True, True), (False, True)])
def test_encoder_block_call_against_forward_and_finite_differences(causal, masked):
    rs = np.random.default_rng(0)
    b = TransformerEncoderBlock(2, 12, causal=causal, activation="gelu" if causal else "relu")
    b.build((5, 8))
    b._cast(np.float64)
    _perturb(b, rs)
    x = rs.standard_normal((3, 5, 8))
    mask = None
    if masked:
        mask = np.ones((3, 5), bool)
        mask[1, 3:] = False
    dy = rs.standard_normal((3, 5, 8))
    y1, (dx1,), g1 = _tape(b, lambda t: b(t, mask=mask), [x], dy)
    y0, (dx0,), g0 = _numeric(b, lambda: b.forward(x, False, mask), dy, [x])
    np.testing.assert_allclose(y1, y0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-5, atol=1e-7)
    assert set(g1) == set(g0) and len(g0) == 12
    for n in g0:
        np.testing.assert_allclose(g1[n], g0[n], rtol=1e-5, atol=1e-7, err_msg=n)


def test_decoder_block_call_against_forward_and_finite_differences():
    rs = np.random.default_rng(1)
    d = TransformerDecoderBlock(2, 12, activation="gelu")
    d.build((4, 8), (6, 10))
    d._cast(np.float64)
    _perturb(d, rs)
    x = rs.standard_normal((2, 4, 8))
    c = rs.standard_normal((2, 6, 10))
    cm = np.ones((2, 6), bool)
    cm[0, 4:] = False
    dy = rs.standard_normal((2, 4, 8))
    y1, (dx1, dc1), g1 = _tape(d, lambda t, u: d(t, u, context_mask=cm), [x, c], dy)
    y0, (dx0, dc0), g0 = _numeric(d, lambda: d.forward(x, False, None, context=c, context_mask=cm), dy, [x, c])
    np.testing.assert_allclose(y1, y0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dc1, dc0, rtol=1e-5, atol=1e-7)
    assert set(g1) == set(g0) and len(g0) == 20
    for n in g0:
        np.testing.assert_allclose(g1[n], g0[n], rtol=1e-5, atol=1e-7, err_msg=n)
    with pytest.raises(ValueError, match=r"context must be \(batch=2, S, 10\)"), GradientTape():
        d(x, np.zeros((2, 6, 9)))


@pytest.mark.parametrize("position, scale", [("learned", False), ("sinusoidal", True)])
def test_positional_embedding_call_against_forward_and_finite_differences(position, scale):
    rs = np.random.default_rng(2)
    e = PositionalEmbedding(11, 9, 6, position=position, scale_embeddings=scale, mask_zero=True)
    e.build((7,))
    e._cast(np.float64)
    ids = rs.integers(0, 11, (3, 7))
    ids[0, 5:] = 0
    dy = rs.standard_normal((3, 7, 6))
    y0, _, g0 = _numeric(e, lambda: e.forward(ids, False), dy)
    with GradientTape() as tape:
        y = e(ids, training=False)
        loss = F.sum(y * dy)
    g1 = dict(zip(e._trainable_names, tape.gradient(loss, [e._var(n) for n in e._trainable_names])))
    np.testing.assert_allclose(y.value, y0, rtol=1e-12)
    for n in g0:
        np.testing.assert_allclose(g1[n], g0[n], rtol=1e-6, atol=1e-8, err_msg=n)
    np.testing.assert_array_equal(e.compute_mask(None), ids != 0)


def _copy_task(rs, n=256, T=8, V=12):
    ids = rs.integers(1, V, (n, T))
    return ids, np.roll(ids, 1, axis=1)  # predict the previous token


def test_functional_model_with_seq_layers_trains():
    keras.utils.set_random_seed(0)
    rs = np.random.default_rng(3)
    x, y = _copy_task(rs)
    inp = keras.Input((8,), dtype="int64")
    h = PositionalEmbedding(12, 8, 32)(inp)
    h = TransformerEncoderBlock(4, 64, causal=True)(h)
    out = keras.layers.Dense(12, activation="softmax")(keras.layers.LayerNormalization(epsilon=1e-5)(h))
    m = keras.Model(inp, out)
    m.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    h = m.fit(x, y, batch_size=32, epochs=6, verbose=0)
    assert h.history["loss"][-1] < 0.5 * h.history["loss"][0]
    assert h.history["accuracy"][-1] > 0.6


class _EncDec(keras.Model):
    def __init__(self):
        super().__init__()
        self.src = PositionalEmbedding(12, 8, 32)
        self.tgt = PositionalEmbedding(12, 8, 32)
        self.enc = TransformerEncoderBlock(4, 64)
        self.dec = TransformerDecoderBlock(4, 64)
        self.head = keras.layers.Dense(12, activation="softmax")

    def call(self, inputs, training=False):
        src, tgt = inputs
        c = self.enc(self.src(src, training=training), training=training)
        return self.head(self.dec(self.tgt(tgt, training=training), c, training=training))


def test_subclassed_encoder_decoder_trains():
    keras.utils.set_random_seed(1)
    rs = np.random.default_rng(4)
    src = rs.integers(1, 12, (256, 8))
    tgt_out = src  # copy the sequence through the cross-attention
    tgt_in = np.concatenate([np.zeros((256, 1), np.int64), tgt_out[:, :-1]], axis=1)
    m = _EncDec()
    m.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    h = m.fit([src, tgt_in], tgt_out, batch_size=32, epochs=10, verbose=0)
    assert h.history["loss"][-1] < 0.5 * h.history["loss"][0]  # ~2.54 -> ~1.04
    assert len(m.trainable_variables) == 2 + 2 + 12 + 20 + 2


def test_packed_attention_ops_reject_bad_shapes():
    bad = [(lambda: F.self_attention(np.zeros((2, 4, 10), np.float32), 2), "must split into 2 heads"),
           (lambda: F.self_attention(np.zeros((4, 12), np.float32), 2), "qkv must be 3-D"),
           (lambda: F.self_attention(np.zeros((2, 4, 12), np.float32), 0), "num_heads must be a positive integer"),
           (lambda: F.cross_attention(np.zeros((2, 4, 8), np.float32), np.zeros((2, 5, 10), np.float32), 2),
            r"kv must be \(batch=2, S, 2 \* 8\)")]
    for call, match in bad:
        with pytest.raises(ValueError, match=match):
            call()
