"""Keras activations: relu, sigmoid, tanh, softmax, gelu, linear (+ log_softmax), elu, selu,
softplus, softsign, silu (swish), leaky_relu (slope 0.2), relu6, exponential, hard_sigmoid
(relu6(x + 3) / 6, Keras 3's).

Each is an object with ``forward(x) -> y`` on pyaiml.ops (the layers' inference path; their
call() applies the tape's ops, pyaiml/keras/layers.py ``_apply_act``); ``get(identifier)``
resolves strings, None (linear), callables from this module.
The plain functions (``relu(x)``, ...) apply the activation like ``keras.activations.*``.
Tests: tests/test_keras_layers.py.
"""
from __future__ import annotations

import numpy as np

import pyaiml.ops as ops
from pyaiml.keras._common import lookup
from pyaiml.ops._validate import get_check_finite
from pyaiml.ops.activations import softmax_last_unchecked


class _Act:
    name = "linear"

    def forward(self, x):
        return x

    def __call__(self, x):
        return self.forward(np.asarray(x))

    def __repr__(self):
        return f"<activation {self.name}>"

    # One object per activation: the layers test `activation is relu` (the fused conv + ReLU,
    # the inference plans), so a copied model must keep these objects, not copies of them.
    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        return get, (self.name,)


class _Relu(_Act):
    name = "relu"

    def forward(self, x):
        return np.maximum(x, x.dtype.type(0))


class _Sigmoid(_Act):
    name = "sigmoid"

    def forward(self, x):
        return ops.sigmoid(x)


class _Tanh(_Act):
    name = "tanh"

    def forward(self, x):
        return ops.tanh(x)


class _Softmax(_Act):
    name = "softmax"

    def forward(self, x):
        if type(x) is np.ndarray and x.dtype == np.float32 and x.ndim >= 1 and x.size and not get_check_finite():
            # inside predict/evaluate (checks off): ops.softmax's arithmetic without its argument
            # handling, same bits (the mission CNN's head at batch 1: about 10 of its 15 us)
            return softmax_last_unchecked(x)
        return ops.softmax(x, -1)


class _LogSoftmax(_Act):
    name = "log_softmax"

    def forward(self, x):
        return ops.log_softmax(x, -1)


class _Gelu(_Act):
    name = "gelu"

    def forward(self, x):
        return ops.gelu(x)


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805


class _Elementwise(_Act):
    """An activation given by its NumPy formula (inference) and its tape form (training, from
    pyaiml.autograd.functional's primitives, so its gradient is the tape's)."""

    def __init__(self, name, fwd, tape):
        self.name, self._fwd, self.tape = name, fwd, tape

    def forward(self, x):
        return self._fwd(x)


def _t(v, x):
    return x.dtype.type(v) if x.dtype.kind == "f" else v


def _softplus(x):
    return np.logaddexp(_t(0, x), x)


def _np_sigmoid(x):
    return ops.sigmoid(x) if x.dtype in (np.float32, np.float64) else 1 / (1 + np.exp(-x))


elu = _Elementwise("elu", lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, _t(0, x)))), None)
selu = _Elementwise("selu", lambda x: _t(_SELU_SCALE, x) * np.where(
    x > 0, x, _t(_SELU_ALPHA, x) * np.expm1(np.minimum(x, _t(0, x)))), None)
softplus = _Elementwise("softplus", _softplus, None)
softsign = _Elementwise("softsign", lambda x: x / (np.abs(x) + _t(1, x)), None)
silu = _Elementwise("silu", lambda x: x * _np_sigmoid(x), None)
leaky_relu = _Elementwise("leaky_relu", lambda x: np.where(x > 0, x, x * _t(0.2, x)), None)
relu6 = _Elementwise("relu6", lambda x: np.clip(x, _t(0, x), _t(6, x)), None)
exponential = _Elementwise("exponential", np.exp, None)
hard_sigmoid = _Elementwise("hard_sigmoid", lambda x: np.clip(x + _t(3, x), _t(0, x), _t(6, x)) / _t(6, x), None)

linear = _Act()
relu = _Relu()
sigmoid = _Sigmoid()
tanh = _Tanh()
softmax = _Softmax()
log_softmax = _LogSoftmax()
gelu = _Gelu()

_TABLE = {a.name: a for a in (linear, relu, sigmoid, tanh, softmax, log_softmax, gelu, elu, selu, softplus,
                                softsign, silu, leaky_relu, relu6, exponential, hard_sigmoid)}
_TABLE["swish"] = silu  # Keras's other name for it


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
