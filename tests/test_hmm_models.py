"""pyaiml.hmm models: API behaviour users ask for (list input, per-sequence scores, restarts,
history, left-right topologies, length-1 sequences, warnings, errors, save/load, sampling).
Runs on every backend (the ops pick it); hmmlearn parity lives in test_hmm_parity.py."""
import os
import warnings

import numpy as np
import pytest

from pyaiml import hmm as ph


def _gauss(K=3, D=2, ct="diag", seed=0, **kw):
    rng = np.random.default_rng(seed)
    m = ph.GaussianHMM(K, ct, init_params="", **kw)
    m.startprob_ = rng.dirichlet(np.ones(K))
    m.transmat_ = rng.dirichlet(np.ones(K), size=K)
    m.means_ = rng.normal(size=(K, D)) * 3
    m.covars_ = {"diag": rng.uniform(0.5, 1.5, (K, D)), "spherical": rng.uniform(0.5, 1.5, K),
                 "full": np.tile(np.eye(D), (K, 1, 1)), "tied": np.eye(D)}[ct]
    return m


def _cat(K=3, M=4, seed=0, **kw):
    rng = np.random.default_rng(seed)
    m = ph.CategoricalHMM(K, init_params="", **kw)
    m.startprob_ = rng.dirichlet(np.ones(K))
    m.transmat_ = rng.dirichlet(np.ones(K), size=K)
    m.emissionprob_ = rng.dirichlet(np.ones(M), size=K)
    return m


def test_list_of_arrays_equals_X_lengths():
    m = _gauss()
    X, _ = m.sample(30, random_state=1)
    seqs = [X[:7], X[7:8], X[8:]]
    assert m.score(seqs) == pytest.approx(m.score(X, [7, 1, 22]), rel=1e-14)
    np.testing.assert_array_equal(m.predict(seqs), m.predict(X, [7, 1, 22]))
    np.testing.assert_allclose(m.predict_proba(seqs), m.predict_proba(X, [7, 1, 22]))
    per = m.score(X, [7, 1, 22], per_sequence=True)
    assert per.shape == (3,)
    assert per[1] == pytest.approx(m.score(X[7:8]), rel=1e-14)
    assert per.sum() == pytest.approx(m.score(X, [7, 1, 22]), rel=1e-14)
    c = _cat()
    Xc, _ = c.sample(20, random_state=2)
    assert c.score([Xc[:5, 0], Xc[5:, 0]]) == pytest.approx(c.score(Xc, [5, 15]), rel=1e-14)


@pytest.mark.parametrize("impl", ["log", "scaling"])
@pytest.mark.parametrize("ct", ["spherical", "diag", "full", "tied"])
def test_fit_increases_likelihood_and_keeps_history(impl, ct):
    gen = _gauss(3, 2, ct, seed=3)
    X, _ = gen.sample(400, random_state=4)
    m = ph.GaussianHMM(3, ct, n_iter=15, tol=-np.inf, random_state=0, implementation=impl)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ph.ConvergenceWarning)
        m.fit(X, [100, 1, 299])
    h = np.array(m.monitor_.history)
    assert len(h) == 15 and m.monitor_.iter == 15 and m.monitor_.converged
    assert np.all(np.diff(h) > -1e-6 * np.abs(h[1:]))
    assert m.score(X, [100, 1, 299]) >= h[-1] - 1e-6 * abs(h[-1])


def test_left_right_structural_zeros_stay_zero():
    pi, A = ph.left_right(5, n_jumps=2)
    assert pi[0] == 1 and np.allclose(A.sum(1), 1) and A[3, 1] == 0 and A[0, 3] == 0
    gen = _gauss(5, 3, seed=5)
    gen.startprob_, gen.transmat_ = pi, A
    X, _ = gen.sample(300, random_state=6)
    for cls, kw in ((ph.GaussianHMM, {}), (ph.GMMHMM, {"n_mix": 2})):
        m = cls(5, init_params="mcw", params="stmcw", n_iter=5, random_state=0, transmat_prior=3.0, **kw)
        m.startprob_, m.transmat_ = pi.copy(), A.copy()
        m.fit(X, [150, 150])
        assert np.all(m.transmat_[A == 0] == 0) and np.all(m.startprob_[1:] == 0)
        assert np.allclose(m.transmat_.sum(1), 1)


def test_length_one_sequences():
    m = _cat()
    X = np.array([[0], [1], [2], [3]])
    lp = m.score(X, [1, 1, 1, 1], per_sequence=True)
    want = np.log(m.startprob_ @ m.emissionprob_[:, X[:, 0]])
    np.testing.assert_allclose(lp, want, rtol=1e-13)
    m.n_iter, m.tol = 3, -np.inf
    A0 = m.transmat_.copy()
    with pytest.warns(RuntimeWarning, match="keep their previous values"):
        m.fit(X, [1, 1, 1, 1])  # no transitions at all: transmat_ rows stay as they were
    assert np.isfinite(m.monitor_.history[-1]) and len(m.monitor_.history) == 3
    np.testing.assert_allclose(m.transmat_, A0)


def test_n_init_keeps_best():
    gen = _gauss(3, 2, seed=7)
    X, _ = gen.sample(200, random_state=8)
    m = ph.GaussianHMM(3, n_iter=5, n_init=3, random_state=0)
    m.fit(X)
    assert len(m.init_history_) == 3
    assert m.monitor_.history[-1] == max(m.init_history_)


def test_decreasing_likelihood_warns_not_raises():
    mon = ph.ConvergenceMonitor(tol=1e-2, n_iter=10, verbose=False)
    mon.report(-10.0)
    with pytest.warns(ph.ConvergenceWarning, match="decreased at iteration 2"):
        mon.report(-11.0)
    assert list(mon.history) == [-10.0, -11.0]


