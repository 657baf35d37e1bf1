"""Emission models of pyaiml.hmm: CategoricalHMM, GaussianHMM, GMMHMM (hmmlearn 0.3 API).

Constructor arguments, attribute shapes (``covars_`` getter/setter per covariance type),
initialisation and M-step formulas follow hmmlearn 0.3, so one EM step from the same
starting parameters gives the same parameters (tests/test_hmm_parity.py). Emission
log-likelihoods for all frames come from ``pyaiml.ops`` kernels in one call; the E-step
kernel also returns the categorical counts and the Gaussian posterior-weighted sums of x
and x^2, so CategoricalHMM and diagonal/spherical GaussianHMM never build the (N, K)
posteriors during fit (full/tied covariances and GMMHMM use them in NumPy products).
hmmlearn's hooks are kept: ``_init(X, lengths)`` (the same random_state gives hmmlearn's
startprob_, transmat_ and emissionprob_ draws; k-means for the Gaussian means is pyaiml's
own, as scikit-learn is not a dependency), ``_check_and_set_n_features``,
``_get_n_fit_scalars_per_param`` (aic/bic), covariance setters taking hmmlearn's shapes.
Tests: tests/test_hmm_models.py, tests/test_hmm_parity.py, tests/test_hmm_compat.py, and
hmmlearn's own suite (tools/peer_suites.py hmmlearn, tests/test_peer_hmmlearn.py).
"""
from __future__ import annotations

import numpy as np

from pyaiml.hmm.base import BaseHMM, normalize
from pyaiml.hmm.utils import fill_covars
from pyaiml.ops import hmm as _ops
from pyaiml.ops._validate import all_finite

COVARIANCE_TYPES = _ops.COVARIANCE_TYPES


def _kmeans(X, k, rs, n_init=3, max_iter=50):
    """Lloyd's k-means with k-means++ seeding; returns (centers (k, D), labels (N,))."""
    N = X.shape[0]
    x2 = np.einsum("ij,ij->i", X, X)
    best = None
    for _ in range(n_init):
        C = np.empty((k, X.shape[1]))
        C[0] = X[rs.randint(N)]
        d2 = np.maximum(x2 - 2 * X @ C[0] + C[0] @ C[0], 0)
        for j in range(1, k):
            tot = d2.sum()
            idx = rs.choice(N, p=d2 / tot) if tot > 0 else rs.randint(N)
            C[j] = X[idx]
            d2 = np.minimum(d2, np.maximum(x2 - 2 * X @ C[j] + C[j] @ C[j], 0))
        for _ in range(max_iter):
            D = x2[:, None] - 2 * X @ C.T + np.einsum("ij,ij->i", C, C)[None]
            lab = D.argmin(axis=1)
            cnt = np.bincount(lab, minlength=k)
            S = np.zeros_like(C)
            np.add.at(S, lab, X)
            newC = np.where(cnt[:, None] > 0, S / np.maximum(cnt, 1)[:, None], C)
            done = np.allclose(newC, C)
            C = newC
            if done:
                break
        D = x2[:, None] - 2 * X @ C.T + np.einsum("ij,ij->i", C, C)[None]
        lab = D.argmin(axis=1)
        inertia = D[np.arange(N), lab].sum()
        if best is None or inertia < best[0]:
            best = (inertia, C.copy(), lab)
    return best[1], best[2]


def _float_X(X, op, name, n_features):
    X = np.asarray(X)
    if X.dtype.kind not in "fiu" or X.dtype == np.bool_:
        raise TypeError(f"{name}.{op}: X must hold real numbers. Received dtype {X.dtype}")
    X = np.ascontiguousarray(X, dtype=np.float64)
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name}.{op}: X has {X.shape[1]} features but the model has {n_features}")
    if not all_finite(X):
        t, d = np.argwhere(~np.isfinite(X))[0]
        raise ValueError(f"{name}.{op}: X must be finite (no NaN or inf). Received {X[t, d]} at sample {t}, "
                         f"feature {d}")
    return X


# ---------------------------------------------------------------------------------------

def _n_features_property(axis):
    """``n_features``: read from ``means_`` (its axis ``axis``) once it exists, else the value set."""

    def get(self):
        if hasattr(self, "means_"):
            return np.shape(self.means_)[axis]
        return self.__dict__.get("_n_features")

    def set(self, v):
        self.__dict__["_n_features"] = None if v is None else int(v)

    return property(get, set)

