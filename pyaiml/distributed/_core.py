"""Process group, NumPy collectives, sharding and failure diagnosis for pyaiml.distributed.

What it is: a thin layer over ``torch.distributed``. :func:`init` joins the process group
that ``torchrun`` (or any launcher setting RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT)
describes: gloo on CPU, NCCL where CUDA is present (then a gloo group is added for the NumPy
collectives, which live in host memory). The collectives here take and return NumPy arrays
without changing their dtype (float64 stays float64, so sums are the exact IEEE sums the
backend computes), pack many arrays into one flat buffer per dtype (buckets), and raise
:class:`DistributedError` naming the rank that failed when a peer dies, hangs or reports an
error, instead of hanging.

How failures are named: every rank runs a heartbeat thread that writes a counter, the
number of collectives it has entered and the name of the last one to the rendezvous store
every ``_HEARTBEAT_S`` seconds (its own store connection, so it works while the main thread
waits inside a collective). When a collective raises (gloo reports a closed connection at
once, and a missing peer after the configured ``timeout``), the survivor reads the store:
a rank that left an error there is named with it; a rank whose counter stopped moving is
named as dead or frozen; a rank still beating but behind in collectives is named as hung
before the collective. If the store itself is gone, its host (rank 0, or torchrun's agent)
is named.

What it is not: a transport (torch.distributed is), an elastic membership manager
(torchrun restarts a failed job; :mod:`pyaiml.distributed` resumes it from a checkpoint
through ``initial_epoch``), or a parameter server.
Tests: tests/test_distributed.py (helpers in one process, world size 1),
tests/test_distributed_multiproc.py (2 processes on localhost over gloo: sharded EM, Keras
data parallelism, DDP, killed and frozen ranks).
"""
from __future__ import annotations

import atexit
import datetime
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

_HEARTBEAT_S = 0.5       # heartbeat period; a rank is declared stopped after 5 periods unchanged
_STALL_PERIODS = 5
_DEFAULT_TIMEOUT_S = 300.0
_BUCKET_BYTES = 25 << 20  # 25 MiB per all-reduce buffer, as DDP's default bucket_cap_mb
_DTYPES = (np.float64, np.float32, np.int64, np.int32, np.uint8)


class DistributedError(RuntimeError):
    """A peer rank died, hung, or failed; ``ranks`` names them (empty when unknown)."""

    __module__ = "pyaiml.distributed"  # the public name in tracebacks

    def __init__(self, message, ranks=(), remote_types=()):
        super().__init__(message)
        self.ranks = tuple(int(r) for r in ranks)
        self.remote_types = tuple(remote_types)  # exception class names raised on those ranks (agree)


def _torch():
    """(torch, torch.distributed), or an ImportError that says which extra installs them."""
    try:
        import torch
        import torch.distributed as dist
    except ImportError as e:
        raise ImportError("pyaiml.distributed runs on torch.distributed, and PyTorch is not installed: "
                          "pip install 'pyaiml[distributed]' (or the 'torch' extra)") from e
    if not dist.is_available():
        raise ImportError("pyaiml.distributed: this PyTorch build has no torch.distributed support")
    return torch, dist


@dataclass(frozen=True)
class Context:
    """What :func:`init` joined: ``rank``, ``world_size``, ``backend``, ``timeout`` (seconds)."""
    rank: int
    world_size: int
    backend: str
    timeout: float
    local_rank: int = 0


_S: dict = {"ctx": None, "group": None, "owns_pg": False, "seq": 0, "op": "", "hb": None, "hb_stop": None,
            "addr": None, "agent_store": False, "prefix": "pyaiml/0/", "excepthook": None}


# ----------------------------------------------------------------------------- setup
def _env_int(name, value, lo=0):
    if value is None:
        raw = os.environ.get(name)
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"pyaiml.distributed.init: environment variable {name} must be an integer. "
                             f"Received {raw!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"pyaiml.distributed.init: {name.lower()} must be an integer >= {lo}. Received {value!r}")
    return int(value)


