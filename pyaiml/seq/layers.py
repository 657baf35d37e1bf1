"""Transformer layers with the pyaiml.keras Layer lifecycle (build / call / get_config), on
pyaiml.ops (GEMM, attention, GELU).

- ``PositionalEmbedding``: token embedding + positions, ``position="learned"`` (a trained
  table) or ``"sinusoidal"`` (fixed sin/cos), optional dropout, ``mask_zero`` (id 0 is
  padding; the padding mask goes to the next layers). (batch, T) ids -> (batch, T, D).
- ``TransformerEncoderBlock``: pre-norm block ``x + Drop(MHA(LN(x)))`` then
  ``x + Drop(FF(LN(x)))`` with FF = Dense(ff_dim, gelu|relu) -> Dense(D); ``causal=True``
  makes it a decoder-only (GPT-style) block. (batch, T, D) -> (batch, T, D).
- ``TransformerDecoderBlock``: causal self-attention, cross-attention over an encoder
  output ``context`` (batch, S, Dc), feed-forward; ``call(x, context, ...)``.

Two ways through each layer, as for the Keras layers: ``call`` is written on
pyaiml.autograd's primitives and is what trains (``TransformerLM`` and
``Seq2SeqTransformer``, and the layers inside functional and subclassed ``keras.Model``s:
``layer(x)`` on tape values or symbolic inputs; the decoder block as ``layer(x, context,
context_mask=...)``); ``forward`` is the inference path on plain arrays (no tape; a
training-mode call with dropout goes through ``call``).

Both blocks keep Q, K, V projections fused in one (D, 3D) kernel (Keras layout: kernels
are (in, out)). Attention runs on ``pyaiml.ops.scaled_dot_product_attention`` (packed
self- and cross-attention ops on the tape). ``step(...)`` methods run incremental decoding with a
key/value cache (``KVCache``): the new tokens' queries attend over the cached keys (Lq = 1
per generated token), so generating costs one decode step per token.

Not here: attention dropout (dropout acts on the residual branches and embeddings),
relative positions. Tests: tests/test_transformer.py (gradients against torch and finite
differences; cached vs full decoding).
"""
from __future__ import annotations

import math

import numpy as np

import pyaiml.ops as ops
from pyaiml.autograd import functional as F
from pyaiml.autograd.tape import Tensor, recording, value_of
from pyaiml.keras import layers as _kl
from pyaiml.keras._common import FLOATX, rng

_kl.BUILTIN_MODULES.add(__name__)  # build() takes shapes without the batch, as the Keras layers' do

__all__ = ["PositionalEmbedding", "TransformerEncoderBlock", "TransformerDecoderBlock", "KVCache",
           "sinusoidal_table"]


