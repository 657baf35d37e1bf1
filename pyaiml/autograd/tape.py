"""The tape: reverse-mode automatic differentiation over NumPy arrays.

What it is. A ``GradientTape`` context records every differentiable op (pyaiml.autograd.
functional) whose inputs include a value that needs a gradient: a trainable ``Variable``,
a tensor given to ``tape.watch``, or a ``Tensor`` an earlier recorded op produced. Each
record (a ``Node``) keeps its inputs, the arrays its backward needs and a backward
function, written with pyaiml.ops' ``*_backward`` kernels where one exists. ``gradient``
walks the records in reverse order, once, summing the gradient of every value that fed
more than one op. Ops whose inputs need no gradient, or that run with no tape open,
compute on plain arrays and return a plain ``numpy.ndarray``: eager NumPy, no overhead.

Values. ``Tensor`` wraps one array (``.value``); ``Variable`` is a Tensor whose array is
owned by a layer or the user and updated in place by optimizers (``assign``). A Tensor
that needs a gradient refuses to turn into a NumPy array while a tape records (NumPy
functions cannot be differentiated), with a TypeError naming the layer whose ``call()``
did it and the function that was applied; ``t.numpy()`` is the explicit, detached view.

Not here: higher-order gradients (backward functions compute on plain arrays), devices,
graph compilation. Tests: tests/test_keras_tape.py (every op against torch autograd in
float64, tape semantics, the errors).
"""
from __future__ import annotations

import threading

import numpy as np

from pyaiml.autograd import fusion as _fusion

_state = threading.local()


def _tapes() -> list:
    t = getattr(_state, "tapes", None)
    if t is None:
        t = _state.tapes = []
    return t


def recording() -> bool:
    """True while at least one GradientTape records in this thread."""
    return bool(getattr(_state, "tapes", None))


# ---------------------------------------------------------------- call context (for error messages)
def _call_stack() -> list:
    s = getattr(_state, "calls", None)
    if s is None:
        s = _state.calls = []
    return s


class calling:
    """``with calling(layer):`` names ``layer`` in errors raised by tape values inside it."""

    __slots__ = ("who",)

    def __init__(self, who):
        self.who = who

    def __enter__(self):
        _call_stack().append(self.who)
        return self

    def __exit__(self, *exc):
        _call_stack().pop()
        return False


def _where() -> str:
    s = getattr(_state, "calls", None)
    if not s:
        return "code recorded on a GradientTape"
    who = s[-1]
    name = getattr(who, "name", None)
    return f"layer {name!r} ({type(who).__name__}).call()" if name else f"{type(who).__name__}.call()"


def _numpy_refusal(what: str, t: Tensor) -> TypeError:
    return TypeError(
        f"{_where()} applied {what} to a tape tensor of shape {t.shape} and dtype {t.dtype}. NumPy functions "
        "cannot be differentiated: write call() with keras.ops (e.g. keras.ops.exp, keras.ops.concatenate), or "
        "use t.numpy() for a value that needs no gradient")


