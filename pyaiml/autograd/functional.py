"""Differentiable ops for the tape (pyaiml.autograd.tape): each computes on NumPy arrays
and, when an input needs a gradient while a tape records, records its backward.

What it is. The primitives that ``keras.ops`` and every layer's ``call()`` are written
with: broadcasting arithmetic, unary math, reductions, shape ops, indexing, matmul and
dense (x @ kernel + bias, one GEMM with its bias through pyaiml.ops.linear), activations
(pyaiml.ops' relu/sigmoid/tanh/gelu/softmax/log_softmax and their ``*_backward``),
convolution and max pooling (pyaiml.ops.conv*d / max_pool*d and their backward kernels;
the conv backward skips the input gradient when the input needs none, as a model's first
layer), scaled dot-product attention (forward keeps its log-sum-exp, backward is
pyaiml.ops' kernel), layer and batch normalisation as single records, embedding lookup,
padding, where, and a loss record that takes a loss object's own value-and-gradient.
Shapes follow NumPy / torch semantics; dtypes are the inputs' (float32 or float64).

Not here: ops on integer values that need gradients, complex numbers, second derivatives.
Tests: tests/test_keras_tape.py (each op's gradient against torch autograd in float64).
"""
from __future__ import annotations

import builtins

import numpy as np

from pyaiml import _backend, ops
from pyaiml.autograd import per_example as _pe
from pyaiml.autograd.tape import Tensor, record, value_of
from pyaiml.ops._validate import get_check_finite
from pyaiml.ops.activations import softmax_last_unchecked
from pyaiml.ops.linalg import linear_unchecked
from pyaiml.ops.pool import MAX_WINDOW

_v = value_of


def _vv(a, b):
    """The values of two operands, a Python number taking the other's float dtype: numbers are
    weak, as in Keras and NumPy 2 (float32 * 2.0 stays float32; value_of(2.0) alone is a
    float64 array, which made the product float64)."""
    x, y = _v(a), _v(b)
    if type(a) in (int, float) and y.dtype.kind == "f":
        x = np.asarray(a, y.dtype)
    elif type(b) in (int, float) and x.dtype.kind == "f":
        y = np.asarray(b, x.dtype)
    return x, y
_F32 = np.dtype(np.float32)


def _unbroadcast(g, shape):
    """Sum g over the dimensions broadcasting added to an input of ``shape``."""
    if g.shape == tuple(shape):
        return g
    n = g.ndim - len(shape)
    if n:
        g = g.sum(axis=tuple(range(n)))
    ax = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    if ax:
        g = g.sum(axis=ax, keepdims=True)
    return g


def _float(a):
    return a.dtype.kind == "f"


# ---------------------------------------------------------------- arithmetic (broadcasting)
def _broadcast_pe(contrib, x, y):
    """Per-example rule of a binary elementwise op: ``contrib(g, i)`` is the output gradient
    times d(out)/d(input i); one weight side at a time (a weight against batch values)."""
    def pe(g, want):
        if all(want):
            raise ValueError("DP-SGD: two weights combined elementwise before meeting the batch have no "
                             "per-example gradients")
        i = 0 if want[0] else 1
        return _pe.BroadcastRule(contrib(g, i), (x, y)[i].shape), (i,)
    return pe


def add(a, b):
    x, y = _vv(a, b)
    out = np.add(x, y)
    return record(out, (a, b), lambda g, n: (_unbroadcast(g, x.shape) if n[0] else None,
                                             _unbroadcast(g, y.shape) if n[1] else None), "add",
                  _broadcast_pe(lambda g, i: g, x, y))


def subtract(a, b):
    x, y = _vv(a, b)
    out = np.subtract(x, y)
    return record(out, (a, b), lambda g, n: (_unbroadcast(g, x.shape) if n[0] else None,
                                             _unbroadcast(-g, y.shape) if n[1] else None), "subtract",
                  _broadcast_pe(lambda g, i: g if i == 0 else -g, x, y))


def multiply(a, b):
    x, y = _vv(a, b)
    out = np.multiply(x, y)
    return record(out, (a, b), lambda g, n: (_unbroadcast(g * y, x.shape) if n[0] else None,
                                             _unbroadcast(g * x, y.shape) if n[1] else None), "multiply",
                  _broadcast_pe(lambda g, i: g * (y if i == 0 else x), x, y))


def divide(a, b):
    x, y = _vv(a, b)
    out = np.true_divide(x, y)
    return record(out, (a, b), lambda g, n: (_unbroadcast(g / y, x.shape) if n[0] else None,
                                             _unbroadcast(-g * out / y, y.shape) if n[1] else None), "divide")


def power(a, b):
    x, y = _vv(a, b)
    out = np.power(x, y)

    def back(g, n):
        ga = _unbroadcast(g * y * np.power(x, y - 1), x.shape) if n[0] else None
        gb = _unbroadcast(g * out * np.log(np.where(x > 0, x, 1)), y.shape) if n[1] else None
        return ga, gb
    return record(out, (a, b), back, "power")


def maximum(a, b):
    x, y = _vv(a, b)
    out = np.maximum(x, y)
    m = x >= y
    return record(out, (a, b), lambda g, n: (_unbroadcast(g * m, x.shape) if n[0] else None,
                                             _unbroadcast(g * ~m, y.shape) if n[1] else None), "maximum")


def minimum(a, b):
    x, y = _vv(a, b)
    out = np.minimum(x, y)
    m = x <= y
    return record(out, (a, b), lambda g, n: (_unbroadcast(g * m, x.shape) if n[0] else None,
                                             _unbroadcast(g * ~m, y.shape) if n[1] else None), "minimum")


def negative(a):
    return record(np.negative(_v(a)), (a,), lambda g, n: (-g,), "negative")


# ---------------------------------------------------------------- unary math
def _unary(name, f, df):
    """An elementwise op whose gradient is g * df(x, out)."""
    def op(a):
        x = _v(a)
        out = f(x)
        return record(out, (a,), lambda g, n: (g * df(x, out),), name)
    op.__name__ = name
    return op


