"""HMM kernels as functions over batches of sequences (the engine under ``pyaiml.hmm``).

A batch is the frames of S sequences concatenated, with ``lengths`` (S,) or a list of
arrays; every function handles the whole batch in one native call, threaded across
sequences with the GIL released, and gives the same result for any thread count.

- ``hmm_forward_backward``: per-sequence log-likelihood, state posteriors, expected
  transition counts (xi summed over time and sequences); ``implementation="scaling"``
  (scaled probabilities) or ``"log"`` (log-space recursions).
- ``hmm_viterbi``: best path and its log-probability per sequence.
- ``hmm_categorical_loglik``, ``hmm_gaussian_loglik`` (spherical, diag, full, tied),
  ``hmm_gmm_loglik``: per-frame emission log-likelihoods (N, K).

float64 by default; float32 input is accepted and computed in float64 inside (results are
returned as float32). Registry ops: ``hmm_forward_backward``, ``hmm_forward_backward_stats``
(the same plus posterior-weighted sums of the frames and their squares, for Gaussian
M-steps, without writing the posteriors out), ``hmm_viterbi``, ``hmm_loglik_gaussian``
(C++ -> Numba -> NumPy). Tests: tests/test_hmm_ops.py, tests/test_hmm_kernels.py.
"""
from __future__ import annotations

import numpy as np

from pyaiml import _backend
from pyaiml.ops._validate import all_finite, as_array, require_finite

_backend.register_op(
    "hmm_forward_backward",
    cpp="pyaiml.ops._native_hmm:forward_backward",
    numba="pyaiml._numba.hmm:forward_backward",
    numpy="pyaiml.reference.hmm:forward_backward",
)
_backend.register_op(
    "hmm_forward_backward_stats",
    cpp="pyaiml.ops._native_hmm:forward_backward_stats",
    numba="pyaiml._numba.hmm:forward_backward_stats",
    numpy="pyaiml.reference.hmm:forward_backward_stats",
)
_backend.register_op(
    "hmm_viterbi",
    cpp="pyaiml.ops._native_hmm:viterbi",
    numba="pyaiml._numba.hmm:viterbi",
    numpy="pyaiml.reference.hmm:viterbi",
)
_backend.register_op(
    "hmm_loglik_gaussian",
    cpp="pyaiml.ops._native_hmm:loglik_gaussian",
    numba="pyaiml._numba.hmm:loglik_gaussian",
    numpy="pyaiml.reference.hmm:loglik_gaussian",
)

COVARIANCE_TYPES = ("spherical", "diag", "full", "tied")
_LOG2PI = np.log(2 * np.pi)


def offsets_from_lengths(lengths, n: int, op: str) -> np.ndarray:
    """(S + 1,) int64 offsets from ``lengths`` (S,); checks they are whole numbers >= 1 that
    sum to ``n``.

    Every check is made without overflow: each length is compared with ``n`` before any sum,
    and the sum is exact (int64 only where S * n cannot overflow it, else Python integers),
    so lengths such as ``[2**62] * 3 + [2**62 + 6]`` (an int64 sum that wraps round to 6) or
    uint64 ``[2**64 - 1, 7]`` are refused instead of reaching the kernels.
    """
    if lengths is None:
        if n < 1:
            raise ValueError(f"{op}: X must hold at least one frame. Received {n} frames")
        return np.array([0, n], dtype=np.int64)
    try:
        ln = np.asarray(lengths)
    except (ValueError, TypeError, OverflowError) as e:
        raise ValueError(f"{op}: lengths must be a 1-D sequence of integers. Received {type(lengths).__name__} "
                         f"({e})") from None
    if ln.ndim != 1 or ln.size == 0:
        raise ValueError(f"{op}: lengths must be a non-empty 1-D sequence of integers. Received shape {ln.shape}")
    if ln.dtype == object:  # Python integers beyond 64 bits: checked exactly, one by one
        vals = ln.tolist()
        for i, v in enumerate(vals):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{op}: lengths must be integers. Received {type(v).__name__} {v!r:.40} at "
                                 f"lengths[{i}]")
            if v < 1:
                raise ValueError(f"{op}: every sequence length must be >= 1. Received lengths[{i}] = {v}")
            if v > n:
                raise ValueError(f"{op}: a sequence length cannot exceed the number of frames {n}. Received "
                                 f"lengths[{i}] = {v}")
        ln = np.array(vals, dtype=np.int64)
    elif ln.dtype.kind == "f":
        whole = np.isfinite(ln) & (ln == np.floor(ln))
        if not whole.all():
            i = int(np.argmin(whole))
            raise ValueError(f"{op}: lengths must be whole numbers. Received lengths[{i}] = {ln[i]} "
                             f"(dtype {ln.dtype})")
    elif ln.dtype.kind not in "iu":
        raise ValueError(f"{op}: lengths must be integers. Received dtype {ln.dtype}")
    bad = np.flatnonzero(ln < 1)
    if bad.size:
        raise ValueError(
            f"{op}: every sequence length must be >= 1. Received lengths[{bad[0]}] = {ln[bad[0]]}"
        )
    big = np.flatnonzero(ln > n)  # NumPy compares the Python int n exactly with any integer dtype
    if big.size:
        raise ValueError(f"{op}: a sequence length cannot exceed the number of frames {n}. Received "
                         f"lengths[{big[0]}] = {ln[big[0]]}")
    S = ln.size
    if S > n:
        raise ValueError(f"{op}: lengths must sum to the number of frames {n}. Received {S} sequences of at "
                         f"least one frame each")
    ln = ln.astype(np.int64)  # exact: every length is in [1, n]
    if S * n >= 2**63:  # int64 partial sums could wrap round: the total in Python integers first
        total = sum(ln.tolist())
        if total != n:
            raise ValueError(f"{op}: lengths must sum to the number of frames {n}. Received a sum of {total}")
    off = np.zeros(S + 1, dtype=np.int64)
    np.cumsum(ln, out=off[1:])
    if off[-1] != n:
        raise ValueError(f"{op}: lengths must sum to the number of frames {n}. Received a sum of {int(off[-1])}")
    return off