def _check_timeout(timeout):
    if timeout is None:
        raw = os.environ.get("PYAIML_DIST_TIMEOUT")
        timeout = _DEFAULT_TIMEOUT_S if raw is None else raw
    try:
        t = float(timeout)
    except (TypeError, ValueError):
        raise ValueError(f"pyaiml.distributed.init: timeout must be a number of seconds > 0. "
                         f"Received {timeout!r}") from None
    if not (t > 0 and np.isfinite(t)):
        raise ValueError(f"pyaiml.distributed.init: timeout must be a number of seconds > 0. Received {timeout!r}")
    return t


def init(backend=None, timeout=None, rank=None, world_size=None, master_addr=None, master_port=None):
    """Join (or create) the process group; returns a :class:`Context`.

    Parameters default to torchrun's environment: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    (and LOCAL_RANK for the CUDA device). With none of them set and no arguments, a world of
    one process is created (a script then runs unchanged without torchrun).
    backend : "gloo" (CPU) or "nccl"; default nccl when CUDA is available, else gloo.
    timeout : seconds a collective may wait for a peer before :class:`DistributedError`
        (default 300, or PYAIML_DIST_TIMEOUT). It bounds how long a hung rank can stall the
        others; a rank that dies is reported within seconds.

    Calling it again returns the same Context; a process group that the caller created with
    ``torch.distributed.init_process_group`` is adopted (without heartbeats, so failures are
    reported with the backend's message only).
    """
    if _S["ctx"] is not None:
        return _S["ctx"]
    torch, dist = _torch()
    timeout = _check_timeout(timeout)
    if dist.is_initialized():
        ctx = Context(dist.get_rank(), dist.get_world_size(), dist.get_backend(), timeout,
                      _env_int("LOCAL_RANK", None) or 0)
        _S.update(ctx=ctx, owns_pg=False)
        _S["group"] = _cpu_group(dist, ctx.backend, timeout)
        return ctx
    r = _env_int("RANK", rank)
    w = _env_int("WORLD_SIZE", world_size, lo=1)
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"pyaiml.distributed.init: backend must be 'gloo' or 'nccl'. Received {backend!r}")
    td = datetime.timedelta(seconds=timeout)
    local = _env_int("LOCAL_RANK", None) or 0
    if r is None and w is None and master_addr is None and master_port is None:
        r, w = 0, 1
    if r is None or w is None:
        missing = [n for n, v in (("RANK", r), ("WORLD_SIZE", w)) if v is None]
        raise ValueError(f"pyaiml.distributed.init: {' and '.join(missing)} not set; launch with torchrun "
                         f"(torchrun --nproc-per-node N script.py) or pass rank= and world_size=")
    if not r < w:
        raise ValueError(f"pyaiml.distributed.init: rank must be < world_size ({w}). Received rank {r}")
    if backend == "nccl":
        torch.cuda.set_device(local)
    if w == 1:
        store = dist.HashStore()
    else:
        addr = master_addr or os.environ.get("MASTER_ADDR")
        port = _env_int("MASTER_PORT", master_port, lo=1)
        if addr is None or port is None:
            raise ValueError("pyaiml.distributed.init: MASTER_ADDR and MASTER_PORT must be set (torchrun sets "
                             "them) or passed as master_addr= and master_port=")
        agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
        store = dist.TCPStore(addr, port, w, is_master=(r == 0 and not agent), timeout=td)
        _S.update(addr=(addr, port), agent_store=agent,
                  prefix=f"pyaiml/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/")
    dist.init_process_group(backend, store=store, rank=r, world_size=w, timeout=td)
    ctx = Context(r, w, backend, timeout, local)
    _S.update(ctx=ctx, owns_pg=True, seq=0, op="")
    _S["group"] = _cpu_group(dist, backend, timeout)
    if w > 1:
        _start_heartbeat(dist, ctx)
        _install_excepthook()
    return ctx


