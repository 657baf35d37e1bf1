"""The one place where pyaiml.torch calls kernels: NumPy arrays in, NumPy arrays out.

Every op in pyaiml/torch/ops.py reaches its kernel through a function of this module. Each
function calls the public ``pyaiml.ops.<name>`` when that op exists in this installation and
otherwise a NumPy stand-in defined here (``_standin_<name>``: small, obvious, float64-safe,
not fast). ``KERNEL_SOURCE`` says which one each op uses; ``force_standins(True)`` makes
every op use its stand-in (tests compare the two paths with it).

The HMM forward-backward is computed here in NumPy log space (float64, logsumexp) in
``hmm_forward_backward`` / ``hmm_grads``; that pair is the single place to switch to
``pyaiml.ops.hmm`` once it exists.

This is not a public API. Tests: tests/test_torch_bridge*.py.
"""
from __future__ import annotations

import numpy as np

_force = [False]


def force_standins(flag: bool) -> None:
    """Route every call to the NumPy stand-ins (True) or to pyaiml.ops where present (False)."""
    _force[0] = bool(flag)


def _real(name):
    if _force[0]:
        return None
    import pyaiml.ops as ops

    return getattr(ops, name, None)


def kernel_source() -> dict:
    """op name -> "pyaiml.ops" or "stand-in", as the next call would run it."""
    names = ("conv2d", "conv2d_backward", "conv1d", "conv1d_backward", "max_pool2d", "max_pool2d_backward",
             "max_pool1d", "max_pool1d_backward", "scaled_dot_product_attention",
             "scaled_dot_product_attention_backward")
    out = {n: ("pyaiml.ops" if _real(n) is not None else "stand-in") for n in names}
    out["hmm_forward_backward"] = "pyaiml.torch._kernels (NumPy log space)"
    return out


# --------------------------------------------------------------------------- convolution
# Stand-ins: loop over the kernel offsets, one einsum per offset. x is NCHW or NHWC
# (transposed to NCHW inside), weight (OC, C/G, KH, KW); pads are (top, bottom, left, right).

def _same_pads(size, k, d):
    tot = d * (k - 1)
    return tot // 2, tot - tot // 2


