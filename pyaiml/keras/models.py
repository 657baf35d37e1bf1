"""Keras ``Sequential`` on pyaiml.ops: compile, fit, evaluate, predict, *_on_batch,
summary, get/set_weights, save/load_model.

Training step (one per batch), as for every other model: the layers' ``call()`` on a
GradientTape (pyaiml/autograd), the loss (a softmax output under a cross-entropy is
differentiated from its logits), the tape's gradient with its fusion pass
(pyaiml/autograd/fusion.py: a max-pool after a conv + ReLU takes the ReLU's gradient, the
first layer gets no input gradient; ``model.fusion_plan`` shows the decisions), one
optimizer update. predict/evaluate run the layers' inference path (``forward``: plain
arrays, no tape). Data are float32; each
epoch shuffles the arrays once, so batches are contiguous slices (no per-batch gather).
The per-op NaN/inf input checks of pyaiml.ops are switched off inside fit/evaluate/predict
after x has been checked once; a NaN loss stops training with an error that names the
epoch and batch.

DP-SGD (an optimizer with ``is_dp``, pyaiml.privacy.DPSGD): a separate step,
``_train_step_dp``: the tape's clipped gradient (the per-example rules of the ops the layers
record give each example's squared gradient norm, the optimizer turns them into clip
factors, the clipped gradients are summed), then the optimizer adds noise and updates.
fit then draws Poisson-sampled batches from the optimizer and logs ``epsilon`` per epoch.
The functional API and subclassed models are pyaiml/keras/functional.py and model.py.
Not here: sample weights.
Tests: tests/test_keras_api.py, tests/test_keras_train.py, tests/test_autograd_fusion.py,
tests/test_privacy_dp.py.
"""
from __future__ import annotations

import numpy as np

