"""Conv/pool suite: pyaiml.ops conv1d/conv2d/max_pool2d against torch.nn.functional.

Each row is one shape of the mission's CNNs, forward ("fwd") or forward+backward ("fwd+bwd",
all gradients: x, weight, bias). Implementations timed side by side:
- pyaiml channels last (NHWC/NLC, what pyaiml.keras uses): the ratio's numerator;
- pyaiml channels first (NCHW/NCL);
- torch NCHW and torch channels_last (torch.nn.functional, same thread count);
- numba channels last (the fallback backend), where asked for (cnn and speech shapes).
The ratio column is taken against the torch variant the acceptance target names.
"""
from __future__ import annotations

import numpy as np

from pyaiml.bench.harness import Case, check_close

# name, N, C, OC, H, W (H=None: 1-D), k, padding, peer ("torch" NCHW or "torch_cl")
CONV = [
    ("cnn-a1", 32, 3, 32, 32, 32, 3, 0, "torch"),
    ("cnn-a2", 32, 32, 64, 15, 15, 3, 0, "torch_cl"),
    ("mid", 32, 64, 64, 56, 56, 3, 1, "torch_cl"),
    ("tiny", 1, 3, 16, 28, 28, 3, 0, "torch"),
    ("speech1", 32, 1, 64, None, 128, 3, 0, "torch"),
    ("speech2", 32, 64, 64, None, 63, 3, 0, "torch"),
]
POOL = [("pool-a1", 32, 32, 30, 30), ("pool-a2", 32, 64, 13, 13)]
QUICK = {"cnn-a1", "cnn-a2", "tiny", "speech1", "speech2", "pool-a1", "pool-a2"}
NUMBA = {"cnn-a1", "cnn-a2", "speech1", "speech2"}
FWD_ONLY = {"mid"}


