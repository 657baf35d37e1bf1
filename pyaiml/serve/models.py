"""Models behind the server: file detection, loading, and the v2 (Open Inference Protocol) wrappers.

What it is:

- :func:`load_file` opens a saved pyaiml model without being told its kind: an encrypted
  file names its format in its authenticated header, a plain ``.keras`` archive has
  ``metadata.json``, a pyaiml ``.npz`` has a JSON ``__meta__`` (TransformerLM, HMM,
  HMMClassifier) or ``meta`` (Word2Vec, KeyedVectors) member naming its format; word2vec
  C-format files are recognised by extension (``.bin`` binary; ``.txt``/``.vec`` text); a
  folder with ``config.json`` is a Hugging Face checkpoint, read by ``pyaiml.llm.load``
  (served by pyaiml/serve/llm_adapter.py).
  Every format is read by its own loader (no pickle anywhere), with ``key=`` for encrypted
  files.
- :func:`wrap` turns a loaded object into what the routes serve: a :class:`V2Model`
  (:class:`KerasModel`, :class:`HMMModel`, :class:`HMMClassifierModel`,
  :class:`VectorsModel`) and/or a language-model adapter (pyaiml.serve.engine).

Tensors each model takes and gives (datatype, shape; -1 = any):

- Keras: input ``input`` FP32 [-1, *input_shape] (INT64 when the first layer is an
  Embedding; any numeric datatype is accepted and converted), output ``output`` FP32.
  Requests are merged by a :class:`~pyaiml.serve.batching.DynamicBatcher`.
- HMM: ``X`` FP64 [-1, n_features] (CategoricalHMM: INT64 [-1, 1]), optional ``lengths``
  INT64 [-1]; request parameter ``method``: ``score`` (default; output ``log_prob`` per
  sequence), ``decode`` (``log_prob`` [1] and ``states``), ``predict`` (``states``),
  ``predict_proba`` (``posteriors`` [-1, n_components]), ``score_samples`` (both).
- HMMClassifier: ``X`` FP64 [-1, n_features], optional ``lengths``; outputs ``label``,
  ``probabilities`` and ``log_likelihood`` (one row per sequence).
- Word2Vec / KeyedVectors: ``words`` BYTES [-1]; ``method`` ``vectors`` (default; output
  ``vectors`` FP32 [-1, D]) or ``most_similar`` (``similar`` BYTES and ``scores`` FP32,
  [-1, topn]; parameter ``topn``, default 10).

Bad tensors raise :class:`~pyaiml.serve.tensors.TensorError` naming the input, the rule and
what was received. What it is not: a model registry with hot reloading.
Tests: tests/test_serve_v2.py, tests/test_serve_ops.py (encrypted files).
"""
from __future__ import annotations

import io
import json
import os
import struct
import zipfile

import numpy as np

from pyaiml.serve.batching import DynamicBatcher
from pyaiml.serve.tensors import TensorError, finite

# header "inner" of encrypted files -> kind
_INNER = {"keras": "keras", "hmm": "hmm", "hmm-classifier": "hmm-classifier", "word2vec": "word2vec",
          "keyedvectors": "keyedvectors", "transformer-lm": "transformer-lm", "word2vec-format": "word2vec-format"}
_FORMATS = {"pyaiml.TransformerLM/1": "transformer-lm", "pyaiml.hmm/1": "hmm",
            "pyaiml.hmm.HMMClassifier/1": "hmm-classifier", "pyaiml.Word2Vec/1": "word2vec",
            "pyaiml.KeyedVectors/1": "keyedvectors"}
KINDS = tuple(sorted(set(_INNER.values())))


