"""The Lee background corpus and the WordSim-353 / Google analogy files bundled with gensim
(gensim/test/test_data), located offline, for Word2Vec quality checks and benchmarks.

Not here: downloading anything. Without gensim installed these return None.
Tests: tests/test_word2vec_quality.py (slow), benchmarks: pyaiml/bench/word2vec.py.
"""
from __future__ import annotations

import os
import re

_TOKEN = re.compile(r"[^\W\d_]{2,15}")


def test_data_dir():
    """gensim's bundled test-data folder, or None."""
    try:
        import gensim
    except ImportError:
        return None
    d = os.path.join(os.path.dirname(gensim.__file__), "test", "test_data")
    return d if os.path.isdir(d) else None


def _path(name):
    d = test_data_dir()
    if d is None:
        return None
    p = os.path.join(d, name)
    return p if os.path.exists(p) else None


def wordsim353_path():
    return _path("wordsim353.tsv")


def analogies_path():
    return _path("questions-words.txt")


def lee_sentences(min_words=0):
    """Lee background corpus, one document per sentence, lower-cased alphabetic tokens of
    2-15 letters; repeated whole until it has at least ``min_words`` words. None if absent."""
    p = _path("lee_background.cor")
    if p is None:
        return None
    with open(p, encoding="utf8", errors="replace") as f:
        docs = [_TOKEN.findall(line.lower()) for line in f]
    docs = [d for d in docs if d]
    n = sum(map(len, docs))
    rep = max(1, -(-min_words // n)) if min_words else 1
    return docs * rep
