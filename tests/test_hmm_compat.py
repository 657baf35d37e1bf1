"""hmmlearn drop-in behaviour of pyaiml.hmm beyond score/fit parity (tests/test_hmm_parity.py).

Covers: MultinomialHMM and PoissonHMM (log-likelihoods against scipy.stats, one EM step
against hmmlearn from the same parameters, save/load, errors); the same random_state giving
hmmlearn's initial parameters; aic/bic/get_stationary_distribution against hmmlearn; the
hmmlearn log records (init_params overwriting, degenerate fits); models defined only by
``_compute_log_likelihood`` / ``_compute_likelihood``; covariance setter shapes; fit checking X
against kept parameters; full covariances on a small scale (no floor, EM stays monotone) and
degenerate ones (min_covar * I added); pyaiml.hmm.lattice against hmmlearn._hmmc and the
batched kernel; pyaiml.hmm.utils; a user's ConvergenceMonitor subclass kept through fit.
Tolerances: 1e-9 relative where both sides compute the same formula in float64 (measured
<= 1e-12); 1e-6 where one side goes through scipy's special functions.
hmmlearn and scipy (the test extra) are needed for the comparisons, which skip without them.
"""
import logging

import numpy as np
import pytest

from pyaiml import hmm as ph
from pyaiml.hmm import lattice, utils

RTOL = 1e-9


def _hh():
    return pytest.importorskip("hmmlearn.hmm")


def _multinomial(lib, **kw):
    m = lib.MultinomialHMM(n_components=2, n_trials=5, **kw)
    m.startprob_ = np.array([0.6, 0.4])
    m.transmat_ = np.array([[0.8, 0.2], [0.3, 0.7]])
    m.emissionprob_ = np.array([[0.5, 0.3, 0.1, 0.1], [0.1, 0.1, 0.4, 0.4]])
    return m


def _poisson(lib, **kw):
    m = lib.PoissonHMM(2, **kw)
    m.startprob_ = np.array([0.6, 0.4])
    m.transmat_ = np.array([[0.7, 0.3], [0.4, 0.6]])
    m.lambdas_ = np.array([[3.1, 1.4, 4.5], [1.6, 5.3, 0.1]])
    return m


