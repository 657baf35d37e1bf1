"""Training on real data: pyaiml.keras on the bundled 8x8 digits (stratified 80/20 split,
seed 0), and the bundled data set itself.

Default run: a dense network (seconds). Slow-marked (``-m slow``): the small CNN
(acceptance: >= 97% test accuracy) and the mission's exact CNN on the digits upscaled to
32x32x3 (>= 95%), the same code as examples/cnn_digits.py.
"""
import os
import sys

import numpy as np
import pytest

from pyaiml.datasets import load_digits
from pyaiml.keras import layers as L, utils
from pyaiml.keras.models import Sequential
from pyaiml.keras.optimizers import Adam

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))


def test_load_digits():
    d = load_digits()
    assert d.data.shape == (1797, 64) and d.images.shape == (1797, 8, 8) and d.target.shape == (1797,)
    assert d.data.min() == 0 and d.data.max() == 16
    assert np.bincount(d.target).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert "UCI" in d.DESCR
    x, y = load_digits(return_X_y=True, n_class=3)
    assert set(np.unique(y)) == {0, 1, 2} and len(x) == len(y)
    with pytest.raises(ValueError, match="n_class must be an integer in 1..10"):
        load_digits(n_class=11)


def test_stratified_split():
    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = utils.stratified_split(x, y, 0.2, seed=0)
    assert abs(len(xte) - 360) <= 2 and len(xtr) + len(xte) == 1797
    frac = np.bincount(yte) / np.bincount(y)
    assert np.all(np.abs(frac - 0.2) < 0.01)


def _split():
    x, y = load_digits(return_X_y=True)
    return utils.stratified_split((x / 16.0).astype(np.float32), y, 0.2, seed=0)


def test_dense_network_learns_digits():
    utils.set_random_seed(0)
    xtr, xte, ytr, yte = _split()
    m = Sequential([L.Dense(128, activation="relu", input_shape=(64,)), L.Dropout(0.1),
                    L.Dense(10, activation="softmax")])
    m.compile(optimizer=Adam(0.003), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    # few steps (the Numba backend's GEMM pays a per-call cost): a sanity check, not the
    # accuracy acceptance (the CNN tests below)
    h = m.fit(xtr, ytr, epochs=10, batch_size=64, verbose=0, validation_split=0.1)
    assert h.history["loss"][-1] < h.history["loss"][0] / 5
    assert h.history["val_accuracy"][-1] >= 0.9
    assert m.evaluate(xte, yte, verbose=0)[1] >= 0.92


@pytest.mark.slow
def test_small_cnn_reaches_97_percent():
    import cnn_digits

    assert cnn_digits.train_small() >= 0.97


@pytest.mark.slow
def test_mission_cnn_on_upscaled_digits_reaches_95_percent():
    import cnn_digits

    assert cnn_digits.train_mission() >= 0.95
