"""Tiny Shakespeare: 1.1 MB of Shakespeare's plays for character-level language models.

``load_tiny_shakespeare(path=None)`` returns the text (str). Without ``path`` it reads the
copy shipped in ``pyaiml/datasets/data/tinyshakespeare.txt.gz`` (public domain; see
TINYSHAKESPEARE.md there); a path to ``input.txt`` (plain or .gz) reads that file instead.
``split_text(text, val_fraction=0.1)`` gives the usual 90/10 split (first 90% for
training, the rest for validation; no shuffling, so no leakage between overlapping windows).

Not here: tokenisation (pyaiml.seq.tokenizer). Tests: tests/test_transformer_lm.py.
"""
from __future__ import annotations

import gzip
import os

_SHIPPED = os.path.join(os.path.dirname(__file__), "data", "tinyshakespeare.txt.gz")


def load_tiny_shakespeare(path=None) -> str:
    """The Tiny Shakespeare text (1,115,394 characters)."""
    p = _SHIPPED if path is None else os.fspath(path)
    if os.path.isdir(p):
        p = os.path.join(p, "input.txt")
    if not os.path.exists(p):
        raise FileNotFoundError(f"load_tiny_shakespeare: no file at {p!r} (give the path of input.txt, or None for "
                                "the shipped copy)")
    opener = gzip.open if p.endswith(".gz") else open
    with opener(p, "rt", encoding="utf-8") as f:
        return f.read()


def split_text(text, val_fraction=0.1):
    """(train, val): the first 1 - val_fraction of the text and the rest."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"split_text: val_fraction must be in (0, 1). Received {val_fraction}")
    k = int(len(text) * (1 - val_fraction))
    return text[:k], text[k:]
