"""Keras layers on pyaiml.ops, differentiated by the tape (pyaiml/autograd).

Lifecycle (see DESIGN.md): ``__init__`` stores and validates config; ``build(input_shape)``
creates weights; ``call(inputs, training=None, ...)`` computes; ``compute_output_shape``
is pure; ``get_config``/``from_config`` round-trip. Shapes exclude the batch dimension
unless named ``batch_*``. Channels last, like Keras. Weights are held in the layout the op
wants (conv: torch OIHW) and converted to Keras layouts by ``get_weights``/``set_weights``
(Conv2D kernel (kh, kw, cin, cout), Dense kernel (in, out), ...). float32 throughout.

Two ways through a layer. ``call`` is written with pyaiml.autograd.functional (the tape's
primitives on the same pyaiml.ops kernels, each with its explicit backward kernel) and is
the only one that trains: it runs whenever a GradientTape records, on tape values, on
symbolic ``keras.Input`` tensors (pyaiml/keras/functional.py), in every model's training
step, and for every user subclass, so a user's ``Layer`` or ``Model`` with ``build``/
``call``/``add_weight`` trains like ours, and our layers work inside its ``call()``. What
neighbouring ops share in the backward pass (conv + ReLU into the max-pool, softmax into
the loss, no input gradient for a first layer) is the tape's fusion pass
(pyaiml/autograd/fusion.py), not the layers'. ``forward(x, training, mask)`` is the
inference path on plain arrays (Sequential's predict, a direct call with no tape): lean
versions of the same computation, no caches. Weights of built-in layers are arrays held as
attributes and seen by the tape through a ``Variable`` sharing their memory (``_var``);
``add_weight(shape=..., initializer=...)`` (Keras 3's signature) returns a ``Variable``.
Nested layers held as attributes (alone or in lists, tuples, dicts) are tracked: their
weights are the parent's.

DP-SGD (pyaiml/privacy/dp.py) takes each example's gradient from the per-example rules of
the ops a layer records (pyaiml.autograd.per_example): Dense, Conv1D/Conv2D, Embedding and
LayerNormalization have them; BatchNormalization refuses (``Layer.per_example_support``).

Recurrent layers (SimpleRNN, LSTM, GRU, Bidirectional, TimeDistributed) live in pyaiml/keras/recurrent.py.
Not here: masks inside a subclassed model's call() (the functional API
carries an Embedding's mask: pyaiml/keras/functional.py).
Tests: tests/test_keras_layers.py (call's output and gradients against torch in float64,
forward against call); tests/test_keras_subclass.py (each layer's call against finite
differences, subclassing); tests/test_keras_extras.py (the call-only layers against torch);
tests/test_privacy_dp.py (per-example gradients against a loop over examples).
"""
from __future__ import annotations

import inspect
import threading

import numpy as np

import pyaiml.ops as ops
from pyaiml.autograd import functional as F
from pyaiml.autograd.tape import Tensor, Variable, _call_stack, calling, recording
from pyaiml.keras import activations as _acts
from pyaiml.keras import initializers as _inits
from pyaiml.keras._common import FLOATX, rng, tuple_n
from pyaiml.ops._validate import get_check_finite
from pyaiml.ops.linalg import linear_unchecked

_F32 = np.dtype(np.float32)

_names: dict[str, int] = {}


def _auto_name(cls_name: str) -> str:
    base = "".join("_" + c.lower() if c.isupper() else c for c in cls_name).lstrip("_")
    base = base.replace("max_pooling1_d", "max_pooling1d").replace("max_pooling2_d", "max_pooling2d")
    base = base.replace("conv1_d", "conv1d").replace("conv2_d", "conv2d")
    base = base.replace("average_pooling1_d", "average_pooling1d").replace("average_pooling2_d", "average_pooling2d")
    n = _names.get(base, 0)
    _names[base] = n + 1
    return base if n == 0 else f"{base}_{n}"


def _shape_str(s):
    return "(None, " + ", ".join(str(d) for d in s) + ")" if s else "(None,)"


class InputSpecError(ValueError):
    """An input does not fit a layer (wrong rank or size)."""


_ctx = threading.local()  # the training flag of the outermost call, inherited by nested calls


# modules whose layers' call/build are ours (a subclass that overrides them is user code)
BUILTIN_MODULES = {__name__}


def _builtin(fn):
    return getattr(fn, "__module__", None) in BUILTIN_MODULES


def _symbolic(a):
    if isinstance(a, (list, tuple)):
        return any(_symbolic(b) for b in a)
    if isinstance(a, dict):
        return any(_symbolic(b) for b in a.values())
    return getattr(a, "_is_keras_tensor", False)


def _shape_of(a):
    if isinstance(a, (list, tuple)):
        return [_shape_of(b) for b in a]
    if isinstance(a, dict):
        return {k: _shape_of(b) for k, b in a.items()}
    return tuple(a.shape) if hasattr(a, "shape") else tuple(np.shape(a))


def _batchless(out):
    """The shape of a call's result with the batch size as None (lists for several results)."""
    if isinstance(out, (list, tuple)):
        return [_batchless(o) for o in out]
    shape = getattr(out, "shape", None)
    return None if shape is None or not len(shape) else (None,) + tuple(shape[1:])


_ACT_TAPE = {"linear": None, "relu": F.relu, "sigmoid": F.sigmoid, "tanh": F.tanh, "softmax": F.softmax,
             "log_softmax": F.log_softmax, "gelu": F.gelu,
             "elu": F.elu,
             "selu": lambda x: F.multiply(F.elu(x, _acts._SELU_ALPHA), _acts._SELU_SCALE),
             "softplus": F.softplus,
             "softsign": lambda x: F.divide(x, F.add(F.abs(x), 1.0)),
             "silu": F.silu,
             "leaky_relu": lambda x: F.leaky_relu(x, 0.2),
             "relu6": lambda x: F.clip(F.relu(x), 0.0, 6.0),
             "exponential": F.exp,
             "hard_sigmoid": lambda x: F.divide(F.clip(F.add(x, 3.0), 0.0, 6.0), 6.0)}


def _apply_act(act, x):
    """A pyaiml.keras activation on the tape."""
    f = _ACT_TAPE[act.name]
    return x if f is None else f(x)


_LEAVES = (np.ndarray, np.generic, int, float, str, bool, type(None), Tensor)
# Exact types that never are or hold a layer: attributes of these types, and lists, tuples
# and dicts of them (shapes, weight names, the Variables), are skipped without a call when a
# layer lists its sublayers (train_on_batch does that for every layer at every step).
_LEAF_TYPES = frozenset({np.ndarray, np.float32, np.float64, np.int64, int, float, str, bool, type(None), Tensor,
                         Variable, set, frozenset, type})


def _plain(v):
    """Whether v is a leaf, or a list, tuple or dict of leaves (then it holds no layer)."""
    t = type(v)
    if t in _LEAF_TYPES:
        return True
    if t is list or t is tuple:
        return all(type(e) in _LEAF_TYPES for e in v)
    if t is dict:
        return all(type(e) in _LEAF_TYPES for e in v.values())
    return False