class CategoricalHMM(BaseHMM):
    """HMM with categorical (discrete symbol) emissions; X holds integer symbols (n_samples, 1)."""

    _param_names = ("emissionprob_",)

    def __init__(self, n_components=1, startprob_prior=1.0, transmat_prior=1.0, *, emissionprob_prior=1.0,
                 n_features=None, algorithm="viterbi", random_state=None, n_iter=10, tol=1e-2, verbose=False,
                 params="ste", init_params="ste", implementation="log", n_init=1):
        super().__init__(n_components, startprob_prior=startprob_prior, transmat_prior=transmat_prior,
                         algorithm=algorithm, random_state=random_state, n_iter=n_iter, tol=tol, verbose=verbose,
                         params=params, init_params=init_params, implementation=implementation, n_init=n_init)
        self.emissionprob_prior = emissionprob_prior
        self.n_features = n_features

    def _validate_X(self, X, op, fitting=False):
        name = type(self).__name__
        if X.shape[1] != 1:
            raise ValueError(f"{name}.{op}: X must have shape (n_samples, 1) of integer symbols. "
                             f"Received shape {X.shape}")
        if X.dtype.kind not in "iu":
            raise ValueError(f"{name}.{op}: symbols must be integers. Received dtype {X.dtype}")
        lo, hi = (int(X.min()), int(X.max())) if X.size else (0, -1)
        if lo < 0:
            neg = np.flatnonzero(X[:, 0] < 0)
            raise ValueError(f"{name}.{op}: symbols must be non-negative. Received {X[neg[0], 0]} at sample {neg[0]}")
        nf = self.n_features
        if nf is None and hasattr(self, "emissionprob_") and not (fitting and "e" in self.init_params):
            nf = np.shape(self.emissionprob_)[1]
        if nf is None:
            if not fitting:
                raise ValueError(f"{name}.{op}: n_features is unknown; fit the model or set emissionprob_")
            # fit: _init takes it from the data (the largest symbol + 1)
        else:
            if hi >= nf:
                big = np.flatnonzero(X[:, 0] >= nf)
                raise ValueError(f"{name}.{op}: symbols must be < n_features = {nf}. Received {X[big[0], 0]} at "
                                 f"sample {big[0]}")
            self.n_features = int(nf)
        return np.ascontiguousarray(X, dtype=np.int64)

    def _check(self):
        super()._check()
        name = type(self).__name__
        E = np.atleast_2d(np.asarray(self.emissionprob_, dtype=np.float64))
        if self.n_features is None:
            self.n_features = E.shape[1]
        if E.shape != (self.n_components, self.n_features):
            raise ValueError(f"{name}: emissionprob_ must have shape ({self.n_components}, {self.n_features}). "
                             f"Received {E.shape}")
        bad = np.argwhere(~(E >= 0) | ~np.isfinite(E))
        if bad.size:
            raise ValueError(f"{name}: emissionprob_ must be finite and non-negative (probabilities). Received "
                             f"{E[tuple(bad[0])]} for state {bad[0][0]}, symbol {bad[0][1]}")
        rs = E.sum(axis=1)
        bad = np.flatnonzero(np.abs(rs - 1) > 1e-6)
        if bad.size:
            raise ValueError(f"{name}: emissionprob_ rows must sum to 1. Received row {bad[0]} (state {bad[0]}) "
                             f"summing to {rs[bad[0]]:.6g}")
        self.emissionprob_ = E

    _estep_posteriors = False
    _estep_counts = True

    def _compute_log_likelihood(self, X):
        return _ops.hmm_categorical_loglik(X[:, 0], self.emissionprob_)

    def _emission(self, X):
        # rows of log emissionprob_.T picked by the symbols inside the kernel: no (N, K) array
        with np.errstate(divide="ignore"):
            table = np.ascontiguousarray(np.log(self.emissionprob_).T)
        return table, X[:, 0]

    def _check_and_set_n_features(self, X):
        """X must hold non-negative integer symbols below n_features; sets n_features (the largest
        symbol + 1) when the model has none."""
        name = type(self).__name__
        X = np.asarray(X)
        if X.dtype.kind not in "iu":
            raise ValueError(f"{name}: symbols must be integers. Received dtype {X.dtype}")
        if X.size == 0:
            raise ValueError(f"{name}: X holds no symbols")
        lo, hi = int(X.min()), int(X.max())
        if lo < 0:
            raise ValueError(f"{name}: symbols must be non-negative. Received {lo}")
        if self.n_features is None:
            self.n_features = hi + 1
        elif hi >= self.n_features:
            raise ValueError(f"{name}: symbols must be < n_features = {self.n_features}. Received {hi}")

    def _get_n_fit_scalars_per_param(self):
        K, M = self.n_components, self.n_features
        return {"s": K - 1, "t": K * (K - 1), "e": K * (M - 1)}

    def _init(self, X, lengths=None):
        if self.n_features is None and hasattr(self, "emissionprob_") and "e" not in self.init_params:
            self.n_features = np.shape(self.emissionprob_)[1]
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
            stats["obs"] += counts.T  # (M, K) per-symbol posterior sums from the kernel

    def _do_mstep(self, stats):
        super()._do_mstep(stats)
        if "e" in self.params:
            self.emissionprob_ = np.maximum(self.emissionprob_prior - 1 + stats["obs"], 0)
            normalize(self.emissionprob_, axis=1)

    def _generate_sample_from_state(self, state, random_state):
        cdf = np.cumsum(self.emissionprob_[state, :])
        return [(cdf > random_state.rand()).argmax()]


