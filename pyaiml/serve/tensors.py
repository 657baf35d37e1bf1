"""Tensors of the Open Inference Protocol v2: request parsing and response encoding.

What it is: the typed-tensor layer of ``/v2/models/{name}/infer``. A request body is JSON
(``{"inputs": [{"name", "shape", "datatype", "data"}], "outputs": [...], "parameters":
{...}}``), or JSON followed by raw tensor bytes (the binary tensor data extension that
``tritonclient.http`` uses by default: the JSON length is in the
``Inference-Header-Content-Length`` header, each binary input says ``"parameters":
{"binary_data_size": n}``). Inputs become NumPy arrays of the declared datatype and shape;
anything that does not add up (unknown datatype, data count against shape, a value out of the
datatype's range, binary sizes against the body) is a :class:`TensorError` whose message
names the input, the rule and what was received (the server answers it with a 400).

Outputs are encoded as JSON ``data`` lists, or as binary when the request asks for it
(``"binary_data": true`` on an output, or ``"binary_data_output": true`` in the request's
parameters). The hot path keeps two small caches, both bounded and used from the event loop's
thread: the parsed JSON head of binary requests (per distinct head), and the reply's JSON around
its data lists (per model, version and output shapes); float lists come from the native
formatter ``_C.json_floats`` (the bytes ``json.dumps`` writes) when the extension is built.

What it is not: the shared-memory extensions, compression of request bodies.
Tests: tests/test_serve_v2.py.
"""
from __future__ import annotations

import json
import math
import struct

import numpy as np

