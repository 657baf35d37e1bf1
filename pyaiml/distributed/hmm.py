"""Baum-Welch over sequences sharded across ranks: ``model.fit(X_shard, distribute=...)``.

What it is: the distributed form of pyaiml.hmm's EM loop. Every rank runs the E-step
(``BaseHMM._do_estep``: the native forward-backward and the model's own
``_accumulate_sufficient_statistics``) on its own sequences; the sufficient statistics and
the log-likelihood are then summed over ranks in float64 (one bucketed all-reduce per
iteration) and every rank applies the same M-step (``_do_mstep``) to the same sums, so all
ranks hold the same parameters and the result equals single-process EM on the union of the
shards (to rounding: only the order of the sums differs; tests hold it to 1e-10).

- Statistics that a model starts from a prior (GMMHMM's means prior in ``m_n``) are started
  on one rank only and from zeros on the others, so the prior is counted once.
- Initialisation: the first rank that holds sequences runs the model's ``_init`` on its own
  shard and broadcasts the parameters; for results identical to single-process EM give the
  parameters and ``init_params=""`` (as :class:`~pyaiml.hmm.HMMClassifier` does after its
  flat start, whose segment statistics are all-reduced too). ``n_features`` is agreed first:
  the largest symbol over all ranks for CategoricalHMM, equal widths for the others.
- A rank may hold no sequence (pass ``[]``): it contributes zeros.
- An exception on one rank (bad input, ScalingUnderflowError) stops every rank: the failing
  rank raises its own, the others a DistributedError naming it (``remote_types`` lists the
  exception classes, which HMMClassifier uses to retry a class in log space everywhere).

What it is not: model parallelism (each rank holds the whole model) or an online/streaming EM.
Tests: tests/test_distributed_multiproc.py (2 ranks over gloo against single-process fit).
"""
from __future__ import annotations

import copy
import warnings

import numpy as np

from pyaiml.distributed import _core
from pyaiml.distributed.strategy import resolve


def _empty(X, lengths):
    return isinstance(X, (list, tuple)) and len(X) == 0 and lengths is None


def _local_input(model, X, lengths):
    if _empty(X, lengths):
        return None
    Xa, off = model._split_input(X, lengths, "fit")
    return model._validate_X(Xa, "fit", fitting=True), off


def _agree_n_features(model, local, W, r):
    """Set model.n_features to the value every rank agrees on (ValueError on all ranks otherwise)."""
    from pyaiml.hmm.models import CategoricalHMM

    name = type(model).__name__
    if isinstance(model, CategoricalHMM):
        hi = -1 if local is None else int(local[0].max())
        nf = int(_core.all_reduce(np.array([max(hi + 1, model.n_features or 0)], dtype=np.int64), op="max")[0])
        if nf > 0:
            model.n_features = nf
        return
    d = -1 if local is None else int(local[0].shape[1])
    lo = _core.all_reduce(np.array([d if d >= 0 else np.iinfo(np.int64).max], dtype=np.int64), op="min")[0]
    hi = _core.all_reduce(np.array([d], dtype=np.int64), op="max")[0]
    if lo != hi:
        raise ValueError(f"{name}.fit: every rank's X must have the same number of features. Received {lo} on one "
                         f"rank and {hi} on another")


def _set_params(model, names, arrays):
    for n, v in zip(names, arrays):
        if n == "covars_" and hasattr(type(model), "_set_covars_raw"):
            model._set_covars_raw(v)
        else:
            setattr(model, n, v)


def _init_everywhere(model, local, counts, ctx):
    """Initialise on the first rank with data and broadcast the parameters to all ranks."""
    root = int(np.flatnonzero(counts)[0])
    names = list(model._saved_attributes())
    arrays = None
    with _core.agreement(f"{type(model).__name__}.fit (initialisation on rank {root})"):
        if ctx.rank == root:
            Xa, off = local
            model._init(Xa, np.diff(off))
            model._check()
            arrays = [np.ascontiguousarray(model._raw(n), dtype=np.float64) for n in names]
    meta = _core.broadcast_json(None if ctx.rank != root else
                                {"n_features": None if getattr(model, "n_features", None) is None
                                 else int(model.n_features)}, src=root)
    arrays = _core.broadcast_arrays(arrays, src=root)
    if ctx.rank != root:
        if meta["n_features"] is not None:
            model.n_features = meta["n_features"]
        _set_params(model, names, arrays)
        model._check()
    return root


