"""OpenAI-compatible routes: /v1/models, /v1/completions, /v1/chat/completions, /v1/embeddings.

What it is: the request and response formats of OpenAI's API, enough for the official
``openai`` Python client to work unchanged (``base_url`` pointed at this server):

- ``POST /v1/completions``: ``prompt`` (a string, a list of strings, token ids or a list
  of token-id lists), ``max_tokens`` (default 16), ``temperature`` (default 1; 0 is
  greedy), ``top_p``, ``n``, ``stop`` (up to 4 strings; the text is cut before the first
  match, finish_reason "stop"), ``seed`` (choice i of a prompt samples with seed + i, so
  ``seed=s, n=1`` gives exactly ``TransformerLM.generate(..., seed=s)``), ``echo``,
  ``stream`` (server-sent events, ``data: [DONE]`` last; ``stream_options.include_usage``
  adds a final usage chunk), ``usage`` counts.
- ``POST /v1/chat/completions``: ``messages`` rendered by the adapter's chat format (a
  checkpoint's own chat template; for TransformerLM and checkpoints without one:
  ``role: content`` lines then ``assistant:``, stopping at the next ``\\nuser:``),
  ``max_tokens``/``max_completion_tokens`` (default 256), the same sampling fields,
  streaming as ``chat.completion.chunk`` deltas.
- ``POST /v1/embeddings``: Word2Vec/KeyedVectors models give one vector per input string,
  the mean of the vectors of its words (``pyaiml.text.tokenize.simple_tokenize``; words
  not in the vocabulary are skipped; a text with no known word is a 400);
  ``encoding_format`` ``float`` or ``base64`` (little-endian float32, what the client asks
  for by default); ``usage.prompt_tokens`` counts the words. BERT checkpoint folders: one
  unit vector per input string or token-id list (mean of the last hidden states),
  ``usage.prompt_tokens`` counts the tokens.
- ``GET /v1/models``, ``GET /v1/models/{id}``.

Errors use OpenAI's body ``{"error": {"message", "type", "param", "code"}}``: 400 for a
malformed request (naming the field, the rule and what was received), 404 for an unknown
model, 413 for a body above the limit, 429 when the model's queue is full, 504 after the
request timeout. Not supported (400 when asked for): logprobs, logit_bias, non-zero
presence/frequency penalties, tools, best_of > n.

What it is not: the Assistants, Files, Images or Audio APIs.
Tests: tests/test_serve_openai.py and tests/test_serve_llm.py (with the real openai client,
streaming included).
"""
from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid

import numpy as np

from pyaiml.serve.app import HTTPError, _openai_error_body, read_body
from pyaiml.serve.engine import GenRequest, QueueFull


def _bad(msg, param=None):
    return HTTPError(400, msg, code="invalid_value", param=param)


def _int(body, name, default, lo, hi=None):
    v = body.get(name, default)
    if v is None:
        v = default
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise _bad(f"'{name}' must be an integer {rng}. Received {v!r}", name)
    return v


def _num(body, name, default, lo, hi, lo_open=False):
    v = body.get(name, default)
    if v is None:
        v = default
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and (v > lo if lo_open else v >= lo) and v <= hi
    if not ok:
        raise _bad(f"'{name}' must be a number in {'(' if lo_open else '['}{lo}, {hi}]. Received {v!r}", name)
    return float(v)


def _stops(body):
    s = body.get("stop")
    if s is None:
        return []
    if isinstance(s, str):
        s = [s]
    if not isinstance(s, list) or len(s) > 4 or not all(isinstance(x, str) and x for x in s):
        raise _bad(f"'stop' must be a non-empty string or a list of at most 4 of them. Received {s!r:.80}", "stop")
    return s


def _unsupported(body):
    if body.get("logprobs") not in (None, False, 0):
        raise _bad("'logprobs' is not supported by this server", "logprobs")
    if body.get("top_logprobs") not in (None, 0):
        raise _bad("'top_logprobs' is not supported by this server", "top_logprobs")
    if body.get("logit_bias"):
        raise _bad("'logit_bias' is not supported by this server", "logit_bias")
    for p in ("presence_penalty", "frequency_penalty"):
        if body.get(p) not in (None, 0, 0.0):
            raise _bad(f"'{p}' is not supported by this server (only 0)", p)
    if body.get("tools") or body.get("functions"):
        raise _bad("tools / function calling is not supported by this server", "tools")
    bo = body.get("best_of")
    if bo is not None and bo != body.get("n", 1):
        raise _bad("'best_of' other than n is not supported by this server", "best_of")


