"""Keras activations: relu, sigmoid, tanh, softmax, gelu, linear (+ log_softmax).

Each is an object with ``forward(x) -> y`` and ``backward(dy, x, y) -> dx`` built on
pyaiml.ops; ``get(identifier)`` resolves strings, None (linear), callables from this module.
The plain functions (``relu(x)``, ...) apply the activation like ``keras.activations.*``.
Tests: tests/test_keras_layers.py.
"""
from __future__ import annotations

import numpy as np

import pyaiml.ops as ops
from pyaiml.keras._common import lookup


class _Act:
    name = "linear"
    needs_input = False   # backward needs x (else it works from y)

    def forward(self, x):
        return x

    def backward(self, dy, x, y):
        return dy

    def __call__(self, x):
        return self.forward(np.asarray(x))

    def __repr__(self):
        return f"<activation {self.name}>"


class _Relu(_Act):
    name = "relu"

    def forward(self, x):
        return np.maximum(x, x.dtype.type(0))

    def backward(self, dy, x, y):
        return ops.relu_backward(dy, y)


class _Sigmoid(_Act):
    name = "sigmoid"

    def forward(self, x):
        return ops.sigmoid(x)

    def backward(self, dy, x, y):
        return ops.sigmoid_backward(dy, y)


class _Tanh(_Act):
    name = "tanh"

    def forward(self, x):
        return ops.tanh(x)

    def backward(self, dy, x, y):
        return ops.tanh_backward(dy, y)


class _Softmax(_Act):
    name = "softmax"

    def forward(self, x):
        return ops.softmax(x, -1)

    def backward(self, dy, x, y):
        return ops.softmax_backward(dy, y, -1)


class _LogSoftmax(_Act):
    name = "log_softmax"

    def forward(self, x):
        return ops.log_softmax(x, -1)

    def backward(self, dy, x, y):
        return ops.log_softmax_backward(dy, y, -1)


class _Gelu(_Act):
    name = "gelu"
    needs_input = True

    def forward(self, x):
        return ops.gelu(x)

    def backward(self, dy, x, y):
        return ops.gelu_backward(dy, x)


linear = _Act()
relu = _Relu()
sigmoid = _Sigmoid()
tanh = _Tanh()
softmax = _Softmax()
log_softmax = _LogSoftmax()
gelu = _Gelu()

_TABLE = {a.name: a for a in (linear, relu, sigmoid, tanh, softmax, log_softmax, gelu)}


def get(identifier):
    """'relu' / None / an activation object -> the activation object."""
    if identifier is None:
        return linear
    if isinstance(identifier, _Act):
        return identifier
    if isinstance(identifier, str):
        return lookup("activation", identifier, _TABLE)
    raise ValueError(f"Unknown activation {identifier!r}. Valid identifiers: {', '.join(sorted(_TABLE))}")


def serialize(act) -> str:
    return get(act).name
