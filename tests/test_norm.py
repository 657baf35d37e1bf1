"""pyaiml.ops.layer_norm / rms_norm (forward, last axis) on every backend against NumPy float64
and torch: awkward widths (1, 5, 17, 768, 1000), row-strided and non-contiguous inputs,
weight/bias or none, float64, eps; rows independent of each other (a row alone gives the
same bits as inside a batch); argument errors. The layer_norm_backward op (training) on every
backend against the float64 reference, its weight sums independent of the thread count, the
tape's float32 layer_norm against torch autograd.

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


# ---------------------------------------------------------------- layer_norm_backward (training)
@pytest.mark.parametrize("backend", backends_for("layer_norm_backward"))
@pytest.mark.parametrize("rows,n", [(1, 1), (1, 7), (3, 33), (70, 256), (33, 1000)])
@pytest.mark.parametrize("weighted", [True, False])
def test_backward_backends(backend, rows, n, weighted, rng):
    """Every backend's gradients against the float64 reference; rows past one 32-row chunk
    of the weight sums (70, 33) and widths that are not a multiple of the vector length."""
    from pyaiml.reference.transformer import layer_norm_backward as bref

    x = (rng.standard_normal((rows, n)) * 3 + 1).astype(np.float32)
    g = rng.standard_normal((rows, n)).astype(np.float32)
    w = rng.standard_normal(n).astype(np.float32) if weighted else None
    f = _backend.resolve("layer_norm_backward", backend)
    got = f(g, x, w, 1e-3, (True, True, True))
    want = bref(g.astype(np.float64), x.astype(np.float64), None if w is None else w.astype(np.float64), 1e-3)
    for a, b in zip(got, want):
        _close(a, b, max(n, rows))
    dx, dw, db = f(g, x, w, 1e-3, (False, True, False))
    assert dx is None and db is None
    _close(dw, want[1], max(n, rows))


def test_backward_weight_sums_do_not_depend_on_the_thread_count(rng):
    import pyaiml

    x = rng.standard_normal((200, 96)).astype(np.float32)
    g = rng.standard_normal((200, 96)).astype(np.float32)
    w = rng.standard_normal(96).astype(np.float32)
    f = _backend.resolve("layer_norm_backward")
    old = pyaiml.get_num_threads()
    try:
        pyaiml.set_num_threads(1)
        one = f(g, x, w, 1e-5, (True, True, True))
        pyaiml.set_num_threads(2)
        two = f(g, x, w, 1e-5, (True, True, True))
    finally:
        pyaiml.set_num_threads(old)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(torch is None, reason="torch is the oracle here")
def test_tape_layer_norm_float32_against_torch(rng):
    """The tape's float32 layer_norm (these kernels) against torch autograd in float64."""
    from pyaiml.autograd import GradientTape
    from pyaiml.autograd import functional as F

    x = (rng.standard_normal((4, 5, 48)) * 2).astype(np.float32)
    w, b = rng.standard_normal(48).astype(np.float32), rng.standard_normal(48).astype(np.float32)
    c = rng.standard_normal(x.shape).astype(np.float32)
    with GradientTape() as tape:
        xs, ws, bs = tape.watch(x), tape.watch(w), tape.watch(b)
        y = F.layer_norm(xs, ws, bs, 1e-3)
    got = tape.gradient(y, [xs, ws, bs], output_gradients=c)
    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.layer_norm(tx, (48,), tw, tb, 1e-3)
    (ty * torch.tensor(c, dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(y.value, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    for a, t in zip(got, (tx, tw, tb)):
        np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_backward_errors():
    from pyaiml import _backend as B

    C = B.native()
    if C is None:
        pytest.skip("needs pyaiml._C")
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="grad_out must have x's shape"):
        C.layer_norm_backward(np.zeros((2, 4), np.float32), x)
    with pytest.raises(ValueError, match="weight"):
        C.layer_norm_backward(x, x, np.zeros(4, np.float32))