def _hold(text, stops):
    """How many trailing characters of ``text`` may still become a stop string: they are
    held back from a stream until decided."""
    h = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                h = max(h, k)
                break
    return h


class _Mailbox:
    """Events from the scheduler thread to one event loop, one loop wake-up per burst: a
    decode step of B streams posts B tokens, and the loop runs them in one callback instead
    of B ``call_soon_threadsafe`` wake-ups. Order is kept. Posting to a closed loop raises
    RuntimeError (the scheduler then cancels the request)."""

    def __init__(self, loop):
        self.loop = loop
        self._items = []
        self._lock = threading.Lock()
        self._armed = False

    def post(self, fn, arg):
        if self.loop.is_closed():
            raise RuntimeError("the event loop is closed")
        with self._lock:
            self._items.append((fn, arg))
            if self._armed:
                return
            self._armed = True
        try:
            self.loop.call_soon_threadsafe(self._flush)
        except RuntimeError:
            with self._lock:
                self._armed = False
            raise

    def _flush(self):
        with self._lock:
            items, self._items, self._armed = self._items, [], False
        for fn, arg in items:
            fn(arg)


_TIMED_OUT = ("timeout", None)  # the marker a request's timer puts in its event queue


def _mailbox(st, loop):
    mb = getattr(st, "mailbox", None)
    if mb is None or mb.loop is not loop:
        mb = st.mailbox = _Mailbox(loop)
    return mb


def _sse_chunk(head, tail, index, delta, finish, chat, first=False):
    """One streamed chunk: ``head`` is the JSON of the fields before "choices" up to the
    choice's index (see ``_chunk_head``), ``tail`` what follows the choices list. The common
    chunk (text, no finish reason) is formatted directly; it is the JSON that json.dumps
    gives for the same object (tests/test_serve_detok.py checks)."""
    if finish is None and not first and delta:
        body = (f'"delta":{{"content":{json.dumps(delta)}}}' if chat else f'"text":{json.dumps(delta)}')
        return f'{head}{index},{body},"logprobs":null,"finish_reason":null}}]{tail}}}\n\n'
    if chat:
        d = {"role": "assistant", "content": delta} if first else ({"content": delta} if delta else {})
        ch = {"delta": d, "logprobs": None, "finish_reason": finish}
    else:
        ch = {"text": delta, "logprobs": None, "finish_reason": finish}
    rest = json.dumps(ch, separators=(",", ":"))[1:]  # without its "{": the index goes first
    return f'{head}{index},{rest}]{tail}}}\n\n'


def _chunk_head(cid, obj, created, model):
    return (f'data: {{"id":{json.dumps(cid)},"object":{json.dumps(obj)},"created":{int(created)},'
            f'"model":{json.dumps(model)},"choices":[{{"index":')


class _Choice:
    __slots__ = ("echo", "finish", "ids", "index", "prefix", "read", "req", "sent", "t_first", "t_last", "text")

    def __init__(self, index, req, echo=""):
        self.index, self.req, self.ids, self.sent, self.finish = index, req, [], 0, None
        self.text, self.prefix, self.read = "", 0, 0
        self.t_first = self.t_last = None
        self.echo = echo

    def advance(self, adapter):
        """Bring ``text`` (the decoded text of ``ids`` up to its last complete character) up
        to date after new tokens, decoding only the tokens since the previous complete point
        (and the chunk before it, so that tokenizers that drop a leading space at the start
        of a decode do so on both sides of the difference). Byte-fallback tokens decode to
        U+FFFD until their character is complete: then nothing changes until it is. A
        tokenizer whose tail decode does not extend the earlier one gets a full decode."""
        ids = self.ids
        new = adapter.decode_text(ids[self.prefix:])
        if new.endswith("\ufffd"):
            return
        old = adapter.decode_text(ids[self.prefix:self.read]) if self.read > self.prefix else ""
        if new.startswith(old):
            self.text += new[len(old):]
        else:
            self.text = adapter.decode_text(ids)
        self.prefix, self.read = self.read, len(ids)


