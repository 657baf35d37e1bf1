"""ResNet-18 and MobileNetV3-Small through ``pyaiml.torch.nn.convert`` against the same torch
model: batch 8, 3x224x224, eval forward and one SGD training step (forward, cross-entropy,
backward, step), NCHW and channels_last, 2 threads for both sides.

The two networks are defined here from their published architectures (He et al. 2015, "Deep
Residual Learning", the 18-layer column of table 1 with basic blocks and 1x1 stride-2 projection
shortcuts; Howard et al. 2019, "Searching for MobileNetV3", table 2, MobileNetV3-Small, with
squeeze-and-excite at a quarter of the expanded width rounded to 8 channels, hard-swish and
hard-sigmoid): a torchvision that installs next to the torch 2.13.0 CPU wheel is not available
here. Weights are random, initialised as torchvision does (the timing does not depend on them);
batch-norm layers are torch's on both sides (convert swaps Conv2d and MaxPool2d). Before timing,
the converted model's logits are checked against torch's, in training mode (the largest
difference relative to the logits' spread over the batch is printed).

Timing: ``pyaiml.bench.harness.time_interleaved`` (the two sides alternate round by round,
medians; glibc told to keep freed memory). CPU/wall per side is printed so a starved run shows.
Not a test. Run: PYTHONPATH=. python benchmarks/scripts/convert_networks.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import copy
import platform

if __name__ == "__main__":
    import _thread_env

    _thread_env.apply()

import numpy as np
import torch
import torch.nn as tnn

from pyaiml import _backend
from pyaiml.bench import harness
from pyaiml.torch import nn as pnn


def _bn_act(c, act):
    return [tnn.BatchNorm2d(c)] + ([act()] if act else [])


class BasicBlock(tnn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = tnn.BatchNorm2d(cout)
        self.c2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = tnn.BatchNorm2d(cout)
        self.relu = tnn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        y = self.relu(self.b1(self.c1(x)))
        return self.relu(self.b2(self.c2(y)) + idt)


def resnet18(classes=1000):
    layers = [tnn.Conv2d(3, 64, 7, 2, 3, bias=False), tnn.BatchNorm2d(64), tnn.ReLU(inplace=True),
              tnn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(512, classes)]
    return tnn.Sequential(*layers)


def _div8(v):
    return max(8, int(v + 4) // 8 * 8)


class SqueezeExcite(tnn.Module):
    def __init__(self, c):
        super().__init__()
        s = _div8(c // 4)
        self.pool = tnn.AdaptiveAvgPool2d(1)
        self.fc1 = tnn.Conv2d(c, s, 1)
        self.fc2 = tnn.Conv2d(s, c, 1)
        self.relu = tnn.ReLU(inplace=True)
        self.gate = tnn.Hardsigmoid(inplace=True)

    def forward(self, x):
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


class InvertedResidual(tnn.Module):
    def __init__(self, cin, k, exp, cout, se, act, stride):
        super().__init__()
        layers = []
        if exp != cin:
            layers += [tnn.Conv2d(cin, exp, 1, bias=False)] + _bn_act(exp, act)
        layers += [tnn.Conv2d(exp, exp, k, stride, k // 2, groups=exp, bias=False)] + _bn_act(exp, act)
        if se:
            layers.append(SqueezeExcite(exp))
        layers += [tnn.Conv2d(exp, cout, 1, bias=False), tnn.BatchNorm2d(cout)]
        self.block = tnn.Sequential(*layers)
        self.res = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.res else y


# MobileNetV3-Small, table 2: (kernel, expanded, out, SE, activation, stride)
_SMALL = [(3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
          (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
          (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1), (5, 288, 96, True, "HS", 2),
          (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1)]


def mobilenet_v3_small(classes=1000):
    acts = {"RE": lambda: tnn.ReLU(inplace=True), "HS": lambda: tnn.Hardswish(inplace=True)}
    layers = [tnn.Conv2d(3, 16, 3, 2, 1, bias=False)] + _bn_act(16, acts["HS"])
    cin = 16
    for k, exp, cout, se, act, stride in _SMALL:
        layers.append(InvertedResidual(cin, k, exp, cout, se, acts[act], stride))
        cin = cout
    layers += [tnn.Conv2d(cin, 576, 1, bias=False)] + _bn_act(576, acts["HS"])
    layers += [tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(576, 1024), tnn.Hardswish(inplace=True),
               tnn.Dropout(0.2), tnn.Linear(1024, classes)]
    return tnn.Sequential(*layers)


def init_like_torchvision(m):
    """The initialisation torchvision gives both networks (He normal, fan-out, for convs; unit
    batch-norm scale; N(0, 0.01) linear weights): torch's module defaults shrink the signal layer
    by layer until MobileNetV3-Small's logits are its last bias alone (the same for every image,
    which would make the logits check below pass for any conv)."""
    for mod in m.modules():
        if isinstance(mod, tnn.Conv2d):
            tnn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
            if mod.bias is not None:
                tnn.init.zeros_(mod.bias)
        elif isinstance(mod, tnn.BatchNorm2d):
            tnn.init.ones_(mod.weight)
            tnn.init.zeros_(mod.bias)
        elif isinstance(mod, tnn.Linear):
            tnn.init.normal_(mod.weight, 0, 0.01)
            tnn.init.zeros_(mod.bias)
    return m


NETWORKS = {"resnet18": resnet18, "mobilenet_v3_small": mobilenet_v3_small}


def _stepper(m, x, y):
    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()

    return step



def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="resnet18,mobilenet_v3_small")
    a = ap.parse_args()
    bad = [n for n in a.only.split(",") if n not in NETWORKS]
    if bad:
        ap.error(f"--only: unknown network(s) {', '.join(bad)}; choose from {', '.join(NETWORKS)}")
    alloc = harness.configure_allocator()
    torch.set_num_threads(a.threads)
    _backend.native().set_num_threads(a.threads)
    print(f"# {platform.processor() or 'cpu'}; pyaiml ISA {_backend.native().isa()}; threads {a.threads}; {alloc}; "
          f"torch {torch.__version__}; batch {a.batch}, 3x224x224")
    print("| network | layout | mode | torch ms | pyaiml (convert) ms | ratio | CPU/wall torch, pyaiml |")
    print("|---|---|---|---:|---:|---:|---|")
    for name in a.only.split(","):
        torch.manual_seed(0)
        ref = init_like_torchvision(NETWORKS[name]())
        for fmt, lay in ((torch.contiguous_format, "NCHW"), (torch.channels_last, "channels_last")):
            t_m = copy.deepcopy(ref).to(memory_format=fmt)
            p_m = pnn.convert(copy.deepcopy(ref)).to(memory_format=fmt)
            x = torch.randn(a.batch, 3, 224, 224).contiguous(memory_format=fmt)
            y = torch.randint(0, 1000, (a.batch,))
            # checked in training mode (batch statistics, the same dropout mask from one seed):
            # with random weights the eval-mode signal of MobileNetV3-Small shrinks ~8x a block
            # (hard-swish and the SE gate halve small values) to 1e-10 at the logits
            with torch.no_grad():
                c_t, c_p = copy.deepcopy(t_m).train(), copy.deepcopy(p_m).train()
                torch.manual_seed(1)
                want = c_t(x)
                torch.manual_seed(1)
                got = c_p(x)
            # relative to how much the logits vary between images (not to their common part)
            spread = float((want - want.mean(0)).abs().max())
            assert spread > 1e-3 * float(want.abs().max()), f"{name}: logits do not depend on the image"
            rel = float((got - want).abs().max()) / spread
            assert rel < 1e-3, f"{name} {lay}: converted logits differ from torch's by {rel:.2e} (relative)"

            def ev(m, x=x):
                def f():
                    with torch.no_grad():
                        return m(x)
                return f

            modes = {"eval": {"torch": ev(t_m), "pyaiml": ev(p_m)}}
            t_m.train(), p_m.train()
            modes["train step"] = {"torch": _stepper(t_m, x, y), "pyaiml": _stepper(p_m, x, y)}
            for mode, fs in modes.items():
                if mode == "eval":
                    t_m.eval(), p_m.eval()
                else:
                    t_m.train(), p_m.train()
                t = harness.time_interleaved(fs, repeats=a.repeats, warmup=2, min_time=0.2)
                cw = [harness.cpu_per_wall(fs[k]) for k in ("torch", "pyaiml")]
                tt, tp = t["torch"].median, t["pyaiml"].median
                print(f"| {name} | {lay} | {mode} | {tt * 1e3:.1f} | {tp * 1e3:.1f} | {tt / tp:.2f}x | "
                      f"{cw[0]:.2f}, {cw[1]:.2f} |", flush=True)
            print(f"<!-- {name} {lay}: logits max difference {rel:.1e} of their spread over the batch -->",
                  flush=True)
    print(f"# medians of {a.repeats} interleaved samples; ratio = torch / pyaiml (> 1: pyaiml faster); "
          f"{np.__name__} {np.__version__}")


if __name__ == "__main__":
    main()