exp = _unary("exp", np.exp, lambda x, y: y)
log = _unary("log", np.log, lambda x, y: 1.0 / x)
log1p = _unary("log1p", np.log1p, lambda x, y: 1.0 / (1.0 + x))
sqrt = _unary("sqrt", np.sqrt, lambda x, y: 0.5 / y)
rsqrt = _unary("rsqrt", lambda x: 1.0 / np.sqrt(x), lambda x, y: -0.5 * y / x)
square = _unary("square", np.square, lambda x, y: 2 * x)
abs = _unary("abs", np.abs, lambda x, y: np.sign(x))
sin = _unary("sin", np.sin, lambda x, y: np.cos(x))
cos = _unary("cos", np.cos, lambda x, y: -np.sin(x))
softplus = _unary("softplus", lambda x: np.logaddexp(0, x), lambda x, y: ops.sigmoid(x) if x.dtype.kind == "f" else
                  1 / (1 + np.exp(-x)))
silu = _unary("silu", lambda x: x * ops.sigmoid(x), lambda x, y: ops.sigmoid(x) * (1 + x * (1 - ops.sigmoid(x))))


def reciprocal(a):
    return divide(1.0, a)


def sign(a):
    return np.sign(_v(a))


def clip(a, lo, hi):
    x = _v(a)
    out = np.clip(x, lo, hi)
    return record(out, (a,), lambda g, n: (g * ((x >= lo) & (x <= hi)),), "clip")


def relu(a):
    x = _v(a)
    out = np.maximum(x, x.dtype.type(0))
    return record(out, (a,), lambda g, n: (ops.relu_backward(np.ascontiguousarray(g), out),), "relu")


def leaky_relu(a, negative_slope=0.2):
    x = _v(a)
    s = x.dtype.type(negative_slope)
    out = np.where(x > 0, x, x * s)
    return record(out, (a,), lambda g, n: (np.where(x > 0, g, g * s),), "leaky_relu")


def elu(a, alpha=1.0):
    x = _v(a)
    out = np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))
    return record(out, (a,), lambda g, n: (np.where(x > 0, g, g * (out + alpha)),), "elu")


def sigmoid(a):
    out = ops.sigmoid(_v(a))
    return record(out, (a,), lambda g, n: (ops.sigmoid_backward(np.ascontiguousarray(g), out),), "sigmoid")


def tanh(a):
    out = ops.tanh(_v(a))
    return record(out, (a,), lambda g, n: (ops.tanh_backward(np.ascontiguousarray(g), out),), "tanh")


def gelu(a, approximate=False):
    x = _v(a)
    ap = "tanh" if approximate else "none"
    out = ops.gelu(x, ap)
    return record(out, (a,), lambda g, n: (ops.gelu_backward(np.ascontiguousarray(g), x, ap),), "gelu")


def softmax(a, axis=-1):
    x = _v(a)
    if type(x) is np.ndarray and x.dtype is _F32 and x.ndim >= 1 and x.size and axis in (-1, x.ndim - 1):
        # a float32 tape value: ops.softmax's arithmetic without its argument handling (same bits)
        out = softmax_last_unchecked(x)
    else:
        out = ops.softmax(x, axis)
    r = record(out, (a,), lambda g, n: (ops.softmax_backward(np.ascontiguousarray(g), out, axis),), "softmax")
    if isinstance(r, Tensor) and axis in (-1, x.ndim - 1):
        r._softmax_of = a  # a cross-entropy loss on r may use the logits (tape loss below)
    return r


def log_softmax(a, axis=-1):
    out = ops.log_softmax(_v(a), axis)
    return record(out, (a,), lambda g, n: (ops.log_softmax_backward(np.ascontiguousarray(g), out, axis),),
                  "log_softmax")


def cast(a, dtype):
    x = _v(a)
    dt = np.dtype(dtype)
    out = x.astype(dt)
    if dt.kind != "f":
        return out
    return record(out, (a,), lambda g, n: (g.astype(x.dtype),), "cast")


def stop_gradient(a):
    return _v(a)


# ---------------------------------------------------------------- reductions
def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (int(axis),)
    return tuple(int(a) % ndim for a in axis)


def _expand(g, shape, axis, keepdims):
    """Bring a reduced gradient back to broadcast against the input ``shape``."""
    if keepdims or not shape:
        return g
    return np.expand_dims(g, _axes(axis, len(shape)))


def sum(a, axis=None, keepdims=False):
    x = _v(a)
    out = np.asarray(np.sum(x, axis=axis, keepdims=keepdims))
    return record(out, (a,), lambda g, n: (np.broadcast_to(_expand(g, x.shape, axis, keepdims), x.shape),), "sum")


def mean(a, axis=None, keepdims=False):
    x = _v(a)
    out = np.asarray(np.mean(x, axis=axis, keepdims=keepdims))
    cnt = int(np.prod([x.shape[i] for i in _axes(axis, x.ndim)])) if x.ndim else 1

    def back(g, n):
        return (np.broadcast_to(_expand(g, x.shape, axis, keepdims) / x.dtype.type(builtins.max(cnt, 1)), x.shape),)
    return record(out, (a,), back, "mean")


def _extreme(name, f):
    def op(a, axis=None, keepdims=False):
        x = _v(a)
        out = np.asarray(f(x, axis=axis, keepdims=keepdims))

        def back(g, n):
            o = _expand(out, x.shape, axis, keepdims)
            m = (x == o)
            cnt = m.sum(axis=_axes(axis, x.ndim), keepdims=True)  # ties share the gradient (as torch)
            return (m * (_expand(g, x.shape, axis, keepdims) / cnt).astype(x.dtype),)
        return record(out, (a,), back, name)
    op.__name__ = name
    return op


max = _extreme("max", np.max)
min = _extreme("min", np.min)


def var(a, axis=None, keepdims=False):
    m = mean(a, axis=axis, keepdims=True)
    return mean(square(subtract(a, m)), axis=axis, keepdims=keepdims)


def std(a, axis=None, keepdims=False):
    return sqrt(var(a, axis=axis, keepdims=keepdims))


