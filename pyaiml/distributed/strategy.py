"""The ``distribute=`` argument of the models' ``fit``: :class:`DataParallel` and :func:`resolve`.

What it is: a small configuration object (the role of tf.distribute's strategies): it joins
the process group on first use (:func:`pyaiml.distributed.init` with its ``timeout``) and
carries the all-reduce bucket size. ``fit(..., distribute="data_parallel")`` is
``distribute=DataParallel()``.
What it is not: the training logic (pyaiml.distributed.hmm and pyaiml.distributed.keras).
Tests: tests/test_distributed.py (resolution and validation), tests/test_distributed_multiproc.py.
"""
from __future__ import annotations

from pyaiml.distributed import _core


class DataParallel:
    """Data parallelism over the ranks of the torch.distributed process group.

    Parameters
    ----------
    bucket_mb : float > 0 (25). Gradients are packed into buffers of at most this many MiB,
        each all-reduced as one collective (all buckets in flight together).
    timeout : seconds, or None (the default of :func:`pyaiml.distributed.init`): how long a
        collective waits for a peer before the job stops with an error naming it.
    """

    def __init__(self, bucket_mb=25, timeout=None):
        try:
            b = float(bucket_mb)
        except (TypeError, ValueError):
            raise ValueError(f"DataParallel: bucket_mb must be a number > 0. Received {bucket_mb!r}") from None
        if not b > 0:
            raise ValueError(f"DataParallel: bucket_mb must be a number > 0. Received {bucket_mb!r}")
        self.bucket_mb = b
        self.timeout = timeout

    @property
    def bucket_bytes(self):
        return max(1, int(self.bucket_mb * (1 << 20)))

    def context(self):
        """The process group's Context (joined now if :func:`init` was not called)."""
        return _core.init(timeout=self.timeout)

    def __repr__(self):
        return f"DataParallel(bucket_mb={self.bucket_mb:g}, timeout={self.timeout!r})"


def resolve(distribute, where="fit"):
    """None/False -> None; "data_parallel"/True -> DataParallel(); a DataParallel -> itself."""
    if distribute is None or distribute is False:
        return None
    if distribute is True or distribute == "data_parallel":
        return DataParallel()
    if isinstance(distribute, DataParallel):
        return distribute
    raise ValueError(f"{where}: distribute must be None, 'data_parallel' or a pyaiml.distributed.DataParallel. "
                     f"Received {distribute!r}")
