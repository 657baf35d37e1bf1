"""keras.layers.RandomFlip (pyaiml/keras/preprocessing_layers.py).

What it checks: identity at inference; in training each image comes out either unchanged or
flipped along the mode's axes (both choices occur over a batch, about half each), seeded
layers repeat, single images; the gradient is the upstream gradient flipped back per image;
a Sequential model with RandomFlip trains (through the tape) and saves/loads; errors.
What it is not: speed.
Run: PYTHONPATH=$PWD python -m pytest -q tests/test_keras_random_flip.py
"""
import numpy as np
import pytest

from pyaiml import keras
from pyaiml.autograd import GradientTape
from pyaiml.autograd.tape import Variable
from pyaiml.keras import layers

R = np.random.default_rng(0)
FLIPS = {"horizontal": [(), (2,)], "vertical": [(), (1,)], "horizontal_and_vertical": [(), (1,), (2,), (1, 2)]}


def _which(x, y, mode):
    """The flip axes (of one image's (H, W, C) batch-axis-shifted array) that turn x into y."""
    for axes in FLIPS[mode]:
        if np.array_equal(np.flip(x, axis=tuple(a - 1 for a in axes)) if axes else x, y):
            return axes
    raise AssertionError("output is not a flip of the input")


@pytest.mark.parametrize("mode", list(FLIPS))
def test_each_image_is_itself_or_flipped(mode):
    x = R.standard_normal((64, 5, 6, 3)).astype("float32")
    f = layers.RandomFlip(mode, seed=1)
    np.testing.assert_array_equal(np.asarray(f(x)), x)  # inference
    np.testing.assert_array_equal(np.asarray(f(x, training=False)), x)
    y = np.asarray(f(x, training=True))
    seen = [_which(x[i], y[i], mode) for i in range(64)]
    counts = {a: seen.count(a) for a in FLIPS[mode]}
    assert all(c > 64 / len(FLIPS[mode]) / 3 for c in counts.values()), counts
    again = np.asarray(layers.RandomFlip(mode, seed=1)(x, training=True))
    np.testing.assert_array_equal(again, y)


def test_single_image_and_gradient():
    img = R.standard_normal((4, 5, 2)).astype("float32")
    f = layers.RandomFlip("horizontal", seed=3)
    outs = {tuple(np.asarray(f(img, training=True)).ravel()) for _ in range(12)}
    assert outs == {tuple(img.ravel()), tuple(img[:, ::-1].ravel())}
    x = Variable(R.standard_normal((8, 3, 4, 2)).astype("float32"))
    g = R.standard_normal((8, 3, 4, 2)).astype("float32")
    f = layers.RandomFlip("horizontal_and_vertical", seed=5)
    with GradientTape() as tape:
        y = f(x, training=True)
        loss = keras.ops.sum(y * g)
    dx = np.asarray(tape.gradient(loss, [x])[0])
    yv, xv = np.asarray(y), np.asarray(x)
    for i in range(8):
        axes = _which(xv[i], yv[i], "horizontal_and_vertical")
        want = np.flip(g[i], axis=tuple(a - 1 for a in axes)) if axes else g[i]
        np.testing.assert_array_equal(dx[i], want)


def test_in_a_model_trains_and_round_trips(tmp_path):
    keras.utils.set_random_seed(0)
    x = R.standard_normal((64, 8, 8, 1)).astype("float32")
    yl = (x[:, :, :4].mean(axis=(1, 2, 3)) > x[:, :, 4:].mean(axis=(1, 2, 3))).astype("int64")
    model = keras.Sequential([keras.Input((8, 8, 1)), layers.RandomFlip("vertical", seed=2),
                              layers.Conv2D(4, 3, activation="relu"), layers.Flatten(), layers.Dense(2)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    h = model.fit(x, yl, epochs=3, batch_size=16, verbose=0)
    assert all(np.isfinite(h.history["loss"]))
    model.save(tmp_path / "m.keras")
    back = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(back.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert back.layers[0].get_config()["mode"] == "vertical"


def test_errors():
    with pytest.raises(ValueError, match="mode must be one of"):
        layers.RandomFlip("diagonal")
    with pytest.raises(TypeError, match="seed must be an int"):
        layers.RandomFlip(seed=1.5)
    with pytest.raises(ValueError, match="takes images"):
        layers.RandomFlip()(np.zeros((4, 5), "float32"))
