"""conv1d / conv2d forward and backward: every backend against torch (float64 autograd) on
awkward shapes, both data formats; the C++ fast kernels against their _naive oracles;
fused bias+ReLU; thread-count independence; bad input.

Without torch (or with PYAIML_TEST_NO_TORCH=1) the C++ and Numba backends are checked
against pyaiml.reference.conv (float64) instead, and the NumPy backend, which is that
reference, is skipped; the naive-vs-fast and thread-count checks need no torch.

Tolerance rule (float32 kernels vs a float64 oracle): |got - want| <= 3e-5 * sqrt(n_terms)
* max|want| + 1e-5, n_terms the length of the longest sum (C/G*KH*KW for y and grad_x,
N*OH*OW for grad_w/grad_b): float32 rounding grows like sqrt of the summed terms.
"""
import numpy as np
import pytest

from helpers import backends_for, optional_torch, oracle_for, same_at_thread_counts

import pyaiml.ops as ops
from pyaiml import _backend
from pyaiml.reference import conv as R

torch = optional_torch()
F = torch.nn.functional if torch is not None else None

# (N, C, OC, H, W, KH, KW, stride, padding, dilation, groups)
CASES2 = [
    (1, 3, 16, 28, 28, 3, 3, 1, 0, 1, 1),          # tiny
    (5, 1, 1, 7, 9, 3, 3, 1, "same", 1, 1),
    (5, 7, 33, 13, 11, 5, 5, 2, 2, 1, 1),
    (1, 3, 16, 1, 97, 1, 5, 1, (0, 2), 1, 1),      # H = 1, non-square kernel
    (2, 7, 33, 33, 7, 3, 1, (2, 1), (1, 0), (1, 2), 1),
    (5, 4, 6, 9, 10, 3, 2, 1, "valid", 2, 2),      # groups 2, dilation 2
    (3, 8, 8, 12, 12, 3, 3, 1, "same", 1, 8),      # depthwise
    (2, 6, 12, 15, 14, 3, 3, 2, 1, 1, 3),
    (2, 3, 16, 97, 5, 4, 2, 1, "same", 1, 1),      # even kernel: asymmetric same padding
    (1, 7, 1, 3, 3, 3, 3, 1, 0, 1, 1),             # output 1x1
    (4, 16, 16, 6, 6, 1, 1, 1, 0, 1, 1),           # 1x1 in place
    (3, 16, 24, 9, 10, 3, 3, 1, 1, 1, 1),          # Winograd path (NHWC, C and OC >= 16), odd output
    (2, 17, 16, 7, 5, 3, 3, 1, (2, 0), 1, 1),      # Winograd, asymmetric output, padding 2
]
# (N, C, OC, L, K, stride, padding, dilation, groups)
CASES1 = [
    (5, 1, 16, 97, 3, 1, 0, 1, 1),
    (1, 7, 33, 33, 5, 2, 2, 1, 1),
    (3, 4, 8, 20, 3, 1, "same", 2, 2),
    (2, 6, 6, 1, 1, 1, 0, 1, 6),
]


def _tol(want, nterms):
    return 3e-5 * np.sqrt(nterms) * max(1.0, float(np.abs(want).max())) + 1e-5


def _close(name, got, want, nterms):
    got = np.asarray(got, np.float64)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    err = np.abs(got - want).max() if got.size else 0.0
    assert err <= _tol(want, nterms), f"{name}: max error {err:.3g} > {_tol(want, nterms):.3g}"


def _pair(v, nd):
    return (v,) * nd if isinstance(v, int) else tuple(v)


