"""NumPy references (float64 inside) for the ``norm``, ``gelu_tanh`` and ``swiglu`` ops."""
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


def gelu_tanh(x):
    v = np.asarray(x, np.float64)
    return (0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3)))).astype(np.float32)


def swiglu(x2):
    v = np.asarray(x2, np.float64)
    g, u = np.split(v, 2, axis=-1)
    with np.errstate(over="ignore"):  # exp(-g) = inf for very negative g: silu(g) = -0
        return (g / (1 + np.exp(-g)) * u).astype(np.float32)