# ---------------------------------------------------------------------------------------
def _validate_covars(covars, ct, K, name):
    cv = np.array(covars, dtype=np.float64, copy=True)
    if ct == "spherical":
        # hmmlearn's shapes: (K,), K values in any shape ((K, 1), (K, 1, 1, 1)), or (K, D) with
        # one value repeated along each row (what its M-step stores)
        if cv.ndim >= 1 and cv.shape[0] == K and cv.size == K:
            cv = cv.reshape(K)
        elif cv.ndim == 2 and cv.shape[0] == K and np.all(cv == cv[:, :1]):
            cv = np.ascontiguousarray(cv[:, 0])
        if cv.ndim != 1 or len(cv) != K:
            raise ValueError(f"{name}: 'spherical' covars must have shape ({K},) (or ({K}, n_features) with one "
                             f"value per row). Received {cv.shape}")
        bad = np.flatnonzero(~(cv > 0))
        if bad.size:
            raise ValueError(f"{name}: 'spherical' covars must be positive. Received {cv[bad[0]]} for state {bad[0]}")
    elif ct == "diag":
        if cv.ndim != 2 or cv.shape[0] != K:
            raise ValueError(f"{name}: 'diag' covars must have shape ({K}, n_features). Received {cv.shape}")
        bad = np.argwhere(~(cv > 0))
        if bad.size:
            raise ValueError(f"{name}: 'diag' covars must be positive. Received {cv[tuple(bad[0])]} for state "
                             f"{bad[0][0]}, feature {bad[0][1]}")
    elif ct == "tied":
        if cv.ndim != 2 or cv.shape[0] != cv.shape[1]:
            raise ValueError(f"{name}: 'tied' covars must have shape (n_features, n_features). Received {cv.shape}")
        if not np.allclose(cv, cv.T) or np.any(np.linalg.eigvalsh(cv) <= 0):
            raise ValueError(f"{name}: 'tied' covars must be symmetric, positive-definite")
    elif ct == "full":
        if cv.ndim != 3 or cv.shape[0] != K or cv.shape[1] != cv.shape[2]:
            raise ValueError(f"{name}: 'full' covars must have shape ({K}, n_features, n_features). "
                             f"Received {cv.shape}")
        for k, c in enumerate(cv):
            if not np.allclose(c, c.T) or np.any(np.linalg.eigvalsh(c) <= 0):
                raise ValueError(f"{name}: covariance of state {k} must be symmetric, positive-definite")
    else:
        raise ValueError(f"{name}: covariance_type must be one of {COVARIANCE_TYPES}. Received {ct!r}")
    return cv


def _floor_covars(cv, ct, floor):
    """Keep covariances usable after an M-step, with ``floor`` = min_covar.

    diag/spherical: variances below ``floor`` are raised to it. full/tied: a matrix is left as
    the M-step made it while it is positive definite (hmmlearn's M-step, however small its
    eigenvalues: data on a small scale keeps its exact EM updates, so the log-likelihood never
    decreases because of the floor); one that is not (a state or component whose points span
    fewer than n_features dimensions) gets ``floor * I`` added, hmmlearn's fallback when its
    Cholesky factorisation fails, and, if still not positive definite, is shifted so that its
    smallest eigenvalue is ``floor``. ``floor <= 0`` turns all of this off.
    """
    if floor is None or floor <= 0:
        return cv
    if ct in ("diag", "spherical"):
        return np.where(cv < floor, floor, cv)
    flat = cv.reshape((-1,) + cv.shape[-2:])
    D = flat.shape[-1]
    eye = np.eye(D)
    for i in range(flat.shape[0]):
        c = flat[i]
        if not np.all(np.isfinite(c)) or _is_pd(c):
            continue
        c = c + floor * eye
        if not _is_pd(c):
            c = c + (floor - np.linalg.eigvalsh(0.5 * (c + c.T))[0]) * eye
        flat[i] = c
    return flat.reshape(cv.shape)


