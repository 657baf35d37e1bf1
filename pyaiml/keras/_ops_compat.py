"""The one place where pyaiml.keras gets its convolution, pooling and attention ops.

The layers call ``conv2d``, ``max_pool2d``, ``scaled_dot_product_attention`` (and their
``*_backward``) from here. Each name is taken from :mod:`pyaiml.ops` when that module
provides it (the C++/Numba/NumPy kernels of the conv and attention families); only when
``pyaiml.ops`` lacks a name is the clearly named NumPy stand-in below used
(``_np_conv2d`` & co., im2col + matrix product, with the same signatures and torch
semantics). ``FALLBACKS`` lists the names currently served by the stand-ins, so tests and
benchmarks can say what they ran on. Once every family is merged, FALLBACKS is empty and
this module is a plain re-export.

Not a public API. Tests: tests/test_keras_layers.py (checked against torch).
"""
from __future__ import annotations

import numpy as np

import pyaiml.ops as _ops

FALLBACKS: list[str] = []


# ---------------------------------------------------------------- helpers (stand-ins)
def _pair(v, n=2):
    if isinstance(v, (int, np.integer)):
        return (int(v),) * n
    v = tuple(int(i) for i in v)
    if len(v) != n:
        raise ValueError(f"expected an int or a tuple of {n} ints. Received {v}")
    return v


def _pads(padding, k, d, n=2):
    """padding int/tuple/'valid'/'same' -> ((lo, hi), ...) per spatial dim (torch 'same':
    total d*(k-1), the extra one at the end)."""
    if isinstance(padding, str):
        if padding == "valid":
            return tuple((0, 0) for _ in range(n))
        if padding == "same":
            out = []
            for ki, di in zip(k, d):
                tot = di * (ki - 1)
                out.append((tot // 2, tot - tot // 2))
            return tuple(out)
        raise ValueError(f"padding must be 'valid', 'same', an int or a tuple. Received {padding!r}")
    p = _pair(padding, n)
    return tuple((pi, pi) for pi in p)


def _to_nhwc(x, data_format):
    return x if data_format == "NHWC" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _from_nhwc(y, data_format):
    return y if data_format == "NHWC" else np.ascontiguousarray(y.transpose(0, 3, 1, 2))


def _cols(xp, kh, kw, sh, sw, dh, dw, OH, OW):
    """xp (N, Hp, Wp, C) padded -> (N, OH, OW, kh, kw, C) im2col copy."""
    N, _, _, C = xp.shape
    cols = np.empty((N, OH, OW, kh, kw, C), dtype=xp.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = xp[:, i * dh: i * dh + sh * (OH - 1) + 1: sh,
                                         j * dw: j * dw + sw * (OW - 1) + 1: sw, :]
    return cols


def _geom(x, weight, stride, padding, dilation):
    N, H, W, C = x.shape
    kh, kw = weight.shape[2:]
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    (pt, pb), (pl, pr) = _pads(padding, (kh, kw), (dh, dw))
    OH = (H + pt + pb - dh * (kh - 1) - 1) // sh + 1
    OW = (W + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if OH < 1 or OW < 1:
        raise ValueError(f"conv2d: input {H}x{W} is smaller than the dilated kernel. Received x {tuple(x.shape)}")
    return N, H, W, C, kh, kw, sh, sw, dh, dw, pt, pb, pl, pr, OH, OW


def _mm(a, b):
    """Matrix product on pyaiml's GEMM (float32) or NumPy (float64)."""
    return _ops.matmul(a, b) if a.dtype == np.float32 else a @ b


def _np_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, data_format="NCHW",
               activation=None):
    """NumPy stand-in for pyaiml.ops.conv2d (torch semantics; weight (Cout, Cin/g, kH, kW))."""
    x = _to_nhwc(np.asarray(x), data_format)
    N, H, W, C, kh, kw, sh, sw, dh, dw, pt, pb, pl, pr, OH, OW = _geom(x, weight, stride, padding, dilation)
    OC = weight.shape[0]
    cg, og = C // groups, OC // groups
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0))) if (pt or pb or pl or pr) else x
    y = np.empty((N, OH, OW, OC), dtype=x.dtype)
    for g in range(groups):
        cols = _cols(xp[..., g * cg:(g + 1) * cg], kh, kw, sh, sw, dh, dw, OH, OW).reshape(N * OH * OW, -1)
        wk = weight[g * og:(g + 1) * og].transpose(2, 3, 1, 0).reshape(-1, og)
        y[..., g * og:(g + 1) * og] = _mm(cols, wk).reshape(N, OH, OW, og)
    if bias is not None:
        y += bias
    if activation == "relu":
        np.maximum(y, 0, out=y)
    return _from_nhwc(y, data_format)


