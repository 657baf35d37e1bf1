"""Leave-one-speaker-out sweeps of the FSDD digit recognizers (the figures behind the speech
section of benchmarks/RESULTS.md).

Features: mfcc_features without normalisation, cached per speed factor in --cache; CMVN per
speaker (--norm spk; a held-out speaker over their own recordings, or --enroll N of them) or
per utterance (--norm utt); speed copies (--speed 0.9,1.0,1.1) each normalised as its own
speaker group; recognizers: HMMClassifier (--model hmm --emission gmm|gaussian) or
CNNClassifier (--model cnn, --specaug 1, --seeds N = n_estimators). Prints each held-out
speaker's accuracy, the mean and the minimum. Not a test; needs FSDD (PYAIML_FSDD).
Run: python benchmarks/scripts/fsdd_loso.py --model cnn --speed 0.9,1.0,1.1 --seeds 5
""" 
import argparse
import os
import time

import numpy as np

from pyaiml.audio import mfcc_features_batch, resample
from pyaiml.datasets.fsdd import find_fsdd, load_fsdd
from pyaiml.hmm import HMMClassifier
from pyaiml.speech import CNNClassifier

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="hmm")
ap.add_argument("--emission", default="gmm")
ap.add_argument("--norm", default="spk")  # spk | utt
ap.add_argument("--speed", default="1.0")  # e.g. 0.9,1.0,1.1
ap.add_argument("--epochs", type=int, default=30)
ap.add_argument("--specaug", type=int, default=0)  # online masking per epoch (1 = on)
ap.add_argument("--tmask", type=int, default=8)
ap.add_argument("--fmask", type=int, default=4)
ap.add_argument("--seeds", type=int, default=1)
ap.add_argument("--filters", type=int, default=64)
ap.add_argument("--hidden", type=int, default=64)
ap.add_argument("--kernel", default="3")  # 3, or 3,7: ensemble members alternate kernel sizes
ap.add_argument("--save-proba", default="")  # npz of every ensemble member's test probabilities per speaker
ap.add_argument("--average", type=int, default=0)  # CNNClassifier(average_epochs=)
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--dropout", type=float, default=0.3)
ap.add_argument("--official", action="store_true")
ap.add_argument("--speakers", default="")
ap.add_argument("--feat", default="mfcc")
ap.add_argument("--enroll", type=int, default=0)
ap.add_argument("--confusion", action="store_true")  # print each held-out speaker's confusion matrix
ap.add_argument("--tta", default="")  # e.g. 0.9,1.0,1.1: average predictions over speed copies of the test utterances
ap.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "pyaiml-fsdd-loso"))  # held-out speaker stats from N random utterances
args = ap.parse_args()

ds = load_fsdd(find_fsdd()[0] or "./data/fsdd")
cache = args.cache
os.makedirs(cache, exist_ok=True)
RATIO = {0.8: (4, 5), 0.85: (17, 20), 0.9: (9, 10), 0.95: (19, 20), 1.0: None, 1.05: (21, 20), 1.1: (11, 10), 1.15: (23, 20), 1.2: (6, 5)}

def feats_for(f):
    p = f"{cache}/{args.feat}_{f}.npz"
    if os.path.exists(p):
        z = np.load(p)
        return np.split(z["F"], z["ends"][:-1])
    sig = ds.signals
    if RATIO[f] is not None:
        a, b = RATIO[f]  # speed factor f = a/b: output length n*b/a
        sig = [resample(y, a, b) for y in sig]
    if args.feat == "mfcc":
        out = mfcc_features_batch(sig, ds.rates, normalize=False)
    else:
        raise SystemExit("feat")
    ends = np.cumsum([len(o) for o in out])
    np.savez(p, F=np.concatenate(out), ends=ends)
    return out

factors = [float(s) for s in args.speed.split(",")]
tta = [float(s) for s in args.tta.split(",")] if args.tta else [1.0]
F = {f: feats_for(f) for f in sorted(set(factors) | set(tta))}
if 1.0 not in F:
    F[1.0] = feats_for(1.0)
spk = ds.speakers
dig = ds.digits

def norm(feats, groups):
    if args.norm == "utt":
        return [(x - x.mean(0)) / np.maximum(x.std(0), 1e-4) for x in feats]
    out = [None] * len(feats)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        X = np.concatenate([feats[i] for i in idx]).astype(np.float64)
        mu, sd = X.mean(0), np.maximum(X.std(0), 1e-4)
        for i in idx:
            out[i] = ((feats[i] - mu) / sd).astype(np.float32)
    return out

