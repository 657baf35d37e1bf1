"""Attention suite: pyaiml.ops.scaled_dot_product_attention (+ its backward) against
torch.nn.functional.scaled_dot_product_attention (forward, and forward + autograd backward).

GFLOP/s from 4 * B * H * Lq * Lk * D for the forward (half for causal) and 2.5x that for
forward + backward (the backward's five products), the same count for both sides.
pyaiml's fwd+bwd runs the forward with return_lse=True and passes out/lse to the backward;
torch's runs out = sdpa(q, k, v) with requires_grad inputs and out.backward(grad).
"""
from __future__ import annotations

import numpy as np

from pyaiml.bench.harness import Case, check_close

# (name, B, H, Lq, Lk, D, causal, with backward)
SHAPES = [
    ("b8h8 L512", 8, 8, 512, 512, 64, False, True),
    ("b4h12 L1024", 4, 12, 1024, 1024, 64, False, True),
    ("b1h16 L2048", 1, 16, 2048, 2048, 64, False, True),
    ("causal b8h8 L512", 8, 8, 512, 512, 64, True, True),
    ("causal b4h12 L1024", 4, 12, 1024, 1024, 64, True, True),
    ("causal b1h16 L2048", 1, 16, 2048, 2048, 64, True, True),
    ("short b1h8 L128", 1, 8, 128, 128, 64, False, False),
    ("decode b8h8 Lk4096", 8, 8, 1, 4096, 64, False, False),
]
QUICK = {"b8h8 L512", "causal b8h8 L512", "short b1h8 L128", "decode b8h8 Lk4096"}


def cases(quick: bool = False):
    import pyaiml.ops as ops

    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    for name, B, H, Lq, Lk, D, causal, bwd in SHAPES:
        if quick and name not in QUICK:
            continue
        q = rng.standard_normal((B, H, Lq, D), dtype=np.float32)
        k = rng.standard_normal((B, H, Lk, D), dtype=np.float32)
        v = rng.standard_normal((B, H, Lk, D), dtype=np.float32)
        g = rng.standard_normal((B, H, Lq, D), dtype=np.float32)
        flops = 4.0 * B * H * Lq * Lk * D / (2 if causal else 1)
        shape = f"({B},{H},{Lq},{D})" + (f" Lk={Lk}" if Lk != Lq else "")

        def ours_f(q=q, k=k, v=v, causal=causal):
            return ops.scaled_dot_product_attention(q, k, v, is_causal=causal)

        fns = {"pyaiml": ours_f}
        peer = None
        if torch is not None:
            tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
            fns["torch"] = lambda tq=tq, tk=tk, tv=tv, causal=causal: F.scaled_dot_product_attention(
                tq, tk, tv, is_causal=causal)
            peer = "torch"

        def validate_f(q=q, k=k, v=v, causal=causal):
            want = _ref(q, k, v, causal)
            check_close("sdpa", ours_f(), want, rtol=1e-4, atol=1e-5)

        yield Case("attention", f"fwd {name}", shape, flops, "pyaiml", fns, peer, validate_f)
        if not bwd:
            continue

        def ours_fb(q=q, k=k, v=v, g=g, causal=causal):
            out, lse = ops.scaled_dot_product_attention(q, k, v, is_causal=causal, return_lse=True)
            return ops.scaled_dot_product_attention_backward(g, q, k, v, is_causal=causal, out=out, lse=lse)

        fns = {"pyaiml": ours_fb}
        if torch is not None:
            tq, tk, tv = (torch.from_numpy(x).clone().requires_grad_() for x in (q, k, v))
            tg = torch.from_numpy(g)

            def torch_fb(tq=tq, tk=tk, tv=tv, tg=tg, causal=causal):
                for t in (tq, tk, tv):
                    t.grad = None
                out = F.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
                out.backward(tg)
                return tq.grad, tk.grad, tv.grad

            fns["torch"] = torch_fb

            def validate_fb(torch_fb=torch_fb):
                got = ours_fb()
                want = torch_fb()
                for nm, a, b in zip(("dq", "dk", "dv"), got, want):
                    check_close(f"sdpa backward {nm}", a, b.numpy(), rtol=1e-3, atol=1e-4)
        else:
            validate_fb = None
        yield Case("attention", f"fwd+bwd {name}", shape, 2.5 * flops, "pyaiml", fns, peer, validate_fb)


def _ref(q, k, v, causal):
    """float64 attention for validation (one head at a time to bound memory)."""
    out = np.empty(q.shape, dtype=np.float64)
    Lq, Lk = q.shape[-2], k.shape[-2]
    tri = np.tril(np.ones((Lq, Lk), dtype=bool)) if causal else None
    for idx in np.ndindex(*q.shape[:-2]):
        s = q[idx].astype(np.float64) @ k[idx].astype(np.float64).T / np.sqrt(q.shape[-1])
        if tri is not None:
            s = np.where(tri, s, -np.inf)
        s = np.exp(s - s.max(-1, keepdims=True))
        out[idx] = (s / s.sum(-1, keepdims=True)) @ v[idx]
    return out
