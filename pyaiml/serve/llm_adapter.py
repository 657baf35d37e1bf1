"""Hugging Face checkpoints (pyaiml.llm) behind the server: decoders for the completion routes,
BERT encoders for /v1/embeddings.

What it is:

- :class:`DecoderAdapter`: an :class:`~pyaiml.serve.engine.LMAdapter` for a
  :class:`pyaiml.llm.DecoderLM` (GPT-2, Llama, Mistral, Qwen2; float32 or the int8 folders
  ``pyaiml llm quantize`` writes). Every sequence owns a one-row
  :class:`~pyaiml.llm.cache.KVCache` that starts at its prompt's size and doubles when
  full (a sequence holds memory for the tokens it has, not for ``max_tokens``), so
  sequences join and leave the running batch at any token boundary. A decode step for B
  sequences runs each layer in one native call (the model's ``DecoderLayerPlan``,
  ``run_rows``): one product per weight matrix for the batch, and each row's attention on
  its own cache, with the bits of the one-row step ``generate`` makes at batch 1. Layers
  without a plan run the model's own graph with B rows, attention in one
  ``ops.attention_rows`` call in which each sequence reads its own cache (a step with a
  mask, such as a sliding window, takes the one-row call per sequence). A prompt is
  prefilled in chunks of at most the scheduler's ``prefill_chunk`` tokens; a chunk after
  the first attends bottom-right causally through the same causal kernel the one-shot
  prefill uses (queries padded in front to the key length), so a prompt cut into chunks
  gives the bits of one prefill. Sampling is ``pyaiml.llm.generate``'s (process_logits +
  sample, one uniform draw per token), so a request with ``seed`` s and ``n`` = 1 yields
  ``model.generate(..., seed=s)``'s tokens, greedy or sampled, alone or batched.
  Chat requests are rendered with the checkpoint's chat template (``chat_template`` in
  tokenizer_config.json or chat_template.jinja) and encoded without added special tokens,
  as ``model.chat`` does; a checkpoint without a template gets the plain format of
  :meth:`LMAdapter.chat_prompt`. GPT-2's position table bounds prompt + ``max_tokens``
  (a 400 naming both beyond it); Llama-family models are not bounded by their weights.
- :class:`EncoderEmbeddings`: a :class:`pyaiml.llm.Bert` for ``/v1/embeddings``: one
  vector per input (text, or token ids), the mean of the last hidden states over the real
  tokens, L2-normalised (unit length, like OpenAI's embeddings); inputs longer than
  ``max_position_embeddings`` are a 400.

What it is not: paged attention, prefix caching, speculative decoding, encoder batching
across requests. Tests: tests/test_serve_llm.py (the real openai client against tiny
random GPT-2 / Llama / quantized / BERT checkpoints: streams equal ``generate`` token for
token, also with 16 other requests in the batch and with chunked prefill).
"""
from __future__ import annotations

import math

import numpy as np

from pyaiml import ops
from pyaiml.serve.engine import LMAdapter

_FIRST_CAPACITY = 64  # cache slots beyond the prompt at start; doubled as the sequence grows


class _Seq:
    __slots__ = ("cache", "ids")

    def __init__(self, ids, cache):
        self.ids, self.cache = ids, cache


def _plain(mask_causal):
    mask, causal = mask_causal
    return mask is None and not causal


