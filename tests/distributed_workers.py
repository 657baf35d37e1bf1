"""Worker programs of tests/test_distributed_multiproc.py: one process per rank.

What it is: ``python tests/distributed_workers.py SCENARIO OUTDIR`` run with RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT set (as torchrun sets them); each scenario joins the
process group with pyaiml.distributed.init, trains on its shard and writes its result to
OUTDIR/SCENARIO.rank<r>.npz for the test to compare with a single-process run. The data of
every scenario are made here by ``make_*`` functions that the test imports too, so both
sides see the same arrays.
What it is not: a test by itself (the assertions are in the test file).
"""
from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


# ----------------------------------------------------------------------------- data
def make_gaussian_sequences(seed=0, n=13, D=3):
    """13 sequences of 9..40 frames from a 3-state chain (an odd count: uneven shards)."""
    rs = np.random.RandomState(seed)
    means = np.array([[0.0, 0.0, 0.0], [3.0, -1.0, 2.0], [-2.0, 2.5, -1.0]])[:, :D]
    seqs = []
    for _ in range(n):
        T = rs.randint(9, 41)
        s, out = 0, []
        for _t in range(T):
            out.append(means[s] + rs.randn(D) * 0.8)
            s = s if rs.rand() < 0.8 else rs.randint(3)
        seqs.append(np.array(out))
    return seqs


def gaussian_model(cls_name="GaussianHMM"):
    from pyaiml.hmm import GMMHMM, GaussianHMM

    if cls_name == "GaussianHMM":
        m = GaussianHMM(3, covariance_type="diag", n_iter=8, tol=0.0, init_params="", params="stmc")
        m.startprob_ = np.array([0.5, 0.3, 0.2])
        m.transmat_ = np.array([[0.6, 0.2, 0.2], [0.3, 0.5, 0.2], [0.25, 0.25, 0.5]])
        m.means_ = np.array([[0.5, 0.1, -0.2], [2.0, -0.5, 1.0], [-1.0, 1.5, -0.5]])
        m.covars_ = np.ones((3, 3))
        return m
    m = GMMHMM(3, n_mix=2, covariance_type="diag", n_iter=6, tol=0.0, init_params="", params="stmcw")
    m.startprob_ = np.array([0.5, 0.3, 0.2])
    m.transmat_ = np.array([[0.6, 0.2, 0.2], [0.3, 0.5, 0.2], [0.25, 0.25, 0.5]])
    m.weights_ = np.full((3, 2), 0.5)
    base = np.array([[0.5, 0.1, -0.2], [2.0, -0.5, 1.0], [-1.0, 1.5, -0.5]])
    m.means_ = np.stack([base - 0.3, base + 0.3], axis=1)
    m.covars_ = np.ones((3, 2, 3))
    return m


def make_symbols(seed=1, n=9):
    rs = np.random.RandomState(seed)
    return [rs.randint(0, 5, size=(rs.randint(5, 30), 1)) for _ in range(n)]


def categorical_model():
    from pyaiml.hmm import CategoricalHMM

    return CategoricalHMM(2, n_iter=7, tol=0.0, random_state=3)


def make_classifier_data(seed=2):
    seqs = make_gaussian_sequences(seed, n=18, D=2)
    y = np.array([i % 3 for i in range(len(seqs))])
    seqs = [s + 1.5 * y[i] for i, s in enumerate(seqs)]
    return seqs, y


def classifier():
    from pyaiml.hmm import HMMClassifier

    return HMMClassifier(n_states=3, n_iter=5, tol=0.0, random_state=0, implementation="log")


def make_images(seed=5, n=64 * 5, shape=(10, 10, 1)):
    rs = np.random.RandomState(seed)
    x = rs.rand(n, *shape)
    y = np.eye(3)[rs.randint(0, 3, n)]
    return x, y


def keras_model(dtype):
    """A small mission-like CNN (conv, pool, conv, flatten, dense softmax) with fixed seeds."""
    from pyaiml.keras import Sequential, utils
    from pyaiml.keras import layers as L

    utils.set_random_seed(11)
    m = Sequential([L.Conv2D(4, (3, 3), activation="relu", input_shape=(10, 10, 1)), L.MaxPooling2D((2, 2)),
                    L.Conv2D(5, (3, 3), activation="relu"), L.Flatten(), L.Dense(3, activation="softmax")])
    m.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    if dtype == np.float64:
        for layer in m.layers:
            layer._cast(np.float64)
    return m


