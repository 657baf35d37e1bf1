"""Shared helpers of pyaiml.keras: identifier lookup with helpful errors, the RNG that
``utils.set_random_seed`` seeds, dtype policy (float32 throughout the training path), and
the placeholder-run flag: set by the model machinery while it runs layers on placeholder
data (shape probes, builds on zeros, one-row output counts) rather than on a batch, so that
a stateful recurrent layer neither reads nor keeps its states there.
Not public. Tests: tests/test_keras_api.py; the flag: tests/test_keras_rnn_options.py.
"""
from __future__ import annotations

import contextlib
import contextvars

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


# True inside placeholder_run(), False inside batch_run() and outside both. A context variable:
# each thread (and asyncio task) has its own value, so a probe in one thread does not change
# what a batch loop in another one sees.
_placeholder: contextvars.ContextVar = contextvars.ContextVar("pyaiml_keras_placeholder_run", default=False)


def in_placeholder_run() -> bool:
    """Whether the innermost enclosing ``placeholder_run`` / ``batch_run`` block of this
    thread (or task) is a placeholder run; False outside both."""
    return _placeholder.get()


@contextlib.contextmanager
def _run_kind(placeholder: bool):
    token = _placeholder.set(placeholder)
    try:
        yield
    finally:
        _placeholder.reset(token)  # the value found on entry, also when the block raised


def placeholder_run():
    """Context manager: the layers called inside run on placeholder data (zeros, the first
    row(s) of x) that only builds weights or tells shapes; blocks nest and each restores the
    setting it found."""
    return _run_kind(True)


def batch_run():
    """Context manager: the layers called inside run on real batches (training steps,
    evaluation, predict), also where such a loop is entered from a placeholder run."""
    return _run_kind(False)
