"""Building blocks of the checkpoint graphs that are not GEMMs or attention: LayerNorm,
RMSNorm, the activations configs name, and rotary position embeddings (RoPE) with the
scaling variants Llama-family configs declare.

Shapes: ``x`` (..., C); norms and activations keep the shape. RoPE tables are (B, L, D/2)
for positions (B, L). Everything is float32 in, float32 out; the norms accumulate their
moments in float32 like the reference implementations (the ``norm`` op: csrc/cpu/norm.cpp).

RoPE scaling (``rope_parameters`` in transformers 5 configs, ``rope_theta`` +
``rope_scaling`` in older ones): ``default``, ``linear`` (frequencies / factor),
``dynamic`` (NTK-aware base growth once the sequence passes max_position_embeddings,
recomputed from the longest position of each call, as transformers does within one
generate call) and ``llama3`` (wavelength-banded smoothing). Other types (yarn, longrope,
...) are refused by :func:`rope_spec` with the type named.

Not here: the model graphs (pyaiml.llm.models). Tests: tests/test_llm_models.py compares
the whole graphs against transformers.
"""
from __future__ import annotations

import math

import numpy as np

from pyaiml import _backend, ops

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


class _Kernels:
    """The registry's implementations the model graphs call, resolved once per forward pass
    (``refresh``) rather than once per call: a decode step makes ~90 kernel calls, and each
    lookup reads PYAIML_BACKEND. The graphs' own float32 arrays go to them without the public
    ops' argument checks."""

    NAMES = ("gemm", "linear_f32_packed", "linear_q8", "linear_q8_packed", "linear_w8a8_packed", "norm", "gelu_tanh",
             "swiglu", "rope_qk")

    def __init__(self):
        self.key = object()

    def __getattr__(self, name):  # first use before any refresh
        if name in self.NAMES or name == "native_attention":
            self.refresh()
            return object.__getattribute__(self, name)
        raise AttributeError(name)

    def refresh(self):
        key = _backend._backend_env()
        if key != self.key:
            for name in self.NAMES:
                setattr(self, name, _backend.resolve(name))
            self.native_attention = (_backend.native() if _backend.chosen_backend("attention_forward") == "cpp"
                                     else None)
            self.key = key
        return self


KERNELS = _Kernels()

PANEL = 64  # output columns per panel of the in-memory weight layouts (float32 and int8)

# Bumped by every assignment to an attribute of a Linear or QLinear (their construction
# included): the decoder layer plans (pyaiml.llm.models) are remade when it moves.
WEIGHTS_VERSION = [0]


def weights_assigned(obj, name, value):
    """``obj.name = value`` for a Linear or QLinear, counted in WEIGHTS_VERSION."""
    object.__setattr__(obj, name, value)
    WEIGHTS_VERSION[0] += 1


def to_panels(a: np.ndarray) -> np.ndarray:
    """A 2-D (rows, n) array as panels of ``PANEL`` columns, ``p[j, k, c] = a[k, 64j + c]``
    (ceil(n / 64), rows, 64), columns past ``n`` zero: the layout the decode kernels stream
    (a thread's panels are one contiguous run of memory) and the GEMM reads in place."""
    rows, n = a.shape
    full, rest = divmod(n, PANEL)
    p = np.zeros((full + (rest > 0), rows, PANEL), dtype=a.dtype)
    if full:
        p[:full] = a[:, :full * PANEL].reshape(rows, full, PANEL).transpose(1, 0, 2)
    if rest:
        p[full, :, :rest] = a[:, full * PANEL:]
    return p


def from_panels(p: np.ndarray, n: int) -> np.ndarray:
    """(panels, rows, 64) -> the (rows, n) array :func:`to_panels` packed."""
    P, rows, _ = p.shape
    return np.ascontiguousarray(p.transpose(1, 0, 2).reshape(rows, P * PANEL)[:, :n])


def _norm(x: np.ndarray, w, b, eps: float, rms: bool) -> np.ndarray:
    # The model's own float32 activations and weights: straight to the registry's kernel
    # (pyaiml.ops.layer_norm / rms_norm validate their arguments on every call, which costs
    # more than normalising one decode row).
    x2 = x.reshape(-1, x.shape[-1])
    if x2.strides[-1] != x2.itemsize:
        x2 = np.ascontiguousarray(x2)
    return KERNELS.norm(x2, w, b, float(eps), rms).reshape(x.shape)


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    return _norm(x, w, b, eps, False)


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return _norm(x, w, None, eps, True)


def _gelu_tanh(x):
    return KERNELS.gelu_tanh(x)


def _gelu_erf(x):
    return ops.gelu(x)


def _silu(x):
    return x / (1.0 + np.exp(-x))


def _relu(x):
    return np.maximum(x, 0, dtype=x.dtype)