def keras_tape_model():
    """A Sequential with a layer that has only a tape call() (Rescaling)."""
    from pyaiml.keras import Sequential, utils
    from pyaiml.keras import layers as L

    utils.set_random_seed(12)
    m = Sequential([L.Rescaling(0.5, input_shape=(10, 10, 1)), L.Conv2D(3, (3, 3), activation="relu"), L.Flatten(),
                    L.Dense(3, activation="softmax")])
    m.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return m


def keras_fit(m, x, y, dtype, **kw):
    """fit with the model's float type for data (fit casts x to float32 otherwise)."""
    import pyaiml.keras.models as km

    old = km.FLOATX
    km.FLOATX = dtype
    try:
        return m.fit(x, y, batch_size=64, shuffle=False, verbose=0, **kw)
    finally:
        km.FLOATX = old


# ----------------------------------------------------------------------------- scenarios
def _save(out, name, r, *arrays, **named):
    np.savez(os.path.join(out, f"{name}.rank{r}.npz"), *arrays, **named)


def scenario_hmm(out, dist):
    r = dist.init(timeout=60).rank
    for cls in ("GaussianHMM", "GMMHMM"):
        seqs = make_gaussian_sequences()
        m = gaussian_model(cls).fit(dist.shard(seqs, strategy="balanced"), distribute="data_parallel")
        _save(out, f"hmm_{cls}", r, **{n: np.asarray(m._raw(n)) for n in m._saved_attributes()},
              history=np.array(m.monitor_.history))
    m = categorical_model().fit(dist.shard(make_symbols()), distribute="data_parallel")
    _save(out, "hmm_CategoricalHMM", r, startprob_=m.startprob_, transmat_=m.transmat_,
          emissionprob_=m.emissionprob_, history=np.array(m.monitor_.history))
    seqs, y = make_classifier_data()
    xs, ys = dist.shard(seqs, y)
    clf = classifier().fit(xs, ys, distribute="data_parallel")
    _save(out, "hmm_classifier", r, classes=clf.classes_,
          **{f"{i}_{n}": np.asarray(m._raw(n)) for i, m in enumerate(clf.models_) for n in m._saved_attributes()})
    # a rank with no sequences of its own contributes zeros
    part = make_gaussian_sequences()[:5] if r == 0 else []
    m = gaussian_model("GaussianHMM").fit(part, distribute="data_parallel")
    _save(out, "hmm_empty_rank", r, means_=m.means_, covars_=np.asarray(m._raw("covars_")))


def scenario_keras(out, dist):
    r = dist.init(timeout=60).rank
    for dtype in (np.float64, np.float32):
        x, y = make_images()
        m = keras_model(dtype)
        if r == 1:  # different initial weights on rank 1: fit must broadcast rank 0's
            m.set_weights([w + 1.0 for w in m.get_weights()])
        ckpt = os.path.join(out, f"ckpt_{np.dtype(dtype).name}.keras")
        from pyaiml.keras.callbacks import ModelCheckpoint
        h = keras_fit(m, x, y, dtype, epochs=1, distribute="data_parallel",
                      callbacks=[ModelCheckpoint(ckpt)])
        _save(out, f"keras_{np.dtype(dtype).name}", r, *m.get_weights(), loss=np.array(h.history["loss"]),
              acc=np.array(h.history["accuracy"]))
    # a last global batch of one sample (fewer samples than ranks): computed whole on each rank
    x, y = make_images(n=129)
    m = keras_model(np.float64)
    h = keras_fit(m, x, y, np.float64, epochs=2, distribute="data_parallel")
    _save(out, "keras_partial", r, *m.get_weights(), loss=np.array(h.history["loss"]),
          acc=np.array(h.history["accuracy"]))
    # a Sequential that trains through the tape gets the same gradient all-reduce
    x, y = make_images()
    m = keras_tape_model()
    h = keras_fit(m, x, y, np.float32, epochs=1, distribute="data_parallel")
    _save(out, "keras_tape", r, *m.get_weights(), loss=np.array(h.history["loss"]))
    # resume: a fresh process restarted from the checkpoint continues with initial_epoch
    from pyaiml.keras.models import load_model
    x, y = make_images()
    m = load_model(os.path.join(out, "ckpt_float32.keras"))
    keras_fit(m, x, y, np.float32, epochs=2, initial_epoch=1, distribute="data_parallel")
    _save(out, "keras_resume", r, *m.get_weights(), epochs=np.array(m.history.epoch))


