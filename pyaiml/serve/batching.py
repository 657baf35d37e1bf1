"""Dynamic batching: concurrent requests merged into one model call.

What it is: :class:`DynamicBatcher` owns one worker thread per model. ``submit(x)`` queues a
request of ``len(x)`` rows and returns a ``concurrent.futures.Future``; the worker takes the
first waiting request and every request already queued behind it (up to ``max_batch_size``
rows), then waits for more only while the batch is smaller than the previous one and less
than ``max_delay`` seconds have passed since its first request arrived; it concatenates the
rows, makes one call ``fn(batch)``, and hands each request its own slice of the result.
Waiting only up to the previous batch's size keeps a lone client from paying the delay on
every request (measured on the mission CNN behind the server: 1 client, a fixed 5 ms wait
halved its throughput), while concurrent clients, whose requests queue up during each
model call, grow the batches step by step. A request
larger than ``max_batch_size`` runs alone (never split), and a request that does not fit
the remaining room waits for the next batch, so rows of one request stay together and in
order. The model is called from this one thread only, so models whose layers keep
per-call state are safe. ``submit_async(x)`` is the same for a caller on an asyncio event
loop: it returns that loop's future, and the worker settles all of a batch's futures of one
loop in one ``call_soon_threadsafe`` (the server's path: one wake-up of the event loop per
batch rather than a ``concurrent.futures.Future`` and a wake-up per request).

After a model call that served more than one request, pyaiml's idle pool threads are sent to
sleep at once (``pyaiml._backend.park_threads``) instead of spinning for the next kernel call:
concurrent requests mean the event loop and the clients are waiting for those cores (mission
CNN behind the server, 32 clients: ~25 us of spinning per request went to the event loop
instead), while a lone client's requests keep the threads spinning between calls, so its
latency pays no wake-up.

``on_batch(rows)`` is called after each model call, before its waiters get their results
(the server counts batch sizes for /metrics). The worker is woken only by the request that
ends its wait (any request while it is idle; the one that completes the batch it is
gathering), not by every request: at 32 clients each wake-up took the GIL from the event
loop. What it is not: a priority or padding scheduler (inputs of one model share their
per-row shape; the server checks it before submitting).
Tests: tests/test_serve_v2.py (concurrent clients merged into fewer calls; every reply equals
the unbatched call).
"""
from __future__ import annotations

import asyncio
import collections
import threading
import time
from concurrent.futures import Future

import numpy as np

from pyaiml._backend import park_threads