# ---------------------------------------------------------------------- helpers
def sinusoidal_table(length, dim):
    """(length, dim) table: even columns sin(p / 10000^(2i/dim)), odd columns cos(...)."""
    pos = np.arange(length, dtype=np.float64)[:, None]
    i = np.arange((dim + 1) // 2, dtype=np.float64)[None, :]
    ang = pos / np.power(10000.0, 2 * i / dim)
    t = np.zeros((length, dim), dtype=np.float64)
    t[:, 0::2] = np.sin(ang)[:, : (dim + 1) // 2]
    t[:, 1::2] = np.cos(ang)[:, : dim // 2]
    return t.astype(FLOATX)


def _f(x):
    """float32, or float64 kept as is (the gradient tests run layers in float64)."""
    x = np.asarray(x)
    return x if x.dtype == np.float64 else x.astype(FLOATX, copy=False)


def _ln_fwd(x, g, b, eps):
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = np.einsum("...i,...i->...", xc, xc)[..., None] / x.shape[-1]
    inv = 1.0 / np.sqrt(var + x.dtype.type(eps))
    xh = xc * inv
    return xh * g + b, (xh, inv)


def _lin(x, W, b):
    """x (..., in) @ W (in, out) + b on pyaiml's GEMM."""
    return ops.linear(x, W.T, b)


def _act(name):
    if name == "gelu":
        return lambda u: ops.gelu(u, approximate="tanh")
    if name == "relu":
        return lambda u: np.maximum(u, u.dtype.type(0))
    raise ValueError(f"activation must be 'gelu' or 'relu'. Received {name!r}")


def _heads(y, B, T, n, H, dh):
    """(B, T, n*H*dh) -> n contiguous arrays (B, H, T, dh)."""
    y = np.ascontiguousarray(y.reshape(B, T, n, H, dh).transpose(2, 0, 3, 1, 4))
    return [y[i] for i in range(n)]


def _merge(o, B, T):
    """(B, H, T, dh) -> (B, T, H*dh)."""
    return np.ascontiguousarray(o.transpose(0, 2, 1, 3)).reshape(B, T, -1)


def _check_int(name, v, lo=1):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}. Received {v!r}")
    return int(v)


def _check_rate(name, v):
    v = float(v)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{name} must be in [0, 1). Received {v}")
    return v


class KVCache:
    """Keys and values of one attention layer for incremental decoding.

    k, v : (B, H, capacity, dh) preallocated; ``n`` = filled positions. ``fixed`` marks a
    cross-attention cache (computed once from the encoder output)."""

    def __init__(self, B, H, capacity, dh, fixed=False):
        self.k = np.zeros((B, H, capacity, dh), dtype=FLOATX)
        self.v = np.zeros((B, H, capacity, dh), dtype=FLOATX)
        self.n = 0
        self.fixed = fixed

    def append(self, k, v):
        t = k.shape[2]
        if self.n + t > self.k.shape[2]:
            raise ValueError(f"KVCache: capacity {self.k.shape[2]} exceeded (have {self.n}, adding {t})")
        self.k[:, :, self.n:self.n + t] = k
        self.v[:, :, self.n:self.n + t] = v
        self.n += t

    def view(self):
        return self.k[:, :, :self.n], self.v[:, :, :self.n]

    def reorder(self, idx):
        """Beam search: keep the rows ``idx`` (new batch order)."""
        self.k = self.k[idx]
        self.v = self.v[idx]


def _attend_step(q, cache, k, v, mask=None):
    """Queries (B, H, t, dh) of positions n..n+t-1 attend over the cache + the new keys
    (causal among the new ones). Returns (B, H, t, dh)."""
    if k is not None:
        n0 = cache.n
        cache.append(k, v)
    K, V = cache.view()
    t = q.shape[2]
    m = mask
    if k is not None and t > 1:
        S = K.shape[2]
        tri = np.arange(S)[None, :] <= (n0 + np.arange(t))[:, None]  # (t, S)
        m = tri[None, None] if m is None else (m & tri[None, None])
    return ops.scaled_dot_product_attention(q, K, V, attn_mask=m)


# ---------------------------------------------------------------------- embeddings
@_kl.register
class PositionalEmbedding(_kl.Layer):
    """Token + position embedding: ``E[ids] * scale + P[positions]``.

    Parameters
    ----------
    vocab_size : int, number of token ids
    max_length : int, the longest sequence (positions 0..max_length-1)
    output_dim : int, D
    position : 'learned' (trained (max_length, D) table) or 'sinusoidal' (fixed)
    dropout : float, dropout on the sum while training
    mask_zero : bool, id 0 is padding (mask passed on to later layers)
    scale_embeddings : bool, multiply token vectors by sqrt(D) (usual with sinusoids)
    """

    supports_masking = True

    def __init__(self, vocab_size, max_length, output_dim, position="learned", dropout=0.0, mask_zero=False,
                 scale_embeddings=False, embeddings_initializer=None, **kw):
        super().__init__(**kw)
        self.vocab_size = _check_int("PositionalEmbedding: vocab_size", vocab_size)
        self.max_length = _check_int("PositionalEmbedding: max_length", max_length)
        self.output_dim = _check_int("PositionalEmbedding: output_dim", output_dim)
        if position not in ("learned", "sinusoidal"):
            raise ValueError(f"PositionalEmbedding: position must be 'learned' or 'sinusoidal'. Received {position!r}")
        self.position = position
        self.dropout = _check_rate("PositionalEmbedding: dropout", dropout)
        self.mask_zero = bool(mask_zero)
        self.scale_embeddings = bool(scale_embeddings)
        self.embeddings_initializer = embeddings_initializer

    def build(self, input_shape):
        if len(input_shape) != 1:
            raise _kl.InputSpecError(f"{self.name}: PositionalEmbedding expects ids of shape (batch, length). "
                                     f"Received input shape (None, {', '.join(map(str, input_shape))})")
        D = self.output_dim
        r = rng()
        if self.embeddings_initializer is None:
            self._register("embeddings", (r.standard_normal((self.vocab_size, D)) * 0.02).astype(FLOATX))
        else:
            self.add_weight("embeddings", (self.vocab_size, D), self.embeddings_initializer)
        if self.position == "learned":
            self._register("positions", (r.standard_normal((self.max_length, D)) * 0.02).astype(FLOATX))
        else:
            self._sin = sinusoidal_table(self.max_length, D)
        super().build(input_shape)

    def compute_output_shape(self, s):
        return tuple(s) + (self.output_dim,)

    def __call__(self, x, training=False, mask=None):
        if recording() or isinstance(x, Tensor) or getattr(x, "_is_keras_tensor", False):
            return super().__call__(x, training=training)  # the tape call / the functional API
        x = np.asarray(x)
        self._ensure_built(x.shape[1:])
        return self.forward(x, training, mask)

    def call(self, inputs, training=False):
        """The forward computation on the tape (ids carry no gradient)."""
        x = self._ids(value_of(inputs))
        T = x.shape[1]
        self._pos(0, T)  # the length check
        self._x_ids = x  # for compute_mask
        e = F.take(self._var("embeddings"), x, 0)
        if self.scale_embeddings:
            e = F.multiply(e, e.dtype.type(math.sqrt(self.output_dim)))
        pos = F.take(self._var("positions"), np.arange(T), 0) if self.position == "learned" else self._sin[:T]
        y = F.add(e, pos)
        return F.dropout(y, self.dropout, rng()) if training and self.dropout > 0 else y

    def _ids(self, x):
        x = np.asarray(x)
        if x.dtype.kind == "f":
            if not np.all(x == np.round(x)):
                raise ValueError(f"{self.name}: ids must be integers. Received non-integer values")
            x = x.astype(np.int64)
        elif x.dtype.kind not in "iu":
            raise ValueError(f"{self.name}: ids must be integers. Received dtype {x.dtype}")
        if x.ndim != 2:
            raise ValueError(f"{self.name}: ids must be 2-D (batch, length). Received shape {x.shape}")
        if x.size and (x.min() < 0 or x.max() >= self.vocab_size):
            raise ValueError(f"{self.name}: ids must be in [0, {self.vocab_size}). "
                             f"Received values in [{x.min()}, {x.max()}]")
        return x

    def _pos(self, start, T):
        if start + T > self.max_length:
            raise ValueError(f"{self.name}: positions {start}..{start + T - 1} exceed max_length "
                             f"{self.max_length}")
        return (self.positions if self.position == "learned" else self._sin)[start:start + T]

    def forward(self, x, training=False, mask=None, start=0):
        if training and self.dropout > 0 and start == 0:
            return self.call(x, training=True)
        x = self._ids(x)
        e = self.embeddings[x]
        if self.scale_embeddings:
            e *= e.dtype.type(math.sqrt(self.output_dim))
        self._x_ids = x  # for compute_mask
        return e + self._pos(start, x.shape[1])

    def step_rows(self, ids, starts):
        """Inference embedding of one token per row, each at its own position: ids (B,),
        starts (B,) -> (B, 1, D). Row b equals ``forward(ids[b:b+1, None], start=starts[b])``
        bit for bit (the decode step of B sequences of different lengths)."""
        x = self._ids(np.asarray(ids).reshape(-1, 1))
        starts = np.asarray(starts, dtype=np.int64).reshape(-1)
        if starts.shape[0] != x.shape[0]:
            raise ValueError(f"{self.name}: one start per row is needed. Received {starts.shape[0]} starts for "
                             f"{x.shape[0]} ids")
        if starts.size and (starts.min() < 0 or starts.max() >= self.max_length):
            raise ValueError(f"{self.name}: positions must be in [0, {self.max_length}). Received "
                             f"{starts.min()}..{starts.max()}")
        e = self.embeddings[x]
        if self.scale_embeddings:
            e *= e.dtype.type(math.sqrt(self.output_dim))
        table = self.positions if self.position == "learned" else self._sin
        return e + table[starts][:, None]

    def compute_mask(self, mask):
        return (self._x_ids != 0) if self.mask_zero else None

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "max_length": self.max_length,
                "output_dim": self.output_dim, "position": self.position, "dropout": self.dropout,
                "mask_zero": self.mask_zero, "scale_embeddings": self.scale_embeddings}


# ---------------------------------------------------------------------- blocks
class _BlockBase(_kl.Layer):
    supports_masking = True

    def __init__(self, num_heads, ff_dim, dropout=0.0, activation="gelu", epsilon=1e-5, **kw):
        super().__init__(**kw)
        cname = type(self).__name__
        self.num_heads = _check_int(f"{cname}: num_heads", num_heads)
        self.ff_dim = _check_int(f"{cname}: ff_dim", ff_dim)
        self.dropout = _check_rate(f"{cname}: dropout", dropout)
        _act(activation)
        self.activation = activation
        self.epsilon = float(epsilon)
        if not self.epsilon > 0:
            raise ValueError(f"{cname}: epsilon must be > 0. Received {epsilon}")

    def _dims(self, D):
        if D is None or D % self.num_heads:
            raise _kl.InputSpecError(f"{self.name}: the model width D={D} must be divisible by num_heads="
                                     f"{self.num_heads}")
        return D, D // self.num_heads

    def _w(self, name, fan_in, shape, scale=1.0):
        lim = math.sqrt(6.0 / (fan_in + shape[-1])) * scale  # glorot uniform
        self._register(name, rng().uniform(-lim, lim, size=shape).astype(FLOATX))

    def _zeros(self, name, shape, fill=0.0):
        self._register(name, np.full(shape, fill, dtype=FLOATX))

    def _build_ff(self, D, pre):
        self._zeros(f"{pre}gamma", (D,), 1.0)
        self._zeros(f"{pre}beta", (D,))
        self._w("ff1_kernel", D, (D, self.ff_dim))
        self._zeros("ff1_bias", (self.ff_dim,))
        self._w("ff2_kernel", self.ff_dim, (self.ff_dim, D))
        self._zeros("ff2_bias", (D,))

    # inference path (forward, step), plain arrays. Feed-forward sub-block: x + W2 act(W1 LN(x))
    def _ff_step(self, x, pre):
        h, _ = _ln_fwd(x, getattr(self, f"{pre}gamma"), getattr(self, f"{pre}beta"), self.epsilon)
        return x + _lin(_act(self.activation)(_lin(h, self.ff1_kernel, self.ff1_bias)), self.ff2_kernel, self.ff2_bias)

    # self-attention sub-block: x + Drop(Wo SDPA(split(Wqkv LN(x))))
    def _build_sa(self, D):
        self._zeros("ln1_gamma", (D,), 1.0)
        self._zeros("ln1_beta", (D,))
        self._w("qkv_kernel", D, (D, 3 * D))
        self._zeros("qkv_bias", (3 * D,))
        self._w("out_kernel", D, (D, D))
        self._zeros("out_bias", (D,))

    def _sa_fwd(self, x, mask, causal):
        B, T, D = x.shape
        H, dh = self.num_heads, D // self.num_heads
        h, _ = _ln_fwd(x, self.ln1_gamma, self.ln1_beta, self.epsilon)
        q, k, v = _heads(_lin(h, self.qkv_kernel, self.qkv_bias), B, T, 3, H, dh)
        m = None if mask is None else np.asarray(mask, dtype=bool)[:, None, None, :]
        o = ops.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=causal)
        return x + _lin(_merge(o, B, T), self.out_kernel, self.out_bias)

    def _sa_step(self, x, cache, mask=None):
        B, T, D = x.shape
        H, dh = self.num_heads, D // self.num_heads
        h, _ = _ln_fwd(x, self.ln1_gamma, self.ln1_beta, self.epsilon)
        q, k, v = _heads(_lin(h, self.qkv_kernel, self.qkv_bias), B, T, 3, H, dh)
        o = _attend_step(q, cache, k, v, mask)
        return x + _lin(_merge(o, B, T), self.out_kernel, self.out_bias)

    # the same sub-blocks on the tape (call): pyaiml.autograd.functional's ops, no caches
    def _drop_call(self, a, training):
        return F.dropout(a, self.dropout, rng()) if training and self.dropout > 0 else a

    def _ff_call(self, x, training, pre):
        v = self._var
        h = F.layer_norm(x, v(f"{pre}gamma"), v(f"{pre}beta"), self.epsilon)
        if self.activation == "relu":  # ReLU in the GEMM's epilogue
            a = F.dense(h, v("ff1_kernel"), v("ff1_bias"), activation="relu")
        else:
            a = F.gelu(F.dense(h, v("ff1_kernel"), v("ff1_bias")), approximate=True)
        return F.add(x, self._drop_call(F.dense(a, v("ff2_kernel"), v("ff2_bias")), training))

    @staticmethod
    def _key_mask(mask):
        return None if mask is None else np.asarray(value_of(mask), dtype=bool)[:, None, None, :]

    def _sa_call(self, x, training, mask, causal):
        v = self._var
        h = F.layer_norm(x, v("ln1_gamma"), v("ln1_beta"), self.epsilon)
        oc = F.self_attention(F.dense(h, v("qkv_kernel"), v("qkv_bias")), self.num_heads, self._key_mask(mask), causal)
        return F.add(x, self._drop_call(F.dense(oc, v("out_kernel"), v("out_bias")), training))

    def new_cache(self, B, capacity):
        D = self.input_shape[-1]
        return KVCache(B, self.num_heads, capacity, D // self.num_heads)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "ff_dim": self.ff_dim, "dropout": self.dropout,
                "activation": self.activation, "epsilon": self.epsilon}


