"""Numba fallback for the ``norm`` op: LayerNorm / RMSNorm rows in parallel."""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(parallel=True, fastmath=False, cache=True)
def _norm_kernel(x, w, has_w, b, has_b, eps, rms, y):
    rows, n = x.shape
    for r in nb.prange(rows):
        mean = np.float32(0.0)
        if not rms:
            s = np.float32(0.0)
            for i in range(n):
                s += x[r, i]
            mean = s / np.float32(n)
        q = np.float32(0.0)
        for i in range(n):
            d = x[r, i] - mean
            q += d * d
        scale = np.float32(1.0) / np.sqrt(q / np.float32(n) + np.float32(eps))
        for i in range(n):
            v = (x[r, i] - mean) * scale
            if has_w:
                v *= w[i]
            if has_b:
                v += b[i]
            y[r, i] = v


def norm(x2, weight=None, bias=None, eps=1e-5, rms=False):
    y = np.empty(x2.shape, dtype=np.float32)
    one = np.ones(1, np.float32)
    _norm_kernel(x2, one if weight is None else weight, weight is not None, one if bias is None else bias,
                 bias is not None, eps, bool(rms), y)
    return y
