"""Numba fallback for the ``gemm`` op: rows in parallel, an i-k-j loop that vectorises."""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(parallel=True, fastmath=True, cache=True)
def _gemm_kernel(a, b, bias, has_bias, relu, c):
    Bt, M, K = a.shape
    N = b.shape[2]
    for t in range(Bt):
        for i in nb.prange(M):
            row = np.zeros(N, dtype=np.float32)
            for k in range(K):
                aik = a[t, i, k]
                for j in range(N):
                    row[j] += aik * b[t, k, j]
            for j in range(N):
                v = row[j]
                if has_bias:
                    v += bias[j]
                if relu and v < 0.0:
                    v = 0.0
                c[t, i, j] = v


def gemm(a3, b3, bias=None, relu=False):
    Bt, M, _ = a3.shape
    N = b3.shape[2]
    c = np.empty((Bt, M, N), dtype=np.float32)
    has_bias = bias is not None
    bias_arr = bias if has_bias else np.zeros(1, dtype=np.float32)
    _gemm_kernel(a3, b3, bias_arr, has_bias, bool(relu), c)
    return c
