"""Keras losses with their gradient: MeanSquaredError, CategoricalCrossentropy,
SparseCategoricalCrossentropy, BinaryCrossentropy (from logits or from probabilities).

``loss.value_and_grad(y_true, y_pred) -> (mean loss (float), dL/dy_pred)`` (mean over the
batch, Keras's "sum_over_batch_size"). From logits: log-softmax / softplus forms, stable
for any magnitude. From probabilities (Keras's default): probabilities are clipped to
[1e-7, 1 - 1e-7] as Keras does (categorical: rescaled to sum 1 first), and the gradient
is that of the clipped expression. When the model's last layer ends in softmax (sigmoid)
and the loss is categorical (binary) cross-entropy from probabilities, the model fuses
them: it feeds the pre-activation logits to ``value_and_grad_logits``, whose value equals
the probability form up to the clipping and whose gradient is (softmax(z) - y)/N.
Label checks: one-hot vs sparse mismatches raise a ValueError that says which loss to use.
Tests: tests/test_keras_losses.py (values and gradients against torch).
"""
from __future__ import annotations

import numpy as np

import pyaiml.ops as ops
from pyaiml.keras._common import lookup

EPS = 1e-7


def _f(a, like):
    return np.asarray(a, dtype=like.dtype) if np.asarray(a).dtype != like.dtype else np.asarray(a)


def _log_softmax_exp(z):
    """(log_softmax(z), softmax(z)) over the last axis, sharing the work (stable: the row
    maximum is subtracted). A handful of NumPy calls on a (32, 10) batch: the op-level
    log_softmax + exp took ~0.1 ms of a 3-10 ms training step in validation and copies."""
    ls = z - z.max(axis=-1, keepdims=True)
    p = np.exp(ls)
    s = p.sum(axis=-1, keepdims=True)
    ls -= np.log(s)
    p /= s
    return ls, p


class Loss:
    name = "loss"
    fusable_activation = None  # 'softmax' / 'sigmoid' when value_and_grad_logits exists

    def __init__(self, from_logits=False, name=None):
        self.from_logits = bool(from_logits)
        if name:
            self.name = name

    def __call__(self, y_true, y_pred):
        from pyaiml.autograd.tape import Tensor

        if isinstance(y_pred, Tensor):  # on a GradientTape: the mean loss as a recorded scalar
            from pyaiml.autograd.functional import loss

            return loss(self, y_true, y_pred)
        y_pred = np.asarray(y_pred)
        if y_pred.dtype.kind != "f":
            y_pred = y_pred.astype(np.float32)
        return self.value_and_grad(y_true, y_pred)[0]

    def check_labels(self, y, out_shape):
        """Validate labels against the model's output shape (without batch)."""

    def get_config(self):
        return {"name": self.name, "from_logits": self.from_logits}


class MeanSquaredError(Loss):
    name = "mean_squared_error"

    def __init__(self, name=None):
        super().__init__(False, name)

    def check_labels(self, y, out_shape):
        if tuple(y.shape[1:]) != tuple(out_shape) and not (len(out_shape) == 1 and out_shape[0] == 1 and y.ndim == 1):
            raise ValueError(f"mean_squared_error: y must have the model's output shape (None, "
                             f"{', '.join(map(str, out_shape))}). Received y of shape {y.shape}")

    def value_and_grad(self, y_true, y_pred):
        y = _f(y_true, y_pred).reshape(y_pred.shape)
        d = y_pred - y
        n = d.shape[0] if d.ndim else 1
        per = d.size // max(n, 1)
        val = float(np.mean(d.astype(np.float64) ** 2))
        return val, d * d.dtype.type(2.0 / (n * per))

    def get_config(self):
        return {"name": self.name}