def _install_excepthook():
    """An uncaught exception on this rank is left in the store before the process exits, so a
    peer whose collective then fails names this rank and its error (not only "stopped")."""
    prev = sys.excepthook

    def hook(et, ev, tb):
        if not isinstance(ev, DistributedError):
            _report_error(f"{et.__name__}: {ev}")
        prev(et, ev, tb)

    _S["excepthook"] = (prev, hook)
    sys.excepthook = hook


def _cpu_group(dist, backend, timeout):
    if backend == "gloo":
        return None  # the default group
    return dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout))


def _client(dist, timeout_s):
    addr, port = _S["addr"]
    return dist.TCPStore(addr, port, is_master=False, timeout=datetime.timedelta(seconds=timeout_s))


def _start_heartbeat(dist, ctx):
    stop = threading.Event()
    store = _client(dist, min(ctx.timeout, 30.0))
    key = f"{_S['prefix']}hb/{ctx.rank}"

    def beat():
        n = 0
        while not stop.is_set():
            n += 1
            try:
                store.set(key, json.dumps([n, _S["seq"], _S["op"]]))
            except Exception:  # noqa: BLE001 - the store host went away; diagnosis reports it
                return
            stop.wait(_HEARTBEAT_S)

    t = threading.Thread(target=beat, name="pyaiml-dist-heartbeat", daemon=True)
    t.start()
    _S.update(hb=t, hb_stop=stop)


def _stop_heartbeat():
    if _S["hb_stop"] is not None:
        _S["hb_stop"].set()
        _S["hb"].join(timeout=2 * _HEARTBEAT_S + 1)
    _S.update(hb=None, hb_stop=None)


atexit.register(_stop_heartbeat)  # no store writes while the interpreter tears down


def shutdown():
    """Leave the process group (if :func:`init` created it) and stop the heartbeat."""
    _stop_heartbeat()
    if _S["excepthook"] is not None:
        prev, hook = _S["excepthook"]
        if sys.excepthook is hook:
            sys.excepthook = prev
        _S["excepthook"] = None
    if _S["ctx"] is not None and _S["owns_pg"]:
        _, dist = _torch()
        if dist.is_initialized():
            dist.destroy_process_group()
    _S.update(ctx=None, group=None, owns_pg=False, seq=0, op="")


def is_initialized():
    return _S["ctx"] is not None


def context():
    """The :class:`Context` of :func:`init`; a RuntimeError before it."""
    if _S["ctx"] is None:
        raise RuntimeError("pyaiml.distributed: call pyaiml.distributed.init() first")
    return _S["ctx"]


def rank():
    """This process's rank (0 when not initialized)."""
    return 0 if _S["ctx"] is None else _S["ctx"].rank


def world_size():
    """Number of processes (1 when not initialized)."""
    return 1 if _S["ctx"] is None else _S["ctx"].world_size


def is_main():
    """True on rank 0 (and when not initialized): the rank that logs and writes files."""
    return rank() == 0


# ----------------------------------------------------------------------------- failure diagnosis
def _read_peers(store, ctx):
    out = {}
    for r in range(ctx.world_size):
        if r == ctx.rank:
            continue
        k = f"{_S['prefix']}hb/{r}"
        e = f"{_S['prefix']}err/{r}"
        rec = {"hb": None, "err": None}
        if store.check([k]):
            rec["hb"] = json.loads(store.get(k).decode())
        if store.check([e]):
            rec["err"] = store.get(e).decode()
        out[r] = rec
    return out