NF = {f: norm(F[f], spk) for f in F}

def make():
    if args.model == "hmm":
        return [HMMClassifier(n_states=8, emission=args.emission, n_mix=3, n_iter=15, random_state=0)]
    from pyaiml.speech import SpecAugment
    sa = SpecAugment(time_masks=2, time_width=args.tmask, feature_masks=1, feature_width=args.fmask, feature_groups=3) if args.specaug else None
    return [CNNClassifier(epochs=args.epochs, random_state=0, filters=args.filters, hidden=args.hidden, dropout=args.dropout, n_frames=80,
                          kernel_size=tuple(int(k) for k in args.kernel.split(",")), learning_rate=args.lr, average_epochs=args.average,
                          spec_augment=sa, n_estimators=args.seeds)]

def run(tr, te):
    Xtr, ytr = [], []
    for f in factors:
        Xtr += [NF[f][i] for i in tr]
        ytr += list(dig[tr])
    Xtes = [[NF[f][i] for i in te] for f in tta]
    if args.enroll and args.norm == "spk":
        r = np.random.default_rng(7)
        enr = r.choice(te, size=args.enroll, replace=False)
        X = np.concatenate([F[1.0][i] for i in enr]).astype(np.float64)
        mu, sd = X.mean(0), np.maximum(X.std(0), 1e-4)
        Xtes = [[((F[1.0][i] - mu) / sd).astype(np.float32) for i in te]]
    Pf = [0.0] * len(Xtes)
    members = saved.setdefault("members", [])
    members.clear()
    for m in make():
        m.fit(Xtr, np.array(ytr))
        for k, Xte in enumerate(Xtes):
            Pf[k] = Pf[k] + m.predict_proba(Xte)
        if args.save_proba and hasattr(m, "models_"):
            from pyaiml.speech import pad_or_crop
            Bte = pad_or_crop(Xtes[0], m.n_frames_)
            members.append(np.stack([mm.predict(Bte, batch_size=256, verbose=0) for mm in m.models_]))
    P = sum(Pf)
    pred = m.classes_[P.argmax(1)]
    if len(Xtes) > 1:
        # unsupervised speaker adaptation: the speed factor whose predictions are most
        # confident on average over the speaker's recordings (no labels used)
        conf = [np.mean(np.max(p / p.sum(1, keepdims=True), axis=1)) for p in Pf]
        k = int(np.argmax(conf))
        acc = {f"x{f}": np.mean(m.classes_[p.argmax(1)] == dig[te]) for f, p in zip(tta, Pf)}
        acc["select"] = np.mean(m.classes_[Pf[k].argmax(1)] == dig[te])
        print("  tta", " ".join(f"{a} {v:.3f}" for a, v in acc.items()), f"(selected x{tta[k]})", flush=True)
        for a, v in acc.items():
            extra.setdefault(a, []).append(v)
    if args.confusion:
        C = np.zeros((10, 10), dtype=int)
        np.add.at(C, (dig[te], pred), 1)
        print("confusion (rows: true digit, columns: predicted)\n" + "\n".join(" ".join(f"{v:3d}" for v in r) for r in C))
    return np.mean(pred == dig[te])

t0 = time.time()
res = {}
extra = {}
saved = {}
if args.official:
    res["official"] = run(ds.train_idx, ds.test_idx)
    print("official", res["official"], f"{time.time()-t0:.0f}s", flush=True)
spks = [] if args.speakers == "none" else args.speakers.split(",") if args.speakers else sorted(set(spk))
for s in spks:
    tr, te = ds.split(s)
    res[s] = run(tr, te)
    if args.save_proba and saved["members"]:
        saved[s] = saved["members"][0]
        saved[s + "_y"] = dig[te]
        np.savez(args.save_proba, **{k: v for k, v in saved.items() if k != "members"})
    print(s, f"{res[s]:.3f}", f"{time.time()-t0:.0f}s", flush=True)
l = [res[s] for s in spks]
print("ARGS", vars(args))
if l:
    print("LOSO mean", f"{np.mean(l):.4f}", "min", f"{np.min(l):.3f}", f"{time.time()-t0:.0f}s")
for a, v in extra.items():
    print(f"  tta {a}: LOSO mean {np.mean(v):.4f} min {np.min(v):.3f}")