def _zeroed(init_fn):
    def zeros():
        return {k: (np.zeros_like(v) if isinstance(v, np.ndarray) else (0 if k == "nobs" else v))
                for k, v in init_fn().items()}
    return zeros


def _estep(model, local, prior_rank, ctx):
    """(stats, log-likelihood) of this rank's shard; priors only on ``prior_rank``."""
    if ctx.rank != prior_rank:
        # an instance attribute shadows the method for this E-step only
        model._initialize_sufficient_statistics = _zeroed(model._initialize_sufficient_statistics)
    try:
        if local is None:
            stats = model._initialize_sufficient_statistics()
            stats["nobs"] = 0
            return stats, 0.0
        return model._do_estep(*local)
    finally:
        model.__dict__.pop("_initialize_sufficient_statistics", None)


def _flatten(stats):
    """(keys, float64/int64 arrays) of the statistics that are summed over ranks."""
    keys = sorted(k for k, v in stats.items() if isinstance(v, (np.ndarray, int, float, np.number)))
    arrs = []
    for k in keys:
        v = stats[k]
        if isinstance(v, np.ndarray):
            arrs.append(np.ascontiguousarray(v, dtype=np.float64))
        elif isinstance(v, (int, np.integer)):
            arrs.append(np.array([v], dtype=np.int64))
        else:
            arrs.append(np.array([v], dtype=np.float64))
    return keys, arrs


def _unflatten(stats, keys, out):
    for k, o in zip(keys, out):
        v = stats[k]
        stats[k] = o if isinstance(v, np.ndarray) else (int(o[0]) if isinstance(v, (int, np.integer)) else float(o[0]))


def em_lockstep(models, shards, bucket_bytes=_core._BUCKET_BYTES, prior_rank=0):
    """Baum-Welch for several models at once, one all-reduce per iteration for all of them.

    ``models`` hold the same parameters on every rank; ``shards[i]`` is this rank's
    ``(X, offsets)`` for model i, or None. Each iteration packs every active model's E-step
    statistics, its log-likelihood and an error flag into one bucketed all-reduce; then each
    model takes its M-step and leaves when its monitor has converged. A model whose E-step
    raised on any rank leaves at once on every rank. Returns {i: (own exception or None,
    [(rank, exception class name, message), ...])} for the models that failed.
    """
    ctx = _core.context()
    for m in models:
        m._reset_monitor()
    active = [i for i, m in enumerate(models) if int(m.n_iter) > 0]
    errors = {}
    while active:
        bufs, layout, mine = [], [], {}
        for i in active:
            m = models[i]
            try:
                stats, lp = _estep(m, shards[i], prior_rank, ctx)
                flag = 0.0
            except Exception as e:  # noqa: BLE001 - reported to every rank below
                mine[i] = e
                m.__dict__.pop("_last_comp", None)
                stats = _zeroed(m._initialize_sufficient_statistics)()
                lp, flag = 0.0, 1.0
            keys, arrs = _flatten(stats)
            layout.append((i, stats, keys, len(arrs)))
            bufs.extend(arrs)
            bufs.append(np.array([lp, flag]))
        out = _core.all_reduce_many(bufs, bucket_bytes=bucket_bytes)
        pos, failed, done = 0, [], []
        for i, stats, keys, k in layout:
            vals, (lp, flag) = out[pos:pos + k], out[pos + k]
            pos += k + 1
            if flag > 0:
                failed.append(i)
                continue
            m = models[i]
            _unflatten(stats, keys, vals)
            m._do_mstep(stats)
            m.monitor_.report(float(lp))
            if m.monitor_.converged:
                done.append(i)
                continue
            dead = getattr(m, "_empty_rows", ())
            if len(dead):
                warnings.warn(f"{type(m).__name__}.fit: no transition from states {list(map(int, dead))} was "
                              f"observed; their transmat_ rows keep their previous values", RuntimeWarning,
                              stacklevel=3)
        if failed:
            info = _core.all_gather_json({str(i): [type(e).__name__, str(e)] for i, e in mine.items()})
            for i in failed:
                errors[i] = (mine.get(i), [(r, *d[str(i)]) for r, d in enumerate(info) if str(i) in d])
        active = [i for i in active if i not in failed and i not in done]
    return errors


def _raise_failed(model, err):
    own, where = err
    if own is not None:
        raise own
    raise _core.DistributedError(
        f"pyaiml.distributed: {type(model).__name__}.fit E-step failed on "
        + "; ".join(f"rank {r} ({t}: {msg})" for r, t, msg in where),
        ranks=[r for r, _, _ in where], remote_types=sorted({t for _, t, _ in where}))


