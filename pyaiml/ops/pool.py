"""Max pooling with ``torch.nn.functional`` semantics: ``max_pool1d``, ``max_pool2d`` and
their explicit backward, channels first or channels last.

Validates, fixes contiguity, and calls the registry's implementation (C++ in
csrc/cpu/pool.cpp, Numba in pyaiml/_numba/conv.py, NumPy in pyaiml/reference/conv.py).
Padding is implicit -inf (at most half the kernel, as in torch); ties send the gradient to
the first maximum in row-major window order, as torch does. Indices are flat positions
h * W + w in the (unpadded) input plane, like torch's. max_pool1d runs as max_pool2d with
H = 1. No ceil_mode / dilation. Tests: tests/test_pool.py.
"""
from __future__ import annotations

import numpy as np

from pyaiml import _backend
from pyaiml.ops._validate import as_array, float_dtype, get_check_finite, require_finite
from pyaiml.ops.conv import _FORMATS1, _FORMATS2, _data_format, _ints

_backend.register_op(
    "max_pool2d",
    cpp="pyaiml.ops._native_conv:max_pool2d",
    numba="pyaiml._numba.conv:max_pool2d",
    numpy="pyaiml.reference.conv:max_pool2d",
)
_backend.register_op(
    "max_pool2d_backward",
    cpp="pyaiml.ops._native_conv:max_pool2d_backward",
    numba="pyaiml._numba.conv:max_pool2d_backward",
    numpy="pyaiml.reference.conv:max_pool2d_backward",
)


def _fast_finite(a) -> bool:
    C = _backend.native()
    if C is not None and a.flags.c_contiguous:
        return C.all_finite(a)
    return bool(np.isfinite(a).all())


def _impl(name, dtype):
    if dtype == np.float64:
        from pyaiml.reference import conv as ref

        return getattr(ref, name)
    return _backend.resolve(name)


