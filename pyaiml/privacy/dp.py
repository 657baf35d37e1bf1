"""Differentially private training (DP-SGD) for pyaiml.keras Sequential models.

``DPSGD(l2_norm_clip, noise_multiplier, learning_rate=..., base="sgd" | "adam" | "rmsprop" |
an optimizer instance)`` is passed to ``model.compile(optimizer=...)``. Each training step
then (Abadi et al. 2016, "Deep Learning with Differential Privacy"):

1. computes the gradient of every example's own loss with respect to all trainable weights
   (the layers' per-example rules in pyaiml/keras/layers.py: Dense, Conv1D/Conv2D,
   Embedding, LayerNormalization; computed for the whole batch at once, not example by
   example);
2. scales each example's gradient, over all weights jointly, to L2 norm at most
   ``l2_norm_clip`` (factor min(1, C / ||g_i||));
3. sums them, adds Gaussian noise N(0, (l2_norm_clip * noise_multiplier)^2) to every
   coordinate, divides by the expected batch size (``batch_size`` given to fit);
4. hands that gradient to the base optimizer's ordinary update.

Sampling: under ``fit``, each step's batch holds each training example independently with
probability q = batch_size / n (Poisson sampling), so batch sizes vary and a batch can be
empty (it still takes a noise-only step); an epoch is ceil(n / batch_size) such steps and
``shuffle`` is ignored. This is the sampling the accountant assumes. ``sampling="shuffle"``
keeps fit's ordinary fixed-size batches of a shuffled epoch; it warns, because the epsilon
then reported is computed as if batches were Poisson-sampled, which is not a proof for
shuffled batches.

Accounting: Google's ``dp-accounting`` package (pip extra ``privacy``; imported only when an
epsilon is asked for), RDP accountant by default (``accountant="pld"`` for the tighter
privacy-loss-distribution accountant), on the composition of the steps taken, each a
Poisson-subsampled Gaussian mechanism. fit logs ``epsilon`` at ``delta`` after every epoch
(in ``model.history.history["epsilon"]``); ``optimizer.epsilon()`` gives it at any time;
``compute_epsilon`` and ``compute_noise_multiplier`` do the same arithmetic for planning.
``train_on_batch`` takes a DP step on the caller's batch (divided by its size), but the
caller chose it, so the accountant has no sampling rate for it and ``epsilon()`` refuses.

Not here: secure randomness (noise and sampling come from NumPy's PCG64, seeded from the
OS unless ``seed`` is given; a fixed seed is for tests and reproducible runs, not for a
release), protection against floating-point attacks on the Gaussian sampler, user-level
(rather than example-level) privacy, layers that mix examples (BatchNormalization is
refused) or lack a per-example rule (MultiHeadAttention, custom layers: refused unless
frozen). Privacy covers the training examples given to fit, not hyper-parameter search.

Tests: tests/test_privacy_dp.py (per-example gradients against a loop over examples in
float64, clipping and noise statistics, the accountant against dp-accounting directly).
"""
from __future__ import annotations

import contextlib
import logging
import math
import numbers
import warnings

import numpy as np

from pyaiml.keras import optimizers as _opt
from pyaiml.keras._common import lookup

__all__ = ["DPSGD", "DPKerasAdamOptimizer", "DPKerasRMSpropOptimizer", "DPKerasSGDOptimizer", "compute_epsilon",
           "compute_noise_multiplier"]

_ACCOUNTANTS = ("rdp", "pld")
_SAMPLING = ("poisson", "shuffle")