class DynamicBatcher:
    """One worker thread that merges queued requests into batches for ``fn``.

    Parameters
    ----------
    fn : callable (N, ...) array -> (N, ...) array (or a tuple of them)
    max_batch_size : int >= 1, rows per call
    max_delay : float >= 0, seconds the first request of a batch may wait for company
    on_batch : callable(rows) or None, called after every model call
    """

    def __init__(self, fn, max_batch_size=32, max_delay=0.005, on_batch=None, name="batcher"):
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError(f"DynamicBatcher: max_batch_size must be an integer >= 1. Received {max_batch_size!r}")
        if not (isinstance(max_delay, (int, float)) and max_delay >= 0):
            raise ValueError(f"DynamicBatcher: max_delay must be a number of seconds >= 0. Received {max_delay!r}")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_delay = float(max_delay)
        self.on_batch = on_batch
        self._q = collections.deque()
        self._qrows = 0  # rows in _q
        self._want = None  # queued rows that end the worker's wait (None: it is not waiting)
        self._cv = threading.Condition()
        self._stop = False
        self._last = 1  # rows of the previous batch: how many to wait for
        self._loops = {}  # thread id -> the event loop submit_async last saw running there
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, x) -> Future:
        """Queue ``x`` (rows along axis 0); the future's result is ``fn``'s output rows for it."""
        fut = Future()
        self._put(x, fut)
        return fut

    def submit_async(self, x) -> asyncio.Future:
        """As :meth:`submit`, for a caller on an asyncio event loop: an asyncio future of
        that loop. The worker settles all of a batch's futures of one loop in one callback
        (one wake-up of the loop per batch, not one per request)."""
        # the caller's loop, remembered per thread: asyncio.get_running_loop() makes a getpid
        # system call each time (CPython 3.11), ~2 us on a VM, on the event loop's hot path
        loop = self._loops.get(threading.get_ident())
        if loop is None or not loop.is_running():
            loop = asyncio.get_running_loop()
            self._loops[threading.get_ident()] = loop
        fut = loop.create_future()
        self._put(x, (loop, fut))
        return fut

    def _put(self, x, sink):
        x = np.asarray(x)
        with self._cv:
            if self._stop:
                raise RuntimeError("DynamicBatcher: the batcher is closed")
            self._q.append((x, sink, time.monotonic()))
            self._qrows += len(x)
            go = self._want is not None and self._qrows >= self._want
            if go:
                self._want = None
                self._cv.notify()

    @property
    def depth(self) -> int:
        """Requests waiting for a batch."""
        return len(self._q)

    def close(self, timeout=5.0):
        """Finish what is queued, then stop the worker."""
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout)

    def _run(self):
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            # a cancelled asyncio waiter (its client gone) is skipped; reading cancelled()
            # from this thread can only miss a cancellation, never invent one
            live = [(x, f) for x, f in batch
                    if (not f[1].cancelled() if isinstance(f, tuple) else f.set_running_or_notify_cancel())]
            if not live:
                continue
            try:
                xs = [x for x, _ in live]
                y = self.fn(xs[0] if len(xs) == 1 else np.concatenate(xs, axis=0))
            except BaseException as e:  # noqa: BLE001 - every waiter must hear about it
                self._settle([(f, e, True) for _, f in live])
                continue
            if len(live) > 1:
                # requests came in while the last batch ran: the event loop and the clients
                # want these cores now, not the pool's threads spinning for the next kernel
                park_threads()
            # the batch is counted before any waiter hears back, so a client that has its
            # reply also sees its rows in the metrics
            if self.on_batch is not None:
                try:
                    self.on_batch(sum(len(x) for x, _ in live))
                except Exception:  # noqa: BLE001, S110 - metrics must never break serving
                    pass
            out, start = [], 0
            for x, f in live:
                n = len(x)
                out.append((f, tuple(part[start:start + n] for part in y) if isinstance(y, tuple)
                            else y[start:start + n], False))
                start += n
            self._settle(out)

    @staticmethod
    def _settle(items):
        """Hand each (sink, value, is_error) its outcome: concurrent futures at once, the
        asyncio futures of each loop in one call_soon_threadsafe."""
        loops = {}
        for sink, v, err in items:
            if isinstance(sink, tuple):
                loops.setdefault(sink[0], []).append((sink[1], v, err))
            elif err:
                sink.set_exception(v)
            else:
                sink.set_result(v)
        for loop, group in loops.items():
            try:
                loop.call_soon_threadsafe(_settle_async, group)
            except RuntimeError:  # the loop is closed: nobody waits for these any more
                pass

    def _take_batch(self):
        with self._cv:
            while not self._q and not self._stop:
                self._want = 0  # idle: any request (even one of 0 rows) wakes it
                self._cv.wait()
            self._want = None
            if not self._q:
                return None
            x, fut, t0 = self._q.popleft()
            self._qrows -= len(x)
            batch, rows = [(x, fut)], len(x)
            deadline = t0 + self.max_delay
            target = min(self.max_batch_size, self._last)
            while rows < self.max_batch_size:
                if self._q:
                    nx, nf, _ = self._q[0]
                    if rows + len(nx) > self.max_batch_size:
                        break
                    self._q.popleft()
                    self._qrows -= len(nx)
                    batch.append((nx, nf))
                    rows += len(nx)
                    continue
                left = deadline - time.monotonic()
                if rows >= target or left <= 0 or self._stop:
                    break
                self._want = target - rows  # (a request too large for this batch has more rows: it wakes it too)
                self._cv.wait(left)
                self._want = None
            self._last = rows
            return batch


def _settle_async(group):
    for fut, v, err in group:
        if not fut.done():
            if err:
                fut.set_exception(v)
            else:
                fut.set_result(v)