class Layer:
    """Base class. Subclasses set ``_weight_names`` in build via ``add_weight``."""

    supports_masking = False

    def __init__(self, name=None, trainable=True, input_shape=None, batch_input_shape=None, input_dim=None,
                 dtype=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument(s) {sorted(kwargs)}")
        self.name = name or _auto_name(type(self).__name__)
        self.trainable = bool(trainable)
        if batch_input_shape is not None:
            input_shape = tuple(batch_input_shape)[1:]
        if input_dim is not None:
            input_shape = (int(input_dim),)
        self._input_shape_arg = None if input_shape is None else tuple(
            None if d is None else int(d) for d in (input_shape if isinstance(input_shape, (tuple, list)) else (input_shape,)))
        if dtype not in (None, "float32", np.float32):
            raise ValueError(f"{self.name}: only dtype float32 is supported. Received {dtype!r}")
        self.built = False
        self.input_shape = None
        self.output_shape = None
        self._vars: dict[str, Variable] = {}  # name -> Variable (built-in weights: made on demand by _var)
        self._attr_weights: set[str] = set()  # weights held as array attributes (built-in layers)
        self._compute_dtype = FLOATX
        self._weight_names: list[str] = []
        self._trainable_names: list[str] = []

    # ---- weights
    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        self._trainable = bool(value)
        for n, v in getattr(self, "_vars", {}).items():
            v.requires_grad = self._trainable and n in self._trainable_names and v.value.dtype.kind == "f"
        for sub in self._sublayers() if hasattr(self, "_vars") else ():
            sub.trainable = value

    def add_weight(self, *args, **kwargs):
        """Keras 3: ``add_weight(shape=None, initializer=None, dtype=None, trainable=True, name=None)``
        returns a Variable (keep it as an attribute and use it in ``call``). The built-in
        layers' form ``add_weight(name, shape, initializer, trainable)`` holds an array."""
        if args and isinstance(args[0], str):
            return self._add_array_weight(*args, **kwargs)
        return self._add_variable(*args, **kwargs)

    def _add_array_weight(self, name, shape, initializer="zeros", trainable=True):
        w = _inits.get(initializer)(tuple(shape))
        return self._register(name, np.ascontiguousarray(w, dtype=FLOATX), trainable)

    def _add_variable(self, shape=None, initializer=None, dtype=None, trainable=True, autocast=True, regularizer=None,
                      constraint=None, aggregation="none", overwrite_with_gradient=False, name=None):
        cname = type(self).__name__
        try:
            shape = () if shape is None else tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name} ({cname}).add_weight: shape must be a tuple of ints (known sizes; build() "
                             f"gets the input shape). Received {shape!r}") from None
        if regularizer is not None or constraint is not None:
            raise ValueError(f"{self.name} ({cname}).add_weight: regularizer and constraint are not supported")
        dt = np.dtype(dtype or self._compute_dtype)
        if initializer is None:
            initializer = "glorot_uniform" if dt.kind == "f" and len(shape) >= 2 else "zeros"
        if isinstance(initializer, (int, float, np.ndarray)):
            arr = np.broadcast_to(np.asarray(initializer, dt), shape).copy()
        else:
            arr = np.asarray(_inits.get(initializer)(shape), dtype=dt)
        if arr.shape != shape:
            raise ValueError(f"{self.name} ({cname}).add_weight: the initializer gave shape {arr.shape}, not {shape}")
        base = name or "variable"
        name, k = base, 1
        while name in self._vars or name in self._weight_names:
            name, k = f"{base}_{k}", k + 1
        v = Variable(np.array(arr, order="C"), trainable=trainable, name=f"{self.name}/{name}")
        self._vars[name] = v
        self._weight_names.append(name)
        if trainable:
            self._trainable_names.append(name)
        v.requires_grad = bool(trainable) and self.trainable and dt.kind == "f"
        return v

    def _register(self, name, arr, trainable=True):
        setattr(self, name, arr)
        self._attr_weights.add(name)
        self._weight_names.append(name)
        if trainable:
            self._trainable_names.append(name)
        return arr

    def _arr(self, name):
        """The array of weight ``name``."""
        return getattr(self, name) if name in self._attr_weights else self._vars[name].value

    def _var(self, name):
        """The Variable of weight ``name`` (for an array attribute, one sharing its memory)."""
        v = self._vars.get(name)
        if name in self._attr_weights:
            arr = getattr(self, name)
            if v is None or v.value is not arr:
                v = self._vars[name] = Variable(arr, trainable=name in self._trainable_names, name=f"{self.name}/{name}")
            v.requires_grad = self.trainable and name in self._trainable_names and arr.dtype.kind == "f"
        return v

    def _sublayers(self):
        """Layers held as attributes (alone, or in lists, tuples and dicts), in assignment order."""
        out, seen = [], set()

        def visit(v, depth=0):
            if isinstance(v, _LEAVES):  # arrays, numbers, strings, tape values: the common case
                return
            if isinstance(v, Layer):
                if id(v) not in seen and v is not self:
                    seen.add(id(v))
                    out.append(v)
            elif getattr(v, "_is_sequential", False):
                for layer in v._layers:
                    visit(layer)
            elif isinstance(v, (list, tuple)) and depth < 2:
                for b in v:
                    visit(b, depth + 1)
            elif isinstance(v, dict) and depth < 2:
                for b in v.values():
                    visit(b, depth + 1)
        for k, v in vars(self).items():
            if not _plain(v) and not k.startswith("_keras") and k != "_inbound":
                visit(v)
        return out

    def _all_layers(self):
        """This layer and every nested layer, depth first, each once."""
        out, seen = [], set()

        def walk(layer):
            if id(layer) in seen:
                return
            seen.add(id(layer))
            out.append(layer)
            for sub in layer._sublayers():
                walk(sub)
        walk(self)
        return out

    @property
    def variables(self):
        """Variables of this layer and its nested layers (own first)."""
        return [layer._var(n) for layer in self._all_layers() for n in layer._weight_names]

    @property
    def trainable_variables(self):
        return [layer._var(n) for layer in self._all_layers() if layer.trainable for n in layer._trainable_names]

    @property
    def non_trainable_variables(self):
        tv = {id(v) for v in self.trainable_variables}
        return [v for v in self.variables if id(v) not in tv]

    def _to_keras(self, name, arr):
        return arr

    def _from_keras(self, name, arr):
        return arr

    @property
    def weights(self):
        return [getattr(self, n) for n in self._weight_names] if not self._vars and not self._sublayers() else [
            v.value for v in self.variables]

    @property
    def trainable_weights(self):
        return [v.value for v in self.trainable_variables]

    @property
    def non_trainable_weights(self):
        return [v.value for v in self.non_trainable_variables]

    def _cast(self, dtype):
        """Re-type the weights (tests run layers in float64 against torch)."""
        for layer in self._all_layers():
            for n in layer._weight_names:
                if n in layer._attr_weights:
                    setattr(layer, n, getattr(layer, n).astype(dtype))
                else:
                    v = layer._vars[n]
                    v.value = v.value.astype(dtype)
            layer._compute_dtype = np.dtype(dtype)
        return self

    # ---- DP-SGD (pyaiml/privacy/dp.py): each example's gradient comes from the per-example
    # rules of the ops a layer's call() records (pyaiml.autograd.per_example); a layer with
    # trainable weights sets ``per_example_rule`` when its call() meets the batch only
    # through such ops, so a model can refuse the others up front (per_example_support).
    per_example_rule = False

    def per_example_support(self):
        """None when DP-SGD can train through this layer, else the reason (one sentence)."""
        if self.per_example_rule or not self.trainable or not self.built or not self._trainable_names:
            return None
        return (f"layer {self.name!r} ({type(self).__name__}) has trainable weights "
                f"({', '.join(self._trainable_names)}) but no per-example gradient rule, so DP-SGD cannot clip "
                "each example's gradient; freeze it (trainable=False) or use layers with a rule (Dense, Conv1D, "
                "Conv2D, Embedding, LayerNormalization)")

    def count_params(self):
        return int(sum(w.size for w in self.weights))

    def _weight_slots(self):
        """(layer, name) of every weight of this layer and its nested layers, in get_weights order."""
        return [(layer, n) for layer in self._all_layers() for n in layer._weight_names]

    def get_weights(self):
        """Weights as NumPy arrays in Keras layouts (nested layers' after this layer's own)."""
        return [np.array(layer._to_keras(n, layer._arr(n))) for layer, n in self._weight_slots()]

    def set_weights(self, weights):
        if not self.built:
            raise ValueError(f"{self.name}: set_weights before the layer is built (give it an input shape first)")
        weights = list(weights)
        slots = self._weight_slots()
        if len(weights) != len(slots):
            raise ValueError(f"{self.name}: set_weights expects {len(slots)} arrays "
                             f"({', '.join(n for _, n in slots)}). Received {len(weights)}")
        new = []
        for (layer, n), w in zip(slots, weights):
            cur = layer._arr(n)
            want = layer._to_keras(n, cur).shape
            w = np.asarray(w)
            if w.shape != want:
                raise ValueError(f"{layer.name}: weight {n!r} must have shape {want}. Received {w.shape}")
            new.append(np.ascontiguousarray(layer._from_keras(n, w), dtype=cur.dtype))
        for (layer, n), w in zip(slots, new):
            layer._arr(n)[...] = w  # in place: optimizer state stays attached

    # ---- lifecycle
    def build(self, input_shape):
        self.input_shape = tuple(input_shape)
        self.output_shape = self.compute_output_shape(self.input_shape)
        self.built = True

    def _ensure_built(self, input_shape):
        if not self.built:
            self.build(tuple(input_shape))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_mask(self, mask):
        return mask if self.supports_masking else None

    def forward(self, x, training=False, mask=None):
        """Plain arrays in and out with no tape (Sequential's predict): built-in layers override
        it with a lean inference path; otherwise call() on the arrays."""
        kw = {"training": training} if mask is None else {"training": training, "mask": mask}
        return self._tape_call((x,), kw)

    def _inference_fn(self, x):
        """For Sequential's inference plan (pyaiml/keras/models.py, ``_forward``): a callable
        h -> ``forward(h)`` (same bits) for arrays of x's shape and dtype with the finite checks
        off, its per-call work (geometry, argument checks, the backend's choice) done here once;
        or None, and the plan calls ``forward``. Weights are read at each call, not captured."""

    def _native_step(self, x):
        """For Sequential's native inference plan (pyaiml/keras/models.py, csrc/bindings/
        sequential.cpp): (step, weight attribute names) for arrays of x's shape, with step a
        SequentialPlan tuple of ints or None for a layer that leaves the data as it is; or
        NotImplemented when the layer has no native step (the plan then stays in Python)."""
        return NotImplemented

    def call(self, inputs, *args, **kwargs):
        raise NotImplementedError(f"Layer {self.name!r} ({type(self).__name__}) does not define call(self, inputs); "
                                  "a subclass of keras.layers.Layer must implement it")

    def __call__(self, *args, **kwargs):
        if len(args) == 1 and type(args[0]) is Tensor and (not kwargs or kwargs.keys() <= {"training"}):
            return self._tape_call(args, kwargs)  # a tape value: neither symbolic nor the array fast path
        if _symbolic(args) or _symbolic(kwargs):
            from pyaiml.keras.functional import symbolic_call

            return symbolic_call(self, args, kwargs)
        x = args[0] if args else kwargs.get("inputs")
        if (_builtin(type(self).call) and type(self).forward is not Layer.forward
                and len(args) == 1 and set(kwargs) <= {"training", "mask"} and not recording()
                and not isinstance(x, (Tensor, list, tuple, dict))):
            # plain arrays, no tape: the fast path (caches what backward needs)
            x = np.asarray(x)
            if x.dtype.kind == "f" and x.dtype != self._compute_dtype:
                x = x.astype(self._compute_dtype)
            self._ensure_built(x.shape[1:])
            self._check_input(x.shape[1:])
            training = kwargs.get("training")
            return self.forward(x, bool(getattr(_ctx, "training", None) if training is None else training),
                                kwargs.get("mask"))
        return self._tape_call(args, kwargs)

    def _accepts(self, kw):
        cache = type(self).__dict__.get("_call_params")
        if cache is None:
            try:
                ps = inspect.signature(self.call).parameters
                cache = {n for n in ps} | ({"**"} if any(p.kind == p.VAR_KEYWORD for p in ps.values()) else set())
            except (TypeError, ValueError):
                cache = {"**"}
            type.__setattr__(type(self), "_call_params", cache)
        return kw in cache or "**" in cache

    def _convert_input(self, x):
        if isinstance(x, Tensor):
            return x
        if isinstance(x, (list, tuple)):
            return type(x)(self._convert_input(v) for v in x)
        if isinstance(x, dict):
            return {k: self._convert_input(v) for k, v in x.items()}
        if x is None or isinstance(x, (str, bool)):
            return x
        a = np.asarray(x)
        if a.dtype.kind == "f" and a.dtype != self._compute_dtype:
            a = a.astype(self._compute_dtype)
        return a

    def _tape_call(self, args, kwargs):
        """Run ``call`` (recorded when a tape records): build on first use, pass ``training``
        (inherited from the enclosing call when not given) and ``mask`` where call takes them."""
        args = list(args)
        if args:
            args[0] = self._convert_input(args[0])
        elif "inputs" in kwargs:
            kwargs["inputs"] = self._convert_input(kwargs["inputs"])
        training = kwargs.pop("training", None)
        outer = getattr(_ctx, "training", None)
        if training is None:
            training = outer
        if not self.built:
            self._build_for_call(args[0] if args else kwargs.get("inputs"), args, kwargs)
        if self._accepts("training"):
            kwargs["training"] = bool(training) if training is not None else False
        if kwargs.get("mask", 0) is None and not self._accepts("mask"):
            kwargs.pop("mask")
        _ctx.training = training
        stack = _call_stack()
        stack.append(self)  # calling(self), inlined: names this layer in errors raised inside
        try:
            out = self.call(*args, **kwargs)
        finally:
            stack.pop()
            _ctx.training = outer
        self._call_output_shape = _batchless(out)  # for summary()
        return out

    def _build_for_call(self, x, args, kwargs):
        shape = _shape_of(x)
        if _builtin(type(self).build):
            if type(self).build is Layer.build and not _builtin(type(self).call):
                self.built = True  # a user layer without build(): its weights come from add_weight in call or __init__
                return
            self.build(shape[1:] if isinstance(shape, tuple) else [s[1:] for s in shape])
        else:
            with calling(self):
                self.build(shape)
        self.built = True

    def _fixed_axes(self):
        """The (batchless) input axes whose sizes this built layer is tied to, as Keras's input
        specs give them (a Dense layer's last axis, a conv's channels); None (this base
        version): every axis."""

    def _check_input(self, shape):
        want = self.input_shape
        if want is None:
            return
        axes = self._fixed_axes()
        axes = range(len(want)) if axes is None else axes
        if len(shape) != len(want) or any(want[a] is not None and want[a] != shape[a] for a in axes):
            shown = want if self._fixed_axes() is None else tuple(
                want[i] if (i in axes or i - len(want) in axes) else None for i in range(len(want)))
            raise InputSpecError(f"Input of shape {_shape_str(tuple(shape))} does not fit layer {self.name!r} "
                                 f"({type(self).__name__}), which expects {_shape_str(shown)}")

    def get_config(self):
        cfg = {"name": self.name, "trainable": self.trainable}
        if self._input_shape_arg is not None:
            cfg["input_shape"] = list(self._input_shape_arg)
        return cfg

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def _act_call(self, x):
        act = getattr(self, "activation", None)
        return x if act is None else _apply_act(act, x)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}>"