def _diagnose(op, seq, exc):
    """A DistributedError naming the peer(s) that made collective ``op`` (#seq) fail."""
    ctx = _S["ctx"]
    base = f"pyaiml.distributed: rank {ctx.rank}: collective #{seq} ({op}) failed"
    cause = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    if _S["addr"] is None:
        return DistributedError(f"{base}: {cause}")
    _, dist = _torch()
    try:
        # a plain connect first: a TCPStore client retries a refused connection for its whole timeout
        socket.create_connection(_S["addr"], timeout=2.0).close()
        store = _client(dist, 5.0)
        first = _read_peers(store, ctx)
        errs = {r: v["err"] for r, v in first.items() if v["err"]}
        if not errs:
            time.sleep(_HEARTBEAT_S * _STALL_PERIODS)
            second = _read_peers(store, ctx)
            errs = {r: v["err"] for r, v in second.items() if v["err"]}
    except Exception:  # noqa: BLE001 - the store is gone with its host
        host = "torchrun's agent" if _S["agent_store"] else "rank 0"
        addr, port = _S["addr"]
        if ctx.rank != 0 and not _S["agent_store"]:
            return DistributedError(f"{base}: rank 0 failed (it hosts the rendezvous store at {addr}:{port}, "
                                    f"which is unreachable: the process died or its machine is down). "
                                    f"Backend error: {cause}", ranks=(0,))
        return DistributedError(f"{base}: the rendezvous store at {addr}:{port} ({host}) is unreachable. "
                                f"Backend error: {cause}")
    if errs:
        return DistributedError(f"{base}: " + "; ".join(f"rank {r} failed: {m}" for r, m in sorted(errs.items())),
                                ranks=sorted(errs))
    dead, behind = [], []
    for r in sorted(second):
        a, b = first[r]["hb"], second[r]["hb"]
        if b is None or a == b:
            dead.append(r)
        elif b[1] < seq:
            behind.append((r, b))
    if dead:
        return DistributedError(
            f"{base}: rank{'s' if len(dead) > 1 else ''} {', '.join(map(str, dead))} stopped (no heartbeat for "
            f"{_HEARTBEAT_S * _STALL_PERIODS:.1f} s: the process died, was killed or is frozen). "
            f"Backend error: {cause}", ranks=dead)
    if behind:
        what = "; ".join(f"rank {r} is alive but never entered it (its last collective is #{b[1]} ({b[2]}))"
                         for r, b in behind)
        return DistributedError(f"{base} after the {ctx.timeout:g} s timeout: {what}. Backend error: {cause}",
                                ranks=[r for r, _ in behind])
    return DistributedError(f"{base}; every peer is alive: {cause}")


def _report_error(message):
    """Leave this rank's error in the store so that the peers name it."""
    if _S["addr"] is None or _S["ctx"] is None:
        return
    try:
        _, dist = _torch()
        _client(dist, 5.0).set(f"{_S['prefix']}err/{_S['ctx'].rank}", message[:2000])
    except Exception:  # noqa: BLE001 - best effort: the peers still see the heartbeat stop
        return


def _run(op, fn):
    """Run collective ``fn`` as collective number seq; failures become DistributedError."""
    _S["seq"] += 1
    seq = _S["seq"]
    _S["op"] = op
    try:
        return fn()
    except DistributedError:
        raise
    except Exception as e:  # gloo raises RuntimeError or DistBackendError
        if _S["ctx"] is None or _S["ctx"].world_size == 1:
            raise
        raise _diagnose(op, seq, e) from e


# ----------------------------------------------------------------------------- collectives
def _need_init(op):
    if _S["ctx"] is None:
        raise RuntimeError(f"pyaiml.distributed.{op}: call pyaiml.distributed.init() first")
    return _S["ctx"]


def barrier():
    """Wait until every rank reaches this point (DistributedError naming a rank that never does)."""
    ctx = _need_init("barrier")
    if ctx.world_size == 1:
        return
    _, dist = _torch()
    _run("barrier", lambda: dist.barrier(group=_S["group"]))


