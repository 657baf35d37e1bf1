"""Keras utilities: to_categorical, set_random_seed, and a stratified train/test split.
Tests: tests/test_keras_api.py.
"""
from __future__ import annotations

import random

import numpy as np

from pyaiml.keras import _common


def to_categorical(y, num_classes=None, dtype="float32"):
    """Integer class ids (...,) -> one-hot (..., num_classes)."""
    y = np.asarray(y)
    if y.dtype.kind == "f":
        if not np.all(y == np.round(y)):
            raise ValueError("to_categorical: y must hold integer class ids. Received non-integer values")
    if y.ndim > 1 and y.shape[-1] == 1:
        y = y[..., 0]
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError(f"to_categorical: class ids must be >= 0. Received {y.min()}")
    n = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if y.size and y.max() >= n:
        raise ValueError(f"to_categorical: class id {int(y.max())} does not fit num_classes={n}")
    out = np.zeros(y.shape + (n,), dtype=dtype)
    np.put_along_axis(out, y[..., None], 1, axis=-1)
    return out


def set_random_seed(seed: int) -> None:
    """Seed Python's random, NumPy's global RNG and pyaiml.keras's generator (weight
    initialisation, dropout, shuffling), so a CPU run repeats exactly."""
    if not isinstance(seed, (int, np.integer)):
        raise ValueError(f"set_random_seed: seed must be an integer. Received {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % (2 ** 32))
    _common.seed(int(seed))


def stratified_split(x, y, test_size=0.2, seed=0):
    """Split (x, y) keeping each class's proportion in both parts.

    Returns x_train, x_test, y_train, y_test (y may be ids or one-hot)."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"stratified_split: x and y must have the same length. Received {len(x)} and {len(y)}")
    ids = y.argmax(-1) if y.ndim > 1 else y
    r = np.random.default_rng(seed)
    test = []
    for c in np.unique(ids):
        idx = np.flatnonzero(ids == c)
        r.shuffle(idx)
        test.extend(idx[:int(round(len(idx) * test_size))])
    mask = np.zeros(len(y), dtype=bool)
    mask[test] = True
    tr, te = np.flatnonzero(~mask), np.flatnonzero(mask)
    r.shuffle(tr)
    r.shuffle(te)
    return x[tr], x[te], y[tr], y[te]
