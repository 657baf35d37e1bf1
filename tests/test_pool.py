"""max_pool1d / max_pool2d forward and backward: every backend against torch (values,
indices and gradients exactly: pooling only selects), both data formats, ties (the
gradient goes to the first maximum, as in torch), padding, strides, overlapping and
disjoint windows, bad input.

Without torch (or with PYAIML_TEST_NO_TORCH=1) the C++ and Numba backends are checked
against pyaiml.reference.pool instead, and the NumPy backend, which is that reference, is
skipped."""
import numpy as np
import pytest

from helpers import backends_for, optional_torch, oracle_for

import pyaiml.ops as ops
from pyaiml import _backend
from pyaiml.reference import pool as R

torch = optional_torch()
F = torch.nn.functional if torch is not None else None

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


def _pair(v, nd):
    return (v,) * nd if isinstance(v, int) else tuple(v)


def _pool_q(nd, k, s, p):
    """torch's pooling arguments -> pyaiml.reference's q = (kh, kw, sh, sw, ph, pw)."""
    k = _pair(k, nd)
    s = k if s is None else _pair(s, nd)
    p = _pair(p, nd)
    return (1, k[0], 1, s[0], 0, p[0]) if nd == 1 else (k[0], k[1], s[0], s[1], p[0], p[1])


def _out_shape(nd, shape, k, s, p):
    kh, kw, sh, sw, ph, pw = _pool_q(nd, k, s, p)
    H, W = (1, shape[2]) if nd == 1 else shape[2:]
    OH, OW = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    return tuple(shape[:2]) + ((OW,) if nd == 1 else (OH, OW))


def _oracle(who, nd, x, k, s, p, gy, relu=False):
    """(y, flat indices, grad_x) of max_pool (then ReLU when relu), channels first."""
    if who == "torch":
        tx = torch.tensor(x, requires_grad=True)
        ty, ti = (F.max_pool1d if nd == 1 else F.max_pool2d)(tx, k, stride=s, padding=p, return_indices=True)
        if relu:
            ty = F.relu(ty)
        ty.backward(torch.tensor(gy))
        return ty.detach().numpy(), ti.numpy(), tx.grad.numpy()
    q = _pool_q(nd, k, s, p)
    x4, g4 = (a[:, :, None] if nd == 1 else a for a in (x, gy))
    y, idx, _ = R.max_pool2d(x4, q, index="flat")
    if relu:  # ReLU's gradient passes where its input is > 0, as torch's
        g4 = np.where(y > 0, g4, 0).astype(g4.dtype)
        y = np.maximum(y, 0)
    gx = R.max_pool2d_backward(g4, x4, q, indices=idx)
    return tuple(a[:, :, 0] if nd == 1 else a for a in (y, idx, gx))


def _check(nd, backend, cl, case, rng, monkeypatch):
    if nd == 2:
        N, C, H, W, k, s, p = case
        shape, perm, inv = (N, C, H, W), (0, 2, 3, 1), (0, 3, 1, 2)
        fmt, pool, pool_b = ("NHWC" if cl else "NCHW"), ops.max_pool2d, ops.max_pool2d_backward
    else:
        N, C, L, k, s, p = case
        shape, perm, inv = (N, C, L), (0, 2, 1), (0, 2, 1)
        fmt, pool, pool_b = ("NLC" if cl else "NCL"), ops.max_pool1d, ops.max_pool1d_backward
    who = oracle_for(backend, torch)
    x = _data(rng, shape)
    gy = rng.standard_normal(_out_shape(nd, shape, k, s, p)).astype(np.float32)
    y_ref, i_ref, gx_ref = _oracle(who, nd, x, k, s, p, gy)
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    xi = np.ascontiguousarray(x.transpose(perm)) if cl else x
    gyi = np.ascontiguousarray(gy.transpose(perm)) if cl else gy
    y, idx = pool(xi, k, s, p, data_format=fmt, return_indices=True)
    y2 = pool(xi, k, s, p, data_format=fmt)
    gx = pool_b(gyi, xi, k, s, p, data_format=fmt)
    gx_i = pool_b(gyi, xi, k, s, p, data_format=fmt, indices=idx)
    if cl:
        y, y2, idx, gx, gx_i = (a.transpose(inv) for a in (y, y2, idx, gx, gx_i))
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(idx, i_ref)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gx_i, gx_ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", backends_for("max_pool2d"))
@pytest.mark.parametrize("cl", [False, True], ids=["NCHW", "NHWC"])
@pytest.mark.parametrize("i", range(len(CASES2)))
def test_max_pool2d_matches_oracle(backend, cl, i, rng, monkeypatch):
    _check(2, backend, cl, CASES2[i], rng, monkeypatch)


