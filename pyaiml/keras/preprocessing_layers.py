"""Keras preprocessing layers on the tape: Normalization, RandomFlip.

What it is. ``Normalization(axis=-1, mean=None, variance=None, invert=False)`` as Keras 3
defines it: per-feature statistics along ``axis`` (the axes kept; every other non-batch axis
and the batch are reduced), learned from data by ``adapt()`` or given as ``mean`` and
``variance``; the output is (x - mean) / max(sqrt(variance), 1e-7), or with ``invert=True``
the inverse, mean + x * max(sqrt(variance), 1e-7). Adapted statistics are two
non-trainable weights (``mean``, ``variance``: get_weights/set_weights and save/load carry
them); given ones are part of the config. The gradient flows to the input through the tape.

``RandomFlip(mode="horizontal_and_vertical", seed=None)``: in training, each image of a batch
(N, H, W, C) (or a single image (H, W, C)) is flipped left-right (mode "horizontal") and/or
up-down ("vertical") with probability 1/2 per direction, drawn per image from the layer's own
generator when ``seed`` is given, else from pyaiml.keras's (``utils.set_random_seed``); at
inference it is the identity. The gradient is the output's, flipped back per image.

Not here: adapting from a tf.data pipeline (an array, or an iterable of arrays that are
concatenated, is taken), ``axis=None`` statistics over the batch only (None means one
scalar mean and variance over everything, as Keras).
Tests: tests/test_keras_normalization.py (against NumPy, torch gradients in float64,
inside models, save/load, errors), tests/test_keras_random_flip.py.
"""
from __future__ import annotations

import numpy as np

from pyaiml.autograd import functional as F
from pyaiml.autograd.tape import value_of
from pyaiml.keras import layers as _layers
from pyaiml.keras._common import rng
from pyaiml.keras.layers import InputSpecError, Layer, _shape_str

_layers.BUILTIN_MODULES.add(__name__)

_EPS = 1e-7  # Keras's backend.epsilon(): the smallest standard deviation divided by


