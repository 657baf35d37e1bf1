"""``pyaiml bench serve``: the server under load, measured in one run (loopback only, bounded).

What it is: builds (or reuses) two models in ``--workdir`` (default
``~/.cache/pyaiml/bench-serve``; nothing goes into the source tree): a character-level
``TransformerLM`` (context 128, width 128, 4 layers, 4 heads) trained for
``--train-seconds`` on Tiny Shakespeare, and the tutorial's mission CNN (pyaiml.demo:
Conv2D 32 -> pool -> Conv2D 64 -> pool -> Dense 10 on 32x32x3; untrained weights, which
do not change its speed). It starts ``pyaiml serve`` with both in a child process on a
free loopback port (``--threads`` compute threads) and drives it with
:mod:`pyaiml.serve.loadgen` from this process:

1. the language model: the same ``--lm-requests`` streamed completions (prompt
   ``--prompt``, ``--max-tokens`` tokens, temperature 0.8, seed = request index) at 1, 8
   and ``--clients`` concurrent clients: generated tokens/s, latency and time to first
   token at each level, and the ratio of the top level's tokens/s to one-at-a-time's
   (target >= 4x; p99 time to first token target < 1 s);
2. the CNN over v2: ``--cnn-requests`` one-image requests at 1, 8 and ``--clients``
   clients (requests/s; the server merges concurrent ones by dynamic batching) and the
   ratio to one at a time (target >= 3x);

   both in ``--rounds`` rounds, every level once per round, so that the levels are
   measured side by side while the machine's load drifts; the summary gives medians over
   rounds, and the ratios as the median [min-max] of the per-round ratios;
3. with ``--soak SECONDS`` (at most 3600): ``--clients`` streaming clients and
   ``--clients`` CNN clients at once for that long, counting failed and lost requests
   (a lost request was started and neither answered nor failed) against the server's own
   /metrics count, and sampling the server's resident memory (VmRSS) every
   ``--sample-every`` seconds; growth is the median of the last tenth of the soak against
   the median of the first tenth after the warm-up (the first 10% of the soak, at most
   60 s), and the highest sample against the same base.

It prints a readable summary and, with ``--json PATH``, every figure. What it is not: a
comparison against other servers, or a test (its figures depend on the machine and on
whatever else runs on it; it asserts nothing). Tests: tests/test_serve_bench.py (a short
run with tiny budgets).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time

from pyaiml.serve import loadgen

LM_NAME, CNN_NAME = "shakespeare", "cnn"
LM_SHAPE = {"context": 128, "width": 128, "num_layers": 4, "num_heads": 4}


def add_arguments(p):
    p.add_argument("--workdir", default=os.path.join(os.path.expanduser("~"), ".cache", "pyaiml", "bench-serve"),
                   help="where the models are built and kept between runs (default ~/.cache/pyaiml/bench-serve)")
    p.add_argument("--lm", metavar="PATH", help="a saved TransformerLM to serve instead of training one")
    p.add_argument("--cnn", metavar="PATH", help="a saved Keras model (32x32x3 input) instead of the mission CNN")
    p.add_argument("--data", metavar="PATH", help="Tiny Shakespeare input.txt (default: the shipped copy)")
    p.add_argument("--train-seconds", type=float, default=60.0, help="training budget of the LM (default 60)")
    p.add_argument("--threads", type=int, default=2, help="the server's compute threads (default 2)")
    p.add_argument("--clients", type=int, default=32, help="the top concurrency level (default 32)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of every level, side by side (default 3)")
    p.add_argument("--lm-requests", type=int, default=64, help="streamed completions per level (default 64)")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per completion (default 64)")
    p.add_argument("--prompt", default="ROMEO:", help="completion prompt (default 'ROMEO:')")
    p.add_argument("--cnn-requests", type=int, default=1500, help="v2 requests per level (default 1500)")
    p.add_argument("--max-seconds", type=float, default=120.0, help="stop starting requests of a level after this")
    p.add_argument("--soak", type=float, default=0.0, metavar="SECONDS", help="then a mixed soak this long "
                   "(default 0: none; at most 3600)")
    p.add_argument("--sample-every", type=float, default=5.0, help="RSS sampling period of the soak (default 5 s)")
    p.add_argument("--json", metavar="PATH", help="write every figure as JSON")


def _check(a):
    for name in ("threads", "clients", "rounds", "lm_requests", "max_tokens", "cnn_requests"):
        v = getattr(a, name)
        if v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1. Received {v}")
    for name in ("train_seconds", "max_seconds", "sample_every"):
        v = getattr(a, name)
        if not v > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0. Received {v}")
    if not 0 <= a.soak <= 3600:
        raise ValueError(f"--soak must be between 0 and 3600 seconds. Received {a.soak}")


# ---------------------------------------------------------------------- models
def build_lm(path, data=None, train_seconds=60.0, seed=0, log=print):
    """Train the benchmark's TransformerLM on Tiny Shakespeare for ``train_seconds`` and
    save it to ``path``; returns {"steps", "seconds", "val_loss"}."""
    from pyaiml.datasets.shakespeare import load_tiny_shakespeare, split_text
    from pyaiml.keras import optimizers
    from pyaiml.keras.utils import set_random_seed
    from pyaiml.seq import CharTokenizer, TransformerLM

    set_random_seed(seed)
    text = load_tiny_shakespeare(data)
    train, val = split_text(text, 0.1)
    tok = CharTokenizer.from_text(text)
    lm = TransformerLM(tokenizer=tok, **LM_SHAPE)
    lm.compile(optimizers.Adam(2e-3, global_clipnorm=1.0))
    lm.fit_text(tok.encode(train), None, batch_size=32, steps=10**9, eval_every=10, time_budget=train_seconds,
                seed=seed, log=None)
    h = lm.history[-1]
    info = {"steps": h["step"], "seconds": h["seconds"], "train_loss": round(h["train_loss"], 4),
            "val_loss": round(lm.evaluate_ids(tok.encode(val), max_windows=64), 4)}
    lm.save(path)
    log(f"trained the LM for {info['seconds']} s ({info['steps']} steps of 32 x 128 characters): validation loss "
        f"{info['val_loss']} nats/char; saved {path}")
    return info


def build_cnn(path):
    from pyaiml.demo import mission_cnn

    m = mission_cnn()
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    m.save(path)


# ---------------------------------------------------------------------- the server
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``pyaiml serve`` in a child process on a free loopback port."""

    def __init__(self, models, threads, log_path, extra=()):
        import pyaiml

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        root = os.path.dirname(os.path.dirname(os.path.abspath(pyaiml.__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        cmd = [sys.executable, "-m", "pyaiml.cli", "serve", "--port", str(self.port), "--threads", str(threads),
               "--log-level", "warning", *extra]
        for name, path in models.items():
            cmd += ["--model", f"{name}={path}"]
        self.log = open(log_path, "w")  # noqa: SIM115 - the child writes it until it exits
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        t0 = time.monotonic()
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() - t0 > 120:
                self.stop()
                with open(log_path) as f:
                    raise RuntimeError(f"pyaiml serve did not start:\n{f.read()[-2000:]}")
            time.sleep(0.1)

    def _ready(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return b" 200 " in s.recv(1024)
        except OSError:
            return False

    def rss_mb(self):
        """The child's resident memory (VmRSS) in MB, or None where /proc is missing."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            return None
        return None

    def counts(self):
        """{route: requests answered 200} from the server's /metrics."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            raw = b""
            while chunk := s.recv(65536):
                raw += chunk
        out = {}
        for line in raw.decode().splitlines():
            if line.startswith("pyaiml_serve_requests_total{") and 'status="200"' in line:
                route = line.split('route="', 1)[1].split('"', 1)[0]
                out[route] = out.get(route, 0) + int(float(line.rsplit(" ", 1)[1]))
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


# ---------------------------------------------------------------------- the run
def _levels(top):
    return sorted({1, min(8, top), top})


def _machine():
    import pyaiml

    info = {"python": platform.python_version(), "cpus": os.cpu_count(), "pyaiml": pyaiml.__version__}
    from pyaiml.bench.harness import cpu_model

    info["cpu"] = cpu_model()
    try:
        bi = pyaiml.backend_info()
        info["isa"] = bi.get("isa") if isinstance(bi, dict) else None
    except Exception:  # noqa: BLE001, S110 - informational only
        pass
    try:
        info["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def run(a, log=print) -> dict:
    """Every measurement of ``pyaiml bench serve`` with parsed arguments ``a``; the report."""
    _check(a)
    os.makedirs(a.workdir, exist_ok=True)
    rep = {"machine": _machine(), "settings": {k: v for k, v in vars(a).items() if k != "json"}}
    lm_path = a.lm
    if lm_path is None:
        lm_path = os.path.join(a.workdir, f"shakespeare_lm_{int(a.train_seconds)}s.npz")
        if os.path.exists(lm_path):
            log(f"reusing {lm_path}")
        else:
            rep["lm_training"] = build_lm(lm_path, a.data, a.train_seconds, log=log)
    cnn_path = a.cnn
    if cnn_path is None:
        cnn_path = os.path.join(a.workdir, "mission_cnn.keras")
        if not os.path.exists(cnn_path):
            build_cnn(cnn_path)
    srv = ServerProcess({LM_NAME: lm_path, CNN_NAME: cnn_path}, a.threads, os.path.join(a.workdir, "server.log"),
                        ["--max-batch-size", str(max(32, a.clients))])
    try:
        rep["rss_mb_start"] = srv.rss_mb()
        log(f"pyaiml serve on {srv.url} (pid {srv.proc.pid}, {a.threads} threads), RSS {rep['rss_mb_start']:.1f} MB")
        # warm-up: both models once, so the first level pays no first-call costs
        asyncio.run(loadgen.lm_load(srv.url, LM_NAME, 2, 2, 8, a.prompt, max_seconds=a.max_seconds))
        asyncio.run(loadgen.v2_load(srv.url, CNN_NAME, 8, 64, max_seconds=a.max_seconds))
        rep["lm"], rep["cnn"] = {}, {}
        for rnd in range(a.rounds):  # the levels side by side in every round: the machine's load drifts
            for c in _levels(a.clients):
                r = asyncio.run(loadgen.lm_load(srv.url, LM_NAME, c, a.lm_requests, a.max_tokens, a.prompt,
                                                max_seconds=a.max_seconds))
                rep["lm"].setdefault(c, []).append(r)
                log(f"round {rnd + 1} LM  {c:3d} clients: {r['tokens_per_s']:8.1f} tokens/s, latency p50 "
                    f"{r['latency_p50_s']:.3f} s p99 {r['latency_p99_s']:.3f} s, first token p50 {r['ttft_p50_s']:.3f} s"
                    f" p99 {r['ttft_p99_s']:.3f} s, {r['requests']} done, {r['failed']} failed")
            for c in _levels(a.clients):
                r = asyncio.run(loadgen.v2_load(srv.url, CNN_NAME, c, a.cnn_requests, 1, a.max_seconds))
                rep["cnn"].setdefault(c, []).append(r)
                log(f"round {rnd + 1} CNN {c:3d} clients: {r['requests_per_s']:8.1f} requests/s, latency p50 "
                    f"{r['latency_p50_s'] * 1e3:.2f} ms p99 {r['latency_p99_s'] * 1e3:.2f} ms, {r['requests']} done, "
                    f"{r['failed']} failed")
        rep["summary"] = s = _summary(rep, a.clients)
        log(f"LM {a.clients} clients vs one at a time: {s['lm_ratio']}x tokens/s [{s['lm_ratio_min']}-"
            f"{s['lm_ratio_max']}] (target >= 4x), p99 first token {s['lm_ttft_p99_s']:.3f} s, worst round "
            f"{s['lm_ttft_p99_worst_s']:.3f} s (target < 1 s); CNN: {s['cnn_ratio']}x requests/s [{s['cnn_ratio_min']}-"
            f"{s['cnn_ratio_max']}] (target >= 3x); {s['failed']} failed or lost")
        rep["rss_mb_after_levels"] = srv.rss_mb()
        if a.soak > 0:
            rep["soak"] = soak(srv, a, log)
    finally:
        srv.stop()
    rep["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return rep


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def _summary(rep, top):
    """Medians over rounds of each level's throughput, and of the per-round ratios of the
    top level to one client."""
    out = {}
    for kind, key in (("lm", "tokens_per_s"), ("cnn", "requests_per_s")):
        for c, rs in rep[kind].items():
            out[f"{kind}_{c}_{key}"] = round(_median([r[key] for r in rs]), 1)
        ratios = [t[key] / o[key] for o, t in zip(rep[kind][1], rep[kind][top])]
        out[f"{kind}_ratio"] = round(_median(ratios), 2)
        out[f"{kind}_ratio_min"], out[f"{kind}_ratio_max"] = round(min(ratios), 2), round(max(ratios), 2)
    out["lm_ttft_p99_s"] = round(_median([r["ttft_p99_s"] for r in rep["lm"][top]]), 3)
    out["lm_ttft_p99_worst_s"] = round(max(r["ttft_p99_s"] for r in rep["lm"][top]), 3)
    out["failed"] = sum(r["failed"] + r["lost"] for kind in ("lm", "cnn") for rs in rep[kind].values() for r in rs)
    return out


def soak(srv, a, log=print) -> dict:
    """``a.clients`` streaming LM clients and as many CNN clients for ``a.soak`` seconds."""
    samples = []

    def sample(t):
        samples.append((round(t, 1), srv.rss_mb()))

    before = srv.counts()
    cap = int(a.soak * 4000) + 1000  # a request bound on top of the time bound
    log(f"soak: {a.clients} streaming clients + {a.clients} CNN clients for {a.soak:g} s ...")
    r = asyncio.run(loadgen.mixed_load(srv.url, LM_NAME, CNN_NAME, a.clients, a.clients, a.soak, cap,
                                       a.max_tokens, a.prompt, sample=sample, sample_every=a.sample_every))
    after = srv.counts()
    counted = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    warm = min(60.0, 0.1 * a.soak)
    late = [(t, m) for t, m in samples if t >= warm and m is not None]
    out = {"seconds": a.soak, "lm": r["lm"], "cnn": r["v2"], "server_counted_200": counted,
           "rss_samples": samples, "warmup_s": warm}
    if late:
        # RSS moves by a few MB from sample to sample with the requests in flight: compare
        # the median of the first tenth after the warm-up with that of the last tenth
        span = max(a.soak - warm, 1e-9) * 0.1
        first = [m for t, m in late if t <= warm + span] or [late[0][1]]
        last = [m for t, m in late if t >= a.soak - span] or [late[-1][1]]
        base = _median(first)
        out["rss_mb_base"] = round(base, 1)
        out["rss_mb_last"] = round(_median(last), 1)
        out["rss_mb_max"] = round(max(m for _, m in late), 1)
        out["rss_growth_pct"] = round(100 * (out["rss_mb_last"] - base) / base, 2)
        out["rss_growth_max_pct"] = round(100 * (out["rss_mb_max"] - base) / base, 2)
    lm_ok = counted.get("/v1/completions", 0) == r["lm"]["requests"]
    cnn_ok = counted.get("/v2/models/{name}/infer", 0) == r["v2"]["requests"]
    out["server_agrees"] = bool(lm_ok and cnn_ok)
    log(f"soak: {r['lm']['requests']} streams ({r['lm']['tokens_per_s']} tokens/s) and {r['v2']['requests']} CNN "
        f"requests; failed {r['lm']['failed'] + r['v2']['failed']}, lost {r['lm']['lost'] + r['v2']['lost']}; "
        f"server counted the same: {out['server_agrees']}; RSS median {out.get('rss_mb_base', 0):.1f} MB after "
        f"warm-up -> {out.get('rss_mb_last', 0):.1f} MB at the end ({out.get('rss_growth_pct')}%; highest sample "
        f"{out.get('rss_growth_max_pct')}%)")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="pyaiml bench serve", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    a = p.parse_args(argv)
    try:
        from pyaiml.serve import require

        require()
        rep = run(a)
    except (ValueError, ImportError, FileNotFoundError) as e:
        print(f"pyaiml bench serve: {e}", file=sys.stderr)
        return 2
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rep, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
