"""Thread hygiene for pyaiml kernels called from inside PyTorch.

Rule: a pyaiml op runs on the calling thread while torch's intra-op pool is idle (torch
waits for the custom op to return), so pyaiml's one pool is sized to
``torch.get_num_threads()`` before every kernel call. The two pools then never run at the
same time, and together never use more threads than torch was told to use. A user who
calls ``torch.set_num_threads(n)`` therefore controls both. ``set_sync(False)`` turns the
rule off (pyaiml then keeps whatever ``pyaiml.set_num_threads`` set).

Not a scheduler: torch inter-op parallelism (``torch.jit.fork``, DataLoader workers) is the
user's to size.

Spinning: pyaiml's idle pool threads normally spin for 1 ms after a call (so a burst of calls
does not pay wake-ups); inside torch that spin holds a core while torch's own pool runs the
next op, and on 2 cores it made torch's ops (and the whole training step) several times
slower. The first synchronised call therefore sets pyaiml's spin to 0 (pyaiml.set_spin_us),
unless PYAIML_SPIN_US was set by the user, and moves pyaiml's kernels onto torch's own OpenMP
threads (_backend.set_host_openmp; PYAIML_HOST_OPENMP=0 keeps pyaiml's pool): torch's threads
spin after each of torch's ops too, and on one team that spin picks up pyaiml's next op instead
of competing with it (ResNet-18 through convert, 2 cores: 0.80x torch with two pools, 1.12x
with torch's threads not spinning). Tests: tests/test_torch_bridge.py::
test_threads_follow_torch, tests/test_torch_bridge_direct.py.
"""
from __future__ import annotations

import os

import torch

from pyaiml import _backend

_sync = [True]
_first_op_done = [False]


def set_sync(flag: bool) -> None:
    """Size pyaiml's pool to torch.get_num_threads() before each op (True, the default)."""
    _sync[0] = bool(flag)


def get_sync() -> bool:
    return _sync[0]


def sync() -> None:
    """Make pyaiml's thread count equal torch's (cheap when they already agree)."""
    if not _sync[0]:
        return
    if not _first_op_done[0]:
        _first_op_done[0] = True
        if not os.environ.get("PYAIML_SPIN_US"):
            _backend.set_spin_us(0)
        if os.environ.get("PYAIML_HOST_OPENMP", "1") != "0":
            _backend.set_host_openmp(True)
    n = min(torch.get_num_threads(), _backend.MAX_THREADS)  # pyaiml's pool holds at most 128
    if _backend.get_num_threads() != n:
        _backend.set_num_threads(n)
