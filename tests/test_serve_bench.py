"""``pyaiml bench serve`` and the load generator's client, with tiny budgets: every level
and the soak run against a real ``pyaiml serve`` child process, every request is answered
and the server's own count agrees, the RSS samples are taken; the keep-alive client sends a
request again when the server closed the idle connection; options are checked.

Bounded: the test models of tests/serve_models.py, a handful of requests per level, a
2-second soak. It asserts counts and structure, never speed.
"""
import argparse
import asyncio
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

import serve_models

from pyaiml.serve import ServerThread, bench, create_app, loadgen


def _args(**kw):
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    a = p.parse_args([])
    for k, v in kw.items():
        setattr(a, k, v)
    return a


def test_bench_serve_levels_and_soak(tmp_path):
    lm, cnn = tmp_path / "lm.npz", tmp_path / "cnn.keras"
    serve_models.transformer_lm().save(lm)
    serve_models.keras_cnn().save(cnn)
    a = _args(workdir=str(tmp_path / "wd"), lm=str(lm), cnn=str(cnn), prompt="all", threads=1, clients=4, rounds=2,
              lm_requests=6, max_tokens=5, cnn_requests=12, soak=2.0, sample_every=0.4)
    lines = []
    rep = bench.run(a, log=lines.append)
    assert sorted(rep["lm"]) == sorted(rep["cnn"]) == [1, 4]
    for kind in ("lm", "cnn"):
        for c, rs in rep[kind].items():
            assert len(rs) == 2 and all((r["requests"], r["failed"], r["lost"]) == (6 if kind == "lm" else 12, 0, 0)
                                        for r in rs), (kind, c, rs)
    assert all(r["tokens"] == 30 for rs in rep["lm"].values() for r in rs)
    s = rep["summary"]
    assert s["failed"] == 0 and s["lm_ratio_min"] <= s["lm_ratio"] <= s["lm_ratio_max"]
    assert s["lm_ttft_p99_s"] <= s["lm_ttft_p99_worst_s"]
    soak = rep["soak"]
    assert soak["lm"]["failed"] == soak["lm"]["lost"] == soak["cnn"]["failed"] == soak["cnn"]["lost"] == 0
    assert soak["lm"]["requests"] > 0 and soak["cnn"]["requests"] > 0
    assert soak["server_agrees"], soak["server_counted_200"]
    assert len(soak["rss_samples"]) >= 3 and all(m > 10 for _, m in soak["rss_samples"])
    assert "rss_growth_pct" in soak
    assert any("target >= 4x" in x for x in lines) and any(x.startswith("soak: ") for x in lines)


def test_bench_serve_option_errors(capsys):
    assert bench.main(["--soak", "5000"]) == 2
    assert "--soak must be between 0 and 3600 seconds. Received 5000.0" in capsys.readouterr().err
    assert bench.main(["--clients", "0"]) == 2
    assert "--clients must be >= 1. Received 0" in capsys.readouterr().err


def _closing_server():
    app = create_app({"lm": serve_models.transformer_lm()})
    return ServerThread(app, timeout_keep_alive=0.3)


def test_keep_alive_client_reconnects():
    """uvicorn closes a kept-alive connection after timeout_keep_alive idle seconds; the
    next request on it goes out again on a fresh connection."""
    with _closing_server() as srv:
        host, port = loadgen._check_url(srv.url)

        async def go():
            c = loadgen.Conn(host, port)
            try:
                st1, b1 = await c.request("GET", "/v2/health/live")
                first = c.w
                await asyncio.sleep(1.0)  # the server drops the idle connection meanwhile
                st2, b2 = await c.request("GET", "/v2/health/live")
                return st1, b1, st2, b2, first is not c.w
            finally:
                c.close()

        st1, b1, st2, b2, fresh = asyncio.run(go())
    assert (st1, st2) == (200, 200) and b1 == b2 == b'{"live":true}' and fresh
    with pytest.raises(ValueError, match="only loopback servers"):
        loadgen._check_url("http://192.168.1.1:80")
    with pytest.raises(ValueError, match="must be http://HOST:PORT"):
        loadgen._check_url("https://127.0.0.1:80")


def test_memory_trimmer():
    """malloc_trim runs every interval from its thread, and no more once stopped."""
    from pyaiml.serve.server import MemoryTrimmer

    t = MemoryTrimmer(0.02)
    try:
        if not t.available:
            pytest.skip("this C library has no malloc_trim")
        time.sleep(0.3)
        assert t.trims >= 3
    finally:
        t.stop()
    n = t.trims
    time.sleep(0.1)
    assert t.trims == n  # stopped
    off = MemoryTrimmer(0)
    assert off._thread is None
    off.trim()
    assert off.trims == (1 if off.available else 0)
