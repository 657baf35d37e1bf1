"""Thread-count limits: set_num_threads and PYAIML_NUM_THREADS accept 1..MAX_THREADS (the
pool's limit, 128) and refuse more with a ValueError instead of capping it silently."""

import numpy as np
import pytest

import pyaiml
from pyaiml import _backend

from helpers import run_py



def _run(code, **env):
    return run_py(code, **env)


@pytest.mark.parametrize("n", [10**6, 129, 2**64])
def test_set_num_threads_above_the_limit(n):
    old = pyaiml.get_num_threads()
    with pytest.raises(ValueError, match=rf"set_num_threads: n must be at most 128 \(the thread pool's limit\)\. "
                                         rf"Received {n}"):
        pyaiml.set_num_threads(n)
    assert pyaiml.get_num_threads() == old


def test_set_num_threads_limit_and_numpy_integers(rng):
    old = pyaiml.get_num_threads()
    a = rng.standard_normal((130, 70), dtype=np.float32)
    b = rng.standard_normal((70, 50), dtype=np.float32)
    try:
        pyaiml.set_num_threads(np.int64(2))
        assert pyaiml.get_num_threads() == 2
        pyaiml.set_num_threads(_backend.MAX_THREADS)
        assert pyaiml.get_num_threads() == 128
        np.testing.assert_allclose(pyaiml.ops.matmul(a, b), a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)
    finally:
        pyaiml.set_num_threads(old)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        pyaiml.set_num_threads(np.True_)


def test_native_limit_matches_and_refuses():
    C = _backend.native()
    if C is None:
        pytest.skip("C++ backend not built")
    assert C.MAX_NUM_THREADS == _backend.MAX_THREADS == 128
    old = C.get_num_threads()
    with pytest.raises(ValueError, match="set_num_threads: n must be from 1 to 128. Received 1000"):
        C.set_num_threads(1000)
    assert C.get_num_threads() == old
    assert 1 <= C.default_num_threads() <= 128


@pytest.mark.parametrize("val", ["129", "1000000"])
def test_env_num_threads_above_the_limit(val):
    r = _run("import pyaiml", PYAIML_NUM_THREADS=val)
    assert r.returncode != 0
    assert "ValueError: PYAIML_NUM_THREADS must be an integer from 1 to 128" in r.stderr and repr(val) in r.stderr


def test_env_num_threads_at_the_limit():
    r = _run("import pyaiml; print(pyaiml.get_num_threads())", PYAIML_NUM_THREADS="128")
    assert r.returncode == 0 and r.stdout.strip() == "128", r.stderr


def test_torch_bridge_caps_its_thread_sync_at_the_pool_limit(monkeypatch):
    torch = pytest.importorskip("torch")
    from pyaiml import _backend
    from pyaiml.torch import _threads

    monkeypatch.setattr(torch, "get_num_threads", lambda: 512)
    old = _backend.get_num_threads()
    try:
        _threads.sync()
        assert _backend.get_num_threads() == _backend.MAX_THREADS
    finally:
        _backend.set_num_threads(old)


# --------------------------------------------------------------------------- spinning

def test_spin_us_round_trip_and_errors():
    if _backend._load_C() is None:
        pytest.skip("no compiled pool")
    old = pyaiml.get_spin_us()
    try:
        pyaiml.set_spin_us(0)
        assert pyaiml.get_spin_us() == 0
        pyaiml.set_spin_us(np.int64(250))
        assert pyaiml.get_spin_us() == 250
        for bad in (-1, 10_000_001, 1.5, True, "10"):
            with pytest.raises(ValueError, match="set_spin_us: us must be an integer from 0 to 10000000"):
                pyaiml.set_spin_us(bad)
        assert pyaiml.get_spin_us() == 250
        # kernels run the same with any spin
        a = np.arange(12, dtype=np.float32).reshape(3, 4)
        pyaiml.set_spin_us(0)
        np.testing.assert_array_equal(pyaiml.ops.matmul(a, a.T), a @ a.T)
    finally:
        pyaiml.set_spin_us(old)


def test_spin_from_env_and_torch_bridge_turns_it_off():
    pytest.importorskip("torch")
    if _backend._load_C() is None:
        pytest.skip("no compiled pool")
    code = ("import pyaiml, torch, pyaiml.torch as pt\n"
            "before = pyaiml.get_spin_us()\n"
            "pt.max_pool2d(torch.zeros(1, 1, 4, 4), 2)\n"
            "print(before, pyaiml.get_spin_us())")
    r = _run(code, PYAIML_SPIN_US="")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1000", "0"]  # default 1 ms; the bridge's first call sets 0
    r = _run(code, PYAIML_SPIN_US="300")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["300", "300"]  # the user's setting is kept


def test_park_threads_sends_spinning_workers_to_sleep():
    """With a 10 s spin the pool's worker keeps a core busy (thread state R) after a kernel
    call; park_threads() puts it to sleep (state S) at once, and the next call still runs on
    both threads with the same result."""
    if _backend._load_C() is None:
        pytest.skip("no compiled pool")
    code = r'''
import os, time, threading
import numpy as np
import pyaiml
from pyaiml import _backend, ops
main = threading.get_native_id()

def states():
    out = {}
    for t in os.listdir("/proc/self/task"):
        if int(t) != main:
            with open(f"/proc/self/task/{t}/stat") as f:
                out[t] = f.read().rsplit(")", 1)[1].split()[0]
    return out

a = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
ref = ops.matmul(a, a)
spinning = any("R" in states().values() for _ in range(50) if not time.sleep(0.002))
_backend.park_threads()
deadline, asleep = time.monotonic() + 5, False
while not asleep and time.monotonic() < deadline:
    time.sleep(0.01)
    asleep = "R" not in states().values()
same = bool((ops.matmul(a, a) == ref).all())
print(spinning, asleep, same)
'''
    r = _run(code, PYAIML_SPIN_US="10000000", PYAIML_NUM_THREADS="2", PYAIML_BACKEND="cpp")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "True"]
