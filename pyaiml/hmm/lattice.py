"""Forward/backward lattices of one sequence, with the signatures of hmmlearn's ``_hmmc``.

What it is: ``forward_log``, ``backward_log``, ``forward_scaling``, ``backward_scaling``,
``compute_log_xi_sum``, ``compute_scaling_xi_sum`` and ``viterbi`` on one sequence (T, K),
returning the full lattices, for code written against hmmlearn's private kernel module
(custom ``_accumulate_sufficient_statistics``, teaching, debugging). Conventions follow
hmmlearn 0.3: the scaled forward lattice is normalised per frame with
``scaling_factors[t] = 1 / sum_k alpha_t(k)``; the scaled backward lattice at t carries the
product of the scaling factors from t to the end; log lattices are natural logs;
``compute_log_xi_sum`` is normalised by the sequence log-likelihood.
What it is not: the engine of pyaiml's models, which never build these lattices (their E-step
is one batched native call over all sequences, ``pyaiml.ops.hmm_forward_backward``). These
run in NumPy, one vectorised step per frame. ``viterbi`` is the batched kernel on one sequence.
Tests: hmmlearn's tests/test_base.py through tools/peer_suites.py, tests/test_hmm_compat.py
(against pyaiml.ops.hmm_forward_backward on random models).
"""
from __future__ import annotations

import numpy as np

from pyaiml.ops import hmm as _ops

__all__ = [
    "backward_log",
    "backward_scaling",
    "compute_log_xi_sum",
    "compute_scaling_xi_sum",
    "forward_log",
    "forward_scaling",
    "viterbi",
]


def _params(startprob, transmat, frames, op, frames_name, log_frames):
    pi = np.asarray(startprob, dtype=np.float64)
    A = np.asarray(transmat, dtype=np.float64)
    F = np.asarray(frames, dtype=np.float64)
    if pi.ndim != 1 or pi.size < 1:
        raise ValueError(f"{op}: startprob must be 1-D (n_components,). Received shape {pi.shape}")
    K = pi.size
    if A.shape != (K, K):
        raise ValueError(f"{op}: transmat must have shape ({K}, {K}). Received shape {A.shape}")
    if F.ndim != 2 or F.shape[1] != K or F.shape[0] < 1:
        raise ValueError(f"{op}: {frames_name} must have shape (n_samples >= 1, {K}). Received shape {F.shape}")
    for name, a in (("startprob", pi), ("transmat", A)):
        if not np.all(np.isfinite(a)) or np.any(a < 0):
            raise ValueError(f"{op}: {name} must be finite and non-negative (probabilities)")
    if log_frames:
        if np.isnan(F).any() or np.isposinf(F).any():
            raise ValueError(f"{op}: {frames_name} must be finite or -inf (log-probabilities)")
    elif not np.all(np.isfinite(F)) or np.any(F < 0):
        raise ValueError(f"{op}: {frames_name} must be finite and non-negative (probabilities)")
    return pi, A, F


def _lse(a, axis):
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore", under="ignore"):
        return np.log(np.sum(np.exp(a - m), axis=axis)) + np.squeeze(m, axis=axis)


def _logs(pi, A):
    with np.errstate(divide="ignore"):
        return np.log(pi), np.log(A)


def forward_log(startprob, transmat, log_frameprob):
    """(log_prob, fwdlattice (T, K)): log alpha_t(k) = log p(x_0..x_t, z_t = k)."""
    pi, A, lf = _params(startprob, transmat, log_frameprob, "forward_log", "log_frameprob", True)
    lpi, lA = _logs(pi, A)
    T, K = lf.shape
    fwd = np.empty((T, K))
    fwd[0] = lpi + lf[0]
    for t in range(1, T):
        fwd[t] = _lse(fwd[t - 1][:, None] + lA, axis=0) + lf[t]
    return float(_lse(fwd[-1], axis=0)), fwd


def backward_log(startprob, transmat, log_frameprob):
    """bwdlattice (T, K): log beta_t(k) = log p(x_t+1..x_T-1 | z_t = k); the last row is 0."""
    pi, A, lf = _params(startprob, transmat, log_frameprob, "backward_log", "log_frameprob", True)
    _, lA = _logs(pi, A)
    T, K = lf.shape
    bwd = np.empty((T, K))
    bwd[-1] = 0.0
    for t in range(T - 2, -1, -1):
        bwd[t] = _lse(lA + (lf[t + 1] + bwd[t + 1])[None, :], axis=1)
    return bwd


