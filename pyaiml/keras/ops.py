"""``keras.ops``: the Keras 3 operations, eager on NumPy arrays, differentiable on the tape,
symbolic on ``keras.Input`` tensors.

What it is. Each function takes NumPy arrays (or lists, scalars), tape values
(pyaiml.autograd ``Tensor`` / ``Variable``) or symbolic ``KerasTensor``s. On arrays it
computes at once and returns an array; while a ``GradientTape`` records and an argument
needs a gradient it returns a recorded ``Tensor`` (pyaiml/autograd/functional.py holds
the primitives and their backward); given a ``KerasTensor`` (the functional API) it adds
a node to the graph and returns a KerasTensor of the result's shape. Argument names and
defaults are Keras 3's (``axis``, ``keepdims``; ``gelu(approximate=True)``;
``one_hot(x, num_classes)``; ``where(condition, x1, x2)``; the cross-entropies return one
value per sample).

Not here: ``keras.ops.image``, ``linalg``, control flow (``cond``, ``while_loop``),
random ops (see ``keras.random`` equivalents in layers.Dropout). Tests:
tests/test_keras_ops.py (values against NumPy, gradients against torch autograd in
float64, the symbolic path).
"""
from __future__ import annotations

import builtins
import functools

import numpy as np

from pyaiml.autograd import functional as F
from pyaiml.autograd.tape import Tensor, value_of

_v = value_of


def _is_symbolic(a):
    if isinstance(a, (list, tuple)):
        return builtins.any(_is_symbolic(b) for b in a)
    if isinstance(a, dict):
        return builtins.any(_is_symbolic(b) for b in a.values())
    return getattr(a, "_is_keras_tensor", False)


def _op(fn):
    """Keras op: symbolic arguments build a graph node (pyaiml/keras/functional.py)."""
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _is_symbolic(args) or _is_symbolic(kwargs):
            from pyaiml.keras.functional import symbolic_op

            return symbolic_op(name, args, kwargs)
        return fn(*args, **kwargs)
    _OPS[name] = fn
    return wrapper


_OPS: dict = {}


# ---------------------------------------------------------------- creation and conversion
def convert_to_tensor(x, dtype=None, sparse=None):
    """An array (NumPy is the eager tensor type); tape values pass through unchanged."""
    if isinstance(x, Tensor):
        return x if dtype is None else F.cast(x, dtype)
    return np.asarray(x, dtype=dtype)


def convert_to_numpy(x):
    return np.array(_v(x))


def is_tensor(x):
    return isinstance(x, (np.ndarray, Tensor))


def shape(x):
    return tuple(_v(x).shape) if not _is_symbolic(x) else tuple(x.shape)


def dtype(x):
    return str(_v(x).dtype)


def arange(start, stop=None, step=1, dtype=None):
    return np.arange(start, stop, step, dtype=dtype) if stop is not None else np.arange(start, dtype=dtype)


def zeros(shape, dtype="float32"):
    return np.zeros(shape, dtype=dtype)


def ones(shape, dtype="float32"):
    return np.ones(shape, dtype=dtype)


def full(shape, fill_value, dtype=None):
    return np.full(shape, fill_value, dtype=dtype)


def eye(N, M=None, k=0, dtype="float32"):
    return np.eye(N, M, k, dtype=dtype)


@_op
def zeros_like(x, dtype=None):
    return np.zeros_like(_v(x), dtype=dtype)


@_op
def ones_like(x, dtype=None):
    return np.ones_like(_v(x), dtype=dtype)


@_op
def tril(x, k=0):
    return F.multiply(x, np.tril(np.ones(_v(x).shape[-2:], dtype=_v(x).dtype), k))


@_op
def triu(x, k=0):
    return F.multiply(x, np.triu(np.ones(_v(x).shape[-2:], dtype=_v(x).dtype), k))


@_op
def cast(x, dtype):
    return F.cast(x, dtype)


@_op
def stop_gradient(x):
    return F.stop_gradient(x)


# ---------------------------------------------------------------- arithmetic
@_op
def add(x1, x2):
    return F.add(x1, x2)


@_op
def subtract(x1, x2):
    return F.subtract(x1, x2)


@_op
def multiply(x1, x2):
    return F.multiply(x1, x2)


@_op
def divide(x1, x2):
    return F.divide(x1, x2)