# v2 datatype -> NumPy dtype (little-endian, as the binary extension carries them)
DATATYPES = {
    "BOOL": np.dtype(bool), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
_KIND_TO_DT = {("b", 1): "BOOL", ("u", 1): "UINT8", ("u", 2): "UINT16", ("u", 4): "UINT32", ("u", 8): "UINT64",
               ("i", 1): "INT8", ("i", 2): "INT16", ("i", 4): "INT32", ("i", 8): "INT64", ("f", 2): "FP16",
               ("f", 4): "FP32", ("f", 8): "FP64"}
MAX_ELEMENTS = 1 << 26  # refuse a declared shape larger than this before allocating anything
_ENCODER = json.JSONEncoder(separators=(",", ":"))  # one encoder for every response (json.dumps builds one a call)


def finite(a: np.ndarray) -> bool:
    """True when every element of the float array ``a`` is finite (pyaiml's all_finite op on
    float32/float64: one pass, no boolean temporary)."""
    if a.dtype in (np.float32, np.float64):
        from pyaiml.ops._validate import all_finite

        return all_finite(np.ascontiguousarray(a))
    return bool(np.isfinite(a).all())


class TensorError(ValueError):
    """A malformed request or tensor (answered with HTTP 400)."""


def datatype_of(a: np.ndarray) -> str:
    """The v2 datatype name of a NumPy array (str/bytes/object arrays are BYTES)."""
    a = np.asarray(a)
    if a.dtype.kind in "OSU":
        return "BYTES"
    try:
        return _KIND_TO_DT[(a.dtype.kind, a.dtype.itemsize)]
    except KeyError:
        raise TypeError(f"no v2 datatype for NumPy dtype {a.dtype}") from None


def _shape(inp, where):
    shape = inp.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise TensorError(f"{where}: 'shape' must be a list of integers >= 0. Received {shape!r}")
    n = math.prod(shape)
    if n > MAX_ELEMENTS:
        raise TensorError(f"{where}: shape {shape} holds {n} elements, more than the limit of {MAX_ELEMENTS}")
    return tuple(shape), n


def _flatten(data, where):
    """Row-major flattening of nested JSON lists (the spec allows flat or nested data)."""
    if not isinstance(data, list):
        return [data]
    if not data or not isinstance(data[0], list):
        if any(isinstance(v, list) for v in data):
            raise TensorError(f"{where}: 'data' mixes lists and scalars at one nesting level")
        return data
    out = []
    for d in data:
        if not isinstance(d, list):
            raise TensorError(f"{where}: 'data' mixes lists and scalars at one nesting level")
        out.extend(_flatten(d, where))
    return out


def _from_json(data, dt: str, shape, n, where):
    flat = _flatten(data, where)
    if len(flat) != n:
        raise TensorError(f"{where}: shape {list(shape)} needs {n} values; 'data' holds {len(flat)}")
    if dt == "BYTES":
        bad = next((v for v in flat if not isinstance(v, str)), None)
        if bad is not None:
            raise TensorError(f"{where}: BYTES data must be strings. Received {type(bad).__name__} {bad!r}")
        arr = np.empty(n, dtype=object)
        arr[:] = [v.encode("utf-8") for v in flat]
        return arr.reshape(shape)
    if dt == "BOOL":
        bad = next((v for v in flat if not isinstance(v, bool)), None)
        if bad is not None:
            raise TensorError(f"{where}: BOOL data must be true/false. Received {bad!r}")
        return np.asarray(flat, dtype=bool).reshape(shape)
    want = DATATYPES[dt]
    if want.kind in "iu":
        bad = next((v for v in flat if isinstance(v, bool) or not isinstance(v, int)), None)
        if bad is not None:
            raise TensorError(f"{where}: {dt} data must be integers. Received {type(bad).__name__} {bad!r}")
        info = np.iinfo(want)
        bad = next((v for v in flat if not info.min <= v <= info.max), None)
        if bad is not None:
            raise TensorError(f"{where}: {dt} values must be in [{info.min}, {info.max}]. Received {bad}")
        return np.asarray(flat, dtype=want).reshape(shape)
    bad = next((v for v in flat if isinstance(v, bool) or not isinstance(v, (int, float))), None)
    if bad is not None:
        raise TensorError(f"{where}: {dt} data must be numbers. Received {type(bad).__name__} {bad!r}")
    return np.asarray(flat, dtype=want).reshape(shape)


def _bytes_elements(raw: bytes, n, where):
    """BYTES in the binary extension: each element a 4-byte little-endian length + bytes."""
    out, pos = [], 0
    for i in range(n):
        if pos + 4 > len(raw):
            raise TensorError(f"{where}: binary BYTES data ends inside element {i} of {n}")
        (ln,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + ln > len(raw):
            raise TensorError(f"{where}: binary BYTES element {i} declares {ln} bytes; {len(raw) - pos} remain")
        out.append(bytes(raw[pos:pos + ln]))
        pos += ln
    if pos != len(raw):
        raise TensorError(f"{where}: binary BYTES data has {len(raw) - pos} bytes after its {n} elements")
    arr = np.empty(n, dtype=object)
    arr[:] = out
    return arr


# Parsed JSON heads of binary requests, keyed by the head's bytes: a client sending one shape
# sends the same head every time (tritonclient, the load generator), and json.loads plus the
# checks cost ~5 us of the event loop's ~70 per request. Only heads whose inputs are all
# binary (no data in the JSON) and at most _HEAD_CACHE_BYTES long; cleared when full. Used
# from the event loop's thread only.
_HEAD_CACHE: dict = {}
_HEAD_CACHE_MAX = 256
_HEAD_CACHE_BYTES = 4096


def _parse_head(head):
    """(request dict, ((name, datatype, shape, n, binary size or None, JSON data), ...)) of an
    infer request's JSON, every rule that does not need the binary part checked."""
    try:
        req = json.loads(head)
    except (ValueError, UnicodeDecodeError) as e:
        raise TensorError(f"the request body is not valid JSON: {e}") from None
    if not isinstance(req, dict):
        raise TensorError(f"the request must be a JSON object. Received {type(req).__name__}")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise TensorError(f"'inputs' must be a non-empty list of tensors. Received {inputs!r:.80}")
    for key in ("parameters",):
        if key in req and not isinstance(req[key], dict):
            raise TensorError(f"'{key}' must be an object. Received {req[key]!r:.80}")
    specs, names = [], set()
    for i, inp in enumerate(inputs):
        if not isinstance(inp, dict) or not isinstance(inp.get("name"), str):
            raise TensorError(f"inputs[{i}] must be an object with a string 'name'. Received {inp!r:.80}")
        name = inp["name"]
        where = f"input '{name}'"
        if name in names:
            raise TensorError(f"{where} is given twice")
        names.add(name)
        dt = inp.get("datatype")
        if dt not in DATATYPES:
            raise TensorError(f"{where}: unknown datatype {dt!r}; expected one of {sorted(DATATYPES)}")
        shape, n = _shape(inp, where)
        params = inp.get("parameters") or {}
        if not isinstance(params, dict):
            raise TensorError(f"{where}: 'parameters' must be an object")
        size = params.get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise TensorError(f"{where}: binary_data_size must be an integer >= 0. Received {size!r}")
            if dt != "BYTES" and size != n * DATATYPES[dt].itemsize:
                raise TensorError(f"{where}: shape {list(shape)} of {dt} needs {n * DATATYPES[dt].itemsize} "
                                  f"bytes; binary_data_size is {size}")
            specs.append((name, dt, shape, n, size, None))
        else:
            if "data" not in inp:
                raise TensorError(f"{where} has neither 'data' nor a binary_data_size parameter")
            specs.append((name, dt, shape, n, None, inp["data"]))
    outs = req.get("outputs")
    if outs is not None and not (isinstance(outs, list) and all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                                for o in outs)):
        raise TensorError(f"'outputs' must be a list of objects with a string 'name'. Received {outs!r:.80}")
    return req, tuple(specs)


def parse_request(body: bytes, header_length=None):
    """(request dict, {input name: array}) of an infer request body.

    header_length: the ``Inference-Header-Content-Length`` header (str or None); when given,
    the body is that many bytes of JSON followed by the binary tensor data. The request dict
    of a binary request may be shared with earlier requests of the same head (read it, do not
    change it); the arrays are the request's own."""
    if header_length is not None:
        try:
            hl = int(header_length)
        except ValueError:
            raise TensorError(f"Inference-Header-Content-Length must be an integer. Received {header_length!r}") \
                from None
        if not 0 <= hl <= len(body):
            raise TensorError(f"Inference-Header-Content-Length is {hl}, but the body has {len(body)} bytes")
        head, rest = bytes(body[:hl]), memoryview(body)[hl:]
        parsed = _HEAD_CACHE.get(head)
        if parsed is None:
            parsed = _parse_head(head)
            if len(head) <= _HEAD_CACHE_BYTES and all(sp[4] is not None for sp in parsed[1]):
                if len(_HEAD_CACHE) >= _HEAD_CACHE_MAX:
                    _HEAD_CACHE.clear()
                _HEAD_CACHE[head] = parsed
    else:
        rest = memoryview(b"")
        parsed = _parse_head(body)
    req, specs = parsed
    out, pos = {}, 0
    for name, dt, shape, n, size, data in specs:
        if size is None:
            out[name] = _from_json(data, dt, shape, n, f"input '{name}'")
            continue
        if pos + size > len(rest):
            raise TensorError(f"input '{name}': binary_data_size {size} runs past the end of the body "
                              f"({len(rest) - pos} bytes left)")
        raw = rest[pos:pos + size]
        pos += size
        if dt == "BYTES":
            out[name] = _bytes_elements(bytes(raw), n, f"input '{name}'").reshape(shape)
        else:
            out[name] = np.frombuffer(bytes(raw), dtype=DATATYPES[dt]).reshape(shape)
    if pos != len(rest):
        raise TensorError(f"the body has {len(rest) - pos} bytes of binary data that no input claims")
    return req, out


def _json_data(a: np.ndarray):
    if a.dtype.kind in "OSU":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in a.reshape(-1)]
    if a.dtype.kind == "f":
        flat = a.reshape(-1).tolist()  # Python floats: each the exact value of its element
        if not finite(a):  # JSON has no NaN/inf: send them as null
            return [None if not math.isfinite(v) else v for v in flat]
        return flat
    return a.reshape(-1).tolist()