def _f64(x, op, name):
    x = as_array(x, op, name)
    if x.dtype.kind not in "fiu" or x.dtype == np.bool_:
        raise TypeError(f"{op}: {name} must be a real array. Received dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float64)


def check_model(startprob, transmat, op: str, atol: float = 1e-6):
    """Validate and return float64 contiguous (startprob, transmat)."""
    pi = _f64(startprob, op, "startprob")
    A = _f64(transmat, op, "transmat")
    if pi.ndim != 1 or pi.size < 1:
        raise ValueError(f"{op}: startprob must be 1-D (n_components,) with n_components >= 1. Received shape {pi.shape}")
    K = pi.size
    if A.shape != (K, K):
        raise ValueError(f"{op}: transmat must have shape ({K}, {K}). Received shape {A.shape}")
    require_finite(pi, op, "startprob")
    require_finite(A, op, "transmat")
    if (pi < 0).any():
        raise ValueError(f"{op}: startprob must be non-negative. Received {pi[np.argmax(pi < 0)]} for state {int(np.argmax(pi < 0))}")
    if abs(pi.sum() - 1.0) > atol:
        raise ValueError(f"{op}: startprob must sum to 1. Received a sum of {pi.sum():.6g}")
    if (A < 0).any():
        i, j = np.argwhere(A < 0)[0]
        raise ValueError(f"{op}: transmat must be non-negative. Received {A[i, j]} at row {i} (state {i}), column {j}")
    rs = A.sum(axis=1)
    bad = np.flatnonzero(np.abs(rs - 1.0) > atol)
    if bad.size:
        raise ValueError(
            f"{op}: every row of transmat must sum to 1. Received row {bad[0]} (state {bad[0]}) summing to {rs[bad[0]]:.6g}"
        )
    return pi, A


def _framelogprob(framelogprob, K, op):
    lb = as_array(framelogprob, op, "framelogprob")
    out_dtype = np.float32 if lb.dtype == np.float32 else np.float64
    lb = _f64(lb, op, "framelogprob")
    if lb.ndim != 2 or lb.shape[1] != K:
        raise ValueError(f"{op}: framelogprob must have shape (n_frames, {K}). Received shape {lb.shape}")
    if np.isnan(lb).any() or np.isposinf(lb).any():
        t, k = np.argwhere(~(np.isfinite(lb) | np.isneginf(lb)))[0]
        raise ValueError(f"{op}: framelogprob must be finite or -inf. Received {lb[t, k]} at frame {t}, state {k}")
    return lb, out_dtype


def hmm_forward_backward(startprob, transmat, framelogprob, lengths=None, *, implementation="scaling",
                         posteriors=True, xi=True):
    """Forward-backward over a batch of sequences in one call.

    Parameters
    ----------
    startprob : (K,)   transmat : (K, K)   framelogprob : (N, K) emission log-likelihoods
    lengths : (S,) ints summing to N, or None for one sequence
    implementation : "scaling" or "log". "log" is exact for any spread of log-likelihoods.
        "scaling" keeps probabilities scaled per frame, faster, but a state whose emission or
        forward probability falls more than ~708 nats below the frame's best is flushed to
        zero: where that loses every path of a sequence it raises ScalingUnderflowError (a
        ValueError) instead of returning -inf; where other paths survive, the lost ones are
        missing from the result, so use "log" (the default of every pyaiml.hmm model) when
        states can differ by hundreds of nats in one frame (outliers, extreme features).

    Returns
    -------
    logprob : (S,) per-sequence log-likelihood (-inf where the model cannot emit a sequence)
    posteriors : (N, K) or None
    xi : (K, K) or None, expected transition counts summed over sequences
    """
    op = "hmm_forward_backward"
    if implementation not in ("scaling", "log"):
        raise ValueError(f"{op}: implementation must be 'scaling' or 'log'. Received {implementation!r}")
    pi, A = check_model(startprob, transmat, op)
    lb, dt = _framelogprob(framelogprob, pi.size, op)
    off = offsets_from_lengths(lengths, lb.shape[0], op)
    lp, post, x, _, _ = fb_checked(pi, A, lb, off, implementation == "log", bool(posteriors), bool(xi))
    if dt == np.float32:
        lp = lp.astype(np.float32)
        post = None if post is None else post.astype(np.float32)
        x = None if x is None else x.astype(np.float32)
    return lp, post, x


class ScalingUnderflowError(ValueError):
    """The scaled-probability recursion lost every path of a sequence that log space keeps."""


def _check_scaled(lp, pi, A, lb, off, symbols, op):
    """Scaled recursions return -inf both for a sequence the model cannot emit and for one whose
    every path underflowed (a state far behind the best one that later frames need); log space
    tells them apart. Raises ScalingUnderflowError for the second kind."""
    dead = np.flatnonzero(~(lp > -np.inf))
    if dead.size == 0:
        return
    for s in dead:
        o0, o1 = int(off[s]), int(off[s + 1])
        rows = lb[o0:o1] if symbols is None else lb[symbols[o0:o1]]
        l = _backend.resolve("hmm_forward_backward")(pi, A, np.ascontiguousarray(rows), np.array([0, o1 - o0]),
                                                      True, False, False)[0][0]
        if l > -np.inf:
            raise ScalingUnderflowError(
                f"{op}: implementation='scaling' underflowed on sequence {s} (frames {o0}..{o1 - 1}): its "
                f"log-likelihood is {l:.6g} in log space, but every scaled path fell below the smallest double. "
                "Use implementation='log' (exact for any range of log-likelihoods)"
            )


def fb_checked(pi, A, lb, off, log_space, posteriors, xi, symbols=None, counts=False, start=False):
    """The registry op on arguments already validated (used by pyaiml.hmm models: their
    parameters are checked by _check and emission rows come from pyaiml's own kernels)."""
    r = _backend.resolve("hmm_forward_backward")(pi, A, lb, off, log_space, posteriors, xi, symbols, counts, start)
    if not log_space:
        _check_scaled(r[0], pi, A, lb, off, symbols, "hmm_forward_backward")
    return r


def fb_stats_checked(pi, A, lb, off, log_space, posteriors, xi, symbols, counts, start, obs):
    """``fb_checked`` plus Gaussian statistics of ``obs`` (N, D) float64 C-contiguous frames:
    returns (logprob, post, xi, counts, start, post_sum (K,), obs_sum (K, D), obs_sq (K, D)),
    sums over the frames of sequences the model can emit."""
    r = _backend.resolve("hmm_forward_backward_stats")(pi, A, lb, off, log_space, posteriors, xi, symbols, counts,
                                                       start, obs)
    if not log_space:
        _check_scaled(r[0], pi, A, lb, off, symbols, "hmm_forward_backward")
    return r


def viterbi_checked(pi, A, lb, off, symbols=None):
    with np.errstate(divide="ignore"):
        lpi, lA = np.log(pi), np.log(A)
    return _backend.resolve("hmm_viterbi")(lpi, lA, lb, off, symbols)


def hmm_viterbi(startprob, transmat, framelogprob, lengths=None):
    """Most likely state path per sequence: (logprob (S,), states (N,) int64).

    Ties: the first best state at the last frame, then the highest-index predecessor (the
    path hmmlearn 0.3 returns).
    """
    op = "hmm_viterbi"
    pi, A = check_model(startprob, transmat, op)
    lb, dt = _framelogprob(framelogprob, pi.size, op)
    off = offsets_from_lengths(lengths, lb.shape[0], op)
    with np.errstate(divide="ignore"):
        lpi, lA = np.log(pi), np.log(A)  # NumPy's log, as hmmlearn: bit-identical lattices
    lp, st = _backend.resolve("hmm_viterbi")(lpi, lA, lb, off)
    return (lp.astype(np.float32) if dt == np.float32 else lp), st


def hmm_categorical_loglik(X, emissionprob):
    """log emissionprob[k, X[t]] as (N, K). X: (N,) or (N, 1) integer symbols."""
    op = "hmm_categorical_loglik"
    E = _f64(emissionprob, op, "emissionprob")
    if E.ndim != 2:
        raise ValueError(f"{op}: emissionprob must be 2-D (n_components, n_symbols). Received shape {E.shape}")
    x = as_array(X, op, "X")
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1:
        raise ValueError(f"{op}: X must have shape (n_samples, 1) or (n_samples,). Received shape {x.shape}")
    if x.dtype.kind not in "iu":
        raise TypeError(f"{op}: X must hold integer symbols. Received dtype {x.dtype}")
    bad = np.flatnonzero((x < 0) | (x >= E.shape[1]))
    if bad.size:
        raise ValueError(
            f"{op}: symbols must be in [0, {E.shape[1]}). Received {x[bad[0]]} at sample {bad[0]}"
        )
    with np.errstate(divide="ignore"):
        logET = np.ascontiguousarray(np.log(E).T)
    return logET[x]


def _chol_prec(cov, op, what):
    """Lower-triangular P with P^T P = cov^-1, and log det cov."""
    try:
        L = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise ValueError(f"{op}: {what} must be symmetric positive definite (Cholesky failed)") from None
    d = np.diagonal(L)
    if not np.all(d > 0) or not np.all(np.isfinite(L)):
        raise ValueError(f"{op}: {what} must be symmetric positive definite")
    P = np.linalg.inv(L)
    return np.tril(P), 2.0 * np.sum(np.log(d))


def gaussian_params(means, covars, covariance_type, op="hmm_gaussian_loglik", labels=None):
    """Precompute (means (K, D), prec, cst (K,)) for the emission kernel.

    covars shapes as in hmmlearn's setter: spherical (K,), diag (K, D), full (K, D, D), tied (D, D).
    ``labels[k]`` names entry k in error messages (default "state k").
    """
    lab = (lambda k: f"state {k}") if labels is None else labels
    mu = _f64(means, op, "means")
    if mu.ndim != 2:
        raise ValueError(f"{op}: means must be 2-D (n_components, n_features). Received shape {mu.shape}")
    K, D = mu.shape
    cv = _f64(covars, op, "covars")
    ct = covariance_type
    if ct not in COVARIANCE_TYPES:
        raise ValueError(f"{op}: covariance_type must be one of {COVARIANCE_TYPES}. Received {ct!r}")
    if ct in ("spherical", "diag"):
        if ct == "spherical":
            if cv.shape == (K, D):
                cv = cv[:, 0]
            if cv.shape != (K,):
                raise ValueError(f"{op}: 'spherical' covars must have shape ({K},). Received {cv.shape}")
            cv = np.repeat(cv[:, None], D, axis=1)
        elif cv.shape != (K, D):
            raise ValueError(f"{op}: 'diag' covars must have shape ({K}, {D}). Received {cv.shape}")
        bad = np.argwhere(~(cv > 0))
        if bad.size:
            k, d = bad[0]
            raise ValueError(f"{op}: {ct} covariances must be positive. Received {cv[k, d]} for {lab(k)}, feature {d}")
        cv = np.maximum(cv, np.finfo(float).tiny)
        prec = np.ascontiguousarray(1.0 / cv)
        cst = -0.5 * (D * _LOG2PI + np.log(cv).sum(axis=1))
        return mu, prec, cst
    if ct == "tied":
        if cv.shape != (D, D):
            raise ValueError(f"{op}: 'tied' covars must have shape ({D}, {D}). Received {cv.shape}")
        P, ld = _chol_prec(cv, op, "the tied covariance")
        return mu, np.ascontiguousarray(np.broadcast_to(P, (K, D, D))), np.full(K, -0.5 * (D * _LOG2PI + ld))
    if cv.shape != (K, D, D):
        raise ValueError(f"{op}: 'full' covars must have shape ({K}, {D}, {D}). Received {cv.shape}")
    prec = np.empty((K, D, D))
    cst = np.empty(K)
    for k in range(K):
        if not np.allclose(cv[k], cv[k].T):
            raise ValueError(f"{op}: covariance of {lab(k)} must be symmetric")
        prec[k], ld = _chol_prec(cv[k], op, f"covariance of {lab(k)}")
        cst[k] = -0.5 * (D * _LOG2PI + ld)
    return mu, prec, cst


def _check_X(X, D, op):
    x = _f64(X, op, "X")
    if x.ndim != 2:
        raise ValueError(f"{op}: X must be 2-D (n_samples, n_features). Received shape {x.shape}")
    if x.shape[1] != D:
        raise ValueError(f"{op}: X has {x.shape[1]} features but the model expects {D}")
    if not all_finite(x):
        t, d = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"{op}: X must be finite (no NaN or inf). Received {x[t, d]} at sample {t}, feature {d}")
    return x