class _ActMixin:
    """Layers with an ``activation=`` argument: ``_act_fwd`` applies it on the inference path."""

    def _act_fwd(self, z):
        return z if self.activation is _acts.linear else self.activation.forward(z)


class InputLayer(Layer):
    """``keras.Input(shape)``: declares a model's input (its ``output`` is the symbolic tensor
    of the functional API); no computation."""

    def __init__(self, shape=None, name=None, input_shape=None, batch_size=None, dtype=None, **kw):
        shape = shape if shape is not None else input_shape
        if shape is None:
            raise ValueError("Input: shape is required, e.g. Input(shape=(32, 32, 3))")
        try:
            np.dtype(dtype or FLOATX)
        except TypeError:
            raise ValueError(f"Input: dtype must be a NumPy dtype name. Received {dtype!r}") from None
        super().__init__(name=name, input_shape=shape, **kw)
        self.input_dtype = np.dtype(dtype or FLOATX)
        self.batch_size = None if batch_size is None else int(batch_size)
        self._output = None

    @property
    def output(self):
        if self._output is None:
            from pyaiml.keras.functional import KerasTensor, Node

            node = Node(self, (), {})
            self._output = KerasTensor((self.batch_size,) + tuple(self._input_shape_arg), self.input_dtype, node, 0,
                                       self.name)
            node.outputs = [self._output]
        return self._output

    def _convert_input(self, x):
        return x

    def call(self, inputs, training=None):
        return inputs

    def forward(self, x, training=False, mask=None):
        return x

    def _native_step(self, x):
        return None, ()

    def get_config(self):
        cfg = {"name": self.name, "shape": list(self._input_shape_arg)}
        if self.input_dtype != FLOATX:
            cfg["dtype"] = self.input_dtype.name
        if self.batch_size is not None:
            cfg["batch_size"] = self.batch_size
        return cfg


def Input(shape=None, batch_size=None, name=None, dtype=None, **kw):
    """``keras.Input``: a symbolic tensor (pyaiml/keras/functional.py); ``Sequential([Input(...), ...])``
    takes it as its input declaration."""
    from pyaiml.keras.functional import Input as _input

    return _input(shape=shape, batch_size=batch_size, name=name, dtype=dtype, **kw)


class Dense(Layer, _ActMixin):
    supports_masking = True

    def _fixed_axes(self):
        return (-1,)  # the kernel fixes the features; other axes (a sequence's length) are free

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kw):
        super().__init__(**kw)
        if not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"Dense: units must be a positive integer. Received {units!r}")
        self.units = int(units)
        self.activation = _acts.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        _inits.get(kernel_initializer), _inits.get(bias_initializer)

    def build(self, input_shape):
        if len(input_shape) < 1 or input_shape[-1] is None:
            raise InputSpecError(f"{self.name}: Dense needs a known last dimension. Received input shape "
                                 f"{_shape_str(input_shape)}")
        self.add_weight("kernel", (input_shape[-1], self.units), self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.units,), self.bias_initializer)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def call(self, inputs, training=None):
        relu = self.activation is _acts.relu
        y = F.dense(inputs, self._var("kernel"), self._var("bias") if self.use_bias else None,
                    activation="relu" if relu else None)  # a ReLU joins the GEMM's epilogue
        return y if relu else self._act_call(y)

    def forward(self, x, training=False, mask=None):
        b = self.bias if self.use_bias else None
        if x.dtype is _F32 and self.kernel.dtype is _F32 and x.ndim >= 1 and not get_check_finite():
            # inside the model's fit/evaluate/predict (input checked once, checks off): the
            # registry's GEMM directly, the same call ops.linear makes (same bits) without its
            # per-call argument handling: the mission CNN's Dense + softmax at batch 1, 37 ->
            # 24 us per call
            if self.activation is _acts.relu:
                return linear_unchecked(x, self.kernel, b, True)
            z = linear_unchecked(x, self.kernel, b)
        else:
            z = ops.linear(x, self.kernel.T, b)
        return self._act_fwd(z)

    def _native_step(self, x):
        if x.dtype != np.float32 or self.kernel.dtype != np.float32 or x.ndim != 2 or not x.size:
            return NotImplemented
        act = self.activation
        if act not in (_acts.relu, _acts.linear, _acts.softmax):
            return NotImplemented
        step = (2, x.shape[0], x.shape[1], self.units, int(act is _acts.relu), int(self.use_bias),
                int(act is _acts.softmax))
        return step, ("kernel", "bias") if self.use_bias else ("kernel",)

    per_example_rule = True  # DP-SGD: the tape's dense rule (pyaiml.autograd.per_example.DenseRule)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation.name,
                "use_bias": self.use_bias, "kernel_initializer": _init_name(self.kernel_initializer),
                "bias_initializer": _init_name(self.bias_initializer)}


