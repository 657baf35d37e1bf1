"""Training-time cost of the speaker-robust FSDD recipes, pyaiml against hmmlearn and PyTorch
running the same recipe side by side in one process (the figures behind "Training cost of
the speaker-robust recipes" in benchmarks/results/speech.md).

One leave-one-speaker-out fold (train on four speakers, 2,000 recordings; the held-out speaker
is only normalised and scored). Timed, each in its own rounds, interleaved:
- features: mfcc_features_batch of the training signals at speed 1.0, and the extra speed
  copies (pyaiml.audio.speed_perturb 0.9 and 1.1, then MFCC) of the augmented recipe; the
  per-speaker CMVN (pyaiml.audio.speaker_cmvn) of all of them;
- CNN, plain (speed 1.0 only, no masking) and augmented (3 speed copies, SpecAugment afresh
  every epoch): pyaiml.speech.CNNClassifier against the same network in torch.nn (Conv1d 39->64
  k3 ReLU, MaxPool 2, Conv1d 64->64 k3 ReLU, MaxPool 2, mean over time, Linear 64 ReLU, Dropout
  0.3, Linear 10; Adam 1e-3, batch 32, shuffled, 30 epochs, 80 frames), given the same padded
  batches and the same SpecAugment masks (pyaiml.speech.SpecAugment draws them for both);
- HMM (GMM-HMM, 8 states, 3 mixtures, 15 iterations, per-speaker CMVN; no augmentation:
  speed copies did not help the HMM): pyaiml.hmm.HMMClassifier against the recipe on hmmlearn
  ('scaling', pyaiml.bench.speech.hmmlearn_recipe).
Each side's held-out accuracy is printed so the recipes can be seen to be the same; CPU time /
wall time is printed for each run (2 threads: should be near 2 for pyaiml and torch).

Not a test; needs FSDD (PYAIML_FSDD), torch and hmmlearn.
Run: PYTHONPATH=. python benchmarks/scripts/fsdd_train_cost.py [--rounds 2] [--speaker nicolas]
"""
import argparse
import time

import numpy as np

from pyaiml.audio import mfcc_features_batch, speaker_cmvn, speed_perturb
from pyaiml.datasets.fsdd import find_fsdd, load_fsdd
from pyaiml.speech import CNNClassifier, SpecAugment, pad_or_crop

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=2)
ap.add_argument("--speaker", default="nicolas")
ap.add_argument("--epochs", type=int, default=30)
ap.add_argument("--threads", type=int, default=2)  # torch's; set pyaiml's with PYAIML_NUM_THREADS
ap.add_argument("--skip-hmmlearn", action="store_true")
args = ap.parse_args()

import torch

torch.set_num_threads(args.threads)
ds = load_fsdd(find_fsdd()[0])
tr, te = ds.split(args.speaker)
SPEEDS = (0.9, 1.1)
sa = SpecAugment(time_masks=2, time_width=8, feature_masks=1, feature_width=4, feature_groups=3)


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    w = time.perf_counter() - w0
    return out, w, (time.process_time() - c0) / w


def features():
    sig = [ds.signals[i] for i in tr]
    rates = [ds.rates[i] for i in tr]
    return mfcc_features_batch(sig, rates, normalize=False)


def speed_copies():
    out = []
    for f in SPEEDS:
        sig = [speed_perturb(ds.signals[i], f) for i in tr]
        out.append(mfcc_features_batch(sig, [ds.rates[i] for i in tr], normalize=False))
    return out


def cmvn(groups):
    spk = ds.speakers[tr]
    return [speaker_cmvn(g, spk) for g in groups]


