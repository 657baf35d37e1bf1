"""Max pooling with ``torch.nn.functional`` semantics: ``max_pool1d``, ``max_pool2d`` and
their explicit backward, channels first or channels last.

Validates, fixes contiguity, and calls the registry's implementation (C++ in
csrc/cpu/pool.cpp, Numba in pyaiml/_numba/pool.py, NumPy in pyaiml/reference/pool.py).
Padding is implicit -inf (at most half the kernel, as in torch); ties send the gradient to
the first maximum in row-major window order, as torch does. Indices are flat positions
h * W + w in the (unpadded) input plane, like torch's, or with ``index_format="window"``
one byte per output: the maximum's position inside its window (what a training loop
needs, 8x less memory than torch's int64). ``activation="relu"`` pools into
relu(max_pool(x)) = max_pool(relu(x)) (4x fewer ReLUs than before the pool), and its
window indices carry the ReLU gradient (255: no gradient), so the backward of the pair
is the pool's backward alone. max_pool1d runs as max_pool2d with H = 1. No ceil_mode /
dilation. Tests: tests/test_pool.py.

Per-call overhead matters here (a pool of a small CNN takes 50-200 us): the geometry of a
call signature (shape, dtype, kernel, stride, padding, format) is validated once and
remembered, and the C++ kernel reports whether its output is finite instead of a second
scan. Measured on (32, 13, 13, 64) 2x2: 13 -> 4 us of Python per forward call.
"""
from __future__ import annotations

import numpy as np

from pyaiml import _backend
from pyaiml.ops._validate import (as_array, finite_check, float_dtype, get_check_finite, int_tuple, require_finite,
                                  window_out)
from pyaiml.ops.conv import _FORMATS1, _FORMATS2, _data_format

_backend.register_op(
    "max_pool2d",
    cpp="pyaiml.ops._native_pool:max_pool2d",
    numba="pyaiml._numba.pool:max_pool2d",
    numpy="pyaiml.reference.pool:max_pool2d",
)
_backend.register_op(
    "max_pool2d_backward",
    cpp="pyaiml.ops._native_pool:max_pool2d_backward",
    numba="pyaiml._numba.pool:max_pool2d_backward",
    numpy="pyaiml.reference.pool:max_pool2d_backward",
)

_INDEX_FORMATS = ("flat", "window")
MAX_WINDOW = 254  # largest kernel_size product that window indices can encode (255 = no gradient)
_F64, _I64, _U8 = np.dtype(np.float64), np.dtype(np.int64), np.dtype(np.uint8)


def _impl(name, dtype):
    """(backend, callable) of op ``name``: the registry's choice; float64 runs on the NumPy
    reference."""
    if dtype == _F64:
        from pyaiml.reference import pool as ref

        return "numpy", getattr(ref, name)
    return _backend.chosen(name)


class _Plan:
    """Validated geometry of one call signature (flat: 4-D already, no reshapes needed)."""
    __slots__ = ("cl", "q", "oshape", "oshape4", "shape4", "kk", "flat")

    def __init__(self, cl, q, oshape, oshape4, shape4):
        self.cl, self.q, self.oshape, self.oshape4, self.shape4 = cl, q, oshape, oshape4, shape4
        self.kk = q[0] * q[1]  # Python ints: exact (a C product of two huge sizes could wrap)
        self.flat = oshape == oshape4


_plans: dict = {}


def _arg_key(v):
    """v itself when it is None, an int or a tuple/list of ints (exact types: no bool or
    float slips through a cached plan), else None (not cacheable)."""
    t = type(v)
    if t is int or v is None:
        return ("i", v)
    if t is tuple and len(v) == 2 and type(v[0]) is int and type(v[1]) is int:  # the common case, no genexpr
        return ("t", v)
    if (t is tuple or t is list) and all(type(e) is int for e in v):
        return ("t", tuple(v))
    return None


