"""Log-space forward-backward is exact when a state far behind the best one (more than the
~745 nats a double's exp can span) is the only way to explain later frames; scaled space
raises instead of returning -inf and NaN posteriors; Viterbi on the same cases.

Oracles: hand-computed values, hmmlearn (log space, exact logsumexp), and tests/hmm_oracle.py
(scipy logsumexp per source state on dense lattices, written apart from the backends).
"""
import warnings

import numpy as np
import pytest

from pyaiml import _backend
from pyaiml.ops import hmm as H

from helpers import backends_for
import hmm_oracle as O

FB = backends_for("hmm_forward_backward")

# pi = [0, .6, .4]; state 1 must jump to 0 (A[1, 0] = 1) and only state 0 can emit the second
# frame well. State 1 sits 800 nats behind state 2 at t = 0. Paths: 1 -> 0 with log
# .6 - 800 + 1000, and 2 -> 2 with log .4 + 0 + 0.
PI = np.array([0.0, 0.6, 0.4])
A = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
LB = np.array([[0.0, -800.0, 0.0], [1000.0, 0.0, 0.0]])
LP = np.logaddexp(np.log(0.6) + 200.0, np.log(0.4))  # 199.4891743...
P_STAY = np.exp(np.log(0.4) - LP)                     # posterior of the 2 -> 2 path


def _fb(backend, pi, A, lb, lens, log_space=True):
    off = np.r_[0, np.cumsum(lens)].astype(np.int64)
    return _backend.resolve("hmm_forward_backward", backend)(pi, A, lb, off, log_space, True, True)[:3]


