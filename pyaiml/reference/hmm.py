"""NumPy oracles for the HMM kernels: slow, obvious, float64, one sequence at a time.

Same signatures as the C++ entry points (``pyaiml._C.hmm_*``) and the Numba fallbacks in
``pyaiml._numba.hmm``. Names: S sequences, K states, N frames in all, D features; a batch
is ``framelogprob`` (N, K) with ``offsets`` (S + 1,) marking where each sequence starts.
Tests: tests/test_hmm_ops.py.
"""
from __future__ import annotations

import numpy as np


def _logsumexp(a, axis=None, keepdims=False):
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore", under="ignore"):
        s = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return s if keepdims else np.squeeze(s, axis=axis)


def _fb_log(pi, A, lb):
    """Log-space forward-backward on one sequence: lb (T, K) -> (logprob, post (T, K), xi (K, K))."""
    T, K = lb.shape
    with np.errstate(divide="ignore"):
        lpi, lA = np.log(pi), np.log(A)
    la = np.empty((T, K))
    la[0] = lpi + lb[0]
    for t in range(1, T):
        la[t] = _logsumexp(la[t - 1][:, None] + lA, axis=0) + lb[t]
    lp = _logsumexp(la[-1])
    lbeta = np.zeros((T, K))
    for t in range(T - 2, -1, -1):
        lbeta[t] = _logsumexp(lA + (lb[t + 1] + lbeta[t + 1])[None, :], axis=1)
    g = la + lbeta
    g = np.exp(g - _logsumexp(g, axis=1, keepdims=True))
    xi = np.zeros((K, K))
    for t in range(T - 1):
        with np.errstate(under="ignore"):
            xi += np.exp(la[t][:, None] + lA + (lb[t + 1] + lbeta[t + 1])[None, :] - lp)
    return lp, g, xi


def _fb_scaled(pi, A, lb):
    """Scaled forward-backward (emissions max-shifted per frame) on one sequence."""
    T, K = lb.shape
    mb = lb.max(axis=1)
    b = np.exp(lb - mb[:, None])
    al = np.empty((T, K))
    c = np.empty(T)
    for t in range(T):
        a = pi * b[0] if t == 0 else (al[t - 1] @ A) * b[t]
        c[t] = a.sum()
        if not c[t] > 0:
            return -np.inf, None, None
        al[t] = a / c[t]
    lp = np.log(c).sum() + mb.sum()
    be = np.ones((T, K))
    for t in range(T - 2, -1, -1):
        be[t] = A @ (b[t + 1] * be[t + 1]) / c[t + 1]
    g = al * be
    g /= g.sum(axis=1, keepdims=True)
    xi = np.zeros((K, K))
    for t in range(T - 1):
        xi += al[t][:, None] * A * (b[t + 1] * be[t + 1])[None, :] / c[t + 1]
    return lp, g, xi


def with_extras(fb):
    """Wrap a 7-argument forward-backward into the full op signature: ``symbols`` pick rows of
    a (M, K) table, ``counts`` (M, K) sums posteriors per symbol, ``start`` (K,) sums the
    posteriors at t = 0; sequences the model cannot emit contribute nothing."""

    def op(startprob, transmat, framelogprob, offsets, log_space=False, posteriors=True, xi=True, symbols=None,
           counts=False, start=False):
        lb = framelogprob if symbols is None else np.ascontiguousarray(framelogprob[symbols])
        lp, post, x = fb(startprob, transmat, lb, offsets, log_space, posteriors or counts or start, xi)
        ok = np.isfinite(lp)
        okf = np.repeat(ok, np.diff(offsets))
        cnt = st = None
        if counts:
            M, K = framelogprob.shape
            cnt = np.zeros((M, K))
            np.add.at(cnt, symbols[okf], post[okf])
        if start:
            st = post[np.asarray(offsets[:-1])[ok]].sum(axis=0)
        return lp, (post if posteriors else None), x, cnt, st

    return op


