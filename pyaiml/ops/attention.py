"""Scaled dot-product attention with ``torch.nn.functional`` semantics, and its backward.

``out = softmax(q k^T * scale + mask) v`` over the last two dimensions, (..., L, D) layout.
float32 runs on the registry's ``attention_forward`` / ``attention_backward`` ops (C++
flash-style kernels, Numba, or NumPy); float64 runs through the NumPy reference.

Semantics (matching torch where torch defines them):
- any number of leading dimensions; q (..., Lq, D), k (..., Lk, D), v (..., Lk, Dv); the
  leading dimensions of q, k and v must be equal (no broadcasting between them);
- ``enable_gqa=True``: dimension -3 is the head dimension; k and v may have fewer heads
  than q, dividing q's (q head h reads kv head h // (Hq // Hk));
- ``attn_mask``: bool (True = attend) or additive float, broadcastable to (..., Lq, Lk);
- ``is_causal``: top-left aligned, key j visible to query i iff j <= i (torch.tril of
  ones(Lq, Lk)); unlike torch, it may be combined with ``attn_mask`` (both must allow);
- ``scale`` defaults to 1 / sqrt(D);
- ``dropout_p > 0`` (with ``dropout_seed``): dropout on the attention probabilities, as
  torch's SDPA applies it: each probability is kept with probability 1 - p and scaled by
  1 / (1 - p). The keep mask is a pure function of (seed, shape, p): uniforms from NumPy's
  counter-based Philox generator keyed by the seed (:func:`dropout_keep_mask`), one per
  (leading dims, query, key) element in C order, kept where u >= p. The backward regenerates
  it from the same seed, so nothing of size Lq x Lk is kept between the passes.

Dropout path: an explicit composition, not the flash kernels (which have no dropout): the
(N, Hq, Lq, Lk) scores are formed with the registry's ``gemm`` (C++, Numba or NumPy, as for
matmul), masked, soft-maxed, dropped and multiplied by v with ``gemm`` again; the backward
recomputes the probabilities and applies dS = P * (dP - rowsum(P * dP)). It materialises the
score matrix (memory O(Lq * Lk) per head) and, unlike the flash path, does not skip masked
pairs, so NaN/inf in masked positions of v reach the result there. dropout_p = 0 takes the
flash path unchanged.

Documented results where torch gives NaN or raises:
- a query row with no visible key (all masked, or Lk = 0) gives a zero output row,
  lse = +inf and zero gradients;
- NaN/inf in q, k, v or grad_out are not rejected: values read only by masked pairs never
  reach the result; a NaN read by a visible pair propagates to the outputs and gradients
  that depend on it (the row of q, every row that sees the key, ...);
- Lq = 0 or an empty leading dimension gives empty results.

``attention_rows``: a batch whose rows have key/value sets of different lengths (each
decoding sequence's own KV cache, read in place): row n of q attends over keys[n] and
values[n] only, with no mask; every row gives the bits of a one-row
``scaled_dot_product_attention`` on its own arrays (the C++ op runs those same calls, one
row per thread-pool task; the other backends loop over the rows).

Tests: tests/test_attention.py, tests/test_attention_rows.py.
"""
from __future__ import annotations

import math

import numpy as np

from pyaiml import _backend
from pyaiml.ops._validate import as_array, float_dtype
from pyaiml.ops.linalg import _gemm3

_backend.register_op(
    "attention_forward",
    cpp="pyaiml.ops._native_attention:attention_forward",
    numba="pyaiml._numba.attention:attention_forward",
    numpy="pyaiml.reference.attention:attention_forward",
)
_backend.register_op(
    "attention_backward",
    cpp="pyaiml.ops._native_attention:attention_backward",
    numba="pyaiml._numba.attention:attention_backward",
    numpy="pyaiml.reference.attention:attention_backward",
)

_backend.register_op(
    "attention_forward_rows",
    cpp="pyaiml.ops._native_attention:attention_forward_rows",
    numba="pyaiml.ops.attention:_attention_rows_loop",
    numpy="pyaiml.ops.attention:_attention_rows_loop",
)

