"""The keras.io "Simple MNIST convnet" example, per-epoch time: pyaiml.keras against Keras 3 on
its torch backend, side by side in one process.

The model, loss, optimizer, batch size (128) and validation split (0.1) are the example's;
only the import differs (``from pyaiml import keras`` / ``import keras`` with
KERAS_BACKEND=torch). MNIST cannot be downloaded here, so the data are MNIST-shaped digits
built from the shipped 8x8 digits (pyaiml.datasets.load_digits, UCI, CC BY 4.0): each image
upsampled 3x to 24x24, placed at a random offset in a 28x28 frame with a little noise, the
training images repeated to ``--train`` samples; the last 20% of the digits (never seen in
training, other writers) are the test set. Both sides get the same arrays, the same thread
count (``--threads``: pyaiml.set_num_threads, torch.set_num_threads, OpenBLAS) and the same
allocator setting (pyaiml.bench.harness.configure_allocator). ``--rounds`` rounds alternate
the two sides; each round builds a fresh model and fits ``--epochs`` epochs, and the first
epoch of every fit (Keras traces and builds there) is reported apart. Prints seconds per
epoch (median over rounds of the later epochs' mean, with the range), the ratio, each side's
CPU time / wall time, test accuracy, the CPU model and the load average at the start and end.

Run: python benchmarks/scripts/keras3_mnist_epoch.py [--threads 2] [--rounds 3] [--epochs 3] [--train 12000]
Needs keras==3.15.1 (the bench extra). Not a test (tests/test_keras_io_examples.py runs the
example on pyaiml briefly).
"""
from __future__ import annotations

import argparse
import os
import time

if __name__ == "__main__":
    import _thread_env  # --threads into OPENBLAS/OMP_NUM_THREADS before NumPy loads

    _thread_env.apply()
    os.environ["KERAS_BACKEND"] = "torch"

import numpy as np


def mnist_like(n_train, seed=0):
    """((x_train, y_train), (x_test, y_test)): 28x28x1 float32 in [0, 1], one-hot labels."""
    from pyaiml.datasets import load_digits

    d = load_digits()
    imgs, y = d.images / 16.0, d.target
    cut = int(len(y) * 0.8)
    rs = np.random.default_rng(seed)

    def frame(src, labels, n):
        idx = np.arange(n) % len(src)
        out = np.zeros((n, 28, 28, 1), np.float32)
        big = np.kron(src[idx], np.ones((3, 3)))  # (n, 24, 24)
        off = rs.integers(0, 5, (n, 2))
        for i in range(n):
            r, c = off[i]
            out[i, r:r + 24, c:c + 24, 0] = big[i]
        out += rs.normal(0, 0.05, out.shape).astype(np.float32)
        np.clip(out, 0, 1, out=out)
        return out, np.eye(10, dtype=np.float32)[labels[idx]]

    return frame(imgs[:cut], y[:cut], n_train), frame(imgs[cut:], y[cut:], len(y) - cut)


def build(keras):
    layers = keras.layers
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def fit_timed(keras, x, y, xt, yt, epochs, seed):
    """(first epoch s, later epochs' mean s, cpu/wall over the later epochs, test accuracy)."""
    keras.utils.set_random_seed(seed)
    model = build(keras)
    times = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t, self.c = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            times.append((time.perf_counter() - self.t, time.process_time() - self.c))

    model.fit(x, y, batch_size=128, epochs=epochs, validation_split=0.1, verbose=0, callbacks=[Clock()])
    later = times[1:] or times
    wall = sum(w for w, _ in later) / len(later)
    cpu = sum(c for _, c in later) / len(later)
    acc = float(np.mean(np.argmax(model.predict(xt, verbose=0), -1) == np.argmax(yt, -1)))
    return times[0][0], wall, cpu / wall, acc


def main(threads=2, rounds=3, epochs=3, n_train=12000):
    import keras as keras3
    import torch

    import pyaiml
    from pyaiml import _backend
    from pyaiml import keras as pk
    from pyaiml.bench.harness import configure_allocator, cpu_model

    allocator = configure_allocator()
    pyaiml.set_num_threads(threads)
    torch.set_num_threads(threads)
    load0 = os.getloadavg()
    (x, y), (xt, yt) = mnist_like(n_train)
    res = {"pyaiml": [], "keras3": []}
    for r in range(rounds):
        for name, k in (("pyaiml", pk), ("keras3", keras3)):
            res[name].append(fit_timed(k, x, y, xt, yt, epochs, seed=r))
            f, w, u, a = res[name][-1]
            print(f"round {r + 1} {name:7s}: first epoch {f:6.2f} s, later epochs {w:6.2f} s/epoch, "
                  f"cpu/wall {u:.2f}, test accuracy {a:.3f}", flush=True)
    load1 = os.getloadavg()
    med = {k: float(np.median([w for _, w, _, _ in v])) for k, v in res.items()}
    ratios = [k3[1] / p[1] for p, k3 in zip(res["pyaiml"], res["keras3"])]
    print(f"\n{cpu_model()}, {threads} threads, pyaiml ISA {_backend.isa()}, "
          f"keras {keras3.__version__} (torch {torch.__version__}), allocator {allocator}")
    print(f"{n_train} training images (10% held out for validation), batch 128, {epochs} epochs per fit, "
          f"{rounds} rounds")
    print(f"pyaiml.keras {med['pyaiml']:.2f} s/epoch, Keras 3 (torch) {med['keras3']:.2f} s/epoch: "
          f"{np.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]")
    print(f"test accuracy (last round): pyaiml {res['pyaiml'][-1][3]:.3f}, keras {res['keras3'][-1][3]:.3f}")
    print(f"load average start {'/'.join(f'{v:.2f}' for v in load0)}, end {'/'.join(f'{v:.2f}' for v in load1)}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train", type=int, default=12000)
    a = p.parse_args()
    main(a.threads, a.rounds, a.epochs, a.train)