def _quick_gelu(x):
    return x / (1.0 + np.exp(-1.702 * x))


ACTIVATIONS = {
    "gelu_new": _gelu_tanh, "gelu_pytorch_tanh": _gelu_tanh, "gelu_fast": _gelu_tanh,
    "gelu": _gelu_erf, "silu": _silu, "swish": _silu, "relu": _relu, "quick_gelu": _quick_gelu,
}


def gated(act, x: np.ndarray, inter: int) -> np.ndarray:
    """act(x[..., :inter]) * x[..., inter:] (the gated MLP of Llama-family models); SiLU on the
    fused ``swiglu`` kernel."""
    if act is _silu:
        x2 = x.reshape(-1, 2 * inter)
        if x2.strides[-1] != x2.itemsize:
            x2 = np.ascontiguousarray(x2)
        return KERNELS.swiglu(x2).reshape(*x.shape[:-1], inter)
    return act(x[..., :inter]) * x[..., inter:]


def activation(name: str, where: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"{where}: activation {name!r} is not supported; supported: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class RopeSpec:
    """Everything needed to build RoPE tables for a config."""

    def __init__(self, rope_type, theta, dim, factor=1.0, max_pos=None, low=1.0, high=4.0, orig_max=None):
        self.rope_type, self.theta, self.dim = rope_type, float(theta), int(dim)
        self.factor, self.max_pos, self.low, self.high, self.orig_max = factor, max_pos, low, high, orig_max
        self._base_inv = self._inv_freq(self.theta)
        if rope_type == "linear":
            self._base_inv = self._base_inv / np.float32(factor)
        elif rope_type == "llama3":
            self._base_inv = self._llama3(self._base_inv)

    def _inv_freq(self, base):
        # float32 exponent as the reference computes it: arange(0, dim, 2) / dim in float32
        e = (np.arange(0, self.dim, 2, dtype=np.float32) / np.float32(self.dim)).astype(np.float64)
        return (1.0 / (np.float64(np.float32(base)) ** e)).astype(np.float32)

    def _llama3(self, inv):
        low_wl = self.orig_max / self.low
        high_wl = self.orig_max / self.high
        wl = (2 * math.pi / inv.astype(np.float64)).astype(np.float32)
        out = np.where(wl > low_wl, inv / np.float32(self.factor), inv)
        smooth = (self.orig_max / wl - self.low) / (self.high - self.low)
        smoothed = (1 - smooth) * out / np.float32(self.factor) + smooth * out
        medium = ~(wl < high_wl) & ~(wl > low_wl)
        return np.where(medium, smoothed, out).astype(np.float32)

    def inv_freq(self, seq_len: int) -> np.ndarray:
        if self.rope_type == "dynamic" and seq_len > self.max_pos:
            base = self.theta * ((self.factor * seq_len / self.max_pos) - (self.factor - 1)) ** (
                self.dim / (self.dim - 2))
            return self._inv_freq(base)
        return self._base_inv

    def tables(self, positions: np.ndarray):
        """cos, sin (B, L, D/2) float32 for integer positions (B, L)."""
        seq_len = int(positions.max()) + 1 if positions.size else 0
        inv = self.inv_freq(seq_len)
        ang = positions.astype(np.float32)[..., None] * inv  # float32 products, as the reference
        return np.cos(ang), np.sin(ang)


def rope_spec(cfg: dict, head_dim: int, where: str) -> RopeSpec:
    """RopeSpec of a Llama-family config (either config generation's layout)."""
    params = cfg.get("rope_parameters")
    if isinstance(params, dict) and "rope_type" not in params and any(isinstance(v, dict) for v in params.values()):
        raise ValueError(f"{where}: per-layer rope_parameters are not supported. Received {params!r}")
    if not isinstance(params, dict):
        params = dict(cfg.get("rope_scaling") or {})
        params.setdefault("rope_theta", cfg.get("rope_theta", 10000.0))
    rt = params.get("rope_type", params.get("type", "default")) or "default"
    theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
    prf = params.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
    if prf != 1.0:
        raise ValueError(f"{where}: partial_rotary_factor must be 1.0. Received {prf!r}")
    if rt not in ("default", "linear", "dynamic", "llama3"):
        raise ValueError(f"{where}: rope type {rt!r} is not supported; supported: default, linear, dynamic, llama3")
    factor = float(params.get("factor", 1.0))
    if rt != "default" and not factor >= 1.0:
        raise ValueError(f"{where}: rope factor must be >= 1. Received {factor!r}")
    max_pos = int(cfg.get("max_position_embeddings", 2048))
    orig = params.get("original_max_position_embeddings", max_pos)
    return RopeSpec(rt, theta, head_dim, factor, max_pos, float(params.get("low_freq_factor", 1.0)),
                    float(params.get("high_freq_factor", 4.0)), int(orig))
