"""The ASGI app: :func:`create_app` (Starlette), its middleware and the Open Inference Protocol v2 routes.

What it is: ``create_app(models={name: path or object}, ...)`` loads every model (so the
app is ready before any port opens), wraps each for the protocol that fits it and returns
a Starlette app with

- Open Inference Protocol v2 (Keras, HMM, HMMClassifier, Word2Vec/KeyedVectors):
  ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready`` (503 until ready and while
  shutting down), ``/v2/models/{name}[/versions/{v}]``, ``.../ready``, ``.../config``,
  ``POST .../infer`` (JSON and the binary tensor extension; errors ``{"error": msg}``; the
  middleware hands infer requests straight to their ASGI endpoint, :class:`V2Infer`);
- OpenAI-compatible routes (TransformerLM, pyaiml.llm checkpoints and other adapters;
  Word2Vec and BERT checkpoints for embeddings): see
  pyaiml/serve/openai_api.py;
- ``GET /metrics`` (Prometheus text format, see pyaiml/serve/metrics.py).

Middleware (one ASGI layer, streaming-safe): Bearer API keys when keys are given (compared
with ``hmac.compare_digest`` against every key; ``/v2/health/*`` stay open for probes),
request metrics, and one structured access-log line per request (JSON on the
``pyaiml.serve.access`` logger: time, client, method, path, route, status, bytes, seconds,
model). Request bodies above ``max_body_bytes`` get 413; malformed JSON, bad tensors and
unknown models get 4xx in each protocol's error format; an unexpected failure of a model
call is a 500 with a JSON body and the worker goes on.

What it is not: TLS termination or rate limiting per key (put a proxy in front).
Tests: tests/test_serve_v2.py, tests/test_serve_openai.py, tests/test_serve_ops.py.
"""
from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import time

from pyaiml.serve.tensors import TensorError, encode_response, parse_request

access_log = logging.getLogger("pyaiml.serve.access")

_OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")