def logsumexp(a, axis=None, keepdims=False):
    x = _v(a)
    mx = np.max(x, axis=axis, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0)
    s = np.log(np.sum(np.exp(x - mx), axis=axis, keepdims=True)) + mx
    out = s if keepdims else np.squeeze(s, axis=_axes(axis, x.ndim)) if x.ndim else s.reshape(())

    def back(g, n):
        return (_expand(g, x.shape, axis, keepdims) * np.exp(x - s),)
    return record(out, (a,), back, "logsumexp")


# ---------------------------------------------------------------- shapes and indexing
def reshape(a, shape):
    x = _v(a)
    out = x.reshape(shape)
    return record(out, (a,), lambda g, n: (g.reshape(x.shape),), "reshape")


def transpose(a, axes=None):
    x = _v(a)
    out = np.transpose(x, axes)
    inv = None if axes is None else tuple(np.argsort(axes))
    return record(out, (a,), lambda g, n: (np.transpose(g, inv),), "transpose")


def swapaxes(a, a1, a2):
    nd = _v(a).ndim
    ax = list(range(nd))
    ax[a1 % nd], ax[a2 % nd] = ax[a2 % nd], ax[a1 % nd]
    return transpose(a, tuple(ax))


def expand_dims(a, axis):
    x = _v(a)
    return reshape(a, np.expand_dims(x, axis).shape)


def squeeze(a, axis=None):
    x = _v(a)
    return reshape(a, np.squeeze(x, axis).shape)


def broadcast_to(a, shape):
    x = _v(a)
    out = np.broadcast_to(x, shape)
    return record(out, (a,), lambda g, n: (_unbroadcast(g, x.shape),), "broadcast_to")


def tile(a, reps):
    x = _v(a)
    out = np.tile(x, reps)
    r = tuple(reps) if isinstance(reps, (tuple, list)) else (reps,)
    nd = builtins.max(x.ndim, len(r))
    r = (1,) * (nd - len(r)) + r
    xs = (1,) * (nd - x.ndim) + x.shape

    def back(g, n):
        gs = g.reshape(tuple(v for pair in zip(r, xs) for v in pair))
        return (gs.sum(axis=tuple(range(0, 2 * nd, 2))).reshape(x.shape),)
    return record(out, (a,), back, "tile")


def repeat(a, repeats, axis=None):
    x = _v(a)
    if axis is None:
        return repeat(reshape(a, (-1,)), repeats, 0)
    if not isinstance(repeats, (int, np.integer)):
        raise TypeError(f"repeat: repeats must be an int. Received {repeats!r}")
    ax = axis % x.ndim
    out = np.repeat(x, repeats, axis=ax)

    def back(g, n):
        s = x.shape[:ax] + (x.shape[ax], int(repeats)) + x.shape[ax + 1:]
        return (g.reshape(s).sum(axis=ax + 1),)
    return record(out, (a,), back, "repeat")


def concatenate(xs, axis=0):
    xs = list(xs)
    vals = [_v(x) for x in xs]
    out = np.concatenate(vals, axis=axis)
    ax = axis % out.ndim
    cuts = np.cumsum([v.shape[ax] for v in vals])[:-1]

    def back(g, n):
        parts = np.split(g, cuts, axis=ax)
        return tuple(p if need else None for p, need in zip(parts, n))
    return record(out, tuple(xs), back, "concatenate")


def stack(xs, axis=0):
    xs = list(xs)
    vals = [_v(x) for x in xs]
    out = np.stack(vals, axis=axis)
    ax = axis % out.ndim

    def back(g, n):
        return tuple(np.take(g, i, axis=ax) if need else None for i, need in enumerate(n))
    return record(out, tuple(xs), back, "stack")


def _basic_index(idx):
    items = idx if isinstance(idx, tuple) else (idx,)
    return all(i is None or i is Ellipsis or isinstance(i, (slice, int, np.integer)) for i in items)


def getitem(a, idx):
    x = _v(a)
    if isinstance(idx, Tensor):
        idx = idx.value
    if isinstance(idx, tuple):
        idx = tuple(i.value if isinstance(i, Tensor) else i for i in idx)
    out = x[idx]
    basic = _basic_index(idx)

    def back(g, n):
        gx = np.zeros_like(x)
        if basic:
            gx[idx] = g
        else:
            np.add.at(gx, idx, g)
        return (gx,)
    return record(out, (a,), back, "getitem")


def split(a, indices_or_sections, axis=0):
    x = _v(a)
    ax = axis % x.ndim
    if isinstance(indices_or_sections, (int, np.integer)):
        k = int(indices_or_sections)
        if x.shape[ax] % k:
            raise ValueError(f"split: axis {axis} of size {x.shape[ax]} cannot be split into {k} equal parts")
        step = x.shape[ax] // k
        bounds = [(i * step, (i + 1) * step) for i in range(k)]
    else:
        cuts = [0] + [int(i) for i in indices_or_sections] + [x.shape[ax]]
        bounds = list(zip(cuts[:-1], cuts[1:]))
    pre = (slice(None),) * ax
    return [getitem(a, pre + (slice(lo, hi),)) for lo, hi in bounds]


def take(a, indices, axis=None):
    """Gather along ``axis`` (embedding lookup: axis 0 of a table); integer indices."""
    x = _v(a)
    ids = np.asarray(_v(indices))
    if axis is None:
        return take(reshape(a, (-1,)), ids, 0)
    ax = axis % x.ndim
    out = np.take(x, ids, axis=ax)

    def back(g, n):
        gx = np.zeros_like(x)
        if ax == 0:
            if ids.size:  # scatter-add as a sorted segment sum (np.add.at is ~10x slower at embedding sizes)
                flat = ids.reshape(-1)
                flat = np.where(flat < 0, flat + x.shape[0], flat)  # one row, however it was indexed
                order = np.argsort(flat, kind="stable")
                srt = flat[order]
                starts = np.flatnonzero(np.r_[True, srt[1:] != srt[:-1]])
                gx[srt[starts]] = np.add.reduceat(g.reshape((-1,) + x.shape[1:])[order], starts, axis=0)
        else:
            gm = np.moveaxis(gx, ax, 0)
            gg = np.moveaxis(g, tuple(range(ax, ax + ids.ndim)), tuple(range(ids.ndim)))
            np.add.at(gm, ids.reshape(-1), gg.reshape((-1,) + gm.shape[1:]))
        return (gx,)

    def pe(g, want):  # rows of a 2-D table looked up by batch-shaped ids
        if ax != 0 or x.ndim != 2 or ids.ndim < 1:
            raise ValueError(f"DP-SGD: take along axis {ax} of a weight of shape {x.shape} with ids of shape "
                             f"{ids.shape} has no per-example rule (an embedding lookup: axis 0 of a 2-D table)")
        return _pe.EmbeddingRule(ids, np.ascontiguousarray(g), x.shape[0]), (0,)
    return record(out, (a,), back, "take", pe)