def _conv_geometry(xs, ws, stride, padding, dilation):
    """xs = (H, W), ws = (KH, KW) -> pads ((pt, pb), (pl, pr)) and (OH, OW)."""
    pads = []
    for i in range(2):
        if padding == "same":
            pads.append(_same_pads(xs[i], ws[i], dilation[i]))
        elif padding == "valid":
            pads.append((0, 0))
        else:
            pads.append((padding[i], padding[i]))
    out = tuple((xs[i] + sum(pads[i]) - dilation[i] * (ws[i] - 1) - 1) // stride[i] + 1 for i in range(2))
    return pads, out


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _standin_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, data_format="NCHW"):
    cl = data_format == "NHWC"
    xc = x.transpose(0, 3, 1, 2) if cl else x
    s, d = _pair(stride), _pair(dilation)
    p = padding if isinstance(padding, str) else _pair(padding)
    N, C, H, W = xc.shape
    OC, Cg, KH, KW = weight.shape
    G = groups
    pads, (OH, OW) = _conv_geometry((H, W), (KH, KW), s, p, d)
    xp = np.pad(xc, ((0, 0), (0, 0), pads[0], pads[1]))
    xg = xp.reshape(N, G, Cg, xp.shape[2], xp.shape[3])
    wg = weight.reshape(G, OC // G, Cg, KH, KW)
    y = np.zeros((N, G, OC // G, OH, OW), dtype=x.dtype)
    for i in range(KH):
        for j in range(KW):
            sl = xg[:, :, :, i * d[0]: i * d[0] + s[0] * (OH - 1) + 1: s[0], j * d[1]: j * d[1] + s[1] * (OW - 1) + 1: s[1]]
            y += np.einsum("ngchw,goc->ngohw", sl, wg[:, :, :, i, j])
    y = y.reshape(N, OC, OH, OW)
    if bias is not None:
        y += bias[None, :, None, None]
    return np.ascontiguousarray(y.transpose(0, 2, 3, 1) if cl else y)


def _standin_conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, data_format="NCHW",
                             needs_bias_grad=True):
    cl = data_format == "NHWC"
    xc = x.transpose(0, 3, 1, 2) if cl else x
    g = grad_out.transpose(0, 3, 1, 2) if cl else grad_out
    s, d = _pair(stride), _pair(dilation)
    p = padding if isinstance(padding, str) else _pair(padding)
    N, C, H, W = xc.shape
    OC, Cg, KH, KW = weight.shape
    G = groups
    pads, (OH, OW) = _conv_geometry((H, W), (KH, KW), s, p, d)
    xp = np.pad(xc, ((0, 0), (0, 0), pads[0], pads[1]))
    Hp, Wp = xp.shape[2:]
    xg = xp.reshape(N, G, Cg, Hp, Wp)
    gxp = np.zeros_like(xg)
    wg = weight.reshape(G, OC // G, Cg, KH, KW)
    gg = g.reshape(N, G, OC // G, OH, OW)
    gw = np.zeros_like(wg)
    for i in range(KH):
        for j in range(KW):
            hs = slice(i * d[0], i * d[0] + s[0] * (OH - 1) + 1, s[0])
            ws = slice(j * d[1], j * d[1] + s[1] * (OW - 1) + 1, s[1])
            gw[:, :, :, i, j] = np.einsum("ngchw,ngohw->goc", xg[:, :, :, hs, ws], gg)
            gxp[:, :, :, hs, ws] += np.einsum("ngohw,goc->ngchw", gg, wg[:, :, :, i, j])
    gx = gxp.reshape(N, C, Hp, Wp)[:, :, pads[0][0]: pads[0][0] + H, pads[1][0]: pads[1][0] + W]
    gx = np.ascontiguousarray(gx.transpose(0, 2, 3, 1) if cl else gx)
    gb = g.sum(axis=(0, 2, 3)) if needs_bias_grad else None
    return gx, gw.reshape(weight.shape), gb


def _standin_conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, data_format="NCL"):
    cl = data_format == "NLC"
    x4 = x[:, None, :, :] if cl else x[:, :, None, :]
    p = padding if isinstance(padding, str) else (0, padding if isinstance(padding, int) else padding[0])
    y = _standin_conv2d(x4, weight[:, :, None, :], bias, (1, _pair(stride)[0]), p, (1, _pair(dilation)[0]), groups,
                        "NHWC" if cl else "NCHW")
    return y[:, 0] if cl else y[:, :, 0]


def _standin_conv1d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, data_format="NCL",
                             needs_bias_grad=True):
    cl = data_format == "NLC"
    x4 = x[:, None, :, :] if cl else x[:, :, None, :]
    g4 = grad_out[:, None, :, :] if cl else grad_out[:, :, None, :]
    p = padding if isinstance(padding, str) else (0, padding if isinstance(padding, int) else padding[0])
    gx, gw, gb = _standin_conv2d_backward(g4, x4, weight[:, :, None, :], (1, _pair(stride)[0]), p,
                                          (1, _pair(dilation)[0]), groups, "NHWC" if cl else "NCHW", needs_bias_grad)
    return (gx[:, 0] if cl else gx[:, :, 0]), gw[:, :, 0], gb


def conv2d(x, weight, bias, stride, padding, dilation, groups, data_format):
    f = _real("conv2d") or _standin_conv2d
    return f(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups, data_format=data_format)


def conv2d_backward(grad_out, x, weight, stride, padding, dilation, groups, data_format, needs_bias_grad):
    f = _real("conv2d_backward") or _standin_conv2d_backward
    return f(grad_out, x, weight, stride=stride, padding=padding, dilation=dilation, groups=groups,
             data_format=data_format, needs_bias_grad=needs_bias_grad)


def conv1d(x, weight, bias, stride, padding, dilation, groups, data_format):
    f = _real("conv1d") or _standin_conv1d
    return f(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups, data_format=data_format)


def conv1d_backward(grad_out, x, weight, stride, padding, dilation, groups, data_format, needs_bias_grad):
    f = _real("conv1d_backward") or _standin_conv1d_backward
    return f(grad_out, x, weight, stride=stride, padding=padding, dilation=dilation, groups=groups,
             data_format=data_format, needs_bias_grad=needs_bias_grad)


# --------------------------------------------------------------------------- max pooling
# Stand-ins: pad with -inf, scan the window offsets in row-major order keeping the first
# maximum (strict >), as torch does. Indices are flat positions h * W + w in the unpadded
# input plane (torch's convention); backward scatters each output's gradient there, or
# recomputes the argmax from x when no indices are given.

def _pool_geometry(H, W, k, s, p):
    return (H + 2 * p[0] - k[0]) // s[0] + 1, (W + 2 * p[1] - k[1]) // s[1] + 1


def _pool_scan(xc, k, s, p):
    """xc (N, C, H, W) -> max (N, C, OH, OW) and flat argmax positions h * W + w."""
    N, C, H, W = xc.shape
    OH, OW = _pool_geometry(H, W, k, s, p)
    xp = np.pad(xc, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])), constant_values=-np.inf)
    best = np.full((N, C, OH, OW), -np.inf, dtype=xc.dtype)
    arg = np.zeros((N, C, OH, OW), dtype=np.int64)
    oh = np.arange(OH)[:, None] * s[0] - p[0]
    ow = np.arange(OW)[None, :] * s[1] - p[1]
    for i in range(k[0]):
        for j in range(k[1]):
            sl = xp[:, :, i: i + s[0] * (OH - 1) + 1: s[0], j: j + s[1] * (OW - 1) + 1: s[1]]
            m = sl > best
            best = np.where(m, sl, best)
            arg = np.where(m, (oh + i) * W + (ow + j), arg)
    return best, arg