# ----- count models ---------------------------------------------------------------------
def test_count_loglik_matches_scipy():
    st = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    m = _multinomial(ph)
    X = rng.multinomial(5, [0.2, 0.3, 0.1, 0.4], size=20)
    want = np.stack([st.multinomial.logpmf(X, 5, m.emissionprob_[k]) for k in range(2)], axis=1)
    np.testing.assert_allclose(m._compute_log_likelihood(X.astype(float)), want, rtol=1e-6)
    m.emissionprob_ = np.array([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])  # 0 log 0 = 0
    got = m._compute_log_likelihood(X.astype(float))
    want = np.stack([st.multinomial.logpmf(X, 5, m.emissionprob_[k]) for k in range(2)], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert np.isneginf(got[(X[:, 2:] > 0).any(axis=1), 0]).all()
    p = _poisson(ph)
    Y = rng.poisson(2.0, size=(30, 3))
    want = np.stack([st.poisson.logpmf(Y, p.lambdas_[k]).sum(axis=1) for k in range(2)], axis=1)
    np.testing.assert_allclose(p._compute_log_likelihood(Y.astype(float)), want, rtol=1e-6)


@pytest.mark.parametrize("impl", ["log", "scaling"])
@pytest.mark.parametrize("make,params", [(_multinomial, "ste"), (_poisson, "stl")])
def test_count_models_one_em_step_match_hmmlearn(make, params, impl):
    hh = _hh()
    rng = np.random.default_rng(1)
    lengths = [7, 1, 12]
    if make is _multinomial:
        X = rng.multinomial(5, [0.4, 0.3, 0.2, 0.1], size=sum(lengths))
    else:
        X = rng.poisson([2.0, 3.0, 0.5], size=(sum(lengths), 3))
    h, p = (make(lib, init_params="", params=params, n_iter=1, implementation=impl) for lib in (hh, ph))
    np.testing.assert_allclose(p.score(X, lengths), h.score(X, lengths), rtol=RTOL)
    np.testing.assert_array_equal(p.predict(X, lengths), h.predict(X, lengths))
    h.fit(X, lengths)
    p.fit(X, lengths)
    for name in ("startprob_", "transmat_", "emissionprob_" if make is _multinomial else "lambdas_"):
        np.testing.assert_allclose(getattr(p, name), getattr(h, name), rtol=1e-8, atol=1e-12, err_msg=name)


def test_multinomial_errors_and_sampling():
    m = _multinomial(ph)
    X, states = m.sample(50, random_state=0)
    assert X.shape == (50, 4) and (X.sum(axis=1) == 5).all() and states.shape == (50,)
    with pytest.raises(ValueError, match="must add up to n_trials. Received a total of 4 at sample 1"):
        m._check_and_set_n_features(np.array([[1, 1, 1, 2], [1, 1, 1, 1]]))
    with pytest.raises(ValueError, match="whole-number counts. Received 2.5"):
        m.score(np.array([[2.5, 2.5, 0, 0]]))
    with pytest.raises(ValueError, match="counts must be non-negative. Received -1"):
        m.score(np.array([[6, -1, 0, 0]]))
    with pytest.raises(ValueError, match="3 features but the model has n_features = 4"):
        m.score(np.array([[1, 2, 2]]))
    m.n_trials = [5, 6]
    with pytest.raises(ValueError, match="one n_trials for every sample"):
        m.sample(3)
    m.n_trials = None
    with pytest.raises(ValueError, match="n_trials must be set"):
        m.sample(3)
    fresh = ph.MultinomialHMM(2, random_state=0)  # n_trials=None: the row totals of the data
    fresh.fit(np.array([[1, 2, 0], [0, 0, 3], [2, 2, 2]]))
    np.testing.assert_array_equal(fresh.n_trials, [3, 3, 6])


def test_poisson_errors_and_constant_data():
    p = _poisson(ph)
    with pytest.raises(ValueError, match="counts must be non-negative"):
        p.score(np.array([[1, -2, 0]]))
    with pytest.raises(ValueError, match="lambdas_ must be finite and non-negative"):
        p.lambdas_ = np.array([[1.0, -1.0, 1.0], [1.0, 1.0, 1.0]])
        p._check()
    q = ph.PoissonHMM(2, n_iter=3, random_state=0).fit(np.full((20, 2), 3))  # zero variance: rates = the value
    np.testing.assert_allclose(q.lambdas_, 3.0)


@pytest.mark.parametrize("make", [_multinomial, _poisson])
def test_count_models_save_load(make, tmp_path):
    m = make(ph)
    X, _ = m.sample(40, random_state=0)
    m.fit(X)
    path = m.save(tmp_path / "m.npz")
    r = ph.load(path)
    assert type(r) is type(m)
    np.testing.assert_allclose(r.score(X), m.score(X), rtol=1e-12)


# ----- initialisation, criteria, messages -----------------------------------------------
@pytest.mark.parametrize("kind", ["categorical", "multinomial", "poisson"])
def test_same_random_state_same_initial_parameters_as_hmmlearn(kind):
    hh = _hh()
    rng = np.random.default_rng(2)
    if kind == "categorical":
        X = rng.integers(0, 4, size=(60, 1))
        make, emis = (lambda lib: lib.CategoricalHMM(3, random_state=7, n_iter=0)), "emissionprob_"
    elif kind == "multinomial":
        X = rng.multinomial(4, [0.25] * 4, size=60)
        make, emis = (lambda lib: lib.MultinomialHMM(3, n_trials=4, random_state=7, n_iter=0)), "emissionprob_"
    else:
        X = rng.poisson(3.0, size=(60, 2))
        make, emis = (lambda lib: lib.PoissonHMM(3, random_state=7, n_iter=0)), "lambdas_"
    h, p = make(hh), make(ph)
    h._init(X, [60])
    p._init(X, [60])
    for name in ("startprob_", "transmat_", emis):
        np.testing.assert_allclose(getattr(p, name), getattr(h, name), rtol=1e-12, err_msg=name)


def test_aic_bic_and_stationary_distribution_match_hmmlearn():
    hh = _hh()
    rng = np.random.default_rng(3)
    X = rng.normal(size=(80, 2))
    models = []
    for lib in (hh, ph):
        m = lib.GaussianHMM(3, "full", init_params="")
        m.startprob_ = np.array([0.2, 0.3, 0.5])
        m.transmat_ = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]])
        m.means_ = rng.normal(size=(3, 2)) if lib is hh else models[0].means_
        m.covars_ = np.tile(np.eye(2), (3, 1, 1))
        models.append(m)
    h, p = models
    h._check()  # hmmlearn's aic reads n_features, which its _check sets
    np.testing.assert_allclose(p.aic(X), h.aic(X), rtol=RTOL)
    np.testing.assert_allclose(p.bic(X, [30, 50]), h.bic(X, [30, 50]), rtol=RTOL)
    s = p.get_stationary_distribution()
    assert s.dtype == np.float64
    np.testing.assert_allclose(s, h.get_stationary_distribution(), rtol=1e-10)
    np.testing.assert_allclose(s @ p.transmat_, s, rtol=1e-10)
    g = ph.GMMHMM(3, n_mix=2)
    g.n_features = 2
    # free weights: one simplex per state (hmmlearn 0.3.3 counts n_mix - 1 in all)
    assert g._get_n_fit_scalars_per_param()["w"] == 3