def _init_name(i):
    return i if isinstance(i, str) else getattr(i, "__name__", str(i))


def _same_pads(size, k, s, d):
    """TF/Keras 'same': output ceil(size/s); total padding split with the extra at the end."""
    out = -(-size // s)
    tot = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
    return tot // 2, tot - tot // 2


def conv_args(cname, rank, filters, kernel_size, strides, dilation_rate):
    """A conv layer's (filters, kernel_size, strides, dilation_rate), checked as Keras checks
    them (the transposed convs share it)."""
    if not isinstance(filters, (int, np.integer)) or filters < 1:
        raise ValueError(f"{cname}: filters must be a positive integer. Received {filters!r}")
    ks = tuple_n(kernel_size, rank, f"{cname}: kernel_size")
    st = tuple_n(strides, rank, f"{cname}: strides")
    dl = tuple_n(dilation_rate, rank, f"{cname}: dilation_rate")
    if max(st) > 1 and max(dl) > 1:
        raise ValueError(f"{cname}: strides > 1 together with dilation_rate > 1 is not supported (as in Keras). "
                         f"Received strides={st}, dilation_rate={dl}")
    return int(filters), ks, st, dl


class _Conv(Layer, _ActMixin):
    rank = 2

    def _fixed_axes(self):
        return (-1,) if self._cl else (0,)  # the channels; lengths and image sizes are free

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 groups=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kw):
        super().__init__(**kw)
        self._geo = {}  # input shape -> _geometry
        r = self.rank
        cname = type(self).__name__
        self.filters, self.kernel_size, self.strides, self.dilation_rate = conv_args(
            cname, r, filters, kernel_size, strides, dilation_rate)
        pad = padding.lower() if isinstance(padding, str) else padding
        allowed = ("valid", "same", "causal") if r == 1 else ("valid", "same")
        if pad not in allowed:
            raise ValueError(f"{cname}: padding must be one of {', '.join(allowed)}. Received {padding!r}")
        self.padding = pad
        df = data_format or "channels_last"
        if df not in ("channels_last", "channels_first"):
            raise ValueError(f"{cname}: data_format must be 'channels_last' or 'channels_first'. Received {data_format!r}")
        self.data_format = df
        if not isinstance(groups, (int, np.integer)) or groups < 1 or self.filters % groups:
            raise ValueError(f"{cname}: groups must be a positive integer dividing filters={filters}. Received {groups!r}")
        self.groups = int(groups)
        self.activation = _acts.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        _inits.get(kernel_initializer), _inits.get(bias_initializer)

    # layout helpers
    @property
    def _cl(self):
        return self.data_format == "channels_last"

    def _spatial(self, shape):
        return tuple(shape[:-1]) if self._cl else tuple(shape[1:])

    def _channels(self, shape):
        return shape[-1] if self._cl else shape[0]

    def _pads(self, spatial):
        if self.padding == "valid":
            return [(0, 0)] * self.rank
        if self.padding == "causal":
            return [(self.dilation_rate[0] * (self.kernel_size[0] - 1), 0)]
        return [_same_pads(n, k, s, d) for n, k, s, d in zip(spatial, self.kernel_size, self.strides, self.dilation_rate)]

    def build(self, input_shape):
        cname = type(self).__name__
        if len(input_shape) != self.rank + 1:
            raise InputSpecError(f"{self.name}: {cname} expects inputs of rank {self.rank + 2} "
                                 f"(batch, {'steps' if self.rank == 1 else 'rows, cols'}, channels). "
                                 f"Received input shape {_shape_str(input_shape)}")
        cin = self._channels(input_shape)
        if cin is None or cin % self.groups:
            raise InputSpecError(f"{self.name}: input channels ({cin}) must be known and divisible by groups={self.groups}")
        self._cin = cin
        kshape = self.kernel_size + (cin // self.groups, self.filters)   # Keras layout for the initializer
        w = _inits.get(self.kernel_initializer)(kshape)
        self._register("kernel", np.ascontiguousarray(self._from_keras("kernel", w), dtype=FLOATX))
        if self.use_bias:
            self.add_weight("bias", (self.filters,), self.bias_initializer)
        super().build(input_shape)

    def _to_keras(self, name, arr):
        if name == "kernel":  # OI(H)W -> (H)WIO
            return arr.transpose(tuple(range(2, 2 + self.rank)) + (1, 0))
        return arr

    def _from_keras(self, name, arr):
        if name == "kernel":  # (H)WIO -> OI(H)W
            r = self.rank
            return arr.transpose((r + 1, r) + tuple(range(r)))
        return arr

    def compute_output_shape(self, input_shape):
        sp = self._spatial(input_shape)
        if len(sp) != self.rank:
            raise InputSpecError(f"{type(self).__name__} expects rank-{self.rank + 2} inputs. Received {_shape_str(input_shape)}")
        out = []
        for n, k, s, d, (lo, hi) in zip(sp, self.kernel_size, self.strides, self.dilation_rate, self._pads(sp)):
            if n is None:
                out.append(None)
                continue
            o = (n + lo + hi - d * (k - 1) - 1) // s + 1
            if o < 1:
                raise InputSpecError(f"{self.name}: input size {n} is smaller than the (dilated) kernel "
                                     f"{d * (k - 1) + 1} with padding {self.padding!r}. Input shape {_shape_str(input_shape)}")
            out.append(o)
        return tuple(out) + (self.filters,) if self._cl else (self.filters,) + tuple(out)

    def _fmt(self):
        if self.rank == 2:
            return "NHWC" if self._cl else "NCHW"
        return "NLC" if self._cl else "NCL"

    def call(self, inputs, training=None):
        x, r = inputs, self.rank
        pads = self._pads(x.shape[1:-1] if self._cl else x.shape[2:])
        if all(lo == hi for lo, hi in pads):
            p = tuple(lo for lo, _ in pads)
        else:  # Keras 'same' with the extra row/column at the end: pad explicitly
            x = F.pad(x, [(0, 0)] + list(pads) + [(0, 0)] if self._cl else [(0, 0), (0, 0)] + list(pads))
            p = (0,) * r
        relu = self.activation is _acts.relu
        y = F.conv(x, self._var("kernel"), self._var("bias") if self.use_bias else None,
                   self.strides if r == 2 else self.strides[0], p if r == 2 else p[0],
                   self.dilation_rate if r == 2 else self.dilation_rate[0], self.groups, self._fmt(),
                   "relu" if relu else None)  # conv + bias + ReLU in one kernel
        return y if relu else self._act_call(y)

    def _geometry(self, shape):
        """(explicit pad widths or None, the op's padding, stride and dilation) for inputs of
        ``shape``: the same for every call with that shape, so kept (a few us per call)."""
        geo = self._geo.get(shape)
        if geo is None:
            sp = shape[1:-1] if self._cl else shape[2:]
            pads = self._pads(sp)
            r2 = self.rank == 2
            if all(lo == hi for lo, hi in pads):
                p, widths = tuple(lo for lo, _ in pads), None
            else:
                widths = [(0, 0)] + list(pads) + [(0, 0)] if self._cl else [(0, 0), (0, 0)] + list(pads)
                p = (0,) * self.rank
            geo = (widths, p if r2 else p[0], self.strides if r2 else self.strides[0],
                   self.dilation_rate if r2 else self.dilation_rate[0])
            if len(self._geo) > 64:
                self._geo.clear()
            self._geo[shape] = geo
        return geo

    def forward(self, x, training=False, mask=None):
        widths, p, stride, dil = self._geometry(x.shape)
        xp = x if widths is None else np.pad(x, widths)
        conv = ops.conv2d if self.rank == 2 else ops.conv1d
        args = (xp, self.kernel, self.bias if self.use_bias else None, stride, p, dil, self.groups, self._fmt())
        if self.activation is _acts.relu:
            return conv(*args, activation="relu")  # conv + bias + ReLU in one kernel
        return self._act_fwd(conv(*args))

    def _op_args(self, x):
        """(p9, output spatial sizes, nd) of the conv op's checked arguments (pyaiml/ops/conv.py)
        for float32 C-contiguous arrays of x's shape that need no explicit padding, else None:
        what both inference plans use."""
        widths, p, stride, dil = self._geometry(x.shape)
        if widths is not None or x.dtype != np.float32 or self.kernel.dtype != np.float32 or not x.flags.c_contiguous:
            return None
        from pyaiml.ops import conv as _conv_ops

        op, nd = ("conv2d", 2) if self.rank == 2 else ("conv1d", 1)
        p9, osp = _conv_ops._prepare(op, x, self.kernel, stride, p, dil, self.groups, self._cl, nd)[2:]
        return p9, osp, nd

    def _inference_fn(self, x):
        args = self._op_args(x)
        if args is None:
            return None
        from pyaiml.ops import conv as _conv_ops

        (p9, osp, nd), cl = args, self._cl
        impl = _conv_ops._impl("conv2d", x.dtype)[1]
        relu = self.activation is _acts.relu
        act = None if relu or self.activation is _acts.linear else self.activation.forward
        use_bias, f32 = self.use_bias, np.float32
        oshape = (x.shape[0],) + osp + (self.filters,) if cl else (x.shape[0], self.filters) + osp

        def run(h):
            w = self.kernel
            if w.dtype != f32:  # the weights were replaced since the plan was made
                return self.forward(h)
            if nd == 1:
                h, w = (h[:, None] if cl else h[:, :, None]), w[:, :, None]
            y = impl(h, w, self.bias if use_bias else None, p9, cl, relu)
            if nd == 1:
                y = y.reshape(oshape)
            return y if act is None else act(y)

        return run

    def _native_step(self, x):
        args = self._op_args(x) if self.activation in (_acts.relu, _acts.linear) else None
        if args is None:
            return NotImplemented
        (p9, _, nd), cl = args, self._cl
        if nd == 2:
            n, h, w, c = (x.shape if cl else (x.shape[0], x.shape[2], x.shape[3], x.shape[1]))
            kh, kw = self.kernel.shape[2:]
        else:
            n, h, w, c = (x.shape[0], 1, x.shape[1], x.shape[2]) if cl else (x.shape[0], 1, x.shape[2], x.shape[1])
            kh, kw = 1, self.kernel.shape[2]
        step = (0, n, h, w, c, self.filters, kh, kw, *p9, int(cl), int(self.activation is _acts.relu),
                int(self.use_bias))
        return step, ("kernel", "bias") if self.use_bias else ("kernel",)

    per_example_rule = True  # DP-SGD: the tape's conv rule (pyaiml.autograd.per_example.ConvRule)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding, "data_format": self.data_format,
                "dilation_rate": list(self.dilation_rate), "groups": self.groups,
                "activation": self.activation.name, "use_bias": self.use_bias,
                "kernel_initializer": _init_name(self.kernel_initializer),
                "bias_initializer": _init_name(self.bias_initializer)}


