"""Small array helpers of pyaiml.hmm with hmmlearn.utils' names and semantics.

What it is: ``normalize`` (divide in place by the sum along an axis; all-zero rows stay
zero), ``log_normalize`` (subtract the log-sum-exp in place), ``fill_covars`` (any
covariance_type's parameters -> (n_components, n_features, n_features) matrices).
What it is not: the models' hot paths (those run in pyaiml.ops kernels).
Tests: hmmlearn's own tests/test_utils.py through tools/peer_suites.py, tests/test_hmm_compat.py.
"""
from __future__ import annotations

import numpy as np

from pyaiml.hmm.base import normalize

__all__ = ["fill_covars", "log_normalize", "normalize"]


def log_normalize(a, axis=None):
    """Make ``sum(exp(a))`` along ``axis`` equal 1, in place (a row of one -inf becomes 0)."""
    if axis is not None and a.shape[axis] == 1:
        a[...] = 0  # one entry per row: its probability is 1 whatever its value (also -inf)
        return
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore", under="ignore"):
        a -= np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m


def fill_covars(covars, covariance_type="full", n_components=1, n_features=1):
    """Covariance parameters in their ``covariance_type`` shape -> full matrices (K, D, D).

    spherical (K,) -> eye(D) * c_k; diag (K, D) -> diag(c_k); tied (D, D) -> repeated K
    times; full (K, D, D) -> itself.
    """
    if covariance_type == "full":
        return covars
    if covariance_type == "diag":
        return np.array([np.diag(c) for c in covars])
    if covariance_type == "tied":
        return np.tile(covars, (n_components, 1, 1))
    if covariance_type == "spherical":
        return np.eye(n_features)[None] * np.ravel(covars)[:, None, None]
    raise ValueError(f"fill_covars: covariance_type must be one of ('spherical', 'diag', 'full', 'tied'). "
                     f"Received {covariance_type!r}")
