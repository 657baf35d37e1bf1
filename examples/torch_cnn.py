"""Example: a torch CNN on pyaiml's conv and pooling kernels.

Builds the mission's CNN in plain torch, swaps its Conv2d/MaxPool2d layers for pyaiml's
(``pyaiml.torch.nn.convert``, same parameters and state_dict), trains it for a few Adam steps
on random 3x32x32 images next to the untouched torch model, optionally under
``torch.compile(fullgraph=True)``, and prints both loss curves. Not a test (see
tests/test_torch_bridge_nn.py). Run: ``python examples/torch_cnn.py [--compile] [--channels-last]``.
"""
import argparse
import copy
import time

import torch
import torch.nn as nn

import pyaiml.torch as pt


def cnn():
    return nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2304, 10))


def train(model, xs, ys, channels_last):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    t0 = time.perf_counter()
    for x, y in zip(xs, ys):
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--compile", action="store_true", help="torch.compile(fullgraph=True) both models")
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    ref = cnn()
    mine = pt.nn.convert(copy.deepcopy(ref))
    if args.channels_last:
        ref, mine = ref.to(memory_format=torch.channels_last), mine.to(memory_format=torch.channels_last)
    if args.compile:
        ref, mine = torch.compile(ref, fullgraph=True), torch.compile(mine, fullgraph=True)
    xs = torch.randn(args.steps, 32, 3, 32, 32)
    ys = torch.randint(0, 10, (args.steps, 32))
    lr, tr = train(ref, xs, ys, args.channels_last)
    lm, tm = train(mine, xs, ys, args.channels_last)
    print(f"kernels: {pt.kernel_source()['conv2d']}; threads: torch {torch.get_num_threads()}")
    print("step  torch loss   pyaiml loss")
    for i, (a, b) in enumerate(zip(lr, lm)):
        print(f"{i:4d}  {a:.6f}     {b:.6f}")
    print(f"time (incl. any compilation): torch {tr:.2f}s, pyaiml {tm:.2f}s")


if __name__ == "__main__":
    main()