def _plan(op, nd, x, kernel_size, stride, padding, data_format):
    ks, ss, ps = _arg_key(kernel_size), _arg_key(stride), _arg_key(padding)
    key = None
    if ks is not None and ss is not None and ps is not None and type(data_format) is str:
        key = (op, x.shape, x.dtype, ks, ss, ps, data_format)
        plan = _plans.get(key)
        if plan is not None:
            return plan
    float_dtype(x, op, "x")
    cl = _data_format(data_format, _FORMATS1 if nd == 1 else _FORMATS2, op)
    want = ("(N, L, C)" if cl else "(N, C, L)") if nd == 1 else ("(N, H, W, C)" if cl else "(N, C, H, W)")
    if x.ndim != nd + 2:
        raise ValueError(f"{op}: x must be {nd + 2}-D {want}. Received shape {tuple(x.shape)}")
    # Parameters first (each within [minimum, MAX_EXTENT]), then the exact output size.
    k = int_tuple(kernel_size, nd, op, "kernel_size", 1)
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else int_tuple(
        stride, nd, op, "stride", 1)
    p = int_tuple(padding, nd, op, "padding", 0)
    if any(p[i] > k[i] // 2 for i in range(nd)):
        raise ValueError(f"{op}: padding must be at most half the kernel size. Received padding {padding!r} "
                         f"for kernel_size {kernel_size!r}")
    sp = x.shape[1:-1] if cl else x.shape[2:]
    C = x.shape[-1] if cl else x.shape[1]
    if C < 1 or any(e < 1 for e in sp):
        raise ValueError(f"{op}: x must have non-empty channel and spatial dimensions. Received shape {tuple(x.shape)}")
    out = window_out(op, sp, k, s, tuple((e, e) for e in p), (1,) * nd, padding, what="kernel_size")
    if any(o < 1 for o in out):
        raise ValueError(f"{op}: kernel_size must fit in the padded input. Received kernel_size {k} for input "
                         f"size {tuple(sp)} with padding {p}")
    N = x.shape[0]
    if nd == 1:
        q = (1, k[0], 1, s[0], 0, p[0])
        shape4 = (N, 1) + tuple(x.shape[1:]) if cl else (N, C, 1, sp[0])
    else:
        q = (k[0], k[1], s[0], s[1], p[0], p[1])
        shape4 = tuple(x.shape)
    oshape = (N,) + tuple(out) + (C,) if cl else (N, C) + tuple(out)
    oshape4 = (N,) + (1,) * (2 - nd) + tuple(out) + (C,) if cl else (N, C) + (1,) * (2 - nd) + tuple(out)
    plan = _Plan(cl, q, oshape, oshape4, shape4)
    if key is not None:
        if len(_plans) > 256:
            _plans.clear()
        _plans[key] = plan
    return plan


def _x4(x, plan):
    x4 = x if plan.flat else x.reshape(plan.shape4)
    return x4 if x4.flags.c_contiguous else np.ascontiguousarray(x4)


def _options(op, activation, index_format, return_indices):
    if activation not in (None, "linear", "relu"):
        raise ValueError(f"{op}: activation must be None or 'relu'. Received {activation!r}")
    if index_format not in _INDEX_FORMATS:
        raise ValueError(f"{op}: index_format must be 'flat' or 'window'. Received {index_format!r}")
    relu = activation == "relu"
    if relu and return_indices and index_format == "flat":
        raise ValueError(f"{op}: with activation='relu', indices must use index_format='window' (flat indices cannot "
                         "say that a window's ReLU passes no gradient)")
    return relu


def _pool(op, nd, x, kernel_size, stride, padding, data_format, return_indices, activation, index_format):
    if type(x) is not np.ndarray:
        x = as_array(x, op, "x")
    plan = _plan(op, nd, x, kernel_size, stride, padding, data_format)
    relu = _options(op, activation, index_format, return_indices)
    index = index_format if return_indices else None
    if index == "window" and plan.kk > MAX_WINDOW:
        raise ValueError(f"{op}: index_format='window' needs kernel_size[0] * kernel_size[1] <= {MAX_WINDOW}. "
                         f"Received kernel_size {kernel_size!r}")
    if x.shape[0] == 0:
        y = np.zeros(plan.oshape, x.dtype)
        return (y, np.zeros(plan.oshape, np.int64 if index == "flat" else np.uint8)) if return_indices else y
    x4 = _x4(x, plan)
    backend, impl = _impl("max_pool2d", x.dtype)
    y, idx, finite = impl(x4, plan.q, plan.cl, index, relu)
    # NaN and +inf reach the output of their window, so a finite output means that no
    # non-finite input mattered; otherwise the full check on x names the element.
    if not finite and get_check_finite():
        # raises: a non-finite output comes from a non-finite x
        require_finite(x4, op, "x", finite_check(backend), x.shape)
    if not plan.flat:
        y = y.reshape(plan.oshape)
        idx = idx if idx is None else idx.reshape(plan.oshape)
    return (y, idx) if return_indices else y


def max_pool2d(x, kernel_size, stride=None, padding=0, data_format="NCHW", return_indices=False, activation=None,
               index_format="flat"):
    """2-D max pooling.

    Parameters
    ----------
    x : array (N, C, H, W), or (N, H, W, C) with data_format="NHWC"
    kernel_size, stride (default: kernel_size), padding : int or (int, int)
    activation : None or "relu" (output relu(max_pool2d(x)))
    index_format : "flat" (int64 h * W + w, torch's) or "window" (uint8 position of the
        maximum in its window, kh_i * kw + kw_i from the padded window's origin; 255 where
        activation="relu" clamped the window). "window" needs kh * kw <= 254.

    Returns
    -------
    y (N, C, OH, OW) or (N, OH, OW, C); with return_indices, also the indices (same shape).
    """
    return _pool("max_pool2d", 2, x, kernel_size, stride, padding, data_format, return_indices, activation,
                 index_format)


def max_pool1d(x, kernel_size, stride=None, padding=0, data_format="NCL", return_indices=False, activation=None,
               index_format="flat"):
    """1-D max pooling of x (N, C, L) or (N, L, C) with data_format="NLC" (options as max_pool2d)."""
    return _pool("max_pool1d", 1, x, kernel_size, stride, padding, data_format, return_indices, activation,
                 index_format)


def _pool_backward(op, nd, grad_out, x, kernel_size, stride, padding, data_format, indices, index_format):
    g = grad_out if type(grad_out) is np.ndarray else as_array(grad_out, op, "grad_out")
    if type(x) is not np.ndarray:
        x = as_array(x, op, "x")
    plan = _plan(op, nd, x, kernel_size, stride, padding, data_format)
    if index_format not in _INDEX_FORMATS:
        raise ValueError(f"{op}: index_format must be 'flat' or 'window'. Received {index_format!r}")
    if g.dtype != x.dtype:
        float_dtype(g, op, "grad_out")
        raise TypeError(f"{op}: grad_out must have x's dtype {x.dtype}. Received {g.dtype}")
    if g.shape != plan.oshape:
        raise ValueError(f"{op}: grad_out must have the forward output's shape {plan.oshape}. Received {tuple(g.shape)}")
    backend, impl = _impl("max_pool2d_backward", x.dtype)
    idx = None
    if indices is not None:
        idx = indices if type(indices) is np.ndarray else as_array(indices, op, "indices")
        if idx.dtype.kind not in "iu":
            raise TypeError(f"{op}: indices must be an integer array. Received {idx.dtype}")
        if idx.shape != plan.oshape:
            raise ValueError(f"{op}: indices must have the forward output's shape {plan.oshape}. "
                             f"Received {tuple(idx.shape)}")
        want = _U8 if index_format == "window" else _I64
        if index_format == "window" and plan.kk > MAX_WINDOW:
            raise ValueError(f"{op}: index_format='window' needs kernel_size[0] * kernel_size[1] <= {MAX_WINDOW}. "
                             f"Received kernel_size {kernel_size!r}")
        if idx.dtype != want and idx.size:
            lo, hi = (0, 255) if index_format == "window" else (np.iinfo(np.int64).min, np.iinfo(np.int64).max)
            if idx.min() < lo or idx.max() > hi:
                raise ValueError(f"{op}: window indices must lie in [0, 255]. Received values in "
                                 f"[{idx.min()}, {idx.max()}]")
        if index_format == "flat" and backend != "cpp" and idx.size:
            # The C++ kernel checks the range itself while reading (bindings/conv.cpp raises);
            # the other backends' indices are checked here.
            H, W = plan.shape4[1:3] if plan.cl else plan.shape4[2:]
            if idx.min() < 0 or idx.max() >= H * W:
                raise ValueError(f"{op}: indices must lie in [0, {H * W}). Received values in "
                                 f"[{idx.min()}, {idx.max()}]")
        if not plan.flat:
            idx = idx.reshape(plan.oshape4)
        if idx.dtype != want or not idx.flags.c_contiguous:
            idx = np.ascontiguousarray(idx, dtype=want)
    if x.shape[0] == 0:
        return np.zeros(x.shape, x.dtype)
    x4 = _x4(x, plan)
    if idx is None:
        require_finite(x4, op, "x", finite_check(backend), x.shape)
    g4 = g if plan.flat else g.reshape(plan.oshape4)
    if not g4.flags.c_contiguous:
        g4 = np.ascontiguousarray(g4)
    gx = impl(g4, x4, plan.q, plan.cl, idx, index_format)
    return gx if plan.flat else gx.reshape(x.shape)


def max_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0, data_format="NCHW", indices=None,
                        index_format="flat"):
    """Gradient of :func:`max_pool2d` with respect to x, from the forward's indices (flat,
    or window positions with index_format="window"; those of a forward with
    activation="relu" give the gradient of the pool-and-ReLU pair) or, when None,
    recomputed from x. Returns grad_x like x."""
    return _pool_backward("max_pool2d_backward", 2, grad_out, x, kernel_size, stride, padding, data_format, indices,
                          index_format)


def max_pool1d_backward(grad_out, x, kernel_size, stride=None, padding=0, data_format="NCL", indices=None,
                        index_format="flat"):
    """Gradient of :func:`max_pool1d` with respect to x (options as max_pool2d_backward)."""
    return _pool_backward("max_pool1d_backward", 1, grad_out, x, kernel_size, stride, padding, data_format, indices,
                          index_format)
