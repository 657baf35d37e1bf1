"""Train convolutional networks on the bundled 8x8 handwritten digits with pyaiml.keras.

Two models, both trained from scratch on a fixed, stratified 80/20 split (seed 0):
  1. a small CNN on the native 8x8x1 images;
  2. the mission's image-recognition CNN (Conv2D 32 -> pool -> Conv2D 64 -> pool ->
     Dense 10, input 32x32x3, Adam, categorical cross-entropy, batch 32, 10 epochs) on the
     digits upscaled 4x (nearest neighbour) and repeated over 3 channels.
Prints per-epoch progress (one line per epoch), test accuracy and the time taken.

Run:  python examples/cnn_digits.py            (both models)
      python examples/cnn_digits.py --small    (only the 8x8 model)
Not a benchmark (see pyaiml/bench/train.py) and not a test (tests/test_keras_train.py).
"""
from __future__ import annotations

import sys
import time

import numpy as np

import pyaiml
from pyaiml.datasets import load_digits
from pyaiml.keras import layers, utils
from pyaiml.keras.models import Sequential


def digits_split(seed=0):
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    return utils.stratified_split(x, y, test_size=0.2, seed=seed)


def small_cnn():
    return Sequential([
        layers.Conv2D(32, 3, padding="same", activation="relu", input_shape=(8, 8, 1)),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])


def mission_cnn():
    model = Sequential()
    model.add(layers.Conv2D(32, (3, 3), activation="relu", input_shape=(32, 32, 3)))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Flatten())
    model.add(layers.Dense(10, activation="softmax"))
    return model


def to_32x32x3(x):
    """(n, 8, 8, 1) -> (n, 32, 32, 3): each pixel becomes a 4x4 block, channels repeated."""
    return np.ascontiguousarray(np.repeat(np.repeat(np.repeat(x, 4, axis=1), 4, axis=2), 3, axis=3))


def train_small(epochs=15):
    utils.set_random_seed(0)
    xtr, xte, ytr, yte = digits_split()
    model = small_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    t = time.perf_counter()
    model.fit(xtr, ytr, epochs=epochs, batch_size=32, verbose=2)
    dt = time.perf_counter() - t
    loss, acc = model.evaluate(xte, yte, verbose=0)
    print(f"small CNN (8x8x1): test accuracy {acc:.4f}, loss {loss:.4f}, {epochs} epochs in {dt:.1f} s")
    return acc


def train_mission(epochs=10):
    utils.set_random_seed(0)
    xtr, xte, ytr, yte = digits_split()
    xtr, xte = to_32x32x3(xtr), to_32x32x3(xte)
    ytr, yte = utils.to_categorical(ytr, 10), utils.to_categorical(yte, 10)
    model = mission_cnn()
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    t = time.perf_counter()
    model.fit(xtr, ytr, epochs=epochs, batch_size=32, verbose=2)
    dt = time.perf_counter() - t
    loss, acc = model.evaluate(xte, yte, verbose=0)
    print(f"mission CNN (32x32x3): test accuracy {acc:.4f}, loss {loss:.4f}, {epochs} epochs in {dt:.1f} s")
    return acc


if __name__ == "__main__":
    pyaiml.set_num_threads(2)
    train_small()
    if "--small" not in sys.argv:
        train_mission()
