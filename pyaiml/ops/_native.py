"""Thin adapters from the registry's op signatures to pyaiml._C entry points."""
from __future__ import annotations

import numpy as np

from pyaiml import _backend
from pyaiml.ops._validate import all_finite_numpy

_C = _backend.native()
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)


def gemm(a3, b3, bias=None, relu=False):
    return _C.gemm(a3, b3, bias, relu)


def gemm_checked(a3, b3, bias=None, relu=False):
    """(c, finite): finite is False when some value of a3 @ b3 was NaN or inf."""
    return _C.gemm(a3, b3, bias, relu, False, True)


def linear_q8(x2, q, scale, bias=None):
    return _C.linear_q8(x2, q, scale, bias)


def linear_q8_packed(x2, qp, sp, n, bias=None):
    return _C.linear_q8_packed(x2, qp, sp, n, bias)


def linear_w8a8_packed(x2, qp, sp, n, bias=None):
    return _C.linear_w8a8_packed(x2, qp, sp, n, bias)


def linear_f32_packed(x2, wp, n, bias=None):
    return _C.linear_f32_packed(x2, wp, n, bias)


def norm(x2, weight=None, bias=None, eps=1e-5, rms=False):
    return _C.norm(x2, weight, bias, eps, rms)


def layer_norm_backward(g2, x2, weight=None, eps=1e-5, need=(True, True, True)):
    return _C.layer_norm_backward(g2, x2, weight, eps, *need)


def gelu_tanh(x):
    return _C.gelu_tanh(x)


def swiglu(x2):
    return _C.swiglu(x2)


def rope_qk(qkv, cos, sin, H, Hk):
    return _C.rope_qk(qkv, cos, sin, H, Hk)


def all_finite(x):
    """float32 and float64: one vectorised native pass, split over the pool when large
    (NumPy for non-contiguous or misaligned arrays); other dtypes: NumPy's sum test."""
    dt = x.dtype
    if dt is _F32 or dt is _F64 or dt == _F32 or dt == _F64:
        return _C.all_finite(x)
    return all_finite_numpy(x)
