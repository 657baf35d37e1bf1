"""Saving and loading Sequential models: a documented, versioned, non-pickle format.

File format ``pyaiml.keras`` version 1: one ZIP archive (any file name; ``.keras`` is
customary) holding
  - ``metadata.json``: {"format": "pyaiml.keras", "format_version": 1, "pyaiml_version": ...}
  - ``config.json``: {"model": {"class_name": "Sequential", "config": {name, input_shape,
    layers: [{"class_name", "config"}, ...]}}, "compile": {optimizer, loss, metrics} or null}
    Other models (pyaiml/keras/serialization.py): "class_name" "Functional" with the graph's
    layers and nodes, or a registered subclass ("package>Name") with its get_config() and
    "build_input_shape"; "compile" then also holds "loss_weights", and loss / metrics may be
    lists or dicts by output name.
  - ``weights.npz``: every weight in Keras layout, key ``"{layer:03d}/{index:02d}"``
    (layers in model order, weights in get_weights order); other models: ``"{index:04d}"``
    in ``model.get_weights()`` order; read with allow_pickle=False
  - ``optimizer.npz`` (when compiled and trained): ``iterations`` and slot arrays
    ``"{param}/{slot}"``
  - ``history.json``: {"epoch": [...], "history": {name: [...]}} so that
    ``fit(initial_epoch=...)`` after loading continues the History.
Weights-only files (``save_weights``) are a plain ``.npz`` with the same weight keys.

Writes are atomic: the archive is written to a temporary file in the target directory,
flushed and fsynced, then renamed over the target; a failure leaves any previous file
intact. Loading reads the archive with pyaiml._io (declared sizes checked against the file
before anything is allocated, CRCs, member count), checks every part (JSON objects, weights
of the architecture's number, shapes and float dtypes, optimizer state, history) and raises
``ValueError`` naming the file for anything corrupted, truncated, inconsistent or from a
newer format version.
Not checked before allocating: the layer sizes in config.json (the layers allocate their
weights when the model is built from it).
Tests: tests/test_keras_saving.py, tests/test_io_corrupt_files.py.
"""
from __future__ import annotations

import json
import os
import re
import zipfile

import numpy as np

from pyaiml._io import CorruptFileError, atomic_write, npz_bytes, read_npz, zip_members

FORMAT = "pyaiml.keras"
FORMAT_VERSION = 1


def _atomic_write(path: str, write_fn, overwrite=True, key=None, inner="keras"):
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"save: {path} exists and overwrite=False")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise FileNotFoundError(f"save: directory {d} does not exist")
    atomic_write(path, write_fn, suffix=".pyaiml", fsync=True, key=key, inner=inner)


def _npz_bytes(arrays: dict) -> bytes:
    return npz_bytes(**arrays)


def _weight_arrays(model) -> dict:
    if not getattr(model, "_is_sequential", False):
        return {f"{i:04d}": w for i, w in enumerate(model.get_weights())}
    out = {}
    for i, layer in enumerate(model._layers):
        for j, w in enumerate(layer.get_weights()):
            out[f"{i:03d}/{j:02d}"] = w
    return out


def _ser_loss(arg):
    from pyaiml.keras import losses

    if isinstance(arg, dict):
        return {k: _ser_loss(v) for k, v in arg.items()}
    if isinstance(arg, (list, tuple)):
        return [_ser_loss(v) for v in arg]
    return arg if isinstance(arg, str) else losses.serialize(losses.get(arg))


def _ser_metrics(arg):
    if isinstance(arg, dict):
        return {k: _ser_metrics(v) for k, v in arg.items()}
    if isinstance(arg, (list, tuple)):
        return [_ser_metrics(v) for v in arg]
    return arg if isinstance(arg, str) or arg is None else arg.name


def _de_loss(arg):
    from pyaiml.keras import losses

    if isinstance(arg, dict) and "class_name" not in arg:
        return {k: _de_loss(v) for k, v in arg.items()}
    if isinstance(arg, list):
        return [_de_loss(v) for v in arg]
    return losses.get(arg)


def _compile_config(model):
    if not model.compiled:
        return None
    from pyaiml.keras import losses, optimizers

    if not getattr(model, "_is_sequential", False):
        return {"optimizer": optimizers.serialize(model.optimizer), "loss": _ser_loss(model._loss_arg),
                "metrics": _ser_metrics(model._metrics_arg), "loss_weights": model._loss_weights_arg}

    return {"optimizer": optimizers.serialize(model.optimizer), "loss": losses.serialize(model.loss),
            "metrics": [m if isinstance(m, str) else m.name for m in model._metric_ids]}