def take_along_axis(a, indices, axis):
    x = _v(a)
    ids = np.asarray(_v(indices))
    out = np.take_along_axis(x, ids, axis)

    def back(g, n):
        full = np.zeros_like(x)
        idx = list(np.ix_(*[np.arange(s) for s in ids.shape]))
        idx[axis % x.ndim] = ids
        np.add.at(full, tuple(idx), g)
        return (full,)
    return record(out, (a,), back, "take_along_axis")


def pad(a, pad_width, constant_values=0):
    x = _v(a)
    pw = np.broadcast_to(np.asarray(pad_width, dtype=np.int64).reshape(-1, 2) if np.ndim(pad_width) else
                         np.full((x.ndim, 2), int(pad_width)), (x.ndim, 2))
    out = np.pad(x, pw, constant_values=constant_values)
    sl = tuple(slice(int(lo), out.shape[i] - int(hi)) for i, (lo, hi) in enumerate(pw))
    return record(out, (a,), lambda g, n: (g[sl],), "pad")


def where(cond, a, b):
    c = np.asarray(_v(cond), dtype=bool)
    x, y = _vv(a, b)
    out = np.where(c, x, y)
    return record(out, (a, b), lambda g, n: (_unbroadcast(np.where(c, g, 0), np.shape(x)) if n[0] else None,
                                             _unbroadcast(np.where(c, 0, g), np.shape(y)) if n[1] else None),
                  "where")


# ---------------------------------------------------------------- linear algebra
def _mm(a, b):
    """matmul through pyaiml.ops where it applies (same float dtype, non-empty), else NumPy."""
    if a.dtype == b.dtype and a.dtype in (np.float32, np.float64) and a.size and b.size:
        return ops.matmul(a, b)
    return np.matmul(a, b)


def matmul(a, b):
    x, y = _v(a), _v(b)
    out = _mm(x, y)

    def back(g, n):
        xa = x[None, :] if x.ndim == 1 else x
        yb = y[:, None] if y.ndim == 1 else y
        if x.ndim == 1 and y.ndim == 1:
            gg = np.reshape(g, (1, 1))
        elif x.ndim == 1:
            gg = np.expand_dims(g, -2)
        elif y.ndim == 1:
            gg = np.expand_dims(g, -1)
        else:
            gg = g
        ga = _unbroadcast(_mm(gg, np.swapaxes(yb, -1, -2)), xa.shape).reshape(x.shape) if n[0] else None
        gb = _unbroadcast(_mm(np.swapaxes(xa, -1, -2), gg), yb.shape).reshape(y.shape) if n[1] else None
        return ga, gb

    def pe(g, want):  # batch values (B, ..., K) times a 2-D weight (K, N)
        if want[0] or y.ndim != 2 or x.ndim < 2:
            raise ValueError(f"DP-SGD: matmul of shapes {x.shape} @ {y.shape} has no per-example rule for its "
                             "weight (batch values (B, ..., K) @ a 2-D weight (K, N))")
        return _pe.DenseRule(x, np.ascontiguousarray(g), True, False), (1,)
    return record(out, (a, b), back, "matmul", pe)


def dense(x, kernel, bias=None, activation=None):
    """x (..., in) @ kernel (in, out) [+ bias (out,)]: one GEMM with the bias in its epilogue;
    ``activation='relu'`` joins the epilogue too (its gradient masks by the output)."""
    xv, k = _v(x), _v(kernel)
    b = None if bias is None else _v(bias)
    if activation not in (None, "relu"):
        raise ValueError(f"dense: activation must be None or 'relu'. Received {activation!r}")
    relu = activation == "relu"
    if (xv.dtype is _F32 and k.dtype is _F32 and (b is None or b.dtype is _F32) and xv.ndim >= 1 and xv.size
            and k.ndim == 2 and xv.shape[-1] == k.shape[0] and (b is None or b.shape == (k.shape[1],))
            and not get_check_finite()):
        # checks off (inside fit): the registry's GEMM directly, the call ops.linear makes (same
        # bits) without its per-call argument handling
        out = linear_unchecked(xv, k, b, relu)
    else:
        if xv.dtype == k.dtype and xv.dtype in (np.float32, np.float64) and xv.size:
            out = ops.linear(xv, k.T, b)
        else:
            out = np.matmul(xv, k) + (0 if b is None else b)
        if relu:
            out = ops.relu(out)

    def back(g, n):
        g2 = np.ascontiguousarray(g).reshape(-1, k.shape[1])
        if relu:
            g2 = ops.relu_backward(g2, out.reshape(-1, k.shape[1]))
        # transposed operands go to the GEMM as strides (ops.matmul): no copies of x or the kernel
        gx = _mm(g2, k.T).reshape(xv.shape) if n[0] else None
        gk = _mm(xv.reshape(-1, k.shape[0]).T, g2) if n[1] else None
        gb = g2.sum(axis=0) if (bias is not None and n[2]) else None
        return gx, gk, gb

    def pe(g, want):
        if want[0]:
            raise ValueError("DP-SGD: a weight as the input of dense() has no per-example rule")
        idx = tuple(i for i in (1, 2) if want[i])
        g = np.ascontiguousarray(g)
        if relu:
            g = ops.relu_backward(g, out)
        return _pe.DenseRule(xv, g, bool(want[1]), bool(want[2])), idx
    return record(out, (x, kernel, bias), back, "dense", pe)


