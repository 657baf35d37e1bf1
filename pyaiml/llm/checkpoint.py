"""Hugging Face checkpoint folders: config.json, safetensors weights (one file or shards) and
which model family a config describes.

- :func:`read_config` reads ``config.json`` (and ``generation_config.json`` when present).
- :func:`family` maps a config to ``"gpt2"``, ``"llama"`` (Llama, Mistral, Qwen2) or
  ``"bert"``; anything else is a ValueError naming the ``model_type`` and ``architectures``
  found and the supported ones.
- :func:`load_tensors` reads ``model.safetensors`` or the shards that
  ``model.safetensors.index.json`` lists, through the ``safetensors`` package, into float32
  NumPy arrays. bfloat16 (which NumPy has no dtype for) and float16 tensors are widened to
  float32 at load; int8 tensors (pyaiml's quantized layout, pyaiml.llm.quant) stay int8.
  Every file's header is checked against the file's size before anything is allocated: a
  truncated or inconsistent file is a ValueError naming it.

Not here: what the tensors mean (pyaiml.llm.models), tokenizers (pyaiml.llm.tokenizer).
Nothing is ever unpickled: a folder holding only ``pytorch_model.bin`` is refused with a
message saying so. Tests: tests/test_llm_checkpoint.py.
"""
from __future__ import annotations

import json
import os
import struct

import numpy as np

SUPPORTED = {
    "gpt2": ("gpt2",),
    "llama": ("llama", "mistral", "qwen2"),
    "bert": ("bert",),
}
_ARCH_PREFIX = {"GPT2": "gpt2", "Llama": "llama", "Mistral": "llama", "Qwen2": "llama", "Bert": "bert"}

# safetensors dtype -> (NumPy dtype as stored, bytes per element)
_DTYPES = {
    "F64": (np.float64, 8), "F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (np.uint16, 2),
    "I64": (np.int64, 8), "I32": (np.int32, 4), "I16": (np.int16, 2), "I8": (np.int8, 1),
    "U8": (np.uint8, 1), "BOOL": (np.bool_, 1),
}
_MAX_HEADER = 100 * 2**20  # the safetensors format's own limit on the JSON header


def _listing(path) -> str:
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return "(folder unreadable)"
    if not names:
        return "(empty folder)"
    shown = ", ".join(names[:12])
    return shown + (f", ... ({len(names)} entries)" if len(names) > 12 else "")


def require_dir(path, what: str = "model_dir") -> str:
    p = os.fspath(path)
    if not os.path.isdir(p):
        raise ValueError(f"{what} must be a checkpoint folder (config.json + safetensors). Received {p!r}, "
                         f"which {'is a file' if os.path.exists(p) else 'does not exist'}")
    return p


