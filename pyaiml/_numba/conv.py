"""Numba fallbacks of the conv family (conv2d forward and backward; pooling is in pool.py), with the
registry signatures of pyaiml/reference/conv.py.

Direct loops (no im2col): every kernel indexes x as (N, H, W, C); channels-first arrays are
handed over as transposed views (no copies), so one source serves both layouts. Parallel
over batch/output rows with prange; the innermost loop runs over output channels, which
are contiguous in the repacked weights, so it vectorises. grad_w is accumulated per image
and summed in image order (independent of the thread count).
Depthwise convs (groups == C > 1, OC = m * C) have their own kernels (_dw_*): the generic
ones would run an innermost loop of m (usually 1) output channels; these run it over the
channels of a pixel instead, with output channel o reading input channel o // m.
Not the fast path (csrc/cpu/conv.cpp is); float32 only (float64 runs in NumPy).
Tests: tests/test_conv.py runs these against torch.
"""
from __future__ import annotations

import numba as nb
import numpy as np


def _hwc(a, cl):
    return a if cl else a.transpose(0, 2, 3, 1)


def _repack(w, G):
    """w (OC, Cg, KH, KW) -> wr (KH, KW, C, OCg): wr[kh, kw, g*Cg + c, o] = w[g*OCg + o, c, kh, kw]."""
    OC, Cg, KH, KW = w.shape
    OCg = OC // G
    wr = w.reshape(G, OCg, Cg, KH, KW).transpose(3, 4, 0, 2, 1).reshape(KH, KW, G * Cg, OCg)
    return np.ascontiguousarray(wr)


@nb.njit(parallel=True, fastmath=True, cache=True)
def _fwd(x, wr, b, relu, sh, sw, pt, pl, dh, dw, G, y):
    N, H, W, C = x.shape
    _, OH, OW, OC = y.shape
    KH, KW, _, OCg = wr.shape
    Cg = C // G
    for t in nb.prange(N * OH):
        n = t // OH
        oh = t % OH
        acc = np.empty(OC, dtype=np.float32)
        for ow in range(OW):
            for o in range(OC):
                acc[o] = b[o]
            for kh in range(KH):
                ih = oh * sh - pt + kh * dh
                if ih < 0 or ih >= H:
                    continue
                for kw in range(KW):
                    iw = ow * sw - pl + kw * dw
                    if iw < 0 or iw >= W:
                        continue
                    for g in range(G):
                        for c in range(Cg):
                            xv = x[n, ih, iw, g * Cg + c]
                            for o in range(OCg):
                                acc[g * OCg + o] += xv * wr[kh, kw, g * Cg + c, o]
            for o in range(OC):
                v = acc[o]
                if relu and v < 0.0:
                    v = 0.0
                y[n, oh, ow, o] = v


@nb.njit(parallel=True, fastmath=True, cache=True)
def _bwd(gy, x, wr, sh, sw, pt, pl, dh, dw, G, gx, gwn):
    N, H, W, C = x.shape
    _, OH, OW, _OC = gy.shape
    KH, KW, _, OCg = wr.shape
    Cg = C // G
    for n in nb.prange(N):
        for h in range(H):
            for w_ in range(W):
                for c in range(C):
                    gx[n, h, w_, c] = 0.0
        gwn[n] = 0.0
        for oh in range(OH):
            for ow in range(OW):
                for kh in range(KH):
                    ih = oh * sh - pt + kh * dh
                    if ih < 0 or ih >= H:
                        continue
                    for kw in range(KW):
                        iw = ow * sw - pl + kw * dw
                        if iw < 0 or iw >= W:
                            continue
                        for g in range(G):
                            for c in range(Cg):
                                ci = g * Cg + c
                                xv = x[n, ih, iw, ci]
                                s = np.float32(0.0)
                                for o in range(OCg):
                                    gv = gy[n, oh, ow, g * OCg + o]
                                    s += gv * wr[kh, kw, ci, o]
                                    gwn[n, kh, kw, ci, o] += xv * gv
                                gx[n, ih, iw, ci] += s


def _dw_taps(w):
    """w (OC, 1, KH, KW) -> (KH, KW, OC), contiguous."""
    return np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))