def _ref_params(nd, k, stride, padding, dilation, groups):
    """torch's conv arguments -> pyaiml.reference's (sh, sw, pt, pb, pl, pr, dh, dw, G); 1-D
    runs as 2-D with H = 1. "same" puts the odd padding element at the end, as torch does."""
    s, d = _pair(stride, nd), _pair(dilation, nd)
    if padding == "valid":
        pads = [(0, 0)] * nd
    elif padding == "same":
        pads = [((d[i] * (k[i] - 1)) // 2, d[i] * (k[i] - 1) - (d[i] * (k[i] - 1)) // 2) for i in range(nd)]
    else:
        pads = [(e, e) for e in _pair(padding, nd)]
    if nd == 1:
        return (1, s[0], 0, 0, pads[0][0], pads[0][1], 1, d[0], groups)
    return (s[0], s[1], pads[0][0], pads[0][1], pads[1][0], pads[1][1], d[0], d[1], groups)


def _out_shape(nd, xs, ws, stride, padding, dilation, groups):
    """torch's output shape (N, OC, *spatial) of a channels-first conv."""
    p = _ref_params(nd, ws[2:], stride, padding, dilation, groups)
    sh, sw, pt, pb, pl, pr, dh, dw, _ = p
    kh, kw = (1,) + tuple(ws[2:]) if nd == 1 else tuple(ws[2:])
    H, W = (1,) + tuple(xs[2:]) if nd == 1 else tuple(xs[2:])
    OH = (H + pt + pb - dh * (kh - 1) - 1) // sh + 1
    OW = (W + pl + pr - dw * (kw - 1) - 1) // sw + 1
    return (xs[0], ws[0], OW) if nd == 1 else (xs[0], ws[0], OH, OW)


def _reference(nd, x, w, b, gy, stride, padding, dilation, groups):
    """pyaiml.reference.conv in float64, channels first: (y, grad_x, grad_w, grad_b)."""
    p = _ref_params(nd, w.shape[2:], stride, padding, dilation, groups)
    x, w, gy = (np.asarray(a, np.float64) for a in (x, w, gy))
    if nd == 1:
        x, w, gy = x[:, :, None, :], w[:, :, None, :], gy[:, :, None, :]
    y = R.conv2d(x, w, np.asarray(b, np.float64), p)
    gx, gw, gb = R.conv2d_backward(gy, x, w, p)
    if nd == 1:
        y, gx, gw = y[:, :, 0], gx[:, :, 0], gw[:, :, 0]
    return y, gx, gw, gb


def _oracle(who, nd, x, w, b, gy, stride, padding, dilation, groups):
    f = _torch_ref if who == "torch" else _reference
    return f(nd, x, w, b, gy, stride, padding, dilation, groups)


def _torch_ref(nd, x, w, b, gy, stride, padding, dilation, groups):
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tw = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    f = F.conv1d if nd == 1 else F.conv2d
    y = f(tx, tw, tb, stride=stride, padding=padding, dilation=dilation, groups=groups)
    gx, gw, gb = torch.autograd.grad(y, (tx, tw, tb), torch.tensor(gy, dtype=torch.float64))
    return y.detach().numpy(), gx.numpy(), gw.numpy(), gb.numpy()


def _check(nd, backend, cl, dtype, case, rng, monkeypatch):
    if nd == 2:
        N, C, OC, H, W, KH, KW, s, p, d, G = case
        xs, ws = (N, C, H, W), (OC, C // G, KH, KW)
        perm, inv, fmt = (0, 2, 3, 1), (0, 3, 1, 2), ("NHWC" if cl else "NCHW")
        conv, conv_b = ops.conv2d, ops.conv2d_backward
    else:
        N, C, OC, L, K, s, p, d, G = case
        xs, ws = (N, C, L), (OC, C // G, K)
        perm, inv, fmt = (0, 2, 1), (0, 2, 1), ("NLC" if cl else "NCL")
        conv, conv_b = ops.conv1d, ops.conv1d_backward
    # float64 runs through pyaiml.reference whatever the backend: only torch can check it
    who = oracle_for("numpy" if dtype == np.float64 else backend, torch)
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(OC)
    oshape = _out_shape(nd, xs, ws, s, p, d, G)
    gy = rng.standard_normal(oshape)
    y_ref, gx_ref, gw_ref, gb_ref = _oracle(who, nd, x, w, b, gy, s, p, d, G)
    assert y_ref.shape == oshape
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    xi = x.transpose(perm) if cl else x
    gyi = gy.transpose(perm) if cl else gy
    xi, gyi, wi, bi = (np.ascontiguousarray(a, dtype=dtype) for a in (xi, gyi, w, b))
    y = conv(xi, wi, bi, stride=s, padding=p, dilation=d, groups=G, data_format=fmt)
    gx, gw, gb = conv_b(gyi, xi, wi, stride=s, padding=p, dilation=d, groups=G, data_format=fmt)
    assert y.dtype == dtype and gx.dtype == dtype and gw.dtype == dtype and gb.dtype == dtype
    if cl:
        y, gx = y.transpose(inv), gx.transpose(inv)
    k_terms = int(np.prod(ws[1:]))
    n_terms = int(np.prod(oshape)) // OC
    _close("y", y, y_ref, k_terms)
    _close("grad_x", gx, gx_ref, OC * int(np.prod(ws[2:])))
    _close("grad_w", gw, gw_ref, n_terms)
    _close("grad_b", gb, gb_ref, n_terms)


@pytest.mark.parametrize("backend", backends_for("conv2d"))
@pytest.mark.parametrize("cl", [False, True], ids=["NCHW", "NHWC"])
@pytest.mark.parametrize("i", range(len(CASES2)))
def test_conv2d_matches_oracle(backend, cl, i, rng, monkeypatch):
    # Sampled: the numpy backend (slow einsum loops) runs every other case.
    if backend == "numpy" and i % 2:
        pytest.skip("sampled: numpy backend runs the even cases")
    _check(2, backend, cl, np.float32, CASES2[i], rng, monkeypatch)


@pytest.mark.parametrize("backend", backends_for("conv2d"))
@pytest.mark.parametrize("cl", [False, True], ids=["NCL", "NLC"])
@pytest.mark.parametrize("i", range(len(CASES1)))
def test_conv1d_matches_oracle(backend, cl, i, rng, monkeypatch):
    _check(1, backend, cl, np.float32, CASES1[i], rng, monkeypatch)


@pytest.mark.parametrize("i", [1, 2, 5, 6])
def test_conv2d_float64(i, rng, monkeypatch):
    _check(2, "cpp" if _backend.cpp_available() else "numpy", True, np.float64, CASES2[i], rng, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("backend", backends_for("conv2d"))
@pytest.mark.parametrize("seed", range(20))
def test_conv2d_random_slow(backend, seed, monkeypatch):
    r = np.random.default_rng(seed)
    G = int(r.choice([1, 2, 3]))
    KH, KW = (int(v) for v in r.integers(1, 6, 2))
    d = int(r.integers(1, 3))
    case = (int(r.integers(1, 6)), G * int(r.integers(1, 4)), G * int(r.integers(1, 6)), int(r.integers(d * KH, 40)),
            int(r.integers(d * KW, 40)), KH, KW, int(r.integers(1, 3)), int(r.integers(0, 3)), d, G)
    _check(2, backend, bool(seed % 2), np.float32, case, r, monkeypatch)


def _random_shape(r):
    G = int(r.choice([1, 2, 3]))
    KH, KW = (int(v) for v in r.integers(1, 4, 2))
    sh, sw, dh, dw = (int(v) for v in r.integers(1, 3, 4))
    pt, pb, pl, pr = (int(v) for v in r.integers(0, 3, 4))
    H = int(r.integers(max(1, dh * (KH - 1) + 1 - pt - pb), 14))
    W = int(r.integers(max(1, dw * (KW - 1) + 1 - pl - pr), 40))
    N = int(r.integers(1, 4))
    return N, G, int(r.integers(1, 5)) * G, int(r.integers(1, 6)) * G, H, W, KH, KW, (sh, sw, pt, pb, pl, pr, dh, dw, G)


@pytest.mark.skipif(not _backend.cpp_available(), reason="needs pyaiml._C")
@pytest.mark.parametrize("seed", range(12))
def test_cpp_fast_matches_naive(seed):
    """Asymmetric padding, per-axis stride/dilation, groups: the tiled kernels vs the loops."""
    C_ = _backend.native()
    r = np.random.default_rng(seed)
    N, G, C, OC, H, W, KH, KW, p = _random_shape(r)
    x = r.standard_normal((N, C, H, W), dtype=np.float32)
    w = r.standard_normal((OC, C // G, KH, KW), dtype=np.float32)
    b = r.standard_normal(OC, dtype=np.float32)
    for cl in (False, True):
        xi = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if cl else x
        y = C_.conv2d(xi, w, b, p, cl, True, False)
        yn = C_.conv2d(xi, w, b, p, cl, True, True)
        np.testing.assert_allclose(y, yn, rtol=1e-4, atol=1e-4)
        gy = r.standard_normal(y.shape, dtype=np.float32)
        for a, an in zip(C_.conv2d_backward(gy, xi, w, p, cl, True, False), C_.conv2d_backward(gy, xi, w, p, cl, True, True)):
            np.testing.assert_allclose(a, an, rtol=1e-4, atol=2e-4 * np.sqrt(gy.size))


@pytest.mark.parametrize("backend", backends_for("conv2d"))
@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_fused_relu(backend, fmt, rng, monkeypatch):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    x = rng.standard_normal((2, 5, 6, 3) if fmt == "NHWC" else (2, 3, 5, 6), dtype=np.float32)
    w = rng.standard_normal((4, 3, 3, 3), dtype=np.float32)
    b = rng.standard_normal(4, dtype=np.float32)
    y = ops.conv2d(x, w, b, padding=1, data_format=fmt)
    yr = ops.conv2d(x, w, b, padding=1, data_format=fmt, activation="relu")
    np.testing.assert_allclose(yr, np.maximum(y, 0), rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not _backend.cpp_available(), reason="needs pyaiml._C")
def test_results_do_not_depend_on_thread_count(rng):
    x = rng.standard_normal((9, 10, 11, 5), dtype=np.float32)
    w = rng.standard_normal((6, 5, 3, 3), dtype=np.float32)
    gy = rng.standard_normal((9, 10, 11, 6), dtype=np.float32)
    same_at_thread_counts(lambda: (ops.conv2d(x, w, padding=1, data_format="NHWC"),)
                          + ops.conv2d_backward(gy, x, w, padding=1, data_format="NHWC"))


@pytest.mark.parametrize("backend", backends_for("conv2d"))
def test_noncontiguous_views(backend, rng, monkeypatch):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    base = rng.standard_normal((2, 8, 9, 6), dtype=np.float32)
    x = base.transpose(0, 3, 1, 2)[:, ::2]           # NCHW view, non-contiguous
    w = rng.standard_normal((3, 3, 2, 2), dtype=np.float32).transpose(0, 1, 3, 2)
    who = oracle_for(backend, torch)

    def ref(xc, wc, stride):  # channels-first copies
        zb, gy = np.zeros(wc.shape[0]), np.zeros(_out_shape(2, xc.shape, wc.shape, stride, 0, 1, 1))
        return _oracle(who, 2, np.array(xc), np.array(wc), zb, gy, stride, 0, 1, 1)[0]

    y = ops.conv2d(x, w, stride=(1, 2))
    np.testing.assert_allclose(y, ref(x, w, (1, 2)), rtol=1e-4, atol=1e-4)
    xl = base[:, :, ::-1, :]                         # NHWC view with a negative stride
    w6 = rng.standard_normal((4, 6, 3, 3), dtype=np.float32)
    yl = ops.conv2d(xl, w6, data_format="NHWC")
    np.testing.assert_allclose(yl, ref(xl.transpose(0, 3, 1, 2), w6, 1).transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)


def test_batch_zero():
    y = ops.conv2d(np.zeros((0, 3, 5, 5), np.float32), np.zeros((4, 3, 3, 3), np.float32))
    assert y.shape == (0, 4, 3, 3)


X = np.zeros((2, 4, 8, 8), np.float32)
Wt = np.zeros((6, 4, 3, 3), np.float32)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(x=np.zeros((4, 8, 8), np.float32)), ValueError, "x must be 4-D"),
    (dict(weight=np.zeros((6, 4, 3), np.float32)), ValueError, "weight must be 4-D"),
    (dict(x=X.astype(np.int32)), TypeError, "x must have dtype float32 or float64"),
    (dict(weight=Wt.astype(np.float64)), TypeError, "same dtype"),
    (dict(weight=np.zeros((6, 3, 3, 3), np.float32)), ValueError, r"weight.shape\[1\] must equal"),
    (dict(groups=3), ValueError, "groups must divide the input channels"),
    (dict(groups=4), ValueError, "groups must divide the output channels"),
    (dict(groups=0), ValueError, "groups must be >= 1"),
    (dict(stride=0), ValueError, "stride must be >= 1"),
    (dict(stride=(1, -1)), ValueError, "stride must be >= 1"),
    (dict(dilation=0), ValueError, "dilation must be >= 1"),
    (dict(dilation=(1, 2, 3)), TypeError, "dilation must be an int or a tuple of 2 ints"),
    (dict(padding=-1), ValueError, "padding must be >= 0"),
    (dict(padding="full"), ValueError, "padding must be an int, a tuple, 'valid' or 'same'"),
    (dict(padding="same", stride=2), ValueError, "padding='same' needs stride 1"),
    (dict(weight=np.zeros((6, 4, 9, 3), np.float32)), ValueError, "kernel must fit in the padded input"),
    (dict(dilation=5), ValueError, "kernel must fit in the padded input"),
    (dict(data_format="CHWN"), ValueError, "data_format must be one of"),
    (dict(bias=np.zeros(5, np.float32)), ValueError, r"bias must have shape \(6,\)"),
    (dict(activation="tanh"), ValueError, "activation must be None or 'relu'"),
    (dict(x=np.full((2, 4, 8, 8), np.nan, np.float32)), ValueError, "x must be finite"),
])
def test_conv2d_errors(kwargs, exc, match):
    args = dict(x=X, weight=Wt)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        ops.conv2d(**args)


def test_conv_backward_errors():
    with pytest.raises(ValueError, match="grad_out must have the forward output's shape"):
        ops.conv2d_backward(np.zeros((2, 6, 5, 5), np.float32), X, Wt)
    with pytest.raises(ValueError, match="x must be 3-D"):
        ops.conv1d(X, Wt[..., 0])
    with pytest.raises(ValueError, match="kernel must fit"):
        ops.conv1d(np.zeros((1, 2, 3), np.float32), np.zeros((1, 2, 4), np.float32))


@pytest.mark.skipif(not _backend.cpp_available(), reason="needs pyaiml._C")
def test_native_entry_checks_its_arguments():
    """Direct calls into _C with inconsistent values raise ValueError, never read out of bounds."""
    C_ = _backend.native()
    with pytest.raises(ValueError, match="kernel must fit"):
        C_.conv2d(X, np.zeros((6, 4, 11, 3), np.float32), None, (1, 1, 0, 0, 0, 0, 1, 1, 1), False)
    with pytest.raises(ValueError, match="groups must be"):
        C_.conv2d(X, Wt, None, (1, 1, 0, 0, 0, 0, 1, 1, 3), False)
    with pytest.raises(ValueError, match="stride must be"):
        C_.conv2d(X, Wt, None, (0, 1, 0, 0, 0, 0, 1, 1, 1), False)
    with pytest.raises(ValueError, match="C-contiguous"):
        C_.conv2d(X[:, :, ::2], Wt, None, (1, 1, 0, 0, 0, 0, 1, 1, 1), False)
    with pytest.raises(ValueError, match="grad_out must have shape"):
        C_.conv2d_backward(np.zeros((2, 6, 5, 5), np.float32), X, Wt, (1, 1, 0, 0, 0, 0, 1, 1, 1), False)


def test_memoised_checks_still_reject_bools():
    ops.conv2d(X, Wt, stride=1, groups=1)
    with pytest.raises(TypeError, match="stride must be an int"):
        ops.conv2d(X, Wt, stride=True)
    with pytest.raises(TypeError, match="groups must be an int"):
        ops.conv2d(X, Wt, groups=True)
