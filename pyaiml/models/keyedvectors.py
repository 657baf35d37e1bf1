"""``pyaiml.models.keyedvectors``: the names of ``gensim.models.keyedvectors`` that pyaiml provides.

``KeyedVectors`` (pyaiml.text.keyedvectors), gensim's ``REAL`` dtype, ``pseudorandom_weak_vector``
and the module-level loaders ``load_word2vec_format`` / ``_load_word2vec_format`` (the latter
takes gensim's ``binary_chunk_size``, which pyaiml's reader does not need: it reads whole
records). Code written against gensim runs with the import changed.

Tests: tools/peer_gensim.py (gensim's own test_keyedvectors.py through this module).
"""
import numpy as np

from pyaiml.text.keyedvectors import (
    EmptyKeyListError,
    GensimPickleError,
    KeyedVectors,
    TruncatedFileError,
    WrongClassError,
)

REAL = np.float32

__all__ = [
    "REAL",
    "EmptyKeyListError",
    "GensimPickleError",
    "KeyedVectors",
    "TruncatedFileError",
    "WrongClassError",
    "_load_word2vec_format",
    "load_word2vec_format",
    "pseudorandom_weak_vector",
]

_rng = np.random.default_rng()


def pseudorandom_weak_vector(size, seed_string=None, hashfxn=hash):
    """A float32 vector (size,) uniform in [-0.5/size, 0.5/size): the same for the same
    ``seed_string`` within one process (``hashfxn`` of it seeds the generator), else random."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"pseudorandom_weak_vector: size must be an integer >= 1. Received {size!r}")
    rng = np.random.default_rng(hashfxn(seed_string) & 0xFFFFFFFF) if seed_string else _rng
    return ((rng.random(int(size)) - 0.5) / size).astype(REAL)


def load_word2vec_format(*args, **kwargs):
    """``KeyedVectors.load_word2vec_format``."""
    return KeyedVectors.load_word2vec_format(*args, **kwargs)


def _load_word2vec_format(cls=KeyedVectors, fname=None, fvocab=None, binary=False, encoding="utf8",
                          unicode_errors="strict", limit=None, datatype=REAL, no_header=False,
                          binary_chunk_size=100 * 1024):
    """gensim's module-level loader: ``cls.load_word2vec_format`` with the same arguments.
    ``binary_chunk_size`` (bytes read at a time by gensim) must be an integer >= 1 and has
    no other effect."""
    if isinstance(binary_chunk_size, bool) or not isinstance(binary_chunk_size, (int, np.integer)) \
            or binary_chunk_size < 1:
        raise ValueError(f"_load_word2vec_format: binary_chunk_size must be an integer >= 1. Received "
                         f"{binary_chunk_size!r}")
    if fname is None:
        raise ValueError("_load_word2vec_format: fname (the file to read) is required")
    return cls.load_word2vec_format(fname, fvocab=fvocab, binary=binary, encoding=encoding,
                                    unicode_errors=unicode_errors, limit=limit, datatype=datatype, no_header=no_header)
