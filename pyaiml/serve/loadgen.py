"""A bounded load generator for a local pyaiml server (loopback only).

What it is: ``python -m pyaiml.serve.loadgen --url http://127.0.0.1:8000 --lm NAME`` (or
``--v2 NAME``) sends a fixed number of requests from ``--concurrency`` clients (asyncio +
httpx), stops early after ``--max-seconds``, and prints one JSON line per concurrency level:
requests done and failed, wall seconds, throughput (generated tokens/s for a language model,
requests/s and rows/s for a v2 model), p50/p99 latency and, for streams, p50/p99 time to
first token. Language-model requests stream (``/v1/completions``, ``stream: true``) with a
fixed prompt, ``max_tokens`` and ``temperature``; v2 requests send random FP32 rows of the
model's input shape, read from its metadata.

It refuses any host other than 127.0.0.1, ::1 or localhost. What it is not: a soak test
runner or a distributed load tool. Needs httpx. Tests: tests/test_serve_ops.py (a short run
against a server in a thread).
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
    host = urlparse(url).hostname
    if host not in _LOOPBACK:
        raise ValueError(f"loadgen: only loopback servers may be loaded ({', '.join(_LOOPBACK)}). Received host "
                         f"{host!r}")
    return url.rstrip("/")


def _pct(xs, q):
    return None if not xs else float(np.percentile(np.asarray(xs), q))


async def _drive(n_requests, concurrency, max_seconds, one):
    """Run ``one(i)`` for i < n_requests from ``concurrency`` workers; stop starting new ones
    after ``max_seconds``. Returns (results, failures, wall seconds)."""
    next_i, results, failures = 0, [], []
    t0 = time.perf_counter()

    async def worker():
        nonlocal next_i
        while next_i < n_requests and time.perf_counter() - t0 < max_seconds:
            i = next_i
            next_i += 1
            try:
                results.append(await one(i))
            except Exception as e:  # noqa: BLE001 - counted and reported, the run goes on
                failures.append(f"{type(e).__name__}: {e}")

    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return results, failures, time.perf_counter() - t0


async def lm_load(url, model, concurrency, n_requests, max_tokens=64, prompt="ROMEO:", temperature=0.8,
                  max_seconds=120.0, headers=None):
    """Streaming completions: throughput in generated tokens/s, latency and time to first token."""
    import httpx

    url = _check_url(url)
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": temperature, "stream": True,
            "stream_options": {"include_usage": True}}
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, timeout=max_seconds + 60, limits=limits, headers=headers) as c:

        async def one(i):
            t = time.perf_counter()
            ttft, tokens, done = None, 0, False
            async with c.stream("POST", "/v1/completions", json={**body, "seed": i}) as r:
                if r.status_code != 200:
                    raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    if line == "data: [DONE]":
                        done = True
                        break
                    ev = json.loads(line[6:])
                    if "error" in ev:
                        raise RuntimeError(ev["error"]["message"])
                    if ttft is None and ev.get("choices"):
                        ttft = time.perf_counter() - t
                    if ev.get("usage"):
                        tokens = ev["usage"]["completion_tokens"]
            if not done:
                raise RuntimeError("the stream ended without [DONE]")
            return time.perf_counter() - t, ttft, tokens

        res, fails, wall = await _drive(n_requests, concurrency, max_seconds, one)
    lat, ttft, toks = [r[0] for r in res], [r[1] for r in res if r[1] is not None], sum(r[2] for r in res)
    return {"kind": "lm", "model": model, "concurrency": concurrency, "requests": len(res), "failed": len(fails),
            "errors": fails[:3], "seconds": round(wall, 3), "tokens": toks, "tokens_per_s": round(toks / wall, 1),
            "latency_p50_s": _pct(lat, 50), "latency_p99_s": _pct(lat, 99), "ttft_p50_s": _pct(ttft, 50),
            "ttft_p99_s": _pct(ttft, 99)}


async def v2_load(url, model, concurrency, n_requests, rows=1, max_seconds=120.0, headers=None, seed=0):
    """v2 infer with ``rows`` random FP32 rows per request: requests/s and latency."""
    import httpx

    url = _check_url(url)
    async with httpx.AsyncClient(base_url=url, timeout=max_seconds + 60, headers=headers,
                                 limits=httpx.Limits(max_connections=concurrency + 4)) as c:
        r = await c.get(f"/v2/models/{model}")
        if r.status_code != 200:
            raise ValueError(f"loadgen: model {model!r}: HTTP {r.status_code} {r.text[:200]}")
        inp = r.json()["inputs"][0]
        shape = [rows] + [d if d > 0 else 1 for d in inp["shape"][1:]]
        x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
        # binary tensor extension: what tritonclient sends, and cheap to build
        head = json.dumps({"inputs": [{"name": inp["name"], "shape": shape, "datatype": "FP32",
                                       "parameters": {"binary_data_size": x.nbytes}}]}).encode()
        payload = head + x.tobytes()
        hdr = {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}

        async def one(i):
            t = time.perf_counter()
            r = await c.post(f"/v2/models/{model}/infer", content=payload, headers=hdr)
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
            return time.perf_counter() - t

        lat, fails, wall = await _drive(n_requests, concurrency, max_seconds, one)
    return {"kind": "v2", "model": model, "concurrency": concurrency, "requests": len(lat), "failed": len(fails),
            "errors": fails[:3], "seconds": round(wall, 3), "requests_per_s": round(len(lat) / wall, 1),
            "rows_per_s": round(len(lat) * rows / wall, 1), "latency_p50_s": _pct(lat, 50),
            "latency_p99_s": _pct(lat, 99)}


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
