"""pyaiml.keras: a Keras-compatible training API on pyaiml's own ops.

``from pyaiml.keras.models import Sequential``, ``from pyaiml.keras.layers import Conv2D``,
or ``import pyaiml as tf`` then ``tf.keras.Sequential([...])``. Channels last; float32;
Sequential models. See models.py for the training loop, layers.py for the layer contract,
saving.py for the file format. Tests: tests/test_keras_*.py.
"""
from pyaiml.keras import (activations, callbacks, initializers, layers, losses, metrics, models, ops, optimizers,
                          saving, schedules, utils)
from pyaiml.keras.layers import Input
from pyaiml.keras.models import Model, Sequential, load_model

optimizers.schedules = schedules

__all__ = ["Sequential", "Model", "Input", "load_model", "activations", "callbacks", "initializers", "layers",
           "losses", "metrics", "models", "ops", "optimizers", "saving", "schedules", "utils"]
