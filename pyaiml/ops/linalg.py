"""Matrix products with torch semantics: ``matmul``, ``linear`` and their backward.

float32 runs on the registry's ``gemm`` op (C++ blocked SGEMM, Numba, or NumPy); float64
runs through NumPy. Transposed, sliced and negative-stride views are passed to the kernel
as strides, without copies. Tests: tests/test_matmul.py.
"""
from __future__ import annotations

import numpy as np

from pyaiml import _backend
from pyaiml.ops._validate import as_array, float_dtype, get_check_finite, require_finite, require_nonempty

_backend.register_op(
    "gemm",
    cpp="pyaiml.ops._native:gemm",
    numba="pyaiml._numba.gemm:gemm",
    numpy="pyaiml.reference.gemm:gemm",
)
# gemm that also reports a NaN/inf in the product (C++ only; called when "gemm" runs on C++).
_backend.register_op("gemm_checked", cpp="pyaiml.ops._native:gemm_checked")
# x (M, K) @ int8 weights with float16 block scales (Q8_0), see linear_q8.
_backend.register_op(
    "linear_q8",
    cpp="pyaiml.ops._native:linear_q8",
    numba="pyaiml._numba.gemm:linear_q8",
    numpy="pyaiml.reference.gemm:linear_q8",
)
# The same with the weights packed in panels of 64 columns (pyaiml.llm.quant.pack_q8), for
# pyaiml.llm's int8 layers; not a public op.
_backend.register_op(
    "linear_q8_packed",
    cpp="pyaiml.ops._native:linear_q8_packed",
    numba="pyaiml._numba.gemm:linear_q8_packed",
    numpy="pyaiml.reference.gemm:linear_q8_packed",
)
# The same panels against x quantized per row and 32-block as well (W8A8, pyaiml.llm's int8
# layers; AVX-512 VNNI where the CPU has it); not a public op.
_backend.register_op(
    "linear_w8a8_packed",
    cpp="pyaiml.ops._native:linear_w8a8_packed",
    numba="pyaiml._numba.gemm:linear_w8a8_packed",
    numpy="pyaiml.reference.gemm:linear_w8a8_packed",
)
# x (M, K) @ float32 weights packed in panels of 64 columns (pyaiml.llm.layers.to_panels), for
# pyaiml.llm's float32 layers; not a public op.
_backend.register_op(
    "linear_f32_packed",
    cpp="pyaiml.ops._native:linear_f32_packed",
    numba="pyaiml._numba.gemm:linear_f32_packed",
    numpy="pyaiml.reference.gemm:linear_f32_packed",
)
Q8_BLOCK = 32


def _same_dtype(op: str, **arrays) -> np.dtype:
    dts = {name: float_dtype(x, op, name) for name, x in arrays.items() if x is not None}
    if len(set(dts.values())) > 1:
        got = ", ".join(f"{n}={d}" for n, d in dts.items())
        raise TypeError(f"{op}: all inputs must have the same dtype (float32 or float64). Received {got}")
    return next(iter(dts.values()))


def _kernel_checks_finite(dtype) -> bool:
    """Whether the inputs' NaN/inf check can wait for the product (C++ backend, float32).

    The C++ kernel flags a NaN or inf in its result at no extra pass over memory, and a NaN
    or inf in an input always reaches the result (inf * 0 is NaN), so the inputs are then
    scanned only when the flag is up. Scanning them first would cost a full read of A, as
    much as the product itself for the skinny GEMMs of convolutions.
    """
    return get_check_finite() and dtype == np.float32 and _backend.chosen_backend("gemm") == "cpp"


