"""De-identification of text before Word2Vec or language-model training: e-mail addresses,
phone numbers and long digit runs (account, card and ID numbers) become typed placeholders
``<EMAIL>``, ``<PHONE>``, ``<NUMBER>``.

What it finds (regular expressions, applied in that order so a phone number inside an
address is not counted twice):
- e-mail: ``local@domain.tld`` (letters, digits and ``._%+-`` before the @, a dotted domain
  with a 2+ letter last label);
- phone: 7 to 15 digits, optionally starting with ``+`` or ``00`` and a country code, in
  groups separated by single spaces, dots, dashes or a bracketed area code, e.g.
  ``+44 20 7946 0958``, ``(555) 123-4567``, ``555.123.4567``; dates written with digits
  (2024-01-15, 15.01.2024) are kept; a bare run of digits is left to the next rule;
- number: a run of at least ``min_digits`` (default 6) digits, optionally with single
  spaces or dashes between groups of 3 or more (``4111 1111 1111 1111``).

Limits (what it does NOT do): names, postal addresses, dates of birth, IP addresses, URLs,
usernames, free-text identifiers and anything in images or audio are left as they are; a
phone number written with words or unusual separators, or with fewer than 7 digits, is not
found; a number shorter than ``min_digits`` (years, prices, small counts) is kept on purpose.
It is a first pass that lowers the risk of a model memorising contact details, not a
guarantee of anonymity: review a sample of the output, and combine with DP training
(pyaiml.privacy) where the corpus is sensitive.

Tests: tests/test_privacy_deid.py.
"""
from __future__ import annotations

import re
from collections import Counter

_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![\w-])")
_PHONE = re.compile(
    r"(?<![\w+])"
    r"(?:(?:\+|00)\d{1,3}[ .-]?)?"            # country code
    r"(?:\(\d{1,4}\)[ .-]?)?"                 # bracketed area code
    r"\d{2,4}(?:[ .-]\d{2,4}){1,4}"           # grouped digits, at least two groups
    r"(?!\w)"
)
_DIGITS = re.compile(r"\d")
# dates look like grouped digits: kept (2024-01-15, 15.01.2024, 01/15/2024)
_DATE = re.compile(r"^(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{4})$")


def _number_re(min_digits: int):
    return re.compile(r"(?<![\w])(?:\d{%d,}|\d{3,}(?:[ -]\d{3,})+)(?!\w)" % min_digits)


def _phone_ok(m: re.Match) -> bool:
    n = len(_DIGITS.findall(m.group(0)))
    return 7 <= n <= 15 and not _DATE.match(m.group(0))


def deidentify(text, min_digits: int = 6, return_counts: bool = False):
    """Replace e-mail addresses, phone numbers and long digit runs with placeholders.

    Parameters
    ----------
    text : str, a list of str (tokens, each handled on its own), or an iterable of either
        (sentences): the same structure comes back (an iterable comes back as a list).
    min_digits : int >= 3, the shortest digit run replaced by ``<NUMBER>``.
    return_counts : also return a Counter of replacements by placeholder.
    """
    if isinstance(min_digits, bool) or not isinstance(min_digits, int) or min_digits < 3:
        raise ValueError(f"deidentify: min_digits must be an integer >= 3. Received {min_digits!r}")
    counts = Counter()
    number = _number_re(min_digits)

    def one(s):
        if not isinstance(s, str):
            raise TypeError(f"deidentify: text must be str, a list of str or an iterable of those. Received an item of "
                            f"type {type(s).__name__}")
        s, n = _EMAIL.subn("<EMAIL>", s)
        counts["<EMAIL>"] += n

        def phone(m):
            if _phone_ok(m):
                counts["<PHONE>"] += 1
                return "<PHONE>"
            return m.group(0)

        s = _PHONE.sub(phone, s)
        s, n = number.subn("<NUMBER>", s)
        counts["<NUMBER>"] += n
        return s

    if isinstance(text, str):
        out = one(text)
    else:
        out = []
        for item in text:
            out.append(one(item) if isinstance(item, str) else [one(t) for t in item])
    return (out, counts) if return_counts else out