_OP = "scaled_dot_product_attention"
_SEED_MAX = 2**64


def _dropout_args(op, dropout_p, dropout_seed):
    """Checked (p float in [0, 1], seed int or None when p = 0)."""
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: dropout_p must be a real number in [0, 1]. Received {type(dropout_p).__name__}")
    p = float(dropout_p)
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError(f"{op}: dropout_p must lie in [0, 1]. Received {dropout_p!r}")
    if p == 0.0:
        return p, None
    if dropout_seed is None:
        raise ValueError(f"{op}: dropout_p={p} needs dropout_seed (an int in [0, 2**64)); the backward "
                         f"regenerates the dropout mask from it. Received dropout_seed=None")
    if isinstance(dropout_seed, bool) or not isinstance(dropout_seed, (int, np.integer)):
        raise TypeError(f"{op}: dropout_seed must be an int in [0, 2**64). Received {type(dropout_seed).__name__}")
    seed = int(dropout_seed)
    if not 0 <= seed < _SEED_MAX:
        raise ValueError(f"{op}: dropout_seed must lie in [0, 2**64). Received {seed}")
    return p, seed


def dropout_keep_mask(shape, dropout_p, dropout_seed) -> np.ndarray:
    """The attention-dropout keep mask of :func:`scaled_dot_product_attention`.

    Parameters
    ----------
    shape : tuple, (..., Lq, Lk): q's leading dimensions, Lq and Lk
    dropout_p : float in [0, 1]
    dropout_seed : int in [0, 2**64)

    Returns
    -------
    bool array of ``shape``: True where a probability is kept. Element e (C order) is kept
    iff u_e >= dropout_p, u_e the e-th float32 uniform of
    ``np.random.Generator(np.random.Philox(dropout_seed))``: the same seed and shape give the
    same mask on every machine and backend.
    """
    p, seed = _dropout_args("dropout_keep_mask", dropout_p, dropout_seed)
    shape = tuple(int(e) for e in shape)
    if p == 0.0:
        return np.ones(shape, dtype=bool)
    u = np.random.Generator(np.random.Philox(seed)).random(shape, dtype=np.float32)
    return u >= np.float32(p)


def _dropout_probs(p):
    """(P (N, Hq, Lq, Lk) without dropout, lse (N, Hq, Lq)) in p's dtype, scores by gemm."""
    N, Hq, Hk, Lq, Lk = p.N, p.Hq, p.Hk, p.Lq, p.Lk
    G = Hq // Hk
    q3 = p.q.reshape(N * Hk, G * Lq, p.D)
    k3 = p.k.reshape(N * Hk, Lk, p.D)
    s = _gemm3(q3, k3.transpose(0, 2, 1)).reshape(N, Hq, Lq, Lk)
    s *= p.dtype.type(p.scale)
    vis = None
    if p.mask is not None:
        if p.mask.dtype == np.bool_:
            vis = p.mask
        else:
            s += p.mask
            vis = p.mask != -np.inf
    if p.causal:
        tri = np.tri(Lq, Lk, dtype=bool)
        vis = tri if vis is None else vis & tri
    if vis is not None:
        s = np.where(vis, s, -np.inf)
    m = s.max(-1, keepdims=True)
    empty = m == -np.inf
    m = np.where(empty, 0, m)
    with np.errstate(under="ignore"):
        e = np.exp(s - m)
    l = e.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        P = np.where(empty, 0, e / np.where(empty, 1, l)).astype(p.dtype, copy=False)
        lse = np.where(empty, np.inf, m + np.log(np.where(empty, 1, l)))[..., 0].astype(p.dtype, copy=False)
    return P, lse