def _gemm3(a3: np.ndarray, b3: np.ndarray, bias=None, relu: bool = False, nonfinite=None) -> np.ndarray:
    """(Bt, M, K) @ (Bt, K, N) [+ bias (N,)] [relu] -> (Bt, M, N), any strides, one dtype.

    With ``nonfinite`` (a one-item list, C++ backend), sets ``nonfinite[0]`` when the product
    had a NaN or inf before bias and relu.
    """
    if a3.dtype == np.float64:
        from pyaiml.reference.gemm import gemm as ref

        return ref(a3, b3, bias, relu)
    if nonfinite is not None:
        c, finite = _backend.resolve("gemm_checked", "cpp")(a3, b3, bias, relu)
        if not finite:
            nonfinite[0] = True
        return c
    return _backend.resolve("gemm")(a3, b3, bias, relu)


def _check_inputs_after(nonfinite, op: str, **arrays) -> None:
    """Names the input that holds a NaN or inf once the product has flagged one; a flag
    with finite inputs is overflow, and the result stands (as in torch)."""
    if nonfinite is not None and nonfinite[0]:
        for name, x in arrays.items():
            require_finite(x, op, name)


def _batched(a: np.ndarray, b: np.ndarray, op: str, nonfinite=None) -> np.ndarray:
    """a (..., M, K) @ b (..., K, N) with batch broadcasting, without copying operands."""
    M, K = a.shape[-2:]
    K2, N = b.shape[-2:]
    if K != K2:
        raise ValueError(
            f"{op}: inner dimensions must match: a is (..., M, K) = {tuple(a.shape)}, "
            f"b is (..., K, N) = {tuple(b.shape)}; K {K} != {K2}"
        )
    try:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(
            f"{op}: batch dimensions must broadcast. Received a {tuple(a.shape)} and b {tuple(b.shape)}"
        ) from None
    if b.ndim == 2 and a.ndim > 2:
        # Fold a's batch dimensions into M: one large GEMM instead of many small ones.
        a2 = a.reshape(-1, K)
        return _gemm3(a2[None], b[None], nonfinite=nonfinite)[0].reshape(*a.shape[:-2], M, N)
    if not batch:
        return _gemm3(a[None], b[None], nonfinite=nonfinite)[0]
    ab = np.broadcast_to(a, batch + (M, K))
    bb = np.broadcast_to(b, batch + (K, N))
    out = np.empty(batch + (M, N), dtype=a.dtype)
    for idx in np.ndindex(*batch[:-1]):
        out[idx] = _gemm3(ab[idx], bb[idx], nonfinite=nonfinite)
    return out


def matmul(a, b) -> np.ndarray:
    """Matrix product with ``torch.matmul`` semantics.

    Parameters
    ----------
    a : array (..., M, K) or (K,)
    b : array (..., K, N) or (K,)

    Returns
    -------
    array (broadcast(...), M, N); 1-D operands get a dimension added and removed as in torch.
    float32 in, float32 out; float64 in, float64 out.
    """
    op = "matmul"
    a = as_array(a, op, "a")
    b = as_array(b, op, "b")
    dtype = _same_dtype(op, a=a, b=b)
    deferred = _kernel_checks_finite(dtype)
    for name, x in (("a", a), ("b", b)):
        if x.ndim < 1:
            raise ValueError(f"{op}: {name} must be at least 1-D. Received a scalar of shape {tuple(x.shape)}")
        require_nonempty(x, op, name)
        if not deferred:
            require_finite(x, op, name)
    squeeze_a = a.ndim == 1
    squeeze_b = b.ndim == 1
    if squeeze_a:
        a = a[None, :]
    if squeeze_b:
        b = b[:, None]
    nonfinite = [False] if deferred else None
    out = _batched(a, b, op, nonfinite)
    _check_inputs_after(nonfinite, op, a=a, b=b)
    if squeeze_a and squeeze_b:
        return out.reshape(out.shape[:-2])
    if squeeze_a:
        return out[..., 0, :]
    if squeeze_b:
        return out[..., 0]
    return out