class Conv2D(_Conv):
    """2-D convolution, channels last: (batch, rows, cols, channels)."""
    rank = 2


class Conv1D(_Conv):
    """1-D convolution, channels last: (batch, steps, channels)."""
    rank = 1


class _MaxPool(Layer):
    rank = 2

    def _fixed_axes(self):
        return ()  # rank only

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kw):
        super().__init__(**kw)
        self._geo = {}  # input shape -> (explicit pad widths or None, the op's padding)
        cname = type(self).__name__
        self.pool_size = tuple_n(pool_size, self.rank, f"{cname}: pool_size")
        self.strides = self.pool_size if strides is None else tuple_n(strides, self.rank, f"{cname}: strides")
        pad = padding.lower() if isinstance(padding, str) else padding
        if pad not in ("valid", "same"):
            raise ValueError(f"{cname}: padding must be 'valid' or 'same'. Received {padding!r}")
        self.padding = pad
        df = data_format or "channels_last"
        if df not in ("channels_last", "channels_first"):
            raise ValueError(f"{cname}: data_format must be 'channels_last' or 'channels_first'. Received {data_format!r}")
        self.data_format = df

    @property
    def _cl(self):
        return self.data_format == "channels_last"

    def _fmt(self):
        if self.rank == 2:
            return "NHWC" if self._cl else "NCHW"
        return "NLC" if self._cl else "NCL"

    def _pads(self, sp):
        if self.padding == "valid":
            return [(0, 0)] * self.rank
        return [_same_pads(n, k, s, 1) for n, k, s in zip(sp, self.pool_size, self.strides)]

    def build(self, input_shape):
        if len(input_shape) != self.rank + 1:
            raise InputSpecError(f"{self.name}: {type(self).__name__} expects inputs of rank {self.rank + 2}. "
                                 f"Received input shape {_shape_str(input_shape)}")
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        sp = tuple(input_shape[:-1]) if self._cl else tuple(input_shape[1:])
        out = []
        for n, k, s, (lo, hi) in zip(sp, self.pool_size, self.strides, self._pads(sp)):
            if n is None:
                out.append(None)
                continue
            o = (n + lo + hi - k) // s + 1
            if o < 1:
                raise InputSpecError(f"{self.name}: input size {n} is smaller than pool_size {k}. "
                                     f"Input shape {_shape_str(input_shape)}")
            out.append(o)
        c = input_shape[-1] if self._cl else input_shape[0]
        return tuple(out) + (c,) if self._cl else (c,) + tuple(out)

    def _k(self, v):
        return v if self.rank == 2 else v[0]

    def call(self, inputs, training=None):
        x = inputs
        pads = self._pads(x.shape[1:-1] if self._cl else x.shape[2:])
        p = 0
        if any(lo or hi for lo, hi in pads):
            if all(lo == hi and lo <= k // 2 for (lo, hi), k in zip(pads, self.pool_size)):
                p = self._k(tuple(lo for lo, _ in pads))
            else:  # as forward: the lowest finite value, the extra row/column at the end
                widths = [(0, 0)] + pads + [(0, 0)] if self._cl else [(0, 0), (0, 0)] + pads
                x = F.pad(x, widths, constant_values=np.finfo(x.dtype).min)
        return F.max_pool(x, self._k(self.pool_size), self._k(self.strides), p, self._fmt())

    def _geometry(self, shape):
        geo = self._geo.get(shape)
        if geo is None:
            pads = self._pads(shape[1:-1] if self._cl else shape[2:])
            geo = (None, 0)
            if any(lo or hi for lo, hi in pads):
                if all(lo == hi and lo <= k // 2 for (lo, hi), k in zip(pads, self.pool_size)):
                    geo = (None, self._k(tuple(lo for lo, _ in pads)))  # symmetric: the op pads itself
                else:
                    # Keras 'same' puts the extra row/column at the end: pad explicitly with the
                    # lowest finite value (every window still holds at least one real element)
                    geo = ([(0, 0)] + pads + [(0, 0)] if self._cl else [(0, 0), (0, 0)] + pads, 0)
            if len(self._geo) > 64:
                self._geo.clear()
            self._geo[shape] = geo
        return geo

    def forward(self, x, training=False, mask=None):
        widths, p = self._geometry(x.shape)
        if widths is not None:
            x = np.pad(x, widths, constant_values=np.finfo(x.dtype).min)
        pool = ops.max_pool2d if self.rank == 2 else ops.max_pool1d
        return pool(x, self._k(self.pool_size), self._k(self.strides), p, self._fmt())

    def _op_plan(self, x):
        """The pool op's checked plan (pyaiml/ops/pool.py) for float32 C-contiguous arrays of
        x's shape that need no explicit padding, else None: what both inference plans use."""
        widths, p = self._geometry(x.shape)
        if widths is not None or x.dtype != np.float32 or not x.flags.c_contiguous:
            return None
        from pyaiml.ops import pool as _pool_ops

        op, nd = ("max_pool2d", 2) if self.rank == 2 else ("max_pool1d", 1)
        return _pool_ops._plan(op, nd, x, self._k(self.pool_size), self._k(self.strides), p, self._fmt())

    def _native_step(self, x):
        plan = self._op_plan(x)
        if plan is None:
            return NotImplemented
        s4 = plan.shape4
        n, h, w, c = s4 if plan.cl else (s4[0], s4[2], s4[3], s4[1])
        return (1, n, h, w, c, *plan.q, int(plan.cl)), ()

    def _inference_fn(self, x):
        plan = self._op_plan(x)
        if plan is None:
            return None
        from pyaiml.ops import pool as _pool_ops

        impl = _pool_ops._impl("max_pool2d", x.dtype)[1]
        q, cl, shape4, oshape = plan.q, plan.cl, plan.shape4, plan.oshape
        if plan.flat:
            return lambda h: impl(h, q, cl, None, False)[0]
        return lambda h: impl(h.reshape(shape4), q, cl, None, False)[0].reshape(oshape)

    def get_config(self):
        return {**super().get_config(), "pool_size": list(self.pool_size), "strides": list(self.strides),
                "padding": self.padding, "data_format": self.data_format}


class MaxPooling2D(_MaxPool):
    rank = 2


class MaxPooling1D(_MaxPool):
    rank = 1

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kw):
        super().__init__(pool_size, strides, padding, data_format, **kw)


class _GlobalAvg(Layer):
    rank = 2

    def _fixed_axes(self):
        return ()  # rank only

    def __init__(self, data_format=None, keepdims=False, **kw):
        super().__init__(**kw)
        df = data_format or "channels_last"
        if df not in ("channels_last", "channels_first"):
            raise ValueError(f"{type(self).__name__}: data_format must be 'channels_last' or 'channels_first'. "
                             f"Received {data_format!r}")
        self.data_format = df
        self.keepdims = bool(keepdims)

    def _axes(self):
        return tuple(range(1, 1 + self.rank)) if self.data_format == "channels_last" else tuple(range(2, 2 + self.rank))

    def build(self, input_shape):
        if len(input_shape) != self.rank + 1:
            raise InputSpecError(f"{self.name}: {type(self).__name__} expects inputs of rank {self.rank + 2}. "
                                 f"Received input shape {_shape_str(input_shape)}")
        super().build(input_shape)

    def compute_output_shape(self, s):
        ax = [a - 1 for a in self._axes()]
        if self.keepdims:
            return tuple(1 if i in ax else d for i, d in enumerate(s))
        return tuple(d for i, d in enumerate(s) if i not in ax)

    def call(self, inputs, training=None, mask=None):
        if mask is not None and self.rank == 1 and self.data_format == "channels_last":
            w = np.asarray(mask, dtype=inputs.dtype)
            w = (w / np.maximum(w.sum(axis=1, keepdims=True), 1))[:, :, None]
            return F.sum(F.multiply(inputs, w), axis=1, keepdims=self.keepdims)
        return F.mean(inputs, axis=self._axes(), keepdims=self.keepdims)

    def forward(self, x, training=False, mask=None):
        if mask is not None and self.rank == 1 and self.data_format == "channels_last":
            w = np.asarray(mask, dtype=x.dtype)  # (N, L): masked average over valid steps, like Keras
            den = np.maximum(w.sum(axis=1, keepdims=True), 1)
            return (x * (w / den)[:, :, None]).sum(axis=1, keepdims=self.keepdims)
        return x.mean(axis=self._axes(), keepdims=self.keepdims)

    def compute_mask(self, mask):
        return None

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}


