"""parallel_for on the process's OpenMP runtime (pyaiml._backend.set_host_openmp, which the torch
bridge turns on) and on pyaiml's pool: the same bits for conv, GEMM and the NaN scan with 1, 2
and 3 threads; through the _parallel_probe hook, every element of a job run once by a
participant index below the thread count, and an exception raised inside a chunk reaching the
caller; a second Python thread; without an OpenMP runtime in the process the switch reports
False and the pool keeps running."""
import os

import numpy as np
import pytest
from helpers import optional_torch, run_py

import pyaiml
from pyaiml import _backend, ops

torch = optional_torch()
needs_cpp = pytest.mark.skipif(_backend.native() is None, reason="C++ backend not built")
needs_torch = pytest.mark.skipif(torch is None, reason="torch's libgomp is the OpenMP runtime here")


def _work(rng):
    x = rng.standard_normal((4, 20, 19, 16), dtype=np.float32)
    w = rng.standard_normal((24, 16, 3, 3), dtype=np.float32)
    xp = rng.standard_normal((2, 30, 31, 40), dtype=np.float32)
    wp = rng.standard_normal((8, 40, 1, 1), dtype=np.float32)
    a = rng.standard_normal((300, 257), dtype=np.float32)
    b = rng.standard_normal((257, 190), dtype=np.float32)
    y = ops.conv2d(x, w, padding=1, data_format="NHWC")
    gy = rng.standard_normal(y.shape, dtype=np.float32)
    yp = ops.conv2d(xp, wp, data_format="NHWC")
    gyp = rng.standard_normal(yp.shape, dtype=np.float32)
    return [y, *ops.conv2d_backward(gy, x, w, padding=1, data_format="NHWC"), yp,
            *ops.conv2d_backward(gyp, xp, wp, data_format="NHWC"), ops.matmul(a, b),
            np.array([_backend.native().all_finite(np.ones(1 << 20, np.float32))])]


@needs_cpp
@needs_torch
def test_same_bits_as_the_pool():
    C = _backend.native()
    was, n0 = C.get_host_openmp(), pyaiml.get_num_threads()
    try:
        for n in (1, 2, 3):
            pyaiml.set_num_threads(n)
            C.set_host_openmp(False)
            want = _work(np.random.default_rng(n))
            assert C.set_host_openmp(True) and C.get_host_openmp()
            got = _work(np.random.default_rng(n))
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w)
    finally:
        C.set_host_openmp(was)
        pyaiml.set_num_threads(n0)


def _probe_checks(C, n_threads):
    # every element once (-1: never, -2: twice), by a participant index below the thread count
    # (which participants take the chunks of so light a job is up to timing); an exception in
    # a chunk reaches the caller
    got = C._parallel_probe(100003, 97)
    assert got.min() >= 0 and got.max() < n_threads, (got.min(), got.max())
    with pytest.raises(RuntimeError, match="_parallel_probe: chunk failed"):
        C._parallel_probe(10000, 10, fail_at=5555)
    small = C._parallel_probe(10, 3)  # fewer chunks than some thread counts
    assert small.min() >= 0 and small.max() < n_threads
    assert C._parallel_probe(0, 1).size == 0


@needs_cpp
@pytest.mark.parametrize("host", [False, True], ids=["pool", "host OpenMP"])
def test_chunks_indices_and_errors(host):
    C = _backend.native()
    if host and torch is None:
        pytest.skip("torch's libgomp is the OpenMP runtime here")
    was, n0 = C.get_host_openmp(), pyaiml.get_num_threads()
    try:
        C.set_host_openmp(host)
        assert C.get_host_openmp() == host
        for n in (1, 2, 3):
            pyaiml.set_num_threads(n)
            _probe_checks(C, n)
    finally:
        C.set_host_openmp(was)
        pyaiml.set_num_threads(n0)


@needs_cpp
@needs_torch
def test_second_python_thread():
    """A call from another Python thread gets the same answer (while a region runs, a second
    caller's chunks run serially on it, as with the pool)."""
    import threading

    C = _backend.native()
    was = C.get_host_openmp()
    try:
        assert C.set_host_openmp(True)
        x = np.random.default_rng(0).standard_normal((2, 30, 30, 16), dtype=np.float32)
        w = np.random.default_rng(1).standard_normal((32, 16, 3, 3), dtype=np.float32)
        y = ops.conv2d(x, w, padding=1, data_format="NHWC")
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("y", ops.conv2d(x, w, padding=1, data_format="NHWC")))
        t.start()
        t.join(60)
        np.testing.assert_array_equal(out["y"], y)
    finally:
        C.set_host_openmp(was)


@needs_cpp
def test_without_an_openmp_runtime():
    here = os.path.dirname(os.path.dirname(os.path.abspath(pyaiml.__file__)))
    code = ("import sys, numpy as np\n"
            "from pyaiml import _backend\n"
            "import pyaiml.ops as ops\n"
            "assert 'torch' not in sys.modules\n"
            "print('on', _backend.set_host_openmp(True), _backend.native().get_host_openmp())\n"
            "x = np.ones((1, 6, 6, 2), np.float32); w = np.ones((2, 2, 3, 3), np.float32)\n"
            "print('y', float(ops.conv2d(x, w, padding=1, data_format='NHWC')[0, 3, 3, 0]))\n")
    r = run_py(code, PYTHONPATH=os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]), PYAIML_BACKEND="cpp")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "on False False" in r.stdout and "y 18.0" in r.stdout, r.stdout


def test_switch_refuses_non_booleans():
    for bad in ("False", 2, None, 1.0):
        with pytest.raises(TypeError, match=r"set_host_openmp: on must be True or False\. Received"):
            _backend.set_host_openmp(bad)