def _conv_cases(torch, F, rng, quick):
    import pyaiml.ops as ops
    from pyaiml import _backend

    for name, N, C, OC, H, W, k, pad, peer in CONV:
        if quick and name not in QUICK:
            continue
        one = H is None
        xs = (N, C, W) if one else (N, C, H, W)
        x = rng.standard_normal(xs, dtype=np.float32)
        w = (rng.standard_normal((OC, C, k) if one else (OC, C, k, k), dtype=np.float32) / np.sqrt(C * k * (1 if one else k))).astype(np.float32)
        b = rng.standard_normal(OC, dtype=np.float32)
        perm, fmt_cl, fmt_cf = ((0, 2, 1), "NLC", "NCL") if one else ((0, 2, 3, 1), "NHWC", "NCHW")
        inv = (0, 2, 1) if one else (0, 3, 1, 2)
        conv = ops.conv1d if one else ops.conv2d
        conv_b = ops.conv1d_backward if one else ops.conv2d_backward
        xcl = np.ascontiguousarray(x.transpose(perm))
        ycf = conv(x, w, b, padding=pad)
        gy = rng.standard_normal(ycf.shape, dtype=np.float32)
        gycl = np.ascontiguousarray(gy.transpose(perm))
        flops_f = 2.0 * ycf.size * w[0].size
        numba_fns = {}
        if name in NUMBA and "numba" in _backend.implementations("conv2d") and _backend._available("numba")[0]:
            nf = _backend.resolve("conv2d", "numba")
            nb_ = _backend.resolve("conv2d_backward", "numba")
            x4 = xcl[:, None] if one else xcl
            w4 = w[:, :, None] if one else w
            gy4 = gycl[:, None] if one else gycl
            p = (1, 1, 0, 0, pad, pad, 1, 1, 1) if one else (1, 1, pad, pad, pad, pad, 1, 1, 1)
            numba_fns = {"fwd": lambda: nf(x4, w4, b, p, True, False),
                         "fwd+bwd": lambda: (nf(x4, w4, b, p, True, False), nb_(gy4, x4, w4, p, True, True))}
        tF = F.conv1d if one else F.conv2d
        tx, tw, tb, tg = (torch.from_numpy(a) for a in (x, w, b, gy))
        txl = tx if one else tx.contiguous(memory_format=torch.channels_last)
        tgl = tg if one else tg.contiguous(memory_format=torch.channels_last)

        def t_fwd(tx=tx):
            with torch.no_grad():
                return tF(tx, tw, tb, padding=pad)

        def t_fb(tx=tx, tg=tg):
            xx = tx.detach().requires_grad_(True)
            ww = tw.detach().requires_grad_(True)
            bb = tb.detach().requires_grad_(True)
            y = tF(xx, ww, bb, padding=pad)
            gx, gw, gb = torch.autograd.grad(y, (xx, ww, bb), tg)
            return gx, gw, gb

        for mode in ("fwd", "fwd+bwd"):
            if mode == "fwd+bwd" and name in FWD_ONLY:
                continue
            if mode == "fwd":
                fns = {"pyaiml": lambda: conv(xcl, w, b, padding=pad, data_format=fmt_cl),
                       "pyaiml_cf": lambda: conv(x, w, b, padding=pad, data_format=fmt_cf),
                       "torch": t_fwd}
                if not one:
                    fns["torch_cl"] = lambda: t_fwd(txl)
                flops = flops_f
            else:
                fns = {"pyaiml": lambda: (conv(xcl, w, b, padding=pad, data_format=fmt_cl),
                                          conv_b(gycl, xcl, w, padding=pad, data_format=fmt_cl)),
                       "pyaiml_cf": lambda: (conv(x, w, b, padding=pad, data_format=fmt_cf),
                                             conv_b(gy, x, w, padding=pad, data_format=fmt_cf)),
                       "torch": t_fb}
                if not one:
                    fns["torch_cl"] = lambda: t_fb(txl, tgl)
                flops = 3 * flops_f
            if mode in numba_fns:
                fns["numba"] = numba_fns[mode]

            def validate(mode=mode):
                y = conv(xcl, w, b, padding=pad, data_format=fmt_cl)
                ty = t_fwd()
                check_close(f"{name} y", y.transpose(inv), ty.numpy(), rtol=1e-3, atol=1e-3)
                if mode == "fwd+bwd":
                    gx, gw, gb = conv_b(gycl, xcl, w, padding=pad, data_format=fmt_cl)
                    tgx, tgw, tgb = t_fb()
                    check_close(f"{name} gx", gx.transpose(inv), tgx.numpy(), rtol=1e-3, atol=1e-3)
                    check_close(f"{name} gw", gw, tgw.numpy(), rtol=1e-3, atol=1e-2)
                    check_close(f"{name} gb", gb, tgb.numpy(), rtol=1e-3, atol=1e-2)

            shape = f"N{N} {C}->{OC} {'L' + str(W) if one else f'{H}x{W}'} k{k}" + (f" p{pad}" if pad else "")
            yield Case("conv", f"{name} {mode}", shape, flops, "pyaiml", fns, peer, validate)


