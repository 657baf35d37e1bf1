"""Numba fallbacks for the ``norm`` (LayerNorm / RMSNorm rows in parallel),
``layer_norm_backward``, ``gelu_tanh`` and ``swiglu`` ops."""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(fastmath=False, cache=True)
def _row_stats(x, r, eps, rms):
    """(mean, 1 / sqrt(var + eps)) of row r (RMSNorm: mean 0, the root mean square)."""
    n = x.shape[1]
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
    return mean, np.float32(1.0) / np.sqrt(q / np.float32(n) + np.float32(eps))


@nb.njit(parallel=True, fastmath=False, cache=True)
def _norm_kernel(x, w, has_w, b, has_b, eps, rms, y):
    rows, n = x.shape
    for r in nb.prange(rows):
        mean, scale = _row_stats(x, r, eps, rms)
        for i in range(n):
            v = (x[r, i] - mean) * scale
            if has_w:
                v *= w[i]
            if has_b:
                v += b[i]
            y[r, i] = v


_CHUNK = 32  # rows per partial weight-gradient sum, as the C++ kernel


@nb.njit(parallel=True, fastmath=False, cache=True)
def _ln_back_kernel(g, x, w, has_w, eps, dx, need_dx, pw, pb):
    rows, n = x.shape
    chunks = pw.shape[0]
    for c in nb.prange(chunks):
        for i in range(n):
            pw[c, i] = 0.0
            pb[c, i] = 0.0
        xh = np.empty(n, np.float32)
        d = np.empty(n, np.float32)
        for r in range(c * _CHUNK, min(rows, (c + 1) * _CHUNK)):
            mean, rstd = _row_stats(x, r, eps, False)
            s1 = np.float32(0.0)
            s2 = np.float32(0.0)
            for i in range(n):
                h = (x[r, i] - mean) * rstd
                dv = g[r, i] * w[i] if has_w else g[r, i]
                s1 += dv
                s2 += dv * h
                xh[i] = h
                d[i] = dv
                pw[c, i] += g[r, i] * h
                pb[c, i] += g[r, i]
            if need_dx:
                m1 = s1 / np.float32(n)
                m2 = s2 / np.float32(n)
                for i in range(n):
                    dx[r, i] = rstd * (d[i] - m1 - xh[i] * m2)


def layer_norm_backward(g2, x2, weight=None, eps=1e-5, need=(True, True, True)):
    rows, n = x2.shape
    chunks = max(1, -(-rows // _CHUNK))
    dx = np.empty(x2.shape, np.float32) if need[0] else np.empty((1, 1), np.float32)
    pw = np.empty((chunks, n), np.float32)
    pb = np.empty((chunks, n), np.float32)
    w = np.ones(1, np.float32) if weight is None else weight
    _ln_back_kernel(g2, x2, w, weight is not None, eps, dx, bool(need[0]), pw, pb)
    return (dx if need[0] else None, pw.sum(axis=0) if need[1] else None, pb.sum(axis=0) if need[2] else None)


def norm(x2, weight=None, bias=None, eps=1e-5, rms=False):
    y = np.empty(x2.shape, dtype=np.float32)
    one = np.ones(1, np.float32)
    _norm_kernel(x2, one if weight is None else weight, weight is not None, one if bias is None else bias,
                 bias is not None, eps, bool(rms), y)
    return y


@nb.njit(parallel=True, fastmath=False, cache=True)
def _gelu_kernel(x, y):
    for i in nb.prange(x.size):
        v = x[i]
        y[i] = np.float32(0.5) * v * (np.float32(1.0) + np.tanh(np.float32(0.7978845608028654) * (
            v + np.float32(0.044715) * v * v * v)))


def gelu_tanh(x):
    c = np.ascontiguousarray(x, dtype=np.float32)
    y = np.empty_like(c)
    _gelu_kernel(c.reshape(-1), y.reshape(-1))
    return y


@nb.njit(parallel=True, fastmath=False, cache=True)
def _swiglu_kernel(x, y):
    rows, n2 = x.shape
    n = n2 // 2
    for r in nb.prange(rows):
        for i in range(n):
            g = x[r, i]
            y[r, i] = g / (np.float32(1.0) + np.exp(-g)) * x[r, n + i]


def swiglu(x2):
    y = np.empty((x2.shape[0], x2.shape[1] // 2), dtype=np.float32)
    _swiglu_kernel(x2, y)
    return y


@nb.njit(parallel=True, fastmath=False, cache=True)
def _rope_qk_kernel(qkv, cos, sin, H, Hk, q, k):
    B, L, _ = qkv.shape
    half = cos.shape[2]
    D = 2 * half
    for r in nb.prange(B * L):
        b = r // L
        l = r % L
        for h in range(H + Hk):
            o = h * D
            for i in range(half):
                x1 = qkv[b, l, o + i]
                x2 = qkv[b, l, o + half + i]
                c = cos[b, l, i]
                s = sin[b, l, i]
                a = x1 * c
                bb = x2 * s
                d = x2 * c
                e = x1 * s
                if h < H:
                    q[b, h, l, i] = a - bb
                    q[b, h, l, half + i] = d + e
                else:
                    k[b, l, h - H, i] = a - bb
                    k[b, l, h - H, half + i] = d + e


def rope_qk(qkv, cos, sin, H, Hk):
    B, L, _ = qkv.shape
    D = 2 * cos.shape[2]
    q = np.empty((B, H, L, D), dtype=np.float32)
    k = np.empty((B, L, Hk, D), dtype=np.float32)
    _rope_qk_kernel(qkv, cos, sin, H, Hk, q, k)
    return q, k
