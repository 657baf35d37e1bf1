"""ZeroPadding1D, Cropping1D/2D, UpSampling1D, SpatialDropout1D/2D, GaussianNoise,
GaussianDropout, UnitNormalization. Oracles: NumPy (values), central finite differences
(tape gradients, float64), the noise layers' statistics over many draws; config round trips,
a model that trains and round-trips through save/load. No torch needed."""
import numpy as np
import pytest
from helpers import assert_saves_and_loads

from pyaiml import keras
from pyaiml.autograd import GradientTape
from pyaiml.keras import layers, ops

X3 = np.random.default_rng(0).standard_normal((2, 7, 3))
X4 = np.random.default_rng(1).standard_normal((2, 6, 5, 3))

SHAPES = {  # name: (layer, input, NumPy oracle)
    "ZeroPadding1D": (lambda: layers.ZeroPadding1D((1, 2)), X3, lambda x: np.pad(x, ((0, 0), (1, 2), (0, 0)))),
    "Cropping1D": (lambda: layers.Cropping1D((2, 1)), X3, lambda x: x[:, 2:-1]),
    "Cropping2D": (lambda: layers.Cropping2D(((1, 2), (0, 1))), X4, lambda x: x[:, 1:-2, 0:-1]),
    "Cropping2D int": (lambda: layers.Cropping2D(1), X4, lambda x: x[:, 1:-1, 1:-1]),
    "UpSampling1D": (lambda: layers.UpSampling1D(3), X3, lambda x: np.repeat(x, 3, axis=1)),
    "UnitNormalization": (lambda: layers.UnitNormalization(), X3,
                          lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)),
    "UnitNormalization axes": (lambda: layers.UnitNormalization(axis=[1, 2]), X3,
                               lambda x: x / np.sqrt((x * x).sum((1, 2), keepdims=True))),
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_values_gradients_shapes_configs(name):
    make, x, oracle = SHAPES[name]
    layer = make()
    want = oracle(x)
    np.testing.assert_allclose(layer(x.astype(np.float32)), want, rtol=2e-6, atol=1e-6)
    assert layer.compute_output_shape(x.shape[1:]) == want.shape[1:]
    w = np.random.default_rng(2).standard_normal(want.shape)
    with GradientTape() as tape:
        xx = tape.watch(x)
        loss = ops.sum(ops.multiply(layer(xx), w))
    g = tape.gradient(loss, xx)
    fd = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = 1e-6
        fd[i] = (np.sum(oracle(x + d) * w) - np.sum(oracle(x - d) * w)) / 2e-6
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    twin = type(layer).from_config(layer.get_config())
    np.testing.assert_array_equal(twin(x.astype(np.float32)), layer(x.astype(np.float32)))


@pytest.mark.parametrize("cls,x", [(layers.SpatialDropout1D, np.ones((4, 50, 8))),
                                   (layers.SpatialDropout2D, np.ones((4, 6, 7, 8)))])
def test_spatial_dropout_drops_whole_channels(cls, x):
    layer = cls(0.5, seed=3)
    np.testing.assert_array_equal(layer(x, training=False), x)
    y = np.asarray(layer(x, training=True))
    axes = tuple(range(1, x.ndim - 1))
    per_channel = y.reshape(x.shape[0], -1, x.shape[-1])
    assert np.all(per_channel == per_channel[:, :1])  # each channel the same at every position
    assert set(np.unique(y)) <= {0.0, 2.0} and 0 < (y == 0).mean() < 1
    w = np.random.default_rng(0).standard_normal(x.shape)
    with GradientTape() as tape:
        xx = tape.watch(x)
        loss = ops.sum(ops.multiply(layer(xx, training=True), w))
    g = tape.gradient(loss, xx)
    kept = np.isin(np.round(np.asarray(g) / w, 6), [2.0])
    assert np.all(kept.all(axis=axes) | (~kept).all(axis=axes))
    assert "noise_shape" not in layer.get_config() and cls.from_config(layer.get_config()).rate == 0.5
    with pytest.raises(ValueError, match="expects inputs of rank"):
        cls(0.5)(np.ones((2, 3)), training=True)


def test_gaussian_noise_and_dropout_statistics():
    x = np.ones((200, 500), np.float32)
    gn = layers.GaussianNoise(0.3, seed=1)
    np.testing.assert_array_equal(gn(x), x)
    d = np.asarray(gn(x, training=True)) - x
    assert abs(d.mean()) < 0.01 and abs(d.std() - 0.3) < 0.01
    gd = layers.GaussianDropout(0.2, seed=1)
    np.testing.assert_array_equal(gd(x), x)
    m = np.asarray(gd(x, training=True))
    assert abs(m.mean() - 1) < 0.01 and abs(m.var() - 0.25) < 0.01  # rate / (1 - rate)
    a, b = layers.GaussianNoise(0.3, seed=5), layers.GaussianNoise(0.3, seed=5)
    np.testing.assert_array_equal(a(x, training=True), b(x, training=True))
    with pytest.raises(ValueError, match="stddev must be >= 0"):
        layers.GaussianNoise(-1.0)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        layers.GaussianDropout(1.0)
    with pytest.raises(ValueError, match="leaves nothing"):
        layers.Cropping1D((4, 4))(np.ones((1, 7, 2), np.float32))
    with pytest.raises(ValueError, match="non-negative ints"):
        layers.Cropping2D(((1, -1), (0, 0)))


def test_in_a_model_that_trains_and_saves(tmp_path):
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((12, 3)), layers.GaussianNoise(0.05), layers.ZeroPadding1D(1),
                          layers.Conv1D(8, 3, activation="relu"), layers.SpatialDropout1D(0.2),
                          layers.Cropping1D((1, 1)), layers.UpSampling1D(2), layers.GlobalAveragePooling1D(),
                          layers.GaussianDropout(0.1), layers.UnitNormalization(), layers.Dense(1)])
    m.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 12, 3)).astype(np.float32)
    y = x.mean((1, 2))[:, None].astype(np.float32)
    h = m.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert_saves_and_loads(m, x, tmp_path)
