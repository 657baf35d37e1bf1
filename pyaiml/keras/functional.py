"""The functional API: ``keras.Input`` symbolic tensors, layer graphs, ``keras.Model(inputs,
outputs)``.

What it is. ``Input(shape)`` returns a ``KerasTensor`` (a shape with a None batch, a dtype,
and the node that made it). Calling a layer, or a ``keras.ops`` function, on KerasTensors
adds a ``Node`` (the layer, its arguments with the KerasTensors in place) and returns
KerasTensors of the result's shape: the layer is built from the symbolic shapes (None where
unknown), then run once on small zero arrays to learn the output shapes (twice when some
non-batch size is unknown, to see which output sizes follow it). ``Functional`` (what
``keras.Model(inputs, outputs)`` returns) walks the graph back from its outputs, checks
that every output is reached from the given inputs only and that every input is used,
orders the nodes, and runs them in that order in ``call``: on plain arrays for inference,
on the tape for training, so shared layers, branches and merges are differentiated like
any other code. Its config lists layers and nodes (arguments with KerasTensor references
``{"__keras_tensor__": [layer, node, index]}``); ``from_config`` replays them.

Masks: an ``Embedding(mask_zero=True)`` output carries its padding mask to the layers after
it that support masking (passed as ``mask=``): GlobalAveragePooling1D averages over the
real steps, MultiHeadAttention (self-attention) ignores padded keys, as in Keras.
Not here: masks in subclassed models' call(), nested Input structures deeper than one list or
dict, KerasTensor slicing with tensors. Tests: tests/test_keras_functional.py.
"""
from __future__ import annotations

import numpy as np

from pyaiml.autograd.tape import Tensor, paused, recording
from pyaiml.keras import layers as _layers
from pyaiml.keras._common import placeholder_run
from pyaiml.keras._plans import planned_forward
from pyaiml.keras.model import Model, _arrays, _shape_text
from pyaiml.ops import _validate

_layers.BUILTIN_MODULES.add(__name__)

_PROBE_BATCH = 2
_PROBES = (3, 5)  # sizes given to unknown non-batch dimensions while probing shapes


