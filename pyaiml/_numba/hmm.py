"""Numba fallbacks for the HMM kernels, same signatures as ``pyaiml._C.hmm_*``.

Sequences run in parallel (``prange``); each sequence writes its own slice of the
posteriors and its own transition-count matrix, and those matrices are summed in sequence
order afterwards, so the result does not depend on the thread count. Same algorithms as
csrc/cpu/hmm.cpp (scaled space with max-shifted emissions, or log space), without SIMD.
Not here: argument checks (pyaiml/ops/hmm.py). Tests: tests/test_hmm_ops.py.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from pyaiml.reference.hmm import with_extras, with_stats

_NEG_INF = -np.inf


@nb.njit(cache=True)
def _fb_scaled(pi, A, lb, post, want_post, X, want_xi):
    T, K = lb.shape
    B = np.empty((T, K))
    al = np.empty((T, K))
    c = np.empty(T)
    lp = 0.0
    for t in range(T):
        mb = _NEG_INF
        for k in range(K):
            if lb[t, k] > mb:
                mb = lb[t, k]
        if not mb > _NEG_INF:
            return _NEG_INF
        lp += mb
        for k in range(K):
            B[t, k] = np.exp(lb[t, k] - mb)
    for t in range(T):
        if t == 0:
            for k in range(K):
                al[0, k] = pi[k] * B[0, k]
        else:
            for j in range(K):
                al[t, j] = 0.0
            for i in range(K):
                a = al[t - 1, i]
                for j in range(K):
                    al[t, j] += a * A[i, j]
            for j in range(K):
                al[t, j] *= B[t, j]
        s = 0.0
        for k in range(K):
            s += al[t, k]
        if not (s > 0.0 and np.isfinite(s)):
            return _NEG_INF
        c[t] = s
        for k in range(K):
            al[t, k] /= s
        lp += np.log(s)
    if not want_post and not want_xi:
        return lp
    beta = np.ones(K)
    nb_ = np.empty(K)
    for t in range(T - 1, -1, -1):
        if want_post:
            s = 0.0
            for k in range(K):
                post[t, k] = al[t, k] * beta[k]
                s += post[t, k]
            for k in range(K):
                post[t, k] /= s
        if t > 0:
            for k in range(K):
                B[t, k] = B[t, k] * beta[k] / c[t]
            for i in range(K):
                acc = 0.0
                for j in range(K):
                    acc += A[i, j] * B[t, j]
                nb_[i] = acc
            beta[:] = nb_
    if want_xi:
        for t in range(T - 1):
            for i in range(K):
                u = al[t, i]
                for j in range(K):
                    X[i, j] += u * B[t + 1, j]
    return lp


# Below this, an entry of the max-shifted product may have lost underflowed terms: it is
# recomputed exactly as a log-sum-exp over its sources (see csrc/cpu/hmm.cpp, fb_log).
_LSE_TINY = 1e-290


@nb.njit(cache=True, inline="always")
def _lse_dot(x, M, buf):
    """log sum_i exp(x[i] + log M[i]) over the entries with M[i] > 0, shifted by its own max."""
    mx = _NEG_INF
    for i in range(x.shape[0]):
        v = x[i] + np.log(M[i]) if (M[i] > 0.0 and x[i] > _NEG_INF) else _NEG_INF
        buf[i] = v
        if v > mx:
            mx = v
    if not mx > _NEG_INF:
        return _NEG_INF
    s = 0.0
    for i in range(x.shape[0]):
        if buf[i] > _NEG_INF:
            s += np.exp(buf[i] - mx)
    return mx + np.log(s)


@nb.njit(cache=True)
def _fb_log(pi, A, lb, post, want_post, X, Xe, want_xi):
    T, K = lb.shape
    la = np.empty((T, K))
    U = np.empty((T, K))
    L = np.empty(T)
    tmp = np.empty(K)
    buf = np.empty(K)
    AT = np.ascontiguousarray(A.T)
    for t in range(T):
        if t == 0:
            for k in range(K):
                la[0, k] = (np.log(pi[k]) if pi[k] > 0 else _NEG_INF) + lb[0, k]
        else:
            for j in range(K):
                tmp[j] = 0.0
            for i in range(K):
                u = U[t - 1, i]
                for j in range(K):
                    tmp[j] += u * A[i, j]
            for j in range(K):
                if tmp[j] < _LSE_TINY:
                    la[t, j] = _lse_dot(la[t - 1], AT[j], buf) + lb[t, j]
                else:
                    la[t, j] = np.log(tmp[j]) + L[t - 1] + lb[t, j]
        mx = _NEG_INF
        for k in range(K):
            if la[t, k] > mx:
                mx = la[t, k]
        if not mx > _NEG_INF:
            return _NEG_INF
        s = 0.0
        for k in range(K):
            U[t, k] = np.exp(la[t, k] - mx)
            s += U[t, k]
        for k in range(K):
            U[t, k] /= s
        L[t] = mx + np.log(s)
    lp = L[T - 1]
    if not want_post and not want_xi:
        return lp
    W = np.zeros((T, K))
    lbeta = np.zeros(K)
    v = np.empty(K)
    lv = np.empty(K)
    for t in range(T - 1, -1, -1):
        if want_post:
            mx = _NEG_INF
            for k in range(K):
                v[k] = la[t, k] + lbeta[k]
                if v[k] > mx:
                    mx = v[k]
            s = 0.0
            for k in range(K):
                v[k] = np.exp(v[k] - mx)
                s += v[k]
            for k in range(K):
                post[t, k] = v[k] / s
        if t > 0:
            mv = _NEG_INF
            for k in range(K):
                lv[k] = lb[t, k] + lbeta[k]
                if lv[k] > mv:
                    mv = lv[k]
            for k in range(K):
                v[k] = np.exp(lv[k] - mv)
            for i in range(K):
                acc = 0.0
                for j in range(K):
                    acc += A[i, j] * v[j]
                tmp[i] = acc
            if want_xi:
                # sum_ij xi_t = f * (U_{t-1} . A v) must be 1; a step where it is not is summed
                # exactly in log space
                f = np.exp(mv + L[t - 1] - lp)
                c = 0.0
                for k in range(K):
                    c += U[t - 1, k] * tmp[k]
                c *= f
                tol = 1e-7 + 1e-15 * (abs(mv) + abs(L[t - 1]) + abs(lp))
                if abs(c - 1.0) <= tol:
                    for k in range(K):
                        W[t, k] = v[k] * f
                else:
                    for i in range(K):
                        if not la[t - 1, i] > _NEG_INF:
                            continue
                        for j in range(K):
                            if A[i, j] > 0.0 and lv[j] > _NEG_INF:
                                Xe[i, j] += np.exp(la[t - 1, i] + np.log(A[i, j]) + lv[j] - lp)
            for i in range(K):
                if tmp[i] < _LSE_TINY:
                    lbeta[i] = _lse_dot(lv, A[i], buf)
                else:
                    lbeta[i] = np.log(tmp[i]) + mv
    if want_xi:
        for t in range(T - 1):
            for i in range(K):
                u = U[t, i]
                for j in range(K):
                    X[i, j] += u * W[t + 1, j]
    return lp


@nb.njit(parallel=True, cache=True)
def _fb_batch(pi, A, lb, off, log_space, want_post, want_xi, lp, post, xis, xes):
    S = off.shape[0] - 1
    for s in nb.prange(S):
        o0, o1 = off[s], off[s + 1]
        p = post[o0:o1]
        if log_space:
            r = _fb_log(pi, A, lb[o0:o1], p, want_post, xis[s], xes[s], want_xi)
        else:
            r = _fb_scaled(pi, A, lb[o0:o1], p, want_post, xis[s], want_xi)
        lp[s] = r
        if not r > _NEG_INF:
            lp[s] = _NEG_INF
            if want_post:
                p[:, :] = np.nan
            xis[s][:, :] = 0.0
            xes[s][:, :] = 0.0


def _forward_backward(startprob, transmat, framelogprob, offsets, log_space=False, posteriors=True, xi=True):
    S = len(offsets) - 1
    N, K = framelogprob.shape
    lp = np.empty(S)
    post = np.empty((N, K)) if posteriors else np.empty((N, 0))
    xis = np.zeros((S, K, K) if xi else (S, 0, 0))
    # exact log-space counts of the steps the factored product lost (added after the * A)
    xes = np.zeros((S, K, K) if xi and log_space else (S, 0, 0))
    _fb_batch(startprob, transmat, framelogprob, offsets, bool(log_space), bool(posteriors), bool(xi), lp, post, xis,
              xes)
    xs = None
    if xi:
        xs = np.zeros((K, K))
        for s in range(S):  # fixed order
            xs += xis[s]
        xs *= transmat
        if log_space:
            for s in range(S):
                xs += xes[s]
    return lp, (post if posteriors else None), xs


@nb.njit(parallel=True, cache=True)
def _viterbi_batch(lpi, lA, lb, off, lp, states):
    S = off.shape[0] - 1
    K = lpi.shape[0]
    for s in nb.prange(S):
        o0, o1 = off[s], off[s + 1]
        T = o1 - o0
        psi = np.zeros((T, K), np.int64)
        d = np.empty(K)
        d1 = np.empty(K)
        for k in range(K):
            d[k] = lpi[k] + lb[o0, k]
        for t in range(1, T):
            for j in range(K):
                best = _NEG_INF
                arg = 0
                for i in range(K):
                    c = d[i] + lA[i, j]
                    if c >= best:
                        best = c
                        arg = i
                d1[j] = best + lb[o0 + t, j]
                psi[t, j] = arg
            d[:] = d1
        b = 0
        for k in range(1, K):
            if d[k] > d[b]:
                b = k
        lp[s] = d[b]
        states[o1 - 1] = b
        for t in range(T - 1, 0, -1):
            b = psi[t, b]
            states[o0 + t - 1] = b


def viterbi(log_startprob, log_transmat, framelogprob, offsets, symbols=None):
    if symbols is not None:
        framelogprob = np.ascontiguousarray(framelogprob[symbols])
    S = len(offsets) - 1
    lpi, lA = log_startprob, log_transmat
    lp = np.empty(S)
    states = np.empty(framelogprob.shape[0], np.int64)
    _viterbi_batch(lpi, lA, framelogprob, offsets, lp, states)
    return lp, states


forward_backward = with_extras(_forward_backward)
forward_backward_stats = with_stats(forward_backward)


@nb.njit(parallel=True, cache=True)
def _loglik_diag(X, means, prec, cst, out):
    N, D = X.shape
    K = means.shape[0]
    for t in nb.prange(N):
        for k in range(K):
            q = 0.0
            for d in range(D):
                df = X[t, d] - means[k, d]
                q += df * df * prec[k, d]
            out[t, k] = cst[k] - 0.5 * q


@nb.njit(parallel=True, cache=True)
def _loglik_full(X, means, pchol, cst, out):
    N, D = X.shape
    K = means.shape[0]
    for t in nb.prange(N):
        df = np.empty(D)
        for k in range(K):
            for d in range(D):
                df[d] = X[t, d] - means[k, d]
            q = 0.0
            for r in range(D):
                y = 0.0
                for c in range(r + 1):
                    y += pchol[k, r, c] * df[c]
                q += y * y
            out[t, k] = cst[k] - 0.5 * q


def loglik_gaussian(X, means, prec, cst):
    out = np.empty((X.shape[0], means.shape[0]))
    if prec.ndim == 2:
        _loglik_diag(X, means, prec, cst, out)
    else:
        _loglik_full(X, means, prec, cst, out)
    return out
