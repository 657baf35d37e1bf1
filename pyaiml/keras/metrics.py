"""Keras metrics: accuracy (resolved from the loss as Keras does), categorical_accuracy,
sparse_categorical_accuracy, binary_accuracy, and mse/mae. Each metric accumulates over an
epoch (``update_state``, ``result``, ``reset_state``); counts are exact integers or float64.
Tests: tests/test_keras_api.py.
"""
from __future__ import annotations

import numpy as np

from pyaiml.keras._common import lookup


class Metric:
    name = "metric"

    def __init__(self, name=None):
        if name:
            self.name = name
        self.reset_state()

    def reset_state(self):
        self._sum = 0.0
        self._n = 0

    def result(self) -> float:
        return self._sum / self._n if self._n else 0.0

    def update_state(self, y_true, y_pred):
        s, n = self._batch(np.asarray(y_true), np.asarray(y_pred))
        self._sum += s
        self._n += n


class CategoricalAccuracy(Metric):
    name = "categorical_accuracy"

    def _batch(self, y, p):
        return float((y.argmax(-1) == p.argmax(-1)).sum()), int(np.prod(p.shape[:-1]))


class SparseCategoricalAccuracy(Metric):
    name = "sparse_categorical_accuracy"

    def _batch(self, y, p):
        if y.ndim == p.ndim:
            y = y[..., 0]
        return float((y.astype(np.int64) == p.argmax(-1)).sum()), int(np.prod(p.shape[:-1]))


class BinaryAccuracy(Metric):
    name = "binary_accuracy"

    def __init__(self, name=None, threshold=0.5):
        self.threshold = threshold
        super().__init__(name)

    def _batch(self, y, p):
        y = y.reshape(p.shape)
        return float(((p > self.threshold) == (y > 0.5)).sum()), int(p.size)


class MeanSquaredError(Metric):
    name = "mean_squared_error"

    def _batch(self, y, p):
        d = p.astype(np.float64) - y.reshape(p.shape)
        return float((d * d).mean(axis=-1).sum()), int(np.prod(p.shape[:-1])) if p.ndim > 1 else p.size


class MeanAbsoluteError(Metric):
    name = "mean_absolute_error"

    def _batch(self, y, p):
        d = np.abs(p.astype(np.float64) - y.reshape(p.shape))
        return float(d.mean(axis=-1).sum()), int(np.prod(p.shape[:-1])) if p.ndim > 1 else p.size


_TABLE = {
    "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "binary_accuracy": BinaryAccuracy,
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "accuracy": None, "acc": None,
}


def get(identifier, loss=None) -> Metric:
    """Resolve a metric; 'accuracy'/'acc' picks the form matching the loss (as Keras does)."""
    if isinstance(identifier, Metric):
        return identifier
    if not isinstance(identifier, str):
        raise ValueError(f"Unknown metric {identifier!r}. Valid identifiers: {', '.join(sorted(_TABLE))}")
    cls = lookup("metric", identifier, _TABLE)
    if cls is None:
        lname = getattr(loss, "name", "")
        if lname == "sparse_categorical_crossentropy":
            cls = SparseCategoricalAccuracy
        elif lname == "binary_crossentropy":
            cls = BinaryAccuracy
        else:
            cls = CategoricalAccuracy
        return cls(name=identifier.lower())
    return cls(name=identifier.lower())
