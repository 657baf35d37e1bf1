"""Base class of pyaiml's hmmlearn-compatible HMMs: input handling, EM loop, decoding,
sampling, convergence monitor, save/load without pickle, left-right topologies.

hmmlearn's extension points work as there: a subclass that defines only
``_compute_log_likelihood`` (or ``_compute_likelihood``) gets score, decode, predict and
sampling of states through this class; ``_init(X, lengths)``, ``_check_and_set_n_features``,
``_needs_init`` (logs when ``init_params`` overwrites a parameter that was set),
``_get_n_fit_scalars_per_param`` (logs a degenerate fit; ``aic``/``bic``) keep hmmlearn's
names and signatures, and messages go to the ``logging`` logger of this module as there.

The E-step is one native call over all sequences (``pyaiml.ops.hmm_forward_backward``:
threaded, GIL released, same bits for any thread count); it also returns the emission
statistics the M-step needs where the kernel has them (per-symbol posterior sums,
posterior-weighted sums of Gaussian frames and their squares), so the (N, K) posteriors
are only written out when a model needs them (full and tied covariances, GMMHMM).
Emission models live in ``pyaiml.hmm.models``. Files: ``save`` writes one .npz (config and
history as JSON, parameters as arrays) atomically; ``load`` reads only the parameter names of
the saved class and checks their values as the models' setters and ``_check`` do, raising
``ValueError`` naming the file for anything else.
Tests: tests/test_hmm_models.py, tests/test_hmm_parity.py, tests/test_io_hmm_files.py,
tests/test_hmm_compat.py, hmmlearn's own suite (tools/peer_suites.py hmmlearn).
"""
from __future__ import annotations

import copy
import inspect
import json
import logging
import os
import string
import sys
import warnings
from collections import deque

import numpy as np

from pyaiml._io import atomic_savez, bad_file, read_npz
from pyaiml.ops import hmm as _ops
from pyaiml.ops._validate import all_finite

_log = logging.getLogger(__name__)

DECODER_ALGORITHMS = ("viterbi", "map")
FORMAT = "pyaiml.hmm/1"


class ConvergenceWarning(RuntimeWarning):
    """EM produced a lower log-likelihood than at the previous iteration."""