def _route_path(scope) -> str:
    """The request's path within this app: ``path`` less the ``root_path`` it is mounted at
    (when the app is embedded under a prefix, e.g. a Starlette Mount, ``path`` keeps the
    prefix), as Starlette's router matches it."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root):len(root) + 1] in ("/", ""):
        return path[len(root):]
    return path


class HTTPError(Exception):
    """An error answered with ``status`` and ``message`` in the route's protocol format."""

    def __init__(self, status, message, code=None, param=None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def read_keys(path) -> list:
    """API keys from a file: one per line; blank lines and lines starting with # ignored."""
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        keys = [ln.strip() for ln in f if ln.strip() and not ln.strip().startswith("#")]
    if not keys:
        raise ValueError(f"serve: the API key file {path} holds no key (one key per line)")
    short = [k for k in keys if len(k) < 16]
    if short:
        raise ValueError(f"serve: API keys must be at least 16 characters; {path} has one of {len(short[0])}")
    return keys


class ServeState:
    """Everything the routes share: models, schedulers, metrics, limits."""

    def __init__(self, metrics, limits):
        self.metrics = metrics
        self.limits = limits
        self.v2 = {}       # name -> V2Model
        self.lms = {}      # name -> (adapter, Scheduler)
        self.vectors = {}  # name -> VectorsModel (also served by /v1/embeddings)
        self.encoders = {}  # name -> EncoderEmbeddings (pyaiml.llm BERT; /v1/embeddings only)
        self.ready = False
        self.created = int(time.time())
        self.keys = []

    def close(self):
        self.ready = False
        self.metrics.ready.set(0)
        for _, sch in self.lms.values():
            sch.close()
        for m in self.v2.values():
            m.close()


_GLOBAL = object()  # "use create_app's key" (a model's own "key": None means a plain file)


def _spec(name, spec):
    """(object or path, version, key) of one entry of ``models``."""
    if isinstance(spec, dict):
        unknown = set(spec) - {"path", "model", "version", "key"}
        if unknown or ("path" in spec) == ("model" in spec):
            raise ValueError(f"create_app: models[{name!r}] as a dict takes 'path' or 'model' (one of them), and "
                             f"optionally 'version' and 'key'. Received keys {sorted(spec)}")
        return spec.get("path", spec.get("model")), str(spec.get("version", "1")), spec.get("key", _GLOBAL)
    return spec, "1", _GLOBAL


def _check_name(name):
    if not isinstance(name, str) or not name or any(c in name for c in "/ ?#%") or len(name) > 128:
        raise ValueError(f"create_app: model names must be non-empty strings without '/', spaces, '?', '#', '%' "
                         f"(at most 128 characters). Received {name!r}")


def create_app(models, api_key=None, api_key_file=None, key=None, max_batch_size=32, max_delay=0.005,
               max_running=32, max_queue=256, prefill_chunk=256, max_tokens_limit=4096, max_body_bytes=16 << 20,
               request_timeout=600.0):
    """The ASGI app serving ``models``.

    Parameters
    ----------
    models : dict name -> model file path (or Hugging Face checkpoint folder), model object
        (Sequential, HMM, HMMClassifier, Word2Vec, KeyedVectors, TransformerLM, a pyaiml.llm
        decoder or Bert, an LMAdapter), or a dict ``{"path" | "model", "version", "key"}``
    api_key : str or list of str, accepted Bearer keys (None: no authentication)
    api_key_file : path of a file with one key per line (adds to ``api_key``)
    key : decryption key for encrypted model files (bytes, "file:PATH", "env:NAME", callable)
    max_batch_size, max_delay : dynamic batching of v2 Keras models (rows, seconds)
    max_running, max_queue, prefill_chunk : language-model scheduler (running sequences,
        waiting requests before 429, prompt tokens prefilled per step)
    max_tokens_limit : the largest ``max_tokens`` a request may ask for
    max_body_bytes : request bodies above this get 413
    request_timeout : seconds a generation may take before it is cancelled (504)
    """
    from starlette.applications import Starlette
    from starlette.routing import Route

    from pyaiml.serve import models as sm
    from pyaiml.serve.engine import LMAdapter, Scheduler, TransformerLMAdapter
    from pyaiml.serve.metrics import Metrics
    from pyaiml.serve.openai_api import openai_routes

    if not isinstance(models, dict) or not models:
        raise ValueError(f"create_app: models must be a non-empty dict name -> path or model. Received {models!r:.80}")
    for n, v, lo in (("max_batch_size", max_batch_size, 1), ("max_tokens_limit", max_tokens_limit, 1),
                     ("max_body_bytes", max_body_bytes, 1024)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"create_app: {n} must be an integer >= {lo}. Received {v!r}")
    for n, v in (("max_delay", max_delay), ("request_timeout", request_timeout)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ValueError(f"create_app: {n} must be a number of seconds >= 0. Received {v!r}")
    metrics = Metrics()
    st = ServeState(metrics, {"max_tokens": max_tokens_limit, "max_body": max_body_bytes,
                              "timeout": float(request_timeout)})
    keys = []
    if api_key is not None:
        keys += [api_key] if isinstance(api_key, str) else list(api_key)
    if api_key_file is not None:
        keys += read_keys(api_key_file)
    if any(not isinstance(k, str) or not k for k in keys):
        raise ValueError("create_app: API keys must be non-empty strings")
    st.keys = [k.encode() for k in keys]

    try:
        for name, spec in models.items():
            _check_name(name)
            obj, version, mkey = _spec(name, spec)
            if isinstance(obj, (str, os.PathLike)):
                kind, obj = sm.load_file(obj, key=key if mkey is _GLOBAL else mkey)
            else:
                kind = sm.kind_of(obj)
            if kind == "keras":
                st.v2[name] = sm.KerasModel(name, obj, version, max_batch_size, max_delay,
                                            on_batch=metrics.batch.labels(name).observe)
            elif kind == "hmm":
                st.v2[name] = sm.HMMModel(name, obj, version)
            elif kind == "hmm-classifier":
                st.v2[name] = sm.HMMClassifierModel(name, obj, version)
            elif kind in ("word2vec", "keyedvectors"):
                vm = sm.VectorsModel(name, obj.wv if kind == "word2vec" else obj, version)
                st.v2[name] = st.vectors[name] = vm
            elif kind == "llm-encoder":
                from pyaiml.serve.llm_adapter import EncoderEmbeddings

                st.encoders[name] = EncoderEmbeddings(name, obj)
            else:
                if kind == "llm-decoder":
                    from pyaiml.serve.llm_adapter import DecoderAdapter

                    adapter = DecoderAdapter(obj)
                else:
                    adapter = obj if isinstance(obj, LMAdapter) else TransformerLMAdapter(obj)
                qg, rg, bh = metrics.queue.labels(name), metrics.running.labels(name), metrics.batch.labels(name)

                def on_step(b, running, waiting, qg=qg, rg=rg, bh=bh):
                    bh.observe(b)
                    rg.set(running)
                    qg.set(waiting)

                st.lms[name] = (adapter, Scheduler(adapter, max_running, max_queue, prefill_chunk, on_step, name))
                st.lms[name][0].version = version
    except BaseException:
        st.close()
        raise
    st.ready = True
    metrics.ready.set(1)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        st.close()  # uvicorn calls this after the in-flight requests have finished

    routes = v2_routes(st) + openai_routes(st) + [Route("/metrics", _metrics_route(st), methods=["GET"])]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={404: _route_error, 405: _route_error})
    app.state.serve = st
    return _Middleware(app, st)


# ---------------------------------------------------------------------- middleware
class _Middleware:
    """Auth, metrics and access log around the Starlette app (pure ASGI: streams pass through)."""

    def __init__(self, app, st):
        self.app = app
        self.st = st
        self.state = app.state
        self._routes = [(r, getattr(r, "path", "")) for r in app.routes]
        self._own = {id(r) for r in app.routes}
        # POST .../infer goes straight to its ASGI endpoint (see V2Infer); keyed by the
        # number of path segments: /v2/models/{name}/infer and .../versions/{version}/infer
        self._infer = {len(r.path.split("/")): r for r in app.routes if isinstance(getattr(r, "endpoint", None), V2Infer)}

    def __getattr__(self, name):  # expose .routes, .state, ... of the wrapped app
        return getattr(self.app, name)

    def _route(self, scope):
        r = scope.get("route")  # the router records the route it picked (skips matching 14 patterns again)
        if r is not None and id(r) in self._own:  # (not an enclosing app's route, e.g. the Mount we sit under)
            return r.path
        from starlette.routing import Match
        for r, path in self._routes:
            m, _ = r.matches(scope)
            if m == Match.FULL:
                return path
        return "unmatched"

    def _authorized(self, scope, path):
        if not self.st.keys or path in _OPEN_PATHS:
            return True
        auth = b""
        for k, v in scope.get("headers", ()):
            if k == b"authorization":
                auth = v
                break
        scheme, _, token = auth.partition(b" ")
        ok = False
        for key in self.st.keys:  # every key compared, in constant time each
            ok |= hmac.compare_digest(token.strip(), key)
        return ok and scheme.lower() == b"bearer"

    def _direct(self, scope, path):
        """The V2Infer endpoint for a POST whose path (within this app) has an infer route's
        shape, with the scope's path_params and route set as Starlette's router would; else None."""
        if scope["method"] != "POST" or not path.endswith("/infer") or not path.startswith("/v2/models/"):
            return None
        parts = path.split("/")
        r = self._infer.get(len(parts))
        if r is None or not all(parts[3:-1]) or (len(parts) == 7 and parts[4] != "versions"):
            return None
        scope["path_params"] = {"name": parts[3]} if len(parts) == 5 else {"name": parts[3], "version": parts[5]}
        scope["route"] = r
        return r.endpoint

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        info = {"status": 500, "bytes": 0, "counted": False}

        def count():
            # Counted before the last body message goes out: a client that has its whole
            # reply and then reads /metrics sees its request there.
            if info["counted"]:
                return
            info["counted"] = True
            try:
                self.st.metrics.http.record(self._route(scope), scope.get("method", ""), info["status"],
                                            time.perf_counter() - t0)
            except Exception:  # noqa: BLE001, S110 - metrics must never break serving
                pass

        async def send_wrap(msg):
            if msg["type"] == "http.response.start":
                info["status"] = msg["status"]
            elif msg["type"] == "http.response.body":
                info["bytes"] += len(msg.get("body", b""))
                if not msg.get("more_body", False):
                    count()
            await send(msg)

        try:
            path = _route_path(scope)
            if not self._authorized(scope, path):
                msg = "a valid API key is required: send the header 'Authorization: Bearer <key>'"
                body = _openai_error_body(401, msg, "invalid_api_key") if path.startswith("/v1") \
                    else json.dumps({"error": msg}).encode()
                await send_wrap({"type": "http.response.start", "status": 401,
                                 "headers": [(b"content-type", b"application/json"),
                                             (b"www-authenticate", b"Bearer")]})
                await send_wrap({"type": "http.response.body", "body": body})
            else:
                await (self._direct(scope, path) or self.app)(scope, receive, send_wrap)
        finally:
            dt = time.perf_counter() - t0
            count()  # a request that ended without a complete reply
            if access_log.isEnabledFor(logging.INFO):
                route = self._route(scope)
                client = scope.get("client") or ("", 0)
                rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() % 1 * 1000):03d}Z",
                       "client": f"{client[0]}:{client[1]}", "method": scope.get("method"), "path": scope["path"],
                       "route": route, "status": info["status"], "bytes": info["bytes"], "seconds": round(dt, 6),
                       "model": (scope.get("state") or {}).get("model")}
                access_log.info(json.dumps(rec))