def _standin_max_pool2d(x, kernel_size, stride=None, padding=0, data_format="NCHW", return_indices=False):
    cl = data_format == "NHWC"
    xc = x.transpose(0, 3, 1, 2) if cl else x
    k = _pair(kernel_size)
    s = k if stride is None else _pair(stride)
    y, arg = _pool_scan(xc, k, s, _pair(padding))
    if cl:
        y, arg = y.transpose(0, 2, 3, 1), arg.transpose(0, 2, 3, 1)
    y, arg = np.ascontiguousarray(y), np.ascontiguousarray(arg)
    return (y, arg) if return_indices else y


def _standin_max_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0, data_format="NCHW", indices=None):
    cl = data_format == "NHWC"
    xc = x.transpose(0, 3, 1, 2) if cl else x
    g = grad_out.transpose(0, 3, 1, 2) if cl else grad_out
    k = _pair(kernel_size)
    s = k if stride is None else _pair(stride)
    if indices is None:
        _, arg = _pool_scan(xc, k, s, _pair(padding))
    else:
        arg = indices.transpose(0, 3, 1, 2) if cl else indices
    N, C, H, W = xc.shape
    gx = np.zeros((N * C, H * W), dtype=x.dtype)
    rows = np.repeat(np.arange(N * C), arg.shape[2] * arg.shape[3])
    np.add.at(gx, (rows, arg.reshape(-1)), g.reshape(-1))
    gx = gx.reshape(N, C, H, W)
    return np.ascontiguousarray(gx.transpose(0, 2, 3, 1) if cl else gx)


def _standin_max_pool1d(x, kernel_size, stride=None, padding=0, data_format="NCL", return_indices=False):
    cl = data_format == "NLC"
    x4 = x[:, None, :, :] if cl else x[:, :, None, :]
    st = None if stride is None else (1, _pair(stride)[0])
    r = _standin_max_pool2d(x4, (1, _pair(kernel_size)[0]), st, (0, _pair(padding)[0]), "NHWC" if cl else "NCHW",
                            return_indices)
    sq = (lambda a: a[:, 0]) if cl else (lambda a: a[:, :, 0])
    return (sq(r[0]), sq(r[1])) if return_indices else sq(r)


