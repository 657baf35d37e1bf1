"""Keras weight initializers: glorot_uniform (Keras's default for kernels), glorot_normal,
he_uniform, he_normal, lecun_uniform, lecun_normal, zeros, ones, random_uniform
('uniform', +-0.05), random_normal ('normal', std 0.05).

Shapes are Keras layouts (Dense (in, out), Conv2D (kh, kw, cin, cout)); fans are computed
as Keras does (receptive field times channels). Draws come from the generator that
``pyaiml.keras.utils.set_random_seed`` seeds. Tests: tests/test_keras_api.py.
"""
from __future__ import annotations

import numpy as np

from pyaiml.keras._common import FLOATX, lookup, rng


def _fans(shape):
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    rf = int(np.prod(shape[:-2]))
    return shape[-2] * rf, shape[-1] * rf


def _variance_scaling(scale, mode, dist):
    def init(shape, dtype=FLOATX):
        fi, fo = _fans(shape)
        n = {"fan_in": fi, "fan_out": fo, "fan_avg": (fi + fo) / 2}[mode]
        var = scale / max(1.0, n)
        if dist == "uniform":
            lim = np.sqrt(3.0 * var)
            return rng().uniform(-lim, lim, size=shape).astype(dtype)
        # Keras's truncated normal: std corrected for truncation at 2 sigma
        std = np.sqrt(var) / 0.87962566103423978
        out = rng().standard_normal(size=shape)
        bad = np.abs(out) > 2
        while bad.any():
            out[bad] = rng().standard_normal(size=int(bad.sum()))
            bad = np.abs(out) > 2
        return (out * std).astype(dtype)

    return init


def zeros(shape, dtype=FLOATX):
    return np.zeros(shape, dtype=dtype)


def ones(shape, dtype=FLOATX):
    return np.ones(shape, dtype=dtype)


def random_uniform(shape, dtype=FLOATX):
    return rng().uniform(-0.05, 0.05, size=shape).astype(dtype)


def random_normal(shape, dtype=FLOATX):
    return (rng().standard_normal(size=shape) * 0.05).astype(dtype)


_TABLE = {
    "glorot_uniform": _variance_scaling(1.0, "fan_avg", "uniform"),
    "glorot_normal": _variance_scaling(1.0, "fan_avg", "normal"),
    "he_uniform": _variance_scaling(2.0, "fan_in", "uniform"),
    "he_normal": _variance_scaling(2.0, "fan_in", "normal"),
    "lecun_uniform": _variance_scaling(1.0, "fan_in", "uniform"),
    "lecun_normal": _variance_scaling(1.0, "fan_in", "normal"),
    "zeros": zeros,
    "ones": ones,
    "uniform": random_uniform,
    "random_uniform": random_uniform,
    "normal": random_normal,
    "random_normal": random_normal,
}


def get(identifier):
    if callable(identifier):
        return identifier
    return lookup("initializer", identifier, _TABLE)