def _real(where, name, v, lo, lo_open, hi=None, hi_open=False):
    """float(v) after checking lo <(=) v <(=) hi; ValueError naming the argument otherwise."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{where}: {name} must be a real number. Received {v!r}")
    f = float(v)
    rule = f"{'>' if lo_open else '>='} {lo}" + ("" if hi is None else f" and {'<' if hi_open else '<='} {hi}")
    ok = math.isfinite(f) and (f > lo if lo_open else f >= lo)
    if ok and hi is not None:
        ok = f < hi if hi_open else f <= hi
    if not ok:
        raise ValueError(f"{where}: {name} must be finite and {rule}. Received {v!r}")
    return f


def _count(where, name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
        raise ValueError(f"{where}: {name} must be an integer >= 0. Received {v!r}")
    return int(v)


def _accountant_name(where, accountant):
    if accountant not in _ACCOUNTANTS:
        raise ValueError(f"{where}: accountant must be one of {', '.join(_ACCOUNTANTS)}. Received {accountant!r}")
    return accountant


def _dp_accounting():
    try:
        import dp_accounting
    except ImportError as e:
        raise ImportError("pyaiml.privacy: computing epsilon needs Google's dp-accounting package: "
                          "pip install 'pyaiml[privacy]' (or pip install dp-accounting==0.6.0)") from e
    return dp_accounting


def _epsilon(events, noise_multiplier, delta, accountant):
    """epsilon at delta of the composition of (sampling_rate, steps) Poisson-subsampled
    Gaussian mechanisms with the given noise multiplier."""
    events = [(q, k) for q, k in events if k > 0]
    if not events:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    dpa = _dp_accounting()
    if accountant == "rdp":
        # Renyi DP adds up over steps: k steps cost k times one step's RDP at every order, which
        # is what RdpAccountant.compose computes too, so caching one step's vector per (q, sigma)
        # gives the same numbers while fit asks for epsilon after every epoch (one RDP
        # evaluation took 0.2-0.3 s on the benchmark's machine; the conversion is cheap)
        total = None
        for q, k in events:
            orders, one = _rdp_one_step(dpa, q, noise_multiplier)
            total = k * one if total is None else total + k * one
        return float(dpa.rdp.rdp_privacy_accountant.compute_epsilon(orders, total, delta)[0])
    gauss = dpa.GaussianDpEvent(noise_multiplier)
    ev = dpa.ComposedDpEvent([dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(q, gauss), k) for q, k in events])
    acc = dpa.pld.PLDAccountant()
    acc.compose(ev)
    return float(acc.get_epsilon(delta))


_RDP_ONE_STEP: dict = {}


def _rdp_one_step(dpa, q, noise_multiplier):
    """(orders, RDP of one Poisson-subsampled Gaussian step) from dp-accounting's RdpAccountant."""
    key = (q, noise_multiplier)
    hit = _RDP_ONE_STEP.get(key)
    if hit is None:
        acc = dpa.rdp.RdpAccountant()
        acc.compose(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(noise_multiplier)))
        if len(_RDP_ONE_STEP) >= 64:
            _RDP_ONE_STEP.clear()
        hit = _RDP_ONE_STEP[key] = (acc.orders, acc.rdp)
    return hit


def compute_epsilon(steps, sampling_rate, noise_multiplier, delta, accountant="rdp"):
    """Epsilon of ``steps`` DP-SGD steps with Poisson sampling at ``sampling_rate`` and Gaussian
    noise of ``noise_multiplier`` times the clip norm, at ``delta``.

    Parameters
    ----------
    steps : int >= 0
    sampling_rate : float in (0, 1] (batch_size / number of training examples)
    noise_multiplier : float >= 0 (0 gives inf once a step is taken)
    delta : float in (0, 1)
    accountant : "rdp" (Renyi DP, as TF-Privacy and Opacus report by default) or "pld"

    Returns
    -------
    float epsilon (0.0 for no steps).
    """
    w = "compute_epsilon"
    steps = _count(w, "steps", steps)
    q = _real(w, "sampling_rate", sampling_rate, 0, True, 1)
    sigma = _real(w, "noise_multiplier", noise_multiplier, 0, False)
    delta = _real(w, "delta", delta, 0, True, 1, True)
    return _epsilon([(q, steps)], sigma, delta, _accountant_name(w, accountant))


def compute_noise_multiplier(target_epsilon, steps, sampling_rate, delta, accountant="rdp", tol=1e-3):
    """The smallest noise multiplier (to relative ``tol``) whose ``compute_epsilon`` is at most
    ``target_epsilon``: bisection, as TF-Privacy's ``compute_noise`` does."""
    w = "compute_noise_multiplier"
    eps = _real(w, "target_epsilon", target_epsilon, 0, True)
    steps = _count(w, "steps", steps)
    q = _real(w, "sampling_rate", sampling_rate, 0, True, 1)
    delta = _real(w, "delta", delta, 0, True, 1, True)
    tol = _real(w, "tol", tol, 0, True, 1, True)
    accountant = _accountant_name(w, accountant)
    if steps == 0:
        return 0.0

    def f(s):
        return _epsilon([(q, steps)], s, delta, accountant)

    # dp-accounting logs (absl) each Renyi order it drops for the small noise multipliers the
    # search probes; those probes are not results, so their log lines are held back here
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)
    try:
        return _bisect(f, eps, tol, w, steps, q, delta)
    finally:
        absl_log.setLevel(level)