def linear_unchecked(x, kernel, bias=None, relu=False) -> np.ndarray:
    """x (..., in) @ kernel (in, out) [+ bias (out,)] [then ReLU, in the GEMM's epilogue] on the
    registry's GEMM with no argument handling: the call ``linear`` makes (same bits), for
    callers that have checked float32 arrays of matching shapes and run with finite checks off
    (Keras's Dense inside fit, the tape's dense op). Not public."""
    return _backend.resolve("gemm")(x.reshape(-1, x.shape[-1])[None], kernel[None], bias, relu)[0].reshape(
        *x.shape[:-1], kernel.shape[1])


def linear(x, weight, bias=None) -> np.ndarray:
    """``x @ weight.T + bias`` with ``torch.nn.functional.linear`` semantics.

    Parameters
    ----------
    x : array (..., in_features)
    weight : array (out_features, in_features)
    bias : array (out_features,) or None

    Returns
    -------
    array (..., out_features)
    """
    op = "linear"
    x = as_array(x, op, "x")
    weight = as_array(weight, op, "weight")
    if bias is not None:
        bias = as_array(bias, op, "bias")
    dtype = _same_dtype(op, x=x, weight=weight, bias=bias)
    if x.ndim < 1:
        raise ValueError(f"{op}: x must be at least 1-D (..., in_features). Received shape {tuple(x.shape)}")
    if weight.ndim != 2:
        raise ValueError(f"{op}: weight must be 2-D (out_features, in_features). Received shape {tuple(weight.shape)}")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"{op}: x's last dimension must equal weight's in_features. Received x {tuple(x.shape)}, "
            f"weight {tuple(weight.shape)}"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"{op}: bias must have shape ({weight.shape[0]},). Received {tuple(bias.shape)}")
    deferred = _kernel_checks_finite(dtype)
    for name, v in (("x", x), ("weight", weight), ("bias", bias)):
        if v is not None:
            require_nonempty(v, op, name)
            if not (deferred and name != "bias"):
                require_finite(v, op, name)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    b = None if bias is None else np.ascontiguousarray(bias)
    nonfinite = [False] if deferred else None
    y = _gemm3(x2[None], weight.T[None], b, nonfinite=nonfinite)[0]
    _check_inputs_after(nonfinite, op, x=x, weight=weight)
    return y.reshape(*lead, weight.shape[0])


