"""Benchmark harness: validate, then time; interleaved repeats; medians and spread.

Method (kept identical for pyaiml and its peers):
- the same thread count for every library (pyaiml's pool, torch's intra-op threads, and
  the BLAS behind NumPy through threadpoolctl when installed);
- glibc's allocator is told to keep freed memory (``mallopt``: no mmap for large blocks,
  no trimming), so neither side pays a fresh page fault per call for its output buffers;
  this matters on VMs where first-touch faults are slow;
- warm-up calls, then ``repeats`` rounds in which every implementation runs once in turn
  (so drifts in machine load hit all sides alike); before each sample a short pause lets
  the previous library's spinning pool threads go idle (see ``time_interleaved``), and a
  lead-in call wakes the timed library's pool; each sample is the mean of enough
  inner calls to last at least ``min_time`` seconds; the median and the 25-75% spread of
  the samples are reported.
"""
from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import time
from typing import Callable

import numpy as np

_ALLOCATOR_DONE = [False]


def configure_allocator() -> str:
    """Stop glibc returning freed memory to the OS (same for every library in-process)."""
    if _ALLOCATOR_DONE[0]:
        return "glibc mallopt(M_MMAP_THRESHOLD=1 GiB, M_TRIM_THRESHOLD=2 GiB)"
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
        libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1)
        _ALLOCATOR_DONE[0] = True
        return "glibc mallopt(M_MMAP_THRESHOLD=1 GiB, M_TRIM_THRESHOLD=2 GiB)"
    except OSError:
        return "default allocator (not glibc)"


def set_threads(n: int) -> dict:
    """Give pyaiml, torch (if present) and NumPy's BLAS the same thread count."""
    import pyaiml

    pyaiml.set_num_threads(n)
    done = {"pyaiml": n}
    try:
        import torch

        torch.set_num_threads(n)
        done["torch"] = n
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
        done["blas"] = n
    except ImportError:
        done["blas"] = "not controlled (threadpoolctl not installed)"
    return done


@dataclasses.dataclass
class Timing:
    median: float
    p25: float
    p75: float
    samples: list

    def as_dict(self):
        return {"median_s": self.median, "p25_s": self.p25, "p75_s": self.p75, "n": len(self.samples)}


