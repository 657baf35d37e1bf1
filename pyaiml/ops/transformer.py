"""The per-token pieces of transformer inference besides GEMM and attention.

Public: ``layer_norm`` with ``torch.nn.functional.layer_norm(x, (n,), weight, bias, eps)``
semantics over the last axis (biased variance) and ``rms_norm`` as Llama's RMSNorm
(``x / sqrt(mean(x^2) + eps) * weight``): float32 on the registry's ``norm`` op (C++
csrc/cpu/norm.cpp, Numba, NumPy), float64 on NumPy; each row is normalised on its own, so a
row's result does not depend on the others.
Registry ops for pyaiml.llm's MLPs (no argument checks; float32, model-internal arrays):
``gelu_tanh`` (GPT-2's gelu_new), ``swiglu`` (silu of the first half of each row times the
second) and ``rope_qk`` (rotate-half RoPE of the q and k heads of a fused qkv projection,
q returned in attention's (B, H, L, D) layout), C++ csrc/cpu/act.cpp, Numba, NumPy.

Registry op ``layer_norm_backward`` (float32 rows, no argument checks): the layer norm's
gradients, for pyaiml.autograd.functional.layer_norm's float32 path (C++, Numba, NumPy).

Not here: other gradients (pyaiml.autograd.functional trains). Tests: tests/test_norm.py,
tests/test_act.py.
"""
from __future__ import annotations

import numpy as np

from pyaiml import _backend
from pyaiml.ops._validate import (
    as_array,
    get_check_finite,
    require_finite,
    require_nonempty,
)

_backend.register_op(
    "norm",
    cpp="pyaiml.ops._native:norm",
    numba="pyaiml._numba.transformer:norm",
    numpy="pyaiml.reference.transformer:norm",
)
_backend.register_op(
    "layer_norm_backward",
    cpp="pyaiml.ops._native:layer_norm_backward",
    numba="pyaiml._numba.transformer:layer_norm_backward",
    numpy="pyaiml.reference.transformer:layer_norm_backward",
)
_backend.register_op(
    "gelu_tanh",
    cpp="pyaiml.ops._native:gelu_tanh",
    numba="pyaiml._numba.transformer:gelu_tanh",
    numpy="pyaiml.reference.transformer:gelu_tanh",
)
_backend.register_op(
    "swiglu",
    cpp="pyaiml.ops._native:swiglu",
    numba="pyaiml._numba.transformer:swiglu",
    numpy="pyaiml.reference.transformer:swiglu",
)
_backend.register_op(
    "rope_qk",
    cpp="pyaiml.ops._native:rope_qk",
    numba="pyaiml._numba.transformer:rope_qk",
    numpy="pyaiml.reference.transformer:rope_qk",
)


def _run(op, x, weight, bias, eps, rms):
    x = as_array(x, op, "x")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: x must be float32 or float64. Received {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"{op}: x must be at least 1-D (..., n). Received shape {tuple(x.shape)}")
    n = x.shape[-1]
    args = {}
    for name, v in (("weight", weight), ("bias", bias)):
        if v is None:
            args[name] = None
            continue
        v = as_array(v, op, name)
        if v.shape != (n,):
            raise ValueError(f"{op}: {name} must have shape ({n},). Received {tuple(v.shape)}")
        if v.dtype != x.dtype:
            raise TypeError(f"{op}: {name} must have x's dtype {x.dtype}. Received {v.dtype}")
        args[name] = np.ascontiguousarray(v)
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: eps must be a number. Received {type(eps).__name__}") from None
    if not (eps >= 0 and np.isfinite(eps)):
        raise ValueError(f"{op}: eps must be finite and >= 0. Received {eps}")
    require_nonempty(x, op, "x")
    if get_check_finite():
        require_finite(x, op, "x")
    x2 = x.reshape(-1, n)
    if x2.strides[-1] != x.itemsize:
        x2 = np.ascontiguousarray(x2)
    if x.dtype == np.float64:
        from pyaiml.reference.transformer import norm as ref

        y = ref(x2, args["weight"], args["bias"], eps, rms)
    else:
        y = _backend.resolve("norm")(x2, args["weight"], args["bias"], eps, rms)
    return y.reshape(x.shape)


def layer_norm(x, weight=None, bias=None, eps: float = 1e-5) -> np.ndarray:
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last axis of x (..., n)."""
    return _run("layer_norm", x, weight, bias, eps, False)


def rms_norm(x, weight=None, eps: float = 1e-6) -> np.ndarray:
    """``x / sqrt(mean(x**2) + eps) * weight`` over the last axis of x (..., n)."""
    return _run("rms_norm", x, weight, None, eps, True)