class GlobalAveragePooling2D(_GlobalAvg):
    rank = 2


class GlobalAveragePooling1D(_GlobalAvg):
    rank = 1
    supports_masking = True


class Flatten(Layer):
    def _fixed_axes(self):
        return ()  # rank only

    def __init__(self, data_format=None, **kw):
        super().__init__(**kw)
        self.data_format = data_format or "channels_last"

    def compute_output_shape(self, s):
        if any(d is None for d in s):
            raise InputSpecError(f"{self.name}: Flatten needs every non-batch dimension known. Received {_shape_str(s)}")
        return (int(np.prod(s)),)

    def call(self, inputs, training=None):
        return F.reshape(inputs, (inputs.shape[0], -1))

    def forward(self, x, training=False, mask=None):
        return x.reshape(x.shape[0], -1)

    def _native_step(self, x):
        return (None, ()) if x.flags.c_contiguous else NotImplemented  # the same data, read as (N, -1)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


class Reshape(Layer):
    def __init__(self, target_shape, **kw):
        super().__init__(**kw)
        self.target_shape = tuple(int(d) for d in target_shape)

    def compute_output_shape(self, s):
        n = int(np.prod(s))
        t = list(self.target_shape)
        if -1 in t:
            k = int(np.prod([d for d in t if d != -1]))
            t[t.index(-1)] = n // k
        if int(np.prod(t)) != n:
            raise InputSpecError(f"{self.name}: cannot reshape {_shape_str(s)} to {tuple(self.target_shape)}")
        return tuple(t)

    def call(self, inputs, training=None):
        return F.reshape(inputs, (inputs.shape[0],) + self.target_shape)

    def forward(self, x, training=False, mask=None):
        return x.reshape((x.shape[0],) + self.target_shape)

    def get_config(self):
        return {**super().get_config(), "target_shape": list(self.target_shape)}


class Dropout(Layer):
    supports_masking = True

    def __init__(self, rate, noise_shape=None, seed=None, **kw):
        super().__init__(**kw)
        if not 0 <= float(rate) < 1:
            raise ValueError(f"Dropout: rate must be in [0, 1). Received {rate!r}")
        self.rate = float(rate)
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)
        self.seed = seed
        self._rng = np.random.default_rng(seed) if seed is not None else None

    def call(self, inputs, training=None):
        if not training or self.rate == 0:
            return inputs
        return F.dropout(inputs, self.rate, self._rng if self._rng is not None else rng(), self.noise_shape)

    def forward(self, x, training=False, mask=None):
        if not training or self.rate == 0:
            return x
        return self.call(x, training=True)

    def _native_step(self, x):
        return None, ()  # inference: x as it is

    def get_config(self):
        return {**super().get_config(), "rate": self.rate,
                "noise_shape": None if self.noise_shape is None else list(self.noise_shape), "seed": self.seed}


class Activation(Layer, _ActMixin):
    supports_masking = True

    def __init__(self, activation, **kw):
        super().__init__(**kw)
        self.activation = _acts.get(activation)

    def call(self, inputs, training=None):
        return _apply_act(self.activation, inputs)

    def forward(self, x, training=False, mask=None):
        return self._act_fwd(x)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation.name}


class BatchNormalization(Layer):
    """Keras BatchNormalization over the last axis (channels last): training uses batch
    statistics (biased variance) and updates ``moving = moving*momentum + batch*(1-momentum)``."""
    supports_masking = True

    def _fixed_axes(self):
        return (self._ax - 1,) if self.built else None  # the normalised axis

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones", moving_mean_initializer="zeros",
                 moving_variance_initializer="ones", **kw):
        super().__init__(**kw)
        if axis not in (-1,) and not isinstance(axis, (int, np.integer)):
            raise ValueError(f"BatchNormalization: axis must be an int. Received {axis!r}")
        self.axis = int(axis)
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self._inits = (gamma_initializer, beta_initializer, moving_mean_initializer, moving_variance_initializer)

    def build(self, input_shape):
        nd = len(input_shape) + 1
        ax = self.axis % nd
        if ax == 0:
            raise InputSpecError(f"{self.name}: BatchNormalization axis cannot be the batch axis")
        self._ax = ax
        c = input_shape[ax - 1]
        gi, bi, mi, vi = self._inits
        if self.scale:
            self.add_weight("gamma", (c,), gi)
        if self.center:
            self.add_weight("beta", (c,), bi)
        self.add_weight("moving_mean", (c,), mi, trainable=False)
        self.add_weight("moving_variance", (c,), vi, trainable=False)
        super().build(input_shape)

    def per_example_support(self):
        return (f"layer {self.name!r} (BatchNormalization) normalises each example with statistics of the whole "
                "batch, so an example's gradient depends on the other examples and cannot be clipped on its own "
                "(DP-SGD); remove it or use LayerNormalization")

    def _bshape(self, nd):
        s = [1] * nd
        s[self._ax] = -1
        return s

    def call(self, inputs, training=None):
        g = self._var("gamma") if self.scale else None
        b = self._var("beta") if self.center else None
        if training:
            out, mu, var = F.batch_norm(inputs, None, None, g, b, self.epsilon, self._ax, batch_stats=True)
            m = self.momentum
            self.moving_mean[...] = self.moving_mean * m + mu * (1 - m)
            self.moving_variance[...] = self.moving_variance * m + var * (1 - m)
            return out
        return F.batch_norm(inputs, self.moving_mean, self.moving_variance, g, b, self.epsilon, self._ax)

    def forward(self, x, training=False, mask=None):
        red = tuple(i for i in range(x.ndim) if i != self._ax)
        bs = self._bshape(x.ndim)
        if training:
            mu = x.mean(axis=red, dtype=np.float64)
            var = x.var(axis=red, dtype=np.float64)
            m = self.momentum
            self.moving_mean[...] = self.moving_mean * m + mu * (1 - m)
            self.moving_variance[...] = self.moving_variance * m + var * (1 - m)
            mu, var = mu.astype(x.dtype), var.astype(x.dtype)
        else:
            mu, var = self.moving_mean, self.moving_variance
        inv = (1.0 / np.sqrt(var + x.dtype.type(self.epsilon))).astype(x.dtype)
        xhat = (x - mu.reshape(bs)) * inv.reshape(bs)
        y = xhat * self.gamma.reshape(bs) if self.scale else xhat.copy()
        if self.center:
            y += self.beta.reshape(bs)
        return y

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "momentum": self.momentum, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale}