@pytest.mark.parametrize("backend", backends_for("max_pool2d"))
@pytest.mark.parametrize("cl", [False, True], ids=["NCL", "NLC"])
@pytest.mark.parametrize("i", range(len(CASES1)))
def test_max_pool1d_matches_oracle(backend, cl, i, rng, monkeypatch):
    _check(1, backend, cl, CASES1[i], rng, monkeypatch)


def test_float64_and_noncontiguous(rng):
    # float64 runs through pyaiml.reference: only torch can check it; float32 runs on the
    # chosen backend (reference-checked without torch unless that is the numpy backend)
    base = rng.standard_normal((2, 9, 8, 6))
    x = base.transpose(0, 3, 1, 2)[:, :, ::-1]           # float64, non-contiguous NCHW view
    x32 = np.array(x[:, ::2], np.float32)
    y32 = ops.max_pool2d(x.astype(np.float32)[:, ::2], 2)
    who = oracle_for(_backend.chosen_backend("max_pool2d"), torch)
    g32 = np.zeros(_out_shape(2, x32.shape, 2, None, 0), np.float32)
    np.testing.assert_array_equal(y32, _oracle(who, 2, x32, 2, None, 0, g32)[0])
    y = ops.max_pool2d(x, 3, 2, 1)
    assert y.dtype == np.float64
    who = oracle_for("numpy", torch)
    g64 = np.zeros(_out_shape(2, x.shape, 3, 2, 1))
    np.testing.assert_array_equal(y, _oracle(who, 2, np.array(x), 3, 2, 1, g64)[0])


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


# ---------------------------------------------------------------- window indices, fused ReLU
# (N, C, H, W, kernel, stride, padding): tiled windows with channel counts that hit the
# vector tails (1, 3, 7, 33, 97), odd sizes (7x9: the last row/column is in no window),
# 1xk windows (max_pool1d), and the general (padded, overlapping, gapped) path.
WCASES2 = [
    (2, 1, 4, 4, 2, None, 0),
    (3, 3, 7, 9, 2, None, 0),
    (2, 7, 7, 9, 2, None, 0),
    (2, 33, 6, 6, 2, None, 0),
    (1, 97, 5, 8, 2, None, 0),
    (2, 16, 9, 7, (3, 2), None, 0),
    (2, 32, 1, 13, (1, 2), None, 0),
    (1, 7, 9, 11, 3, 2, 1),
    (2, 17, 7, 7, 2, 3, 1),
    (1, 5, 8, 6, (3, 2), (1, 3), (1, 0)),
]


def _wdata(rng, shape):
    # small integers around 0: ties, exact zeros and all-negative windows
    return rng.integers(-2, 3, shape).astype(np.float32)


def _cl(a, cl, nd):
    if not cl:
        return a
    return np.ascontiguousarray(a.transpose((0, 2, 3, 1) if nd == 2 else (0, 2, 1)))


def _cf(a, cl, nd):
    return a.transpose((0, 3, 1, 2) if nd == 2 else (0, 2, 1)) if cl else a