def _binary_data(a: np.ndarray) -> bytes:
    if a.dtype.kind in "OSU":
        parts = []
        for v in a.reshape(-1):
            b = v if isinstance(v, bytes) else str(v).encode("utf-8")
            parts.append(struct.pack("<I", len(b)) + b)
        return b"".join(parts)
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()


def _json_text(a: np.ndarray) -> bytes:
    """The JSON ``data`` list of an output: float arrays through the native formatter (the
    bytes json.dumps writes, ~0.07 us an element against ~0.5), anything else through json."""
    if a.dtype in (np.float32, np.float64):
        fmt = _json_floats()
        if fmt is not None:
            return fmt(np.ascontiguousarray(a))
    return _ENCODER.encode(_json_data(a)).encode()


def _json_floats():
    """_C.json_floats, or None without the compiled extension (looked up once)."""
    global _JSON_FLOATS
    if _JSON_FLOATS is False:
        from pyaiml._backend import _load_C

        _JSON_FLOATS = getattr(_load_C(), "json_floats", None)
    return _JSON_FLOATS


_JSON_FLOATS = False


# The JSON of a response around its data lists, per (model, version, outputs' names, datatypes,
# shapes, binary sizes): encoded once with a marker string where each data list goes, then split
# at the markers. Used from the event loop's thread only; cleared when full.
_RESP_CACHE: dict = {}
_RESP_CACHE_MAX = 256
_MARK = "\x00pyaiml-data\x00"
_MARK_JSON = _ENCODER.encode(_MARK).encode()