def _bisect(f, eps, tol, w, steps, q, delta):
    """Smallest s (to relative tol) with f(s) <= eps; f decreases in s."""
    hi = 1.0
    while f(hi) > eps:
        hi *= 2
        if hi > 1e6:
            raise ValueError(f"{w}: no noise multiplier up to 1e6 reaches epsilon {eps} in {steps} steps at "
                             f"sampling rate {q}, delta {delta}")
    lo = 0.0
    while hi - lo > tol * hi:
        mid = 0.5 * (lo + hi)
        if f(mid) > eps:
            lo = mid
        else:
            hi = mid
    return hi


class DPSGD(_opt.Optimizer):
    """DP-SGD around a Keras optimizer; see the module docstring for the algorithm.

    Parameters
    ----------
    l2_norm_clip : float > 0, the bound C on each example's gradient norm (all weights jointly)
    noise_multiplier : float >= 0, noise std divided by C (0: clipping only, no privacy)
    learning_rate : float or schedule for the base optimizer (None: the base's default)
    base : "sgd", "adam", "rmsprop", or an optimizer instance (its own learning rate is used)
    sampling : "poisson" (default; what the accountant assumes) or "shuffle" (fit's ordinary
        fixed-size batches; warns that epsilon then does not hold as computed)
    delta : the delta at which ``epsilon()`` and fit's logs report (keep it below 1 / n)
    accountant : "rdp" or "pld"
    seed : None (noise and sampling seeded from the OS) or an int for reproducible runs
    num_microbatches : None only (each example is its own microbatch; TF-Privacy's argument)
    **base_kwargs : passed to the base optimizer when ``base`` is a name (momentum, beta_1, ...)
    """

    is_dp = True
    name = "DPSGD"

    def __init__(self, l2_norm_clip, noise_multiplier, learning_rate=None, base="sgd", sampling="poisson",
                 delta=1e-5, accountant="rdp", seed=None, num_microbatches=None, name=None, **base_kwargs):
        w = "DPSGD"
        self.l2_norm_clip = _real(w, "l2_norm_clip", l2_norm_clip, 0, True)
        self.noise_multiplier = _real(w, "noise_multiplier", noise_multiplier, 0, False)
        if sampling not in _SAMPLING:
            raise ValueError(f"{w}: sampling must be one of {', '.join(_SAMPLING)}. Received {sampling!r}")
        self.sampling = sampling
        self.delta = _real(w, "delta", delta, 0, True, 1, True)
        self.accountant = _accountant_name(w, accountant)
        if num_microbatches is not None:
            raise ValueError(f"{w}: num_microbatches must be None (each example is clipped on its own; grouped "
                             f"microbatches are not implemented). Received {num_microbatches!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
            raise ValueError(f"{w}: seed must be None or an integer >= 0. Received {seed!r}")
        self.seed = seed
        if isinstance(base, DPSGD):
            raise TypeError(f"{w}: base must be an ordinary optimizer, not another DPSGD")
        if isinstance(base, _opt.Optimizer):
            if learning_rate is not None or base_kwargs:
                raise ValueError(f"{w}: base is an optimizer instance, which carries its own learning rate and "
                                 f"settings; do not pass learning_rate or {sorted(base_kwargs) or 'other arguments'} "
                                 "as well")
            self.base = base
        elif isinstance(base, dict):
            self.base = _opt.get(base)
        elif isinstance(base, str):
            table = {k: v for k, v in _opt._TABLE.items() if v is not DPSGD}
            cls = lookup("optimizer", base, table)
            kw = dict(base_kwargs)
            if learning_rate is not None:
                kw["learning_rate"] = learning_rate
            self.base = cls(**kw)
        else:
            raise TypeError(f"{w}: base must be 'sgd', 'adam', 'rmsprop' or an optimizer instance. "
                             f"Received {type(base).__name__}")
        if name:
            self.name = name
        ss = np.random.SeedSequence(seed)
        a, b = ss.spawn(2)
        self._sample_rng, self._noise_rng = np.random.default_rng(a), np.random.default_rng(b)
        self._q = None  # sampling rate of the steps being taken (None: unknown, train_on_batch)
        self._ledger: list[list] = []  # [[sampling rate or None, steps], ...] in order
        self._eps_cache: dict = {}
        self.clipped_fraction = float("nan")  # share of the last batch's examples whose norm exceeded the clip

    # --- the base optimizer's state, seen through this one (saving, schedules, callbacks)
    @property
    def learning_rate(self):
        return self.base.learning_rate

    @learning_rate.setter
    def learning_rate(self, v):
        self.base.learning_rate = v

    @property
    def iterations(self):
        return self.base.iterations

    @iterations.setter
    def iterations(self, v):
        self.base.iterations = v

    @property
    def _state(self):
        return self.base._state

    def current_lr(self):
        return self.base.current_lr()

    def get_state(self):
        return self.base.get_state()

    def set_state(self, iterations, arrays, params):
        self.base.set_state(iterations, arrays, params)

    def apply(self, params):
        raise RuntimeError("DPSGD.apply: DP-SGD clips each example's gradient, so it needs per-example gradients, "
                           "which the Keras models' fit and train_on_batch compute; a summed gradient cannot be "
                           "clipped per example. Train with model.fit(...) after model.compile(optimizer=DPSGD(...)), "
                           "or in a custom loop take GradientTape.clipped_gradient(loss, variables, "
                           "opt.clip_factors, batch_size) and pass it to opt.apply_private(...).")

    # --- the steps Sequential takes with this optimizer
    def begin_fit(self, n, batch_size):
        """fit is about to train on ``n`` examples with expected batch size ``batch_size``.
        Fails here, before any training, when dp-accounting (needed for the logs) is missing."""
        _dp_accounting()
        self._q = min(1.0, batch_size / n)
        self._warned_unknown = False
        if self.sampling == "shuffle":
            warnings.warn("DPSGD(sampling='shuffle'): batches are fixed-size slices of a shuffled epoch, but the "
                          "epsilon reported is computed for Poisson sampling, which these batches are not; it is "
                          "not a privacy guarantee for this run. Use sampling='poisson' (the default) for one.",
                          UserWarning, stacklevel=3)

    def begin_batch(self):
        """train_on_batch: the caller chose the batch; its sampling rate is unknown."""
        self._q = None

    def epoch_batches(self, n, steps):
        """Index arrays of one epoch's ``steps`` batches (Poisson sampling at the rate of
        ``begin_fit``), or None in "shuffle" mode (fit slices its shuffled epoch)."""
        if self.sampling == "shuffle":
            return None
        q = self._q
        return [np.flatnonzero(self._sample_rng.random(n) < q) for _ in range(steps)]

    def clip_factors(self, sq_norms):
        """(B,) squared per-example gradient norms -> (B,) factors min(1, C / ||g_i||)."""
        norms = np.sqrt(np.asarray(sq_norms, dtype=np.float64))
        c = self.l2_norm_clip
        self.clipped_fraction = float(np.mean(norms > c)) if norms.size else float("nan")
        return c / np.maximum(norms, c)

    def apply_private(self, params, expected_batch_size):
        """params: (weight, clipped gradient sum) pairs. Adds the noise, divides by the expected
        batch size, runs the base optimizer's update, and records the step for the accountant."""
        sd = self.l2_norm_clip * self.noise_multiplier
        inv = 1.0 / float(expected_batch_size)
        for _, g in params:
            if sd:
                g += self._noise_rng.normal(0.0, sd, g.shape).astype(g.dtype, copy=False)
            g *= g.dtype.type(inv)
        self.base.apply(params)
        if self._ledger and self._ledger[-1][0] == self._q:
            self._ledger[-1][1] += 1
        else:
            self._ledger.append([self._q, 1])

    def apply_tape(self, tape, loss, variables, batch_size, expected_batch_size):
        """The Keras models' DP step: ``loss`` (recorded on ``tape``) is the batch mean of
        ``batch_size`` examples' losses; each example's gradient over ``variables`` is clipped
        (GradientTape.clipped_gradient with ``clip_factors``), summed, and given to
        ``apply_private``. ``batch_size`` 0 (an empty Poisson batch): a noise-only step."""
        if batch_size:
            grads, _ = tape.clipped_gradient(loss, variables, self.clip_factors, batch_size)
        else:
            grads = [None] * len(variables)
        self.apply_private([(v.value, np.zeros_like(v.value) if g is None else g) for v, g in zip(variables, grads)],
                           expected_batch_size)

    # --- accounting
    @property
    def steps(self):
        """DP-SGD steps taken so far (all fits and train_on_batch calls)."""
        return sum(k for _, k in self._ledger)

    def epsilon(self, delta=None):
        """Epsilon spent so far at ``delta`` (default: the optimizer's ``delta``)."""
        delta = self.delta if delta is None else _real("DPSGD.epsilon", "delta", delta, 0, True, 1, True)
        unknown = sum(k for q, k in self._ledger if q is None)
        if unknown:
            raise ValueError(f"DPSGD.epsilon: {unknown} step(s) ran through train_on_batch on batches the caller "
                             "chose, whose sampling rate the accountant does not know; epsilon is only computed for "
                             "steps taken by fit (Poisson sampling)")
        key = (tuple((q, k) for q, k in self._ledger), delta)
        if key not in self._eps_cache:
            self._eps_cache = {key: _epsilon(key[0], self.noise_multiplier, delta, self.accountant)}
        return self._eps_cache[key]

    def logged_epsilon(self):
        """What fit logs as ``epsilon`` after an epoch: ``epsilon()``, or NaN (with one warning
        per fit) when train_on_batch steps of unknown sampling rate make it unknown."""
        if any(q is None for q, _ in self._ledger):
            if not getattr(self, "_warned_unknown", False):
                self._warned_unknown = True
                warnings.warn("DPSGD: this optimizer took train_on_batch steps on batches of unknown sampling rate "
                              "before this fit, so the epsilon spent is unknown; fit logs NaN", UserWarning,
                              stacklevel=3)
            return math.nan
        return self.epsilon()

    # --- config (the base optimizer's config inside; the ledger, so that a loaded model keeps
    # counting; not the seed, so a restored run does not replay the same noise)
    def get_config(self):
        return {"l2_norm_clip": self.l2_norm_clip, "noise_multiplier": self.noise_multiplier,
                "base": _opt.serialize(self.base), "sampling": self.sampling, "delta": self.delta,
                "accountant": self.accountant, "ledger": [[q, int(k)] for q, k in self._ledger]}

    @classmethod
    def from_config(cls, cfg):
        cfg = dict(cfg)
        ledger = cfg.pop("ledger", [])
        obj = cls(**cfg)
        obj._ledger = [[None if q is None else float(q), int(k)] for q, k in ledger]
        return obj

    def __repr__(self):
        return (f"<DPSGD l2_norm_clip={self.l2_norm_clip} noise_multiplier={self.noise_multiplier} "
                f"base={type(self.base).__name__} sampling={self.sampling}>")


@contextlib.contextmanager
def loadable():
    """Within the block, pyaiml.keras.optimizers.get finds DPSGD by name, as load_model needs
    to rebuild a saved model's optimizer from its class name. Only for the block: a permanent
    entry would offer "dpsgd" as an ``optimizer=`` string, which cannot work without a clip
    and a noise multiplier. ``pyaiml.keras.models.load_model`` uses it."""
    added = "dpsgd" not in _opt._TABLE
    if added:
        _opt._TABLE["dpsgd"] = DPSGD
    try:
        yield
    finally:
        if added:
            _opt._TABLE.pop("dpsgd", None)


def DPKerasSGDOptimizer(l2_norm_clip, noise_multiplier, num_microbatches=None, learning_rate=0.01,
                        **kwargs):
    """TF-Privacy's name: DPSGD with base SGD (``momentum``, ``nesterov`` as for SGD).
    Unlike TF-Privacy, the noisy sum is divided by the expected batch size of Poisson sampling."""
    return DPSGD(l2_norm_clip, noise_multiplier, learning_rate=learning_rate, base="sgd",
                 num_microbatches=num_microbatches, **kwargs)


def DPKerasAdamOptimizer(l2_norm_clip, noise_multiplier, num_microbatches=None, learning_rate=0.001,
                         **kwargs):
    """TF-Privacy's name: DPSGD with base Adam (``beta_1``, ``beta_2``, ``epsilon``, ``amsgrad``)."""
    return DPSGD(l2_norm_clip, noise_multiplier, learning_rate=learning_rate, base="adam",
                 num_microbatches=num_microbatches, **kwargs)


def DPKerasRMSpropOptimizer(l2_norm_clip, noise_multiplier, num_microbatches=None, learning_rate=0.001,
                            **kwargs):
    """TF-Privacy's name: DPSGD with base RMSprop."""
    return DPSGD(l2_norm_clip, noise_multiplier, learning_rate=learning_rate, base="rmsprop",
                 num_microbatches=num_microbatches, **kwargs)
