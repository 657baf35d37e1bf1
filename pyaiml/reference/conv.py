"""NumPy oracles for conv2d, forward and backward (conv1d runs through it with H = 1;
pooling lives in pyaiml/reference/pool.py).

Slow and obvious: one shifted slice of the zero-padded input per kernel tap, einsum per
group, float64 inside, the input's dtype out. Not tuned; the C++ kernels (csrc/cpu/conv.cpp)
and the Numba fallbacks (pyaiml/_numba/conv.py) are the fast paths.
Tests: tests/test_conv.py compares all three against torch.

Shared argument convention (the same for every backend):
- conv parameters p = (sh, sw, pt, pb, pl, pr, dh, dw, G): strides, paddings top/bottom/
  left/right, dilations, groups.
- cl: channels last. x is (N, C, H, W) when False, (N, H, W, C) when True; outputs and
  gradients follow x's layout. weight is always (OC, C/G, KH, KW).
"""
from __future__ import annotations

import numpy as np


def _out_size(n, k, s, p0, p1, d):
    return (n + p0 + p1 - d * (k - 1) - 1) // s + 1


def _nchw(a, cl):
    return np.transpose(a, (0, 3, 1, 2)) if cl else a


def _back(a, cl):
    return np.ascontiguousarray(np.transpose(a, (0, 2, 3, 1)) if cl else a)


def conv2d(x, w, b, p, cl=False, relu=False):
    """x (N, C, H, W) or (N, H, W, C); w (OC, C/G, KH, KW); b (OC,) or None -> y in x's layout."""
    sh, sw, pt, pb, pl, pr, dh, dw, G = p
    xd = _nchw(x, cl).astype(np.float64)
    wd = w.astype(np.float64)
    N, C, H, W = xd.shape
    OC, Cg, KH, KW = wd.shape
    OCg = OC // G
    OH = _out_size(H, KH, sh, pt, pb, dh)
    OW = _out_size(W, KW, sw, pl, pr, dw)
    xp = np.pad(xd, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    y = np.zeros((N, OC, OH, OW))
    for g in range(G):
        for i in range(KH):
            for j in range(KW):
                patch = xp[:, g * Cg:(g + 1) * Cg, i * dh:i * dh + sh * (OH - 1) + 1:sh,
                           j * dw:j * dw + sw * (OW - 1) + 1:sw]
                y[:, g * OCg:(g + 1) * OCg] += np.einsum("nchw,oc->nohw", patch, wd[g * OCg:(g + 1) * OCg, :, i, j])
    if b is not None:
        y += b.astype(np.float64)[None, :, None, None]
    if relu:
        y = np.maximum(y, 0.0)
    return _back(y.astype(x.dtype), cl)


def conv2d_backward(gy, x, w, p, cl=False, need_b=True, need_x=True, need_w=True):
    """Gradients of conv2d: (grad_x like x, grad_w like w, grad_b (OC,)); None where not asked for."""
    sh, sw, pt, pb, pl, pr, dh, dw, G = p
    xd = _nchw(x, cl).astype(np.float64)
    gd = _nchw(gy, cl).astype(np.float64)
    wd = w.astype(np.float64)
    N, C, H, W = xd.shape
    OC, Cg, KH, KW = wd.shape
    OCg = OC // G
    OH, OW = gd.shape[2:]
    xp = np.pad(xd, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(wd)
    for g in range(G):
        gg = gd[:, g * OCg:(g + 1) * OCg]
        for i in range(KH):
            for j in range(KW):
                sl = (slice(None), slice(g * Cg, (g + 1) * Cg), slice(i * dh, i * dh + sh * (OH - 1) + 1, sh),
                      slice(j * dw, j * dw + sw * (OW - 1) + 1, sw))
                gw[g * OCg:(g + 1) * OCg, :, i, j] = np.einsum("nohw,nchw->oc", gg, xp[sl])
                gxp[sl] += np.einsum("nohw,oc->nchw", gg, wd[g * OCg:(g + 1) * OCg, :, i, j])
    gx = gxp[:, :, pt:pt + H, pl:pl + W]
    gb = gd.sum(axis=(0, 2, 3)).astype(x.dtype) if need_b else None
    return _back(gx.astype(x.dtype), cl) if need_x else None, gw.astype(w.dtype) if need_w else None, gb