def _read_json(fname: str) -> dict:
    try:
        with open(fname, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{fname}: not a readable JSON file ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{fname}: expected a JSON object. Received {type(d).__name__}")  # noqa: TRY004 (a bad file)
    return d


def read_config(path) -> dict:
    """config.json of a checkpoint folder as a dict (ValueError naming what the folder holds)."""
    p = require_dir(path)
    fname = os.path.join(p, "config.json")
    if not os.path.isfile(fname):
        raise ValueError(f"{p}: no config.json (a Hugging Face checkpoint folder has one). Found: {_listing(p)}")
    return _read_json(fname)


def read_generation_config(path) -> dict:
    fname = os.path.join(os.fspath(path), "generation_config.json")
    return _read_json(fname) if os.path.isfile(fname) else {}


def family(config: dict) -> str:
    """"gpt2", "llama" or "bert" for a config; ValueError naming what was found otherwise."""
    mt = config.get("model_type")
    for fam, types in SUPPORTED.items():
        if mt in types:
            return fam
    archs = config.get("architectures") or []
    if mt is None:
        for a in archs:
            for prefix, fam in _ARCH_PREFIX.items():
                if isinstance(a, str) and a.startswith(prefix):
                    return fam
    supported = ", ".join(t for ts in SUPPORTED.values() for t in ts)
    raise ValueError(f"unsupported architecture: config.json has model_type={mt!r}, architectures={archs!r}; "
                     f"pyaiml.llm reads model_type {supported}")


def _header(fname: str, blob: bytes | None = None):
    """(header dict, data start offset, file size) of a safetensors file (or of its decrypted
    bytes ``blob``), every tensor's declared extent checked against its shape, dtype and the
    file's size."""
    if blob is not None:
        size = len(blob)
        head = blob[:8]
    else:
        size = os.path.getsize(fname)
        with open(fname, "rb") as f:
            head = f.read(8)
    if len(head) < 8:
        raise ValueError(f"{fname}: not a safetensors file (only {size} bytes)")
    (n,) = struct.unpack("<Q", head)
    if n > _MAX_HEADER or 8 + n > size:
        raise ValueError(f"{fname}: safetensors header declares {n} bytes, but the file holds {size}")
    if blob is not None:
        raw = blob[8:8 + n]
    else:
        with open(fname, "rb") as f:
            f.seek(8)
            raw = f.read(n)
    try:
        hdr = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{fname}: safetensors header is not valid JSON ({e})") from None
    if not isinstance(hdr, dict):
        raise ValueError(f"{fname}: safetensors header must be a JSON object")  # noqa: TRY004 (a bad file)
    start = 8 + n
    for name, info in hdr.items():
        if name == "__metadata__":
            continue
        try:
            dt, shape, (a, b) = info["dtype"], info["shape"], info["data_offsets"]
            count = int(np.prod([int(s) for s in shape], dtype=np.int64)) if shape else 1
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{fname}: tensor {name!r} has a malformed header entry {info!r}") from None
        if dt not in _DTYPES:
            raise ValueError(f"{fname}: tensor {name!r} has dtype {dt}; pyaiml.llm reads {', '.join(_DTYPES)}")
        if any(int(s) < 0 for s in shape) or not (0 <= a <= b) or b - a != count * _DTYPES[dt][1] \
                or start + b > size:
            raise ValueError(f"{fname}: tensor {name!r} ({dt}, shape {shape}) declares bytes [{a}, {b}) that do not "
                             f"match its shape or lie beyond the file's {size - start} data bytes")
    return hdr, start, size


def _safetensors():
    try:
        import safetensors
    except ImportError:
        raise ImportError("pyaiml.llm reads weights with the 'safetensors' package: pip install 'pyaiml[llm]' "
                          "(or pip install safetensors)") from None
    return safetensors


def weight_files(path) -> list:
    """The safetensors files of a checkpoint folder, in shard order."""
    p = require_dir(path)
    single = os.path.join(p, "model.safetensors")
    index = os.path.join(p, "model.safetensors.index.json")
    if os.path.isfile(single):
        return [single]
    if os.path.isfile(index):
        wm = _read_json(index).get("weight_map")
        if not isinstance(wm, dict) or not wm:
            raise ValueError(f"{index}: 'weight_map' must be a non-empty object of tensor name -> shard file")
        files = []
        for shard in wm.values():
            if not isinstance(shard, str) or os.path.basename(shard) != shard:
                raise ValueError(f"{index}: shard names must be plain file names. Received {shard!r}")
            if shard not in files:
                files.append(shard)
        missing = [s for s in files if not os.path.isfile(os.path.join(p, s))]
        if missing:
            raise ValueError(f"{index} lists shard(s) {missing} that are not in the folder. Found: {_listing(p)}")
        return [os.path.join(p, s) for s in files]
    others = [n for n in sorted(os.listdir(p)) if n.endswith((".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5",
                                                               ".msgpack", ".ckpt"))]
    hint = ""
    if any(n.endswith((".bin", ".pt", ".pth", ".ckpt")) for n in others):
        hint = (" (PyTorch pickle files are never loaded; convert them once with transformers: "
                "model.save_pretrained(dir, safe_serialization=True))")
    raise ValueError(f"{p}: no model.safetensors or model.safetensors.index.json. Weight-like files found: "
                     f"{others or 'none'}{hint}")


def _bf16_to_f32(u16: np.ndarray) -> np.ndarray:
    return (u16.astype(np.uint32) << 16).view(np.float32)


def _sealed(fname: str) -> bool:
    from pyaiml.privacy.crypto import MAGIC

    with open(fname, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def _tensors_from_blob(fname, blob, hdr, start, names, out):
    """The tensors of a decrypted safetensors file held in memory."""
    for name, info in hdr.items():
        if name == "__metadata__" or (names is not None and name not in names):
            continue
        if name in out:
            raise ValueError(f"{fname}: tensor {name!r} appears in more than one shard")
        dt, shape, (a, b) = info["dtype"], [int(x) for x in info["shape"]], info["data_offsets"]
        t = np.frombuffer(blob, dtype=np.dtype(_DTYPES[dt][0]).newbyteorder("<"), count=(b - a) // _DTYPES[dt][1],
                          offset=start + a).reshape(shape)
        if dt == "BF16":
            t = _bf16_to_f32(t)
        elif t.dtype.kind == "f":
            t = t.astype(np.float32)
        else:
            t = t.astype(t.dtype.newbyteorder("="))
        out[name] = np.array(t, copy=True)


def load_tensors(path, names=None, key=None) -> tuple[dict, dict]:
    """All tensors of a checkpoint folder (or of one .safetensors file) as NumPy arrays.

    Floating tensors come back as float32 (bf16/f16/f64 converted), integer ones as stored.
    Returns (tensors, metadata of the first file). ``key``: for weight files encrypted by
    ``pyaiml llm quantize --key-file`` (AES-256-GCM, see pyaiml.privacy; decrypted in memory,
    never written out); an encrypted file without a key, or a plain one with a key, is a
    ValueError naming the file.
    """
    safetensors = _safetensors()
    p = os.fspath(path)
    files = [p] if os.path.isfile(p) else weight_files(p)
    out, meta = {}, None
    for fname in files:
        if key is not None or _sealed(fname):
            from pyaiml._io import plain_source

            blob = plain_source(fname, "pyaiml.llm.load", fname, key, "safetensors")
            hdr, start, _ = _header(fname, blob)
            if meta is None:
                meta = dict(hdr.get("__metadata__") or {})
            _tensors_from_blob(fname, blob, hdr, start, names, out)
            continue
        hdr, start, _ = _header(fname)
        if meta is None:
            meta = dict(hdr.get("__metadata__") or {})
        bf16 = {k for k, v in hdr.items() if k != "__metadata__" and v["dtype"] == "BF16"}
        with safetensors.safe_open(fname, framework="numpy") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open has keys() but is not iterable)
                if names is not None and name not in names:
                    continue
                if name in out:
                    raise ValueError(f"{fname}: tensor {name!r} appears in more than one shard")
                if name in bf16:
                    a, b = hdr[name]["data_offsets"]
                    raw = np.fromfile(fname, dtype="<u2", count=(b - a) // 2, offset=start + a)
                    out[name] = _bf16_to_f32(raw).reshape(hdr[name]["shape"])
                    continue
                t = f.get_tensor(name)
                if t.dtype.kind == "f" and t.dtype != np.float32:
                    t = t.astype(np.float32)
                out[name] = t
    return out, meta or {}
