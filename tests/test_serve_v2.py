"""pyaiml.serve, Open Inference Protocol v2: health, metadata, infer for Keras (dynamic
batching), HMM, HMMClassifier and Word2Vec models, with ``tritonclient.http`` (binary
tensors) and plain JSON over httpx; every answer equals the model's own method on the
same input; bad tensors get 400 naming the input, unknown models 404.

The server runs on a free loopback port in a thread (pyaiml.serve.ServerThread); every
test is bounded (tiny models, a few requests).
"""
import json
import threading

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

import serve_models

from pyaiml.serve import ServerThread, create_app
from pyaiml.serve.batching import DynamicBatcher


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return serve_models.save_all(tmp_path_factory.mktemp("v2models"))


@pytest.fixture(scope="module")
def server(paths):
    app = create_app({k: v for k, v in paths.items() if k != "lm"}, max_batch_size=16, max_delay=0.02)
    with ServerThread(app) as srv:
        srv.app = app
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def _infer(client, model, inputs, parameters=None, outputs=None):
    body = {"inputs": inputs}
    if parameters is not None:
        body["parameters"] = parameters
    if outputs is not None:
        body["outputs"] = [{"name": o} for o in outputs]
    return client.post(f"/v2/models/{model}/infer", json=body)


def _out(resp, name):
    assert resp.status_code == 200, resp.text
    o = {x["name"]: x for x in resp.json()["outputs"]}[name]
    return np.asarray(o["data"]).reshape(o["shape"])


def _tensor(name, a, dt):
    a = np.asarray(a)
    return {"name": name, "shape": list(a.shape), "datatype": dt, "data": a.reshape(-1).tolist()}