def _dropped(p, P, dropout_p, seed):
    """P * keep / (1 - dropout_p) and the keep mask, (N, Hq, Lq, Lk)."""
    keep = dropout_keep_mask(p.lead + (p.Lq, p.Lk), dropout_p, seed).reshape(P.shape)
    c = p.dtype.type(1.0 / (1.0 - dropout_p)) if dropout_p < 1.0 else p.dtype.type(0.0)
    return np.where(keep, P * c, p.dtype.type(0.0)), keep, c


def _dropout_forward(p, dropout_p, seed):
    P, lse = _dropout_probs(p)
    Pd, _, _ = _dropped(p, P, dropout_p, seed)
    G = p.Hq // p.Hk
    out = _gemm3(Pd.reshape(p.N * p.Hk, G * p.Lq, p.Lk), p.v.reshape(p.N * p.Hk, p.Lk, p.Dv))
    return out.reshape(p.N, p.Hq, p.Lq, p.Dv), lse


def _dropout_backward(p, g4, dropout_p, seed):
    P, _ = _dropout_probs(p)
    Pd, keep, c = _dropped(p, P, dropout_p, seed)
    G = p.Hq // p.Hk
    B3, M3 = p.N * p.Hk, G * p.Lq
    g3 = g4.reshape(B3, M3, p.Dv)
    v3 = p.v.reshape(B3, p.Lk, p.Dv)
    dv = _gemm3(Pd.reshape(B3, M3, p.Lk).transpose(0, 2, 1), g3)
    dP = _gemm3(g3, v3.transpose(0, 2, 1)).reshape(P.shape)
    dP = np.where(keep, dP * c, p.dtype.type(0.0))
    dS = P * (dP - (P * dP).sum(-1, keepdims=True))
    dS *= p.dtype.type(p.scale)
    dS3 = dS.reshape(B3, M3, p.Lk)
    dq = _gemm3(dS3, p.k.reshape(B3, p.Lk, p.D))
    dk = _gemm3(dS3.transpose(0, 2, 1), p.q.reshape(B3, M3, p.D))
    return dq.reshape(p.q.shape), dk.reshape(p.k.shape), dv.reshape(p.v.shape)


