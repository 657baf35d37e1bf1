"""matmul / linear against NumPy float64 on awkward shapes, every backend, strided views.

Oracle: the float64 product by np.einsum (its own summation loops, not the BLAS matmul that
the numpy backend, pyaiml.reference.gemm, calls), so every backend, numpy included, is
checked against an independent computation. The large shapes use the float64 BLAS product
for the C++ and Numba backends and torch's float64 matmul for the numpy backend (skipped
without torch).

Tolerance: float32 products of K terms with |x| ~ 1 accumulate error ~ sqrt(K) * eps * |x|;
we allow rtol 1e-4 and atol 2e-5 * sqrt(K) (FMA and blocking order differ from NumPy).
"""
import itertools

import numpy as np
import pytest

import pyaiml.ops as ops
from pyaiml import _backend
from helpers import backends_for, optional_torch

SIZES = [1, 3, 7, 33, 97]


def tol(K):
    return dict(rtol=1e-4, atol=2e-5 * np.sqrt(K) * 4)


def product64(a, b):
    """a @ b in float64 by np.einsum (matmul broadcasting over the leading dimensions)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.einsum("...mk,...kn->...mn", a, b, optimize=False)


@pytest.mark.parametrize("backend", backends_for("gemm"))
@pytest.mark.parametrize("M,K,N", list(itertools.product(SIZES, SIZES, SIZES)))
def test_gemm_backends_awkward(backend, M, K, N, rng):
    a = rng.standard_normal((1, M, K), dtype=np.float32)
    b = rng.standard_normal((1, K, N), dtype=np.float32)
    got = _backend.resolve("gemm", backend)(a, b)
    np.testing.assert_allclose(got, product64(a, b), **tol(K))


@pytest.mark.parametrize("backend", backends_for("gemm"))
@pytest.mark.parametrize("M,K,N", [(1025, 97, 33), (33, 1025, 97), (97, 33, 1025), (1025, 1025, 7), (7, 1025, 1025), (1025, 7, 1025), (1025, 1025, 1025)])
def test_gemm_backends_large(backend, M, K, N, rng):
    torch = optional_torch()
    if backend == "numpy" and torch is None:
        pytest.skip("the numpy backend is NumPy's BLAS product itself: its oracle here is torch, not installed")
    a = rng.standard_normal((1, M, K), dtype=np.float32)
    b = rng.standard_normal((1, K, N), dtype=np.float32)
    got = _backend.resolve("gemm", backend)(a, b)
    if backend == "numpy":
        want = torch.matmul(torch.from_numpy(a).double(), torch.from_numpy(b).double()).numpy()
    else:
        want = a.astype(np.float64) @ b
    np.testing.assert_allclose(got, want, **tol(K))


@pytest.mark.parametrize("backend", backends_for("gemm"))
def test_gemm_bias_relu(backend, rng):
    a = rng.standard_normal((2, 37, 70), dtype=np.float32)
    b = rng.standard_normal((2, 70, 45), dtype=np.float32)
    bias = rng.standard_normal(45, dtype=np.float32)
    got = _backend.resolve("gemm", backend)(a, b, bias, True)
    want = np.maximum(product64(a, b) + bias, 0)
    np.testing.assert_allclose(got, want, **tol(70))


def test_cpp_naive_matches_fast(rng):
    C = _backend.native()
    if C is None:
        pytest.skip("C++ backend not built")
    a = rng.standard_normal((1, 97, 300), dtype=np.float32)
    b = rng.standard_normal((1, 300, 33), dtype=np.float32)
    np.testing.assert_allclose(C.gemm(a, b), C.gemm(a, b, naive=True), **tol(300))


@pytest.mark.parametrize("view", ["T_a", "T_b", "T_both", "slice", "neg", "fortran"])
def test_matmul_strided_views(view, rng):
    A = rng.standard_normal((120, 90), dtype=np.float32)
    B = rng.standard_normal((90, 70), dtype=np.float32)
    if view == "T_a":
        a, b = np.ascontiguousarray(A.T).T, B
    elif view == "T_b":
        a, b = A, np.ascontiguousarray(B.T).T
    elif view == "T_both":
        a, b = np.ascontiguousarray(A.T).T, np.ascontiguousarray(B.T).T
    elif view == "slice":
        a, b = rng.standard_normal((240, 270), dtype=np.float32)[::2, ::3], B
    elif view == "neg":
        a, b = A[::-1, ::-1], B[::-1]
    else:
        a, b = np.asfortranarray(A), np.asfortranarray(B)
    assert not (a.flags.c_contiguous and b.flags.c_contiguous)
    np.testing.assert_allclose(ops.matmul(a, b), product64(a, b), **tol(90))


@pytest.mark.parametrize("sa,sb", [((5,), (5,)), ((5,), (5, 3)), ((4, 5), (5,)), ((2, 3, 4, 5), (5, 6)),
                                   ((2, 1, 4, 5), (3, 5, 6)), ((4, 5), (2, 5, 6)), ((7, 5), (7, 5, 1))])
def test_matmul_torch_semantics(sa, sb, rng):
    a = rng.standard_normal(sa, dtype=np.float32)
    b = rng.standard_normal(sb, dtype=np.float32)
    got = ops.matmul(a, b)
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, **tol(5))


def test_matmul_matches_torch(rng):
    torch = pytest.importorskip("torch")
    a = rng.standard_normal((3, 33, 97), dtype=np.float32)
    b = rng.standard_normal((97, 7), dtype=np.float32)
    np.testing.assert_allclose(ops.matmul(a, b), torch.matmul(torch.from_numpy(a), torch.from_numpy(b)).numpy(), **tol(97))


def test_matmul_float64(rng):
    a = rng.standard_normal((33, 7))
    b = rng.standard_normal((7, 97))
    got = ops.matmul(a, b)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, product64(a, b), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lead", [(), (5,), (2, 3)])
def test_linear_and_backward(lead, rng):
    x = rng.standard_normal(lead + (13,), dtype=np.float32)
    w = rng.standard_normal((7, 13), dtype=np.float32)
    bias = rng.standard_normal(7, dtype=np.float32)
    y = ops.linear(x, w, bias)
    np.testing.assert_allclose(y, np.einsum("...k,nk->...n", x.astype(np.float64), w.astype(np.float64)) + bias,
                               **tol(13))
    g = rng.standard_normal(y.shape, dtype=np.float32)
    gx, gw, gb = ops.linear_backward(g, x, w)
    g2, x2 = g.reshape(-1, 7).astype(np.float64), x.reshape(-1, 13).astype(np.float64)
    np.testing.assert_allclose(gx, product64(g2, w).reshape(x.shape), **tol(7))
    np.testing.assert_allclose(gw, product64(g2.T, x2), **tol(x2.shape[0]))
    np.testing.assert_allclose(gb, g2.sum(0), rtol=1e-5, atol=1e-5)


def test_linear_backward_finite_differences(rng):
    x = rng.standard_normal((4, 5))
    w = rng.standard_normal((3, 5))
    b = rng.standard_normal(3)
    g = rng.standard_normal((4, 3))
    gx, gw, gb = ops.linear_backward(g, x, w)
    f = lambda x, w, b: float(np.sum(ops.linear(x, w, b) * g))  # noqa: E731
    eps = 1e-6
    for arr, grad in ((x, gx), (w, gw), (b, gb)):
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            fp = f(x, w, b)
            arr[idx] = old - eps
            fm = f(x, w, b)
            arr[idx] = old
            num[idx] = (fp - fm) / (2 * eps)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)


def test_matmul_backward(rng):
    a = rng.standard_normal((2, 4, 5))
    b = rng.standard_normal((5, 3))
    g = rng.standard_normal((2, 4, 3))
    ga, gb = ops.matmul_backward(g, a, b)
    np.testing.assert_allclose(ga, product64(g, b.T), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gb, np.einsum("bmk,bmn->kn", a, g), rtol=1e-12)


# ---------------------------------------------------------------- bad input
def test_bad_ndim():
    with pytest.raises(ValueError, match="matmul: a must be at least 1-D"):
        ops.matmul(np.float32(1.0), np.ones((1, 1), np.float32))


def test_bad_inner():
    with pytest.raises(ValueError, match=r"inner dimensions must match.*\(3, 4\).*\(5, 2\)"):
        ops.matmul(np.ones((3, 4), np.float32), np.ones((5, 2), np.float32))


def test_bad_batch():
    with pytest.raises(ValueError, match="batch dimensions must broadcast"):
        ops.matmul(np.ones((2, 3, 4), np.float32), np.ones((3, 4, 5), np.float32))


@pytest.mark.parametrize("dtype", [np.int32, np.float16, np.complex64, bool])
def test_bad_dtype(dtype):
    with pytest.raises(TypeError, match="matmul: a must have dtype float32 or float64. Received"):
        ops.matmul(np.ones((3, 3), dtype), np.ones((3, 3), np.float32))


def test_mixed_dtype():
    with pytest.raises(TypeError, match="same dtype.*a=float32, b=float64"):
        ops.matmul(np.ones((3, 3), np.float32), np.ones((3, 3), np.float64))


@pytest.mark.parametrize("shape_a,shape_b", [((0, 3), (3, 2)), ((3, 0), (0, 2)), ((3, 3), (3, 0))])
def test_empty(shape_a, shape_b):
    with pytest.raises(ValueError, match="must not be empty"):
        ops.matmul(np.ones(shape_a, np.float32), np.ones(shape_b, np.float32))


@pytest.mark.parametrize("val", [np.nan, np.inf, -np.inf])
def test_non_finite(val):
    a = np.ones((4, 4), np.float32)
    a[2, 1] = val
    with pytest.raises(ValueError, match=r"matmul: a must be finite.*index \(2, 1\)"):
        ops.matmul(a, np.ones((4, 4), np.float32))
    b = np.ones((8, 4), np.float32)[::2]
    b[3, 0] = val
    with pytest.raises(ValueError, match=r"matmul: b must be finite.*index \(3, 0\)"):
        ops.matmul(np.ones((4, 4), np.float32), b)


def test_linear_bad_shapes():
    with pytest.raises(ValueError, match="linear: weight must be 2-D"):
        ops.linear(np.ones((2, 3), np.float32), np.ones(3, np.float32))
    with pytest.raises(ValueError, match="x's last dimension must equal weight's in_features"):
        ops.linear(np.ones((2, 3), np.float32), np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"linear: bias must have shape \(4,\)"):
        ops.linear(np.ones((2, 5), np.float32), np.ones((4, 5), np.float32), np.ones(3, np.float32))


def test_not_an_array():
    with pytest.raises(TypeError, match="matmul: a must be"):
        ops.matmul(object(), np.ones((2, 2), np.float32))


def test_cpp_binding_rejects_bad_input():
    C = _backend.native()
    if C is None:
        pytest.skip("C++ backend not built")
    with pytest.raises(ValueError, match="matmul: a must have dtype float32. Received float64"):
        C.gemm(np.ones((1, 2, 2)), np.ones((1, 2, 2), np.float32))
    with pytest.raises(ValueError, match="matmul: b must be 3-D"):
        C.gemm(np.ones((1, 2, 2), np.float32), np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="inner dimensions must match"):
        C.gemm(np.ones((1, 2, 3), np.float32), np.ones((1, 2, 2), np.float32))


# Long reductions into a small output (the shape of weight gradients): awkward K, transposed A,
# bias, and the same bits for any thread count.
@pytest.mark.parametrize("M,K,N", [(1, 4096, 1), (7, 5000, 33), (97, 4097, 97), (28, 9001, 32), (3, 4100, 128)])
def test_matmul_long_k_small_output(M, K, N, rng):
    import pyaiml

    a = rng.standard_normal((K, M), dtype=np.float32).T      # transposed view, as in weight gradients
    b = rng.standard_normal((K, N), dtype=np.float32)
    bias = rng.standard_normal(N, dtype=np.float32)
    old = pyaiml.get_num_threads()
    try:
        outs = []
        for t in (1, 2, 3):
            pyaiml.set_num_threads(t)
            outs.append((ops.matmul(a, b), ops.linear(a, b.T, bias)))
    finally:
        pyaiml.set_num_threads(old)
    ref = product64(a, b)
    np.testing.assert_allclose(outs[0][0], ref, **tol(K))
    np.testing.assert_allclose(outs[0][1], ref + bias, **tol(K))
    for m, lin in outs[1:]:
        assert np.array_equal(m, outs[0][0]) and np.array_equal(lin, outs[0][1])


# The C++ kernel flags NaN/inf in its result (before bias and relu) instead of scanning the
# inputs first; every code path must raise the flag: A read in place or packed, B read in
# place (N 32/64) or packed, K split into blocks, rows split dynamically, columns split.
FLAG_SHAPES = [(28800, 27, 32), (6272, 288, 64), (97, 33, 1025), (1025, 600, 96), (5, 7, 3), (300, 70, 64)]


@pytest.mark.parametrize("M,K,N", FLAG_SHAPES)
@pytest.mark.parametrize("naive", [False, True])
def test_cpp_gemm_flags_non_finite(M, K, N, naive, rng):
    import pyaiml

    C = _backend.native()
    if C is None:
        pytest.skip("C++ backend not built")
    if naive and M * N * K > 5e6:
        pytest.skip("naive kernel: large shapes take too long")
    a = rng.standard_normal((1, M, K), dtype=np.float32)
    b = rng.standard_normal((1, K, N), dtype=np.float32)
    bias = rng.standard_normal(N, dtype=np.float32)
    old = pyaiml.get_num_threads()
    try:
        for t in (1, 2):
            pyaiml.set_num_threads(t)
            c, finite = C.gemm(a, b, bias, True, naive, True)
            assert finite
            np.testing.assert_allclose(c[0], np.maximum(a[0].astype(np.float64) @ b[0] + bias, 0), **tol(K))
            for val in (np.nan, np.inf, -np.inf):
                for which, idx in (("a", (0, M - 1, K // 2)), ("a", (0, M // 3, 0)), ("b", (0, K - 1, N - 1)), ("b", (0, 0, N // 2))):
                    x = a.copy() if which == "a" else b.copy()
                    x[idx] = val
                    # relu would turn a NaN into 0: the flag must come from before the epilogue
                    args = (x, b) if which == "a" else (a, x)
                    assert not C.gemm(*args, bias, True, naive, True)[1], (which, idx, val, t)
    finally:
        pyaiml.set_num_threads(old)


def test_overflow_with_finite_inputs_returns_inf():
    # The kernel's flag also goes up on overflow; the inputs are finite, so no error.
    big = np.full((40, 40), 1e30, np.float32)
    out = ops.matmul(big, big)
    assert np.isposinf(out).all()
    assert np.isposinf(ops.linear(big, big)).all()


@pytest.mark.parametrize("val", [np.nan, np.inf])
def test_non_finite_named_in_large_and_batched_inputs(val, rng):
    a0 = rng.standard_normal((3, 500, 27), dtype=np.float32)
    a = a0.copy()
    a[2, 499, 26] = val
    b = rng.standard_normal((27, 32), dtype=np.float32)
    with pytest.raises(ValueError, match=r"matmul: a must be finite.*index \(2, 499, 26\)"):
        ops.matmul(a, b)
    bb = rng.standard_normal((3, 27, 64), dtype=np.float32)
    bb[1, 5, 63] = val
    with pytest.raises(ValueError, match=r"matmul: b must be finite.*index \(1, 5, 63\)"):
        ops.matmul(a0, bb)
    w = rng.standard_normal((64, 27), dtype=np.float32)
    w[10, 3] = val
    with pytest.raises(ValueError, match=r"linear: weight must be finite.*index \(10, 3\)"):
        ops.linear(a0, w)


def test_cpp_gemm_output_is_64_byte_aligned(rng):
    C = _backend.native()
    if C is None:
        pytest.skip("C++ backend not built")
    for M, K, N in [(28800, 27, 32), (1, 1, 1), (7, 3, 5)]:
        c = C.gemm(rng.standard_normal((2, M, K), dtype=np.float32), rng.standard_normal((2, K, N), dtype=np.float32))
        assert c.ctypes.data % 64 == 0 and c.flags.c_contiguous and c.flags.writeable
        assert c.shape == (2, M, N)


# B read in place: row-major B whose rows are whole 32/64-float panels, including sliced views
# (row stride 64 with 32 columns) and rows handed out in shrinking blocks over the threads.
@pytest.mark.parametrize("M,K,N,cols", [(28800, 27, 32, 32), (6272, 288, 64, 64), (5000, 300, 64, 32), (1000, 5, 64, 64), (13, 40, 32, 32)])
def test_matmul_narrow_b_in_place(M, K, N, cols, rng):
    import pyaiml

    a = rng.standard_normal((M, K), dtype=np.float32)
    b = rng.standard_normal((K, N), dtype=np.float32)[:, :cols]
    ref = product64(a, b)
    old = pyaiml.get_num_threads()
    try:
        outs = []
        for t in (1, 2, 3):
            pyaiml.set_num_threads(t)
            outs.append(ops.matmul(a, b))
    finally:
        pyaiml.set_num_threads(old)
    np.testing.assert_allclose(outs[0], ref, **tol(K))
    for o in outs[1:]:
        assert np.array_equal(o, outs[0])


@pytest.mark.parametrize("N", [32, 64])
def test_matmul_narrow_b_negative_and_zero_row_stride(N, rng):
    a = rng.standard_normal((700, 40), dtype=np.float32)
    b = rng.standard_normal((40, N), dtype=np.float32)
    np.testing.assert_allclose(ops.matmul(a, b[::-1]), product64(a, b[::-1]), **tol(40))
    row = np.broadcast_to(b[:1], (40, N))  # row stride 0
    np.testing.assert_allclose(ops.matmul(a, row), product64(a, row), **tol(40))
