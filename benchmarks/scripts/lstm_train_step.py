"""One LSTM training step, pyaiml.keras on the tape against torch.nn.LSTM.

Case: batch 32, 64 steps, 128 input features, 128 units, float32; the step is the forward
pass of one LSTM layer returning sequences, a mean-squared loss against a fixed target, the
backward pass to the input and every weight (no optimizer update on either side). Both
sides get the same thread count (``--threads``, default 2: pyaiml.set_num_threads and
torch.set_num_threads; the OpenBLAS pool NumPy uses is limited the same way, by
OPENBLAS_NUM_THREADS set before NumPy loads) and the same allocator setting
(pyaiml.bench.harness.configure_allocator: glibc keeps freed memory, so neither side pays
page faults for fresh buffers every step). Outputs
and gradients are validated against each other first (weights copied, gate order i,f,c,o
on both), then ``--rounds`` rounds alternate the two sides, ``--steps`` steps each after a
warm-up; medians and ranges of the per-step time. The machine is shared: the load average
at the start and at the end is printed with the result, with the CPU model and the backend
the LSTM's scan ran on (pyaiml.ops.lstm_sequence: the fused C++ kernel by default).

``--gru``: the same step with Keras's GRU (reset_after=True) against torch.nn.GRU.

Run: python benchmarks/scripts/lstm_train_step.py [--threads 2] [--rounds 5] [--steps 10] [--gru]
Not a test (tests/test_keras_recurrent.py and tests/test_rnn_kernel.py check the gradients).
"""
from __future__ import annotations

import argparse
import os
import time

if __name__ == "__main__":
    import _thread_env  # --threads into OPENBLAS/OMP_NUM_THREADS before NumPy loads

    _thread_env.apply()

import numpy as np

N, T, D, H = 32, 64, 128, 128


def _pyaiml_step(layer, x, target):
    from pyaiml.autograd import GradientTape
    from pyaiml.autograd import functional as F

    with GradientTape() as tape:
        xx = tape.watch(x)
        y = layer(xx, training=True)
        loss = F.mean(F.square(F.subtract(y, target)))
    return loss, tape.gradient(loss, [xx] + layer.trainable_variables)


def _load(la):
    return "/".join(f"{v:.2f}" for v in la)


def main(threads=2, rounds=5, steps=10, kind="lstm"):
    import torch

    import pyaiml
    from pyaiml.bench.harness import configure_allocator, cpu_model
    from pyaiml.keras import layers

    allocator = configure_allocator()  # the house method: both sides, one process
    pyaiml.set_num_threads(threads)
    torch.set_num_threads(threads)
    load0 = os.getloadavg()
    rs = np.random.default_rng(0)
    x = rs.normal(size=(N, T, D)).astype(np.float32)
    target = rs.normal(size=(N, T, H)).astype(np.float32)
    layer = (layers.LSTM if kind == "lstm" else layers.GRU)(H, return_sequences=True)
    layer.build((T, D))
    k, u, b = layer.get_weights()
    # torch's gate rows in Keras's column order: LSTM i,f,g,o = i,f,c,o; GRU r,z,n = (z,r,h)[order]
    order = np.arange(4 * H) if kind == "lstm" else np.concatenate([np.arange(H, 2 * H), np.arange(H),
                                                                     np.arange(2 * H, 3 * H)])
    m = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(D, H, batch_first=True)
    with torch.no_grad():
        m.weight_ih_l0.copy_(torch.from_numpy(k.T[order].copy()))
        m.weight_hh_l0.copy_(torch.from_numpy(u.T[order].copy()))
        if kind == "lstm":
            m.bias_ih_l0.copy_(torch.from_numpy(b))
            m.bias_hh_l0.zero_()
        else:  # Keras GRU (reset_after): bias (2, 3H) = input bias, recurrent bias
            m.bias_ih_l0.copy_(torch.from_numpy(b[0][order].copy()))
            m.bias_hh_l0.copy_(torch.from_numpy(b[1][order].copy()))
    xt = torch.from_numpy(x).requires_grad_()
    tt = torch.from_numpy(target)

    def torch_step():
        xt.grad = None
        m.zero_grad()
        y, _ = m(xt)
        loss = torch.nn.functional.mse_loss(y, tt)
        loss.backward()
        return loss

    # validate
    loss_p, grads = _pyaiml_step(layer, x, target)
    loss_t = torch_step()
    np.testing.assert_allclose(float(loss_p.value), float(loss_t), rtol=1e-4)
    np.testing.assert_allclose(grads[0], xt.grad.numpy(), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(grads[2], m.weight_hh_l0.grad.numpy().T[:, np.argsort(order)], rtol=1e-3, atol=1e-6)

    tp, tt_ = [], []
    for _ in range(rounds):
        for fn, out in ((lambda: _pyaiml_step(layer, x, target), tp), (torch_step, tt_)):
            fn()
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            out.append((time.perf_counter() - t0) / steps * 1e3)
    mp, mt = float(np.median(tp)), float(np.median(tt_))
    name = kind.upper()
    print(f"{name} training step (batch {N}, {T} steps, {D} features, {H} units, float32, {threads} threads)")
    print(f"  pyaiml {mp:.2f} ms [{min(tp):.2f}-{max(tp):.2f}]   torch.nn.{name} {mt:.2f} ms "
          f"[{min(tt_):.2f}-{max(tt_):.2f}]   ratio torch/pyaiml {mt / mp:.2f}x")
    info = pyaiml.backend_info()
    print(f"  pyaiml {name} scan on {info['ops'][kind + '_forward']['backend']} ({info['isa']}), {cpu_model()}")
    print(f"  load average at start {_load(load0)}, at end {_load(os.getloadavg())}; torch {torch.__version__}, "
          f"numpy {np.__version__}; allocator: {allocator}")
    return mp, mt


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--gru", action="store_true", help="GRU (reset_after=True) against torch.nn.GRU instead")
    a = ap.parse_args()
    main(a.threads, a.rounds, a.steps, "gru" if a.gru else "lstm")
