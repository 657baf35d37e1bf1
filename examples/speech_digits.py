"""Spoken-digit recognition on real recordings: an HMM recognizer and a 1-D CNN, end to end.

Data: the Free Spoken Digit Dataset (FSDD; Zohar Jackson et al., CC BY-SA 4.0) layout,
``{digit}_{speaker}_{index}.wav`` (in DIR or DIR/recordings); not shipped with pyaiml.
Pipeline: pyaiml.datasets.load_fsdd -> pyaiml.audio.mfcc_features (silence trimming,
pre-emphasis, 25 ms Hamming frames every 10 ms, 26 mel filters, 13 MFCCs + deltas +
delta-deltas: (frames, 39)) -> CMVN per speaker (--norm speaker, the default: statistics over
each speaker's training recordings, and for a held-out speaker over their own recordings, or
over --enroll N of them) or per utterance (--norm utterance) -> training copies at
--speed 0.9,1.1 (pyaiml.audio.speed_perturb; each copy normalised as its own speaker) -> two
recognizers trained on DIR's official training split (recording indexes 5-49):
  - hmm: pyaiml.hmm.HMMClassifier, one 8-state left-right HMM per digit, 3-Gaussian mixtures
    per state (--emission gaussian for single Gaussians), 15 Baum-Welch iterations;
    trained without the speed copies unless --hmm-speed (they did not pay for it);
  - cnn: pyaiml.speech.CNNClassifier, the mission's Conv1D stack along time with global
    average pooling (frames centre-cropped/padded to a fixed length), with SpecAugment
    masking (--no-spec-augment to turn off) and --estimators seed ensembles whose members
    alternate the --kernels sizes. Best measured on new speakers (leave one speaker out,
    benchmarks/results/speech.md): --estimators 10 --kernels 3,7, 91.1% (HMM: 91.8%).
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
from pyaiml.audio import mfcc_features, speaker_cmvn, speed_perturb
from pyaiml.datasets.fsdd import find_fsdd, load_fsdd
from pyaiml.hmm import HMMClassifier
from pyaiml.speech import CNNClassifier, SpecAugment

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = find_fsdd()[0]  # PYAIML_FSDD, else ./data/fsdd


def features(ds, label, normalize=True, factor=1.0, keep_idx=None):
    """Features of every recording (keep_idx: only those positions; no report of skips)."""
    t0 = time.perf_counter()
    out, keep = [], []
    for i, (y, sr, f) in enumerate(zip(ds.signals, ds.rates, ds.filenames)):
        if keep_idx is not None and i not in keep_idx:
            continue
        try:
            if factor != 1.0:
                y = speed_perturb(y, factor)
            out.append(mfcc_features(y, sr, name=f, normalize=normalize))
            keep.append(i)
        except ValueError as e:  # an all-silent or too-short recording: reported, not fatal
            if keep_idx is not None:
                raise
            print(f"  skipped {f}: {e}")
    secs = sum(len(y) / sr for y, sr in zip(ds.signals, ds.rates))
    dt = time.perf_counter() - t0
    print(f"{label}: {len(out)} recordings, {secs:.0f} s of audio -> features {out[0].shape[1]}-D "
          f"in {dt:.1f} s ({secs / dt:.0f} s of audio per s)")
    return out, np.asarray(keep)


class Data:
    """Raw features (and speed copies) of the kept recordings, and the training/test sets
    of one split, normalised as --norm says."""

    def __init__(self, raw, copies, speakers, digits, norm, enroll, seed):
        self.raw, self.copies, self.speakers, self.digits = raw, copies, speakers, digits
        self.norm, self.enroll, self.seed = norm, enroll, seed

    def _n(self, X, spk, ref=None, ref_spk=None):
        if self.norm == "utterance":
            return speaker_cmvn(X, list(range(len(X))))  # each utterance its own group: per-utterance CMVN
        return speaker_cmvn(X, spk, reference=ref, reference_speakers=ref_spk)

    def train(self, idx, with_copies):
        spk = self.speakers[idx]
        X = self._n([self.raw[i] for i in idx], spk)
        y = list(self.digits[idx])
        if with_copies:
            for f, C in self.copies.items():
                X += self._n([C[i] for i in idx], [f"{s}@{f}" for s in spk])
                y += list(self.digits[idx])
        return X, np.asarray(y)

    def test(self, idx, train_idx):
        """Known speakers: their training recordings' statistics; new ones: their own
        recordings' (all, or --enroll N of them, drawn with --seed)."""
        spk = self.speakers[idx]
        ref, ref_spk = [self.raw[i] for i in train_idx], list(self.speakers[train_idx])
        known = set(ref_spk)
        rng = np.random.default_rng(self.seed)
        for s in sorted(set(spk) - known):
            own = idx[spk == s]
            if self.enroll:
                own = rng.choice(own, size=min(self.enroll, len(own)), replace=False)
            ref += [self.raw[i] for i in own]
            ref_spk += [s] * len(own)
        return self._n([self.raw[i] for i in idx], spk, ref, ref_spk)


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
    aug = SpecAugment() if args.spec_augment else None
    return {
        "hmm": lambda: HMMClassifier(n_states=args.states, emission=args.emission, n_mix=args.mix,
                                     n_iter=args.iter, random_state=args.seed),
        "cnn": lambda: CNNClassifier(n_frames=args.frames, epochs=args.epochs, random_state=args.seed,
                                     spec_augment=aug, n_estimators=args.estimators,
                                     kernel_size=tuple(int(k) for k in args.kernels.split(",")),
                                     average_epochs=args.average),
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
    ap.add_argument("--norm", choices=["speaker", "utterance"], default="speaker",
                    help="CMVN per speaker (default) or per utterance")
    ap.add_argument("--enroll", type=int, default=0,
                    help="LOSO: take a held-out speaker's CMVN statistics from N of their recordings (0: all)")
    ap.add_argument("--speed", default="0.9,1.1", help="speed-perturbed training copies ('' for none)")
    ap.add_argument("--hmm-speed", action="store_true", help="train the HMMs on the speed copies too")
    ap.add_argument("--no-spec-augment", dest="spec_augment", action="store_false",
                    help="train the CNN without SpecAugment masking")
    ap.add_argument("--estimators", type=int, default=1, help="CNN seed ensemble size")
    ap.add_argument("--kernels", default="3", help="CNN kernel sizes, alternating over the ensemble (e.g. 3,7)")
    ap.add_argument("--average", type=int, default=0, help="CNN: average weights over the last N epochs")
    ap.add_argument("--out", default="speech_digits_out", help="folder for the confusion-matrix PNGs")
    args = ap.parse_args(argv)

    with warnings.catch_warnings():  # skipped files are printed below
        warnings.simplefilter("ignore", RuntimeWarning)
        ds = load_fsdd(args.data, on_error="warn")
    for f, why in ds.skipped:
        print(f"  skipped {f}: {why}")
    raw, keep = features(ds, f"FSDD {args.data}", normalize=False)
    digits, speakers = ds.digits[keep], ds.speakers[keep]
    pos = {int(k): j for j, k in enumerate(keep)}
    tr = np.array([pos[i] for i in ds.train_idx if i in pos])
    te = np.array([pos[i] for i in ds.test_idx if i in pos])
    factors = [float(f) for f in args.speed.split(",") if f.strip()]
    copies = {f: features(ds, f"speed x{f}", normalize=False, factor=f, keep_idx=set(keep.tolist()))[0]
              for f in factors if f != 1.0}
    data = Data(raw, copies, speakers, digits, args.norm, args.enroll, args.seed)
    extra = None
    if args.extra_test:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ex = load_fsdd(args.extra_test, on_error="warn")
        for f, why in ex.skipped:
            print(f"  extra-test: skipped {f}: {why}")
        if len(ex) == 0:
            raise SystemExit(f"--extra-test {args.extra_test}: no readable {{digit}}_{{speaker}}_{{index}}.wav files")
        xf, xkeep = features(ex, f"extra test {args.extra_test}", normalize=False)
        xspk = ex.speakers[xkeep]
        if args.norm == "utterance":
            xf = speaker_cmvn(xf, list(range(len(xf))))
        else:  # the extra speakers are new: each normalised over their own recordings
            xf = speaker_cmvn(xf, xspk)
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
        with_copies = bool(copies) and (name != "hmm" or args.hmm_speed)
        t0 = time.perf_counter()
        Xtr, ytr = data.train(tr, with_copies)
        clf = recs[name]().fit(Xtr, ytr)
        print(f"\n{name}: trained on {len(Xtr)} sequences in {time.perf_counter() - t0:.1f} s")
        pred = clf.predict(data.test(te, tr))
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
                Xtr, ytr = data.train(rest, with_copies)
                c = recs[name]().fit(Xtr, ytr)
                pred = c.predict(data.test(held, rest))
                accs.append(report(name, f"loso-{spk}", digits[held], pred, labels, args.out, verbose=False))
                print(f"  ({time.perf_counter() - t0:.1f} s)")
            summary.append((name, "loso-mean", float(np.mean(accs))))
            summary.append((name, "loso-min", float(np.min(accs))))
            print(f"{name} loso-mean accuracy: {np.mean(accs):.4f} (lowest speaker {np.min(accs):.4f})")
    print("\nsummary")
    for name, test_set, acc in summary:
        print(f"  {name} {test_set}: {acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