class _Prep:
    """Public arguments normalised to the registry's 4-D form."""

    def __init__(self, op, q, k, v, attn_mask, is_causal, scale, enable_gqa):
        q = as_array(q, op, "q")
        k = as_array(k, op, "k")
        v = as_array(v, op, "v")
        dts = {n: float_dtype(x, op, n) for n, x in (("q", q), ("k", k), ("v", v))}
        if len(set(dts.values())) > 1:
            got = ", ".join(f"{n}={d}" for n, d in dts.items())
            raise TypeError(f"{op}: q, k and v must have the same dtype (float32 or float64). Received {got}")
        self.dtype = q.dtype
        for n, x in (("q", q), ("k", k), ("v", v)):
            if x.ndim < 2:
                raise ValueError(f"{op}: {n} must be at least 2-D (..., L, D). Received shape {tuple(x.shape)}")
        if not (q.ndim == k.ndim == v.ndim):
            raise ValueError(
                f"{op}: q, k and v must have the same number of dimensions. Received q {tuple(q.shape)}, "
                f"k {tuple(k.shape)}, v {tuple(v.shape)}"
            )
        Lq, D = q.shape[-2:]
        Lk, Dk = k.shape[-2:]
        Lv, Dv = v.shape[-2:]
        if Dk != D:
            raise ValueError(f"{op}: q and k must have the same last dimension D. Received q {tuple(q.shape)}, k {tuple(k.shape)}")
        if Lv != Lk:
            raise ValueError(f"{op}: k and v must have the same length (dim -2). Received k {tuple(k.shape)}, v {tuple(v.shape)}")
        if D < 1 or Dv < 1:
            raise ValueError(f"{op}: head dims must be >= 1. Received q {tuple(q.shape)}, v {tuple(v.shape)}")
        if k.shape[:-2] != v.shape[:-2]:
            raise ValueError(f"{op}: k and v must have the same leading dimensions. Received k {tuple(k.shape)}, v {tuple(v.shape)}")
        lead = q.shape[:-2]
        klead = k.shape[:-2]
        if enable_gqa:
            if q.ndim < 3:
                raise ValueError(f"{op}: enable_gqa needs a head dimension (dim -3). Received q {tuple(q.shape)}")
            Hq, Hk = lead[-1], klead[-1]
            if lead[:-1] != klead[:-1] or Hk < 1 or Hq % Hk != 0:
                raise ValueError(
                    f"{op}: with enable_gqa, q, k, v must share the batch dimensions and k/v's heads (dim -3) "
                    f"must divide q's. Received q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
                )
        elif klead != lead:
            raise ValueError(
                f"{op}: q, k and v must have the same leading (batch, head) dimensions"
                f"{' (pass enable_gqa=True for fewer k/v heads)' if len(lead) == len(klead) and lead[:-1] == klead[:-1] else ''}. "
                f"Received q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
            )
        if scale is None:
            scale = 1.0 / math.sqrt(D)
        else:
            try:
                scale = float(scale)
            except OverflowError:  # an int beyond float range
                r = repr(scale)
                raise ValueError(f"{op}: scale must be finite. Received {r if len(r) <= 40 else r[:24] + '...'} "
                                 f"(an integer of {len(r)} digits, beyond float range)") from None
            except (TypeError, ValueError):
                raise TypeError(f"{op}: scale must be a number or None. Received {type(scale).__name__}") from None
            if not math.isfinite(scale):
                raise ValueError(f"{op}: scale must be finite. Received {scale}")
        self.scale = scale
        self.causal = bool(is_causal)
        self.lead, self.klead = lead, klead
        self.Lq, self.Lk, self.D, self.Dv = Lq, Lk, D, Dv
        N = int(np.prod(lead[:-1], dtype=np.int64)) if len(lead) > 1 else 1
        H = lead[-1] if lead else 1
        Hk = klead[-1] if klead else 1
        self.N, self.Hq, self.Hk = N, H, Hk
        self.empty = q.size == 0 or k.size == 0 or Lk == 0 or N * H == 0
        cast = np.float32 if self.dtype == np.float32 else np.float64
        self.q = np.ascontiguousarray(q, dtype=cast).reshape(N, H, Lq, D)
        self.k = np.ascontiguousarray(k, dtype=cast).reshape(N, Hk, Lk, D)
        self.v = np.ascontiguousarray(v, dtype=cast).reshape(N, Hk, Lk, Dv)
        self.mask = self._mask(op, attn_mask)

    def _mask(self, op, m):
        if m is None:
            return None
        m = as_array(m, op, "attn_mask")
        if m.dtype == np.bool_:
            pass
        elif m.dtype.kind == "f":
            m = m.astype(self.dtype, copy=False)
        else:
            raise TypeError(f"{op}: attn_mask must be bool (True = attend) or float (additive). Received {m.dtype}")
        full = self.lead + (self.Lq, self.Lk)
        try:
            bm = np.broadcast_to(m, full)
        except ValueError:
            raise ValueError(
                f"{op}: attn_mask must broadcast to {full} (q's leading dims, Lq, Lk). Received shape {tuple(m.shape)}"
            ) from None
        shape4 = (self.N, self.Hq, self.Lq, self.Lk)
        try:
            return np.reshape(bm, shape4, copy=False)
        except (ValueError, TypeError):
            # Leading dims whose broadcast strides do not merge into (N, Hq): materialise.
            return np.ascontiguousarray(bm).reshape(shape4)

    def impl(self, name):
        if self.dtype == np.float64:
            from pyaiml.reference import attention as ref

            return getattr(ref, name)
        return _backend.resolve(name)


_F32 = np.dtype(np.float32)


