"""Atomic file writes: the data goes to a temporary file in the target's folder, which is
renamed over the target only once it is complete, so a failed or interrupted save never
leaves a half-written file and keeps any previous one intact.

Used by every save in pyaiml (Keras models, HMMs, KeyedVectors/Word2Vec, WAV files).
Tests: the save tests of each family check that no temporary is left behind.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np


def atomic_write(path, write_fn, *, suffix=".tmp", mode=None, fsync=False):
    """Call ``write_fn(f)`` on a binary file that becomes ``path`` when it returns.

    mode: permission bits for the result (mkstemp creates 0600 files); fsync: flush the
    data to disk before the rename. Returns the path as a str."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_savez(path, **arrays):
    """``np.savez(path, **arrays)`` through :func:`atomic_write`."""
    return atomic_write(path, lambda f: np.savez(f, **arrays), suffix=".npz")