def cpu_per_wall(f: Callable[[], object], n: int | None = None, min_time: float = 0.05,
                 settle: float = 0.1) -> float:
    """Process CPU time over wall time across ``n`` calls of ``f`` (default: as many as take
    ``min_time``): near the thread count when every thread of the call had a core, lower when
    starved. Taken as time_interleaved takes a sample (a ``settle`` pause, one untimed lead-in
    call), so that another library's spinning pool or this one's wake-up do not set the figure:
    three calls straight after the timing rounds read 1.0 or 2.2 for the same 0.7 ms op,
    50 after the pause 1.95-2.1 on both sides. ``n``, when given, must be an int >= 1 (a figure
    over no calls would be one clock tick over a near-zero wall time)."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"cpu_per_wall: n must be an int >= 1 or None. Received {n!r}")
    if settle > 0:
        time.sleep(settle)
    t0 = time.perf_counter()
    f()
    if n is None:
        n = max(3, int(min_time / max(time.perf_counter() - t0, 1e-7)))
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        f()
    return (time.process_time() - c0) / max(time.perf_counter() - w0, 1e-9)


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 2,
                     min_time: float = 0.02, settle: float = 0.1) -> dict[str, Timing]:
    """Time each callable, interleaving them round by round.

    Before each sample the harness sleeps ``settle`` seconds and, for calls shorter than
    50 ms, makes one untimed lead-in call. Thread pools of the library that ran before
    (OpenBLAS, libgomp, Numba, pyaiml's own) spin for a while after their last task; without
    the pause those spinning threads compete for the cores with whichever library is timed
    next, which penalises the callable that follows a spinning pool (on a 2-core machine,
    by up to 2x). OpenBLAS's threads spin for about 0.1 s: a 0.05 s pause left pyaiml's
    GEMM, timed after numpy's, at 0.44-0.58x torch in quick runs against 0.9-1.6x in full
    runs, so quick runs pause 0.1 s too. The lead-in call absorbs the wake-up of the timed library's own pool,
    so every side is timed warm and alone.
    """
    inner = {}
    lead_in = {}
    for name, f in fns.items():
        for _ in range(warmup):
            f()
        t0 = time.perf_counter()
        f()
        dt = max(time.perf_counter() - t0, 1e-7)
        inner[name] = max(1, int(min_time / dt))
        lead_in[name] = dt < 0.05
    samples: dict[str, list] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            n = inner[name]
            if settle > 0:
                time.sleep(settle)
            if lead_in[name]:
                f()
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            samples[name].append((time.perf_counter() - t0) / n)
    out = {}
    for name, s in samples.items():
        q = np.percentile(s, [25, 75])
        out[name] = Timing(statistics.median(s), float(q[0]), float(q[1]), s)
    return out


def check_close(name: str, got, want, rtol: float, atol: float) -> None:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise AssertionError(f"{name}: shape {got.shape} != peer's {want.shape}")
    if not np.allclose(got, want, rtol=rtol, atol=atol):
        err = np.max(np.abs(got - want) / (atol + rtol * np.abs(want)))
        raise AssertionError(f"{name}: result differs from the peer's (max scaled error {err:.3g})")


@dataclasses.dataclass
class Case:
    """One benchmark row: pyaiml and its peers on one shape."""

    suite: str
    name: str
    shape: str
    flops: float | None            # analytic FLOP count of one call, or None
    ours: str                      # key of pyaiml's callable in fns
    fns: dict                      # name -> callable
    peer: str | None = None        # key of the peer the ratio is taken against
    validate: Callable[[], None] | None = None
    extra: dict = dataclasses.field(default_factory=dict)
    unit: str | None = None        # throughput unit when flops is None, e.g. "words/s"
    work: float | None = None      # units of work per call for that throughput


def run_case(case: Case, repeats: int, min_time: float, warmup: int = 2, settle: float = 0.1) -> dict:
    if case.validate is not None:
        case.validate()
    t = time_interleaved(case.fns, repeats=repeats, warmup=warmup, min_time=min_time, settle=settle)
    row = {"suite": case.suite, "case": case.name, "shape": case.shape, "timings": {}, **case.extra}
    for k, v in t.items():
        d = v.as_dict()
        if case.flops:
            d["gflops"] = case.flops / v.median / 1e9
        if case.work:
            d["throughput"] = case.work / v.median
            d["unit"] = case.unit
        row["timings"][k] = d
    if case.peer and case.peer in t:
        row["peer"] = case.peer
        row["ratio"] = t[case.peer].median / t[case.ours].median  # > 1: pyaiml faster
    row["ratios"] = {k: t[k].median / t[case.ours].median for k in t if k != case.ours}
    return row


def cpu_model(default=None) -> str:
    """The CPU's model name from /proc/cpuinfo (else ``default``, else platform.processor())."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default if default is not None else (platform.processor() or "CPU model unknown")


def machine_info() -> dict:
    import pyaiml

    info = pyaiml.backend_info()
    cpu = cpu_model()
    commit = None
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
    except Exception:
        pass
    versions = dict(info["versions"])
    for mod in ("torch", "hmmlearn", "gensim"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "isa": info["isa"],
        "commit": commit,
        "versions": versions,
        "allocator": configure_allocator(),
    }


def format_table(rows: list[dict]) -> str:
    lines = []
    hdr = f"{'suite':<10} {'case':<28} {'shape':<26} {'pyaiml':>16} {'peer':>22} {'ratio':>7}"
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for r in rows:
        if "error" in r:
            lines.append(f"{r['suite']:<10} {r['case']:<28} {r.get('shape',''):<26} ERROR: {r['error']}")
            continue
        t = r["timings"]
        ours = next(iter(t))
        ours_key = [k for k in t if k.startswith("pyaiml")]
        ours = ours_key[0] if ours_key else ours

        def fmt(k):
            d = t[k]
            if "gflops" in d:
                return f"{d['median_s']*1e3:8.3f}ms {d['gflops']:6.1f}GF"
            if "throughput" in d:
                return f"{d['median_s']*1e3:8.2f}ms {d['throughput']:.3g}{d['unit']}"
            return f"{d['median_s']*1e3:10.3f}ms"

        peer = r.get("peer")
        peer_s = f"{peer}: {fmt(peer)}" if peer else "(no peer)"
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else "-"
        lines.append(f"{r['suite']:<10} {r['case']:<28} {r['shape']:<26} {fmt(ours):>16} {peer_s:>22} {ratio:>7}")
    return "\n".join(lines)


# What a quick run's table, JSON and chart say of themselves: their ratios are not a measurement
# to compare with a full run's (at af3753f quick read 0.57x at GEMM square-1024 against 1.00-1.07x
# in full runs, benchmarks/RESULTS.md).
QUICK_NOTE = ("quick run: 3 samples of 10 ms per row, an overview; its ratios are not comparable with a full "
              "run's")


def run_suites(names: list[str], quick: bool, threads: int, json_path: str | None = None,
               log=print) -> dict:
    import importlib

    from pyaiml.bench import SUITES

    configure_allocator()
    thr = set_threads(threads)
    repeats = 3 if quick else 7
    min_time = 0.01 if quick else 0.05
    warmup = 1 if quick else 2  # quick: one warm-up call (the calibration call follows it anyway)
    settle = 0.1  # pause before each sample (quick runs too: OpenBLAS threads spin ~0.1 s), see time_interleaved
    rows = []
    seconds = {}
    for name in names:
        t_suite = time.perf_counter()
        try:  # a suite that cannot start (import, data, peer setup) is one error row, not the end of the run
            it = iter(importlib.import_module(SUITES[name]).cases(quick=quick))
        except Exception as e:
            it, err = iter(()), e
        else:
            err = None
        while err is None:
            try:
                case = next(it)
            except StopIteration:
                break
            except Exception as e:
                err = e
                break
            try:
                row = run_case(case, repeats, min_time, warmup, settle)
            except Exception as e:  # a failed validation is reported, not hidden
                row = {"suite": case.suite, "case": case.name, "shape": case.shape, "error": str(e)}
            rows.append(row)
            log(format_table([row]).splitlines()[-1])
        if err is not None:
            row = {"suite": name, "case": "(cases)", "shape": "", "error": f"{type(err).__name__}: {err}"}
            rows.append(row)
            log(format_table([row]).splitlines()[-1])
        seconds[name] = round(time.perf_counter() - t_suite, 1)
    report = {"machine": machine_info(), "threads": thr, "quick": quick, "comparable": not quick, "rows": rows,
              "suite_seconds": seconds}
    if quick:
        report["note"] = QUICK_NOTE
    if json_path:
        tmp = json_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(report, f, indent=1)
        os.replace(tmp, json_path)
    return report
