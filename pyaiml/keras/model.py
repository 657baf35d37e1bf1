"""``keras.Model``: subclassed and functional models trained through the tape.

What it is. ``Model`` is a Layer with a training loop. Subclass it (``__init__`` creates
layers, ``call(inputs, training=False)`` uses them and ``keras.ops``), or build it from a
graph: ``keras.Model(inputs, outputs)`` returns a ``Functional`` (pyaiml/keras/functional.py).
``compile(optimizer, loss, metrics, loss_weights)``; ``fit`` / ``evaluate`` / ``predict`` /
``*_on_batch`` take arrays, lists of arrays (several inputs or outputs, in order) or dicts
(by input or output name). One training step: the forward ``call`` under a GradientTape,
each output's loss recorded (pyaiml.autograd.functional.loss: the loss's own stable value
and gradient; a softmax output with cross-entropy from probabilities is differentiated from
its logits), their weighted sum differentiated, the optimizer applied to every trainable
variable (a variable the loss does not reach gets a zero gradient). Logs are Keras's:
``loss``, ``{output}_loss`` when there are several outputs, metric names (prefixed by the
output name when there are several), ``val_`` for validation.

``Sequential`` (pyaiml/keras/models.py) has its own loop (one input, one output) on the
same tape; this one serves every other model.

DP-SGD (``compile(optimizer=pyaiml.privacy.DPSGD(...))``): fit draws Poisson-sampled batches
and each step clips every example's gradient through the tape's per-example rules
(``_train_step_dp``); a weight that reaches the loss through an op without a rule is a
ValueError naming it and the op.

Not here: ``train_step`` overrides, sample/class weights, ``add_loss``, distribution.
Tests: tests/test_keras_subclass.py, tests/test_keras_functional.py.
"""
from __future__ import annotations

import numpy as np

from pyaiml.autograd import functional as F
from pyaiml.autograd.tape import GradientTape, Tensor, calling, recording
from pyaiml.keras import callbacks as _cb
from pyaiml.keras import layers as _layers
from pyaiml.keras import losses as _losses
from pyaiml.keras import metrics as _metrics
from pyaiml.keras import optimizers as _opt
from pyaiml.keras._common import batch_run, placeholder_run, rng
from pyaiml.keras.saving import SavingMixin
from pyaiml.ops import _validate

NonFiniteLossError = _cb.NonFiniteLossError  # one class for every model kind


def _flat(x):
    """Outputs as a list (a single array -> [array]; dicts in key order)."""
    if isinstance(x, dict):
        return list(x.values())
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def _zero_batch(x):
    """Whether x is an array, or a list/tuple/dict of arrays, all with 0 samples."""
    leaves = _flat(x) if isinstance(x, (list, tuple, dict)) else [x]
    return bool(leaves) and all(isinstance(a, np.ndarray) and a.ndim >= 1 and a.shape[0] == 0 for a in leaves)


