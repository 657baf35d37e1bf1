"""Adapter from the registry's ``word2vec_train_epoch`` signature to pyaiml._C."""
from __future__ import annotations

import numpy as np

from pyaiml import _backend

_C = _backend.native()
_E32 = {"alias_thr": np.uint32, "alias_idx": np.int32, "codes": np.uint8, "points": np.int32, "code_off": np.int64}


def train_epoch(syn0, syn1neg, syn1, words, sent_off, job_off, sample_thr, alias_thr, alias_idx, codes, points,
                code_off, sg, hs, negative, window, cbow_mean, shrink_windows, alpha, min_alpha, epoch, epochs,
                seed, workers, compute_loss, lockf=None):
    e = np.zeros(0, np.float32).reshape(0, 16)
    extra = () if lockf is None else (lockf,)  # an extension built before lockf existed still trains
    return _C.w2v_train_epoch(
        syn0, syn1neg if syn1neg is not None else e, syn1 if syn1 is not None else e, words, sent_off, job_off,
        sample_thr, alias_thr, alias_idx, codes, points, code_off, int(sg), int(hs), int(negative), int(window),
        int(cbow_mean), int(shrink_windows), float(alpha), float(min_alpha), int(epoch), int(epochs),
        int(seed) & 0xFFFFFFFFFFFFFFFF, int(workers), int(bool(compute_loss)), *extra)
