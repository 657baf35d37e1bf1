"""Numba fallback for scaled dot-product attention (forward and backward).

Same arguments and results as pyaiml.reference.attention (the registry's normalised 4-D
form): one query row at a time, float64 accumulation, masked pairs skipped (so NaN/inf in
masked positions never leak), no Lq x Lk matrix. Parallel over (batch, kv head): each task
owns dK/dV of its kv head and dQ of its query-head group, so results do not depend on the
thread count. Not flash-tiled: the C++ kernel is the fast path. Tests: tests/test_attention.py.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np


@nb.njit(cache=True, fastmath=False)
def _row_probs(q, k, bmask, fmask, kind, causal, scale, n, hq, hk, i, s, vis):
    """Probabilities of row (n, hq, i) into s (visible keys); returns lse (inf when none)."""
    Lk = k.shape[2]
    D = q.shape[3]
    mx = -np.inf
    nan = False
    for j in range(Lk):
        ok = (not causal) or j <= i
        add = 0.0
        if ok and kind == 1:
            ok = bmask[n, hq, i, j]
        if ok and kind == 2:
            add = float(fmask[n, hq, i, j])
            ok = add != -np.inf
        vis[j] = ok
        if not ok:
            continue
        d = 0.0
        for c in range(D):
            d += float(q[n, hq, i, c]) * float(k[n, hk, j, c])
        x = d * scale + add
        s[j] = x
        if x != x:
            nan = True
        elif x > mx:
            mx = x
    if nan:
        mx = np.nan
    if mx == -np.inf:
        return np.inf
    l = 0.0
    for j in range(Lk):
        if vis[j]:
            s[j] = math.exp(s[j] - mx)
            l += s[j]
    for j in range(Lk):
        if vis[j]:
            s[j] /= l
    return mx + math.log(l)


@nb.njit(parallel=True, cache=True)
def _forward(q, k, v, bmask, fmask, kind, causal, scale, out, lse):
    N, Hq, Lq, _ = q.shape
    Hk = k.shape[1]
    Lk = k.shape[2]
    Dv = v.shape[3]
    G = Hq // Hk
    for t in nb.prange(N * Hq):
        n = t // Hq
        hq = t % Hq
        hk = hq // G
        s = np.zeros(Lk + 1)
        vis = np.zeros(Lk + 1, dtype=np.bool_)
        acc = np.zeros(Dv)
        for i in range(Lq):
            L = _row_probs(q, k, bmask, fmask, kind, causal, scale, n, hq, hk, i, s, vis)
            acc[:] = 0.0
            if L != np.inf:
                for j in range(Lk):
                    if vis[j]:
                        p = s[j]
                        for c in range(Dv):
                            acc[c] += p * float(v[n, hk, j, c])
            for c in range(Dv):
                out[n, hq, i, c] = acc[c]
            lse[n, hq, i] = L


@nb.njit(parallel=True, cache=True)
def _backward(g, q, k, v, bmask, fmask, kind, causal, scale, dq, dk, dv):
    N, Hq, Lq, D = q.shape
    Hk = k.shape[1]
    Lk = k.shape[2]
    Dv = v.shape[3]
    G = Hq // Hk
    for t in nb.prange(N * Hk):
        n = t // Hk
        hk = t % Hk
        s = np.zeros(Lk + 1)
        dp = np.zeros(Lk + 1)
        vis = np.zeros(Lk + 1, dtype=np.bool_)
        dqr = np.zeros(D)
        dka = np.zeros((Lk, D))
        dva = np.zeros((Lk, Dv))
        for gi in range(G):
            hq = hk * G + gi
            for i in range(Lq):
                dqr[:] = 0.0
                L = _row_probs(q, k, bmask, fmask, kind, causal, scale, n, hq, hk, i, s, vis)
                if L != np.inf:
                    Di = 0.0
                    for j in range(Lk):
                        if vis[j]:
                            d = 0.0
                            for c in range(Dv):
                                d += float(g[n, hq, i, c]) * float(v[n, hk, j, c])
                            dp[j] = d
                            Di += s[j] * d
                    for j in range(Lk):
                        if vis[j]:
                            ds = s[j] * (dp[j] - Di) * scale
                            for c in range(D):
                                dqr[c] += ds * float(k[n, hk, j, c])
                                dka[j, c] += ds * float(q[n, hq, i, c])
                            for c in range(Dv):
                                dva[j, c] += s[j] * float(g[n, hq, i, c])
                for c in range(D):
                    dq[n, hq, i, c] = dqr[c]
        for j in range(Lk):
            for c in range(D):
                dk[n, hk, j, c] = dka[j, c]
            for c in range(Dv):
                dv[n, hk, j, c] = dva[j, c]


_NO_BOOL = np.zeros((1, 1, 1, 1), dtype=np.bool_)
_NO_FLOAT = np.zeros((1, 1, 1, 1), dtype=np.float32)


def _mask_args(mask):
    """(bool mask, float mask, kind): kind 0 none, 1 bool, 2 float; the unused one is a dummy."""
    if mask is None:
        return _NO_BOOL, _NO_FLOAT, 0
    if mask.dtype == np.bool_:
        return mask, _NO_FLOAT, 1
    return _NO_BOOL, mask, 2


def attention_forward(q, k, v, mask=None, is_causal=False, scale=1.0):
    """(out (N, Hq, Lq, Dv), lse (N, Hq, Lq)) in q's dtype."""
    N, Hq, Lq, _ = q.shape
    out = np.empty((N, Hq, Lq, v.shape[3]), dtype=q.dtype)
    lse = np.empty((N, Hq, Lq), dtype=q.dtype)
    bm, fm, kind = _mask_args(mask)
    _forward(q, k, v, bm, fm, kind, bool(is_causal), float(scale), out, lse)
    return out, lse


def attention_backward(grad_out, q, k, v, mask=None, is_causal=False, scale=1.0, out=None, lse=None):
    """(dq, dk, dv); out/lse are not needed (probabilities are recomputed row by row)."""
    dq = np.empty(q.shape, dtype=q.dtype)
    dk = np.empty(k.shape, dtype=q.dtype)
    dv = np.empty(v.shape, dtype=q.dtype)
    bm, fm, kind = _mask_args(mask)
    _backward(grad_out, q, k, v, bm, fm, kind, bool(is_causal), float(scale), dq, dk, dv)
    return dq, dk, dv