def _onehot_check(y, out_shape, name):
    if y.ndim == len(out_shape) and len(out_shape) >= 1 and out_shape[-1] > 1:
        raise ValueError(
            f"{name}: expects one-hot labels of shape (None, {', '.join(map(str, out_shape))}), but y has shape "
            f"{y.shape}, which looks like integer class ids. Use loss='sparse_categorical_crossentropy', or "
            f"convert with pyaiml.keras.utils.to_categorical(y, {out_shape[-1]}).")
    if tuple(y.shape[1:]) != tuple(out_shape):
        raise ValueError(f"{name}: y must have shape (None, {', '.join(map(str, out_shape))}). Received {y.shape}")


class CategoricalCrossentropy(Loss):
    name = "categorical_crossentropy"
    fusable_activation = "softmax"

    def check_labels(self, y, out_shape):
        _onehot_check(y, out_shape, self.name)

    def value_and_grad(self, y_true, y_pred):
        y = _f(y_true, y_pred)
        if self.from_logits:
            return self.value_and_grad_logits(y, y_pred)
        n = max(1, y_pred.size // max(1, y_pred.shape[-1]))  # rows: the loss is their mean
        s = y_pred.sum(axis=-1, keepdims=True)
        p = y_pred / s
        pc = np.clip(p, EPS, 1 - EPS)
        val = float(-(y * np.log(pc)).sum(axis=-1, dtype=np.float64).mean())
        # d/dp of -sum y log(clip(p)); then through p = y_pred / s
        gp = np.where((p > EPS) & (p < 1 - EPS), -y / pc, 0).astype(y_pred.dtype) / y_pred.dtype.type(n)
        g = (gp - (gp * p).sum(axis=-1, keepdims=True)) / s
        return val, g

    def value_and_grad_logits(self, y, z):
        y = _f(y, z)
        n = max(1, z.size // max(1, z.shape[-1]))  # rows (batch x time steps): the loss is their mean
        if z.size == 0 or y.shape != z.shape:
            ls = ops.log_softmax(z, -1)
            val = float(-(y * ls).sum(axis=-1, dtype=np.float64).mean())
            return val, (np.exp(ls) * y.sum(axis=-1, keepdims=True) - y) / z.dtype.type(n)
        ls, g = _log_softmax_exp(z)
        val = -float((y * ls).sum(dtype=np.float64)) / n  # mean over rows
        g *= y.sum(axis=-1, keepdims=True)
        g -= y
        g /= z.dtype.type(n)
        return val, g


class SparseCategoricalCrossentropy(Loss):
    name = "sparse_categorical_crossentropy"
    fusable_activation = "softmax"

    def check_labels(self, y, out_shape):
        if y.ndim == len(out_shape) + 1 and y.shape[-1] == out_shape[-1] and out_shape[-1] > 1:
            raise ValueError(
                f"{self.name}: expects integer class ids of shape (None,{' ' + ', '.join(map(str, out_shape[:-1])) if len(out_shape) > 1 else ''}), "
                f"but y has shape {y.shape}, which looks one-hot encoded. Use loss='categorical_crossentropy', "
                "or pass y.argmax(axis=-1).")
        yy = y[..., 0] if (y.ndim == len(out_shape) + 1 and y.shape[-1] == 1) else y
        if tuple(yy.shape[1:]) != tuple(out_shape[:-1]):
            raise ValueError(f"{self.name}: y must have shape (None, {', '.join(map(str, out_shape[:-1]))}) "
                             f"of class ids. Received {y.shape}")
        if yy.dtype.kind == "f" and not np.all(yy == np.round(yy)):
            raise ValueError(f"{self.name}: labels must be integer class ids. Received non-integer values")
        if yy.size and (yy.min() < 0 or yy.max() >= out_shape[-1]):
            raise ValueError(f"{self.name}: class ids must be in [0, {out_shape[-1]}). "
                             f"Received values in [{yy.min()}, {yy.max()}]")

    def _ids(self, y_true, y_pred):
        y = np.asarray(y_true)
        if y.ndim == y_pred.ndim:
            y = y[..., 0]
        return y.astype(np.int64).reshape(-1)

    def value_and_grad(self, y_true, y_pred):
        ids = self._ids(y_true, y_pred)
        C = y_pred.shape[-1]
        if self.from_logits:
            return self.value_and_grad_logits(y_true, y_pred)
        p2 = y_pred.reshape(-1, C)
        n = p2.shape[0]
        s = p2.sum(axis=-1, keepdims=True)
        p = p2 / s
        r = np.arange(n)
        pt = p[r, ids]
        ptc = np.clip(pt, EPS, 1 - EPS)
        val = float(-np.log(ptc.astype(np.float64)).mean())
        gp = np.zeros_like(p)
        gp[r, ids] = np.where((pt > EPS) & (pt < 1 - EPS), -1.0 / ptc, 0) / n
        g = (gp - (gp * p).sum(axis=-1, keepdims=True)) / s
        return val, g.reshape(y_pred.shape)

    def value_and_grad_logits(self, y_true, z):
        ids = self._ids(y_true, z)
        C = z.shape[-1]
        z2 = z.reshape(-1, C)
        n = z2.shape[0]
        ls = ops.log_softmax(z2, -1)
        r = np.arange(n)
        val = float(-ls[r, ids].astype(np.float64).mean())
        g = np.exp(ls)
        g[r, ids] -= 1
        g /= z.dtype.type(n)
        return val, g.reshape(z.shape)


class BinaryCrossentropy(Loss):
    name = "binary_crossentropy"
    fusable_activation = "sigmoid"

    def check_labels(self, y, out_shape):
        shp = tuple(y.shape[1:])
        if shp != tuple(out_shape) and not (y.ndim == 1 and tuple(out_shape) == (1,)):
            raise ValueError(f"{self.name}: y must have the model's output shape (None, "
                             f"{', '.join(map(str, out_shape))}). Received {y.shape}")

    def value_and_grad(self, y_true, y_pred):
        y = _f(y_true, y_pred).reshape(y_pred.shape)
        if self.from_logits:
            return self.value_and_grad_logits(y, y_pred)
        N = y_pred.size
        pc = np.clip(y_pred, EPS, 1 - EPS)
        val = float(-(y * np.log(pc) + (1 - y) * np.log(1 - pc)).astype(np.float64).mean())
        inside = (y_pred > EPS) & (y_pred < 1 - EPS)
        g = np.where(inside, (pc - y) / (pc * (1 - pc)), 0).astype(y_pred.dtype) / y_pred.dtype.type(N)
        return val, g

    def value_and_grad_logits(self, y, z):
        y = _f(y, z).reshape(z.shape)
        N = z.size
        # max(z, 0) - z*y + log(1 + exp(-|z|))
        val = float((np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))).astype(np.float64).mean())
        g = (ops.sigmoid(z) - y) / z.dtype.type(N)
        return val, g


_TABLE = {
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError, "meansquarederror": MeanSquaredError,
    "categorical_crossentropy": CategoricalCrossentropy, "categoricalcrossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "sparsecategoricalcrossentropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy, "binarycrossentropy": BinaryCrossentropy,
}


def get(identifier) -> Loss:
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        return lookup("loss", identifier, _TABLE)()
    if isinstance(identifier, dict):
        cls = lookup("loss", identifier["class_name"], _TABLE)
        return cls(**identifier.get("config", {}))
    raise ValueError(f"Unknown loss {identifier!r}. Valid identifiers: {', '.join(sorted(_TABLE))}")


def serialize(loss: Loss) -> dict:
    return {"class_name": loss.name, "config": loss.get_config()}


def mean_squared_error(y_true, y_pred):
    return MeanSquaredError()(y_true, y_pred)


def categorical_crossentropy(y_true, y_pred, from_logits=False):
    return CategoricalCrossentropy(from_logits)(y_true, y_pred)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False):
    return SparseCategoricalCrossentropy(from_logits)(y_true, y_pred)


def binary_crossentropy(y_true, y_pred, from_logits=False):
    return BinaryCrossentropy(from_logits)(y_true, y_pred)


mse = mean_squared_error