class Normalization(Layer):
    """Feature-wise standardisation with statistics from ``adapt()`` or given."""

    supports_masking = True

    def __init__(self, axis=-1, mean=None, variance=None, invert=False, **kw):
        super().__init__(**kw)
        if axis is None:
            axis = ()
        elif isinstance(axis, (int, np.integer)):
            axis = (int(axis),)
        elif isinstance(axis, (tuple, list)) and all(isinstance(a, (int, np.integer)) for a in axis):
            axis = tuple(int(a) for a in axis)
        else:
            raise TypeError(f"Normalization: axis must be None, an int or a tuple of ints. Received {axis!r}")
        if 0 in axis:
            raise ValueError(f"Normalization: axis may not include the batch axis 0. Received {axis}")
        if (mean is None) != (variance is None):
            raise ValueError("Normalization: mean and variance must be given together (or neither, and adapt() "
                             f"called). Received mean={mean!r}, variance={variance!r}")
        self.axis = axis
        self.invert = bool(invert)
        self.input_mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.input_variance = None if variance is None else np.asarray(variance, dtype=np.float64)
        if self.input_variance is not None and (self.input_variance < 0).any():
            raise ValueError(f"Normalization: variance must be >= 0. Received {variance!r}")

    # axes of the full (batch-included) input that are kept
    def _keep(self, rank):
        out = []
        for a in self.axis:
            b = a + rank if a < 0 else a
            if not 1 <= b < rank:
                raise InputSpecError(f"{self.name}: Normalization axis {a} is out of range for inputs of rank {rank} "
                                     f"(with the batch); the batch axis 0 is never kept")
            out.append(b)
        return tuple(sorted(set(out)))

    def build(self, input_shape):
        s = tuple(input_shape)
        keep = self._keep(len(s) + 1)
        stat_shape = tuple(s[a - 1] for a in keep)
        if any(d is None for d in stat_shape):
            raise InputSpecError(f"{self.name}: Normalization needs known sizes on the kept axes {keep}. Received "
                                 f"input shape {_shape_str(s)}")
        self._stat_shape = stat_shape
        self._bshape = tuple(s[i - 1] if i in keep else 1 for i in range(1, len(s) + 1))
        if self.input_mean is None:
            self.add_weight("mean", stat_shape, "zeros", trainable=False)
            self.add_weight("variance", stat_shape, "ones", trainable=False)
        else:
            try:
                self._mean_c = np.broadcast_to(self.input_mean, stat_shape).astype(np.float32)
                self._var_c = np.broadcast_to(self.input_variance, stat_shape).astype(np.float32)
            except ValueError:
                raise ValueError(f"{self.name}: mean and variance of shapes {self.input_mean.shape} and "
                                 f"{self.input_variance.shape} do not broadcast to the statistics' shape "
                                 f"{stat_shape} (the kept axes {keep})") from None
        super().build(s)

    def adapt(self, data, batch_size=None, steps=None):
        """Set mean and variance from `data`: an array (batch first) or an iterable of arrays."""
        if self.input_mean is not None:
            raise ValueError(f"{self.name}: Normalization was given mean and variance; adapt() would overwrite them. "
                             "Create the layer without them to adapt it")
        if isinstance(data, np.ndarray) or np.isscalar(data) or (
                isinstance(data, (list, tuple)) and data and not hasattr(data[0], "shape")):
            x = np.asarray(data)
        else:
            parts = [np.asarray(value_of(b)) for b in data]
            if not parts:
                raise ValueError(f"{self.name}: adapt() received no data")
            x = np.concatenate(parts, axis=0)
        if x.dtype.kind not in "fiub":
            raise TypeError(f"{self.name}: adapt() needs numeric data. Received dtype {x.dtype}")
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"{self.name}: adapt() needs a non-empty batch of data. Received shape {x.shape}")
        if x.ndim == 1:  # Keras: a flat array is a batch of scalars
            x = x[:, None]
        if not self.built:
            self.build(x.shape[1:])
        elif tuple(x.shape[1:]) != tuple(self.input_shape):
            raise InputSpecError(f"{self.name}: adapt() data of shape {_shape_str(x.shape[1:])} does not "
                                 f"fit the layer built for {_shape_str(tuple(self.input_shape))}")
        keep = self._keep(x.ndim)
        red = tuple(i for i in range(x.ndim) if i not in keep)
        x64 = x.astype(np.float64)
        self.mean[...] = x64.mean(axis=red).reshape(self._stat_shape)
        self.variance[...] = x64.var(axis=red).reshape(self._stat_shape)

    def _stats(self):
        if self.input_mean is not None:
            return self._mean_c, self._var_c
        return self.mean, self.variance

    def call(self, inputs, training=None):
        dt = value_of(inputs).dtype
        if dt.kind != "f":
            dt = np.dtype(np.float32)
            inputs = F.cast(inputs, dt)
        m, v = self._stats()
        m = m.reshape(self._bshape).astype(dt)
        sd = np.maximum(np.sqrt(v.astype(np.float64)), _EPS).reshape(self._bshape).astype(dt)
        if self.invert:
            return F.add(F.multiply(inputs, sd), m)
        return F.divide(F.subtract(inputs, m), sd)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        cfg = {**super().get_config(), "axis": list(self.axis) if len(self.axis) != 1 else self.axis[0],
               "invert": self.invert}
        if not self.axis:
            cfg["axis"] = None
        if self.input_mean is not None:
            cfg["mean"] = self.input_mean.tolist()
            cfg["variance"] = self.input_variance.tolist()
        return cfg


class RandomFlip(Layer):
    """Random left-right / up-down flips of images in training (channels last)."""

    _MODES = ("horizontal", "vertical", "horizontal_and_vertical")

    def __init__(self, mode="horizontal_and_vertical", seed=None, **kw):
        super().__init__(**kw)
        if mode not in self._MODES:
            raise ValueError(f"RandomFlip: mode must be one of {', '.join(self._MODES)}. Received {mode!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"RandomFlip: seed must be an int or None. Received {type(seed).__name__}")
        self.mode, self.seed = mode, seed
        self._rng = np.random.default_rng(seed) if seed is not None else None

    def call(self, inputs, training=None):
        shape = value_of(inputs).shape
        if len(shape) not in (3, 4):
            raise InputSpecError(f"{self.name}: RandomFlip takes images (batch, height, width, channels) or "
                                 f"(height, width, channels). Received shape {_shape_str(shape)}")
        if not training:
            return inputs
        r = self._rng if self._rng is not None else rng()
        n = shape[0] if len(shape) == 4 else 1
        x = inputs
        for axis, name in ((-2, "horizontal"), (-3, "vertical")):  # width, height
            if name not in self.mode:
                continue
            flip = r.random(n) < 0.5
            if not flip.any():
                continue
            index = [slice(None)] * len(shape)
            index[axis] = slice(None, None, -1)
            chosen = flip.reshape((n, 1, 1, 1) if len(shape) == 4 else (1, 1, 1))
            x = F.where(chosen, F.getitem(x, tuple(index)), x)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "seed": self.seed}


CLASSES = (Normalization, RandomFlip)
for _c in CLASSES:
    _layers._LAYERS[_c.__name__] = _c
