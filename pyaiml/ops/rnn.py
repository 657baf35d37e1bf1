"""The LSTM and GRU recurrences over a whole sequence as one op each, forward and backward
through time.

Keras 3's LSTM cell (gate order i, f, c, o along the last axis; sigmoid for i, f, o, tanh
for the candidate and the output), run over all steps at once, given the input projection
of every step::

    z_t = xp[:, t] + h_{t-1} @ recurrent_kernel
    i, f, o = sigmoid(z_i, z_f, z_o);  g = tanh(z_c)
    c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t)

A step whose ``mask`` entry is False keeps both states (h_t = h_{t-1}, c_t = c_{t-1}), as
Keras does for padded steps. float32 runs on the registry's ``lstm_forward`` /
``lstm_backward`` ops (the fused C++ kernels of csrc/cpu/rnn.cpp, Numba, or NumPy); float64
runs through the NumPy reference (pyaiml/reference/rnn.py).

``gru_sequence`` / ``gru_sequence_backward`` do the same for Keras 3's GRU with
``reset_after=True`` (registry ops ``gru_forward`` / ``gru_backward``).

Not here: the input projection (``linear``/``matmul`` before, its gradient after), other
activations, GRU with ``reset_after=False``, SimpleRNN, recurrent dropout
(pyaiml/keras/recurrent.py keeps those on its NumPy scan). Tests: tests/test_rnn_kernel.py (torch autograd in float64, the reference, every
backend and ISA, awkward shapes, bad input).
"""
from __future__ import annotations

import numpy as np

from pyaiml import _backend
from pyaiml.ops._validate import as_array, finite_check, float_dtype, require_finite

_backend.register_op(
    "lstm_forward",
    cpp="pyaiml.ops._native_rnn:lstm_forward",
    numba="pyaiml._numba.rnn:lstm_forward",
    numpy="pyaiml.reference.rnn:lstm_forward",
)
_backend.register_op(
    "lstm_backward",
    cpp="pyaiml.ops._native_rnn:lstm_backward",
    numba="pyaiml._numba.rnn:lstm_backward",
    numpy="pyaiml.reference.rnn:lstm_backward",
)

_backend.register_op(
    "gru_forward",
    cpp="pyaiml.ops._native_rnn:gru_forward",
    numba="pyaiml._numba.rnn:gru_forward",
    numpy="pyaiml.reference.rnn:gru_forward",
)
_backend.register_op(
    "gru_backward",
    cpp="pyaiml.ops._native_rnn:gru_backward",
    numba="pyaiml._numba.rnn:gru_backward",
    numpy="pyaiml.reference.rnn:gru_backward",
)

_F32 = np.dtype(np.float32)


def _impl(name, dtype):
    """(backend, callable): the registry's choice for float32, the NumPy reference else."""
    if dtype == _F32:
        return _backend.chosen(name)
    return "numpy", _backend.resolve(name, "numpy")


def _grad(g, op, name, shape, dt, chk):
    """An optional incoming gradient: None, or a contiguous array of ``shape`` and dtype ``dt``
    (checked finite when ``chk``)."""
    if g is None:
        return None
    g = as_array(g, op, name)
    if g.dtype != dt or g.shape != shape:
        raise ValueError(f"{op}: {name} must have shape {shape} and dtype {dt}. Received {tuple(g.shape)} {g.dtype}")
    g = np.ascontiguousarray(g)
    require_finite(g, op, name, chk)
    return g


def _state(x, op, name, shape, dtype):
    if x is None:
        return np.zeros(shape, dtype)
    x = as_array(x, op, name)
    if x.dtype != dtype:
        raise TypeError(f"{op}: {name} must have the dtype of xp ({dtype}). Received {x.dtype}")
    if x.shape != shape:
        raise ValueError(f"{op}: {name} must have shape (batch, units) = {shape}. Received {tuple(x.shape)}")
    return np.ascontiguousarray(x)


def _mask(mask, op, B, T):
    if mask is None:
        return None
    m = as_array(mask, op, "mask")
    if m.dtype.kind not in "biu":
        raise TypeError(f"{op}: mask must be a bool (or integer 0/1) array. Received dtype {m.dtype}")
    if m.shape != (B, T):
        raise ValueError(f"{op}: mask must have shape (batch, steps) = ({B}, {T}). Received {tuple(m.shape)}")
    m = np.ascontiguousarray(m, dtype=bool)
    return None if m.all() else m