async def _route_error(request, exc):
    """An unknown path (404) or a method a route does not take (405), as a JSON error in the
    format of the protocol the path belongs to (Starlette's default is plain text)."""
    from starlette.responses import Response

    status = getattr(exc, "status_code", 404)
    path = request.url.path
    if status == 405:
        msg = f"method {request.method} is not allowed on {path}"
    else:
        msg = f"no route {path}; this server speaks /v1 (OpenAI-compatible), /v2 (Open Inference Protocol) and /metrics"
    body = _openai_error_body(status, msg) if _route_path(request.scope).startswith("/v1") \
        else json.dumps({"error": msg}).encode()
    headers = dict(getattr(exc, "headers", None) or {})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _openai_error_body(status, message, code=None, param=None):
    kind = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
            405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error", 503: "server_error", 504: "timeout"}.get(
        status, "server_error" if status >= 500 else "invalid_request_error")
    return json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}}).encode()


async def read_body(request, st) -> bytes:
    """The request body, 413 beyond the limit (checked on Content-Length, then while reading)."""
    from starlette.requests import ClientDisconnect

    try:
        return await receive_body(request.receive, st.limits["max_body"], request.headers.get("content-length"))
    except _Disconnected:
        raise ClientDisconnect() from None


def _metrics_route(st):
    from starlette.responses import Response

    async def metrics(request):
        for name, (_, sch) in st.lms.items():
            st.metrics.queue.labels(name).set(sch.waiting)
            st.metrics.running.labels(name).set(sch.running)
        for name, m in st.v2.items():
            if hasattr(m, "batcher"):
                st.metrics.queue.labels(name).set(m.batcher.depth)
        body, ctype = st.metrics.render()
        return Response(body, media_type=ctype)

    return metrics


