"""The three checkpoint families as NumPy graphs on pyaiml.ops: GPT-2, Llama (also Mistral
and Qwen2 configs) and BERT.

Every matrix product is one kernel call on the layer's weights (:class:`Linear`: the GEMM for
prefill, a streaming GEMV for up to 8 rows of decode; int8 layers: pyaiml.llm.quant) and
every attention is pyaiml's attention kernel over a preallocated
:class:`~pyaiml.llm.cache.KVCache`. Float32 weights are held (in, out) in panels of 64 output
columns: the decode GEMV streams each thread's panels as one run of memory and the GEMM reads
them in place (an (in, out) weight ran 1.8-2.2x faster than (out, in) on a (768, 2304) weight,
M = 1..128; the panels another 3-10% at decode, same bits); query/key/value projections are
fused into one product per layer, and so are Llama's gate and up projections. A tied output head keeps one (C, V) copy of the embedding and reads token
rows from its columns.

A decode step (one new token per sequence) runs each layer as one native call: a
``_C.DecoderLayerPlan`` made from the layer's weights at the first decode step (norm, qkv
product, RoPE, the new k and v into the cache, attention, output product and residual, norm,
MLP and residual: the kernels the layer-by-layer graph calls, in its order, so the same bits);
layers the plan does not take (another activation, a sliding-window layer past its window)
run the graph below. Python between the kernels had cost about 0.5 ms of a 9 ms Llama-110M
step.

- GPT-2: learned positions, LayerNorm, GELU (``activation_function``), Conv1D-style fused
  QKV (stored (in, out) already), ``scale_attn_weights`` and
  ``scale_attn_by_inverse_layer_idx``.
- Llama family: RoPE (:mod:`pyaiml.llm.layers`), RMSNorm, SwiGLU, grouped-query attention,
  optional biases (``attention_bias``, Qwen2's q/k/v biases, ``mlp_bias``), explicit
  ``head_dim``, sliding windows (``sliding_window`` with ``use_sliding_window`` /
  ``layer_types``).
- BERT: absolute positions, token types, post-LayerNorm encoder, key padding masks, the
  pooler (tanh dense on [CLS]) and masked mean embeddings.

Positions: a sequence's position ids count its own real tokens, so left padding in a batch
changes nothing for the padded sequence. Not here: sampling and the generation loop
(pyaiml.llm.generate), file reading (pyaiml.llm.checkpoint). Tests:
tests/test_llm_models.py (logits against transformers within 1e-4, padding, errors).
"""
from __future__ import annotations

import math

import numpy as np

from pyaiml import ops
from pyaiml.llm.cache import KVCache
from pyaiml.llm.layers import (
    ACTIVATIONS,
    KERNELS,
    PANEL,
    WEIGHTS_VERSION,
    activation,
    from_panels,
    gated,
    layer_norm,
    rms_norm,
    rope_spec,
    to_panels,
    weights_assigned,
)

# A decode step's attention as one native call (DecoderLM._decode_attend), and a whole layer
# (float32 or int8 products) of a decode step as one (_C.DecoderLayerPlan, DecoderLM._decode_plans); False takes
# them apart into the separate calls, which the tests compare bit for bit.
FUSED_DECODE_ATTENTION = True
FUSED_DECODE_LAYER = True


