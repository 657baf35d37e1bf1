"""HMM kernels (pyaiml.ops.hmm_*): every backend against independent oracles on awkward sizes
(tests/hmm_oracle.py, itself checked against every path of tiny models here),
published forward-backward values, log vs scaling, long sequences, thread-count
invariance, and argument errors.

Tolerance: 1e-9 relative for scaled space; log space carries an absolute error of about
|log alpha| * eps per frame (hundreds here), so posteriors agree to ~1e-12 absolute.
"""
import numpy as np
import pytest

import pyaiml
from pyaiml import _backend
from pyaiml.ops import hmm as H

from helpers import backends_for
import hmm_oracle as O


def _model(K, rng, zeros=False):
    pi = rng.dirichlet(np.ones(K))
    A = rng.dirichlet(np.ones(K), size=K)
    if zeros and K > 2:
        A[:, 1] = 0.0  # state 1 unreachable after t=0
        A /= A.sum(axis=1, keepdims=True)
    return pi, A


@pytest.mark.parametrize("K,T", [(1, 4), (2, 5), (3, 4), (4, 3)])
def test_oracles_match_path_enumeration(K, T):
    # the test oracles against the definition: a sum and a max over all K^T paths
    rng = np.random.default_rng(10 * K + T)
    pi, A = _model(K, rng, zeros=True)
    lb = rng.normal(size=(T, K)) * 3
    if K > 1:
        lb[1, 0] = -np.inf
    lp_all, post_all, xi_all, best = O.enumerate_paths(pi, A, lb)
    lp, post, xi = O.forward_backward(pi, A, lb, [0, T])
    np.testing.assert_allclose(lp[0], lp_all, rtol=1e-12)
    np.testing.assert_allclose(post, post_all, atol=1e-12)
    np.testing.assert_allclose(xi, xi_all, atol=1e-12)
    with np.errstate(divide="ignore"):
        lpv, st = O.viterbi(np.log(pi), np.log(A), lb, [0, T])
    np.testing.assert_allclose(lpv[0], best, rtol=1e-12)


