"""Sanity check of pyaiml.audio.mfcc_features on FSDD with a plain hmmlearn baseline.

What it is: a script (not a test) that loads FSDD with pyaiml.datasets.fsdd.load_fsdd,
extracts mfcc_features for every recording, trains one hmmlearn GaussianHMM per digit
(left-right, 8 states, diagonal covariances) on the official training split and prints the
test accuracy; optionally leave-one-speaker-out too. It tells the recognizer work whether
the features are good; it is not the recognizer (pyaiml.hmm.HMMClassifier).
Run:  PYTHONPATH=$PWD python benchmarks/fsdd_hmm_baseline.py [--data DIR] [--loso] [--no-trim]
Measured (2026-11-28, figures in benchmarks/results/audio.md): GaussianHMM 95.2% official,
85.3% leave-one-speaker-out mean (40 dB trim); GMMHMM with --mix 3: 98.0% official (30 dB).
FSDD: Zohar Jackson et al., CC BY-SA 4.0.
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np

from pyaiml.audio import mfcc_features
from pyaiml.datasets.fsdd import find_fsdd, load_fsdd

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = find_fsdd()[0]  # PYAIML_FSDD, else ./data/fsdd


def _left_right_start(n_states: int):
    """Start in state 0; stay or move one state right with probability 1/2 (the last state stays)."""
    A = np.zeros((n_states, n_states))
    for i in range(n_states):
        A[i, i] = 0.5
        A[i, min(i + 1, n_states - 1)] += 0.5
    return np.eye(n_states)[0], A


def left_right_hmm(n_states: int, n_iter: int, seed: int, seqs=None):
    """Left-right GaussianHMM (self-loop or next state, start in state 0). With ``seqs``, means
    and variances start from a uniform segmentation of every sequence into n_states parts
    (HTK's flat start); otherwise hmmlearn's k-means initialisation ("kmeans")."""
    from hmmlearn.hmm import GaussianHMM

    m = GaussianHMM(n_components=n_states, covariance_type="diag", n_iter=n_iter, random_state=seed,
                    init_params="" if seqs is not None else "mc", params="stmc", implementation="scaling")
    if seqs is not None:
        parts = [[] for _ in range(n_states)]
        for X in seqs:
            for s, seg in enumerate(np.array_split(X, n_states)):
                parts[s].append(seg)
        segs = [np.concatenate(p) for p in parts]
        m.means_ = np.stack([g.mean(0) for g in segs])
        m.covars_ = np.stack([g.var(0) + 1e-2 for g in segs])
    m.startprob_, m.transmat_ = _left_right_start(n_states)
    return m


def left_right_gmmhmm(n_states: int, n_mix: int, n_iter: int, seed: int, seqs):
    """Left-right GMMHMM; each state's mixture starts from its uniform segments (weights equal,
    means = the segment mean plus small deterministic offsets, variances = the segment's)."""
    from hmmlearn.hmm import GMMHMM

    m = GMMHMM(n_components=n_states, n_mix=n_mix, covariance_type="diag", n_iter=n_iter, random_state=seed,
               init_params="", params="stmcw", implementation="scaling")
    m.startprob_, m.transmat_ = _left_right_start(n_states)
    parts = [[] for _ in range(n_states)]
    for X in seqs:
        for s, seg in enumerate(np.array_split(X, n_states)):
            parts[s].append(seg)
    segs = [np.concatenate(p) for p in parts]
    rng = np.random.default_rng(seed)
    mu = np.stack([g.mean(0) for g in segs])
    var = np.stack([g.var(0) + 1e-2 for g in segs])
    m.weights_ = np.full((n_states, n_mix), 1.0 / n_mix)
    m.means_ = mu[:, None, :] + 0.5 * np.sqrt(var)[:, None, :] * rng.standard_normal((n_states, n_mix, mu.shape[1]))
    m.covars_ = np.repeat(var[:, None, :], n_mix, axis=1)
    return m


def evaluate(feats, digits, train, test, n_states, n_iter, seed=0, init="uniform", n_mix=1):
    models = {}
    for d in range(10):
        idx = [i for i in train if digits[i] == d]
        X = np.concatenate([feats[i] for i in idx])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seqs = [feats[i] for i in idx] if init == "uniform" else None
            if n_mix > 1:
                m = left_right_gmmhmm(n_states, n_mix, n_iter, seed, [feats[i] for i in idx])
            else:
                m = left_right_hmm(n_states, n_iter, seed, seqs)
            models[d] = m.fit(X, [len(feats[i]) for i in idx])
    pred = np.array([max(range(10), key=lambda d: models[d].score(feats[i])) for i in test])
    return float(np.mean(pred == digits[test]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--states", type=int, default=8)
    ap.add_argument("--iter", type=int, default=15)
    ap.add_argument("--loso", action="store_true", help="also leave-one-speaker-out")
    ap.add_argument("--no-trim", action="store_true", help="skip silence trimming (to see what it buys)")
    ap.add_argument("--top-db", type=float, default=None, help="trim threshold (default: mfcc_features')")
    ap.add_argument("--init", choices=["uniform", "kmeans"], default="uniform")
    ap.add_argument("--mix", type=int, default=1, help="Gaussians per state (> 1: GMMHMM)")
    args = ap.parse_args()

    ds = load_fsdd(args.data, on_error="warn")
    t0 = time.perf_counter()
    kw = {} if args.top_db is None else {"trim_top_db": args.top_db}
    feats = [mfcc_features(y, sr, trim=not args.no_trim, name=f, **kw)
             for y, sr, f in zip(ds.signals, ds.rates, ds.filenames)]
    dt = time.perf_counter() - t0
    secs = sum(len(y) / sr for y, sr in zip(ds.signals, ds.rates))
    print(f"features: {len(feats)} recordings, {secs:.1f} s of audio in {dt:.2f} s "
          f"({secs / dt:.0f} s of audio per s), dim {feats[0].shape[1]}")
    tr, te = ds.split()
    t0 = time.perf_counter()
    acc = evaluate(feats, ds.digits, tr, te, args.states, args.iter, init=args.init, n_mix=args.mix)
    kind = f"GMMHMM ({args.mix} mixtures)" if args.mix > 1 else f"GaussianHMM ({args.init} init)"
    print(f"hmmlearn {kind} {args.states}-state left-right, official split: test accuracy {acc:.4f} "
          f"({len(te)} test recordings; train+test {time.perf_counter() - t0:.1f} s)")
    if args.loso:
        accs = []
        for spk in sorted(set(ds.speakers.tolist())):
            tr, te = ds.split(test_speaker=spk)
            a = evaluate(feats, ds.digits, tr, te, args.states, args.iter, init=args.init, n_mix=args.mix)
            accs.append(a)
            print(f"  leave out {spk}: {a:.4f}")
        print(f"leave-one-speaker-out mean accuracy {np.mean(accs):.4f}")


if __name__ == "__main__":
    main()
