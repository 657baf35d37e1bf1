"""GradientTape.clipped_gradient (DP-SGD through the tape): per-example squared norms and
clipped sums against a loop that differentiates each example alone (float64), for every op
with a per-example rule (pyaiml.autograd.per_example), a weight shared by two ops, the errors,
and DP-SGD training of functional and subclassed Keras models (one step equal to Sequential's
layer-level DP step on the same weights)."""
import numpy as np
import pytest

from pyaiml import keras
from pyaiml.autograd import GradientTape, Variable
from pyaiml.autograd import functional as F
from pyaiml.keras import layers as L
from pyaiml.privacy.dp import DPSGD

RNG = np.random.default_rng(7)


def _var(*shape, name="w"):
    return Variable(RNG.standard_normal(shape), name=name)


def _x(*shape):
    return RNG.standard_normal(shape)


def _loss(out):
    """A per-example loss averaged over the batch: mean over examples of sum(out_i**2)/2 + sum(out_i)."""
    o = F.reshape(out, (out.shape[0], -1))
    return F.mean(F.sum(F.multiply(F.multiply(o, o), 0.5) + o, axis=1))


def _check(fn, x, variables):
    """fn(x) -> output; compares the tape's clipped gradient with the per-example loop."""
    n = len(x)
    ref = []
    for i in range(n):
        with GradientTape() as t:
            loss = _loss(fn(x[i:i + 1]))
        ref.append([g if g is not None else np.zeros_like(v.value) for g, v in zip(t.gradient(loss, variables),
                                                                                     variables)])
    want_sq = np.array([sum(float((g ** 2).sum()) for g in gi) for gi in ref])
    c = RNG.uniform(0.1, 1.0, n)
    seen = {}

    def factors(sq):
        seen["sq"] = sq
        return c

    with GradientTape() as t:
        loss = _loss(fn(x))
    got, sq = t.clipped_gradient(loss, variables, factors, n)
    np.testing.assert_allclose(sq, want_sq, rtol=1e-10)
    np.testing.assert_allclose(seen["sq"], want_sq, rtol=1e-10)
    for j, v in enumerate(variables):
        want = sum(c[i] * ref[i][j] for i in range(n))
        np.testing.assert_allclose(got[j], want, rtol=1e-9, atol=1e-12, err_msg=v.name)


def test_dense_2d_and_3d():
    k, b = _var(5, 3, name="k"), _var(3, name="b")
    _check(lambda x: F.dense(x, k, b), _x(6, 5), [k, b])
    _check(lambda x: F.dense(x, k, b), _x(4, 7, 5), [k, b])  # T*T > in*out: the G_i form
    _check(lambda x: F.dense(x, k, b), _x(4, 2, 5), [k, b])  # the Gram form
    _check(lambda x: F.dense(x, k, b, activation="relu"), _x(6, 5), [k, b])  # ReLU in the epilogue


@pytest.mark.parametrize("fmt, shape, wshape, kw", [
    ("NHWC", (3, 7, 6, 2), (4, 2, 3, 3), {"stride": 1, "padding": 1}),
    ("NHWC", (3, 9, 8, 4), (6, 2, 3, 2), {"stride": (2, 1), "padding": (1, 0), "groups": 2}),
    ("NCHW", (2, 3, 6, 6), (5, 3, 3, 3), {"stride": 2, "padding": 0, "dilation": 1}),
    ("NLC", (3, 11, 3), (4, 3, 3), {"stride": 1, "padding": 1}),
])
def test_conv(fmt, shape, wshape, kw):
    w, b = _var(*wshape, name="w"), _var(wshape[0], name="b")
    _check(lambda x: F.conv(x, w, b, data_format=fmt, **kw), _x(*shape), [w, b])


def test_conv_relu_then_max_pool():
    """The conv's fused ReLU and the pool that takes its gradient (the tape's own fusion)."""
    w, b = _var(4, 2, 3, 3), _var(4, name="b")
    _check(lambda x: F.max_pool(F.conv(x, w, b, padding=1, activation="relu"), (2, 2), (2, 2)),
           _x(3, 6, 6, 2), [w, b])


def test_layer_norm_embedding_matmul_and_broadcast():
    g, be = _var(5, name="gamma"), _var(5, name="beta")
    _check(lambda x: F.layer_norm(x, g, be), _x(3, 4, 5), [g, be])
    table = _var(9, 4, name="table")
    ids = np.array([[1, 1, 3], [0, 8, 1], [5, 5, 5], [2, 7, 0]])
    _check(lambda i: F.take(table, i, 0), ids, [table])
    w, bias, scale = _var(5, 3, name="w"), _var(3, name="bias"), _var(1, 3, name="scale")
    # a user's layer: x @ w + b, then a learned per-feature scale
    _check(lambda x: F.multiply(F.add(F.matmul(x, w), bias), scale), _x(4, 2, 5), [w, bias, scale])
    _check(lambda x: F.subtract(bias, F.matmul(x, w)), _x(3, 5), [w, bias])