def _np_conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, data_format="NCHW",
                        needs_bias_grad=True):
    x = _to_nhwc(np.asarray(x), data_format)
    g = _to_nhwc(np.asarray(grad_out), data_format)
    N, H, W, C, kh, kw, sh, sw, dh, dw, pt, pb, pl, pr, OH, OW = _geom(x, weight, stride, padding, dilation)
    OC = weight.shape[0]
    cg, og = C // groups, OC // groups
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0))) if (pt or pb or pl or pr) else x
    gxp = np.zeros(xp.shape, dtype=x.dtype)
    gw = np.empty_like(weight)
    for gi in range(groups):
        g2 = g[..., gi * og:(gi + 1) * og].reshape(-1, og)
        cols = _cols(xp[..., gi * cg:(gi + 1) * cg], kh, kw, sh, sw, dh, dw, OH, OW).reshape(N * OH * OW, -1)
        wk = weight[gi * og:(gi + 1) * og].transpose(2, 3, 1, 0).reshape(-1, og)
        gw[gi * og:(gi + 1) * og] = _mm(cols.T, g2).reshape(kh, kw, cg, og).transpose(3, 2, 0, 1)
        gc = _mm(g2, wk.T).reshape(N, OH, OW, kh, kw, cg)
        for i in range(kh):
            for j in range(kw):
                gxp[:, i * dh: i * dh + sh * (OH - 1) + 1: sh, j * dw: j * dw + sw * (OW - 1) + 1: sw,
                    gi * cg:(gi + 1) * cg] += gc[:, :, :, i, j, :]
    gx = gxp[:, pt:pt + H, pl:pl + W, :]
    gx = _from_nhwc(np.ascontiguousarray(gx), data_format)
    gb = g.reshape(-1, OC).sum(axis=0) if needs_bias_grad else None
    return gx, gw, gb


def _c1(x, data_format):
    """(N, C, L) / (N, L, C) -> NCHW / NHWC with H = 1."""
    return x[:, :, None, :] if data_format == "NCL" else x[:, None, :, :]


def _u1(y, data_format):
    return y[:, :, 0, :] if data_format == "NCL" else y[:, 0, :, :]


def _fmt2(data_format):
    if data_format not in ("NCL", "NLC"):
        raise ValueError(f"data_format must be 'NCL' or 'NLC'. Received {data_format!r}")
    return "NCHW" if data_format == "NCL" else "NHWC"


def _p1(padding):
    return padding if isinstance(padding, str) else (0, _pair(padding, 1)[0])


def _np_conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, data_format="NCL",
               activation=None):
    y = _np_conv2d(_c1(x, data_format), weight[:, :, None, :], bias, (1, _pair(stride, 1)[0]), _p1(padding),
                   (1, _pair(dilation, 1)[0]), groups, _fmt2(data_format), activation)
    return np.ascontiguousarray(_u1(y, data_format))


