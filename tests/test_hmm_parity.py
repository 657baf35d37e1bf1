"""Parity with hmmlearn 0.3: score, posteriors, Viterbi paths, and the parameters after
exactly one EM iteration from the same starting parameters, for every emission and
covariance type and both implementations; 1e-8 relative (measured: <= 2e-11, the largest
on GMM 'full'/'tied' covariances in log space). Skipped when hmmlearn is absent."""
import numpy as np
import pytest

hh = pytest.importorskip("hmmlearn.hmm")

from pyaiml import hmm as ph  # noqa: E402

RTOL, ATOL = 1e-8, 1e-12
LENS = [5, 1, 30, 17]
K, D, NM, M = 4, 3, 3, 6


def _rand_cov(rng):
    return np.cov(rng.normal(size=(D, 20))) + 0.1 * np.eye(D)


def _setup(kind, ct, seed):
    rng = np.random.default_rng(seed)
    p = {"startprob_": rng.dirichlet(np.ones(K)), "transmat_": rng.dirichlet(np.ones(K), size=K)}
    N = sum(LENS)
    if kind == "categorical":
        p["emissionprob_"] = rng.dirichlet(np.ones(M), size=K)
        X = rng.integers(0, M, size=(N, 1))
        return p, X, lambda lib, impl: lib.CategoricalHMM(K, init_params="", n_iter=1, implementation=impl)
    X = rng.normal(size=(N, D))
    if kind == "gaussian":
        p["means_"] = rng.normal(size=(K, D))
        p["covars_"] = {"spherical": lambda: rng.uniform(0.5, 2, K), "diag": lambda: rng.uniform(0.5, 2, (K, D)),
                        "full": lambda: np.array([_rand_cov(rng) for _ in range(K)]),
                        "tied": lambda: _rand_cov(rng)}[ct]()
        return p, X, lambda lib, impl: lib.GaussianHMM(K, ct, init_params="", n_iter=1, implementation=impl)
    p["weights_"] = rng.dirichlet(np.ones(NM), size=K)
    p["means_"] = rng.normal(size=(K, NM, D))
    p["covars_"] = {"spherical": lambda: rng.uniform(0.5, 2, (K, NM)), "diag": lambda: rng.uniform(0.5, 2, (K, NM, D)),
                    "full": lambda: np.array([[_rand_cov(rng) for _ in range(NM)] for _ in range(K)]),
                    "tied": lambda: np.array([_rand_cov(rng) for _ in range(K)])}[ct]()
    return p, X, lambda lib, impl: lib.GMMHMM(K, NM, covariance_type=ct, init_params="", n_iter=1,
                                              implementation=impl)


CASES = [("categorical", None)] + [(k, ct) for k in ("gaussian", "gmm")
                                   for ct in ("spherical", "diag", "full", "tied")]


@pytest.mark.parametrize("impl", ["log", "scaling"])
@pytest.mark.parametrize("kind,ct", CASES)
def test_parity_with_hmmlearn(kind, ct, impl):
    params, X, make = _setup(kind, ct, seed=hash((kind, ct)) % 1000)
    h, p = make(hh, impl), make(ph, impl)
    for m in (h, p):
        for k, v in params.items():
            setattr(m, k, v.copy())
    np.testing.assert_allclose(p.score(X, LENS), h.score(X, LENS), rtol=RTOL)
    lp_p, post_p = p.score_samples(X, LENS)
    lp_h, post_h = h.score_samples(X, LENS)
    np.testing.assert_allclose(lp_p, lp_h, rtol=RTOL)
    np.testing.assert_allclose(post_p, post_h, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(p.predict(X, LENS), h.predict(X, LENS))
    np.testing.assert_allclose(p.decode(X, LENS)[0], h.decode(X, LENS)[0], rtol=RTOL)
    h.fit(X, LENS)
    p.fit(X, LENS)
    names = ["startprob_", "transmat_", "emissionprob_", "means_", "weights_"]
    for n in names:
        if hasattr(h, n):
            np.testing.assert_allclose(getattr(p, n), getattr(h, n), rtol=RTOL, atol=ATOL, err_msg=n)
    if kind == "categorical":
        pass
    elif kind == "gaussian" and ct == "spherical":
        # hmmlearn keeps (K, D) copies internally after an M-step; compare the variances
        np.testing.assert_allclose(p._covars_, h._covars_[:, 0], rtol=RTOL)
    else:
        np.testing.assert_allclose(p.covars_, h.covars_, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(p.monitor_.history[-1], h.monitor_.history[-1], rtol=RTOL)


def test_viterbi_paths_equal_on_long_batch():
    # 100 x 1000 random categorical frames: near-ties abound; paths must be bit-identical
    rng = np.random.default_rng(0)
    k, m = 8, 32
    params = {"startprob_": rng.dirichlet(np.ones(k)), "transmat_": rng.dirichlet(np.ones(k), size=k),
              "emissionprob_": rng.dirichlet(np.ones(m), size=k)}
    X = rng.integers(0, m, size=(20_000, 1))
    h, p = hh.CategoricalHMM(k), ph.CategoricalHMM(k)
    for mod in (h, p):
        for n, v in params.items():
            setattr(mod, n, v.copy())
    L = [1000] * 20
    np.testing.assert_array_equal(p.predict(X, L), h.predict(X, L))


@pytest.mark.parametrize("impl", ["log", "scaling"])
def test_100k_step_sequence_matches_hmmlearn(impl):
    rng = np.random.default_rng(1)
    h, p = hh.GaussianHMM(3, "diag", implementation=impl), ph.GaussianHMM(3, "diag", implementation=impl)
    params = {"startprob_": rng.dirichlet(np.ones(3)), "transmat_": rng.dirichlet(np.ones(3) * 5, size=3),
              "means_": rng.normal(size=(3, 2)) * 2, "covars_": rng.uniform(0.5, 2, (3, 2))}
    for mod in (h, p):
        for n, v in params.items():
            setattr(mod, n, v.copy())
    X = np.random.default_rng(2).normal(size=(100_000, 2)) * 2
    ours, theirs = p.score_samples(X), h.score_samples(X)
    assert np.isfinite(ours[0]) and ours[0] < -1e5
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-8, atol=1e-10)


def test_sample_matches_hmmlearn_for_same_seed():
    rng = np.random.default_rng(4)
    params = {"startprob_": rng.dirichlet(np.ones(3)), "transmat_": rng.dirichlet(np.ones(3), size=3),
              "means_": rng.normal(size=(3, 2)), "covars_": rng.uniform(0.5, 2, (3, 2))}
    h, p = hh.GaussianHMM(3), ph.GaussianHMM(3)
    for mod in (h, p):
        for n, v in params.items():
            setattr(mod, n, v.copy())
    Xh, Zh = h.sample(50, random_state=7)
    Xp, Zp = p.sample(50, random_state=7)
    np.testing.assert_array_equal(Zp, Zh)
    np.testing.assert_allclose(Xp, Xh, rtol=1e-12)