def torch_cnn(B, y, aug, seed=0):
    torch.manual_seed(seed)
    n_feat = B.shape[2]
    net = torch.nn.Sequential(
        torch.nn.Conv1d(n_feat, 64, 3), torch.nn.ReLU(), torch.nn.MaxPool1d(2),
        torch.nn.Conv1d(64, 64, 3), torch.nn.ReLU(), torch.nn.MaxPool1d(2),
        torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(),
        torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    lossf = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    yt = torch.from_numpy(y.astype(np.int64))
    net.train()
    for _ in range(args.epochs):
        Bx = sa(B, rng) if aug else B
        X = torch.from_numpy(np.ascontiguousarray(Bx.transpose(0, 2, 1)))
        perm = torch.from_numpy(rng.permutation(len(B)))
        for s in range(0, len(B), 32):
            idx = perm[s:s + 32]
            opt.zero_grad()
            loss = lossf(net(X[idx]), yt[idx])
            loss.backward()
            opt.step()
    net.eval()
    return net


def torch_acc(net, Bte, yte):
    with torch.no_grad():
        p = net(torch.from_numpy(np.ascontiguousarray(Bte.transpose(0, 2, 1)))).argmax(1).numpy()
    return float(np.mean(p == yte))


def main():
    print(f"fold: held out {args.speaker}; train {len(tr)} recordings, {args.epochs} epochs, {args.threads} threads",
          flush=True)
    F1, w, r = timed(features)
    print(f"features speed 1.0: {w:.2f} s (cpu/wall {r:.2f})", flush=True)
    Fs, w, r = timed(speed_copies)
    print(f"speed copies 0.9/1.1 + MFCC: {w:.2f} s (cpu/wall {r:.2f})", flush=True)
    (N1, N09, N11), w, r = timed(lambda: cmvn([F1] + Fs))
    print(f"per-speaker CMVN of the 3 copies: {w:.3f} s", flush=True)
    Fte = mfcc_features_batch([ds.signals[i] for i in te], [ds.rates[i] for i in te], normalize=False)
    Nte = speaker_cmvn(Fte, ds.speakers[te])
    y = ds.digits[tr]
    yte = ds.digits[te]
    plain = (list(N1), y)
    augm = (list(N1) + list(N09) + list(N11), np.concatenate([y, y, y]))
    Bte = pad_or_crop(Nte, 80)
    res = {}
    # warm-up of both sides (first-call allocations, thread pools), not timed
    Bw = pad_or_crop(list(N1[:64]), 80)
    torch_cnn(Bw, y[:64], True)
    CNNClassifier(n_frames=80, epochs=1, spec_augment=sa).fit(list(N1[:64]), y[:64])
    for rnd in range(args.rounds):
        for name, (X, yy), aug in (("plain", plain, False), ("augmented", augm, True)):
            clf, w, r = timed(lambda X=X, yy=yy, aug=aug, rnd=rnd: CNNClassifier(
                n_frames=80, epochs=args.epochs, random_state=rnd, spec_augment=sa if aug else None).fit(X, yy))
            acc = clf.score(Nte, yte)
            res.setdefault(("pyaiml", name), []).append(w)
            print(f"round {rnd} CNN {name:9s} pyaiml {w:7.2f} s (cpu/wall {r:.2f}) held-out acc {acc:.3f}", flush=True)
            B = pad_or_crop(X, 80)
            net, w, r = timed(lambda B=B, yy=yy, aug=aug, rnd=rnd: torch_cnn(B, yy, aug, seed=rnd))
            res.setdefault(("torch", name), []).append(w)
            print(f"round {rnd} CNN {name:9s} torch  {w:7.2f} s (cpu/wall {r:.2f}) held-out acc "
                  f"{torch_acc(net, Bte, yte):.3f}", flush=True)
    for name in ("plain", "augmented"):
        a, b = np.median(res[("pyaiml", name)]), np.median(res[("torch", name)])
        print(f"CNN {name}: pyaiml median {a:.2f} s, torch median {b:.2f} s, ratio torch/pyaiml {b / a:.2f}x")
    from pyaiml.bench.speech import hmmlearn_accuracy, hmmlearn_recipe, pyaiml_recipe
    feats = [None] * len(ds.digits)
    for k, i in enumerate(tr):
        feats[i] = N1[k]
    for k, i in enumerate(te):
        feats[i] = Nte[k]
    clf, w, r = timed(lambda: pyaiml_recipe(feats, ds.digits, tr, "gmm"))
    print(f"HMM GMM pyaiml {w:.2f} s (cpu/wall {r:.2f}) held-out acc {clf.score([feats[i] for i in te], yte):.3f}",
          flush=True)
    if not args.skip_hmmlearn:
        m, w2, r2 = timed(lambda: hmmlearn_recipe(feats, ds.digits, tr, "gmm"))
        print(f"HMM GMM hmmlearn {w2:.2f} s (cpu/wall {r2:.2f}) held-out acc "
              f"{hmmlearn_accuracy(m, feats, ds.digits, te):.3f}; ratio hmmlearn/pyaiml {w2 / w:.1f}x", flush=True)


if __name__ == "__main__":
    main()
