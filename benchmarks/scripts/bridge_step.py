"""The mission CNN's Adam training step (batch 32, 3x32x32) through pyaiml.torch against torch,
NCHW and channels_last, steps of the two models alternating in one process (15 timed steps each
after 5 warm-up steps; medians; CPU/wall printed so a starved run shows). The figures behind the
spin paragraph of benchmarks/results/torch_bridge.md; run it with PYAIML_SPIN_US=1000 to see the
old behaviour (pyaiml's pool spinning for 1 ms after each op inside torch).
Not a test. Run: PYTHONPATH=. python benchmarks/scripts/bridge_step.py
"""
import time

import torch
import torch.nn as tnn

from pyaiml.torch import nn as pnn

torch.set_num_threads(2)


def cnn():
    return tnn.Sequential(tnn.Conv2d(3, 32, 3), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Conv2d(32, 64, 3), tnn.ReLU(),
                          tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(2304, 10))


def stepper(m, x, y):
    opt = torch.optim.Adam(m.parameters())

    def step():
        opt.zero_grad()
        tnn.functional.cross_entropy(m(x), y).backward()
        opt.step()

    return step


def main():
    torch.manual_seed(0)
    ref = cnn()
    mine = pnn.convert(cnn())
    mine.load_state_dict(ref.state_dict())
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(32, 3, 32, 32).contiguous(memory_format=fmt)
        y = torch.randint(0, 10, (32,))
        if fmt == torch.channels_last:
            ref, mine = ref.to(memory_format=fmt), mine.to(memory_format=fmt)
        steps = {"torch": stepper(ref, x, y), "pyaiml": stepper(mine, x, y)}
        for s in steps.values():
            for _ in range(5):
                s()
        ts = {n: [] for n in steps}
        for _ in range(15):
            for n, s in steps.items():
                w, c = time.perf_counter(), time.process_time()
                s()
                ts[n].append((time.perf_counter() - w, time.process_time() - c))
        out = []
        for n, v in ts.items():
            v.sort()
            w, c = v[len(v) // 2]
            out.append(f"{n} {w * 1e3:.2f} ms (cpu/wall {c / w:.2f})")
        r = sorted(v[0] for v in ts["torch"])[7] / sorted(v[0] for v in ts["pyaiml"])[7]
        print(f"{fmt}: " + " | ".join(out) + f" | ratio torch/pyaiml {r:.2f}x", flush=True)


if __name__ == "__main__":
    main()
