"""int8 weight-only quantization with per-block scales (llama.cpp's Q8_0 scheme), in NumPy.

Scheme: along the input-features axis, every block of 32 weights shares one scale
``d = max|w| / 127`` (stored as float16, as Q8_0 does) and holds ``q = round(w / d)`` as
int8, so ``w ~ q * d``: 8.5 bits per weight instead of 32. Activations stay float32
("weight-only"). Quantized: every projection inside the transformer blocks and the output
head, also GPT-2's head tied to its token embedding (the embedding then reads its token rows
from the quantized head, dequantized); an untied token embedding, position embeddings, norms
and biases stay float32, and so does a Llama-family head tied to its embedding. A layer whose
input size is not a multiple of 32 stays float32.

Kernels: the ``linear_w8a8_packed`` op (csrc/cpu/gemv.cpp): in memory, a layer's int8 weights
and scales are packed in panels of 64 output columns (:func:`pack_q8`), so that each thread
streams one contiguous run of memory. At each product the layer's input is quantized the same
way, per row and block of 32 (``xs = max|x| / 127``, ``xq = rint(x / xs)``, as llama.cpp
quantizes activations for its Q8_0 products): each block's sum of products is then an exact
integer, taken with AVX-512 VNNI (``vpdpbusd``) where the CPU has it and in float32 elsewhere
(the same bits), and scaled by ``scale * xs``. The decode step and prefill take the same path,
so a row's result does not depend on how many rows share the call. ``QLinear(...,
activations="float")`` keeps float32 inputs (the ``linear_q8_packed`` op: the weights widened
in registers). Files keep the layout below.

File layout (``pyaiml llm quantize`` / :func:`save_quantized`): a normal checkpoint folder
whose ``model.safetensors`` carries the metadata ``{"format": "pyaiml-q8_0",
"block_size": "32"}``; each quantized tensor ``NAME`` (a checkpoint weight name, e.g.
``model.layers.0.mlp.up_proj.weight``) is replaced by ``NAME.q8`` (int8, the original
shape and layout) and ``NAME.q8_scale`` (float16, the original shape with the
input-features axis divided by 32: the last axis of a torch.nn.Linear (out, in) weight,
the first of GPT-2's Conv1D (in, out) weight). Every other tensor is stored as float32.
config.json, generation_config.json and the tokenizer files are copied unchanged.

Tests: tests/test_llm_quant.py (round trip error bound, logits KL against float32, file
layout, load of the written folder).
"""
from __future__ import annotations

import os
import shutil

import numpy as np

from pyaiml import ops as _ops  # noqa: F401 (registers the linear_q8 op)
from pyaiml.llm.layers import KERNELS, PANEL, from_panels, to_panels, weights_assigned

BLOCK = 32
FORMAT = "pyaiml-q8_0"