def detect_kind(path) -> str:
    """The kind of a saved model file (see the module docstring); ValueError naming the file."""
    from pyaiml.privacy.crypto import MAGIC

    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(len(MAGIC))
    if head == MAGIC:
        # Only the header is read here, to pick the loader; the loader then authenticates the
        # whole file (header included) with the key.
        with open(path, "rb") as f:
            f.seek(len(MAGIC))
            raw = f.read(4)
            hlen = struct.unpack(">I", raw)[0] if len(raw) == 4 else -1
            try:
                h = json.loads(f.read(hlen).decode("utf-8")) if 0 < hlen <= (1 << 16) else None
            except (ValueError, UnicodeDecodeError):
                h = None
        if not isinstance(h, dict):
            raise ValueError(f"serve: {path} starts like an encrypted pyaiml file but its header is corrupted")
        kind = _INNER.get(h.get("inner"))
        if kind is None:
            raise ValueError(f"serve: {path} is an encrypted {h.get('inner')!r} file, not a model pyaiml can serve "
                             f"(servable: {', '.join(KINDS)})")
        if kind == "word2vec-format":
            kind = "word2vec-format-bin" if path.endswith(".bin") else "word2vec-format-text"
        return kind
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "metadata.json" in names and "config.json" in names:
                return "keras"
            for member in ("__meta__.npy", "meta.npy"):
                if member in names:
                    info = z.getinfo(member)
                    if info.file_size > (1 << 20):
                        break
                    raw = z.read(member)
                    try:
                        arr = np.load(io.BytesIO(raw), allow_pickle=False)
                        meta = json.loads(arr.tobytes().decode("utf-8"))
                    except (ValueError, UnicodeDecodeError):
                        break
                    fmt = meta.get("format", "pyaiml.hmm/1" if member == "__meta__.npy" and "class" in meta
                                   else None) if isinstance(meta, dict) else None
                    if fmt in _FORMATS:
                        return _FORMATS[fmt]
                    break
        raise ValueError(f"serve: {path} is a ZIP/.npz archive but not a saved pyaiml model pyaiml can serve "
                         f"(servable: {', '.join(KINDS)})")
    if path.endswith(".bin"):
        return "word2vec-format-bin"
    if path.endswith((".txt", ".vec")):
        return "word2vec-format-text"
    raise ValueError(f"serve: cannot tell what model {path} holds: not encrypted, not a .keras/.npz archive, and "
                     "not a word2vec .bin/.txt/.vec file")