# ---------------------------------------------------------------- values
class Tensor:
    """An array on the tape. ``value`` is the NumPy array; arithmetic operators and
    indexing are recorded ops; ``numpy()`` returns the array (no gradient flows through it)."""

    __slots__ = ("__weakref__", "_relu_done", "_relu_out", "_softmax_of", "requires_grad", "value")
    __array_priority__ = 1000.0

    def __init__(self, value, requires_grad=False):
        self.value = value if type(value) is np.ndarray else np.asarray(value)
        self.requires_grad = bool(requires_grad)
        self._softmax_of = None  # the logits when this is a softmax output (loss fusion)
        # ReLU-gradient fusion (functional.conv / max_pool, pyaiml/autograd/fusion.py):
        # _relu_out marks the output of a conv with a fused ReLU (a max pool reading it then
        # offers to apply the ReLU's gradient); _relu_done is the fusion pass's decision
        self._relu_out = False
        self._relu_done = False

    # array-like facts
    @property
    def shape(self):
        return self.value.shape

    @property
    def dtype(self):
        return self.value.dtype

    @property
    def ndim(self):
        return self.value.ndim

    @property
    def size(self):
        return self.value.size

    def __len__(self):
        return len(self.value)

    def numpy(self):
        return self.value

    def __repr__(self):
        return f"<{type(self).__name__} shape={self.shape} dtype={self.dtype}>\n{self.value!r}"

    def __float__(self):
        return float(self.value)

    def __int__(self):
        return int(self.value)

    def __bool__(self):
        return bool(self.value)

    def __hash__(self):
        return id(self)

    # NumPy interop: refuse silent conversion while recording
    def __array__(self, dtype=None, copy=None):
        if self.requires_grad and recording():
            raise _numpy_refusal("numpy.asarray (or a NumPy function)", self)
        v = self.value
        return v if dtype is None else v.astype(dtype)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        from pyaiml.autograd import functional as F

        fn = F._UFUNCS.get(ufunc.__name__) if method == "__call__" and not kwargs else None
        if fn is not None:
            return fn(*inputs)
        if ufunc.__name__ in _NO_GRAD_UFUNCS:  # comparisons and tests: no gradient to keep
            return getattr(ufunc, method)(*[_val(a) for a in inputs], **kwargs)
        if any(isinstance(a, Tensor) and a.requires_grad for a in inputs) and recording():
            raise _numpy_refusal(f"numpy.{ufunc.__name__}", next(a for a in inputs if isinstance(a, Tensor)))
        args = [a.value if isinstance(a, Tensor) else a for a in inputs]
        return getattr(ufunc, method)(*args, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        if self.requires_grad and recording():
            raise _numpy_refusal(f"numpy.{func.__name__}", self)
        unwrap = lambda a: a.value if isinstance(a, Tensor) else (
            type(a)(unwrap(b) for b in a) if isinstance(a, (list, tuple)) else a)
        return func(*[unwrap(a) for a in args], **{k: unwrap(v) for k, v in kwargs.items()})

    # operators (functional imported late: it imports this module)
    def __add__(self, o):
        from pyaiml.autograd.functional import add
        return add(self, o)

    def __radd__(self, o):
        from pyaiml.autograd.functional import add
        return add(o, self)

    def __sub__(self, o):
        from pyaiml.autograd.functional import subtract
        return subtract(self, o)

    def __rsub__(self, o):
        from pyaiml.autograd.functional import subtract
        return subtract(o, self)

    def __mul__(self, o):
        from pyaiml.autograd.functional import multiply
        return multiply(self, o)

    def __rmul__(self, o):
        from pyaiml.autograd.functional import multiply
        return multiply(o, self)

    def __truediv__(self, o):
        from pyaiml.autograd.functional import divide
        return divide(self, o)

    def __rtruediv__(self, o):
        from pyaiml.autograd.functional import divide
        return divide(o, self)

    def __pow__(self, o):
        from pyaiml.autograd.functional import power
        return power(self, o)

    def __rpow__(self, o):
        from pyaiml.autograd.functional import power
        return power(o, self)

    def __matmul__(self, o):
        from pyaiml.autograd.functional import matmul
        return matmul(self, o)

    def __rmatmul__(self, o):
        from pyaiml.autograd.functional import matmul
        return matmul(o, self)

    def __neg__(self):
        from pyaiml.autograd.functional import negative
        return negative(self)

    def __pos__(self):
        return self

    def __abs__(self):
        from pyaiml.autograd.functional import abs as _abs
        return _abs(self)

    def __getitem__(self, idx):
        from pyaiml.autograd.functional import getitem
        return getitem(self, idx)

    # comparisons give boolean arrays (no gradient)
    def __lt__(self, o):
        return self.value < _val(o)

    def __le__(self, o):
        return self.value <= _val(o)

    def __gt__(self, o):
        return self.value > _val(o)

    def __ge__(self, o):
        return self.value >= _val(o)

    def __eq__(self, o):
        return self.value == _val(o)

    def __ne__(self, o):
        return self.value != _val(o)

    @property
    def T(self):
        from pyaiml.autograd.functional import transpose
        return transpose(self)

    def reshape(self, *shape):
        from pyaiml.autograd.functional import reshape
        return reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)

    def astype(self, dtype):
        from pyaiml.autograd.functional import cast
        return cast(self, dtype)


