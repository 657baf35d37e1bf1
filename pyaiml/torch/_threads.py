"""Thread hygiene for pyaiml kernels called from inside PyTorch.

Rule: a pyaiml op runs on the calling thread while torch's intra-op pool is idle (torch
waits for the custom op to return), so pyaiml's one pool is sized to
``torch.get_num_threads()`` before every kernel call. The two pools then never run at the
same time, and together never use more threads than torch was told to use. A user who
calls ``torch.set_num_threads(n)`` therefore controls both. ``set_sync(False)`` turns the
rule off (pyaiml then keeps whatever ``pyaiml.set_num_threads`` set).

Not a scheduler: torch inter-op parallelism (``torch.jit.fork``, DataLoader workers) is the
user's to size. Tests: tests/test_torch_bridge.py::test_threads_follow_torch.
"""
from __future__ import annotations

import torch

from pyaiml import _backend

_sync = [True]


def set_sync(flag: bool) -> None:
    """Size pyaiml's pool to torch.get_num_threads() before each op (True, the default)."""
    _sync[0] = bool(flag)


def get_sync() -> bool:
    return _sync[0]


def sync() -> None:
    """Make pyaiml's thread count equal torch's (cheap when they already agree)."""
    if not _sync[0]:
        return
    n = min(torch.get_num_threads(), _backend.MAX_THREADS)  # pyaiml's pool holds at most 128
    if _backend.get_num_threads() != n:
        _backend.set_num_threads(n)
