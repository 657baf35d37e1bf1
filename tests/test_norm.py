"""pyaiml.ops.layer_norm / rms_norm (forward, last axis) on every backend against NumPy float64
and torch: awkward widths (1, 5, 17, 768, 1000), row-strided and non-contiguous inputs,
weight/bias or none, float64, eps; rows independent of each other (a row alone gives the
same bits as inside a batch); argument errors.

Tolerance: 2e-6 * sqrt(n) relative to the largest value, + 1e-6.
"""
import numpy as np
import pytest
from helpers import backends_for, optional_torch

from pyaiml import _backend, ops
from pyaiml.reference.transformer import norm as ref

torch = optional_torch()


def _close(got, want, n):
    tol = 2e-6 * np.sqrt(n) * max(1.0, np.abs(want).max()) + 1e-6
    assert np.abs(got.astype(np.float64) - want).max() <= tol


@pytest.mark.parametrize("backend", backends_for("norm"))
@pytest.mark.parametrize("n", [1, 5, 17, 768, 1000])
@pytest.mark.parametrize("rms", [False, True])
def test_backends(backend, n, rms, rng):
    x = (rng.standard_normal((9, n)) * 3 + 1).astype(np.float32)
    w = rng.standard_normal(n).astype(np.float32)
    b = None if rms else rng.standard_normal(n).astype(np.float32)
    f = _backend.resolve("norm", backend)
    _close(f(x, w, b, 1e-5, rms), ref(x, w, b, 1e-5, rms), n)
    _close(f(x, None, None, 1e-3, rms), ref(x, None, None, 1e-3, rms), n)


@pytest.mark.skipif(torch is None, reason="torch is the oracle here")
def test_against_torch(rng):
    x = rng.standard_normal((2, 3, 64)).astype(np.float32)
    w, b = rng.standard_normal(64).astype(np.float32), rng.standard_normal(64).astype(np.float32)
    t = torch.nn.functional.layer_norm(torch.tensor(x), (64,), torch.tensor(w), torch.tensor(b), 1e-5).numpy()
    np.testing.assert_allclose(ops.layer_norm(x, w, b), t, rtol=1e-5, atol=1e-5)
    xt = torch.tensor(x)
    want = (xt * torch.rsqrt(xt.pow(2).mean(-1, keepdim=True) + 1e-6) * torch.tensor(w)).numpy()
    np.testing.assert_allclose(ops.rms_norm(x, w), want, rtol=1e-5, atol=1e-5)


def test_layouts_dtypes_and_row_independence(rng):
    x = rng.standard_normal((6, 40)).astype(np.float32)
    w = rng.standard_normal(40).astype(np.float32)
    full = ops.layer_norm(x, w)
    np.testing.assert_array_equal(ops.layer_norm(x[2:3], w), full[2:3])  # one row alone
    np.testing.assert_array_equal(ops.layer_norm(np.asfortranarray(x), w), full)  # copied to rows
    wide = rng.standard_normal((6, 50)).astype(np.float32)
    wide[:, 5:45] = x
    np.testing.assert_array_equal(ops.layer_norm(wide[:, 5:45], w), full)  # row stride 50
    x64 = x.astype(np.float64)
    got = ops.rms_norm(x64, w.astype(np.float64), eps=1e-6)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref(x64, w.astype(np.float64), None, 1e-6, True), rtol=1e-12)
    assert ops.layer_norm(np.ones((2, 3, 1), np.float32)).shape == (2, 3, 1)


def test_errors():
    x = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="weight must have shape"):
        ops.layer_norm(x, np.ones(3, np.float32))
    with pytest.raises(TypeError, match="bias must have x's dtype"):
        ops.layer_norm(x, None, np.ones(4))
    with pytest.raises(TypeError, match="x must be float32 or float64"):
        ops.rms_norm(np.ones((2, 4), np.int32))
    with pytest.raises(ValueError, match="eps must be finite"):
        ops.rms_norm(x, eps=-1)
    with pytest.raises(ValueError, match="empty"):
        ops.layer_norm(np.ones((0, 4), np.float32))
    bad = x.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="x"):
        ops.layer_norm(bad)