def _forward_backward(startprob, transmat, framelogprob, offsets, log_space=False, posteriors=True, xi=True):
    """Batched forward-backward.

    Parameters
    ----------
    startprob : (K,)   transmat : (K, K)   framelogprob : (N, K)   offsets : (S + 1,) int64
    log_space : bool, recursions in log space (True) or scaled probabilities (False)

    Returns
    -------
    (logprob (S,), posteriors (N, K) or None, xi (K, K) or None); a sequence the model cannot
    emit gets logprob -inf, NaN posteriors and no share of xi. The registered op
    ``forward_backward`` adds symbols / counts / start (see ``with_extras``).
    """
    pi = np.asarray(startprob, np.float64)
    A = np.asarray(transmat, np.float64)
    lb_all = np.asarray(framelogprob, np.float64)
    S = len(offsets) - 1
    K = len(pi)
    lp = np.empty(S)
    post = np.full(lb_all.shape, np.nan) if posteriors else None
    xs = np.zeros((K, K)) if xi else None
    for s in range(S):
        o0, o1 = int(offsets[s]), int(offsets[s + 1])
        lb = lb_all[o0:o1]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            l, g, x = (_fb_log if log_space else _fb_scaled)(pi, A, lb)
        if not np.isfinite(l) or g is None:
            lp[s] = -np.inf
            continue
        lp[s] = l
        if posteriors:
            post[o0:o1] = g
        if xi:
            xs += x
    return lp, post, xs


def viterbi(log_startprob, log_transmat, framelogprob, offsets, symbols=None):
    """Batched Viterbi on log parameters: (logprob (S,), states (N,) int64).

    Ties: the first state at the last frame, then the highest-index predecessor.
    """
    lpi = np.asarray(log_startprob, np.float64)
    lA = np.asarray(log_transmat, np.float64)
    lb_all = np.asarray(framelogprob, np.float64)
    if symbols is not None:
        lb_all = lb_all[symbols]
    S = len(offsets) - 1
    lp = np.empty(S)
    states = np.empty(lb_all.shape[0], np.int64)
    for s in range(S):
        o0, o1 = int(offsets[s]), int(offsets[s + 1])
        lb = lb_all[o0:o1]
        T = o1 - o0
        d = lpi + lb[0]
        psi = np.zeros((T, len(lpi)), np.int64)
        for t in range(1, T):
            cand = d[:, None] + lA
            psi[t] = len(lpi) - 1 - np.argmax(cand[::-1], axis=0)
            d = cand[psi[t], np.arange(len(lpi))] + lb[t]
        best = int(np.argmax(d))
        lp[s] = d[best]
        states[o1 - 1] = best
        for t in range(T - 1, 0, -1):
            best = int(psi[t, best])
            states[o0 + t - 1] = best
    return lp, states


forward_backward = with_extras(_forward_backward)


def with_stats(fb):
    """Wrap a full-signature forward-backward (``with_extras``) into the statistics op: adds
    ``obs`` (N, D) and returns (..., post_sum (K,), obs_sum (K, D), obs_sq (K, D)), sums of
    posterior, posterior * x and posterior * x^2 over the frames of the sequences the model
    can emit (the others contribute nothing)."""

    def op(startprob, transmat, framelogprob, offsets, log_space, posteriors, xi, symbols, counts, start, obs):
        lp, post, x, cnt, st = fb(startprob, transmat, framelogprob, offsets, log_space, True, xi, symbols, counts,
                                  start)
        ok = np.repeat(np.isfinite(lp), np.diff(offsets))
        g = np.where(ok[:, None], post, 0.0)
        X = np.asarray(obs, np.float64)
        ps = g.sum(axis=0)
        s1 = np.einsum("nk,nd->kd", g, X)
        s2 = np.einsum("nk,nd->kd", g, X * X)
        return lp, (post if posteriors else None), x, cnt, st, ps, s1, s2

    return op


forward_backward_stats = with_stats(forward_backward)


def loglik_gaussian(X, means, prec, cst):
    """Gaussian emission log-likelihoods (N, K).

    prec (K, D): diagonal precisions, out = cst - 0.5 sum (x - mu)^2 prec;
    prec (K, D, D): lower-triangular factors P with P^T P = Sigma^-1, out = cst - 0.5 |P (x - mu)|^2.
    """
    X = np.asarray(X, np.float64)
    means = np.asarray(means, np.float64)
    prec = np.asarray(prec, np.float64)
    diff = X[:, None, :] - means[None, :, :]  # (N, K, D)
    if prec.ndim == 2:
        q = np.sum(diff**2 * prec[None], axis=2)
    else:
        y = np.einsum("krc,nkc->nkr", prec, diff)
        q = np.sum(y**2, axis=2)
    return np.asarray(cst)[None, :] - 0.5 * q
