"""2 ranks x 1 thread against 1 rank x 2 threads: the figures of benchmarks/results/distributed.md.

Cases (same data and global batch on both sides; validated before timing):
- cnn: the mission CNN (Conv2D 32 -> pool -> Conv2D 64 -> pool -> Dense 10, 32x32x3 input, Adam)
  on the bundled digits upscaled to 32x32x3 (1437 training images), global batch 64,
  ``--epochs`` timed epochs after one warm-up epoch. The 2-rank run also times the gradient
  all-reduce inside each step (FitSync.reduce_grads).
- hmm: the FSDD HMM recognizer (HMMClassifier, 8-state left-right diagonal Gaussian HMM per
  digit, ``--iters`` Baum-Welch iterations) on the official training split (indexes 5-49,
  MFCC + deltas, 39-D, per-utterance CMVN); 2 ranks: balanced sequence shards, sharded EM
  (classes in turn); 1 rank: the classifier's own 2 class threads.
Each configuration runs ``--rounds`` times, alternating the two, in fresh processes launched
like torchrun (RANK, WORLD_SIZE, MASTER_ADDR/PORT; gloo on 127.0.0.1); medians and ranges.
Also prints the communication-cost model (ring all-reduce) for the CNN's gradient.

Run: python benchmarks/scripts/distributed_scaling.py [--case cnn,hmm] [--rounds 3]
Not a test (tests/test_distributed_multiproc.py checks the results are the single-process ones).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples"))


# ----------------------------------------------------------------------------- workers
def cnn_worker(args, dist_mode):
    from cnn_digits import digits_split, mission_cnn, to_32x32x3

    import pyaiml
    import pyaiml.distributed as dist
    from pyaiml.keras import utils

    if dist_mode:
        dist.init(timeout=120)
    pyaiml.set_num_threads(args.threads)
    x, _, y, _ = digits_split()
    x, y = to_32x32x3(x), utils.to_categorical(y, 10)
    utils.set_random_seed(0)
    m = mission_cnn()
    m.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    comm = []
    if dist_mode:
        from pyaiml.distributed.keras import FitSync
        orig = FitSync.reduce_grads

        def timed(self, params):
            t = time.perf_counter()
            orig(self, params)
            comm.append(time.perf_counter() - t)
        FitSync.reduce_grads = timed
    kw = {"distribute": "data_parallel"} if dist_mode else {}
    m.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False, **kw)  # warm-up
    comm.clear()
    t = time.perf_counter()
    h = m.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0, shuffle=False, **kw)
    dt = time.perf_counter() - t
    steps = args.epochs * -(-len(x) // 64)
    w = np.concatenate([a.ravel() for a in m.get_weights()])
    return {"s_per_step": dt / steps, "comm_s_per_step": (sum(comm) / steps) if comm else 0.0,
            "loss": h.history["loss"][-1], "wsum": float(np.abs(w).sum()), "params": int(w.size)}


def fsdd_features(cache):
    if os.path.exists(cache):
        z = np.load(cache)
        lens = z["lens"]
        X = np.split(z["X"], np.cumsum(lens)[:-1])
        return X, z["y"]
    from pyaiml.audio import mfcc_features
    from pyaiml.datasets.fsdd import find_fsdd, load_fsdd

    ds = load_fsdd(find_fsdd()[0])
    X, y = [], []
    for i in ds.train_idx:
        try:  # per-utterance CMVN (normalize=True)
            X.append(mfcc_features(ds.signals[i], int(ds.rates[i]), name=ds.filenames[i]).astype(np.float64))
        except ValueError:  # an all-silent recording
            continue
        y.append(int(ds.digits[i]))
    np.savez(cache, X=np.concatenate(X), lens=np.array([len(a) for a in X]), y=np.array(y))
    return X, np.array(y)


def hmm_worker(args, dist_mode):
    import pyaiml
    import pyaiml.distributed as dist
    from pyaiml.hmm import HMMClassifier

    X, y = fsdd_features(args.cache)
    pyaiml.set_num_threads(args.threads)
    clf = HMMClassifier(n_states=8, emission="gaussian", n_iter=args.iters, tol=0.0, random_state=0,
                        implementation="log")
    if dist_mode:  # joining the group and sharding are not timed
        dist.init(timeout=300)
        xs, ys = dist.shard(X, y, strategy="balanced")
        dist.barrier()
    t = time.perf_counter()
    if dist_mode:
        clf.fit(xs, ys, distribute="data_parallel")
    else:
        clf.fit(X, y)
    dt = time.perf_counter() - t
    means = np.concatenate([m.means_.ravel() for m in clf.models_])
    m = clf.models_[0]
    nbytes = 8 * (2 * m.n_components * m.n_features + m.n_components ** 2 + 2 * m.n_components + 3)
    return {"s_fit": dt, "frames": int(sum(len(a) for a in X)), "seqs": len(X), "msum": float(np.abs(means).sum()),
            "stat_bytes": nbytes * len(clf.models_)}


def worker(args):
    dist_mode = os.environ.get("WORLD_SIZE", "1") != "1"
    res = (cnn_worker if args.case == "cnn" else hmm_worker)(args, dist_mode)
    res["rank"] = int(os.environ.get("RANK", "0"))
    print("RESULT " + json.dumps(res), flush=True)
    if dist_mode:
        import pyaiml.distributed as dist
        dist.shutdown()


# ----------------------------------------------------------------------------- driver
def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(case, ranks, threads, extra):
    port = _port()
    procs = []
    for r in range(ranks):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(ranks), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), PYTHONPATH=ROOT)
        procs.append(subprocess.Popen([sys.executable, __file__, "--worker", "--case", case, "--threads", str(threads)]
                                      + extra, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    out = []
    for p in procs:
        o, _ = p.communicate(timeout=900)
        if p.returncode != 0:
            raise RuntimeError(f"{case} ranks={ranks}: exit {p.returncode}\n{o[-3000:]}")
        out.append(json.loads([ln for ln in o.splitlines() if ln.startswith("RESULT ")][-1][7:]))
    return out


def load():
    return os.getloadavg()


ALPHA_S = 20e-6  # latency per message hop assumed by the model (TCP within one data centre)


def ring_model(n_bytes, t_compute_per_sample):
    """Rows of the ring all-reduce model: time = 2 (p-1)/p * bytes / bandwidth + 2 (p-1) * alpha."""
    alpha = ALPHA_S
    rows = []
    for p in (2, 4, 8, 16, 32, 64):
        for gbit in (10, 100):
            bw = gbit * 1e9 / 8
            t_bw = 2 * (p - 1) / p * n_bytes / bw
            t = t_bw + 2 * (p - 1) * alpha
            # communication dominates when a rank's compute (B / p samples) is shorter than it
            b_star = p * t / t_compute_per_sample
            rows.append((p, gbit, t_bw * 1e3, t * 1e3, b_star))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--case", default="cnn,hmm")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "pyaiml_fsdd_train_mfcc.npz"))
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    extra = ["--epochs", str(args.epochs), "--iters", str(args.iters), "--cache", args.cache]
    print(f"load average before: {load()}")
    for case in args.case.split(","):
        if case == "hmm":
            fsdd_features(args.cache)
        rows = {"2x1": [], "1x2": []}
        for _ in range(args.rounds):
            rows["2x1"].append(launch(case, 2, 1, extra))
            rows["1x2"].append(launch(case, 1, 2, extra))
        key = "s_per_step" if case == "cnn" else "s_fit"
        chk = "wsum" if case == "cnn" else "msum"
        a = [r[0][chk] for r in rows["2x1"]] + [r[0][chk] for r in rows["1x2"]]
        print(f"{case}: validation ({chk}, both configurations, all rounds): {min(a):.9g} .. {max(a):.9g}")
        for name, rs in rows.items():
            v = np.array([max(x[key] for x in r) for r in rs])
            line = f"{case} {name}: {key} median {np.median(v):.4f} range {v.min():.4f}-{v.max():.4f}"
            if case == "cnn" and name == "2x1":
                c = np.array([r[0]["comm_s_per_step"] for r in rs])
                line += f"; all-reduce per step median {np.median(c) * 1e3:.3f} ms ({rs[0][0]['params']} params)"
            print(line, flush=True)
        t2 = np.median([max(x[key] for x in r) for r in rows["2x1"]])
        t1 = np.median([max(x[key] for x in r) for r in rows["1x2"]])
        print(f"{case}: 1 rank x 2 threads / 2 ranks x 1 thread = {t1 / t2:.2f}x (> 1: the 2 ranks are faster)")
        if case == "cnn":
            params = rows["2x1"][0][0]["params"]
            t_sample = t1 * 2 / 64  # one core's compute per sample (2 threads ran 64 samples)
            print(f"ring model: {params * 4} gradient bytes, compute {t_sample * 1e3:.3f} ms per sample per core")
            for p, g, tbw, t, b in ring_model(params * 4, t_sample):
                print(f"  p={p:2d} {g:3d} Gbit/s: bandwidth term {tbw:.3f} ms, with latency {t:.3f} ms, "
                      f"communication dominates below global batch {b:.0f}")
        if case == "hmm":
            r0 = rows["1x2"][0][0]
            t_frame = t1 * 2 / (r0["frames"] * args.iters)  # one core's E+M time per frame and iteration
            print(f"hmm model: {r0['stat_bytes']} statistic bytes per iteration (all classes), {r0['frames']} frames, "
                  f"compute {t_frame * 1e6:.3f} us per frame per iteration per core")
            for p, g, tbw, t, b in ring_model(r0["stat_bytes"], t_frame):
                print(f"  p={p:2d} {g:3d} Gbit/s: all-reduce {t:.3f} ms per iteration; communication dominates below "
                      f"{b:.0f} frames in total ({b / p:.0f} per machine; FSDD's training split has {r0['frames']})")
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