class LayerNormalization(Layer):
    """Normalises over the last axis: (x - mean) / sqrt(var + epsilon) * gamma + beta."""
    supports_masking = True

    def _fixed_axes(self):
        return (-1,)

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", **kw):
        super().__init__(**kw)
        if axis != -1:
            raise ValueError(f"LayerNormalization: only axis=-1 (the last axis) is supported. Received {axis!r}")
        self.axis, self.epsilon = -1, float(epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self._inits = (gamma_initializer, beta_initializer)

    def build(self, input_shape):
        c = input_shape[-1]
        if self.scale:
            self.add_weight("gamma", (c,), self._inits[0])
        if self.center:
            self.add_weight("beta", (c,), self._inits[1])
        super().build(input_shape)

    def call(self, inputs, training=None):
        return F.layer_norm(inputs, self._var("gamma") if self.scale else None,
                            self._var("beta") if self.center else None, self.epsilon)

    def forward(self, x, training=False, mask=None):
        mu = x.mean(axis=-1, keepdims=True)
        xc = x - mu
        var = (xc * xc).mean(axis=-1, keepdims=True)
        inv = 1.0 / np.sqrt(var + x.dtype.type(self.epsilon))
        xhat = xc * inv
        y = xhat * self.gamma if self.scale else xhat.copy()
        if self.center:
            y += self.beta
        return y

    per_example_rule = True  # DP-SGD: per-row statistics, so each example's gamma/beta gradients are its own

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon, "center": self.center,
                "scale": self.scale}


class Embedding(Layer):
    """Integer ids (batch, length) -> vectors (batch, length, output_dim). ``mask_zero``
    makes id 0 padding: the mask is passed to later layers (MultiHeadAttention,
    GlobalAveragePooling1D)."""

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", mask_zero=False,
                 input_length=None, **kw):
        super().__init__(**kw)
        for n, v in (("input_dim", input_dim), ("output_dim", output_dim)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"Embedding: {n} must be a positive integer. Received {v!r}")
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.embeddings_initializer = embeddings_initializer
        self.mask_zero = bool(mask_zero)
        self.input_length = input_length

    def build(self, input_shape):
        self.add_weight("embeddings", (self.input_dim, self.output_dim), self.embeddings_initializer)
        super().build(input_shape)

    def compute_output_shape(self, s):
        return tuple(s) + (self.output_dim,)

    def __call__(self, *args, **kwargs):
        x = args[0] if args else None
        if (len(args) != 1 or not set(kwargs) <= {"training", "mask"} or recording() or _symbolic(x)
                or isinstance(x, Tensor)):
            return Layer.__call__(self, *args, **kwargs)
        x = np.asarray(x)
        self._ensure_built(x.shape[1:])
        return self.forward(x, kwargs.get("training", False), kwargs.get("mask"))

    def _check_ids(self, x):
        if x.dtype.kind == "f":
            if not np.all(x == np.round(x)):
                raise ValueError(f"{self.name}: Embedding inputs must be integer ids. Received non-integer values")
        elif x.dtype.kind not in "iu":
            raise ValueError(f"{self.name}: Embedding inputs must be integer ids. Received dtype {x.dtype}")
        if x.size and (x.min() < 0 or x.max() >= self.input_dim):
            raise ValueError(f"{self.name}: Embedding ids must be in [0, {self.input_dim}). "
                             f"Received values in [{x.min()}, {x.max()}]")

    def call(self, inputs, training=None):
        x = np.asarray(inputs.value if isinstance(inputs, Tensor) else inputs)
        self._check_ids(x)
        self._ids = x
        return F.take(self._var("embeddings"), x.astype(np.int64, copy=False), 0)

    def forward(self, x, training=False, mask=None):
        if x.dtype.kind == "f":
            if not np.all(x == np.round(x)):
                raise ValueError(f"{self.name}: Embedding inputs must be integer ids. Received non-integer values")
            x = x.astype(np.int64)
        elif x.dtype.kind not in "iu":
            raise ValueError(f"{self.name}: Embedding inputs must be integer ids. Received dtype {x.dtype}")
        if x.size and (x.min() < 0 or x.max() >= self.input_dim):
            raise ValueError(f"{self.name}: Embedding ids must be in [0, {self.input_dim}). "
                             f"Received values in [{x.min()}, {x.max()}]")
        self._ids = x
        return self.embeddings[x]

    def compute_mask(self, mask):
        return (self._ids != 0) if self.mask_zero else None

    per_example_rule = True  # DP-SGD: the tape's row rule for take() (pyaiml.autograd.per_example)

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "embeddings_initializer": _init_name(self.embeddings_initializer), "mask_zero": self.mask_zero}