@pytest.mark.parametrize("backend", backends_for("max_pool2d"))
@pytest.mark.parametrize("cl", [False, True], ids=["NCHW", "NHWC"])
@pytest.mark.parametrize("relu", [False, True], ids=["plain", "relu"])
@pytest.mark.parametrize("i", range(len(WCASES2)))
def test_window_indices_and_relu_match_oracle(backend, cl, relu, i, rng, monkeypatch):
    """Forward and gradient of max_pool2d(x) and of relu(max_pool2d(x)) through window
    indices, against torch autograd (exact: pooling only selects)."""
    N, C, H, W, k, s, p = WCASES2[i]
    who = oracle_for(backend, torch)
    x = _wdata(rng, (N, C, H, W))
    gy = rng.standard_normal(_out_shape(2, x.shape, k, s, p)).astype(np.float32)
    y_ref, ti, gx_ref = _oracle(who, 2, x, k, s, p, gy, relu)
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    fmt = "NHWC" if cl else "NCHW"
    act = "relu" if relu else None
    xi, gyi = _cl(x, cl, 2), _cl(gy, cl, 2)
    y, win = ops.max_pool2d(xi, k, s, p, data_format=fmt, return_indices=True, activation=act,
                            index_format="window")
    assert win.dtype == np.uint8 and win.shape == y.shape
    y2 = ops.max_pool2d(xi, k, s, p, data_format=fmt, activation=act)
    gx = ops.max_pool2d_backward(gyi, xi, k, s, p, data_format=fmt, indices=win, index_format="window")
    np.testing.assert_array_equal(_cf(y, cl, 2), y_ref)
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_allclose(_cf(gx, cl, 2), gx_ref, rtol=1e-6, atol=1e-6)
    if relu:
        assert np.all((_cf(win, cl, 2) == 255) == (y_ref <= 0))
    else:  # window positions agree with the oracle's flat indices
        kh, kw, sh, sw, ph, pw = _pool_q(2, k, s, p)
        OH, OW = ti.shape[2:]
        wi = _cf(win, cl, 2).astype(np.int64)
        h = np.arange(OH)[:, None] * sh - ph + wi // kw
        w = np.arange(OW)[None, :] * sw - pw + wi % kw
        np.testing.assert_array_equal(h * W + w, ti)


