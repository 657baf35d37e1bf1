"""Adapters from the registry's attention signatures to pyaiml._C (float32, 4-D).

The flash-style kernels flag any NaN/inf in their results; the binding then reruns the call
with the row-by-row kernels, which skip masked pairs, so non-finite values in masked
positions never reach the result and NaN propagates only where it is due.
"""
from __future__ import annotations

from pyaiml import _backend

_C = _backend.native()


def attention_forward(q, k, v, mask=None, is_causal=False, scale=1.0):
    return _C.attention_forward(q, k, v, mask, bool(is_causal), float(scale), False)


def attention_backward(grad_out, q, k, v, mask=None, is_causal=False, scale=1.0, out=None, lse=None):
    if out is None or lse is None:
        out, lse = _C.attention_forward(q, k, v, mask, bool(is_causal), float(scale), False)
    return _C.attention_backward(grad_out, q, k, v, mask, bool(is_causal), float(scale), out, lse, False)


def attention_forward_rows(q, keys, values, scale=1.0):
    return _C.attention_forward_rows(q, keys, values, float(scale))
