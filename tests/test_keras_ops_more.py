"""keras.ops added for keras.io-style code: values against NumPy (float64), gradients through
the tape against central finite differences (float64), the product's gradient with zeros
among the factors, and use on symbolic tensors in a functional model. No torch needed."""
import numpy as np
import pytest

from pyaiml import keras
from pyaiml.autograd import GradientTape
from pyaiml.keras import layers, ops

RNG = np.random.default_rng(0)
X = RNG.uniform(0.3, 1.7, (3, 4))  # positive, away from the kinks of abs/log/sort ties

DIFF = {  # name: (ops call, NumPy oracle)
    "tan": (ops.tan, np.tan), "sinh": (ops.sinh, np.sinh), "cosh": (ops.cosh, np.cosh),
    "arctan": (ops.arctan, np.arctan), "arcsinh": (ops.arcsinh, np.arcsinh), "expm1": (ops.expm1, np.expm1),
    "log2": (ops.log2, np.log2), "log10": (ops.log10, np.log10),
    "softsign": (ops.softsign, lambda x: x / (1 + np.abs(x))),
    "flip": (lambda x: ops.flip(x, 1), lambda x: np.flip(x, 1)),
    "flip_all": (ops.flip, np.flip),
    "moveaxis": (lambda x: ops.moveaxis(x, 0, 1), lambda x: np.moveaxis(x, 0, 1)),
    "ravel": (ops.ravel, np.ravel),
    "roll": (lambda x: ops.roll(x, 2, 1), lambda x: np.roll(x, 2, 1)),
    "roll_flat": (lambda x: ops.roll(x, -5), lambda x: np.roll(x, -5)),
    "sort": (lambda x: ops.sort(x, 1), lambda x: np.sort(x, 1)),
    "sort0": (lambda x: ops.sort(x, 0), lambda x: np.sort(x, 0)),
    "top_k": (lambda x: ops.top_k(x, 2)[0], lambda x: -np.sort(-x, -1)[:, :2]),
    "prod": (lambda x: ops.prod(x, 1), lambda x: np.prod(x, 1)),
    "prod_all": (ops.prod, np.prod),
    "prod_keep": (lambda x: ops.prod(x, 0, keepdims=True), lambda x: np.prod(x, 0, keepdims=True)),
    "prod_axes": (lambda x: ops.prod(x, (0, 1)), lambda x: np.prod(x)),
    "norm": (ops.norm, np.linalg.norm),
    "norm_axis": (lambda x: ops.norm(x, axis=1), lambda x: np.linalg.norm(x, axis=1)),
    "norm1": (lambda x: ops.norm(x, 1, axis=0), lambda x: np.abs(x).sum(0)),
    "norm_inf": (lambda x: ops.norm(x, np.inf, axis=1), lambda x: np.abs(x).max(1)),
    "normalize": (ops.normalize, lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)),
    "outer": (lambda x: ops.outer(x[0], x[1]), lambda x: np.outer(x[0], x[1])),
    "vstack": (lambda x: ops.vstack([x[0], x[1]]), lambda x: np.vstack([x[0], x[1]])),
    "hstack": (lambda x: ops.hstack([x, x]), lambda x: np.hstack([x, x])),
    "nan_to_num": (ops.nan_to_num, np.nan_to_num),
}


@pytest.mark.parametrize("name", sorted(DIFF))
def test_values_and_gradients(name):
    f, oracle = DIFF[name]
    np.testing.assert_allclose(np.asarray(f(X)), oracle(X), rtol=1e-12, atol=1e-12)
    w = RNG.standard_normal(np.shape(oracle(X)))
    with GradientTape() as tape:
        xx = tape.watch(X)
        loss = ops.sum(ops.multiply(f(xx), w))
    g = tape.gradient(loss, xx)
    fd = np.zeros_like(X)
    e = 1e-6
    for i in np.ndindex(X.shape):
        d = np.zeros_like(X)
        d[i] = e
        fd[i] = (np.sum(oracle(X + d) * w) - np.sum(oracle(X - d) * w)) / (2 * e)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


def test_prod_gradient_with_zeros():
    x = np.array([[2.0, 0.0, 3.0], [0.0, 0.0, 5.0], [1.5, 2.0, 4.0]])
    with GradientTape() as tape:
        xx = tape.watch(x)
        loss = ops.sum(ops.prod(xx, 1))
    g = tape.gradient(loss, xx)
    # d/dx_i of the row product = the product of the other factors
    want = np.array([[0.0, 6.0, 0.0], [0.0, 0.0, 0.0], [8.0, 6.0, 3.0]])
    np.testing.assert_array_equal(g, want)


def test_plain_ops_and_errors():
    x = np.array([[1.0, np.nan, np.inf], [-np.inf, 0.0, 2.5]])
    np.testing.assert_array_equal(ops.isnan(x), np.isnan(x))
    np.testing.assert_array_equal(ops.isinf(x), np.isinf(x))
    np.testing.assert_array_equal(ops.isfinite(x), np.isfinite(x))
    np.testing.assert_array_equal(ops.nan_to_num(x), np.nan_to_num(x))
    assert ops.count_nonzero(x) == 5 and ops.size(x) == 6 and ops.ndim(x) == 2
    assert ops.linspace(0, 1, 5).dtype == np.float32
    np.testing.assert_array_equal(ops.argsort(np.array([3, 1, 2])), [1, 2, 0])
    np.testing.assert_array_equal(ops.full_like(x, 7.0), np.full(x.shape, 7.0))
    np.testing.assert_array_equal(ops.mod(np.array([5, -3]), 3), [2, 0])
    np.testing.assert_array_equal(ops.floor_divide(np.array([5, -3]), 2), [2, -2])
    vals, idx = ops.top_k(np.array([[1.0, 5.0, 3.0, 5.0]]), 3)
    np.testing.assert_array_equal(vals, [[5.0, 5.0, 3.0]])
    np.testing.assert_array_equal(idx, [[1, 3, 2]])  # ties: the earlier index first
    with pytest.raises(ValueError, match="top_k: k must be in"):
        ops.top_k(np.ones((2, 3)), 4)
    with pytest.raises(ValueError, match="top_k: k must be in"):
        ops.top_k(np.ones((2, 3)), 1.5)
    with pytest.raises(ValueError, match="norm: ord must be"):
        ops.norm(np.ones(3), ord=3)


def test_on_symbolic_tensors_in_a_functional_model():
    i = keras.Input((6,))
    h = layers.Dense(6)(i)
    out = ops.normalize(ops.flip(ops.tan(ops.multiply(h, 0.1)), 1))
    m = keras.Model(i, out)
    x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    y = m.predict(x, verbose=0)
    assert y.shape == (4, 6) and y.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-5)
    m.compile(optimizer="adam", loss="mse")
    m.fit(x, np.zeros((4, 6), np.float32), epochs=1, verbose=0)
