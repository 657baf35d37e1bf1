"""Independent HMM oracles for the tests: written apart from pyaiml.reference.hmm (which IS
the NumPy backend, so comparing that backend with it could not fail).

- ``forward_backward``: log-space recursions on dense lattices with scipy's logsumexp, the
  posteriors and xi from the full (T - 1, K, K) joint lattice.
- ``viterbi``: dynamic programming with explicit loops and the documented tie rule (the
  first best state at the last frame, then the highest-index best predecessor).
- ``enumerate_paths``: every one of the K^T paths, for the tiny cases that check the other
  two against the definition itself.
"""
import itertools

import numpy as np
from scipy.special import logsumexp


def _logs(pi, A):
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(pi, float)), np.log(np.asarray(A, float))


def forward_backward(pi, A, lb, off):
    """(logprob (S,), posteriors (N, K) with NaN rows for impossible sequences, xi (K, K))."""
    lpi, lA = _logs(pi, A)
    lb = np.asarray(lb, float)
    K = lpi.size
    S = len(off) - 1
    lp = np.full(S, -np.inf)
    post = np.full(lb.shape, np.nan)
    xi = np.zeros((K, K))
    for s in range(S):
        x = lb[off[s]:off[s + 1]]
        T = len(x)
        la = np.empty((T, K))
        la[0] = lpi + x[0]
        for t in range(1, T):
            la[t] = logsumexp(la[t - 1][:, None] + lA, axis=0) + x[t]
        total = logsumexp(la[-1])
        if not np.isfinite(total):
            continue
        lbeta = np.zeros((T, K))
        for t in range(T - 2, -1, -1):
            lbeta[t] = logsumexp(lA + x[t + 1] + lbeta[t + 1], axis=1)
        lp[s] = total
        post[off[s]:off[s + 1]] = np.exp(la + lbeta - total)
        if T > 1:
            joint = la[:-1, :, None] + lA[None] + (x[1:] + lbeta[1:])[:, None, :] - total
            with np.errstate(under="ignore"):
                xi += np.exp(joint).sum(axis=0)
    return lp, post, xi


def viterbi(lpi, lA, lb, off):
    """(logprob (S,), states (N,)) on log parameters."""
    lb = np.asarray(lb, float)
    K = len(lpi)
    S = len(off) - 1
    lp = np.empty(S)
    states = np.empty(len(lb), np.int64)
    for s in range(S):
        x = lb[off[s]:off[s + 1]]
        T = len(x)
        d = np.asarray(lpi, float) + x[0]
        back = np.zeros((T, K), np.int64)
        for t in range(1, T):
            nd = np.empty(K)
            for j in range(K):
                best, arg = -np.inf, K - 1
                for i in range(K):
                    c = d[i] + lA[i, j]
                    if c >= best:  # ties -> the highest index
                        best, arg = c, i
                back[t, j] = arg
                nd[j] = best + x[t, j]
            d = nd
        k = int(np.argmax(d))  # the first best state
        lp[s] = d[k]
        for t in range(T - 1, -1, -1):
            states[off[s] + t] = k
            k = back[t, k]
    return lp, states


def enumerate_paths(pi, A, lb):
    """One short sequence (T, K), every path: (logprob, posteriors (T, K), xi (K, K), best
    path's log-probability)."""
    lpi, lA = _logs(pi, A)
    T, K = lb.shape
    scores = {}
    for path in itertools.product(range(K), repeat=T):
        scores[path] = lpi[path[0]] + lb[0, path[0]] + sum(lA[path[t - 1], path[t]] + lb[t, path[t]]
                                                           for t in range(1, T))
    vals = np.array(list(scores.values()))
    total = logsumexp(vals)
    post = np.zeros((T, K))
    xi = np.zeros((K, K))
    for path, v in scores.items():
        w = np.exp(v - total)
        for t in range(T):
            post[t, path[t]] += w
            if t:
                xi[path[t - 1], path[t]] += w
    return total, post, xi, vals.max()
