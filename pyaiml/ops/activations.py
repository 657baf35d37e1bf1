"""Activation functions with ``torch.nn.functional`` semantics and their backward.

relu, sigmoid, tanh, softmax, log_softmax, gelu (exact erf form or approximate='tanh').
Vectorised NumPy: each is one or two memory passes, which a kernel would not beat by
enough to matter next to the conv and GEMM work around it in a model; erf for the exact
GELU comes from a small Numba loop (NumPy has no erf). Numerically stable: sigmoid never
exponentiates a positive number, softmax/log_softmax subtract the row maximum.

Backward conventions (like the aten ops): one input, so one gradient, returned as an
array (not a tuple): ``relu_backward(grad_out, x)``, ``sigmoid_backward(grad_out, out)``,
``tanh_backward(grad_out, out)``, ``softmax_backward(grad_out, out, dim)``,
``log_softmax_backward(grad_out, out, dim)``, ``gelu_backward(grad_out, x, approximate)``.
float32 in, float32 out. Not a place for fused conv/GEMM epilogues.
Tests: tests/test_keras_ops.py (against torch in float64).
"""
from __future__ import annotations

import numpy as np

from pyaiml.ops._validate import as_array, float_dtype


def _x(x, op, name="x"):
    x = as_array(x, op, name)
    float_dtype(x, op, name)
    return x


def _dim(x, dim, op):
    """The reduction axis; a 0-D input takes dim 0 or -1 (as torch) and is reduced as (1,)."""
    n = max(x.ndim, 1)
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"{op}: dim must be an integer. Received {type(dim).__name__}")
    if not -n <= dim < n:
        raise ValueError(f"{op}: dim must be in [{-n}, {n - 1}] for a {x.ndim}-D input. Received {dim}")
    return int(dim) if x.ndim else -1


def _as_1d_if_0d(*arrays):
    return tuple(a.reshape(1) if a.ndim == 0 else a for a in arrays)


def _same(g, y, op):
    if g.shape != y.shape:
        raise ValueError(f"{op}: grad_out must have the input's shape {tuple(y.shape)}. Received {tuple(g.shape)}")


def relu(x) -> np.ndarray:
    """max(x, 0)."""
    x = _x(x, "relu")
    return np.maximum(x, x.dtype.type(0))


def relu_backward(grad_out, x, out=None) -> np.ndarray:
    """grad_out where x > 0 (x may be relu's input or output), else 0.

    ``out`` (optional, may be grad_out itself) receives the result in place.
    Multiplying by the boolean mask is branch-free: on a 32x30x30x32 float32 map with random
    signs it took 0.8 ms where np.where / np.putmask took 15-16 ms (mispredicted branches).
    (A non-finite grad_out at a masked position gives NaN here, where torch gives 0.)"""
    g, x = _x(grad_out, "relu_backward", "grad_out"), _x(x, "relu_backward")
    _same(g, x, "relu_backward")
    if out is None:
        return np.multiply(g, x > 0)
    if out.shape != g.shape or out.dtype != g.dtype:
        raise ValueError(f"relu_backward: out must match grad_out's shape and dtype {tuple(g.shape)} {g.dtype}. "
                         f"Received {tuple(out.shape)} {out.dtype}")
    return np.multiply(g, x > 0, out=out)


def sigmoid(x) -> np.ndarray:
    """1 / (1 + exp(-x)), stable for large |x|."""
    x = _x(x, "sigmoid")
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def sigmoid_backward(grad_out, out) -> np.ndarray:
    """grad_out * s * (1 - s) with s = sigmoid's output."""
    g, y = _x(grad_out, "sigmoid_backward", "grad_out"), _x(out, "sigmoid_backward", "out")
    _same(g, y, "sigmoid_backward")
    return g * y * (1 - y)


def tanh(x) -> np.ndarray:
    x = _x(x, "tanh")
    return np.tanh(x)


def tanh_backward(grad_out, out) -> np.ndarray:
    """grad_out * (1 - t^2) with t = tanh's output."""
    g, y = _x(grad_out, "tanh_backward", "grad_out"), _x(out, "tanh_backward", "out")
    _same(g, y, "tanh_backward")
    return g * (1 - y * y)