def _prepare(op, x, kernel_size, stride, padding, cl, nd):
    float_dtype(x, op, "x")
    want = ("(N, L, C)" if cl else "(N, C, L)") if nd == 1 else ("(N, H, W, C)" if cl else "(N, C, H, W)")
    if x.ndim != nd + 2:
        raise ValueError(f"{op}: x must be {nd + 2}-D {want}. Received shape {tuple(x.shape)}")
    k = _ints(kernel_size, nd, op, "kernel_size", 1)
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else _ints(stride, nd, op, "stride", 1)
    p = _ints(padding, nd, op, "padding", 0)
    if any(p[i] > k[i] // 2 for i in range(nd)):
        raise ValueError(f"{op}: padding must be at most half the kernel size. Received padding {padding!r} "
                         f"for kernel_size {kernel_size!r}")
    sp = x.shape[1:-1] if cl else x.shape[2:]
    C = x.shape[-1] if cl else x.shape[1]
    if C < 1 or any(e < 1 for e in sp):
        raise ValueError(f"{op}: x must have non-empty channel and spatial dimensions. Received shape {tuple(x.shape)}")
    out = []
    for i in range(nd):
        if sp[i] + 2 * p[i] < k[i]:
            raise ValueError(f"{op}: kernel_size must fit in the padded input. Received kernel_size {k} for input "
                             f"size {tuple(sp)} with padding {p}")
        out.append((sp[i] + 2 * p[i] - k[i]) // s[i] + 1)
    if nd == 1:
        x4 = x[:, None, :, :] if cl else x[:, :, None, :]
        q = (1, k[0], 1, s[0], 0, p[0])
    else:
        x4 = x
        q = (k[0], k[1], s[0], s[1], p[0], p[1])
    N = x.shape[0]
    oshape = (N,) + tuple(out) + (C,) if cl else (N, C) + tuple(out)
    oshape4 = (N,) + (1,) * (2 - nd) + tuple(out) + (C,) if cl else (N, C) + (1,) * (2 - nd) + tuple(out)
    return np.ascontiguousarray(x4), q, oshape, oshape4


def _pool(op, nd, x, kernel_size, stride, padding, data_format, return_indices):
    x = as_array(x, op, "x")
    cl = _data_format(data_format, _FORMATS1 if nd == 1 else _FORMATS2, op)
    x4, q, oshape, _ = _prepare(op, x, kernel_size, stride, padding, cl, nd)
    if x.shape[0] == 0:
        y = np.zeros(oshape, x.dtype)
        return (y, np.zeros(oshape, np.int64)) if return_indices else y
    y, idx = _impl("max_pool2d", x.dtype)(x4, q, cl, bool(return_indices))
    # NaN and +inf propagate to the output, so checking the (k times smaller) output finds
    # every non-finite input that matters; the full check on x then names the element.
    # 2x2 on (32, 30, 30, 32): checking x cost ~40% of the pooling itself.
    if get_check_finite() and not _fast_finite(y):
        require_finite(x4, op, "x")  # raises: a non-finite output comes from a non-finite x
    if return_indices:
        return y.reshape(oshape), idx.reshape(oshape)
    return y.reshape(oshape)


def max_pool2d(x, kernel_size, stride=None, padding=0, data_format="NCHW", return_indices=False):
    """2-D max pooling.

    Parameters
    ----------
    x : array (N, C, H, W), or (N, H, W, C) with data_format="NHWC"
    kernel_size, stride (default: kernel_size), padding : int or (int, int)

    Returns
    -------
    y (N, C, OH, OW) or (N, OH, OW, C); with return_indices, also int64 indices of the same
    shape (flat h * W + w positions in x's plane).
    """
    return _pool("max_pool2d", 2, x, kernel_size, stride, padding, data_format, return_indices)


def max_pool1d(x, kernel_size, stride=None, padding=0, data_format="NCL", return_indices=False):
    """1-D max pooling of x (N, C, L) or (N, L, C) with data_format="NLC"."""
    return _pool("max_pool1d", 1, x, kernel_size, stride, padding, data_format, return_indices)


def _pool_backward(op, nd, grad_out, x, kernel_size, stride, padding, data_format, indices):
    g = as_array(grad_out, op, "grad_out")
    x = as_array(x, op, "x")
    cl = _data_format(data_format, _FORMATS1 if nd == 1 else _FORMATS2, op)
    x4, q, oshape, oshape4 = _prepare(op, x, kernel_size, stride, padding, cl, nd)
    if float_dtype(g, op, "grad_out") != x.dtype:
        raise TypeError(f"{op}: grad_out must have x's dtype {x.dtype}. Received {g.dtype}")
    if tuple(g.shape) != oshape:
        raise ValueError(f"{op}: grad_out must have the forward output's shape {oshape}. Received {tuple(g.shape)}")
    idx = None
    if indices is not None:
        idx = as_array(indices, op, "indices")
        if idx.dtype.kind not in "iu":
            raise TypeError(f"{op}: indices must be an integer array. Received {idx.dtype}")
        if tuple(idx.shape) != oshape:
            raise ValueError(f"{op}: indices must have the forward output's shape {oshape}. Received {tuple(idx.shape)}")
        H, W = x4.shape[1:3] if cl else x4.shape[2:]
        # The C++ kernel checks the range itself while reading; the others are checked here.
        if (x.dtype != np.float32 or _backend.choose("max_pool2d_backward")[0] != "cpp") and idx.size and (
                idx.min() < 0 or idx.max() >= H * W):
            raise ValueError(f"{op}: indices must lie in [0, {H * W}). Received values in [{idx.min()}, {idx.max()}]")
        idx = np.ascontiguousarray(idx.reshape(oshape4), dtype=np.int64)
    else:
        require_finite(x4, op, "x")
    if x.shape[0] == 0:
        return np.zeros(x.shape, x.dtype)
    g4 = np.ascontiguousarray(g.reshape(oshape4))
    gx = _impl("max_pool2d_backward", x.dtype)(g4, x4, q, cl, idx)
    return gx.reshape(x.shape)


def max_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0, data_format="NCHW", indices=None):
    """Gradient of :func:`max_pool2d` with respect to x (indices from the forward, or
    recomputed from x when None). Returns grad_x like x."""
    return _pool_backward("max_pool2d_backward", 2, grad_out, x, kernel_size, stride, padding, data_format, indices)


def max_pool1d_backward(grad_out, x, kernel_size, stride=None, padding=0, data_format="NCL", indices=None):
    """Gradient of :func:`max_pool1d` with respect to x."""
    return _pool_backward("max_pool1d_backward", 1, grad_out, x, kernel_size, stride, padding, data_format, indices)