def _standin_max_pool1d_backward(grad_out, x, kernel_size, stride=None, padding=0, data_format="NCL", indices=None):
    cl = data_format == "NLC"
    x4 = x[:, None, :, :] if cl else x[:, :, None, :]
    g4 = grad_out[:, None, :, :] if cl else grad_out[:, :, None, :]
    i4 = None if indices is None else (indices[:, None, :, :] if cl else indices[:, :, None, :])
    st = None if stride is None else (1, _pair(stride)[0])
    gx = _standin_max_pool2d_backward(g4, x4, (1, _pair(kernel_size)[0]), st, (0, _pair(padding)[0]),
                                      "NHWC" if cl else "NCHW", i4)
    return gx[:, 0] if cl else gx[:, :, 0]


def max_pool2d(x, kernel_size, stride, padding, data_format):
    """-> (y, int64 indices h * W + w), both laid out like y."""
    f = _real("max_pool2d") or _standin_max_pool2d
    return f(x, kernel_size, stride=stride, padding=padding, data_format=data_format, return_indices=True)


def max_pool2d_backward(grad_out, x, kernel_size, stride, padding, data_format, indices):
    f = _real("max_pool2d_backward") or _standin_max_pool2d_backward
    return f(grad_out, x, kernel_size, stride=stride, padding=padding, data_format=data_format, indices=indices)


def max_pool1d(x, kernel_size, stride, padding, data_format):
    """-> (y, int64 indices into L), both laid out like y."""
    f = _real("max_pool1d") or _standin_max_pool1d
    return f(x, kernel_size, stride=stride, padding=padding, data_format=data_format, return_indices=True)


def max_pool1d_backward(grad_out, x, kernel_size, stride, padding, data_format, indices):
    f = _real("max_pool1d_backward") or _standin_max_pool1d_backward
    return f(grad_out, x, kernel_size, stride=stride, padding=padding, data_format=data_format, indices=indices)


# --------------------------------------------------------------------------- attention
# Stand-in: q (..., L, E), k (..., S, E), v (..., S, Ev); heads on axis -3 for GQA. Float64
# inside; lse (..., L) float32 is the log-sum-exp of the scaled, masked scores of each row.

def _attn_bias(attn_mask, is_causal, L, S, dtype):
    bias = np.zeros((L, S), dtype=dtype)
    if is_causal:
        bias = np.where(np.tril(np.ones((L, S), dtype=bool)), 0.0, -np.inf)
    if attn_mask is not None:
        if attn_mask.dtype == np.bool_:
            bias = bias + np.where(attn_mask, 0.0, -np.inf)
        else:
            bias = bias + attn_mask.astype(np.float64)
    return bias


def _expand_kv(q, k, v, enable_gqa):
    if enable_gqa and q.ndim >= 3 and k.shape[-3] != q.shape[-3]:
        rep = q.shape[-3] // k.shape[-3]
        return np.repeat(k, rep, axis=-3), np.repeat(v, rep, axis=-3), rep
    return k, v, 1


def _standin_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False,
                  return_lse=False):
    if dropout_p:
        raise ValueError("scaled_dot_product_attention stand-in: dropout_p must be 0")
    E = q.shape[-1]
    sc = 1.0 / np.sqrt(E) if scale is None else scale
    ke, ve, _ = _expand_kv(q, k, v, enable_gqa)
    s = np.matmul(q.astype(np.float64), np.swapaxes(ke, -1, -2).astype(np.float64)) * sc
    s = s + _attn_bias(attn_mask, is_causal, q.shape[-2], k.shape[-2], np.float64)
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = e.sum(axis=-1, keepdims=True)
    out = np.matmul(e / z, ve.astype(np.float64)).astype(q.dtype)
    if return_lse:
        lse = (np.log(z) + m)[..., 0].astype(np.float32)
        return out, lse
    return out


