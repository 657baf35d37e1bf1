"""Running the app: the ``pyaiml serve`` command and :class:`ServerThread` (uvicorn in a thread).

What it is: :func:`add_arguments` / :func:`main` implement ``pyaiml serve --model
NAME[:VERSION]=PATH ... [--host 127.0.0.1] [--port 8000] [--api-key-file F] [--key-file K]
[--threads N] [--trim-memory S]``: every model is loaded (and decrypted with
``--key-file``) before uvicorn opens the port, the server binds to 127.0.0.1 unless told
otherwise, access logs go to stderr as one JSON object per line, SIGTERM/SIGINT stop
accepting connections, let the requests in flight finish (``--graceful-timeout`` seconds
at most), then stop the model workers, and a :class:`MemoryTrimmer` hands the allocator's
free memory back to the system every ``--trim-memory`` seconds. :class:`ServerThread` runs an app on a loopback port in a background thread, for
tests, benchmarks and notebooks. Both run uvicorn's httptools protocol on a transport that sends
a response's head together with its body (:func:`http_protocol`).

What it is not: a process manager (run several processes behind a proxy for more).
Tests: tests/test_serve_ops.py (the command in a subprocess: readiness, SIGTERM during load).
"""
from __future__ import annotations

import logging
import socket
import sys
import threading
import time


def _server_class():
    import uvicorn

    class _Server(uvicorn.Server):
        """uvicorn.Server that turns readiness off the moment a stop signal arrives (the
        requests in flight then finish; new ones on kept-alive connections see 503)."""

        serve_state = None

        def handle_exit(self, sig, frame):
            st = self.serve_state
            if st is not None:
                st.ready = False
                st.metrics.ready.set(0)
            super().handle_exit(sig, frame)

    return _Server


class _CoalescingTransport:
    """A transport that holds a response head back until its body follows. uvicorn writes a
    response's head and its body separately, each a ``send`` system call on an idle socket
    and a TCP segment the client reads on its own; a write that ends a head (``\\r\\n\\r\\n``)
    waits here, and the next write of the same event-loop turn leaves together with it. A
    head with no body in that turn (a stream's first event comes later) leaves at the end of
    the turn (``call_soon``). ``close`` flushes first; everything else is the wrapped
    transport's."""

    __slots__ = ("_head", "_loop", "_t")

    def __init__(self, transport, loop):
        self._t, self._loop, self._head = transport, loop, None

    def write(self, data):
        head = self._head
        if head is not None:
            self._head = None
            data = head + data
        elif data.endswith(b"\r\n\r\n"):
            self._head = data
            self._loop.call_soon(self._flush)
            return
        self._t.write(data)

    def _flush(self):
        head = self._head
        if head is not None:
            self._head = None
            if not self._t.is_closing():
                self._t.write(head)

    def close(self):
        self._flush()
        self._t.close()

    def get_write_buffer_size(self):
        return self._t.get_write_buffer_size() + (len(self._head) if self._head is not None else 0)

    def __getattr__(self, name):
        return getattr(self._t, name)