def scenario_ddp(out, dist):
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    from pyaiml.torch import nn as pnn

    r = dist.init(timeout=60).rank
    torch.set_num_threads(1)
    results = {}
    for kind in ("torch", "pyaiml"):
        torch.manual_seed(0)
        conv, pool = (torch.nn.Conv2d, torch.nn.MaxPool2d) if kind == "torch" else (pnn.Conv2d, pnn.MaxPool2d)
        net = torch.nn.Sequential(conv(1, 4, 3), torch.nn.ReLU(), pool(2), torch.nn.Flatten(),
                                  torch.nn.Linear(4 * 4 * 4, 3)).double()
        model = DDP(net)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        g = torch.Generator().manual_seed(1)
        X = torch.rand(64 * 4, 1, 10, 10, generator=g, dtype=torch.float64)
        Y = torch.randint(0, 3, (64 * 4,), generator=g)
        for step in range(4):
            xb, yb = X[step * 64:(step + 1) * 64], Y[step * 64:(step + 1) * 64]
            a, b = dist.shard_bounds(64)
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xb[a:b]), yb[a:b])
            loss.backward()
            opt.step()
        for k, v in net.state_dict().items():
            results[f"{kind}.{k}"] = v.detach().numpy().copy()
    _save(out, "ddp", r, **results)


def scenario_die(out, dist):
    """Rank TEST_DIST_VICTIM (default 1) is killed (SIGKILL) after the first all-reduce; the
    other keeps training."""
    r = dist.init(timeout=float(os.environ.get("TEST_DIST_TIMEOUT", "20"))).rank
    dist.all_reduce(np.ones(3))
    if r == int(os.environ.get("TEST_DIST_VICTIM", "1")):
        with open(os.path.join(out, "ready"), "w") as f:
            f.write(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.5)
    x, y = make_images(n=64 * 50)
    m = keras_model(np.float32)
    m.fit(x, y, batch_size=64, epochs=5, verbose=0, distribute="data_parallel")


def scenario_hang(out, dist):
    """Rank 1 stops entering collectives (a long sleep, or SIGSTOP with TEST_DIST_HANG=stop);
    rank 0 must give up after the timeout."""
    r = dist.init(timeout=float(os.environ.get("TEST_DIST_TIMEOUT", "8"))).rank
    dist.all_reduce(np.ones(3))
    if r == 1:
        if os.environ.get("TEST_DIST_HANG") == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
        time.sleep(120)
        return
    dist.barrier()


def scenario_raise(out, dist):
    """Rank 1 raises outside any collective; rank 0, waiting in a barrier, names its error."""
    r = dist.init(timeout=30).rank
    dist.all_reduce(np.ones(3))
    if r == 1:
        raise RuntimeError("the data loader of rank 1 broke")
    dist.barrier()


def scenario_bad_input(out, dist):
    """Rank 1 passes a malformed shard: every rank stops, rank 0 names rank 1."""
    r = dist.init(timeout=30).rank
    seqs = make_gaussian_sequences()
    part = dist.shard(seqs)
    if r == 1:
        part = [np.full((5, 3), np.nan)]
    gaussian_model().fit(part, distribute="data_parallel")


def scenario_estep_error(out, dist):
    """Rank 1's sequence has zero likelihood (a symbol no state emits): its E-step fails."""
    from pyaiml.hmm import CategoricalHMM

    r = dist.init(timeout=30).rank
    m = CategoricalHMM(2, n_iter=3, init_params="", n_features=5)
    m.startprob_ = np.array([0.5, 0.5])
    m.transmat_ = np.full((2, 2), 0.5)
    m.emissionprob_ = np.array([[0.25, 0.25, 0.25, 0.25, 0.0], [0.25, 0.25, 0.25, 0.25, 0.0]])
    seq = np.array([[0], [1], [2]]) if r == 0 else np.array([[0], [4], [2]])
    m.fit([seq], distribute="data_parallel")


def main():
    name, out = sys.argv[1], sys.argv[2]
    import pyaiml.distributed as dist

    globals()[f"scenario_{name}"](out, dist)
    dist.shutdown()


if __name__ == "__main__":
    main()
