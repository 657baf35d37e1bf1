"""Keras callbacks: History, EarlyStopping (restore_best_weights always honoured, also
when training ends without stopping early), ModelCheckpoint, LambdaCallback,
TerminateOnNaN, ReduceLROnPlateau, CSVLogger, and the progress display (ProgbarLogger: one line per epoch when stdout
is not a terminal, or with verbose=2; a live bar throttled to ~10 updates/s on a TTY).
Tests: tests/test_keras_api.py, tests/test_keras_terminate_on_nan.py.
"""
from __future__ import annotations

import sys
import time

import numpy as np


class Callback:
    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None): ...
    def on_train_end(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_train_batch_begin(self, batch, logs=None): ...
    def on_train_batch_end(self, batch, logs=None): ...
    def on_test_begin(self, logs=None): ...
    def on_test_end(self, logs=None): ...
    def on_predict_begin(self, logs=None): ...
    def on_predict_end(self, logs=None): ...


class CallbackList:
    def __init__(self, callbacks, model, params):
        self.callbacks = list(callbacks)
        for c in self.callbacks:
            c.set_model(model)
            c.set_params(params)

    def __getattr__(self, name):
        if not name.startswith("on_"):
            raise AttributeError(name)

        def call(*a, **k):
            for c in self.callbacks:
                getattr(c, name)(*a, **k)
        return call


class History(Callback):
    """``history.history`` maps each metric name to its per-epoch values; ``epoch`` lists
    the epoch indices. A fit resumed with ``initial_epoch`` (after load_model) continues
    the same lists."""

    def __init__(self):
        super().__init__()
        self.epoch: list[int] = []
        self.history: dict[str, list] = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(int(epoch))
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))

    def to_json(self):
        return {"epoch": self.epoch, "history": self.history}

    @classmethod
    def from_json(cls, d):
        h = cls()
        h.epoch = [int(e) for e in d.get("epoch", [])]
        h.history = {k: [float(x) for x in v] for k, v in d.get("history", {}).items()}
        return h


def _fmt(logs):
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())


class ProgbarLogger(Callback):
    def __init__(self, verbose=1, stream=None):
        super().__init__()
        self.stream = stream or sys.stdout
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.live = verbose == 1 and tty
        self.verbose = verbose

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        self._last = 0.0
        self._epoch = epoch
        if self.live:
            self.stream.write(f"Epoch {epoch + 1}/{self.params.get('epochs')}\n")

    def on_train_batch_end(self, batch, logs=None):
        if not self.live:
            return
        now = time.perf_counter()
        steps = self.params.get("steps")
        if now - self._last < 0.1 and batch + 1 != steps:
            return
        self._last = now
        n = 30
        done = int(n * (batch + 1) / steps) if steps else n
        bar = "=" * max(done - 1, 0) + (">" if done < n else "=") + "." * (n - done)
        self.stream.write(f"\r{batch + 1}/{steps} [{bar}] - {_fmt(logs or {})}")
        self.stream.flush()

    def on_epoch_end(self, epoch, logs=None):
        dt = time.perf_counter() - self._t0
        steps = self.params.get("steps")
        msg = f"{steps}/{steps} - {dt:.1f}s - {_fmt(logs or {})}"
        if self.live:
            self.stream.write("\r" + msg + "\n")
        else:
            self.stream.write(f"Epoch {epoch + 1}/{self.params.get('epochs')} - {msg}\n")
        self.stream.flush()