true_divide = divide


@_op
def power(x1, x2):
    return F.power(x1, x2)


@_op
def negative(x):
    return F.negative(x)


@_op
def maximum(x1, x2):
    return F.maximum(x1, x2)


@_op
def minimum(x1, x2):
    return F.minimum(x1, x2)


@_op
def clip(x, x_min, x_max):
    return F.clip(x, x_min, x_max)


@_op
def matmul(x1, x2):
    return F.matmul(x1, x2)


@_op
def dot(x1, x2):
    return F.matmul(x1, x2)


@_op
def einsum(subscripts, *operands):
    return F.einsum(subscripts, *operands)


# ---------------------------------------------------------------- unary math
def _unary(f):
    return _op(functools.wraps(f)(lambda x: f(x)))


exp, log, log1p, sqrt, rsqrt = _unary(F.exp), _unary(F.log), _unary(F.log1p), _unary(F.sqrt), _unary(F.rsqrt)
square, abs, sin, cos = _unary(F.square), _unary(F.abs), _unary(F.sin), _unary(F.cos)
reciprocal = _unary(F.reciprocal)
absolute = abs


@_op
def sign(x):
    return F.sign(x)


@_op
def floor(x):
    return np.floor(_v(x))


@_op
def round(x, decimals=0):
    return np.round(_v(x), decimals)


# ---------------------------------------------------------------- activations (keras.ops.nn)
@_op
def relu(x):
    return F.relu(x)


@_op
def relu6(x):
    return F.clip(x, 0.0, 6.0)


@_op
def sigmoid(x):
    return F.sigmoid(x)


@_op
def tanh(x):
    return F.tanh(x)


@_op
def gelu(x, approximate=True):
    return F.gelu(x, approximate)


@_op
def silu(x):
    return F.silu(x)


swish = silu


@_op
def softplus(x):
    return F.softplus(x)


@_op
def leaky_relu(x, negative_slope=0.2):
    return F.leaky_relu(x, negative_slope)


@_op
def elu(x, alpha=1.0):
    return F.elu(x, alpha)


@_op
def softmax(x, axis=-1):
    return F.softmax(x, axis)


@_op
def log_softmax(x, axis=-1):
    return F.log_softmax(x, axis)


# ---------------------------------------------------------------- reductions
@_op
def sum(x, axis=None, keepdims=False):
    return F.sum(x, axis, keepdims)


@_op
def mean(x, axis=None, keepdims=False):
    return F.mean(x, axis, keepdims)


@_op
def max(x, axis=None, keepdims=False, initial=None):
    return F.max(x, axis, keepdims)


@_op
def min(x, axis=None, keepdims=False, initial=None):
    return F.min(x, axis, keepdims)


@_op
def var(x, axis=None, keepdims=False):
    return F.var(x, axis, keepdims)


@_op
def std(x, axis=None, keepdims=False):
    return F.std(x, axis, keepdims)


@_op
def moments(x, axes, keepdims=False):
    return F.mean(x, axes, keepdims), F.var(x, axes, keepdims)


@_op
def logsumexp(x, axis=None, keepdims=False):
    return F.logsumexp(x, axis, keepdims)


@_op
def argmax(x, axis=None, keepdims=False):
    return np.argmax(_v(x), axis=axis, keepdims=keepdims)


@_op
def argmin(x, axis=None, keepdims=False):
    return np.argmin(_v(x), axis=axis, keepdims=keepdims)


@_op
def cumsum(x, axis=None):
    return np.cumsum(_v(x), axis=axis)


@_op
def any(x, axis=None, keepdims=False):
    return np.any(_v(x), axis=axis, keepdims=keepdims)


@_op
def all(x, axis=None, keepdims=False):
    return np.all(_v(x), axis=axis, keepdims=keepdims)


# ---------------------------------------------------------------- comparisons (no gradient)
@_op
def equal(x1, x2):
    return np.equal(_v(x1), _v(x2))


@_op
def not_equal(x1, x2):
    return np.not_equal(_v(x1), _v(x2))


@_op
def greater(x1, x2):
    return np.greater(_v(x1), _v(x2))


@_op
def greater_equal(x1, x2):
    return np.greater_equal(_v(x1), _v(x2))


@_op
def less(x1, x2):
    return np.less(_v(x1), _v(x2))


