"""Character-level tokenizer with a UTF-8 byte fallback; round-trips text exactly.

Vocabulary (ids in this order):
  1. ``specials``  - reserved tokens such as ``<pad>``, ``<bos>``, ``<eos>`` (ids 0..s-1);
  2. ``chars``     - single Unicode characters (code points), usually every character of
                     the training text, sorted;
  3. byte tokens   - only with ``byte_fallback=True``: 256 ids for the UTF-8 bytes
                     0x00..0xFF. A character not in ``chars`` is encoded as the byte
                     tokens of its UTF-8 form, so any string encodes and decodes back to
                     itself. With ``byte_fallback=False`` an unknown character raises a
                     ValueError naming it and its position.

JSON format (``save``/``load``/``to_json``/``from_json``)::

    {"format": "pyaiml-char-tokenizer", "version": 1,
     "specials": ["<pad>", "<bos>", "<eos>"],
     "chars": ["\\n", " ", "!", ...],
     "byte_fallback": true}

Specials are never produced by ``encode`` from text (``"<pad>"`` in a text is five
characters); ``decode`` drops them unless ``skip_specials=False``.

Not here: subword (BPE) merges. Tests: tests/test_tokenizer.py.
"""
from __future__ import annotations

import json
import os

import numpy as np

FORMAT = "pyaiml-char-tokenizer"