def softmax(x, dim: int = -1) -> np.ndarray:
    x = _x(x, "softmax")
    dim = _dim(x, dim, "softmax")
    if x.size == 0:  # an empty reduction gives an empty result, as torch
        return np.empty_like(x)
    (x1,) = _as_1d_if_0d(x)
    e = np.exp(x1 - x1.max(axis=dim, keepdims=True))
    e /= e.sum(axis=dim, keepdims=True)
    return e.reshape(x.shape)


def softmax_last_unchecked(x) -> np.ndarray:
    """``softmax(x, -1)``'s arithmetic (same bits) with no argument handling, for callers that
    hold a non-empty float array and run with the finite checks off (the tape's softmax, Keras's
    inference path). Not public."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def softmax_backward(grad_out, out, dim: int = -1) -> np.ndarray:
    """y * (g - sum(g * y)) with y = softmax's output."""
    g, y = _x(grad_out, "softmax_backward", "grad_out"), _x(out, "softmax_backward", "out")
    _same(g, y, "softmax_backward")
    dim = _dim(y, dim, "softmax_backward")
    if y.size == 0:
        return np.empty_like(g)
    g1, y1 = _as_1d_if_0d(g, y)
    return (y1 * (g1 - (g1 * y1).sum(axis=dim, keepdims=True))).reshape(y.shape)


def log_softmax(x, dim: int = -1) -> np.ndarray:
    x = _x(x, "log_softmax")
    dim = _dim(x, dim, "log_softmax")
    if x.size == 0:
        return np.empty_like(x)
    (x1,) = _as_1d_if_0d(x)
    z = x1 - x1.max(axis=dim, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=dim, keepdims=True))
    return z.reshape(x.shape)


def log_softmax_backward(grad_out, out, dim: int = -1) -> np.ndarray:
    """g - exp(out) * sum(g) with out = log_softmax's output."""
    g, y = _x(grad_out, "log_softmax_backward", "grad_out"), _x(out, "log_softmax_backward", "out")
    _same(g, y, "log_softmax_backward")
    dim = _dim(y, dim, "log_softmax_backward")
    if y.size == 0:
        return np.empty_like(g)
    g1, y1 = _as_1d_if_0d(g, y)
    return (g1 - np.exp(y1) * g1.sum(axis=dim, keepdims=True)).reshape(y.shape)


_SQRT_2_PI = np.sqrt(2.0 / np.pi)
_INV_SQRT2 = 1.0 / np.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


def _approx(approximate, op):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"{op}: approximate must be 'none' or 'tanh'. Received {approximate!r}")
    return approximate == "tanh"


def _erf(x):
    try:
        from pyaiml._numba.activations import erf
    except ImportError:  # Numba missing: exact but slow elementwise math.erf
        import math

        return np.vectorize(math.erf, otypes=[x.dtype])(x)
    return erf(x)


def gelu(x, approximate: str = "none") -> np.ndarray:
    """x * Phi(x) (exact, erf) or the tanh approximation."""
    x = _x(x, "gelu")
    t = x.dtype.type
    if _approx(approximate, "gelu"):
        inner = t(_SQRT_2_PI) * (x + t(0.044715) * x * x * x)
        return t(0.5) * x * (1 + np.tanh(inner))
    return t(0.5) * x * (1 + _erf(x * t(_INV_SQRT2)))


def gelu_backward(grad_out, x, approximate: str = "none") -> np.ndarray:
    g, x = _x(grad_out, "gelu_backward", "grad_out"), _x(x, "gelu_backward")
    _same(g, x, "gelu_backward")
    t = x.dtype.type
    if _approx(approximate, "gelu_backward"):
        x2 = x * x
        inner = t(_SQRT_2_PI) * (x + t(0.044715) * x2 * x)
        th = np.tanh(inner)
        dinner = t(_SQRT_2_PI) * (1 + t(3 * 0.044715) * x2)
        return g * (t(0.5) * (1 + th) + t(0.5) * x * (1 - th * th) * dinner)
    cdf = t(0.5) * (1 + _erf(x * t(_INV_SQRT2)))
    pdf = t(_INV_SQRT_2PI) * np.exp(t(-0.5) * x * x)
    return g * (cdf + x * pdf)