class _View:
    """The model seen with its attention replaced: ``_embed``/``_block``/``_head`` of the
    model's class run on this object, so every weight and config is the model's own and
    only ``_attend`` (and what ``_embed`` caches, such as RoPE tables) lives here."""

    def __init__(self, model, steps=None):
        self._m = model
        self._steps = steps

    def __getattr__(self, name):
        return getattr(self._m, name)

    def _decode_attend(self, li, qkv, step, scale=None, rope=True):
        return None  # every step goes through _attend below (each sequence has its own cache)

    def _attend(self, li, q, k, v, step, scale=None):
        from pyaiml.llm.models import DecoderLM

        m = self._m
        if self._steps is not None:  # a decode step: row b attends over its own cache
            sliding = m.sliding_layers is not None and m.sliding_layers[li]
            if all(_plain(st.mask(sliding)) for st in self._steps):
                # one call for the batch: each row reads its own cache in place, with the
                # bits of the one-row call below
                keys, values = [], []
                for b, st in enumerate(self._steps):
                    c, s = st.cache, st.start
                    c.k[li, 0, :, s] = k[b, 0]
                    c.v[li, 0, :, s] = v[b, 0]
                    keys.append(c.k[li, 0, :, :st.T])
                    values.append(c.v[li, 0, :, :st.T])
                o = ops.attention_rows(np.ascontiguousarray(q.transpose(0, 2, 1, 3)), keys, values,
                                       1.0 / math.sqrt(m.head_dim) if scale is None else float(scale))
                return o.transpose(0, 2, 1, 3).reshape(q.shape[0], 1, -1)
            return np.concatenate([DecoderLM._attend(m, li, q[b:b + 1], k[b:b + 1], v[b:b + 1], st, scale)
                                   for b, st in enumerate(self._steps)])
        sliding = m.sliding_layers is not None and m.sliding_layers[li]
        mask, causal = step.mask(sliding)
        L, s = q.shape[1], step.start
        if causal or s == 0 or (mask is not None and mask is not step.full_mask):
            return DecoderLM._attend(m, li, q, k, v, step, scale)
        # A later prefill chunk (queries s..s+L-1 over keys 0..s+L-1; also a chunk of one
        # token, which alone would take the kernel's one-row path): the top-left causal
        # kernel on queries padded in front to the key length gives, for the last L rows,
        # exactly what the one-shot prefill's causal call gives them.
        c = step.cache
        c.k[li, :, :, s:s + L] = k.transpose(0, 2, 1, 3)
        c.v[li, :, :, s:s + L] = v.transpose(0, 2, 1, 3)
        qp = np.zeros((q.shape[0], s + L) + q.shape[2:], dtype=q.dtype)
        qp[:, s:] = q
        o = ops.scaled_dot_product_attention(qp.transpose(0, 2, 1, 3), c.k[li, :, :, :step.T], c.v[li, :, :, :step.T],
                                             is_causal=True, scale=scale, enable_gqa=m.num_kv_heads != m.num_heads)
        return o[:, :, s:].transpose(0, 2, 1, 3).reshape(q.shape[0], L, -1)


class DecoderAdapter(LMAdapter):
    """A pyaiml.llm decoder (see the module docstring). ``model`` needs its tokenizer."""

    def __init__(self, model):
        from pyaiml.llm.models import DecoderLM

        if not isinstance(model, DecoderLM):
            raise TypeError(f"DecoderAdapter: model must be a pyaiml.llm decoder (GPT2, Llama). Received "
                            f"{type(model).__name__}")
        if model.tokenizer is None:
            raise ValueError(f"DecoderAdapter: {model.path} has no tokenizer.json, so it cannot take text prompts or "
                             "give text; add the checkpoint's tokenizer.json to the folder")
        self.model = model
        self.tok = model.tokenizer
        self.vocab_size = int(model.vocab_size)
        self.eos_ids = frozenset(int(e) for e in model.eos_token_ids)
        self.max_positions = model.max_positions
        self.context_length = int(model.max_positions or model.config.get("max_position_embeddings") or 0)
        self.model_type = f"pyaiml.llm.{model.family}" + (f"-{model.quantization}" if model.quantization else "")
        self.has_template = self.tok.chat_template is not None
        self.chat_stop = () if self.has_template else LMAdapter.chat_stop
        self._cls = type(model)

    # -- text (any thread) ------------------------------------------------------------
    def encode(self, text):
        return self.tok.encode(text)

    def decode_text(self, ids):
        return self.tok.decode(ids)

    def chat_prompt_ids(self, messages):
        if not self.has_template:
            return super().chat_prompt_ids(messages)
        return self.tok.encode(self.tok.apply_chat_template(messages, add_generation_prompt=True),
                               add_special_tokens=False)

    def check_request(self, prompt_ids, max_tokens):
        P = self.max_positions
        if P is not None and len(prompt_ids) + max(int(max_tokens) - 1, 0) > P:
            raise ValueError(f"this model's maximum context length is {P} tokens; the request needs "
                             f"{len(prompt_ids)} for the prompt and {max_tokens} for the completion")

    def sample(self, logits, temperature, top_p, rng):
        from pyaiml.llm.generate import process_logits, sample

        scores = process_logits(np.asarray(logits)[None], [()], temperature, None, top_p, 1.0)
        return int(sample(scores, rng, temperature == 0.0)[0])

    # -- sequences (the scheduler thread) ---------------------------------------------
    def start(self, prompt_ids):
        ids = [int(t) for t in prompt_ids]
        if not ids:
            raise ValueError("the prompt is empty; give at least one token")
        self.check_request(ids, 1)
        return _Seq(ids, self.model.new_cache(1, self._capacity(len(ids) + _FIRST_CAPACITY)))

    def _capacity(self, n):
        P = self.max_positions
        return n if P is None else min(n, P)

    def _room(self, st, k):
        """Grow the sequence's cache (doubling) so that k more tokens fit."""
        c = st.cache
        if c.length + k <= c.max_len:
            return
        new = self.model.new_cache(1, self._capacity(max(2 * c.max_len, c.length + k)))
        n = c.length
        new.k[:, :, :, :n] = c.k[:, :, :, :n]
        new.v[:, :, :, :n] = c.v[:, :, :, :n]
        new.valid[:, :n] = c.valid[:, :n]
        new.next_pos[:] = c.next_pos
        new.length = n
        st.cache = new

    def pending(self, st):
        return len(st.ids) - st.cache.length

    def append(self, st, token):
        st.ids.append(int(token))

    def release(self, st):
        st.cache = None

    def prefill(self, st, budget):
        k = min(self.pending(st), int(budget))
        if k <= 0:
            return None
        self._room(st, k)
        n = st.cache.length
        chunk = np.asarray([st.ids[n:n + k]], dtype=np.int64)
        from pyaiml.llm.models import _Step

        m, cls, view = self.model, self._cls, _View(self.model)
        step = _Step(st.cache, np.ones(chunk.shape, bool), m.window)
        h = cls._embed(view, chunk, step.positions)
        for i in range(m.num_layers):
            h = cls._block(view, i, h, step)
        if self.pending(st):
            return None
        return cls._head(view, h[:, -1:])[0, 0]

    def decode(self, states):
        from pyaiml.llm import models
        from pyaiml.llm.layers import KERNELS
        from pyaiml.llm.models import _Step

        m, cls = self.model, self._cls
        steps = []
        for st in states:
            self._room(st, 1)
            steps.append(_Step(st.cache, np.ones((1, 1), bool), m.window))
        ids = np.asarray([[st.ids[-1]] for st in states], dtype=np.int64)
        view = _View(m, steps)
        KERNELS.refresh()
        h = cls._embed(view, ids, np.concatenate([s.positions for s in steps]))
        plans = m._decode_plans() if models.FUSED_DECODE_LAYER and KERNELS.native_attention is not None else None
        if plans is not None:  # each layer in one native call, every row on its own cache
            ks, vs = [st.cache.k for st in states], [st.cache.v for st in states]
            starts = [s.start for s in steps]
            cs = (view._cos, view._sin) if m._rope else (None, None)
            windowed = m.sliding_layers is not None and any(s.window_mask is not None for s in steps)
        for i in range(m.num_layers):
            p = None if plans is None or (windowed and m.sliding_layers[i]) else plans[i]
            if p is None:
                h = cls._block(view, i, h, None)
            else:
                B = h.shape[0]
                h = p.run_rows(np.ascontiguousarray(h.reshape(B, -1)), ks, vs, i, starts, *cs).reshape(B, 1, -1)
        return cls._head(view, h)[:, 0]


