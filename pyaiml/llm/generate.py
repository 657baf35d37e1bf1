"""Text generation for pyaiml.llm decoders: prompts in, tokens out, one cached decode step
per token, streamed as text.

``generate(model, prompt, max_new_tokens=64, temperature=0.0, top_k=None, top_p=None,
repetition_penalty=1.0, stop=None, seed=None, ignore_eos=False, callback=None)``:

- prompt: a str, a list of str (a batch), token ids (a list of ints or a 1-D array), or a
  batch of id lists. A batch is left-padded into one KV cache; each sequence keeps its own
  positions, so its tokens are those it would get alone.
- sampling, in this order (transformers' order): repetition penalty over the sequence's
  own prompt and generated tokens (a logit > 0 is divided by the penalty, one < 0
  multiplied), then ``temperature == 0`` -> greedy (argmax, first index on ties); else
  logits / temperature, top-k (ties with the k-th kept), top-p (the smallest set of tokens
  whose probability reaches top_p, at least one) and a draw from NumPy's PCG64 seeded by
  ``seed`` (same seed, same tokens; not the stream torch would draw).
- it stops at an end-of-sequence id (generation_config.json / config.json /
  tokenizer_config.json; the id is kept in ``ids``, not in ``text``), at a stop string
  (``text`` ends before it; ``ids`` hold the token that completed it), or after
  ``max_new_tokens``; ``finish_reason`` says which ("eos", "stop", "length").
- ``callback(piece)`` (``callback(index, piece)`` for a batch) receives the text as it
  becomes final; :func:`stream` is the same as an iterator of pieces (one prompt).

Returns a :class:`Generation` (a list of them for a batch). :func:`chat` renders messages
with the checkpoint's chat template first.

Not here: the graphs (pyaiml.llm.models). Tests: tests/test_llm_generate.py (greedy tokens
identical to transformers' generate, padding, every sampling option, stop strings,
streaming).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from pyaiml import ops
from pyaiml.llm.tokenizer import TextStream


@dataclass
class Generation:
    """One sequence's result: ``text`` (None without a tokenizer), generated ``ids``,
    ``prompt_ids``, ``finish_reason`` ("eos", "stop" or "length") and ``timings``
    (seconds: prefill, decode; decode_steps)."""

    text: str | None
    ids: list
    prompt_ids: list
    finish_reason: str
    timings: dict = field(default_factory=dict)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def check_options(max_new_tokens, temperature, top_k, top_p, repetition_penalty, stop, seed):
    """Validated options; ValueError/TypeError naming the argument otherwise."""
    if not _is_int(max_new_tokens):
        raise TypeError(f"generate: max_new_tokens must be an int. Received {max_new_tokens!r}")
    if max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be >= 0. Received {max_new_tokens}")
    try:
        temperature = float(temperature)
    except (TypeError, ValueError):
        raise TypeError(f"generate: temperature must be a number. Received {temperature!r}") from None
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"generate: temperature must be >= 0 (0 = greedy) and finite. Received {temperature}")
    if top_k is not None:
        if not _is_int(top_k):
            raise TypeError(f"generate: top_k must be an int or None. Received {top_k!r}")
        if top_k < 0:
            raise ValueError(f"generate: top_k must be >= 1 (0 or None = off). Received {top_k}")
        top_k = int(top_k) or None
    if top_p is not None:
        try:
            top_p = float(top_p)
        except (TypeError, ValueError):
            raise TypeError(f"generate: top_p must be a number or None. Received {top_p!r}") from None
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"generate: top_p must be in (0, 1]. Received {top_p}")
        if top_p == 1.0:
            top_p = None
    try:
        repetition_penalty = float(repetition_penalty)
    except (TypeError, ValueError):
        raise TypeError(f"generate: repetition_penalty must be a number. Received {repetition_penalty!r}") from None
    if not (math.isfinite(repetition_penalty) and repetition_penalty > 0):
        raise ValueError(f"generate: repetition_penalty must be > 0 (1 = off). Received {repetition_penalty}")
    if stop is None:
        stop = ()
    elif isinstance(stop, str):
        stop = (stop,)
    else:
        stop = tuple(stop)
    if not all(isinstance(s, str) and s for s in stop):
        raise TypeError(f"generate: stop must be a non-empty str or a list of them. Received {stop!r}")
    if seed is not None and not _is_int(seed):
        raise TypeError(f"generate: seed must be an int or None. Received {seed!r}")
    return int(max_new_tokens), temperature, top_k, top_p, repetition_penalty, stop, seed


def process_logits(logits: np.ndarray, history, temperature, top_k, top_p, repetition_penalty) -> np.ndarray:
    """Scores (B, V) float64 after the repetition penalty, temperature, top-k and top-p
    (removed tokens are -inf). ``history``: per row, the token ids seen so far."""
    x = np.array(logits, dtype=np.float64)
    if repetition_penalty != 1.0:
        for b, seen in enumerate(history):
            if len(seen):
                idx = np.unique(np.asarray(seen, dtype=np.int64))
                v = x[b, idx]
                x[b, idx] = np.where(v > 0, v / repetition_penalty, v * repetition_penalty)
    if temperature == 0.0:
        return x
    x /= temperature
    V = x.shape[-1]
    if top_k is not None and top_k < V:
        kth = np.partition(x, V - top_k, axis=-1)[:, V - top_k:V - top_k + 1]
        x[x < kth] = -np.inf
    if top_p is not None:
        order = np.argsort(x, axis=-1, kind="stable")  # ascending
        xs = np.take_along_axis(x, order, axis=-1)
        p = np.exp(xs - xs[:, -1:])
        p /= p.sum(axis=-1, keepdims=True)
        remove = np.cumsum(p, axis=-1) <= 1.0 - top_p
        remove[:, -1] = False
        rm = np.zeros_like(remove)
        np.put_along_axis(rm, order, remove, axis=-1)
        x[rm] = -np.inf
    return x


def sample(scores: np.ndarray, rng, greedy: bool) -> np.ndarray:
    """Token per row (B,) from processed scores (B, V)."""
    if greedy:
        return scores.argmax(axis=-1)
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))
    c = np.cumsum(p, axis=-1)
    u = rng.random(scores.shape[0]) * c[:, -1]
    out = np.array([np.searchsorted(c[b], u[b], side="right") for b in range(scores.shape[0])])
    return np.minimum(out, scores.shape[-1] - 1)


def _prompts(model, prompt, add_special_tokens=True):
    """(list of id lists, single?) from any accepted prompt form."""
    tok = model.tokenizer

    def enc(t):
        if tok is None:
            raise ValueError(f"generate: {model.path} has no tokenizer.json; pass token ids instead of text")
        return tok.encode(t, add_special_tokens=add_special_tokens)

    if isinstance(prompt, str):
        seqs, single = [enc(prompt)], True
    elif isinstance(prompt, np.ndarray):
        if prompt.dtype.kind not in "iu" or prompt.ndim not in (1, 2):
            raise TypeError(f"generate: an array prompt must hold integer ids, 1-D or 2-D. Received {prompt.dtype} "
                            f"{prompt.shape}")
        single = prompt.ndim == 1
        seqs = [prompt.tolist()] if single else [r.tolist() for r in prompt]
    elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
        seqs, single = [enc(p) for p in prompt], False
    elif isinstance(prompt, (list, tuple)) and prompt and all(_is_int(p) for p in prompt):
        seqs, single = [list(prompt)], True
    elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, (list, tuple, np.ndarray)) for p in prompt):
        seqs, single = [list(np.asarray(p).tolist()) for p in prompt], False
        if not all(all(_is_int(t) for t in s) for s in seqs):
            raise TypeError("generate: a batch of id prompts must hold integer ids")
    else:
        raise TypeError("generate: prompt must be a str, a list of str, a list of token ids or a list of id lists. "
                        f"Received {type(prompt).__name__} {str(prompt)[:80]!r}")
    for i, s in enumerate(seqs):
        if not s:
            raise ValueError(f"generate: prompt {i} is empty (no tokens); a decoder needs at least one")
        if min(s) < 0 or max(s) >= model.vocab_size:
            raise ValueError(f"generate: prompt {i} has token ids outside [0, {model.vocab_size}): "
                             f"min {min(s)}, max {max(s)}")
    return [[int(t) for t in s] for s in seqs], single


def _run(model, prompt, max_new_tokens=64, temperature=0.0, top_k=None, top_p=None, repetition_penalty=1.0,
         stop=None, seed=None, ignore_eos=False, add_special_tokens=True):
    """Generator of (index, piece) events; returns the list of Generation."""
    max_new_tokens, temperature, top_k, top_p, repetition_penalty, stop, seed = check_options(
        max_new_tokens, temperature, top_k, top_p, repetition_penalty, stop, seed)
    seqs, single = _prompts(model, prompt, add_special_tokens)
    tok = model.tokenizer
    if stop and tok is None:
        raise ValueError(f"generate: stop strings need a tokenizer; {model.path} has no tokenizer.json")
    B = len(seqs)
    Lp = max(len(s) for s in seqs)
    cache = model.new_cache(B, Lp + max(max_new_tokens - 1, 0))
    ids = np.full((B, Lp), model.pad_token_id, np.int64)
    valid = np.zeros((B, Lp), bool)
    for b, s in enumerate(seqs):
        ids[b, Lp - len(s):] = s
        valid[b, Lp - len(s):] = True
    rng = np.random.default_rng(seed)
    eos = set() if ignore_eos else set(model.eos_token_ids)
    gen = [[] for _ in range(B)]
    done = [max_new_tokens == 0] * B
    reason = ["length"] * B
    streams = [TextStream(tok, stop) if tok is not None else None for _ in range(B)]
    history = [list(s) for s in seqs] if repetition_penalty != 1.0 else [()] * B
    t0 = time.perf_counter()
    t_prefill = 0.0
    steps = 0
    if max_new_tokens:
        with ops.finite_checks(False):  # this thread only: the activations are the model's own
            logits = model.forward(ids, cache, valid, last_only=True)
        t_prefill = time.perf_counter() - t0
    for step in range(max_new_tokens):
        scores = process_logits(logits, history, temperature, top_k, top_p, repetition_penalty)
        nxt = sample(scores, rng, temperature == 0.0)
        for b in range(B):
            if done[b]:
                continue
            t = int(nxt[b])
            gen[b].append(t)
            if repetition_penalty != 1.0:
                history[b].append(t)
            if t in eos:
                done[b], reason[b] = True, "eos"
            st = streams[b]
            if st is not None:
                piece = st.push(gen[b][:-1] if t in eos else gen[b], final=done[b] or step == max_new_tokens - 1)
                if st.stop_at is not None:
                    done[b], reason[b] = True, "stop"
                if piece:
                    yield b, piece
        if all(done) or step == max_new_tokens - 1:
            break
        feed = np.where(done, model.pad_token_id, nxt).astype(np.int64)[:, None]
        with ops.finite_checks(False):
            logits = model.forward(feed, cache, None, last_only=True)
        steps += 1
    total = time.perf_counter() - t0
    timings = {"prefill_s": t_prefill, "decode_s": total - t_prefill, "decode_steps": steps,
               "prompt_tokens": int(valid.sum()), "batch": B}
    out = []
    for b in range(B):
        st = streams[b]
        text = None if st is None else st.final_text
        out.append(Generation(text, gen[b], seqs[b], reason[b], dict(timings)))
    return out if not single else out[:1]


def _drive(gen_iter, on_piece):
    while True:
        try:
            b, piece = next(gen_iter)
        except StopIteration as e:
            return e.value
        on_piece(b, piece)


def generate(model, prompt, max_new_tokens: int = 64, *, callback=None, **kw):
    """Generate from one prompt (returns a Generation) or a batch (a list); see the module
    docstring for the options."""
    single = _is_single(prompt)

    def on_piece(b, piece):
        if callback is not None:
            callback(piece) if single else callback(b, piece)

    res = _drive(_run(model, prompt, max_new_tokens, **kw), on_piece)
    return res[0] if single else res


def _is_single(prompt) -> bool:
    if isinstance(prompt, str):
        return True
    if isinstance(prompt, np.ndarray):
        return prompt.ndim == 1
    return isinstance(prompt, (list, tuple)) and bool(prompt) and all(_is_int(p) for p in prompt)


def stream(model, prompt, max_new_tokens: int = 64, **kw):
    """Iterator of text pieces for one prompt, as they are generated."""
    if not _is_single(prompt):
        raise TypeError("stream: takes one prompt (a str or one list of ids); use generate(..., callback=) for a batch")
    if model.tokenizer is None:
        raise ValueError(f"stream: {model.path} has no tokenizer.json to turn tokens into text")
    run = _run(model, prompt, max_new_tokens, **kw)
    while True:
        try:
            _, piece = next(run)
        except StopIteration:
            return
        yield piece


def chat(model, messages, max_new_tokens: int = 256, **kw):
    """Render ``messages`` with the checkpoint's chat template and generate the reply."""
    tok = model.tokenizer
    if tok is None:
        raise ValueError(f"chat: {model.path} has no tokenizer.json")
    text = tok.apply_chat_template(messages, add_generation_prompt=True)
    ids = tok.encode(text, add_special_tokens=False)
    return generate(model, ids, max_new_tokens, **kw)
