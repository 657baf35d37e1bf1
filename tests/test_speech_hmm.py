"""Tests of pyaiml.hmm.HMMClassifier: synthetic sequences (always), FSDD (skips without
../shared/data/fsdd). Full-accuracy FSDD runs are marked slow.
Run: PYTHONPATH=$PWD python -m pytest -q tests/test_speech_hmm.py [-m slow]
"""
import numpy as np
import pytest

from helpers import shared_data
from pyaiml.hmm import GaussianHMM, GMMHMM, HMMClassifier


def _synthetic(n_per_class=12, D=3, seed=0):
    """Two classes of left-to-right sequences: a rising or a falling ramp of means plus noise."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for c, sign in enumerate((1.0, -1.0)):
        for _ in range(n_per_class):
            T = int(rng.integers(15, 30))
            ramp = sign * np.linspace(-2, 2, T)[:, None] * np.ones((1, D))
            X.append(ramp + 0.4 * rng.standard_normal((T, D)))
            y.append(["up", "down"][c])
    return X, np.array(y)


def test_fit_predict_synthetic_left_right_zeros_stay():
    X, y = _synthetic()
    clf = HMMClassifier(n_states=4, n_iter=5, n_jobs=2).fit(X, y)
    assert list(clf.classes_) == ["down", "up"]
    assert len(clf.models_) == 2 and all(isinstance(m, GaussianHMM) for m in clf.models_)
    Xt, yt = _synthetic(6, seed=1)
    assert clf.score(Xt, yt) == 1.0
    for m in clf.models_:
        A = m.transmat_
        assert np.all(np.tril(A, -1) == 0) and np.all(np.triu(A, 2) == 0)  # Bakis: stay or next
        assert m.startprob_[0] == pytest.approx(1.0)
    P = clf.predict_proba(Xt)
    assert P.shape == (len(Xt), 2) and np.allclose(P.sum(1), 1.0)
    L = clf.log_likelihoods(Xt)
    ref = np.exp(L - L.max(1, keepdims=True))
    np.testing.assert_allclose(P, ref / ref.sum(1, keepdims=True), rtol=1e-12)
    assert np.array_equal(clf.predict(Xt), clf.classes_[P.argmax(1)])


def test_gmm_ergodic_and_thread_count_independent():
    X, y = _synthetic(8)
    a = HMMClassifier(n_states=3, emission="gmm", n_mix=2, topology="ergodic", n_iter=3, n_jobs=1).fit(X, y)
    b = HMMClassifier(n_states=3, emission="gmm", n_mix=2, topology="ergodic", n_iter=3, n_jobs=2).fit(X, y)
    assert all(isinstance(m, GMMHMM) for m in a.models_)
    assert np.all(a.models_[0].transmat_ > 0)
    np.testing.assert_array_equal(a.log_likelihoods(X), b.log_likelihoods(X))
    assert a.score(X, y) >= 0.9


def test_save_load_roundtrip(tmp_path):
    X, y = _synthetic(6)
    clf = HMMClassifier(n_states=3, n_iter=3).fit(X, [0 if v == "up" else 1 for v in y])
    p = clf.save(tmp_path / "clf.npz")
    back = HMMClassifier.load(p)
    np.testing.assert_array_equal(back.classes_, clf.classes_)
    np.testing.assert_allclose(back.log_likelihoods(X), clf.log_likelihoods(X), rtol=1e-12)
    assert back.get_params() == clf.get_params()


def test_bad_input():
    X, y = _synthetic(4)
    with pytest.raises(ValueError, match="at least one sequence"):
        HMMClassifier().fit([], [])
    with pytest.raises(ValueError, match="one label per sequence"):
        HMMClassifier(n_states=2, n_iter=1).fit(X, y[:-1])
    with pytest.raises(ValueError, match="same number of features"):
        HMMClassifier(n_states=2, n_iter=1).fit(X[:-1] + [np.zeros((10, 5))], y)
    with pytest.raises(ValueError, match="must be finite"):
        HMMClassifier(n_states=2, n_iter=1).fit(X[:-1] + [np.full((10, 3), np.nan)], y)
    with pytest.raises(ValueError, match="not one 2-D array"):
        HMMClassifier(n_states=2, n_iter=1).fit(np.zeros((10, 3)), [0] * 10)
    with pytest.raises(ValueError, match="not fitted"):
        HMMClassifier().predict(X)
    with pytest.raises(ValueError, match="emission must be"):
        HMMClassifier(emission="poisson")
    with pytest.raises(ValueError, match="topology must be"):
        HMMClassifier(topology="circular")
    with pytest.raises(ValueError, match="n_states must be"):
        HMMClassifier(n_states=0)
    clf = HMMClassifier(n_states=2, n_iter=1).fit(X, y)
    with pytest.raises(ValueError, match=r"X has 4 features per frame, but the model was fitted with 3"):
        clf.predict([np.zeros((10, 4))])
    with pytest.raises(ValueError, match="at least one sequence"):
        clf.predict([])
    with pytest.raises(ValueError, match="one label per sequence"):
        clf.score(X, y[:2])


def _fsdd(digits=None):
    from pyaiml.audio import mfcc_features
    from pyaiml.datasets import load_fsdd

    ds = load_fsdd(shared_data("fsdd"))
    keep = np.arange(len(ds)) if digits is None else np.flatnonzero(np.isin(ds.digits, digits))
    feats = {int(i): mfcc_features(ds.signals[i], ds.rates[i], name=ds.filenames[i]) for i in keep}
    tr = [i for i in ds.train_idx if i in feats]
    te = [i for i in ds.test_idx if i in feats]
    return feats, ds, tr, te


def test_fsdd_three_digits_small():
    feats, ds, tr, te = _fsdd([1, 4, 8])
    tr = tr[::3]  # 150 training recordings keep the default run short
    clf = HMMClassifier(n_states=5, n_iter=4).fit([feats[i] for i in tr], ds.digits[tr])
    acc = clf.score([feats[i] for i in te], ds.digits[te])
    assert acc >= 0.85, acc  # chance is 1/3


@pytest.mark.slow
@pytest.mark.parametrize("emission,target", [("gaussian", 0.93), ("gmm", 0.97)])
def test_fsdd_official_split_accuracy(emission, target):
    feats, ds, tr, te = _fsdd()
    clf = HMMClassifier(emission=emission, n_mix=3).fit([feats[i] for i in tr], ds.digits[tr])
    acc = clf.score([feats[i] for i in te], ds.digits[te])
    assert acc >= target, acc
