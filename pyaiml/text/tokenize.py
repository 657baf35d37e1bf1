"""The simple tokenizer pyaiml applies to a sentence given as one plain string.

``simple_tokenize("I love Machine-Learning!")`` -> ``['i', 'love', 'machine', 'learning']``:
the text is lower-cased and split into runs of letters, digits and underscores, with an
apostrophe kept inside a word (``don't``). Punctuation and whitespace separate words and are
dropped. No stemming, no stop words, no Unicode normalisation beyond ``str.lower``.

Not here: sentence splitting or any trained tokenizer. Tests: tests/test_word2vec.py.
"""
from __future__ import annotations

import re

_WORD = re.compile(r"\w+(?:['\u2019]\w+)*")


def simple_tokenize(text: str) -> list[str]:
    """Lower-case ``text`` and return its words (see the module docstring for the rule)."""
    if not isinstance(text, str):
        raise TypeError(f"simple_tokenize: text must be a str. Received {type(text).__name__}")
    return _WORD.findall(text.lower())