def test_shared_weight_sums_its_uses():
    """A weight used by two ops: its per-example gradients are summed before the norm (not the
    sum of two norms), through a frozen-weight branch too."""
    k, b = _var(4, 4, name="k"), _var(4, name="b")
    frozen = Variable(RNG.standard_normal((4, 4)), trainable=False, name="frozen")
    _check(lambda x: F.dense(F.tanh(F.dense(x, k, b)), k) + F.matmul(x, frozen), _x(5, 4), [k, b])


def test_errors():
    w = _var(3, 2)
    x = _x(4, 3)
    with GradientTape() as t:
        loss = _loss(F.matmul(x, F.multiply(w, 2.0)))
    with pytest.raises(ValueError, match=r"enter op 'multiply' whose output has shape \(3, 2\)"):
        t.clipped_gradient(loss, [w], lambda sq: np.ones_like(sq), 4)
    with GradientTape() as t:
        loss = _loss(F.einsum("bi,ij->bj", x, w))
    with pytest.raises(ValueError, match="enter op 'einsum', which has no per-example gradient rule"):
        t.clipped_gradient(loss, [w], lambda sq: np.ones_like(sq), 4)
    with GradientTape() as t:
        loss = _loss(F.dense(x, w))
    with pytest.raises(TypeError, match="sources must be Variables"):
        t.clipped_gradient(loss, [w.value], lambda sq: np.ones_like(sq), 4)


def _cnn_layers():
    return [L.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 1)), L.MaxPooling2D(2), L.Flatten(),
            L.Dense(3, activation="softmax")]


def test_functional_dp_step_equals_sequential():
    """One noise-free DP step of a functional model (tape rules) and of the same Sequential model
    (layer rules) from the same weights: the same update."""
    keras.utils.set_random_seed(0)
    seq = keras.Sequential(_cnn_layers())
    inp = keras.Input((8, 8, 1))
    h = inp
    for layer in _cnn_layers()[0:]:
        h = layer(h)
    fun = keras.Model(inp, h)
    x = RNG.standard_normal((12, 8, 8, 1)).astype(np.float32)
    y = RNG.integers(0, 3, 12)
    seq.build((None, 8, 8, 1))
    fun.set_weights(seq.get_weights())
    for m in (seq, fun):
        m.compile(optimizer=DPSGD(l2_norm_clip=0.05, noise_multiplier=0.0, learning_rate=0.5),
                  loss="sparse_categorical_crossentropy")
        m.train_on_batch(x, y)
    assert seq.optimizer.clipped_fraction == fun.optimizer.clipped_fraction > 0  # the clip was active
    for a, b in zip(seq.get_weights(), fun.get_weights()):
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=1e-6)


class _Affine(L.Layer):
    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], 3), initializer="glorot_uniform")
        self.b = self.add_weight(shape=(3,), initializer="zeros")

    def call(self, x):
        return keras.ops.matmul(x, self.w) + self.b


class _Net(keras.Model):
    def __init__(self):
        super().__init__()
        self.norm = L.LayerNormalization()
        self.aff = _Affine()

    def call(self, x, training=False):
        return keras.ops.softmax(self.aff(self.norm(x)))


def test_subclassed_model_trains_with_dp():
    keras.utils.set_random_seed(1)
    x = RNG.standard_normal((96, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    m = _Net()
    m.compile(optimizer=DPSGD(l2_norm_clip=1.0, noise_multiplier=0.3, learning_rate=0.5),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    h = m.fit(x, y, batch_size=16, epochs=6, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert len(h.history["epsilon"]) == 6 and np.all(np.diff(h.history["epsilon"]) > 0)
    assert m.optimizer.steps == 6 * 6


def test_dp_model_with_a_rule_less_op_is_refused():
    inp = keras.Input((8, 8, 1))
    out = L.Dense(2)(L.Flatten()(L.BatchNormalization()(inp)))
    m = keras.Model(inp, out)
    m.compile(optimizer=DPSGD(l2_norm_clip=1.0, noise_multiplier=0.5), loss="mse")
    with pytest.raises(ValueError, match="batch_norm"):
        m.train_on_batch(np.zeros((4, 8, 8, 1), np.float32), np.zeros((4, 2), np.float32))