def _np_conv1d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, data_format="NCL",
                        needs_bias_grad=True):
    gx, gw, gb = _np_conv2d_backward(_c1(grad_out, data_format), _c1(x, data_format), weight[:, :, None, :],
                                     (1, _pair(stride, 1)[0]), _p1(padding), (1, _pair(dilation, 1)[0]), groups,
                                     _fmt2(data_format), needs_bias_grad)
    return np.ascontiguousarray(_u1(gx, data_format)), np.ascontiguousarray(gw[:, :, 0, :]), gb


def _pool_geom(x, kernel_size, stride, padding):
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride) if stride is not None else (kh, kw)
    ph, pw = _pair(padding)
    N, H, W, C = x.shape
    OH = (H + 2 * ph - kh) // sh + 1
    OW = (W + 2 * pw - kw) // sw + 1
    return kh, kw, sh, sw, ph, pw, OH, OW


def _np_max_pool2d(x, kernel_size, stride=None, padding=0, data_format="NCHW", return_indices=False):
    """NumPy stand-in for pyaiml.ops.max_pool2d (torch semantics, floor mode, -inf padding)."""
    x = _to_nhwc(np.asarray(x), data_format)
    kh, kw, sh, sw, ph, pw, OH, OW = _pool_geom(x, kernel_size, stride, padding)
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=-np.inf) if (ph or pw) else x
    y = None
    for i in range(kh):
        for j in range(kw):
            v = xp[:, i: i + sh * (OH - 1) + 1: sh, j: j + sw * (OW - 1) + 1: sw, :]
            y = v.copy() if y is None else np.maximum(y, v, out=y)
    y = _from_nhwc(y, data_format)
    if return_indices:
        raise NotImplementedError("the NumPy stand-in for max_pool2d does not return indices")
    return y


def _np_max_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0, data_format="NCHW", indices=None):
    x = _to_nhwc(np.asarray(x), data_format)
    g = _to_nhwc(np.asarray(grad_out), data_format)
    kh, kw, sh, sw, ph, pw, OH, OW = _pool_geom(x, kernel_size, stride, padding)
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=-np.inf) if (ph or pw) else x
    best = None
    arg = np.zeros(g.shape, dtype=np.int32)
    for i in range(kh):
        for j in range(kw):
            v = xp[:, i: i + sh * (OH - 1) + 1: sh, j: j + sw * (OW - 1) + 1: sw, :]
            if best is None:
                best = v.copy()
            else:
                m = v > best  # first maximum wins, like torch
                best[m] = v[m]
                arg[m] = i * kw + j
    gxp = np.zeros(xp.shape, dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            gxp[:, i: i + sh * (OH - 1) + 1: sh, j: j + sw * (OW - 1) + 1: sw, :] += np.where(arg == i * kw + j, g, 0)
    gx = np.ascontiguousarray(gxp[:, ph:ph + x.shape[1], pw:pw + x.shape[2], :])
    return _from_nhwc(gx, data_format)


def _np_max_pool1d(x, kernel_size, stride=None, padding=0, data_format="NCL", return_indices=False):
    k = _pair(kernel_size, 1)[0]
    s = k if stride is None else _pair(stride, 1)[0]
    y = _np_max_pool2d(_c1(x, data_format), (1, k), (1, s), (0, _pair(padding, 1)[0]), _fmt2(data_format),
                       return_indices)
    return np.ascontiguousarray(_u1(y, data_format))


def _np_max_pool1d_backward(grad_out, x, kernel_size, stride=None, padding=0, data_format="NCL", indices=None):
    k = _pair(kernel_size, 1)[0]
    s = k if stride is None else _pair(stride, 1)[0]
    gx = _np_max_pool2d_backward(_c1(grad_out, data_format), _c1(x, data_format), (1, k), (1, s),
                                 (0, _pair(padding, 1)[0]), _fmt2(data_format))
    return np.ascontiguousarray(_u1(gx, data_format))


def _sdpa_bias(q, k, attn_mask, is_causal):
    L, S = q.shape[-2], k.shape[-2]
    bias = None
    allowed = None
    if is_causal:
        allowed = np.tril(np.ones((L, S), dtype=bool))
    if attn_mask is not None:
        m = np.asarray(attn_mask)
        if m.dtype == bool:
            allowed = m if allowed is None else (allowed & m)
        else:
            bias = m.astype(q.dtype)
    return allowed, bias


def _np_sdpa_probs(q, k, attn_mask, is_causal, scale, want_lse=False):
    D = q.shape[-1]
    sc = 1.0 / np.sqrt(D) if scale is None else scale
    s = (q @ np.swapaxes(k, -1, -2)) * q.dtype.type(sc)
    allowed, bias = _sdpa_bias(q, k, attn_mask, is_causal)
    if bias is not None:
        s = s + bias
    if allowed is not None:
        s = np.where(allowed, s, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0)
    e = np.exp(s - mx)
    z = e.sum(axis=-1, keepdims=True)
    p = np.where(z > 0, e / np.where(z > 0, z, 1), 0)  # fully masked row -> zeros
    if want_lse:
        with np.errstate(divide="ignore"):
            lse = (mx + np.log(z))[..., 0].astype(q.dtype)  # -inf for a fully masked row
        return p.astype(q.dtype), sc, lse
    return p.astype(q.dtype), sc


def _np_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False,
             return_lse=False):
    """NumPy stand-in for pyaiml.ops.scaled_dot_product_attention (no dropout, no GQA)."""
    if dropout_p:
        raise NotImplementedError("the NumPy stand-in for attention has no dropout")
    p, _, lse = _np_sdpa_probs(q, k, attn_mask, is_causal, scale, True)
    out = p @ v
    return (out, lse) if return_lse else out


