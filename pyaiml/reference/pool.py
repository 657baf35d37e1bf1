"""NumPy oracles of max pooling, forward and backward (max_pool1d runs through them with
H = 1), with the registry signatures of pyaiml/ops/pool.py.

Slow and obvious: one shifted slice of the -inf-padded input per window tap, float64
inside, the input's dtype out. The C++ kernels (csrc/cpu/pool.cpp) and the Numba
fallbacks (pyaiml/_numba/pool.py) are the fast paths. Tests: tests/test_pool.py.

Conventions (every backend):
- q = (kh, kw, sh, sw, ph, pw); cl: channels last (x (N, H, W, C), else (N, C, H, W));
  outputs follow x's layout.
- index: None, "flat" (int64 h * W + w in x's plane, torch's) or "window" (uint8
  position kh_i * kw + kw_i of the maximum inside its window, counted from the window's
  origin in the padded input; 255 = the window passes no gradient).
- relu: the output is max(y, 0); window indices are 255 where the maximum is not > 0.
- max_pool2d(x, q, cl, index, relu) -> (y, indices or None, every y finite)
- max_pool2d_backward(gy, x, q, cl, indices, index) -> grad_x (indices None: argmax of x)
"""
from __future__ import annotations

import numpy as np

NO_GRAD = 255


def _nchw(a, cl):
    return np.transpose(a, (0, 3, 1, 2)) if cl else a


def _back(a, cl):
    return np.ascontiguousarray(np.transpose(a, (0, 2, 3, 1)) if cl else a)


def _geometry(shape, q):
    kh, kw, sh, sw, ph, pw = q
    H, W = shape[2:]
    OH = (H + 2 * ph - kh) // sh + 1
    OW = (W + 2 * pw - kw) // sw + 1
    return OH, OW


def _argmax(xd, q):
    """xd (N, C, H, W) float64 -> (max, flat index, window position), each (N, C, OH, OW)."""
    kh, kw, sh, sw, ph, pw = q
    N, C, H, W = xd.shape
    OH, OW = _geometry(xd.shape, q)
    xp = np.pad(xd, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    rows = np.arange(OH)[:, None] * sh - ph
    cols = np.arange(OW)[None, :] * sw - pw
    best = np.full((N, C, OH, OW), -np.inf)
    flat = np.full((N, C, OH, OW), -1, np.int64)
    win = np.zeros((N, C, OH, OW), np.int64)
    for i in range(kh):
        for j in range(kw):
            v = xp[:, :, i:i + sh * (OH - 1) + 1:sh, j:j + sw * (OW - 1) + 1:sw]
            real = (rows + i >= 0) & (rows + i < H) & (cols + j >= 0) & (cols + j < W)
            # the first maximum in row-major window order wins; NaN counts as a maximum
            take = real & ((v > best) | np.isnan(v) | (flat < 0))
            best = np.where(take, v, best)
            flat = np.where(take, (rows + i) * W + (cols + j), flat)
            win = np.where(take, i * kw + j, win)
    return best, flat, win


def max_pool2d(x, q, cl=False, index=None, relu=False):
    best, flat, win = _argmax(_nchw(x, cl).astype(np.float64), q)
    if relu:
        win = np.where(best > 0, win, NO_GRAD)
        best = np.where(best < 0, 0.0, best)
    y = _back(best.astype(x.dtype), cl)
    ind = None
    if index == "flat":
        ind = _back(flat, cl)
    elif index == "window":
        ind = _back(win.astype(np.uint8), cl)
    return y, ind, bool(np.isfinite(y).all())


def max_pool2d_backward(gy, x, q, cl=False, indices=None, index="flat"):
    """grad_x: each output's gradient goes to its (first) argmax input element."""
    kh, kw, sh, sw, ph, pw = q
    xd = _nchw(x, cl)
    N, C, H, W = xd.shape
    gd = _nchw(gy, cl).astype(np.float64)
    if indices is None:
        _, flat, _ = _argmax(xd.astype(np.float64), q)
        keep = np.ones(flat.shape, bool)
    elif index == "window":
        t = _nchw(indices, cl).astype(np.int64)
        OH, OW = t.shape[2:]
        h = np.arange(OH)[:, None] * sh - ph + t // kw
        w = np.arange(OW)[None, :] * sw - pw + t % kw
        keep = t != NO_GRAD
        ok = (t < kh * kw) & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        if np.any(keep & ~ok):
            raise ValueError(f"max_pool2d_backward: window indices must lie in [0, {kh * kw}) and inside the input, "
                             f"or be {NO_GRAD} (no gradient)")
        flat = np.where(keep, h * W + w, 0)
    else:
        flat = _nchw(indices, cl).astype(np.int64)
        if flat.size and (flat.min() < 0 or flat.max() >= H * W):
            raise ValueError(f"max_pool2d_backward: indices must lie in [0, H*W) = [0, {H * W})")
        keep = np.ones(flat.shape, bool)
    gx = np.zeros((N * C, H * W))
    rows = np.repeat(np.arange(N * C), flat.shape[2] * flat.shape[3])
    np.add.at(gx, (rows, flat.reshape(-1)), np.where(keep, gd, 0.0).reshape(-1))
    return _back(gx.reshape(N, C, H, W).astype(x.dtype), cl)