from pyaiml.autograd import GradientTape
from pyaiml.autograd import functional as F
from pyaiml.autograd import fusion as _fusion
from pyaiml.keras import callbacks as _cb
from pyaiml.keras import layers as _layers
from pyaiml.keras import losses as _losses
from pyaiml.keras import metrics as _metrics
from pyaiml.keras import optimizers as _opt
from pyaiml.keras._common import FLOATX, rng
from pyaiml.keras._plans import planned_forward
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

    def __getstate__(self):
        # copy.deepcopy / pickle: without the inference plans, whose callables hold this
        # model's layers (a copy running them would read the original's weights)
        state = self.__dict__.copy()
        state.pop("_iplans", None)
        return state

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
        self._iplans = {}
        if self._input_shape is not None and None not in self._input_shape[-1:]:
            self._build(self._input_shape)

    def pop(self):
        if not self.layers:
            raise TypeError("Sequential.pop: there are no layers in the model")
        self._layers.pop()
        self._iplans = {}

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
        """(array, None) per trainable weight, in the optimizer's order."""
        return [(v.value, None) for v in self._train_vars()]

    @property
    def weights(self):
        return [w for l in self._layers for w in l.weights]

    @property
    def trainable_weights(self):
        return [w for l in self._layers for w in l.trainable_weights]

    @property
    def non_trainable_weights(self):
        return [v.value for v in self.non_trainable_variables]

    @property
    def variables(self):
        """The layers' Variables (what a GradientTape differentiates), in layer order."""
        return [v for l in self._layers for v in l.variables]

    @property
    def trainable_variables(self):
        return [v for l in self._layers for v in l.trainable_variables]

    @property
    def non_trainable_variables(self):
        return [v for l in self._layers for v in l.non_trainable_variables]

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
        self._plan = None
        if getattr(self.optimizer, "is_dp", False):
            self._dp_check()

    @property
    def fusion_plan(self):
        """What the tape's fusion pass (pyaiml/autograd/fusion.py) does to this model's
        training step: a ``FusionReport`` (``.describe()`` lists its decisions), made by
        tracing one step on a zero batch (no update; the layers' state, such as
        BatchNormalization's moving statistics, a stateful RNN's kept states and the dropout
        generator, restored) and kept while the layers stay the same.
        None before compile() or while the input shape is unknown."""
        if not getattr(self, "compiled", False) or not self.built:
            return None
        plan = getattr(self, "_plan", None)
        if plan is None or plan.layers != tuple(self._layers):
            plan = _fusion.trace(self._trace_step, self._layers)
            plan.layers = tuple(self._layers)
            self._plan = plan
        return plan

    def _trace_step(self):
        """A recorded training step on a zero batch: (tape, loss). One sample, or the batch a
        stateful recurrent layer keeps its states for, or the Input's batch_size."""
        n = 1
        for l in self._layers:
            kept = getattr(l, "states", None)
            if getattr(l, "stateful", False) and kept:
                n = kept[0].shape[0]
                break
            if getattr(l, "batch_size", None):
                n = l.batch_size
        first = self.layers[0] if self.layers else None
        dt = np.int64 if isinstance(first, _layers.Embedding) else np.float32
        x = np.zeros((n,) + tuple(self._input_shape), dt)
        out = tuple(self.output_shape)
        y = (np.zeros((n,) + out[:-1], np.int64) if isinstance(self.loss, _losses.SparseCategoricalCrossentropy)
             else np.zeros((n,) + out, np.float32))
        return self._recorded_loss(x, y)[:2]

    # ------------------------------------------------------------------ data checks
    def _x(self, x, what="x"):
        if x is None:
            raise ValueError(f"{what} is required")
        x = np.asarray(x)
        first = next((l for l in self._layers if not isinstance(l, _layers.InputLayer)), None)
        if isinstance(first, _layers.Embedding):
            return x
        if x.dtype.kind not in "fiub":
            raise ValueError(f"{what} must be numeric. Received dtype {x.dtype}")
        x = np.ascontiguousarray(x, dtype=FLOATX)
        if x.ndim < 2:
            raise ValueError(f"{what} must have a batch dimension: shape (samples, ...). Received shape {x.shape}")
        if not _validate.all_finite(x):  # one C++ pass on float32 (~0.5 us at 32x32x3)
            bad = np.argwhere(~np.isfinite(x))[0]
            raise ValueError(f"{what} contains NaN or inf (first at sample {bad[0]}, index {tuple(int(i) for i in bad[1:])})")
        return x

    def _y(self, y, n, what="y"):
        if y is None:
            raise ValueError(f"{what} is required for training and evaluation")
        y = np.asarray(y)
        if n == 0:  # every loss and metric is a mean over the samples
            raise ValueError("x must hold at least one sample to train or evaluate on. Received 0 samples")
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
    def _forward(self, x):
        """Inference: each layer's ``forward`` (no tape, no caches). With the finite checks off
        (predict, evaluate, model(x): the input checked once) through a plan kept per input
        shape, dtype and PYAIML_BACKEND (pyaiml/keras/_plans.py: on C++ the conv/pool/dense
        chain as one native call). At batch 1 the per-layer Python of the mission CNN was about
        a third of a predict call. add() and pop() drop the plans."""
        return planned_forward(self, self._layers, x, self._forward_layers)

    def _forward_layers(self, x):
        mask = None
        for l in self._layers:
            x = l.forward(x, False, mask)
            mask = l.compute_mask(mask)
        return x

    def _call_layers(self, x, training):
        """Each layer's call() in turn (what the tape records); an Embedding(mask_zero=True) mask
        reaches the layers whose call takes ``mask`` (LSTM, GRU, GlobalAveragePooling1D, ...)."""
        mask = None
        for l in self._layers:
            if mask is not None and l._accepts("mask"):
                x = l(x, training=training, mask=mask)
            else:
                x = l(x, training=training)
            mask = l.compute_mask(mask)
        return x

    def _train_vars(self):
        """The trainable variables (fixed for the length of a fit: walking the layers each
        step costs)."""
        tv = getattr(self, "_tv_fixed", None)
        return tv if tv is not None else [v for l in self._layers for v in l.trainable_variables]

    def _recorded_loss(self, xb, yb):
        """The training forward pass and the loss on a tape: (tape, loss, its value, prediction)."""
        with GradientTape() as tape:
            out = self._call_layers(xb, True)
            loss = F.loss(self.loss, yb, out)
        return tape, loss, float(getattr(loss, "value", loss)), getattr(out, "value", out)

    def _train_step(self, xb, yb):
        """One step: the layers' call() on a tape, the loss, the tape's gradient (with its
        fusion pass, pyaiml/autograd/fusion.py), the optimizer's update."""
        tv = self._train_vars()
        tape, loss, val, pred = self._recorded_loss(xb, yb)
        if not np.isfinite(val):
            return val, pred
        grads = tape.gradient(loss, tv)
        params = [(v.value, np.zeros_like(v.value) if g is None else g) for v, g in zip(tv, grads)]
        if self._grad_hook is not None:  # pyaiml.distributed sums the gradients in place: own them
            params = [(p, np.array(g, dtype=p.dtype, copy=True)) for p, g in params]
            self._grad_hook(params)
        self.optimizer.apply(params)
        return val, pred

    # ------------------------------------------------------------------ DP-SGD step
    def _dp_check(self):
        """ValueError naming every layer DP-SGD cannot train through."""
        bad = [r for r in (l.per_example_support() for l in self._layers) if r]
        if bad:
            raise ValueError("DP-SGD: " + "; ".join(bad))

    def _train_step_dp(self, xb, yb, expected_batch_size):
        """One DP-SGD step through the tape: each example's gradient over every trainable
        variable clipped to the optimizer's l2_norm_clip (GradientTape.clipped_gradient, the
        per-example rules of pyaiml.autograd.per_example), summed; the optimizer adds the
        noise, divides by ``expected_batch_size`` and updates. An empty batch (Poisson
        sampling) takes a noise-only step."""
        if len(xb) == 0:
            self.optimizer.apply_tape(None, None, self._train_vars(), 0, expected_batch_size)
            return 0.0, None
        tape, loss, val, pred = self._recorded_loss(xb, yb)
        if np.isfinite(val):
            self.optimizer.apply_tape(tape, loss, self._train_vars(), len(xb), expected_batch_size)
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
        dp = getattr(self.optimizer, "is_dp", False)
        if dp:  # DP-SGD: the optimizer draws the batches (Poisson sampling, rate batch_size / n)
            self._dp_check()
            self.optimizer.begin_fit(n, bs)
        self.stop_training = False
        self._tv_fixed = [v for l in self._layers for v in l.trainable_variables]  # fixed for the fit
        try:
            self._fit_epochs(cl, x, y, val, n, bs, steps, epochs, initial_epoch, shuffle, sync, dp,
                             validation_freq, validation_batch_size)
        finally:
            self._tv_fixed = None
        return history

    def _fit_epochs(self, cl, x, y, val, n, bs, steps, epochs, initial_epoch, shuffle, sync, dp,
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
                        lv, pred = self._train_step_dp(xb, yb, bs)
                    else:
                        lv, pred = self._train_step(xb, yb)
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
                    vr = self._evaluate(val[0], val[1], validation_batch_size or bs)
                    logs.update({"val_" + k: v for k, v in vr.items()})
                if dp:
                    logs["epsilon"] = self.optimizer.logged_epsilon()
                cl.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
            cl.on_train_end(logs if epochs > initial_epoch else {})

    # ------------------------------------------------------------------ evaluate / predict
    def _evaluate(self, x, y, bs):
        for m in self.metrics:
            m.reset_state()
        tot, n = 0.0, len(x)
        for b in range(0, n, bs):
            xb, yb = x[b:b + bs], y[b:b + bs]
            pred = self._forward(xb)
            lv = float(self.loss(yb, pred))
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
            r = self._evaluate(x, y, 32 if batch_size is None else int(batch_size))
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
        if n == 0:
            return self._empty_output()
        out = None
        with _NoFiniteChecks():
            for b in range(0, n, bs):
                yb = self._forward(x[b:b + bs])
                if n <= bs and not np.may_share_memory(yb, x):  # one batch: its output is the result
                    return yb
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
        if training:  # training-mode layers (dropout, batch statistics) through their call()
            return self._call_layers(x, True)
        if len(x) == 0:
            return self._empty_output()
        with _NoFiniteChecks():  # x checked above, as in predict
            return self._forward(x)

    def _empty_output(self):
        """What predict and model(x) give for zero samples: an empty float32 array of the
        output's shape (the kernels refuse empty batches; a free axis counts 0)."""
        return np.zeros((0,) + tuple(0 if d is None else d for d in self.output_shape), FLOATX)

    def predict_on_batch(self, x):
        return self.predict(x, batch_size=max(1, len(np.asarray(x))))

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        self._need_compiled("train_on_batch")
        x = self._x(x)
        self._ensure_built(x)
        y = self._y(y, len(x))
        with _NoFiniteChecks():
            if getattr(self.optimizer, "is_dp", False):
                # DP-SGD on a batch the caller chose: normalised by its size; the sampling rate is
                # unknown to the accountant (optimizer.epsilon() says so)
                self.optimizer.begin_batch()
                lv, pred = self._train_step_dp(x, y, max(1, len(x)))
            else:
                lv, pred = self._train_step(x, y)
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
            r = self._evaluate(x, y, max(1, len(x)))
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