def _np_sdpa_backward(grad_out, q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False, out=None,
                      lse=None):
    p, sc = _np_sdpa_probs(q, k, attn_mask, is_causal, scale)
    gv = np.swapaxes(p, -1, -2) @ grad_out
    gp = grad_out @ np.swapaxes(v, -1, -2)
    gs = p * (gp - (gp * p).sum(axis=-1, keepdims=True))
    gs = gs * q.dtype.type(sc)
    gq = gs @ k
    gk = np.swapaxes(gs, -1, -2) @ q
    return gq, gk, gv


_STANDINS = {
    "conv2d": _np_conv2d,
    "conv2d_backward": _np_conv2d_backward,
    "conv1d": _np_conv1d,
    "conv1d_backward": _np_conv1d_backward,
    "max_pool2d": _np_max_pool2d,
    "max_pool2d_backward": _np_max_pool2d_backward,
    "max_pool1d": _np_max_pool1d,
    "max_pool1d_backward": _np_max_pool1d_backward,
    "scaled_dot_product_attention": _np_sdpa,
    "scaled_dot_product_attention_backward": _np_sdpa_backward,
}


def _pick(name):
    fn = getattr(_ops, name, None)
    if fn is None:
        FALLBACKS.append(name)
        return _STANDINS[name]
    return fn


conv2d = _pick("conv2d")
conv2d_backward = _pick("conv2d_backward")
conv1d = _pick("conv1d")
conv1d_backward = _pick("conv1d_backward")
max_pool2d = _pick("max_pool2d")
max_pool2d_backward = _pick("max_pool2d_backward")
max_pool1d = _pick("max_pool1d")
max_pool1d_backward = _pick("max_pool1d_backward")
scaled_dot_product_attention = _pick("scaled_dot_product_attention")
scaled_dot_product_attention_backward = _pick("scaled_dot_product_attention_backward")


def _takes_activation(fn) -> bool:
    import inspect

    try:
        return "activation" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


# conv + bias + ReLU in one pass when the conv op offers it (saves a full pass over the output)
CONV_FUSED_RELU = _takes_activation(conv2d) and _takes_activation(conv1d)