def _fast_forward(q, k, v, is_causal, scale):
    """(out, lse) straight from the C++ kernel for the common call (4-D C-contiguous float32
    ndarrays with equal (N, H), no mask, non-empty, the C++ backend chosen), else None.

    The general path costs 15-25 us of Python per call, 7-10% of a (1, 8, 128, 64) forward;
    this one does the same checks in a few attribute reads. Anything else (masks, GQA, other
    dtypes or layouts, bad input with its error message) takes the general path.
    """
    if not (type(q) is np.ndarray and type(k) is np.ndarray and type(v) is np.ndarray):
        return None
    if q.dtype != _F32 or k.dtype != _F32 or v.dtype != _F32 or q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        return None
    N, H, Lq, D = q.shape
    kN, kH, Lk, kD = k.shape
    vN, vH, vL, Dv = v.shape
    if not (kN == vN == N and kH == vH == H and kD == D and vL == Lk):
        return None
    if N * H * Lq * Lk * D * Dv == 0:
        return None
    if not (q.flags.c_contiguous and k.flags.c_contiguous and v.flags.c_contiguous):
        return None
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    elif type(scale) is not float or not math.isfinite(scale):
        return None
    backend, impl = _backend.chosen("attention_forward")
    if backend != "cpp":
        return None
    return impl(q, k, v, None, is_causal, scale)


def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False, return_lse=False, dropout_seed=None):
    """Attention ``softmax(q k^T * scale + mask) v`` (``torch.nn.functional`` semantics).

    Parameters
    ----------
    q : array (..., Lq, D)
    k : array (..., Lk, D)
    v : array (..., Lk, Dv)
    attn_mask : None or bool/float array broadcastable to (..., Lq, Lk)
    dropout_p : float in [0, 1], dropout on the attention probabilities (see the module notes)
    is_causal : bool, top-left aligned causal mask
    scale : float or None (1 / sqrt(D))
    enable_gqa : bool, k/v may have fewer heads (dim -3) than q
    return_lse : bool, also return the log-sum-exp of each query row (of the probabilities
        before dropout)
    dropout_seed : int in [0, 2**64), required when dropout_p > 0: the mask is
        :func:`dropout_keep_mask` of (q's leading dims, Lq, Lk); pass the same seed to the
        backward

    Returns
    -------
    out : array (..., Lq, Dv), q's dtype
    lse : array (..., Lq), q's dtype (only with return_lse); +inf for rows with no visible key
    """
    drop, seed = _dropout_args(_OP, dropout_p, dropout_seed) if dropout_p != 0.0 else (0.0, None)
    if attn_mask is None and not drop:
        r = _fast_forward(q, k, v, is_causal, scale)
        if r is not None:
            return r if return_lse else r[0]
    p = _Prep(_OP, q, k, v, attn_mask, is_causal, scale, enable_gqa)
    if p.empty:
        out = np.zeros((p.N, p.Hq, p.Lq, p.Dv), dtype=p.dtype)
        lse = np.full((p.N, p.Hq, p.Lq), np.inf, dtype=p.dtype)
    elif drop:
        out, lse = _dropout_forward(p, drop, seed)
    else:
        out, lse = p.impl("attention_forward")(p.q, p.k, p.v, p.mask, p.causal, p.scale)
    out = out.reshape(p.lead + (p.Lq, p.Dv))
    if return_lse:
        return out, lse.reshape(p.lead + (p.Lq,))
    return out


