"""pyaiml.autograd: a small reverse-mode automatic differentiation on NumPy arrays.

``GradientTape`` records the ops of pyaiml.autograd.functional (the primitives under
``pyaiml.keras.ops`` and every Keras layer's ``call()``); ``Variable`` holds a weight;
``Tensor`` is a recorded value. See tape.py for the semantics, functional.py for the ops,
per_example.py for the per-example gradient rules behind ``GradientTape.clipped_gradient``
(DP-SGD). Not here: higher-order derivatives. Tests: tests/test_keras_tape.py,
tests/test_autograd_per_example.py.
"""
from pyaiml.autograd import functional
from pyaiml.autograd.tape import (
    GradientTape,
    Tensor,
    Variable,
    calling,
    record,
    recording,
    value_of,
)

__all__ = ["GradientTape", "Tensor", "Variable", "calling", "functional", "record", "recording", "value_of"]
