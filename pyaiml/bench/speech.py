"""Speech suite: training the FSDD digit recognizers, pyaiml.hmm.HMMClassifier against the same
recipe on hmmlearn 0.3, side by side in one process.

Recipes (identical on both sides): mfcc_features (39-D, trimmed, CMVN) of the official
training split (indexes 5-49, 2,250 recordings), one model per digit, 8 states left-right
(stay or move on, start in state 0), diagonal covariances, flat start (uniform segmentation),
exactly 15 Baum-Welch iterations (tol = -inf on both sides); Gaussian emissions, and GMM
emissions with 3 mixtures (the mixture means start from the same seeded offsets).
hmmlearn runs its fastest forward-backward ('scaling'; its GMMHMM with 'scaling' too), one
model after another in one thread, with NumPy's BLAS pinned to one thread as pyaiml's side
does (its fastest setting here: threaded OpenBLAS made the M-step products ~40x slower on
this shared 2-core machine); pyaiml trains the 10 classes in parallel threads with
pyaiml's thread count (2 by default in ``pyaiml bench``), 'scaling' too.
Validation before timing: both sides' test accuracy on the official test split must be
within 3 points of each other and above 90%.
Needs FSDD (PYAIML_FSDD or ./data/fsdd) and hmmlearn; yields nothing
without the data. ``python -m pyaiml.bench.speech`` runs the suite with fewer repeats for the
GMM rows (hmmlearn's GMMHMM recipe takes ~80 s per run) and prints a table.
"""
from __future__ import annotations

import time
import warnings

import numpy as np

from pyaiml.bench.harness import Case

K, N_MIX, N_ITER = 8, 3, 15

_CACHE = {}


def fsdd_features(path=None):
    """(features list, digits, train_idx, test_idx) of the FSDD copy, or None when absent."""
    from pyaiml.datasets.fsdd import find_fsdd, holds_fsdd

    path = find_fsdd(path)[0]
    if path in _CACHE:
        return _CACHE[path]
    if path is None or not holds_fsdd(path):
        return None
    from pyaiml.audio import mfcc_features
    from pyaiml.datasets.fsdd import load_fsdd

    ds = load_fsdd(path, on_error="warn")
    feats = [mfcc_features(y, sr, name=f) for y, sr, f in zip(ds.signals, ds.rates, ds.filenames)]
    tr, te = ds.split()
    _CACHE[path] = (feats, ds.digits, tr, te)
    return _CACHE[path]


def _lr():
    from pyaiml.hmm import left_right
    return left_right(K)


def hmmlearn_recipe(feats, digits, idx, emission, seed=0):
    """The recipe on hmmlearn: dict digit -> fitted model (sequential, 'scaling')."""
    from hmmlearn.hmm import GMMHMM, GaussianHMM

    from pyaiml.hmm.classifier import HMMClassifier, _flat_start, _one_blas_thread

    seeder = HMMClassifier(random_state=seed)  # the same per-class seeds as pyaiml's side
    models = {}
    for d in np.unique(digits[idx]):
        seqs = [np.asarray(feats[i], dtype=np.float64) for i in idx if digits[i] == d]
        mu, var = _flat_start(seqs, K)
        var = var + 1e-2
        if emission == "gaussian":
            m = GaussianHMM(K, "diag", n_iter=N_ITER, tol=-np.inf, init_params="", params="stmc",
                            implementation="scaling")
            m.means_, m.covars_ = mu, var
        else:
            m = GMMHMM(K, N_MIX, covariance_type="diag", n_iter=N_ITER, tol=-np.inf, init_params="",
                       params="stmcw", implementation="scaling")
            rng = np.random.default_rng(seeder._seed(int(np.searchsorted(np.unique(digits[idx]), d))))
            m.weights_ = np.full((K, N_MIX), 1.0 / N_MIX)
            m.means_ = mu[:, None, :] + 0.5 * np.sqrt(var)[:, None, :] * rng.standard_normal((K, N_MIX, mu.shape[1]))
            m.covars_ = np.repeat(var[:, None, :], N_MIX, axis=1)
        m.startprob_, m.transmat_ = _lr()
        with warnings.catch_warnings(), _one_blas_thread():
            warnings.simplefilter("ignore")
            m.fit(np.concatenate(seqs), [len(s) for s in seqs])
        models[d] = m
    return models


