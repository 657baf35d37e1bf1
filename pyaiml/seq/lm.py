"""Decoder-only Transformer language model (GPT-style) with key/value-cached generation.

``TransformerLM(vocab_size, context, width, num_layers, num_heads)`` holds a
``pyaiml.keras.Sequential``: PositionalEmbedding -> causal TransformerEncoderBlock x L ->
LayerNormalization -> Dense(vocab) logits, trained with ``compile``/``fit`` like any Keras
model (``lm.model``), or through ``fit_text`` which feeds random windows of a token stream
and logs the validation loss (nats per token) every ``eval_every`` steps.

``generate(prompt, max_new_tokens, temperature, top_k, top_p, seed)`` samples one token
per step. With ``use_cache=True`` (default) the prompt is run once (prefill) and each new
token costs one decode step: its query attends over the cached keys/values (Lq = 1).
``use_cache=False`` recomputes the whole window for every token (the reference; both give
the same tokens for the same seed).

Context policy (documented behaviour): the model reads at most ``context`` tokens. A prompt
longer than that is truncated to its last ``context`` tokens with a ``UserWarning``. When
generation fills the window, it slides: the last ``context - context // 4`` tokens are kept
and re-run (one prefill), then cached decoding continues. The uncached path uses exactly
the same windows.

Errors: unknown characters in a str prompt follow the tokenizer (byte fallback or
ValueError); ``max_new_tokens < 0``, ``temperature <= 0`` when sampling, ``top_k < 1``,
``top_p`` outside (0, 1], empty prompts: ValueError.

Tests: tests/test_transformer_lm.py.
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings

import numpy as np

from pyaiml._io import atomic_savez, bad_file, read_npz
from pyaiml.keras import layers as kl
from pyaiml.keras import losses as klosses
from pyaiml.keras import optimizers as kopt
from pyaiml.keras.models import Sequential
from pyaiml.ops import _validate
from pyaiml.seq.layers import PositionalEmbedding, TransformerEncoderBlock
from pyaiml.seq.tokenizer import CharTokenizer

_FORMAT = "pyaiml.TransformerLM/1"


def _check_sampling(max_new_tokens, temperature, top_k, top_p, do_sample):
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be an integer >= 0. Received {max_new_tokens!r}")
    if do_sample:
        try:
            t = float(temperature)
        except (TypeError, ValueError):
            raise ValueError(f"generate: temperature must be a number > 0. Received {temperature!r}") from None
        if not (t > 0 and math.isfinite(t)):
            raise ValueError(f"generate: temperature must be > 0 when sampling (use do_sample=False for greedy "
                             f"decoding). Received {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"generate: top_k must be None or an integer >= 1. Received {top_k!r}")
    if top_p is not None and not (0 < float(top_p) <= 1):
        raise ValueError(f"generate: top_p must be None or in (0, 1]. Received {top_p!r}")


def sample_token(logits, rs, do_sample=True, temperature=1.0, top_k=None, top_p=None):
    """One token id from logits (V,): greedy, or temperature / top-k / nucleus sampling
    with the Generator ``rs`` (one uniform draw per token, inverse CDF)."""
    z = np.asarray(logits, dtype=np.float64)
    if not do_sample:
        return int(np.argmax(z))
    z = z / float(temperature)
    if top_k is not None and top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p is not None and top_p < 1:
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order])
        cut = int(np.searchsorted(cum, top_p)) + 1  # smallest prefix with mass >= top_p
        keep = np.zeros_like(p, dtype=bool)
        keep[order[:cut]] = True
        p = np.where(keep, p, 0.0)
        p /= p.sum()
    c = np.cumsum(p)
    u = rs.random() * c[-1]
    return int(min(np.searchsorted(c, u, side="right"), p.size - 1))


def sample_tokens(logits, rngs, temperatures):
    """:func:`sample_token` with ``do_sample=True`` (no top-k, no top-p) for a batch: row b
    of logits (B, V) at temperature ``temperatures[b]`` with one draw from ``rngs[b]``.
    The same operations run on the whole batch (row-wise max, sum and cumsum), so every
    row gets exactly :func:`sample_token`'s token; a list of B ints."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or len(rngs) != z.shape[0] or len(temperatures) != z.shape[0]:
        raise ValueError(f"sample_tokens: logits must be (B, V) with one generator and temperature per row. Received "
                         f"{z.shape}, {len(rngs)} generators, {len(temperatures)} temperatures")
    z = z / np.asarray(temperatures, dtype=np.float64)[:, None]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    c = np.cumsum(p, axis=1)
    u = np.array([r.random() for r in rngs]) * c[:, -1]
    return np.minimum((c <= u[:, None]).sum(axis=1), z.shape[1] - 1).tolist()