def _standin_sdpa_backward(grad_out, q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False,
                           out=None, lse=None):
    E = q.shape[-1]
    sc = 1.0 / np.sqrt(E) if scale is None else scale
    ke, ve, rep = _expand_kv(q, k, v, enable_gqa)
    q64, k64, v64, g64 = (a.astype(np.float64) for a in (q, ke, ve, grad_out))
    s = np.matmul(q64, np.swapaxes(k64, -1, -2)) * sc + _attn_bias(attn_mask, is_causal, q.shape[-2], k.shape[-2],
                                                                   np.float64)
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    P = e / e.sum(axis=-1, keepdims=True)
    gv = np.matmul(np.swapaxes(P, -1, -2), g64)
    gP = np.matmul(g64, np.swapaxes(v64, -1, -2))
    gS = P * (gP - np.sum(gP * P, axis=-1, keepdims=True))
    gq = np.matmul(gS, k64) * sc
    gk = np.matmul(np.swapaxes(gS, -1, -2), q64) * sc
    if rep > 1:
        sh = gk.shape[:-3] + (k.shape[-3], rep) + gk.shape[-2:]
        gk = gk.reshape(sh).sum(axis=-3)
        gv = gv.reshape(gv.shape[:-3] + (k.shape[-3], rep) + gv.shape[-2:]).sum(axis=-3)
    return gq.astype(q.dtype), gk.astype(k.dtype), gv.astype(v.dtype)


def scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale, enable_gqa):
    """-> (out like q with v's last dim, lse (..., L) float32)."""
    f = _real("scaled_dot_product_attention") or _standin_sdpa
    return f(q, k, v, attn_mask=attn_mask, dropout_p=0.0, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa,
             return_lse=True)


def scaled_dot_product_attention_backward(grad_out, q, k, v, attn_mask, is_causal, scale, enable_gqa, out, lse):
    f = _real("scaled_dot_product_attention_backward") or _standin_sdpa_backward
    return f(grad_out, q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa,
             out=out, lse=lse)


# --------------------------------------------------------------------------- HMM
# Log-space forward-backward of one sequence. K states, T steps. log_startprob (K,),
# log_transmat (K, K), log_emission (T, K) (log p(x_t | state)); all float64 inside.
# Switch point: when pyaiml.ops.hmm offers a functional forward-backward, call it from
# hmm_forward_backward / hmm_grads below; nothing else in pyaiml.torch changes.

def _lse(a, axis):
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(m + np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)), axis=axis)


def _alpha_beta(ls, lA, lB):
    T, K = lB.shape
    la = np.empty((T, K))
    lb = np.empty((T, K))
    la[0] = ls + lB[0]
    for t in range(1, T):
        la[t] = _lse(la[t - 1][:, None] + lA, axis=0) + lB[t]
    lb[T - 1] = 0.0
    for t in range(T - 2, -1, -1):
        lb[t] = _lse(lA + (lB[t + 1] + lb[t + 1])[None, :], axis=1)
    return la, lb, _lse(la[T - 1], axis=0)


def hmm_forward_backward(log_startprob, log_transmat, log_emission):
    """-> (log-likelihood float64 scalar, posteriors (T, K) float64)."""
    ls, lA, lB = (np.asarray(a, dtype=np.float64) for a in (log_startprob, log_transmat, log_emission))
    la, lb, ll = _alpha_beta(ls, lA, lB)
    with np.errstate(invalid="ignore"):
        post = np.exp(la + lb - ll)
    return ll, post


def hmm_grads(log_startprob, log_transmat, log_emission):
    """d logL / d inputs: (gamma_0 (K,), sum_t xi_t (K, K), gamma (T, K)), float64."""
    ls, lA, lB = (np.asarray(a, dtype=np.float64) for a in (log_startprob, log_transmat, log_emission))
    la, lb, ll = _alpha_beta(ls, lA, lB)
    with np.errstate(invalid="ignore"):
        gamma = np.exp(la + lb - ll)
        T = lB.shape[0]
        xi = np.zeros_like(lA)
        if T > 1:
            # xi_t(i, j) = alpha_t(i) A(i, j) B_{t+1}(j) beta_{t+1}(j) / L, summed over t.
            w = la[:-1, :, None] + lA[None] + (lB[1:] + lb[1:])[:, None, :] - ll
            xi = np.exp(w).sum(axis=0)
    return gamma[0], xi, gamma
