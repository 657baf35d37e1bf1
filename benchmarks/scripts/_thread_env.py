"""The benchmark scripts' ``--threads N`` for the BLAS and OpenMP runtimes, set before NumPy loads.

OpenBLAS and OpenMP read OPENBLAS_NUM_THREADS / OMP_NUM_THREADS once, when NumPy or torch first
loads them, so a script's ``--threads N`` (or ``--threads=N``) has to reach the environment
before those imports: the scripts call :func:`apply` at the top of their ``__main__`` run
(``python benchmarks/scripts/NAME.py`` puts this folder on sys.path). Variables already set are
kept; without ``--threads`` the count is 2.
"""
from __future__ import annotations

import os
import sys


def threads_from_argv(argv=None, default: str = "2") -> str:
    argv = sys.argv if argv is None else argv
    t = next((a.split("=", 1)[1] for a in argv if a.startswith("--threads=")), None)
    if t is None and "--threads" in argv and argv.index("--threads") + 1 < len(argv):
        t = argv[argv.index("--threads") + 1]
    return t or default


def apply(argv=None) -> str:
    t = threads_from_argv(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", t)
    os.environ.setdefault("OMP_NUM_THREADS", t)
    return t