def test_log_records_as_hmmlearn(caplog):
    X = np.random.default_rng(4).normal(size=(100, 2))
    m = ph.GaussianHMM(2, random_state=0, n_iter=2)
    m.startprob_ = np.array([0.5, 0.5])
    with caplog.at_level(logging.WARNING):
        m.fit(X)
    msgs = [r.getMessage() for r in caplog.records]
    assert any("'startprob_' attribute is set, it will be overwritten" in s for s in msgs), msgs
    caplog.clear()
    m = ph.GaussianHMM(3, "full", init_params="")
    m.startprob_, m.transmat_ = np.full(3, 1 / 3), np.full((3, 3), 1 / 3)
    m.means_, m.covars_ = np.zeros((3, 2)), np.tile(np.eye(2), (3, 1, 1))
    with caplog.at_level(logging.WARNING):
        m._init(X[:4], [4])
    want = ("Fitting a model with 23 free scalar parameters with only 8 data points will result in a degenerate "
            "solution.")
    assert [r.getMessage() for r in caplog.records] == [want]
    assert caplog.records[0].name == "pyaiml.hmm.base"


# ----- the base class as an extension point ---------------------------------------------
class _LogStub(ph.BaseHMM):
    def _compute_log_likelihood(self, X):
        return X


class _ProbStub(ph.BaseHMM):
    def _compute_likelihood(self, X):
        return np.exp(X)


