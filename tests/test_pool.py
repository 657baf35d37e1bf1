"""max_pool1d / max_pool2d forward and backward: every backend against torch (values,
indices and gradients exactly: pooling only selects), both data formats, ties (the
gradient goes to the first maximum, as in torch), padding, strides, overlapping and
disjoint windows, bad input."""
import numpy as np
import pytest

from helpers import backends_for

import pyaiml.ops as ops

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (N, C, H, W, kernel, stride, padding)
CASES2 = [
    (32, 5, 30, 30, 2, None, 0),        # disjoint, covering
    (2, 3, 13, 13, 2, None, 0),         # disjoint, last row/column uncovered
    (1, 7, 9, 11, 3, 2, 1),             # overlapping, padded
    (5, 1, 1, 97, (1, 3), (1, 2), (0, 1)),
    (2, 33, 8, 6, (3, 2), (1, 3), (1, 0)),
    (3, 17, 7, 7, 7, None, 3),
]
CASES1 = [(5, 3, 97, 3, 2, 1), (2, 16, 8, 2, None, 0), (1, 1, 1, 1, None, 0)]


def _data(rng, shape):
    # small integers: many ties inside windows
    return rng.integers(-2, 3, shape).astype(np.float32)


def _check(nd, backend, cl, case, rng, monkeypatch):
    if nd == 2:
        N, C, H, W, k, s, p = case
        shape, perm, inv = (N, C, H, W), (0, 2, 3, 1), (0, 3, 1, 2)
        fmt, pool, pool_b, tpool = ("NHWC" if cl else "NCHW"), ops.max_pool2d, ops.max_pool2d_backward, F.max_pool2d
    else:
        N, C, L, k, s, p = case
        shape, perm, inv = (N, C, L), (0, 2, 1), (0, 2, 1)
        fmt, pool, pool_b, tpool = ("NLC" if cl else "NCL"), ops.max_pool1d, ops.max_pool1d_backward, F.max_pool1d
    x = _data(rng, shape)
    tx = torch.tensor(x, requires_grad=True)
    ty, ti = tpool(tx, k, stride=s, padding=p, return_indices=True)
    gy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.tensor(gy))
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    xi = np.ascontiguousarray(x.transpose(perm)) if cl else x
    gyi = np.ascontiguousarray(gy.transpose(perm)) if cl else gy
    y, idx = pool(xi, k, s, p, data_format=fmt, return_indices=True)
    y2 = pool(xi, k, s, p, data_format=fmt)
    gx = pool_b(gyi, xi, k, s, p, data_format=fmt)
    gx_i = pool_b(gyi, xi, k, s, p, data_format=fmt, indices=idx)
    if cl:
        y, y2, idx, gx, gx_i = (a.transpose(inv) for a in (y, y2, idx, gx, gx_i))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(idx, ti.numpy())
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gx_i, tx.grad.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", backends_for("max_pool2d"))
@pytest.mark.parametrize("cl", [False, True], ids=["NCHW", "NHWC"])
@pytest.mark.parametrize("i", range(len(CASES2)))
def test_max_pool2d_matches_torch(backend, cl, i, rng, monkeypatch):
    _check(2, backend, cl, CASES2[i], rng, monkeypatch)


@pytest.mark.parametrize("backend", backends_for("max_pool2d"))
@pytest.mark.parametrize("cl", [False, True], ids=["NCL", "NLC"])
@pytest.mark.parametrize("i", range(len(CASES1)))
def test_max_pool1d_matches_torch(backend, cl, i, rng, monkeypatch):
    _check(1, backend, cl, CASES1[i], rng, monkeypatch)


def test_float64_and_noncontiguous(rng):
    base = rng.standard_normal((2, 9, 8, 6))
    x = base.transpose(0, 3, 1, 2)[:, :, ::-1]           # float64, non-contiguous NCHW view
    y = ops.max_pool2d(x, 3, 2, 1)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, F.max_pool2d(torch.tensor(np.array(x)), 3, 2, 1).numpy())
    y32 = ops.max_pool2d(x.astype(np.float32)[:, ::2], 2)
    np.testing.assert_array_equal(y32, F.max_pool2d(torch.tensor(np.array(x[:, ::2], np.float32)), 2).numpy())


X = np.zeros((2, 3, 8, 8), np.float32)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(x=np.zeros((3, 8, 8), np.float32)), ValueError, "x must be 4-D"),
    (dict(x=X.astype(np.int64)), TypeError, "x must have dtype float32 or float64"),
    (dict(kernel_size=0), ValueError, "kernel_size must be >= 1"),
    (dict(stride=0), ValueError, "stride must be >= 1"),
    (dict(stride=(2, -1)), ValueError, "stride must be >= 1"),
    (dict(padding=2), ValueError, "padding must be at most half the kernel size"),
    (dict(padding=-1), ValueError, "padding must be >= 0"),
    (dict(kernel_size=9), ValueError, "kernel_size must fit in the padded input"),
    (dict(kernel_size=(2, 2, 2)), TypeError, "kernel_size must be an int or a tuple of 2 ints"),
    (dict(data_format="NWHC"), ValueError, "data_format must be one of"),
    (dict(x=np.zeros((2, 0, 8, 8), np.float32)), ValueError, "non-empty"),
])
def test_max_pool2d_errors(kwargs, exc, match):
    args = dict(x=X, kernel_size=2)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        ops.max_pool2d(**args)


def test_max_pool2d_backward_errors():
    gy = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="grad_out must have the forward output's shape"):
        ops.max_pool2d_backward(gy[:, :, :3], X, 2)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, .*64\)"):
        ops.max_pool2d_backward(gy, X, 2, indices=np.full(gy.shape, 64))
    with pytest.raises(TypeError, match="indices must be an integer array"):
        ops.max_pool2d_backward(gy, X, 2, indices=np.zeros(gy.shape, np.float32))
    with pytest.raises(TypeError, match="grad_out must have x's dtype"):
        ops.max_pool2d_backward(gy.astype(np.float64), X, 2)


def test_nonfinite_input_is_rejected():
    x = np.zeros((1, 2, 4, 4), np.float32)
    x[0, 1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"x must be finite.*\(0, 1, 2, 3\)"):
        ops.max_pool2d(x, 2)


def test_native_indices_range_checked():
    from pyaiml import _backend
    if not _backend.cpp_available():
        pytest.skip("needs pyaiml._C")
    C_ = _backend.native()
    gy = np.ones((1, 2, 2, 2), np.float32)
    x = np.zeros((1, 4, 4, 2), np.float32)
    for bad in (-1, 16):
        idx = np.zeros(gy.shape, np.int64)
        idx[0, 1, 1, 1] = bad
        for q in ((2, 2, 2, 2, 0, 0), (3, 3, 1, 1, 1, 1)):
            g = gy if q[0] == 2 else np.ones((1, 4, 4, 2), np.float32)
            i = idx if q[0] == 2 else np.pad(idx, ((0, 0), (0, 2), (0, 2), (0, 0)))
            with pytest.raises(ValueError, match=r"indices must lie in \[0, H\*W\)"):
                C_.max_pool2d_backward(g, x, q, True, i)
            with pytest.raises(ValueError, match=r"indices must lie in"):
                C_.max_pool2d_backward(np.ascontiguousarray(g.transpose(0, 3, 1, 2)), np.ascontiguousarray(x.transpose(0, 3, 1, 2)),
                                       q, False, np.ascontiguousarray(i.transpose(0, 3, 1, 2)))
