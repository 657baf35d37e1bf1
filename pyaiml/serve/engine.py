"""Language-model engine of the server: the adapter interface and the continuous-batching scheduler.

What it is:

- :class:`LMAdapter`: the few operations the scheduler and the OpenAI routes need from a
  language model (encode/decode text, start a sequence with its own KV cache, prefill a
  chunk of its prompt, run one decode step for many sequences at once, append a sampled
  token, free it). A model family plugs in by subclassing it; :class:`TransformerLMAdapter`
  serves pyaiml's own ``TransformerLM`` files, pyaiml/serve/llm_adapter.py the Hugging Face
  checkpoints of pyaiml.llm.
- :class:`Scheduler`: one thread per language model that interleaves every running request
  at token boundaries. Each iteration (1) admits waiting requests while fewer than
  ``max_running`` run, (2) runs one batched decode step for every sequence whose prompt is
  in its cache (one GEMM per weight matrix for the whole batch; one attention call in which
  each sequence reads its own cache), and (3) spends up to ``prefill_chunk`` prompt tokens on prefills, so a long
  prompt is cut into chunks and never stalls the running streams for more than one chunk.
  Requests join and leave the batch between steps; a cancelled request (client gone, stop
  string found, timeout) frees its slot and cache at the next step. ``max_queue`` bounds the
  waiting line: :meth:`Scheduler.submit` raises :class:`QueueFull` (HTTP 429) beyond it.

Sampling is the adapter's :meth:`LMAdapter.sample` (by default
:func:`pyaiml.seq.lm.sample_token`) with a per-request ``numpy`` Generator seeded by the
request's ``seed``, and the TransformerLM adapter keeps ``generate``'s context policy
(prompt truncated to its last ``context`` tokens; a full window slides by re-prefilling its
last ``context - context // 4`` tokens), so a request with the same seed, temperature and
top_p yields exactly ``TransformerLM.generate``'s tokens, greedy or sampled, alone or in a
batch of many (pyaiml's GEMM gives every row the same bits whatever the batch size).

What it is not: paged attention or prefix sharing between requests; speculative decoding.
Tests: tests/test_serve_openai.py (streams equal ``generate`` token for token, also with 16
other requests in the batch; cancellation frees the slot; 429 when the queue is full).
"""
from __future__ import annotations

import collections
import threading
import time

import numpy as np


class QueueFull(RuntimeError):
    """The scheduler's waiting line is full (answered with HTTP 429)."""


class LMAdapter:
    """What the server needs from a language model. Subclass and implement every method.

    Attributes: ``context_length`` (int, the longest window), ``eos_ids`` (token ids that
    end a completion), ``model_type`` (a short name for /v1/models).

    A *state* is whatever object the adapter keeps per sequence (its tokens and KV cache).
    The scheduler calls, from its own thread only:

    - ``start(prompt_ids) -> state``
    - ``pending(state) -> int``: tokens appended but not yet run through the model
    - ``prefill(state, budget) -> logits (V,) or None``: run up to ``budget`` pending
      tokens; the logits after the last pending token once all are in, else None
    - ``decode(states) -> logits (B, V)``: one step for sequences with exactly one pending
      token each
    - ``append(state, token)``; ``release(state)``

    The routes call ``encode(text) -> list[int]``, ``decode_text(ids) -> str``,
    ``chat_prompt_ids(messages) -> list[int]`` and ``check_request(prompt_ids, max_tokens)``
    (a ValueError there is the client's 400) from other threads: keep them free of shared
    state. ``sample(logits, temperature, top_p, rng) -> int`` picks each token (the
    default is TransformerLM's sampler; an adapter overrides it to match its own model's
    ``generate``).
    """

    context_length = 0
    eos_ids: frozenset = frozenset()
    model_type = "lm"
    chat_stop = ("\nuser:",)

    def encode(self, text: str) -> list:
        raise NotImplementedError

    def decode_text(self, ids) -> str:
        raise NotImplementedError

    def chat_prompt(self, messages) -> str:
        """The documented plain chat format used when a model has no chat template of its
        own: one ``role: content`` line per message, then ``assistant:`` for the reply
        (which stops at the next ``\\nuser:`` line)."""
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"

    def chat_prompt_ids(self, messages) -> list:
        """The token ids of a chat request's prompt (default: :meth:`chat_prompt`, encoded)."""
        return self.encode(self.chat_prompt(messages))

    def check_request(self, prompt_ids, max_tokens):
        """Raise ValueError (answered 400) for a request the model cannot run, such as one
        longer than its positions; the default accepts every request."""

    def sample(self, logits, temperature, top_p, rng) -> int:
        """One token from logits (V,): greedy at temperature 0, else temperature and
        nucleus sampling with one draw from the request's Generator ``rng``."""
        from pyaiml.seq.lm import sample_token

        t = temperature
        return sample_token(logits, rng, t > 0, t if t > 0 else 1.0, None, top_p)

    def sample_rows(self, logits, reqs) -> list:
        """One token per row of logits (B, V) for the requests ``reqs`` (their
        ``temperature``, ``top_p`` and ``rng``): by default :meth:`sample` row by row; an
        adapter may do the batch at once if every row keeps :meth:`sample`'s result."""
        return [int(self.sample(lg, r.temperature, r.top_p, r.rng)) for lg, r in zip(logits, reqs)]

    def start(self, prompt_ids):
        raise NotImplementedError

    def pending(self, state) -> int:
        raise NotImplementedError

    def prefill(self, state, budget):
        raise NotImplementedError

    def decode(self, states):
        raise NotImplementedError

    def append(self, state, token):
        raise NotImplementedError

    def release(self, state):
        pass


