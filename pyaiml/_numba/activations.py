"""Numba helper for the activations family: elementwise erf (NumPy has none).

Used by pyaiml.ops.activations.gelu(approximate='none'). Tests: tests/test_keras_ops.py.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np


@nb.njit(cache=True)
def _erf_loop(x, out):
    for i in range(x.size):
        out[i] = math.erf(x[i])


def erf(x: np.ndarray) -> np.ndarray:
    """Elementwise erf of a float32/float64 array (same dtype and shape)."""
    xc = np.ascontiguousarray(x)  # 0-D comes back 1-D: the shape is restored below
    out = np.empty_like(xc)
    _erf_loop(xc.reshape(-1), out.reshape(-1))
    return out.reshape(np.shape(x))