@nb.njit(parallel=True, fastmath=True, cache=True)
def _dw_fwd(x, wt, b, relu, sh, sw, pt, pl, dh, dw, y):
    N, H, W, C = x.shape
    _, OH, OW, OC = y.shape
    KH, KW, _ = wt.shape
    m = OC // C
    for t in nb.prange(N * OH):
        n = t // OH
        oh = t % OH
        acc = np.empty(OC, dtype=np.float32)
        for ow in range(OW):
            for o in range(OC):
                acc[o] = b[o]
            for kh in range(KH):
                ih = oh * sh - pt + kh * dh
                if ih < 0 or ih >= H:
                    continue
                for kw in range(KW):
                    iw = ow * sw - pl + kw * dw
                    if iw < 0 or iw >= W:
                        continue
                    for o in range(OC):
                        acc[o] += x[n, ih, iw, o // m] * wt[kh, kw, o]
            for o in range(OC):
                v = acc[o]
                if relu and v < 0.0:
                    v = 0.0
                y[n, oh, ow, o] = v


@nb.njit(parallel=True, fastmath=True, cache=True)
def _dw_gx(gy, wt, sh, sw, pt, pl, dh, dw, gx):
    N, H, W, C = gx.shape
    _, OH, OW, OC = gy.shape
    KH, KW, _ = wt.shape
    m = OC // C
    for t in nb.prange(N * H):
        n = t // H
        ih = t % H
        for iw in range(W):
            for c in range(C):
                gx[n, ih, iw, c] = 0.0
            for kh in range(KH):
                th = ih + pt - kh * dh
                if th < 0 or th % sh != 0 or th // sh >= OH:
                    continue
                oh = th // sh
                for kw in range(KW):
                    tw = iw + pl - kw * dw
                    if tw < 0 or tw % sw != 0 or tw // sw >= OW:
                        continue
                    ow = tw // sw
                    for o in range(OC):
                        gx[n, ih, iw, o // m] += gy[n, oh, ow, o] * wt[kh, kw, o]


@nb.njit(parallel=True, fastmath=True, cache=True)
def _dw_gw(gy, x, sh, sw, pt, pl, dh, dw, KH, KW, gwn):
    """gwn (N, KH, KW, OC): image n's share of grad_w, summed by the caller in image order."""
    N, H, W, C = x.shape
    _, OH, OW, OC = gy.shape
    m = OC // C
    for n in nb.prange(N):
        gwn[n] = 0.0
        for oh in range(OH):
            for ow in range(OW):
                for kh in range(KH):
                    ih = oh * sh - pt + kh * dh
                    if ih < 0 or ih >= H:
                        continue
                    for kw in range(KW):
                        iw = ow * sw - pl + kw * dw
                        if iw < 0 or iw >= W:
                            continue
                        for o in range(OC):
                            gwn[n, kh, kw, o] += gy[n, oh, ow, o] * x[n, ih, iw, o // m]


def _depthwise(x, w, G, cl):
    C = x.shape[3] if cl else x.shape[1]
    return G == C and C > 1 and w.shape[1] == 1


def conv2d(x, w, b, p, cl=False, relu=False):
    sh, sw, pt, pb, pl, pr, dh, dw, G = p
    N = x.shape[0]
    OC, _Cg, KH, KW = w.shape
    H, W = (x.shape[1], x.shape[2]) if cl else (x.shape[2], x.shape[3])
    OH = (H + pt + pb - dh * (KH - 1) - 1) // sh + 1
    OW = (W + pl + pr - dw * (KW - 1) - 1) // sw + 1
    y = np.empty((N, OH, OW, OC) if cl else (N, OC, OH, OW), dtype=np.float32)
    bb = b if b is not None else np.zeros(OC, np.float32)
    if _depthwise(x, w, G, cl):
        _dw_fwd(_hwc(x, cl), _dw_taps(w), bb, bool(relu), sh, sw, pt, pl, dh, dw, _hwc(y, cl))
        return y
    _fwd(_hwc(x, cl), _repack(w, G), bb, bool(relu), sh, sw, pt, pl, dh, dw, G, _hwc(y, cl))
    return y


def conv2d_backward(gy, x, w, p, cl=False, need_b=True, need_x=True, need_w=True):
    """Gradients (grad_x, grad_w, grad_b); those not asked for are None (computed, then dropped)."""
    sh, sw, pt, _pb, pl, _pr, dh, dw, G = p
    OC, Cg, KH, KW = w.shape
    N = x.shape[0]
    C = Cg * G
    gb = None
    if need_b:
        gb = gy.sum(axis=(0, 1, 2) if cl else (0, 2, 3), dtype=np.float64).astype(np.float32)
    if _depthwise(x, w, G, cl):
        gx = gw = None
        if need_x:
            gx = np.empty_like(x)
            _dw_gx(_hwc(gy, cl), _dw_taps(w), sh, sw, pt, pl, dh, dw, _hwc(gx, cl))
        if need_w:
            gwn = np.empty((N, KH, KW, OC), dtype=np.float32)
            _dw_gw(_hwc(gy, cl), _hwc(x, cl), sh, sw, pt, pl, dh, dw, KH, KW, gwn)
            gw = gwn.sum(axis=0, dtype=np.float64).transpose(2, 0, 1)[:, None].astype(np.float32)
        return gx, gw, gb
    gx = np.empty_like(x)
    gwn = np.empty((N, KH, KW, C, OC // G), dtype=np.float32)
    _bwd(_hwc(gy, cl), _hwc(x, cl), _repack(w, G), sh, sw, pt, pl, dh, dw, G, _hwc(gx, cl), gwn)
    gwr = gwn.sum(axis=0, dtype=np.float64)  # (KH, KW, C, OCg), images summed in order
    gw = gwr.reshape(KH, KW, G, Cg, OC // G).transpose(2, 4, 3, 0, 1).reshape(OC, Cg, KH, KW)
    return gx if need_x else None, gw.astype(np.float32) if need_w else None, gb
