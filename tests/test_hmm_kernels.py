"""HMM kernel paths added for speed, against independent oracles (tests/hmm_oracle.py):

- ``hmm_forward_backward_stats``: posterior sums and posterior-weighted sums of the frames
  and squared frames (Gaussian M-step statistics), every backend, awkward K and lengths,
  sequences the model cannot emit contributing nothing;
- sequences stepped in lockstep at small K (packs of unequal lengths, where the lockstep
  part ends and each sequence finishes alone), scaled and log space;
- Viterbi with symbol tables and unequal lengths, ties and structurally impossible moves;
- the expanded (GEMM-form) diagonal Gaussian log-likelihood on features far from zero;
- thread-count independence of every output.

Tolerances: posteriors and their sums 1e-9 relative (scaled space, as tests/test_hmm_ops.py);
frame sums compared with 1e-9 relative of their magnitude; Viterbi paths exactly.
Tests run for whichever ISA PYAIML_ISA selects (run with baseline / avx2 / avx512).
"""
import numpy as np
import pytest

import pyaiml
from pyaiml import _backend
from pyaiml.ops import hmm as H

from helpers import backends_for
import hmm_oracle as O

LENS = [1, 3, 7, 33, 97, 2]


def _model(K, rng, zeros=False):
    pi = rng.dirichlet(np.ones(K))
    A = rng.dirichlet(np.ones(K), size=K)
    if zeros and K > 2:
        A[:, 1] = 0.0
        A /= A.sum(axis=1, keepdims=True)
    return pi, A


def _stats_oracle(pi, A, lb, off, X):
    lp, post, _ = O.forward_backward(pi, A, lb, off)
    ok = np.repeat(np.isfinite(lp), np.diff(off))
    g = np.where(ok[:, None], post, 0.0)
    return lp, post, g.sum(0), g.T @ X, g.T @ (X * X)