def save_model(model, filepath, overwrite=True, history=None, key=None):
    import pyaiml

    if not model.built:
        raise ValueError("save: the model is not built yet (give the first layer an input_shape, or fit it once)")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "pyaiml_version": pyaiml.__version__}
    from pyaiml.keras.serialization import model_config

    cfg = {"model": model_config(model), "compile": _compile_config(model)}
    files = {
        "metadata.json": json.dumps(meta, indent=1).encode(),
        "config.json": json.dumps(cfg, indent=1).encode(),
        "weights.npz": _npz_bytes(_weight_arrays(model)),
    }
    if model.compiled and model.optimizer._state:
        it, st = model.optimizer.get_state()
        files["optimizer.npz"] = _npz_bytes({"iterations": np.array(it, dtype=np.int64), **st})
    h = history if history is not None else model.history
    if h is not None:
        files["history.json"] = json.dumps(h.to_json()).encode()

    def write(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            for name, data in files.items():
                z.writestr(name, data)

    _atomic_write(filepath, write, overwrite, key)


MEMBERS = ("metadata.json", "config.json", "weights.npz", "optimizer.npz", "history.json")
# What building a model from a config, or compiling it, raises on a config it cannot use.
_CONFIG_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError, RecursionError)


def _bad(path, why):
    return ValueError(f"load_model: {path} is not a valid pyaiml model file ({why}). "
                      "It may be truncated or corrupted; re-save the model.")


def _read_npz(data: bytes, path, what):
    try:
        return read_npz(data, "load_model", f"{path} ({what})")
    except CorruptFileError as e:
        raise _bad(path, f"{what} cannot be read: {e.why}") from None


def _json(raw, path, what):
    try:
        d = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _bad(path, f"{what} cannot be parsed: {type(e).__name__}: {e}") from None
    if not isinstance(d, dict):
        raise _bad(path, f"{what} must hold a JSON object. Received {type(d).__name__}")
    return d