def einsum(subscripts, *operands):
    vals = [_v(o) for o in operands]
    out = np.einsum(subscripts, *vals)
    ins, res = subscripts.replace(" ", "").split("->")
    specs = ins.split(",")

    def back(g, n):
        grads = []
        for i, need in enumerate(n):
            if not need:
                grads.append(None)
                continue
            others = [s for j, s in enumerate(specs) if j != i]
            ov = [v for j, v in enumerate(vals) if j != i]
            gi = np.einsum(",".join([res] + others) + "->" + specs[i], g, *ov)
            grads.append(np.broadcast_to(gi, vals[i].shape).astype(vals[i].dtype))
        return tuple(grads)
    return record(out, tuple(operands), back, "einsum")


# ---------------------------------------------------------------- neural-network ops
def conv(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, data_format="NHWC", activation=None):
    """pyaiml.ops.conv1d/conv2d (weight OI(H)W, symmetric integer padding); rank from weight.
    ``activation='relu'`` runs in the kernel's epilogue; its gradient masks by the output,
    unless the fusion pass found that every op that read the output was a max pool that
    applied that mask itself (rule relu_into_pool, pyaiml/autograd/fusion.py)."""
    xv, w = _v(x), _v(weight)
    b = None if bias is None else _v(bias)
    two = w.ndim == 4
    fwd, bwd = (ops.conv2d, ops.conv2d_backward) if two else (ops.conv1d, ops.conv1d_backward)
    out = fwd(xv, w, b, stride, padding, dilation, groups, data_format, activation=activation)
    holder = []

    def back(g, n):
        g = np.ascontiguousarray(g)
        if activation == "relu" and not holder[0]._relu_done:
            g = ops.relu_backward(g, out)
        gx, gw, gb = bwd(g, xv, w, stride, padding, dilation, groups, data_format,
                         output_mask=(bool(n[0]), bool(n[1]), bool(bias is not None and n[2])))
        return gx, gw, gb

    def pe(g, want):
        if want[0]:
            raise ValueError("DP-SGD: a weight as the input of conv() has no per-example rule")
        g = np.ascontiguousarray(g)
        if activation == "relu" and not holder[0]._relu_done:
            g = ops.relu_backward(g, out)
        idx = tuple(i for i in (1, 2) if want[i])
        return _pe.ConvRule(xv, g, w.shape[2:], stride, padding, dilation, groups,
                            data_format in ("NHWC", "NLC"), bias=bool(want[2]), kernel=bool(want[1])), idx
    r = record(out, (x, weight, bias), back, "conv", pe, "relu" if activation == "relu" else None)
    if isinstance(r, Tensor):
        holder.append(r)
        r._relu_out = activation == "relu"
    return r


def conv_transpose(x, weight, stride, dilation, bias=None, activation=None):
    """The transposed convolution with no cropping: the adjoint of ``conv`` with no padding,
    channels last. x (N, *sp, C_in); weight OI(H)W = (C_in, C_out, *k), the weight of the conv
    that maps the result back to x's shape; stride, dilation: tuples, one per spatial axis.
    Result (N, *full, C_out), full = (n - 1) * stride + dilation * (k - 1) + 1 per axis, plus
    ``bias`` (C_out,) and ``activation`` (None or "relu"). Stride 1 (or dilated): on
    pyaiml.ops, the forward is that conv's input gradient, the backward its forward (for x) and
    its weight gradient (for weight). Stride > 1: one stride-1 conv per output phase
    (``_conv_transpose_phases``)."""
    xv, w = _v(x), _v(weight)
    if xv.dtype.kind != "f":
        raise TypeError(f"conv_transpose: x must have dtype float32 or float64. Received {xv.dtype}")
    nd = w.ndim - 2
    if max(stride) > 1 and max(dilation) == 1:
        return _conv_transpose_phases(x, weight, tuple(stride), bias, activation)
    fwd, bwd = (ops.conv2d, ops.conv2d_backward) if nd == 2 else (ops.conv1d, ops.conv1d_backward)
    fmt = "NHWC" if nd == 2 else "NLC"
    st, dl = (tuple(stride), tuple(dilation)) if nd == 2 else (stride[0], dilation[0])
    full = tuple((n - 1) * s + d * (k - 1) + 1 for n, s, d, k in zip(xv.shape[1:-1], stride, dilation, w.shape[2:]))
    xc = np.ascontiguousarray(xv)
    # the conv's input is only a shape here (its gradient alone is asked for); zeros (calloc'd,
    # not touched by the compiled kernels), as the NumPy reference casts it whole
    out = bwd(xc, np.zeros((xv.shape[0],) + full + (w.shape[1],), xv.dtype), w, st, 0, dl, 1, fmt,
              output_mask=(True, False, False))[0]

    def back(g, n):
        g = np.ascontiguousarray(g)
        gx = fwd(g, w, None, st, 0, dl, 1, fmt) if n[0] else None
        gw = bwd(xc, g, w, st, 0, dl, 1, fmt, output_mask=(False, True, False))[1] if n[1] else None
        return gx, gw
    y = record(out, (x, weight), back, "conv_transpose")
    if bias is not None:
        y = add(y, bias)
    return relu(y) if activation == "relu" else y


