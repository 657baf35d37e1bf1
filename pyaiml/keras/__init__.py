"""pyaiml.keras: a Keras-compatible training API on pyaiml's own ops.

``from pyaiml.keras.models import Sequential``, ``from pyaiml.keras.layers import Conv2D``,
or ``import pyaiml as tf`` then ``tf.keras.Sequential([...])``. Channels last; float32.
The three ways to build a model: ``Sequential`` (models.py), the functional API (``Input``,
``Model(inputs, outputs)``: functional.py) and subclassing (``Model``/``layers.Layer`` with
``build``/``call``: model.py, layers.py), all trained through the tape (pyaiml/autograd)
that the layers' ``call()`` and ``ops`` (Keras 3's ``keras.ops``) record on.
saving.py holds the file format, serialization.py the class registry.
Tests: tests/test_keras_*.py.
"""
from pyaiml.keras import (activations, callbacks, initializers, layers, losses, metrics, models, ops, optimizers,
                          saving, schedules, utils)
from pyaiml.autograd.tape import Variable
from pyaiml.keras.functional import Functional, Input, KerasTensor
from pyaiml.keras.model import Model
from pyaiml.keras.models import Sequential, load_model
from pyaiml.keras.serialization import register_keras_serializable

models.Model = Model
models.Functional = Functional
saving.register_keras_serializable = register_keras_serializable
utils.register_keras_serializable = register_keras_serializable

optimizers.schedules = schedules

__all__ = ["Sequential", "Model", "Functional", "Input", "KerasTensor", "Variable", "load_model",
           "register_keras_serializable", "activations", "callbacks", "initializers", "layers",
           "losses", "metrics", "models", "ops", "optimizers", "saving", "schedules", "utils"]
