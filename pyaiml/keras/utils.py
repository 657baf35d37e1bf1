"""Keras utilities: to_categorical, set_random_seed, pad_sequences, split_dataset, and a
stratified train/test split.
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


def _split_sizes(left_size, right_size, n):
    """Keras's rules for split_dataset's sizes: an int counts samples (0 < size < n), a float
    is a fraction (0 < size < 1, rounded), None is the complement of the other; both parts
    must be non-empty and fit in n."""
    sizes = {}
    for side, v in (("left_size", left_size), ("right_size", right_size)):
        if v is None:
            sizes[side] = None
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"split_dataset: {side} must be an int, a float or None. Received {v!r}")
        if isinstance(v, (int, np.integer)):
            if not 0 < v < n:
                raise ValueError(f"split_dataset: {side} as an int counts samples: 0 < {side} < {n} (the dataset's "
                                 f"length). Received {v}")
            sizes[side] = int(v)
        else:
            if not 0 < v < 1:
                raise ValueError(f"split_dataset: {side} as a float is a fraction: 0 < {side} < 1. Received {v}")
            sizes[side] = float(v)
    lo, ro = sizes["left_size"], sizes["right_size"]
    if lo is None and ro is None:
        raise ValueError("split_dataset: give left_size, right_size or both. Received left_size=None and "
                         "right_size=None")
    if isinstance(lo, float) and isinstance(ro, float) and lo + ro > 1:
        raise ValueError(f"split_dataset: left_size + right_size must be at most 1. Received {lo} + {ro}")
    left = None if lo is None else (round(lo * n) if isinstance(lo, float) else lo)
    right = None if ro is None else (round(ro * n) if isinstance(ro, float) else ro)
    left = n - right if left is None else left
    right = n - left if right is None else right
    if left + right > n:
        raise ValueError(f"split_dataset: the two parts ({left} + {right} samples) exceed the dataset's {n}")
    if left == 0 or right == 0:
        side = "left" if left == 0 else "right"
        raise ValueError(f"split_dataset: with {n} samples, left_size={left_size!r} and right_size={right_size!r} "
                         f"leave the {side} part empty")
    return left, right


def split_dataset(dataset, left_size=None, right_size=None, shuffle=False, seed=None):
    """Split a dataset into a left part and a right part (train / validation), as
    ``keras.utils.split_dataset``: the left part is the first ``left_size`` samples, the
    right part the last ``right_size`` (after shuffling all samples when ``shuffle``).

    ``dataset`` is an array, a tuple or list of arrays of one length (``(x, y)``), or a dict
    of such arrays. Each part has the same structure, NumPy arrays where Keras returns a
    tf.data or torch dataset: ``(x_tr, y_tr), (x_val, y_val) = split_dataset((x, y), 0.8)``
    feeds ``fit`` directly. Sizes: an int counts samples, a float is a fraction, None the
    complement of the other side."""
    if isinstance(dataset, dict):
        keys = list(dataset)
        arrays = [np.asarray(dataset[k]) for k in keys]
        pack = lambda parts: dict(zip(keys, parts))
    elif isinstance(dataset, (tuple, list)):
        arrays = [np.asarray(a) for a in dataset]
        kind = type(dataset)
        pack = lambda parts: kind(parts)
    else:
        try:
            arrays = [np.asarray(dataset)]
        except Exception:  # noqa: BLE001 (any failed conversion: say what was received)
            arrays = None
        if arrays is None or arrays[0].dtype == object:
            raise TypeError("split_dataset: dataset must be an array, a tuple or list of arrays, or a dict of arrays. "
                            f"Received {type(dataset).__name__}")
        pack = lambda parts: parts[0]
    if not arrays:
        raise ValueError("split_dataset: dataset holds no arrays")
    if any(a.ndim == 0 for a in arrays):
        raise ValueError("split_dataset: every array needs a first (sample) axis. Received a scalar")
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise ValueError(f"split_dataset: every array must have the same length. Received lengths "
                         f"{[len(a) for a in arrays]}")
    n = lengths.pop()
    left, right = _split_sizes(left_size, right_size, n)
    order = np.arange(n)
    if shuffle:
        np.random.default_rng(seed).shuffle(order)
    li, ri = order[:left], order[n - right:]
    return pack([a[li] for a in arrays]), pack([a[ri] for a in arrays])