def hmmlearn_accuracy(models, feats, digits, idx):
    keys = sorted(models)
    pred = [keys[int(np.argmax([models[k].score(feats[i]) for k in keys]))] for i in idx]
    return float(np.mean(np.asarray(pred) == digits[idx]))


def pyaiml_recipe(feats, digits, idx, emission, seed=0):
    from pyaiml.hmm import HMMClassifier

    clf = HMMClassifier(n_states=K, emission=emission, n_mix=N_MIX, n_iter=N_ITER, tol=-np.inf, random_state=seed)
    return clf.fit([feats[i] for i in idx], digits[idx])


def cases(quick: bool = False):
    data = fsdd_features()
    if data is None:
        return
    try:
        import hmmlearn  # noqa: F401
    except ImportError:
        return
    feats, digits, tr, te = data
    n_frames = sum(len(feats[i]) for i in tr)
    # quick: the Gaussian case only (hmmlearn's GMM recipe takes 80-330 s per call here, and
    # the harness calls each side 2 + repeats times)
    for emission in ("gaussian",) if quick else ("gaussian", "gmm"):
        def validate(emission=emission):
            a = pyaiml_recipe(feats, digits, tr, emission).score([feats[i] for i in te], digits[te])
            b = hmmlearn_accuracy(hmmlearn_recipe(feats, digits, tr, emission), feats, digits, te)
            print(f"  {emission}: official test accuracy pyaiml {a:.4f}, hmmlearn {b:.4f}", flush=True)
            if not (a > 0.9 and b > 0.9 and abs(a - b) <= 0.03):
                raise AssertionError(f"speech {emission}: test accuracy pyaiml {a:.4f} vs hmmlearn {b:.4f}")
        fns = {"pyaiml-HMMClassifier": lambda e=emission: pyaiml_recipe(feats, digits, tr, e),
               "hmmlearn-scaling": lambda e=emission: hmmlearn_recipe(feats, digits, tr, e)}
        name = f"train 10 digit HMMs {emission}" + (f" {N_MIX} mix" if emission == "gmm" else "")
        yield Case("speech", name, f"{len(tr)} utt, {n_frames} frames, K{K} diag39, {N_ITER} it", None,
                   "pyaiml-HMMClassifier", fns, "hmmlearn-scaling", validate,
                   extra={"threads_note": "hmmlearn: 1 thread, sequential classes"},
                   unit="frames/s", work=float(n_frames * N_ITER))


def main():
    """Interleaved side-by-side timing with few repeats; prints a markdown table."""
    import argparse

    import pyaiml
    from pyaiml.bench.harness import configure_allocator, set_threads

    ap = argparse.ArgumentParser(description="FSDD recognizer training: pyaiml vs hmmlearn")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats-gaussian", type=int, default=3)
    ap.add_argument("--repeats-gmm", type=int, default=1)
    ap.add_argument("--no-validate", action="store_true")
    ap.add_argument("--only", choices=["gaussian", "gmm"], default=None, help="run one of the two cases")
    args = ap.parse_args()
    configure_allocator()
    set_threads(args.threads)
    data = fsdd_features()
    if data is None:
        raise SystemExit("FSDD not found (set PYAIML_FSDD)")
    rows = []
    for case in cases():
        if args.only and args.only not in case.name:
            continue
        if not args.no_validate:
            t0 = time.perf_counter()
            case.validate()
            print(f"{case.name}: validated ({time.perf_counter() - t0:.1f} s)", flush=True)
        reps = args.repeats_gaussian if "gaussian" in case.name else args.repeats_gmm
        samples = {k: [] for k in case.fns}
        for _ in range(reps):
            for k, f in case.fns.items():
                t0 = time.perf_counter()
                f()
                samples[k].append(time.perf_counter() - t0)
                print(f"  {case.name} {k}: {samples[k][-1]:.2f} s", flush=True)
        med = {k: float(np.median(v)) for k, v in samples.items()}
        rows.append((case.name, case.shape, med[case.ours], med[case.peer], med[case.peer] / med[case.ours], reps))
    print(f"\npyaiml {pyaiml.__version__}, threads {args.threads}")
    print("| case | shape | pyaiml s | hmmlearn s | ratio (hmmlearn / pyaiml) | repeats |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]:.3f} | {r[4]:.1f}x | {r[5]} |")


if __name__ == "__main__":
    main()