def http_protocol():
    """uvicorn's httptools protocol with :class:`_CoalescingTransport` (uvicorn.Config(http=...))."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class CoalescingHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport):
            super().connection_made(_CoalescingTransport(transport, self.loop))

    return CoalescingHttpToolsProtocol


class ServerThread:
    """Serve ``app`` with uvicorn on ``host:port`` (port 0: a free one) in a daemon thread.

    ``url`` is ``http://host:port``; :meth:`stop` shuts down gracefully. Usable as a
    context manager."""

    def __init__(self, app, host="127.0.0.1", port=0, timeout_graceful_shutdown=10, **config):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        config.setdefault("http", http_protocol())
        cfg = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                             timeout_graceful_shutdown=timeout_graceful_shutdown, **config)
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name=f"uvicorn-{self.port}", daemon=True)
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() - t0 > 30:
                raise RuntimeError("ServerThread: uvicorn did not start")
            time.sleep(0.01)

    def stop(self, timeout=30):
        st = getattr(getattr(self.server.config.app, "state", None), "serve", None)
        if st is not None:
            st.ready = False
            st.metrics.ready.set(0)
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class MemoryTrimmer:
    """Every ``interval`` seconds, hand the C allocator's free memory back to the system
    (glibc's ``malloc_trim(0)``), from a daemon thread.

    Why: glibc keeps freed heap memory in its arenas and raises its mmap threshold after
    large frees, so a server whose request sizes vary (v2 batches of 1 to 32 images, KV
    caches of many lengths) sees its RSS climb in steps towards the largest mix it ever
    held, without any live memory growing (a 10-minute soak at 32 + 32 clients went from
    100 to 110 MB that way, in one step after ~6.5 minutes; trimming every 10 s, the same
    soak stayed within 91-110 MB, medians 101.7 -> 105.6 MB, and fell to 88 MB when the load
    stopped: benchmarks/results/serve.md). It costs one pass over the free lists per interval.
    No-op (``available`` False) where the C library has no ``malloc_trim`` (musl, macOS,
    Windows)."""

    def __init__(self, interval=10.0):
        import ctypes
        import ctypes.util

        self.interval = float(interval)
        self.trims = 0
        self._fn = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            fn = libc.malloc_trim
            fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
            self._fn = fn
        except (OSError, AttributeError):
            pass
        self.available = self._fn is not None
        self._stop = threading.Event()
        self._thread = None
        if self.available and self.interval > 0:
            self._thread = threading.Thread(target=self._run, name="malloc-trim", daemon=True)
            self._thread.start()

    def trim(self):
        if self._fn is not None:
            self._fn(0)
            self.trims += 1

    def _run(self):
        while not self._stop.wait(self.interval):
            self.trim()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def parse_model_arg(s):
    """``NAME[:VERSION]=PATH`` -> (name, version, path); ValueError naming the rule."""
    name, sep, path = s.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"--model must be NAME=PATH or NAME:VERSION=PATH. Received {s!r}")
    name, _, version = name.partition(":")
    return name, version or "1", path


def add_arguments(p):
    """The options of ``pyaiml serve`` on an argparse (sub)parser."""
    p.add_argument("--model", action="append", required=True, metavar="NAME[:VERSION]=PATH",
                   help="a saved model to serve (repeat for several): .keras, HMM/HMMClassifier/Word2Vec/"
                        "KeyedVectors/TransformerLM .npz, word2vec .bin/.txt, or a Hugging Face checkpoint folder "
                        "(GPT-2/Llama/Mistral/Qwen2 decoders, int8 folders of 'pyaiml llm quantize', BERT)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key-file", help="file of accepted API keys, one per line (clients send "
                   "'Authorization: Bearer KEY'); without it no key is asked for")
    p.add_argument("--key-file", help="key file to decrypt encrypted model files (see pyaiml keygen)")
    p.add_argument("--threads", type=int, default=None, help="pyaiml compute threads (default: pyaiml's default)")
    p.add_argument("--max-batch-size", type=int, default=32, help="rows per dynamic batch of v2 Keras models "
                   "and sequences per decode step of language models (default 32)")
    p.add_argument("--max-delay-ms", type=float, default=5.0, help="how long a v2 request may wait for others to "
                   "batch with (default 5 ms)")
    p.add_argument("--max-queue", type=int, default=256, help="waiting generation requests per model before 429 "
                   "(default 256)")
    p.add_argument("--prefill-chunk", type=int, default=256, help="prompt tokens prefilled per scheduler step "
                   "(default 256)")
    p.add_argument("--max-tokens", type=int, default=4096, help="largest max_tokens a request may ask for")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a generation may take (default 600)")
    p.add_argument("--graceful-timeout", type=float, default=30.0, help="seconds to let in-flight requests "
                   "finish after SIGTERM (default 30)")
    p.add_argument("--trim-memory", type=float, default=10.0, metavar="SECONDS",
                   help="hand the allocator's free memory back to the system this often (glibc malloc_trim; "
                        "keeps RSS flat under varying request sizes; 0: never; default 10)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="log level (info includes the JSON access log)")


def main(args) -> int:
    """Run ``pyaiml serve`` with parsed ``args``; returns the exit status."""
    from pyaiml.serve import require

    try:
        require()
    except ImportError as e:
        print(f"pyaiml serve: {e}", file=sys.stderr)
        return 2
    import uvicorn

    from pyaiml.serve.app import create_app

    if not args.trim_memory >= 0:
        print(f"pyaiml serve: --trim-memory must be >= 0 seconds. Received {args.trim_memory}", file=sys.stderr)
        return 2
    if args.threads is not None:
        if args.threads < 1:
            print(f"pyaiml serve: --threads must be >= 1. Received {args.threads}", file=sys.stderr)
            return 2
        import pyaiml

        pyaiml.set_num_threads(args.threads)
    level = getattr(logging, args.log_level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("pyaiml.serve")
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    try:
        models = {}
        for s in args.model:
            name, version, path = parse_model_arg(s)
            if name in models:
                raise ValueError(f"--model: the name {name!r} is given twice")
            models[name] = {"path": path, "version": version}
        t0 = time.perf_counter()
        app = create_app(models, api_key_file=args.api_key_file,
                         key=None if args.key_file is None else f"file:{args.key_file}",
                         max_batch_size=args.max_batch_size, max_delay=args.max_delay_ms / 1000.0,
                         max_running=args.max_batch_size, max_queue=args.max_queue, prefill_chunk=args.prefill_chunk,
                         max_tokens_limit=args.max_tokens, request_timeout=args.timeout)
    except (ValueError, TypeError, OSError) as e:
        print(f"pyaiml serve: {e}", file=sys.stderr)
        return 1
    st = app.state.serve
    print(f"pyaiml serve: {len(models)} model(s) loaded in {time.perf_counter() - t0:.2f} s "
          f"(v2: {sorted(st.v2)}, language models: {sorted(st.lms)}); listening on http://{args.host}:{args.port}",
          file=sys.stderr, flush=True)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                            lifespan="on", timeout_graceful_shutdown=args.graceful_timeout, http=http_protocol())
    server = _server_class()(config)
    server.serve_state = st
    trimmer = MemoryTrimmer(args.trim_memory) if args.trim_memory > 0 else None
    try:
        server.run()
    finally:
        if trimmer is not None:
            trimmer.stop()
    return 0 if server.started else 1