def _is_pd(c):
    """Positive definite to working precision: the smallest eigenvalue above 1e-12 of the
    largest (a covariance with a condition number beyond ~1e12 is singular for every use
    made of it: log-likelihoods of +-1e10 per frame, Cholesky factors of rounding noise)."""
    try:
        w = np.linalg.eigvalsh(0.5 * (c + c.T))
    except np.linalg.LinAlgError:
        return False
    return bool(w[0] > 1e-12 * w[-1] > 0)


def _reinit_all_features(self):
    """fit will overwrite every parameter shaped by n_features (means and covariances)."""
    return "m" in self.init_params and "c" in self.init_params


def _validate_float_X(self, X, op, fitting=False):
    """Gaussian and GMM emissions: float frames (N, n_features), checked against the model's
    n_features; in fit, only when a parameter shaped by it is kept (not in init_params)."""
    nf = None if fitting and _reinit_all_features(self) else self.n_features
    X = _float_X(X, op, type(self).__name__, nf)
    if nf is None and not fitting:
        self.n_features = X.shape[1]
    return X


def _check_and_set_float_n_features(self, X):
    """Set n_features from X, or check X against it. Where fit re-initialises both means_ and
    covars_ (the only parameters shaped by n_features), data of another width replaces them
    (hmmlearn does the same on a model whose n_features was not fixed by an earlier _check)."""
    D = np.shape(X)[1]
    if self.n_features not in (None, D) and _reinit_all_features(self):
        for name in ("means_", "covars_"):
            if hasattr(self, name):
                delattr(self, name)
        self.n_features = None
    if self.n_features is None:
        self.n_features = D
    elif self.n_features != D:
        raise ValueError(f"{type(self).__name__}: X has {D} features but the model has n_features = "
                         f"{self.n_features}")


