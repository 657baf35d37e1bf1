"""Sanity check of pyaiml.audio.mfcc_features on FSDD with a plain hmmlearn baseline.

What it is: a script (not a test) that loads FSDD with pyaiml.datasets.fsdd.load_fsdd,
extracts mfcc_features for every recording, trains one hmmlearn GaussianHMM per digit
(left-right, 8 states, diagonal covariances) on the official training split and prints the
test accuracy; optionally leave-one-speaker-out too. It tells the recognizer work whether
the features are good; it is not the recognizer (pyaiml.hmm.HMMClassifier).
Run:  PYTHONPATH=$PWD python benchmarks/fsdd_hmm_baseline.py [--data DIR] [--loso] [--no-trim]
FSDD: Zohar Jackson et al., CC BY-SA 4.0.
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np

from pyaiml.audio import mfcc_features
from pyaiml.datasets.fsdd import load_fsdd

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(HERE, "..", "..", "shared", "data", "fsdd")


def left_right_hmm(n_states: int, n_iter: int, seed: int):
    from hmmlearn.hmm import GaussianHMM

    m = GaussianHMM(n_components=n_states, covariance_type="diag", n_iter=n_iter, random_state=seed,
                    init_params="mc", params="stmc", implementation="log")
    m.startprob_ = np.eye(n_states)[0]
    A = np.zeros((n_states, n_states))
    for i in range(n_states):
        A[i, i] = 0.5
        A[i, min(i + 1, n_states - 1)] += 0.5
    m.transmat_ = A
    return m


def evaluate(feats, digits, train, test, n_states, n_iter, seed=0):
    models = {}
    for d in range(10):
        idx = [i for i in train if digits[i] == d]
        X = np.concatenate([feats[i] for i in idx])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            models[d] = left_right_hmm(n_states, n_iter, seed).fit(X, [len(feats[i]) for i in idx])
    pred = np.array([max(range(10), key=lambda d: models[d].score(feats[i])) for i in test])
    return float(np.mean(pred == digits[test]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--states", type=int, default=8)
    ap.add_argument("--iter", type=int, default=15)
    ap.add_argument("--loso", action="store_true", help="also leave-one-speaker-out")
    ap.add_argument("--no-trim", action="store_true", help="skip silence trimming (to see what it buys)")
    ap.add_argument("--top-db", type=float, default=30.0)
    args = ap.parse_args()

    ds = load_fsdd(args.data, on_error="warn")
    t0 = time.perf_counter()
    feats = [mfcc_features(y, sr, trim=not args.no_trim, trim_top_db=args.top_db, name=f)
             for y, sr, f in zip(ds.signals, ds.rates, ds.filenames)]
    dt = time.perf_counter() - t0
    secs = sum(len(y) / sr for y, sr in zip(ds.signals, ds.rates))
    print(f"features: {len(feats)} recordings, {secs:.1f} s of audio in {dt:.2f} s "
          f"({secs / dt:.0f} s of audio per s), dim {feats[0].shape[1]}")
    tr, te = ds.split()
    t0 = time.perf_counter()
    acc = evaluate(feats, ds.digits, tr, te, args.states, args.iter)
    print(f"hmmlearn GaussianHMM {args.states}-state left-right, official split: test accuracy {acc:.4f} "
          f"({len(te)} test recordings; train+test {time.perf_counter() - t0:.1f} s)")
    if args.loso:
        accs = []
        for spk in sorted(set(ds.speakers.tolist())):
            tr, te = ds.split(test_speaker=spk)
            a = evaluate(feats, ds.digits, tr, te, args.states, args.iter)
            accs.append(a)
            print(f"  leave out {spk}: {a:.4f}")
        print(f"leave-one-speaker-out mean accuracy {np.mean(accs):.4f}")


if __name__ == "__main__":
    main()