def _check_array(a, op, name="array"):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"pyaiml.distributed.{op}: {name} must be a NumPy array. Received {type(a).__name__}")
    if a.dtype.type not in _DTYPES:
        raise TypeError(f"pyaiml.distributed.{op}: {name} must have dtype float64, float32, int64, int32 or "
                        f"uint8. Received {a.dtype}")


_OPS = ("sum", "max", "min")


def _reduce_op(dist, op, where):
    if op not in _OPS:
        raise ValueError(f"pyaiml.distributed.{where}: op must be one of {_OPS}. Received {op!r}")
    return {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op]


def all_reduce(array, op="sum"):
    """A new array: ``op`` ("sum", "max", "min") of ``array`` over all ranks, same dtype and
    shape (float64 stays float64). Every rank must pass the same shape and dtype."""
    return all_reduce_many([array], op=op)[0]


def _buckets(arrays, bucket_bytes):
    """Group array indices by dtype into runs of at most bucket_bytes (one array may exceed it)."""
    by = {}
    for i, a in enumerate(arrays):
        by.setdefault(a.dtype.str, []).append(i)
    out = []
    for idx in by.values():
        cur, size = [], 0
        for i in idx:
            nb = arrays[i].nbytes
            if cur and size + nb > bucket_bytes:
                out.append(cur)
                cur, size = [], 0
            cur.append(i)
            size += nb
        if cur:
            out.append(cur)
    return out


def all_reduce_many(arrays, op="sum", bucket_bytes=_BUCKET_BYTES, inplace=False):
    """Reduce a list of arrays over all ranks with few collectives: the arrays are packed into
    flat buffers of one dtype and at most ``bucket_bytes`` each, every buffer is all-reduced
    (all of them in flight at once), and the results are unpacked. ``inplace=True`` writes the
    results back into the given arrays (which must then be writable) and returns them."""
    ctx = _need_init("all_reduce")
    arrays = list(arrays)
    for i, a in enumerate(arrays):
        _check_array(a, "all_reduce", f"arrays[{i}]")
    torch, dist = _torch()
    rop = _reduce_op(dist, op, "all_reduce")
    if int(bucket_bytes) < 1:
        raise ValueError(f"pyaiml.distributed.all_reduce: bucket_bytes must be >= 1. Received {bucket_bytes}")
    if ctx.world_size == 1:
        if inplace:
            return arrays
        return [a.copy() for a in arrays]
    groups = _buckets(arrays, int(bucket_bytes))
    flats = []
    for g in groups:
        if len(g) == 1:
            flats.append(np.array(arrays[g[0]], copy=True).reshape(-1))
        else:
            flats.append(np.concatenate([arrays[i].reshape(-1) for i in g]))

    def go():
        works = [dist.all_reduce(torch.from_numpy(f), op=rop, group=_S["group"], async_op=True) for f in flats]
        for w in works:
            w.wait()

    _run(f"all_reduce[{len(arrays)} arrays]", go)
    out = list(arrays) if inplace else [None] * len(arrays)
    for g, f in zip(groups, flats):
        o = 0
        for i in g:
            a = arrays[i]
            part = f[o:o + a.size].reshape(a.shape)
            o += a.size
            if inplace:
                a[...] = part
            else:
                out[i] = part
    return out


def broadcast_json(obj=None, src=0):
    """``obj`` (JSON-serialisable) from rank ``src`` to every rank; no pickle."""
    ctx = _need_init("broadcast_json")
    if ctx.world_size == 1:
        return json.loads(json.dumps(obj))
    torch, dist = _torch()
    data = json.dumps(obj).encode() if ctx.rank == src else b""
    n = torch.tensor([len(data)], dtype=torch.int64)
    _run("broadcast_json.size", lambda: dist.broadcast(n, src, group=_S["group"]))
    buf = torch.from_numpy(np.frombuffer(data, dtype=np.uint8).copy()) if ctx.rank == src \
        else torch.empty(int(n.item()), dtype=torch.uint8)
    _run("broadcast_json", lambda: dist.broadcast(buf, src, group=_S["group"]))
    return json.loads(buf.numpy().tobytes().decode())