def check_random_state(seed):
    """None -> the global RandomState, int -> a new RandomState, RandomState -> itself."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, (int, np.integer)):
        return np.random.RandomState(seed)
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(f"random_state must be None, an int or a numpy RandomState. Received {type(seed).__name__}")


def normalize(a, axis=None):
    """Divide ``a`` in place by its sum along ``axis``; all-zero rows stay zero."""
    s = a.sum(axis=axis, keepdims=axis is not None)
    if axis is not None:
        s[s == 0] = 1
    a /= s


class ConvergenceMonitor:
    """Tracks the log-likelihood of each EM iteration.

    Attributes
    ----------
    history : deque, the log-likelihood of every iteration (full history, not only the last two)
    iter : int, iterations performed
    converged : bool, n_iter reached or the last gain is below tol
    """

    _template = "{iter:>10d} {log_prob:>16.8f} {delta:>+16.8f}"

    def __init__(self, tol, n_iter, verbose):
        self.tol = tol
        self.n_iter = n_iter
        self.verbose = verbose
        self.history = deque()
        self.iter = 0

    def __repr__(self):
        return (f"{type(self).__name__}(tol={self.tol}, n_iter={self.n_iter}, verbose={self.verbose}, "
                f"iter={self.iter}, history={list(self.history)})")

    def _reset(self):
        self.iter = 0
        self.history.clear()

    def report(self, log_prob):
        if self.verbose:
            delta = log_prob - self.history[-1] if self.history else np.nan
            print(self._template.format(iter=self.iter + 1, log_prob=log_prob, delta=delta), file=sys.stderr)
        precision = np.finfo(float).eps ** 0.5
        if self.history and (log_prob - self.history[-1]) < -precision * max(1.0, abs(log_prob)):
            warnings.warn(
                f"EM log-likelihood decreased at iteration {self.iter + 1}: {log_prob} < {self.history[-1]} "
                f"(delta {log_prob - self.history[-1]:.6g})",
                ConvergenceWarning, stacklevel=3)
        self.history.append(log_prob)
        self.iter += 1

    @property
    def converged(self):
        return self.iter == self.n_iter or (len(self.history) >= 2 and self.history[-1] - self.history[-2] < self.tol)


def left_right(n_components, n_jumps=1, self_loop=None):
    """Left-right (Bakis) topology: ``(startprob, transmat)``.

    State i may go to i, i+1, ..., i+n_jumps (clipped at the last state); every other
    transition is a structural zero, which EM keeps exactly zero. ``startprob`` puts all mass
    on state 0. ``self_loop`` (in (0, 1)) sets transmat[i, i]; the rest of the row is spread
    evenly over the forward jumps; default: uniform over the allowed targets.
    """
    K = int(n_components)
    if K < 1:
        raise ValueError(f"left_right: n_components must be >= 1. Received {n_components}")
    if int(n_jumps) < 1:
        raise ValueError(f"left_right: n_jumps must be >= 1. Received {n_jumps}")
    if self_loop is not None and not (0.0 < self_loop < 1.0):
        raise ValueError(f"left_right: self_loop must be in (0, 1). Received {self_loop}")
    A = np.zeros((K, K))
    for i in range(K):
        hi = min(K - 1, i + int(n_jumps))
        if hi == i:
            A[i, i] = 1.0
        elif self_loop is None:
            A[i, i:hi + 1] = 1.0 / (hi - i + 1)
        else:
            A[i, i] = self_loop
            A[i, i + 1:hi + 1] = (1.0 - self_loop) / (hi - i)
    pi = np.zeros(K)
    pi[0] = 1.0
    return pi, A


class BaseHMM:
    """Shared machinery of CategoricalHMM, GaussianHMM and GMMHMM (hmmlearn 0.3 semantics).

    Extras over hmmlearn: ``X`` may be a list of arrays (one per sequence) wherever
    ``X, lengths`` is taken; ``score(..., per_sequence=True)``; ``n_init`` restarts keeping
    the best; the full log-likelihood history in ``monitor_.history``; ``save``/``load``.

    ``implementation``: "log" (default) is exact for any spread of log-likelihoods; "scaling"
    is faster but flushes states more than ~708 nats behind a frame's best (see
    ``pyaiml.ops.hmm_forward_backward``): it raises ScalingUnderflowError where that loses a
    whole sequence.
    """

    _param_names: tuple = ()         # fitted attributes saved by save()
    _emission_codes: str = ""

    def __init__(self, n_components=1, startprob_prior=1.0, transmat_prior=1.0, algorithm="viterbi",
                 random_state=None, n_iter=10, tol=1e-2, verbose=False, params=string.ascii_letters,
                 init_params=string.ascii_letters, implementation="log", n_init=1):
        self.n_components = n_components
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.algorithm = algorithm
        self.random_state = random_state
        self.n_iter = n_iter
        self.tol = tol
        self.verbose = verbose
        self.params = params
        self.init_params = init_params
        self.implementation = implementation
        self.n_init = n_init
        self._validate_config()
        self.monitor_ = ConvergenceMonitor(self.tol, self.n_iter, self.verbose)

    # ----- configuration -------------------------------------------------------------
    def _validate_config(self):
        name = type(self).__name__
        if isinstance(self.n_components, bool) or not isinstance(self.n_components, (int, np.integer)) \
                or self.n_components < 1:
            raise ValueError(f"{name}: n_components must be an integer >= 1. Received {self.n_components!r}")
        if self.implementation not in ("log", "scaling"):
            raise ValueError(f"{name}: implementation must be 'log' or 'scaling'. Received {self.implementation!r}")
        if self.algorithm not in DECODER_ALGORITHMS:
            raise ValueError(f"{name}: algorithm must be one of {DECODER_ALGORITHMS}. Received {self.algorithm!r}")
        if int(self.n_iter) < 0:
            raise ValueError(f"{name}: n_iter must be >= 0. Received {self.n_iter}")
        if int(self.n_init) < 1:
            raise ValueError(f"{name}: n_init must be >= 1. Received {self.n_init}")

    def get_params(self, deep=True):
        sig = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in sig.parameters if p != "self"}

    def set_params(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)
        self._validate_config()
        return self

    # ----- input ---------------------------------------------------------------------
    def _split_input(self, X, lengths, op):
        """(X array, offsets (S + 1,)) from X + lengths or from a list of arrays."""
        if isinstance(X, (list, tuple)) and len(X) > 0 and all(isinstance(x, np.ndarray) for x in X):
            if lengths is not None:
                raise ValueError(f"{op}: pass either a list of sequences or X with lengths, not both")
            seqs = []
            for i, x in enumerate(X):
                if x.ndim == 1:
                    x = x[:, None]
                if x.ndim != 2:
                    raise ValueError(f"{op}: sequence {i} must be 1-D or 2-D (n_samples, n_features). "
                                     f"Received shape {x.shape}")
                if x.shape[0] == 0:
                    raise ValueError(f"{op}: sequence {i} is empty; every sequence needs at least one sample")
                seqs.append(x)
            ncol = {s.shape[1] for s in seqs}
            if len(ncol) > 1:
                raise ValueError(f"{op}: all sequences must have the same number of features. Received {sorted(ncol)}")
            lengths = [len(s) for s in seqs]
            X = np.concatenate(seqs)
        X = np.asarray(X)
        if X.ndim == 1:
            X = X[:, None]
        if X.ndim != 2:
            raise ValueError(f"{op}: X must be 2-D (n_samples, n_features). Received shape {X.shape}")
        if X.shape[0] == 0:
            raise ValueError(f"{op}: X must hold at least one sample. Received shape {X.shape}")
        off = _ops.offsets_from_lengths(lengths, X.shape[0], op)
        return X, off

    @staticmethod
    def _seq_of(off, t):
        return int(np.searchsorted(off, t, side="right") - 1)

    def _validate_X(self, X, op, fitting=False):
        """Frames for a model defined by ``_compute_log_likelihood`` alone: real numbers, finite."""
        if X.dtype.kind not in "biuf":
            raise TypeError(f"{type(self).__name__}.{op}: X must hold real numbers. Received dtype {X.dtype}")
        if X.dtype.kind == "f" and not all_finite(X):
            t, d = np.argwhere(~np.isfinite(X))[0]
            raise ValueError(f"{type(self).__name__}.{op}: X must be finite (no NaN or inf). Received {X[t, d]} at "
                             f"sample {t}, feature {d}")
        return X

    def _check_and_set_n_features(self, X):
        """Set ``n_features`` from X (n_samples, n_features), or check X against the one the model has."""
        n = np.shape(X)[1]
        nf = getattr(self, "n_features", None)
        if nf is None:
            self.n_features = n
        elif nf != n:
            raise ValueError(f"{type(self).__name__}: X has {n} features but the model has n_features = {nf}")

    def _check_is_fitted(self, op):
        if not hasattr(self, "startprob_") or not hasattr(self, "transmat_"):
            raise ValueError(f"{type(self).__name__}.{op}: this model is not fitted yet; call fit or set its parameters")

    # ----- parameter checks ----------------------------------------------------------
    def _check(self):
        """Validate startprob_ (then transmat_): shapes, finite, non-negative, sums of 1."""
        K = self.n_components
        name = type(self).__name__
        sp = np.asarray(self.startprob_, dtype=np.float64)
        if sp.shape != (K,):
            raise ValueError(f"{name}: startprob_ must have shape ({K},). Received {sp.shape}")
        _check_distributions(sp, "startprob", name)
        self.startprob_ = sp
        tm = np.asarray(self.transmat_, dtype=np.float64)
        if tm.shape != (K, K):
            raise ValueError(f"{name}: transmat_ must have shape ({K}, {K}). Received {tm.shape}")
        _check_distributions(tm, "transmat", name)
        self.transmat_ = tm

    # ----- likelihoods ---------------------------------------------------------------
    def _compute_log_likelihood(self, X):
        """(n_samples, n_components) log p(x_t | state k); a subclass defines this or
        ``_compute_likelihood`` (this default takes the log of the latter)."""
        if type(self)._compute_likelihood is BaseHMM._compute_likelihood:
            raise NotImplementedError(f"{type(self).__name__} must define _compute_log_likelihood or "
                                      f"_compute_likelihood")
        with np.errstate(divide="ignore"):
            return np.log(self._compute_likelihood(X))

    def _compute_likelihood(self, X):
        """(n_samples, n_components) p(x_t | state k): exp of ``_compute_log_likelihood``."""
        if type(self)._compute_log_likelihood is BaseHMM._compute_log_likelihood:
            raise NotImplementedError(f"{type(self).__name__} must define _compute_log_likelihood or "
                                      f"_compute_likelihood")
        with np.errstate(under="ignore"):
            return np.exp(self._compute_log_likelihood(X))

    # pyaiml's own emission models produce their log-likelihoods with the kernels' checks;
    # those of a user's subclass are checked (shape, no NaN or +inf) before the kernel sees them.
    _trusted_loglik = False

    def _checked_loglik(self, lb, n):
        K = self.n_components
        lb = np.ascontiguousarray(lb, dtype=np.float64)
        if lb.shape != (n, K):
            raise ValueError(f"{type(self).__name__}._compute_log_likelihood must return shape ({n}, {K}). "
                             f"Received {lb.shape}")
        if np.isnan(lb).any() or np.isposinf(lb).any():
            t, k = np.argwhere(np.isnan(lb) | np.isposinf(lb))[0]
            raise ValueError(f"{type(self).__name__}._compute_log_likelihood returned {lb[t, k]} at sample {t}, "
                             f"state {k}; log-likelihoods must be finite or -inf")
        return lb

    def _raise_impossible(self, lp, off, op):
        bad = np.flatnonzero(~np.isfinite(lp))
        if bad.size:
            s = int(bad[0])
            raise ValueError(
                f"{type(self).__name__}.{op}: sequence {s} (samples {off[s]}..{off[s + 1] - 1}) has zero "
                f"likelihood under the model (no state path can emit it)")

    def _emission(self, X):
        """(framelogprob (N, K), None), or (table (M, K), symbols (N,)) for categorical models."""
        lb = self._compute_log_likelihood(X)
        return (lb if self._trusted_loglik else self._checked_loglik(lb, X.shape[0])), None

    def _fb(self, X, off, posteriors=True, xi=False, counts=False, start=False):
        """One native forward-backward over all sequences: (lb, logprob, post, xi, counts, start)."""
        lb, sym = self._emission(X)
        lp, post, x, cnt, st = _ops.fb_checked(self.startprob_, self.transmat_, lb, off, self.implementation == "log",
                                               posteriors, xi, sym, counts, start)
        return lb, lp, post, x, cnt, st

    def _forward_backward(self, X, off, op, posteriors=True, xi=False):
        lb, lp, post, x, _, _ = self._fb(X, off, posteriors, xi)
        return lb, lp, post, x

    def score(self, X, lengths=None, per_sequence=False):
        """Log-likelihood of X (sum over sequences), or (S,) per sequence with per_sequence=True."""
        self._check_is_fitted("score")
        self._check()
        X, off = self._split_input(X, lengths, "score")
        X = self._validate_X(X, "score")
        _, lp, _, _ = self._forward_backward(X, off, "score", posteriors=False)
        return lp if per_sequence else float(lp.sum())

    def score_samples(self, X, lengths=None):
        """(log-likelihood, posteriors (n_samples, n_components))."""
        self._check_is_fitted("score_samples")
        self._check()
        X, off = self._split_input(X, lengths, "score_samples")
        X = self._validate_X(X, "score_samples")
        _, lp, post, _ = self._forward_backward(X, off, "score_samples")
        self._raise_impossible(lp, off, "score_samples")
        return float(lp.sum()), post

    def predict_proba(self, X, lengths=None):
        return self.score_samples(X, lengths)[1]

    def decode(self, X, lengths=None, algorithm=None):
        """(log-probability, state sequence) by Viterbi or by per-frame maximum posterior ("map")."""
        self._check_is_fitted("decode")
        self._check()
        algorithm = algorithm or self.algorithm
        if algorithm not in DECODER_ALGORITHMS:
            raise ValueError(f"{type(self).__name__}.decode: unknown decoder {algorithm!r}; "
                             f"expected one of {DECODER_ALGORITHMS}")
        X, off = self._split_input(X, lengths, "decode")
        X = self._validate_X(X, "decode")
        if algorithm == "map":
            _, lp, post, _ = self._forward_backward(X, off, "decode")
            self._raise_impossible(lp, off, "decode")
            return float(np.max(post, axis=1).sum()), np.argmax(post, axis=1)
        lb, sym = self._emission(X)
        lp, states = _ops.viterbi_checked(self.startprob_, self.transmat_, lb, off, sym)
        return float(lp.sum()), states

    def predict(self, X, lengths=None):
        return self.decode(X, lengths)[1]

    # ----- sampling ------------------------------------------------------------------
    def _generate_sample_from_state(self, state, random_state):
        """One emission (n_features,) from ``state``. The base class emits nothing: sampling a
        model without emissions gives X of shape (n_samples, 0) and the state sequence."""
        return ()

    def sample(self, n_samples=1, random_state=None, currstate=None):
        """(X (n_samples, n_features), states (n_samples,)) drawn from the model."""
        self._check_is_fitted("sample")
        self._check()
        if int(n_samples) < 1:
            raise ValueError(f"{type(self).__name__}.sample: n_samples must be >= 1. Received {n_samples}")
        rs = check_random_state(self.random_state if random_state is None else random_state)
        tcdf = np.cumsum(self.transmat_, axis=1)
        if currstate is None:
            currstate = int((np.cumsum(self.startprob_) > rs.rand()).argmax())
        elif not 0 <= int(currstate) < self.n_components:
            raise ValueError(f"{type(self).__name__}.sample: currstate must be in [0, {self.n_components}). "
                             f"Received {currstate}")
        states = [int(currstate)]
        X = [self._generate_sample_from_state(states[0], rs)]
        for _ in range(int(n_samples) - 1):
            states.append(int((tcdf[states[-1]] > rs.rand()).argmax()))
            X.append(self._generate_sample_from_state(states[-1], rs))
        return np.atleast_2d(X), np.array(states, dtype=int)

    # ----- training ------------------------------------------------------------------
    def _rng(self):
        """The random generator of one initialisation: a fresh one from an int random_state on
        every call, as hmmlearn does (so the same seed gives hmmlearn's startprob_ and transmat_,
        and its emissionprob_ / lambdas_ draws); one generator shared by the n_init restarts."""
        rs = self.__dict__.get("_restart_rng")
        return rs if rs is not None else check_random_state(self.random_state)

    def _init(self, X, lengths=None):
        """Initialise the parameters named in ``init_params`` (and any not set yet) from X.

        ``lengths`` is accepted for hmmlearn's signature; the initialisation does not use it.
        """
        self._check_and_set_n_features(X)
        K = self.n_components
        init = 1.0 / K
        need_s, need_t = self._needs_init("s", "startprob_"), self._needs_init("t", "transmat_")
        if need_s or need_t:
            rs = self._rng()
            if need_s:
                self.startprob_ = rs.dirichlet(np.full(K, init))
            if need_t:
                self.transmat_ = rs.dirichlet(np.full(K, init), size=K)
        per_param = self._get_n_fit_scalars_per_param()
        if per_param is not None:
            n_fit = sum(v for p, v in per_param.items() if p in self.params)
            if np.size(X) < n_fit:
                _log.warning("Fitting a model with %d free scalar parameters with only %d data points will "
                             "result in a degenerate solution.", n_fit, np.size(X))

    def _needs_init(self, code, name):
        """Whether ``_init`` sets ``name``: ``code`` is in init_params (logged when that overwrites a
        value already set, as hmmlearn does) or the attribute does not exist yet."""
        if code in self.init_params:
            if hasattr(self, name):
                _log.warning("Even though the %r attribute is set, it will be overwritten during initialization "
                             "because 'init_params' contains %r", name, code)
            return True
        return not hasattr(self, name)

    def _get_n_fit_scalars_per_param(self):
        """{parameter code: number of free scalars}, for aic/bic and the degenerate-fit check."""
        K = self.n_components
        return {"s": K - 1, "t": K * (K - 1)}

    def aic(self, X, lengths=None):
        """Akaike information criterion: -2 log-likelihood + 2 * (free parameters)."""
        n = sum(self._get_n_fit_scalars_per_param().values())
        return -2 * self.score(X, lengths) + 2 * n

    def bic(self, X, lengths=None):
        """Bayesian information criterion: -2 log-likelihood + (free parameters) * log(n_samples)."""
        n = sum(self._get_n_fit_scalars_per_param().values())
        Xa, _ = self._split_input(X, lengths, "bic")
        return -2 * self.score(X, lengths) + n * np.log(Xa.shape[0])

    def get_stationary_distribution(self):
        """Stationary distribution of the chain: the left eigenvector of transmat_ for eigenvalue 1."""
        if not hasattr(self, "transmat_"):
            raise ValueError(f"{type(self).__name__}.get_stationary_distribution: transmat_ is not set; fit the "
                             f"model or set it")
        A = np.asarray(self.transmat_, dtype=np.float64)
        w, v = np.linalg.eig(A.T)
        vec = v[:, np.argmax(w.real)]
        vec = vec.real if np.allclose(vec.imag, 0) else vec
        return vec / vec.sum()

    def _initialize_sufficient_statistics(self):
        K = self.n_components
        return {"nobs": 0, "start": np.zeros(K), "trans": np.zeros((K, K))}

    def _accumulate_sufficient_statistics(self, stats, X, off, lb, post, counts):
        pass

    _estep_posteriors = True  # emission statistics need the (N, K) posteriors
    _estep_counts = False     # ... or only per-symbol posterior sums (categorical)

    def _estep_wants(self):
        """(posteriors, per-symbol counts, Gaussian frame sums) the E-step asks the kernel for."""
        return self._estep_posteriors, self._estep_counts and "e" in self.params, False

    def _do_estep(self, X, off):
        want_post, counts, gauss = self._estep_wants()
        lb, sym = self._emission(X)
        args = (self.startprob_, self.transmat_, lb, off, self.implementation == "log", want_post,
                "t" in self.params, sym, counts, "s" in self.params)
        if gauss:
            # posterior sums, posterior-weighted frames and squared frames from the kernel
            lp, post, xi, cnt, st, *g = _ops.fb_stats_checked(*args, X)
        else:
            lp, post, xi, cnt, st = _ops.fb_checked(*args)
            g = None
        stats = self._initialize_sufficient_statistics()
        stats["_gauss"] = g
        self._raise_impossible(lp, off, "fit")
        stats["nobs"] = len(off) - 1
        if "s" in self.params:
            stats["start"] = st
        if "t" in self.params:
            stats["trans"] = xi
        self._accumulate_sufficient_statistics(stats, X, off, lb, post, cnt)
        stats.pop("_gauss", None)
        self.__dict__.pop("_last_comp", None)
        return stats, float(lp.sum())

    def _do_mstep(self, stats):
        # Priors below 1 can push counts negative: clip at 0. Zeros of the current parameters
        # (left-right topologies, forbidden starts) stay exactly zero.
        if "s" in self.params:
            sp = np.maximum(self.startprob_prior - 1 + stats["start"], 0)
            self.startprob_ = np.where(self.startprob_ == 0, 0, sp)
            normalize(self.startprob_)
        if "t" in self.params:
            tm = np.maximum(self.transmat_prior - 1 + stats["trans"], 0)
            tm = np.where(self.transmat_ == 0, 0, tm)
            # A state never left in the data (e.g. only length-1 sequences) has no counts:
            # its row keeps its previous values instead of becoming all zero (hmmlearn's
            # result, which no later call accepts).
            empty = tm.sum(axis=1) == 0
            self._empty_rows = np.flatnonzero(empty)
            tm[empty] = self.transmat_[empty]
            normalize(tm, axis=1)
            self.transmat_ = tm

    def _reset_monitor(self):
        """Reset ``monitor_`` for a new fit. A plain ConvergenceMonitor takes the model's current
        tol, n_iter and verbose; a user's own monitor class is kept as it is (hmmlearn's hook)."""
        mon = getattr(self, "monitor_", None)
        if not isinstance(mon, ConvergenceMonitor):
            mon = ConvergenceMonitor(self.tol, self.n_iter, self.verbose)
        elif type(mon) is ConvergenceMonitor:
            mon.tol, mon.n_iter, mon.verbose = self.tol, self.n_iter, self.verbose
        mon._reset()
        self.monitor_ = mon

    def _fit_once(self, X, off):
        self._init(X, np.diff(off))
        self._check()
        self._reset_monitor()
        for _ in range(int(self.n_iter)):
            stats, lp = self._do_estep(X, off)
            self._do_mstep(stats)
            self.monitor_.report(lp)
            if self.monitor_.converged:
                break
            dead = getattr(self, "_empty_rows", ())
            if len(dead):
                warnings.warn(f"{type(self).__name__}.fit: no transition from states {list(map(int, dead))} was "
                              f"observed; their transmat_ rows keep their previous values", RuntimeWarning,
                              stacklevel=3)
        return self.monitor_.history[-1] if self.monitor_.history else -np.inf

    def fit(self, X, lengths=None, distribute=None):
        """Estimate the parameters by EM (Baum-Welch); ``n_init`` restarts keep the best.

        ``distribute``: None, "data_parallel" or a pyaiml.distributed.DataParallel: X is this
        rank's shard (``[]`` for none) and each iteration's E-step statistics are summed over
        all ranks before the M-step (pyaiml.distributed.hmm.fit_sharded)."""
        if distribute is not None:
            from pyaiml.distributed.hmm import fit_sharded
            return fit_sharded(self, X, lengths, distribute)
        self._validate_config()
        X, off = self._split_input(X, lengths, "fit")
        X = self._validate_X(X, "fit", fitting=True)
        n_init = int(self.n_init)
        if n_init == 1:
            self._fit_once(X, off)
            return self
        names = self._saved_attributes()
        given = {n: np.array(self._raw(n), copy=True) for n in names if hasattr(self, n)}
        best, best_state = -np.inf, None
        self.init_history_ = []
        self._restart_rng = check_random_state(self.random_state)
        try:
            for _ in range(n_init):
                for n in names:
                    if n in given:
                        setattr(self, n, given[n].copy())
                    elif hasattr(self, n):
                        delattr(self, n)
                lp = self._fit_once(X, off)
                self.init_history_.append(lp)
                if best_state is None or lp > best:
                    best = lp
                    best_state = {n: np.array(self._raw(n), copy=True) for n in names}
                    best_state["_monitor"] = copy.deepcopy(self.monitor_)
        finally:
            self.__dict__.pop("_restart_rng", None)
        for n in names:
            setattr(self, n, best_state[n])
        self.monitor_ = best_state["_monitor"]
        return self

    # ----- persistence (no pickle) ---------------------------------------------------
    def _raw(self, n):
        """Attribute as stored (GaussianHMM keeps covars_ in the setter's shape)."""
        if n == "covars_" and "_covars_" in self.__dict__:
            return self.__dict__["_covars_"]
        return getattr(self, n)

    def _saved_attributes(self):
        return ("startprob_", "transmat_") + tuple(self._param_names)

    def _config(self):
        cfg = {}
        for k, v in self.get_params().items():
            if isinstance(v, np.ndarray):
                cfg[k] = {"__array__": v.tolist()}
            elif isinstance(v, (np.integer,)):
                cfg[k] = int(v)
            elif isinstance(v, (np.floating,)):
                cfg[k] = float(v)
            elif isinstance(v, np.random.RandomState):
                cfg[k] = None
            else:
                cfg[k] = v
        return cfg

    def _save_arrays(self):
        """The arrays ``save`` writes: parameters, n_features and ``__meta__`` (JSON as uint8)."""
        arrays = {}
        for n in self._saved_attributes():
            if hasattr(self, n):
                arrays[n] = np.asarray(self._raw(n))
        for extra in ("n_features",):
            if getattr(self, extra, None) is not None:
                arrays[extra] = np.asarray(int(getattr(self, extra)))
        meta = {"format": FORMAT, "class": type(self).__name__, "config": self._config(),
                "history": [float(h) for h in self.monitor_.history]}
        arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        return arrays

    def save(self, path, key=None):
        """Write config (JSON) and parameters to one ``.npz`` file, atomically; no pickle.
        ``key``: encrypt it (AES-256-GCM, see pyaiml.privacy); read it back with
        ``pyaiml.hmm.load(path, key=...)``."""
        path = os.fspath(path)
        atomic_savez(path, key=key, inner="hmm", **self._save_arrays())
        return path


def _check_distributions(a, what, name, atol=1e-6):
    """``a`` (..., n): finite, non-negative, each last-axis row summing to 1 (ValueError otherwise)."""
    s = np.atleast_1d(a.sum(axis=-1))
    if a.size and a.min() >= 0 and np.isfinite(s).all() and np.abs(s - 1.0).max() <= atol:
        return  # the common case in one pass: no inf/NaN (their sums would not be finite or 1)
    bad = np.argwhere(~np.isfinite(a) | ~(a >= 0))
    if bad.size:
        i = tuple(bad[0])
        raise ValueError(f"{name}: {what} must be finite and non-negative (probabilities). Received {a[i]} at "
                         f"index {list(map(int, i))}")
    s = np.atleast_1d(a.sum(axis=-1))
    bad = np.argwhere(np.abs(s - 1.0) > atol)
    if bad.size:
        i = tuple(bad[0])
        if a.ndim == 1:
            raise ValueError(f"{name}: {what} must sum to 1. Received a sum of {s[i]:.6g}")
        row = int(i[0]) if len(i) == 1 else list(map(int, i))
        raise ValueError(f"{name}: every row of {what} must sum to 1. Received row {row} (state {row}) summing to "
                         f"{s[i]:.6g}")


_PROBABILITIES = ("startprob_", "transmat_", "emissionprob_", "weights_")


def _json_meta(a, op, label):
    if a.dtype != np.uint8 or a.ndim != 1:
        raise bad_file(op, label, f"__meta__ must be a 1-D uint8 array of JSON. Received {a.dtype} {a.shape}")
    try:
        meta = json.loads(a.tobytes().decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise bad_file(op, label, f"__meta__ is not JSON: {type(e).__name__}: {e}") from None
    if not isinstance(meta, dict):
        raise bad_file(op, label, "__meta__ must be a JSON object")
    return meta


def _model_from_arrays(z, op, label):
    """A model from the arrays of a ``save`` file, every name and value checked."""
    from pyaiml.hmm import count_models, models

    if "__meta__" not in z:
        raise bad_file(op, label, "no __meta__ entry, so not a pyaiml.hmm model file")
    meta = _json_meta(z["__meta__"], op, label)
    if meta.get("format", FORMAT) != FORMAT:
        raise bad_file(op, label, f"format {meta.get('format')!r}, expected {FORMAT!r}")
    classes = {"CategoricalHMM": models.CategoricalHMM, "GaussianHMM": models.GaussianHMM, "GMMHMM": models.GMMHMM,
               "MultinomialHMM": count_models.MultinomialHMM, "PoissonHMM": count_models.PoissonHMM}
    cls = classes.get(meta.get("class"))
    if cls is None:
        raise bad_file(op, label, f"unknown model class {meta.get('class')!r}; expected one of {sorted(classes)}")
    cfg = meta.get("config")
    if not isinstance(cfg, dict):
        raise bad_file(op, label, "config must be a JSON object")
    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise bad_file(op, label, f"config names {unknown}, which are not {cls.__name__} arguments")
    try:
        cfg = {k: (np.array(v["__array__"], dtype=np.float64) if isinstance(v, dict) and "__array__" in v else v)
               for k, v in cfg.items()}
        m = cls(**cfg)
    except (ValueError, TypeError) as e:
        raise bad_file(op, label, f"its config is invalid: {type(e).__name__}: {e}") from None
    names = m._saved_attributes()
    unknown = sorted(set(z) - set(names) - {"__meta__", "n_features"})
    if unknown:
        raise bad_file(op, label, f"members {unknown} are not {cls.__name__} parameters (expected {list(names)})")
    for n in names:
        if n not in z:
            continue
        v = z[n]
        if v.dtype.kind not in "fiu":
            raise bad_file(op, label, f"{n} must be numeric. Received dtype {v.dtype}")
        v = v.astype(np.float64)
        if not np.isfinite(v).all():
            raise bad_file(op, label, f"{n} must be finite. Received {v[~np.isfinite(v)][0]} "
                                      f"at index {np.argwhere(~np.isfinite(v))[0].tolist()}")
        if n in _PROBABILITIES and (v < 0).any():
            raise bad_file(op, label, f"{n} must be non-negative (probabilities). Received {v[v < 0][0]} at index "
                                      f"{np.argwhere(v < 0)[0].tolist()}")
        try:
            if n == "covars_" and hasattr(type(m), "_set_covars_raw"):
                m._set_covars_raw(v)
            else:
                setattr(m, n, v)
        except ValueError as e:
            raise bad_file(op, label, f"{n}: {e}") from None
    if "n_features" in z:
        v = z["n_features"]
        if v.shape != () or v.dtype.kind not in "iu" or int(v) < 1:
            raise bad_file(op, label, f"n_features must be an integer >= 1. Received {v.dtype} {v.shape} {v!r:.40}")
        m.n_features = int(v)
        if "means_" in z and m.n_features != int(v):
            raise bad_file(op, label, f"n_features is {int(v)}, but means_ has {m.n_features} features")
    if all(n in z for n in names):
        try:
            m._check()
        except ValueError as e:
            raise bad_file(op, label, str(e)) from None
    history = meta.get("history", [])
    if not isinstance(history, list) or not all(isinstance(h, (int, float)) and not isinstance(h, bool)
                                                for h in history):
        raise bad_file(op, label, "history must be a JSON list of numbers")
    for h in history:
        m.monitor_.history.append(float(h))
    m.monitor_.iter = len(m.monitor_.history)
    return m


def load(path, key=None):
    """Load a model written by ``save`` (no pickle is ever read); ``key`` for an encrypted
    file (a wrong key or any changed byte is a ValueError and loads nothing).

    Only the parameter names of the saved class are read (any other member is refused);
    every value is checked as the models check their parameters (shapes, finite values,
    probabilities >= 0 that sum to 1, positive covariances); anything amiss is a
    ``ValueError`` naming the file.
    """
    path = os.fspath(path)
    return _model_from_arrays(read_npz(path, "load", key=key, inner="hmm"), "load", path)
