"""Keras merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate.

Each takes a list of tensors (two or more; Subtract exactly two) and combines them with
the tape's primitives, so their gradients come from pyaiml/autograd. ``build`` checks
the shapes (batch excluded) and raises an InputSpecError naming the layer and the shapes
it received: the elementwise merges need equal shapes (a size of 1 or None matches any),
Concatenate needs equal sizes on every axis but ``axis``.
Not here: masks. Tests: tests/test_keras_functional.py.
"""
from __future__ import annotations

from functools import reduce

import numpy as np

from pyaiml.autograd import functional as F
from pyaiml.keras import layers as _layers
from pyaiml.keras.layers import InputSpecError, Layer, _shape_str

_layers.BUILTIN_MODULES.add(__name__)


class _Merge(Layer):
    _min_inputs = 2

    def _check_list(self, shapes):
        if not isinstance(shapes, (list, tuple)) or not shapes or not isinstance(shapes[0], (list, tuple)):
            raise InputSpecError(f"Layer {self.name!r} ({type(self).__name__}) must be called on a list of tensors. "
                                 f"Received an input of shape {shapes}")
        if len(shapes) < self._min_inputs:
            raise InputSpecError(f"Layer {self.name!r} ({type(self).__name__}) needs at least {self._min_inputs} "
                                 f"inputs. Received {len(shapes)}")

    def build(self, input_shape):
        self._check_list(input_shape)
        shapes = [tuple(s) for s in input_shape]
        for s in shapes[1:]:
            ok = len(s) == len(shapes[0]) and all(a is None or b is None or a == b or a == 1 or b == 1
                                                   for a, b in zip(shapes[0], s))
            if not ok:
                got = ", ".join(_shape_str(t) for t in shapes)
                raise InputSpecError(f"Layer {self.name!r} ({type(self).__name__}) needs inputs of the same shape "
                                     f"(sizes of 1 broadcast). Received inputs of shapes {got}")
        out = tuple(next((d for d in col if d not in (None, 1)), col[0]) for col in zip(*shapes))
        self.input_shape = shapes[0]
        self.output_shape = out
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def call(self, inputs, training=None):
        if not isinstance(inputs, (list, tuple)):
            raise InputSpecError(f"Layer {self.name!r} ({type(self).__name__}) must be called on a list of tensors")
        return self._merge(list(inputs))


class Add(_Merge):
    """Elementwise sum of the inputs."""

    def _merge(self, xs):
        return reduce(F.add, xs)


class Subtract(_Merge):
    """inputs[0] - inputs[1]."""

    def build(self, input_shape):
        self._check_list(input_shape)
        if len(input_shape) != 2:
            raise InputSpecError(f"Layer {self.name!r} (Subtract) needs exactly 2 inputs. Received {len(input_shape)}")
        super().build(input_shape)

    def _merge(self, xs):
        return F.subtract(xs[0], xs[1])


class Multiply(_Merge):
    """Elementwise product of the inputs."""

    def _merge(self, xs):
        return reduce(F.multiply, xs)


class Average(_Merge):
    """Elementwise mean of the inputs."""

    def _merge(self, xs):
        return F.multiply(reduce(F.add, xs), 1.0 / len(xs))


class Maximum(_Merge):
    def _merge(self, xs):
        return reduce(F.maximum, xs)


class Minimum(_Merge):
    def _merge(self, xs):
        return reduce(F.minimum, xs)


class Concatenate(_Merge):
    """Join the inputs along ``axis`` (default the last)."""

    def __init__(self, axis=-1, **kw):
        super().__init__(**kw)
        self.axis = int(axis)

    def build(self, input_shape):
        self._check_list(input_shape)
        shapes = [tuple(s) for s in input_shape]
        nd = len(shapes[0]) + 1  # with the batch axis
        ax = self.axis % nd
        if ax == 0:
            raise InputSpecError(f"Layer {self.name!r} (Concatenate) cannot join along the batch axis")
        ok = all(len(s) == len(shapes[0]) for s in shapes) and all(
            i == ax - 1 or len({d for d in col if d is not None}) <= 1 for i, col in enumerate(zip(*shapes)))
        if not ok:
            got = ", ".join(_shape_str(t) for t in shapes)
            raise InputSpecError(f"Layer {self.name!r} (Concatenate) needs inputs whose shapes match except on axis "
                                 f"{self.axis}. Received inputs of shapes {got}")
        self._ax = ax
        self.input_shape = shapes[0]
        self.output_shape = tuple(
            (None if any(s[i] is None for s in shapes) else sum(s[i] for s in shapes)) if i == ax - 1 else
            next((d for d in col if d is not None), None) for i, col in enumerate(zip(*shapes)))
        self.built = True

    def _merge(self, xs):
        return F.concatenate(xs, self.axis)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


