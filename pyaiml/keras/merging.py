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


def add(inputs, **kw):
    return Add(**kw)(inputs)


def subtract(inputs, **kw):
    return Subtract(**kw)(inputs)


def multiply(inputs, **kw):
    return Multiply(**kw)(inputs)


def concatenate(inputs, axis=-1, **kw):
    return Concatenate(axis=axis, **kw)(inputs)


for _c in (Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate):
    _layers._LAYERS[_c.__name__] = _c
