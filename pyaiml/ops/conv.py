"""Convolutions with ``torch.nn.functional`` semantics: ``conv1d``, ``conv2d`` and their
explicit backward, channels first (NCL/NCHW) or channels last (NLC/NHWC).

This module validates arguments, resolves padding ("valid", "same", ints, tuples), fixes
dtype and contiguity, and calls the implementation the backend registry picks (C++ in
csrc/cpu/conv.cpp, Numba in pyaiml/_numba/conv.py, NumPy in pyaiml/reference/conv.py).
conv1d runs as conv2d with H = 1 (a view, no copy). float32 runs on the registry's
backends; float64 runs through the NumPy reference. Weights are always (OC, C/G, KH, KW),
whatever the data format. Tests: tests/test_conv.py.
"""
from __future__ import annotations

import functools

import numpy as np

from pyaiml import _backend
from pyaiml.ops._validate import (
    MAX_PADDED_ELEMENTS,
    as_array,
    finite_check,
    float_dtype,
    get_check_finite,
    int_arg,
    int_tuple,
    require_finite,
    window_out,
)

_backend.register_op(
    "conv2d",
    cpp="pyaiml.ops._native_conv:conv2d",
    numba="pyaiml._numba.conv:conv2d",
    numpy="pyaiml.reference.conv:conv2d",
)
_backend.register_op(
    "conv2d_backward",
    cpp="pyaiml.ops._native_conv:conv2d_backward",
    numba="pyaiml._numba.conv:conv2d_backward",
    numpy="pyaiml.reference.conv:conv2d_backward",
)

_FORMATS2 = {"NCHW": False, "NHWC": True, "channels_first": False, "channels_last": True}
_FORMATS1 = {"NCL": False, "NLC": True, "NCW": False, "NWC": True, "channels_first": False, "channels_last": True}


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def _impl(name, dtype):
    """(backend, callable) of op ``name``: the registry's choice; float64 runs on the NumPy
    reference."""
    if dtype is _F64 or dtype == np.float64:
        from pyaiml.reference import conv as ref

        return "numpy", getattr(ref, name)
    return _backend.chosen(name)


@functools.cache
def _checked_cpp():  # the import once, not on every call (it loads _C on first use)
    from pyaiml.ops._native_conv import conv2d_checked

    return conv2d_checked


def _data_format(fmt, table, op):
    if fmt not in table:
        raise ValueError(f"{op}: data_format must be one of {', '.join(repr(k) for k in table)}. Received {fmt!r}")
    return table[fmt]


def _same_dtype(op, **arrays):
    dts = {n: float_dtype(a, op, n) for n, a in arrays.items() if a is not None}
    if len(set(dts.values())) > 1:
        got = ", ".join(f"{n}={d}" for n, d in dts.items())
        raise TypeError(f"{op}: all inputs must have the same dtype (float32 or float64). Received {got}")
    return next(iter(dts.values()))


_checked: dict = {}


def _plain(v):
    t = type(v)
    return t is int or t is str or (t is tuple and all(type(e) is int for e in v))


def _prepare(op, x, weight, stride, padding, dilation, groups, cl, nd):
    """Checks shapes and parameters of a 2-D (nd=2) or 1-D (nd=1) conv; returns
    (x4, w4, p, out_spatial) with x4/w4 contiguous 4-D views and p the backend tuple.
    Shapes and parameters that passed once are remembered (the checks depend on nothing
    else), which takes ~8 us off every later call with the same layer configuration."""
    # Plain ints, strings and tuples of ints key as themselves; anything else by repr, which
    # keeps True apart from 1 (the checks reject bools; type(True) is bool, not int).
    if _plain(stride) and _plain(padding) and _plain(dilation) and type(groups) is int:
        key = (op, x.shape, weight.shape, stride, padding, dilation, groups, cl, nd)
    else:
        key = (op, x.shape, weight.shape, repr((stride, padding, dilation, groups)), cl, nd)
    hit = _checked.get(key)
    if hit is None:
        hit = _prepare_checks(op, x, weight, stride, padding, dilation, groups, cl, nd)
        if len(_checked) < 4096:
            _checked[key] = hit
    p, out = hit
    if nd == 1:
        x4 = x[:, None, :, :] if cl else x[:, :, None, :]
        w4 = weight[:, :, None, :]
    else:
        x4, w4 = x, weight
    return np.ascontiguousarray(x4), np.ascontiguousarray(w4), p, out