def _fit_once(model, local, counts, ctx, strategy):
    _init_everywhere(model, local, counts, ctx)
    errors = em_lockstep([model], [local], strategy.bucket_bytes)
    if errors:
        _raise_failed(model, errors[0])
    return model.monitor_.history[-1] if model.monitor_.history else -np.inf


def fit_sharded(model, X, lengths=None, distribute="data_parallel"):
    """EM on this rank's shard ``X`` (list of sequences, or X + lengths, or ``[]``), with the
    E-step statistics summed over all ranks. Every rank must call it with the same model
    configuration; returns ``model`` (the same parameters on every rank)."""
    strategy = resolve(distribute, f"{type(model).__name__}.fit")
    ctx = strategy.context()
    name = type(model).__name__
    local = None
    with _core.agreement(f"{name}.fit (input check)"):
        model._validate_config()
        local = _local_input(model, X, lengths)
    counts = np.zeros(ctx.world_size, dtype=np.int64)
    counts[ctx.rank] = 0 if local is None else len(local[1]) - 1
    counts = _core.all_reduce(counts)
    if not counts.any():
        raise ValueError(f"{name}.fit: no rank holds a sequence (every shard is empty)")
    _agree_n_features(model, local, ctx.world_size, ctx.rank)  # raises on every rank alike
    n_init = int(model.n_init)
    if n_init == 1:
        _fit_once(model, local, counts, ctx, strategy)
        return model
    names = model._saved_attributes()
    given = {n: np.array(model._raw(n), copy=True) for n in names if hasattr(model, n)}
    best, best_state = -np.inf, None
    model.init_history_ = []
    model._restart_rng = _rng_of(model)
    try:
        for _ in range(n_init):
            for n in names:
                if n in given:
                    setattr(model, n, given[n].copy())
                elif hasattr(model, n):
                    delattr(model, n)
            lp = _fit_once(model, local, counts, ctx, strategy)
            model.init_history_.append(lp)
            if best_state is None or lp > best:  # lp is the same on every rank: the same choice
                best = lp
                best_state = {n: np.array(model._raw(n), copy=True) for n in names}
                best_state["_monitor"] = copy.deepcopy(model.monitor_)
    finally:
        model.__dict__.pop("_restart_rng", None)
    for n in names:
        setattr(model, n, best_state[n])
    model.monitor_ = best_state["_monitor"]
    return model


def _rng_of(model):
    from pyaiml.hmm.base import check_random_state

    return check_random_state(model.random_state)


# ----------------------------------------------------------------------------- HMMClassifier
def _flat_start_sums(seqs, K, D):
    """Per-state frame counts, sums and sums of squares of the flat-start segments, and the
    pooled sum and count (the quantities of pyaiml.hmm.classifier._flat_start), this rank's."""
    n = np.zeros(K)
    s1 = np.zeros((K, D))
    s2 = np.zeros((K, D))
    if not seqs:
        return n, s1, s2, np.zeros(D), np.zeros(1)
    lens = np.array([len(x) for x in seqs])
    q, r = np.divmod(lens, K)
    sizes = q[:, None] + (np.arange(K)[None, :] < r[:, None])
    state = np.repeat(np.tile(np.arange(K), len(seqs)), sizes.ravel())
    X = np.concatenate(seqs)
    H = np.zeros((len(X), K))
    H[np.arange(len(X)), state] = 1.0
    return H.sum(0), H.T @ X, H.T @ (X * X), X.sum(0), np.array([float(len(X))])


def flat_start_many(groups, K, D, bucket_bytes=_core._BUCKET_BYTES):
    """pyaiml.hmm.classifier._flat_start for every group of sequences (one class each) over
    the sequences of all ranks: [(mu, var) (K, D), ...], with two all-reduces for all groups.
    The pooled variance is computed in two passes (mean first), as NumPy's var does."""
    sums = [_flat_start_sums(g, K, D) for g in groups]
    red = _core.all_reduce_many([a for s5 in sums for a in s5], bucket_bytes=bucket_bytes)
    red = [red[5 * i:5 * i + 5] for i in range(len(groups))]
    g_mu = [tot / max(cnt[0], 1.0) for _, _, _, tot, cnt in red]
    devs = [np.zeros(D) if not g else sum(((x - mu) ** 2).sum(0) for x in g) for g, mu in zip(groups, g_mu)]
    devs = _core.all_reduce_many([np.ascontiguousarray(d, dtype=np.float64) for d in devs], bucket_bytes=bucket_bytes)
    out = []
    for (n, s1, s2, _, cnt), mu_g, dev in zip(red, g_mu, devs):
        with np.errstate(invalid="ignore", divide="ignore"):
            mu = s1 / n[:, None]
            var = s2 / n[:, None] - mu * mu
        var = np.maximum(var, 0.0)
        mu[n == 0] = mu_g
        var[n <= 1] = dev / max(cnt[0], 1.0)
        out.append((mu, var))
    return out


