"""A translation task generated offline and scored exactly: English number words ->
digits, e.g. "four hundred seven thousand twenty-one" -> "407021".

``number_to_words(n)`` spells 0 <= n < 10**9 in English (no "and", hyphenated tens such as
"twenty-one"). ``number_pairs(n_train, n_test, max_value, seed)`` draws distinct numbers
from [0, max_value) with a fixed seed and returns (train, test) lists of (words, digits)
pairs; no number appears in both parts, so the test part measures generalisation to
unseen numbers.

Not here: tokenisation and padding (pyaiml.seq.seq2seq.encode_pairs).
Tests: tests/test_transformer_seq2seq.py.
"""
from __future__ import annotations

import numpy as np

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def _below_1000(n):
    words = []
    h, r = divmod(n, 100)
    if h:
        words += [_ONES[h], "hundred"]
    if r:
        if r < 20:
            words.append(_ONES[r])
        else:
            t, o = divmod(r, 10)
            words.append(_TENS[t] + ("-" + _ONES[o] if o else ""))
    return words


def number_to_words(n) -> str:
    """English words for an integer 0 <= n < 10**9."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n < 10 ** 9:
        raise ValueError(f"number_to_words: n must be an integer in [0, 10**9). Received {n!r}")
    n = int(n)
    if n == 0:
        return "zero"
    words = []
    for scale, name in ((10 ** 6, "million"), (10 ** 3, "thousand")):
        q, n = divmod(n, scale)
        if q:
            words += _below_1000(q) + [name]
    words += _below_1000(n)
    return " ".join(words)


def number_pairs(n_train=20000, n_test=1000, max_value=1000000, seed=0):
    """(train, test): lists of (words, digits) for distinct random numbers in [0, max_value)."""
    if n_train < 0 or n_test < 0 or n_train + n_test > max_value:
        raise ValueError(f"number_pairs: need 0 <= n_train + n_test <= max_value. Received n_train={n_train}, "
                         f"n_test={n_test}, max_value={max_value}")
    rs = np.random.default_rng(seed)
    nums = rs.choice(max_value, size=n_train + n_test, replace=False)
    pairs = [(number_to_words(int(v)), str(int(v))) for v in nums]
    return pairs[:n_train], pairs[n_train:]