def _prepare_checks(op, x, weight, stride, padding, dilation, groups, cl, nd):
    want_x = ("(N, L, C)" if cl else "(N, C, L)") if nd == 1 else ("(N, H, W, C)" if cl else "(N, C, H, W)")
    want_w = "(Cout, Cin/groups, kL)" if nd == 1 else "(Cout, Cin/groups, kH, kW)"
    if x.ndim != nd + 2:
        raise ValueError(f"{op}: x must be {nd + 2}-D {want_x}. Received shape {tuple(x.shape)}")
    if weight.ndim != nd + 2:
        raise ValueError(f"{op}: weight must be {nd + 2}-D {want_w}. Received shape {tuple(weight.shape)}")
    G = int_arg(groups, op, "groups", 1)
    # Parameters first (each within [minimum, MAX_EXTENT]), then the exact output size.
    s = int_tuple(stride, nd, op, "stride", 1)
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise ValueError(f"{op}: padding must be an int, a tuple, 'valid' or 'same'. Received {padding!r}")
        if padding == "same" and any(e != 1 for e in s):
            raise ValueError(f"{op}: padding='same' needs stride 1 (as in torch). Received stride {stride!r}")
        pp = None
    else:
        pp = int_tuple(padding, nd, op, "padding", 0)
    d = int_tuple(dilation, nd, op, "dilation", 1)
    C = x.shape[-1] if cl else x.shape[1]
    sp = x.shape[1:-1] if cl else x.shape[2:]
    OC = weight.shape[0]
    k = weight.shape[2:]
    if C % G:
        raise ValueError(f"{op}: groups must divide the input channels. Received groups={G}, input channels {C}")
    if OC % G:
        raise ValueError(f"{op}: groups must divide the output channels (weight.shape[0]). Received groups={G}, "
                         f"weight shape {tuple(weight.shape)}")
    if weight.shape[1] * G != C:
        raise ValueError(f"{op}: weight.shape[1] must equal input channels / groups = {C} / {G}. Received weight "
                         f"shape {tuple(weight.shape)} for x of shape {tuple(x.shape)}")
    if any(e < 1 for e in k) or OC < 1:
        raise ValueError(f"{op}: weight must not be empty. Received shape {tuple(weight.shape)}")
    ek = tuple(d[i] * (k[i] - 1) + 1 for i in range(nd))
    if pp is None:
        pads = ((0, 0),) * nd if padding == "valid" else tuple(((e - 1) // 2, (e - 1) - (e - 1) // 2) for e in ek)
    else:
        pads = tuple((e, e) for e in pp)
    out = window_out(op, sp, k, s, pads, d, padding)
    padded = x.shape[0] * C
    for i in range(nd):
        padded *= sp[i] + pads[i][0] + pads[i][1]
    if padded > MAX_PADDED_ELEMENTS:
        raise ValueError(f"{op}: padding makes the padded input too large: N * C * padded sizes = {padded} elements, "
                         f"more than 2**60. Received padding {padding!r} for x of shape {tuple(x.shape)}")
    if any(o < 1 for o in out):
        raise ValueError(
            f"{op}: the (dilated) kernel must fit in the padded input. Received kernel size {tuple(k)} with "
            f"dilation {d} (extent {ek}) for input size {tuple(sp)} padded by {[list(q) for q in pads]}")
    if C < 1:
        raise ValueError(f"{op}: x must have at least one channel. Received shape {tuple(x.shape)}")
    if nd == 1:
        p = (1, s[0], 0, 0, pads[0][0], pads[0][1], 1, d[0], G)
    else:
        p = (s[0], s[1], pads[0][0], pads[0][1], pads[1][0], pads[1][1], d[0], d[1], G)
    return p, tuple(out)


def _conv(op, nd, x, weight, bias, stride, padding, dilation, groups, data_format, activation):
    # Every check of the general path runs, each once; the common case (ndarrays of one
    # float dtype) skips the generic helpers. tiny (N1 3->16 28x28): ~6 -> ~2 us of checks.
    if type(x) is not np.ndarray:
        x = as_array(x, op, "x")
    if type(weight) is not np.ndarray:
        weight = as_array(weight, op, "weight")
    if bias is not None and type(bias) is not np.ndarray:
        bias = as_array(bias, op, "bias")
    dt = x.dtype
    if not ((dt is _F32 or dt is _F64) and weight.dtype is dt and (bias is None or bias.dtype is dt)):
        dt = _same_dtype(op, x=x, weight=weight, bias=bias)
    cl = (_FORMATS1 if nd == 1 else _FORMATS2).get(data_format) if type(data_format) is str else None
    if cl is None:
        cl = _data_format(data_format, _FORMATS1 if nd == 1 else _FORMATS2, op)
    if activation is not None and activation != "relu" and activation != "linear":
        raise ValueError(f"{op}: activation must be None or 'relu'. Received {activation!r}")
    x4, w4, p, osp = _prepare(op, x, weight, stride, padding, dilation, groups, cl, nd)
    backend, impl = _impl("conv2d", dt)
    check = finite_check(backend)
    OC = weight.shape[0]
    if bias is not None:
        if bias.shape != (OC,):
            raise ValueError(f"{op}: bias must have shape ({OC},). Received {tuple(bias.shape)}")
        bias = np.ascontiguousarray(bias)
        require_finite(bias, op, "bias", check)
    N = x.shape[0]
    oshape = (N,) + osp + (OC,) if cl else (N, OC) + osp
    if N > 0 and backend == "cpp" and dt is _F32 and get_check_finite():
        # x's check inside the kernel (the channels-last depthwise one scans each input row as
        # it reads it: no pass of its own over x); a failed check raises the same error as the
        # other paths, and in the same order (x before weight)
        y, ok = _checked_cpp()(x4, w4, bias, p, cl, activation == "relu")
        if not ok:
            require_finite(x4, op, "x", check, x.shape)
        require_finite(w4, op, "weight", check, weight.shape)
        return y if nd == 2 else y.reshape(oshape)
    require_finite(x4, op, "x", check, x.shape)
    require_finite(w4, op, "weight", check, weight.shape)
    if N == 0:
        return np.zeros(oshape, dtype=dt)
    y = impl(x4, w4, bias, p, cl, activation == "relu")
    return y if nd == 2 else y.reshape(oshape)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, data_format="NCHW",
           activation=None):
    """2-D convolution (cross-correlation), ``torch.nn.functional.conv2d`` semantics.

    Parameters
    ----------
    x : array (N, C, H, W), or (N, H, W, C) with data_format="NHWC"
    weight : array (OC, C/groups, KH, KW), whatever the data format
    bias : array (OC,) or None
    stride, dilation : int or (int, int), >= 1
    padding : int, (int, int), "valid" or "same" (stride 1; extra row/column at the end)
    groups : int dividing C and OC
    activation : None or "relu" (fused into the kernel's epilogue)

    Returns
    -------
    array (N, OC, OH, OW) or (N, OH, OW, OC), x's dtype.
    """
    return _conv("conv2d", 2, x, weight, bias, stride, padding, dilation, groups, data_format, activation)


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, data_format="NCL", activation=None):
    """1-D convolution, ``torch.nn.functional.conv1d`` semantics.

    x (N, C, L) or (N, L, C) with data_format="NLC"; weight (OC, C/groups, KL).
    Returns (N, OC, OL) or (N, OL, OC).
    """
    return _conv("conv1d", 1, x, weight, bias, stride, padding, dilation, groups, data_format, activation)


