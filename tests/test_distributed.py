"""pyaiml.distributed in one process: sharding, argument checks, the import without torch,
and a world of one rank (collectives, fit(distribute=) equal to plain fit).

The 2-process checks (sharded EM, Keras data parallelism, DDP, failed ranks) are in
tests/test_distributed_multiproc.py. Tests that need torch skip without it.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import pyaiml.distributed as dist
from pyaiml.distributed import _core

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- no torch needed
@pytest.mark.parametrize("n", [0, 1, 3, 7, 33, 97])
@pytest.mark.parametrize("w", [1, 2, 3, 8])
def test_shard_bounds_cover_everything_once(n, w):
    parts = [dist.shard_bounds(n, r, w) for r in range(w)]
    assert parts[0][0] == 0 and parts[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    sizes = [b - a for a, b in parts]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == [len(p) for p in np.array_split(np.arange(n), w)]


def test_shard_arrays_lists_and_strategies():
    x = np.arange(20).reshape(10, 2)
    y = list("abcdefghij")
    a, b = dist.shard(x, y, rank=1, world_size=3)
    np.testing.assert_array_equal(a, x[4:7])
    assert b == ["e", "f", "g"]
    assert dist.shard(y, rank=2, world_size=3, strategy="interleaved") == ["c", "f", "i"]
    assert dist.shard(tuple(y), rank=0, world_size=4) == ["a", "b", "c"]


def test_shard_balanced_splits_frames_evenly_and_deterministically():
    rs = np.random.RandomState(0)
    seqs = [np.zeros((int(t), 2)) for t in rs.randint(1, 200, 41)]
    parts = [dist.shard(seqs, rank=r, world_size=3, strategy="balanced") for r in range(3)]
    ids = sorted(id(s) for p in parts for s in p)
    assert ids == sorted(id(s) for s in seqs)  # every sequence exactly once
    frames = [sum(len(s) for s in p) for p in parts]
    assert max(frames) - min(frames) <= max(len(s) for s in seqs)
    again = dist.shard(seqs, rank=1, world_size=3, strategy="balanced")
    assert [id(s) for s in again] == [id(s) for s in parts[1]]


def test_shard_errors():
    with pytest.raises(ValueError, match="same length. Received lengths"):
        dist.shard(np.zeros(3), [1, 2], rank=0, world_size=2)
    with pytest.raises(TypeError, match="argument 0 must be an array"):
        dist.shard(5, rank=0, world_size=2)
    with pytest.raises(ValueError, match="strategy must be"):
        dist.shard([1, 2], rank=0, world_size=2, strategy="random")
    with pytest.raises(ValueError, match=r"rank must be < world_size \(2\). Received 2"):
        dist.shard([1, 2], rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size must be an integer >= 1"):
        dist.shard_bounds(4, 0, 0)
    with pytest.raises(ValueError, match="at least one"):
        dist.shard()


def test_resolve_and_data_parallel_arguments():
    assert dist.resolve(None) is None and dist.resolve(False) is None
    assert isinstance(dist.resolve("data_parallel"), dist.DataParallel)
    dp = dist.DataParallel(bucket_mb=0.5)
    assert dist.resolve(dp) is dp and dp.bucket_bytes == 1 << 19
    with pytest.raises(ValueError, match="distribute must be None, 'data_parallel'"):
        dist.resolve("mirrored", "fit")
    with pytest.raises(ValueError, match="bucket_mb must be a number > 0. Received 0"):
        dist.DataParallel(bucket_mb=0)


def test_buckets_group_by_dtype_and_size():
    arrs = [np.zeros(10), np.zeros(10, np.float32), np.zeros(10), np.zeros(100), np.zeros(3, np.float32)]
    groups = _core._buckets(arrs, 200)
    assert sorted(i for g in groups for i in g) == list(range(5))
    for g in groups:
        assert len({arrs[i].dtype for i in g}) == 1
        assert len(g) == 1 or sum(arrs[i].nbytes for i in g) <= 200


def test_import_without_torch_and_a_clear_error_when_used():
    code = (
        "import importlib.abc, sys\n"
        "class H(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, H())\n"
        "import pyaiml.distributed as d, pyaiml.hmm, pyaiml.keras\n"
        "assert d.shard([1, 2, 3], rank=0, world_size=2) == [1, 2] and d.rank() == 0 and d.is_main()\n"
        "try:\n"
        "    d.init()\n"
        "except ImportError as e:\n"
        "    print('IMPORTERROR', e)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert "IMPORTERROR" in r.stdout and "pyaiml[distributed]" in r.stdout


def test_collectives_need_init():
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="call pyaiml.distributed.init"):
        dist.all_reduce(np.zeros(2))
    with pytest.raises(RuntimeError, match="call pyaiml.distributed.init"):
        dist.barrier()


# ----------------------------------------------------------------------------- torch, one rank
@pytest.fixture
def torch_dist(monkeypatch):
    pytest.importorskip("torch")
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "PYAIML_DIST_TIMEOUT"):
        monkeypatch.delenv(k, raising=False)
    yield dist
    dist.shutdown()


def test_init_argument_errors(torch_dist, monkeypatch):
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0. Received -1"):
        dist.init(timeout=-1)
    with pytest.raises(ValueError, match="backend must be 'gloo' or 'nccl'. Received 'mpi'"):
        dist.init(backend="mpi")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="WORLD_SIZE not set; launch with torchrun"):
        dist.init()
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="MASTER_ADDR and MASTER_PORT must be set"):
        dist.init()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK must be an integer. Received 'x'"):
        dist.init()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match=r"rank must be < world_size \(2\). Received rank 2"):
        dist.init()
    assert not dist.is_initialized()


def test_world_of_one(torch_dist):
    ctx = dist.init(timeout=30)
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.timeout) == (0, 1, "gloo", 30.0)
    assert dist.init() is ctx and dist.context() is ctx
    assert dist.is_main() and dist.rank() == 0 and dist.world_size() == 1
    a = np.arange(5, dtype=np.float64) / 3
    r = dist.all_reduce(a)
    assert r.dtype == np.float64 and r is not a
    np.testing.assert_array_equal(r, a)
    outs = dist.all_reduce_many([a, np.arange(3, dtype=np.int32)], op="max")
    assert [o.dtype for o in outs] == [np.float64, np.int32]
    np.testing.assert_array_equal(dist.broadcast_arrays([a])[0], a)
    assert dist.all_gather_json({"k": [1, "x"]}) == [{"k": [1, "x"]}]
    assert dist.broadcast_json([1, 2]) == [1, 2]
    dist.barrier()
    dist.agree(None)
    with pytest.raises(KeyError):
        dist.agree(KeyError("mine"))
    with pytest.raises(TypeError, match=r"arrays\[0\] must have dtype float64, float32, int64, int32 or uint8. "
                                        r"Received complex128"):
        dist.all_reduce(np.zeros(2, complex))
    with pytest.raises(TypeError, match="must be a NumPy array. Received list"):
        dist.all_reduce([1.0])
    with pytest.raises(ValueError, match="op must be one of"):
        dist.all_reduce(a, op="prod")


def test_hmm_fit_distribute_in_a_world_of_one_equals_fit(torch_dist):
    from distributed_workers import gaussian_model, make_gaussian_sequences

    seqs = make_gaussian_sequences()
    a = gaussian_model("GMMHMM").fit(seqs)
    b = gaussian_model("GMMHMM").fit(seqs, distribute="data_parallel")
    for n in a._saved_attributes():
        np.testing.assert_allclose(np.asarray(b._raw(n)), np.asarray(a._raw(n)), rtol=0, atol=1e-12)
    # random initialisation and restarts go through the same path as in fit
    from pyaiml.hmm import GaussianHMM
    a = GaussianHMM(3, n_iter=4, n_init=2, random_state=0).fit(seqs)
    b = GaussianHMM(3, n_iter=4, n_init=2, random_state=0).fit(seqs, distribute="data_parallel")
    np.testing.assert_allclose(b.means_, a.means_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(b.init_history_, a.init_history_, rtol=1e-12)
    with pytest.raises(ValueError, match="no rank holds a sequence"):
        gaussian_model().fit([], distribute="data_parallel")
    with pytest.raises(ValueError, match="distribute must be None"):
        gaussian_model().fit(seqs, distribute="model_parallel")


def test_keras_fit_distribute_in_a_world_of_one_equals_fit(torch_dist):
    from distributed_workers import keras_fit, keras_model, make_images

    x, y = make_images(n=100)
    a, b = keras_model(np.float64), keras_model(np.float64)
    ha = keras_fit(a, x, y, np.float64, epochs=2)
    hb = keras_fit(b, x, y, np.float64, epochs=2, distribute=dist.DataParallel(bucket_mb=0.001))
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wb, wa, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(hb.history["loss"], ha.history["loss"], rtol=1e-12)
    assert b._grad_hook is None  # the hook is removed when fit ends
