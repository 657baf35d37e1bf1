"""A bounded load generator for a local pyaiml server (loopback only).

What it is: ``python -m pyaiml.serve.loadgen --url http://127.0.0.1:8000 --lm NAME`` (or
``--v2 NAME``) sends a fixed number of requests from ``--concurrency`` clients, stops
starting new ones after ``--max-seconds``, and prints one JSON line per concurrency level:
requests done and failed, wall seconds, throughput (generated tokens/s for a language model,
requests/s and rows/s for a v2 model), p50/p99 latency and, for streams, p50/p99 time to
first token. Language-model requests stream (``/v1/completions``, ``stream: true``,
``stream_options.include_usage``) with a fixed prompt, ``max_tokens``, ``temperature`` and
``seed`` = request index; v2 requests send random FP32 rows of the model's input shape (read
from its metadata) with the binary tensor extension, as tritonclient does.

Each client is one keep-alive HTTP/1.1 connection driven by asyncio streams, with just
what these requests need (Content-Length and chunked bodies, server-sent events scanned for
the first token, the usage chunk and ``[DONE]``): the generator shares the machine with
the server it loads, and a general-purpose client (httpx) spent about 1 ms of CPU per
request here, which the server then lacks. A request whose connection the server had
closed while idle, before any byte of the reply, is sent again on a fresh connection;
every other failure is counted with its message.

:func:`lm_load`, :func:`v2_load` and :func:`mixed_load` (both kinds at once, for a soak;
with a callback sampling the server while it runs) are the library entry points; they
refuse any host other than 127.0.0.1, ::1 or localhost. What it is not: a distributed load
tool, or a general HTTP client. Tests: tests/test_serve_ops.py (short runs against a
server in a thread), tests/test_serve_bench.py.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlparse

import numpy as np

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _check_url(url):
    u = urlparse(url)
    if u.hostname not in _LOOPBACK:
        raise ValueError(f"loadgen: only loopback servers may be loaded ({', '.join(_LOOPBACK)}). Received host "
                         f"{u.hostname!r}")
    if u.scheme != "http":
        raise ValueError(f"loadgen: the URL must be http://HOST:PORT. Received {url!r}")
    return u.hostname, u.port or 80


def _pct(xs, q):
    return None if not xs else float(np.percentile(np.asarray(xs), q))


class HTTPStatusError(RuntimeError):
    pass


class _Closed(ConnectionError):
    """The server closed the connection before any byte of the reply."""


class Conn:
    """One keep-alive HTTP/1.1 connection to a loopback server."""

    def __init__(self, host, port, headers=None):
        self.host, self.port = host, port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.r = self.w = None

    async def _open(self):
        self.r, self.w = await asyncio.open_connection(self.host, self.port)

    def close(self):
        if self.w is not None:
            self.w.close()
        self.r = self.w = None

    async def request(self, method, path, body=b"", headers=None, on_chunk=None):
        """(status, body bytes). ``on_chunk(bytes)`` receives the body as it arrives (then
        the returned body is b"")."""
        for attempt in (0, 1):
            if self.w is None:
                await self._open()
            try:
                return await self._once(method, path, body, headers, on_chunk)
            except _Closed:
                self.close()
                if attempt:
                    raise
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    async def _once(self, method, path, body, headers, on_chunk):
        h = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.w.write(f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
                     f"{self.extra}{h}\r\n".encode() + body)
        try:
            await self.w.drain()
            line = await self.r.readline()
        except (ConnectionResetError, BrokenPipeError) as e:
            raise _Closed(str(e)) from None
        if not line:
            raise _Closed("the server closed the connection")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise ConnectionError(f"not an HTTP response: {line[:80]!r}")
        status = int(parts[1])
        length, chunked, close = None, False, False
        while True:
            line = await self.r.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.partition(b":")
            k, v = k.strip().lower(), v.strip().lower()
            if k == b"content-length":
                length = int(v)
            elif k == b"transfer-encoding":
                chunked = b"chunked" in v
            elif k == b"connection":
                close = v == b"close"
        out = []
        sink = on_chunk if on_chunk is not None and status == 200 else out.append
        if chunked:
            while True:
                size = int((await self.r.readline()).split(b";")[0], 16)
                if size == 0:
                    await self.r.readline()
                    break
                sink(await self.r.readexactly(size))
                await self.r.readexactly(2)
        elif length is not None:
            sink(await self.r.readexactly(length))
        else:
            sink(await self.r.read())
            close = True
        if close:
            self.close()
        return status, b"".join(out)


class _Stream:
    """Server-sent events of one streamed completion, scanned without parsing every event."""

    __slots__ = ("buf", "done", "t0", "tokens", "ttft")

    def __init__(self, t0):
        self.t0, self.buf, self.ttft, self.tokens, self.done = t0, b"", None, 0, False

    def __call__(self, data):
        self.buf += data
        *events, self.buf = self.buf.split(b"\n\n")
        for ev in events:
            if not ev.startswith(b"data: "):
                continue
            if ev == b"data: [DONE]":
                self.done = True
            elif self.ttft is None and b'"choices":[{' in ev:
                self.ttft = time.perf_counter() - self.t0
            elif b'"error"' in ev[:16]:
                raise RuntimeError(json.loads(ev[6:])["error"]["message"])
            elif b'"usage":{' in ev:
                self.tokens = json.loads(ev[6:])["usage"]["completion_tokens"]


async def _drive(n_requests, concurrency, max_seconds, one, conn):
    """Run ``one(c, i)`` for i < n_requests from ``concurrency`` workers, each with its own
    connection ``conn()``; stop starting new ones after ``max_seconds``. Returns (results,
    failures, wall seconds, started)."""
    next_i, results, failures = 0, [], []
    t0 = time.perf_counter()

    async def worker():
        nonlocal next_i
        c = conn()
        try:
            while next_i < n_requests and time.perf_counter() - t0 < max_seconds:
                i = next_i
                next_i += 1
                try:
                    results.append(await one(c, i))
                except Exception as e:  # noqa: BLE001 - counted and reported, the run goes on
                    failures.append(f"{type(e).__name__}: {e}")
        finally:
            c.close()

    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return results, failures, time.perf_counter() - t0, next_i


def _lm_one(model, max_tokens, prompt, temperature):
    head = {"Content-Type": "application/json"}

    async def one(c, i):
        body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": temperature,
                           "seed": i, "stream": True, "stream_options": {"include_usage": True}}).encode()
        t = time.perf_counter()
        s = _Stream(t)
        status, raw = await c.request("POST", "/v1/completions", body, head, on_chunk=s)
        if status != 200:
            raise HTTPStatusError(f"HTTP {status}: {raw[:200]!r}")
        if not s.done:
            raise RuntimeError("the stream ended without [DONE]")
        return time.perf_counter() - t, s.ttft, s.tokens

    return one


def _lm_report(model, concurrency, res, fails, wall, started):
    lat, ttft, toks = [r[0] for r in res], [r[1] for r in res if r[1] is not None], sum(r[2] for r in res)
    return {"kind": "lm", "model": model, "concurrency": concurrency, "requests": len(res), "failed": len(fails),
            "lost": started - len(res) - len(fails), "errors": fails[:3], "seconds": round(wall, 3), "tokens": toks,
            "tokens_per_s": round(toks / wall, 1), "latency_p50_s": _pct(lat, 50), "latency_p99_s": _pct(lat, 99),
            "ttft_p50_s": _pct(ttft, 50), "ttft_p99_s": _pct(ttft, 99)}


async def lm_load(url, model, concurrency, n_requests, max_tokens=64, prompt="ROMEO:", temperature=0.8,
                  max_seconds=120.0, headers=None):
    """Streaming completions: throughput in generated tokens/s, latency and time to first token."""
    host, port = _check_url(url)
    one = _lm_one(model, max_tokens, prompt, temperature)
    res, fails, wall, started = await _drive(n_requests, concurrency, max_seconds, one,
                                             lambda: Conn(host, port, headers))
    return _lm_report(model, concurrency, res, fails, wall, started)


async def _v2_payload(host, port, model, rows, headers, seed):
    c = Conn(host, port, headers)
    try:
        status, raw = await c.request("GET", f"/v2/models/{model}")
    finally:
        c.close()
    if status != 200:
        raise ValueError(f"loadgen: model {model!r}: HTTP {status} {raw[:200].decode(errors='replace')}")
    inp = json.loads(raw)["inputs"][0]
    shape = [rows] + [d if d > 0 else 1 for d in inp["shape"][1:]]
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    head = json.dumps({"inputs": [{"name": inp["name"], "shape": shape, "datatype": "FP32",
                                   "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    hdr = {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}
    return head + x.tobytes(), hdr


def _v2_one(model, payload, hdr):
    async def one(c, i):
        t = time.perf_counter()
        status, raw = await c.request("POST", f"/v2/models/{model}/infer", payload, hdr)
        if status != 200:
            raise HTTPStatusError(f"HTTP {status}: {raw[:200]!r}")
        return time.perf_counter() - t

    return one


def _v2_report(model, concurrency, rows, lat, fails, wall, started):
    return {"kind": "v2", "model": model, "concurrency": concurrency, "requests": len(lat), "failed": len(fails),
            "lost": started - len(lat) - len(fails), "errors": fails[:3], "seconds": round(wall, 3),
            "requests_per_s": round(len(lat) / wall, 1), "rows_per_s": round(len(lat) * rows / wall, 1),
            "latency_p50_s": _pct(lat, 50), "latency_p99_s": _pct(lat, 99)}


async def v2_load(url, model, concurrency, n_requests, rows=1, max_seconds=120.0, headers=None, seed=0):
    """v2 infer with ``rows`` random FP32 rows per request: requests/s and latency."""
    host, port = _check_url(url)
    payload, hdr = await _v2_payload(host, port, model, rows, headers, seed)
    lat, fails, wall, started = await _drive(n_requests, concurrency, max_seconds, _v2_one(model, payload, hdr),
                                             lambda: Conn(host, port, headers))
    return _v2_report(model, concurrency, rows, lat, fails, wall, started)


async def mixed_load(url, lm_model, v2_model, lm_clients, v2_clients, seconds, max_requests, max_tokens=64,
                     prompt="ROMEO:", temperature=0.8, headers=None, sample=None, sample_every=5.0):
    """Both kinds at once for ``seconds`` (at most ``max_requests`` of each): ``lm_clients``
    streaming completion clients and ``v2_clients`` v2 clients. ``sample(elapsed)`` is
    called every ``sample_every`` seconds while the load runs (e.g. to read the server's
    RSS). Returns {"lm": report, "v2": report}."""
    host, port = _check_url(url)
    payload, hdr = await _v2_payload(host, port, v2_model, 1, headers, 0)
    t0 = time.perf_counter()
    stop = asyncio.Event()

    async def sampler():
        while not stop.is_set():
            if sample is not None:
                sample(time.perf_counter() - t0)
            try:
                await asyncio.wait_for(stop.wait(), sample_every)
            except asyncio.TimeoutError:
                pass

    st = asyncio.ensure_future(sampler())
    try:
        (lr, lf, lw, ls), (vr, vf, vw, vs) = await asyncio.gather(
            _drive(max_requests, lm_clients, seconds, _lm_one(lm_model, max_tokens, prompt, temperature),
                   lambda: Conn(host, port, headers)),
            _drive(max_requests, v2_clients, seconds, _v2_one(v2_model, payload, hdr),
                   lambda: Conn(host, port, headers)))
    finally:
        stop.set()
        await st
    if sample is not None:
        sample(time.perf_counter() - t0)
    return {"lm": _lm_report(lm_model, lm_clients, lr, lf, lw, ls),
            "v2": _v2_report(v2_model, v2_clients, 1, vr, vf, vw, vs)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pyaiml.serve.loadgen", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000", help="server (loopback only)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--lm", metavar="NAME", help="a language model: streaming /v1/completions")
    g.add_argument("--v2", metavar="NAME", help="a v2 model: /v2/models/NAME/infer")
    p.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts (default 1,8,32)")
    p.add_argument("--requests", type=int, default=64, help="requests per concurrency level (default 64)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="stop starting requests after this (default 60)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--prompt", default="ROMEO:")
    p.add_argument("--rows", type=int, default=1, help="rows per v2 request (default 1)")
    p.add_argument("--api-key", help="Bearer key")
    a = p.parse_args(argv)
    headers = {"Authorization": f"Bearer {a.api_key}"} if a.api_key else None
    try:
        levels = [int(c) for c in a.concurrency.split(",")]
        if any(c < 1 for c in levels) or a.requests < 1:
            raise ValueError(f"--concurrency and --requests must be >= 1. Received {a.concurrency!r}, {a.requests}")
        for c in levels:
            if a.lm:
                rep = asyncio.run(lm_load(a.url, a.lm, c, a.requests, a.max_tokens, a.prompt,
                                          max_seconds=a.max_seconds, headers=headers))
            else:
                rep = asyncio.run(v2_load(a.url, a.v2, c, a.requests, a.rows, a.max_seconds, headers))
            print(json.dumps(rep), flush=True)
    except ValueError as e:
        print(f"loadgen: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
