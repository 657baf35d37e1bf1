"""NumPy reference for the ``norm`` op (LayerNorm / RMSNorm rows), in float64."""
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
