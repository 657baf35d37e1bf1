"""DP-SGD benchmark: accuracy against epsilon on the bundled 8x8 digits, cost of a DP step
against a non-private one, and against Opacus on the same network (torch), validated first.

Run: ``python benchmarks/bench_dp.py`` (about 2-3 minutes on 1 thread; ``--seeds 1`` for a
quicker look; ``--json PATH`` keeps the raw figures). Prints a markdown report, the source
of the "Differential privacy" section of benchmarks/RESULTS.md.

Protocol. Data: pyaiml.datasets.load_digits, pixels / 16, stratified 80/20 split (seed 0):
1,438 training and 359 test images. Model: Conv2D 16 3x3 same tanh, MaxPool 2, Conv2D 32 3x3
same tanh, MaxPool 2, Flatten, Dense 10 softmax (6,090 weights). tanh rather than relu: under
DP-SGD it gained 2-3 points here (eps 8, batch 128, 40 epochs: 0.936-0.939 over 3 seeds, against
0.903-0.911 over 2 seeds with relu), as Papernot et al. (2021, "Tempered sigmoid activations for deep
learning with differential privacy") report for bounded activations. DP recipe: DPSGD with
base Adam (learning rate 0.01), l2_norm_clip 1.0, batch size 128 (Poisson sampling,
q = 128/1438), 40 epochs = 480 steps, delta 1e-5; the noise multiplier for each target
epsilon comes from ``compute_noise_multiplier`` (RDP accountant). Non-private: the same
model, Adam 0.01, batch 128, 40 epochs of fit's shuffled batches. Each setting is trained
with ``--seeds`` seeds (weight init, sampling and noise all change with the seed).

Step cost: one training step on a fixed batch of 128 (forward, loss, backward, update; the DP
step adds per-example norms, clipping, noise), median of interleaved rounds
(pyaiml.bench.harness.time_interleaved), 1 thread for pyaiml, torch and BLAS, glibc
allocator thresholds raised for both sides. Opacus: ``PrivacyEngine.make_private`` on the
same network in torch (NCHW; the features are permuted to NHWC order before the Dense layer
so that weights copy over), Adam 0.01, same clip and noise. Validated before timing: with
the same weights and batch, pyaiml's per-example gradient norms equal Opacus's to 1e-4.

Not here: a benchmark of the accountant, or GPU runs. Not collected as a test (no test_
functions); the DP tests are tests/test_privacy_dp.py.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import pyaiml
from pyaiml.bench import harness
from pyaiml.datasets import load_digits
from pyaiml.keras import layers, optimizers, utils
from pyaiml.keras.models import Sequential
from pyaiml.ops import _validate
from pyaiml.privacy import DPSGD, compute_epsilon, compute_noise_multiplier

EPOCHS, BATCH, LR, CLIP, DELTA = 40, 128, 0.01, 1.0, 1e-5
ACT = "tanh"
EPSILONS = (1.0, 2.0, 4.0, 8.0)


def digits_split():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    return utils.stratified_split(x, y, test_size=0.2, seed=0)


def cnn():
    return Sequential([
        layers.Input((8, 8, 1)),
        layers.Conv2D(16, 3, padding="same", activation=ACT),
        layers.MaxPooling2D(2),
        layers.Conv2D(32, 3, padding="same", activation=ACT),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ])


def steps_of(n):
    return EPOCHS * -(-n // BATCH)


def train(data, seed, sigma=None):
    """Train one model; sigma None: non-private. Returns a dict of results."""
    xtr, xte, ytr, yte = data
    utils.set_random_seed(seed)
    m = cnn()
    if sigma is None:
        opt = optimizers.Adam(LR)
    else:
        opt = DPSGD(CLIP, sigma, learning_rate=LR, base="adam", delta=DELTA, seed=seed)
    m.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    t = time.perf_counter()
    h = m.fit(xtr, ytr, batch_size=BATCH, epochs=EPOCHS, verbose=0)
    dt = time.perf_counter() - t
    acc = m.evaluate(xte, yte, verbose=0)[1]
    return {"seed": seed, "test_accuracy": float(acc), "seconds": dt,
            "epsilon": h.history["epsilon"][-1] if sigma is not None else None}


def accuracy_curve(data, seeds, log):
    n = len(data[0])
    q, steps = BATCH / n, steps_of(n)
    rows = []
    for eps in EPSILONS:
        sigma = compute_noise_multiplier(eps, steps, q, DELTA)
        runs = [train(data, s, sigma) for s in range(seeds)]
        rows.append({"target_epsilon": eps, "noise_multiplier": sigma, "runs": runs})
        log(f"  eps {eps}: sigma {sigma:.3f}, accuracy {[round(r['test_accuracy'], 4) for r in runs]}, "
            f"epsilon {runs[0]['epsilon']:.3f}, {statistics.mean(r['seconds'] for r in runs):.1f} s/run")
    runs = [train(data, s) for s in range(seeds)]
    rows.append({"target_epsilon": None, "noise_multiplier": None, "runs": runs})
    log(f"  non-private: accuracy {[round(r['test_accuracy'], 4) for r in runs]}")
    return rows


# ---------------------------------------------------------------------------- torch / Opacus
def torch_net(torch):
    nn, F = torch.nn, torch.nn.functional

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
            self.fc = nn.Linear(128, 10)

        def forward(self, x):
            x = F.max_pool2d(torch.tanh(self.conv1(x)), 2)
            x = F.max_pool2d(torch.tanh(self.conv2(x)), 2)
            return self.fc(x.permute(0, 2, 3, 1).flatten(1))  # NHWC order, as pyaiml's Flatten

    return Net()


def nchw(torch, x):
    """(N, H, W, C) array -> an NCHW tensor with standard strides. Not a strided view: for C = 1
    the view's strides read as channels_last, and Opacus 1.6.0's per-sample gradients of the
    next conv are then wrong (their sum differs from the batch gradient; checked with torch 2.13)."""
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def copy_weights(torch, model, net):
    c1, c2, d = model.layers[0], model.layers[2], model.layers[5]
    with torch.no_grad():
        for conv, tc in ((c1, net.conv1), (c2, net.conv2)):
            tc.weight.copy_(torch.from_numpy(np.ascontiguousarray(conv.kernel)))  # OIHW both
            tc.bias.copy_(torch.from_numpy(conv.bias))
        net.fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(d.kernel.T)))
        net.fc.bias.copy_(torch.from_numpy(d.bias))


def pyaiml_sq_norms(model, x, y):
    """The squared norms of the examples' gradients, as the DP step computes them (the tape's
    per-example rules; the clip factors here are all 1)."""
    tape, loss, _, _ = model._recorded_loss(x, y)
    _, sq = tape.clipped_gradient(loss, model._train_vars(), lambda s: np.ones_like(s), len(x))
    return sq


def validate_against_opacus(torch, opacus, x, y):
    utils.set_random_seed(1)
    m = cnn()
    m.compile(optimizer=DPSGD(CLIP, 1.0, seed=0), loss="sparse_categorical_crossentropy")
    m.build((None, 8, 8, 1))
    net = torch_net(torch)
    copy_weights(torch, m, net)
    gsm = opacus.GradSampleModule(net, loss_reduction="sum")
    xt = nchw(torch, x)
    loss = torch.nn.functional.cross_entropy(gsm(xt), torch.from_numpy(y), reduction="sum")
    loss.backward()
    theirs = sum((p.grad_sample.reshape(len(x), -1).double() ** 2).sum(1) for p in gsm.parameters()).numpy()
    with _validate.finite_checks(False):
        ours = pyaiml_sq_norms(m, x, y)
    harness.check_close("per-example gradient norms vs Opacus", np.sqrt(ours), np.sqrt(theirs), 1e-4, 1e-6)
    return float(np.max(np.abs(np.sqrt(ours) / np.sqrt(theirs) - 1)))


def step_fns(data, torch, opacus):
    """Callables that each take one training step on a fixed batch of BATCH examples."""
    xtr, _, ytr, _ = data
    x, y = xtr[:BATCH], ytr[:BATCH]
    fns = {}
    utils.set_random_seed(2)
    plain = cnn()
    plain.compile(optimizer=optimizers.Adam(LR), loss="sparse_categorical_crossentropy")
    plain.build((None, 8, 8, 1))
    utils.set_random_seed(2)
    dp = cnn()
    dpo = DPSGD(CLIP, 1.0, learning_rate=LR, base="adam", seed=0)
    dp.compile(optimizer=dpo, loss="sparse_categorical_crossentropy")
    dp.build((None, 8, 8, 1))
    def pyaiml_plain():
        with _validate.finite_checks(False):
            plain._train_step(x, y)

    def pyaiml_dp():
        with _validate.finite_checks(False):
            dp._train_step_dp(x, y, BATCH)

    fns["pyaiml"] = pyaiml_plain
    fns["pyaiml DP"] = pyaiml_dp
    if torch is None:
        return fns
    F = torch.nn.functional
    xt = nchw(torch, x)
    yt = torch.from_numpy(y)
    torch.manual_seed(0)
    net = torch_net(torch)
    topt = torch.optim.Adam(net.parameters(), lr=LR)

    def torch_plain():
        topt.zero_grad(set_to_none=True)
        F.cross_entropy(net(xt), yt).backward()
        topt.step()

    fns["torch"] = torch_plain
    if opacus is None:
        return fns
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xt, yt), batch_size=BATCH)
    pnet = torch_net(torch)
    popt = torch.optim.Adam(pnet.parameters(), lr=LR)
    pe = opacus.PrivacyEngine(accountant="rdp")
    pnet, popt, _ = pe.make_private(module=pnet, optimizer=popt, data_loader=loader, noise_multiplier=1.0,
                                    max_grad_norm=CLIP, poisson_sampling=True)

    def opacus_dp():
        popt.zero_grad(set_to_none=True)
        F.cross_entropy(pnet(xt), yt).backward()
        popt.step()

    fns["Opacus DP"] = opacus_dp
    return fns


def opacus_train(torch, opacus, data, sigma, seed=0):
    """The DP recipe in Opacus (Poisson sampling through its DPDataLoader); test accuracy, epsilon."""
    xtr, xte, ytr, yte = data
    F = torch.nn.functional
    torch.manual_seed(seed)
    ds = torch.utils.data.TensorDataset(nchw(torch, xtr),
                                        torch.from_numpy(ytr))
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH)
    net = torch_net(torch)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    pe = opacus.PrivacyEngine(accountant="rdp")
    net, opt, loader = pe.make_private(module=net, optimizer=opt, data_loader=loader, noise_multiplier=sigma,
                                       max_grad_norm=CLIP, poisson_sampling=True)
    t = time.perf_counter()
    for _ in range(EPOCHS):
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(xb), yb).backward()
            opt.step()
    dt = time.perf_counter() - t
    net.eval()
    with torch.no_grad():
        pred = net(nchw(torch, xte)).argmax(1).numpy()
    return {"test_accuracy": float((pred == yte).mean()), "epsilon": float(pe.get_epsilon(DELTA)), "seconds": dt,
            "steps": len(loader) * EPOCHS}


# ---------------------------------------------------------------------------- report
def report(res):
    info = res["machine"]
    n = res["n_train"]
    out = ["## Differential privacy: DP-SGD (`pyaiml.privacy.DPSGD`) on the 8x8 digits, vs Opacus", ""]
    out.append(f"{info['date']}, {info['cpu']}, commit {info['commit']}, threads {res['threads']}, "
               f"{res['seeds']} seed(s) per setting; `python benchmarks/bench_dp.py` (protocol in its docstring). "
               f"Data: bundled digits, stratified 80/20 split ({n} train / {res['n_test']} test). Model: Conv2D 16 "
               "3x3 tanh, MaxPool 2, Conv2D 32 3x3 tanh, MaxPool 2, Flatten, Dense 10 softmax. DP-SGD: base Adam "
               f"lr {LR}, clip {CLIP}, Poisson sampling q = {BATCH}/{n}, {EPOCHS} epochs ({steps_of(n)} steps), "
               f"delta {DELTA}, RDP accountant (dp-accounting {res['versions'].get('dp_accounting', '?')}).")
    out.append("")
    out.append("| setting | noise multiplier | epsilon (reported) | test accuracy (mean) | min | max | s per run |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    for r in res["curve"]:
        accs = [x["test_accuracy"] for x in r["runs"]]
        secs = statistics.mean(x["seconds"] for x in r["runs"])
        if r["target_epsilon"] is None:
            out.append(f"| non-private (Adam) | - | - | {statistics.mean(accs):.4f} | {min(accs):.4f} | "
                       f"{max(accs):.4f} | {secs:.1f} |")
        else:
            out.append(f"| DP-SGD, eps <= {r['target_epsilon']:g} | {r['noise_multiplier']:.3f} | "
                       f"{r['runs'][0]['epsilon']:.3f} | {statistics.mean(accs):.4f} | {min(accs):.4f} | "
                       f"{max(accs):.4f} | {secs:.1f} |")
    if res.get("opacus_train"):
        o = res["opacus_train"]
        out.append(f"| Opacus {res['versions'].get('opacus')}, same recipe, sigma of eps 8, seed 0 | "
                   f"{res['opacus_sigma']:.3f} | {o['epsilon']:.3f} (Opacus RDP) | {o['test_accuracy']:.4f} | | | "
                   f"{o['seconds']:.1f} |")
    out.append("")
    t = res["step_ms"]
    base = t["pyaiml"]["median_ms"]
    out.append(f"Cost of one training step, fixed batch of {BATCH}, median of interleaved rounds "
               "(interquartile range in brackets):")
    out.append("")
    out.append("| implementation | ms per step | vs pyaiml non-private |")
    out.append("|---|---:|---:|")
    for k, v in t.items():
        out.append(f"| {k} | {v['median_ms']:.3f} [{v['p25_ms']:.3f}-{v['p75_ms']:.3f}] | {v['median_ms'] / base:.2f}x |")
    if res.get("opacus_train"):
        o = res["opacus_train"]
        out.append("")
        out.append(f"Accountant cross-check: Opacus's engine samples at q = 1/len(loader) = {o['opacus_q']:.4f} "
                   f"(expected batch {o['opacus_q'] * n:.1f}) instead of {BATCH}/{n} = {BATCH / n:.4f}, hence its "
                   f"{o['epsilon']:.3f}; at q = {BATCH}/{n} its RDP analysis gives {o['opacus_rdp_epsilon_at_our_q']:.3f} "
                   f"and dp-accounting's {o['pyaiml_epsilon_same_steps']:.3f} (the PLD accountant, "
                   f"`accountant=\"pld\"`: {o['pyaiml_pld_epsilon']:.3f}).")
    if "Opacus DP" in t:
        out.append("")
        out.append(f"DP step, Opacus / pyaiml: {t['Opacus DP']['median_ms'] / t['pyaiml DP']['median_ms']:.2f}x "
                   f"(> 1: pyaiml faster). Validated first: per-example gradient norms equal Opacus's on the same "
                   f"weights and batch (largest relative difference {res['validation_rel_diff']:.1e}).")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    machine = harness.machine_info()
    threads = harness.set_threads(a.threads)
    try:
        import torch
    except ImportError:
        torch = None
    try:
        import opacus
    except ImportError:
        opacus = None
    import warnings
    warnings.filterwarnings("ignore", module="opacus")  # its notes on secure_mode and Poisson batch sizes
    versions = {}
    from importlib import metadata
    for mod in ("dp-accounting", "opacus", "torch"):
        try:
            versions[mod.replace("-", "_")] = metadata.version(mod)
        except metadata.PackageNotFoundError:
            pass
    data = digits_split()
    n = len(data[0])
    log = print
    res = {"machine": machine, "threads": threads, "seeds": a.seeds, "n_train": n, "n_test": len(data[1]),
           "versions": versions}
    if opacus is not None:
        log("validating per-example norms against Opacus")
        res["validation_rel_diff"] = validate_against_opacus(torch, opacus, data[0][:BATCH], data[2][:BATCH])
    log("timing one step")
    tim = harness.time_interleaved(step_fns(data, torch, opacus), repeats=7, min_time=0.05)
    res["step_ms"] = {k: {"median_ms": v.median * 1e3, "p25_ms": v.p25 * 1e3, "p75_ms": v.p75 * 1e3}
                      for k, v in tim.items()}
    log("accuracy against epsilon")
    res["curve"] = accuracy_curve(data, a.seeds, log)
    if opacus is not None:
        sigma = compute_noise_multiplier(8.0, steps_of(n), BATCH / n, DELTA)
        res["opacus_sigma"] = sigma
        res["opacus_train"] = opacus_train(torch, opacus, data, sigma)
        o = res["opacus_train"]
        o["pyaiml_epsilon_same_steps"] = compute_epsilon(o["steps"], BATCH / n, sigma, DELTA)
        o["pyaiml_pld_epsilon"] = compute_epsilon(o["steps"], BATCH / n, sigma, DELTA, accountant="pld")
        # Opacus's own RDP analysis at pyaiml's sampling rate (its engine samples at 1 / len(loader))
        from opacus.accountants.analysis import rdp as orpd
        orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
        o["opacus_rdp_epsilon_at_our_q"] = float(orpd.get_privacy_spent(
            orders=orders, rdp=orpd.compute_rdp(q=BATCH / n, noise_multiplier=sigma, steps=o["steps"], orders=orders),
            delta=DELTA)[0])
        o["opacus_q"] = 1.0 / -(-n // BATCH)
        log(f"  Opacus: {res['opacus_train']}")
    text = report(res)
    print()
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1, default=str)
    return res


if __name__ == "__main__":
    pyaiml.set_num_threads(1)
    main()
