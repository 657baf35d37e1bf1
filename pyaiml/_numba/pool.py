"""Numba fallbacks of max pooling (forward and backward), with the registry signatures of
pyaiml/reference/pool.py (flat or window indices, fused ReLU, finite flag).

Direct loops over x indexed as (N, H, W, C); channels-first arrays are handed over as
transposed views (no copies), so one source serves both layouts. Forward is parallel over
output rows, backward over images (each image's gradient is written by one thread).
Not the fast path (csrc/cpu/pool.cpp is); float32 only (float64 runs in NumPy).
Tests: tests/test_pool.py runs these against torch.
"""
from __future__ import annotations

import numba as nb
import numpy as np

NO_GRAD = 255
_MODES = {None: 0, "flat": 1, "window": 2}


def _hwc(a, cl):
    return a if cl else a.transpose(0, 2, 3, 1)


@nb.njit(parallel=True, cache=True)
def _fwd(x, kh_, kw_, sh, sw, ph, pw, relu, mode, y, idx, win):
    N, H, W, C = x.shape
    _, OH, OW, _ = y.shape
    nbad = 0
    for t in nb.prange(N * OH):
        n = t // OH
        oh = t % OH
        for ow in range(OW):
            h0u = oh * sh - ph
            w0u = ow * sw - pw
            h0 = max(h0u, 0)
            h1 = min(h0u + kh_, H)
            w0 = max(w0u, 0)
            w1 = min(w0u + kw_, W)
            for c in range(C):
                m = x[n, h0, w0, c]
                a = h0 * W + w0
                p = (h0 - h0u) * kw_ + (w0 - w0u)
                for h in range(h0, h1):
                    for w_ in range(w0, w1):
                        v = x[n, h, w_, c]
                        if v > m or v != v:  # first maximum wins; NaN propagates
                            m = v
                            a = h * W + w_
                            p = (h - h0u) * kw_ + (w_ - w0u)
                if relu:
                    if not m > 0:
                        p = NO_GRAD
                    if m < 0:
                        m = np.float32(0.0)
                if m - m != 0:  # NaN or inf
                    nbad += 1
                y[n, oh, ow, c] = m
                if mode == 1:
                    idx[n, oh, ow, c] = a
                elif mode == 2:
                    win[n, oh, ow, c] = p
    return nbad


@nb.njit(parallel=True, cache=True)
def _bwd(gy, idx, win, mode, kh_, kw_, sh, sw, ph, pw, gx):
    N, H, W, C = gx.shape
    _, OH, OW, _ = gy.shape
    nbad = 0
    for n in nb.prange(N):
        for h in range(H):
            for w_ in range(W):
                for c in range(C):
                    gx[n, h, w_, c] = 0.0
        for oh in range(OH):
            for ow in range(OW):
                for c in range(C):
                    if mode == 1:
                        a = idx[n, oh, ow, c]
                        if a < 0 or a >= H * W:
                            nbad += 1
                            continue
                        h = a // W
                        w_ = a % W
                    else:
                        p = np.int64(win[n, oh, ow, c])
                        if p == NO_GRAD:
                            continue
                        h = oh * sh - ph + p // kw_
                        w_ = ow * sw - pw + p % kw_
                        if p >= kh_ * kw_ or h < 0 or h >= H or w_ < 0 or w_ >= W:
                            nbad += 1
                            continue
                    gx[n, h, w_, c] += gy[n, oh, ow, c]
    return nbad


def _pool_out(x, q, cl):
    kh, kw, sh, sw, ph, pw = q
    N = x.shape[0]
    C, H, W = (x.shape[3], x.shape[1], x.shape[2]) if cl else x.shape[1:]
    OH = (H + 2 * ph - kh) // sh + 1
    OW = (W + 2 * pw - kw) // sw + 1
    return (N, OH, OW, C) if cl else (N, C, OH, OW)


_D64 = np.zeros((1, 1, 1, 1), np.int64)
_D8 = np.zeros((1, 1, 1, 1), np.uint8)


def max_pool2d(x, q, cl=False, index=None, relu=False):
    kh, kw, sh, sw, ph, pw = q
    shape = _pool_out(x, q, cl)
    y = np.empty(shape, dtype=x.dtype)
    mode = _MODES[index]
    idx = np.empty(shape, np.int64) if mode == 1 else None
    win = np.empty(shape, np.uint8) if mode == 2 else None
    nbad = _fwd(_hwc(x, cl), kh, kw, sh, sw, ph, pw, bool(relu), mode, _hwc(y, cl),
                _D64 if idx is None else _hwc(idx, cl), _D8 if win is None else _hwc(win, cl))
    return y, (idx if mode == 1 else win), nbad == 0


def max_pool2d_backward(gy, x, q, cl=False, indices=None, index="flat"):
    kh, kw, sh, sw, ph, pw = q
    if indices is None:
        _, indices, _ = max_pool2d(x, q, cl, "flat")
        index = "flat"
    gx = np.empty_like(x)
    mode = _MODES[index]
    nbad = _bwd(_hwc(gy, cl), _hwc(indices, cl) if mode == 1 else _D64, _hwc(indices, cl) if mode == 2 else _D8,
                mode, kh, kw, sh, sw, ph, pw, _hwc(gx, cl))
    if nbad:
        if mode == 2:
            raise ValueError(f"max_pool2d_backward: window indices must lie in [0, {kh * kw}) and inside the input, "
                             f"or be {NO_GRAD} (no gradient)")
        H, W = (x.shape[1], x.shape[2]) if cl else x.shape[2:]
        raise ValueError(f"max_pool2d_backward: indices must lie in [0, H*W) = [0, {H * W})")
    return gx
