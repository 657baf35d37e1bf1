"""NumPy references (float64 inside) for the ``norm``, ``gelu_tanh`` and ``swiglu`` ops, and
``rope_qk`` in float32 (the products and sums rounded as the kernels round them)."""
from __future__ import annotations

import numpy as np


def norm(x2, weight=None, bias=None, eps=1e-5, rms=False):
    x = x2.astype(np.float64)
    if rms:
        y = x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)
    else:
        d = x - x.mean(axis=-1, keepdims=True)
        y = d / np.sqrt((d * d).mean(axis=-1, keepdims=True) + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.astype(x2.dtype)


def layer_norm_backward(g2, x2, weight=None, eps=1e-5, need=(True, True, True)):
    """(grad_x, grad_weight, grad_bias) of the layer norm over rows (float64 inside)."""
    x, g = x2.astype(np.float64), g2.astype(np.float64)
    d0 = x - x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt((d0 * d0).mean(axis=-1, keepdims=True) + eps)
    xh = d0 * rstd
    d = g * weight if weight is not None else g
    dx = rstd * (d - d.mean(axis=-1, keepdims=True) - xh * (d * xh).mean(axis=-1, keepdims=True))
    dt = x2.dtype
    return (dx.astype(dt) if need[0] else None, (g * xh).sum(axis=0).astype(dt) if need[1] else None,
            g.sum(axis=0).astype(dt) if need[2] else None)


def gelu_tanh(x):
    v = np.asarray(x, np.float64)
    return (0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3)))).astype(np.float32)


def swiglu(x2):
    v = np.asarray(x2, np.float64)
    g, u = np.split(v, 2, axis=-1)
    with np.errstate(over="ignore"):  # exp(-g) = inf for very negative g: silu(g) = -0
        return (g / (1 + np.exp(-g)) * u).astype(np.float32)


def rope_qk(qkv, cos, sin, H, Hk):
    """q (B, H, L, D) and k (B, L, Hk, D): rotate-half RoPE of the first H + Hk heads of
    qkv (B, L, W) with tables (B, L, D/2)."""
    B, L, _ = qkv.shape
    half = cos.shape[2]
    D = 2 * half
    x = qkv[..., :(H + Hk) * D].reshape(B, L, H + Hk, D)
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    out = np.empty(x.shape, np.float32)
    out[..., :half] = x1 * c - x2 * s
    out[..., half:] = x2 * c + x1 * s
    return np.ascontiguousarray(out[:, :, :H].transpose(0, 2, 1, 3)), np.ascontiguousarray(out[:, :, H:])
