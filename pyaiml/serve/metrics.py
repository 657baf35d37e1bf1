"""Prometheus metrics of one server app (prometheus-client), in a registry of its own.

What it is: :class:`Metrics` holds the app's collectors in a private ``CollectorRegistry``
(so two apps in one process, as in the tests, do not collide) and renders them for
``GET /metrics`` in the text exposition format. Names (all prefixed ``pyaiml_serve_``):

- ``requests_total{route, method, status}`` counter, ``request_seconds{route}`` histogram
  (route = the route's path template, so model names do not explode the label set)
- ``time_to_first_token_seconds{model}`` and ``tokens_per_second{model}`` histograms,
  ``generated_tokens_total{model}`` and ``prompt_tokens_total{model}`` counters
- ``batch_size{model}`` histogram (rows per dynamic batch; sequences per decode step)
- ``queue_depth{model}`` and ``running_sequences{model}`` gauges
- ``models_ready`` gauge (1 once every model is loaded, 0 while shutting down)

What it is not: a push gateway client. Tests: tests/test_serve_ops.py.
"""
from __future__ import annotations

import bisect

_LAT = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TPS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry(auto_describe=True)
        p = "pyaiml_serve_"
        self.http = RequestCounts(p, _LAT)
        r.register(self.http)
        self.ttft = Histogram(p + "time_to_first_token_seconds", "Time from request to first generated token",
                              ["model"], buckets=_LAT, registry=r)
        self.tps = Histogram(p + "tokens_per_second", "Generated tokens per second of each request after its "
                             "first token", ["model"], buckets=_TPS, registry=r)
        self.gen_tokens = Counter(p + "generated_tokens_total", "Generated tokens", ["model"], registry=r)
        self.prompt_tokens = Counter(p + "prompt_tokens_total", "Prompt tokens", ["model"], registry=r)
        self.batch = Histogram(p + "batch_size", "Rows per dynamic batch / sequences per decode step", ["model"],
                               buckets=_BATCH, registry=r)
        self.queue = Gauge(p + "queue_depth", "Requests waiting for a batch slot", ["model"], registry=r)
        self.running = Gauge(p + "running_sequences", "Sequences in the running decode batch", ["model"], registry=r)
        self.ready = Gauge(p + "models_ready", "1 once every model is loaded and the server takes requests",
                           registry=r)

    def render(self):
        """(body bytes, content type) for GET /metrics."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RequestCounts:
    """``requests_total{route, method, status}`` and ``request_seconds{route}``, counted by the
    server's event loop (its one writer) in plain dicts and lists, and turned into the same
    metric families when /metrics is read. prometheus-client's ``Counter.inc`` and
    ``Histogram.observe`` take a lock each and look the bucket up in Python: ~3 us of the
    ~50 us the event loop spends on a one-image v2 request."""

    def __init__(self, prefix, buckets):
        self.prefix = prefix
        self.bounds = tuple(float(b) for b in buckets)
        self._counts = {}  # (route, method, status) -> requests
        self._lat = {}  # route -> [counts per bucket (the last: above every bound), sum of seconds]

    def record(self, route, method, status, seconds):
        key = (route, method, status)
        self._counts[key] = self._counts.get(key, 0) + 1
        h = self._lat.get(route)
        if h is None:
            h = self._lat[route] = [[0] * (len(self.bounds) + 1), 0.0]
        h[0][bisect.bisect_left(self.bounds, seconds)] += 1  # the first bucket with le >= seconds
        h[1] += seconds

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        c = CounterMetricFamily(self.prefix + "requests", "HTTP requests", labels=["route", "method", "status"])
        for (route, method, status), n in list(self._counts.items()):
            c.add_metric([route, method, str(status)], n)
        yield c
        h = HistogramMetricFamily(self.prefix + "request_seconds", "HTTP request latency (until the last byte)",
                                  labels=["route"])
        les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        for route, (counts, total) in list(self._lat.items()):
            cum, acc = [], 0
            for le, n in zip(les, list(counts)):
                acc += n
                cum.append((le, acc))
            h.add_metric([route], cum, total)
        yield h