def broadcast_arrays(arrays=None, src=0):
    """The list of arrays of rank ``src`` on every rank (other ranks may pass None: the shapes
    and dtypes travel first, as JSON)."""
    ctx = _need_init("broadcast_arrays")
    if ctx.rank == src:
        if arrays is None:
            raise ValueError(f"pyaiml.distributed.broadcast_arrays: rank {src} (the source) must pass the arrays")
        arrays = [np.ascontiguousarray(a) for a in arrays]
        for i, a in enumerate(arrays):
            _check_array(a, "broadcast_arrays", f"arrays[{i}]")
    if ctx.world_size == 1:
        return [a.copy() for a in arrays]
    torch, dist = _torch()
    head = broadcast_json([[a.dtype.str, list(a.shape)] for a in arrays] if ctx.rank == src else None, src)
    if ctx.rank != src:
        arrays = [np.empty(s, dtype=np.dtype(d)) for d, s in head]
    for g in _buckets(arrays, _BUCKET_BYTES):
        flat = np.concatenate([arrays[i].reshape(-1) for i in g]) if ctx.rank == src else \
            np.empty(sum(arrays[i].size for i in g), dtype=arrays[g[0]].dtype)
        t = torch.from_numpy(flat)
        _run("broadcast_arrays", lambda t=t: dist.broadcast(t, src, group=_S["group"]))
        o = 0
        for i in g:
            a = arrays[i]
            if ctx.rank != src:
                a[...] = flat[o:o + a.size].reshape(a.shape)
            o += a.size
    return [np.array(a, copy=True) for a in arrays] if ctx.rank == src else arrays


def all_gather_json(obj):
    """[obj of rank 0, obj of rank 1, ...] on every rank (JSON values; no pickle)."""
    ctx = _need_init("all_gather_json")
    if ctx.world_size == 1:
        return [json.loads(json.dumps(obj))]
    torch, dist = _torch()
    data = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)
    n = all_reduce(np.array([data.size], dtype=np.int64), op="max")[0]
    buf = np.zeros(int(n) + 8, dtype=np.uint8)
    buf[:8] = np.frombuffer(np.int64(data.size).tobytes(), dtype=np.uint8)
    buf[8:8 + data.size] = data
    outs = [torch.empty(buf.size, dtype=torch.uint8) for _ in range(ctx.world_size)]
    _run("all_gather_json", lambda: dist.all_gather(outs, torch.from_numpy(buf), group=_S["group"]))
    res = []
    for t in outs:
        b = t.numpy()
        k = int(np.frombuffer(b[:8].tobytes(), dtype=np.int64)[0])
        res.append(json.loads(b[8:8 + k].tobytes().decode()))
    return res


def agree(error=None, what="step"):
    """Every rank calls this with the exception it met (or None). If any rank had one, every
    rank raises: the rank that had it re-raises its own exception, the others raise a
    :class:`DistributedError` naming it; so no rank waits in a later collective for a peer
    that has given up. Returns None when all ranks succeeded."""
    ctx = _need_init("agree")
    if ctx.world_size == 1:
        if error is not None:
            raise error
        return
    flags = np.zeros(ctx.world_size, dtype=np.int64)
    flags[ctx.rank] = error is not None
    flags = all_reduce(flags)
    if not flags.any():
        return
    msgs = all_gather_json(None if error is None else [type(error).__name__, str(error)])
    if error is not None:
        raise error
    bad = [r for r in range(ctx.world_size) if flags[r]]
    raise DistributedError(f"pyaiml.distributed: {what} failed on "
                           + "; ".join(f"rank {r} ({msgs[r][0]}: {msgs[r][1]})" for r in bad), ranks=bad,
                           remote_types=sorted({msgs[r][0] for r in bad}))


