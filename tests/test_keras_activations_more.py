"""The activations added beside relu/sigmoid/tanh/softmax/gelu (elu, selu, softplus, softsign,
silu/swish, leaky_relu, relu6, exponential, hard_sigmoid) and the activation layers ReLU,
LeakyReLU, ELU, Softmax, PReLU, Identity. Oracles: the formulas in float64 NumPy (Keras 3's
definitions), and central finite differences of the tape's gradients in float64; the
inference path (predict) against the tape's forward. No torch needed."""
import numpy as np
import pytest
from helpers import assert_saves_and_loads

from pyaiml import keras
from pyaiml.autograd import GradientTape
from pyaiml.keras import activations, layers, ops

A, S = 1.6732632423543772, 1.0507009873554805
FORMULAS = {
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "selu": lambda x: S * np.where(x > 0, x, A * np.expm1(np.minimum(x, 0))),
    "softplus": lambda x: np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "swish": lambda x: x / (1 + np.exp(-x)),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
    "relu6": lambda x: np.clip(x, 0, 6),
    "exponential": np.exp,
    "hard_sigmoid": lambda x: np.clip(x + 3, 0, 6) / 6,
}
# away from the kinks (0, 6, -3, 3), where a finite difference straddles two pieces
X64 = np.array([[-7.5, -2.2, -0.7, -0.05, 0.3, 1.9, 4.1, 7.3]])


def _fd(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = eps
        g[i] = (f(x + d) - f(x - d)) / (2 * eps)
    return g


def _tape_grad(f, x, w):
    with GradientTape() as tape:
        xx = tape.watch(x)
        loss = ops.sum(ops.multiply(f(xx), w))
    return tape.gradient(loss, xx)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_activation_values_and_gradients(name):
    act = activations.get(name)
    want = FORMULAS[name](X64)
    np.testing.assert_allclose(act(X64), want, rtol=1e-12, atol=1e-12)  # inference form, float64
    x32 = X64.astype(np.float32)
    got32 = act(x32)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, want, rtol=2e-6, atol=1e-6)
    w = np.linspace(0.5, 1.5, X64.size).reshape(X64.shape)
    tape_fn = layers._ACT_TAPE[act.name]
    np.testing.assert_allclose(np.asarray(getattr(tape_fn(X64), "value", tape_fn(X64))), want, rtol=1e-12,
                               atol=1e-12)
    g = _tape_grad(tape_fn, X64, w)
    e = 1e-6  # elementwise: each element's own central difference
    fd = (FORMULAS[name](X64 + e) - FORMULAS[name](X64 - e)) / (2 * e) * w
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["selu", "swish", "hard_sigmoid"])
def test_activation_in_a_trained_dense_model(name, tmp_path):
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((4,)), layers.Dense(8, activation=name), layers.Dense(1)])
    m.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    y = (x[:, :1] * 2 - x[:, 1:2]).astype(np.float32)
    h = m.fit(x, y, epochs=30, batch_size=16, verbose=0)
    assert h.history["loss"][-1] < 0.9 * h.history["loss"][0]
    assert_saves_and_loads(m, x, tmp_path)


LAYERS = {
    "ReLU": (lambda: layers.ReLU(), lambda x: np.maximum(x, 0)),
    "ReLU(max 6)": (lambda: layers.ReLU(max_value=6.0), lambda x: np.clip(x, 0, 6)),
    "ReLU(slope, threshold)": (lambda: layers.ReLU(negative_slope=0.1, threshold=1.0),
                               lambda x: np.where(x >= 1.0, x, 0.1 * (x - 1.0))),
    "LeakyReLU": (lambda: layers.LeakyReLU(), lambda x: np.where(x > 0, x, 0.3 * x)),
    "LeakyReLU(alpha=0.1)": (lambda: layers.LeakyReLU(alpha=0.1), lambda x: np.where(x > 0, x, 0.1 * x)),
    "ELU(0.5)": (lambda: layers.ELU(0.5), lambda x: np.where(x > 0, x, 0.5 * np.expm1(np.minimum(x, 0)))),
    "Softmax": (lambda: layers.Softmax(), lambda x: np.exp(x - x.max(-1, keepdims=True)) /
                np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)),
    "Identity": (lambda: layers.Identity(), lambda x: x),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_activation_layers(name):
    make, formula = LAYERS[name]
    layer = make()
    x = np.array([[-3.3, -0.4, 0.2, 0.7, 2.5, 7.1], [1.3, -2.0, 0.45, 3.0, -0.8, 5.5]])
    np.testing.assert_allclose(layer(x.astype(np.float32)), formula(x), rtol=2e-6, atol=1e-6)
    w = np.linspace(-1.0, 1.0, x.size).reshape(x.shape)
    g = _tape_grad(lambda t: layer(t), x, w)
    np.testing.assert_allclose(g, _fd(lambda v: float(np.sum(formula(v) * w)), x), rtol=1e-6, atol=1e-8)
    twin = type(layer).from_config(layer.get_config())
    np.testing.assert_array_equal(twin(x.astype(np.float32)), layer(x.astype(np.float32)))


def test_softmax_layer_axis_and_prelu():
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    s = layers.Softmax(axis=1)(x)  # arrays are computed in float32
    np.testing.assert_allclose(np.asarray(s).sum(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="Softmax axis 0"):
        layers.Softmax(axis=0)(x)
    p = layers.PReLU(shared_axes=[1])
    p.build((3, 4))
    assert p.alpha.value.shape == (1, 4)
    p.alpha.value[...] = [[0.1, 0.2, 0.3, 0.4]]
    av = p.alpha.value.astype(np.float64)  # the float32 weights, exactly
    want = np.maximum(x, 0) + av * np.minimum(x, 0)
    np.testing.assert_allclose(p(x), want, rtol=2e-6, atol=1e-7)
    w = np.random.default_rng(1).standard_normal(x.shape)
    with GradientTape() as tape:
        xx = tape.watch(x)
        loss = ops.sum(ops.multiply(p(xx), w))
    gx, ga = tape.gradient(loss, [xx, p.alpha])
    np.testing.assert_allclose(gx, np.where(x > 0, 1.0, av) * w, rtol=1e-12)
    np.testing.assert_allclose(ga, (np.minimum(x, 0) * w).sum(axis=(0, 1))[None, :], rtol=1e-6)  # float32, as alpha
    with pytest.raises(ValueError, match="shared axis 3"):
        layers.PReLU(shared_axes=[3]).build((3, 4))
    with pytest.raises(ValueError, match="negative_slope must be >= 0"):
        layers.LeakyReLU(-1.0)


def test_activation_layers_in_a_functional_model_train_and_save(tmp_path):
    keras.utils.set_random_seed(1)
    i = keras.Input((6,))
    h = layers.PReLU()(layers.Dense(8)(i))
    h = layers.LeakyReLU(0.1)(layers.Dense(8)(h))
    out = layers.Softmax()(layers.Dense(3)(layers.ReLU(max_value=6.0)(h)))
    m = keras.Model(i, out)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).standard_normal((60, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    h = m.fit(x, y, epochs=20, batch_size=10, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert_saves_and_loads(m, x, tmp_path)