class MultiHeadAttention(Layer):
    """Keras MultiHeadAttention on pyaiml's attention op.

    ``layer(query, value, key=None, attention_mask=None, use_causal_mask=False)`` ->
    (B, T, output_dim); ``backward(dy)`` then returns ``(d_query, d_value, d_key)`` (d_key
    is None when key was value). Inside a Sequential model the layer does self-attention
    on its input, with the padding mask of an ``Embedding(mask_zero=True)`` applied to the
    keys and ``use_causal_mask`` taken from the constructor. Weights in Keras layouts:
    query/key/value kernels (d, heads, key_dim), biases (heads, key_dim), output kernel
    (heads, value_dim, d_out), bias (d_out,). On the tape (functional and subclassed models,
    custom loops) ``dropout`` (on the attention probabilities, in training) and
    ``return_attention_scores=True`` are supported.
    A query row whose keys are all masked gives zeros (the op's rule), where Keras
    would average over all keys.
    """
    supports_masking = True

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True, output_shape=None,
                 attention_axes=None, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 use_causal_mask=False, **kw):
        super().__init__(**kw)
        for n, v in (("num_heads", num_heads), ("key_dim", key_dim)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"MultiHeadAttention: {n} must be a positive integer. Received {v!r}")
        if not 0 <= float(dropout) < 1:
            raise ValueError(f"MultiHeadAttention: dropout must be in [0, 1). Received {dropout!r}")
        self.dropout = float(dropout)
        if attention_axes is not None:
            raise ValueError("MultiHeadAttention: attention_axes is not supported (attention runs over axis 1)")
        self.num_heads, self.key_dim = int(num_heads), int(key_dim)
        self.value_dim = int(value_dim) if value_dim is not None else self.key_dim
        self.use_bias = bool(use_bias)
        self._out_dim_arg = output_shape
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer
        self.use_causal_mask = bool(use_causal_mask)
        self._names = ("query", "key", "value")

    def build(self, input_shape, value_shape=None, key_shape=None):
        qd = input_shape[-1]
        vd = (value_shape or input_shape)[-1]
        kd = (key_shape or value_shape or input_shape)[-1]
        h, k, v = self.num_heads, self.key_dim, self.value_dim
        od = qd if self._out_dim_arg is None else int(
            self._out_dim_arg if isinstance(self._out_dim_arg, (int, np.integer)) else self._out_dim_arg[-1])
        self._od = od
        for nm, din, dh in (("query", qd, k), ("key", kd, k), ("value", vd, v)):
            self.add_weight(f"{nm}_kernel", (din, h, dh), self.kernel_initializer)
            if self.use_bias:
                self.add_weight(f"{nm}_bias", (h, dh), self.bias_initializer)
        self.add_weight("output_kernel", (h, v, od), self.kernel_initializer)
        if self.use_bias:
            self.add_weight("output_bias", (od,), self.bias_initializer)
        super().build(input_shape)

    def compute_output_shape(self, s):
        return tuple(s[:-1]) + (self._od if self.built else (s[-1] if self._out_dim_arg is None else self._out_dim_arg),)

    def _proj(self, x, nm):
        W = getattr(self, f"{nm}_kernel")
        w2 = W.reshape(W.shape[0], -1)
        b = getattr(self, f"{nm}_bias").reshape(-1) if self.use_bias else None
        y = ops.linear(x, w2.T, b)  # (B, T, h*d)
        B, T = x.shape[:2]
        return np.ascontiguousarray(y.reshape(B, T, self.num_heads, W.shape[2]).transpose(0, 2, 1, 3))

    def __call__(self, query, value=None, key=None, attention_mask=None, use_causal_mask=None, training=None,
                 mask=None, return_attention_scores=False):
        if (return_attention_scores or recording() or _symbolic((query, value, key)) or (training and self.dropout)
                or any(isinstance(a, Tensor) for a in (query, value, key))):
            kw = {"value": value, "key": key, "attention_mask": attention_mask, "use_causal_mask": use_causal_mask,
                  "return_attention_scores": return_attention_scores, "mask": mask}
            if training is not None:
                kw["training"] = training
            return Layer.__call__(self, query, **kw)
        if mask is not None and attention_mask is None and (value is None or value is query) and key is None:
            attention_mask = np.asarray(mask, dtype=bool)[:, None, :]  # self-attention: padded keys are masked
        dt = self._compute_dtype
        q = np.asarray(query, dtype=dt)
        v = q if value is None else np.asarray(value, dtype=dt)
        k = v if key is None else np.asarray(key, dtype=dt)
        if not self.built:
            self.build(q.shape[1:], v.shape[1:], k.shape[1:])
        causal = self.use_causal_mask if use_causal_mask is None else bool(use_causal_mask)
        return self._attend(q, v, k, attention_mask, causal)

    def forward(self, x, training=False, mask=None):
        if training and self.dropout:
            return self.call(x, training=True, mask=mask)
        am = None if mask is None else np.asarray(mask, dtype=bool)[:, None, :]  # keys of padding are masked
        return self._attend(x, x, x, am, self.use_causal_mask)

    def _build_for_call(self, x, args, kwargs):
        q = x
        v = kwargs.get("value") if len(args) < 2 else args[1]
        k = kwargs.get("key") if len(args) < 3 else args[2]
        v = q if v is None else v
        k = v if k is None else k
        self.build(tuple(q.shape[1:]), tuple(v.shape[1:]), tuple(k.shape[1:]))

    def _proj_tape(self, x, nm):
        W = self._var(f"{nm}_kernel")  # (d, heads, dh)
        b = F.reshape(self._var(f"{nm}_bias"), (-1,)) if self.use_bias else None
        y = F.dense(x, F.reshape(W, (W.shape[0], -1)), b)
        B, T = x.shape[:2]
        return F.transpose(F.reshape(y, (B, T, self.num_heads, W.shape[2])), (0, 2, 1, 3))

    def call(self, query, value=None, key=None, attention_mask=None, use_causal_mask=None, training=None,
             return_attention_scores=False, mask=None):
        q = query
        if mask is not None and attention_mask is None and (value is None or value is query) and key is None:
            attention_mask = np.asarray(mask, dtype=bool)[:, None, :]  # self-attention: padded keys are masked
        v = q if value is None else self._convert_input(value)
        k = v if key is None else self._convert_input(key)
        for nm, a in (("query", q), ("value", v), ("key", k)):
            if len(a.shape) != 3:
                raise InputSpecError(f"{self.name}: {nm} must be 3-D (batch, steps, features). Received {a.shape}")
        B, T, S = q.shape[0], q.shape[1], v.shape[1]
        causal = self.use_causal_mask if use_causal_mask is None else bool(use_causal_mask)
        m = self._mask4(attention_mask, causal, B, T, S)
        Q, K, V = self._proj_tape(q, "query"), self._proj_tape(k, "key"), self._proj_tape(v, "value")
        scale = 1.0 / np.sqrt(self.key_dim)
        scores = None
        if return_attention_scores or (training and self.dropout):
            s = F.multiply(F.matmul(Q, F.swapaxes(K, -1, -2)), scale)
            if m is not None:
                s = F.where(m, s, np.finfo(s.dtype).min / 2)
            scores = F.softmax(s, -1)
            p = F.dropout(scores, self.dropout, rng()) if (training and self.dropout) else scores
            O = F.matmul(p, V)
        else:
            O = F.attention(Q, K, V, m, scale)
        Oc = F.reshape(F.transpose(O, (0, 2, 1, 3)), (B, T, self.num_heads * self.value_dim))
        y = F.dense(Oc, F.reshape(self._var("output_kernel"), (-1, self._od)),
                    self._var("output_bias") if self.use_bias else None)
        return (y, scores) if return_attention_scores else y

    def _mask4(self, attention_mask, causal, B, T, S):
        """The boolean mask (B, 1, T, S) of attention_mask (B, T|1, S) and the causal rule, or None."""
        m = None
        if attention_mask is not None:
            m = np.asarray(attention_mask.value if isinstance(attention_mask, Tensor) else attention_mask)
            if m.dtype != bool:
                m = m.astype(bool)
            if m.ndim == 2:
                m = m[None]
            if m.shape[-1] != S or m.shape[-2] not in (1, T):
                raise ValueError(f"{self.name}: attention_mask must have shape (batch, {T}, {S}). Received {m.shape}")
        if causal:
            tri = np.tril(np.ones((T, S), dtype=bool))
            m = tri[None] if m is None else (m & tri)
        if m is not None:
            m = np.ascontiguousarray(np.broadcast_to(m, (B, m.shape[1], S))[:, None])
            if m.shape[2] != T:
                m = np.ascontiguousarray(np.broadcast_to(m, (B, 1, T, S)))
        return m

    def _attend(self, q_in, v_in, k_in, attention_mask, causal):
        for nm, a in (("query", q_in), ("value", v_in), ("key", k_in)):
            if a.ndim != 3:
                raise InputSpecError(f"{self.name}: {nm} must be 3-D (batch, steps, features). Received {a.shape}")
        B, T, S = q_in.shape[0], q_in.shape[1], v_in.shape[1]
        Q, K, V = self._proj(q_in, "query"), self._proj(k_in, "key"), self._proj(v_in, "value")
        m = self._mask4(attention_mask, causal, B, T, S)
        O = ops.scaled_dot_product_attention(Q, K, V, attn_mask=m, scale=1.0 / np.sqrt(self.key_dim))
        Oc = np.ascontiguousarray(O.transpose(0, 2, 1, 3)).reshape(B, T, -1)
        Wo = self.output_kernel.reshape(-1, self._od)
        return ops.linear(Oc, Wo.T, self.output_bias if self.use_bias else None)

    def _to_keras(self, name, arr):
        return arr

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim,
                "value_dim": self.value_dim, "use_bias": self.use_bias, "output_shape": self._out_dim_arg,
                "kernel_initializer": _init_name(self.kernel_initializer),
                "bias_initializer": _init_name(self.bias_initializer), "use_causal_mask": self.use_causal_mask,
                "dropout": self.dropout}


_LAYERS = {c.__name__: c for c in (
    InputLayer, Dense, Conv1D, Conv2D, MaxPooling1D, MaxPooling2D, GlobalAveragePooling1D, GlobalAveragePooling2D,
    Flatten, Reshape, Dropout, Activation, BatchNormalization, Embedding, LayerNormalization, MultiHeadAttention)}

# Keras aliases
MaxPool1D, MaxPool2D = MaxPooling1D, MaxPooling2D
GlobalAvgPool1D, GlobalAvgPool2D = GlobalAveragePooling1D, GlobalAveragePooling2D
Convolution1D, Convolution2D = Conv1D, Conv2D


def register(cls):
    """Decorator: register a custom Layer subclass so ``load_model`` can rebuild it."""
    _LAYERS[cls.__name__] = cls
    return cls


def deserialize(cfg: dict) -> Layer:
    cname = cfg.get("class_name")
    if cname not in _LAYERS:
        raise ValueError(f"Unknown layer class {cname!r} in the model file. Known: {', '.join(sorted(_LAYERS))} "
                         "(register custom layers with pyaiml.keras.layers.register)")
    return _LAYERS[cname].from_config(dict(cfg["config"]))


def serialize(layer: Layer) -> dict:
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


# merge layers live in their own module (they take lists of tensors)
from pyaiml.keras.merging import (  # noqa: F401
    Add,
    Average,
    Concatenate,
    Dot,
    Maximum,
    Minimum,
    Multiply,
    Subtract,
    add,
    concatenate,
    dot,
    multiply,
    subtract,
)
from pyaiml.keras.preprocessing_layers import Normalization, RandomFlip  # noqa: F401
from pyaiml.keras.recurrent import (  # noqa: F401
    GRU,
    LSTM,
    RNN,
    Bidirectional,
    GRUCell,
    LSTMCell,
    SimpleRNN,
    SimpleRNNCell,
    TimeDistributed,
)
from pyaiml.keras.tape_layers import (  # noqa: F401
    ELU,
    AveragePooling1D,
    AveragePooling2D,
    CenterCrop,
    Conv1DTranspose,
    Conv2DTranspose,
    Cropping1D,
    Cropping2D,
    DepthwiseConv2D,
    GaussianDropout,
    GaussianNoise,
    GlobalMaxPooling1D,
    GlobalMaxPooling2D,
    GroupNormalization,
    Identity,
    Lambda,
    LeakyReLU,
    Masking,
    Permute,
    PReLU,
    ReLU,
    RepeatVector,
    Rescaling,
    Resizing,
    SeparableConv2D,
    Softmax,
    SpatialDropout1D,
    SpatialDropout2D,
    UnitNormalization,
    UpSampling1D,
    UpSampling2D,
    ZeroPadding1D,
    ZeroPadding2D,
)

AvgPool1D, AvgPool2D = AveragePooling1D, AveragePooling2D
GlobalMaxPool1D, GlobalMaxPool2D = GlobalMaxPooling1D, GlobalMaxPooling2D