def hmm_gaussian_loglik(X, means, covars, covariance_type="diag"):
    """Gaussian emission log-likelihoods (N, K) for each frame and state."""
    op = "hmm_gaussian_loglik"
    params = gaussian_params(means, covars, covariance_type, op)
    return gaussian_loglik_checked(_check_X(X, params[0].shape[1], op), params)


def gaussian_loglik_checked(x, params):
    """``hmm_gaussian_loglik`` on frames already validated (float64, C-contiguous, finite,
    matching feature count) and parameters from ``gaussian_params``."""
    mu, prec, cst = params
    return _backend.resolve("hmm_loglik_gaussian")(x, mu, prec, cst)


def _logsumexp_last(a):
    m = a.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore", under="ignore"):
        return np.log(np.exp(a - m).sum(axis=-1)) + m[..., 0]


def gmm_component_loglik(X, weights, means, covars, covariance_type="diag"):
    """log w_km + log N(x_t; mu_km, Sigma_km) as (N, K, M).

    Shapes as hmmlearn's GMMHMM: weights (K, M), means (K, M, D), covars spherical (K, M),
    diag (K, M, D), full (K, M, D, D), tied (K, D, D) (one covariance per state).
    """
    op = "hmm_gmm_loglik"
    w = _f64(weights, op, "weights")
    mu = _f64(means, op, "means")
    if mu.ndim != 3:
        raise ValueError(f"{op}: means must be 3-D (n_components, n_mix, n_features). Received shape {mu.shape}")
    K, M, D = mu.shape
    if w.shape != (K, M):
        raise ValueError(f"{op}: weights must have shape ({K}, {M}). Received {w.shape}")
    cv = _f64(covars, op, "covars")
    ct = covariance_type
    lab = (lambda i: f"state {i // M}, mixture component {i % M}") if ct != "tied" else (lambda i: f"state {i // M}")
    if ct == "tied":
        if cv.shape != (K, D, D):
            raise ValueError(f"{op}: 'tied' covars must have shape ({K}, {D}, {D}). Received {cv.shape}")
        cvf = np.repeat(cv[:, None], M, axis=1).reshape(K * M, D, D)
        mu2, prec, cst = gaussian_params(mu.reshape(K * M, D), cvf, "full", op, lab)
    else:
        want = {"spherical": (K, M), "diag": (K, M, D), "full": (K, M, D, D)}.get(ct)
        if want is None:
            raise ValueError(f"{op}: covariance_type must be one of {COVARIANCE_TYPES}. Received {ct!r}")
        if cv.shape != want:
            raise ValueError(f"{op}: {ct!r} covars must have shape {want}. Received {cv.shape}")
        mu2, prec, cst = gaussian_params(mu.reshape(K * M, D), cv.reshape((K * M,) + want[2:]), ct, op, lab)
    x = _check_X(X, D, op)
    ll = _backend.resolve("hmm_loglik_gaussian")(x, mu2, prec, cst).reshape(-1, K, M)
    with np.errstate(divide="ignore"):
        ll += np.log(w)[None]
    return ll


def hmm_gmm_loglik(X, weights, means, covars, covariance_type="diag"):
    """Gaussian-mixture emission log-likelihoods (N, K): logsumexp over mixture components."""
    return _logsumexp_last(gmm_component_loglik(X, weights, means, covars, covariance_type))