class _Seq:
    __slots__ = ("caches", "n", "out", "s")

    def __init__(self, out, s):
        self.out, self.s, self.caches, self.n = out, s, None, 0


class TransformerLMAdapter(LMAdapter):
    """pyaiml.seq.TransformerLM behind the scheduler (its tokenizer is needed for text)."""

    model_type = "pyaiml.TransformerLM"

    def __init__(self, lm):
        if lm.tokenizer is None:
            raise ValueError("TransformerLMAdapter: the model has no tokenizer, so it cannot take text prompts "
                             "(save it with TransformerLM(tokenizer=...))")
        self.lm = lm
        self.tok = lm.tokenizer
        self.context_length = int(lm.context)
        self.vocab_size = int(lm.config["vocab_size"])
        self._keep = self.context_length - self.context_length // 4
        self.eos_ids = frozenset(self.tok.special_id(s) for s in ("<eos>", "</s>", "<|endoftext|>")
                                 if s in self.tok.specials)
        self._emb = lm.embedding
        self._blocks = list(lm.blocks)

    def encode(self, text):
        return self.tok.encode(text).tolist()

    def sample_rows(self, logits, reqs):
        """:meth:`LMAdapter.sample` for the batch: the rows sampled at a temperature without
        top_p go through :func:`pyaiml.seq.lm.sample_tokens` at once (the same arithmetic,
        so the same tokens); greedy and nucleus rows one by one."""
        from pyaiml.seq.lm import sample_tokens

        out = [None] * len(reqs)
        plain = [i for i, r in enumerate(reqs) if r.temperature > 0 and r.top_p is None]
        if len(plain) > 1:
            toks = sample_tokens(logits[plain], [reqs[i].rng for i in plain], [reqs[i].temperature for i in plain])
            for i, t in zip(plain, toks):
                out[i] = t
        for i, r in enumerate(reqs):
            if out[i] is None:
                out[i] = int(self.sample(logits[i], r.temperature, r.top_p, r.rng))
        return out

    def decode_text(self, ids):
        return self.tok.decode(ids if type(ids) is list else np.asarray(ids, dtype=np.int64))

    def start(self, prompt_ids):
        out = [int(t) for t in prompt_ids]
        if not out:
            raise ValueError("the prompt is empty; give at least one token")
        return _Seq(out, max(0, len(out) - self.context_length))

    def pending(self, st):
        return len(st.out) - st.s - st.n

    def append(self, st, token):
        st.out.append(int(token))
        if len(st.out) - st.s > self.context_length:  # the window is full: slide as generate does
            st.s = len(st.out) - self._keep
            st.caches, st.n = None, 0

    def _caches(self, st):
        if st.caches is None:
            st.caches = [b.new_cache(1, self.context_length) for b in self._blocks]
            st.n = 0
        return st.caches

    def prefill(self, st, budget):
        caches = self._caches(st)
        k = min(self.pending(st), int(budget))
        new = np.asarray(st.out[st.s + st.n: st.s + st.n + k], dtype=np.int64)[None]
        h = self._emb.forward(new, False, start=st.n)
        # A one-token chunk of a longer prompt attends through an explicit mask: the
        # attention kernel then takes its prefill path for the row, as the one-shot prefill
        # (``generate``) does, instead of its one-row decode path (other bits).
        one = k == 1 and not (st.n == 0 and self.pending(st) == 1)
        mask = np.ones((1, 1, 1, st.n + 1), bool) if one else None
        for b, c in zip(self._blocks, caches):
            h = b.step(h, c, mask)
        st.n += k
        return None if self.pending(st) else self.lm._head(h[:, -1:])[0, 0]

    def decode(self, states):
        from pyaiml.seq.layers import _f

        for st in states:
            self._caches(st)
        h = _f(self._emb.step_rows([st.out[-1] for st in states], [st.n for st in states]))
        for li, b in enumerate(self._blocks):
            h = _block_rows(b, h, [st.caches[li] for st in states])
        for st in states:
            st.n += 1
        return self.lm._head(h)[:, 0]

    def release(self, st):
        st.caches = None