# ---------------------------------------------------------------------- v2 routes
def _v2_model(st, path_params):
    """The v2 model named by the route's ``name`` (and ``version``), or a 404."""
    name = path_params["name"]
    m = st.v2.get(name)
    if m is None:
        lm = " (a language model: use the /v1 routes)" if name in st.lms else ""
        raise HTTPError(404, f"unknown model '{name}'{lm}; this server has {sorted(st.v2)}")
    v = path_params.get("version")
    if v is not None and v != m.version:
        raise HTTPError(404, f"model '{name}' has no version '{v}'; it has version '{m.version}'")
    return m


class _Disconnected(Exception):
    """The client went away before its request body had arrived."""


async def receive_body(receive, limit, declared=None) -> bytes:
    """The request body from ASGI ``receive``, 413 beyond ``limit`` bytes (checked on the
    declared Content-Length first, then while reading)."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, f"the request body has {declared} bytes, more than the limit of {limit}")
    chunks, n = [], 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise _Disconnected()
        c = msg.get("body", b"")
        if c:
            n += len(c)
            if n > limit:
                raise HTTPError(413, f"the request body is larger than the limit of {limit} bytes")
            chunks.append(c)
        if not msg.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _json_error(msg):
    return json.dumps({"error": msg}, ensure_ascii=False, separators=(",", ":")).encode()


class V2Infer:
    """``POST /v2/models/{name}[/versions/{version}]/infer`` as a plain ASGI app.

    The hottest route of the server: the middleware calls it directly for requests whose
    path has the route's shape (no Starlette routing, request or response objects on the
    way: at 32 concurrent clients that stack cost about as much CPU per request as the
    mission CNN's batched forward pass); Starlette's router reaches the same object for
    anything the middleware leaves to it. Errors are the v2 format, ``{"error": msg}``:
    404 unknown model or version, 413 body too large, 400 malformed request or tensors,
    503 while shutting down, 500 (logged) when the model call fails."""

    def __init__(self, st):
        self.st = st

    async def __call__(self, scope, receive, send):
        pp = scope["path_params"]
        state = scope.get("state")
        if state is not None:
            state["model"] = pp["name"]
        extra = ()
        try:
            m = _v2_model(self.st, pp)
            if not self.st.ready:
                raise HTTPError(503, "the server is shutting down")
            declared = hlen = None
            for k, v in scope["headers"]:
                if k == b"content-length":
                    declared = v.decode("latin-1")
                elif k == b"inference-header-content-length":
                    hlen = v.decode("latin-1")
            body = await receive_body(receive, self.st.limits["max_body"], declared)
            req, inputs = parse_request(body, hlen)
            outputs = await m.infer(inputs, req.get("parameters") or {})
            payload, hl = encode_response(req, m.name, m.version, outputs)
            status = 200
            if hl is None:
                ctype = b"application/json"
            else:
                ctype = b"application/octet-stream"
                extra = ((b"inference-header-content-length", str(hl).encode()),)
        except _Disconnected:
            return
        except HTTPError as e:
            status, payload, ctype = e.status, _json_error(e.message), b"application/json"
        except TensorError as e:
            status, payload, ctype = 400, _json_error(str(e)), b"application/json"
        except Exception as e:
            logging.getLogger("pyaiml.serve").exception("v2 request failed")
            status, payload, ctype = 500, _json_error(f"{type(e).__name__}: {e}"), b"application/json"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(payload)).encode()), (b"content-type", ctype), *extra]})
        await send({"type": "http.response.body", "body": payload})


def v2_routes(st):
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from pyaiml import __version__

    def err(status, msg):
        return JSONResponse({"error": msg}, status_code=status)

    def model_of(request):
        request.state.model = request.path_params["name"]
        return _v2_model(st, request.path_params)

    def handler(fn):
        async def h(request):
            try:
                return await fn(request)
            except HTTPError as e:
                return err(e.status, e.message)
            except TensorError as e:
                return err(400, str(e))
            except Exception as e:
                logging.getLogger("pyaiml.serve").exception("v2 request failed")
                return err(500, f"{type(e).__name__}: {e}")
        return h

    async def server_meta(request):
        return JSONResponse({"name": "pyaiml", "version": __version__,
                             "extensions": ["binary_tensor_data", "model_configuration"]})

    async def live(request):
        return JSONResponse({"live": True})

    async def ready(request):
        return JSONResponse({"ready": st.ready}, status_code=200 if st.ready else 503)

    async def model_meta(request):
        return JSONResponse(model_of(request).metadata())

    async def model_ready(request):
        m = model_of(request)
        return JSONResponse({"name": m.name, "ready": st.ready}, status_code=200 if st.ready else 503)

    async def model_config(request):
        return JSONResponse(model_of(request).config())

    infer = V2Infer(st)
    routes = [Route("/v2", handler(server_meta), methods=["GET"]),
              Route("/v2/health/live", handler(live), methods=["GET"]),
              Route("/v2/health/ready", handler(ready), methods=["GET"])]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [Route(prefix, handler(model_meta), methods=["GET"]),
                   Route(prefix + "/ready", handler(model_ready), methods=["GET"]),
                   Route(prefix + "/config", handler(model_config), methods=["GET"]),
                   Route(prefix + "/infer", infer, methods=["POST"])]
    return routes