def lstm_sequence(xp, recurrent_kernel, h0=None, c0=None, mask=None):
    """Run the LSTM over every step.

    Parameters
    ----------
    xp : array (B, T, 4H), float32 or float64
        The input projection of every step, x @ kernel + bias (gates i, f, c, o).
    recurrent_kernel : array (H, 4H), xp's dtype
    h0, c0 : array (B, H) or None
        Initial states (zeros when None).
    mask : bool array (B, T) or None
        False marks a padded step: both states carry through it unchanged.

    Returns
    -------
    (hs, cs, gates, tc): hs (B, T, H) the hidden state after each step; cs (B, T + 1, H)
    the cell states, cs[:, 0] = c0 and cs[:, -1] the last; gates (B, T, 4H) the activated
    gates; tc (B, T, H) tanh of each step's new cell. The last three are what
    ``lstm_sequence_backward`` needs.
    """
    op = "lstm_sequence"
    xp = as_array(xp, op, "xp")
    U = as_array(recurrent_kernel, op, "recurrent_kernel")
    dt = float_dtype(xp, op, "xp")
    if U.dtype != dt:
        raise TypeError(f"{op}: recurrent_kernel must have the dtype of xp ({dt}). Received {U.dtype}")
    if U.ndim != 2 or U.shape[0] < 1 or U.shape[1] != 4 * U.shape[0]:
        raise ValueError(f"{op}: recurrent_kernel must have shape (units, 4 * units). Received {tuple(U.shape)}")
    H = U.shape[0]
    if xp.ndim != 3 or xp.shape[2] != 4 * H or xp.shape[0] < 1 or xp.shape[1] < 1:
        raise ValueError(f"{op}: xp must have shape (batch, steps, 4 * units) with batch, steps >= 1 and units = "
                         f"{H} (from recurrent_kernel). Received {tuple(xp.shape)}")
    B, T = xp.shape[:2]
    h0 = _state(h0, op, "h0", (B, H), dt)
    c0 = _state(c0, op, "c0", (B, H), dt)
    m = _mask(mask, op, B, T)
    backend, fn = _impl("lstm_forward", dt)
    chk = finite_check(backend)
    xp = np.ascontiguousarray(xp)
    U = np.ascontiguousarray(U)
    for name, x in (("xp", xp), ("recurrent_kernel", U), ("h0", h0), ("c0", c0)):
        require_finite(x, op, name, chk)
    return fn(xp, U, h0, c0, m)


