"""HMMs over vectors of counts: MultinomialHMM and PoissonHMM (hmmlearn 0.3 API).

What it is: two emission models on pyaiml.hmm's BaseHMM, so the E-step is the same batched
native forward-backward (``pyaiml.ops.hmm_forward_backward``, "log" or "scaling") and
decoding the same Viterbi kernel as every other model; only the per-frame log-likelihoods
(N, K) and the M-step live here, in NumPy (one matrix product each).

- ``MultinomialHMM``: X (n_samples, n_features) counts; each row is a draw of
  ``n_trials`` trials from the state's ``emissionprob_`` (K, n_features).
  log p(x | k) = log n! - sum_f log x_f! + sum_f x_f log p_kf, with n the row's total.
- ``PoissonHMM``: X (n_samples, n_features) counts; feature f of state k is Poisson with
  rate ``lambdas_[k, f]``: log p(x | k) = sum_f x_f log l_kf - l_kf - log x_f!.

Constructor arguments, attributes, initialisation (same random_state -> the same
emissionprob_ / lambdas_ draws as hmmlearn) and M-step formulas are hmmlearn's, with these
differences: counts may be integers or floats holding whole numbers; a state that receives
no posterior mass keeps its previous emission parameters (hmmlearn divides 0 by 0); no
log message about MultinomialHMM's history is written at construction.
What it is not: a model for real-valued features (GaussianHMM) or single symbols
(CategoricalHMM, which equals MultinomialHMM with n_trials=1 on one-hot rows).
Tests: hmmlearn's tests/test_multinomial_hmm.py and test_poisson_hmm.py through
tools/peer_suites.py; tests/test_hmm_compat.py (log-likelihoods against scipy.stats, EM
steps against hmmlearn from the same parameters).
"""
from __future__ import annotations

import math

import numpy as np

from pyaiml.hmm.base import BaseHMM, _check_distributions, normalize
from pyaiml.ops._validate import all_finite

__all__ = ["MultinomialHMM", "PoissonHMM"]


def _counts_X(X, op, name, n_features=None):
    """(N, F) non-negative whole numbers (integer dtype, or floats holding whole numbers) as float64."""
    X = np.asarray(X)
    if X.dtype == np.bool_ or X.dtype.kind not in "iuf":
        raise TypeError(f"{name}.{op}: X must hold counts (non-negative integers). Received dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name}.{op}: X must be 2-D (n_samples, n_features) counts. Received shape {X.shape}")
    if X.dtype.kind == "f":
        if not all_finite(X):
            t, d = np.argwhere(~np.isfinite(X))[0]
            raise ValueError(f"{name}.{op}: X must be finite counts. Received {X[t, d]} at sample {t}, feature {d}")
        frac = X != np.floor(X)
        if frac.any():
            t, d = np.argwhere(frac)[0]
            raise ValueError(f"{name}.{op}: X must hold whole-number counts. Received {X[t, d]} at sample {t}, "
                             f"feature {d}")
    neg = X < 0
    if neg.any():
        t, d = np.argwhere(neg)[0]
        raise ValueError(f"{name}.{op}: counts must be non-negative. Received {X[t, d]} at sample {t}, feature {d}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name}.{op}: X has {X.shape[1]} features but the model has n_features = {n_features}")
    return np.ascontiguousarray(X, dtype=np.float64)


def _log_factorial(a):
    """log(a!) elementwise for non-negative whole numbers, one lgamma per distinct value."""
    u, inv = np.unique(a, return_inverse=True)
    return np.array([math.lgamma(v + 1.0) for v in u.tolist()])[inv].reshape(a.shape)


def _x_log_p(X, P):
    """(N, K) sum_f X[t, f] log P[k, f] with 0 log 0 = 0 (a count on a zero entry gives -inf)."""
    zero = P == 0
    with np.errstate(divide="ignore"):
        logP = np.where(zero, 0.0, np.log(np.where(zero, 1.0, P)))
    out = X @ logP.T
    if zero.any():
        hit = (X > 0).astype(np.float64) @ zero.T.astype(np.float64)
        out[hit > 0] = -np.inf
    return out


class _CountsHMM(BaseHMM):
    """Shared input handling of the count models: ``n_features`` is an attribute set from the
    data (or the emission parameters), as in hmmlearn."""

    _emission_attr = ""  # "emissionprob_" or "lambdas_"
    _emission_code = ""  # "e" or "l"
    _trusted_loglik = True

    def _known_n_features(self, fitting):
        nf = getattr(self, "n_features", None)
        if nf is None and hasattr(self, self._emission_attr) and not (fitting and self._emission_code in
                                                                       self.init_params):
            nf = np.atleast_2d(getattr(self, self._emission_attr)).shape[1]
        return nf

    def _validate_X(self, X, op, fitting=False):
        return _counts_X(X, op, type(self).__name__, self._known_n_features(fitting))

    def _check_and_set_n_features(self, X):
        X = _counts_X(X, "fit", type(self).__name__)
        nf = self._known_n_features(True)
        if nf is not None and nf != X.shape[1]:
            raise ValueError(f"{type(self).__name__}: X has {X.shape[1]} features but the model has "
                             f"n_features = {nf}")
        self.n_features = X.shape[1]
        return X

    def _emission_matrix(self, what):
        """The emission parameters as float64 (K, n_features), shape-checked; sets n_features."""
        name = type(self).__name__
        K = self.n_components
        P = np.atleast_2d(np.asarray(getattr(self, what), dtype=np.float64))
        nf = getattr(self, "n_features", None)
        nf = P.shape[1] if nf is None else nf
        if P.shape != (K, nf):
            raise ValueError(f"{name}: {what} must have shape (n_components, n_features) = ({K}, {nf}). "
                             f"Received {P.shape}")
        self.n_features = nf
        return P


