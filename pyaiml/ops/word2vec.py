"""Word2Vec's training epoch as an op: ``word2vec_train_epoch``.

One contract for every backend (C++ ``pyaiml._C.w2v_train_epoch``, the Numba fallback, the
NumPy oracle; csrc/cpu/word2vec.h describes the arrays): every argument is checked here,
before the registry's implementation runs, so the Numba and NumPy trainers never index out of
bounds, and an integer beyond its C type is a ``ValueError`` naming it instead of pybind11's
``incompatible function arguments``. The C++ binding repeats the array checks for direct
callers of ``_C``.

Not here: the vocabulary and tables (pyaiml/text/vocab.py), the model (pyaiml/text/word2vec.py).
Tests: tests/test_word2vec.py.
"""
from __future__ import annotations

import math

import numpy as np

from pyaiml import _backend

_backend.register_op(
    "word2vec_train_epoch",
    cpp="pyaiml.ops._native_word2vec:train_epoch",
    numba="pyaiml._numba.word2vec:train_epoch",
    numpy="pyaiml.reference.word2vec:train_epoch",
)

OP = "word2vec_train_epoch"
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
MAX_NEGATIVE = 1000  # noise words per example (the C++ binding's limit)
MAX_WORKERS = 1024   # trainer threads per call (the C++ binding's limit)
PAD = 16             # syn0/syn1neg/syn1 rows are padded to a multiple of 16 floats