class GaussianHMM(BaseHMM):
    """HMM with Gaussian emissions; covariance_type in spherical, diag, full, tied.

    ``covars_`` reads as (n_components, n_features, n_features) for every type and is set
    with hmmlearn's shapes: spherical (K,), diag (K, D), full (K, D, D), tied (D, D).
    """

    _param_names = ("means_", "covars_")

    def __init__(self, n_components=1, covariance_type="diag", min_covar=1e-3, startprob_prior=1.0,
                 transmat_prior=1.0, means_prior=0, means_weight=0, covars_prior=1e-2, covars_weight=1,
                 algorithm="viterbi", random_state=None, n_iter=10, tol=1e-2, verbose=False, params="stmc",
                 init_params="stmc", implementation="log", n_init=1):
        super().__init__(n_components, startprob_prior=startprob_prior, transmat_prior=transmat_prior,
                         algorithm=algorithm, random_state=random_state, n_iter=n_iter, tol=tol, verbose=verbose,
                         params=params, init_params=init_params, implementation=implementation, n_init=n_init)
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"GaussianHMM: covariance_type must be one of {COVARIANCE_TYPES}. "
                             f"Received {covariance_type!r}")
        self.covariance_type = covariance_type
        self.min_covar = min_covar
        self.means_prior = means_prior
        self.means_weight = means_weight
        self.covars_prior = covars_prior
        self.covars_weight = covars_weight

    @property
    def covars_(self):
        if "_covars_" not in self.__dict__:
            raise AttributeError("covars_")
        D = self.means_.shape[1] if hasattr(self, "means_") else np.shape(self._covars_)[-1]
        return fill_covars(self._covars_, self.covariance_type, self.n_components, D)

    @covars_.setter
    def covars_(self, covars):
        self._covars_ = _validate_covars(covars, self.covariance_type, self.n_components, "GaussianHMM")

    @covars_.deleter
    def covars_(self):
        self.__dict__.pop("_covars_", None)

    def _set_covars_raw(self, cv):
        self.covars_ = cv

    n_features = _n_features_property(1)  # means_ is (K, D)

    _validate_X = _validate_float_X
    _check_and_set_n_features = _check_and_set_float_n_features

    _trusted_loglik = True

    def _get_n_fit_scalars_per_param(self):
        K, D = self.n_components, self.n_features
        return {"s": K - 1, "t": K * (K - 1), "m": K * D,
                "c": {"spherical": K, "diag": K * D, "full": K * D * (D + 1) // 2,
                      "tied": D * (D + 1) // 2}[self.covariance_type]}

    def _check(self):
        name = type(self).__name__
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"{name}: covariance_type must be one of {COVARIANCE_TYPES}. "
                             f"Received {self.covariance_type!r}")
        super()._check()
        self.means_ = np.asarray(self.means_, dtype=np.float64)
        if self.means_.ndim != 2 or self.means_.shape[0] != self.n_components:
            raise ValueError(f"{name}: means_ must have shape ({self.n_components}, n_features). "
                             f"Received {self.means_.shape}")
        if not np.all(np.isfinite(self.means_)):
            raise ValueError(f"{name}: means_ must be finite")
        if "_covars_" not in self.__dict__:
            raise ValueError(f"{name}: covars_ is not set")

    def _emission_params(self):
        D = self.means_.shape[1]
        cv = self._covars_
        ct = self.covariance_type
        if ct == "spherical" and cv.ndim == 2:
            cv = cv[:, 0]
        if ct in ("diag",) and cv.shape != (self.n_components, D) or ct == "tied" and cv.shape != (D, D):
            raise ValueError(f"{type(self).__name__}: covars_ of shape {cv.shape} do not match n_features {D}")
        try:
            return _ops.gaussian_params(self.means_, cv, ct, type(self).__name__)
        except ValueError as e:
            raise ValueError(f"{e} (degenerate covariance: add data, raise min_covar or covars_prior)") from None

    def _compute_log_likelihood(self, X):
        # X comes from _validate_X (float64, C-contiguous, finite, n_features columns)
        return _ops.gaussian_loglik_checked(X, self._emission_params())

    def _init(self, X, lengths=None):
        super()._init(X, lengths)
        X = _float_X(X, "fit", type(self).__name__, None)
        K, D = self.n_components, X.shape[1]
        if self._needs_init("m", "means_"):
            if X.shape[0] < K:
                raise ValueError(f"GaussianHMM.fit: {X.shape[0]} samples cannot initialise {K} state means")
            self.means_, _ = _kmeans(X, K, self._rng())
        if self._needs_init("c", "covars_"):
            cv = np.atleast_2d(np.cov(X.T)) if X.shape[0] > 1 else np.zeros((D, D))
            cv = cv + self.min_covar * np.eye(D)
            ct = self.covariance_type
            if ct == "spherical":
                self.covars_ = np.full(K, cv.mean())
            elif ct == "tied":
                self.covars_ = cv
            elif ct == "diag":
                self.covars_ = np.tile(np.diag(cv), (K, 1))
            else:
                self.covars_ = np.tile(cv, (K, 1, 1))

    def _initialize_sufficient_statistics(self):
        st = super()._initialize_sufficient_statistics()
        K, D = self.n_components, self.n_features
        st["post"] = np.zeros(K)
        st["obs"] = np.zeros((K, D))
        st["obs**2"] = np.zeros((K, D))
        if self.covariance_type in ("tied", "full"):
            st["obs*obs.T"] = np.zeros((K, D, D))
        return st

    def _estep_wants(self):
        mc = "m" in self.params or "c" in self.params
        outer = "c" in self.params and self.covariance_type in ("tied", "full")
        return outer, False, mc

    def _accumulate_sufficient_statistics(self, stats, X, off, lb, post, counts):
        g = stats.pop("_gauss", None)
        if "m" in self.params or "c" in self.params:
            stats["post"] += g[0]
            stats["obs"] += g[1]
        if "c" in self.params:
            if self.covariance_type in ("spherical", "diag"):
                stats["obs**2"] += g[2]
            else:
                for k in range(self.n_components):
                    stats["obs*obs.T"][k] += (X * post[:, k:k + 1]).T @ X

    def _do_mstep(self, stats):
        super()._do_mstep(stats)
        mp, mw = self.means_prior, self.means_weight
        denom = stats["post"][:, None]
        if "m" in self.params:
            self.means_ = (mw * mp + stats["obs"]) / (mw + denom)
        if "c" in self.params:
            cp, cw = self.covars_prior, self.covars_weight
            md = self.means_ - mp
            ct = self.covariance_type
            if ct in ("spherical", "diag"):
                c_n = mw * md ** 2 + stats["obs**2"] - 2 * self.means_ * stats["obs"] + self.means_ ** 2 * denom
                c_d = max(cw - 1, 0) + denom
                cv = (cp + c_n) / np.maximum(c_d, 1e-5)
                self._covars_ = cv.mean(axis=1) if ct == "spherical" else cv
            else:
                K, D = self.n_components, self.n_features
                c_n = np.empty((K, D, D))
                for c in range(K):
                    om = np.outer(stats["obs"][c], self.means_[c])
                    c_n[c] = (mw * np.outer(md[c], md[c]) + stats["obs*obs.T"][c] - om - om.T
                              + np.outer(self.means_[c], self.means_[c]) * stats["post"][c])
                cvw = max(cw - D, 0)
                if ct == "tied":
                    self._covars_ = (cp + c_n.sum(axis=0)) / (cvw + stats["post"].sum())
                else:
                    self._covars_ = (cp + c_n) / (cvw + stats["post"][:, None, None])
            # after each M-step: variances below min_covar are raised to it (diag/spherical);
            # full/tied matrices are kept unless not positive definite (see _floor_covars)
            self._covars_ = _floor_covars(self._covars_, ct, self.min_covar)

    def _generate_sample_from_state(self, state, random_state):
        return random_state.multivariate_normal(self.means_[state], self.covars_[state])


# ---------------------------------------------------------------------------------------
class GMMHMM(BaseHMM):
    """HMM with Gaussian-mixture emissions (n_mix components per state).

    Shapes as hmmlearn: weights_ (K, M), means_ (K, M, D), covars_ spherical (K, M),
    diag (K, M, D), full (K, M, D, D), tied (K, D, D).
    """

    _param_names = ("weights_", "means_", "covars_")

    def __init__(self, n_components=1, n_mix=1, min_covar=1e-3, startprob_prior=1.0, transmat_prior=1.0,
                 weights_prior=1.0, means_prior=0.0, means_weight=0.0, covars_prior=None, covars_weight=None,
                 algorithm="viterbi", covariance_type="diag", random_state=None, n_iter=10, tol=1e-2,
                 verbose=False, params="stmcw", init_params="stmcw", implementation="log", n_init=1):
        super().__init__(n_components, startprob_prior=startprob_prior, transmat_prior=transmat_prior,
                         algorithm=algorithm, random_state=random_state, n_iter=n_iter, tol=tol, verbose=verbose,
                         params=params, init_params=init_params, implementation=implementation, n_init=n_init)
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"GMMHMM: covariance_type must be one of {COVARIANCE_TYPES}. Received {covariance_type!r}")
        if int(n_mix) < 1:
            raise ValueError(f"GMMHMM: n_mix must be >= 1. Received {n_mix}")
        self.covariance_type = covariance_type
        self.min_covar = min_covar
        self.n_mix = n_mix
        self.weights_prior = weights_prior
        self.means_prior = means_prior
        self.means_weight = means_weight
        self.covars_prior = covars_prior
        self.covars_weight = covars_weight

    n_features = _n_features_property(2)  # means_ is (K, M, D)

    def _priors(self):
        """Effective priors broadcast to their shapes (hmmlearn's defaults per covariance type)."""
        K, D, M = self.n_components, self.n_features, self.n_mix
        ct = self.covariance_type
        cp, cw = self.covars_prior, self.covars_weight
        default = {"full": (0.0, -(1.0 + D + 1.0)), "tied": (0.0, -(M + D + 1.0)), "diag": (-1.5, 0.0),
                   "spherical": (-(M + 2.0) / 2.0, 0.0)}[ct]
        cp = default[0] if cp is None else cp
        cw = default[1] if cw is None else cw
        p = {"weights": np.broadcast_to(self.weights_prior, (K, M)).astype(float),
             "means": np.broadcast_to(self.means_prior, (K, M, D)).astype(float),
             "means_w": np.broadcast_to(self.means_weight, (K, M)).astype(float)}
        shp = {"full": ((K, M, D, D), (K, M)), "tied": ((K, D, D), (K,)), "diag": ((K, M, D), (K, M, D)),
               "spherical": ((K, M), (K, M))}[ct]
        p["covars"] = np.broadcast_to(cp, shp[0]).astype(float)
        p["covars_w"] = np.broadcast_to(cw, shp[1]).astype(float)
        return p

    _validate_X = _validate_float_X
    _check_and_set_n_features = _check_and_set_float_n_features

    _trusted_loglik = True

    def _get_n_fit_scalars_per_param(self):
        K, D, M = self.n_components, self.n_features, self.n_mix
        # "w": K * (M - 1) free weights (one simplex per state); hmmlearn 0.3.3 counts M - 1
        return {"s": K - 1, "t": K * (K - 1), "m": K * M * D,
                "c": {"spherical": K * M, "diag": K * M * D, "full": K * M * D * (D + 1) // 2,
                      "tied": K * D * (D + 1) // 2}[self.covariance_type],
                "w": K * (M - 1)}

    def _check(self):
        name = type(self).__name__
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"{name}: covariance_type must be one of {COVARIANCE_TYPES}. "
                             f"Received {self.covariance_type!r}")
        super()._check()
        K, M = self.n_components, self.n_mix
        self.weights_ = np.asarray(self.weights_, dtype=np.float64)
        self.means_ = np.asarray(self.means_, dtype=np.float64)
        self.covars_ = np.asarray(self.covars_, dtype=np.float64)
        if self.weights_.shape != (K, M):
            raise ValueError(f"{name}: weights_ must have shape ({K}, {M}). Received {self.weights_.shape}")
        bad = np.argwhere(~(self.weights_ >= 0) | ~np.isfinite(self.weights_))
        if bad.size:
            raise ValueError(f"{name}: weights_ must be finite and non-negative (mixture weights). Received "
                             f"{self.weights_[tuple(bad[0])]} for state {bad[0][0]}, mixture component {bad[0][1]}")
        ws = self.weights_.sum(axis=1)
        bad = np.flatnonzero(np.abs(ws - 1) > 1e-6)
        if bad.size:
            raise ValueError(f"{name}: weights_ rows must sum to 1. Received row {bad[0]} (state {bad[0]}) summing "
                             f"to {ws[bad[0]]:.6g}")
        if self.means_.ndim != 3 or self.means_.shape[:2] != (K, M):
            raise ValueError(f"{name}: means_ must have shape ({K}, {M}, n_features). Received {self.means_.shape}")
        for what, a in (("means_", self.means_), ("covars_", self.covars_)):
            if not all_finite(a):
                raise ValueError(f"{name}: {what} must be finite. Received {a[~np.isfinite(a)][0]} at index "
                                 f"{np.argwhere(~np.isfinite(a))[0].tolist()}")
        D = self.means_.shape[2]
        want = {"spherical": (K, M), "tied": (K, D, D), "diag": (K, M, D), "full": (K, M, D, D)}[self.covariance_type]
        if self.covars_.shape != want:
            raise ValueError(f"{name}: {self.covariance_type!r} mixture covars must have shape {want}. "
                             f"Received {self.covars_.shape}")
        if self.covariance_type in ("spherical", "diag"):
            bad = np.argwhere(~(self.covars_ > 0))
            if bad.size:
                raise ValueError(f"{name}: covariances must be positive. Received {self.covars_[tuple(bad[0])]} "
                                 f"for state {bad[0][0]}, mixture component {bad[0][1]}")

    def _component_loglik(self, X):
        try:
            return _ops.gmm_component_loglik(X, self.weights_, self.means_, self.covars_, self.covariance_type)
        except ValueError as e:
            raise ValueError(f"{type(self).__name__}: {e} (degenerate covariance)") from None

    def _compute_log_likelihood(self, X):
        return _ops._logsumexp_last(self._component_loglik(X))

    def _emission(self, X):
        comp = self._component_loglik(X)
        self._last_comp = comp  # kept for the E-step's mixture responsibilities
        return _ops._logsumexp_last(comp), None

    def _init(self, X, lengths=None):
        super()._init(X, lengths)
        X = _float_X(X, "fit", type(self).__name__, None)
        rs = self._rng()
        K, D, M = self.n_components, X.shape[1], self.n_mix
        if X.shape[0] < K:
            raise ValueError(f"GMMHMM.fit: {X.shape[0]} samples cannot initialise {K} states")

        def cov():
            c = np.atleast_2d(np.cov(X.T)) if X.shape[0] > 1 else np.zeros((D, D))
            return c + self.min_covar * np.eye(D)

        need_m = self._needs_init("m", "means_")
        if need_m:
            centers, labels = _kmeans(X, K, rs)
            centroid = centers.mean(axis=0)
            means = []
            for k in range(K):
                Xk = X[labels == k]
                if Xk.shape[0] >= M:
                    means.append(_kmeans(Xk, M, rs)[0])
                else:
                    means.append(rs.multivariate_normal(centroid, cov(), size=M))
            self.means_ = np.stack(means)
        if self._needs_init("w", "weights_"):
            self.weights_ = np.full((K, M), 1.0 / M)
        if self._needs_init("c", "covars_"):
            cv = cov()
            ct = self.covariance_type
            if ct == "tied":
                self.covars_ = np.tile(cv, (K, 1, 1))
            elif ct == "full":
                self.covars_ = np.tile(cv, (K, M, 1, 1))
            elif ct == "diag":
                self.covars_ = np.tile(np.diag(cv), (K, M, 1))
            else:
                self.covars_ = np.full((K, M), cv.mean())

    def _initialize_sufficient_statistics(self):
        st = super()._initialize_sufficient_statistics()
        K, M = self.n_components, self.n_mix
        st["post_mix_sum"] = np.zeros((K, M))
        st["post_sum"] = np.zeros(K)
        pr = self._priors()
        if "m" in self.params:
            st["m_n"] = pr["means_w"][:, :, None] * pr["means"]
        if "c" in self.params:
            st["c_n"] = np.zeros_like(self.covars_)
        return st

    def _accumulate_sufficient_statistics(self, stats, X, off, lb, post, counts):
        comp = self._last_comp  # (N, K, M) log w + log N
        K, M = self.n_components, self.n_mix
        with np.errstate(under="ignore", invalid="ignore"):
            if M == 1:
                pmix = np.ones_like(comp)
            else:
                pmix = np.exp(comp - lb[:, :, None])
            pcm = post[:, :, None] * pmix  # (N, K, M)
        stats["post_mix_sum"] += pcm.sum(axis=0)
        stats["post_sum"] += post.sum(axis=0)
        if "m" in self.params:
            stats["m_n"] += (pcm.reshape(len(X), K * M).T @ X).reshape(K, M, -1)
        if "c" in self.params:
            ct = self.covariance_type
            for k in range(K):
                for m in range(M):
                    diff = X - self.means_[k, m]
                    w = pcm[:, k, m]
                    if ct == "diag":
                        stats["c_n"][k, m] += w @ (diff * diff)
                    elif ct == "spherical":
                        stats["c_n"][k, m] += w @ np.einsum("ij,ij->i", diff, diff)
                    elif ct == "full":
                        stats["c_n"][k, m] += (diff * w[:, None]).T @ diff
                    else:
                        stats["c_n"][k] += (diff * w[:, None]).T @ diff

    def _do_mstep(self, stats):
        super()._do_mstep(stats)
        D, M = self.n_features, self.n_mix
        pr = self._priors()
        # Mixture components (or, for 'tied', states) that received no posterior mass keep
        # their previous means and covariances instead of collapsing to 0/0 (where hmmlearn
        # yields NaN or a zero covariance); their weight goes to 0 as in hmmlearn. A state with
        # no mass at all keeps its previous weights too (0/0 again in hmmlearn).
        dead = stats["post_mix_sum"] < 1e-12
        dead_state = stats["post_sum"] < 1e-12
        old_means, old_covars = self.means_.copy(), self.covars_.copy()
        if "w" in self.params:
            a1 = pr["weights"] - 1
            w_n = stats["post_mix_sum"] + a1
            w_d = (stats["post_sum"] + a1.sum(axis=1))[:, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                w = w_n / w_d
            keep = dead_state | ~np.all(np.isfinite(w), axis=1)
            w[keep] = self.weights_[keep]
            self.weights_ = w
        if "m" in self.params:
            m_n = stats["m_n"]
            m_d = stats["post_mix_sum"] + pr["means_w"]
            m_d[(self.weights_ == 0) & (m_n == 0).all(axis=-1)] = 1
            self.means_ = m_n / m_d[:, :, None]
        if "c" in self.params:
            lam, mus = pr["means_w"], pr["means"]
            cm = self.means_ - mus
            ct = self.covariance_type
            if ct == "full":
                c_n = np.transpose(pr["covars"], (0, 1, 3, 2)) + lam[:, :, None, None] * (cm[..., :, None] * cm[..., None, :])
                c_n = c_n + stats["c_n"]
                c_d = (stats["post_mix_sum"] + 1 + pr["covars_w"] + D + 1)[:, :, None, None]
            elif ct == "diag":
                c_n = lam[:, :, None] * cm ** 2 + 2 * pr["covars_w"] + stats["c_n"]
                c_d = stats["post_mix_sum"][:, :, None] + 1 + 2 * (pr["covars"] + 1)
            elif ct == "spherical":
                c_n = lam * np.einsum("...i,...i", cm, cm) + 2 * pr["covars_w"] + stats["c_n"]
                c_d = D * (stats["post_mix_sum"] + 1) + 2 * (pr["covars"] + 1)
            else:
                c_n = np.einsum("ij,ijkl->ikl", lam, cm[..., :, None] * cm[..., None, :]) \
                    + np.transpose(pr["covars"], (0, 2, 1)) + stats["c_n"]
                c_d = (stats["post_sum"] + M + pr["covars_w"] + D + 1)[:, None, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                self.covars_ = c_n / c_d
            if ct == "tied":
                self.covars_[dead_state] = old_covars[dead_state]
            else:
                self.covars_[dead] = old_covars[dead]
            self.covars_ = _floor_covars(self.covars_, ct, self.min_covar)
        if "m" in self.params:
            self.means_[dead] = old_means[dead]

    def _generate_sample_from_state(self, state, random_state):
        g = random_state.choice(self.n_mix, p=self.weights_[state])
        ct = self.covariance_type
        if ct == "tied":
            cov = self.covars_[state]
        elif ct == "full":
            cov = self.covars_[state, g]
        elif ct == "diag":
            cov = np.diag(self.covars_[state, g])
        else:
            cov = np.eye(self.n_features) * self.covars_[state, g]
        return random_state.multivariate_normal(self.means_[state, g], cov)