class CharTokenizer:
    """Characters to ids and back.

    Parameters
    ----------
    chars : iterable of str (each one character), the character vocabulary
    specials : sequence of str, reserved tokens placed first (ids 0..len-1)
    byte_fallback : bool, encode unknown characters as UTF-8 byte tokens (else error)
    """

    def __init__(self, chars, specials=(), byte_fallback=True):
        chars = list(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"CharTokenizer: chars must be single characters. Received {c!r}")
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer: chars contains duplicates")
        specials = list(specials)
        for s in specials:
            if not isinstance(s, str) or not s:
                raise ValueError(f"CharTokenizer: specials must be non-empty strings. Received {s!r}")
        if len(set(specials)) != len(specials):
            raise ValueError("CharTokenizer: specials contains duplicates")
        self.specials = specials
        self.chars = chars
        self.byte_fallback = bool(byte_fallback)
        self._ns = len(specials)
        self._c2i = {c: self._ns + i for i, c in enumerate(chars)}
        self._byte0 = self._ns + len(chars)
        self.vocab_size = self._byte0 + (256 if self.byte_fallback else 0)
        # fast path: code point -> id table for code points < 65536 (-1 = not in chars)
        self._lut = np.full(65536, -1, dtype=np.int64)
        for c, i in self._c2i.items():
            if ord(c) < 65536:
                self._lut[ord(c)] = i
        self._i2c = np.array([""] * self._ns + chars, dtype=object)

    @classmethod
    def from_text(cls, text, specials=(), byte_fallback=True):
        """Vocabulary = every distinct character of ``text``, sorted by code point."""
        if not isinstance(text, str):
            raise TypeError(f"CharTokenizer.from_text: text must be str. Received {type(text).__name__}")
        return cls(sorted(set(text)), specials, byte_fallback)

    def special_id(self, token):
        try:
            return self.specials.index(token)
        except ValueError:
            raise KeyError(f"CharTokenizer: {token!r} is not a special token. Specials: {self.specials}") from None

    # ------------------------------------------------------------------ encode / decode
    def encode(self, text) -> np.ndarray:
        """str -> int64 ids (1-D)."""
        if not isinstance(text, str):
            raise TypeError(f"CharTokenizer.encode: text must be str. Received {type(text).__name__}")
        if not text:
            return np.zeros(0, dtype=np.int64)
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        ids = np.full(len(cps), -1, dtype=np.int64)
        small = cps < 65536
        ids[small] = self._lut[cps[small]]
        for j in np.flatnonzero(~small):  # astral characters
            ids[j] = self._c2i.get(text[j], -1)
        bad = np.flatnonzero(ids < 0)
        if not len(bad):
            return ids
        if not self.byte_fallback:
            j = int(bad[0])
            raise ValueError(f"CharTokenizer.encode: character {text[j]!r} (U+{ord(text[j]):04X}) at position {j} "
                             f"is not in the vocabulary ({len(bad)} unknown character(s) in all) and byte_fallback "
                             "is off")
        out = []
        prev = 0
        for j in bad:
            out.append(ids[prev:j])
            out.append(self._byte0 + np.frombuffer(text[j].encode("utf-8"), dtype=np.uint8).astype(np.int64))
            prev = j + 1
        out.append(ids[prev:])
        return np.concatenate(out)

    def decode(self, ids, skip_specials=True) -> str:
        """ids -> str. Byte tokens are joined and decoded as UTF-8 (invalid sequences,
        which ``encode`` never produces, become U+FFFD)."""
        if type(ids) is list and all(type(i) is int for i in ids):  # a streamed completion's token list
            seq = ids
            lo, hi = (min(seq), max(seq)) if seq else (0, 0)
        else:
            ids = np.asarray(ids)
            if ids.ndim != 1:
                raise ValueError(f"CharTokenizer.decode: ids must be 1-D. Received shape {ids.shape}")
            if ids.size and (ids.dtype.kind not in "iu"):
                if ids.dtype.kind == "f" and np.all(ids == np.round(ids)):
                    ids = ids.astype(np.int64)
                else:
                    raise ValueError(f"CharTokenizer.decode: ids must be integers. Received dtype {ids.dtype}")
            seq = ids.tolist()
            lo, hi = (ids.min(), ids.max()) if ids.size else (0, 0)
        if lo < 0 or hi >= self.vocab_size:
            raise ValueError(f"CharTokenizer.decode: ids must be in [0, {self.vocab_size}). "
                             f"Received values in [{lo}, {hi}]")
        parts = []
        buf = bytearray()
        for i in seq:
            if i >= self._byte0:
                buf.append(i - self._byte0)
                continue
            if buf:
                parts.append(buf.decode("utf-8", errors="replace"))
                buf = bytearray()
            if i < self._ns:
                if not skip_specials:
                    parts.append(self.specials[i])
            else:
                parts.append(self.chars[i - self._ns])
        if buf:
            parts.append(buf.decode("utf-8", errors="replace"))
        return "".join(parts)

    # ------------------------------------------------------------------ serialisation
    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": 1, "specials": self.specials, "chars": self.chars,
                           "byte_fallback": self.byte_fallback}, ensure_ascii=False)

    @classmethod
    def from_json(cls, s):
        try:
            d = json.loads(s)
        except json.JSONDecodeError as e:
            raise ValueError(f"CharTokenizer.from_json: not valid JSON ({e})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"CharTokenizer.from_json: expected a dict with format {FORMAT!r}")
        if d.get("version") != 1:
            raise ValueError(f"CharTokenizer.from_json: unsupported version {d.get('version')!r} (this reads 1)")
        return cls(d["chars"], d.get("specials", []), d.get("byte_fallback", True))

    def save(self, path, key=None):
        """Write the JSON form atomically; ``key``: encrypt it (see pyaiml.privacy)."""
        from pyaiml._io import atomic_write

        data = self.to_json().encode("utf-8")
        return atomic_write(path, lambda f: f.write(data), key=key, inner="char-tokenizer")

    @classmethod
    def load(cls, path, key=None):
        from pyaiml._io import plain_source

        src = plain_source(os.fspath(path), "CharTokenizer.load", key=key, inner="char-tokenizer")
        if not isinstance(src, bytes):
            with open(src, "rb") as f:
                src = f.read()
        try:
            text = src.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"CharTokenizer.load: {os.fspath(path)} is not UTF-8 JSON ({e})") from None
        return cls.from_json(text)

    def __eq__(self, other):
        return (isinstance(other, CharTokenizer) and self.chars == other.chars and self.specials == other.specials
                and self.byte_fallback == other.byte_fallback)

    def __len__(self):
        return self.vocab_size

    def __repr__(self):
        return (f"CharTokenizer(vocab_size={self.vocab_size}, chars={len(self.chars)}, specials={self.specials}, "
                f"byte_fallback={self.byte_fallback})")