def lstm_sequence_backward(grad_h, grad_c, recurrent_kernel, saved, h0=None, c0=None, mask=None,
                           need_recurrent_kernel=True, x=None, kernel=None):
    """Back-propagation through time for ``lstm_sequence``.

    Parameters
    ----------
    grad_h : array (B, T, H) or None
        Gradient of ``hs`` (None: zeros).
    grad_c : array (B, H) or None
        Gradient of the last cell state ``cs[:, -1]`` (None: zeros).
    recurrent_kernel, h0, c0, mask : as given to ``lstm_sequence``.
    saved : the tuple (hs, cs, gates, tc) ``lstm_sequence`` returned.
    need_recurrent_kernel : bool
        False skips the recurrent kernel's gradient (returned as None).
    x : array (B, T, D) or None
        The input of the projection ``xp = x @ kernel + bias``. When given, the projection's
        weight gradients come from the same pass (the kernel's gradient x^T grad_xp shares its
        large operand with the recurrent kernel's, and the C++ kernel splits both by columns).
    kernel : array (D, 4H) or None
        The projection's kernel. When given, the gradient of the projection's input,
        grad_x = grad_xp @ kernel^T, comes from the same call.

    Returns
    -------
    (grad_xp (B, T, 4H), grad_recurrent_kernel (H, 4H) or None, grad_h0 (B, H), grad_c0 (B, H)),
    followed by grad_kernel (D, 4H) and grad_bias (4H,) when ``x`` is given, then by
    grad_x (B, T, D) when ``kernel`` is given.
    """
    op = "lstm_sequence_backward"
    if not isinstance(saved, (tuple, list)) or len(saved) != 4:
        raise TypeError(f"{op}: saved must be the 4-tuple (hs, cs, gates, tc) from lstm_sequence. Received "
                        f"{type(saved).__name__}{'' if not hasattr(saved, '__len__') else f' of length {len(saved)}'}")
    hs, cs, gates, tc = (as_array(a, op, n) for a, n in zip(saved, ("hs", "cs", "gates", "tc")))
    dt = float_dtype(hs, op, "hs")
    U = as_array(recurrent_kernel, op, "recurrent_kernel")
    for name, arr in (("recurrent_kernel", U), ("cs", cs), ("gates", gates), ("tc", tc)):
        if arr.dtype != dt:
            raise TypeError(f"{op}: {name} must have the dtype of hs ({dt}). Received {arr.dtype}")
    if hs.ndim != 3:
        raise ValueError(f"{op}: hs must be 3-D (batch, steps, units). Received shape {tuple(hs.shape)}")
    B, T, H = hs.shape
    if U.shape != (H, 4 * H):
        raise ValueError(f"{op}: recurrent_kernel must have shape (units, 4 * units) = ({H}, {4 * H}). Received "
                         f"{tuple(U.shape)}")
    for name, arr, shape in (("cs", cs, (B, T + 1, H)), ("gates", gates, (B, T, 4 * H)), ("tc", tc, (B, T, H))):
        if arr.shape != shape:
            raise ValueError(f"{op}: {name} must have shape {shape}. Received {tuple(arr.shape)}")
    h0 = _state(h0, op, "h0", (B, H), dt)
    c0 = _state(c0, op, "c0", (B, H), dt)
    m = _mask(mask, op, B, T)
    backend, fn = _impl("lstm_backward", dt)
    chk = finite_check(backend)
    grad_h = _grad(grad_h, op, "grad_h", (B, T, H), dt, chk)
    grad_c = _grad(grad_c, op, "grad_c", (B, H), dt, chk)
    c = np.ascontiguousarray
    if x is not None:
        x = as_array(x, op, "x")
        if x.dtype != dt or x.ndim != 3 or x.shape[:2] != (B, T) or x.shape[2] < 1:
            raise ValueError(f"{op}: x must have shape (batch, steps, features) = ({B}, {T}, D >= 1) and dtype {dt}. "
                             f"Received {tuple(x.shape)} {x.dtype}")
        x = c(x)
    if kernel is not None:
        kernel = as_array(kernel, op, "kernel")
        D = x.shape[2] if x is not None else None
        if kernel.dtype != dt or kernel.ndim != 2 or kernel.shape[1] != 4 * H or kernel.shape[0] < 1 or (
                D is not None and kernel.shape[0] != D):
            raise ValueError(f"{op}: kernel must have shape (features, 4 * units) = ({D or 'D'}, {4 * H}) and dtype "
                             f"{dt}. Received {tuple(kernel.shape)} {kernel.dtype}")
        kernel = c(kernel)
    res = fn(grad_h, grad_c, c(U), h0, c0, m, c(hs), c(cs), c(gates), c(tc), bool(need_recurrent_kernel), x,
             kernel)
    out = tuple(res[:4])
    if x is not None:
        out += tuple(res[4:6])
    if kernel is not None:
        out += (res[6],)
    return out


def _recurrent_kernel(U, op, dt, gates, what):
    U = as_array(U, op, "recurrent_kernel")
    if U.dtype != dt:
        raise TypeError(f"{op}: recurrent_kernel must have the dtype of {what} ({dt}). Received {U.dtype}")
    if U.ndim != 2 or U.shape[0] < 1 or U.shape[1] != gates * U.shape[0]:
        raise ValueError(f"{op}: recurrent_kernel must have shape (units, {gates} * units). Received "
                         f"{tuple(U.shape)}")
    return np.ascontiguousarray(U)


def _recurrent_bias(b, op, dt, H):
    if b is None:
        return None
    b = as_array(b, op, "recurrent_bias")
    if b.dtype != dt:
        raise TypeError(f"{op}: recurrent_bias must have the dtype of xp ({dt}). Received {b.dtype}")
    if b.shape != (3 * H,):
        raise ValueError(f"{op}: recurrent_bias must have shape (3 * units,) = ({3 * H},). Received {tuple(b.shape)}")
    return np.ascontiguousarray(b)


