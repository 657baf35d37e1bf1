"""Keras utilities: to_categorical, set_random_seed, pad_sequences, and a stratified train/test split.
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


def pad_sequences(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre", value=0.0):
    """Lists of ids -> one (n, maxlen) array, as Keras: sequences longer than ``maxlen`` lose
    their start (truncating='pre') or end ('post'); shorter ones are filled with ``value``
    before ('pre', the default) or after ('post'). ``maxlen`` defaults to the longest."""
    for name, v in (("padding", padding), ("truncating", truncating)):
        if v not in ("pre", "post"):
            raise ValueError(f"pad_sequences: {name} must be 'pre' or 'post'. Received {v!r}")
    try:
        seqs = [np.asarray(s) for s in sequences]
    except (TypeError, ValueError):
        raise ValueError("pad_sequences: sequences must be an iterable of sequences") from None
    if any(s.ndim != 1 for s in seqs if s.size):
        raise ValueError("pad_sequences: each sequence must be 1-D. Received shapes "
                         f"{sorted({s.shape for s in seqs if s.ndim != 1})}")
    n = max((len(s) for s in seqs), default=0) if maxlen is None else int(maxlen)
    if n < 0:
        raise ValueError(f"pad_sequences: maxlen must be >= 0. Received {maxlen}")
    out = np.full((len(seqs), n), value, dtype=dtype)
    for i, s in enumerate(seqs):
        if not len(s) or not n:
            continue
        s = s[-n:] if truncating == "pre" else s[:n]
        if padding == "post":
            out[i, :len(s)] = s
        else:
            out[i, n - len(s):] = s
    return out
