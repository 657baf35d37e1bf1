"""Adapters from the HMM ops' registry signatures to the pyaiml._C entry points."""
from __future__ import annotations

from pyaiml import _backend

_C = _backend.native()


def forward_backward(startprob, transmat, framelogprob, offsets, log_space=False, posteriors=True, xi=True,
                     symbols=None, counts=False, start=False):
    return _C.hmm_forward_backward(startprob, transmat, framelogprob, offsets, log_space, posteriors, xi, symbols,
                                   counts, start)[:5]


def forward_backward_stats(startprob, transmat, framelogprob, offsets, log_space, posteriors, xi, symbols, counts,
                           start, obs):
    return _C.hmm_forward_backward(startprob, transmat, framelogprob, offsets, log_space, posteriors, xi, symbols,
                                   counts, start, obs)


def viterbi(log_startprob, log_transmat, framelogprob, offsets, symbols=None):
    return _C.hmm_viterbi(log_startprob, log_transmat, framelogprob, offsets, symbols)


def loglik_gaussian(X, means, prec, cst):
    return _C.hmm_loglik_gaussian(X, means, prec, cst)
