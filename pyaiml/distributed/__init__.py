"""pyaiml.distributed: data-parallel training on torch.distributed.

What it is: the process group (:func:`init` from torchrun's environment; gloo on CPU, NCCL
with CUDA), rank helpers (:func:`rank`, :func:`world_size`, :func:`is_main`,
:func:`barrier`), NumPy collectives that keep the dtype (:func:`all_reduce`,
:func:`all_reduce_many` in buckets, :func:`broadcast_arrays`, :func:`all_gather_json`),
:func:`shard` for in-memory arrays and sequence lists, and :class:`DistributedError`, which
names the rank that died, hung or failed. The models use it through one argument:

- ``GaussianHMM/GMMHMM/CategoricalHMM/...fit(X_shard, distribute="data_parallel")`` and
  ``HMMClassifier.fit(X_shard, y_shard, distribute="data_parallel")``: each rank's E-step
  sufficient statistics are summed over ranks before the M-step (pyaiml.distributed.hmm).
- ``Sequential.fit(x, y, batch_size=B, distribute="data_parallel")`` (or a
  :class:`DataParallel`): every global batch of B samples is split over the ranks and the
  gradients are all-reduced in buckets before the optimizer step (pyaiml.distributed.keras).
- ``pyaiml.torch.nn`` modules are ordinary torch modules: wrap the model in
  ``torch.nn.parallel.DistributedDataParallel`` after :func:`init`.

torch is an optional dependency: importing this package needs only NumPy; the first call
that needs torch raises an ImportError naming the ``distributed`` extra.
What it is not: a transport of its own, or an elastic job manager (torchrun restarts jobs).
Tests: tests/test_distributed.py, tests/test_distributed_multiproc.py.
"""
from pyaiml.distributed._core import (
    Context,
    DistributedError,
    agree,
    agreement,
    all_gather_json,
    all_reduce,
    all_reduce_many,
    barrier,
    broadcast_arrays,
    broadcast_json,
    context,
    init,
    is_initialized,
    is_main,
    rank,
    shard,
    shard_bounds,
    shutdown,
    world_size,
)
from pyaiml.distributed.strategy import DataParallel, resolve

__all__ = ["Context", "DataParallel", "DistributedError", "agree", "agreement", "all_gather_json", "all_reduce",
           "all_reduce_many", "barrier", "broadcast_arrays", "broadcast_json", "context", "init", "is_initialized",
           "is_main", "rank", "resolve", "shard", "shard_bounds", "shutdown", "world_size"]
