"""Spoken-digit recognition on real recordings: an HMM recognizer and a 1-D CNN, end to end.

Data: the Free Spoken Digit Dataset (FSDD; Zohar Jackson et al., CC BY-SA 4.0) layout,
``{digit}_{speaker}_{index}.wav`` (in DIR or DIR/recordings); not shipped with pyaiml.
Pipeline: pyaiml.datasets.load_fsdd -> pyaiml.audio.mfcc_features (silence trimming,
pre-emphasis, 25 ms Hamming frames every 10 ms, 26 mel filters, 13 MFCCs + deltas +
delta-deltas, per-utterance CMVN: (frames, 39)) -> two recognizers trained on DIR's official
training split (recording indexes 5-49):
  - hmm: pyaiml.hmm.HMMClassifier, one 8-state left-right HMM per digit, 3-Gaussian mixtures
    per state (--emission gaussian for single Gaussians), 15 Baum-Welch iterations;
  - cnn: pyaiml.speech.CNNClassifier, the mission's Conv1D stack along time with global
    average pooling (frames centre-cropped/padded to a fixed length).
Report per recognizer and test set: accuracy, per-class accuracy, confusion matrix (a PNG
in --out when matplotlib is installed) and one line
``<recognizer> <test set> accuracy: <fraction>``.
Test sets: "official" (indexes 0-4), with --extra-test DIR2 "extra" (every WAV there whose name
carries the digit; others are reported and skipped), with --loso "loso-<speaker>" for every
speaker held out in turn and "loso-mean".

Run: python examples/speech_digits.py --data FSDD_DIR [--extra-test DIR] [--loso]
Not a test (tests/test_speech_*.py) and not a benchmark (python -m pyaiml.bench.speech).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

import pyaiml
from pyaiml.audio import mfcc_features
from pyaiml.datasets.fsdd import find_fsdd, load_fsdd
from pyaiml.hmm import HMMClassifier
from pyaiml.speech import CNNClassifier

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = find_fsdd()[0]  # PYAIML_FSDD, else ./data/fsdd


def features(ds, label):
    t0 = time.perf_counter()
    out, keep = [], []
    for i, (y, sr, f) in enumerate(zip(ds.signals, ds.rates, ds.filenames)):
        try:
            out.append(mfcc_features(y, sr, name=f))
            keep.append(i)
        except ValueError as e:  # an all-silent or too-short recording: reported, not fatal
            print(f"  skipped {f}: {e}")
    secs = sum(len(y) / sr for y, sr in zip(ds.signals, ds.rates))
    dt = time.perf_counter() - t0
    print(f"{label}: {len(out)} recordings, {secs:.0f} s of audio -> features {out[0].shape[1]}-D "
          f"in {dt:.1f} s ({secs / dt:.0f} s of audio per s)")
    return out, np.asarray(keep)


def confusion(y_true, y_pred, labels):
    pos = {c: i for i, c in enumerate(labels)}
    C = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        C[pos[t], pos[p]] += 1
    return C


def report(name, test_set, y_true, y_pred, labels, out_dir, verbose=True):
    acc = float(np.mean(y_true == y_pred))
    if verbose:
        C = confusion(y_true, y_pred, labels)
        per = [C[i, i] / max(1, C[i].sum()) for i in range(len(labels))]
        print(f"\n{name} on {test_set}: {len(y_true)} recordings")
        print("  per-class accuracy: " + "  ".join(f"{c}:{a:.2f}" for c, a in zip(labels, per)))
        print("  confusion matrix (rows: true, columns: predicted)")
        print("      " + " ".join(f"{c:>4}" for c in labels))
        for c, row in zip(labels, C):
            print(f"  {c:>3} " + " ".join(f"{v:>4}" for v in row))
        save_png(C, labels, f"{name} {test_set} (accuracy {acc:.3f})",
                 os.path.join(out_dir, f"confusion_{name}_{test_set}.png"))
    print(f"{name} {test_set} accuracy: {acc:.4f}", flush=True)
    return acc


def save_png(C, labels, title, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(C, cmap="Blues")
    ax.set_xticks(range(len(labels)), [str(c) for c in labels])
    ax.set_yticks(range(len(labels)), [str(c) for c in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if C[i, j]:
                ax.text(j, i, str(C[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if C[i, j] > C.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"  wrote {path}")


def make_recognizers(args):
    return {
        "hmm": lambda: HMMClassifier(n_states=args.states, emission=args.emission, n_mix=args.mix,
                                     n_iter=args.iter, random_state=args.seed),
        "cnn": lambda: CNNClassifier(n_frames=args.frames, epochs=args.epochs, random_state=args.seed),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA, help="FSDD folder (or its recordings/ folder)")
    ap.add_argument("--extra-test", default=None, help="folder of further {digit}_*.wav recordings to score")
    ap.add_argument("--loso", action="store_true", help="also leave-one-speaker-out (5x the training)")
    ap.add_argument("--recognizers", default="hmm,cnn", help="comma list of hmm, cnn")
    ap.add_argument("--emission", choices=["gaussian", "gmm"], default="gmm")
    ap.add_argument("--states", type=int, default=8)
    ap.add_argument("--mix", type=int, default=3)
    ap.add_argument("--iter", type=int, default=15)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--frames", type=int, default=None, help="CNN input length (default: 95th percentile)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="speech_digits_out", help="folder for the confusion-matrix PNGs")
    args = ap.parse_args(argv)

    with warnings.catch_warnings():  # skipped files are printed below
        warnings.simplefilter("ignore", RuntimeWarning)
        ds = load_fsdd(args.data, on_error="warn")
    for f, why in ds.skipped:
        print(f"  skipped {f}: {why}")
    feats, keep = features(ds, f"FSDD {args.data}")
    digits, speakers = ds.digits[keep], ds.speakers[keep]
    pos = {int(k): j for j, k in enumerate(keep)}
    tr = np.array([pos[i] for i in ds.train_idx if i in pos])
    te = np.array([pos[i] for i in ds.test_idx if i in pos])
    extra = None
    if args.extra_test:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ex = load_fsdd(args.extra_test, on_error="warn")
        for f, why in ex.skipped:
            print(f"  extra-test: skipped {f}: {why}")
        if len(ex) == 0:
            raise SystemExit(f"--extra-test {args.extra_test}: no readable {{digit}}_{{speaker}}_{{index}}.wav files")
        xf, xkeep = features(ex, f"extra test {args.extra_test}")
        extra = (xf, ex.digits[xkeep])
    labels = list(range(10))
    recs = make_recognizers(args)
    names = [n.strip() for n in args.recognizers.split(",") if n.strip()]
    for n in names:
        if n not in recs:
            raise SystemExit(f"--recognizers: unknown recognizer {n!r}; choose from {sorted(recs)}")
    print(f"threads: {pyaiml.get_num_threads()}; training on {len(tr)} recordings, official test {len(te)}")
    summary = []
    for name in names:
        t0 = time.perf_counter()
        clf = recs[name]().fit([feats[i] for i in tr], digits[tr])
        print(f"\n{name}: trained in {time.perf_counter() - t0:.1f} s")
        pred = clf.predict([feats[i] for i in te])
        summary.append((name, "official", report(name, "official", digits[te], pred, labels, args.out)))
        if extra is not None:
            pred = clf.predict(extra[0])
            summary.append((name, "extra", report(name, "extra", extra[1], pred, labels, args.out)))
        if args.loso:
            accs = []
            for spk in np.unique(speakers):
                held = np.flatnonzero(speakers == spk)
                rest = np.flatnonzero(speakers != spk)
                t0 = time.perf_counter()
                c = recs[name]().fit([feats[i] for i in rest], digits[rest])
                pred = c.predict([feats[i] for i in held])
                accs.append(report(name, f"loso-{spk}", digits[held], pred, labels, args.out, verbose=False))
                print(f"  ({time.perf_counter() - t0:.1f} s)")
            summary.append((name, "loso-mean", float(np.mean(accs))))
            print(f"{name} loso-mean accuracy: {np.mean(accs):.4f}")
    print("\nsummary")
    for name, test_set, acc in summary:
        print(f"  {name} {test_set}: {acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