def check_int(name, v, lo, hi, op=OP):
    """``v`` as a Python int in [lo, hi]; bools and non-integers are refused."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{op}: {name} must be an integer in [{lo}, {hi}]. Received {type(v).__name__} {v!r:.40}")
    if not lo <= v <= hi:
        raise ValueError(f"{op}: {name} must be an integer in [{lo}, {hi}]. Received {v}")
    return int(v)


def _flag(name, v):
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    return check_int(name, v, 0, 1)


def _vec(a, name, dtype, length=None):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{OP}: {name} must be a NumPy array. Received {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{OP}: {name} must have dtype {np.dtype(dtype)}. Received {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{OP}: {name} must be 1-D. Received shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{OP}: {name} must be C-contiguous")
    if length is not None and a.shape[0] != length:
        raise ValueError(f"{OP}: {name} must have length {length}. Received shape {a.shape}")
    return a


def _mat(a, name, V, ld):
    if not isinstance(a, np.ndarray) or a.dtype != np.float32:
        raise TypeError(f"{OP}: {name} must be a float32 NumPy array. Received "
                        f"{getattr(a, 'dtype', type(a).__name__)}")
    if a.shape != (V, ld):
        raise ValueError(f"{OP}: {name} must have shape ({V}, {ld}). Received shape {a.shape}")
    if not a.flags.c_contiguous or not a.flags.writeable:
        raise ValueError(f"{OP}: {name} must be C-contiguous and writeable")
    return a


def _offsets(a, name, end, what):
    _vec(a, name, np.int64)
    if a.shape[0] < 1 or a[0] != 0 or a[-1] != end:
        raise ValueError(f"{OP}: {name} must start at 0 and end at {what} ({end}). Received "
                         f"{a[:1].tolist()} .. {a[-1:].tolist()}")
    if a.shape[0] > 1 and (np.diff(a) < 0).any():
        i = int(np.argmax(np.diff(a) < 0))
        raise ValueError(f"{OP}: {name} must be non-decreasing. Received {a[i]} then {a[i + 1]} at {i}")


def _in_range(a, name, hi):
    if a.size and (a.min() < 0 or a.max() >= hi):
        i = int(np.argmax((a < 0) | (a >= hi)))
        raise ValueError(f"{OP}: {name} must be in [0, {hi}). Received {a[i]} at position {i}")


def word2vec_train_epoch(syn0, syn1neg, syn1, words, sent_off, job_off, sample_thr, alias_thr, alias_idx, codes,
                         points, code_off, sg, hs, negative, window, cbow_mean, shrink_windows, alpha, min_alpha,
                         epoch, epochs, seed, workers, compute_loss, lockf=None):
    """One epoch of Word2Vec training, in place on ``syn0``/``syn1neg``/``syn1``.

    Parameters
    ----------
    syn0 : (V, ld) float32, ld a multiple of 16 (padding columns zero); input vectors.
    syn1neg, syn1 : (V, ld) float32 or None; output weights of negative sampling (needed when
        negative > 0) and of hierarchical softmax (needed when hs).
    words : (N,) int32 word ids in [0, V); sent_off : (S + 1,) int64 sentence offsets into
        words; job_off : (J + 1,) int64 job boundaries in sentences.
    sample_thr : (V,) uint32 keep thresholds; alias_thr (V,) uint32 and alias_idx (V,) int32
        in [0, V): the noise alias table (when negative > 0); codes (C,) uint8 in {0, 1},
        points (C,) int32 in [0, V), code_off (V + 1,) int64: Huffman paths (when hs).
    sg, hs, cbow_mean, shrink_windows, compute_loss : 0 or 1.
    negative : int in [0, 1000]; window : int in [1, 2**31 - 1]; workers : [1, 1024].
    alpha, min_alpha : finite learning rates (linear decay from alpha to min_alpha).
    epoch, epochs : 0 <= epoch < epochs <= 2**63 - 1; seed : int in [0, 2**64).
    lockf : (V,) float32 or None
        Per-word factor on the updates of syn0 (gensim's ``vectors_lockf``: 0 freezes a word's
        input vector, 1 trains it normally); None trains every word normally.

    Returns
    -------
    (loss, effective_words, examples) : float (0.0 unless compute_loss), int, int
    """
    sg, hs = _flag("sg", sg), _flag("hs", hs)
    cbow_mean, shrink_windows = _flag("cbow_mean", cbow_mean), _flag("shrink_windows", shrink_windows)
    compute_loss = _flag("compute_loss", compute_loss)
    negative = check_int("negative", negative, 0, MAX_NEGATIVE)
    window = check_int("window", window, 1, INT32_MAX)
    workers = check_int("workers", workers, 1, MAX_WORKERS)
    epochs = check_int("epochs", epochs, 1, INT64_MAX)
    epoch = check_int("epoch", epoch, 0, epochs - 1)
    seed = check_int("seed", seed, 0, 2**64 - 1)
    if not hs and negative == 0:
        raise ValueError(f"{OP}: at least one of hs=1 or negative>0 is needed")
    for name, v in (("alpha", alpha), ("min_alpha", min_alpha)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not math.isfinite(v):
            raise ValueError(f"{OP}: {name} must be a finite number. Received {v!r}")
    if not isinstance(syn0, np.ndarray) or syn0.ndim != 2:
        raise ValueError(f"{OP}: syn0 must be a 2-D float32 array (V, ld). Received "
                         f"{getattr(syn0, 'shape', type(syn0).__name__)}")
    V, ld = syn0.shape
    if V < 1:
        raise ValueError(f"{OP}: the vocabulary must not be empty. Received syn0 of shape {syn0.shape}")
    if ld < PAD or ld % PAD:
        raise ValueError(f"{OP}: syn0 rows must be padded to a multiple of {PAD} floats. Received shape {syn0.shape}")
    _mat(syn0, "syn0", V, ld)
    if negative:
        _mat(syn1neg, "syn1neg", V, ld)
    if hs:
        _mat(syn1, "syn1", V, ld)
    _vec(words, "words", np.int32)
    _in_range(words, "words", V)
    _offsets(sent_off, "sent_off", words.shape[0], "len(words)")
    _offsets(job_off, "job_off", sent_off.shape[0] - 1, "the number of sentences")
    _vec(sample_thr, "sample_thr", np.uint32, V)
    if negative:
        _vec(alias_thr, "alias_thr", np.uint32, V)
        _vec(alias_idx, "alias_idx", np.int32, V)
        _in_range(alias_idx, "alias_idx", V)
    if hs:
        _vec(codes, "codes", np.uint8)
        C = codes.shape[0]
        _vec(points, "points", np.int32, C)
        _offsets(code_off, "code_off", C, "len(codes)")
        if code_off.shape[0] != V + 1:
            raise ValueError(f"{OP}: code_off must have length {V + 1}. Received shape {code_off.shape}")
        _in_range(codes, "codes", 2)
        _in_range(points, "points", V)
    if lockf is not None:
        _vec(lockf, "lockf", np.float32, V)
        if not np.isfinite(lockf).all():
            i = int(np.argmax(~np.isfinite(lockf)))
            raise ValueError(f"{OP}: lockf must be finite. Received {lockf[i]} at position {i}")
    return _backend.resolve(OP)(syn0, syn1neg, syn1, words, sent_off, job_off, sample_thr, alias_thr, alias_idx,
                                codes, points, code_off, sg, hs, negative, window, cbow_mean, shrink_windows,
                                float(alpha), float(min_alpha), epoch, epochs, seed, workers, bool(compute_loss),
                                lockf)
