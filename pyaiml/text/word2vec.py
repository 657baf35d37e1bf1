"""Word2Vec with gensim 4's interface, trained by pyaiml's C++ kernel (Numba fallback).

Python side (this file and vocab.py): vocabulary, subsampling thresholds, the noise alias
table and the Huffman tree, and the corpus packed into int32 arrays once per ``train``
call. Native side (``pyaiml.ops.word2vec_train_epoch``: csrc/cpu/word2vec.cpp, or
pyaiml/_numba/word2vec.py): one call per epoch over those arrays, in ``workers`` threads,
GIL released, learning rate decaying linearly from ``alpha`` to ``min_alpha`` over all
epochs as in gensim.

gensim 4's model API is here too: ``build_vocab`` (also ``update=True`` for online
training: new words are appended, counts of known words grow), ``scan_vocab`` /
``prepare_vocab`` (with gensim's report), ``build_vocab_from_freq``, ``train`` (explicit
``epochs`` and ``total_examples``/``total_words``, as gensim demands), ``score``
(hierarchical softmax), ``predict_output_word`` (negative sampling), ``reset_from``,
``get_latest_training_loss`` (gensim's running total over the latest ``train`` call),
``wv.vectors_lockf`` (per-word update factor; 0 freezes a word), gensim's log warnings and
exception types (an empty vocabulary is a ``ValueError`` that is also the ``RuntimeError``
gensim raises; ``load`` called on an instance, or on a KeyedVectors file, an
``AttributeError``).

Differences from gensim, on purpose:
- a sentence given as a plain ``str`` is tokenised (``pyaiml.text.simple_tokenize``, with a
  one-time warning and a log line), where gensim would train on its characters;
- a one-shot iterator (generator) with ``epochs > 1`` is an error (gensim silently trains
  on nothing after the first pass); with ``epochs == 1`` it is read once into memory;
- ``workers=1`` with a ``seed`` is exactly repeatable (gensim is not, because of its
  per-word hash seeding and threads); with more workers updates race (Hogwild), as in gensim;
- the corpus is held in memory as int32 ids during ``train`` (4 bytes per word);
- ``save``/``load`` use one .npz file (arrays + JSON), never pickle; ``load`` checks every
  member against the others and raises ``ValueError`` naming the file for anything amiss.
  A model saved by gensim (a pickle) is refused with :class:`GensimPickleError`, which says
  how to import it: ``Word2Vec.load(path, trusted=True)`` reads it through gensim (when
  installed) and converts it; ``Word2Vec.from_gensim(model)`` converts a model in memory.

Tests: tests/test_word2vec*.py, tests/test_w2v_*.py, tools/peer_gensim.py (gensim's own
tests); benchmarks: pyaiml/bench/word2vec.py.
"""
from __future__ import annotations

import logging
import os
import time

import numpy as np

from pyaiml._io import atomic_savez, bad_file
from pyaiml.ops.word2vec import (
    INT32_MAX,
    INT64_MAX,
    MAX_NEGATIVE,
    MAX_WORKERS,
    word2vec_train_epoch,
)
from pyaiml.text import vocab as _vocab
from pyaiml.text.corpora import LineSentence
from pyaiml.text.keyedvectors import (
    GensimPickleError,
    KeyedVectors,
    WrongClassError,
    _check_counts,
    _check_keys,
    _check_matrix,
    _from_json_arr,
    _json_arr,
    _load_npz,
    gensim_pickle_error,
    is_gensim_pickle,
    load_gensim,
)

FORMAT = "pyaiml.Word2Vec/1"
SEED_MAX = 2**64 - 1
PAD = 16  # rows padded to 16 floats (64 bytes): whole SIMD vectors, cache-line aligned rows

logger = logging.getLogger("pyaiml.text")

__all__ = ["GensimPickleError", "VocabularyError", "Word2Vec"]


class VocabularyError(ValueError, RuntimeError):
    """An empty corpus or vocabulary: a ValueError, and the RuntimeError gensim raises."""


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
INT_ARGS = {"vector_size": (1, INT32_MAX), "window": (1, INT32_MAX), "min_count": (0, INT64_MAX),
            "epochs": (1, INT64_MAX), "workers": (1, MAX_WORKERS), "negative": (0, MAX_NEGATIVE),
            "max_vocab_size": (1, INT64_MAX), "max_final_vocab": (1, INT64_MAX), "seed": (0, SEED_MAX),
            "total_examples": (0, INT64_MAX), "total_words": (0, INT64_MAX), "corpus_count": (0, INT64_MAX),
            "topn": (0, INT64_MAX)}


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