class MultinomialHMM(_CountsHMM):
    """HMM with multinomial emissions: each row of X is the counts of ``n_trials`` draws.

    Parameters as hmmlearn's MultinomialHMM; ``n_trials``: an int, one int per sample, or None
    (taken from the row totals of the data at fit). Attributes: ``startprob_``, ``transmat_``,
    ``emissionprob_`` (n_components, n_features), ``n_features``, ``monitor_``.
    """

    _param_names = ("emissionprob_",)
    _emission_attr = "emissionprob_"
    _emission_code = "e"

    def __init__(self, n_components=1, n_trials=None, startprob_prior=1.0, transmat_prior=1.0, algorithm="viterbi",
                 random_state=None, n_iter=10, tol=1e-2, verbose=False, params="ste", init_params="ste",
                 implementation="log", n_init=1):
        super().__init__(n_components, startprob_prior=startprob_prior, transmat_prior=transmat_prior,
                         algorithm=algorithm, random_state=random_state, n_iter=n_iter, tol=tol, verbose=verbose,
                         params=params, init_params=init_params, implementation=implementation, n_init=n_init)
        self.n_trials = n_trials

    def _n_trials(self, op):
        """n_trials as a non-negative int64 array (0-D or 1-D)."""
        name = type(self).__name__
        if self.n_trials is None:
            raise ValueError(f"{name}.{op}: n_trials must be set (an int, one int per sample, or fit with "
                             f"n_trials=None to take the row totals of the data)")
        nt = np.asarray(self.n_trials)
        if nt.dtype == np.bool_ or nt.dtype.kind not in "iuf" or nt.ndim > 1 or nt.size == 0 \
                or not np.all(np.isfinite(nt)) or np.any(nt != np.floor(nt)) or np.any(nt < 0):
            raise ValueError(f"{name}.{op}: n_trials must be a non-negative integer or a 1-D array of them. "
                             f"Received {self.n_trials!r:.60}")
        return nt.astype(np.int64)

    def _check_and_set_n_features(self, X):
        """Sets n_features; sets n_trials to the row totals when None, else checks them."""
        X = super()._check_and_set_n_features(X)
        tot = X.sum(axis=1)
        if self.n_trials is None:
            self.n_trials = tot.astype(np.int64)
            return X
        nt = self._n_trials("fit")
        if nt.ndim == 1 and nt.shape != tot.shape:
            raise ValueError(f"{type(self).__name__}: n_trials holds {nt.size} values but X has {tot.size} samples")
        bad = np.flatnonzero(tot != nt)
        if bad.size:
            want = int(nt if nt.ndim == 0 else nt[bad[0]])
            raise ValueError(f"{type(self).__name__}: the counts of each sample must add up to n_trials. Received a "
                             f"total of {int(tot[bad[0]])} at sample {bad[0]}, n_trials {want}")
        return X

    def _get_n_fit_scalars_per_param(self):
        K, F = self.n_components, self.n_features
        return {"s": K - 1, "t": K * (K - 1), "e": K * (F - 1)}

    def _check(self):
        super()._check()
        E = self._emission_matrix("emissionprob_")
        _check_distributions(E, "emissionprob_", type(self).__name__)
        self.emissionprob_ = E
        self._n_trials("_check")

    def _compute_log_likelihood(self, X):
        n = X.sum(axis=1)
        return (_log_factorial(n) - _log_factorial(X).sum(axis=1))[:, None] + _x_log_p(X, self.emissionprob_)

    def _init(self, X, lengths=None):
        super()._init(X, lengths)
        if self._needs_init("e", "emissionprob_"):
            self.emissionprob_ = self._rng().rand(self.n_components, self.n_features)
            normalize(self.emissionprob_, axis=1)

    def _initialize_sufficient_statistics(self):
        st = super()._initialize_sufficient_statistics()
        st["obs"] = np.zeros((self.n_components, self.n_features))
        return st

    def _accumulate_sufficient_statistics(self, stats, X, off, lb, post, counts):
        if "e" in self.params:
            stats["obs"] += post.T @ X

    def _do_mstep(self, stats):
        super()._do_mstep(stats)
        if "e" in self.params:
            obs = stats["obs"]
            tot = obs.sum(axis=1, keepdims=True)
            keep = tot[:, 0] <= 0  # no posterior mass (or no counts): previous row kept
            E = obs / np.where(keep[:, None], 1.0, tot)
            E[keep] = self.emissionprob_[keep]
            self.emissionprob_ = E

    def _generate_sample_from_state(self, state, random_state):
        nt = np.unique(self._n_trials("sample"))
        if nt.size != 1:
            raise ValueError(f"{type(self).__name__}.sample: sampling needs one n_trials for every sample. "
                             f"Received {nt.size} different values")
        return random_state.multinomial(int(nt[0]), self.emissionprob_[state])

    def sample(self, n_samples=1, random_state=None, currstate=None):
        """(X (n_samples, n_features) counts, states (n_samples,)); needs a single n_trials."""
        self._check_is_fitted("sample")
        self._check()
        if np.unique(self._n_trials("sample")).size != 1:
            raise ValueError(f"{type(self).__name__}.sample: sampling needs one n_trials for every sample. "
                             f"Received n_trials={self.n_trials!r:.60}")
        return super().sample(n_samples, random_state, currstate)