def _label_list(y):
    return [v.item() if hasattr(v, "item") else v for v in y]


def fit_classifier(clf, X, y, distribute="data_parallel"):
    """HMMClassifier.fit on this rank's shard (X, y): the classes are the union over ranks;
    each class model is started flat from all ranks' segments and trained by sharded EM, all
    classes in lockstep (:func:`em_lockstep`); a class whose scaled recursion underflowed on
    any rank is trained again in log space on every rank."""
    from pyaiml.hmm.classifier import _as_sequences, _one_blas_thread

    strategy = resolve(distribute, "HMMClassifier.fit")
    strategy.context()
    with _core.agreement("HMMClassifier.fit (input check)"):
        clf._validate_config()
        y = np.asarray(y)
        if _empty(X, None):
            seqs = []
            if y.size:
                raise ValueError(f"HMMClassifier.fit: y must hold one label per sequence (0). Received shape {y.shape}")
        else:
            seqs = _as_sequences(X, "fit")
            if y.ndim != 1 or len(y) != len(seqs):
                raise ValueError(f"HMMClassifier.fit: y must hold one label per sequence ({len(seqs)}). "
                                 f"Received shape {y.shape}")
        if len(y) and y.dtype.kind not in "iuU":
            raise ValueError(f"HMMClassifier.fit: labels must be integers or strings for a distributed fit. "
                             f"Received dtype {y.dtype}")
    kinds = _core.all_gather_json([y.dtype.kind if len(y) else "", _label_list(np.unique(y)),
                                   seqs[0].shape[1] if seqs else -1])
    ks = {k for k, _, _ in kinds if k}
    ds = {d for _, _, d in kinds if d >= 0}
    if not ds:
        raise ValueError("HMMClassifier.fit: no rank holds a sequence (every shard is empty)")
    if len(ds) > 1:
        raise ValueError(f"HMMClassifier.fit: every rank's sequences must have the same number of features. "
                         f"Received {sorted(ds)}")
    if len({("U" if k == "U" else "int") for k in ks}) > 1:
        raise ValueError("HMMClassifier.fit: labels must be all integers or all strings on every rank. Received "
                         f"dtype kinds {sorted(ks)}")
    classes = np.unique(np.concatenate([np.asarray(c) for _, c, _ in kinds if len(c)]))
    D = ds.pop()
    K = int(clf.n_states)
    groups = [[s for s, v in zip(seqs, y) if v == lab] for lab in classes]
    starts = flat_start_many(groups, K, D, strategy.bucket_bytes)
    seeds = [clf._seed(c) for c in range(len(classes))]

    def build(c, implementation=None):
        m = clf._init_model(clf._new_model(seeds[c]), groups[c], seeds[c], start=starts[c])
        if implementation:
            m.implementation = implementation
        m.n_features = D
        m._check()
        return m

    def shard_of(m, g):
        return None if not g else m._split_input(g, None, "fit")

    models = [build(c) for c in range(len(classes))]
    with _one_blas_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # left-right last rows, as in HMMClassifier
        errors = em_lockstep(models, [shard_of(m, g) for m, g in zip(models, groups)], strategy.bucket_bytes)
        # the scaled recursion lost a sequence on some rank: train that class again in log space everywhere
        retry = sorted(c for c, (_, where) in errors.items() if any(t == "ScalingUnderflowError" for _, t, _ in where))
        for c in sorted(set(errors) - set(retry)):
            _raise_failed(models[c], errors[c])
        if retry:
            again = {c: build(c, "log") for c in retry}
            errs = em_lockstep([again[c] for c in retry], [shard_of(again[c], groups[c]) for c in retry],
                               strategy.bucket_bytes)
            for j, c in enumerate(retry):
                if j in errs:
                    _raise_failed(again[c], errs[j])
                again[c].implementation = clf.implementation
                models[c] = again[c]
    clf.classes_ = classes
    clf.models_ = models
    clf.n_features_in_ = D
    return clf