def scaled_dot_product_attention_backward(grad_out, q, k, v, attn_mask=None, is_causal=False, scale=None,
                                          enable_gqa=False, out=None, lse=None, dropout_p=0.0, dropout_seed=None):
    """Gradients of :func:`scaled_dot_product_attention` with respect to q, k and v.

    Parameters
    ----------
    grad_out : array (..., Lq, Dv)
    q, k, v, attn_mask, is_causal, scale, enable_gqa : as in the forward
    out : array (..., Lq, Dv) or None, the forward's output
    lse : array (..., Lq) or None, the forward's log-sum-exp (``return_lse=True``)
        With both given the forward is not recomputed (without dropout; the dropout path
        recomputes the probabilities and does not read them).
    dropout_p, dropout_seed : as given to the forward (same seed: same mask)

    Returns
    -------
    (grad_q (..., Lq, D), grad_k (..., Lk, D), grad_v (..., Lk, Dv)), q's dtype
    """
    op = "scaled_dot_product_attention_backward"
    drop, seed = _dropout_args(op, dropout_p, dropout_seed) if dropout_p != 0.0 else (0.0, None)
    p = _Prep(op, q, k, v, attn_mask, is_causal, scale, enable_gqa)
    g = as_array(grad_out, op, "grad_out")
    float_dtype(g, op, "grad_out")
    want = p.lead + (p.Lq, p.Dv)
    if g.shape != want:
        raise ValueError(f"{op}: grad_out must have shape {want} (q's leading dims, Lq, Dv). Received {tuple(g.shape)}")
    g4 = np.ascontiguousarray(g, dtype=p.dtype).reshape(p.N, p.Hq, p.Lq, p.Dv)
    o4 = l3 = None
    if (out is None) != (lse is None):
        raise ValueError(f"{op}: pass both out and lse (to skip the forward) or neither")
    if out is not None:
        out = as_array(out, op, "out")
        lse = as_array(lse, op, "lse")
        if out.shape != want:
            raise ValueError(f"{op}: out must have shape {want}. Received {tuple(out.shape)}")
        if lse.shape != p.lead + (p.Lq,):
            raise ValueError(f"{op}: lse must have shape {p.lead + (p.Lq,)}. Received {tuple(lse.shape)}")
        float_dtype(out, op, "out")
        float_dtype(lse, op, "lse")
        o4 = np.ascontiguousarray(out, dtype=p.dtype).reshape(p.N, p.Hq, p.Lq, p.Dv)
        l3 = np.ascontiguousarray(lse, dtype=p.dtype).reshape(p.N, p.Hq, p.Lq)
    if p.empty:
        dq = np.zeros(p.q.shape, dtype=p.dtype)
        dk = np.zeros(p.k.shape, dtype=p.dtype)
        dv = np.zeros(p.v.shape, dtype=p.dtype)
    elif drop:
        dq, dk, dv = _dropout_backward(p, g4, drop, seed)
    else:
        dq, dk, dv = p.impl("attention_backward")(g4, p.q, p.k, p.v, p.mask, p.causal, p.scale, o4, l3)
    return (dq.reshape(p.lead + (p.Lq, p.D)), dk.reshape(p.klead + (p.Lk, p.D)),
            dv.reshape(p.klead + (p.Lk, p.Dv)))


def _row_kv(x, op, name, D=None):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{op}: {name} must be a NumPy array. Received {type(x).__name__}")
    if x.ndim != 3:
        raise ValueError(f"{op}: {name} must be 3-D (heads, length, head dim). Received shape {tuple(x.shape)}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: {name} must have dtype float32 or float64. Received {x.dtype}")
    if D is not None and x.shape[2] != D:
        raise ValueError(f"{op}: {name} must have q's head dim {D}. Received shape {tuple(x.shape)}")
    return x


