"""GEMM suite: pyaiml.ops.matmul against torch.mm (MKL) and numpy.matmul (OpenBLAS).

Square 256/1024/2048/4096 and the skinny im2col shapes of the mission's CNNs.
"""
from __future__ import annotations

import numpy as np

from pyaiml.bench.harness import Case, check_close

SHAPES = [
    ("square-256", 256, 256, 256),
    ("square-1024", 1024, 1024, 1024),
    ("square-2048", 2048, 2048, 2048),
    ("square-4096", 4096, 4096, 4096),
    ("conv-a1 im2col", 28800, 27, 32),
    ("conv-a2 im2col", 6272, 288, 64),
    ("conv-mid im2col", 100352, 576, 64),
]
QUICK = {"square-256", "square-1024", "conv-a1 im2col", "conv-a2 im2col"}


def cases(quick: bool = False):
    import pyaiml.ops as ops

    try:
        import torch
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    for name, M, K, N in SHAPES:
        if quick and name not in QUICK:
            continue
        a = rng.standard_normal((M, K), dtype=np.float32)
        b = rng.standard_normal((K, N), dtype=np.float32)
        fns = {"pyaiml": lambda a=a, b=b: ops.matmul(a, b)}
        peer = "numpy"
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            fns["torch"] = lambda ta=ta, tb=tb: torch.mm(ta, tb)
            peer = "torch"
        fns["numpy"] = lambda a=a, b=b: a @ b

        def validate(a=a, b=b):
            check_close("matmul", ops.matmul(a, b), a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3 * np.sqrt(a.shape[1]))

        yield Case("gemm", name, f"M{M} K{K} N{N}", 2.0 * M * N * K, "pyaiml", fns, peer, validate)
