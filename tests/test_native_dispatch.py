"""The one dispatch point: every implementation an op uses, its NaN/inf scan included, comes
from the registry for the current PYAIML_BACKEND, read on every call (a change through
os.environ, set or deleted, takes effect at the next call)."""
import os

import numpy as np
import pytest

import pyaiml.ops as ops
from pyaiml import _backend

from helpers import backends_for


def _C():
    C = _backend.native()
    if C is None:
        pytest.skip("C++ backend not built")
    return C


@pytest.fixture
def native_scan_calls(monkeypatch):
    """Counts the calls of the extension's NaN/inf scan."""
    C = _C()
    calls = []
    real = C.all_finite

    def spy(x):
        calls.append(x.shape)
        return real(x)

    monkeypatch.setattr(C, "all_finite", spy)
    return calls


def _run_checked_ops(rng):
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = ops.conv2d(x, w, rng.standard_normal(4).astype(np.float32), padding=1)
    ops.conv2d_backward(np.ones_like(y), x, w, padding=1)
    ops.max_pool2d_backward(np.ones((2, 3, 4, 4), np.float32), x, 2)
    return x, w


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_forced_backend_scans_without_the_extension(backend, native_scan_calls, monkeypatch, rng):
    if backend not in backends_for("conv2d"):
        pytest.skip(f"{backend} not available")
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    assert _backend.chosen("all_finite")[0] == backend
    x, w = _run_checked_ops(rng)
    assert native_scan_calls == []  # the scans ran on the forced backend (NumPy's reduction)
    x[1, 2, 3, 4] = np.inf
    with pytest.raises(ValueError, match=r"conv2d: x must be finite .* Received inf at index \(1, 2, 3, 4\)"):
        ops.conv2d(x, w)
    assert native_scan_calls == []


def test_default_backend_scans_with_the_extension(native_scan_calls, monkeypatch, rng):
    monkeypatch.delenv("PYAIML_BACKEND", raising=False)
    assert _backend.chosen("all_finite")[0] == "cpp"
    _run_checked_ops(rng)
    assert len(native_scan_calls) >= 4  # x, weight, bias, grad_out, ...


def test_backend_variable_read_at_each_call(monkeypatch):
    C = _C()
    monkeypatch.delenv("PYAIML_BACKEND", raising=False)
    assert C.getenv("PYAIML_BACKEND") is None and _backend.chosen_backend("gemm") == "cpp"
    for b in ("numpy", "numba", "cpp"):
        os.environ["PYAIML_BACKEND"] = b
        try:
            assert C.getenv("PYAIML_BACKEND") == b  # os.environ writes reach the C environment
            assert _backend.chosen_backend("gemm") == b and _backend.chosen_backend("all_finite") == b
            assert _backend.resolve("gemm") is _backend.resolve("gemm", b)
        finally:
            del os.environ["PYAIML_BACKEND"]
    assert C.getenv("PYAIML_BACKEND") is None and _backend.chosen_backend("gemm") == "cpp"
    with pytest.raises(TypeError):
        C.getenv(3)


@pytest.mark.parametrize("backend", backends_for("max_pool2d_backward"))
def test_flat_index_range_checked_on_every_backend(backend, monkeypatch):
    # C++ checks the range in its kernel, the others in pool.py: the registry's answer decides.
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    x = np.zeros((1, 1, 4, 4), np.float32)
    idx = np.full((1, 1, 2, 2), 16, np.int64)
    with pytest.raises(ValueError, match=r"max_pool2d_backward: indices must lie in \[0, (H\*W\) = \[0, )?16\)"):
        ops.max_pool2d_backward(np.ones((1, 1, 2, 2), np.float32), x, 2, indices=idx)


def test_gemm_checked_is_a_registered_cpp_op(rng):
    assert _backend.implementations("gemm_checked") == ["cpp"]
    _C()
    a = rng.standard_normal((5, 7)).astype(np.float32)
    a[2, 3] = np.nan
    with pytest.raises(ValueError, match=r"matmul: a must be finite .* Received nan at index \(2, 3\)"):
        ops.matmul(a, np.ones((7, 3), np.float32))