def _conv_transpose_phases(x, weight, stride, bias=None, activation=None):
    """conv_transpose with stride > 1 (no dilation) as s^rank stride-1 convs, one per output
    phase: full[..., s m + p, ...] = sum_u x[m - u] w[p + s u], the full convolution of x with
    the taps p, p + s, ... of w (flipped: a correlation on x padded by their count - 1), whose
    n + taps - 1 rows are exactly the phase's rows of the full output. Each conv writes its
    phase once into the output's strided rows (``_interleave``); bias and ReLU run in the convs'
    epilogues. A stride-s transposed conv through the conv input gradient runs the slow
    strided path; these are the stride-1 kernels (direct, Winograd, GEMM)."""
    xv, w = _v(x), _v(weight)
    nd = w.ndim - 2
    sp, ks = xv.shape[1:-1], w.shape[2:]
    full = tuple((n - 1) * s + k for n, s, k in zip(sp, stride, ks))
    fmt = "NHWC" if nd == 2 else "NLC"
    phases = []
    for ph in np.ndindex(*stride):
        kk = [-(-(k - p) // s) for k, p, s in zip(ks, ph, stride)]  # this phase's taps per axis
        if min(kk) == 0:  # no tap lands on this phase (kernel shorter than the stride)
            phases.append(None)
            continue
        sub = getitem(weight, (slice(None), slice(None)) + tuple(slice(p, None, s) for p, s in zip(ph, stride)))
        sub = getitem(sub, (slice(None), slice(None)) + (slice(None, None, -1),) * nd)  # flipped taps
        sub = transpose(sub, (1, 0) + tuple(range(2, 2 + nd)))  # (out, in, taps)
        pad_ = tuple(k - 1 for k in kk)
        phases.append(conv(x, sub, bias, 1, pad_ if nd == 2 else pad_[0], 1, 1, fmt, activation=activation))
    fill = 0.0
    if bias is not None and any(p is None for p in phases):  # rows no tap reaches: the bias alone
        bv = _v(bias)
        fill = np.maximum(bv, 0) if activation == "relu" else bv
    return _interleave(phases, stride, (xv.shape[0],) + full + (w.shape[1],), fill)


def _interleave(phases, stride, shape, fill):
    """out[:, p_1::s_1, ..., :] = phase (p_1, ...) (row-major phase order), a phase of None
    leaving ``fill`` there; the gradient of a phase is its strided slice of the output's."""
    vals = [None if p is None else _v(p) for p in phases]
    dt = next(v.dtype for v in vals if v is not None)
    out = np.empty(shape, dt)
    sl = [(slice(None),) + tuple(slice(p, None, s) for p, s in zip(ph, stride)) for ph in np.ndindex(*stride)]
    for idx, v in zip(sl, vals):
        out[idx] = fill if v is None else v
    parents = tuple(p for p in phases if p is not None)
    keep = [i for i, v in enumerate(vals) if v is not None]
    return record(out, parents, lambda g, n: tuple(np.ascontiguousarray(g[sl[i]]) if n[j] else None
                                                   for j, i in enumerate(keep)), "interleave")


def max_pool(x, pool_size, strides, padding=0, data_format="NHWC"):
    """pyaiml.ops.max_pool1d/2d by rank of ``pool_size`` (an int: 1-D); gradient through the
    forward's indices, one byte per output (the position in the window) when the window
    allows. After a conv with a fused ReLU the pool also takes the ReLU's gradient (its
    windows whose maximum is 0 pass none), and the conv then skips its ReLU mask."""
    xv = _v(x)
    two = isinstance(pool_size, tuple) and len(pool_size) == 2
    fwd, bwd = (ops.max_pool2d, ops.max_pool2d_backward) if two else (ops.max_pool1d, ops.max_pool1d_backward)
    if not recording_needed(x):
        return fwd(xv, pool_size, strides, padding, data_format)
    kk = int(np.prod(pool_size))
    fmt = "window" if kk <= MAX_WINDOW else "flat"
    gate = fmt == "window" and getattr(x, "_relu_out", False)
    out, idx = fwd(xv, pool_size, strides, padding, data_format, return_indices=True,
                   activation="relu" if gate else None, index_format=fmt)
    return record(out, (x,), lambda g, n: (bwd(np.ascontiguousarray(g), xv, pool_size, strides, padding, data_format,
                                               indices=idx, index_format=fmt),), "max_pool",
                  tag="relu_gate" if gate else None)


def recording_needed(*xs):
    from pyaiml.autograd.tape import recording
    return recording() and any(isinstance(x, Tensor) and x.requires_grad for x in xs)


def attention(q, k, v, mask=None, scale=None, is_causal=False):
    """softmax(q k^T * scale + mask) v over (..., L, D) arrays (pyaiml.ops' kernel, both ways)."""
    qv, kv, vv = _v(q), _v(k), _v(v)
    m = None if mask is None else np.asarray(_v(mask))
    if not recording_needed(q, k, v):
        return ops.scaled_dot_product_attention(qv, kv, vv, attn_mask=m, scale=scale, is_causal=is_causal)
    out, lse = ops.scaled_dot_product_attention(qv, kv, vv, attn_mask=m, scale=scale, is_causal=is_causal,
                                                return_lse=True)

    def back(g, n):
        return ops.scaled_dot_product_attention_backward(np.ascontiguousarray(g), qv, kv, vv, attn_mask=m,
                                                         is_causal=is_causal, scale=scale, out=out, lse=lse)
    return record(out, (q, k, v), back, "attention")


def _heads_of(y, B, T, n, H, dh):
    """(B, T, n*H*dh) -> one contiguous (n, B, H, T, dh) array."""
    return np.ascontiguousarray(y.reshape(B, T, n, H, dh).transpose(2, 0, 3, 1, 4))


def _packed_shapes(op, qv, kv, H, q_packed):
    """Clear errors for packed projections that do not split into heads."""
    if not isinstance(H, (int, np.integer)) or isinstance(H, bool) or H < 1:
        raise ValueError(f"{op}: num_heads must be a positive integer. Received {H!r}")
    if qv.ndim != 3 or kv.ndim != 3:
        raise ValueError(f"{op}: projections must be 3-D (batch, length, features). Received shapes "
                         f"{tuple(qv.shape)} and {tuple(kv.shape)}" if not q_packed else
                         f"{op}: qkv must be 3-D (batch, length, 3 * D). Received shape {tuple(qv.shape)}")
    D = qv.shape[2] // 3 if q_packed else qv.shape[2]
    if (q_packed and qv.shape[2] % 3) or D % H or D == 0:
        raise ValueError(f"{op}: the projections must split into {H} heads "
                         f"({'qkv: 3 * D' if q_packed else 'q: D'} features, D a multiple of num_heads). "
                         f"Received {'qkv' if q_packed else 'q'} of shape {tuple(qv.shape)}")
    if not q_packed and (kv.shape[0] != qv.shape[0] or kv.shape[2] != 2 * D):
        raise ValueError(f"{op}: kv must be (batch={qv.shape[0]}, S, 2 * {D}). Received shape {tuple(kv.shape)}")


def _packed_attention(qv, kv, H, m, causal, q_packed):
    """Shared by self_attention / cross_attention: heads split from packed projections,
    attention, heads merged, one record whose backward gives the packed gradients."""
    _packed_shapes("self_attention" if q_packed else "cross_attention", qv, kv, H, q_packed)
    B, T = qv.shape[:2]
    S = kv.shape[1]
    if q_packed:  # qkv (B, T, 3D)
        D = qv.shape[2] // 3
        dh = D // H
        y = _heads_of(qv, B, T, 3, H, dh)
        q, k, v = y[0], y[1], y[2]
    else:  # q (B, T, D), kv (B, S, 2D)
        D = qv.shape[2]
        dh = D // H
        q = _heads_of(qv, B, T, 1, H, dh)[0]
        y = _heads_of(kv, B, S, 2, H, dh)
        k, v = y[0], y[1]
    o, lse = ops.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=causal, return_lse=True)
    out = np.ascontiguousarray(o.transpose(0, 2, 1, 3)).reshape(B, T, D)

    def grads(g):
        do = np.ascontiguousarray(np.asarray(g).reshape(B, T, H, dh).transpose(0, 2, 1, 3))
        return ops.scaled_dot_product_attention_backward(do, q, k, v, attn_mask=m, is_causal=causal, out=o, lse=lse)

    def stack(parts, L):  # per-head gradients (B, H, L, dh) -> the packed (B, L, n*D) layout, one copy each
        out = np.empty((B, L, len(parts), H, dh), dtype=parts[0].dtype)
        for i, p in enumerate(parts):
            out[:, :, i] = p.transpose(0, 2, 1, 3)
        return out.reshape(B, L, len(parts) * D)
    return out, grads, stack


def self_attention(qkv, num_heads, mask=None, is_causal=False):
    """Multi-head self-attention from packed projections: qkv (B, T, 3D) (q, k, v side by side,
    heads of D / num_heads within each) -> softmax(q k^T / sqrt(dh) + mask) v with the heads
    merged, (B, T, D). ``mask``: boolean, broadcastable to (B, H, T, T) (True = attend). One
    record: its backward gives the packed (B, T, 3D) gradient (a split into three recorded
    slices would build three zero-filled copies of qkv)."""
    x = _v(qkv)
    m = None if mask is None else np.asarray(_v(mask))
    out, grads, stack = _packed_attention(x, x, num_heads, m, is_causal, True)

    def back(g, n):
        return (stack(grads(g), x.shape[1]),)
    return record(out, (qkv,), back, "self_attention")


def cross_attention(q, kv, num_heads, mask=None):
    """Multi-head attention of q (B, T, D) over packed keys and values kv (B, S, 2D) -> (B, T, D);
    ``mask`` broadcastable to (B, H, T, S). One record, as self_attention."""
    qv, kvv = _v(q), _v(kv)
    m = None if mask is None else np.asarray(_v(mask))
    out, grads, stack = _packed_attention(qv, kvv, num_heads, m, False, False)

    def back(g, n):
        gq, gk, gv = grads(g)
        return stack([gq], qv.shape[1]) if n[0] else None, stack([gk, gv], kvv.shape[1]) if n[1] else None
    return record(out, (q, kv), back, "cross_attention")


def _layer_norm_f32(x, xv, gamma, beta, epsilon):
    """layer_norm on float32 rows: the registry's norm kernel forward and its
    layer_norm_backward kernel (the statistics recomputed from x), one pass each way."""
    c = xv.shape[-1]
    x2 = np.ascontiguousarray(xv.reshape(-1, c))
    gm = None if gamma is None else np.ascontiguousarray(_v(gamma))
    bt = None if beta is None else np.ascontiguousarray(_v(beta))
    eps = float(epsilon)
    out = _backend.resolve("norm")(x2, gm, bt, eps, False).reshape(xv.shape)

    def back(g, n):
        need = (bool(n[0]), bool(gamma is not None and n[1]), bool(beta is not None and n[2]))
        gx, gg, gb = _backend.resolve("layer_norm_backward")(
            np.ascontiguousarray(g, dtype=_F32).reshape(-1, c), x2, gm, eps, need)
        return (None if gx is None else gx.reshape(xv.shape)), gg, gb

    def pe(g, want):
        if want[0]:
            raise ValueError("DP-SGD: a weight as the input of layer_norm() has no per-example rule")
        return _pe.RowRule(g, _normalised(xv, epsilon)[0], bool(want[1]), bool(want[2])), tuple(
            i for i in (1, 2) if want[i])
    return record(out, (x, gamma, beta), back, "layer_norm", pe)


def _normalised(xv, epsilon):
    """(xhat, 1 / std) of the rows of xv over its last axis (row reductions as einsums: no
    squared or product temporaries of x's size)."""
    xc = xv - xv.mean(axis=-1, keepdims=True)
    inv = 1.0 / np.sqrt(np.einsum("...i,...i->...", xc, xc)[..., None] / xv.shape[-1] + xv.dtype.type(epsilon))
    xc *= inv
    return xc, inv


def layer_norm(x, gamma=None, beta=None, epsilon=1e-3):
    """Normalise over the last axis, then scale and shift (one record). float32 rows run on
    the norm kernels (C++ / Numba / NumPy by the registry); other dtypes in NumPy."""
    xv = _v(x)
    c = xv.shape[-1]
    if (xv.dtype is _F32 and xv.ndim >= 1 and xv.size and c
            and all(v is None or _v(v).dtype is _F32 for v in (gamma, beta))):
        return _layer_norm_f32(x, xv, gamma, beta, epsilon)
    xhat, inv = _normalised(xv, epsilon)
    gm = None if gamma is None else _v(gamma)
    out = xhat * gm if gm is not None else xhat.copy()
    if beta is not None:
        out += _v(beta)

    def back(g, n):
        g2, x2 = g.reshape(-1, c), xhat.reshape(-1, c)
        gg = np.einsum("ni,ni->i", g2, x2) if (gamma is not None and n[1]) else None
        gb = g2.sum(axis=0) if (beta is not None and n[2]) else None
        gx = None
        if n[0]:
            d = g * gm if gm is not None else g
            m1 = d.sum(axis=-1, keepdims=True) / c
            m2 = np.einsum("...i,...i->...", d, xhat)[..., None] / c
            gx = d - m1
            gx -= xhat * m2
            gx *= inv
        return gx, gg, gb

    def pe(g, want):
        if want[0]:
            raise ValueError("DP-SGD: a weight as the input of layer_norm() has no per-example rule")
        return _pe.RowRule(g, xhat, bool(want[1]), bool(want[2])), tuple(i for i in (1, 2) if want[i])
    return record(out, (x, gamma, beta), back, "layer_norm", pe)


def batch_norm(x, mean_, var_, gamma=None, beta=None, epsilon=1e-3, axis=-1, batch_stats=False):
    """(x - mean) / sqrt(var + eps) * gamma + beta along ``axis``. With ``batch_stats`` the
    mean and (biased) variance are the batch's, computed here and differentiated through;
    returns (out, mean, var) then, else out."""
    xv = _v(x)
    ax = axis % xv.ndim
    red = tuple(i for i in range(xv.ndim) if i != ax)
    bs = [1] * xv.ndim
    bs[ax] = -1
    if batch_stats:
        mu = xv.mean(axis=red, dtype=np.float64).astype(xv.dtype)
        vr = xv.var(axis=red, dtype=np.float64).astype(xv.dtype)
    else:
        mu, vr = _v(mean_), _v(var_)
    inv = (1.0 / np.sqrt(vr + xv.dtype.type(epsilon))).astype(xv.dtype)
    xhat = (xv - mu.reshape(bs)) * inv.reshape(bs)
    gm = None if gamma is None else _v(gamma)
    out = xhat * gm.reshape(bs) if gm is not None else xhat.copy()
    if beta is not None:
        out += _v(beta).reshape(bs)

    def back(g, n):
        gg = (g * xhat).sum(axis=red) if (gamma is not None and n[1]) else None
        gb = g.sum(axis=red) if (beta is not None and n[2]) else None
        gx = None
        if n[0]:
            d = g * gm.reshape(bs) if gm is not None else g
            if batch_stats:
                cnt = xv.size // xv.shape[ax]
                gx = (d - d.sum(axis=red, keepdims=True) / cnt
                      - xhat * (d * xhat).sum(axis=red, keepdims=True) / cnt) * inv.reshape(bs)
            else:
                gx = d * inv.reshape(bs)
        return gx, gg, gb
    out = record(out, (x, gamma, beta), back, "batch_norm")
    return (out, mu, vr) if batch_stats else out


def dropout(x, rate, rng, noise_shape=None):
    """Inverted dropout: keep each element with probability 1 - rate, scaled by 1/(1 - rate)."""
    xv = _v(x)
    if rate <= 0:
        return x
    shape = xv.shape if noise_shape is None else tuple(
        xv.shape[i] if d is None else int(d) for i, d in enumerate(noise_shape))
    keep = rng.random(shape, dtype=np.float32) >= rate
    m = keep.astype(xv.dtype) * xv.dtype.type(1.0 / (1.0 - rate))
    return multiply(x, m)


def average_pool(x, pool_size, strides, spatial_axes):
    """Mean over non-overlapping or strided windows (valid padding) of the given spatial axes."""
    xv = _v(x)
    r = len(spatial_axes)
    win = np.lib.stride_tricks.sliding_window_view(xv, pool_size, axis=spatial_axes)
    sl = [slice(None)] * xv.ndim
    for a, s in zip(spatial_axes, strides):
        sl[a] = slice(None, None, s)
    w = win[tuple(sl)]
    out = w.mean(axis=tuple(range(-r, 0)))
    cnt = int(np.prod(pool_size))

    def back(g, n):
        gx = np.zeros_like(xv)
        gw = np.lib.stride_tricks.sliding_window_view(gx, pool_size, axis=spatial_axes, writeable=True)[tuple(sl)]
        # windows may overlap (stride < pool): accumulate one window offset at a time
        gs = g / xv.dtype.type(cnt)
        for off in np.ndindex(*pool_size):
            gw[(Ellipsis,) + off] += gs
        return (gx,)
    return record(np.ascontiguousarray(out), (x,), back, "average_pool")


def loss(loss_obj, y_true, y_pred):
    """A loss object's mean value as a recorded scalar; its gradient is the loss's own
    ``value_and_grad``. A softmax output (``softmax`` above) with a cross-entropy from
    probabilities is differentiated from its logits instead (the stable fused form)."""
    yv = np.asarray(_v(y_true))
    logits = getattr(y_pred, "_softmax_of", None)
    if (logits is not None and getattr(loss_obj, "fusable_activation", None) == "softmax"
            and not loss_obj.from_logits and recording_needed(logits)):
        z = _v(logits)
        val, g = loss_obj.value_and_grad_logits(yv, z)
        return record(np.asarray(val, dtype=z.dtype), (logits,), lambda go, n: (g * go,), "loss",
                      tag="softmax_logits")
    p = _v(y_pred)
    if p.dtype.kind != "f":
        p = p.astype(np.float32)
    val, g = loss_obj.value_and_grad(yv, p)
    return record(np.asarray(val, dtype=p.dtype), (y_pred,), lambda go, n: (g * go,), "loss")


def one_hot(indices, num_classes, dtype="float32"):
    ids = np.asarray(_v(indices)).astype(np.int64)
    out = np.zeros(ids.shape + (int(num_classes),), dtype=dtype)
    valid = (ids >= 0) & (ids < num_classes)
    np.put_along_axis(out, np.where(valid, ids, 0)[..., None], valid[..., None].astype(dtype), axis=-1)
    return out


# ufuncs that NumPy hands to Tensor.__array_ufunc__ for ``ndarray <op> Tensor``
_UFUNCS = {
    "add": add, "subtract": subtract, "multiply": multiply, "true_divide": divide, "divide": divide,
    "power": power, "matmul": matmul, "negative": negative, "maximum": maximum, "minimum": minimum,
}