@_kl.register
class TransformerEncoderBlock(_BlockBase):
    """Pre-norm Transformer block: self-attention (optionally causal) + feed-forward.

    Parameters
    ----------
    num_heads : int, H (D must be divisible by H)
    ff_dim : int, hidden width of the feed-forward network
    dropout : float, dropout on both residual branches while training
    causal : bool, each position attends only to itself and earlier ones
    activation : 'gelu' (tanh form) or 'relu'
    epsilon : float, layer-norm epsilon

    Inside a Sequential model a padding mask from ``PositionalEmbedding(mask_zero=True)``
    hides padded keys. Input and output (batch, T, D).
    """

    def __init__(self, num_heads, ff_dim, dropout=0.0, causal=False, activation="gelu", epsilon=1e-5, **kw):
        super().__init__(num_heads, ff_dim, dropout, activation, epsilon, **kw)
        self.causal = bool(causal)

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise _kl.InputSpecError(f"{self.name}: expects (batch, steps, features). Received input shape "
                                     f"(None, {', '.join(map(str, input_shape))})")
        D, _ = self._dims(input_shape[-1])
        self._build_sa(D)
        self._build_ff(D, "ln2_")
        super().build(input_shape)

    def forward(self, x, training=False, mask=None):
        if training and self.dropout > 0:
            return self.call(x, training=True, mask=mask)
        return self._ff_step(self._sa_fwd(_f(x), mask, self.causal), "ln2_")

    def call(self, inputs, training=False, mask=None):
        x1 = self._sa_call(inputs, training, mask, self.causal)
        return self._ff_call(x1, training, "ln2_")

    def step(self, x, cache, mask=None):
        """Incremental forward (inference): x (B, t, D) are the next t positions; keys
        and values are appended to ``cache``. Needs ``causal=True`` (or t covering the
        whole sequence)."""
        return self._ff_step(self._sa_step(_f(x), cache, mask), "ln2_")

    def get_config(self):
        return {**super().get_config(), "causal": self.causal}


