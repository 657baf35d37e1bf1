"""Saving and loading Sequential models: a documented, versioned, non-pickle format.

File format ``pyaiml.keras`` version 1: one ZIP archive (any file name; ``.keras`` is
customary) holding
  - ``metadata.json``: {"format": "pyaiml.keras", "format_version": 1, "pyaiml_version": ...}
  - ``config.json``: {"model": {"class_name": "Sequential", "config": {name, input_shape,
    layers: [{"class_name", "config"}, ...]}}, "compile": {optimizer, loss, metrics} or null}
  - ``weights.npz``: every weight in Keras layout, key ``"{layer:03d}/{index:02d}"``
    (layers in model order, weights in get_weights order); read with allow_pickle=False
  - ``optimizer.npz`` (when compiled and trained): ``iterations`` and slot arrays
    ``"{param}/{slot}"``
  - ``history.json``: {"epoch": [...], "history": {name: [...]}} so that
    ``fit(initial_epoch=...)`` after loading continues the History.
Weights-only files (``save_weights``) are a plain ``.npz`` with the same weight keys.

Writes are atomic: the archive is written to a temporary file in the target directory,
flushed and fsynced, then renamed over the target; a failure leaves any previous file
intact. Loading checks the archive's CRCs and contents and raises ``ValueError`` naming
the file for anything corrupted, truncated or from a newer format version.
Tests: tests/test_keras_saving.py.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
import zlib

import numpy as np

from pyaiml._io import atomic_write

FORMAT = "pyaiml.keras"
FORMAT_VERSION = 1


def _atomic_write(path: str, write_fn, overwrite=True):
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"save: {path} exists and overwrite=False")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise FileNotFoundError(f"save: directory {d} does not exist")
    atomic_write(path, write_fn, suffix=".pyaiml", fsync=True)


def _npz_bytes(arrays: dict) -> bytes:
    b = io.BytesIO()
    np.savez(b, **arrays)
    return b.getvalue()


def _weight_arrays(model) -> dict:
    out = {}
    for i, layer in enumerate(model._layers):
        for j, w in enumerate(layer.get_weights()):
            out[f"{i:03d}/{j:02d}"] = w
    return out


def _compile_config(model):
    if not model.compiled:
        return None
    from pyaiml.keras import losses, optimizers

    return {"optimizer": optimizers.serialize(model.optimizer), "loss": losses.serialize(model.loss),
            "metrics": [m if isinstance(m, str) else m.name for m in model._metric_ids]}


def save_model(model, filepath, overwrite=True, history=None):
    import pyaiml

    if not model.built:
        raise ValueError("save: the model is not built yet (give the first layer an input_shape, or fit it once)")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "pyaiml_version": pyaiml.__version__}
    cfg = {"model": {"class_name": "Sequential", "config": model.get_config()}, "compile": _compile_config(model)}
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

    _atomic_write(filepath, write, overwrite)


def _bad(path, why):
    return ValueError(f"load_model: {path} is not a valid pyaiml model file ({why}). "
                      "It may be truncated or corrupted; re-save the model.")


def _read_npz(data: bytes, path, what):
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:
        raise _bad(path, f"{what} cannot be read: {type(e).__name__}: {e}") from None


def load_model(filepath, compile=True):
    from pyaiml.keras import callbacks, losses, optimizers
    from pyaiml.keras.models import Sequential

    path = os.fspath(filepath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_model: no such file: {path}")
    try:
        with zipfile.ZipFile(path, "r") as z:
            badfile = z.testzip()
            if badfile is not None:
                raise _bad(path, f"member {badfile} fails its CRC check")
            names = set(z.namelist())
            for need in ("metadata.json", "config.json", "weights.npz"):
                if need not in names:
                    raise _bad(path, f"member {need} is missing")
            raw = {n: z.read(n) for n in names}
    except zipfile.BadZipFile as e:
        raise _bad(path, f"not a ZIP archive: {e}") from None
    except (EOFError, OSError, zipfile.LargeZipFile, zlib.error, RuntimeError) as e:
        raise _bad(path, f"{type(e).__name__}: {e}") from None
    try:
        meta = json.loads(raw["metadata.json"])
        cfg = json.loads(raw["config.json"])
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad(path, f"JSON cannot be parsed: {e}") from None
    if meta.get("format") != FORMAT:
        raise _bad(path, f"format is {meta.get('format')!r}, expected {FORMAT!r}")
    v = meta.get("format_version")
    if not isinstance(v, int) or v > FORMAT_VERSION or v < 1:
        raise ValueError(f"load_model: {path} has format_version {v!r}; this pyaiml reads versions 1..{FORMAT_VERSION}. "
                         "Upgrade pyaiml to load it.")
    try:
        model = Sequential.from_config(cfg["model"]["config"])
    except (KeyError, TypeError) as e:
        raise _bad(path, f"model config is incomplete: {type(e).__name__}: {e}") from None
    if not model.built:
        raise _bad(path, "model config has no input shape")
    weights = _read_npz(raw["weights.npz"], path, "weights.npz")
    ws = []
    for i, layer in enumerate(model._layers):
        for j in range(len(layer._weight_names)):
            k = f"{i:03d}/{j:02d}"
            if k not in weights:
                raise _bad(path, f"weight {k} of layer {layer.name!r} is missing")
            ws.append(weights[k])
    if len(ws) != len(weights):
        raise _bad(path, f"it holds {len(weights)} weight arrays, the architecture has {len(ws)}")
    try:
        model.set_weights(ws)
    except ValueError as e:
        raise _bad(path, str(e)) from None
    cc = cfg.get("compile")
    if compile and cc:
        model.compile(optimizer=optimizers.get(cc["optimizer"]), loss=losses.get(cc["loss"]), metrics=cc["metrics"])
        if "optimizer.npz" in raw:
            st = _read_npz(raw["optimizer.npz"], path, "optimizer.npz")
            it = int(st.pop("iterations"))
            try:
                model.optimizer.set_state(it, st, model._params())
            except ValueError as e:
                raise _bad(path, str(e)) from None
    if "history.json" in raw:
        try:
            model.history = callbacks.History.from_json(json.loads(raw["history.json"]))
        except (ValueError, AttributeError) as e:
            raise _bad(path, f"history.json cannot be parsed: {e}") from None
    return model


def save_weights(model, filepath, overwrite=True):
    if not model.built:
        raise ValueError("save_weights: the model is not built yet")
    data = _npz_bytes(_weight_arrays(model))
    _atomic_write(filepath, lambda f: f.write(data), overwrite)


def load_weights(model, filepath):
    path = os.fspath(filepath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_weights: no such file: {path}")
    with open(path, "rb") as f:
        data = f.read()
    try:
        weights = _read_npz(data, path, "weights")
    except ValueError as e:
        raise ValueError(str(e).replace("load_model", "load_weights")) from None
    keys = sorted(weights)
    n = sum(len(l._weight_names) for l in model._layers)
    if len(keys) != n:
        raise ValueError(f"load_weights: {path} holds {len(keys)} arrays, the model has {n}")
    model.set_weights([weights[k] for k in keys])
