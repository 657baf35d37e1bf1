"""Keras SeparableConv2D (pyaiml.keras: a grouped depthwise conv, then a 1x1 conv, on the tape)
against torch (a depthwise nn.Conv2d with groups, then a 1x1 nn.Conv2d) in channels_last:
forward on arrays, forward + backward on a GradientTape, 2 threads, one process, timed by
pyaiml.bench.harness.time_interleaved (sides alternating, 9 rounds, medians); max|diff| of the outputs printed first.
Not a test (tests/test_keras_separable.py checks values and gradients).
Run: PYTHONPATH=. python benchmarks/scripts/separable_conv_layer.py
"""
import numpy as np
import torch

import pyaiml
from pyaiml.autograd import GradientTape
from pyaiml.bench.harness import configure_allocator, cpu_model, time_interleaved
from pyaiml.keras import layers, ops

CASES = [(32, 32, 32, 64), (32, 16, 128, 128)]  # N, H, C, filters; k3, same


def run_case(n, h, c, fo):
    layer = layers.SeparableConv2D(fo, 3, padding="same")
    x = np.random.default_rng(0).standard_normal((n, h, h, c)).astype(np.float32)
    y = layer(x)
    dk, pk, b = layer.get_weights()
    dw = torch.nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
    pw = torch.nn.Conv2d(c, fo, 1)
    with torch.no_grad():
        dw.weight.copy_(torch.from_numpy(dk.transpose(2, 3, 0, 1).reshape(c, 1, 3, 3).copy()))
        pw.weight.copy_(torch.from_numpy(pk.transpose(3, 2, 0, 1).copy()))
        pw.bias.copy_(torch.from_numpy(b))
    net = torch.nn.Sequential(dw, pw).to(memory_format=torch.channels_last)
    tx = torch.from_numpy(np.moveaxis(x, -1, 1).copy()).contiguous(memory_format=torch.channels_last)
    err = np.abs(np.moveaxis(net(tx).detach().numpy(), 1, -1) - y).max()
    g = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    tg = torch.from_numpy(np.moveaxis(g, -1, 1).copy()).contiguous(memory_format=torch.channels_last)
    txg = tx.clone().requires_grad_()

    def tf():
        with torch.no_grad():
            net(tx)

    def pfb():
        with GradientTape() as tape:
            xx = tape.watch(x)
            loss = ops.sum(ops.multiply(layer(xx), g))
        tape.gradient(loss, [xx] + layer.trainable_variables)

    def tfb():
        net.zero_grad()
        txg.grad = None
        (net(txg) * tg).sum().backward()

    t = time_interleaved({"fwd": lambda: layer(x), "tfwd": tf, "fb": pfb, "tfb": tfb}, repeats=9,
                         min_time=0.03, settle=0.05)
    a, bb, cc, d = (t[k].median * 1e3 for k in ("fwd", "tfwd", "fb", "tfb"))
    print(f"SeparableConv2D N{n} {h}x{h}x{c}->{fo} k3 same: max|diff| {err:.1e}; forward {a:.2f} / torch_cl "
          f"{bb:.2f} ms ({bb / a:.2f}x); forward+backward {cc:.2f} / {d:.2f} ms ({d / cc:.2f}x)")


def main():
    configure_allocator()
    pyaiml.set_num_threads(2)
    torch.set_num_threads(2)
    for case in CASES:
        run_case(*case)
    print(cpu_model(), pyaiml.backend_info()["isa"])


if __name__ == "__main__":
    main()
