"""Data-parallel ``Sequential.fit``: ``model.fit(x, y, batch_size=B, distribute="data_parallel")``.

What it is: :class:`FitSync`, the object ``Sequential.fit`` drives at five points when
``distribute`` is given (its hooks in pyaiml/keras/models.py are one line each):

1. start of fit: every rank must hold the same x and y (checked by count and checksum), the
   same batch size and compatible models; rank 0's weights are broadcast so every rank
   starts from them (the optimizer state is not: give every rank the same checkpoint);
2. each epoch's shuffle: rank 0's permutation is broadcast;
3. each global batch of B samples: the rank takes its contiguous part (np.array_split's
   rule, sizes differing by at most one);
4. between backward and the optimizer step: each rank's gradient (the mean over its k_r
   samples) is scaled by k_r / B and the gradients are summed over ranks, packed into
   buckets of ``bucket_mb`` MiB per collective (all buckets in flight at once), so every rank
   applies the mean gradient of the whole global batch: the single-process step of batch B;
5. end of each epoch: the loss and the metrics' sums and counts are summed over ranks, so
   ``History`` and the callbacks see global values, identical on every rank.

Only rank 0 logs (ProgbarLogger) and writes checkpoints (ModelCheckpoint, whose saves are
atomic); on other ranks those callbacks are left out. A global batch with fewer samples than
ranks (a last partial batch) is computed whole on every rank and averaged, and counted once
in the logs. Per-batch logs (what a progress bar or TerminateOnNaN sees) are this rank's own;
epoch logs are global. Validation data are evaluated whole on every rank (the same weights
give the same figures; not split, so it costs each rank the full pass).
What it is not: overlap of communication with the backward pass (the all-reduce starts once
backward is done; the bucket layout is ready for per-layer hooks of the tape), per-rank
dropout masks identical to a single process, or DP-SGD (refused).
Tests: tests/test_distributed_multiproc.py (2 ranks against single-process fit: float64 to
1e-10, float32 to 1e-5 relative; checkpoint on rank 0; resume with initial_epoch).
"""
from __future__ import annotations

import numpy as np

from pyaiml.distributed import _core
from pyaiml.distributed.strategy import resolve


def _checksum(a):
    a = np.asarray(a)
    if a.dtype.kind in "fiub":
        return [float(a.size), float(np.sum(a, dtype=np.float64)),
                float(np.sum(a.reshape(len(a), -1)[:, :1] if a.ndim > 1 and len(a) else a, dtype=np.float64))]
    return [float(a.size), 0.0, 0.0]


class FitSync:
    """The distributed side of one ``Sequential.fit`` call (see the module docstring)."""

    def __init__(self, model, distribute, x, y, batch_size):
        from pyaiml.keras.callbacks import Callback

        self.strategy = resolve(distribute, "fit")
        self.ctx = self.strategy.context()
        self.model = model
        self.W, self.r = self.ctx.world_size, self.ctx.rank
        with _core.agreement("fit (input check)"):
            if getattr(model.optimizer, "is_dp", False):
                raise ValueError("fit: distribute= is not supported with a DP-SGD optimizer (pyaiml.privacy.DPSGD); "
                                 "its noise and accountant assume one process")
        head = [int(batch_size), len(x)] + _checksum(x) + _checksum(y) + [float(model.count_params())]
        everyone = _core.all_gather_json(head)
        bad = [i for i, h in enumerate(everyone) if h != everyone[0]]
        if bad:
            raise ValueError(f"fit: with distribute=, every rank must pass the same x, y (each rank takes its part "
                             f"of every global batch), batch_size and model. Rank {bad[0]} differs from rank 0: "
                             f"[batch_size, samples, x checksums, y checksums, params] = {everyone[bad[0]]} vs "
                             f"{everyone[0]}")
        model.set_weights(_core.broadcast_arrays(model.get_weights() if self.r == 0 else None, src=0))
        self.bs = int(batch_size)
        self._k = self._n = 0
        self._replicated = False
        self._tot = 0.0
        self._cnt = 0
        self._seen_tot = 0.0
        self._seen_cnt = 0
        self._metric_snap = None

        sync = self

        class _Hooks(Callback):
            def on_epoch_begin(self, epoch, logs=None):
                sync._tot, sync._cnt, sync._seen_tot, sync._seen_cnt = 0.0, 0, 0.0, 0

            def on_train_batch_end(self, batch, logs=None):
                sync._batch_end(logs or {})

            def on_train_end(self, logs=None):
                sync.model._grad_hook = None

        self.hooks = _Hooks()
        model._grad_hook = self.reduce_grads

    # ---- callbacks and logging
    def callbacks(self, cbs, verbose):
        """(callbacks, verbose) for this rank: ModelCheckpoint and progress output on rank 0 only."""
        from pyaiml.keras.callbacks import ModelCheckpoint

        if self.r != 0:
            cbs = [c for c in cbs if not isinstance(c, ModelCheckpoint)]
            verbose = 0
        return [self.hooks] + list(cbs), verbose

    # ---- data
    def permutation(self, perm):
        """Rank 0's shuffle of the epoch, on every rank."""
        return _core.broadcast_arrays([np.ascontiguousarray(perm, dtype=np.int64)] if self.r == 0 else None)[0]

    def shard(self, xb, yb):
        """This rank's part of one global batch."""
        n = len(xb)
        self._n = n
        self._replicated = n < self.W
        if self._replicated:
            self._k = n
            self._metric_snap = [(m._sum, m._n) for m in self.model.metrics]
            return xb, yb
        a, b = _core.shard_bounds(n, self.r, self.W)
        self._k = b - a
        return xb[a:b], yb[a:b]

    def reduce_grads(self, params):
        """Scale each gradient by k_r / B and sum it over ranks, in place (models' grad hook)."""
        scale = 1.0 / self.W if self._replicated else self._k / self._n
        grads = [g for _, g in params]
        for g in grads:
            g *= g.dtype.type(scale)
        _core.all_reduce_many(grads, bucket_bytes=self.strategy.bucket_bytes, inplace=True)

    def _batch_end(self, logs):
        # fit's running loss is tot / cnt over this rank's samples: recover this batch's lv * k
        self._seen_cnt += self._k
        tot = float(logs.get("loss", 0.0)) * max(self._seen_cnt, 1)
        part = tot - self._seen_tot
        self._seen_tot = tot
        if self._replicated and self.r != 0:
            for m, (s, c) in zip(self.model.metrics, self._metric_snap):  # counted on rank 0 only
                m._sum, m._n = s, c
            return
        self._tot += part
        self._cnt += self._k

    def epoch_logs(self, logs):
        """The epoch's training logs summed over ranks (loss and every metric)."""
        ms = self.model.metrics
        v = np.array([self._tot, float(self._cnt)] + [x for m in ms for x in (float(m._sum), float(m._n))])
        v = _core.all_reduce(v)
        for i, m in enumerate(ms):
            m._sum, m._n = float(v[2 + 2 * i]), int(v[3 + 2 * i] + 0.5)
        out = dict(logs)
        out["loss"] = v[0] / max(v[1], 1.0)
        for m in ms:
            out[m.name] = m.result()
        return out
