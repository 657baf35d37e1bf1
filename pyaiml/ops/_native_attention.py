"""Adapters from the registry's attention signatures to pyaiml._C (float32, 4-D).

Inputs holding NaN or inf go to the C++ row-by-row kernels, which skip masked pairs, so
non-finite values in masked positions never reach the result; finite inputs (the usual
case, checked in one pass) take the flash-style kernels.
"""
from __future__ import annotations

from pyaiml import _backend

_C = _backend.native()


def _finite(*xs) -> bool:
    return all(_C.all_finite(x) for x in xs)


def attention_forward(q, k, v, mask=None, is_causal=False, scale=1.0):
    naive = not _finite(q, k, v)
    return _C.attention_forward(q, k, v, mask, bool(is_causal), float(scale), naive)


def attention_backward(grad_out, q, k, v, mask=None, is_causal=False, scale=1.0, out=None, lse=None):
    if not _finite(grad_out, q, k, v):
        return _C.attention_backward(grad_out, q, k, v, mask, bool(is_causal), float(scale), None, None, True)
    if out is None or lse is None:
        out, lse = _C.attention_forward(q, k, v, mask, bool(is_causal), float(scale), False)
    return _C.attention_backward(grad_out, q, k, v, mask, bool(is_causal), float(scale), out, lse, False)
