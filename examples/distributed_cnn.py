"""Data-parallel training of the mission's image CNN with pyaiml.distributed (torch.distributed).

The model is examples/cnn_digits.py's mission CNN (Conv2D 32 -> pool -> Conv2D 64 -> pool ->
Dense 10 softmax, input 32x32x3, Adam) on the bundled 8x8 digits upscaled to 32x32x3. Every
rank loads the same data; ``fit(..., distribute="data_parallel")`` splits each global batch
of 64 over the ranks, sums the gradients before each Adam step, reports loss and accuracy
over all ranks, and only rank 0 prints and writes the checkpoint. Run it again after a crash
and it resumes from the checkpoint with ``initial_epoch``.

Run:  torchrun --nproc-per-node 2 examples/distributed_cnn.py            (2 processes, gloo)
      torchrun --nnodes 2 --node-rank R --master-addr HOST --nproc-per-node 1 \\
               examples/distributed_cnn.py                                (2 machines)
      python examples/distributed_cnn.py                                  (one process)
Options: --epochs N (4), --ckpt PATH (distributed_cnn.keras in the temp folder),
         --threads N (pyaiml threads per rank, default 1), --timeout S (60).
Not a benchmark (benchmarks/results/distributed.md) and not a test
(tests/test_distributed_multiproc.py).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


from cnn_digits import digits_split, mission_cnn, to_32x32x3

import pyaiml
import pyaiml.distributed as dist
from pyaiml.keras import callbacks, utils
from pyaiml.keras.models import load_model


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--ckpt", default=os.path.join(tempfile.gettempdir(), "distributed_cnn.keras"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args(argv)

    ctx = dist.init(timeout=args.timeout)
    pyaiml.set_num_threads(args.threads)
    x_tr, x_te, y_tr, y_te = digits_split()
    x_tr, x_te = to_32x32x3(x_tr), to_32x32x3(x_te)
    y_tr, y_te = utils.to_categorical(y_tr, 10), utils.to_categorical(y_te, 10)

    start = 0
    if os.path.exists(args.ckpt):  # every rank reads the same checkpoint: same weights and optimizer state
        model = load_model(args.ckpt)
        start = len(model.history.epoch) if model.history is not None else 0
    else:
        utils.set_random_seed(0)
        model = mission_cnn()
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    if dist.is_main():
        print(f"{ctx.world_size} rank(s), backend {ctx.backend}, {args.threads} thread(s) each; "
              f"starting at epoch {start + 1} of {args.epochs}", flush=True)
    t = time.perf_counter()
    model.fit(x_tr, y_tr, batch_size=64, epochs=args.epochs, initial_epoch=start, verbose=2,
              callbacks=[callbacks.ModelCheckpoint(args.ckpt)], distribute="data_parallel")
    took = time.perf_counter() - t
    if dist.is_main():
        _, acc = model.evaluate(x_te, y_te, verbose=0)
        print(f"test accuracy {acc:.4f}; {took:.1f} s for {args.epochs - start} epoch(s); "
              f"checkpoint {args.ckpt}", flush=True)
    dist.barrier()
    dist.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