@pytest.mark.parametrize("cls", [_LogStub, _ProbStub])
def test_subclass_with_only_a_likelihood(cls):
    rng = np.random.default_rng(5)
    lb = np.log(rng.uniform(0.05, 1, size=(12, 3)))
    m = cls(3)
    m.startprob_ = np.array([0.5, 0.25, 0.25])
    m.transmat_ = np.array([[0.6, 0.2, 0.2], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    lp, post = m.score_samples(lb, [5, 7])
    lp_k, post_k, _ = ph.base._ops.hmm_forward_backward(m.startprob_, m.transmat_, lb, [5, 7],
                                                        implementation="log", xi=False)
    np.testing.assert_allclose(lp, lp_k.sum(), rtol=1e-12)
    np.testing.assert_allclose(post, post_k, rtol=1e-12)
    _, path = m.decode(lb, [5, 7])
    np.testing.assert_array_equal(path, ph.base._ops.hmm_viterbi(m.startprob_, m.transmat_, lb, [5, 7])[1])
    X, Z = m.sample(6, random_state=0)
    assert X.shape == (6, 0) and Z.shape == (6,)
    with pytest.raises(NotImplementedError, match="_compute_log_likelihood or _compute_likelihood"):
        ph.BaseHMM(2)._compute_log_likelihood(lb)


def test_subclass_bad_loglik_is_a_clear_error():
    m = _LogStub(2)
    m.startprob_, m.transmat_ = np.array([0.5, 0.5]), np.full((2, 2), 0.5)
    with pytest.raises(ValueError, match=r"must return shape \(4, 2\). Received \(4, 3\)"):
        m.score(np.zeros((4, 3)))
    bad = np.zeros((4, 2))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        m.score(bad)


def test_check_order_and_messages():
    m = _LogStub(3)
    m.startprob_ = np.array([0.5, 0.5, 0.5])  # transmat_ not set: startprob_ is reported first
    with pytest.raises(ValueError, match="startprob must sum to 1. Received a sum of 1.5"):
        m._check()
    m.startprob_ = np.full(3, 1 / 3)
    m.transmat_ = np.array([[1.0, 0, 0], [0.5, 0.2, 0.2], [0, 0, 1]])
    with pytest.raises(ValueError, match=r"every row of transmat must sum to 1. Received row 1 \(state 1\)"):
        m._check()
    g = ph.GMMHMM(2)
    g.covariance_type = "banana"
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        g._check()


def test_custom_monitor_is_kept_through_fit():
    class Counting(ph.ConvergenceMonitor):
        reports = 0

        def report(self, log_prob):
            type(self).reports += 1
            super().report(log_prob)

    m = ph.GaussianHMM(2, n_iter=4, tol=-np.inf, random_state=0)
    m.monitor_ = Counting(m.tol, m.n_iter, False)
    m.fit(np.random.default_rng(6).normal(size=(40, 2)))
    assert type(m.monitor_) is Counting and Counting.reports == 4 and m.monitor_.iter == 4
    m.n_iter = 2  # a plain monitor follows the model's settings
    m.monitor_ = ph.ConvergenceMonitor(1e-2, 10, False)
    m.fit(np.random.default_rng(6).normal(size=(40, 2)))
    assert m.monitor_.n_iter == 2 and m.monitor_.iter <= 2


# ----- Gaussian details -----------------------------------------------------------------
def test_covariance_setter_shapes():
    m = ph.GaussianHMM(2, "spherical")
    m.covars_ = np.array([[[[4.0]]], [[[3.0]]]])
    np.testing.assert_array_equal(m._covars_, [4.0, 3.0])
    m.covars_ = np.array([[2.0, 2.0, 2.0], [5.0, 5.0, 5.0]])  # hmmlearn's stored (K, D) form
    np.testing.assert_array_equal(m._covars_, [2.0, 5.0])
    with pytest.raises(ValueError, match=r"'spherical' covars must have shape \(2,\)"):
        m.covars_ = np.array([[2.0, 3.0], [5.0, 5.0]])
    with pytest.raises(ValueError, match="'spherical' covars must be positive"):
        m.covars_ = [[1.0], [0.0]]


def test_fit_checks_X_against_kept_parameters():
    m = ph.GaussianHMM(2, init_params="")
    m.startprob_, m.transmat_ = np.array([0.5, 0.5]), np.full((2, 2), 0.5)
    m.means_, m.covars_ = np.zeros((2, 2)), np.ones((2, 2))
    with pytest.raises(ValueError, match="3 features but the model has 2"):
        m.fit(np.zeros((10, 3)))
    c = ph.CategoricalHMM(2, init_params="st")
    c.emissionprob_ = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="symbols must be < n_features = 3. Received 5"):
        c.fit(np.array([[0], [5], [1]]))


@pytest.mark.parametrize("ct", ["full", "tied"])
def test_small_scale_full_covariances_follow_hmmlearn(ct):
    # variances ~1e-6, far below min_covar = 1e-3: the M-step result is kept as it is (hmmlearn)
    hh = _hh()
    rng = np.random.default_rng(7)
    X = 1e-3 * rng.normal(size=(60, 2))
    ms = []
    for lib in (hh, ph):
        m = lib.GaussianHMM(2, ct, init_params="", n_iter=1, covars_prior=0.0)
        m.startprob_, m.transmat_ = np.array([0.5, 0.5]), np.array([[0.9, 0.1], [0.2, 0.8]])
        m.means_ = np.array([[1e-3, 0.0], [-1e-3, 0.0]])
        m.covars_ = 1e-6 * (np.tile(np.eye(2), (2, 1, 1)) if ct == "full" else np.eye(2))
        ms.append(m.fit(X))
    np.testing.assert_allclose(ms[1].covars_, ms[0].covars_, rtol=1e-8)
    g = ph.GMMHMM(2, n_mix=2, covariance_type=ct, n_iter=20, tol=-np.inf, random_state=0).fit(X, [30, 30])
    hist = np.array(g.monitor_.history)
    assert np.all(np.diff(hist) > -1e-8 * np.abs(hist[1:]))


def test_degenerate_full_covariance_gets_min_covar():
    # state 0's points lie on a line: its M-step covariance is singular; min_covar * I is added
    rng = np.random.default_rng(8)
    X = np.r_[np.c_[np.linspace(-1, 1, 20), np.zeros(20)], rng.normal(size=(20, 2)) + 1000]
    m = ph.GaussianHMM(2, "full", covars_prior=0.0, covars_weight=0, n_iter=3, init_params="", min_covar=1e-3)
    m.startprob_, m.transmat_ = np.array([0.5, 0.5]), np.array([[0.9, 0.1], [0.1, 0.9]])
    m.means_, m.covars_ = np.array([[0.0, 0.0], [1000.0, 1000.0]]), np.tile(np.eye(2), (2, 1, 1))
    m.fit(X)
    c0 = m.covars_[0]
    assert np.linalg.eigvalsh(c0)[0] == pytest.approx(1e-3, rel=1e-6)
    assert c0[0, 0] == pytest.approx(np.var(np.linspace(-1, 1, 20)) + 1e-3, rel=1e-6)
    assert np.isfinite(m.score(X))


# ----- lattices and utils ---------------------------------------------------------------
def test_lattices_match_hmmlearn_and_the_kernel():
    rng = np.random.default_rng(9)
    K, T = 4, 9
    pi, A = rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K), size=K)
    A[0, 1] = 0.0
    A[0] /= A[0].sum()
    lf = np.log(rng.uniform(0.01, 1, size=(T, K)))
    lp, fwd = lattice.forward_log(pi, A, lf)
    bwd = lattice.backward_log(pi, A, lf)
    lp_k, post_k, xi_k = ph.base._ops.hmm_forward_backward(pi, A, lf, implementation="log")
    np.testing.assert_allclose(lp, lp_k[0], rtol=1e-12)
    np.testing.assert_allclose(np.exp(fwd + bwd - lp), post_k, rtol=1e-10)
    np.testing.assert_allclose(np.exp(lattice.compute_log_xi_sum(fwd, A, bwd, lf)), xi_k, rtol=1e-10, atol=1e-300)
    lps, fs, sc = lattice.forward_scaling(pi, A, np.exp(lf))
    bs = lattice.backward_scaling(pi, A, np.exp(lf), sc)
    np.testing.assert_allclose(lps, lp, rtol=1e-12)
    np.testing.assert_allclose(lattice.compute_scaling_xi_sum(fs, A, bs, np.exp(lf)), xi_k, rtol=1e-10)
    vlp, path = lattice.viterbi(pi, A, lf)
    hc = pytest.importorskip("hmmlearn._hmmc")
    np.testing.assert_allclose(fwd, hc.forward_log(pi, A, lf)[1], rtol=1e-12)
    np.testing.assert_allclose(bwd, hc.backward_log(pi, A, lf), rtol=1e-12)
    np.testing.assert_allclose(fs, hc.forward_scaling(pi, A, np.exp(lf))[1], rtol=1e-12)
    np.testing.assert_allclose(bs, hc.backward_scaling(pi, A, np.exp(lf), sc), rtol=1e-12)
    hv = hc.viterbi(pi, A, lf)
    assert vlp == pytest.approx(hv[0], rel=1e-12)
    np.testing.assert_array_equal(path, hv[1])
    with pytest.raises(ValueError, match="underflowed"):
        lattice.forward_scaling(pi, A, np.zeros((3, K)))
    with pytest.raises(ValueError, match=r"log_frameprob must have shape \(n_samples >= 1, 4\)"):
        lattice.forward_log(pi, A, lf[:, :3])


