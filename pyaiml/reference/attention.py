"""NumPy reference for scaled dot-product attention (float64 inside, whole score matrix).

Slow and obvious: the oracle the C++ and Numba kernels are tested against, and the path
float64 inputs take. Not flash-style: it materialises (N, Hq, Lq, Lk) scores.

Shapes (the registry's normalised form, see pyaiml/ops/attention.py):
q (N, Hq, Lq, D), k (N, Hk, Lk, D), v (N, Hk, Lk, Dv), Hq = G * Hk; mask None or
(N, Hq, Lq, Lk) bool (True = attend) or additive float. Causal: key j visible to query i iff
j <= i. A row with no visible key: out 0, lse +inf, zero gradients. Masked pairs are
excluded before any arithmetic, so NaN/inf in masked positions of q, k, v do not leak.
Tests: tests/test_attention.py.
"""
from __future__ import annotations

import numpy as np


def _visible(N, Hq, Lq, Lk, mask, is_causal):
    vis = np.ones((N, Hq, Lq, Lk), dtype=bool)
    add = np.zeros((N, Hq, Lq, Lk), dtype=np.float64)
    if is_causal:
        vis &= np.tril(np.ones((Lq, Lk), dtype=bool))
    if mask is not None:
        if mask.dtype == np.bool_:
            vis &= mask
        else:
            m = mask.astype(np.float64)
            vis &= m != -np.inf
            add = np.where(vis, m, 0.0)
    return vis, add


def _expand_kv(x, G):
    return np.repeat(x, G, axis=1) if G > 1 else x


def _probs(q, k, mask, is_causal, scale):
    """(P (N, Hq, Lq, Lk) float64, lse (N, Hq, Lq) float64, vis)."""
    N, Hq, Lq, _ = q.shape
    G = Hq // k.shape[1]
    Lk = k.shape[2]
    vis, add = _visible(N, Hq, Lq, Lk, mask, is_causal)
    q64 = q.astype(np.float64)
    k64 = _expand_kv(k.astype(np.float64), G)
    with np.errstate(invalid="ignore", over="ignore"):
        if q.size * Lk < 2_000_000:
            # Masked pairs are zeroed product by product, so they cannot leak NaN/inf.
            s = np.where(vis[..., None], q64[..., :, None, :] * k64[..., None, :, :], 0.0).sum(-1)
        else:  # large: one einsum (inputs assumed finite there)
            s = np.einsum("nhid,nhjd->nhij", q64, k64)
        s = s * scale + add
    s = np.where(vis, s, -np.inf)
    mx = s.max(-1, keepdims=True)
    empty = ~vis.any(-1, keepdims=True)
    mx = np.where(empty, 0.0, mx)
    with np.errstate(invalid="ignore"):
        e = np.where(vis, np.exp(s - mx), 0.0)
    l = e.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(empty, 0.0, e / np.where(empty, 1.0, l))
        lse = np.where(empty, np.inf, mx + np.log(np.where(empty, 1.0, l)))[..., 0]
    return p, lse, vis


def _pv(p, v, vis):
    """sum_j p_ij v_j over visible j only (masked v rows never touch the result)."""
    G = p.shape[1] // v.shape[1]
    v64 = _expand_kv(v.astype(np.float64), G)
    if p.size * v.shape[-1] < 4_000_000:
        with np.errstate(invalid="ignore", over="ignore"):
            return np.where(vis[..., None], p[..., None] * v64[..., None, :, :], 0.0).sum(-2)
    return p @ v64


def attention_forward(q, k, v, mask=None, is_causal=False, scale=1.0):
    """(out (N, Hq, Lq, Dv), lse (N, Hq, Lq)) in q's dtype."""
    p, lse, vis = _probs(q, k, mask, is_causal, scale)
    out = _pv(p, v, vis)
    return out.astype(q.dtype), lse.astype(q.dtype)


def attention_backward(grad_out, q, k, v, mask=None, is_causal=False, scale=1.0, out=None, lse=None):
    """(dq (N, Hq, Lq, D), dk (N, Hk, Lk, D), dv (N, Hk, Lk, Dv)); out/lse are not needed."""
    N, Hq, Lq, D = q.shape
    Hk = k.shape[1]
    G = Hq // Hk
    p, _, vis = _probs(q, k, mask, is_causal, scale)
    g = grad_out.astype(np.float64)
    g = np.where(vis.any(-1)[..., None], g, 0.0)
    v64 = _expand_kv(v.astype(np.float64), G)
    k64 = _expand_kv(k.astype(np.float64), G)
    q64 = np.where(vis.any(-1)[..., None], q.astype(np.float64), 0.0)
    small = p.size * max(D, v.shape[-1]) < 4_000_000
    with np.errstate(invalid="ignore", over="ignore"):
        return _grads(p, vis, g, q64, k64, v64, scale, small, N, Hk, G, q.dtype)


def _grads(p, vis, g, q64, k64, v64, scale, small, N, Hk, G, dtype):
    if small:
        dp = np.where(vis[..., None], g[..., :, None, :] * v64[..., None, :, :], 0.0).sum(-1)
    else:
        dp = g @ np.swapaxes(v64, -1, -2)
    dp = np.where(vis, dp, 0.0)
    Di = (p * dp).sum(-1, keepdims=True)
    ds = np.where(vis, p * (dp - Di), 0.0) * scale
    if small:
        dq = np.where(vis[..., None], ds[..., None] * k64[..., None, :, :], 0.0).sum(-2)
        dk = np.where(vis[..., None], ds[..., None] * q64[..., :, None, :], 0.0).sum(-3)
        dv = np.where(vis[..., None], p[..., None] * g[..., :, None, :], 0.0).sum(-3)
    else:
        dq = ds @ k64
        dk = np.swapaxes(ds, -1, -2) @ q64
        dv = np.swapaxes(p, -1, -2) @ g
    if G > 1:
        dk = dk.reshape(N, Hk, G, *dk.shape[2:]).sum(2)
        dv = dv.reshape(N, Hk, G, *dv.shape[2:]).sum(2)
    return dq.astype(dtype), dk.astype(dtype), dv.astype(dtype)