def quantize_q8_0(w: np.ndarray, axis: int = 0):
    """(q int8, scale float16) of a 2-D float weight, blocks of 32 along ``axis``."""
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"quantize_q8_0: w must be 2-D. Received shape {w.shape}")
    if w.shape[axis] % BLOCK:
        raise ValueError(f"quantize_q8_0: axis {axis} of w must be a multiple of {BLOCK}. Received shape {w.shape}")
    wk = np.moveaxis(w, axis, 0)  # (K, N)
    K, N = wk.shape
    blocks = wk.reshape(K // BLOCK, BLOCK, N)
    d = (np.abs(blocks).max(axis=1) / 127.0).astype(np.float16)  # (K/32, N)
    d32 = d.astype(np.float32)
    inv = np.divide(1.0, d32, out=np.zeros_like(d32), where=d32 > 0)
    q = np.clip(np.rint(blocks * inv[:, None, :]), -127, 127).astype(np.int8).reshape(K, N)
    return np.ascontiguousarray(np.moveaxis(q, 0, axis)), np.ascontiguousarray(np.moveaxis(d, 0, axis))


def dequantize_q8_0(q: np.ndarray, scale: np.ndarray, axis: int = 0) -> np.ndarray:
    qk = np.moveaxis(q, axis, 0)
    sk = np.moveaxis(np.asarray(scale, np.float32), axis, 0)
    K, N = qk.shape
    w = (qk.reshape(K // BLOCK, BLOCK, N).astype(np.float32) * sk[:, None, :]).reshape(K, N)
    return np.ascontiguousarray(np.moveaxis(w, 0, axis))


def pack_q8(q: np.ndarray, scale: np.ndarray):
    """(qp, sp): int8 ``q`` (in, out) and float16 ``scale`` (in/32, out) in panels of
    ``PANEL`` = 64 output columns, ``qp[p, k, c] = q[k, 64p + c]`` (panels, in, 64) and
    ``sp[p, b, c] = scale[b, 64p + c]`` (panels, in/32, 64), columns past ``out`` zero: the
    layout the int8 kernel streams (a thread's panels are one contiguous run of memory)."""
    q, scale = np.asarray(q), np.asarray(scale)
    if q.dtype != np.int8 or q.ndim != 2 or q.shape[0] % BLOCK:
        raise ValueError(f"pack_q8: q must be a 2-D int8 array (in, out) with in a multiple of {BLOCK}. Received "
                         f"{q.dtype} {q.shape}")
    K, N = q.shape
    if scale.shape != (K // BLOCK, N):
        raise ValueError(f"pack_q8: scale must have shape (in/{BLOCK}, out) = {(K // BLOCK, N)}. Received {scale.shape}")
    return to_panels(q), to_panels(scale.astype(np.float16))


def unpack_q8(qp: np.ndarray, sp: np.ndarray, n: int):
    """The (q, scale) that :func:`pack_q8` packed (``n`` output columns)."""
    return from_panels(qp, n), from_panels(sp, n)


class QLinear:
    """y = x @ (q * scale) + b: int8 weights (in, out) with float16 scales (in/32, out), held
    packed in panels of 64 columns (:func:`pack_q8`); ``q`` and ``scale`` give them back in
    their (in, out) layout. ``activations``: "int8" (default) quantizes x per row and block of
    32 at each call (the ``linear_w8a8_packed`` op), "float" keeps it float32."""

    __slots__ = ("activations", "b", "n", "qp", "sp")
    __setattr__ = weights_assigned  # counted: decode plans follow replaced arrays and activations

    def __init__(self, q: np.ndarray, scale: np.ndarray, b=None, activations: str = "int8"):
        if activations not in ("int8", "float"):
            raise ValueError(f"QLinear: activations must be 'int8' (quantized per block, as the weights) or 'float'. "
                             f"Received {activations!r}")
        self.activations = activations
        if q.dtype != np.int8 or q.ndim != 2 or q.shape[0] % BLOCK or scale.shape != (q.shape[0] // BLOCK, q.shape[1]):
            raise ValueError(f"QLinear: q must be int8 (in, out) with in a multiple of {BLOCK} and scale (in/{BLOCK}, "
                             f"out). Received q {q.dtype} {q.shape}, scale {scale.shape}")
        self.n = q.shape[1]
        self.qp, self.sp = pack_q8(q, np.asarray(scale, dtype=np.float16))
        self.b = b

    @classmethod
    def from_linear(cls, lin):
        q, s = quantize_q8_0(lin.wt, axis=0)
        return cls(q, s, lin.b)

    @property
    def q(self) -> np.ndarray:
        return from_panels(self.qp, self.n)

    @property
    def scale(self) -> np.ndarray:
        return from_panels(self.sp, self.n)

    @property
    def shape(self):
        return (self.qp.shape[1], self.n)

    @property
    def wt(self) -> np.ndarray:
        """The dequantized (in, out) float32 weight."""
        return dequantize_q8_0(*unpack_q8(self.qp, self.sp, self.n), axis=0)

    @property
    def nbytes(self) -> int:
        return self.qp.nbytes + self.sp.nbytes + (0 if self.b is None else self.b.nbytes)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        # The model's own activations (float32, finite by construction): straight to the
        # kernel, without ops.linear_q8's argument checks on every decode step.
        K = self.qp.shape[1]
        x2 = np.ascontiguousarray(x.reshape(-1, K), dtype=np.float32)
        f = KERNELS.linear_w8a8_packed if self.activations == "int8" else KERNELS.linear_q8_packed
        return f(x2, self.qp, self.sp, self.n, self.b).reshape(*x.shape[:-1], -1)

    def columns(self, ids: np.ndarray) -> np.ndarray:
        """Dequantized columns ``ids`` (any shape) as (..., in): the token rows of a tied
        embedding stored as this head."""
        ids = np.asarray(ids)
        p, c = ids // PANEL, ids % PANEL
        q = self.qp[p, :, c].astype(np.float32)  # (..., in)
        s = np.repeat(self.sp[p, :, c].astype(np.float32), BLOCK, axis=-1)
        return q * s


def quantize_model(model) -> int:
    """Replace the model's block projections (and an untied head) by QLinear, in place.
    Returns the number of layers quantized."""
    from pyaiml.llm.models import Linear, _ColumnEmbedding

    n = 0
    for d in model.layers:
        for k, v in d.items():
            if isinstance(v, Linear) and v.shape[0] % BLOCK == 0:
                d[k] = QLinear.from_linear(v)
                n += 1
    head = getattr(model, "head", None)
    tied = isinstance(getattr(model, "wte", None), _ColumnEmbedding)
    if isinstance(head, Linear) and head.shape[0] % BLOCK == 0:
        model.head = QLinear.from_linear(head)
        if tied:  # the token embedding is the head's columns: it reads them dequantized
            model.wte = _ColumnEmbedding(model.head)
        n += 1
    model.quantization = "q8_0"
    return n


def _input_axis(name: str, shape, conv1d_names) -> int:
    return 0 if name in conv1d_names else len(shape) - 1


def save_quantized(src, dst, key=None, src_key=None) -> dict:
    """Write a Q8_0 copy of checkpoint folder ``src`` into ``dst`` (see the module
    docstring for the layout), the weight file atomically. ``key``: encrypt the weight file
    (AES-256-GCM, pyaiml.privacy; config.json and the tokenizer files stay plain text);
    ``src_key``: the key of an encrypted ``src``. Returns {"quantized": n, "kept": n,
    "bytes": size}."""
    from safetensors.numpy import save

    from pyaiml._io import atomic_write
    from pyaiml.llm.checkpoint import family, load_tensors, read_config

    cfg = read_config(src)
    fam = family(cfg)
    tensors, meta = load_tensors(src, key=src_key)
    if meta.get("format") == FORMAT:
        raise ValueError(f"{src}: already quantized ({FORMAT})")
    src, dst = os.fspath(src), os.fspath(dst)
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ValueError("quantize: the output folder must differ from the input folder")
    os.makedirs(dst, exist_ok=True)
    if fam == "bert":
        raise ValueError("quantize: BERT encoders are not quantized (decoders only: gpt2, llama, mistral, qwen2)")
    block_markers = (".h.", "layers.")
    conv1d = {k for k in tensors if fam == "gpt2" and (".attn.c_" in k or ".mlp.c_" in k)}
    tied = cfg.get("tie_word_embeddings", fam == "gpt2")
    out, nq = {}, 0
    for name, t in tensors.items():
        is_proj = t.ndim == 2 and name.endswith(".weight") and any(m in name for m in block_markers) \
            and "norm" not in name and "ln_" not in name
        # GPT-2's tied head is its token embedding (wte, (V, C), blocks along C)
        is_head = (name == "lm_head.weight" and not tied) or (fam == "gpt2" and name.endswith("wte.weight")
                                                               and "lm_head.weight" not in tensors)
        if (is_proj or is_head) and t.dtype == np.float32:
            ax = _input_axis(name, t.shape, conv1d)
            if t.shape[ax] % BLOCK == 0:
                q, s = quantize_q8_0(t, axis=ax)
                out[name + ".q8"], out[name + ".q8_scale"] = q, s
                nq += 1
                continue
        out[name] = np.ascontiguousarray(t)
    fname = os.path.join(dst, "model.safetensors")
    data = save(out, metadata={"format": FORMAT, "block_size": str(BLOCK)})
    atomic_write(fname, lambda f: f.write(data), key=key, inner="safetensors", fsync=True)
    for extra in os.listdir(src):
        if extra.endswith(".json") and extra not in ("model.safetensors.index.json",) or extra.endswith(".jinja"):
            shutil.copy(os.path.join(src, extra), os.path.join(dst, extra))
    return {"quantized": nq, "kept": len(tensors) - nq, "bytes": os.path.getsize(fname)}


def load_quantized_tensors(tensors: dict, meta: dict, where: str) -> dict:
    """Checkpoint tensors with each ``NAME.q8`` / ``NAME.q8_scale`` pair turned into a
    ``(q, scale)`` tuple under ``NAME`` (the model constructors build QLinear from it)."""
    if str(meta.get("block_size", BLOCK)) != str(BLOCK):
        raise ValueError(f"{where}: {FORMAT} block_size must be {BLOCK}. Received {meta.get('block_size')!r}")
    out = {}
    for name, t in tensors.items():
        if name.endswith(".q8_scale"):
            continue
        if name.endswith(".q8"):
            base = name[:-3]
            s = tensors.get(base + ".q8_scale")
            if s is None:
                raise ValueError(f"{where}: {name} has no {base}.q8_scale beside it")
            if t.dtype != np.int8 or t.ndim != 2:
                raise ValueError(f"{where}: {name} must be a 2-D int8 tensor. Received {t.dtype} {t.shape}")
            out[base] = (t, s.astype(np.float16))
        else:
            out[name] = t
    return out