async def _run(st, name, adapter, scheduler, prompts, params, stops, t0):
    """Submit every choice; return (choices, async iterator of (choice, delta, finish))."""
    mailbox = _mailbox(st, asyncio.get_running_loop())
    q = asyncio.Queue()
    choices = []
    n = params["n"]

    def sink_for(i):
        def sink(ev):  # a closed loop raises RuntimeError: the scheduler then cancels the request
            mailbox.post(q.put_nowait, (i, ev))
        return sink

    try:
        for p, (ids, echo) in enumerate(prompts):
            for j in range(n):
                i = p * n + j
                seed = None if params["seed"] is None else params["seed"] + j
                req = GenRequest(ids, params["max_tokens"], sink_for(i), params["temperature"], params["top_p"], seed)
                choices.append(_Choice(i, req, echo))
                if params["max_tokens"] > 0:
                    scheduler.submit(req)
    except QueueFull as e:
        for c in choices:
            c.req.cancel()
        raise HTTPError(429, str(e), code="queue_full") from None

    mt = st.metrics
    timeout = st.limits["timeout"]

    def step(c, ev):
        """(text to send, finish reason or None) after one scheduler event of choice c."""
        kind = ev[0]
        if kind == "error":
            raise HTTPError(500, f"generation failed: {ev[1]}")
        if kind != "token":  # done
            c.finish = "stop" if ev[1] == "stop" else "length"
            return adapter.decode_text(c.ids)[c.sent:], c.finish
        now = time.monotonic()
        if c.t_first is None:
            c.t_first = now
            if all(x.t_first is None or x is c for x in choices):
                mt.ttft.labels(name).observe(now - t0)
        c.t_last = now
        c.ids.append(ev[1])
        # Text is final up to the last point where it does not end inside a multi-byte
        # character; only that part is searched and sent.
        c.advance(adapter)
        text = c.text
        cut = min((k for k in (text.find(s) for s in stops) if k >= 0), default=-1) if stops else -1
        if cut >= 0:
            c.finish = "stop"
            c.req.cancel()
            return text[c.sent:cut], "stop"
        safe = len(text) - (_hold(text, stops) if stops else 0)
        if safe > c.sent:
            delta, c.sent = text[c.sent:safe], safe
            return delta, None
        return "", None

    async def events():
        active = {c.index for c in choices}
        for c in choices:
            if params["max_tokens"] == 0:
                c.finish = "length"
                active.discard(c.index)
                yield c, c.echo, "length"
            elif c.echo:
                yield c, c.echo, None
        # The request's time limit: one timer that drops a marker into the queue (rather
        # than a wait_for, which makes a task, per token).
        loop = asyncio.get_running_loop()
        timer = loop.call_at(loop.time() + timeout - (time.monotonic() - t0), q.put_nowait, _TIMED_OUT)
        try:
            while active:
                evs = [await q.get()]
                while not q.empty():  # a consumer that lags gets the tokens queued so far in one chunk
                    evs.append(q.get_nowait())
                if _TIMED_OUT in evs:
                    raise asyncio.TimeoutError
                out = {}
                for i, ev in evs:
                    c = choices[i]
                    if c.finish is not None:
                        continue
                    delta, finish = step(c, ev)
                    if finish is not None:
                        active.discard(i)
                    if delta or finish is not None:
                        d = out.setdefault(i, ["", None])
                        d[0] += delta
                        d[1] = finish
                for i, (delta, finish) in out.items():
                    yield choices[i], delta, finish
        except asyncio.TimeoutError:
            raise HTTPError(504, f"the request took longer than the server's limit of {timeout:g} s") from None
        finally:
            timer.cancel()
            for c in choices:
                c.req.cancel()  # a client gone mid-stream frees its slots at the next step
            gen = sum(len(c.ids) for c in choices)
            mt.gen_tokens.labels(name).inc(gen)
            for c in choices:
                if c.t_first is not None and c.t_last > c.t_first and len(c.ids) > 1:
                    mt.tps.labels(name).observe((len(c.ids) - 1) / (c.t_last - c.t_first))

    return choices, events()