class _ClassOnly:
    """A classmethod that raises AttributeError when looked up on an instance (gensim's
    ``model.load(path)`` is an AttributeError: load returns a new model, it does not fill one)."""

    def __init__(self, fn):
        self.fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, obj, cls):
        if obj is not None:
            raise AttributeError(f"{cls.__name__}.{self.fn.__name__} is a class method that returns a new model: call "
                                 f"{cls.__name__}.{self.fn.__name__}(path), not model.{self.fn.__name__}(path)")
        return self.fn.__get__(cls, type(cls))


class Word2Vec:
    """Word2Vec (skip-gram or CBOW; negative sampling and/or hierarchical softmax).

    Parameters mirror ``gensim.models.Word2Vec`` (gensim 4): ``sentences`` (iterable of
    token lists; plain strings are tokenised), ``corpus_file`` (one sentence per line,
    tokens separated by whitespace; gzip/bzip2 files are read too), ``vector_size``,
    ``window``, ``min_count`` (0 keeps every word), ``max_vocab_size``, ``sample``, ``sg``,
    ``hs``, ``negative``, ``ns_exponent``, ``cbow_mean``, ``alpha``, ``min_alpha``,
    ``epochs``, ``workers`` (trainer threads), ``seed``, ``trim_rule``, ``compute_loss``,
    ``callbacks``, ``max_final_vocab``, ``shrink_windows``. If ``sentences`` or
    ``corpus_file`` is given, the vocabulary is built and the model trained at once.

    Models saved by gensim are pickles, which ``load`` never unpickles by default: it raises
    :class:`GensimPickleError` saying how to import one. ``Word2Vec.load(path,
    trusted=True)`` reads a file you trust through gensim (installed separately) and
    converts it; ``Word2Vec.from_gensim(model)`` converts a gensim model in memory. Then
    ``save`` writes pyaiml's pickle-free format.

    Attributes
    ----------
    wv : KeyedVectors
        The word vectors, ``wv.vectors`` (V, vector_size) float32; ``wv.vectors_lockf``
        scales each word's input-vector updates (1: train, 0: frozen).
    syn1neg, syn1 : ndarray (V, vector_size)
        Output weights of negative sampling / hierarchical softmax.
    corpus_count, corpus_total_words : sentences and words of the latest vocabulary scan.
    raw_vocab : dict word -> count of the latest scan (until ``prepare_vocab`` drops it).
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
        self._sample_thr = None
        self.raw_vocab = None
        self.corpus_count = 0
        self.corpus_total_words = 0
        self.epoch_losses: list[float] = []
        self.running_training_loss = 0.0
        self.min_alpha_yet_reached = self.alpha
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
            self.build_vocab(sentences, trim_rule=trim_rule)
            self.train(sentences, total_examples=self.corpus_count, epochs=self.epochs)

    # -- corpus ---------------------------------------------------------------------------
    @staticmethod
    def _file_corpus(corpus_file):
        if not isinstance(corpus_file, (str, bytes, os.PathLike)):
            raise TypeError(f"Word2Vec: corpus_file must be a path. Received {type(corpus_file).__name__}")
        return LineSentence(os.fspath(corpus_file))

    # -- vocabulary -----------------------------------------------------------------------
    def scan_vocab(self, corpus_iterable=None, corpus_file=None, progress_per=10000, workers=None, trim_rule=None):
        """Count the words of a corpus into ``raw_vocab``; returns ``(total_words, corpus_count)``."""
        if corpus_file is not None:
            corpus_iterable = self._file_corpus(corpus_file)
        if corpus_iterable is None:
            raise ValueError("Word2Vec.scan_vocab: give corpus_iterable (sentences) or corpus_file")
        counts, total, n = _vocab.scan(corpus_iterable, self.max_vocab_size,
                                       trim_rule if trim_rule is not None else self.trim_rule)
        self.raw_vocab = counts
        self.corpus_count = n
        self.corpus_total_words = total
        return total, n

    def prepare_vocab(self, update=False, keep_raw_vocab=False, trim_rule=None, min_count=None, sample=None,
                      dry_run=False):
        """Apply ``min_count`` / ``max_final_vocab`` / ``trim_rule`` to ``raw_vocab`` and set the
        vocabulary (or, with ``update``, add new words to it and counts to known ones).

        Returns gensim's report: ``drop_unique`` (distinct words dropped), ``retain_total``
        (occurrences of the words kept), ``num_retained_words``, ``downsample_unique`` (kept
        words that subsampling thins) and ``downsample_total`` (expected occurrences left
        after subsampling). ``dry_run`` computes the report only.
        """
        if self.raw_vocab is None:
            raise RuntimeError("Word2Vec.prepare_vocab: scan a corpus first (scan_vocab or build_vocab)")
        min_count = self.min_count if min_count is None else _int_arg("min_count", min_count, "prepare_vocab")
        sample = self.sample if sample is None else float(sample)
        trim_rule = trim_rule if trim_rule is not None else self.trim_rule
        raw = self.raw_vocab
        eff = min_count
        if self.max_final_vocab is not None and self.max_final_vocab < len(raw):
            ordered = sorted(raw.values(), reverse=True)
            eff = max(min_count, ordered[self.max_final_vocab] + 1)
        kept = [(w, c) for w, c in raw.items() if _vocab._keep(w, c, eff, trim_rule)]
        drop_unique = len(raw) - len(kept)
        retain_total = sum(c for _, c in kept)
        cnt = np.array([c for _, c in kept], dtype=np.float64)
        if len(cnt) and retain_total > 0:
            keep_p = _vocab.sample_thresholds(cnt, sample).astype(np.float64) / 2.0**32
            keep_p = np.where(keep_p > 1.0 - 2.0**-31, 1.0, keep_p)
        else:
            keep_p = np.ones(len(cnt))
        report = {"drop_unique": drop_unique, "retain_total": int(retain_total),
                  "downsample_unique": int((keep_p < 1.0).sum()), "downsample_total": int((cnt * keep_p).sum()),
                  "num_retained_words": len(kept)}
        if dry_run:
            return report
        self.effective_min_count = eff
        if update:
            if not len(self.wv):
                raise RuntimeError("Word2Vec.build_vocab(update=True): the model has no vocabulary to update; build "
                                   "it from a corpus first (update=False)")
            keys = list(self.wv.index_to_key)
            counts = self.wv.expandos["count"].tolist()
            k2i = self.wv.key_to_index
            added = []
            for w, c in kept:
                i = k2i.get(w)
                if i is None:
                    added.append(w)
                    keys.append(w)
                    counts.append(c)
                else:
                    counts[i] += c
            self._vocab_set(keys, np.array(counts, dtype=np.int64), len(added))
        else:
            if not kept:
                # gensim leaves the model without a vocabulary here and fails in train(); the
                # reason is kept for that error and logged now
                top = max(raw.values()) if raw else 0
                self._empty_reason = (f"Word2Vec: the vocabulary is empty: no word occurs at least min_count={eff} "
                                      f"times ({len(raw)} distinct words, the most frequent {top} times). Lower "
                                      "min_count.")
                logger.warning(self._empty_reason)
                self._syn0p = self._syn1negp = self._syn1p = self._sample_thr = None
                self._expose([], np.zeros(0, np.int64))
                if not keep_raw_vocab:
                    self.raw_vocab = None
                return report
            self._empty_reason = None
            kept.sort(key=lambda wc: -wc[1])  # stable: first seen first among equal counts
            self._vocab_set([w for w, _ in kept], np.array([c for _, c in kept], dtype=np.int64), None)
        if not keep_raw_vocab:
            self.raw_vocab = None
        return report

    def _vocab_set(self, keys, cnt, added):
        """Install a vocabulary: tables, and weights (fresh, or grown by ``added`` rows)."""
        self._sample_thr = _vocab.sample_thresholds(cnt, self.sample)
        self._prepare_tables(keys, cnt)
        V, D = len(keys), self.vector_size
        if added is None or self._syn0p is None:
            rng = np.random.default_rng(self.seed)
            self._syn0p = _padded(V, D, rng=rng)
            self._syn1negp = _padded(V, D) if self.negative else None
            self._syn1p = _padded(V, D) if self.hs else None
            lockf = None
        else:
            old = self._syn0p.shape[0]
            # new words get their own seeded stream: same seed and vocabulary size -> same vectors
            rng = np.random.default_rng([self.seed, old, V])
            syn0 = _padded(V, D)
            syn0[:old] = self._syn0p
            syn0[old:, :D] = _padded(V - old, D, rng=rng)[:, :D]
            self._syn0p = syn0
            for name in ("_syn1negp", "_syn1p"):
                m = getattr(self, name)
                if m is not None:
                    g = _padded(V, D)
                    g[:old] = m
                    setattr(self, name, g)
            lockf = self.wv.vectors_lockf
            if lockf is not None and len(lockf) not in (0, 1):
                lockf = np.concatenate([np.asarray(lockf, np.float32)[:old], np.ones(V - old, np.float32)])
        self._expose(keys, cnt)
        if lockf is not None:
            self.wv.vectors_lockf = lockf

    def build_vocab(self, corpus_iterable=None, corpus_file=None, update=False, progress_per=10000,
                    keep_raw_vocab=False, trim_rule=None, **kwargs):
        """Scan the corpus, keep words seen at least ``min_count`` times, build the tables.

        ``update=True`` adds the corpus to a trained model's vocabulary (online training):
        new words are appended with fresh vectors, known words' counts grow, the tables are
        rebuilt, the trained weights are kept.
        """
        if corpus_file is not None:
            corpus_iterable = self._file_corpus(corpus_file)
        if corpus_iterable is None:
            raise ValueError("build_vocab: give corpus_iterable (sentences) or corpus_file")
        total, n = self.scan_vocab(corpus_iterable, trim_rule=trim_rule)
        if total == 0:
            raise VocabularyError("Word2Vec: the corpus is empty (no sentences, or only empty ones)"
                                  + (" - was a generator already consumed?" if n == 0 else ""))
        return self.prepare_vocab(update=update, keep_raw_vocab=keep_raw_vocab, trim_rule=trim_rule)

    def build_vocab_from_freq(self, word_freq, keep_raw_vocab=False, corpus_count=None, trim_rule=None,
                              update=False):
        """Build (or, with ``update``, extend) the vocabulary from ``{word: count}``."""
        if not hasattr(word_freq, "items"):
            raise TypeError(f"build_vocab_from_freq: word_freq must be a dict of word -> count. Received "
                            f"{type(word_freq).__name__}")
        raw = {}
        for w, c in word_freq.items():
            if not isinstance(w, str):
                raise TypeError(f"build_vocab_from_freq: words must be str. Received {type(w).__name__} {w!r:.60}")
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0:
                raise ValueError(f"build_vocab_from_freq: counts must be integers >= 0. Received {c!r} for {w!r}")
            raw[w] = int(c)
        if not raw:
            raise VocabularyError("build_vocab_from_freq: word_freq is empty")
        self.raw_vocab = raw
        self.corpus_count = _int_arg("corpus_count", corpus_count, "build_vocab_from_freq") if corpus_count else 0
        self.corpus_total_words = sum(raw.values())
        return self.prepare_vocab(update=update, keep_raw_vocab=keep_raw_vocab, trim_rule=trim_rule)

    def reset_from(self, other_model):
        """Take ``other_model``'s vocabulary (keys, counts, tables, corpus sizes) and start from
        fresh weights."""
        if not isinstance(other_model, Word2Vec) or other_model._sample_thr is None:
            raise TypeError("Word2Vec.reset_from: other_model must be a pyaiml Word2Vec with a vocabulary. Received "
                            f"{type(other_model).__name__}")
        self.corpus_count = other_model.corpus_count
        self.corpus_total_words = other_model.corpus_total_words
        self.effective_min_count = other_model.effective_min_count
        self._syn0p = None
        self._vocab_set(list(other_model.wv.index_to_key), other_model.wv.expandos["count"].copy(), None)

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
        lockf = self.wv.vectors_lockf
        self.wv = KeyedVectors(D) if not isinstance(self.wv, KeyedVectors) else self.wv
        self.wv.expandos.clear()
        self.wv._set(keys, self._syn0p[:, :D] if self._syn0p is not None else np.zeros((0, D), np.float32), cnt)
        if self.hs and len(keys):
            # gensim's per-word Huffman attributes (object arrays: not saved by KeyedVectors.save)
            off = self._code_off
            code, point = np.empty(len(keys), object), np.empty(len(keys), object)
            for i in range(len(keys)):
                code[i] = self._codes[off[i]:off[i + 1]]
                point[i] = self._points[off[i]:off[i + 1]]
            self.wv.expandos["code"], self.wv.expandos["point"] = code, point
        self.wv.vectors_lockf = lockf if lockf is not None and len(lockf) == 1 else np.ones(1, np.float32)
        self.syn1neg = self._syn1negp[:, :D] if self._syn1negp is not None else None
        self.syn1 = self._syn1p[:, :D] if self._syn1p is not None else None

    def _trainable(self, op):
        """Raise unless wv is still the vocabulary and weights that build_vocab made."""
        if self._syn0p is None or self.wv.vectors.shape != (self._syn0p.shape[0], self.vector_size) \
                or not np.may_share_memory(self.wv.vectors, self._syn0p):
            raise RuntimeError(f"{op}: the model's wv is not the one build_vocab made (it was replaced, or keys "
                               "were added to it), so there are no output weights and tables to go with it; build "
                               "the vocabulary with build_vocab(...) first")

    def _lockf(self, V):
        lf = self.wv.vectors_lockf
        if lf is None:
            return None
        lf = np.asarray(lf, dtype=np.float32).reshape(-1)
        if lf.shape[0] == 1:
            if lf[0] == 1.0:
                return None
            return np.full(V, lf[0], np.float32)
        if lf.shape[0] != V:
            raise ValueError(f"Word2Vec.train: wv.vectors_lockf must have 1 or {V} (vocabulary size) values. Received "
                             f"{lf.shape[0]}")
        if not np.isfinite(lf).all():
            raise ValueError("Word2Vec.train: wv.vectors_lockf must be finite")
        return None if (lf == 1.0).all() else np.ascontiguousarray(lf)

    # -- training -------------------------------------------------------------------------
    def train(self, corpus_iterable=None, corpus_file=None, total_examples=None, total_words=None, epochs=None,
              start_alpha=None, end_alpha=None, word_count=0, queue_factor=2, report_delay=1.0,
              compute_loss=None, callbacks=None, **kwargs):
        """Train for ``epochs`` epochs over the corpus (gensim's contract: ``epochs`` and one of
        ``total_examples``/``total_words`` must be given, usually ``model.corpus_count`` and
        ``model.epochs``; pyaiml counts the corpus itself for the learning-rate decay).

        Returns ``(effective_words, raw_words)`` summed over the epochs, like gensim.
        """
        op = "Word2Vec.train"
        if not self.hs and not self.negative:
            raise ValueError(f"{op}: hs=0 with negative=0 leaves nothing to train; set hs=1 or negative>0")
        if self.hs and self.negative:
            logger.warning("Both hierarchical softmax and negative sampling are activated. pyaiml trains both "
                           "output layers; set hs=0 or negative=0 unless that is what you want.")
        alpha = self.alpha if start_alpha is None else float(start_alpha)
        min_alpha = self.min_alpha if end_alpha is None else float(end_alpha)
        if alpha > self.min_alpha_yet_reached:
            logger.warning("Effective 'alpha' higher than previous training cycles: %g after %g was reached",
                           alpha, self.min_alpha_yet_reached)
        if not self.wv.key_to_index:
            why = getattr(self, "_empty_reason", None)
            raise VocabularyError((why + " " if why else f"{op}: ") + "build the vocabulary first (build_vocab), or "
                                  "pass sentences to the constructor")
        if total_examples is None and total_words is None:
            raise ValueError(f"{op}: give total_examples (sentences) or total_words, as gensim requires; after "
                             "build_vocab on the same corpus, total_examples=model.corpus_count")
        if epochs is None:
            raise ValueError(f"{op}: give epochs explicitly, as gensim requires (usually epochs=model.epochs)")
        for name, v in (("total_examples", total_examples), ("total_words", total_words)):
            if v is not None:
                _int_arg(name, v, op)
        epochs = _int_arg("epochs", epochs, op)
        self._trainable(op)
        if corpus_file is not None:
            corpus_iterable = self._file_corpus(corpus_file)
        if corpus_iterable is None:
            raise ValueError(f"{op}: give corpus_iterable (sentences) or corpus_file")
        for name, v in (("alpha", alpha), ("min_alpha", min_alpha)):
            if not np.isfinite(v):
                raise ValueError(f"{op}: {name} must be finite. Received {v}")
        if compute_loss is not None:
            self.compute_loss = bool(compute_loss)
        cbs = self.callbacks if callbacks is None else tuple(callbacks)
        words, sent_off, raw, n = _vocab.pack(corpus_iterable, self.wv.key_to_index)
        if raw == 0:
            raise ValueError(f"{op}: the corpus is empty" + (" (a generator already consumed by build_vocab?"
                             " pass a list or a restartable iterable)" if n == 0 else ""))
        lockf = self._lockf(self._syn0p.shape[0])
        job_off = _vocab.jobs(sent_off)
        seed = (self.seed + 7919 * self.train_count) & SEED_MAX
        for cb in cbs:
            getattr(cb, "on_train_begin", lambda m: None)(self)
        eff_total = 0
        t0 = time.perf_counter()
        self.epoch_losses = []
        self.running_training_loss = 0.0
        extra = {} if lockf is None else {"lockf": lockf}
        for ep in range(epochs):
            for cb in cbs:
                getattr(cb, "on_epoch_begin", lambda m: None)(self)
            loss, eff, _pairs = word2vec_train_epoch(
                self._syn0p, self._syn1negp, self._syn1p, words, sent_off, job_off, self._sample_thr,
                self._alias_thr, self._alias_idx, self._codes, self._points, self._code_off, self.sg, self.hs,
                self.negative, self.window, self.cbow_mean, int(self.shrink_windows), alpha, min_alpha, ep, epochs,
                seed, self.workers, self.compute_loss, **extra)
            eff_total += eff
            self.running_training_loss += float(loss)
            self.epoch_losses.append(float(loss))
            for cb in cbs:
                getattr(cb, "on_epoch_end", lambda m: None)(self)
        self.min_alpha_yet_reached = min_alpha
        self.total_train_time += time.perf_counter() - t0
        self.train_count += 1
        self.wv.norms = None
        for cb in cbs:
            getattr(cb, "on_train_end", lambda m: None)(self)
        return eff_total, raw * epochs

    def get_latest_training_loss(self):
        """Loss of the latest ``train`` call so far: the sum over its training examples of
        -log p, over all its epochs (gensim's running total; float64 here). 0.0 unless
        ``compute_loss=True``. ``epoch_losses`` holds the per-epoch values."""
        return self.running_training_loss

    # -- queries --------------------------------------------------------------------------
    def _ids(self, words):
        return [self.wv.get_index(w) for w in words if self.wv.has_index_for(w)]

    def score(self, sentences, total_sentences=int(1e6), chunksize=100, queue_factor=2, report_delay=1):
        """Log probability of each sentence under the model (hierarchical softmax only, as in
        gensim): for skip-gram the sum over (word, context word) pairs in the full window of
        log p(word | context word); for CBOW the sum over words of log p(word | window mean
        or sum). Out-of-vocabulary words are skipped. Returns float32 (n,), n the number of
        sentences read (at most ``total_sentences``)."""
        if not self.hs:
            raise RuntimeError("Word2Vec.score: only hierarchical softmax models can be scored (gensim's rule); "
                               "train with hs=1, negative=0")
        self._trainable("Word2Vec.score")
        total_sentences = _int_arg("total_examples", total_sentences, "Word2Vec.score")
        D = self.vector_size
        syn0 = np.asarray(self.wv.vectors, dtype=np.float64)
        syn1 = np.asarray(self._syn1p[:, :D], dtype=np.float64)
        out = []
        for s in _vocab.iter_sentences(sentences):
            if len(out) >= total_sentences:
                break
            ids = self._ids(s)
            lp = 0.0
            for pos, w in enumerate(ids):
                c0, c1 = self._code_off[w], self._code_off[w + 1]
                pts = self._points[c0:c1]
                sgn = 1.0 - 2.0 * self._codes[c0:c1].astype(np.float64)  # code 0 -> +1, 1 -> -1
                lo, hi = max(0, pos - self.window), pos + self.window + 1
                ctx = [c for p2, c in enumerate(ids[lo:hi], lo) if p2 != pos]
                if not ctx or not len(pts):
                    continue
                if self.sg:
                    f = syn0[ctx] @ syn1[pts].T  # (contexts, path)
                else:
                    l1 = syn0[ctx].sum(axis=0)
                    if self.cbow_mean:
                        l1 /= len(ctx)
                    f = (syn1[pts] @ l1)[None]
                lp -= float(np.logaddexp(0.0, -sgn * f).sum())
            out.append(lp)
        return np.array(out, dtype=np.float32)

    def predict_output_word(self, context_words_list, topn=10):
        """The ``topn`` words most probable at the centre of ``context_words_list`` (words or
        indices), by the negative-sampling output layer: softmax over the vocabulary of
        syn1neg @ (mean or sum of the context vectors). ``None`` if no context word is known.
        """
        if not self.negative:
            raise RuntimeError("Word2Vec.predict_output_word: needs the negative-sampling output layer (negative > "
                               "0), as in gensim; this model has negative=0")
        if self.syn1neg is None or self.syn1neg.shape[0] != len(self.wv):
            raise RuntimeError("Word2Vec.predict_output_word: the model has no output weights (syn1neg) for its "
                               "vocabulary (vectors loaded from a word2vec file, or wv replaced); build the "
                               "vocabulary and train first")
        topn = _int_arg("topn", topn, "Word2Vec.predict_output_word")
        ids = self._ids(context_words_list)
        if not ids:
            logger.warning("predict_output_word: none of the context words %s is in the vocabulary",
                           list(context_words_list)[:10])
            return None
        l1 = np.asarray(self.wv.vectors, dtype=np.float64)[ids].sum(axis=0)
        if self.cbow_mean:
            l1 /= len(ids)
        f = np.asarray(self.syn1neg, dtype=np.float64) @ l1
        p = np.exp(f - f.max())
        p /= p.sum()
        best = np.argsort(-p, kind="stable")[:topn]
        return [(self.wv.index_to_key[i], float(p[i])) for i in best]

    # -- persistence ----------------------------------------------------------------------
    _HYPER = ("vector_size", "window", "min_count", "max_vocab_size", "sample", "sg", "hs", "negative",
              "ns_exponent", "cbow_mean", "alpha", "min_alpha", "epochs", "workers", "seed", "compute_loss",
              "max_final_vocab", "shrink_windows", "corpus_count", "corpus_total_words", "train_count",
              "effective_min_count")

    def save(self, fname, *args, key=None, **kwargs):
        """Save the whole model (for further training) to one .npz file; no pickle; atomic.
        ``key``: encrypt it (AES-256-GCM, see pyaiml.privacy).

        gensim's extra arguments (``sep_limit``, ``ignore``, ``pickle_protocol``) are accepted
        and have no effect: everything goes into the one file."""
        if self._syn0p is None:
            raise RuntimeError("Word2Vec.save: the model has no vocabulary yet")
        self._trainable("Word2Vec.save")
        meta = {"format": FORMAT, **{k: getattr(self, k) for k in self._HYPER}}
        arrays = {"meta": _json_arr(meta), "keys": _json_arr(self.wv.index_to_key),
                  "vectors": np.ascontiguousarray(self.wv.vectors),
                  "counts": self.wv.expandos["count"], "sample_thr": self._sample_thr}
        if self.syn1neg is not None:
            arrays["syn1neg"] = np.ascontiguousarray(self.syn1neg)
        if self.syn1 is not None:
            arrays["syn1"] = np.ascontiguousarray(self.syn1)
        lockf = np.asarray(self.wv.vectors_lockf, dtype=np.float32).reshape(-1)
        if not (lockf == 1.0).all():
            arrays["vectors_lockf"] = lockf
        atomic_savez(fname, key=key, inner="word2vec", **arrays)

    def _load(cls, fname, mmap=None, trusted=False, key=None, **kwargs):
        """Load a model written by :meth:`save`.

        Every member is checked against the others before use (hyperparameters as the
        constructor checks them, shapes, counts >= 0, the output weights the settings need);
        anything amiss is a ``ValueError`` naming the file. A KeyedVectors file is a
        ``ValueError`` that is also gensim's ``AttributeError``. A model saved by gensim (a
        pickle) raises :class:`GensimPickleError` unless ``trusted=True``, which reads it
        through gensim (installed separately) and converts it: only for files you trust, since
        unpickling runs code from the file. ``mmap`` is accepted and has no effect."""
        op = "Word2Vec.load"
        path = os.fspath(fname)
        if is_gensim_pickle(path):
            if not trusted:
                raise gensim_pickle_error(op, path, "Word2Vec")
            return cls.from_gensim(load_gensim(path, "model"))
        z, meta = _load_npz(path, op, key, "word2vec")
        if meta["format"] != FORMAT:
            raise WrongClassError(bad_file(op, path, f"format {meta['format']!r}, expected {FORMAT!r} (KeyedVectors "
                                                     "files load with KeyedVectors.load)").args[0])
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
        if set(z) - {"vectors_lockf"} != want:
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
        lockf = None
        if "vectors_lockf" in z:
            lockf = z["vectors_lockf"]
            if lockf.dtype != np.float32 or lockf.shape not in ((1,), (V,)) or not np.isfinite(lockf).all():
                raise bad_file(op, path, f"vectors_lockf must be 1 or {V} finite float32 values. Received "
                                         f"{lockf.dtype} {lockf.shape}")
        m._sample_thr = thr
        m._prepare_tables(keys, cnt)
        m._syn0p = _padded(V, D, fill=vec)
        m._syn1negp = _padded(V, D, fill=_check_matrix(z["syn1neg"], (V, D), op, path, "syn1neg")) if m.negative \
            else None
        m._syn1p = _padded(V, D, fill=_check_matrix(z["syn1"], (V, D), op, path, "syn1")) if m.hs else None
        m._expose(keys, cnt)
        if lockf is not None:
            m.wv.vectors_lockf = lockf
        m.min_alpha_yet_reached = m.min_alpha if m.train_count else m.alpha
        return m

    load = _ClassOnly(_load)

    @classmethod
    def from_gensim(cls, model):
        """A pyaiml Word2Vec with the settings, vocabulary, counts and weights of a gensim 4
        ``Word2Vec`` object (e.g. from ``gensim.models.Word2Vec.load``); trains on from there."""
        wv = getattr(model, "wv", None)
        if wv is None or not hasattr(wv, "index_to_key") or not hasattr(model, "vector_size"):
            raise TypeError(f"Word2Vec.from_gensim: model must be a gensim 4 Word2Vec. Received {type(model).__name__}")
        keys = [str(k) for k in wv.index_to_key]
        if not keys:
            raise ValueError("Word2Vec.from_gensim: the gensim model has no vocabulary")
        neg, hs = int(getattr(model, "negative", 0) or 0), int(bool(getattr(model, "hs", 0)))
        m = cls(vector_size=int(model.vector_size), window=int(model.window),
                min_count=int(getattr(model, "min_count", 5)), sample=float(getattr(model, "sample", 1e-3)),
                sg=int(bool(model.sg)), hs=hs, negative=neg, ns_exponent=float(getattr(model, "ns_exponent", 0.75)),
                cbow_mean=int(bool(getattr(model, "cbow_mean", 1))), alpha=float(model.alpha),
                min_alpha=float(getattr(model, "min_alpha", 1e-4)), epochs=int(getattr(model, "epochs", 5) or 5),
                workers=int(min(max(getattr(model, "workers", 3), 1), MAX_WORKERS)),
                seed=int(getattr(model, "seed", 1)) & SEED_MAX, max_vocab_size=getattr(model, "max_vocab_size", None),
                max_final_vocab=getattr(model, "max_final_vocab", None),
                shrink_windows=bool(getattr(model, "shrink_windows", True)))
        V, D = len(keys), m.vector_size
        try:
            cnt = np.array([int(wv.get_vecattr(k, "count") or 0) for k in wv.index_to_key], dtype=np.int64)
        except (KeyError, AttributeError, TypeError):
            cnt = np.arange(V, 0, -1, dtype=np.int64)
        m._sample_thr = _vocab.sample_thresholds(cnt, m.sample)
        m._prepare_tables(keys, cnt)
        m._syn0p = _padded(V, D, fill=np.asarray(wv.vectors, dtype=np.float32)[:V])
        m._syn1negp = _padded(V, D, fill=np.asarray(model.syn1neg, np.float32)[:V]) if neg else None
        m._syn1p = _padded(V, D, fill=np.asarray(model.syn1, np.float32)[:V]) if hs else None
        m._expose(keys, cnt)
        m.corpus_count = int(getattr(model, "corpus_count", 0) or 0)
        m.corpus_total_words = int(getattr(model, "corpus_total_words", 0) or 0)
        lockf = np.asarray(getattr(wv, "vectors_lockf", np.ones(1)), dtype=np.float32).reshape(-1)
        if lockf.shape[0] in (1, V):
            m.wv.vectors_lockf = lockf
        return m

    def __repr__(self):
        return (f"Word2Vec<vocab={len(self.wv)}, vector_size={self.vector_size}, "
                f"{'skip-gram' if self.sg else 'CBOW'}, alpha={self.alpha}>")