class agreement:
    """``with agreement("fit"):`` runs the block and then :func:`agree` on its outcome, so an
    exception on one rank (bad input, a failed E-step) stops every rank with it named."""

    def __init__(self, what="step"):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if isinstance(ev, DistributedError):
            return False  # the process group itself failed: no collective can run
        if ev is not None and not isinstance(ev, Exception):
            _report_error(f"{et.__name__} in {self.what}")
            return False
        agree(ev, self.what)  # raises ev itself on this rank when it failed
        return False


# ----------------------------------------------------------------------------- sharding
def shard_bounds(n, rank=None, world_size=None):
    """(start, stop) of rank's part of ``n`` items: contiguous, sizes differ by at most one,
    the first ``n % world_size`` ranks take one more (np.array_split's rule)."""
    r = globals()["rank"]() if rank is None else rank
    w = globals()["world_size"]() if world_size is None else world_size
    for name, v, lo in (("n", n, 0), ("world_size", w, 1), ("rank", r, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"pyaiml.distributed.shard: {name} must be an integer >= {lo}. Received {v!r}")
    if r >= w:
        raise ValueError(f"pyaiml.distributed.shard: rank must be < world_size ({w}). Received {r}")
    q, m = divmod(int(n), int(w))
    start = r * q + min(r, m)
    return start, start + q + (r < m)


def shard(*data, rank=None, world_size=None, strategy="contiguous"):
    """This rank's part of each argument (arrays along axis 0, lists and tuples of items such
    as a list of HMM sequences). All arguments must have the same length; one argument gives
    one result, several give a tuple.

    strategy : "contiguous" (default; np.array_split's parts, order kept), "interleaved"
        (items rank, rank + W, ...), or "balanced" (sequence lists: items sorted by length,
        longest first, each to the rank with the fewest frames so far; ties to the lower rank;
        deterministic, so every rank computes the same assignment).
    """
    if not data:
        raise ValueError("pyaiml.distributed.shard: pass at least one array or list")
    if strategy not in ("contiguous", "interleaved", "balanced"):
        raise ValueError(f"pyaiml.distributed.shard: strategy must be 'contiguous', 'interleaved' or 'balanced'. "
                         f"Received {strategy!r}")
    lens = []
    for i, d in enumerate(data):
        if not isinstance(d, (np.ndarray, list, tuple)) or (isinstance(d, np.ndarray) and d.ndim == 0):
            raise TypeError(f"pyaiml.distributed.shard: argument {i} must be an array (sharded along axis 0), a list "
                            f"or a tuple. Received {type(d).__name__}")
        lens.append(len(d))
    if len(set(lens)) > 1:
        raise ValueError(f"pyaiml.distributed.shard: all arguments must have the same length. Received lengths {lens}")
    n = lens[0]
    r = globals()["rank"]() if rank is None else rank
    w = globals()["world_size"]() if world_size is None else world_size
    a, b = shard_bounds(n, r, w)
    if strategy == "contiguous":
        idx = slice(a, b)
    elif strategy == "interleaved":
        idx = slice(r, None, w)
    else:
        first = data[0]
        sizes = np.array([len(x) if hasattr(x, "__len__") else 1 for x in first], dtype=np.int64)
        load = np.zeros(w, dtype=np.int64)
        mine = []
        for i in np.argsort(-sizes, kind="stable"):
            k = int(np.argmin(load))
            load[k] += sizes[i]
            if k == r:
                mine.append(int(i))
        idx = sorted(mine)
    out = []
    for d in data:
        if isinstance(idx, slice):
            out.append(d[idx] if not isinstance(d, tuple) else list(d[idx]))
        elif isinstance(d, np.ndarray):
            out.append(d[np.asarray(idx, dtype=np.int64)])
        else:
            out.append([d[i] for i in idx])
    return out[0] if len(out) == 1 else tuple(out)