def matmul_backward(grad_out, a, b) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of ``matmul(a, b)`` for 2-D or batched (same batch shape) a and b.

    Returns ``(grad_a, grad_b)``: grad_out @ b^T and a^T @ grad_out (summed over broadcast
    batch dimensions).
    """
    op = "matmul_backward"
    g = as_array(grad_out, op, "grad_out")
    a = as_array(a, op, "a")
    b = as_array(b, op, "b")
    _same_dtype(op, grad_out=g, a=a, b=b)
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"{op}: a and b must be at least 2-D. Received {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"{op}: inner dimensions must match (a's last, b's second-to-last). Received a "
                         f"{tuple(a.shape)} and b {tuple(b.shape)}")
    try:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"{op}: batch dimensions must broadcast. Received a {tuple(a.shape)} and "
                         f"b {tuple(b.shape)}") from None
    expect = batch + (a.shape[-2], b.shape[-1])
    if g.shape != expect:
        raise ValueError(f"{op}: grad_out must have shape {expect}. Received {tuple(g.shape)}")
    ga = _batched(g, np.swapaxes(b, -1, -2), op)
    gb = _batched(np.swapaxes(a, -1, -2), g, op)
    return _reduce_to(ga, a.shape), _reduce_to(gb, b.shape)


def _reduce_to(g: np.ndarray, shape) -> np.ndarray:
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for i, s in enumerate(shape):
        if s == 1 and g.shape[i] != 1:
            g = g.sum(axis=i, keepdims=True)
    return g


def linear_q8(x, q, scale, bias=None) -> np.ndarray:
    """``x @ W + bias`` with W stored as int8 ``q`` (in, out) and float16 ``scale``
    (in / 32, out): ``W[k, n] = q[k, n] * scale[k // 32, n]`` (Q8_0 weight-only quantization,
    pyaiml.llm.quant). x float32 (..., in); returns float32 (..., out).

    The weights are read as int8 and widened in registers (C++: a streaming kernel for up to
    8 rows of x, a panel-widening GEMM above); nothing the size of W is allocated.
    """
    op = "linear_q8"
    x = as_array(x, op, "x")
    if x.dtype != np.float32:
        raise TypeError(f"{op}: x must be float32. Received {x.dtype}")
    q = np.asarray(q)
    scale = np.asarray(scale)
    if q.dtype != np.int8 or q.ndim != 2:
        raise TypeError(f"{op}: q must be a 2-D int8 array (in, out). Received {q.dtype} {q.shape}")
    if scale.dtype != np.float16 or scale.ndim != 2:
        raise TypeError(f"{op}: scale must be a 2-D float16 array (in/{Q8_BLOCK}, out). Received {scale.dtype} "
                        f"{scale.shape}")
    K, N = q.shape
    if x.ndim < 1 or x.shape[-1] != K:
        raise ValueError(f"{op}: x's last dimension must equal q's in_features {K}. Received x {tuple(x.shape)}")
    if K % Q8_BLOCK or scale.shape != (K // Q8_BLOCK, N):
        raise ValueError(f"{op}: q's in_features must be a multiple of {Q8_BLOCK} and scale (in/{Q8_BLOCK}, out) = "
                         f"({K // Q8_BLOCK}, {N}). Received q {q.shape}, scale {scale.shape}")
    if bias is not None:
        bias = as_array(bias, op, "bias")
        if bias.dtype != np.float32 or bias.shape != (N,):
            raise ValueError(f"{op}: bias must be float32 of shape ({N},). Received {bias.dtype} {tuple(bias.shape)}")
        require_finite(bias, op, "bias")
    require_nonempty(x, op, "x")
    require_finite(x, op, "x")
    if not np.isfinite(scale).all():
        raise ValueError(f"{op}: scale must be finite")
    lead = x.shape[:-1]
    x2 = np.ascontiguousarray(x.reshape(-1, K))
    y = _backend.resolve("linear_q8")(x2, np.ascontiguousarray(q), np.ascontiguousarray(scale),
                                      None if bias is None else np.ascontiguousarray(bias))
    return y.reshape(*lead, N)


def linear_backward(grad_out, x, weight, has_bias: bool = True):
    """Gradients of ``linear(x, weight, bias)``.

    Parameters
    ----------
    grad_out : array (..., out_features)
    x : array (..., in_features)
    weight : array (out_features, in_features)

    Returns
    -------
    (grad_x (..., in), grad_weight (out, in), grad_bias (out,) or None)
    """
    op = "linear_backward"
    g = as_array(grad_out, op, "grad_out")
    x = as_array(x, op, "x")
    weight = as_array(weight, op, "weight")
    _same_dtype(op, grad_out=g, x=x, weight=weight)
    if weight.ndim != 2 or x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"{op}: x (..., in) and weight (out, in) do not match. Received {tuple(x.shape)}, {tuple(weight.shape)}")
    if g.shape != x.shape[:-1] + (weight.shape[0],):
        raise ValueError(f"{op}: grad_out must have shape {x.shape[:-1] + (weight.shape[0],)}. Received {tuple(g.shape)}")
    g2 = g.reshape(-1, weight.shape[0])
    x2 = x.reshape(-1, x.shape[-1])
    gx = _gemm3(g2[None], weight[None])[0].reshape(x.shape)
    gw = _gemm3(g2.T[None], x2[None])[0]
    gb = g2.sum(axis=0, dtype=np.float64).astype(g.dtype) if has_bias else None
    return gx, gw, gb