@pytest.mark.parametrize("backend", backends_for("hmm_forward_backward_stats"))
@pytest.mark.parametrize("K", [1, 3, 7, 8, 33])
@pytest.mark.parametrize("log_space", [False, True])
def test_forward_backward_stats(backend, K, log_space):
    rng = np.random.default_rng(300 + K)
    pi, A = _model(K, rng, zeros=True)
    off = np.r_[0, np.cumsum(LENS)].astype(np.int64)
    N, D = off[-1], 5
    lb = rng.normal(size=(N, K)) * 3 - 20
    lb[off[4] + 10] = -np.inf  # sequence 4 cannot be emitted: no share of any sum
    X = rng.normal(size=(N, D)) * 2 + 1
    fn = _backend.resolve("hmm_forward_backward_stats", backend)
    for want_post in (False, True):
        lp, post, xi, cnt, st, ps, s1, s2 = fn(pi, A, lb, off, log_space, want_post, True, None, False, True, X)
        lp0, post0, ps0, s10, s20 = _stats_oracle(pi, A, lb, off, X)
        assert lp[4] == -np.inf
        np.testing.assert_allclose(lp, lp0, rtol=1e-12)
        assert (post is not None) == want_post
        if want_post:
            ok = np.repeat(np.isfinite(lp0), LENS)
            np.testing.assert_allclose(post[ok], post0[ok], rtol=1e-9, atol=1e-11)
        assert ps.shape == (K,) and s1.shape == (K, D) and s2.shape == (K, D)
        np.testing.assert_allclose(ps, ps0, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(s1, s10, rtol=1e-9, atol=1e-9 * np.abs(s10).max())
        np.testing.assert_allclose(s2, s20, rtol=1e-9, atol=1e-9 * np.abs(s20).max())
        assert ps.sum() == pytest.approx(N - LENS[4], rel=1e-12)


@pytest.mark.parametrize("K", [1, 2, 4, 8, 9, 16])
@pytest.mark.parametrize("lens", [[1000, 999, 3, 1], [1, 1, 1, 1, 1], [50] * 9, [700]])
def test_lockstep_packs_scaled_and_log(K, lens):
    # packs of up to 4 sequences share the steps while all are running; then each finishes
    rng = np.random.default_rng(K * 100 + len(lens))
    pi, A = _model(K, rng)
    off = np.r_[0, np.cumsum(lens)].astype(np.int64)
    lb = rng.normal(size=(off[-1], K)) * 4 - 5
    want = O.forward_backward(pi, A, lb, off)
    for impl in ("scaling", "log"):
        lp, post, xi = H.hmm_forward_backward(pi, A, lb, lens, implementation=impl)
        np.testing.assert_allclose(lp, want[0], rtol=1e-12)
        np.testing.assert_allclose(post, want[1], rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(xi, want[2], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("backend", backends_for("hmm_forward_backward"))
@pytest.mark.parametrize("K", [1, 3, 8, 33])
def test_symbol_counts_in_packs(backend, K):
    rng = np.random.default_rng(40 + K)
    M = 7
    pi, A = _model(K, rng)
    E = rng.dirichlet(np.ones(M), size=K)
    off = np.r_[0, np.cumsum(LENS)].astype(np.int64)
    sym = rng.integers(0, M, size=off[-1]).astype(np.int64)
    table = np.ascontiguousarray(np.log(E.T))
    fn = _backend.resolve("hmm_forward_backward", backend)
    for log_space in (False, True):
        lp, post, xi, cnt, st = fn(pi, A, table, off, log_space, True, True, sym, True, True)
        lp0, post0, xi0 = O.forward_backward(pi, A, table[sym], off)
        np.testing.assert_allclose(lp, lp0, rtol=1e-12)
        np.testing.assert_allclose(post, post0, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(xi, xi0, rtol=1e-9, atol=1e-10)
        want = np.zeros((M, K))
        np.add.at(want, sym, post0)
        np.testing.assert_allclose(cnt, want, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(st, post0[off[:-1]].sum(0), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", backends_for("hmm_viterbi"))
@pytest.mark.parametrize("K", [1, 3, 7, 8, 9, 33])
@pytest.mark.parametrize("symbols", [False, True])
def test_viterbi_packs_and_symbols(backend, K, symbols):
    rng = np.random.default_rng(500 + K)
    pi, A = _model(K, rng, zeros=True)
    off = np.r_[0, np.cumsum(LENS)].astype(np.int64)
    with np.errstate(divide="ignore"):
        lpi, lA = np.log(pi), np.log(A)
    fn = _backend.resolve("hmm_viterbi", backend)
    if symbols:
        M = 6
        table = np.ascontiguousarray(rng.normal(size=(M, K)) * 2)
        sym = rng.integers(0, M, size=off[-1]).astype(np.int64)
        lp, st = fn(lpi, lA, table, off, sym)
        lp0, st0 = O.viterbi(lpi, lA, table[sym], off)
    else:
        lb = rng.normal(size=(off[-1], K)) * 2
        lp, st = fn(lpi, lA, lb, off)
        lp0, st0 = O.viterbi(lpi, lA, lb, off)
    np.testing.assert_allclose(lp, lp0, rtol=1e-13)
    np.testing.assert_array_equal(st, st0)


@pytest.mark.parametrize("K", [2, 4, 8, 13])
def test_viterbi_ties_and_impossible_moves(K):
    # all-equal model: every path ties (last frame -> state 0, predecessors -> highest index);
    # a state no move can reach still gets -inf candidates everywhere, and those tie too
    T = 9
    _, st = H.hmm_viterbi(np.full(K, 1.0 / K), np.full((K, K), 1.0 / K), np.zeros((T, K)))
    np.testing.assert_array_equal(st, [K - 1] * (T - 1) + [0])
    lb = np.zeros((T, K))
    lb[:, 0] = -np.inf  # state 0 can never emit: frames' candidates through it are -inf
    lb[-1] = 0.0
    with np.errstate(divide="ignore"):
        lpi = np.log(np.full(K, 1.0 / K))
        lA = np.log(np.full((K, K), 1.0 / K))
    lp, st = H.hmm_viterbi(np.full(K, 1.0 / K), np.full((K, K), 1.0 / K), lb)
    lp0, st0 = O.viterbi(lpi, lA, lb, np.array([0, T]))
    np.testing.assert_array_equal(st, st0)
    assert lp[0] == lp0[0]


@pytest.mark.parametrize("backend", backends_for("hmm_loglik_gaussian"))
@pytest.mark.parametrize("K", [1, 3, 7, 8, 9, 33])
def test_diag_loglik_far_from_zero(backend, K):
    # features around 1000 with unit variances: the expanded form centres them first, so the
    # result keeps the accuracy of the direct (x - mu)^2 form
    rng = np.random.default_rng(K)
    D, N = 13, 97
    mu = 1000 + rng.normal(size=(K, D))
    cv = rng.uniform(0.5, 2, (K, D))
    X = 1000 + rng.normal(size=(N, D)) * 1.5
    m, p, c = H.gaussian_params(mu, cv, "diag")
    got = _backend.resolve("hmm_loglik_gaussian", backend)(X, m, p, c)
    want = c - 0.5 * (((X[:, None, :] - mu[None]) ** 2) / cv[None]).sum(axis=2)  # direct form
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-11)


def test_kernel_outputs_do_not_depend_on_thread_count():
    C = _backend.native()
    if C is None:
        pytest.skip("C++ extension not built")
    rng = np.random.default_rng(9)
    out = {}
    n0 = pyaiml.get_num_threads()
    try:
        for K in (3, 8, 20):
            pi, A = _model(K, rng)
            lens = rng.integers(1, 200, size=77)
            N = int(lens.sum())
            off = np.r_[0, np.cumsum(lens)].astype(np.int64)
            lb = rng.normal(size=(N, K))
            X = rng.normal(size=(N, 4))
            table = np.ascontiguousarray(rng.normal(size=(5, K)))
            sym = rng.integers(0, 5, N).astype(np.int64)
            res = []
            for nt in (1, 2, 3):
                pyaiml.set_num_threads(nt)
                r = []
                for log_space in (False, True):
                    r += list(C.hmm_forward_backward(pi, A, lb, off, log_space, True, True, None, False, True, X))
                    r += list(C.hmm_forward_backward(pi, A, table, off, log_space, True, True, sym, True, True))
                r += list(C.hmm_viterbi(np.log(pi), np.log(A), lb, off))
                r += list(C.hmm_viterbi(np.log(pi), np.log(A), table, off, sym))
                mu = X[:K].copy() if N >= K else np.ones((K, 4))
                r.append(C.hmm_loglik_gaussian(X, mu, np.ones((K, 4)), np.zeros(K)))
                res.append([x for x in r if x is not None])
            out[K] = res
    finally:
        pyaiml.set_num_threads(n0)
    for K, res in out.items():
        for other in res[1:]:
            for a, b in zip(res[0], other):
                assert np.array_equal(a, b), K


def test_stats_argument_errors():
    C = _backend.native()
    if C is None:
        pytest.skip("C++ extension not built")
    pi, A = np.array([0.5, 0.5]), np.full((2, 2), 0.5)
    lb = np.zeros((4, 2))
    off = np.array([0, 4])
    with pytest.raises(ValueError, match="obs must have one row per frame"):
        C.hmm_forward_backward(pi, A, lb, off, False, False, False, None, False, False, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="obs"):
        C.hmm_forward_backward(pi, A, lb, off, False, False, False, None, False, False, np.zeros(4))
