"""Numba fallbacks for the ``gemm`` op (rows in parallel, an i-k-j loop that vectorises), the
``linear_q8`` and ``linear_q8_packed`` ops (column blocks in parallel, int8 weights widened
per 32-row block), ``linear_w8a8_packed`` (the same with x quantized per row and block, the
block sums in integers) and ``linear_f32_packed`` (float32 panels of 64 columns in parallel)."""
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


@nb.njit(parallel=True, fastmath=True, cache=True)
def _linear_q8_kernel(x, q, scale, bias, has_bias, y):
    M, K = x.shape
    N = q.shape[1]
    nblk = (N + 63) // 64
    for t in nb.prange(nblk):
        j0 = t * 64
        j1 = min(N, j0 + 64)
        acc = np.zeros((M, j1 - j0), dtype=np.float32)
        part = np.zeros(j1 - j0, dtype=np.float32)
        for kb in range(K // 32):
            sc = scale[kb, j0:j1]
            for i in range(M):
                part[:] = 0.0
                for k in range(kb * 32, kb * 32 + 32):
                    xik = x[i, k]
                    for j in range(j1 - j0):
                        part[j] += xik * np.float32(q[k, j0 + j])
                for j in range(j1 - j0):
                    acc[i, j] += part[j] * sc[j]
        for i in range(M):
            for j in range(j1 - j0):
                v = acc[i, j]
                if has_bias:
                    v += bias[j0 + j]
                y[i, j0 + j] = v


def linear_q8(x2, q, scale, bias=None):
    M = x2.shape[0]
    y = np.empty((M, q.shape[1]), dtype=np.float32)
    has_bias = bias is not None
    # Numba has no float16: the scales (1/32 of the weights' count) are widened first
    _linear_q8_kernel(x2, q, scale.astype(np.float32), bias if has_bias else np.zeros(1, np.float32), has_bias, y)
    return y


@nb.njit(parallel=True, fastmath=True, cache=True)
def _linear_q8_packed_kernel(x, qp, sp, bias, has_bias, y):
    M, K = x.shape
    P, _, W = qp.shape
    N = y.shape[1]
    for p in nb.prange(P):
        j0 = p * W
        w = min(W, N - j0)
        acc = np.zeros((M, W), dtype=np.float32)
        part = np.zeros(W, dtype=np.float32)
        for kb in range(K // 32):
            for i in range(M):
                part[:] = 0.0
                for k in range(kb * 32, kb * 32 + 32):
                    xik = x[i, k]
                    for j in range(W):
                        part[j] += xik * np.float32(qp[p, k, j])
                for j in range(W):
                    acc[i, j] += part[j] * sp[p, kb, j]
        for i in range(M):
            for j in range(w):
                v = acc[i, j]
                if has_bias:
                    v += bias[j0 + j]
                y[i, j0 + j] = v


def linear_q8_packed(x2, qp, sp, n, bias=None):
    y = np.empty((x2.shape[0], n), dtype=np.float32)
    has_bias = bias is not None
    _linear_q8_packed_kernel(x2, qp, sp.astype(np.float32), bias if has_bias else np.zeros(1, np.float32), has_bias,
                             y)
    return y


@nb.njit(parallel=True, fastmath=True, cache=True)
def _linear_f32_packed_kernel(x, wp, bias, has_bias, y):
    M, K = x.shape
    P, _, W = wp.shape
    N = y.shape[1]
    for p in nb.prange(P):
        j0 = p * W
        w = min(W, N - j0)
        acc = np.zeros(W, dtype=np.float32)
        for i in range(M):
            acc[:] = 0.0
            for k in range(K):
                xik = x[i, k]
                for j in range(W):
                    acc[j] += xik * wp[p, k, j]
            for j in range(w):
                v = acc[j]
                if has_bias:
                    v += bias[j0 + j]
                y[i, j0 + j] = v


def linear_f32_packed(x2, wp, n, bias=None):
    y = np.empty((x2.shape[0], n), dtype=np.float32)
    has_bias = bias is not None
    _linear_f32_packed_kernel(np.ascontiguousarray(x2), wp, bias if has_bias else np.zeros(1, np.float32), has_bias, y)
    return y


@nb.njit(parallel=True, cache=True)
def _linear_w8a8_packed_kernel(xq, xs, qp, sp, bias, has_bias, y):
    M, nb_, _ = xq.shape
    P, _, W = qp.shape
    N = y.shape[1]
    for p in nb.prange(P):
        j0 = p * W
        w = min(W, N - j0)
        for i in range(M):
            for j in range(w):
                t = np.float32(0.0)
                for b in range(nb_):
                    s = 0
                    for k in range(32):
                        s += np.int32(xq[i, b, k]) * np.int32(qp[p, b * 32 + k, j])
                    sv = np.float32(sp[p, b, j]) * xs[i, b]
                    t = np.float32(s) * sv if b == 0 else np.float32(s) * sv + t
                if has_bias:
                    t += bias[j0 + j]
                y[i, j0 + j] = t


def linear_w8a8_packed(x2, qp, sp, n, bias=None):
    from pyaiml.reference.gemm import quantize_rows_q8

    xq, xs = quantize_rows_q8(x2)
    y = np.empty((x2.shape[0], n), dtype=np.float32)
    has_bias = bias is not None
    _linear_w8a8_packed_kernel(xq.astype(np.int8), xs, qp, sp.astype(np.float32),
                               bias if has_bias else np.zeros(1, np.float32), has_bias, y)
    return y