@_op
def less_equal(x1, x2):
    return np.less_equal(_v(x1), _v(x2))


@_op
def logical_and(x1, x2):
    return np.logical_and(_v(x1), _v(x2))


@_op
def logical_or(x1, x2):
    return np.logical_or(_v(x1), _v(x2))


@_op
def logical_not(x):
    return np.logical_not(_v(x))


# ---------------------------------------------------------------- shapes
@_op
def reshape(x, newshape):
    return F.reshape(x, tuple(newshape) if isinstance(newshape, (list, tuple)) else newshape)


@_op
def transpose(x, axes=None):
    return F.transpose(x, None if axes is None else tuple(axes))


@_op
def swapaxes(x, axis1, axis2):
    return F.swapaxes(x, axis1, axis2)


@_op
def expand_dims(x, axis):
    return F.expand_dims(x, axis)


@_op
def squeeze(x, axis=None):
    return F.squeeze(x, axis)


@_op
def concatenate(xs, axis=0):
    return F.concatenate(xs, axis)


@_op
def stack(x, axis=0):
    return F.stack(x, axis)


@_op
def split(x, indices_or_sections, axis=0):
    return F.split(x, indices_or_sections, axis)


@_op
def broadcast_to(x, shape):
    return F.broadcast_to(x, tuple(shape))


@_op
def tile(x, repeats):
    return F.tile(x, repeats)


@_op
def repeat(x, repeats, axis=None):
    return F.repeat(x, repeats, axis)


@_op
def pad(x, pad_width, mode="constant", constant_values=None):
    if mode != "constant":
        raise ValueError(f"pad: only mode='constant' is supported. Received {mode!r}")
    return F.pad(x, pad_width, 0 if constant_values is None else constant_values)


@_op
def take(x, indices, axis=None):
    return F.take(x, indices, axis)


@_op
def take_along_axis(x, indices, axis=None):
    return F.take_along_axis(x, indices, axis)


@_op
def where(condition, x1=None, x2=None):
    if x1 is None and x2 is None:
        return np.nonzero(_v(condition))
    if x1 is None or x2 is None:
        raise ValueError("where: give both x1 and x2, or neither")
    return F.where(condition, x1, x2)


@_op
def one_hot(x, num_classes, axis=-1, dtype="float32", sparse=False):
    out = F.one_hot(x, num_classes, dtype)
    return out if axis in (-1, out.ndim - 1) else np.moveaxis(out, -1, axis)


@_op
def slice(inputs, start_indices, shape):
    idx = tuple(builtins.slice(int(s), int(s) + int(n)) for s, n in zip(start_indices, shape))
    return F.getitem(inputs, idx)


# ---------------------------------------------------------------- losses (one value per sample)
@_op
def categorical_crossentropy(target, output, from_logits=False, axis=-1):
    if from_logits:
        ls = F.log_softmax(output, axis)
    else:
        out = F.divide(output, F.sum(output, axis, True))
        ls = F.log(F.clip(out, 1e-7, 1 - 1e-7))
    return F.negative(F.sum(F.multiply(target, ls), axis))


@_op
def sparse_categorical_crossentropy(target, output, from_logits=False, axis=-1):
    ids = np.asarray(_v(target)).astype(np.int64)
    if ids.ndim == _v(output).ndim:
        ids = ids[..., 0]
    if from_logits:
        ls = F.log_softmax(output, axis)
    else:
        out = F.divide(output, F.sum(output, axis, True))
        ls = F.log(F.clip(out, 1e-7, 1 - 1e-7))
    return F.negative(F.squeeze(F.take_along_axis(ls, ids[..., None], -1), -1))


@_op
def binary_crossentropy(target, output, from_logits=False):
    if from_logits:  # max(z, 0) - z*y + log(1 + exp(-|z|))
        return F.add(F.subtract(F.relu(output), F.multiply(output, target)), F.log1p(F.exp(F.negative(F.abs(output)))))
    p = F.clip(output, 1e-7, 1 - 1e-7)
    t = _v(target)
    return F.negative(F.add(F.multiply(t, F.log(p)), F.multiply(1 - t, F.log(F.subtract(1.0, p)))))


# ---------------------------------------------------------------- nn ops
@_op
def dropout(x, rate, noise_shape=None, seed=None):
    from pyaiml.keras._common import rng

    r = np.random.default_rng(seed) if isinstance(seed, (int, np.integer)) else rng()
    return F.dropout(x, float(rate), r, noise_shape)