class Dot(_Merge):
    """Keras's Dot: the dot product of two inputs along ``axes`` (an int, or one axis per
    input; batch axis excluded, so axes >= 1), batched over the first axis; ``normalize``
    L2-normalises both along those axes first (the cosine similarity)."""

    def __init__(self, axes, normalize=False, **kw):
        super().__init__(**kw)
        ax = [axes, axes] if isinstance(axes, (int, np.integer)) else list(axes)
        if len(ax) != 2 or any(not isinstance(a, (int, np.integer)) for a in ax):
            raise ValueError(f"Dot: axes must be an int or a pair of ints. Received {axes!r}")
        self.axes, self.normalize = [int(a) for a in ax], bool(normalize)

    def _axes_for(self, shapes):
        out = []
        for a, sh in zip(self.axes, shapes):
            r = len(sh) + 1  # with the batch axis
            a2 = a % r if a < 0 else a
            if not 1 <= a2 < r:
                raise InputSpecError(f"Layer {self.name!r} (Dot): axis {a} is not a non-batch axis of an input of "
                                     f"shape {_shape_str(sh)}")
            out.append(a2)
        return out

    def build(self, input_shape):
        self._check_list(input_shape)
        if len(input_shape) != 2:
            raise InputSpecError(f"Layer {self.name!r} (Dot) needs exactly 2 inputs. Received {len(input_shape)}")
        s1, s2 = (tuple(s) for s in input_shape)
        a1, a2 = self._axes_for((s1, s2))
        if s1[a1 - 1] is not None and s2[a2 - 1] is not None and s1[a1 - 1] != s2[a2 - 1]:
            raise InputSpecError(f"Layer {self.name!r} (Dot): the dot axes differ in size: {s1[a1 - 1]} (axis {a1} "
                                 f"of {_shape_str(s1)}) and {s2[a2 - 1]} (axis {a2} of {_shape_str(s2)})")
        self.input_shape = s1
        self.output_shape = self.compute_output_shape([s1, s2])
        self.built = True

    def compute_output_shape(self, input_shape):
        s1, s2 = (tuple(s) for s in input_shape)
        a1, a2 = self._axes_for((s1, s2))
        out = tuple(d for i, d in enumerate(s1) if i != a1 - 1) + tuple(d for i, d in enumerate(s2) if i != a2 - 1)
        return out if out else (1,)

    def _merge(self, xs):
        x1, x2 = xs
        s1, s2 = (np.shape(getattr(x, "value", x))[1:] for x in (x1, x2))
        a1, a2 = self._axes_for((s1, s2))
        if self.normalize:
            x1 = F.divide(x1, F.maximum(F.sqrt(F.sum(F.square(x1), a1, True)), 1e-12))
            x2 = F.divide(x2, F.maximum(F.sqrt(F.sum(F.square(x2), a2, True)), 1e-12))
        r1, r2 = len(s1) + 1, len(s2) + 1
        letters = "bcdefghijklmnopqrstuvwxyz"
        i1 = ["a"] + list(letters[:r1 - 1])
        i2 = ["a"] + list(letters[r1 - 1:r1 + r2 - 2])
        i2[a2] = i1[a1]  # the contracted axis
        out = [c for k, c in enumerate(i1) if k != a1] + [c for k, c in enumerate(i2) if k not in (0, a2)]
        y = F.einsum(f"{''.join(i1)},{''.join(i2)}->{''.join(out)}", x1, x2)
        return F.reshape(y, (-1, 1)) if len(out) == 1 else y

    def get_config(self):
        return {**super().get_config(), "axes": self.axes, "normalize": self.normalize}


def add(inputs, **kw):
    return Add(**kw)(inputs)


def subtract(inputs, **kw):
    return Subtract(**kw)(inputs)


def multiply(inputs, **kw):
    return Multiply(**kw)(inputs)


def concatenate(inputs, axis=-1, **kw):
    return Concatenate(axis=axis, **kw)(inputs)


def dot(inputs, axes=-1, normalize=False, **kw):
    return Dot(axes=axes, normalize=normalize, **kw)(inputs)


for _c in (Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot):
    _layers._LAYERS[_c.__name__] = _c
