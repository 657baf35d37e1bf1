"""torch bridge suite: one Adam training step of the mission's CNN with pyaiml's Conv2d and
MaxPool2d swapped in (``pyaiml.torch.nn.convert``) against the pure torch model, NCHW and
channels_last, batch 32; plus the per-call overhead of going through a ``torch.ops.pyaiml``
custom op instead of calling the kernel directly.

Both models start from the same weights; validation runs one step on each and compares the
losses. The "pyaiml" side runs pyaiml.ops' conv/pool kernels (the backend PYAIML_BACKEND
selects) through the ``torch.ops.pyaiml`` custom ops. Not a test.
Run: ``pyaiml bench torch_bridge``.
"""
from __future__ import annotations

import copy

import numpy as np

from pyaiml.bench.harness import Case

BATCH = 32


def _cnn(tnn):
    return tnn.Sequential(tnn.Conv2d(3, 32, 3), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Conv2d(32, 64, 3), tnn.ReLU(),
                          tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(2304, 10))


def _stepper(torch, model, x, y):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def _cnn_flops(n):
    # Forward conv MACs: 30*30*32*27 + 13*13*64*288; backward ~2x forward. 2 FLOPs per MAC.
    fwd = 2 * n * (30 * 30 * 32 * 27 + 13 * 13 * 64 * 288)
    return 3.0 * fwd


def cases(quick: bool = False):
    try:
        import torch
    except ImportError:
        return
    import pyaiml.torch as pt
    from pyaiml.torch import _kernels

    torch.manual_seed(0)
    base = _cnn(torch.nn)
    x = torch.randn(BATCH, 3, 32, 32)
    y = torch.randint(0, 10, (BATCH,))
    for fmt in ("NCHW", "channels_last"):
        ref = copy.deepcopy(base)
        mine = pt.nn.convert(copy.deepcopy(base))
        xx = x
        if fmt == "channels_last":
            ref = ref.to(memory_format=torch.channels_last)
            mine = mine.to(memory_format=torch.channels_last)
            xx = x.to(memory_format=torch.channels_last)

        def validate(ref=ref, mine=mine, xx=xx):
            a = copy.deepcopy(ref)
            b = copy.deepcopy(mine)
            la = _stepper(torch, a, xx, y)().item()
            lb = _stepper(torch, b, xx, y)().item()
            if not np.isclose(la, lb, rtol=1e-5, atol=1e-6):
                raise AssertionError(f"torch_bridge: first-step loss {lb} differs from torch's {la}")

        fns = {"pyaiml": _stepper(torch, mine, xx, y), "torch": _stepper(torch, ref, xx, y)}
        yield Case("torch_bridge", f"cnn train step {fmt}", f"batch {BATCH} 3x32x32, Adam",
                   _cnn_flops(BATCH), "pyaiml", fns, "torch", validate, unit="images/s", work=BATCH)

    # Overhead of the custom-op path (checks, dispatcher, tensor<->NumPy views) on a tiny pool.
    xs = torch.randn(1, 1, 4, 4)
    xn = xs.numpy()
    fns = {"pyaiml": lambda: pt.max_pool2d(xs, 2),
           "kernel direct": lambda: _kernels.max_pool2d(xn, (2, 2), (2, 2), (0, 0), "NCHW"),
           "torch": lambda: torch.nn.functional.max_pool2d(xs, 2)}
    yield Case("torch_bridge", "op call overhead max_pool2d 1x1x4x4", "1x1x4x4 k2", None, "pyaiml", fns,
               "torch", None, unit="calls/s", work=1)
