"""Word2Vec with gensim 4's interface, trained by pyaiml's C++ kernel (Numba fallback).

Python side (this file and vocab.py): vocabulary, subsampling thresholds, the noise alias
table and the Huffman tree, and the corpus packed into int32 arrays once per ``train``
call. Native side (``pyaiml.ops.word2vec_train_epoch``: csrc/cpu/word2vec.cpp, or
pyaiml/_numba/word2vec.py): one call per epoch over those arrays, in ``workers`` threads,
GIL released, learning rate decaying linearly from ``alpha`` to ``min_alpha`` over all
epochs as in gensim.

Differences from gensim, on purpose:
- a sentence given as a plain ``str`` is tokenised (``pyaiml.text.simple_tokenize``, with a
  one-time warning), where gensim would train on its characters;
- a one-shot iterator (generator) with ``epochs > 1`` is an error (gensim silently trains
  on nothing after the first pass); with ``epochs == 1`` it is read once into memory;
- ``get_latest_training_loss()`` is the loss of the latest epoch (sum over training
  examples of -log p, float64), not gensim's float32 running total;
- ``workers=1`` with a ``seed`` is exactly repeatable (gensim is not, because of its
  per-word hash seeding and threads); with more workers updates race (Hogwild), as in gensim;
- the corpus is held in memory as int32 ids during ``train`` (4 bytes per word).
- ``save``/``load`` use one .npz file (arrays + JSON), never pickle; ``load`` checks every
  member against the others and raises ``ValueError`` naming the file for anything amiss.

Tests: tests/test_word2vec*.py; benchmarks: pyaiml/bench/word2vec.py.
"""
from __future__ import annotations

import os
import time

import numpy as np

from pyaiml._io import atomic_savez, bad_file
from pyaiml.ops.word2vec import INT32_MAX, INT64_MAX, MAX_NEGATIVE, MAX_WORKERS, word2vec_train_epoch
from pyaiml.text import vocab as _vocab
from pyaiml.text.keyedvectors import (KeyedVectors, _check_counts, _check_keys, _check_matrix, _from_json_arr,
                                      _json_arr, _load_npz)

FORMAT = "pyaiml.Word2Vec/1"
SEED_MAX = 2**64 - 1
PAD = 16  # rows padded to 16 floats (64 bytes): whole SIMD vectors, cache-line aligned rows