def load_file(path, key=None):
    """(kind, object) of a saved model; ``key`` for an encrypted file (as the loaders take it)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"serve: no such model file: {path}")
    if os.path.isdir(path):
        from pyaiml import llm

        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ValueError(f"serve: {path} is a folder without config.json; a folder is served as a Hugging Face "
                             "checkpoint (config.json + safetensors + tokenizer.json)")
        model = llm.load(path, key=key)
        return ("llm-encoder" if isinstance(model, llm.Bert) else "llm-decoder"), model
    kind = detect_kind(path)
    if kind == "keras":
        from pyaiml.keras.models import load_model

        return kind, load_model(path, compile=False, key=key)
    if kind == "hmm":
        from pyaiml.hmm import load

        return kind, load(path, key=key)
    if kind == "hmm-classifier":
        from pyaiml.hmm import HMMClassifier

        return kind, HMMClassifier.load(path, key=key)
    if kind == "word2vec":
        from pyaiml.models import Word2Vec

        return kind, Word2Vec.load(path, key=key)
    if kind == "keyedvectors":
        from pyaiml.models import KeyedVectors

        return kind, KeyedVectors.load(path, key=key)
    if kind.startswith("word2vec-format"):
        from pyaiml.models import KeyedVectors

        return "keyedvectors", KeyedVectors.load_word2vec_format(path, binary=kind.endswith("bin"), key=key)
    from pyaiml.seq import TransformerLM

    return kind, TransformerLM.load(path, key=key)


def kind_of(obj) -> str:
    """The kind of an in-memory model object (TypeError for anything else)."""
    from pyaiml.hmm import HMMClassifier
    from pyaiml.hmm.base import BaseHMM
    from pyaiml.keras.models import Sequential
    from pyaiml.llm import Bert, DecoderLM
    from pyaiml.models import KeyedVectors, Word2Vec
    from pyaiml.seq import TransformerLM
    from pyaiml.serve.engine import LMAdapter

    for cls, kind in ((Sequential, "keras"), (BaseHMM, "hmm"), (HMMClassifier, "hmm-classifier"),
                      (Word2Vec, "word2vec"), (KeyedVectors, "keyedvectors"), (TransformerLM, "transformer-lm"),
                      (DecoderLM, "llm-decoder"), (Bert, "llm-encoder"), (LMAdapter, "lm")):
        if isinstance(obj, cls):
            return kind
    raise TypeError(f"serve: cannot serve a {type(obj).__name__}; give a path or a Sequential, an HMM, an "
                    "HMMClassifier, a Word2Vec/KeyedVectors, a TransformerLM, a pyaiml.llm model or an LMAdapter")


# ---------------------------------------------------------------------- v2 models
class V2Model:
    """A model served over the Open Inference Protocol v2."""

    platform = "pyaiml"

    def __init__(self, name, version="1"):
        self.name = name
        self.version = str(version)

    def inputs_meta(self):
        return []

    def outputs_meta(self):
        return []

    def metadata(self):
        return {"name": self.name, "versions": [self.version], "platform": self.platform,
                "inputs": self.inputs_meta(), "outputs": self.outputs_meta()}

    def config(self):
        return {"name": self.name, "platform": self.platform, "max_batch_size": 0,
                "input": self.inputs_meta(), "output": self.outputs_meta()}

    async def infer(self, inputs: dict, parameters: dict) -> dict:
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(self.infer_sync, inputs, parameters)

    def infer_sync(self, inputs, parameters):  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self):
        pass


def _need(inputs, name, model):
    if name not in inputs:
        raise TensorError(f"model '{model}': input '{name}' is required; the request gives {sorted(inputs)}")
    return inputs[name]


def _no_extra(inputs, names, model):
    extra = sorted(set(inputs) - set(names))
    if extra:
        raise TensorError(f"model '{model}': unknown input(s) {extra}; it takes {list(names)}")


def _numeric(a, name, want_kind="f"):
    if a.dtype.kind not in "fiu":
        raise TensorError(f"input '{name}': must be numeric (FP32/FP64/INT*). Received datatype "
                          f"{'BYTES' if a.dtype.kind == 'O' else 'BOOL' if a.dtype.kind == 'b' else a.dtype}")
    if a.dtype.kind == "f" and not finite(a):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
        raise TensorError(f"input '{name}': values must be finite. Received {a[bad]} at index {bad}")
    if want_kind == "i" and a.dtype.kind == "f" and not np.all(a == np.round(a)):
        raise TensorError(f"input '{name}': must hold integers. Received non-integer values")
    return a


def _shape_str(shape):
    return "[" + ", ".join("-1" if d is None else str(d) for d in shape) + "]"


def _param(parameters, name, default, allowed=None):
    v = (parameters or {}).get(name, default)
    if allowed is not None and v not in allowed:
        raise TensorError(f"parameter '{name}' must be one of {list(allowed)}. Received {v!r}")
    return v


class KerasModel(V2Model):
    """A pyaiml.keras Sequential model behind dynamic batching."""

    platform = "pyaiml_keras"

    def __init__(self, name, model, version="1", max_batch_size=32, max_delay=0.005, on_batch=None):
        super().__init__(name, version)
        from pyaiml.keras import layers as kl

        self.model = model
        if model.input_shape is None:
            raise ValueError(f"serve: Keras model '{name}' is not built (no input shape); build it before serving")
        self.row_shape = tuple(model.input_shape[1:])
        self.out_shape = tuple(model.output_shape)
        self.int_input = bool(model.layers) and isinstance(model.layers[0], kl.Embedding)
        self.max_batch_size = max_batch_size

        def fn(x):
            return model.predict(x, batch_size=max(1, len(x)), verbose=0)

        self.batcher = DynamicBatcher(fn, max_batch_size, max_delay, on_batch=on_batch, name=f"batcher-{name}")

    def inputs_meta(self):
        return [{"name": "input", "datatype": "INT64" if self.int_input else "FP32",
                 "shape": [-1] + [-1 if d is None else d for d in self.row_shape]}]

    def outputs_meta(self):
        return [{"name": "output", "datatype": "FP32", "shape": [-1] + [-1 if d is None else d for d in self.out_shape]}]

    def config(self):
        c = super().config()
        c["max_batch_size"] = self.max_batch_size
        c["dynamic_batching"] = {"max_queue_delay_microseconds": int(self.batcher.max_delay * 1e6)}
        return c

    def check(self, inputs):
        if len(inputs) != 1 or "input" not in inputs:
            _no_extra(inputs, ["input"], self.name)
        x = _numeric(_need(inputs, "input", self.name), "input", "i" if self.int_input else "f")
        want = self.row_shape
        if x.shape[1:] != want and (x.ndim != len(want) + 1 or any(w is not None and w != s
                                                                   for w, s in zip(want, x.shape[1:]))):
            raise TensorError(f"input 'input': shape must be {_shape_str((None,) + want)} (batch first). "
                              f"Received {list(x.shape)}")
        return np.ascontiguousarray(x, dtype=np.int64 if self.int_input else np.float32)

    async def infer(self, inputs, parameters):
        x = self.check(inputs)
        if len(x) == 0:
            return {"output": np.zeros((0,) + tuple(d or 0 for d in self.out_shape), dtype=np.float32)}
        y = await self.batcher.submit_async(x)
        return {"output": np.asarray(y, dtype=np.float32)}

    def close(self):
        self.batcher.close()


def _lengths(inputs, n, model):
    if "lengths" not in inputs:
        return None
    L = _numeric(inputs["lengths"], "lengths", "i")
    if L.ndim != 1:
        raise TensorError(f"input 'lengths': shape must be [-1]. Received {list(L.shape)}")
    L = L.astype(np.int64)
    if L.size and L.min() < 1:
        raise TensorError(f"input 'lengths': every length must be >= 1. Received {int(L.min())}")
    if int(L.sum()) != n:
        raise TensorError(f"input 'lengths': must sum to the {n} rows of X. Received lengths summing to "
                          f"{int(L.sum())}")
    return L


class HMMModel(V2Model):
    """A pyaiml.hmm model: score / decode / predict / predict_proba / score_samples."""

    platform = "pyaiml_hmm"
    METHODS = ("score", "decode", "predict", "predict_proba", "score_samples")

    def __init__(self, name, model, version="1"):
        super().__init__(name, version)
        from pyaiml.hmm import CategoricalHMM

        self.model = model
        self.categorical = isinstance(model, CategoricalHMM)
        self.n_features = 1 if self.categorical else int(model.n_features)

    def inputs_meta(self):
        return [{"name": "X", "datatype": "INT64" if self.categorical else "FP64", "shape": [-1, self.n_features]},
                {"name": "lengths", "datatype": "INT64", "shape": [-1], "optional": True}]

    def outputs_meta(self):
        return [{"name": "log_prob", "datatype": "FP64", "shape": [-1]},
                {"name": "states", "datatype": "INT64", "shape": [-1]},
                {"name": "posteriors", "datatype": "FP64", "shape": [-1, int(self.model.n_components)]}]

    def infer_sync(self, inputs, parameters):
        _no_extra(inputs, ["X", "lengths"], self.name)
        method = _param(parameters, "method", "score", self.METHODS)
        X = _numeric(_need(inputs, "X", self.name), "X", "i" if self.categorical else "f")
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise TensorError(f"input 'X': shape must be [-1, {self.n_features}]. Received {list(X.shape)}")
        if len(X) == 0:
            raise TensorError("input 'X': needs at least one row. Received shape [0, ...]")
        X = X.astype(np.int64) if self.categorical else X.astype(np.float64)
        L = _lengths(inputs, len(X), self.name)
        m = self.model
        try:
            if method == "score":
                return {"log_prob": np.asarray(m.score(X, L, per_sequence=True), dtype=np.float64)}
            if method == "decode":
                lp, states = m.decode(X, L)
                return {"log_prob": np.asarray([lp]), "states": np.asarray(states, dtype=np.int64)}
            if method == "predict":
                return {"states": np.asarray(m.predict(X, L), dtype=np.int64)}
            if method == "predict_proba":
                return {"posteriors": np.asarray(m.predict_proba(X, L), dtype=np.float64)}
            lp, post = m.score_samples(X, L)
            return {"log_prob": np.asarray([lp]), "posteriors": np.asarray(post, dtype=np.float64)}
        except ValueError as e:
            raise TensorError(f"model '{self.name}' ({method}): {e}") from None


class HMMClassifierModel(V2Model):
    """A pyaiml.hmm.HMMClassifier: one label per sequence, with probabilities."""

    platform = "pyaiml_hmm_classifier"

    def __init__(self, name, model, version="1"):
        super().__init__(name, version)
        self.model = model
        self.n_features = int(model.n_features_in_)
        self.classes = np.asarray(model.classes_)

    def _label_dt(self):
        return "BYTES" if self.classes.dtype.kind in "OSU" else "INT64" if self.classes.dtype.kind in "iu" else "FP64"

    def inputs_meta(self):
        return [{"name": "X", "datatype": "FP64", "shape": [-1, self.n_features]},
                {"name": "lengths", "datatype": "INT64", "shape": [-1], "optional": True}]

    def outputs_meta(self):
        k = len(self.classes)
        return [{"name": "label", "datatype": self._label_dt(), "shape": [-1]},
                {"name": "probabilities", "datatype": "FP64", "shape": [-1, k]},
                {"name": "log_likelihood", "datatype": "FP64", "shape": [-1, k]}]

    def infer_sync(self, inputs, parameters):
        _no_extra(inputs, ["X", "lengths"], self.name)
        X = _numeric(_need(inputs, "X", self.name), "X")
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise TensorError(f"input 'X': shape must be [-1, {self.n_features}]. Received {list(X.shape)}")
        if len(X) == 0:
            raise TensorError("input 'X': needs at least one row. Received shape [0, ...]")
        X = X.astype(np.float64)
        L = _lengths(inputs, len(X), self.name)
        seqs = [X] if L is None else np.split(X, np.cumsum(L)[:-1])
        try:
            LL = self.model.log_likelihoods(seqs)
        except ValueError as e:
            raise TensorError(f"model '{self.name}': {e}") from None
        Z = LL - LL.max(axis=1, keepdims=True)
        P = np.exp(Z)
        P /= P.sum(axis=1, keepdims=True)
        label = self.classes[np.argmax(LL, axis=1)]
        if label.dtype.kind == "U":
            label = np.asarray([s.encode("utf-8") for s in label], dtype=object)
        return {"label": label, "probabilities": P, "log_likelihood": LL}


class VectorsModel(V2Model):
    """Word2Vec / KeyedVectors: vectors of words, or their nearest neighbours."""

    platform = "pyaiml_word2vec"

    def __init__(self, name, kv, version="1"):
        super().__init__(name, version)
        self.kv = kv
        kv.fill_norms()  # before any request: most_similar would otherwise fill them lazily, racing

    def inputs_meta(self):
        return [{"name": "words", "datatype": "BYTES", "shape": [-1]}]

    def outputs_meta(self):
        return [{"name": "vectors", "datatype": "FP32", "shape": [-1, int(self.kv.vector_size)]},
                {"name": "similar", "datatype": "BYTES", "shape": [-1, -1]},
                {"name": "scores", "datatype": "FP32", "shape": [-1, -1]}]

    def _words(self, inputs):
        _no_extra(inputs, ["words"], self.name)
        w = _need(inputs, "words", self.name)
        if w.dtype.kind != "O":
            raise TensorError(f"input 'words': datatype must be BYTES. Received {w.dtype}")
        if w.ndim != 1:
            raise TensorError(f"input 'words': shape must be [-1]. Received {list(w.shape)}")
        try:
            words = [v.decode("utf-8") for v in w]
        except UnicodeDecodeError:
            raise TensorError("input 'words': elements must be UTF-8 text") from None
        missing = [x for x in words if x not in self.kv]
        if missing:
            raise TensorError(f"input 'words': {len(missing)} word(s) not in the vocabulary of model "
                              f"'{self.name}', first {missing[0]!r}")
        return words

    def infer_sync(self, inputs, parameters):
        method = _param(parameters, "method", "vectors", ("vectors", "most_similar"))
        words = self._words(inputs)
        if method == "vectors":
            D = int(self.kv.vector_size)
            vecs = np.stack([self.kv[x] for x in words]) if words else np.zeros((0, D))
            return {"vectors": np.asarray(vecs, dtype=np.float32)}
        topn = _param(parameters, "topn", 10)
        if isinstance(topn, bool) or not isinstance(topn, int) or topn < 1:
            raise TensorError(f"parameter 'topn' must be an integer >= 1. Received {topn!r}")
        topn = min(topn, len(self.kv) - 1)
        sims = [self.kv.most_similar(x, topn=topn) for x in words]
        similar = np.empty((len(words), topn), dtype=object)
        scores = np.zeros((len(words), topn), dtype=np.float32)
        for i, row in enumerate(sims):
            for j, (w, s) in enumerate(row):
                similar[i, j] = w.encode("utf-8")
                scores[i, j] = s
        return {"similar": similar, "scores": scores}

    def embed(self, text: str):
        """(mean vector, token count, known-word count) of a text (simple_tokenize words)."""
        from pyaiml.text.tokenize import simple_tokenize

        toks = simple_tokenize(text)
        known = [t for t in toks if t in self.kv]
        if not known:
            return None, len(toks), 0
        return np.mean(np.stack([self.kv[t] for t in known]), axis=0).astype(np.float32), len(toks), len(known)