@_op
def dot_product_attention(query, key, value, bias=None, mask=None, scale=None, is_causal=False):
    """Keras layout (batch, length, heads, dim) -> (batch, length, heads, dim)."""
    q, k, v = (F.transpose(t, (0, 2, 1, 3)) for t in (query, key, value))
    m = None if mask is None else np.asarray(_v(mask), dtype=bool)
    o = F.attention(q, k, v, m, scale, is_causal)
    return F.transpose(o, (0, 2, 1, 3))


# ---------------------------------------------------------------- more numpy-style ops
# Differentiable ones are written with the tape's primitives (their gradients are the tape's);
# the rest return plain arrays (indices, masks, counts), as their Keras counterparts have no
# gradient either.
tan = _unary(F._unary("tan", np.tan, lambda x, y: 1 + y * y))
sinh = _unary(F._unary("sinh", np.sinh, lambda x, y: np.cosh(x)))
cosh = _unary(F._unary("cosh", np.cosh, lambda x, y: np.sinh(x)))
arctan = _unary(F._unary("arctan", np.arctan, lambda x, y: 1 / (1 + x * x)))
arcsinh = _unary(F._unary("arcsinh", np.arcsinh, lambda x, y: 1 / np.sqrt(x * x + 1)))
expm1 = _unary(F._unary("expm1", np.expm1, lambda x, y: y + 1))
log2 = _unary(F._unary("log2", np.log2, lambda x, y: 1 / (x * np.log(2.0))))
log10 = _unary(F._unary("log10", np.log10, lambda x, y: 1 / (x * np.log(10.0))))
softsign = _unary(lambda x: F.divide(x, F.add(F.abs(x), 1.0)))


def _axes_of(x, axis):
    nd = np.ndim(_v(x))
    if axis is None:
        return tuple(range(nd))
    return tuple(a % nd for a in (axis if isinstance(axis, (tuple, list)) else (axis,)))


@_op
def flip(x, axis=None):
    axes = _axes_of(x, axis)
    return F.getitem(x, tuple(builtins.slice(None, None, -1) if a in axes else builtins.slice(None) for a in range(np.ndim(_v(x)))))


@_op
def moveaxis(x, source, destination):
    nd = np.ndim(_v(x))
    src = [a % nd for a in (source if isinstance(source, (tuple, list)) else (source,))]
    dst = [a % nd for a in (destination if isinstance(destination, (tuple, list)) else (destination,))]
    if len(src) != len(dst):
        raise ValueError(f"moveaxis: source and destination must have the same number of axes. Received {source}, "
                         f"{destination}")
    order = [a for a in range(nd) if a not in src]
    for d, a in sorted(zip(dst, src)):
        order.insert(d, a)
    return F.transpose(x, tuple(order))


@_op
def ravel(x):
    return F.reshape(x, (-1,))


@_op
def roll(x, shift, axis=None):
    if axis is None:
        return F.reshape(roll(F.reshape(x, (-1,)), shift, 0), np.shape(_v(x)))
    n = np.shape(_v(x))[axis]
    return F.take(x, (np.arange(n) - int(shift)) % n if n else np.arange(0), axis)


@_op
def sort(x, axis=-1):
    return F.take_along_axis(x, np.argsort(_v(x), axis=axis, kind="stable"), axis)


@_op
def argsort(x, axis=-1):
    return np.argsort(_v(x), axis=axis, kind="stable")


@_op
def top_k(x, k, sorted=True):  # Keras's argument names
    """(values, indices) of the k largest along the last axis, largest first (sorted is
    accepted; the result is always sorted)."""
    xv = _v(x)
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= xv.shape[-1]:
        raise ValueError(f"top_k: k must be in [1, {xv.shape[-1]}] for a last axis of that size. Received {k}")
    idx = np.argsort(-xv, axis=-1, kind="stable")[..., :int(k)]
    return F.take_along_axis(x, idx, -1), idx