def gru_sequence(xp, recurrent_kernel, recurrent_bias=None, h0=None, mask=None):
    """Run Keras 3's GRU (``reset_after=True``, its default; torch.nn.GRU's formula) over
    every step, gates z, r, h along the last axis::

        a_t = h_{t-1} @ recurrent_kernel + recurrent_bias
        z, r = sigmoid(xp_z + a_z), sigmoid(xp_r + a_r);  n = tanh(xp_h + r * a_h)
        h_t = z * h_{t-1} + (1 - z) * n     (a step whose mask is False keeps h)

    Parameters
    ----------
    xp : array (B, T, 3H), float32 or float64
        The input projection of every step, x @ kernel + input bias.
    recurrent_kernel : array (H, 3H)
    recurrent_bias : array (3H,) or None
    h0 : array (B, H) or None (zeros)
    mask : bool array (B, T) or None

    Returns
    -------
    (hs, gates, hn): hs (B, T, H) the state after each step; gates (B, T, 3H) the activated
    z, r and n; hn (B, T, H) the h part of a_t. The last two are what
    ``gru_sequence_backward`` needs.
    """
    op = "gru_sequence"
    xp = as_array(xp, op, "xp")
    dt = float_dtype(xp, op, "xp")
    U = _recurrent_kernel(recurrent_kernel, op, dt, 3, "xp")
    H = U.shape[0]
    if xp.ndim != 3 or xp.shape[2] != 3 * H or xp.shape[0] < 1 or xp.shape[1] < 1:
        raise ValueError(f"{op}: xp must have shape (batch, steps, 3 * units) with batch, steps >= 1 and units = "
                         f"{H} (from recurrent_kernel). Received {tuple(xp.shape)}")
    B, T = xp.shape[:2]
    b = _recurrent_bias(recurrent_bias, op, dt, H)
    h0 = _state(h0, op, "h0", (B, H), dt)
    m = _mask(mask, op, B, T)
    backend, fn = _impl("gru_forward", dt)
    chk = finite_check(backend)
    xp = np.ascontiguousarray(xp)
    for name, x in (("xp", xp), ("recurrent_kernel", U), ("recurrent_bias", b), ("h0", h0)):
        if x is not None:
            require_finite(x, op, name, chk)
    return fn(xp, U, b, h0, m)


def gru_sequence_backward(grad_h, recurrent_kernel, saved, recurrent_bias=None, h0=None, mask=None,
                          need_recurrent_kernel=True, need_recurrent_bias=True):
    """Back-propagation through time for ``gru_sequence``.

    Parameters
    ----------
    grad_h : array (B, T, H) or None
        Gradient of ``hs`` (None: zeros).
    recurrent_kernel, recurrent_bias, h0, mask : as given to ``gru_sequence``.
    saved : the tuple (hs, gates, hn) ``gru_sequence`` returned.
    need_recurrent_kernel, need_recurrent_bias : bool
        False skips that gradient (returned as None).

    Returns
    -------
    (grad_xp (B, T, 3H), grad_recurrent_kernel (H, 3H) or None, grad_recurrent_bias (3H,)
    or None, grad_h0 (B, H)).
    """
    op = "gru_sequence_backward"
    if not isinstance(saved, (tuple, list)) or len(saved) != 3:
        raise TypeError(f"{op}: saved must be the 3-tuple (hs, gates, hn) from gru_sequence. Received "
                        f"{type(saved).__name__}{'' if not hasattr(saved, '__len__') else f' of length {len(saved)}'}")
    hs, gates, hn = (as_array(a, op, n) for a, n in zip(saved, ("hs", "gates", "hn")))
    dt = float_dtype(hs, op, "hs")
    for name, x in (("gates", gates), ("hn", hn)):
        if x.dtype != dt:
            raise TypeError(f"{op}: {name} must have the dtype of hs ({dt}). Received {x.dtype}")
    if hs.ndim != 3:
        raise ValueError(f"{op}: hs must be 3-D (batch, steps, units). Received shape {tuple(hs.shape)}")
    B, T, H = hs.shape
    U = _recurrent_kernel(recurrent_kernel, op, dt, 3, "hs")
    if U.shape[0] != H:
        raise ValueError(f"{op}: recurrent_kernel must have shape (units, 3 * units) = ({H}, {3 * H}). Received "
                         f"{tuple(U.shape)}")
    for name, x, shape in (("gates", gates, (B, T, 3 * H)), ("hn", hn, (B, T, H))):
        if x.shape != shape:
            raise ValueError(f"{op}: {name} must have shape {shape}. Received {tuple(x.shape)}")
    b = _recurrent_bias(recurrent_bias, op, dt, H)
    h0 = _state(h0, op, "h0", (B, H), dt)
    m = _mask(mask, op, B, T)
    backend, fn = _impl("gru_backward", dt)
    grad_h = _grad(grad_h, op, "grad_h", (B, T, H), dt, finite_check(backend))
    c = np.ascontiguousarray
    return fn(grad_h, U, b, h0, m, c(hs), c(gates), c(hn), bool(need_recurrent_kernel),
              bool(need_recurrent_bias and b is not None))