def test_decode_map_and_viterbi():
    m = _gauss(seed=9)
    X, Z = m.sample(50, random_state=3)
    lp, path = m.decode(X)
    assert path.shape == (50,) and lp <= m.score(X)
    _, mp = m.decode(X, algorithm="map")
    np.testing.assert_array_equal(mp, m.predict_proba(X).argmax(1))
    with pytest.raises(ValueError, match="unknown decoder"):
        m.decode(X, algorithm="beam")


def test_sample_shapes_and_currstate():
    m = _gauss(K=2, D=3)
    X, Z = m.sample(10, random_state=0, currstate=1)
    assert X.shape == (10, 3) and Z[0] == 1
    c = _cat()
    Xc, Zc = c.sample(10, random_state=0)
    assert Xc.shape == (10, 1) and Xc.dtype.kind in "iu"
    g = ph.GMMHMM(2, 2, covariance_type="diag")
    g.startprob_, g.transmat_ = np.array([1.0, 0.0]), np.array([[0.5, 0.5], [0.5, 0.5]])
    g.weights_, g.means_, g.covars_ = np.full((2, 2), 0.5), np.zeros((2, 2, 3)), np.ones((2, 2, 3))
    assert g.sample(5, random_state=0)[0].shape == (5, 3)


@pytest.mark.parametrize("kind", ["cat", "gauss-full", "gauss-spherical", "gmm-tied"])
def test_save_load_roundtrip(tmp_path, kind):
    if kind == "cat":
        m = _cat(n_iter=3)
        X, _ = m.sample(40, random_state=0)
    elif kind.startswith("gauss"):
        m = _gauss(ct=kind.split("-")[1], n_iter=3)
        X, _ = m.sample(40, random_state=0)
    else:
        g = _gauss(seed=2)
        X, _ = g.sample(60, random_state=0)
        m = ph.GMMHMM(3, 2, covariance_type="tied", n_iter=3, random_state=0)
    m.fit(X)
    p = os.path.join(tmp_path, "model.npz")
    m.save(p)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
    r = ph.load(p)
    assert type(r) is type(m)
    assert r.score(X) == m.score(X)
    np.testing.assert_array_equal(r.predict(X), m.predict(X))
    assert list(r.monitor_.history) == list(m.monitor_.history)
    with np.load(p, allow_pickle=False) as z:  # no object arrays anywhere
        assert all(z[k].dtype != object for k in z.files)


def test_errors_name_the_culprit():
    with pytest.raises(ValueError, match="n_components must be an integer >= 1"):
        ph.GaussianHMM(0)
    with pytest.raises(ValueError, match="covariance_type"):
        ph.GaussianHMM(2, "banana")
    m = _gauss(D=2)
    X, _ = m.sample(10, random_state=0)
    with pytest.raises(ValueError, match="3 features but the model has 2"):
        m.score(np.zeros((5, 3)))
    bad = X.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="sample 4, feature 1"):
        m.score(bad)
    with pytest.raises(ValueError, match="lengths must sum"):
        m.score(X, [3, 3])
    with pytest.raises(ValueError, match=r"lengths\[1\] = 0"):
        m.score(X, [10, 0])
    m.transmat_ = np.array([[0.5, 0.5, 0.0], [0.2, 0.2, 0.2], [0.3, 0.3, 0.4]])
    with pytest.raises(ValueError, match="row 1 \\(state 1\\)"):
        m.score(X)
    m = _gauss(D=2)
    with pytest.raises(ValueError, match="diag' covars must be positive.*state 1, feature 0"):
        m.covars_ = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match="state 2 must be symmetric, positive-definite"):
        g = ph.GaussianHMM(3, "full")
        g.covars_ = np.array([np.eye(2), np.eye(2), [[1.0, 2.0], [2.0, 1.0]]])
    c = _cat(M=4)
    with pytest.raises(ValueError, match="symbols must be < n_features = 4. Received 7 at sample 2"):
        c.score(np.array([[0], [1], [7]]))
    with pytest.raises(ValueError, match="integers"):
        c.score(np.array([[0.5], [1.0]]))
    c.emissionprob_ = np.array([[1.0, 0, 0, 0]] * 3)
    with pytest.raises(ValueError, match="sequence 1 \\(samples 2..3\\) has zero likelihood"):
        c.score_samples(np.array([[0], [0], [1], [0]]), [2, 2])
    assert c.score(np.array([[0], [0], [1], [0]]), [2, 2], per_sequence=True)[1] == -np.inf
    with pytest.raises(ValueError, match="not fitted"):
        ph.CategoricalHMM(2).score(np.array([[0]]))


def test_degenerate_covariance_is_a_clear_error():
    # state 0 owns points on a line (second coordinate 0): with no prior and no floor its
    # covariance becomes singular after one M-step
    X = np.r_[np.c_[np.linspace(-1, 1, 20), np.zeros(20)], np.random.default_rng(0).normal(size=(20, 2)) + 1000]
    m = ph.GaussianHMM(2, "full", covars_prior=0.0, covars_weight=0, n_iter=5, init_params="", min_covar=0)
    m.startprob_, m.transmat_ = np.array([0.5, 0.5]), np.array([[0.9, 0.1], [0.1, 0.9]])
    m.means_, m.covars_ = np.array([[0.0, 0.0], [1000.0, 1000.0]]), np.tile(np.eye(2), (2, 1, 1))
    with pytest.raises(ValueError, match="state 0.*degenerate covariance"):
        m.fit(X)