def _one_row(x):
    """x's structure with every array replaced by one zero sample of its shape and dtype."""
    if isinstance(x, dict):
        return {k: _one_row(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_one_row(v) for v in x)
    return np.zeros((1,) + x.shape[1:], x.dtype)


def _no_rows(out):
    """Every output of a one-sample run cut to 0 samples, in the outputs' structure."""
    if isinstance(out, dict):
        return {k: _no_rows(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(_no_rows(v) for v in out)
    return np.asarray(out.value if isinstance(out, Tensor) else out)[:0]


def _need_samples(d, op, what="x"):
    """Every loss and metric is a mean over the samples: none to average is an error."""
    if len(d) == 0:
        raise ValueError(f"{op}: {what} must hold at least one sample to train or evaluate on. Received 0 samples")


class _Data:
    """Several aligned arrays sliced together; ``rebuild`` restores the caller's structure."""

    def __init__(self, arrays, kind, keys=None):
        self.arrays, self.kind, self.keys = arrays, kind, keys

    def __len__(self):
        return len(self.arrays[0]) if self.arrays else 0

    def take(self, idx):
        return _Data([a[idx] for a in self.arrays], self.kind, self.keys)

    def rebuild(self):
        if self.kind == "single":
            return self.arrays[0]
        if self.kind == "dict":
            return dict(zip(self.keys, self.arrays))
        return list(self.arrays)


def _arrays(x, what, float_ok=True):
    if x is None:
        raise ValueError(f"{what} is required")
    if isinstance(x, dict):
        keys = list(x)
        arrs = [np.asarray(x[k]) for k in keys]
        kind = "dict"
    elif isinstance(x, (list, tuple)) and x and all(isinstance(a, np.ndarray) for a in x):
        keys, arrs, kind = None, [np.asarray(a) for a in x], "list"
    else:
        keys, arrs, kind = None, [np.asarray(x)], "single"
    out = []
    for i, a in enumerate(arrs):
        name = what if kind == "single" else f"{what}[{keys[i] if keys else i}]"
        if a.dtype.kind not in "fiub":
            raise ValueError(f"{name} must be numeric. Received dtype {a.dtype}")
        if a.ndim < 1:
            raise ValueError(f"{name} must have a batch dimension: shape (samples, ...). Received shape {a.shape}")
        if a.dtype.kind == "f":
            if not _validate.all_finite(a):  # one C++ pass on float32 (~0.5 us at 32x32x3)
                bad = np.argwhere(~np.isfinite(a))[0]
                raise ValueError(f"{name} contains NaN or inf (first at sample {bad[0]}, index {tuple(int(i) for i in bad[1:])})")
            a = np.ascontiguousarray(a, dtype=np.float32)
        out.append(a)
    n = {len(a) for a in out}
    if len(n) > 1:
        raise ValueError(f"{what}: all arrays must have the same number of samples. Received "
                         f"{[len(a) for a in out]}")
    return _Data(out, kind, keys)


class Model(SavingMixin, _layers.Layer):
    """A Layer with compile/fit/evaluate/predict, save/load and summary.

    ``keras.Model(inputs, outputs, name=...)`` builds a functional model; a subclass
    defines ``call``."""

    def __new__(cls, *args, **kwargs):
        if cls is Model and (len(args) >= 2 or "inputs" in kwargs or "outputs" in kwargs):
            from pyaiml.keras.functional import Functional

            return super().__new__(Functional)
        return super().__new__(cls)

    def __init__(self, *args, name=None, trainable=True, **kwargs):
        if args or kwargs.keys() & {"inputs", "outputs"}:
            raise TypeError(f"{type(self).__name__}: a subclassed model takes no inputs/outputs (those make a "
                            "functional model: keras.Model(inputs, outputs))")
        self._init_model(name, trainable, **kwargs)

    def _init_model(self, name, trainable, **kwargs):
        _layers.Layer.__init__(self, name=name or _layers._auto_name(type(self).__name__), trainable=trainable,
                               **kwargs)
        self.compiled = False
        self.optimizer = None
        self.stop_training = False
        self.history = None
        self._build_input_shape = None  # the first input's shapes (with batch), kept for saving

    # ------------------------------------------------------------------ structure
    @property
    def layers(self):
        return self._sublayers()

    def get_layer(self, name=None, index=None):
        if index is not None:
            return self.layers[index]
        for layer in self._all_layers()[1:]:
            if layer.name == name:
                return layer
        raise ValueError(f"{self.name}: no layer named {name!r}. Layers: {', '.join(l.name for l in self.layers)}")

    def __call__(self, *args, **kwargs):
        x = args[0] if args else kwargs.get("inputs")
        if not recording() and not isinstance(x, Tensor) and _zero_batch(x):
            # zero samples (the kernels refuse empty batches): the outputs of a one-sample
            # placeholder run, cut to zero samples, so their shapes and structure are the model's
            args = (_one_row(x),) + args[1:] if args else args
            if not args:
                kwargs = {**kwargs, "inputs": _one_row(x)}
            with _validate.finite_checks(False), placeholder_run():
                return _no_rows(_layers.Layer.__call__(self, *args, **kwargs))
        return _layers.Layer.__call__(self, *args, **kwargs)

    def _build_for_call(self, x, args, kwargs):
        self._build_input_shape = _layers._shape_of(x)
        if type(self).build is not Model.build:
            # a user's build(input_shape) has only shapes: whatever it runs is placeholder data
            with calling(self), placeholder_run():
                self.build(self._build_input_shape)
        self.built = True  # the layers inside build themselves on first use

    def build(self, input_shape=None):
        """Create the weights by calling the model once on zeros of ``input_shape`` (with the
        batch dimension; None there and elsewhere taken as 1)."""
        if input_shape is None:
            self.built = True
            return

        def zeros(s):
            if isinstance(s, dict):
                return {k: zeros(v) for k, v in s.items()}
            if isinstance(s, list) or (isinstance(s, tuple) and s and isinstance(s[0], (tuple, list))):
                return [zeros(v) for v in s]
            return np.zeros(tuple(1 if d is None else int(d) for d in s), np.float32)
        self.built = True
        self._build_input_shape = _layers._shape_of(zeros(input_shape))
        with _validate.finite_checks(False), placeholder_run():  # a run on zeros: stateful layers keep no states
            self._tape_call((zeros(input_shape),), {"training": False})

    def _n_outputs(self, x: _Data):
        """The number of outputs, from a run on the first row of ``x`` (after a first-use
        build on its first one or two rows). Placeholder runs: stateful layers neither read
        nor keep states in them."""
        with _validate.finite_checks(False), placeholder_run():
            if not self.built or self._build_input_shape is None:
                self(x.take(slice(0, max(1, min(2, len(x))))).rebuild(), training=False)
            return len(_flat(self(x.take(slice(0, 1)).rebuild(), training=False)))

    # ------------------------------------------------------------------ compile
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None, run_eagerly=None,
                jit_compile=None, steps_per_execution=None, weighted_metrics=None, **kw):
        if kw:
            raise TypeError(f"compile: unexpected keyword argument(s) {sorted(kw)}")
        if loss is None:
            raise ValueError("compile: a loss is required, e.g. loss='sparse_categorical_crossentropy'")
        self.optimizer = _opt.get(optimizer)
        self._loss_arg, self._metrics_arg, self._loss_weights_arg = loss, metrics, loss_weights
        self._metric_ids = metrics
        self.compiled = True
        self._resolved = None

    def _output_names(self, n):
        names = getattr(self, "output_names", None)
        if names and len(names) == n:
            return list(names)
        return ["output"] if n == 1 else [f"output_{i}" for i in range(n)]

    def _resolve(self, n_out):
        """Per-output losses, weights and metrics from compile's arguments."""
        if self._resolved is not None and len(self._resolved[0]) == n_out:
            return self._resolved
        names = self._output_names(n_out)

        def per_output(arg, what, default=None):
            if isinstance(arg, dict):
                bad = sorted(set(arg) - set(names))
                if bad:
                    raise ValueError(f"compile: {what} names {bad} are not outputs of {self.name!r} "
                                     f"(outputs: {names})")
                return [arg.get(nm, default) for nm in names]
            if isinstance(arg, (list, tuple)) and what != "metrics":
                if len(arg) != n_out:
                    raise ValueError(f"compile: {what} must have one entry per output ({n_out}: {names}). "
                                     f"Received {len(arg)}")
                return list(arg)
            return [arg] * n_out
        losses = [None if lo is None else _losses.get(lo) for lo in per_output(self._loss_arg, "loss")]
        if any(lo is None for lo in losses):
            miss = [nm for nm, lo in zip(names, losses) if lo is None]
            raise ValueError(f"compile: no loss for output(s) {miss} of {self.name!r}")
        weights = [1.0 if w is None else float(w) for w in per_output(self._loss_weights_arg, "loss_weights", 1.0)]
        m = self._metrics_arg
        if isinstance(m, dict):
            mlist = per_output(m, "metrics", [])
        elif isinstance(m, (list, tuple)) and m and all(isinstance(e, (list, tuple)) for e in m):
            if len(m) != n_out:
                raise ValueError(f"compile: metrics as a list of lists needs one list per output ({n_out}). "
                                 f"Received {len(m)}")
            mlist = list(m)
        else:
            mlist = [list(m or [])] * n_out
        metrics = []
        for i, (ids, lo) in enumerate(zip(mlist, losses)):
            ids = [ids] if isinstance(ids, str) else list(ids or [])
            for mid in ids:
                met = _metrics.get(mid, lo)
                if n_out > 1:
                    met.name = f"{names[i]}_{met.name}"
                metrics.append((i, met))
        self._resolved = (losses, weights, metrics, names)
        return self._resolved

    def _need_compiled(self, what):
        if not self.compiled:
            raise RuntimeError(f"{what}: call model.compile(optimizer, loss, metrics) first")

    # ------------------------------------------------------------------ data
    def _y_data(self, y, n_out, n, what="y"):
        d = _arrays(y, what)
        names = self._output_names(n_out)
        if d.kind == "dict":
            miss = [nm for nm in names if nm not in d.keys]
            if miss:
                raise ValueError(f"{what}: no targets for output(s) {miss} (outputs: {names}). Received keys "
                                 f"{d.keys}")
            d = _Data([d.arrays[d.keys.index(nm)] for nm in names], "list")
        if len(d.arrays) != n_out:
            raise ValueError(f"{what}: the model has {n_out} output(s) ({names}); received {len(d.arrays)} target "
                             "array(s)")
        if len(d) != n:
            raise ValueError(f"x and {what} must have the same number of samples. Received x with {n} samples and "
                             f"{what} with {len(d)}")
        return d

    def _check_targets(self, x: _Data, y: _Data):
        with _validate.finite_checks(False), placeholder_run():  # a one-row run for the output shapes
            outs = _flat(self(x.take(slice(0, 1)).rebuild(), training=False))
        losses = self._resolve(len(outs))[0]
        for lo, o, t in zip(losses, outs, y.arrays):
            lo.check_labels(t, tuple(np.shape(o)[1:]))

    # ------------------------------------------------------------------ steps
    def _train_vars(self):
        """The trainable variables (fixed for the length of a fit: walking the layers each step
        cost ~7% of a small Transformer's step)."""
        tv = getattr(self, "_tv_fixed", None)
        return tv if tv is not None else self.trainable_variables

    def _losses_of(self, outs, ys):
        losses, weights, _, _ = self._resolve(len(outs))
        total, parts = None, []
        for o, t, lo, w in zip(outs, ys, losses, weights):
            val = F.loss(lo, t, o)
            parts.append(float(val.value if isinstance(val, Tensor) else val))
            term = val if w == 1.0 else F.multiply(val, w)
            total = term if total is None else F.add(total, term)
        return total, parts

    def _recorded_loss(self, xb: _Data, yb: _Data):
        """The training forward pass and losses on a tape: (tape, total, loss value, parts, outputs)."""
        with GradientTape() as tape:
            outs = _flat(self(xb.rebuild(), training=True))
            total, parts = self._losses_of(outs, yb.arrays)
        return tape, total, float(total.value if isinstance(total, Tensor) else total), parts, outs

    def _train_step(self, xb: _Data, yb: _Data):
        tv = self._train_vars()
        tape, total, val, parts, outs = self._recorded_loss(xb, yb)
        if not np.isfinite(val):
            return val, parts, outs
        grads = tape.gradient(total, tv)
        self.optimizer.apply([(v.value, g if g is not None else np.zeros_like(v.value)) for v, g in zip(tv, grads)])
        return val, parts, [o.value if isinstance(o, Tensor) else o for o in outs]

    def _train_step_dp(self, xb: _Data, yb: _Data, expected_batch_size):
        """One DP-SGD step through the tape: each example's gradient over every trainable
        variable clipped to the optimizer's l2_norm_clip (GradientTape.clipped_gradient: the
        per-example rules of pyaiml.autograd.per_example), summed; the optimizer adds the
        noise, divides by ``expected_batch_size`` and updates. An empty batch (Poisson
        sampling) takes a noise-only step."""
        if len(xb) == 0:
            self.optimizer.apply_tape(None, None, self._train_vars(), 0, expected_batch_size)
            return 0.0, [0.0] * len(yb.arrays), None
        tape, total, val, parts, outs = self._recorded_loss(xb, yb)
        if not np.isfinite(val):
            return val, parts, outs
        self.optimizer.apply_tape(tape, total, self._train_vars(), len(xb), expected_batch_size)
        return val, parts, [o.value if isinstance(o, Tensor) else o for o in outs]

    def _logs(self, tot, parts, cnt, metrics, names):
        logs = {"loss": tot / max(cnt, 1)}
        if len(names) > 1:
            for nm, p in zip(names, parts):
                logs[f"{nm}_loss"] = p / max(cnt, 1)
        for _, m in metrics:
            logs[m.name] = m.result()
        return logs

    # ------------------------------------------------------------------ fit
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
            steps_per_epoch=None, validation_steps=None, validation_batch_size=None, validation_freq=1):
        """Train; returns a History (validation_split takes the last samples, before shuffling)."""
        self._need_compiled("fit")
        if class_weight is not None or sample_weight is not None:
            raise ValueError("fit: class_weight and sample_weight are not supported")
        if steps_per_epoch is not None:
            raise ValueError("fit: steps_per_epoch is not supported with array inputs (all samples are used)")
        xd = _arrays(x, "x")
        _need_samples(xd, "fit")
        n_all = len(xd)
        n_out = self._n_outputs(xd)
        yd = self._y_data(y, n_out, n_all)
        self._check_targets(xd, yd)
        if not 0 <= float(validation_split) < 1:
            raise ValueError(f"fit: validation_split must be in [0, 1). Received {validation_split}")
        val = None
        if validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("fit: validation_data must be a tuple (x_val, y_val)")
            vx = _arrays(validation_data[0], "validation x")
            _need_samples(vx, "fit", "validation x")
            val = (vx, self._y_data(validation_data[1], n_out, len(vx), "validation y"))
        elif validation_split:
            k = int(n_all * (1 - validation_split))
            if k == 0 or k == n_all:
                raise ValueError(f"fit: validation_split={validation_split} leaves an empty training or validation set "
                                 f"for {n_all} samples")
            val = (xd.take(slice(k, None)), yd.take(slice(k, None)))
            xd, yd = xd.take(slice(0, k)), yd.take(slice(0, k))
        bs = 32 if batch_size is None else int(batch_size)
        if bs < 1:
            raise ValueError(f"fit: batch_size must be >= 1. Received {batch_size}")
        epochs, initial_epoch = int(epochs), int(initial_epoch)
        n = len(xd)
        steps = -(-n // bs)
        verbose = 1 if verbose == "auto" else verbose
        history = _cb.History()
        if initial_epoch > 0 and self.history is not None:
            keep = [i for i, e in enumerate(self.history.epoch) if e < initial_epoch]
            history.epoch = [self.history.epoch[i] for i in keep]
            history.history = {k: [v[i] for i in keep if i < len(v)] for k, v in self.history.history.items()}
        cbs = list(callbacks or [])
        if verbose:
            cbs.append(_cb.ProgbarLogger(verbose))
        cbs.append(history)
        self.history = history
        cl = _cb.CallbackList(cbs, self, {"epochs": epochs, "steps": steps, "verbose": verbose, "samples": n})
        _, _, metrics, names = self._resolve(n_out)
        self.stop_training = False
        self._tv_fixed = self.trainable_variables
        if getattr(self.optimizer, "is_dp", False):  # DP-SGD: the optimizer draws the batches
            self.optimizer.begin_fit(n, bs)
        try:
            self._fit_loop(cl, xd, yd, val, metrics, names, n, n_out, bs, steps, epochs, initial_epoch, shuffle,
                           validation_freq, validation_batch_size)
        finally:
            self._tv_fixed = None
        return history

    def _fit_loop(self, cl, xd, yd, val, metrics, names, n, n_out, bs, steps, epochs, initial_epoch, shuffle,
                  validation_freq, validation_batch_size):
        logs = {}
        with _validate.finite_checks(False), batch_run():  # real batches (see _common)
            cl.on_train_begin()
            dp = getattr(self.optimizer, "is_dp", False)
            for epoch in range(initial_epoch, epochs):
                cl.on_epoch_begin(epoch)
                batches = self.optimizer.epoch_batches(n, steps) if dp else None
                if batches is not None:
                    xe, ye = xd, yd
                elif shuffle:
                    perm = rng().permutation(n)
                    xe, ye = xd.take(perm), yd.take(perm)
                else:
                    xe, ye = xd, yd
                for _, m in metrics:
                    m.reset_state()
                tot, cnt, parts = 0.0, 0, [0.0] * n_out
                for b in range(steps):
                    cl.on_train_batch_begin(b)
                    s = batches[b] if batches is not None else slice(b * bs, min(n, (b + 1) * bs))
                    xb, yb = xe.take(s), ye.take(s)
                    lv, pv, preds = self._train_step_dp(xb, yb, bs) if dp else self._train_step(xb, yb)
                    if _cb.non_finite_loss(self, cl, lv, epoch, b, steps):
                        break
                    k = len(xb)
                    tot += lv * k
                    cnt += k
                    parts = [p + v * k for p, v in zip(parts, pv)]
                    for i, m in metrics:
                        if k:  # a Poisson-sampled batch can be empty
                            m.update_state(yb.arrays[i], preds[i])
                    logs = self._logs(tot, parts, cnt, metrics, names)
                    cl.on_train_batch_end(b, logs)
                    if self.stop_training:
                        break
                if val is not None and (epoch + 1) % validation_freq == 0:
                    vr = self._evaluate(val[0], val[1], validation_batch_size or bs)
                    logs.update({"val_" + k: v for k, v in vr.items()})
                if dp:
                    logs["epsilon"] = self.optimizer.logged_epsilon()
                cl.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
            cl.on_train_end(logs if epochs > initial_epoch else {})

    # ------------------------------------------------------------------ evaluate / predict
    def _evaluate(self, x: _Data, y: _Data, bs):
        n_out = len(y.arrays)
        _, _, metrics, names = self._resolve(n_out)
        for _, m in metrics:
            m.reset_state()
        tot, parts, n = 0.0, [0.0] * n_out, len(x)
        for b in range(0, n, bs):
            xb, yb = x.take(slice(b, b + bs)), y.take(slice(b, b + bs))
            outs = [np.asarray(o) for o in _flat(self(xb.rebuild(), training=False))]
            total, pv = self._losses_of(outs, yb.arrays)
            k = len(xb)
            tot += float(total) * k
            parts = [p + v * k for p, v in zip(parts, pv)]
            for i, m in metrics:
                m.update_state(yb.arrays[i], outs[i])
        return self._logs(tot, parts, n, metrics, names)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", return_dict=False, callbacks=None, **kw):
        self._need_compiled("evaluate")
        xd = _arrays(x, "x")
        _need_samples(xd, "evaluate")
        n_out = self._n_outputs(xd)
        yd = self._y_data(y, n_out, len(xd))
        self._check_targets(xd, yd)
        with _validate.finite_checks(False), batch_run():  # real batches (see _common)
            r = self._evaluate(xd, yd, 32 if batch_size is None else int(batch_size))
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in r.items()))
        if return_dict:
            return r
        return r["loss"] if len(r) == 1 else list(r.values())

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        xd = _arrays(x, "x")
        bs = 32 if batch_size is None else int(batch_size)
        n = len(xd)
        chunks, struct = [], None
        with _validate.finite_checks(False), batch_run():  # real batches (see _common)
            for b in range(0, max(n, 1), bs):  # zero samples: one empty batch (see __call__)
                out = self(xd.take(slice(b, b + bs)).rebuild(), training=False)
                struct = out
                chunks.append([np.asarray(o.value if isinstance(o, Tensor) else o) for o in _flat(out)])
        cat = [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]
        if isinstance(struct, dict):
            return dict(zip(struct.keys(), cat))
        if isinstance(struct, (list, tuple)):
            return cat
        return cat[0]

    def predict_on_batch(self, x):
        return self.predict(x, batch_size=max(1, len(_arrays(x, "x"))))

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        self._need_compiled("train_on_batch")
        xd = _arrays(x, "x")
        if not getattr(self.optimizer, "is_dp", False):  # DP-SGD: an empty batch is a noise-only step
            _need_samples(xd, "train_on_batch")
        n_out = self._n_outputs(xd)
        yd = self._y_data(y, n_out, len(xd))
        with _validate.finite_checks(False), batch_run():  # real batches (see _common)
            if getattr(self.optimizer, "is_dp", False):
                self.optimizer.begin_batch()
                lv, pv, preds = self._train_step_dp(xd, yd, max(1, len(xd)))
            else:
                lv, pv, preds = self._train_step(xd, yd)
        if not np.isfinite(lv):
            raise NonFiniteLossError(f"train_on_batch: the loss became {lv}")
        _, _, metrics, names = self._resolve(n_out)
        for i, m in metrics:
            m.reset_state()
            if preds is not None:  # None: an empty DP-SGD batch
                m.update_state(yd.arrays[i], preds[i])
        r = self._logs(lv, pv, 1, metrics, names)
        if return_dict:
            return r
        return r["loss"] if len(r) == 1 else list(r.values())

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        self._need_compiled("test_on_batch")
        _need_samples(_arrays(x, "x"), "test_on_batch")
        r = self.evaluate(x, y, batch_size=max(1, len(_arrays(x, "x"))), verbose=0, return_dict=True)
        if return_dict:
            return r
        return r["loss"] if len(r) == 1 else list(r.values())

    # ------------------------------------------------------------------ summary
    def _summary_rows(self):
        """(layer name (type), output shape, params, connected to) per row."""
        rows = []
        for layer in self.layers:
            shape = getattr(layer, "_call_output_shape", None)
            if shape is None and getattr(layer, "output_shape", None) is not None:
                shape = (None,) + tuple(layer.output_shape)
            rows.append((f"{layer.name} ({type(layer).__name__})", _shape_text(shape) if layer.built else "?",
                         layer.count_params(), None))
        return rows

    def summary(self, line_length=None, positions=None, print_fn=None, **kw):
        rows = self._summary_rows()
        connected = any(r[3] is not None for r in rows)
        heads = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if connected else [])
        cells = [[r[0], r[1], f"{r[2]:,}"] + ([", ".join(r[3] or []) or "-"] if connected else []) for r in rows]
        widths = [max([len(h)] + [len(c[i]) for c in cells]) + 2 for i, h in enumerate(heads)]
        total = sum(widths)

        def fmt(c):
            parts = [c[0].ljust(widths[0]), c[1].ljust(widths[1]), c[2].rjust(widths[2] - 2).ljust(widths[2])]
            if connected:
                parts.append(c[3])
            return "".join(parts).rstrip()
        lines = [f'Model: "{self.name}"', "_" * total, fmt(heads), "=" * total]
        for i, c in enumerate(cells):
            lines.append(fmt(c))
            if i + 1 < len(cells):
                lines.append("_" * total if connected else "")
        lines = [ln for ln in lines if ln != ""]
        tot = sum(v.size for v in self.variables)
        tr = sum(v.size for v in self.trainable_variables)
        lines += ["=" * total, f"Total params: {tot:,}", f"Trainable params: {tr:,}",
                  f"Non-trainable params: {tot - tr:,}", "_" * total]
        p = print_fn or print
        if print_fn is None:
            print("\n".join(lines))
        else:
            for ln in lines:
                p(ln)

    # ------------------------------------------------------------------ weights / saving
    def count_params(self):
        return int(sum(v.size for v in self.variables))

    @property
    def weights(self):
        return self.variables

    @property
    def trainable_weights(self):
        return self.trainable_variables

    @property
    def non_trainable_weights(self):
        return self.non_trainable_variables

    def get_config(self):
        """Subclasses that take constructor arguments override this (as in Keras); the base
        holds the name and the input shape the model was built with."""
        return {"name": self.name, "trainable": self.trainable}

    def _params(self):
        return [(v.value, None) for v in self._train_vars()]


def _shape_text(s):
    if s is None:
        return "?"
    if isinstance(s, list):
        return "[" + ", ".join(_shape_text(t) for t in s) + "]"
    return "(" + ", ".join("None" if d is None else str(d) for d in s) + ("," if len(s) == 1 else "") + ")"
