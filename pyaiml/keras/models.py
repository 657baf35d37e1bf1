"""Keras ``Sequential`` on pyaiml.ops: compile, fit, evaluate, predict, *_on_batch,
summary, get/set_weights, save/load_model.

Training step (one per batch): forward through the layers (caching what backward needs),
loss and its gradient (softmax/sigmoid + cross-entropy fused into one stable step when
the last layer ends in that activation), backward through the layers (the first layer
skips its input gradient where it can), one optimizer update. What neighbouring layers share
is decided once by the fusion pass at compile() (``model.fusion_plan``,
pyaiml/keras/fusion.py) and handed to each layer as the ``fusion=`` argument of its calls. Data are float32; each
epoch shuffles the arrays once, so batches are contiguous slices (no per-batch gather).
The per-op NaN/inf input checks of pyaiml.ops are switched off inside fit/evaluate/predict
after x has been checked once; a NaN loss stops training with an error that names the
epoch and batch.

DP-SGD (an optimizer with ``is_dp``, pyaiml.privacy.DPSGD): a separate step,
``_train_step_dp``: the backward pass caches each layer's output gradients instead of
summing weight gradients, the layers give each example's squared gradient norm, the
optimizer turns them into clip factors, the layers sum the clipped gradients, and the
optimizer adds noise and updates. fit then draws Poisson-sampled batches from the
optimizer and logs ``epsilon`` per epoch. The ordinary path does not change.

A model holding a layer that has only a tape ``call()`` (no hand-written backward, e.g.
Permute, UpSampling2D) trains through the tape instead (``_train_step_tape``), unfused.
The functional API and subclassed models are pyaiml/keras/functional.py and model.py.
Not here: sample weights.
Tests: tests/test_keras_api.py, tests/test_keras_train.py, tests/test_keras_fused.py,
tests/test_privacy_dp.py.
"""
from __future__ import annotations


import numpy as np

from pyaiml.keras import callbacks as _cb
from pyaiml.keras import layers as _layers
from pyaiml.keras import losses as _losses
from pyaiml.keras import metrics as _metrics
from pyaiml.keras import optimizers as _opt
from pyaiml.keras._common import FLOATX, rng
from pyaiml.keras.fusion import plan_sequential
from pyaiml.keras.saving import SavingMixin
from pyaiml.ops import _validate


NonFiniteLossError = _cb.NonFiniteLossError  # one class for every model kind


def _NoFiniteChecks():  # noqa: N802 (the name its callers use)
    """The NaN/inf input checks off inside the block, in this thread only."""
    return _validate.finite_checks(False)


def _shape_str(s):
    return "(None, " + ", ".join("None" if d is None else str(d) for d in s) + ")"