def forward_scaling(startprob, transmat, frameprob):
    """(log_prob, fwdlattice (T, K) normalised per frame, scaling_factors (T,)).

    Raises ValueError where a frame's forward probabilities all underflow to 0 (use the log
    lattices then), as hmmlearn does.
    """
    pi, A, f = _params(startprob, transmat, frameprob, "forward_scaling", "frameprob", False)
    T, K = f.shape
    fwd = np.empty((T, K))
    scale = np.empty(T)
    prev = pi
    for t in range(T):
        a = (prev if t == 0 else prev @ A) * f[t]
        s = a.sum()
        if not s > 0:
            raise ValueError(f"forward_scaling: the forward probabilities of frame {t} all underflowed to 0; "
                             "use the log-space lattices (forward_log, implementation='log')")
        scale[t] = 1.0 / s
        fwd[t] = a * scale[t]
        prev = fwd[t]
    return float(-np.log(scale).sum()), fwd, scale


def backward_scaling(startprob, transmat, frameprob, scaling_factors):
    """bwdlattice (T, K): beta_t(k) times the product of scaling_factors[t:]."""
    _, A, f = _params(startprob, transmat, frameprob, "backward_scaling", "frameprob", False)
    c = np.asarray(scaling_factors, dtype=np.float64)
    T, K = f.shape
    if c.shape != (T,):
        raise ValueError(f"backward_scaling: scaling_factors must have shape ({T},). Received shape {c.shape}")
    bwd = np.empty((T, K))
    bwd[-1] = c[-1]
    for t in range(T - 2, -1, -1):
        bwd[t] = (A @ (f[t + 1] * bwd[t + 1])) * c[t]
    return bwd


def _lattices(fwd, bwd, T, K, op):
    fwd = np.asarray(fwd, dtype=np.float64)
    bwd = np.asarray(bwd, dtype=np.float64)
    if fwd.shape != (T, K) or bwd.shape != (T, K):
        raise ValueError(f"{op}: fwdlattice and bwdlattice must have shape ({T}, {K}). Received {fwd.shape} and "
                         f"{bwd.shape}")
    return fwd, bwd


def compute_scaling_xi_sum(fwdlattice, transmat, bwdlattice, frameprob):
    """(K, K) expected transition counts from the scaled lattices of one sequence."""
    A = np.asarray(transmat, dtype=np.float64)
    f = np.asarray(frameprob, dtype=np.float64)
    K = A.shape[0]
    if f.ndim != 2 or A.shape != (K, K) or f.shape[1] != K:
        raise ValueError(f"compute_scaling_xi_sum: frameprob (T, K) and transmat (K, K) do not match. "
                         f"Received {f.shape} and {A.shape}")
    fwd, bwd = _lattices(fwdlattice, bwdlattice, f.shape[0], K, "compute_scaling_xi_sum")
    return A * (fwd[:-1].T @ (f[1:] * bwd[1:]))


def compute_log_xi_sum(fwdlattice, transmat, bwdlattice, log_frameprob):
    """(K, K) log of the expected transition counts from the log lattices of one sequence."""
    A = np.asarray(transmat, dtype=np.float64)
    lf = np.asarray(log_frameprob, dtype=np.float64)
    K = A.shape[0]
    if lf.ndim != 2 or A.shape != (K, K) or lf.shape[1] != K:
        raise ValueError(f"compute_log_xi_sum: log_frameprob (T, K) and transmat (K, K) do not match. "
                         f"Received {lf.shape} and {A.shape}")
    fwd, bwd = _lattices(fwdlattice, bwdlattice, lf.shape[0], K, "compute_log_xi_sum")
    with np.errstate(divide="ignore"):
        lA = np.log(A)
    log_prob = _lse(fwd[-1], axis=0)
    terms = fwd[:-1, :, None] + lA[None] + (lf[1:] + bwd[1:])[:, None, :] - log_prob  # (T-1, K, K)
    if terms.shape[0] == 0:
        return np.full((K, K), -np.inf)
    return _lse(terms, axis=0)


def viterbi(startprob, transmat, log_frameprob):
    """(log_prob, state_sequence (T,)) of the best path, on pyaiml's Viterbi kernel."""
    lp, states = _ops.hmm_viterbi(startprob, transmat, log_frameprob)
    return float(lp[0]), states
