"""Keras Conv2DTranspose (pyaiml.keras) against torch.nn.ConvTranspose2d in channels_last:
forward on arrays, and forward + backward on a GradientTape (input, kernel and bias
gradients), 2 threads each, one process, timed by pyaiml.bench.harness.time_interleaved (sides
alternating, 9 rounds, medians).

The torch twin has the same weights and output size; where Keras's 'same' rule cuts the
output asymmetrically (k3, s2) its rows sit one position apart from torch's symmetric cut,
the same work either way. Values are checked in tests/test_keras_conv_transpose.py.
Not a test. Run: PYTHONPATH=. python benchmarks/scripts/conv_transpose_layer.py
"""
import numpy as np
import torch

import pyaiml
from pyaiml.autograd import GradientTape
from pyaiml.bench.harness import configure_allocator, cpu_model, time_interleaved
from pyaiml.keras import layers, ops

CASES = [(32, 16, 64, 32, 3, 2), (32, 8, 128, 64, 4, 2), (16, 32, 32, 3, 3, 1)]  # N, H, C, filters, k, s


def main():
    configure_allocator()
    pyaiml.set_num_threads(2)
    torch.set_num_threads(2)
    for case in CASES:
        run_case(*case)
    print(cpu_model(), pyaiml.backend_info()["isa"])


def run_case(n, h, c, f, k, s):
    layer = layers.Conv2DTranspose(f, k, strides=s, padding="same")
    x = np.random.default_rng(0).standard_normal((n, h, h, c)).astype(np.float32)
    y = layer(x)
    tl = torch.nn.ConvTranspose2d(c, f, k, stride=s, padding=(k - 1) // 2, output_padding=(s - 1) if k % 2 else 0)
    with torch.no_grad():
        tl.weight.copy_(torch.from_numpy(layer.kernel.value.transpose(3, 2, 0, 1).copy()))
        tl.bias.copy_(torch.from_numpy(layer.bias.value))
    tl = tl.to(memory_format=torch.channels_last)
    tx = torch.from_numpy(np.moveaxis(x, -1, 1).copy()).contiguous(memory_format=torch.channels_last)
    assert tuple(tl(tx).shape) == (y.shape[0], y.shape[3], y.shape[1], y.shape[2])
    g = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    tg = torch.from_numpy(np.moveaxis(g, -1, 1).copy()).contiguous(memory_format=torch.channels_last)
    txg = tx.clone().requires_grad_()

    def tf():
        with torch.no_grad():
            tl(tx)

    def pfb():
        with GradientTape() as tape:
            xx = tape.watch(x)
            loss = ops.sum(ops.multiply(layer(xx), g))
        tape.gradient(loss, [xx, layer.kernel, layer.bias])

    def tfb():
        tl.zero_grad()
        txg.grad = None
        (tl(txg) * tg).sum().backward()

    t = time_interleaved({"fwd": lambda: layer(x), "tfwd": tf, "fb": pfb, "tfb": tfb}, repeats=9,
                         min_time=0.03, settle=0.05)
    a, b, c2, d = (t[k].median * 1e3 for k in ("fwd", "tfwd", "fb", "tfb"))
    print(f"N{n} {h}x{h}x{c} -> {y.shape[1]}x{y.shape[2]}x{f} k{k} s{s} same: forward pyaiml {a:.2f} ms "
          f"torch_cl {b:.2f} ms ({b / a:.2f}x); forward+backward {c2:.2f} / {d:.2f} ms ({d / c2:.2f}x)")


if __name__ == "__main__":
    main()
