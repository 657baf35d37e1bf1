"""Assemble benchmarks/RESULTS.md from the per-family tables in benchmarks/results/*.md.

Each family file holds its own measured table(s) with date, machine and commit; this script
only concatenates them under a common header, in a fixed order.
"""
from __future__ import annotations

import os

ORDER = ["gemm", "conv", "attention", "hmm", "word2vec", "train", "audio", "speech", "torch_bridge", "sequence"]

HEADER = """# Benchmark results

Every figure below was measured side by side with its peer in one process, interleaved
round by round, with the same thread count on both sides (2 unless stated), after the
result was checked against the peer's. Ratio = peer time / pyaiml time (> 1: pyaiml is
faster). Allocator: glibc `mallopt(M_MMAP_THRESHOLD=1 GiB, M_TRIM_THRESHOLD=2 GiB)` for the
whole process (both sides), so neither pays a page fault per call for fresh output buffers.
The machine is a shared 2-core VM (AMD EPYC, Zen 4, AVX-512); figures move by 10-20%
between runs, so each section states when, on which commit and how it was run.

Reproduce: `pip install ".[bench]" && pyaiml bench <suite>` (or `pytest benchmarks
--benchmark-only`). Regenerate this file: `python tools/assemble_results.py`.

`pyaiml bench all --quick` (every suite, 3 samples of 10 ms per row, 0.05 s pause) is an
overview, not a measurement to quote: at commit b840012 on the idle machine it finished in
119 s, but several short rows read far below their full runs minutes earlier (GEMM square-1024
0.46x, conv cnn-a1 fwd 0.34x, pool-a1 bwd 0.37x against 0.95x, 1.19x and 1.60x in the full
runs below). At commit af3753f it took 129 s and read 0.57x at square-1024 and 0.67x at the
small pooling backward, against 1.00x-1.07x and 0.94x-1.58x in full runs. The tables below are full runs.
"""


def main() -> None:
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks")
    rdir = os.path.join(here, "results")
    names = [n[:-3] for n in os.listdir(rdir) if n.endswith(".md")]
    names.sort(key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    parts = [HEADER]
    for n in names:
        with open(os.path.join(rdir, n + ".md")) as f:
            parts.append(f.read().strip() + "\n")
    out = os.path.join(here, "RESULTS.md")
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(parts))
    os.replace(tmp, out)
    print(f"wrote {out} from {len(names)} section(s): {', '.join(names)}")


if __name__ == "__main__":
    main()
