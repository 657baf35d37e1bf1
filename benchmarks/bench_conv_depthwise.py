"""Depthwise, pointwise and small-group convolutions (MobileNet / ResNeXt shapes):
pyaiml.ops.conv2d against torch.nn.functional.conv2d, both layouts, forward and forward+backward, side by side in one
process with the same thread count (pyaiml.bench.harness: interleaved rounds, medians and
25-75% spread, glibc allocator told to keep freed memory for both sides).

Each row is validated against torch before it is timed. Besides wall time, every
implementation's CPU time per call is measured (process CPU seconds / wall seconds over a
batch of calls), and the forward's C++ kernel is also timed alone (pyaiml._C.conv2d, without
the ops layer's argument checks and NaN/inf scan of the inputs): a ratio near the thread count means both threads were busy, much lower
means a side ran serially or waited.

Not a test (no assertions on speed); run it by hand:
    PYTHONPATH=. python benchmarks/bench_conv_depthwise.py [--threads 2] [--repeats 5] [--quick]
Set PYAIML_ISA=avx2 to time the AVX2 build of the kernels on an AVX-512 CPU. Results:
benchmarks/RESULTS.md, "Depthwise and pointwise convolution".
"""
from __future__ import annotations

import argparse

import numpy as np

# name, N, C, OC, H, W, k, stride, padding, groups
SHAPES = [
    ("dw k3 s1", 32, 96, 96, 56, 56, 3, 1, 1, 96),
    ("dw k3 s2", 32, 96, 96, 56, 56, 3, 2, 1, 96),
    ("dw k5 s1", 32, 240, 240, 14, 14, 5, 1, 2, 240),
    ("pw 96->24", 32, 96, 24, 56, 56, 1, 1, 0, 1),
    ("pw 24->144", 32, 24, 144, 56, 56, 1, 1, 0, 1),
    ("grp G32 k3", 32, 128, 128, 28, 28, 3, 1, 1, 32),
]



def _row(torch, ops, harness, rng, args, name, N, C, OC, H, W, k, s, p, G):
    F = torch.nn.functional
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    w = (rng.standard_normal((OC, C // G, k, k), dtype=np.float32) / np.sqrt(C // G * k * k)).astype(np.float32)
    b = rng.standard_normal(OC, dtype=np.float32)
    xl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    y = ops.conv2d(x, w, b, stride=s, padding=p, groups=G)
    gy = rng.standard_normal(y.shape, dtype=np.float32)
    gyl = np.ascontiguousarray(gy.transpose(0, 2, 3, 1))
    tx, tw, tb, tg = (torch.from_numpy(a) for a in (x, w, b, gy))
    txl = tx.contiguous(memory_format=torch.channels_last)
    tgl = tg.contiguous(memory_format=torch.channels_last)
    kw = {"stride": s, "padding": p, "groups": G}
    from pyaiml import _backend

    C_ = _backend.native()
    prm = (s, s, p, p, p, p, 1, 1, G)

    def t_fwd(tx):
        with torch.no_grad():
            return F.conv2d(tx, tw, tb, **kw)

    def t_fb(tx, tg):
        xx = tx.detach().requires_grad_(True)
        ww = tw.detach().requires_grad_(True)
        bb = tb.detach().requires_grad_(True)
        yy = F.conv2d(xx, ww, bb, **kw)
        return torch.autograd.grad(yy, (xx, ww, bb), tg)

    fns = {
        "fwd": {
            "ours_cf": lambda: ops.conv2d(x, w, b, **kw),
            "torch": lambda: t_fwd(tx),
            "ours_cl": lambda: ops.conv2d(xl, w, b, data_format="NHWC", **kw),
            "torch_cl": lambda: t_fwd(txl),
            # the C++ kernel alone: no argument checks, no NaN/inf scan of x and weight
            "kernel_cl": lambda: C_.conv2d(xl, w, b, prm, True, False, False),
        },
        "fwd+bwd": {
            "ours_cf": lambda: (ops.conv2d(x, w, b, **kw), ops.conv2d_backward(gy, x, w, **kw)),
            "torch": lambda: t_fb(tx, tg),
            "ours_cl": lambda: (ops.conv2d(xl, w, b, data_format="NHWC", **kw),
                                ops.conv2d_backward(gyl, xl, w, data_format="NHWC", **kw)),
            "torch_cl": lambda: t_fb(txl, tgl),
        },
    }
    # validate both layouts against torch first
    ty = t_fwd(tx).numpy()
    tgx, tgw, tgb = (a.numpy() for a in t_fb(tx, tg))
    gx, gw, gb = ops.conv2d_backward(gy, x, w, **kw)
    gxl, gwl, gbl = ops.conv2d_backward(gyl, xl, w, data_format="NHWC", **kw)
    yl = ops.conv2d(xl, w, b, data_format="NHWC", **kw)
    for what, got, want in (("y", y, ty), ("y NHWC", yl.transpose(0, 3, 1, 2), ty), ("gx", gx, tgx),
                            ("gx NHWC", gxl.transpose(0, 3, 1, 2), tgx), ("gw", gw, tgw), ("gw NHWC", gwl, tgw),
                            ("gb", gb, tgb), ("gb NHWC", gbl, tgb)):
        harness.check_close(f"{name} {what}", got, want, rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(want).max())))
    for mode, fs in fns.items():
        t = harness.time_interleaved(fs, repeats=args.repeats, warmup=1, min_time=0.05)
        cw = {k2: harness.cpu_per_wall(fs[k2]) for k2 in ("ours_cl", "torch_cl")}
        ms = {k2: v.median * 1e3 for k2, v in t.items()}
        kern = f"{ms['kernel_cl']:.2f} ({ms['torch_cl'] / ms['kernel_cl']:.2f}x)" if "kernel_cl" in ms else ""
        print(f"| {name} N{N} C{C}->{OC} {H}x{W} | {mode} | {ms['ours_cf']:.2f} | {ms['torch']:.2f} | "
              f"{ms['torch'] / ms['ours_cf']:.2f}x | {ms['ours_cl']:.2f} | {ms['torch_cl']:.2f} | "
              f"{ms['torch_cl'] / ms['ours_cl']:.2f}x | {kern} | {cw['ours_cl']:.2f}, {cw['torch_cl']:.2f} |",
              flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="batch 8 instead of 32")
    ap.add_argument("--only", default="", help="comma-separated row names (default: all)")
    args = ap.parse_args()

    import torch

    import pyaiml
    from pyaiml import _backend, ops
    from pyaiml.bench import harness

    alloc = harness.configure_allocator()
    harness.set_threads(args.threads)
    info = harness.machine_info()
    print(f"# {info.get('cpu', '?')}; pyaiml ISA {_backend.isa()}; threads {args.threads}; {alloc}")
    print("| shape | mode | pyaiml NCHW | torch NCHW | ratio | pyaiml NHWC | torch CL | ratio | NHWC kernel alone "
          "(ratio) | CPU/wall ours NHWC, torch CL |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    for name, N, C, OC, H, W, k, s, p, G in SHAPES:
        if only and name not in only:
            continue
        _row(torch, ops, harness, rng, args, name, 8 if args.quick else N, C, OC, H, W, k, s, p, G)
    print(f"# pyaiml {pyaiml.__version__ if hasattr(pyaiml, '__version__') else ''}, torch {torch.__version__}; "
          "times in ms (median); ratio = torch / pyaiml, > 1: pyaiml faster")


if __name__ == "__main__":
    main()