class Linear:
    """y = x @ W + b with W (in, out) float32, held in panels of 64 output columns
    (:func:`~pyaiml.llm.layers.to_panels`): each thread of the decode step streams one
    contiguous run of memory, and the prefill GEMM reads the same panels in place. ``wt``
    gives W back in its (in, out) layout (a copy)."""

    __slots__ = ("b", "n", "wp")
    __setattr__ = weights_assigned  # counted: decode plans follow replaced arrays

    def __init__(self, wt: np.ndarray, b=None):
        wt = np.asarray(wt, dtype=np.float32)
        if wt.ndim != 2:
            raise ValueError(f"Linear: the weight must be 2-D (in, out). Received shape {wt.shape}")
        self.n = wt.shape[1]
        self.wp = to_panels(wt)
        self.b = None if b is None else np.ascontiguousarray(b, dtype=np.float32)

    @classmethod
    def from_torch(cls, w_out_in, b=None):
        """From torch.nn.Linear's (out, in) layout."""
        return cls(np.asarray(w_out_in, dtype=np.float32).T, b)

    @property
    def wt(self) -> np.ndarray:
        return from_panels(self.wp, self.n)

    @property
    def shape(self):
        return (self.wp.shape[1], self.n)

    @property
    def nbytes(self) -> int:
        return self.wp.nbytes + (0 if self.b is None else self.b.nbytes)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        # The model's own float32 activations: straight to the kernel (up to 8 rows the
        # streaming GEMV, more the GEMM), without ops.linear's per-call argument checks.
        K = self.wp.shape[1]
        x2 = np.ascontiguousarray(x.reshape(-1, K))
        return KERNELS.linear_f32_packed(x2, self.wp, self.n, self.b).reshape(*x.shape[:-1], -1)

    def columns(self, ids: np.ndarray) -> np.ndarray:
        """Columns ``ids`` (any shape) as (..., in): the token rows of a tied embedding
        stored as this head."""
        ids = np.asarray(ids)
        return self.wp[ids // PANEL, :, ids % PANEL]


def _plan_weights(lin):
    """A product's weights as _C.DecoderLayerPlan takes them: a Linear's float32 panels, a
    QLinear's (int8 panels, float16 scales, activations); None for anything else."""
    if isinstance(lin, Linear):
        return lin.wp
    qp = getattr(lin, "qp", None)
    return None if qp is None else (qp, lin.sp, lin.activations)


def _cat_linear(parts):
    """One Linear (or QLinear, when every part is one) computing the concatenation of
    several that share the input."""
    bs = [p.b for p in parts]
    if all(b is None for b in bs):
        b = None
    else:
        b = np.concatenate([np.zeros(p.shape[1], np.float32) if p.b is None else p.b for p in parts])
    if all(not isinstance(p, Linear) for p in parts):
        from pyaiml.llm.quant import QLinear

        return QLinear(np.concatenate([p.q for p in parts], axis=1), np.concatenate([p.scale for p in parts], axis=1),
                       b)
    return Linear(np.concatenate([p.wt for p in parts], axis=1), b)


def _head(t, where, V, C):
    """The output head from 'lm_head.weight': float (V, C) or quantized (q, scale)."""
    if isinstance(t, tuple):
        from pyaiml.llm.quant import BLOCK, QLinear

        q, s = t
        if q.shape != (V, C) or s.shape != (V, C // BLOCK):
            raise ValueError(f"{where}: quantized lm_head.weight has shapes {q.shape} / {s.shape}; expected {(V, C)}")
        return QLinear(q.T, s.T)
    if t.shape != (V, C):
        raise ValueError(f"{where}: lm_head.weight has shape {t.shape}; expected {(V, C)}")
    return Linear.from_torch(t)


class Weights:
    """Checkpoint tensors with a name prefix stripped, popped as they are used, so that
    an unknown or missing tensor is reported by name."""

    def __init__(self, tensors: dict, prefix: str, where: str):
        self.t = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        self.where = where

    def take(self, name: str, shape=None, optional=False):
        if name not in self.t:
            if optional:
                return None
            near = sorted(self.t)[:8]
            raise ValueError(f"{self.where}: missing tensor {name!r} in the checkpoint (first names present: {near})")
        a = self.t.pop(name)
        if isinstance(a, tuple):
            raise ValueError(  # noqa: TRY004 (a bad file)
                f"{self.where}: tensor {name!r} is stored quantized (.q8), but pyaiml.llm reads it only as float")
        if shape is not None and tuple(a.shape) != tuple(shape):
            raise ValueError(f"{self.where}: tensor {name!r} has shape {tuple(a.shape)}; config.json implies "
                             f"{tuple(shape)}")
        return a

    def linear(self, name: str, n_in: int, n_out: int, bias: bool = True, torch_layout: bool = True) -> Linear:
        """weight (out, in) (torch.nn.Linear) or (in, out) (GPT-2's Conv1D), and a bias
        when the config says there is one."""
        shape = (n_out, n_in) if torch_layout else (n_in, n_out)
        v = self.t.get(f"{name}.weight")
        if isinstance(v, tuple):  # int8 + scales (pyaiml.llm.quant)
            from pyaiml.llm.quant import BLOCK, QLinear

            q, s = self.t.pop(f"{name}.weight")
            sshape = (n_out, n_in // BLOCK) if torch_layout else (n_in // BLOCK, n_out)
            if q.shape != shape or s.shape != sshape:
                raise ValueError(f"{self.where}: quantized tensor {name!r}.weight has shapes {q.shape} / scales "
                                 f"{s.shape}; config.json implies {shape} / {sshape}")
            b = self.take(f"{name}.bias", (n_out,)) if bias else None
            return QLinear(q.T, s.T, b) if torch_layout else QLinear(q, s, b)
        w = self.take(f"{name}.weight", shape)
        b = self.take(f"{name}.bias", (n_out,)) if bias else None
        return Linear.from_torch(w, b) if torch_layout else Linear(w, b)


def _find_prefix(tensors: dict, probe: str, candidates) -> str:
    for p in candidates:
        if p + probe in tensors:
            return p
    return ""


def _cfg_int(cfg, where, *names, default=None):
    for n in names:
        if n in cfg and cfg[n] is not None:
            v = cfg[n]
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{where}: config.json '{n}' must be a positive int. Received {v!r}")
            return v
    if default is not None:
        return default
    raise ValueError(f"{where}: config.json has none of {list(names)}")


class _Step:
    """Per-forward attention context: cache slots, masks, positions."""

    def __init__(self, cache: KVCache, valid: np.ndarray, window=None):
        B, L = valid.shape
        if B != cache.batch:
            raise ValueError(f"forward: ids have batch {B}; the cache was made for {cache.batch}")
        self.cache = cache
        self.start = s = cache.reserve(L)
        cache.valid[:, s:s + L] = valid
        pos = cache.next_pos[:, None] + np.cumsum(valid, axis=1) - 1
        self.positions = np.where(valid, pos, 0)
        cache.next_pos += valid.sum(axis=1)
        T = s + L
        self.T = T
        kv = cache.valid[:, :T]
        all_valid = bool(kv.all())
        self.causal = False
        self.full_mask = None
        if all_valid and s == 0:
            self.causal = True  # Lq == Lk: top-left aligned causal is the usual one
        elif not (all_valid and L == 1):
            j = np.arange(T)
            vis = j[None, :] <= (s + np.arange(L))[:, None]  # (L, T)
            self.full_mask = kv[:, None, None, :] & vis[None, None]
        # one new token per sequence: the fused decode attention (DecoderLM._decode_attend),
        # which masks with the cache's valid slots when some are padding
        self.decode = L == 1
        self.valid_arg = None if all_valid else cache.valid
        self.window_mask = None
        if window is not None and T > window:
            j = np.arange(T)
            i = s + np.arange(L)
            vis = (j[None, :] <= i[:, None]) & (i[:, None] - j[None, :] < window)
            self.window_mask = kv[:, None, None, :] & vis[None, None]

    def mask(self, sliding: bool):
        if sliding and self.window_mask is not None:
            return self.window_mask, False
        return self.full_mask, self.causal


class DecoderLM:
    """A causal language model of one of the supported families, ready to generate.

    Attributes: ``config`` (config.json as a dict), ``tokenizer`` (or None when the folder
    has no tokenizer.json), ``family``, ``num_layers``, ``num_heads``, ``num_kv_heads``,
    ``head_dim``, ``hidden_size``, ``vocab_size``, ``max_positions`` (None: not bounded by
    the weights), ``eos_token_ids``.
    """

    family = ""

    def __init__(self, config: dict, tokenizer=None, generation_config=None, path=None):
        self.config = config
        self.tokenizer = tokenizer
        self.path = path
        self.generation_config = dict(generation_config or {})
        eos = self.generation_config.get("eos_token_id", config.get("eos_token_id"))
        if eos is None and tokenizer is not None:
            eos = tokenizer.eos_token_ids
        self.eos_token_ids = [] if eos is None else [int(e) for e in (eos if isinstance(eos, list) else [eos])]
        pad = self.generation_config.get("pad_token_id", config.get("pad_token_id"))
        if pad is None and tokenizer is not None:
            pad = tokenizer.pad_token_id
        if pad is None:
            pad = self.eos_token_ids[0] if self.eos_token_ids else 0
        self.pad_token_id = int(pad)
        self.window = None
        self.sliding_layers = None
        self.quantization = None

    def quantize(self, scheme: str = "q8_0") -> int:
        """Quantize the block projections (and an untied head) to int8 in place
        (pyaiml.llm.quant); returns the number of layers converted."""
        if scheme != "q8_0":
            raise ValueError(f"quantize: scheme must be 'q8_0'. Received {scheme!r}")
        from pyaiml.llm.quant import quantize_model

        return quantize_model(self)

    # -- graph pieces each family provides -----------------------------------------------
    def _embed(self, ids, positions):
        raise NotImplementedError

    def _block(self, i, h, step):
        raise NotImplementedError

    def _head(self, h):
        raise NotImplementedError

    def weights_nbytes(self) -> int:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------
    def new_cache(self, batch: int, max_len: int) -> KVCache:
        if self.max_positions is not None and max_len > self.max_positions:
            raise ValueError(f"{self.family}: {max_len} tokens exceed the model's {self.max_positions} positions "
                             "(n_positions / max_position_embeddings in config.json)")
        return KVCache(self.num_layers, batch, self.num_kv_heads, max_len, self.head_dim)

    def _attend(self, li, q, k, v, step: _Step, scale=None):
        """q (B, L, H, D), k/v (B, L, Hk, D) of the new tokens -> (B, L, H*D)."""
        c = step.cache
        s, L = step.start, q.shape[1]
        c.k[li, :, :, s:s + L] = k.transpose(0, 2, 1, 3)
        c.v[li, :, :, s:s + L] = v.transpose(0, 2, 1, 3)
        sliding = self.sliding_layers is not None and self.sliding_layers[li]
        mask, causal = step.mask(sliding)
        K = c.k[li, :, :, :step.T]
        V = c.v[li, :, :, :step.T]
        B = q.shape[0]
        if KERNELS.native_attention is not None:
            # the cache views go to the kernel as they are (rows contiguous, heads Tmax * D
            # apart): no copy of the cache per layer and token
            H = self.num_heads
            m = None if mask is None else np.broadcast_to(mask, (B, H, L, step.T))
            o, _ = KERNELS.native_attention.attention_forward(
                np.ascontiguousarray(q.transpose(0, 2, 1, 3)), K, V, m, causal,
                1.0 / math.sqrt(self.head_dim) if scale is None else float(scale), False)
            return o.transpose(0, 2, 1, 3).reshape(B, L, -1)
        o = ops.scaled_dot_product_attention(q.transpose(0, 2, 1, 3), K, V, attn_mask=mask, is_causal=causal,
                                             scale=scale, enable_gqa=self.num_kv_heads != self.num_heads)
        return o.transpose(0, 2, 1, 3).reshape(B, L, -1)

    _plans = None  # per layer: a native plan of the layer's decode step, or None
    _plan_src = None  # (WEIGHTS_VERSION, per layer the ids of its dict's values) of the plans
    _rope = False  # the layers take RoPE tables (self._cos, self._sin) of the step

    def _layer_plan(self, i):
        """The native plan (_C.DecoderLayerPlan) of layer i's decode step, or None where the
        layer has other parts than the plan runs (another activation or kind of product)."""
        return

    def _decode_plans(self):
        """The layers' plans, made at the first decode step and again after a layer's weights
        were swapped: a value of ``self.layers`` replaced (quantize, a new Linear), or any
        attribute of a Linear or QLinear assigned (``lin.wp = ...``, a QLinear's
        ``activations``; WEIGHTS_VERSION). Weights changed in place need nothing: the plans
        read the arrays themselves."""
        src = (WEIGHTS_VERSION[0], [tuple(map(id, d.values())) for d in self.layers])
        if self._plans is None or src != self._plan_src:
            plans = []
            for i in range(self.num_layers):
                try:
                    plans.append(self._layer_plan(i))
                except ValueError:  # shapes the plan does not take: the layer-by-layer path
                    plans.append(None)
            self._plans, self._plan_src = plans, src
            self._plan_keep = [tuple(d.values()) for d in self.layers]  # no id reused while the plans stand
        return self._plans

    def _decode_attend(self, li, qkv, step: _Step, scale=None, rope=True):
        """A decode step's attention for layer ``li`` in one native call (RoPE of q and k when
        ``rope``, the new k and v into the cache, attention over the cache in place): qkv (B,
        1, W) with q, k, v side by side -> (B, 1, H*D). None where it does not apply (more
        than one new token, no native kernels, a sliding-window layer past its window): the
        caller then takes the step apart itself. Same bits either way (tests)."""
        na = KERNELS.native_attention
        if na is None or not step.decode or not FUSED_DECODE_ATTENTION:
            return None
        if step.window_mask is not None and self.sliding_layers is not None and self.sliding_layers[li]:
            return None
        c = step.cache
        cs = (self._cos, self._sin) if rope else (None, None)
        return na.decode_attention(qkv, c.k, c.v, li, step.start, self.num_heads, self.num_kv_heads,
                                   1.0 / math.sqrt(self.head_dim) if scale is None else float(scale), *cs,
                                   step.valid_arg)

    def forward(self, ids, cache: KVCache, valid=None, last_only: bool = False) -> np.ndarray:
        """Logits for new tokens ``ids`` (B, L) appended to ``cache``.

        valid (B, L) bool: False marks left padding (default: all real). Returns (B, L, V)
        float32, or (B, V) for the last position only with ``last_only``.
        """
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise ValueError(f"forward: ids must be a 2-D integer array (B, L). Received {ids.dtype} {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"forward: token ids must lie in [0, {self.vocab_size}). Received "
                             f"min {ids.min()}, max {ids.max()}")
        valid = np.ones(ids.shape, bool) if valid is None else np.asarray(valid, bool)
        if valid.shape != ids.shape:
            raise ValueError(f"forward: valid must have ids' shape {ids.shape}. Received {valid.shape}")
        step = _Step(cache, valid, self.window)
        KERNELS.refresh()
        h = self._embed(ids, step.positions)
        plans = (self._decode_plans() if step.decode and FUSED_DECODE_LAYER and KERNELS.native_attention is not None
                 else None)
        past_window = step.window_mask is not None and self.sliding_layers is not None
        c = step.cache
        cs = (self._cos, self._sin) if self._rope else (None, None)
        for i in range(self.num_layers):
            p = None if plans is None or (past_window and self.sliding_layers[i]) else plans[i]
            if p is None:
                h = self._block(i, h, step)
                continue
            B = h.shape[0]
            h = p.run(np.ascontiguousarray(h.reshape(B, -1)), c.k, c.v, i, step.start, *cs,
                      step.valid_arg).reshape(B, 1, -1)
        if last_only:
            h = h[:, -1:]
        out = self._head(h)
        return out[:, 0] if last_only else out

    def logits(self, ids, attention_mask=None) -> np.ndarray:
        """Logits (B, L, V) of whole sequences, no cache kept. ``attention_mask`` (B, L),
        1 = real token, 0 = left padding (as transformers takes it)."""
        ids = np.asarray(ids)
        if ids.ndim == 1:
            ids = ids[None]
        valid = None if attention_mask is None else np.asarray(attention_mask).reshape(ids.shape).astype(bool)
        if valid is not None:
            for b in range(ids.shape[0]):
                real = np.flatnonzero(valid[b])
                if real.size and not valid[b, real[0]:].all():
                    raise ValueError("logits: attention_mask must be left padding (zeros, then ones) in every row. "
                                     f"Received row {b}: {valid[b].astype(int).tolist()}")
        with ops.finite_checks(False):
            return self.forward(ids.astype(np.int64), self.new_cache(ids.shape[0], ids.shape[1]), valid)

    # generation (pyaiml.llm.generate)
    def generate(self, prompt, max_new_tokens: int = 64, **kw):
        from pyaiml.llm.generate import generate

        return generate(self, prompt, max_new_tokens=max_new_tokens, **kw)

    def stream(self, prompt, max_new_tokens: int = 64, **kw):
        from pyaiml.llm.generate import stream

        return stream(self, prompt, max_new_tokens=max_new_tokens, **kw)

    def chat(self, messages, max_new_tokens: int = 256, **kw):
        from pyaiml.llm.generate import chat

        return chat(self, messages, max_new_tokens=max_new_tokens, **kw)

    def __repr__(self):
        return (f"<pyaiml.llm {type(self).__name__} {self.config.get('model_type')}: {self.num_layers} layers, "
                f"{self.num_heads} heads ({self.num_kv_heads} kv), width {self.hidden_size}, vocab {self.vocab_size}, "
                f"{self.weights_nbytes() / 2**20:.1f} MiB of weights>")


class _ColumnEmbedding:
    """Token rows read from the columns of the tied output head (a Linear's (C, V) weight, or
    a quantized head's, dequantized)."""

    def __init__(self, head):
        self.head = head

    def __getitem__(self, ids):
        return self.head.columns(ids)


class GPT2(DecoderLM):
    family = "gpt2"

    def __init__(self, config, tensors, **kw):
        super().__init__(config, **kw)
        w = "gpt2"
        C = self.hidden_size = _cfg_int(config, w, "n_embd", "hidden_size")
        L = self.num_layers = _cfg_int(config, w, "n_layer", "num_hidden_layers")
        H = self.num_heads = self.num_kv_heads = _cfg_int(config, w, "n_head", "num_attention_heads")
        if C % H:
            raise ValueError(f"{w}: n_embd {C} is not divisible by n_head {H}")
        self.head_dim = C // H
        V = self.vocab_size = _cfg_int(config, w, "vocab_size")
        P = self.max_positions = _cfg_int(config, w, "n_positions", "max_position_embeddings")
        inner = config.get("n_inner") or 4 * C
        self.eps = float(config.get("layer_norm_epsilon", 1e-5))
        self.act = activation(config.get("activation_function", "gelu_new"), w)
        if config.get("add_cross_attention"):
            raise ValueError(f"{w}: add_cross_attention=true (an encoder-decoder GPT-2) is not supported")
        self.scale = []
        for i in range(L):
            s = self.head_dim ** -0.5 if config.get("scale_attn_weights", True) else 1.0
            if config.get("scale_attn_by_inverse_layer_idx", False):
                s /= float(i + 1)
            self.scale.append(s)
        pre = _find_prefix(tensors, "wte.weight", ("transformer.", "", "model."))
        W = Weights(tensors, pre, w)
        qwte = W.t.pop("wte.weight") if isinstance(W.t.get("wte.weight"), tuple) else None
        wte = None if qwte is not None else W.take("wte.weight", (V, C))
        self.wpe = np.ascontiguousarray(W.take("wpe.weight", (P, C)))
        self.layers = []
        for i in range(L):
            p = f"h.{i}."
            self.layers.append({
                "ln1": (W.take(p + "ln_1.weight", (C,)), W.take(p + "ln_1.bias", (C,))),
                "qkv": W.linear(p + "attn.c_attn", C, 3 * C, torch_layout=False),
                "proj": W.linear(p + "attn.c_proj", C, C, torch_layout=False),
                "ln2": (W.take(p + "ln_2.weight", (C,)), W.take(p + "ln_2.bias", (C,))),
                "fc": W.linear(p + "mlp.c_fc", C, inner, torch_layout=False),
                "fc_proj": W.linear(p + "mlp.c_proj", inner, C, torch_layout=False),
            })
            for buf in ("attn.bias", "attn.masked_bias"):  # causal-mask buffers of old checkpoints
                W.t.pop(p + buf, None)
        self.ln_f = (W.take("ln_f.weight", (C,)), W.take("ln_f.bias", (C,)))
        head = tensors.get("lm_head.weight")
        if qwte is not None:  # a quantized folder: the tied head and embedding as one int8 (V, C)
            if head is not None:
                raise ValueError(f"{w}: wte.weight is stored quantized, which a checkpoint with its own "
                                 "lm_head.weight never is")
            self.head = _head(qwte, w, V, C)
            self.wte = _ColumnEmbedding(self.head)
        elif head is None or (not isinstance(head, tuple) and np.array_equal(head, wte)):
            self.head = Linear(wte.T)
            self.wte = _ColumnEmbedding(self.head)
        else:
            self.head = _head(head, w, V, C)
            self.wte = np.ascontiguousarray(wte)
        del wte

    def weights_nbytes(self):
        n = sum(x.nbytes for d in self.layers for v in d.values() for x in (v if isinstance(v, tuple) else (v,)))
        n += self.head.nbytes + self.wpe.nbytes + (0 if isinstance(self.wte, _ColumnEmbedding) else self.wte.nbytes)
        return n

    def _layer_plan(self, i):
        d = self.layers[i]
        w = [_plan_weights(d[k]) for k in ("qkv", "proj", "fc", "fc_proj")]
        if any(x is None for x in w) or self.act is not ACTIVATIONS["gelu_new"]:
            return None
        C, H = self.hidden_size, self.num_heads
        return KERNELS.native_attention.DecoderLayerPlan(
            C, H, H, self.head_dim, False, self.eps, "gelu_tanh", False, self.scale[i], d["ln1"][0], d["ln1"][1],
            w[0], d["qkv"].b, w[1], d["proj"].b, d["ln2"][0], d["ln2"][1], w[2], d["fc"].n, d["fc"].b, w[3],
            d["fc_proj"].b)

    def _embed(self, ids, positions):
        if positions.size and positions.max() >= self.max_positions:
            raise ValueError(f"gpt2: position {int(positions.max())} is beyond n_positions {self.max_positions}")
        return self.wte[ids] + self.wpe[positions]

    def _block(self, i, h, step):
        d = self.layers[i]
        B, L, _C = h.shape
        H, D = self.num_heads, self.head_dim
        a = layer_norm(h, *d["ln1"], self.eps)
        qkv = d["qkv"](a)
        o = self._decode_attend(i, qkv, step, self.scale[i], rope=False)
        if o is None:
            qkv = qkv.reshape(B, L, 3, H, D)
            o = self._attend(i, qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], step, self.scale[i])
        h = h + d["proj"](o)
        m = layer_norm(h, *d["ln2"], self.eps)
        return h + d["fc_proj"](self.act(d["fc"](m)))

    def _head(self, h):
        return self.head(layer_norm(h, *self.ln_f, self.eps))


class Llama(DecoderLM):
    family = "llama"

    def __init__(self, config, tensors, **kw):
        super().__init__(config, **kw)
        mt = config.get("model_type", "llama")
        w = mt
        C = self.hidden_size = _cfg_int(config, w, "hidden_size")
        L = self.num_layers = _cfg_int(config, w, "num_hidden_layers")
        H = self.num_heads = _cfg_int(config, w, "num_attention_heads")
        Hk = self.num_kv_heads = _cfg_int(config, w, "num_key_value_heads", default=H)
        if H % Hk:
            raise ValueError(f"{w}: num_attention_heads {H} must be a multiple of num_key_value_heads {Hk}")
        D = self.head_dim = _cfg_int(config, w, "head_dim", default=C // H)
        V = self.vocab_size = _cfg_int(config, w, "vocab_size")
        I = _cfg_int(config, w, "intermediate_size")
        self.max_positions = None
        self.eps = float(config.get("rms_norm_eps", 1e-6))
        act = config.get("hidden_act", "silu")
        self.act = activation(act, w)
        self.rope = rope_spec(config, D, w)
        qkv_bias = bool(config.get("attention_bias", False)) or mt == "qwen2"
        o_bias = bool(config.get("attention_bias", False))
        mlp_bias = bool(config.get("mlp_bias", False))
        win = config.get("sliding_window")
        if mt == "qwen2" and not config.get("use_sliding_window", False):
            win = None
        self.window = int(win) if win else None
        types = config.get("layer_types")
        if self.window is not None and isinstance(types, list) and len(types) == L:
            self.sliding_layers = [t == "sliding_attention" for t in types]
        elif self.window is not None and mt == "qwen2":
            mwl = config.get("max_window_layers", L)
            self.sliding_layers = [i >= mwl for i in range(L)]
        elif self.window is not None:
            self.sliding_layers = [True] * L
        pre = _find_prefix(tensors, "embed_tokens.weight", ("model.", "", "transformer."))
        W = Weights(tensors, pre, w)
        self.embed = np.ascontiguousarray(W.take("embed_tokens.weight", (V, C)))
        self.layers = []
        for i in range(L):
            p = f"layers.{i}."
            q = W.linear(p + "self_attn.q_proj", C, H * D, bias=qkv_bias)
            k = W.linear(p + "self_attn.k_proj", C, Hk * D, bias=qkv_bias)
            v = W.linear(p + "self_attn.v_proj", C, Hk * D, bias=qkv_bias)
            g = W.linear(p + "mlp.gate_proj", C, I, bias=mlp_bias)
            u = W.linear(p + "mlp.up_proj", C, I, bias=mlp_bias)
            self.layers.append({
                "ln1": W.take(p + "input_layernorm.weight", (C,)),
                "qkv": _cat_linear([q, k, v]),
                "o": W.linear(p + "self_attn.o_proj", H * D, C, bias=o_bias),
                "ln2": W.take(p + "post_attention_layernorm.weight", (C,)),
                "gate_up": _cat_linear([g, u]),
                "down": W.linear(p + "mlp.down_proj", I, C, bias=mlp_bias),
            })
            del q, k, v, g, u
        self.norm = W.take("norm.weight", (C,))
        head = tensors.get("lm_head.weight")
        tied = config.get("tie_word_embeddings", False)
        if head is None:
            if not tied:
                raise ValueError(f"{w}: missing tensor 'lm_head.weight' and tie_word_embeddings is false")
            head = self.embed
        self.head = _head(head, w, V, C)
        self.I = I

    def weights_nbytes(self):
        n = sum(x.nbytes for d in self.layers for x in d.values())
        return n + self.head.nbytes + self.embed.nbytes + self.norm.nbytes

    _rope = True

    def _layer_plan(self, i):
        d = self.layers[i]
        w = [_plan_weights(d[k]) for k in ("qkv", "o", "gate_up", "down")]
        if any(x is None for x in w) or self.act is not ACTIVATIONS["silu"]:
            return None
        D = self.head_dim
        return KERNELS.native_attention.DecoderLayerPlan(
            self.hidden_size, self.num_heads, self.num_kv_heads, D, True, self.eps, "swiglu", True,
            1.0 / math.sqrt(D), d["ln1"], None, w[0], d["qkv"].b, w[1], d["o"].b, d["ln2"], None, w[2],
            d["gate_up"].n, d["gate_up"].b, w[3], d["down"].b)

    def _embed(self, ids, positions):
        self._cos, self._sin = self.rope.tables(positions)
        return self.embed[ids]

    def _block(self, i, h, step):
        d = self.layers[i]
        B, L, _C = h.shape
        H, Hk, D = self.num_heads, self.num_kv_heads, self.head_dim
        a = rms_norm(h, d["ln1"], self.eps)
        qkv = d["qkv"](a)
        o = self._decode_attend(i, qkv, step)
        if o is None:
            # RoPE of the q and k heads in one kernel call; q comes in attention's (B, H, L, D)
            # layout, passed on as a (B, L, H, D) view
            q, k = KERNELS.rope_qk(qkv, self._cos, self._sin, H, Hk)
            v = qkv[..., (H + Hk) * D:].reshape(B, L, Hk, D)
            o = self._attend(i, q.transpose(0, 2, 1, 3), k, v, step)
        h = h + d["o"](o)
        m = rms_norm(h, d["ln2"], self.eps)
        gu = d["gate_up"](m)
        return h + d["down"](gated(self.act, gu, self.I))

    def _head(self, h):
        return self.head(rms_norm(h, self.norm, self.eps))


class Bert:
    """A BERT encoder: ``encode`` gives hidden states and the pooled [CLS] vector,
    ``embed`` gives sentence embeddings (masked mean, [CLS] or pooler)."""

    family = "bert"

    def __init__(self, config, tensors, tokenizer=None, generation_config=None, path=None):
        self.config, self.tokenizer, self.path = config, tokenizer, path
        w = "bert"
        C = self.hidden_size = _cfg_int(config, w, "hidden_size")
        L = self.num_layers = _cfg_int(config, w, "num_hidden_layers")
        H = self.num_heads = _cfg_int(config, w, "num_attention_heads")
        if C % H:
            raise ValueError(f"{w}: hidden_size {C} is not divisible by num_attention_heads {H}")
        self.head_dim = C // H
        V = self.vocab_size = _cfg_int(config, w, "vocab_size")
        P = self.max_positions = _cfg_int(config, w, "max_position_embeddings")
        TV = _cfg_int(config, w, "type_vocab_size", default=2)
        I = _cfg_int(config, w, "intermediate_size")
        pet = config.get("position_embedding_type", "absolute")
        if pet != "absolute":
            raise ValueError(f"{w}: position_embedding_type {pet!r} is not supported (only 'absolute')")
        if config.get("is_decoder") or config.get("add_cross_attention"):
            raise ValueError(f"{w}: decoder BERT configs (is_decoder / add_cross_attention) are not supported")
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.act = activation(config.get("hidden_act", "gelu"), w)
        self.pad_token_id = int(config.get("pad_token_id") or 0)
        ts = {k.replace(".gamma", ".weight").replace(".beta", ".bias"): v for k, v in tensors.items()}
        pre = _find_prefix(ts, "embeddings.word_embeddings.weight", ("bert.", "", "model."))
        W = Weights(ts, pre, w)
        self.word = np.ascontiguousarray(W.take("embeddings.word_embeddings.weight", (V, C)))
        self.pos = np.ascontiguousarray(W.take("embeddings.position_embeddings.weight", (P, C)))
        self.types = np.ascontiguousarray(W.take("embeddings.token_type_embeddings.weight", (TV, C)))
        self.ln_emb = (W.take("embeddings.LayerNorm.weight", (C,)), W.take("embeddings.LayerNorm.bias", (C,)))
        self.layers = []
        for i in range(L):
            p = f"encoder.layer.{i}."
            self.layers.append({
                "qkv": _cat_linear([W.linear(p + f"attention.self.{n}", C, C) for n in ("query", "key", "value")]),
                "o": W.linear(p + "attention.output.dense", C, C),
                "ln1": (W.take(p + "attention.output.LayerNorm.weight", (C,)),
                     W.take(p + "attention.output.LayerNorm.bias", (C,))),
                "fc": W.linear(p + "intermediate.dense", C, I),
                "out": W.linear(p + "output.dense", I, C),
                "ln2": (W.take(p + "output.LayerNorm.weight", (C,)), W.take(p + "output.LayerNorm.bias", (C,))),
            })
        self.pooler = W.linear("pooler.dense", C, C) if "pooler.dense.weight" in W.t else None

    def weights_nbytes(self) -> int:
        n = self.word.nbytes + self.pos.nbytes + self.types.nbytes
        for d in self.layers:
            n += sum(x.nbytes for v in d.values() for x in (v if isinstance(v, tuple) else (v,)))
        return n + (self.pooler.nbytes if self.pooler else 0)

    def __repr__(self):
        return (f"<pyaiml.llm Bert: {self.num_layers} layers, {self.num_heads} heads, width {self.hidden_size}, "
                f"vocab {self.vocab_size}, {self.weights_nbytes() / 2**20:.1f} MiB of weights>")

    def _batch(self, inputs, attention_mask=None, token_type_ids=None):
        """(ids (B, L) int64, mask (B, L) bool, types (B, L)) from texts or ids, right-padded."""
        if isinstance(inputs, str) or (isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str)):
            if self.tokenizer is None:
                raise ValueError(f"bert: {self.path} has no tokenizer.json; pass token ids instead of text")
            texts = [inputs] if isinstance(inputs, str) else list(inputs)
            seqs = [self.tokenizer.encode(t) for t in texts]
            Lm = max(len(s) for s in seqs)
            ids = np.full((len(seqs), Lm), self.pad_token_id, np.int64)
            mask = np.zeros((len(seqs), Lm), bool)
            for b, s in enumerate(seqs):
                ids[b, :len(s)] = s
                mask[b, :len(s)] = True
        else:
            ids = np.asarray(inputs)
            if ids.ndim == 1:
                ids = ids[None]
            if ids.ndim != 2 or ids.dtype.kind not in "iu" or ids.shape[1] == 0:
                raise ValueError(f"bert: ids must be a non-empty 2-D integer array (B, L). Received {ids.dtype} "
                                 f"{ids.shape}")
            ids = ids.astype(np.int64)
            mask = np.ones(ids.shape, bool) if attention_mask is None else \
                np.asarray(attention_mask).reshape(ids.shape).astype(bool)
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(f"bert: token ids must lie in [0, {self.vocab_size}). Received min {ids.min()}, "
                             f"max {ids.max()}")
        if ids.shape[1] > self.max_positions:
            raise ValueError(f"bert: {ids.shape[1]} tokens exceed max_position_embeddings {self.max_positions}")
        types = np.zeros(ids.shape, np.int64) if token_type_ids is None else \
            np.asarray(token_type_ids, np.int64).reshape(ids.shape)
        return ids, mask, types

    def encode(self, inputs, attention_mask=None, token_type_ids=None):
        """Hidden states (B, L, C) and pooled vectors (B, C) (None without a pooler).

        inputs: a str, a list of str (tokenized, right-padded) or ids (B, L) / (L,) with
        ``attention_mask`` (1 = token, 0 = padding) and ``token_type_ids``.
        """
        ids, mask, types = self._batch(inputs, attention_mask, token_type_ids)
        B, L = ids.shape
        H, D = self.num_heads, self.head_dim
        KERNELS.refresh()
        with ops.finite_checks(False):
            h = self.word[ids] + self.pos[np.arange(L)][None] + self.types[types]
            h = layer_norm(h, *self.ln_emb, self.eps)
            amask = None if mask.all() else mask[:, None, None, :]
            for d in self.layers:
                qkv = d["qkv"](h).reshape(B, L, 3, H, D).transpose(2, 0, 3, 1, 4)
                o = ops.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=amask)
                o = d["o"](o.transpose(0, 2, 1, 3).reshape(B, L, H * D))
                h = layer_norm(o + h, *d["ln1"], self.eps)
                f = d["out"](self.act(d["fc"](h)))
                h = layer_norm(f + h, *d["ln2"], self.eps)
            pooled = np.tanh(self.pooler(h[:, 0])) if self.pooler is not None else None
        return h, pooled

    def embed(self, inputs, attention_mask=None, token_type_ids=None, pooling: str = "mean",
              normalize: bool = False) -> np.ndarray:
        """Sentence embeddings (B, C): ``pooling`` "mean" (over real tokens), "cls" (the
        first token's hidden state) or "pooler" (the tanh pooler on it)."""
        if pooling not in ("mean", "cls", "pooler"):
            raise ValueError(f"embed: pooling must be 'mean', 'cls' or 'pooler'. Received {pooling!r}")
        ids, mask, types = self._batch(inputs, attention_mask, token_type_ids)
        h, pooled = self.encode(ids, mask, types)
        if pooling == "mean":
            m = mask[..., None].astype(np.float32)
            e = (h * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)
        elif pooling == "cls":
            e = h[:, 0]
        else:
            if pooled is None:
                raise ValueError(f"embed: pooling='pooler' but {self.path} has no pooler.dense weights")
            e = pooled
        if normalize:
            e = e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
        return e.astype(np.float32)