class EncoderEmbeddings:
    """A pyaiml.llm BERT encoder serving /v1/embeddings (see the module docstring)."""

    model_type = "pyaiml.llm.bert"

    def __init__(self, name, model):
        from pyaiml.llm.models import Bert

        if not isinstance(model, Bert):
            raise TypeError(f"EncoderEmbeddings: model must be a pyaiml.llm Bert. Received {type(model).__name__}")
        self.name, self.model = name, model
        self.dim = int(model.hidden_size)

    def token_ids(self, items):
        """Token id lists of the inputs (texts are tokenized); ValueError naming the item."""
        out = []
        for i, x in enumerate(items):
            if isinstance(x, str):
                if self.model.tokenizer is None:
                    raise ValueError(f"input[{i}]: model '{self.name}' has no tokenizer.json; send token ids")
                ids = self.model.tokenizer.encode(x)
            else:
                ids = x
            V, P = self.model.vocab_size, self.model.max_positions
            if not ids:
                raise ValueError(f"input[{i}] is empty; give at least one token")
            if min(ids) < 0 or max(ids) >= V:
                raise ValueError(f"input[{i}]: token ids must be in [0, {V}). Received {min(ids)}..{max(ids)}")
            if len(ids) > P:
                raise ValueError(f"input[{i}] has {len(ids)} tokens; model '{self.name}' reads at most {P}")
            out.append(list(ids))
        return out

    def embed_ids(self, seqs):
        """(N, D) float32 unit vectors: masked mean of the last hidden states, normalised."""
        L = max(len(s) for s in seqs)
        ids = np.full((len(seqs), L), self.model.pad_token_id, np.int64)
        mask = np.zeros((len(seqs), L), bool)
        for b, s in enumerate(seqs):
            ids[b, :len(s)] = s
            mask[b, :len(s)] = True
        return self.model.embed(ids, attention_mask=mask, pooling="mean", normalize=True)
