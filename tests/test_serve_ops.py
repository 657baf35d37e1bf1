"""pyaiml.serve operations: Bearer API keys (401 without or with a wrong key, in each
protocol's error format; health probes open), Prometheus /metrics after real traffic,
the JSON access log, every kind of malformed request answered with its 4xx in its
protocol's error format (JSON, unknown model, tensor shape and datatype, body size,
max_tokens, unknown route or method), encrypted model files, model files that are not models, the
``pyaiml serve`` command in a subprocess (ready once listening, SIGTERM during streaming
load finishes every in-flight request, then exits 0), and ``import pyaiml.serve`` without
the serve extra.

Bounded: tiny models, loopback only, each subprocess under a timeout.
"""
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

import serve_models
from helpers import run_py

import pyaiml
from pyaiml.serve import ServerThread, create_app

KEY = "k-0123456789abcdef0123456789"


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return serve_models.save_all(tmp_path_factory.mktemp("opsmodels"))


@pytest.fixture(scope="module")
def keyed(paths, tmp_path_factory):
    kf = tmp_path_factory.mktemp("keys") / "api.keys"
    kf.write_text(f"# API keys, one per line\n{KEY}\n\nsecond-key-abcdefghijkl\n")
    app = create_app({"cnn": paths["cnn"], "lm": paths["lm"], "w2v": paths["w2v"]}, api_key_file=str(kf))
    with ServerThread(app) as srv:
        srv.app = app
        yield srv