@_op
def prod(x, axis=None, keepdims=False, dtype=None):
    """The product along ``axis``; its gradient is the product of the other factors (exact
    with zeros among them: an exclusive cumulative product from each side)."""
    xv = _v(x)
    if axis is None:
        return prod(F.reshape(x, (-1,)), 0, keepdims=False) if not keepdims else \
            F.reshape(prod(F.reshape(x, (-1,)), 0), (1,) * xv.ndim)
    if isinstance(axis, (tuple, list)):
        out = x
        for a in sorted((a % xv.ndim for a in axis), reverse=True):
            out = prod(out, a, keepdims)
        return out
    ax = axis % xv.ndim
    out = np.prod(xv, axis=ax, keepdims=keepdims)

    def back(g, n):
        ones = np.ones_like(np.take(xv, [0], axis=ax))
        left = np.cumprod(np.concatenate([ones, np.take(xv, np.arange(xv.shape[ax] - 1), axis=ax)], ax), axis=ax)
        rev = np.flip(xv, ax)
        right = np.flip(np.cumprod(np.concatenate([ones, np.take(rev, np.arange(xv.shape[ax] - 1), axis=ax)], ax),
                                   axis=ax), ax)
        gg = g if keepdims else np.expand_dims(g, ax)
        return (gg * left * right,)
    return F.record(out, (x,), back, "prod")


@_op
def norm(x, ord=None, axis=None, keepdims=False):  # Keras's argument names
    """Vector norms along ``axis`` (all axes flattened when None): ord None/2/'fro'/
    'euclidean' (the 2-norm), 1, np.inf."""
    if ord in (None, 2, "fro", "euclidean"):
        return F.sqrt(F.sum(F.square(x), axis, keepdims))
    if ord == 1:
        return F.sum(F.abs(x), axis, keepdims)
    if ord in (np.inf, float("inf")):
        return F.max(F.abs(x), axis, keepdims)
    raise ValueError(f"norm: ord must be None, 1, 2, 'fro', 'euclidean' or inf. Received {ord!r}")


@_op
def normalize(x, axis=-1, order=2, epsilon=None):
    """x divided by its ``order``-norm along ``axis`` (at least epsilon, default 1e-12)."""
    n = norm(x, order, axis, True)
    return F.divide(x, F.maximum(n, 1e-12 if epsilon is None else float(epsilon)))


@_op
def outer(x1, x2):
    return F.multiply(F.reshape(x1, (-1, 1)), F.reshape(x2, (1, -1)))


@_op
def vstack(xs):
    xs = [F.reshape(t, (1, -1)) if np.ndim(_v(t)) == 1 else t for t in xs]
    return F.concatenate(xs, 0)


@_op
def hstack(xs):
    return F.concatenate(list(xs), 0 if np.ndim(_v(xs[0])) == 1 else 1)


@_op
def full_like(x, fill_value, dtype=None):
    return np.full_like(_v(x), fill_value, dtype=dtype)


@_op
def nan_to_num(x, nan=0.0, posinf=None, neginf=None):
    xv = _v(x)
    fixed = np.nan_to_num(xv, nan=nan, posinf=posinf, neginf=neginf)
    return F.where(np.isfinite(xv), x, fixed)


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    return np.linspace(start, stop, num, endpoint=endpoint, retstep=retstep, dtype=dtype or "float32", axis=axis)


def _plain(name, f):
    def op(*args, **kwargs):
        return f(*(_v(a) if isinstance(a, Tensor) else a for a in args), **kwargs)
    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"numpy.{f.__name__} on the values (no gradient, as in Keras)."
    return _op(op)


isnan, isinf, isfinite = _plain("isnan", np.isnan), _plain("isinf", np.isinf), _plain("isfinite", np.isfinite)
isclose, allclose = _plain("isclose", np.isclose), _plain("allclose", np.allclose)
nonzero, count_nonzero = _plain("nonzero", np.nonzero), _plain("count_nonzero", np.count_nonzero)
floor_divide, mod = _plain("floor_divide", np.floor_divide), _plain("mod", np.mod)
logical_xor, ceil, trunc = _plain("logical_xor", np.logical_xor), _plain("ceil", np.ceil), _plain("trunc", np.trunc)
cumprod = _plain("cumprod", np.cumprod)
size = _plain("size", np.size)
ndim = _plain("ndim", np.ndim)


__all__ = [n for n in sorted(globals()) if not n.startswith("_") and callable(globals()[n])
           and n not in ("annotations", "builtins", "functools", "np", "F", "Tensor", "value_of")]