class PoissonHMM(_CountsHMM):
    """HMM with independent Poisson emissions per feature.

    Parameters as hmmlearn's PoissonHMM (``lambdas_prior``, ``lambdas_weight``: the gamma
    prior's alpha and beta, 0 = none). Attributes: ``startprob_``, ``transmat_``, ``lambdas_``
    (n_components, n_features), ``n_features``, ``monitor_``.
    """

    _param_names = ("lambdas_",)
    _emission_attr = "lambdas_"
    _emission_code = "l"

    def __init__(self, n_components=1, startprob_prior=1.0, transmat_prior=1.0, lambdas_prior=0.0, lambdas_weight=0.0,
                 algorithm="viterbi", random_state=None, n_iter=10, tol=1e-2, verbose=False, params="stl",
                 init_params="stl", implementation="log", n_init=1):
        super().__init__(n_components, startprob_prior=startprob_prior, transmat_prior=transmat_prior,
                         algorithm=algorithm, random_state=random_state, n_iter=n_iter, tol=tol, verbose=verbose,
                         params=params, init_params=init_params, implementation=implementation, n_init=n_init)
        self.lambdas_prior = lambdas_prior
        self.lambdas_weight = lambdas_weight

    def _get_n_fit_scalars_per_param(self):
        K, F = self.n_components, self.n_features
        return {"s": K - 1, "t": K * (K - 1), "l": K * F}

    def _check(self):
        super()._check()
        L = self._emission_matrix("lambdas_")
        bad = np.argwhere(~np.isfinite(L) | ~(L >= 0))
        if bad.size:
            k, f = bad[0]
            raise ValueError(f"{type(self).__name__}: lambdas_ must be finite and non-negative (Poisson rates). "
                             f"Received {L[k, f]} for state {k}, feature {f}")
        self.lambdas_ = L

    def _compute_log_likelihood(self, X):
        L = self.lambdas_
        return _x_log_p(X, L) - L.sum(axis=1)[None, :] - _log_factorial(X).sum(axis=1)[:, None]

    def _init(self, X, lengths=None):
        super()._init(X, lengths)
        X = _counts_X(X, "fit", type(self).__name__)
        if self._needs_init("l", "lambdas_"):
            mean, var = X.mean(), X.var()
            shape = (self.n_components, self.n_features)
            if mean > 0 and var > 0:  # gamma draws matching the data's mean and variance (hmmlearn's)
                self.lambdas_ = self._rng().gamma(shape=mean ** 2 / var, scale=var / mean, size=shape)
            else:  # constant data: every rate at its value
                self.lambdas_ = np.full(shape, mean)

    def _initialize_sufficient_statistics(self):
        st = super()._initialize_sufficient_statistics()
        st["post"] = np.zeros(self.n_components)
        st["obs"] = np.zeros((self.n_components, self.n_features))
        return st

    def _accumulate_sufficient_statistics(self, stats, X, off, lb, post, counts):
        if "l" in self.params:
            stats["post"] += post.sum(axis=0)
            stats["obs"] += post.T @ X

    def _do_mstep(self, stats):
        super()._do_mstep(stats)
        if "l" in self.params:
            # hmmlearn 0.3's update: (alpha + n * ybar_k) / (beta + n), n the total posterior mass
            post = stats["post"]
            keep = post <= 0  # no posterior mass: previous rates kept
            n = post.sum()
            ybar = stats["obs"] / np.where(keep, 1.0, post)[:, None]
            L = (self.lambdas_prior + n * ybar) / (self.lambdas_weight + n)
            L = np.broadcast_to(L, self.lambdas_.shape).copy()
            L[keep] = self.lambdas_[keep]
            self.lambdas_ = L

    def _generate_sample_from_state(self, state, random_state):
        return random_state.poisson(self.lambdas_[state])
