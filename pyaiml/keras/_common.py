"""Shared helpers of pyaiml.keras: identifier lookup with helpful errors, the RNG that
``utils.set_random_seed`` seeds, dtype policy (float32 throughout the training path).
Not public. Tests: tests/test_keras_api.py.
"""
from __future__ import annotations

import numpy as np

FLOATX = np.float32

_state = {"rng": np.random.default_rng()}


def rng() -> np.random.Generator:
    return _state["rng"]


def seed(s: int) -> None:
    _state["rng"] = np.random.default_rng(s)


def lookup(kind: str, identifier, table: dict):
    """Resolve a string identifier in ``table`` (case-insensitive); unknown -> ValueError
    listing the valid ones."""
    key = identifier.lower() if isinstance(identifier, str) else identifier
    if key in table:
        return table[key]
    valid = ", ".join(sorted(k for k in table if isinstance(k, str)))
    raise ValueError(f"Unknown {kind} identifier {identifier!r}. Valid identifiers: {valid}")


def tuple_n(v, n: int, name: str):
    if isinstance(v, (int, np.integer)):
        v = (int(v),) * n
    try:
        v = tuple(int(i) for i in v)
    except TypeError:
        raise ValueError(f"{name} must be an int or a tuple of {n} ints. Received {v!r}") from None
    if len(v) != n or any(i < 1 for i in v):
        raise ValueError(f"{name} must be an int or a tuple of {n} positive ints. Received {v!r}")
    return v