class KerasTensor:
    """A symbolic value of the functional API: ``shape`` (batch first, None where unknown),
    ``dtype``, and the node that produced it. Arithmetic and indexing build graph nodes."""

    _is_keras_tensor = True
    __array_priority__ = 1001.0

    def __init__(self, shape, dtype="float32", node=None, index=0, name=None):
        self.shape = tuple(None if d is None else int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.node, self.index = node, index
        self.name = name

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        src = f", produced by {self.node.layer.name!r}" if self.node is not None else ""
        return f"<KerasTensor shape={_shape_text(self.shape)}, dtype={self.dtype}{src}>"

    def __array__(self, dtype=None, copy=None):
        raise TypeError(f"{self!r} is symbolic (keras.Input and what layers make of it): it has no values. Use "
                        "keras.ops on it inside a model, or call the model on arrays")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        from pyaiml.keras import ops

        names = {"add": "add", "subtract": "subtract", "multiply": "multiply", "true_divide": "divide",
                 "matmul": "matmul", "power": "power"}
        if method == "__call__" and ufunc.__name__ in names and not kwargs:
            return getattr(ops, names[ufunc.__name__])(*inputs)
        raise TypeError(f"numpy.{ufunc.__name__} cannot take a symbolic KerasTensor; use keras.ops")

    def _op(self, name, *args):
        from pyaiml.keras import ops

        return getattr(ops, name)(*args)

    def __add__(self, o):
        return self._op("add", self, o)

    def __radd__(self, o):
        return self._op("add", o, self)

    def __sub__(self, o):
        return self._op("subtract", self, o)

    def __rsub__(self, o):
        return self._op("subtract", o, self)

    def __mul__(self, o):
        return self._op("multiply", self, o)

    def __rmul__(self, o):
        return self._op("multiply", o, self)

    def __truediv__(self, o):
        return self._op("divide", self, o)

    def __rtruediv__(self, o):
        return self._op("divide", o, self)

    def __matmul__(self, o):
        return self._op("matmul", self, o)

    def __pow__(self, o):
        return self._op("power", self, o)

    def __neg__(self):
        return self._op("negative", self)

    def __getitem__(self, idx):
        return symbolic_call(OpLayer("getitem"), (self, _encode_index(idx)), {})


def _encode_index(idx):
    """An index as JSON-able data (slices as {"slice": [start, stop, step]})."""
    if isinstance(idx, tuple):
        return {"tuple": [_encode_index(i) for i in idx]}
    if isinstance(idx, slice):
        return {"slice": [idx.start, idx.stop, idx.step]}
    if idx is Ellipsis:
        return {"ellipsis": True}
    if idx is None:
        return {"newaxis": True}
    if isinstance(idx, (int, np.integer)):
        return int(idx)
    raise TypeError(f"indexing a KerasTensor takes ints, slices, None and ...; received {type(idx).__name__}")


def _decode_index(d):
    if isinstance(d, dict):
        if "tuple" in d:
            return tuple(_decode_index(i) for i in d["tuple"])
        if "slice" in d:
            return slice(*d["slice"])
        if "ellipsis" in d:
            return Ellipsis
        if "newaxis" in d:
            return None
    return d


class Node:
    """One call of ``layer`` in a graph: ``args``/``kwargs`` hold KerasTensors in place."""

    def __init__(self, layer, args, kwargs):
        self.layer, self.args, self.kwargs = layer, args, kwargs
        self.inputs = _keras_tensors((args, kwargs))
        self.outputs: list[KerasTensor] = []


def _keras_tensors(obj):
    out = []

    def walk(o):
        if getattr(o, "_is_keras_tensor", False):
            out.append(o)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
    walk(obj)
    return out


def _map(obj, fn):
    """obj with every KerasTensor replaced by fn(tensor) (lists, tuples, dicts kept)."""
    if getattr(obj, "_is_keras_tensor", False):
        return fn(obj)
    if isinstance(obj, list):
        return [_map(v, fn) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_map(v, fn) for v in obj)
    if isinstance(obj, dict):
        return {k: _map(v, fn) for k, v in obj.items()}
    return obj


def _leaves(out):
    """A call's result as a flat list of arrays (tuples/lists of outputs, in order)."""
    if isinstance(out, (list, tuple)):
        return [v for o in out for v in _leaves(o)]
    return [out]


def _rebuild(template, it):
    if isinstance(template, (list, tuple)):
        return type(template)(_rebuild(t, it) for t in template)
    return next(it)


def _probe(kt: KerasTensor, size):
    shape = tuple(_PROBE_BATCH if i == 0 and d is None else (size if d is None else d) for i, d in enumerate(kt.shape))
    return np.zeros(shape, dtype=kt.dtype)


def symbolic_call(layer, args, kwargs):
    """``layer(*args, **kwargs)`` with KerasTensors among the arguments: a graph node."""
    node = Node(layer, args, kwargs)
    if not node.inputs:
        raise ValueError(f"{layer.name}: no KerasTensor among the arguments")
    first = args[0] if args else kwargs.get("inputs")
    # the build and the runs on zeros below are placeholder runs (stateful layers keep no states)
    with paused(), _validate.finite_checks(False), placeholder_run():
        if not layer.built:
            try:
                layer._build_for_call(first, list(args), dict(kwargs))
            except (ValueError, TypeError) as e:
                raise type(e)(_in_graph(layer, node, e)) from None
            layer.built = True
        unknown = any(d is None for kt in node.inputs for d in kt.shape[1:])
        results = []
        for size in (_PROBES if unknown else _PROBES[:1]):
            a = _map(args, lambda kt, s=size: _probe(kt, s))
            k = _map(kwargs, lambda kt, s=size: _probe(kt, s))
            k.setdefault("training", False)
            try:
                out = layer(*a, **k)
            except (ValueError, TypeError, IndexError) as e:
                raise type(e)(_in_graph(layer, node, e)) from None
            results.append(out)
    template = results[0]
    leaves = [_leaves(r) for r in results]
    outs = []
    for i, v in enumerate(leaves[0]):
        v = v.value if isinstance(v, Tensor) else np.asarray(v)
        shape = list(v.shape)
        for other in leaves[1:]:
            o = np.shape(other[i].value if isinstance(other[i], Tensor) else other[i])
            shape = [d if d == od else None for d, od in zip(shape, o)]
        in_batch = node.inputs[0].shape[0] if node.inputs else None
        if shape and (in_batch is None and shape[0] == _PROBE_BATCH):
            shape[0] = None
        kt = KerasTensor(shape, v.dtype, node, i)
        outs.append(kt)
    node.outputs = outs
    if not hasattr(layer, "_graph_nodes"):
        layer._graph_nodes = []
    layer._graph_nodes.append(node)
    if len(outs) == 1 and not isinstance(template, (list, tuple)):
        return outs[0]
    return _rebuild(template, iter(outs))


def _in_graph(layer, node, err):
    shapes = ", ".join(_shape_text(kt.shape) for kt in node.inputs)
    msg = str(err)
    if layer.name in msg and "Received" in msg:
        return msg
    return f"Layer {layer.name!r} ({type(layer).__name__}) received inputs of shape {shapes}: {msg}"


class OpLayer(_layers.Layer):
    """A ``keras.ops`` function applied to KerasTensors: a graph node without weights."""

    def __init__(self, op, name=None, **kw):
        from pyaiml.keras import ops

        if op != "getitem" and op not in ops._OPS:
            raise ValueError(f"OpLayer: unknown keras.ops function {op!r}")
        self.op = op
        super().__init__(name=name or _layers._auto_name(op.rstrip("_") + "_op").replace("__", "_"), **kw)

    def _accepts(self, kw):
        return False

    def _build_for_call(self, x, args, kwargs):
        self.built = True

    def call(self, *args, **kwargs):
        if self.op == "getitem":
            from pyaiml.autograd import functional as F

            return F.getitem(args[0], _decode_index(args[1]))
        from pyaiml.keras import ops

        return ops._OPS[self.op](*args, **kwargs)

    def get_config(self):
        return {"name": self.name, "op": self.op}


def symbolic_op(name, args, kwargs):
    return symbolic_call(OpLayer(name), args, kwargs)


def Input(shape=None, batch_size=None, name=None, dtype=None, sparse=None, batch_shape=None, tensor=None,
          optional=False):
    """A symbolic input: ``shape`` without the batch dimension (None for unknown sizes)."""
    if batch_shape is not None:
        batch_size, shape = batch_shape[0], tuple(batch_shape[1:])
    if shape is None:
        raise ValueError("Input: shape is required, e.g. Input(shape=(32, 32, 3))")
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    layer = _layers.InputLayer(shape=tuple(shape), name=name, dtype=dtype, batch_size=batch_size)
    return layer.output


class Functional(Model):
    """``keras.Model(inputs, outputs)``: a model whose ``call`` runs a layer graph."""

    def __init__(self, inputs, outputs, name=None, trainable=True, **kwargs):
        self._init_model(name or "functional", trainable, **kwargs)
        self._inputs_struct = inputs
        self._outputs_struct = outputs
        flat_in = _flat_struct(inputs, "inputs")
        flat_out = _flat_struct(outputs, "outputs")
        for kt in flat_in:
            if not isinstance(kt.node.layer if kt.node else None, _layers.InputLayer):
                raise TypeError(f"Model: inputs must be keras.Input tensors. Received {kt!r}")
        self.inputs, self.outputs = flat_in, flat_out
        in_ids = {id(kt) for kt in flat_in}
        order, seen, used = [], set(), set()

        def visit(kt, out_kt):
            if id(kt) in in_ids:
                used.add(id(kt))
                return
            node = kt.node
            if node is None or isinstance(node.layer, _layers.InputLayer):
                src = node.layer.name if node is not None else repr(kt)
                raise ValueError(
                    f"Model {self.name!r}: output {_describe(out_kt)} depends on Input {src!r} "
                    f"(shape {_shape_text(kt.shape)}), which is not among the model's inputs "
                    f"({', '.join(repr(t.node.layer.name) for t in flat_in)}): the graph is disconnected")
            if id(node) in seen:
                return
            seen.add(id(node))
            for parent in node.inputs:
                visit(parent, out_kt)
            order.append(node)
        for kt in flat_out:
            if not getattr(kt, "_is_keras_tensor", False):
                raise TypeError(f"Model {self.name!r}: outputs must be KerasTensors (results of layers called on "
                                f"keras.Input). Received {type(kt).__name__}")
            visit(kt, kt)
        unused = [kt for kt in flat_in if id(kt) not in used]
        if unused:
            raise ValueError(f"Model {self.name!r}: input {unused[0].node.layer.name!r} (shape "
                             f"{_shape_text(unused[0].shape)}) is not connected to any output; remove it from "
                             "inputs or use it")
        self._nodes = order
        self._input_layers = [kt.node.layer for kt in flat_in]
        graph_layers = []
        for node in order:
            if all(node.layer is not g for g in graph_layers):
                graph_layers.append(node.layer)
        self._graph_layers = graph_layers
        self.input_names = [layer.name for layer in self._input_layers]
        names = []
        for kt in flat_out:
            nm = kt.node.layer.name
            names.append(nm if nm not in names else f"{nm}_{kt.index}")
        self.output_names = list(outputs.keys()) if isinstance(outputs, dict) else names
        self.built = True
        self._build_input_shape = [kt.shape for kt in flat_in] if len(flat_in) > 1 else flat_in[0].shape
        self._chain = self._single_chain()

    def _single_chain(self):
        """The graph's layers in order when it is one chain from a single input to a single
        output (each node one layer called on the previous node's only output, no keyword
        arguments, no layer twice): inference then runs through a plan (pyaiml/keras/_plans.py)
        as Sequential's does. None for any other graph."""
        if len(self.inputs) != 1 or not getattr(self._outputs_struct, "_is_keras_tensor", False):
            return None
        prev, chain = self.inputs[0], []
        for node in self._nodes:
            if (node.kwargs or len(node.args) != 1 or node.args[0] is not prev or len(node.outputs) != 1
                    or any(node.layer is l for l in chain)):
                return None
            chain.append(node.layer)
            prev = node.outputs[0]
        return chain if chain and prev is self.outputs[0] else None

    def __getstate__(self):
        # copy.deepcopy / pickle: without the inference plans, whose callables hold this
        # model's layers (a copy running them would read the original's weights)
        state = self.__dict__.copy()
        state.pop("_iplans", None)
        return state

    def __call__(self, *args, **kwargs):
        chain = self._chain
        if chain is not None and len(args) == 1 and not kwargs.keys() - {"training"}:
            x = args[0]
            training = kwargs.get("training")
            if training is None:
                training = getattr(_layers._ctx, "training", None)
            if type(x) is np.ndarray and not training and x.ndim >= 1 and x.shape[0] > 0 and not recording():
                return self._planned(x, chain)
        return super().__call__(*args, **kwargs)

    def _planned(self, x, chain):
        """Inference on an array through the chain's plan: x's shape checked against the input,
        float data as float32 and checked finite once (the plan runs with the per-op checks off,
        as predict does)."""
        self._match_inputs(x)
        if _validate.get_check_finite():  # model(x): the model's input check (predict made it already)
            x = _arrays(x, "x").arrays[0]
        elif x.dtype.kind == "f":
            x = np.ascontiguousarray(x, dtype=np.float32)
        with _validate.finite_checks(False):
            return planned_forward(self, chain, x, lambda h: _layers.Layer.__call__(self, h, training=False))

    # structure
    def _sublayers(self):
        return list(self._graph_layers)

    @property
    def layers(self):
        return list(self._input_layers) + list(self._graph_layers)

    def call(self, inputs, training=None):
        values, masks = {}, {}
        flat = self._match_inputs(inputs)
        for kt, v in zip(self.inputs, flat):
            values[id(kt)] = v
        for node in self._nodes:
            layer = node.layer
            args = _map(node.args, lambda kt: values[id(kt)])
            kwargs = _map(node.kwargs, lambda kt: values[id(kt)])
            # Keras's implicit masks: an Embedding(mask_zero=True) output's mask reaches the
            # layers after it that support masking (GlobalAveragePooling1D, MultiHeadAttention)
            in_mask = masks.get(id(node.inputs[0])) if node.inputs else None
            if in_mask is not None and kwargs.get("mask") is None and layer._accepts("mask"):
                kwargs["mask"] = in_mask
            out = layer(*args, **kwargs)
            leaves = _leaves(out)
            out_mask = layer.compute_mask(in_mask) if len(leaves) == 1 else None
            for kt, v in zip(node.outputs, leaves):
                values[id(kt)] = v
                if out_mask is not None:
                    masks[id(kt)] = out_mask
        return _map(self._outputs_struct, lambda kt: values[id(kt)])

    def _match_inputs(self, inputs):
        n = len(self.inputs)
        if isinstance(inputs, dict):
            miss = [nm for nm in self.input_names if nm not in inputs]
            if miss:
                raise ValueError(f"Model {self.name!r}: no value for input(s) {miss}. Received keys {sorted(inputs)}")
            flat = [inputs[nm] for nm in self.input_names]
        elif isinstance(inputs, (list, tuple)) and n > 1:
            flat = list(inputs)
        else:
            flat = [inputs]
        if len(flat) != n:
            raise ValueError(f"Model {self.name!r} expects {n} input(s) ({', '.join(self.input_names)}). "
                             f"Received {len(flat)}")
        out = []
        for kt, v in zip(self.inputs, flat):
            shape = np.shape(v.value if isinstance(v, Tensor) else v)
            want = kt.shape
            if len(shape) != len(want) or any(w is not None and w != s for w, s in zip(want, shape)):
                raise ValueError(f"Model {self.name!r}: input {kt.node.layer.name!r} expects shape "
                                 f"{_shape_text(want)}. Received {tuple(shape)}")
            out.append(v)
        return out

    def _summary_rows(self):
        rows = []
        idx = {}
        for layer in self._graph_layers:
            idx[id(layer)] = 0
        for layer in self._input_layers:
            rows.append((f"{layer.name} ({type(layer).__name__})", _shape_text(layer.output.shape), 0, []))
        for node in self._nodes:
            layer = node.layer
            shapes = [kt.shape for kt in node.outputs]
            st = _shape_text(shapes[0]) if len(shapes) == 1 else _shape_text(shapes)
            first = idx[id(layer)] == 0
            idx[id(layer)] += 1
            conn = [f"{kt.node.layer.name}[{_node_index(kt.node)}][{kt.index}]" for kt in node.inputs]
            rows.append((f"{layer.name} ({type(layer).__name__})", st, layer.count_params() if first else 0, conn))
        return rows

    def get_config(self):
        layers_cfg = []
        for layer in self._input_layers + self._graph_layers:
            from pyaiml.keras.serialization import serialize_layer

            layers_cfg.append(serialize_layer(layer))
        local, counts = {}, {}
        for node in self._nodes:  # node numbers per layer in this model's order (from_config replays it)
            local[id(node)] = counts.get(id(node.layer), 0)
            counts[id(node.layer)] = local[id(node)] + 1

        def ref(kt):
            if isinstance(kt.node.layer, _layers.InputLayer):
                return {"__keras_tensor__": [kt.node.layer.name, 0, 0]}
            return {"__keras_tensor__": [kt.node.layer.name, local[id(kt.node)], kt.index]}
        nodes = []
        for node in self._nodes:
            nodes.append({"layer": node.layer.name,
                          "args": _map(list(node.args), ref), "kwargs": _map(dict(node.kwargs), ref)})
        return {"name": self.name, "trainable": self.trainable, "layers": layers_cfg, "nodes": nodes,
                "inputs": _map(_struct_list(self._inputs_struct), ref),
                "outputs": _map(_struct_list(self._outputs_struct), ref)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from pyaiml.keras.serialization import deserialize_layer

        by_name, produced = {}, {}
        for lc in config["layers"]:
            layer = deserialize_layer(lc, custom_objects)
            by_name[layer.name] = layer
            if isinstance(layer, _layers.InputLayer):
                produced[(layer.name, 0)] = [layer.output]
        counts = {}

        def resolve(ref):
            name, node_i, idx = ref["__keras_tensor__"]
            try:
                return produced[(name, node_i)][idx]
            except KeyError:
                raise ValueError(f"model config: tensor {name}[{node_i}][{idx}] is used before it is made") from None

        def deref(o):
            if isinstance(o, dict) and "__keras_tensor__" in o:
                return resolve(o)
            if isinstance(o, list):
                return [deref(v) for v in o]
            if isinstance(o, dict):
                return {k: deref(v) for k, v in o.items()}
            return o
        for nc in config["nodes"]:
            layer = by_name.get(nc["layer"])
            if layer is None:
                raise ValueError(f"model config: node of unknown layer {nc['layer']!r}")
            out = layer(*deref(nc["args"]), **deref(nc["kwargs"]))
            i = counts.get(layer.name, 0)
            counts[layer.name] = i + 1
            produced[(layer.name, i)] = _leaves(out)
        inputs = _unstruct(deref(config["inputs"]))
        outputs = _unstruct(deref(config["outputs"]))
        return cls(inputs, outputs, name=config.get("name"), trainable=config.get("trainable", True))


def _node_index(node):
    nodes = getattr(node.layer, "_graph_nodes", [node])
    for i, n in enumerate(nodes):
        if n is node:
            return i
    return 0


def _struct_list(s):
    if isinstance(s, dict):
        return {"dict": s}
    if isinstance(s, (list, tuple)):
        return {"list": list(s)}
    return {"single": s}


def _unstruct(d):
    if "dict" in d:
        return d["dict"]
    if "list" in d:
        return d["list"]
    return d["single"]


def _flat_struct(s, what):
    if isinstance(s, dict):
        vals = list(s.values())
    elif isinstance(s, (list, tuple)):
        vals = list(s)
    else:
        vals = [s]
    if not vals:
        raise ValueError(f"Model: {what} is empty")
    for v in vals:
        if not getattr(v, "_is_keras_tensor", False):
            raise TypeError(f"Model: {what} must be KerasTensors (from keras.Input and layers called on it). "
                            f"Received {type(v).__name__}")
    return vals


def _describe(kt):
    return f"{_shape_text(kt.shape)} of layer {kt.node.layer.name!r}" if kt.node else repr(kt)