def test_utils():
    a = np.array([[1.0, 3.0], [0.0, 0.0]])
    utils.normalize(a, axis=1)
    np.testing.assert_array_equal(a, [[0.25, 0.75], [0.0, 0.0]])
    b = np.log(np.array([[1.0, 3.0], [2.0, 2.0]]))
    utils.log_normalize(b, axis=1)
    np.testing.assert_allclose(np.exp(b), [[0.25, 0.75], [0.5, 0.5]], rtol=1e-12)
    one = np.array([[-np.inf], [3.0]])
    utils.log_normalize(one, axis=1)
    np.testing.assert_array_equal(one, [[0.0], [0.0]])
    np.testing.assert_array_equal(utils.fill_covars(np.array([1.0, 2.0]), "spherical", 2, 3)[1], 2 * np.eye(3))
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        utils.fill_covars(np.ones(2), "banana", 2, 2)


def test_refit_on_other_width_when_means_and_covars_are_reinitialised():
    m = ph.GaussianHMM(2, random_state=0, n_iter=2).fit(np.random.default_rng(10).normal(size=(30, 2)))
    m.fit(np.random.default_rng(11).normal(size=(30, 4)))  # init_params "stmc": nothing kept is 2-wide
    assert m.means_.shape == (2, 4) and m.n_features == 4
    m.init_params = "st"
    with pytest.raises(ValueError, match="3 features but the model has 4"):
        m.fit(np.zeros((30, 3)))


# constant first feature (hmmlearn's issue #2 data): singular covariances, states losing all mass
_ZERO_VAR = np.c_[np.full(9, 715.0), np.arange(585, 0, -65.0),
                  [0.0, 1.047, 0.721, -0.458, -6.431, -2.901, 8.455, 4.094, -1.217],
                  [0.0, -60.37, -52.71, -78.06, -55.99, -78.02, -70.33, -58.36, -44.81]]


def test_gmm_on_singular_data_log_and_scaling_agree():
    hist = []
    for impl in ("log", "scaling"):
        rs = np.random.RandomState(14)
        h = ph.GMMHMM(3, 2, covariance_type="tied", random_state=rs, implementation=impl, n_iter=10, tol=-np.inf)
        h.fit(_ZERO_VAR)
        assert np.all(np.isfinite(h.weights_)) and np.allclose(h.weights_.sum(axis=1), 1)
        assert all(np.linalg.eigvalsh(c)[0] > 0 for c in h.covars_)
        hist.append(np.array(h.monitor_.history))
    np.testing.assert_allclose(hist[1], hist[0], rtol=1e-9)
    assert np.all(np.isfinite(hist[0]))