class Variable(Tensor):
    """A named, mutable array that layers own (``add_weight``) and optimizers update in
    place. Trainable variables need gradients whenever a tape records."""

    __slots__ = ("name", "path", "trainable")

    def __init__(self, value, trainable=True, name=None, dtype=None):
        v = np.asarray(value, dtype=dtype)
        if not v.flags.c_contiguous:
            v = np.array(v, order="C")
        super().__init__(v, requires_grad=bool(trainable) and v.dtype.kind == "f")
        self.trainable = bool(trainable)
        self.name = name or "variable"
        self.path = self.name

    def assign(self, value):
        v = _val(value)
        if np.shape(v) != self.value.shape:
            raise ValueError(f"Variable {self.name!r}: assign needs shape {self.value.shape}. Received {np.shape(v)}")
        self.value[...] = v
        return self

    def assign_add(self, value):
        self.value[...] += _val(value)
        return self

    def assign_sub(self, value):
        self.value[...] -= _val(value)
        return self

    def __repr__(self):
        return f"<Variable {self.name!r} shape={self.shape} dtype={self.dtype}>"


_NO_GRAD_UFUNCS = frozenset(("less", "less_equal", "greater", "greater_equal", "equal", "not_equal", "isfinite",
                             "isnan", "isinf", "sign", "logical_and", "logical_or", "logical_not"))


def _val(x):
    return x.value if isinstance(x, Tensor) else x


def value_of(x):
    """The NumPy array behind ``x`` (a Tensor's value, or np.asarray of anything else)."""
    return x.value if isinstance(x, Tensor) else np.asarray(x)


# ---------------------------------------------------------------- recording
class Node:
    """One recorded op: ``out`` came from ``parents``; ``backward(g, needs)`` returns one
    gradient (or None) per parent, given the gradient ``g`` of ``out``. ``pe(g, wanted)``,
    for ops where a weight meets the batch, returns (rule, parent indices): the per-example
    gradients of the wanted parents (pyaiml.autograd.per_example), for ``clipped_gradient``."""

    __slots__ = ("backward", "needs", "op", "out", "parents", "pe", "tag")

    def __init__(self, out, parents, needs, backward, op, pe=None, tag=None):
        self.out, self.parents, self.needs, self.backward, self.op = out, parents, needs, backward, op
        self.pe, self.tag = pe, tag


def record(value, parents, backward, op, pe=None, tag=None):
    """Return ``value`` as a Tensor recorded on the open tapes when a parent needs a
    gradient, else the plain array. ``backward(g, needs) -> tuple`` aligned with parents;
    ``pe``: the op's per-example rule (see Node); ``tag``: what the op offers the fusion
    pass (pyaiml/autograd/fusion.py)."""
    tapes = getattr(_state, "tapes", None)
    if not tapes:
        return value
    needs = tuple(type(p) is not np.ndarray and isinstance(p, Tensor) and p.requires_grad for p in parents)
    if not any(needs):
        return value
    out = Tensor(value, True)
    node = Node(out, parents, needs, backward, op, pe, tag)
    for t in tapes:
        if not t._stopped:
            t._nodes.append(node)
    return out


class paused:
    """``with paused():`` no tape records inside (shape probes, metric computations)."""

    def __enter__(self):
        self._saved = list(_tapes())
        _tapes().clear()
        return self

    def __exit__(self, *exc):
        _tapes().extend(self._saved)
        return False