def _block_rows(b, x, caches):
    """One decode position for B sequences through a causal TransformerEncoderBlock: the
    projections and feed-forward run as one (B, D) GEMM each, attention as one
    ``ops.attention_rows`` call in which each sequence reads its own cache in place (every
    row gets the bits of ``block.step`` with B = 1)."""
    from pyaiml import ops
    from pyaiml.seq.layers import _heads, _lin, _ln_fwd, _merge

    B, T, D = x.shape
    H = b.num_heads
    h, _ = _ln_fwd(x, b.ln1_gamma, b.ln1_beta, b.epsilon)
    q, k, v = _heads(_lin(h, b.qkv_kernel, b.qkv_bias), B, T, 3, H, D // H)
    keys, values = [], []
    for i, c in enumerate(caches):
        c.append(k[i:i + 1], v[i:i + 1])
        keys.append(c.k[0, :, :c.n])
        values.append(c.v[0, :, :c.n])
    o = ops.attention_rows(q, keys, values)
    x = x + _lin(_merge(o, B, T), b.out_kernel, b.out_bias)
    return b._ff_step(x, "ln2_")


# ---------------------------------------------------------------------- scheduler
class GenRequest:
    """One sequence to generate. ``sink(event)`` receives, from the scheduler thread,
    ``("token", id)`` for each token, then ``("done", finish_reason)`` (``"stop"`` at an
    end-of-sequence token, ``"length"`` at ``max_tokens``, ``"cancelled"``) or
    ``("error", message)``."""

    def __init__(self, prompt_ids, max_tokens, sink, temperature=1.0, top_p=None, seed=None):
        self.prompt_ids = list(prompt_ids)
        self.max_tokens = int(max_tokens)
        self.sink = sink
        self.temperature = float(temperature)
        self.top_p = None if top_p is None or float(top_p) >= 1 else float(top_p)
        self.rng = np.random.default_rng(seed)
        self.generated = 0
        self.cancelled = False
        self.state = None
        self.t_submit = time.monotonic()

    def cancel(self):
        """Stop at the next token boundary and free the slot (thread-safe)."""
        self.cancelled = True


class Scheduler:
    """Continuous batching over one :class:`LMAdapter` (see the module docstring).

    on_step(batch_size, running, waiting): called after each decode step (metrics).
    """

    def __init__(self, adapter, max_running=32, max_queue=256, prefill_chunk=256, on_step=None, name="lm"):
        for n, v in (("max_running", max_running), ("max_queue", max_queue), ("prefill_chunk", prefill_chunk)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Scheduler: {n} must be an integer >= 1. Received {v!r}")
        self.adapter = adapter
        self.max_running = max_running
        self.max_queue = max_queue
        self.prefill_chunk = prefill_chunk
        self.on_step = on_step
        self._waiting = collections.deque()
        self._running = []
        self._cv = threading.Condition()
        self._stop = False
        self.steps = 0
        self._thread = threading.Thread(target=self._run, name=f"scheduler-{name}", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    def submit(self, req: GenRequest):
        with self._cv:
            if self._stop:
                raise RuntimeError("the scheduler is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"the queue of this model is full ({self.max_queue} waiting requests); retry later")
            self._waiting.append(req)
            self._cv.notify()

    def close(self, timeout=10.0):
        """Stop after the requests already admitted or waiting have finished."""
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout)

    # -- the loop ---------------------------------------------------------------------
    @staticmethod
    def _send(req, ev):
        try:
            req.sink(ev)
        except Exception:  # noqa: BLE001 - a gone client must not stop the others
            req.cancelled = True

    def _finish(self, req, reason):
        if req.state is not None:
            try:
                self.adapter.release(req.state)
            except Exception:  # noqa: BLE001, S110 - releasing is best effort
                pass
            req.state = None
        self._send(req, ("done", reason))

    def _token(self, req, logits=None, tok=None):
        if tok is None:
            tok = int(self.adapter.sample(logits, req.temperature, req.top_p, req.rng))
        req.generated += 1
        self._send(req, ("token", tok))
        if tok in self.adapter.eos_ids:
            return "stop"
        if req.generated >= req.max_tokens:
            return "length"
        self.adapter.append(req.state, tok)
        return None

    def _run(self):
        from pyaiml.ops import _validate

        with _validate.finite_checks(False):  # logits are the model's own; skip the input scans
            while True:
                with self._cv:
                    while not self._waiting and not self._running and not self._stop:
                        self._cv.wait()
                    if self._stop and not self._waiting and not self._running:
                        return
                    admit = []
                    while self._waiting and len(self._running) + len(admit) < self.max_running:
                        admit.append(self._waiting.popleft())
                for req in admit:
                    if req.cancelled:
                        self._send(req, ("done", "cancelled"))
                        continue
                    try:
                        req.state = self.adapter.start(req.prompt_ids)
                    except Exception as e:  # noqa: BLE001 - one bad request fails alone
                        self._send(req, ("error", f"{type(e).__name__}: {e}"))
                        continue
                    self._running.append(req)
                try:
                    self._iteration()
                except Exception as e:  # noqa: BLE001 - never a dead worker: fail the batch, go on
                    for req in self._running:
                        self._send(req, ("error", f"{type(e).__name__}: {e}"))
                        req.cancelled = True
                    self._reap()

    def _reap(self, done=None):
        keep = []
        for req in self._running:
            reason = (done or {}).get(id(req))
            if reason is None and req.cancelled:
                reason = "cancelled"
            if reason is None:
                keep.append(req)
            else:
                self._finish(req, reason)
        self._running = keep

    def _iteration(self):
        self._reap()
        a = self.adapter
        dec, pre = [], []
        for req in self._running:
            (dec if a.pending(req.state) == 1 else pre).append(req)
        done = {}
        if dec:
            logits = a.decode([r.state for r in dec])
            for r, tok in zip(dec, a.sample_rows(logits, dec)):
                reason = self._token(r, tok=tok)
                if reason:
                    done[id(r)] = reason
            self.steps += 1
        budget = self.prefill_chunk
        for r in pre:
            if budget <= 0:
                break
            k = min(a.pending(r.state), budget)
            lg = a.prefill(r.state, k)
            budget -= k
            if lg is not None:
                reason = self._token(r, lg)
                if reason:
                    done[id(r)] = reason
        self._reap(done)
        if self.on_step is not None and dec:
            try:
                self.on_step(len(dec), len(self._running), len(self._waiting))
            except Exception:  # noqa: BLE001, S110 - metrics must never break serving
                pass