@_kl.register
class TransformerDecoderBlock(_BlockBase):
    """Pre-norm decoder block: causal self-attention, cross-attention over an encoder
    output, feed-forward.

    ``layer(x, context, training=..., mask=..., context_mask=...)`` (the tape call): x (B, T, D)
    target-side states, context (B, S, Dc) encoder output, ``context_mask`` (B, S) bool (True =
    real token). The inference path on plain arrays: ``forward(x, training, mask, context=...,
    context_mask=...)``.
    """

    def __init__(self, num_heads, ff_dim, dropout=0.0, activation="gelu", epsilon=1e-5, **kw):
        super().__init__(num_heads, ff_dim, dropout, activation, epsilon, **kw)

    def build(self, input_shape, context_shape=None):
        if len(input_shape) != 2:
            raise _kl.InputSpecError(f"{self.name}: expects (batch, steps, features). Received input shape "
                                     f"(None, {', '.join(map(str, input_shape))})")
        D, _ = self._dims(input_shape[-1])
        Dc = D if context_shape is None else context_shape[-1]
        self.context_dim = Dc
        self._build_sa(D)
        self._zeros("ln2_gamma", (D,), 1.0)
        self._zeros("ln2_beta", (D,))
        self._w("cq_kernel", D, (D, D))
        self._zeros("cq_bias", (D,))
        self._w("ckv_kernel", Dc, (Dc, 2 * D))
        self._zeros("ckv_bias", (2 * D,))
        self._w("cout_kernel", D, (D, D))
        self._zeros("cout_bias", (D,))
        self._build_ff(D, "ln3_")
        super().build(input_shape)

    def forward(self, x, training=False, mask=None, context=None, context_mask=None):
        """The inference path (a training-mode call with dropout runs ``call``)."""
        if context is None:
            raise ValueError(f"{self.name}: TransformerDecoderBlock needs the encoder output: "
                             "forward(x, training, mask, context=..., context_mask=...) or layer(x, context) (it "
                             "has two inputs, so it cannot sit in a Sequential model)")
        x = _f(x)
        c = _f(context)
        if not self.built:
            self.build(x.shape[1:], c.shape[1:])
        self._check_context(x, c)
        if training and self.dropout > 0:
            return self.call(x, c, training=True, mask=mask, context_mask=context_mask)
        x1 = self._sa_fwd(x, mask, True)
        return self._ff_step(self._ca_fwd(x1, c, context_mask), "ln3_")

    def _check_context(self, x, c):
        if c.ndim != 3 or c.shape[0] != x.shape[0] or c.shape[2] != self.context_dim:
            raise ValueError(f"{self.name}: context must be (batch={x.shape[0]}, S, {self.context_dim}). "
                             f"Received {tuple(c.shape)}")

    def _build_for_call(self, x, args, kwargs):
        context = args[1] if len(args) > 1 else kwargs.get("context")
        if context is None:
            raise ValueError(f"{self.name}: TransformerDecoderBlock needs the encoder output: layer(x, context)")
        self.build(tuple(x.shape[1:]), tuple(context.shape[1:]))
        self.built = True

    def call(self, x, context, training=False, mask=None, context_mask=None):
        """The forward computation on the tape: x (B, T, D), context (B, S, Dc)."""
        self._check_context(x, context)
        x1 = self._sa_call(x, training, mask, True)
        x2 = self._ca_call(x1, context, training, context_mask)
        return self._ff_call(x2, training, "ln3_")

    def _ca_call(self, x, c, training, cmask):
        v = self._var
        h = F.layer_norm(x, v("ln2_gamma"), v("ln2_beta"), self.epsilon)
        oc = F.cross_attention(F.dense(h, v("cq_kernel"), v("cq_bias")), F.dense(c, v("ckv_kernel"), v("ckv_bias")),
                               self.num_heads, self._key_mask(cmask))
        return F.add(x, self._drop_call(F.dense(oc, v("cout_kernel"), v("cout_bias")), training))

    def _ca_fwd(self, x, c, cmask):
        B, T, D = x.shape
        S = c.shape[1]
        H, dh = self.num_heads, D // self.num_heads
        h, _ = _ln_fwd(x, self.ln2_gamma, self.ln2_beta, self.epsilon)
        (q,) = _heads(_lin(h, self.cq_kernel, self.cq_bias), B, T, 1, H, dh)
        k, v = _heads(_lin(c, self.ckv_kernel, self.ckv_bias), B, S, 2, H, dh)
        m = None if cmask is None else np.asarray(cmask, dtype=bool)[:, None, None, :]
        o = ops.scaled_dot_product_attention(q, k, v, attn_mask=m)
        return x + _lin(_merge(o, B, T), self.cout_kernel, self.cout_bias)

    def new_cross_cache(self, context):
        """Keys/values of the encoder output, computed once for decoding."""
        c = _f(context)
        B, S, _ = c.shape
        D = self.input_shape[-1]
        H, dh = self.num_heads, D // self.num_heads
        cache = KVCache(B, H, S, dh, fixed=True)
        k, v = _heads(_lin(c, self.ckv_kernel, self.ckv_bias), B, S, 2, H, dh)
        cache.append(k, v)
        return cache

    def step(self, x, cache, cross_cache, context_mask=None):
        """Incremental decoding: x (B, t, D) next positions; self-attention keys go into
        ``cache``; ``cross_cache`` from :meth:`new_cross_cache`."""
        x = _f(x)
        B, T, D = x.shape
        H, dh = self.num_heads, D // self.num_heads
        x1 = self._sa_step(x, cache)
        h, _ = _ln_fwd(x1, self.ln2_gamma, self.ln2_beta, self.epsilon)
        (q,) = _heads(_lin(h, self.cq_kernel, self.cq_bias), B, T, 1, H, dh)
        m = None if context_mask is None else np.asarray(context_mask, dtype=bool)[:, None, None, :]
        o = _attend_step(q, cross_cache, None, None, m)
        x2 = x1 + _lin(_merge(o, B, T), self.cout_kernel, self.cout_bias)
        return self._ff_step(x2, "ln3_")
