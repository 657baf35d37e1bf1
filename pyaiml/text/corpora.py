"""Streamed text corpora for Word2Vec: ``LineSentence`` and ``PathLineSentences`` (gensim 4 names).

- ``LineSentence(source)``: one sentence per line, tokens separated by whitespace; ``source``
  is a path (plain, ``.gz`` or ``.bz2``, recognised by their magic bytes) or an open file
  object (rewound at every pass). Restartable: every ``iter()`` reads the file again, so a
  model can make several passes. Lines longer than ``max_sentence_length`` tokens are cut
  into pieces; ``limit`` reads the first lines only.
- ``PathLineSentences(source)``: the same over every file of a directory, in sorted name
  order (or over one file).

Not here: tokenisation beyond splitting on whitespace (pyaiml.text.tokenize), the vocabulary
(pyaiml/text/vocab.py). Tests: tests/test_w2v_gensim_api.py.
"""
from __future__ import annotations

import bz2
import gzip
import io
import os

MAX_WORDS = 10000  # gensim's MAX_WORDS_IN_BATCH: the longest sentence the trainer takes whole


def open_text_source(path):
    """A binary file object over ``path``, decompressing gzip and bzip2 files transparently."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"corpus file {path!r} does not exist")
    with open(path, "rb") as f:
        magic = f.read(3)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if magic == b"BZh":
        return bz2.open(path, "rb")
    return open(path, "rb")


def _check_len(name, v, lo):
    if v is None and name == "limit":
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"LineSentence: {name} must be an integer >= {lo}. Received {v!r}")
    return v


def _lines(f, max_sentence_length, limit):
    for n, line in enumerate(f):
        if limit is not None and n >= limit:
            return
        if isinstance(line, bytes):
            line = line.decode("utf8", errors="replace")
        toks = line.split()
        for i in range(0, len(toks), max_sentence_length):
            yield toks[i:i + max_sentence_length]


class LineSentence:
    """Sentences from a text file: one per line, tokens separated by whitespace.

    Parameters
    ----------
    source : str, os.PathLike or file object
        A path (plain text, gzip or bzip2) or an open file (text or binary; rewound per pass).
    max_sentence_length : int
        Longer lines are cut into pieces of this many tokens.
    limit : int or None
        Read only the first ``limit`` lines.
    """

    def __init__(self, source, max_sentence_length=MAX_WORDS, limit=None):
        if not (isinstance(source, (str, bytes, os.PathLike)) or hasattr(source, "read")):
            raise TypeError(f"LineSentence: source must be a path or an open file. Received {type(source).__name__}")
        self.source = source
        self.max_sentence_length = _check_len("max_sentence_length", max_sentence_length, 1)
        self.limit = _check_len("limit", limit, 0)

    def __iter__(self):
        if hasattr(self.source, "read"):
            try:
                self.source.seek(0)
            except (AttributeError, OSError, io.UnsupportedOperation):
                pass
            yield from _lines(self.source, self.max_sentence_length, self.limit)
        else:
            with open_text_source(self.source) as f:
                yield from _lines(f, self.max_sentence_length, self.limit)


class PathLineSentences:
    """``LineSentence`` over every file of a directory (sorted by name), or over one file."""

    def __init__(self, source, max_sentence_length=MAX_WORDS, limit=None):
        path = os.fspath(source)
        if os.path.isfile(path):
            self.input_files = [path]
        elif os.path.isdir(path):
            self.input_files = sorted(os.path.join(path, f) for f in os.listdir(path)
                                      if os.path.isfile(os.path.join(path, f)))
            if not self.input_files:
                raise ValueError(f"PathLineSentences: directory {path!r} holds no files")
        else:
            raise FileNotFoundError(f"PathLineSentences: {path!r} is neither a file nor a directory")
        self.source = path
        self.max_sentence_length = _check_len("max_sentence_length", max_sentence_length, 1)
        self.limit = _check_len("limit", limit, 0)

    def __iter__(self):
        for p in self.input_files:
            with open_text_source(p) as f:
                yield from _lines(f, self.max_sentence_length, self.limit)