def _response_pieces(key, model_name, version, entries):
    pieces = _RESP_CACHE.get(key)
    if pieces is None:
        res = {"model_name": model_name, "model_version": version, "outputs": entries}
        pieces = tuple(_ENCODER.encode(res).encode().split(_MARK_JSON))
        if len(_RESP_CACHE) >= _RESP_CACHE_MAX:
            _RESP_CACHE.clear()
        _RESP_CACHE[key] = pieces
    return pieces


def encode_response(req: dict, model_name: str, version: str, outputs: dict):
    """(body bytes, JSON header length or None) of an infer response.

    outputs: {name: array}, filtered to the request's ``outputs`` when it names some; binary
    when the request asks for it."""
    wanted = req.get("outputs")
    params = req.get("parameters") or {}
    all_binary = bool(params.get("binary_data_output", False))
    if wanted:
        missing = [o["name"] for o in wanted if o["name"] not in outputs]
        if missing:
            raise TensorError(f"unknown output(s) {missing}; model '{model_name}' has {sorted(outputs)}")
        chosen = [(o["name"], bool((o.get("parameters") or {}).get("binary_data", all_binary))) for o in wanted]
    else:
        chosen = [(n, all_binary) for n in outputs]
    res_outputs, blobs, key, json_out = [], [], [model_name, version], []
    for name, binary in chosen:
        a = np.asarray(outputs[name])
        dt = datatype_of(a)
        entry = {"name": name, "datatype": dt, "shape": list(a.shape)}
        if binary:
            blob = _binary_data(a)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
            key.append((name, dt, a.shape, len(blob)))
        else:
            entry["data"] = _MARK
            json_out.append((entry, a))
            key.append((name, dt, a.shape, None))
        res_outputs.append(entry)
    if "id" in req or _MARK in f"{model_name}{version}":
        # the request's id (any JSON) goes into the text: no pieces to cache or split
        for entry, a in json_out:
            entry["data"] = _json_data(a)
        res = {"model_name": model_name, "model_version": version, "outputs": res_outputs}
        if "id" in req:
            res["id"] = req["id"]
        head = _ENCODER.encode(res).encode()
    else:
        pieces = _response_pieces(tuple(key), model_name, version, res_outputs)
        parts = [pieces[0]]
        for (_, a), p in zip(json_out, pieces[1:]):
            parts += (_json_text(a), p)
        head = b"".join(parts)
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