@pytest.mark.parametrize("backend", FB)
def test_far_behind_state_is_kept(backend):
    lp, post, xi = _fb(backend, PI, A, LB, [2])
    assert lp[0] == pytest.approx(LP, rel=1e-14)
    want_post = np.array([[0.0, 1 - P_STAY, P_STAY], [1 - P_STAY, 0.0, P_STAY]])
    np.testing.assert_allclose(post, want_post, rtol=1e-12, atol=1e-300)
    want_xi = np.zeros((3, 3))
    want_xi[1, 0] = 1 - P_STAY
    want_xi[2, 2] = P_STAY
    np.testing.assert_allclose(xi, want_xi, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("backend", FB)
def test_far_behind_state_public_op(backend, monkeypatch):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    lp, post, xi = H.hmm_forward_backward(PI, A, LB, implementation="log")
    assert lp[0] == pytest.approx(LP, rel=1e-14)
    assert np.isfinite(post).all() and np.isfinite(xi).all()
    lpv, path = H.hmm_viterbi(PI, A, LB)
    assert lpv[0] == pytest.approx(np.log(0.6) + 200.0, rel=1e-14)
    assert path.tolist() == [1, 0]


def _adversarial(rng, K, lens):
    """Sparse, nearly deterministic transitions and emissions spread over thousands of nats
    with many impossible (-inf) entries: paths die out and only a state far behind the best
    one can continue, the case a single shift per step loses."""
    N = int(np.sum(lens))
    dens = rng.choice([0.05, 0.5])
    A = rng.random((K, K)) * (rng.random((K, K)) < dens)
    A[np.arange(K), rng.integers(0, K, K)] += 0.1
    A /= A.sum(axis=1, keepdims=True)
    pi = rng.random(K) * (rng.random(K) < 0.6)
    pi[rng.integers(K)] += 0.1
    pi /= pi.sum()
    lb = rng.normal(size=(N, K)) * rng.choice([1, 100, 1000, 3000])
    lb += (rng.random((N, K)) < 0.2) * rng.choice([0, 2000, -2000])
    lb[rng.random((N, K)) < rng.choice([0.1, 0.5, 0.7])] = -np.inf
    return pi, A, lb


@pytest.mark.parametrize("backend", FB)
def test_log_space_matches_exact_oracle_on_adversarial_models(backend):
    # 150 random models: 1 failed on both backends with one max-shift per step (seed 1)
    rng = np.random.default_rng(1)
    n_kept = 0
    for trial in range(150):
        K = int(rng.choice([1, 2, 3, 5, 8, 9, 17, 33]))
        lens = rng.integers(1, 25, size=int(rng.integers(1, 4)))
        pi, A, lb = _adversarial(rng, K, lens)
        lp, post, xi = _fb(backend, pi, A, lb, lens)
        off = np.r_[0, np.cumsum(lens)].astype(np.int64)
        lp0, post0, xi0 = O.forward_backward(pi, A, lb, off)
        fin = np.isfinite(lp0)
        assert np.array_equal(np.isfinite(lp), fin), (trial, lp, lp0)
        np.testing.assert_allclose(lp[fin], lp0[fin], rtol=1e-12, err_msg=f"trial {trial}")
        okf = np.repeat(fin, lens)
        np.testing.assert_allclose(post[okf], post0[okf], atol=1e-9, err_msg=f"trial {trial}")
        np.testing.assert_allclose(xi, xi0, rtol=1e-8, atol=1e-9, err_msg=f"trial {trial}")
        n_kept += int(fin.sum())
    assert n_kept > 50  # the generator is not all impossible sequences


@pytest.mark.parametrize("backend", FB)
def test_viterbi_matches_oracle_on_adversarial_models(backend):
    rng = np.random.default_rng(2)
    for trial in range(60):
        K = int(rng.choice([1, 3, 8, 9, 17]))
        lens = rng.integers(1, 20, size=2)
        pi, A, lb = _adversarial(rng, K, lens)
        off = np.r_[0, np.cumsum(lens)].astype(np.int64)
        with np.errstate(divide="ignore"):
            lpi, lA = np.log(pi), np.log(A)
        lp, st = _backend.resolve("hmm_viterbi", backend)(lpi, lA, lb, off)
        # independent oracle: the best log-probability by brute-force dynamic programming with
        # a dense (T, K, K) lattice, and the returned path must score exactly that
        for s in range(len(lens)):
            o0, o1 = off[s], off[s + 1]
            d = lpi + lb[o0]
            for t in range(o0 + 1, o1):
                d = np.max(d[:, None] + lA, axis=0) + lb[t]
            best = d.max()
            if not np.isfinite(best):
                assert not np.isfinite(lp[s])
                continue
            assert lp[s] == pytest.approx(best, rel=1e-12, abs=1e-9)
            path = st[o0:o1]
            score = lpi[path[0]] + lb[o0, path[0]] + sum(lA[path[t - 1], path[t]] + lb[o0 + t, path[t]]
                                                          for t in range(1, o1 - o0))
            assert score == pytest.approx(best, rel=1e-12, abs=1e-9)


@pytest.mark.parametrize("backend", FB)
def test_scaling_underflow_raises(backend, monkeypatch):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    with pytest.raises(ValueError, match="implementation='scaling' underflowed on sequence 1 \\(frames 3..4\\).*implementation='log'"):
        H.hmm_forward_backward(PI, A, np.vstack([np.zeros((3, 3)), LB]), lengths=[3, 2], implementation="scaling")
    assert issubclass(H.ScalingUnderflowError, ValueError)
    # a sequence the model truly cannot emit stays -inf with NaN posteriors, no error
    lb = LB.copy()
    lb[1] = [-np.inf, 0.0, -np.inf]  # frame 2 only from state 1, which nothing enters
    lp, post, _ = H.hmm_forward_backward(PI, A, lb, implementation="scaling")
    assert lp[0] == -np.inf and np.isnan(post).all()


def _outlier_models():
    """Left-right 2-state Gaussian model; frame 3 is an outlier that state 1 explains 950 nats
    better than state 0, but state 1 cannot go back, and the 197 frames after it are at 0."""
    from pyaiml.hmm import GaussianHMM
    hmmlearn = pytest.importorskip("hmmlearn.hmm")
    out = []
    for cls in (GaussianHMM, hmmlearn.GaussianHMM):
        m = cls(n_components=2, covariance_type="diag", init_params="", params="")
        m.startprob_ = np.array([1.0, 0.0])
        m.transmat_ = np.array([[0.9, 0.1], [0.0, 1.0]])
        m.means_ = np.array([[0.0], [10.0]])
        m.covars_ = np.ones((2, 1))
        out.append(m)
    X = np.zeros((201, 1))
    X[3] = 100.0
    return out, X


@pytest.mark.parametrize("backend", FB)
def test_gaussian_hmm_outlier_matches_hmmlearn(backend, monkeypatch):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    (ours, theirs), X = _outlier_models()
    want = theirs.score(X)
    assert want == pytest.approx(-5205.778748305666, rel=1e-12)  # hmmlearn 0.3.3
    assert ours.score(X) == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-10)
    assert np.array_equal(ours.predict(X), theirs.predict(X))
    # one EM step on the same data: the transition and mean updates agree
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m in (ours, theirs):
            m.params, m.n_iter = "tm", 1
            m.fit(X)
    np.testing.assert_allclose(ours.transmat_, theirs.transmat_, atol=1e-10)
    np.testing.assert_allclose(ours.means_, theirs.means_, atol=1e-8)


def test_classifier_falls_back_to_log_space_where_scaling_underflows():
    """HMMClassifier's default 'scaling' must not lose a sequence: the hand case above as a
    2-D Gaussian model (state 1 800 nats behind at frame 0, state 0 1000 nats ahead at frame 1)."""
    from pyaiml.hmm import HMMClassifier

    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(12, 2)) + 3 * (i % 2) for i in range(8)]
    clf = HMMClassifier(n_states=3, n_iter=2, topology="ergodic", n_jobs=1).fit(seqs, np.arange(8) % 2)
    assert clf.implementation == "scaling"
    m = clf.models_[0]
    a = np.sqrt(2000.0)
    m.startprob_ = PI
    m.transmat_ = A
    m.means_ = np.array([[0.0, 0.0], [40.0, 0.0], [0.0, a]])
    m.covars_ = np.ones((3, 2))
    X = np.array([[0.0, a / 2], [-5.0, 0.0]])
    with pytest.raises(H.ScalingUnderflowError):
        m.score(X)
    got = clf.log_likelihoods([X])[0, 0]
    m.implementation = "log"
    want = m.score(X)
    const = -np.log(2 * np.pi)  # the 2-D unit-variance normalising constant per frame
    # frame maxima -250 and -12.5 stand for the hand case's 0 and 1000: LP shifted by -250 - 1012.5
    assert want == pytest.approx(LP + 2 * const - 250.0 - 1012.5, rel=1e-12)
    assert got == want