# ---------------------------------------------------------------------- API keys
def test_api_key_required_in_both_protocols(keyed):
    x = {"inputs": [{"name": "input", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": [0.0] * 64}]}
    comp = {"model": "lm", "prompt": "all", "max_tokens": 2}
    with httpx.Client(base_url=keyed.url, timeout=30) as h:
        for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": KEY},
                        {"Authorization": f"Basic {KEY}"}):
            r = h.post("/v2/models/cnn/infer", json=x, headers=headers)
            assert r.status_code == 401 and "valid API key" in r.json()["error"]
            assert r.headers["www-authenticate"] == "Bearer"
            r = h.post("/v1/completions", json=comp, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
            assert h.get("/metrics", headers=headers).status_code == 401
        assert h.get("/v2/health/live").status_code == 200 and h.get("/v2/health/ready").status_code == 200
        for k in (KEY, "second-key-abcdefghijkl"):
            good = {"Authorization": f"Bearer {k}"}
            assert h.post("/v2/models/cnn/infer", json=x, headers=good).status_code == 200
            assert h.post("/v1/completions", json=comp, headers=good).status_code == 200


def test_api_key_with_the_real_clients(keyed):
    openai = pytest.importorskip("openai")
    bad = openai.OpenAI(base_url=keyed.url + "/v1", api_key="nope-nope-nope-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model="lm", prompt="a", max_tokens=1)
    good = openai.OpenAI(base_url=keyed.url + "/v1", api_key=KEY, max_retries=0)
    assert good.completions.create(model="lm", prompt="a", max_tokens=3).usage.completion_tokens == 3
    assert [m.id for m in good.models.list()] == ["lm", "w2v"]
    th = pytest.importorskip("tritonclient.http")
    c = th.InferenceServerClient(keyed.url.removeprefix("http://"))
    inp = th.InferInput("input", [1, 8, 8, 1], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 8, 8, 1), np.float32))
    with pytest.raises(Exception, match="valid API key"):
        c.infer("cnn", [inp])
    assert c.infer("cnn", [inp], headers={"Authorization": f"Bearer {KEY}"}).as_numpy("output").shape == (1, 3)
    c.close()


def test_app_mounted_under_a_prefix(paths):
    """Embedded in another Starlette app under /ml (a Mount keeps the prefix in the path and
    puts it in root_path): health probes stay open, a /v1 401 or 404 is in OpenAI's format,
    infer answers (the middleware's direct route), and the metrics name this app's routes,
    not the enclosing Mount."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    inner = create_app({"cnn": paths["cnn"], "lm": paths["lm"]}, api_key=KEY)
    good = {"Authorization": f"Bearer {KEY}"}
    x = {"inputs": [{"name": "input", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": [0.0] * 64}]}
    try:
        with TestClient(Starlette(routes=[Mount("/ml", app=inner)])) as c:
            assert c.get("/ml/v2/health/live").status_code == 200
            assert c.get("/ml/v2/health/ready").status_code == 200
            r = c.post("/ml/v1/completions", json={"model": "lm", "prompt": "a", "max_tokens": 1})
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
            r = c.post("/ml/v2/models/cnn/infer", json=x)
            assert r.status_code == 401 and "valid API key" in r.json()["error"]
            r = c.post("/ml/v2/models/cnn/infer", json=x, headers=good)
            assert r.status_code == 200 and np.asarray(r.json()["outputs"][0]["data"]).shape == (3,)
            assert c.post("/ml/v2/models/cnn/versions/1/infer", json=x, headers=good).status_code == 200
            r = c.get("/ml/v1/nothing", headers=good)
            assert r.status_code == 404 and "no route /ml/v1/nothing" in r.json()["error"]["message"]
            m = c.get("/ml/metrics", headers=good).text
    finally:
        inner.state.serve.close()
    req = _samples(m, "pyaiml_serve_requests_total")
    assert req['pyaiml_serve_requests_total{method="GET",route="/v2/health/live",status="200"}'] == 1
    assert req['pyaiml_serve_requests_total{method="POST",route="/v1/completions",status="401"}'] == 1
    assert req['pyaiml_serve_requests_total{method="POST",route="/v2/models/{name}/infer",status="401"}'] == 1
    assert req['pyaiml_serve_requests_total{method="POST",route="/v2/models/{name}/infer",status="200"}'] == 1
    assert not any('route="/ml"' in k for k in req), req


def test_api_key_file_errors(tmp_path, paths):
    empty = tmp_path / "empty.keys"
    empty.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="holds no key"):
        create_app({"ghmm": paths["ghmm"]}, api_key_file=str(empty))
    short = tmp_path / "short.keys"
    short.write_text("abc\n")
    with pytest.raises(ValueError, match="at least 16 characters"):
        create_app({"ghmm": paths["ghmm"]}, api_key_file=str(short))


# ---------------------------------------------------------------------- malformed requests
_CNN_X = {"inputs": [{"name": "input", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": [0.0] * 64}]}
_V1 = {"error": {"message", "type", "param", "code"}}

# (method, path, body: dict -> JSON, bytes -> raw, None -> no body, status, words in the message)
MALFORMED = [
    # malformed JSON, in each route that takes a body
    ("POST", "/v1/completions", b"{oops", 400, "not valid JSON"),
    ("POST", "/v1/chat/completions", b"[1, 2", 400, "not valid JSON"),
    ("POST", "/v1/embeddings", b"\xff\xfe", 400, "not valid JSON"),
    ("POST", "/v2/models/cnn/infer", b"{oops", 400, "not valid JSON"),
    ("POST", "/v1/chat/completions", b"[1, 2]", 400, "must be a JSON object"),
    ("POST", "/v2/models/cnn/infer", b"7", 400, "must be a JSON object"),
    # wrong tensor shapes and datatypes
    ("POST", "/v2/models/cnn/infer", {"inputs": [{"name": "input", "shape": [1, 8, 8], "datatype": "FP32",
                                                  "data": [0.0] * 64}]}, 400, "shape must be [-1, 8, 8, 1]"),
    ("POST", "/v2/models/cnn/infer", {"inputs": [{"name": "input", "shape": [1, 8, 8, 1], "datatype": "BYTES",
                                                  "data": ["a"] * 64}]}, 400, "must be numeric"),
    ("POST", "/v2/models/ghmm/infer", {"inputs": [{"name": "X", "shape": [2, 3], "datatype": "FP64",
                                                   "data": [0.0] * 6}]}, 400, "shape must be [-1, 2]"),
    ("POST", "/v2/models/w2v/infer", {"inputs": [{"name": "words", "shape": [1], "datatype": "FP32",
                                                  "data": [1.0]}]}, 400, "datatype must be BYTES"),
    # unknown models, in each protocol
    ("POST", "/v1/completions", {"model": "gpt-4", "prompt": "x"}, 404, "'gpt-4' does not exist"),
    ("POST", "/v1/chat/completions", {"model": "cnn", "messages": [{"role": "user", "content": "x"}]}, 404,
     "'cnn' does not exist"),
    ("POST", "/v1/embeddings", {"model": "lm", "input": "x"}, 404, "embedding models here"),
    ("GET", "/v1/models/nope", None, 404, "'nope' does not exist"),
    ("POST", "/v2/models/nope/infer", _CNN_X, 404, "unknown model 'nope'"),
    ("GET", "/v2/models/lm", None, 404, "a language model: use the /v1 routes"),
    ("GET", "/v2/models/cnn/versions/9", None, 404, "has no version '9'"),
    # limits: body size, max_tokens, fields of the wrong type
    ("POST", "/v1/completions", b" " * 5000, 413, "limit of 4096"),
    ("POST", "/v2/models/cnn/infer", b" " * 5000, 413, "limit of 4096"),
    ("POST", "/v1/completions", {"model": "lm", "prompt": "a", "max_tokens": 65}, 400, "'max_tokens' must be"),
    ("POST", "/v1/chat/completions", {"model": "lm", "messages": "hi"}, 400, "'messages' must be a non-empty list"),
    ("POST", "/v1/embeddings", {"model": "w2v", "input": 5}, 400, "'input' must be a string"),
    # routes and methods that do not exist
    ("GET", "/v1/completions", None, 405, "method GET is not allowed on /v1/completions"),
    ("DELETE", "/v2/models/cnn", None, 405, "method DELETE is not allowed"),
    ("GET", "/v1/nothing", None, 404, "no route /v1/nothing"),
    ("GET", "/v3/x", None, 404, "no route /v3/x"),
    # paths near the infer route's shape, which the middleware hands to its endpoint directly
    ("GET", "/v2/models/cnn/infer", None, 405, "method GET is not allowed on /v2/models/cnn/infer"),
    ("POST", "/v2/models//infer", _CNN_X, 404, "no route /v2/models//infer"),
    ("POST", "/v2/models/cnn/vers/1/infer", _CNN_X, 404, "no route"),
    ("POST", "/v2/models/cnn/versions//infer", _CNN_X, 404, "no route"),
    ("POST", "/v2/models/cnn/versions/9/infer", _CNN_X, 404, "has no version '9'"),
    ("POST", "/v2/models/lm/infer", _CNN_X, 404, "a language model: use the /v1 routes"),
]


def test_each_malformed_request_kind_gets_its_4xx(paths):
    """Every kind of bad request gets its 4xx with a JSON error body in the format of the
    protocol its path belongs to (OpenAI's ``{"error": {...}}`` on /v1, ``{"error": msg}``
    on /v2 and elsewhere), never a 500; the server answers normally afterwards."""
    app = create_app({"cnn": paths["cnn"], "ghmm": paths["ghmm"], "w2v": paths["w2v"], "lm": paths["lm"]},
                     max_body_bytes=4096, max_tokens_limit=64)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as h:
        for method, path, body, status, words in MALFORMED:
            kw = {} if body is None else {"content": body} if isinstance(body, bytes) else {"json": body}
            r = h.request(method, path, **kw)
            where = f"{method} {path} {body!r:.60}"
            assert r.status_code == status, (where, r.status_code, r.text)
            assert r.headers["content-type"] == "application/json", where
            err = r.json()["error"]
            if path.startswith("/v1"):
                assert set(err) == _V1["error"] and words in err["message"], (where, err)
            else:
                assert isinstance(err, str) and words in err, (where, err)
        assert h.post("/v2/models/cnn/infer", json=_CNN_X).status_code == 200
        assert h.post("/v1/completions", json={"model": "lm", "prompt": "a", "max_tokens": 2}).status_code == 200


# ---------------------------------------------------------------------- metrics and logs
def _samples(text, name):
    out = {}
    for line in text.splitlines():
        if line.startswith(name):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def test_metrics_after_traffic(paths):
    app = create_app({"cnn": paths["cnn"], "lm": paths["lm"]}, max_delay=0.01)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as h:
        x = {"inputs": [{"name": "input", "shape": [2, 8, 8, 1], "datatype": "FP32", "data": [0.5] * 128}]}
        for _ in range(3):
            assert h.post("/v2/models/cnn/infer", json=x).status_code == 200
        assert h.post("/v2/models/cnn/infer", json={"inputs": []}).status_code == 400
        assert h.post("/v2/models/cnn/versions/1/infer", json=x).status_code == 200
        r = h.post("/v1/completions", json={"model": "lm", "prompt": "all", "max_tokens": 12, "stream": True})
        assert r.text.endswith("data: [DONE]\n\n")
        m = h.get("/metrics")
        assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
        t = m.text
    req = _samples(t, "pyaiml_serve_requests_total")
    assert req['pyaiml_serve_requests_total{method="POST",route="/v2/models/{name}/infer",status="200"}'] == 3
    assert req['pyaiml_serve_requests_total{method="POST",route="/v2/models/{name}/infer",status="400"}'] == 1
    assert req['pyaiml_serve_requests_total{method="POST",route="/v1/completions",status="200"}'] == 1
    assert _samples(t, "pyaiml_serve_request_seconds_count")[
        'pyaiml_serve_request_seconds_count{route="/v2/models/{name}/infer"}'] == 4
    assert req['pyaiml_serve_requests_total{method="POST",route="/v2/models/{name}/versions/{version}/infer",'
               'status="200"}'] == 1
    assert _samples(t, "pyaiml_serve_batch_size_sum")['pyaiml_serve_batch_size_sum{model="cnn"}'] == 8
    assert _samples(t, "pyaiml_serve_generated_tokens_total")['pyaiml_serve_generated_tokens_total{model="lm"}'] == 12
    assert _samples(t, "pyaiml_serve_prompt_tokens_total")['pyaiml_serve_prompt_tokens_total{model="lm"}'] == 3
    assert _samples(t, "pyaiml_serve_time_to_first_token_seconds_count")[
        'pyaiml_serve_time_to_first_token_seconds_count{model="lm"}'] == 1
    assert _samples(t, "pyaiml_serve_tokens_per_second_count")['pyaiml_serve_tokens_per_second_count{model="lm"}'] == 1
    assert _samples(t, "pyaiml_serve_queue_depth")['pyaiml_serve_queue_depth{model="lm"}'] == 0
    assert _samples(t, "pyaiml_serve_running_sequences")['pyaiml_serve_running_sequences{model="lm"}'] == 0
    assert _samples(t, "pyaiml_serve_models_ready")["pyaiml_serve_models_ready"] == 1


def test_access_log_is_one_json_object_per_request(paths, caplog):
    app = create_app({"ghmm": paths["ghmm"]})
    with caplog.at_level(logging.INFO, logger="pyaiml.serve.access"), ServerThread(app) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as h:
        h.get("/v2/models/ghmm")
        h.get("/v2/models/missing")
        h.post("/v2/models/ghmm/infer", json={"inputs": [{"name": "X", "shape": [3, 2], "datatype": "FP64",
                                                          "data": [0.0] * 6}]})
    recs = [json.loads(r.getMessage()) for r in caplog.records if r.name == "pyaiml.serve.access"]
    assert [(r["method"], r["path"], r["status"]) for r in recs] == [
        ("GET", "/v2/models/ghmm", 200), ("GET", "/v2/models/missing", 404), ("POST", "/v2/models/ghmm/infer", 200)]
    r = recs[2]
    assert r["route"] == "/v2/models/{name}/infer" and r["model"] == "ghmm" and r["bytes"] > 0
    assert r["seconds"] > 0 and r["client"].startswith("127.0.0.1:") and r["time"].endswith("Z")
    assert recs[1]["model"] == "missing"


# ---------------------------------------------------------------------- model files
def test_encrypted_model_files(tmp_path, paths):
    from pyaiml.keras.models import load_model
    from pyaiml.privacy import crypto

    key_file = tmp_path / "model.key"
    crypto.generate_key_file(str(key_file))
    key = f"file:{key_file}"
    m = load_model(paths["cnn"])
    m.save(tmp_path / "cnn.keras", key=key)
    serve_models.word2vec().save(str(tmp_path / "w2v.npz"), key=key)
    serve_models.transformer_lm().save(tmp_path / "lm.npz", key=key)
    models = {"cnn": str(tmp_path / "cnn.keras"), "w2v": str(tmp_path / "w2v.npz"), "lm": str(tmp_path / "lm.npz")}
    with pytest.raises(ValueError, match="is encrypted"):
        create_app(models)
    other = tmp_path / "other.key"
    crypto.generate_key_file(str(other))
    with pytest.raises(ValueError, match="wrong key"):
        create_app(models, key=f"file:{other}")
    app = create_app({**models, "plain": {"path": paths["ghmm"], "key": None, "version": "3"}}, key=key)
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 1)).astype(np.float32)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as h:
        r = h.post("/v2/models/cnn/infer", json={"inputs": [{"name": "input", "shape": [2, 8, 8, 1],
                                                             "datatype": "FP32", "data": x.reshape(-1).tolist()}]})
        np.testing.assert_allclose(np.asarray(r.json()["outputs"][0]["data"]).reshape(2, 3), m.predict(x), atol=1e-7)
        assert h.post("/v1/completions", json={"model": "lm", "prompt": "a", "max_tokens": 2}).status_code == 200
        assert h.get("/v2/models/plain").json()["versions"] == ["3"]
        assert h.get("/v2/models/plain/versions/3/ready").status_code == 200


def test_files_that_are_not_models(tmp_path, paths):
    junk = tmp_path / "junk.npz"
    np.savez(junk, a=np.arange(3))
    with pytest.raises(ValueError, match="not a saved pyaiml model"):
        create_app({"x": str(junk)})
    txt = tmp_path / "notes.md"
    txt.write_text("hello")
    with pytest.raises(ValueError, match="cannot tell what model"):
        create_app({"x": str(txt)})
    with pytest.raises(FileNotFoundError, match="no such model file"):
        create_app({"x": str(tmp_path / "missing.keras")})
    with pytest.raises(ValueError, match="model names must be"):
        create_app({"a/b": paths["ghmm"]})
    with pytest.raises(TypeError, match="cannot serve a list"):
        create_app({"x": [1, 2]})
    with pytest.raises(ValueError, match="max_batch_size must be an integer >= 1"):
        create_app({"x": paths["ghmm"]}, max_batch_size=0)
    # word2vec C formats load by extension
    from pyaiml.models import Word2Vec

    kv = Word2Vec.load(paths["w2v"]).wv
    kv.save_word2vec_format(str(tmp_path / "v.bin"), binary=True)
    kv.save_word2vec_format(str(tmp_path / "v.txt"))
    app = create_app({"b": str(tmp_path / "v.bin"), "t": str(tmp_path / "v.txt")})
    assert set(app.state.serve.vectors) == {"b", "t"}
    app.state.serve.close()


# ---------------------------------------------------------------------- the command
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    here = os.path.dirname(os.path.dirname(os.path.abspath(pyaiml.__file__)))
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([here] + [p for p in e.get("PYTHONPATH", "").split(os.pathsep) if p])
    return e


def test_cli_serves_and_sigterm_finishes_in_flight_streams(paths, tmp_path):
    """`pyaiml serve` answers ready as soon as its port accepts connections (models are
    loaded first); SIGTERM while 6 streams run lets each finish all its tokens; the process
    then ends (uvicorn re-raises the signal once shut down, so the status is -SIGTERM) and
    the port closes."""
    port = _free_port()
    kf = tmp_path / "api.keys"
    kf.write_text(KEY + "\n")
    log = open(tmp_path / "server.log", "w+")  # noqa: SIM115 - the child writes it until it exits
    p = subprocess.Popen([sys.executable, "-m", "pyaiml.cli", "serve", "--model", f"lm={paths['lm']}",
                          "--model", f"cnn:2={paths['cnn']}", "--port", str(port), "--api-key-file", str(kf),
                          "--threads", "1", "--graceful-timeout", "60"],
                         stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=str(tmp_path))
    auth = {"Authorization": f"Bearer {KEY}"}
    ts = []
    try:
        t0 = time.monotonic()
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5)
                break
            except httpx.TransportError:
                assert p.poll() is None, (tmp_path / "server.log").read_text()
                assert time.monotonic() - t0 < 60, "the server did not start"
                time.sleep(0.05)
        assert r.status_code == 200 and r.json() == {"ready": True}  # never seen unready: loaded before listening
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, headers=auth) as h:
            assert h.get("/v2/models/cnn").json()["versions"] == ["2"]
        results, started = [None] * 6, threading.Barrier(7, timeout=60)

        def stream(i):
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120, headers=auth) as h, \
                    h.stream("POST", "/v1/completions", json={"model": "lm", "prompt": "all", "max_tokens": 400,
                                                             "temperature": 0.8, "seed": i, "stream": True}) as r:
                events, first = [], True
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        events.append(line[6:])
                        if first:
                            first = False
                            started.wait()
                results[i] = events

        ts += [threading.Thread(target=stream, args=(i,)) for i in range(6)]
        for t in ts:
            t.start()
        started.wait()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as probe:
            assert probe.get("/v2/health/ready").status_code == 200  # a kept-alive connection
            p.send_signal(signal.SIGTERM)
            t0, status = time.monotonic(), 200
            while status == 200 and time.monotonic() - t0 < 30:
                try:  # uvicorn closes idle kept-alive connections at its next tick (0.1 s)
                    status = probe.get("/v2/health/ready").status_code
                except httpx.TransportError:
                    status = None
            # Unready at once (503), or, when this thread was not scheduled within uvicorn's
            # 0.1 s tick on a busy machine, the idle connection already closed; the 503 itself
            # is tested without that race in test_stop_signal_turns_readiness_off_at_once.
            assert status in (503, None)
            assert any(t.is_alive() for t in ts)  # while the streams go on
        for t in ts:
            t.join(120)
        assert p.wait(60) == -signal.SIGTERM
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
        for t in ts:  # a failure is reported once the clients are done (their tracebacks are
            t.join(30)  # formatted in their threads: Python 3.11's ast is not thread-safe)
        log.close()
    for i, ev in enumerate(results):
        assert ev is not None and ev[-1] == "[DONE]", f"stream {i} was cut: {ev and ev[-3:]}"
        chunks = [json.loads(e) for e in ev[:-1]]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=5)
    out = (tmp_path / "server.log").read_text()
    assert "2 model(s) loaded" in out
    access = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert sum(1 for a in access if a["path"] == "/v1/completions" and a["status"] == 200) == 6


def test_stop_signal_turns_readiness_off_at_once(paths):
    """The server's stop-signal handler turns readiness off before uvicorn stops anything:
    /v2/health/ready answers 503 from then on (liveness stays 200), and uvicorn is told to
    exit."""
    import uvicorn
    from starlette.testclient import TestClient

    from pyaiml.serve.server import _server_class

    app = create_app({"cnn": paths["cnn"]})
    srv = _server_class()(uvicorn.Config(app, lifespan="off"))
    srv.serve_state = app.state.serve
    h = TestClient(app)  # no lifespan: the app is closed below
    try:
        assert h.get("/v2/health/ready").status_code == 200
        srv.handle_exit(signal.SIGTERM, None)
        assert srv.should_exit
        r = h.get("/v2/health/ready")
        assert r.status_code == 503 and r.json() == {"ready": False}
        assert h.get("/v2/health/live").status_code == 200
        assert "pyaiml_serve_models_ready 0.0" in h.get("/metrics").text
    finally:
        app.state.serve.close()


def test_cli_errors(paths, tmp_path):
    e = _env()
    r = subprocess.run([sys.executable, "-m", "pyaiml.cli", "serve", "--model", "nothing-here"], check=False,
                       capture_output=True, text=True, env=e, timeout=120, cwd=str(tmp_path))
    assert r.returncode == 1 and "--model must be NAME=PATH or NAME:VERSION=PATH. Received 'nothing-here'" in r.stderr
    r = subprocess.run([sys.executable, "-m", "pyaiml.cli", "serve", "--model", f"a={tmp_path / 'none.keras'}"],
                       check=False, capture_output=True, text=True, env=e, timeout=120, cwd=str(tmp_path))
    assert r.returncode == 1 and "no such model file" in r.stderr
    r = subprocess.run([sys.executable, "-m", "pyaiml.cli", "serve", "--model", "a=b", "--trim-memory", "-1"],
                       check=False, capture_output=True, text=True, env=e, timeout=120, cwd=str(tmp_path))
    assert r.returncode == 2 and "--trim-memory must be >= 0 seconds. Received -1.0" in r.stderr


def test_import_without_the_serve_extra():
    r = run_py("import sys\n"
               "for m in ('starlette', 'uvicorn', 'prometheus_client'): sys.modules[m] = None\n"
               "import importlib.util\n"
               "real = importlib.util.find_spec\n"
               "importlib.util.find_spec = lambda n, *a: None if n in ('starlette', 'uvicorn', 'prometheus_client') "
               "else real(n, *a)\n"
               "import pyaiml, pyaiml.serve, pyaiml.cli\n"
               "try:\n"
               "    pyaiml.serve.create_app({'x': 'y'})\n"
               "except ImportError as e:\n"
               "    print('IMPORTERROR', e)\n", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "IMPORTERROR pyaiml.serve needs starlette, uvicorn, prometheus-client: pip install 'pyaiml[serve]'" \
        in r.stdout


def test_load_generator_short_run(paths):
    """A few requests at 2 clients: every one succeeds and is counted; other hosts refused."""
    import asyncio

    from pyaiml.serve.loadgen import lm_load, main, v2_load

    app = create_app({"lm": paths["lm"], "cnn": paths["cnn"]})
    with ServerThread(app) as srv:
        r = asyncio.run(lm_load(srv.url, "lm", 2, 4, max_tokens=8, prompt="all", max_seconds=60))
        assert (r["requests"], r["failed"], r["tokens"]) == (4, 0, 32) and r["ttft_p99_s"] > 0
        r = asyncio.run(v2_load(srv.url, "cnn", 2, 6, rows=3, max_seconds=60))
        assert (r["requests"], r["failed"]) == (6, 0) and r["rows_per_s"] > 0
        with pytest.raises(ValueError, match="model 'nope': HTTP 404"):
            asyncio.run(v2_load(srv.url, "nope", 1, 2, max_seconds=60))
    with pytest.raises(ValueError, match="only loopback servers"):
        asyncio.run(lm_load("http://example.com:8000", "lm", 1, 1))
    assert main(["--url", "http://10.0.0.1:8000", "--lm", "x"]) == 2


def test_response_head_and_body_leave_in_one_write():
    """The server's transport joins a response head with the body written in the same
    event-loop turn (one send, one segment); a head alone leaves at the end of the turn; close
    flushes what waits; other writes pass straight through."""
    import asyncio

    from pyaiml.serve.server import _CoalescingTransport

    class Recorder:
        def __init__(self):
            self.writes, self.closed = [], False

        def write(self, data):
            self.writes.append(bytes(data))

        def is_closing(self):
            return self.closed

        def close(self):
            self.closed = True

        def get_write_buffer_size(self):
            return 0

        def get_extra_info(self, name, default=None):
            return ("127.0.0.1", 1) if name == "peername" else default

    async def run():
        loop = asyncio.get_running_loop()
        rec = Recorder()
        t = _CoalescingTransport(rec, loop)
        head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
        t.write(head)
        assert rec.writes == [] and t.get_write_buffer_size() == len(head)
        t.write(b"{}")
        assert rec.writes == [head + b"{}"]
        t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")  # a stream's head
        await asyncio.sleep(0)  # the turn ends: it leaves alone
        assert rec.writes[-1].startswith(b"HTTP/1.1 200 OK\r\ntransfer") and len(rec.writes) == 2
        t.write(b"5\r\nhello\r\n")
        assert rec.writes[-1] == b"5\r\nhello\r\n"
        t.write(b"0\r\n\r\n")
        t.close()
        assert rec.writes[-1] == b"0\r\n\r\n" and rec.closed
        assert t.get_extra_info("peername") == ("127.0.0.1", 1)
        await asyncio.sleep(0)
        assert len(rec.writes) == 4  # the scheduled flush found nothing left

    asyncio.run(run())


def test_request_counts_render_as_prometheus_client_would():
    """The server's request counter and latency histogram (counted without locks, rendered at
    scrape time) give the lines prometheus-client's own Counter and Histogram give for the
    same requests, values on the bucket bounds included (a bucket counts values <= its le)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from pyaiml.serve.metrics import _LAT, Metrics

    m = Metrics()
    reg = CollectorRegistry()
    c = Counter("pyaiml_serve_requests", "HTTP requests", ["route", "method", "status"], registry=reg)
    h = Histogram("pyaiml_serve_request_seconds", "HTTP request latency (until the last byte)", ["route"],
                  buckets=_LAT, registry=reg)
    rs = np.random.default_rng(0)
    values = list(_LAT) + [0.0, 1e-9, 61.0, 1e6] + list(rs.exponential(0.05, 200))
    for i, v in enumerate(values):
        route, status = ("/v2/models/{name}/infer", 200) if i % 3 else ("/v1/completions", 400 + i % 2)
        m.http.record(route, "POST", status, float(v))
        c.labels(route, "POST", str(status)).inc()
        h.labels(route).observe(float(v))

    def lines(text, name):
        return sorted(ln for ln in text.decode().splitlines() if ln.startswith(name) and "_created" not in ln)

    ours, theirs = m.render()[0], generate_latest(reg)
    for name in ("pyaiml_serve_requests_total", "pyaiml_serve_request_seconds_bucket",
                 "pyaiml_serve_request_seconds_count"):
        assert lines(ours, name) == lines(theirs, name) and lines(ours, name)
    s_ours = {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in lines(ours, "pyaiml_serve_request_seconds_sum")}
    s_theirs = {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1])
                for ln in lines(theirs, "pyaiml_serve_request_seconds_sum")}
    assert s_ours.keys() == s_theirs.keys() and all(abs(s_ours[k] - s_theirs[k]) <= 1e-9 * (1 + s_theirs[k])
                                                    for k in s_ours)