def _mask(op, output_mask, needs_bias_grad):
    if output_mask is None:
        return True, True, bool(needs_bias_grad)
    if (not isinstance(output_mask, (tuple, list)) or len(output_mask) != 3
            or not all(isinstance(m, (bool, np.bool_)) for m in output_mask)):
        raise TypeError(f"{op}: output_mask must be a tuple of 3 bools (grad_x, grad_weight, grad_bias). "
                        f"Received {output_mask!r}")
    return bool(output_mask[0]), bool(output_mask[1]), bool(output_mask[2])


def _conv_backward(op, nd, grad_out, x, weight, stride, padding, dilation, groups, data_format, needs_bias_grad,
                   output_mask):
    need_x, need_w, need_b = _mask(op, output_mask, needs_bias_grad)
    g = grad_out if type(grad_out) is np.ndarray else as_array(grad_out, op, "grad_out")
    if type(x) is not np.ndarray:
        x = as_array(x, op, "x")
    if type(weight) is not np.ndarray:
        weight = as_array(weight, op, "weight")
    dt = x.dtype
    if not ((dt is _F32 or dt is _F64) and weight.dtype is dt and g.dtype is dt):
        dt = _same_dtype(op, grad_out=g, x=x, weight=weight)
    cl = (_FORMATS1 if nd == 1 else _FORMATS2).get(data_format) if type(data_format) is str else None
    if cl is None:
        cl = _data_format(data_format, _FORMATS1 if nd == 1 else _FORMATS2, op)
    x4, w4, p, osp = _prepare(op, x, weight, stride, padding, dilation, groups, cl, nd)
    OC = weight.shape[0]
    N = x.shape[0]
    oshape = (N,) + osp + (OC,) if cl else (N, OC) + osp
    if g.shape != oshape:
        raise ValueError(f"{op}: grad_out must have the forward output's shape {oshape}. Received {tuple(g.shape)}")
    if N == 0:
        return (np.zeros(x.shape, dt) if need_x else None, np.zeros(weight.shape, dt) if need_w else None,
                np.zeros((OC,), dt) if need_b else None)
    g4 = np.ascontiguousarray(g.reshape((N,) + (1,) * (2 - nd) + osp + (OC,) if cl else (N, OC) + (1,) * (2 - nd) + osp))
    backend, impl = _impl("conv2d_backward", dt)
    require_finite(g4, op, "grad_out", finite_check(backend), g.shape)
    if not (need_x or need_w or need_b):
        return None, None, None
    gx, gw, gb = impl(g4, x4, w4, p, cl, need_b, need_x=need_x, need_w=need_w)
    return (gx.reshape(x.shape) if need_x else None, gw.reshape(weight.shape) if need_w else None, gb)


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, data_format="NCHW",
                    needs_bias_grad=True, output_mask=None):
    """Gradients of :func:`conv2d` (the activation, if any, is not part of it).

    Parameters
    ----------
    grad_out : array like the forward output
    x, weight, stride, padding, dilation, groups, data_format : as given to :func:`conv2d`
    needs_bias_grad : bool, compute grad_bias (default True)
    output_mask : None or (bool, bool, bool)
        Which of (grad_x, grad_weight, grad_bias) to compute, as in torch's
        ``convolution_backward``; overrides ``needs_bias_grad``. A model's first layer needs no
        grad_x: ``output_mask=(False, True, True)`` skips that work.

    Returns
    -------
    (grad_x like x, grad_weight like weight, grad_bias (OC,)); a gradient not asked for is None.
    """
    return _conv_backward("conv2d_backward", 2, grad_out, x, weight, stride, padding, dilation, groups,
                          data_format, needs_bias_grad, output_mask)


def conv1d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, data_format="NCL",
                    needs_bias_grad=True, output_mask=None):
    """Gradients of :func:`conv1d`: (grad_x, grad_weight, grad_bias), None for those not asked for
    (``needs_bias_grad``, ``output_mask`` as in :func:`conv2d_backward`)."""
    return _conv_backward("conv1d_backward", 1, grad_out, x, weight, stride, padding, dilation, groups,
                          data_format, needs_bias_grad, output_mask)
