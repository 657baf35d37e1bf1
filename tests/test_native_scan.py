"""The extension's NaN/inf scan (`_C.all_finite`, csrc/cpu/finite.cpp) behind every op's input
check: each bad value (NaN, +inf, -inf, a NaN with a payload) found at every position of short
buffers (the vector body and every tail length) and at the edges of the threaded chunks of a
large one; float32 and float64; 1 and 2 threads; under every ISA this CPU runs."""
import numpy as np
import pytest
from helpers import run_under_isa

from pyaiml import _backend

needs_cpp = pytest.mark.skipif(_backend.native() is None, reason="C++ backend not built")

BAD = {
    np.float32: [np.nan, np.inf, -np.inf, np.array(0x7FC01234, np.uint32).view(np.float32)],
    np.float64: [np.nan, np.inf, -np.inf, np.array(0x7FF0000000000001, np.uint64).view(np.float64)],
}


def _check_short(C, dtype):
    for n in range(70):
        x = np.linspace(-3e38 if dtype == np.float32 else -1e308, 1e30, n).astype(dtype)
        assert C.all_finite(x), (dtype, n)
        for i in range(n):
            for bad in BAD[dtype]:
                y = x.copy()
                y[i] = bad
                assert not C.all_finite(y), (dtype, n, i, bad)


def _check_large(C, dtype):
    n = (1 << 21) + 13  # past the threaded threshold, a ragged last chunk
    x = np.full(n, dtype(1.5))
    x[::7] = np.finfo(dtype).max  # the largest finite value, exponent bits all set but one
    x[1::7] = -np.finfo(dtype).tiny / 4  # subnormal
    assert C.all_finite(x)
    chunk = (1 << 18) // x.itemsize
    for i in (0, 1, chunk - 1, chunk, chunk + 1, n // 2, n - 14, n - 1):
        y = x.copy()
        y[i] = BAD[dtype][i % 4]
        assert not C.all_finite(y), (dtype, i)
        assert not C.all_finite(y.reshape(-1, 1)), (dtype, i)  # any shape: the scan is flat


@needs_cpp
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_position_and_tail(dtype):
    _check_short(_backend.native(), dtype)


@needs_cpp
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_buffers_every_chunk_edge(dtype, threads):
    C = _backend.native()
    before = C.get_num_threads()
    try:
        C.set_num_threads(threads)
        _check_large(C, dtype)
    finally:
        C.set_num_threads(before)


@needs_cpp
def test_views_and_other_dtypes():
    C = _backend.native()
    x = np.ones((64, 64), np.float32)
    x[3, 5] = np.nan
    assert not C.all_finite(x.T)  # non-contiguous: NumPy's scan
    assert C.all_finite(x[:, 6:])
    with pytest.raises(ValueError, match=r"all_finite: a must be float32 or float64. Received int32"):
        C.all_finite(np.zeros(3, np.int32))


@needs_cpp
@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_every_isa(isa):
    run_under_isa(isa, "import numpy as np\n"
                       "import test_native_scan as t\n"
                       "from pyaiml import _backend\n"
                       "C = _backend.native()\n"
                       "for dt in (np.float32, np.float64):\n"
                       "    t._check_short(C, dt)\n"
                       "    t._check_large(C, dt)\n")