class Sequential(SavingMixin):
    """A linear stack of layers (``Sequential([...])`` or ``.add``)."""

    _grad_hook = None  # called with _params() between backward and the optimizer step (pyaiml.distributed)
    _is_sequential = True

    def __init__(self, layers=None, name=None, trainable=True):
        self.name = name or "sequential"
        self._layers: list[_layers.Layer] = []
        self._input_shape = None
        self.built = False
        self.compiled = False
        self.optimizer = None
        self.loss = None
        self.stop_training = False
        self.history = None
        for layer in layers or []:
            self.add(layer)

    # ------------------------------------------------------------------ structure
    @property
    def layers(self):
        return [l for l in self._layers if not isinstance(l, _layers.InputLayer)]

    def add(self, layer):
        if getattr(layer, "_is_keras_tensor", False) and isinstance(getattr(layer.node, "layer", None),
                                                                    _layers.InputLayer):
            layer = layer.node.layer  # keras.Input(...): the model's input declaration
        if not isinstance(layer, _layers.Layer):
            raise TypeError(f"Sequential.add: expected a pyaiml.keras layer. Received {type(layer).__name__}")
        if any(l.name == layer.name for l in self._layers):
            raise ValueError(f"Sequential.add: a layer named {layer.name!r} is already in the model")
        if not self._layers and layer._input_shape_arg is not None:
            self._input_shape = layer._input_shape_arg
        elif isinstance(layer, _layers.InputLayer):
            raise ValueError("Sequential.add: an Input can only be the first layer")
        self._layers.append(layer)
        if self._input_shape is not None and None not in self._input_shape[-1:]:
            self._build(self._input_shape)

    def pop(self):
        if not self.layers:
            raise TypeError("Sequential.pop: there are no layers in the model")
        self._layers.pop()

    def _build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self._layers:
            if layer.built:
                layer._check_input(shape)
                # a built layer may take other sizes on its free axes: its output follows the input
                out = layer.output_shape if tuple(layer.input_shape or ()) == shape else tuple(
                    layer.compute_output_shape(shape))
            else:
                layer.build(shape)
                out = layer.output_shape
            shape = out
        self._input_shape = tuple(input_shape)
        self.output_shape = shape
        self.built = True

    def build(self, input_shape=None):
        """Keras convention: ``input_shape`` includes the batch dimension."""
        if input_shape is None:
            if self._input_shape is None:
                raise ValueError("Sequential.build: give input_shape (with the batch dimension) or an input_shape "
                                 "on the first layer")
            input_shape = (None,) + tuple(self._input_shape)
        self._build(tuple(input_shape)[1:])

    @property
    def input_shape(self):
        return None if self._input_shape is None else (None,) + tuple(self._input_shape)

    def _ensure_built(self, x):
        shape = tuple(x.shape[1:])
        if not self.built:
            if not self.layers:
                raise ValueError("Sequential: the model has no layers")
            self._build(shape)
            return
        want = self._input_shape
        if len(want) != len(shape) or any(w is not None and w != s for w, s in zip(want, shape)):
            first = self.layers[0]
            raise ValueError(f"Input of shape {_shape_str(shape)} does not fit the model: its first layer "
                             f"{first.name!r} ({type(first).__name__}) expects {_shape_str(want)}")

    # ------------------------------------------------------------------ weights
    def _params(self):
        out = []
        for l in self._layers:
            out.extend(l.params_and_grads())
        return out

    @property
    def weights(self):
        return [w for l in self._layers for w in l.weights]

    @property
    def trainable_weights(self):
        return [w for l in self._layers for w in l.trainable_weights]

    def get_weights(self):
        return [w for l in self._layers for w in l.get_weights()]

    def set_weights(self, weights):
        weights = list(weights)
        n = sum(len(l._weight_slots()) for l in self._layers)
        if len(weights) != n:
            raise ValueError(f"set_weights: the model has {n} weight arrays. Received {len(weights)}")
        i = 0
        for l in self._layers:
            k = len(l._weight_slots())
            l.set_weights(weights[i:i + k])
            i += k

    def count_params(self):
        return sum(l.count_params() for l in self._layers)

    # ------------------------------------------------------------------ compile
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None, run_eagerly=None,
                jit_compile=None, **kw):
        if kw:
            raise TypeError(f"compile: unexpected keyword argument(s) {sorted(kw)}")
        if loss is None:
            raise ValueError("compile: a loss is required, e.g. loss='categorical_crossentropy'")
        self.optimizer = _opt.get(optimizer)
        self.loss = _losses.get(loss)
        self._metric_ids = list(metrics or [])
        self.metrics = [_metrics.get(m, self.loss) for m in self._metric_ids]
        self.compiled = True
        self._fuse_checked = False
        self._plan = None
        self._plan_key = None
        _ = self.fusion_plan  # the fusion pass runs here (and again if the layers change)
        if getattr(self.optimizer, "is_dp", False):
            self._dp_check()

    def _tape_only(self):
        """Layers with no hand-written backward (written only as call()): then the model
        trains through the tape (pyaiml/autograd) instead of the fused path."""
        return [l for l in self._layers if type(l).backward is _layers.Layer.backward]

    @property
    def fusion_plan(self):
        """The training step's fusion plan (pyaiml.keras.fusion.FusionPlan): made by compile()
        and again whenever the layers or the loss change; None before compile() and for
        models that train through the tape (unfused)."""
        if not getattr(self, "compiled", False) or self._tape_only():
            return None
        # the key holds the layers and the loss themselves (ids of dropped ones could be reused)
        key = getattr(self, "_plan_key", None)
        if (key is None or key[1] is not self.loss or len(key[0]) != len(self._layers)
                or any(a is not b for a, b in zip(key[0], self._layers))):
            self._plan = plan_sequential(self._layers, self.loss)
            self._plan_key = (tuple(self._layers), self.loss)
        return self._plan

    def _fusion(self):
        """Return True when the last layer's activation is fused into the loss."""
        plan = self.fusion_plan
        return plan is not None and plan.loss_fused

    # ------------------------------------------------------------------ data checks
    def _x(self, x, what="x"):
        if x is None:
            raise ValueError(f"{what} is required")
        x = np.asarray(x)
        first = self.layers[0] if self.layers else None
        if isinstance(first, _layers.Embedding):
            return x
        if x.dtype.kind not in "fiub":
            raise ValueError(f"{what} must be numeric. Received dtype {x.dtype}")
        x = np.ascontiguousarray(x, dtype=FLOATX)
        if x.ndim < 2:
            raise ValueError(f"{what} must have a batch dimension: shape (samples, ...). Received shape {x.shape}")
        if not np.isfinite(x).all():
            bad = np.argwhere(~np.isfinite(x))[0]
            raise ValueError(f"{what} contains NaN or inf (first at sample {bad[0]}, index {tuple(bad[1:])})")
        return x

    def _y(self, y, n, what="y"):
        if y is None:
            raise ValueError(f"{what} is required for training and evaluation")
        y = np.asarray(y)
        if len(y) != n:
            raise ValueError(f"x and {what} must have the same number of samples. Received x with {n} samples and "
                             f"{what} with {len(y)}")
        if y.dtype.kind not in "fiub":
            raise ValueError(f"{what} must be numeric. Received dtype {y.dtype}")
        self.loss.check_labels(y, self.output_shape)
        if y.dtype.kind == "f":
            y = np.ascontiguousarray(y, dtype=FLOATX)
        return y

    def _need_compiled(self, what):
        if not self.compiled:
            raise RuntimeError(f"{what}: call model.compile(optimizer, loss, metrics) first")

    # ------------------------------------------------------------------ core steps
    def _forward(self, x, training, fused):
        if self._tape_only():
            x = self._call_layers(x, training)
            return x.value if hasattr(x, "value") else x
        # the plan's record for each layer goes in as an argument (fusion.py); predict runs unfused
        plan = self.fusion_plan if (training or fused) else None
        fl = None if plan is None else plan.records(training, fused)
        self._fwd_records = fl  # a backward pass takes the records of the forward pass it follows
        mask = None
        for i, l in enumerate(self._layers):
            f = None if fl is None else fl[i]
            x = l.forward(x, training, mask) if f is None else l.forward(x, training, mask, fusion=f)
            mask = l.compute_mask(mask)
        return x

    def _backward(self, g, per_example=False):
        plan = self.fusion_plan
        fl = getattr(self, "_fwd_records", None)
        for i in range(len(self._layers) - 1, -1, -1):
            layer = self._layers[i]
            back = layer.backward_per_example if per_example else layer.backward
            f = None if fl is None else fl[i]
            g = back(g, need_dx=plan.need_dx[i]) if f is None else back(g, need_dx=plan.need_dx[i], fusion=f)
            if not plan.need_dx[i]:
                break

    def _loss_and_pred(self, yb, out, fused):
        if fused:
            val, g = self.loss.value_and_grad_logits(yb, out)
            pred = out
            if any(not isinstance(m, (_metrics.CategoricalAccuracy, _metrics.SparseCategoricalAccuracy))
                   for m in self.metrics):
                pred = self.layers[-1].activation.forward(out)
            return val, g, pred
        val, g = self.loss.value_and_grad(yb, out)
        return val, g, out

    # ------------------------------------------------------------------ DP-SGD step
    def _dp_check(self):
        """ValueError naming every layer DP-SGD cannot train through; else the trainable layers."""
        bad = [r for r in (l.per_example_support() for l in self._layers) if r]
        if bad:
            raise ValueError("DP-SGD: " + "; ".join(bad))
        return [l for l in self._layers if l.trainable and l._trainable_names]

    def _backward_per_example(self, g):
        """``_backward`` with ``backward_per_example``: layers cache output gradients."""
        self._backward(g, per_example=True)

    def _train_step_dp(self, xb, yb, fused, expected_batch_size):
        """One DP-SGD step: per-example gradients of the per-example losses, each example's
        gradient over all trainable weights clipped to the optimizer's l2_norm_clip, summed;
        the optimizer adds Gaussian noise, divides by ``expected_batch_size`` and updates. An
        empty batch (Poisson sampling) still takes a step: noise only."""
        opt = self.optimizer
        tl = self._dp_check()
        for l in tl:
            l.zero_grad()
        n = len(xb)
        if n == 0:
            opt.apply_private(self._params(), expected_batch_size)
            return 0.0, None
        out = self._forward(xb, True, fused)
        val, g, pred = self._loss_and_pred(yb, out, fused)
        if not np.isfinite(val):
            return val, pred
        # the loss is the batch mean of per-example losses: n * g holds each one's own gradient
        self._backward_per_example(g * g.dtype.type(n))
        sq = np.zeros(n)
        for l in tl:
            sq += l.per_example_sq_norms()
        c = opt.clip_factors(sq)
        for l in tl:
            l.accumulate_clipped(c)
        opt.apply_private(self._params(), expected_batch_size)
        return val, pred

    def _call_layers(self, x, training):
        """Each layer's call() in turn (the tape path); an Embedding(mask_zero=True) mask
        reaches the layers whose call takes ``mask`` (LSTM, GRU, GlobalAveragePooling1D, ...)."""
        mask = None
        for l in self._layers:
            if mask is not None and l._accepts("mask"):
                x = l(x, training=training, mask=mask)
            else:
                x = l(x, training=training)
            mask = l.compute_mask(mask)
        return x

    def _train_step_tape(self, xb, yb):
        """A training step through the tape (a model with call()-only layers)."""
        from pyaiml.autograd import GradientTape
        from pyaiml.autograd import functional as F

        tv = getattr(self, "_tv_fixed", None)
        if tv is None:
            tv = [v for l in self._layers for v in l.trainable_variables]
        with GradientTape() as tape:
            out = self._call_layers(xb, True)
            loss = F.loss(self.loss, yb, out)
        val = float(getattr(loss, "value", loss))
        pred = getattr(out, "value", out)
        if not np.isfinite(val):
            return val, pred
        grads = tape.gradient(loss, tv)
        params = [(v.value, np.zeros_like(v.value) if g is None else g) for v, g in zip(tv, grads)]
        if self._grad_hook is not None:  # pyaiml.distributed sums the gradients in place: own them
            params = [(p, np.array(g, dtype=p.dtype, copy=True)) for p, g in params]
            self._grad_hook(params)
        self.optimizer.apply(params)
        return val, pred

    def _train_step(self, xb, yb, fused):
        if self._tape_only():
            return self._train_step_tape(xb, yb)
        for l in self._layers:
            if l.grads:
                l.zero_grad()
        out = self._forward(xb, True, fused)
        val, g, pred = self._loss_and_pred(yb, out, fused)
        if not np.isfinite(val):
            return val, pred
        self._backward(g)
        if self._grad_hook is not None:
            self._grad_hook(self._params())
        self.optimizer.apply(self._params())
        return val, pred

    # ------------------------------------------------------------------ fit
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
            steps_per_epoch=None, validation_steps=None, validation_batch_size=None, validation_freq=1,
            distribute=None):
        """Train; returns a History. ``validation_split`` takes the last fraction of the
        samples (before shuffling), as Keras does. ``distribute``: None, "data_parallel" or a
        pyaiml.distributed.DataParallel: every rank passes the same x, y; each global batch of
        ``batch_size`` is split over the ranks and the gradients are summed before each step
        (pyaiml.distributed.keras)."""
        self._need_compiled("fit")
        if class_weight is not None or sample_weight is not None:
            raise ValueError("fit: class_weight and sample_weight are not supported")
        if steps_per_epoch is not None:
            raise ValueError("fit: steps_per_epoch is not supported with array inputs (all samples are used)")
        x = self._x(x)
        self._ensure_built(x)
        y = self._y(y, len(x))
        if not 0 <= float(validation_split) < 1:
            raise ValueError(f"fit: validation_split must be in [0, 1). Received {validation_split}")
        val = None
        if validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("fit: validation_data must be a tuple (x_val, y_val)")
            vx = self._x(validation_data[0], "validation x")
            self._ensure_built(vx)
            val = (vx, self._y(validation_data[1], len(vx), "validation y"))
        elif validation_split:
            k = int(len(x) * (1 - validation_split))
            if k == 0 or k == len(x):
                raise ValueError(f"fit: validation_split={validation_split} leaves an empty training or validation set "
                                 f"for {len(x)} samples")
            val = (x[k:], y[k:])
            x, y = x[:k], y[:k]
        bs = 32 if batch_size is None else int(batch_size)
        if bs < 1:
            raise ValueError(f"fit: batch_size must be >= 1. Received {batch_size}")
        epochs, initial_epoch = int(epochs), int(initial_epoch)
        n = len(x)
        steps = -(-n // bs)
        if verbose == "auto":
            verbose = 1
        history = _cb.History()
        if initial_epoch > 0 and self.history is not None:  # resuming: continue the History
            keep = [i for i, e in enumerate(self.history.epoch) if e < initial_epoch]
            history.epoch = [self.history.epoch[i] for i in keep]
            history.history = {k: [v[i] for i in keep if i < len(v)] for k, v in self.history.history.items()}
        cbs = list(callbacks or [])
        sync = None
        if distribute is not None:
            from pyaiml.distributed.keras import FitSync
            sync = FitSync(self, distribute, x, y, bs)
            cbs, verbose = sync.callbacks(cbs, verbose)
        if verbose:
            cbs.append(_cb.ProgbarLogger(verbose))
        cbs.append(history)
        self.history = history
        cl = _cb.CallbackList(cbs, self, {"epochs": epochs, "steps": steps, "verbose": verbose, "samples": n})
        fused = self._fusion()
        dp = getattr(self.optimizer, "is_dp", False)
        if dp:  # DP-SGD: the optimizer draws the batches (Poisson sampling, rate batch_size / n)
            self._dp_check()
            self.optimizer.begin_fit(n, bs)
        self.stop_training = False
        if self._tape_only():  # the trainable variables, fixed for the fit (walking the layers each step costs)
            self._tv_fixed = [v for l in self._layers for v in l.trainable_variables]
        try:
            self._fit_epochs(cl, x, y, val, n, bs, steps, epochs, initial_epoch, shuffle, sync, fused, dp,
                             validation_freq, validation_batch_size)
        finally:
            self._tv_fixed = None
        return history

    def _fit_epochs(self, cl, x, y, val, n, bs, steps, epochs, initial_epoch, shuffle, sync, fused, dp,
                    validation_freq, validation_batch_size):
        logs = {}
        with _NoFiniteChecks():
            cl.on_train_begin()
            for epoch in range(initial_epoch, epochs):
                cl.on_epoch_begin(epoch)
                batches = self.optimizer.epoch_batches(n, steps) if dp else None
                if batches is not None:
                    xe, ye = x, y
                elif shuffle:
                    perm = rng().permutation(n) if sync is None else sync.permutation(rng().permutation(n))
                    xe, ye = x[perm], y[perm]
                else:
                    xe, ye = x, y
                for m in self.metrics:
                    m.reset_state()
                tot, cnt = 0.0, 0
                logs = {}
                for b in range(steps):
                    cl.on_train_batch_begin(b)
                    if batches is not None:
                        xb, yb = x[batches[b]], y[batches[b]]
                    else:
                        s = slice(b * bs, min(n, (b + 1) * bs))
                        xb, yb = xe[s], ye[s]
                        if sync is not None:
                            xb, yb = sync.shard(xb, yb)
                    if dp:
                        lv, pred = self._train_step_dp(xb, yb, fused, bs)
                    else:
                        lv, pred = self._train_step(xb, yb, fused)
                    if _cb.non_finite_loss(self, cl, lv, epoch, b, steps):
                        break
                    k = len(xb)
                    tot += lv * k
                    cnt += k
                    if k:  # a Poisson-sampled batch can be empty
                        for m in self.metrics:
                            m.update_state(yb, pred)
                    logs = {"loss": tot / max(cnt, 1), **{m.name: m.result() for m in self.metrics}}
                    cl.on_train_batch_end(b, logs)
                    if self.stop_training:
                        break
                if sync is not None:
                    logs = sync.epoch_logs(logs)
                if val is not None and (epoch + 1) % validation_freq == 0:
                    vr = self._evaluate(val[0], val[1], validation_batch_size or bs, fused)
                    logs.update({"val_" + k: v for k, v in vr.items()})
                if dp:
                    logs["epsilon"] = self.optimizer.logged_epsilon()
                cl.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
            cl.on_train_end(logs if epochs > initial_epoch else {})

    # ------------------------------------------------------------------ evaluate / predict
    def _evaluate(self, x, y, bs, fused):
        for m in self.metrics:
            m.reset_state()
        tot, n = 0.0, len(x)
        for b in range(0, n, bs):
            xb, yb = x[b:b + bs], y[b:b + bs]
            out = self._forward(xb, False, fused)
            lv, _, pred = self._loss_and_pred(yb, out, fused)
            tot += lv * len(xb)
            for m in self.metrics:
                m.update_state(yb, pred)
        return {"loss": tot / n, **{m.name: m.result() for m in self.metrics}}

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", return_dict=False, callbacks=None, **kw):
        self._need_compiled("evaluate")
        x = self._x(x)
        self._ensure_built(x)
        y = self._y(y, len(x))
        with _NoFiniteChecks():
            r = self._evaluate(x, y, 32 if batch_size is None else int(batch_size), self._fusion())
        if verbose:  # "auto" or >= 1: one summary line
            print(" - ".join(f"{k}: {v:.4f}" for k, v in r.items()))
        if return_dict:
            return r
        return r["loss"] if not self.metrics else list(r.values())

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        x = self._x(x)
        self._ensure_built(x)
        bs = 32 if batch_size is None else int(batch_size)
        n = len(x)
        out = None
        with _NoFiniteChecks():
            for b in range(0, n, bs):
                yb = self._forward(x[b:b + bs], False, False)
                if out is None:
                    out = np.empty((n,) + yb.shape[1:], dtype=yb.dtype)
                out[b:b + len(yb)] = yb
        return out

    def __call__(self, x, training=False):
        from pyaiml.autograd.tape import Tensor, recording

        if getattr(x, "_is_keras_tensor", False):
            # functional API: the layers join the graph one by one (pyaiml/keras/functional.py)
            for layer in self._layers:
                if not isinstance(layer, _layers.InputLayer):
                    x = layer(x)
            return x
        if recording() or isinstance(x, Tensor):  # on a GradientTape: each layer's call() records
            if not self.built:
                self._ensure_built(np.asarray(getattr(x, "value", x)))
            return self._call_layers(x, training)
        x = self._x(x)
        self._ensure_built(x)
        return self._forward(x, bool(training), False)

    def predict_on_batch(self, x):
        return self.predict(x, batch_size=max(1, len(np.asarray(x))))

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        self._need_compiled("train_on_batch")
        x = self._x(x)
        self._ensure_built(x)
        y = self._y(y, len(x))
        fused = self._fusion()
        with _NoFiniteChecks():
            if getattr(self.optimizer, "is_dp", False):
                # DP-SGD on a batch the caller chose: normalised by its size; the sampling rate is
                # unknown to the accountant (optimizer.epsilon() says so)
                self.optimizer.begin_batch()
                lv, pred = self._train_step_dp(x, y, fused, max(1, len(x)))
            else:
                lv, pred = self._train_step(x, y, fused)
        if not np.isfinite(lv):
            raise NonFiniteLossError(f"train_on_batch: the loss became {lv}")
        r = {"loss": lv}
        for m in self.metrics:
            m.reset_state()
            if pred is not None:  # None: an empty DP-SGD batch
                m.update_state(y, pred)
            r[m.name] = m.result()
        if return_dict:
            return r
        return lv if not self.metrics else list(r.values())

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        self._need_compiled("test_on_batch")
        x = self._x(x)
        self._ensure_built(x)
        y = self._y(y, len(x))
        with _NoFiniteChecks():
            r = self._evaluate(x, y, max(1, len(x)), self._fusion())
        if return_dict:
            return r
        return r["loss"] if not self.metrics else list(r.values())

    # ------------------------------------------------------------------ summary
    def summary(self, print_fn=None):
        p = print_fn or print
        lines = [f'Model: "{self.name}"']
        w = (34, 26, 12)
        sep = "=" * sum(w)
        lines.append("_" * sum(w))
        lines.append(f"{'Layer (type)':<{w[0]}}{'Output Shape':<{w[1]}}{'Param #':>{w[2]}}")
        lines.append(sep)
        for l in self.layers:
            shape = _shape_str(l.output_shape) if l.built else "?"
            lines.append(f"{l.name + ' (' + type(l).__name__ + ')':<{w[0]}}{shape:<{w[1]}}{l.count_params():>{w[2]},}")
        lines.append(sep)
        tot = self.count_params()
        tr = sum(w_.size for l in self._layers for w_ in l.trainable_weights)
        lines.append(f"Total params: {tot:,}")
        lines.append(f"Trainable params: {tr:,}")
        lines.append(f"Non-trainable params: {tot - tr:,}")
        lines.append("_" * sum(w))
        text = "\n".join(lines)
        if print_fn is None:
            print(text)
        else:
            for line in lines:
                p(line)
        return None

    # ------------------------------------------------------------------ config / saving
    def get_config(self):
        return {"name": self.name, "input_shape": None if self._input_shape is None else list(self._input_shape),
                "layers": [_layers.serialize(l) for l in self._layers]}

    @classmethod
    def from_config(cls, cfg):
        m = cls(name=cfg.get("name"))
        for lc in cfg["layers"]:
            m.add(_layers.deserialize(lc))
        if not m.built and cfg.get("input_shape") is not None:
            m._build(tuple(cfg["input_shape"]))
        return m


def load_model(filepath, compile=True, key=None, custom_objects=None):
    """Load a model saved with ``model.save`` (see pyaiml/keras/saving.py); ``key`` for an
    encrypted file (a wrong key, or any changed byte, is a ValueError and loads nothing). A
    model compiled with pyaiml.privacy.DPSGD comes back with it (its accountant's step count
    included)."""
    from pyaiml.keras import saving
    from pyaiml.privacy.dp import loadable

    with loadable():
        return saving.load_model(filepath, compile=compile, key=key, custom_objects=custom_objects)


def clone_model(model):
    m = Sequential.from_config(model.get_config())
    return m