def _pool_cases(torch, F, rng, quick):
    import pyaiml.ops as ops

    for name, N, C, H, W in POOL:
        if quick and name not in QUICK:
            continue
        x = rng.standard_normal((N, C, H, W), dtype=np.float32)
        xcl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        y, idx = ops.max_pool2d(x, 2, return_indices=True)
        ycl, idxcl = ops.max_pool2d(xcl, 2, data_format="NHWC", return_indices=True)
        gy = rng.standard_normal(y.shape, dtype=np.float32)
        gycl = np.ascontiguousarray(gy.transpose(0, 2, 3, 1))
        tx = torch.from_numpy(x)
        txl = tx.contiguous(memory_format=torch.channels_last)
        tg = torch.from_numpy(gy)
        tgl = tg.contiguous(memory_format=torch.channels_last)
        _, tidx = F.max_pool2d(tx, 2, return_indices=True)
        _, tidxl = F.max_pool2d(txl, 2, return_indices=True)
        tbwd = torch.ops.aten.max_pool2d_with_indices_backward
        shape = f"({N}, {C}, {H}, {W}) k2"
        fwd = {"pyaiml": lambda: ops.max_pool2d(xcl, 2, data_format="NHWC"),
               "pyaiml_cf": lambda: ops.max_pool2d(x, 2),
               "torch": lambda: F.max_pool2d(tx, 2),
               "torch_cl": lambda: F.max_pool2d(txl, 2)}
        bwd = {"pyaiml": lambda: ops.max_pool2d_backward(gycl, xcl, 2, data_format="NHWC", indices=idxcl),
               "pyaiml_cf": lambda: ops.max_pool2d_backward(gy, x, 2, indices=idx),
               "pyaiml_noidx": lambda: ops.max_pool2d_backward(gycl, xcl, 2, data_format="NHWC"),
               "torch": lambda: tbwd(tg, tx, [2, 2], [2, 2], [0, 0], [1, 1], False, tidx),
               "torch_cl": lambda: tbwd(tgl, txl, [2, 2], [2, 2], [0, 0], [1, 1], False, tidxl)}

        def validate():
            check_close(f"{name} y", ycl.transpose(0, 3, 1, 2), F.max_pool2d(tx, 2).numpy(), 0, 0)
            g = ops.max_pool2d_backward(gycl, xcl, 2, data_format="NHWC", indices=idxcl)
            check_close(f"{name} gx", g.transpose(0, 3, 1, 2), tbwd(tg, tx, [2, 2], [2, 2], [0, 0], [1, 1], False, tidx).numpy(),
                        1e-6, 1e-6)

        yield Case("pool", f"{name} fwd", shape, None, "pyaiml", fwd, "torch_cl", validate)
        yield Case("pool", f"{name} bwd", shape, None, "pyaiml", bwd, "torch_cl", validate)


def cases(quick: bool = False):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:  # the suite compares against torch; nothing to do without it
        return
    rng = np.random.default_rng(0)
    yield from _conv_cases(torch, F, rng, quick)
    yield from _pool_cases(torch, F, rng, quick)


def cpu_time_table(threads: int = 1, repeats: int = 7, names=None) -> str:
    """Companion to the wall-clock run for an oversubscribed machine: the same cases, each
    implementation's median *process CPU time* per call (all threads of this process),
    interleaved round by round. CPU time counts the work done rather than the share of the
    cores a busy machine happened to give; with 1 thread it is free of thread-pool
    scheduling effects. Numba is not timed here (see below). Returns a text table; ratio = torch CPU time / pyaiml CPU time.

    Run: python -c "from pyaiml.bench.conv import cpu_time_table; print(cpu_time_table())"
    """
    import time

    from pyaiml.bench.harness import configure_allocator, set_threads

    configure_allocator()
    set_threads(threads)
    lines = [f"{'case':<18} {'pyaiml ms':>10} {'peer':>9} {'peer ms':>10} {'ratio':>7}   others (ms)"]
    for case in cases(quick=False):
        if names and not any(n in case.name for n in names):
            continue
        case.validate()
        # Numba is left out: its worker threads keep spinning after a parallel region and
        # that CPU time would be charged to whichever call runs next.
        fns = {k: f for k, f in case.fns.items() if k != "numba"}
        samples = {k: [] for k in fns}
        inner = {}
        for k, f in fns.items():
            f()
            t0 = time.process_time()
            f()
            inner[k] = max(1, int(0.02 / max(time.process_time() - t0, 1e-6)))
        for _ in range(repeats):
            for k, f in fns.items():
                t0 = time.process_time()
                for _ in range(inner[k]):
                    f()
                samples[k].append((time.process_time() - t0) / inner[k])
        med = {k: float(np.median(v)) * 1e3 for k, v in samples.items()}
        others = ", ".join(f"{k} {v:.3f}" for k, v in med.items() if k not in ("pyaiml", case.peer))
        lines.append(f"{case.name:<18} {med['pyaiml']:>10.3f} {case.peer:>9} {med[case.peer]:>10.3f} "
                     f"{med[case.peer] / med['pyaiml']:>6.2f}x   {others}")
    return "\n".join(lines)