def load_model(filepath, compile=True, key=None, custom_objects=None):
    from pyaiml.keras import callbacks, losses, optimizers
    from pyaiml.keras.serialization import UnregisteredClassError, model_from_config

    path = os.fspath(filepath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_model: no such file: {path}")
    try:
        raw = zip_members(path, "load_model", path, key=key, inner="keras")
    except CorruptFileError as e:
        raise _bad(path, e.why) from None
    extra = sorted(set(raw) - set(MEMBERS))
    if extra:
        raise _bad(path, f"unexpected members {extra}")
    for need in ("metadata.json", "config.json", "weights.npz"):
        if need not in raw:
            raise _bad(path, f"member {need} is missing")
    meta = _json(raw["metadata.json"], path, "metadata.json")
    cfg = _json(raw["config.json"], path, "config.json")
    if meta.get("format") != FORMAT:
        raise _bad(path, f"format is {meta.get('format')!r}, expected {FORMAT!r}")
    v = meta.get("format_version")
    if not isinstance(v, int) or v > FORMAT_VERSION or v < 1:
        raise ValueError(f"load_model: {path} has format_version {v!r}; this pyaiml reads versions 1..{FORMAT_VERSION}. "
                         "Upgrade pyaiml to load it.")
    weights = _read_npz(raw["weights.npz"], path, "weights.npz")
    try:
        model = model_from_config(cfg["model"], custom_objects)
    except UnregisteredClassError as e:
        raise ValueError(f"{e} ({path})") from None
    except _CONFIG_ERRORS as e:
        raise _bad(path, f"model config cannot be used: {type(e).__name__}: {e}") from None
    if not model.built:
        raise _bad(path, "model config has no input shape")
    ws = []
    sequential = getattr(model, "_is_sequential", False)
    slots = ([(layer, i, j) for i, layer in enumerate(model._layers) for j in range(len(layer._weight_slots()))]
             if sequential else [(model, i, None) for i in range(len(model.get_weights()))])
    for layer, i, j in slots:
        k = f"{i:03d}/{j:02d}" if sequential else f"{i:04d}"
        if k not in weights:
            raise _bad(path, f"weight {k} of layer {layer.name!r} is missing")
        if weights[k].dtype.kind != "f":
            raise _bad(path, f"weight {k} of layer {layer.name!r} must be floats. Received {weights[k].dtype}")
        ws.append(weights[k])
    if len(ws) != len(weights):
        raise _bad(path, f"it holds {len(weights)} weight arrays, the architecture has {len(ws)}")
    try:
        model.set_weights(ws)
    except ValueError as e:
        raise _bad(path, str(e)) from None
    cc = cfg.get("compile")
    if compile and cc:
        try:
            if sequential:
                model.compile(optimizer=optimizers.get(cc["optimizer"]), loss=losses.get(cc["loss"]),
                              metrics=cc["metrics"])
            else:
                model.compile(optimizer=optimizers.get(cc["optimizer"]), loss=_de_loss(cc["loss"]),
                              metrics=cc["metrics"], loss_weights=cc.get("loss_weights"))
        except _CONFIG_ERRORS as e:
            raise _bad(path, f"compile config cannot be used: {type(e).__name__}: {e}") from None
        if "optimizer.npz" in raw:
            st = _read_npz(raw["optimizer.npz"], path, "optimizer.npz")
            it = st.pop("iterations", None)
            if it is None or it.shape != () or it.dtype.kind not in "iu" or int(it) < 0:
                raise _bad(path, "optimizer.npz needs 'iterations', an integer >= 0")
            bad = [k for k in st if not re.fullmatch(r"[0-9]{1,9}/[A-Za-z0-9_]+", k)]
            if bad:
                raise _bad(path, f"optimizer state key {bad[0]!r} is not '<parameter index>/<slot>'")
            bad = [k for k, a in st.items() if a.dtype.kind != "f"]
            if bad:
                raise _bad(path, f"optimizer state {bad[0]!r} must be floats. Received {st[bad[0]].dtype}")
            try:
                model.optimizer.set_state(int(it), st, model._params())
            except ValueError as e:
                raise _bad(path, str(e)) from None
    if "history.json" in raw:
        try:
            model.history = callbacks.History.from_json(_json(raw["history.json"], path, "history.json"))
        except _CONFIG_ERRORS as e:
            raise _bad(path, f"history.json cannot be used: {type(e).__name__}: {e}") from None
    return model


def save_weights(model, filepath, overwrite=True, key=None):
    if not model.built:
        raise ValueError("save_weights: the model is not built yet")
    data = _npz_bytes(_weight_arrays(model))
    _atomic_write(filepath, lambda f: f.write(data), overwrite, key, "keras-weights")


def load_weights(model, filepath, key=None):
    path = os.fspath(filepath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_weights: no such file: {path}")
    weights = read_npz(path, "load_weights", key=key, inner="keras-weights")
    keys = sorted(weights)
    n = (sum(len(l._weight_names) for l in model._layers) if getattr(model, "_is_sequential", False)
         else len(model.get_weights()))
    if len(keys) != n:
        raise ValueError(f"load_weights: {path} holds {len(keys)} arrays, the model has {n}")
    bad = [k for k in keys if weights[k].dtype.kind != "f"]
    if bad:
        raise ValueError(f"load_weights: {path}: weight {bad[0]} must be floats. Received {weights[bad[0]].dtype}")
    try:
        model.set_weights([weights[k] for k in keys])
    except ValueError as e:
        raise ValueError(f"load_weights: {path} does not fit the model: {e}") from None


class SavingMixin:
    """``save``, ``save_weights``, ``load_weights`` and ModelCheckpoint's save for every model
    class (Sequential, Model)."""

    def save(self, filepath, overwrite=True, key=None):
        """Save architecture, weights, compile settings, optimizer state and History to a
        zip file (format above, no pickle); atomic. ``key``: encrypt it (AES-256-GCM; bytes,
        ``"file:PATH"``, ``"env:NAME"``, a KeyFile or a callable, see pyaiml.privacy); load it
        with ``load_model(filepath, key=...)``."""
        save_model(self, filepath, overwrite=overwrite, key=key)

    def _save_during_fit(self, path, epoch, logs, key=None):
        from pyaiml.keras import callbacks as _cb

        # the History callback runs after user callbacks: include this epoch explicitly
        h = _cb.History.from_json(self.history.to_json()) if self.history is not None else _cb.History()
        if not h.epoch or h.epoch[-1] != epoch:
            h.on_epoch_end(epoch, logs)
        save_model(self, path, history=h, key=key)

    def save_weights(self, filepath, overwrite=True, key=None):
        save_weights(self, filepath, overwrite=overwrite, key=key)

    def load_weights(self, filepath, key=None):
        load_weights(self, filepath, key=key)