@pytest.mark.parametrize("backend", backends_for("hmm_forward_backward"))
@pytest.mark.parametrize("K", [1, 3, 7, 9, 33])
@pytest.mark.parametrize("log_space", [False, True])
def test_forward_backward_matches_oracle(backend, K, log_space):
    rng = np.random.default_rng(K)
    pi, A = _model(K, rng, zeros=True)
    lens = np.array([1, 2, 7, 40])
    off = np.r_[0, np.cumsum(lens)].astype(np.int64)
    lb = rng.normal(size=(off[-1], K)) * 4 - 30
    fn = _backend.resolve("hmm_forward_backward", backend)
    lp, post, xi = fn(pi, A, lb, off, log_space, True, True)[:3]
    lp0, post0, xi0 = O.forward_backward(pi, A, lb, off)
    np.testing.assert_allclose(lp, lp0, rtol=1e-12)
    np.testing.assert_allclose(post, post0, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(xi, xi0, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(post.sum(axis=1), 1.0, rtol=1e-12)
    lp1, p1, x1 = fn(pi, A, lb, off, log_space, False, False)[:3]
    assert p1 is None and x1 is None
    np.testing.assert_allclose(lp1, lp0, rtol=1e-12)


@pytest.mark.parametrize("backend", backends_for("hmm_forward_backward"))
@pytest.mark.parametrize("log_space", [False, True])
def test_symbol_table_counts_and_start(backend, log_space):
    # categorical path: rows picked from a (M, K) table, per-symbol posterior sums, t=0 sums
    rng = np.random.default_rng(21)
    K, M = 6, 5
    pi, A = _model(K, rng)
    E = rng.dirichlet(np.ones(M), size=K)
    E[:, 4] = 0  # symbol 4 impossible: its sequence must contribute nothing
    E /= E.sum(1, keepdims=True)
    lens = np.array([3, 1, 20, 4])
    off = np.r_[0, np.cumsum(lens)].astype(np.int64)
    sym = rng.integers(0, 4, size=off[-1]).astype(np.int64)
    sym[off[3] + 1] = 4
    with np.errstate(divide="ignore"):
        table = np.log(E.T)
    fn = _backend.resolve("hmm_forward_backward", backend)
    with np.errstate(divide="ignore"):
        lp, post, xi, cnt, st = fn(pi, A, np.ascontiguousarray(table), off, log_space, True, True, sym, True, True)
    lp0, post0, xi0 = O.forward_backward(pi, A, table[sym], off)
    np.testing.assert_allclose(lp, lp0, rtol=1e-12)
    assert lp[3] == -np.inf
    ok = np.repeat(np.isfinite(lp0), lens)
    want = np.zeros((M, K))
    np.add.at(want, sym[ok], post0[ok])
    np.testing.assert_allclose(cnt, want, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(st, post0[off[:3]].sum(0), rtol=1e-10)
    np.testing.assert_allclose(xi, xi0, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", backends_for("hmm_viterbi"))
@pytest.mark.parametrize("K", [1, 2, 5, 17])
def test_viterbi_matches_oracle(backend, K):
    rng = np.random.default_rng(100 + K)
    pi, A = _model(K, rng, zeros=True)
    lens = np.array([1, 9, 33])
    off = np.r_[0, np.cumsum(lens)].astype(np.int64)
    lb = rng.normal(size=(off[-1], K)) * 2
    with np.errstate(divide="ignore"):
        lpi, lA = np.log(pi), np.log(A)
    lp, st = _backend.resolve("hmm_viterbi", backend)(lpi, lA, lb, off)
    lp0, st0 = O.viterbi(lpi, lA, lb, off)
    np.testing.assert_allclose(lp, lp0, rtol=1e-13)
    np.testing.assert_array_equal(st, st0)


def test_viterbi_ties_highest_predecessor():
    # all-equal model: every path ties; last frame -> state 0, predecessors -> highest index
    K = 4
    lp, st = H.hmm_viterbi(np.full(K, 0.25), np.full((K, K), 0.25), np.zeros((5, K)))
    np.testing.assert_array_equal(st, [3, 3, 3, 3, 0])


@pytest.mark.parametrize("backend", backends_for("hmm_loglik_gaussian"))
@pytest.mark.parametrize("ct", ["spherical", "diag", "full", "tied"])
def test_gaussian_loglik(backend, ct):
    rng = np.random.default_rng(7)
    K, D, N = 5, 3, 37
    X = rng.normal(size=(N, D))
    mu = rng.normal(size=(K, D))
    cv = {"spherical": rng.uniform(0.5, 2, K), "diag": rng.uniform(0.5, 2, (K, D)),
          "full": np.array([np.cov(rng.normal(size=(D, 9))) + 0.2 * np.eye(D) for _ in range(K)]),
          "tied": np.cov(rng.normal(size=(D, 9))) + 0.2 * np.eye(D)}[ct]
    full = {"spherical": lambda: np.eye(D)[None] * cv[:, None, None],
            "diag": lambda: np.array([np.diag(c) for c in cv]),
            "full": lambda: cv, "tied": lambda: np.tile(cv, (K, 1, 1))}[ct]()
    want = np.empty((N, K))
    for k in range(K):
        d = X - mu[k]
        want[:, k] = -0.5 * (D * np.log(2 * np.pi) + np.linalg.slogdet(full[k])[1]
                             + np.einsum("nd,de,ne->n", d, np.linalg.inv(full[k]), d))
    m, p, c = H.gaussian_params(mu, cv, ct)
    got = _backend.resolve("hmm_loglik_gaussian", backend)(X, m, p, c)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_gmm_loglik_is_logsumexp_of_components():
    rng = np.random.default_rng(3)
    K, M, D = 3, 2, 4
    X = rng.normal(size=(11, D))
    w = rng.dirichlet(np.ones(M), size=K)
    mu = rng.normal(size=(K, M, D))
    cv = rng.uniform(0.5, 2, (K, M, D))
    got = H.hmm_gmm_loglik(X, w, mu, cv, "diag")
    want = np.empty((11, K))
    for k in range(K):
        comp = [np.log(w[k, m]) + H.hmm_gaussian_loglik(X, mu[k, m][None], cv[k, m][None], "diag")[:, 0]
                for m in range(M)]
        want[:, k] = np.logaddexp(*comp)
    np.testing.assert_allclose(got, want, rtol=1e-12)


# Russell & Norvig's umbrella world; symbol 0 = umbrella, state 0 = rain.
UMB_A = np.array([[0.7, 0.3], [0.3, 0.7]])
UMB_E = np.array([[0.9, 0.1], [0.2, 0.8]])
UMB_PI = np.array([0.5, 0.5])


@pytest.mark.parametrize("impl", ["scaling", "log"])
def test_umbrella_world_published_values(impl):
    lb = H.hmm_categorical_loglik(np.array([0, 0]), UMB_E)
    # filtered day 1 = posterior of the 1-frame prefix
    _, p1, _ = H.hmm_forward_backward(UMB_PI, UMB_A, lb[:1], implementation=impl)
    assert p1[0, 0] == pytest.approx(0.818, abs=5e-4)
    _, p2, _ = H.hmm_forward_backward(UMB_PI, UMB_A, lb, implementation=impl)
    assert p2[0, 0] == pytest.approx(0.8834, abs=5e-5)  # smoothed day 1
    assert p2[1, 0] == pytest.approx(0.883, abs=5e-4)   # filtered (= smoothed) day 2
    # five days u, u, not-u, u, u: smoothed P(rain) 0.8673 0.8204 0.3075 0.8204 0.8673
    lb5 = H.hmm_categorical_loglik(np.array([0, 0, 1, 0, 0]), UMB_E)
    _, p5, _ = H.hmm_forward_backward(UMB_PI, UMB_A, lb5, implementation=impl)
    np.testing.assert_allclose(p5[:, 0], [0.8673, 0.8204, 0.3075, 0.8204, 0.8673], atol=5e-5)
    _, path = H.hmm_viterbi(UMB_PI, UMB_A, lb5)
    np.testing.assert_array_equal(path, [0, 0, 1, 0, 0])


def test_long_sequence_no_underflow():
    # 100,000 steps, log-likelihood ~ -8e5 (probability ~ 10^-350000): scaled and log space
    # agree to 1e-12 relative; expected transition counts sum to T - 1.
    rng = np.random.default_rng(11)
    K, T = 4, 100_000
    pi, A = _model(K, rng)
    lb = rng.normal(size=(T, K)) * 3 - 10
    lps, ps, xs = H.hmm_forward_backward(pi, A, lb, implementation="scaling")
    lpl, pl, xl = H.hmm_forward_backward(pi, A, lb, implementation="log")
    assert np.isfinite(lps[0]) and lps[0] < -5e5
    assert lps[0] == pytest.approx(lpl[0], rel=1e-12)
    np.testing.assert_allclose(ps, pl, atol=1e-9)
    np.testing.assert_allclose(xs, xl, rtol=1e-8)
    assert xs.sum() == pytest.approx(T - 1, rel=1e-10)
    assert np.all(np.isfinite(ps)) and np.allclose(ps.sum(axis=1), 1)


def test_same_result_any_thread_count():
    C = _backend.native()
    if C is None:
        pytest.skip("C++ extension not built")
    rng = np.random.default_rng(5)
    K = 13
    pi, A = _model(K, rng)
    lens = rng.integers(1, 300, size=150)
    lb = rng.normal(size=(lens.sum(), K))
    n0 = pyaiml.get_num_threads()
    out = []
    try:
        for nt in (1, 2, 3):
            pyaiml.set_num_threads(nt)
            out.append(H.hmm_forward_backward(pi, A, lb, lens, implementation="scaling"))
    finally:
        pyaiml.set_num_threads(n0)
    for o in out[1:]:
        for a, b in zip(o, out[0]):
            assert np.array_equal(a, b)


def test_impossible_sequence_is_minus_inf():
    E = np.array([[1.0, 0.0], [1.0, 0.0]])  # symbol 1 can never be emitted
    lb = H.hmm_categorical_loglik(np.array([0, 1, 0, 0]), E)
    for impl in ("scaling", "log"):
        lp, post, xi = H.hmm_forward_backward(UMB_PI, UMB_A, lb, [2, 2], implementation=impl)
        assert lp[0] == -np.inf and np.isfinite(lp[1])
        assert np.isnan(post[:2]).all() and np.isfinite(post[2:]).all()
        assert np.isfinite(xi).all()


def test_float32_opt_in():
    rng = np.random.default_rng(2)
    pi, A = _model(3, rng)
    lb = rng.normal(size=(20, 3))
    lp, post, xi = H.hmm_forward_backward(pi, A, lb.astype(np.float32))
    assert lp.dtype == np.float32 and post.dtype == np.float32
    lp64, _, _ = H.hmm_forward_backward(pi, A, lb)
    assert lp[0] == pytest.approx(lp64[0], rel=1e-6)


def test_errors():
    pi, A = UMB_PI, UMB_A
    lb = np.zeros((4, 2))
    with pytest.raises(ValueError, match="lengths must sum"):
        H.hmm_forward_backward(pi, A, lb, [1, 2])
    with pytest.raises(ValueError, match=r"lengths\[1\] = 0"):
        H.hmm_forward_backward(pi, A, lb, [4, 0])
    with pytest.raises(ValueError, match="row 1 .*summing"):
        H.hmm_forward_backward(pi, np.array([[0.5, 0.5], [0.5, 0.4]]), lb)
    with pytest.raises(ValueError, match="startprob must sum to 1"):
        H.hmm_forward_backward(np.array([0.5, 0.6]), A, lb)
    with pytest.raises(ValueError, match="shape"):
        H.hmm_forward_backward(pi, A, np.zeros((4, 3)))
    bad = lb.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="frame 2, state 1"):
        H.hmm_forward_backward(pi, A, bad)
    with pytest.raises(ValueError, match="implementation"):
        H.hmm_forward_backward(pi, A, lb, implementation="fast")
    with pytest.raises(ValueError, match=r"symbols must be in \[0, 2\). Received 5 at sample 1"):
        H.hmm_categorical_loglik(np.array([0, 5]), UMB_E)
    with pytest.raises(ValueError, match="features"):
        H.hmm_gaussian_loglik(np.zeros((3, 2)), np.zeros((2, 3)), np.ones((2, 3)), "diag")
    with pytest.raises(ValueError, match="state 1"):
        H.hmm_gaussian_loglik(np.zeros((3, 2)), np.zeros((2, 2)), np.array([[1.0, 1.0], [1.0, 0.0]]), "diag")
    with pytest.raises(ValueError, match="state 0"):
        H.hmm_gaussian_loglik(np.zeros((3, 2)), np.zeros((1, 2)), np.array([[[1.0, 2.0], [2.0, 1.0]]]), "full")


def test_native_entry_points_reject_bad_offsets():
    C = _backend.native()
    if C is None:
        pytest.skip("C++ extension not built")
    lb = np.zeros((4, 2))
    with pytest.raises(ValueError, match="at least one frame"):
        C.hmm_forward_backward(UMB_PI, UMB_A, lb, np.array([0, 2, 2, 4]), False, True, True)
    with pytest.raises(ValueError, match="end at the number of frames"):
        C.hmm_forward_backward(UMB_PI, UMB_A, lb, np.array([0, 3]), False, True, True)
    with pytest.raises(ValueError, match="dtype"):
        C.hmm_viterbi(UMB_PI, UMB_A, lb.astype(np.float32), np.array([0, 4]))


@pytest.mark.parametrize("backend", backends_for("hmm_forward_backward"))
def test_extreme_emission_spread_and_tiny_transitions(backend):
    # per-step likelihood drops of 1e-150 and more: the scaled recursion must rescale in time
    rng = np.random.default_rng(8)
    K = 3
    A = np.full((K, K), 1e-150) + np.eye(K)
    A /= A.sum(1, keepdims=True)
    pi = np.array([1.0, 0.0, 0.0])
    lb = rng.normal(size=(300, K)) * 150
    off = np.array([0, 120, 300], dtype=np.int64)
    fn = _backend.resolve("hmm_forward_backward", backend)
    want = O.forward_backward(pi, A, lb, off)
    for log_space in (False, True):
        lp, post, xi = fn(pi, A, lb, off, log_space, True, True)[:3]
        np.testing.assert_allclose(lp, want[0], rtol=1e-12)
        np.testing.assert_allclose(post, want[1], rtol=1e-7, atol=1e-12)
        np.testing.assert_allclose(xi, want[2], rtol=1e-7, atol=1e-12)