def _attention_rows_loop(q, keys, values, scale):
    """The Numba/NumPy form of attention_forward_rows: the chosen backend's one-row
    ``attention_forward`` per batch row (so each row has that call's bits)."""
    op = "attention_rows"
    impl = _backend.resolve("attention_forward")
    N, Hq, Lq, D = q.shape
    outs, lses = [], []
    for n in range(N):
        k = _row_kv(keys[n], op, f"keys[{n}]", D)
        v = _row_kv(values[n], op, f"values[{n}]")
        if k.shape[0] < 1 or Hq % k.shape[0] or v.shape[0] != k.shape[0] or v.shape[1] != k.shape[1]:
            raise ValueError(f"{op}: keys[{n}] and values[{n}] must have the same number of heads, dividing q's "
                             f"({Hq}), and the same length. Received {tuple(k.shape)} and {tuple(v.shape)}")
        if outs and v.shape[2] != outs[0].shape[-1]:
            raise ValueError(f"{op}: every values[i] must have the same head dim. Received {tuple(v.shape)} after "
                             f"a head dim of {outs[0].shape[-1]}")
        k = np.ascontiguousarray(k, dtype=q.dtype)[None]
        v = np.ascontiguousarray(v, dtype=q.dtype)[None]
        if k.shape[2] == 0:
            o = np.zeros((1, Hq, Lq, v.shape[3]), q.dtype)
            lse = np.full((1, Hq, Lq), np.inf, q.dtype)
        else:
            o, lse = impl(np.ascontiguousarray(q[n:n + 1]), k, v, None, False, scale)
        outs.append(o)
        lses.append(lse)
    if not outs:
        Dv = values[0].shape[-1] if len(values) else 0
        return np.zeros((0, Hq, Lq, Dv), q.dtype), np.zeros((0, Hq, Lq), q.dtype)
    return np.concatenate(outs), np.concatenate(lses)


def attention_rows(q, keys, values, scale=None):
    """Attention where each batch row has its own keys and values (of any length).

    ``out[n] = softmax(q[n] keys[n]^T * scale) values[n]``, no mask, not causal: the
    decode step of many sequences whose KV caches have different lengths, in one call.
    Each row gives the bits of ``scaled_dot_product_attention(q[n:n+1], keys[n][None],
    values[n][None], scale=scale)``, whatever the batch.

    Parameters
    ----------
    q : array (N, Hq, Lq, D), float32 or float64
    keys : sequence of N arrays (Hk_n, L_n, D); Hk_n divides Hq (grouped-query attention);
        views whose rows are contiguous (a cache (H, Tmax, D) sliced to [:, :L]) are read
        in place by the C++ backend
    values : sequence of N arrays (Hk_n, L_n, Dv), the same Dv for every row
    scale : float or None (1 / sqrt(D))

    Returns
    -------
    out : array (N, Hq, Lq, Dv), q's dtype; a row with L_n = 0 is zeros
    """
    op = "attention_rows"
    q = as_array(q, op, "q")
    dt = float_dtype(q, op, "q")
    if q.ndim != 4:
        raise ValueError(f"{op}: q must be 4-D (batch, heads, queries, head dim). Received shape {tuple(q.shape)}")
    N, _, _, D = q.shape
    if not all(isinstance(v, (list, tuple)) for v in (keys, values)):
        raise TypeError(f"{op}: keys and values must be sequences (lists) of per-row arrays. Received "
                        f"{type(keys).__name__} and {type(values).__name__}")
    if len(keys) != N or len(values) != N:
        raise ValueError(f"{op}: keys and values must hold one array per batch row of q ({N}). Received "
                         f"{len(keys)} and {len(values)}")
    if scale is None:
        scale = 1.0 / math.sqrt(D) if D else 1.0
    elif isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(scale)):
        raise ValueError(f"{op}: scale must be a finite number or None. Received {scale!r}")
    scale = float(scale)
    if D == 0:
        raise ValueError(f"{op}: q's head dim must be >= 1. Received shape {tuple(q.shape)}")
    if dt == np.float64:
        return _attention_rows_loop_ref(q, keys, values, scale)
    if not q.flags.c_contiguous:
        q = np.ascontiguousarray(q)
    return _backend.resolve("attention_forward_rows")(q, keys, values, scale)[0]


def _attention_rows_loop_ref(q, keys, values, scale):
    from pyaiml.reference.attention import attention_forward as ref

    outs = []
    for n in range(q.shape[0]):
        k = _row_kv(keys[n], "attention_rows", f"keys[{n}]", q.shape[3])
        v = _row_kv(values[n], "attention_rows", f"values[{n}]")
        outs.append(ref(q[n:n + 1], np.asarray(k, np.float64)[None], np.asarray(v, np.float64)[None], None, False,
                        scale)[0])
    return np.concatenate(outs) if outs else np.zeros(q.shape[:3] + (0,), q.dtype)
