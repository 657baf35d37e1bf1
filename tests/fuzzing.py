"""Shared machinery of the hypothesis fuzz tests (tests/test_fuzz_*.py); not a test file.

Each fuzz test draws an op's arguments (shapes, strides, paddings, masks, dtypes, ...) with
hypothesis, decides from the op's documented rules whether the combination is valid, and
then either compares the op with an oracle written in the test file (independent of
pyaiml.reference) or requires a ValueError/TypeError whose message starts with the op's
name. Any other exception, or an answer to an invalid call, fails the example.

Budgets: the "default" hypothesis profile (registered here, loaded by tests/conftest.py; 50
derandomized examples per test); PYAIML_FUZZ=slow raises every fuzz test to 2000 random
examples, and the ``*_slow`` twins (``pytest -m slow tests/test_fuzz_*.py``) carry that
budget themselves.
Array values come from a NumPy generator seeded by hypothesis: shapes and parameters
shrink, values do not need to.
"""
import contextlib
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SEEDS = st.integers(0, 2**32 - 1)
EXAMPLES = {"default": 50, "slow": 2000}


def register_profiles():
    """The hypothesis profiles "default" (small, derandomized: reproducible in CI; no example
    database) and "slow" (large, random); tests/conftest.py loads one of them."""
    common = dict(deadline=None, database=None, print_blob=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile("default", max_examples=EXAMPLES["default"], derandomize=True, **common)
    settings.register_profile("slow", max_examples=EXAMPLES["slow"], derandomize=False, **common)


register_profiles()


@contextlib.contextmanager
def use_backend(backend):
    """PYAIML_BACKEND=backend for the body (restored after; None leaves it alone)."""
    if backend is None:
        yield
        return
    old = os.environ.get("PYAIML_BACKEND")
    os.environ["PYAIML_BACKEND"] = backend
    try:
        yield
    finally:
        if old is None:
            del os.environ["PYAIML_BACKEND"]
        else:
            os.environ["PYAIML_BACKEND"] = old


def fuzz_test(check, cases, backends=None, slow=False):
    """A pytest test running ``check(backend, case)`` (or ``check(case)`` when ``backends`` is
    None) on examples of the strategy ``cases``, once per backend; ``slow``: the 2000-example
    twin, marked slow."""
    if backends is None:
        def test(case):
            check(case)
    else:
        def test(backend, case):
            with use_backend(backend):
                check(backend, case)
    test = given(case=cases)(test)
    if slow:
        test = settings(settings.get_profile("slow"))(test)
        test = pytest.mark.slow(test)
    if backends is not None:
        test = pytest.mark.parametrize("backend", backends)(test)
    test.__doc__ = check.__doc__
    return test


def misaligned(x):
    """A C-contiguous copy of x whose data starts one element past a 64-byte boundary: NumPy
    allows it (np.ascontiguousarray keeps it), and kernels must not assume vector alignment."""
    x = np.asarray(x)
    buf = np.empty(x.nbytes + 64 + x.itemsize, np.uint8)
    start = (-buf.ctypes.data) % 64 + x.itemsize
    out = buf[start:start + x.nbytes].view(x.dtype).reshape(x.shape)
    out[...] = x
    return out


def valid_or_raises(valid, op, fn, *args, **kwargs):
    """fn(*args, **kwargs) when the call is valid; else require a ValueError or TypeError
    whose message starts with ``op:`` and return None."""
    if valid:
        return fn(*args, **kwargs)
    with pytest.raises((ValueError, TypeError)) as info:
        fn(*args, **kwargs)
    assert str(info.value).startswith(f"{op}:"), f"message does not name {op}: {info.value}"
    return None


def assert_close(name, got, want, atol, rtol=0.0):
    """|got - want| <= atol + rtol * |want| elementwise, same shape; NaN nowhere."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    if got.size == 0:
        return
    assert not np.isnan(got).any(), f"{name}: NaN in the result"
    both_inf = np.isinf(want) & (got == want)
    with np.errstate(invalid="ignore"):
        err = np.where(both_inf, 0.0, np.abs(got - want))
    lim = atol + rtol * np.where(np.isinf(want), 0.0, np.abs(want))
    at = np.unravel_index(np.argmax(err - lim), err.shape)
    assert not (err > lim).any(), (f"{name}: error {err[at]:.3g} > limit {lim[at]:.3g} at {at} "
                                   f"(got {got[at]}, want {want[at]})")