def _padded(V, D, fill=None, rng=None):
    """(V, ld) float32 zeros, 64-byte aligned; the first D columns uniform(-1/D, 1/D) if rng
    (gensim 4's initialisation scale)."""
    ld = -(-D // PAD) * PAD
    buf = np.zeros(V * ld + 16, dtype=np.float32)
    off = (-buf.ctypes.data // 4) % 16
    m = buf[off:off + V * ld].reshape(V, ld)
    if rng is not None:
        m[:, :D] = (rng.random((V, D), dtype=np.float32) * np.float32(2.0) - np.float32(1.0)) / np.float32(D)
    if fill is not None:
        m[:, :D] = fill
    return m


# Integer arguments: (lowest, highest); the highest is what the trainer's C types hold.
INT_ARGS = {"vector_size": (1, INT32_MAX), "window": (1, INT32_MAX), "min_count": (1, INT64_MAX),
            "epochs": (1, INT64_MAX), "workers": (1, MAX_WORKERS), "negative": (0, MAX_NEGATIVE),
            "max_vocab_size": (1, INT64_MAX), "max_final_vocab": (1, INT64_MAX), "seed": (0, SEED_MAX)}


def _int_arg(name, v, op="Word2Vec"):
    lo, hi = INT_ARGS[name]
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{op}: {name} must be an integer >= {lo}. Received {v!r}")
    if v < lo:
        raise ValueError(f"{op}: {name} must be an integer >= {lo}. Received {v}")
    if v > hi:
        raise ValueError(f"{op}: {name} must be an integer <= {hi}. Received {v}")
    return int(v)


def _is_one_shot(x):
    try:
        return iter(x) is x
    except TypeError:
        return False


class Word2Vec:
    """Word2Vec (skip-gram or CBOW; negative sampling and/or hierarchical softmax).

    Parameters mirror ``gensim.models.Word2Vec`` (gensim 4): ``sentences`` (iterable of
    token lists; plain strings are tokenised), ``corpus_file`` (one sentence per line,
    tokens separated by whitespace), ``vector_size``, ``window``, ``min_count``,
    ``max_vocab_size``, ``sample``, ``sg``, ``hs``, ``negative``, ``ns_exponent``,
    ``cbow_mean``, ``alpha``, ``min_alpha``, ``epochs``, ``workers`` (trainer threads),
    ``seed``, ``compute_loss``, ``callbacks``, ``max_final_vocab``, ``shrink_windows``.
    If ``sentences`` or ``corpus_file`` is given, the vocabulary is built and the model
    trained at once.

    Attributes
    ----------
    wv : KeyedVectors
        The word vectors, ``wv.vectors`` (V, vector_size) float32.
    syn1neg, syn1 : ndarray (V, vector_size)
        Output weights of negative sampling / hierarchical softmax.
    """

    def __init__(self, sentences=None, corpus_file=None, vector_size=100, alpha=0.025, window=5, min_count=5,
                 max_vocab_size=None, sample=1e-3, seed=1, workers=3, min_alpha=0.0001, sg=0, hs=0, negative=5,
                 ns_exponent=0.75, cbow_mean=1, hashfxn=None, epochs=5, null_word=0, trim_rule=None,
                 sorted_vocab=1, batch_words=10000, compute_loss=False, callbacks=(), comment=None,
                 max_final_vocab=None, shrink_windows=True):
        self.vector_size = _int_arg("vector_size", vector_size)
        self.window = _int_arg("window", window)
        self.min_count = _int_arg("min_count", min_count)
        self.epochs = _int_arg("epochs", epochs)
        self.workers = _int_arg("workers", workers)
        self.negative = _int_arg("negative", negative)
        self.hs = int(bool(hs))
        self.sg = int(bool(sg))
        self.cbow_mean = int(bool(cbow_mean))
        if self.negative == 0 and not self.hs:
            raise ValueError("Word2Vec: negative=0 with hs=0 leaves nothing to train; set negative>0 (e.g. 5) or hs=1")
        for name, v in (("alpha", alpha), ("min_alpha", min_alpha), ("sample", sample), ("ns_exponent", ns_exponent)):
            if not isinstance(v, (int, float, np.floating, np.integer)) or not np.isfinite(v):
                raise ValueError(f"Word2Vec: {name} must be a finite number. Received {v!r}")
        if alpha <= 0 or min_alpha < 0:
            raise ValueError(f"Word2Vec: alpha must be > 0 and min_alpha >= 0. Received {alpha}, {min_alpha}")
        if sample < 0:
            raise ValueError(f"Word2Vec: sample must be >= 0. Received {sample}")
        if max_vocab_size is not None:
            max_vocab_size = _int_arg("max_vocab_size", max_vocab_size)
        if max_final_vocab is not None:
            max_final_vocab = _int_arg("max_final_vocab", max_final_vocab)
        seed = _int_arg("seed", seed)
        self.alpha, self.min_alpha = float(alpha), float(min_alpha)
        self.sample, self.ns_exponent = float(sample), float(ns_exponent)
        self.max_vocab_size, self.max_final_vocab = max_vocab_size, max_final_vocab
        self.seed = int(seed)
        self.compute_loss = bool(compute_loss)
        self.callbacks = tuple(callbacks or ())
        self.shrink_windows = bool(shrink_windows)
        self.batch_words = batch_words
        self.trim_rule = trim_rule
        self.wv = KeyedVectors(self.vector_size)
        self.syn1neg = None
        self.syn1 = None
        self._syn0p = self._syn1negp = self._syn1p = None
        self.corpus_count = 0
        self.corpus_total_words = 0
        self.epoch_losses: list[float] = []
        self.running_training_loss = 0.0
        self.train_count = 0
        self.total_train_time = 0.0
        self.effective_min_count = self.min_count
        if sentences is not None and corpus_file is not None:
            raise ValueError("Word2Vec: give sentences or corpus_file, not both")
        if corpus_file is not None:
            sentences = self._file_corpus(corpus_file)
        if sentences is not None:
            if _is_one_shot(sentences):
                if self.epochs > 1:
                    raise TypeError(
                        "Word2Vec: sentences is a one-shot iterator (e.g. a generator), but training reads the "
                        f"corpus once for the vocabulary and again for training ({self.epochs} epochs); after the "
                        "first pass it would be empty. Pass a list, or an object whose __iter__ restarts."
                    )
                sentences = list(sentences)
            self.build_vocab(sentences)
            self.train(sentences, total_examples=self.corpus_count, epochs=self.epochs)

    # -- corpus ---------------------------------------------------------------------------
    @staticmethod
    def _file_corpus(corpus_file):
        path = os.fspath(corpus_file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Word2Vec: corpus_file {path!r} does not exist")
        return _LineCorpus(path)

    # -- vocabulary -----------------------------------------------------------------------
    def build_vocab(self, corpus_iterable=None, corpus_file=None, update=False, progress_per=10000,
                    keep_raw_vocab=False, trim_rule=None, **kwargs):
        """Scan the corpus, keep words seen at least ``min_count`` times, build the tables."""
        if corpus_file is not None:
            corpus_iterable = self._file_corpus(corpus_file)
        if corpus_iterable is None:
            raise ValueError("build_vocab: give corpus_iterable (sentences) or corpus_file")
        if update:
            raise NotImplementedError("build_vocab(update=True) is not supported; build a new model")
        counts, total, n = _vocab.scan(corpus_iterable, self.max_vocab_size)
        if total == 0:
            raise ValueError("Word2Vec: the corpus is empty (no sentences, or only empty ones)"
                             + (" - was a generator already consumed?" if n == 0 else ""))
        keys, cnt, sample_thr, eff = _vocab.finalize(counts, self.min_count, self.max_final_vocab, self.sample,
                                                     trim_rule if trim_rule is not None else self.trim_rule)
        if not keys:
            top = counts.most_common(1)[0][1] if counts else 0
            raise ValueError(
                f"Word2Vec: the vocabulary is empty: no word occurs at least min_count={eff} times "
                f"({len(counts)} distinct words, the most frequent {top} times). Lower min_count."
            )
        self.effective_min_count = eff
        self.corpus_count = n
        self.corpus_total_words = total
        self.raw_vocab = counts if keep_raw_vocab else None
        self._sample_thr = sample_thr
        self._prepare_tables(keys, cnt)
        rng = np.random.default_rng(self.seed)
        V, D = len(keys), self.vector_size
        self._syn0p = _padded(V, D, rng=rng)
        self._syn1negp = _padded(V, D) if self.negative else None
        self._syn1p = _padded(V, D) if self.hs else None
        self._expose(keys, cnt)

    def _prepare_tables(self, keys, cnt):
        if self.negative:
            self._alias_thr, self._alias_idx = _vocab.alias_table(cnt, self.ns_exponent)
        else:
            self._alias_thr, self._alias_idx = np.zeros(0, np.uint32), np.zeros(0, np.int32)
        if self.hs:
            self._codes, self._points, self._code_off = _vocab.huffman(cnt)
        else:
            self._codes, self._points, self._code_off = np.zeros(0, np.uint8), np.zeros(0, np.int32), np.zeros(0, np.int64)

    def _expose(self, keys, cnt):
        D = self.vector_size
        self.wv._set(keys, self._syn0p[:, :D], cnt)
        self.syn1neg = self._syn1negp[:, :D] if self._syn1negp is not None else None
        self.syn1 = self._syn1p[:, :D] if self._syn1p is not None else None

    # -- training -------------------------------------------------------------------------
    def train(self, corpus_iterable=None, corpus_file=None, total_examples=None, total_words=None, epochs=None,
              start_alpha=None, end_alpha=None, word_count=0, queue_factor=2, report_delay=1.0,
              compute_loss=None, callbacks=None, **kwargs):
        """Train for ``epochs`` epochs (default: the constructor's) over the corpus.

        Returns ``(effective_words, raw_words)`` summed over the epochs, like gensim.
        """
        if self._syn0p is None:
            raise RuntimeError("Word2Vec.train: build the vocabulary first (build_vocab), or pass sentences to the constructor")
        if corpus_file is not None:
            corpus_iterable = self._file_corpus(corpus_file)
        if corpus_iterable is None:
            raise ValueError("Word2Vec.train: give corpus_iterable (sentences) or corpus_file")
        epochs = self.epochs if epochs is None else _int_arg("epochs", epochs, "Word2Vec.train")
        if compute_loss is not None:
            self.compute_loss = bool(compute_loss)
        cbs = self.callbacks if callbacks is None else tuple(callbacks)
        alpha = self.alpha if start_alpha is None else float(start_alpha)
        min_alpha = self.min_alpha if end_alpha is None else float(end_alpha)
        words, sent_off, raw, n = _vocab.pack(corpus_iterable, self.wv.key_to_index)
        if raw == 0:
            raise ValueError("Word2Vec.train: the corpus is empty" + (" (a generator already consumed by build_vocab?"
                             " pass a list or a restartable iterable)" if n == 0 else ""))
        job_off = _vocab.jobs(sent_off)
        seed = (self.seed + 7919 * self.train_count) & SEED_MAX
        for cb in cbs:
            getattr(cb, "on_train_begin", lambda m: None)(self)
        eff_total = 0
        t0 = time.perf_counter()
        self.epoch_losses = []
        for ep in range(epochs):
            for cb in cbs:
                getattr(cb, "on_epoch_begin", lambda m: None)(self)
            loss, eff, _pairs = word2vec_train_epoch(
                self._syn0p, self._syn1negp, self._syn1p, words, sent_off, job_off, self._sample_thr,
                self._alias_thr, self._alias_idx, self._codes, self._points, self._code_off, self.sg, self.hs,
                self.negative, self.window, self.cbow_mean, int(self.shrink_windows), alpha, min_alpha, ep, epochs,
                seed, self.workers, self.compute_loss)
            eff_total += eff
            self.running_training_loss = float(loss)
            self.epoch_losses.append(float(loss))
            for cb in cbs:
                getattr(cb, "on_epoch_end", lambda m: None)(self)
        self.total_train_time += time.perf_counter() - t0
        self.train_count += 1
        self.wv.norms = None
        for cb in cbs:
            getattr(cb, "on_train_end", lambda m: None)(self)
        return eff_total, raw * epochs

    def get_latest_training_loss(self):
        """Loss of the latest epoch: sum over its training examples of -log p (float64).

        0.0 unless ``compute_loss=True``. Per epoch, not a running total (gensim sums).
        """
        return self.running_training_loss

    # -- persistence ----------------------------------------------------------------------
    _HYPER = ("vector_size", "window", "min_count", "max_vocab_size", "sample", "sg", "hs", "negative",
              "ns_exponent", "cbow_mean", "alpha", "min_alpha", "epochs", "workers", "seed", "compute_loss",
              "max_final_vocab", "shrink_windows", "corpus_count", "corpus_total_words", "train_count",
              "effective_min_count")

    def save(self, fname, *args, key=None, **kwargs):
        """Save the whole model (for further training) to one .npz file; no pickle; atomic.
        ``key``: encrypt it (AES-256-GCM, see pyaiml.privacy)."""
        if self._syn0p is None:
            raise RuntimeError("Word2Vec.save: the model has no vocabulary yet")
        meta = {"format": FORMAT, **{k: getattr(self, k) for k in self._HYPER}}
        arrays = {"meta": _json_arr(meta), "keys": _json_arr(self.wv.index_to_key),
                  "vectors": np.ascontiguousarray(self.wv.vectors),
                  "counts": self.wv.expandos["count"], "sample_thr": self._sample_thr}
        if self.syn1neg is not None:
            arrays["syn1neg"] = np.ascontiguousarray(self.syn1neg)
        if self.syn1 is not None:
            arrays["syn1"] = np.ascontiguousarray(self.syn1)
        atomic_savez(fname, key=key, inner="word2vec", **arrays)

    @classmethod
    def load(cls, fname, *args, key=None, **kwargs):
        """Load a model written by :meth:`save`.

        Every member is checked against the others before use (hyperparameters as the
        constructor checks them, shapes, counts >= 0, the output weights the settings need);
        anything amiss is a ``ValueError`` naming the file."""
        op = "Word2Vec.load"
        path = os.fspath(fname)
        z, meta = _load_npz(path, op, key, "word2vec")
        if meta["format"] != FORMAT:
            raise bad_file(op, path, f"format {meta['format']!r}, expected {FORMAT!r} (KeyedVectors files load "
                                     "with KeyedVectors.load)")
        missing = [k for k in cls._HYPER if k not in meta]
        if missing:
            raise bad_file(op, path, f"meta lacks {missing}")
        m = cls.__new__(cls)
        try:
            Word2Vec.__init__(m, vector_size=meta["vector_size"], window=meta["window"],
                              min_count=meta["min_count"], max_vocab_size=meta["max_vocab_size"],
                              sample=meta["sample"], sg=meta["sg"], hs=meta["hs"], negative=meta["negative"],
                              ns_exponent=meta["ns_exponent"], cbow_mean=meta["cbow_mean"], alpha=meta["alpha"],
                              min_alpha=meta["min_alpha"], epochs=meta["epochs"], workers=meta["workers"],
                              seed=meta["seed"], compute_loss=meta["compute_loss"],
                              max_final_vocab=meta["max_final_vocab"], shrink_windows=meta["shrink_windows"])
        except (ValueError, TypeError) as e:
            raise bad_file(op, path, f"its settings are invalid: {e}") from None
        for k in ("corpus_count", "corpus_total_words", "train_count", "effective_min_count"):
            v = meta[k]
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= INT64_MAX:
                raise bad_file(op, path, f"{k} must be an integer >= 0. Received {v!r}")
            setattr(m, k, v)
        want = {"meta", "keys", "vectors", "counts", "sample_thr"} | ({"syn1neg"} if m.negative else set()) \
            | ({"syn1"} if m.hs else set())
        if set(z) != want:
            raise bad_file(op, path, f"members {sorted(z)}, expected {sorted(want)} for negative={m.negative}, "
                                     f"hs={m.hs}")
        keys = _check_keys(_from_json_arr(z["keys"], op, path, "keys"), op, path)
        V, D = len(keys), m.vector_size
        if V < 1:
            raise bad_file(op, path, "the vocabulary is empty")
        vec = _check_matrix(z["vectors"], (V, D), op, path, "vectors")
        cnt = _check_counts(z["counts"], V, op, path, "counts")
        if m.negative and not cnt.any():
            raise bad_file(op, path, "counts are all 0, so there is no noise distribution for negative sampling")
        thr = z["sample_thr"]
        if thr.dtype != np.uint32 or thr.shape != (V,):
            raise bad_file(op, path, f"sample_thr must be {V} uint32 values. Received {thr.dtype} {thr.shape}")
        m._sample_thr = thr
        m._prepare_tables(keys, cnt)
        m._syn0p = _padded(V, D, fill=vec)
        m._syn1negp = _padded(V, D, fill=_check_matrix(z["syn1neg"], (V, D), op, path, "syn1neg")) if m.negative \
            else None
        m._syn1p = _padded(V, D, fill=_check_matrix(z["syn1"], (V, D), op, path, "syn1")) if m.hs else None
        m._expose(keys, cnt)
        return m

    def __repr__(self):
        return (f"Word2Vec<vocab={len(self.wv)}, vector_size={self.vector_size}, "
                f"{'skip-gram' if self.sg else 'CBOW'}, alpha={self.alpha}>")


class _LineCorpus:
    """A text file, one sentence per line, tokens separated by whitespace (restartable)."""

    def __init__(self, path):
        self.path = path

    def __iter__(self):
        with open(self.path, encoding="utf8", errors="replace") as f:
            for line in f:
                toks = line.split()
                for i in range(0, len(toks), _vocab.MAX_SENTENCE):
                    yield toks[i:i + _vocab.MAX_SENTENCE]