class GradientTape:
    """Record differentiable ops; ``gradient(target, sources)`` differentiates.

    ``with GradientTape() as tape: loss = ...`` then ``tape.gradient(loss, variables)``:
    one array per source (None where the target does not depend on it). Sources are
    Variables, watched Tensors, or the NumPy arrays behind Variables (as a Sequential
    model's ``trainable_weights`` are). ``persistent=True`` allows several ``gradient``
    calls. ``tape.watch(x)`` returns a Tensor of x that takes part in differentiation.
    """

    def __init__(self, persistent=False, watch_accessed_variables=True):
        self.persistent = bool(persistent)
        self._nodes: list[Node] = []
        self._stopped = False
        self._used = False
        self._active = False

    def __enter__(self):
        _tapes().append(self)
        self._active = True
        return self

    def __exit__(self, *exc):
        tapes = _tapes()
        if self in tapes:
            tapes.remove(self)
        self._active = False
        return False

    def watch(self, x):
        """Mark x as needing a gradient; returns the Tensor to compute with (x itself when it
        is a Tensor)."""
        if isinstance(x, (list, tuple)):
            return type(x)(self.watch(v) for v in x)
        if isinstance(x, Tensor):
            x.requires_grad = True
            return x
        v = np.asarray(x)
        if v.dtype.kind != "f":
            raise TypeError(f"GradientTape.watch: only floating-point values have gradients. Received dtype {v.dtype}")
        return Tensor(v, True)

    def stop_recording(self):
        tape = self

        class _Stop:
            def __enter__(self):
                tape._stopped = True

            def __exit__(self, *exc):
                tape._stopped = False
                return False
        return _Stop()

    def reset(self):
        self._nodes = []

    def gradient(self, target, sources, output_gradients=None):
        if self._used and not self.persistent:
            raise RuntimeError("GradientTape.gradient can only be called once on a non-persistent tape "
                               "(use GradientTape(persistent=True))")
        self._used = True
        single = not isinstance(sources, (list, tuple))
        srcs = [sources] if single else list(sources)
        out = _backward(self._nodes, target, srcs, output_gradients)
        if not self.persistent:
            self._nodes = []
        return out[0] if single else out

    def clipped_gradient(self, target, sources, clip_factors, batch_size):
        """DP-SGD's gradient: sum over the batch of each example's gradient of ``target``
        times its clip factor. ``target`` is the batch mean of per-example losses over
        ``batch_size`` independent examples (so ``batch_size`` times the gradient of its output
        is the per-example gradients); ``sources`` are Variables; ``clip_factors(sq_norms)``
        maps the (B,) squared norms of the examples' gradients over all sources to (B,)
        factors (DPSGD.clip_factors). Each source must meet the batch directly in an op with
        a per-example rule (dense, conv, layer_norm, take of table rows, matmul of batch
        values by a weight, a weight added to or multiplied with batch values); a weight
        used by several ops gets the sum of their per-example gradients. Returns (gradients
        aligned with sources, None where the target does not reach one; the squared norms)."""
        if self._used and not self.persistent:
            raise RuntimeError("GradientTape.clipped_gradient can only be called once on a non-persistent tape")
        self._used = True
        out = _clipped_backward(self._nodes, target, list(sources), clip_factors, int(batch_size))
        if not self.persistent:
            self._nodes = []
        return out


def _sum_into(grads, key, g):
    prev = grads.get(key)
    grads[key] = g if prev is None else prev + g


def _backward(nodes, target, sources, output_gradients=None):
    """Reverse pass over ``nodes`` from ``target``; gradients of ``sources``."""
    targets = target if isinstance(target, (list, tuple)) else [target]
    ogs = output_gradients if isinstance(output_gradients, (list, tuple)) else [output_gradients] * len(targets)
    grads: dict[int, np.ndarray] = {}
    seeded = []
    for t, og in zip(targets, ogs):
        if not isinstance(t, Tensor) or not t.requires_grad:
            continue
        g = np.ones_like(t.value) if og is None else np.broadcast_to(np.asarray(og, t.dtype), t.shape)
        _sum_into(grads, id(t), g)
        seeded.append(t)
    _fusion.run(nodes, seeded)
    # sources given as the arrays behind Variables: find the Variable of each on the tape
    by_array = {}
    for n in nodes:
        for p in n.parents:
            if isinstance(p, Variable):
                by_array[id(p.value)] = p
    keys = []
    for s in sources:
        if isinstance(s, Tensor):
            keys.append(id(s))
        elif isinstance(s, np.ndarray):
            v = by_array.get(id(s))
            keys.append(id(v) if v is not None else None)
        else:
            raise TypeError(f"GradientTape.gradient: sources must be Variables, Tensors or arrays. "
                            f"Received {type(s).__name__}")
    wanted = {k for k in keys if k is not None}
    for n in reversed(nodes):
        g = grads.get(id(n.out))
        if g is None:
            continue
        if id(n.out) not in wanted:
            del grads[id(n.out)]
        gs = n.backward(g, n.needs)
        for p, need, gp in zip(n.parents, n.needs, gs):
            if need and gp is not None:
                if gp.shape != p.shape:
                    raise RuntimeError(f"autograd: the backward of {n.op} gave a gradient of shape {gp.shape} "
                                       f"for an input of shape {p.shape}")
                _sum_into(grads, id(p), gp)
    out = []
    for k, s in zip(keys, sources):
        g = grads.get(k) if k is not None else None
        if g is not None:
            dt = s.dtype
            g = np.ascontiguousarray(g, dtype=dt) if (g.dtype != dt or not g.flags.c_contiguous) else g
        out.append(g)
    return out