# ---------------------------------------------------------------------- health and metadata
def test_health_and_server_metadata(client):
    assert client.get("/v2/health/live").status_code == 200
    r = client.get("/v2/health/ready")
    assert r.status_code == 200 and r.json() == {"ready": True}
    meta = client.get("/v2").json()
    assert meta["name"] == "pyaiml" and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_of_each_kind(client):
    m = client.get("/v2/models/cnn").json()
    assert m["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 8, 8, 1]}]
    assert m["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 3]}]
    assert m["versions"] == ["1"] and m["platform"] == "pyaiml_keras"
    assert client.get("/v2/models/ghmm").json()["inputs"][0] == {"name": "X", "datatype": "FP64", "shape": [-1, 2]}
    assert client.get("/v2/models/chmm").json()["inputs"][0] == {"name": "X", "datatype": "INT64", "shape": [-1, 1]}
    clf = client.get("/v2/models/clf").json()
    assert [o["name"] for o in clf["outputs"]] == ["label", "probabilities", "log_likelihood"]
    assert clf["outputs"][0]["datatype"] == "BYTES"
    assert client.get("/v2/models/w2v").json()["inputs"] == [{"name": "words", "datatype": "BYTES", "shape": [-1]}]
    for name in ("cnn", "ghmm", "clf", "w2v"):
        assert client.get(f"/v2/models/{name}/ready").status_code == 200
        assert client.get(f"/v2/models/{name}/versions/1/ready").status_code == 200
    cfg = client.get("/v2/models/cnn/config").json()
    assert cfg["max_batch_size"] == 16 and cfg["dynamic_batching"]["max_queue_delay_microseconds"] == 20000


def test_unknown_model_and_version_are_404(client):
    for path in ("/v2/models/nope", "/v2/models/nope/ready", "/v2/models/cnn/versions/7"):
        r = client.get(path)
        assert r.status_code == 404 and "error" in r.json()
    r = _infer(client, "nope", [_tensor("input", np.zeros((1, 8, 8, 1)), "FP32")])
    assert r.status_code == 404 and "unknown model 'nope'" in r.json()["error"] and "cnn" in r.json()["error"]


# ---------------------------------------------------------------------- Keras
def test_keras_json_infer_equals_predict(client, paths):
    from pyaiml.keras.models import load_model

    m = load_model(paths["cnn"])
    x = np.random.default_rng(5).standard_normal((3, 8, 8, 1)).astype(np.float32)
    y = _out(_infer(client, "cnn", [_tensor("input", x, "FP32")]), "output")
    np.testing.assert_allclose(y, m.predict(x), rtol=0, atol=1e-7)  # JSON carries float32 as decimal
    # nested data lists and FP64 input are accepted too
    r = _infer(client, "cnn", [{"name": "input", "shape": [3, 8, 8, 1], "datatype": "FP64", "data": x.tolist()}])
    np.testing.assert_allclose(_out(r, "output"), m.predict(x), atol=1e-7)
    r = client.post("/v2/models/cnn/versions/1/infer", json={"id": "req-7", "inputs": [_tensor("input", x, "FP32")]})
    assert r.json()["id"] == "req-7" and r.json()["model_version"] == "1"


def test_keras_tritonclient_binary_tensors(server, paths):
    th = pytest.importorskip("tritonclient.http")
    from pyaiml.keras.models import load_model

    m = load_model(paths["cnn"])
    c = th.InferenceServerClient(server.url.removeprefix("http://"))
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("cnn")
    assert c.get_model_metadata("cnn")["inputs"][0]["shape"] == [-1, 8, 8, 1]
    x = np.random.default_rng(6).standard_normal((5, 8, 8, 1)).astype(np.float32)
    inp = th.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)  # binary by default
    res = c.infer("cnn", [inp])
    np.testing.assert_array_equal(res.as_numpy("output"), m.predict(x))  # binary: bit-exact
    inp.set_data_from_numpy(x, binary_data=False)
    res = c.infer("cnn", [inp], outputs=[th.InferRequestedOutput("output", binary_data=False)])
    np.testing.assert_allclose(res.as_numpy("output"), m.predict(x), atol=1e-7)
    with pytest.raises(Exception, match="shape must be"):
        bad = th.InferInput("input", [2, 8, 8], "FP32")
        bad.set_data_from_numpy(np.zeros((2, 8, 8), np.float32))
        c.infer("cnn", [bad])
    c.close()


def test_concurrent_keras_requests_are_batched_and_exact(server, client, paths):
    """16 clients at once: every reply equals predict on its own rows, and the batches the
    model saw hold all the rows (the batch-size histogram counts rows per model call)."""
    from pyaiml.keras.models import load_model

    m = load_model(paths["cnn"])
    st = server.app.state.serve
    hist = st.metrics.batch.labels("cnn")

    def total():
        s = {x.name: x.value for x in hist.collect()[0].samples}
        return s["pyaiml_serve_batch_size_sum"], s["pyaiml_serve_batch_size_count"]

    rows0, calls0 = total()
    rs = np.random.default_rng(7)
    xs = [rs.standard_normal((1 + i % 3, 8, 8, 1)).astype(np.float32) for i in range(16)]
    out = [None] * 16

    def worker(i):
        with httpx.Client(base_url=server.url, timeout=30) as c:
            out[i] = _out(_infer(c, "cnn", [_tensor("input", xs[i], "FP32")]), "output")

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    for x, y in zip(xs, out):
        np.testing.assert_allclose(y, m.predict(x), atol=1e-7)
    rows1, calls1 = total()
    assert rows1 - rows0 == sum(len(x) for x in xs)
    assert 1 <= calls1 - calls0 <= 16


def _held_batcher(op, first):
    """A batcher over ``op`` whose first call (on ``first``) holds until the returned gate is
    set, so that later submits queue up behind it: (batcher, gate, row counts of the calls,
    the first request's future)."""
    gate = threading.Event()
    calls = []

    def fn(x):
        calls.append(len(x))
        if len(calls) == 1:
            gate.wait(10)
        return op(x)

    b = DynamicBatcher(fn, max_batch_size=8, max_delay=0.001)
    fut = b.submit(first)
    while not calls:
        threading.Event().wait(0.001)
    return b, gate, calls, fut


def test_dynamic_batcher_merges_waiting_requests_in_order():
    """While the model is busy with the first request, 9 more queue up; they are merged
    into batches of at most max_batch_size rows, each request's rows kept together."""
    b, gate, calls, first = _held_batcher(lambda x: x * 2, np.ones((1, 2)))
    futs = [b.submit(np.full((k, 2), float(i))) for i, k in enumerate([3, 3, 2, 1, 4, 1, 1, 2, 5])]
    gate.set()
    np.testing.assert_array_equal(first.result(10), np.full((1, 2), 2.0))
    for i, (k, f) in enumerate(zip([3, 3, 2, 1, 4, 1, 1, 2, 5], futs)):
        np.testing.assert_array_equal(f.result(10), np.full((k, 2), 2.0 * i))
    assert calls[0] == 1 and sum(calls) == 1 + 22 and max(calls) <= 8 and len(calls) <= 5
    b.close()


def test_dynamic_batcher_errors_reach_every_waiter_and_worker_survives():
    def fn(x):
        if (x < 0).any():
            raise ValueError("negative input")
        return x

    b = DynamicBatcher(fn, max_batch_size=4, max_delay=0.0)
    with pytest.raises(ValueError, match="negative input"):
        b.submit(-np.ones((1, 1))).result(10)
    np.testing.assert_array_equal(b.submit(np.ones((2, 1))).result(10), np.ones((2, 1)))
    b.close()
    with pytest.raises(ValueError, match="max_batch_size"):
        DynamicBatcher(fn, max_batch_size=0)


def test_dynamic_batcher_wakes_its_worker_for_the_request_that_ends_its_wait():
    """The worker is woken only by the request that ends its wait: any request while it is
    idle (one of 0 rows too), the one that completes the batch it gathers (the batch then
    runs at once, not at the end of max_delay); requests short of it wait for the delay."""
    import time

    calls = []
    hold, gate = threading.Event(), threading.Event()

    def fn(x):
        calls.append(len(x))
        if hold.is_set():
            hold.clear()
            gate.wait(10)
        return x + 1

    b = DynamicBatcher(fn, max_batch_size=8, max_delay=0.01)
    assert b.submit(np.ones((0, 2))).result(10).shape == (0, 2)  # idle worker, 0 rows: woken, served
    b.close()
    calls.clear()
    b = DynamicBatcher(fn, max_batch_size=8, max_delay=30.0)
    # a batch of 3 rows (queued while the worker is held), so the next batch gathers up to 3
    hold.set()
    first = b.submit(np.ones((1, 2)))
    while not calls:
        time.sleep(0.001)
    futs = [b.submit(np.full((1, 2), float(i))) for i in range(3)]
    gate.set()
    first.result(10)
    for f in futs:
        f.result(10)
    assert calls == [1, 3]
    # gathering for the 3 rows of the last batch: two short of it wait, the third ends it at once
    t0 = time.monotonic()
    futs = [b.submit(np.full((1, 2), float(i))) for i in range(3)]
    outs = [f.result(10) for f in futs]
    assert time.monotonic() - t0 < 10 and calls[2:] in ([3], [1, 2])
    for i, y in enumerate(outs):
        np.testing.assert_array_equal(y, np.full((1, 2), i + 1.0))
    b.close()


def test_dynamic_batcher_async_waiters_get_their_rows_and_errors():
    """submit_async from an event loop: each awaiter gets its own rows of the merged call
    (settled in one loop callback per batch), an error reaches every awaiter of its batch,
    and an awaiter cancelled while queued leaves the others and the worker unharmed."""
    import asyncio

    calls = []

    def fn(x):
        calls.append(len(x))
        if (x < 0).any():
            raise ValueError("negative input")
        return x * 3

    b = DynamicBatcher(fn, max_batch_size=8, max_delay=0.05)

    async def main():
        futs = [b.submit_async(np.full((k, 2), float(i))) for i, k in enumerate([1, 2, 3, 1])]
        outs = await asyncio.gather(*futs)
        for i, (k, y) in enumerate(zip([1, 2, 3, 1], outs)):
            np.testing.assert_array_equal(y, np.full((k, 2), 3.0 * i))
        bad = [b.submit_async(-np.ones((1, 2))), b.submit_async(np.ones((1, 2)))]
        res = await asyncio.gather(*bad, return_exceptions=True)
        assert all(isinstance(r, ValueError) and "negative input" in str(r) for r in res)
        gone = b.submit_async(np.ones((1, 2)))
        gone.cancel()
        kept = b.submit_async(np.full((2, 2), 5.0))
        np.testing.assert_array_equal(await kept, np.full((2, 2), 15.0))
        assert gone.cancelled()

    asyncio.run(main())
    assert sum(calls) <= 1 + 2 + 3 + 1 + 2 + 1 + 2 and len(calls) >= 3
    b.close()


def test_v2_infer_endpoint_returns_quietly_when_the_client_leaves(paths):
    """A client that disconnects before its body has arrived gets nothing sent and leaves
    no exception behind (the endpoint the middleware calls directly)."""
    import asyncio

    from pyaiml.serve.app import V2Infer

    app = create_app({"cnn": paths["cnn"]})
    try:
        ep = next(r.endpoint for r in app.routes if isinstance(getattr(r, "endpoint", None), V2Infer))
        msgs = iter([{"type": "http.request", "body": b'{"inputs"', "more_body": True}, {"type": "http.disconnect"}])
        sent = []

        async def receive():
            return next(msgs)

        async def send(m):
            sent.append(m)

        scope = {"type": "http", "method": "POST", "path": "/v2/models/cnn/infer", "headers": [],
                 "path_params": {"name": "cnn"}, "state": {}}
        asyncio.run(ep(scope, receive, send))
        assert sent == [] and scope["state"]["model"] == "cnn"
    finally:
        app.state.serve.close()


# ---------------------------------------------------------------------- HMMs
def test_gaussian_hmm_methods_equal_the_model(client, paths):
    from pyaiml import hmm

    m = hmm.load(paths["ghmm"])
    X = np.random.default_rng(8).normal(2, 2, (30, 2))
    L = np.array([10, 20])
    inputs = [_tensor("X", X, "FP64"), _tensor("lengths", L, "INT64")]
    np.testing.assert_allclose(_out(_infer(client, "ghmm", inputs), "log_prob"), m.score(X, L, per_sequence=True),
                               rtol=1e-12)
    r = _infer(client, "ghmm", inputs, {"method": "decode"})
    lp, states = m.decode(X, L)
    np.testing.assert_allclose(_out(r, "log_prob"), [lp], rtol=1e-12)
    np.testing.assert_array_equal(_out(r, "states"), states)
    r = _infer(client, "ghmm", inputs, {"method": "predict_proba"})
    np.testing.assert_allclose(_out(r, "posteriors"), m.predict_proba(X, L), rtol=1e-12, atol=1e-15)
    r = _infer(client, "ghmm", inputs[:1], {"method": "score_samples"}, outputs=["log_prob"])
    assert [o["name"] for o in r.json()["outputs"]] == ["log_prob"]
    np.testing.assert_allclose(_out(r, "log_prob"), [m.score(X)], rtol=1e-12)
    r = _infer(client, "ghmm", inputs, {"method": "fit"})
    assert r.status_code == 400 and "parameter 'method'" in r.json()["error"] and "'fit'" in r.json()["error"]


def test_categorical_hmm_predict(client, paths):
    from pyaiml import hmm

    m = hmm.load(paths["chmm"])
    X = np.random.default_rng(9).integers(0, 4, (25, 1))
    r = _infer(client, "chmm", [_tensor("X", X, "INT64")], {"method": "predict"})
    np.testing.assert_array_equal(_out(r, "states"), m.predict(X))
    r = _infer(client, "chmm", [_tensor("X", X.astype(float) + 0.5, "FP64")])
    assert r.status_code == 400 and "input 'X': must hold integers" in r.json()["error"]
    r = _infer(client, "chmm", [_tensor("X", np.full((3, 1), 9), "INT64")])
    assert r.status_code == 400 and "chmm" in r.json()["error"]  # symbol out of range, the model's own message


def test_hmm_classifier_labels_and_probabilities(client, paths):
    from pyaiml.hmm import HMMClassifier

    clf = HMMClassifier.load(paths["clf"])
    rs = np.random.default_rng(10)
    seqs = [rs.normal(0, 1, (9, 3)), rs.normal(3, 1, (14, 3)), rs.normal(0.2, 1, (11, 3))]
    X = np.concatenate(seqs)
    r = _infer(client, "clf", [_tensor("X", X, "FP64"), _tensor("lengths", [9, 14, 11], "INT64")])
    assert _out(r, "label").tolist() == clf.predict(seqs).tolist()
    np.testing.assert_allclose(_out(r, "probabilities"), clf.predict_proba(seqs), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(_out(r, "log_likelihood"), clf.log_likelihoods(seqs), rtol=1e-12)
    r = _infer(client, "clf", [_tensor("X", X, "FP64"), _tensor("lengths", [9, 14], "INT64")])
    assert r.status_code == 400 and "input 'lengths': must sum to the 34 rows of X" in r.json()["error"]


# ---------------------------------------------------------------------- Word2Vec
def test_word2vec_vectors_and_most_similar(client, server, paths):
    from pyaiml.models import Word2Vec

    kv = Word2Vec.load(paths["w2v"]).wv
    words = ["speak", "citizen", "all"]
    r = _infer(client, "w2v", [_tensor("words", np.array(words, dtype=object), "BYTES")])
    np.testing.assert_array_equal(_out(r, "vectors").astype(np.float32), np.stack([kv[w] for w in words]))
    r = _infer(client, "w2v", [{"name": "words", "shape": [2], "datatype": "BYTES", "data": ["speak", "all"]}],
               {"method": "most_similar", "topn": 3})
    sim, sc = _out(r, "similar"), _out(r, "scores")
    for i, w in enumerate(["speak", "all"]):
        ref = kv.most_similar(w, topn=3)
        assert sim[i].tolist() == [a for a, _ in ref]
        np.testing.assert_allclose(sc[i], [b for _, b in ref], rtol=1e-6)
    r = _infer(client, "w2v", [_tensor("words", np.array(["speak", "zebra"], dtype=object), "BYTES")])
    assert r.status_code == 400 and "not in the vocabulary" in r.json()["error"] and "'zebra'" in r.json()["error"]
    th = pytest.importorskip("tritonclient.http")
    c = th.InferenceServerClient(server.url.removeprefix("http://"))
    inp = th.InferInput("words", [2], "BYTES")
    inp.set_data_from_numpy(np.array([b"speak", b"all"], dtype=object))  # binary BYTES: length-prefixed
    np.testing.assert_array_equal(c.infer("w2v", [inp]).as_numpy("vectors"), np.stack([kv["speak"], kv["all"]]))
    c.close()


# ---------------------------------------------------------------------- bad requests
_X = np.zeros((1, 8, 8, 1)).reshape(-1).tolist()


@pytest.mark.parametrize("body, match", [
    ({"inputs": [{"name": "input", "shape": [1, 8, 8], "datatype": "FP32", "data": _X[:64]}]},
     r"input 'input': shape must be \[-1, 8, 8, 1\] \(batch first\). Received \[1, 8, 8\]"),
    ({"inputs": [{"name": "input", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": _X[:10]}]},
     r"input 'input': shape \[1, 8, 8, 1\] needs 64 values; 'data' holds 10"),
    ({"inputs": [{"name": "input", "shape": [1, 8, 8, 1], "datatype": "FP33", "data": _X}]},
     r"input 'input': unknown datatype 'FP33'"),
    ({"inputs": [{"name": "input", "shape": [1, 8, 8, 1], "datatype": "BYTES", "data": ["a"] * 64}]},
     r"input 'input': must be numeric \(FP32/FP64/INT\*\). Received datatype BYTES"),
    ({"inputs": [{"name": "input", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": ["x"] * 64}]},
     r"input 'input': FP32 data must be numbers. Received str 'x'"),
    ({"inputs": [{"name": "input", "shape": [1, 8, 8, 1], "datatype": "INT8", "data": [300] * 64}]},
     r"input 'input': INT8 values must be in \[-128, 127\]. Received 300"),
    ({"inputs": [{"name": "image", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": _X}]},
     r"unknown input\(s\) \['image'\]; it takes \['input'\]"),
    ({"inputs": []}, r"'inputs' must be a non-empty list"),
    ({"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}, r"inputs\[0\] must be an object with a string"),
    ({"inputs": [{"name": "input", "shape": [-1, 8], "datatype": "FP32", "data": []}]},
     r"input 'input': 'shape' must be a list of integers >= 0. Received \[-1, 8\]"),
    ({"inputs": [{"name": "input", "shape": [1, 8, 8, 1], "datatype": "FP32"}]},
     r"input 'input' has neither 'data' nor a binary_data_size"),
    ({"inputs": [{"name": "input", "shape": [1 << 20, 1 << 20], "datatype": "FP32", "data": []}]},
     r"more than the limit"),
    ({"inputs": [{"name": "input", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": _X}],
      "outputs": [{"name": "probs"}]}, r"unknown output\(s\) \['probs'\]"),
])
def test_bad_tensors_are_400_naming_the_input(client, body, match):
    import re

    r = client.post("/v2/models/cnn/infer", json=body)
    assert r.status_code == 400, r.text
    assert re.search(match, r.json()["error"]), r.json()["error"]


def test_malformed_bodies_are_400(client):
    r = client.post("/v2/models/cnn/infer", content=b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = client.post("/v2/models/cnn/infer", content=b"[1, 2]")
    assert r.status_code == 400 and "must be a JSON object" in r.json()["error"]
    nan = {"inputs": [{"name": "input", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": [0.0] * 9 + [float("nan")] * 55}]}
    r = client.post("/v2/models/cnn/infer", content=json.dumps(nan).encode())
    assert r.status_code == 400 and "values must be finite. Received nan at index (0, 1, 1, 0)" in r.json()["error"]
    # binary extension: sizes that do not add up
    head = json.dumps({"inputs": [{"name": "input", "shape": [1, 8, 8, 1], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 256}}]}).encode()
    r = client.post("/v2/models/cnn/infer", content=head + b"\0" * 100,
                    headers={"Inference-Header-Content-Length": str(len(head))})
    assert r.status_code == 400 and "binary_data_size 256 runs past the end" in r.json()["error"]
    r = client.post("/v2/models/cnn/infer", content=head + b"\0" * 300,
                    headers={"Inference-Header-Content-Length": str(len(head))})
    assert r.status_code == 400 and "44 bytes of binary data that no input claims" in r.json()["error"]
    r = client.post("/v2/models/cnn/infer", content=head, headers={"Inference-Header-Content-Length": "99999"})
    assert r.status_code == 400 and "Inference-Header-Content-Length is 99999" in r.json()["error"]
    # the server still answers after all of these
    ok = {"inputs": [{"name": "input", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": _X}]}
    assert client.post("/v2/models/cnn/infer", json=ok).status_code == 200


def test_empty_batch_returns_empty_output(client):
    r = client.post("/v2/models/cnn/infer", json={"inputs": [{"name": "input", "shape": [0, 8, 8, 1],
                                                              "datatype": "FP32", "data": []}]})
    assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [0, 3]


def test_dynamic_batcher_parks_the_pool_after_a_batch_of_several_requests(monkeypatch):
    """A model call that served several requests (clients are waiting on the cores) sends
    the pool's spinning threads to sleep; a lone request's call leaves them spinning."""
    from pyaiml.serve import batching

    parked = []
    monkeypatch.setattr(batching, "park_threads", lambda: parked.append(1))
    b, gate, calls, first = _held_batcher(lambda x: x + 1, np.zeros((1, 2)))
    futs = [b.submit(np.full((1, 2), float(i))) for i in range(3)]
    gate.set()
    np.testing.assert_array_equal(first.result(10), np.ones((1, 2)))
    for i, f in enumerate(futs):
        np.testing.assert_array_equal(f.result(10), np.full((1, 2), i + 1.0))
    assert calls == [1, 3] and parked == [1]
    b.close()


def test_json_floats_writes_what_json_dumps_writes():
    """The native formatter of float outputs: the bytes of json.dumps(a.tolist()) (repr of
    each value, the exponent switch at 1e-5 and 1e16 included), NaN and inf as null."""
    import math

    from pyaiml._backend import _load_C

    C = _load_C()
    if C is None:
        pytest.skip("no compiled extension")

    def ref(a):
        return json.dumps([v if math.isfinite(v) else None for v in a.ravel().tolist()], separators=(",", ":")).encode()

    special = [0.0, -0.0, 1.0, -2.0, 100.0, 1e15, 1e16, 9999999999999998.0, 1234567890123456.0, 1e-4, 1e-5,
               0.00012345, 1.2345e-5, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1, 1 / 3,
               1e22, 1e-100, 2.5e-4, float("nan"), float("inf"), -float("inf")]
    rs = np.random.default_rng(0)
    for dt in (np.float64, np.float32):
        with np.errstate(over="ignore"):  # 1.8e308 is inf in float32
            a = np.array(special, dtype=dt)
        assert C.json_floats(a) == ref(a)
        for scale in (1e-30, 1e-5, 1.0, 1e7, 1e17, 1e30):
            a = (rs.standard_normal((7, 11)) * scale).astype(dt)
            assert C.json_floats(a) == ref(a)
        bits = rs.integers(0, 2**63, 4000, dtype=np.uint64)
        a = bits.astype(np.uint32).view(np.float32) if dt == np.float32 else bits.view(np.float64)
        assert C.json_floats(a) == ref(a)  # every exponent, subnormals, NaN payloads
    assert C.json_floats(np.zeros(0, np.float32)) == b"[]"
    with pytest.raises(TypeError, match="json_floats: a must be float32 or float64. Received int64"):
        C.json_floats(np.arange(3))
    with pytest.raises(ValueError, match="json_floats: a must be C-contiguous"):
        C.json_floats(np.zeros((4, 4), np.float32)[:, ::2])


def _plain_response(req, model_name, version, outputs):
    """encode_response written the plain way (one json.dumps of the whole reply)."""
    import math

    params = req.get("parameters") or {}
    chosen = ([(o["name"], bool((o.get("parameters") or {}).get("binary_data", params.get("binary_data_output", False))))
               for o in req["outputs"]] if req.get("outputs") else
              [(n, bool(params.get("binary_data_output", False))) for n in outputs])
    outs, blobs = [], []
    for name, binary in chosen:
        a = np.asarray(outputs[name])
        dt = {"f4": "FP32", "f8": "FP64", "i8": "INT64"}[a.dtype.str[1:]]
        e = {"name": name, "datatype": dt, "shape": list(a.shape)}
        if binary:
            blobs.append(a.tobytes())
            e["parameters"] = {"binary_data_size": a.nbytes}
        else:
            e["data"] = [v if not isinstance(v, float) or math.isfinite(v) else None for v in a.ravel().tolist()]
        outs.append(e)
    res = {"model_name": model_name, "model_version": version, "outputs": outs}
    if "id" in req:
        res["id"] = req["id"]
    head = json.dumps(res, separators=(",", ":")).encode()
    return (head, None) if not blobs else (head + b"".join(blobs), len(head))


def test_encode_response_equals_the_plain_encoding():
    """Responses assembled from cached JSON pieces and the native float lists are the bytes of
    one json.dumps of the reply: JSON and binary outputs, NaN, an id (which may even hold
    the pieces' marker), repeated shapes (cache hits) and new ones."""
    from pyaiml.serve import tensors

    rs = np.random.default_rng(1)
    y32 = rs.standard_normal((3, 4)).astype(np.float32)
    y64 = rs.standard_normal((2, 5))
    y64[1, 2] = np.nan
    lab = np.arange(6, dtype=np.int64).reshape(2, 3)
    cases = [
        ({}, {"output": y32}),
        ({}, {"output": y32[:1]}),
        ({}, {"output": y32[:1] * 3}),
        ({"outputs": [{"name": "b"}, {"name": "a"}]}, {"a": y64, "b": lab}),
        ({"parameters": {"binary_data_output": True}}, {"output": y32}),
        ({"outputs": [{"name": "a", "parameters": {"binary_data": True}}, {"name": "b"}]}, {"a": y64, "b": y32}),
        ({"id": "req-7"}, {"output": y32}),
        ({"id": tensors._MARK}, {"output": y32, "x": y64}),
    ]
    for _ in range(2):
        for req, outputs in cases:
            for name, version in (("cnn", "1"), ("m" + tensors._MARK, "2")):
                assert tensors.encode_response(req, name, version, outputs) == \
                    _plain_response(req, name, version, outputs)


def test_parse_request_reuses_a_binary_head_but_not_its_tensors():
    """Two binary requests with one head: the second parse reuses the first's parsed head, but
    each gets its own arrays, and the size rules still hold against each body; heads with
    JSON data are not kept."""
    from pyaiml.serve import tensors

    tensors._HEAD_CACHE.clear()
    head = json.dumps({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 24}},
                                  {"name": "k", "shape": [2], "datatype": "INT64",
                                   "parameters": {"binary_data_size": 16}}]}).encode()
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.array([4, -5], dtype=np.int64)
    r1, in1 = tensors.parse_request(head + a.tobytes() + b.tobytes(), str(len(head)))
    r2, in2 = tensors.parse_request(head + (a + 10).tobytes() + (b * 2).tobytes(), str(len(head)))
    assert r2 is r1 and len(tensors._HEAD_CACHE) == 1
    np.testing.assert_array_equal(in1["x"], a)
    np.testing.assert_array_equal(in2["x"], a + 10)
    np.testing.assert_array_equal(in2["k"], b * 2)
    assert in2["x"].dtype == np.float32 and in2["k"].dtype == np.int64 and in2["x"].shape == (2, 3)
    with pytest.raises(tensors.TensorError, match="input 'k': binary_data_size 16 runs past the end"):
        tensors.parse_request(head + a.tobytes() + b"\0" * 8, str(len(head)))
    with pytest.raises(tensors.TensorError, match="8 bytes of binary data that no input claims"):
        tensors.parse_request(head + a.tobytes() + b.tobytes() + b"\0" * 8, str(len(head)))
    mixed = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.5]},
                                   {"name": "k", "shape": [1], "datatype": "INT64",
                                    "parameters": {"binary_data_size": 8}}]}).encode()
    _, inm = tensors.parse_request(mixed + b.tobytes()[:8], str(len(mixed)))
    assert inm["x"].tolist() == [1.5] and inm["k"].tolist() == [4] and len(tensors._HEAD_CACHE) == 1
    wrong = json.dumps({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32",
                                    "parameters": {"binary_data_size": 20}}]}).encode()
    for _ in range(2):
        with pytest.raises(tensors.TensorError, match=r"input 'x': shape \[2, 3\] of FP32 needs 24 bytes; "
                                                      "binary_data_size is 20"):
            tensors.parse_request(wrong + b"\0" * 20, str(len(wrong)))