def openai_routes(st):
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    def err(e: HTTPError):
        return Response(_openai_error_body(e.status, e.message, e.code, e.param), status_code=e.status,
                        media_type="application/json")

    def handler(fn):
        async def h(request):
            try:
                return await fn(request)
            except HTTPError as e:
                return err(e)
            except Exception as e:
                import logging

                logging.getLogger("pyaiml.serve").exception("/v1 request failed")
                return err(HTTPError(500, f"{type(e).__name__}: {e}"))
        return h

    async def json_body(request):
        raw = await read_body(request, st)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise _bad(f"the request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise _bad(f"the request body must be a JSON object. Received {type(body).__name__}")
        return body

    def lm_of(body, request):
        name = body.get("model")
        if not isinstance(name, str):
            raise _bad(f"'model' must be a string naming a model. Received {name!r:.60}", "model")
        request.state.model = name
        if name not in st.lms:
            extra = " (an embedding model: use /v1/embeddings)" if name in st.vectors or name in st.encoders else ""
            raise HTTPError(404, f"The model '{name}' does not exist{extra}; language models here: {sorted(st.lms)}",
                            code="model_not_found", param="model")
        if not st.ready:
            raise HTTPError(503, "the server is shutting down")
        return name, st.lms[name]

    def sampling(body, default_max):
        limit = st.limits["max_tokens"]
        mt = body.get("max_completion_tokens", body.get("max_tokens"))
        params = {"max_tokens": _int({"max_tokens": mt}, "max_tokens", min(default_max, limit), 0, limit),
                  "temperature": _num(body, "temperature", 1.0, 0.0, 2.0),
                  "top_p": _num(body, "top_p", 1.0, 0.0, 1.0, lo_open=True),
                  "n": _int(body, "n", 1, 1, 16),
                  "seed": body.get("seed")}
        if params["seed"] is not None and (isinstance(params["seed"], bool) or not isinstance(params["seed"], int)):
            raise _bad(f"'seed' must be an integer. Received {params['seed']!r}", "seed")
        stream = body.get("stream", False)
        if not isinstance(stream, bool) and stream is not None:
            raise _bad(f"'stream' must be true or false. Received {stream!r}", "stream")
        so = body.get("stream_options") or {}
        if not isinstance(so, dict):
            raise _bad("'stream_options' must be an object", "stream_options")
        _unsupported(body)
        return params, bool(stream), bool(so.get("include_usage"))

    def prompt_ids(adapter, p, where):
        if isinstance(p, str):
            try:
                ids = adapter.encode(p)
            except ValueError as e:
                raise _bad(f"'{where}': {e}", "prompt") from None
            if not ids:
                raise _bad(f"'{where}' is empty; give at least one token", "prompt")
            return ids
        if isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
            V = getattr(adapter, "vocab_size", None)
            if V is not None and any(t < 0 or t >= V for t in p):
                raise _bad(f"'{where}': token ids must be in [0, {V}). Received {min(p)}..{max(p)}", "prompt")
            return list(p)
        raise _bad(f"'{where}' must be a non-empty string or a list of token ids. Received {p!r:.60}", "prompt")

    def usage(prompts, choices):
        pt = sum(len(ids) for ids, _ in prompts)
        ct = sum(len(c.ids) for c in choices)
        return {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}

    def sse(obj):
        return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"

    async def generate(request, chat):
        t0 = time.monotonic()
        body = await json_body(request)
        name, (adapter, sch) = lm_of(body, request)
        params, stream, include_usage = sampling(body, 256 if chat else 16)
        stops = _stops(body)
        if chat:
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs:
                raise _bad(f"'messages' must be a non-empty list. Received {msgs!r:.60}", "messages")
            norm = []
            for i, m in enumerate(msgs):
                if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                    raise _bad(f"messages[{i}] must be an object with a string 'role'. Received {m!r:.60}", "messages")
                c = m.get("content")
                if isinstance(c, list):  # content parts: only text
                    if not all(isinstance(x, dict) and x.get("type") == "text" and isinstance(x.get("text"), str)
                               for x in c):
                        raise _bad(f"messages[{i}].content: only text parts are supported", "messages")
                    c = "".join(x["text"] for x in c)
                if not isinstance(c, str):
                    raise _bad(f"messages[{i}].content must be a string. Received {c!r:.60}", "messages")
                norm.append({"role": m["role"], "content": c})
            try:
                ids = adapter.chat_prompt_ids(norm)
            except (ValueError, TypeError) as e:  # e.g. a role the chat template refuses
                raise _bad(f"'messages': {e}", "messages") from None
            if not ids:
                raise _bad("'messages' render to an empty prompt", "messages")
            prompts = [(ids, "")]
            stops = stops + [s for s in adapter.chat_stop if s not in stops]
        else:
            p = body.get("prompt")
            echo = body.get("echo", False)
            if not isinstance(echo, bool):
                raise _bad(f"'echo' must be true or false. Received {echo!r}", "echo")
            if isinstance(p, list) and p and all(isinstance(x, (str, list)) for x in p):
                items = p
            else:
                items = [p]
            prompts = []
            for k, x in enumerate(items):
                ids = prompt_ids(adapter, x, "prompt" if len(items) == 1 else f"prompt[{k}]")
                prompts.append((ids, (x if isinstance(x, str) else adapter.decode_text(ids)) if echo else ""))
        for ids, _ in prompts:
            try:
                adapter.check_request(ids, params["max_tokens"])
            except ValueError as e:
                raise _bad(str(e), "max_tokens") from None
        st.metrics.prompt_tokens.labels(name).inc(sum(len(ids) for ids, _ in prompts))
        choices, events = await _run(st, name, adapter, sch, prompts, params, stops, t0)
        cid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        obj = "chat.completion" if chat else "text_completion"

        if not stream:
            texts = {c.index: [] for c in choices}
            async for c, delta, _ in events:
                texts[c.index].append(delta)
            out = []
            for c in choices:
                t = "".join(texts[c.index])
                if chat:
                    out.append({"index": c.index, "message": {"role": "assistant", "content": t},
                                "logprobs": None, "finish_reason": c.finish})
                else:
                    out.append({"index": c.index, "text": t, "logprobs": None, "finish_reason": c.finish})
            return JSONResponse({"id": cid, "object": obj, "created": created, "model": name, "choices": out,
                                 "usage": usage(prompts, choices), "system_fingerprint": None})

        chunk_obj = "chat.completion.chunk" if chat else "text_completion"
        head = _chunk_head(cid, chunk_obj, created, name)
        tail = ',"usage":null' if include_usage else ""

        def chunk(c, delta, finish, first=False):
            return _sse_chunk(head, tail, c.index, delta, finish, chat, first)

        async def body_iter():
            started = set()
            try:
                if chat:
                    for c in choices:
                        started.add(c.index)
                        yield chunk(c, "", None, first=True)
                async for c, delta, finish in events:
                    if delta:
                        yield chunk(c, delta, None)
                    if finish:
                        yield chunk(c, "", finish)
                if include_usage:
                    yield sse({"id": cid, "object": chunk_obj, "created": created, "model": name, "choices": [],
                               "usage": usage(prompts, choices)})
                yield "data: [DONE]\n\n"
            except HTTPError as e:
                yield sse(json.loads(_openai_error_body(e.status, e.message, e.code)))
            finally:
                await events.aclose()

        return StreamingResponse(body_iter(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def completions(request):
        return await generate(request, chat=False)

    async def chat_completions(request):
        return await generate(request, chat=True)

    async def embeddings(request):
        body = await json_body(request)
        name = body.get("model")
        if not isinstance(name, str):
            raise _bad(f"'model' must be a string naming a model. Received {name!r:.60}", "model")
        request.state.model = name
        vm = st.vectors.get(name)
        if vm is None and name in st.encoders:
            return await encoder_embeddings(body, name, st.encoders[name])
        if vm is None:
            raise HTTPError(404, f"The model '{name}' does not exist or has no embeddings; embedding models here: "
                                 f"{sorted(st.vectors) + sorted(st.encoders)}", code="model_not_found", param="model")
        inp = body.get("input")
        items = [inp] if isinstance(inp, str) else inp
        if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
            raise _bad(f"'input' must be a string or a non-empty list of strings (token-id input is not supported "
                       f"for word vectors). Received {inp!r:.60}", "input")
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise _bad(f"'encoding_format' must be 'float' or 'base64'. Received {fmt!r}", "encoding_format")
        D = int(vm.kv.vector_size)
        dims = body.get("dimensions")
        if dims is not None and dims != D:
            raise _bad(f"'dimensions' must be {D} (the model's vector size) or absent. Received {dims!r}", "dimensions")
        data, ntok = [], 0
        for i, text in enumerate(items):
            v, nt, _ = vm.embed(text)
            ntok += nt
            if v is None:
                raise _bad(f"input[{i}] has no word in the vocabulary of model '{name}' ({nt} word(s): "
                           f"{text[:40]!r})", "input")
            emb = base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode() if fmt == "base64" \
                else [float(x) for x in v]
            data.append({"object": "embedding", "index": i, "embedding": emb})
        st.metrics.prompt_tokens.labels(name).inc(ntok)
        return JSONResponse({"object": "list", "data": data, "model": name,
                             "usage": {"prompt_tokens": ntok, "total_tokens": ntok}})

    def embedding_format(body, D):
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise _bad(f"'encoding_format' must be 'float' or 'base64'. Received {fmt!r}", "encoding_format")
        dims = body.get("dimensions")
        if dims is not None and dims != D:
            raise _bad(f"'dimensions' must be {D} (the model's vector size) or absent. Received {dims!r}", "dimensions")
        return fmt

    def embedding_entry(i, v, fmt):
        emb = base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode() if fmt == "base64" \
            else [float(x) for x in v]
        return {"object": "embedding", "index": i, "embedding": emb}

    async def encoder_embeddings(body, name, em):
        from starlette.concurrency import run_in_threadpool

        inp = body.get("input")

        def is_ids(x):
            return isinstance(x, list) and bool(x) and all(isinstance(t, int) and not isinstance(t, bool) for t in x)

        items = [inp] if isinstance(inp, str) or is_ids(inp) else inp
        if not isinstance(items, list) or not items or not all(isinstance(x, str) or is_ids(x) for x in items):
            raise _bad("'input' must be a string, a list of strings, a list of token ids or a list of such lists "
                       f"(none empty). Received {inp!r:.60}", "input")
        fmt = embedding_format(body, em.dim)
        try:
            seqs = em.token_ids(items)
        except ValueError as e:
            raise _bad(str(e), "input") from None
        E = await run_in_threadpool(em.embed_ids, seqs)
        ntok = sum(len(s) for s in seqs)
        st.metrics.prompt_tokens.labels(name).inc(ntok)
        return JSONResponse({"object": "list", "data": [embedding_entry(i, v, fmt) for i, v in enumerate(E)],
                             "model": name, "usage": {"prompt_tokens": ntok, "total_tokens": ntok}})

    def model_entry(name):
        owned = "pyaiml"
        return {"id": name, "object": "model", "created": st.created, "owned_by": owned}

    async def list_models(request):
        names = list(st.lms) + [n for n in st.vectors if n not in st.lms] + list(st.encoders)
        return JSONResponse({"object": "list", "data": [model_entry(n) for n in names]})

    async def get_model(request):
        name = request.path_params["name"]
        if name not in st.lms and name not in st.vectors and name not in st.encoders:
            raise HTTPError(404, f"The model '{name}' does not exist", code="model_not_found", param="model")
        return JSONResponse(model_entry(name))

    return [Route("/v1/models", handler(list_models), methods=["GET"]),
            Route("/v1/models/{name}", handler(get_model), methods=["GET"]),
            Route("/v1/completions", handler(completions), methods=["POST"]),
            Route("/v1/chat/completions", handler(chat_completions), methods=["POST"]),
            Route("/v1/embeddings", handler(embeddings), methods=["POST"])]