class TransformerLM:
    """Character/token-level causal Transformer language model.

    Parameters
    ----------
    vocab_size : int (or give ``tokenizer`` and leave it None)
    context : int, the longest window the model reads (positions 0..context-1)
    width : int, D;  num_layers : int, L;  num_heads : int, H (D % H == 0)
    ff_dim : int, feed-forward width (default 4 D)
    dropout : float; position : 'learned' | 'sinusoidal'; activation : 'gelu' | 'relu'
    tokenizer : CharTokenizer or None (needed for str prompts)
    """

    def __init__(self, vocab_size=None, context=128, width=128, num_layers=4, num_heads=4, ff_dim=None, dropout=0.0,
                 position="learned", activation="relu", tokenizer=None):
        if vocab_size is None:
            if tokenizer is None:
                raise ValueError("TransformerLM: give vocab_size or a tokenizer")
            vocab_size = tokenizer.vocab_size
        if tokenizer is not None and tokenizer.vocab_size != vocab_size:
            raise ValueError(f"TransformerLM: vocab_size {vocab_size} differs from the tokenizer's "
                             f"{tokenizer.vocab_size}")
        for n, v in (("context", context), ("width", width), ("num_layers", num_layers), ("num_heads", num_heads)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"TransformerLM: {n} must be a positive integer. Received {v!r}")
        self.config = {"vocab_size": int(vocab_size), "context": int(context), "width": int(width),
                       "num_layers": int(num_layers), "num_heads": int(num_heads),
                       "ff_dim": int(ff_dim or 4 * width), "dropout": float(dropout), "position": position,
                       "activation": activation}
        self.tokenizer = tokenizer
        self.context = int(context)
        c = self.config
        layers = [PositionalEmbedding(c["vocab_size"], c["context"], c["width"], position=position, dropout=dropout)]
        layers += [TransformerEncoderBlock(c["num_heads"], c["ff_dim"], dropout=dropout, causal=True,
                                           activation=activation) for _ in range(c["num_layers"])]
        layers += [kl.LayerNormalization(epsilon=1e-5), kl.Dense(c["vocab_size"])]
        self.model = Sequential(layers, name="transformer_lm")
        # Built for windows of exactly `context` tokens: the Keras label check compares y's
        # shape with the output shape literally (a None length would reject every y).
        # Generation runs the layers directly and takes any length <= context.
        self.model.build((None, self.context))
        self.history = []

    # ------------------------------------------------------------------ parts
    @property
    def embedding(self):
        return self.model.layers[0]

    @property
    def blocks(self):
        return self.model.layers[1:-2]

    def compile(self, optimizer=None, **kw):
        """Keras compile with the LM's loss (sparse cross-entropy on logits)."""
        self.model.compile(optimizer=optimizer or kopt.Adam(1e-3),
                           loss=klosses.SparseCategoricalCrossentropy(from_logits=True), **kw)
        return self

    def count_params(self):
        return self.model.count_params()

    # ------------------------------------------------------------------ training helpers
    @staticmethod
    def windows(ids, length, stride=None, start=0):
        """Input/target pairs from a token stream: x[i] = ids[s:s+length], y[i] = ids[s+1:s+length+1]."""
        ids = np.asarray(ids, dtype=np.int64)
        stride = stride or length
        n = (len(ids) - 1 - start - length) // stride + 1
        if n < 1:
            raise ValueError(f"windows: a stream of {len(ids)} tokens is too short for windows of {length}")
        s = start + stride * np.arange(n)
        idx = s[:, None] + np.arange(length)[None, :]
        return ids[idx], ids[idx + 1]

    def evaluate_ids(self, ids, batch_size=32, max_windows=None):
        """Mean loss (nats per token) over non-overlapping windows of ``ids``."""
        x, y = self.windows(ids, self.context)
        if max_windows is not None:
            x, y = x[:max_windows], y[:max_windows]
        return float(self.model.evaluate(x, y, batch_size=batch_size, verbose=0))

    def fit_text(self, train_ids, val_ids=None, batch_size=32, steps=1000, eval_every=200, time_budget=None,
                 seed=0, log=print, max_val_windows=None):
        """Train on random windows of ``train_ids`` through ``model.fit``, ``eval_every``
        steps per fit call; stop after ``steps`` or ``time_budget`` seconds of training
        (evaluation excluded from the budget). Returns the log: dicts with step,
        seconds, train_loss, val_loss."""
        if not self.model.compiled:
            self.compile()
        train_ids = np.asarray(train_ids, dtype=np.int64)
        rs = np.random.default_rng(seed)
        L = self.context
        hi = len(train_ids) - L - 1
        if hi < 1:
            raise ValueError(f"fit_text: train_ids ({len(train_ids)} tokens) must be longer than context+1 = {L + 1}")
        done, spent = 0, 0.0
        while done < steps and (time_budget is None or spent < time_budget):
            k = min(eval_every, steps - done)
            s = rs.integers(0, hi + 1, size=k * batch_size)
            idx = s[:, None] + np.arange(L)[None, :]
            t0 = time.perf_counter()
            h = self.model.fit(train_ids[idx], train_ids[idx + 1], batch_size=batch_size, epochs=1, shuffle=False,
                               verbose=0)
            spent += time.perf_counter() - t0
            done += k
            rec = {"step": done, "seconds": round(spent, 1), "train_loss": float(h.history["loss"][-1])}
            if val_ids is not None:
                rec["val_loss"] = self.evaluate_ids(val_ids, max_windows=max_val_windows)
            self.history.append(rec)
            if log:
                log(json.dumps(rec))
        return self.history

    # ------------------------------------------------------------------ generation
    def _prompt_ids(self, prompt):
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("generate: a str prompt needs a tokenizer (TransformerLM(tokenizer=...)); "
                                 "or pass token ids")
            ids = self.tokenizer.encode(prompt)
        else:
            ids = np.asarray(prompt)
            if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
                raise ValueError(f"generate: prompt must be a str or a 1-D array of integer ids. "
                                 f"Received {ids.dtype} array of shape {ids.shape}")
            ids = ids.astype(np.int64)
            V = self.config["vocab_size"]
            if ids.size and (ids.min() < 0 or ids.max() >= V):
                raise ValueError(f"generate: prompt ids must be in [0, {V}). Received [{ids.min()}, {ids.max()}]")
        if ids.size == 0:
            raise ValueError("generate: the prompt is empty; give at least one token")
        if ids.size > self.context:
            warnings.warn(f"generate: the prompt has {ids.size} tokens, more than the context of {self.context}; "
                          f"only its last {self.context} tokens are used", UserWarning, stacklevel=3)
        return ids

    def _head(self, h):
        ln, dense = self.model.layers[-2], self.model.layers[-1]
        return dense.forward(ln.forward(h))

    def _logits_full(self, window):
        """Reference: run the whole window, logits of its last position."""
        h = self.embedding.forward(window[None], False)
        for b in self.blocks:
            h = b.forward(h, False)
        return self._head(h[:, -1:])[0, 0]

    def generate(self, prompt, max_new_tokens=100, temperature=1.0, top_k=None, top_p=None, seed=None,
                 do_sample=True, use_cache=True):
        """Continue ``prompt`` (str, with a tokenizer, or 1-D ids) by ``max_new_tokens``
        tokens. Returns the prompt plus the continuation: a str for a str prompt, else ids.
        ``do_sample=False`` is greedy (temperature ignored)."""
        _check_sampling(max_new_tokens, temperature, top_k, top_p, do_sample)
        ids = self._prompt_ids(prompt)
        out = list(ids.tolist())
        rs = np.random.default_rng(seed)
        C = self.context
        keep = C - C // 4
        s = max(0, len(out) - C)  # window start
        with _validate.finite_checks(False):  # this thread only: the logits are our own
            caches, n_cached = None, 0
            for _ in range(int(max_new_tokens)):
                if len(out) - s > C:
                    s = len(out) - keep
                    caches = None
                if not use_cache:
                    logits = self._logits_full(np.asarray(out[s:], dtype=np.int64))
                else:
                    if caches is None:  # (re)prefill the window
                        caches = [b.new_cache(1, C) for b in self.blocks]
                        n_cached = 0
                    new = np.asarray(out[s + n_cached:], dtype=np.int64)[None]
                    h = self.embedding.forward(new, False, start=n_cached)
                    for b, cache in zip(self.blocks, caches):
                        h = b.step(h, cache)
                    n_cached += new.shape[1]
                    logits = self._head(h[:, -1:])[0, 0]
                out.append(sample_token(logits, rs, do_sample, temperature, top_k, top_p))
        res = np.asarray(out, dtype=np.int64)
        if isinstance(prompt, str):
            return self.tokenizer.decode(res)
        return res

    # ------------------------------------------------------------------ saving
    def save(self, path, key=None):
        """One .npz: config JSON, tokenizer JSON, weights in model order; atomic, no pickle.
        ``key``: encrypt it (AES-256-GCM, see pyaiml.privacy)."""
        ws = self.model.get_weights()
        meta = {"format": _FORMAT, "config": self.config,
                "tokenizer": None if self.tokenizer is None else self.tokenizer.to_json()}
        return atomic_savez(path, key=key, inner="transformer-lm",
                            __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                            **{f"w{i}": w for i, w in enumerate(ws)})

    @classmethod
    def load(cls, path, key=None):
        """Read a model written by :meth:`save`. The config is checked as the constructor checks
        it, the weights against the architecture it builds (count, shapes, float dtypes);
        anything amiss is a ``ValueError`` naming the file; ``key`` for an encrypted file."""
        op = "TransformerLM.load"
        path = os.fspath(path)
        z = read_npz(path, op, key=key, inner="transformer-lm")
        if "__meta__" not in z or z["__meta__"].dtype != np.uint8 or z["__meta__"].ndim != 1:
            raise bad_file(op, path, "no __meta__ entry of JSON bytes, so not a saved TransformerLM")
        try:
            meta = json.loads(z["__meta__"].tobytes().decode("utf-8"))
        except (ValueError, RecursionError) as e:
            raise bad_file(op, path, f"__meta__ is not JSON: {type(e).__name__}: {e}") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
            raise bad_file(op, path, "__meta__ must be a JSON object with a 'config' object")
        if meta.get("format", _FORMAT) != _FORMAT:
            raise bad_file(op, path, f"format {meta.get('format')!r}, expected {_FORMAT!r}")
        try:
            tok = None if meta.get("tokenizer") is None else CharTokenizer.from_json(meta["tokenizer"])
            lm = cls(tokenizer=tok, **meta["config"])
        except (ValueError, TypeError, KeyError) as e:
            raise bad_file(op, path, f"its config is invalid: {type(e).__name__}: {e}") from None
        n = len(lm.model.get_weights())
        want = {"__meta__"} | {f"w{i}" for i in range(n)}
        if set(z) != want:
            raise bad_file(op, path, f"members {sorted(set(z) ^ want)[:6]} are missing or unexpected for an "
                                     f"architecture of {n} weight arrays")
        bad = [i for i in range(n) if z[f"w{i}"].dtype.kind != "f"]
        if bad:
            raise bad_file(op, path, f"weight w{bad[0]} must be floats. Received {z[f'w{bad[0]}'].dtype}")
        try:
            lm.model.set_weights([z[f"w{i}"] for i in range(n)])
        except ValueError as e:
            raise bad_file(op, path, str(e)) from None
        return lm