@pytest.mark.parametrize("backend", backends_for("max_pool2d"))
@pytest.mark.parametrize("cl", [False, True], ids=["NCL", "NLC"])
@pytest.mark.parametrize("case", [(3, 5, 126, 2, None, 0), (2, 64, 17, 2, None, 0), (1, 3, 10, 3, 2, 1)])
def test_window_indices_and_relu_1d(backend, cl, case, rng, monkeypatch):
    N, C, L, k, s, p = case
    who = oracle_for(backend, torch)
    x = _wdata(rng, (N, C, L))
    gy = rng.standard_normal(_out_shape(1, x.shape, k, s, p)).astype(np.float32)
    y_ref, _, gx_ref = _oracle(who, 1, x, k, s, p, gy, relu=True)
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    fmt = "NLC" if cl else "NCL"
    y, win = ops.max_pool1d(_cl(x, cl, 1), k, s, p, data_format=fmt, return_indices=True, activation="relu",
                            index_format="window")
    gx = ops.max_pool1d_backward(_cl(gy, cl, 1), _cl(x, cl, 1), k, s, p, data_format=fmt, indices=win,
                                 index_format="window")
    np.testing.assert_array_equal(_cf(y, cl, 1), y_ref)
    np.testing.assert_allclose(_cf(gx, cl, 1), gx_ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", backends_for("max_pool2d"))
def test_relu_pool_keeps_nan_and_gates_its_gradient(backend, monkeypatch):
    """relu(max) keeps a NaN maximum (torch does too); a NaN or non-positive window passes
    no gradient, as torch's ReLU backward gives 0 there."""
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    x = np.array([[[[1.0, -1.0], [np.nan, 0.5]], [[-3.0, -2.0], [-1.0, -4.0]]]], np.float32)  # (1, 2, 2, 2) NCHW
    with ops_finite_checks(False):
        y, win = ops.max_pool2d(x, 2, return_indices=True, activation="relu", index_format="window")
        gx = ops.max_pool2d_backward(np.ones_like(y), x, 2, indices=win, index_format="window")
    assert np.isnan(y[0, 0, 0, 0]) and y[0, 1, 0, 0] == 0
    assert win[0, 0, 0, 0] == 255 and win[0, 1, 0, 0] == 255
    assert not gx.any()


class ops_finite_checks:
    def __init__(self, on):
        self.on = on

    def __enter__(self):
        self.prev = ops.get_check_finite()
        ops.set_check_finite(self.on)

    def __exit__(self, *a):
        ops.set_check_finite(self.prev)


@pytest.mark.parametrize("backend", backends_for("max_pool2d"))
def test_window_indices_are_checked(backend, monkeypatch):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    x = np.zeros((1, 4, 4, 3), np.float32)
    gy = np.ones((1, 2, 2, 3), np.float32)
    for bad in (4, 254):
        win = np.zeros(gy.shape, np.uint8)
        win[0, 1, 0, 2] = bad
        with pytest.raises(ValueError, match="window indices must lie in"):
            ops.max_pool2d_backward(gy, x, 2, data_format="NHWC", indices=win, index_format="window")
    # a padded window: position 0 of window (0, 0) lies in the padding
    win = np.full((1, 2, 2, 3), 4, np.uint8)
    win[0, 0, 0, 1] = 0
    with pytest.raises(ValueError, match="window indices must lie in"):
        ops.max_pool2d_backward(gy, x, 3, 2, 1, data_format="NHWC", indices=win, index_format="window")
    # 255 (no gradient) is valid everywhere
    gx = ops.max_pool2d_backward(gy, x, 2, data_format="NHWC", indices=np.full(gy.shape, 255, np.uint8),
                                 index_format="window")
    assert not gx.any()


def test_window_and_relu_option_errors():
    x = np.zeros((1, 2, 4, 4), np.float32)
    gy = np.zeros((1, 2, 2, 2), np.float32)
    with pytest.raises(ValueError, match="index_format must be 'flat' or 'window'"):
        ops.max_pool2d(x, 2, return_indices=True, index_format="byte")
    with pytest.raises(ValueError, match="activation must be None or 'relu'"):
        ops.max_pool2d(x, 2, activation="tanh")
    with pytest.raises(ValueError, match="with activation='relu', indices must use index_format='window'"):
        ops.max_pool2d(x, 2, return_indices=True, activation="relu")
    with pytest.raises(ValueError, match="needs kernel_size\\[0\\] \\* kernel_size\\[1\\] <= 254"):
        ops.max_pool2d(np.zeros((1, 1, 16, 16), np.float32), 16, return_indices=True, index_format="window")
    with pytest.raises(ValueError, match="window indices must lie in \\[0, 255\\]"):
        ops.max_pool2d_backward(gy, x, 2, indices=np.full(gy.shape, 300), index_format="window")
    with pytest.raises(ValueError, match="index_format must be 'flat' or 'window'"):
        ops.max_pool2d_backward(gy, x, 2, indices=np.zeros(gy.shape, np.uint8), index_format="byte")
    # int64 window positions are accepted (converted after the range check)
    gx = ops.max_pool2d_backward(gy + 1, x, 2, indices=np.zeros(gy.shape, np.int64), index_format="window")
    assert gx[0, 0, 0, 0] == 1 and gx.sum() == 8


def test_cached_call_plans_keep_argument_checks():
    """A validated call signature is remembered; values that merely compare equal to it
    (True == 1, 2.0 == 2) must still be rejected."""
    x = np.zeros((1, 2, 4, 4), np.float32)
    ops.max_pool2d(x, 2)
    ops.max_pool2d(x, 1, 1)
    with pytest.raises(TypeError, match="kernel_size must be an int"):
        ops.max_pool2d(x, 2.0)
    with pytest.raises(TypeError, match="kernel_size must be an int"):
        ops.max_pool2d(x, True)
    with pytest.raises(TypeError, match="stride must be an int"):
        ops.max_pool2d(x, 1, True)
    np.testing.assert_array_equal(ops.max_pool2d(x, [2, 2]), ops.max_pool2d(x, (2, 2)))
    # a non-contiguous input with a cached plan
    xs = np.zeros((1, 2, 4, 8), np.float32)[..., ::2]
    xs[:] = np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4)
    np.testing.assert_array_equal(ops.max_pool2d(xs, 2), ops.max_pool2d(np.ascontiguousarray(xs), 2))


def test_finite_flag_from_the_kernel():
    """The kernel's finite flag replaces the scan of y: +inf and NaN inputs are still named;
    a -inf that no window's maximum sees does not matter (as before)."""
    x = np.zeros((1, 4, 4, 2), np.float32)
    x[0, 1, 2, 1] = np.inf
    with pytest.raises(ValueError, match=r"x must be finite.*\(0, 1, 2, 1\)"):
        ops.max_pool2d(x, 2, data_format="NHWC")
    x[0, 1, 2, 1] = -np.inf
    assert np.all(ops.max_pool2d(x, 2, data_format="NHWC") == 0)