class EarlyStopping(Callback):
    """Stop when ``monitor`` stops improving for ``patience`` epochs. With
    restore_best_weights=True the best epoch's weights are restored when training ends,
    whether it stopped early or ran all epochs."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0, mode="auto", baseline=None,
                 restore_best_weights=False, start_from_epoch=0):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'auto', 'min' or 'max'. Received {mode!r}")
        self.monitor, self.min_delta, self.patience = monitor, abs(float(min_delta)), int(patience)
        self.verbose, self.baseline, self.restore_best_weights = verbose, baseline, bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)
        if mode == "auto":
            mode = "max" if ("acc" in monitor or monitor.endswith("auc")) else "min"
        self.mode = mode

    def _better(self, a, b):
        if b is None:
            return True
        return a < b - self.min_delta if self.mode == "min" else a > b + self.min_delta

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = self.baseline
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        v = (logs or {}).get(self.monitor)
        if v is None:
            avail = ", ".join(sorted(logs or {}))
            raise ValueError(f"EarlyStopping: monitor {self.monitor!r} is not among the logged metrics ({avail})")
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._better(v, self.best):
            self.best = v
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._better(v, self.baseline) or v == self.baseline:
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)
        if self.stopped_epoch and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")


class ModelCheckpoint(Callback):
    """Save the model (or only its weights) after each epoch; ``filepath`` may contain
    ``{epoch}`` and log names, e.g. ``"ckpt-{epoch:02d}-{val_loss:.3f}.keras"``. Full saves
    carry the optimizer state and the History, so ``load_model`` + ``fit(initial_epoch=...)``
    resumes training. ``key``: encrypt every checkpoint (see ``Sequential.save``)."""

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch", initial_value_threshold=None, key=None):
        super().__init__()
        self.key = key
        if save_freq != "epoch":
            raise ValueError(f"ModelCheckpoint: only save_freq='epoch' is supported. Received {save_freq!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"ModelCheckpoint: mode must be 'auto', 'min' or 'max'. Received {mode!r}")
        self.filepath, self.monitor, self.verbose = str(filepath), monitor, verbose
        self.save_best_only, self.save_weights_only = bool(save_best_only), bool(save_weights_only)
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self.mode = mode
        self.best = initial_value_threshold

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            v = logs.get(self.monitor)
            if v is None:
                raise ValueError(f"ModelCheckpoint: monitor {self.monitor!r} is not among the logged metrics "
                                 f"({', '.join(sorted(logs))})")
            if self.best is not None and not (v < self.best if self.mode == "min" else v > self.best):
                return
            self.best = v
        if self.save_weights_only:
            self.model.save_weights(path, key=self.key)
        else:
            self.model._save_during_fit(path, epoch, logs, key=self.key)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved model to {path}")


class LambdaCallback(Callback):
    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None, on_train_end=None,
                 on_train_batch_begin=None, on_train_batch_end=None, on_batch_begin=None, on_batch_end=None, **kw):
        super().__init__()
        if kw:
            raise TypeError(f"LambdaCallback: unexpected keyword argument(s) {sorted(kw)}")
        on_train_batch_begin = on_train_batch_begin or on_batch_begin
        on_train_batch_end = on_train_batch_end or on_batch_end
        for n, f in (("on_epoch_begin", on_epoch_begin), ("on_epoch_end", on_epoch_end),
                     ("on_train_begin", on_train_begin), ("on_train_end", on_train_end),
                     ("on_train_batch_begin", on_train_batch_begin), ("on_train_batch_end", on_train_batch_end)):
            if f is not None:
                if n in ("on_train_begin", "on_train_end"):
                    setattr(self, n, lambda logs=None, f=f: f(logs))
                else:
                    setattr(self, n, lambda i, logs=None, f=f: f(i, logs))


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


def non_finite_loss(model, cl, lv, epoch, b, steps) -> bool:
    """fit's rule for a batch loss ``lv``: False when finite; with a TerminateOnNaN among the
    callbacks, hand it the loss, stop training and return True (the caller ends the epoch);
    otherwise raise NonFiniteLossError."""
    if np.isfinite(lv):
        return False
    if any(isinstance(c, TerminateOnNaN) for c in cl.callbacks):
        cl.on_train_batch_end(b, {"loss": lv})  # Keras: the callback stops training
        model.stop_training = True
        return True
    raise NonFiniteLossError(
        f"fit: the loss became {lv} at epoch {epoch + 1}, batch {b + 1} (of {steps}); training "
        "stopped. Lower the learning rate, scale the inputs, or check the labels.")


class TerminateOnNaN(Callback):
    """Sets ``model.stop_training`` when a batch's logged loss is NaN or infinite. Without it
    pyaiml's ``fit`` raises NonFiniteLossError on such a loss; with it, ``fit`` hands the
    loss to this callback and stops as Keras does (the non-finite step's update is not
    applied), returning the History so far."""

    def on_train_batch_end(self, batch, logs=None):
        v = (logs or {}).get("loss")
        if v is not None and not np.isfinite(v):
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


class ReduceLROnPlateau(Callback):
    """Multiply the optimizer's learning rate by ``factor`` when ``monitor`` has not improved
    (by more than ``min_delta``) for ``patience`` epochs; then wait ``cooldown`` epochs; never
    below ``min_lr``. Logs the current rate as ``learning_rate``."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0, **kw):
        super().__init__()
        if kw:
            raise TypeError(f"ReduceLROnPlateau: unexpected keyword argument(s) {sorted(kw)}")
        if not 0 < float(factor) < 1:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1). Received {factor!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'auto', 'min' or 'max'. Received {mode!r}")
        self.monitor, self.factor, self.patience = monitor, float(factor), int(patience)
        self.verbose, self.min_delta, self.cooldown, self.min_lr = verbose, abs(float(min_delta)), int(cooldown), \
            float(min_lr)
        self.mode = ("max" if "acc" in monitor else "min") if mode == "auto" else mode

    def on_train_begin(self, logs=None):
        self.best, self.wait, self.cooldown_counter = None, 0, 0
        if not isinstance(self.model.optimizer.learning_rate, float):
            raise TypeError("ReduceLROnPlateau: the optimizer's learning_rate is a schedule; the callback needs a "
                             "constant rate to reduce")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        opt = self.model.optimizer
        v = logs.get(self.monitor)
        if v is None:
            raise ValueError(f"ReduceLROnPlateau: monitor {self.monitor!r} is not among the logged metrics "
                             f"({', '.join(sorted(logs))})")
        better = self.best is None or (v < self.best - self.min_delta if self.mode == "min"
                                       else v > self.best + self.min_delta)
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if better:
            self.best, self.wait = v, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience and opt.learning_rate > self.min_lr:
                new = max(opt.learning_rate * self.factor, self.min_lr)
                if self.verbose:
                    print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new:.4g}.")
                opt.learning_rate = new
                self.cooldown_counter, self.wait = self.cooldown, 0
        logs["learning_rate"] = opt.learning_rate


class CSVLogger(Callback):
    """Write one row per epoch (``epoch`` then the logs, in the first epoch's key order) to a
    CSV file; ``append=True`` continues an existing file without repeating the header."""

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename, self.sep, self.append = str(filename), separator, bool(append)
        self.keys = None

    def on_train_begin(self, logs=None):
        import os

        exists = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        self._f = open(self.filename, "a" if self.append else "w", encoding="utf-8")  # noqa: SIM115 - closed at train end
        self._header = not exists
        self.keys = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = list(logs)
            if self._header:
                self._f.write(self.sep.join(["epoch", *self.keys]) + "\n")
        self._f.write(self.sep.join([str(epoch)] + [repr(float(logs[k])) if k in logs else "" for k in self.keys])
                      + "\n")
        self._f.flush()

    def on_train_end(self, logs=None):
        if getattr(self, "_f", None) is not None:
            self._f.close()
            self._f = None