def _clipped_backward(nodes, target, sources, clip_factors, n):
    """GradientTape.clipped_gradient's walk: the reverse pass with the target's gradient
    scaled by n; at an op where a source meets the batch, the op's rule keeps the per-example
    gradients of its sources (and its ordinary backward gives the other parents' gradients);
    then the norms, the clip factors, and the clipped sums."""
    from collections import Counter

    from pyaiml.autograd.per_example import sqnorms

    for s in sources:
        if not isinstance(s, Variable):
            raise TypeError(f"GradientTape.clipped_gradient: sources must be Variables. Received {type(s).__name__}")
    wanted = {id(s) for s in sources}
    grads: dict[int, np.ndarray] = {}
    if isinstance(target, Tensor) and target.requires_grad:
        grads[id(target)] = np.full_like(target.value, n)
        _fusion.run(nodes, (target,))
    else:
        _fusion.run(nodes)
    rules = []  # (rule, ids of the sources it covers, in rule.names order)
    for node in reversed(nodes):
        g = grads.pop(id(node.out), None)
        if g is None:
            continue
        mine = tuple(need and id(p) in wanted for p, need in zip(node.parents, node.needs))
        rest = node.needs
        if any(mine):
            names = [getattr(p, "name", "?") for p, m in zip(node.parents, mine) if m]
            if node.pe is None:
                raise ValueError(f"DP-SGD: variable(s) {', '.join(names)} enter op {node.op!r}, which has no "
                                 "per-example gradient rule; a weight must meet the batch directly in dense, conv, "
                                 "layer_norm, an embedding lookup, matmul, or an add/multiply with batch values")
            if g.shape[:1] != (n,):
                raise ValueError(f"DP-SGD: variable(s) {', '.join(names)} enter op {node.op!r} whose output has "
                                 f"shape {g.shape}, not a batch of {n} examples first (a weight must meet the batch "
                                 "before any other op transforms it)")
            rule, idx = node.pe(g, mine)
            if sorted(idx) != [i for i, m in enumerate(mine) if m]:
                raise RuntimeError(f"autograd: the per-example rule of {node.op} covers parents {idx}, "
                                   f"not the wanted {mine}")
            rules.append((rule, [id(node.parents[i]) for i in idx]))
            rest = tuple(need and not m for need, m in zip(node.needs, mine))
        if any(rest):
            gs = node.backward(g, rest)
            for p, need, gp in zip(node.parents, rest, gs):
                if need and gp is not None:
                    if gp.shape != p.shape:
                        raise RuntimeError(f"autograd: the backward of {node.op} gave a gradient of shape {gp.shape} "
                                           f"for an input of shape {p.shape}")
                    _sum_into(grads, id(p), gp)
    uses = Counter(v for _, vs in rules for v in vs)
    sq = np.zeros(n)
    shared: dict[int, np.ndarray] = {}  # per-example gradients of weights used by several ops
    direct = []
    for rule, vs in rules:
        if all(uses[v] == 1 for v in vs):
            sq = sq + rule.sq_norms()
            direct.append((rule, vs))
        else:
            for v, g in zip(vs, rule.grads()):
                shared[v] = g if v not in shared else shared[v] + g
    for g in shared.values():
        sq = sq + sqnorms(g)
    c = np.asarray(clip_factors(sq), dtype=np.float64)
    by_var = {}
    for rule, vs in direct:
        for v, g in zip(vs, rule.clipped(c)):
            by_var[v] = g
    for v, g in shared.items():
        by_var[v] = np.tensordot(c.astype(g.dtype), g, axes=1)
    out = []
    for s in sources:
        g = by_var.get(id(s))
        if g is not None:
            g = np.ascontiguousarray(g, dtype=s.dtype).reshape(s.shape)
        out.append(g)
    return out, sq
