"""The decode-shaped products: float32 GEMV (``gemm`` with at most 8 rows against a weight whose
rows are contiguous, csrc/cpu/gemv.cpp), ``linear_q8`` (int8 weights with float16 scales per
32 rows, Q8_0), ``linear_q8_packed`` (the same weights in 64-column panels, pyaiml.llm's
in-memory layout) ``linear_w8a8_packed`` (those int8 panels against x quantized per row and block of 32, AVX-512
VNNI where the CPU has it) and ``linear_f32_packed`` (float32 weights in those panels: the streaming
kernel up to 8 rows, the GEMM reading the panels in place beyond) on every backend, against
NumPy float64.

Shapes are awkward on purpose: 1..8 rows (each register-blocking case), 9 and 40 rows (the
int8 GEMM that widens panels), column counts that are not multiples of the vector width or of
the 64-column unit (1, 15, 65, 129), K = 1, 31, 32, 300, row-strided x, a bias or none, a
column block whose scale is 0. Also: the same answers for 1 and 2 threads, under every ISA
this CPU runs (PYAIML_ISA, one interpreter each), NaN reported through ops.linear's checks,
and argument errors of ops.linear_q8.

Tolerance: |got - want| <= 2e-6 * sqrt(K) * max|want| + 1e-6 (float32 sums of K terms).
"""

import numpy as np
import pytest
from helpers import backends_for, run_py, run_under_isa

import pyaiml
from pyaiml import _backend, ops
from pyaiml.reference.gemm import linear_q8 as ref_q8

needs_cpp = pytest.mark.skipif(not _backend.cpp_available(), reason="needs pyaiml._C")


def _close(got, want, K):
    tol = 2e-6 * np.sqrt(max(K, 1)) * max(np.abs(want).max(), 1.0) + 1e-6
    err = np.abs(got.astype(np.float64) - want).max() if want.size else 0.0
    assert err <= tol, (err, tol)


def _q8(rng, K, N):
    w = rng.standard_normal((K, N)).astype(np.float32) * rng.uniform(0.1, 2, (1, N)).astype(np.float32)
    d = (np.abs(w.reshape(K // 32, 32, N)).max(axis=1) / 127).astype(np.float16)
    d32 = d.astype(np.float32)
    inv = np.divide(1.0, d32, out=np.zeros_like(d32), where=d32 > 0)
    q = np.clip(np.rint(w.reshape(K // 32, 32, N) * inv[:, None]), -127, 127).astype(np.int8).reshape(K, N)
    return q, d


SHAPES = [(M, K, N) for M in (1, 2, 3, 4, 5, 7, 8) for K, N in ((32, 15), (64, 129), (96, 65))] + \
         [(1, 300, 1), (2, 31, 64), (8, 1, 33), (1, 512, 1000), (6, 256, 300)]


@pytest.mark.parametrize("backend", backends_for("gemm"))
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_gemv_f32(backend, M, K, N, rng):
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((K, N)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    want = x.astype(np.float64) @ w + b
    got = _backend.resolve("gemm", backend)(x[None], w[None], b)[0]
    _close(got, want, K)
    # rows of x with a stride (a slice of a wider activation), no bias
    xs = rng.standard_normal((M, K + 7)).astype(np.float32)[:, 3:K + 3]
    _close(_backend.resolve("gemm", backend)(xs[None], w[None])[0], xs.astype(np.float64) @ w, K)


@pytest.mark.parametrize("backend", backends_for("linear_q8"))
@pytest.mark.parametrize("M,K,N", [s for s in SHAPES if s[1] % 32 == 0] + [(9, 64, 70), (40, 320, 129)])
def test_linear_q8(backend, M, K, N, rng):
    q, s = _q8(rng, K, N)
    s[0, N // 2] = 0  # a block whose weights are all zero
    x = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    f = _backend.resolve("linear_q8", backend)
    _close(f(x, q, s, b), ref_q8(x, q, s, b), K)
    _close(f(x, q, s), ref_q8(x, q, s), K)


@pytest.mark.parametrize("backend", backends_for("linear_q8_packed"))
@pytest.mark.parametrize("M,K,N", [s for s in SHAPES if s[1] % 32 == 0] + [(9, 64, 70), (40, 320, 129), (3, 64, 64)])
def test_linear_q8_packed(backend, M, K, N, rng):
    """The panel layout of pyaiml.llm's int8 layers (64 columns per panel, the last padded)
    gives linear_q8's answers; pack/unpack round-trips."""
    from pyaiml.llm.quant import pack_q8, unpack_q8

    q, s = _q8(rng, K, N)
    s[0, N // 2] = 0
    qp, sp = pack_q8(q, s)
    assert qp.shape == (-(-N // 64), K, 64) and sp.shape == (-(-N // 64), K // 32, 64)
    uq, us = unpack_q8(qp, sp, N)
    np.testing.assert_array_equal(uq, q)
    np.testing.assert_array_equal(us, s)
    x = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    f = _backend.resolve("linear_q8_packed", backend)
    _close(f(x, qp, sp, N, b), ref_q8(x, q, s, b), K)
    _close(f(x, qp, sp, N), ref_q8(x, q, s), K)


@pytest.mark.parametrize("backend", backends_for("linear_f32_packed"))
@pytest.mark.parametrize("M,K,N", SHAPES + [(9, 64, 70), (40, 320, 129), (3, 64, 64), (130, 300, 200),
                                            (16, 700, 129), (20, 33, 10)])
def test_linear_f32_packed(backend, M, K, N, rng):
    """pyaiml.llm's float32 layers: weights in panels of 64 columns (the last padded with
    zeros), any number of rows, row-strided x, a bias or none."""
    from pyaiml.llm.layers import from_panels, to_panels

    w = rng.standard_normal((K, N)).astype(np.float32)
    wp = to_panels(w)
    assert wp.shape == (-(-N // 64), K, 64) and not wp[-1, :, N - 64 * (wp.shape[0] - 1):].any()
    np.testing.assert_array_equal(from_panels(wp, N), w)
    x = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    f = _backend.resolve("linear_f32_packed", backend)
    _close(f(x, wp, N, b), x.astype(np.float64) @ w + b, K)
    xs = rng.standard_normal((M, K + 5)).astype(np.float32)[:, 2:K + 2]
    _close(f(xs, wp, N), xs.astype(np.float64) @ w, K)


@needs_cpp
@pytest.mark.parametrize("K", [1, 31, 300, 768, 1536])
def test_linear_f32_packed_same_bits_as_gemm(K, rng):
    """The panels give the (K, N) layout's bits, streaming kernel and GEMM alike, for every row
    count and thread count: a model's logits do not change with its weight layout, its batch
    or the pool."""
    from pyaiml.llm.layers import to_panels

    N = 203
    x = rng.standard_normal((20, K)).astype(np.float32)
    w = rng.standard_normal((K, N)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    wp = to_panels(w)
    gemm = _backend.resolve("gemm", "cpp")
    packed = _backend.resolve("linear_f32_packed", "cpp")
    n0 = pyaiml.get_num_threads()
    try:
        for t in (1, 2):
            pyaiml.set_num_threads(t)
            for m in (1, 2, 5, 7, 8, 9, 20):
                np.testing.assert_array_equal(packed(x[:m], wp, N, b), gemm(x[None, :m], w[None], b)[0])
    finally:
        pyaiml.set_num_threads(n0)


@needs_cpp
def test_linear_f32_packed_errors(rng):
    from pyaiml.llm.layers import to_panels

    C = _backend.native()
    wp = to_panels(rng.standard_normal((64, 70)).astype(np.float32))
    x = rng.standard_normal((2, 64)).astype(np.float32)
    with pytest.raises(ValueError, match="n must lie in the last panel"):
        C.linear_f32_packed(x, wp, 130)
    with pytest.raises(ValueError, match="n must lie in the last panel"):
        C.linear_f32_packed(x, wp, 64)
    with pytest.raises(ValueError, match=r"w must be packed \(panels, in, 64\)"):
        C.linear_f32_packed(np.ones((2, 32), np.float32), wp, 70)
    with pytest.raises(ValueError, match="w must be C-contiguous"):
        C.linear_f32_packed(x, wp[:, ::2], 70)
    with pytest.raises(ValueError, match="w must have dtype float32"):
        C.linear_f32_packed(x, wp.astype(np.float64), 70)
    with pytest.raises(ValueError, match="bias"):
        C.linear_f32_packed(x, wp, 70, np.ones(64, np.float32))


@pytest.mark.parametrize("backend", backends_for("linear_w8a8_packed"))
@pytest.mark.parametrize("M,K,N", [s for s in SHAPES if s[1] % 32 == 0] + [(9, 64, 70), (40, 320, 129), (3, 64, 64),
                                                                           (130, 96, 65)])
def test_linear_w8a8_packed(backend, M, K, N, rng):
    """pyaiml.llm's int8 layers: x quantized per row and 32-block (quantize_rows_q8), the block
    sums exact, against NumPy in float64; a block of x all zero (its scale 0) and a column
    block whose weight scale is 0; and close to the float-activation product."""
    from pyaiml.llm.quant import pack_q8
    from pyaiml.reference.gemm import linear_w8a8_packed as ref

    q, s = _q8(rng, K, N)
    s[0, N // 2] = 0
    qp, sp = pack_q8(q, s)
    x = rng.standard_normal((M, K)).astype(np.float32)
    x[0, :32] = 0
    b = rng.standard_normal(N).astype(np.float32)
    f = _backend.resolve("linear_w8a8_packed", backend)
    got = f(x, qp, sp, N, b)
    _close(got, ref(x, qp, sp, N, b).astype(np.float64), K)
    _close(f(x, qp, sp, N), ref(x, qp, sp, N).astype(np.float64), K)
    # activation quantization: within a few per mille of the float-activation product
    want = ref_q8(x, q, s, b).astype(np.float64)
    assert np.abs(got - want).max() <= 0.02 * np.abs(want).max() + 1e-3


def test_quantize_rows_q8_matches_the_kernel_rounding():
    """xs = amax / 127, xq = rint(x * (127 / amax)) (halves to even), clipped, zero blocks zero."""
    from pyaiml.reference.gemm import quantize_rows_q8

    x = np.zeros((2, 64), np.float32)
    x[0, :32] = np.linspace(-2, 2, 32, dtype=np.float32)
    x[0, 5] = 0.5 * 2 / 127  # exactly half a step: rounds to even (0)
    xq, xs = quantize_rows_q8(x)
    assert xs[0, 0] == np.float32(2) / np.float32(127) and xs[0, 1] == 0 and xs[1].tolist() == [0, 0]
    assert xq[0, 0, 0] == -127 and xq[0, 0, 31] == 127 and xq[0, 0, 5] == 0 and not xq[0, 1].any()


@pytest.mark.parametrize("backend", backends_for("linear_w8a8_packed"))
def test_w8a8_nonfinite_input_gives_nan(backend, rng):
    """A NaN or inf in x makes its row's outputs NaN (never a finite number from a clamped
    quantization); the other rows are untouched."""
    from pyaiml.llm.quant import pack_q8

    q, s = _q8(rng, 64, 70)
    qp, sp = pack_q8(q, s)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    x[0, 40] = np.nan
    x[2, 3] = np.inf
    f = _backend.resolve("linear_w8a8_packed", backend)
    y = f(x, qp, sp, 70)
    assert np.isnan(y[0]).all() and np.isnan(y[2]).all() and np.isfinite(y[1]).all()
    np.testing.assert_array_equal(y[1], f(x[1:2], qp, sp, 70)[0])


@needs_cpp
def test_w8a8_same_bits_on_every_path(rng, tmp_path):
    """AVX-512 VNNI, AVX-512 without it (PYAIML_HIDE_VNNI=1) and AVX2 give the same bits (the
    block sums are exact integers either way), for every row count; a row's result does not
    depend on how many rows share the call."""
    from pyaiml.llm.quant import pack_q8

    K, N = 320, 203
    q, s = _q8(rng, K, N)
    qp, sp = pack_q8(q, s)
    x = rng.standard_normal((20, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x, qp=qp, sp=sp, b=b)
    code = ("import numpy as np\n"
            "from pyaiml import _C\n"
            f"d = np.load({str(tmp_path / 'in.npz')!r})\n"
            "ys = [_C.linear_w8a8_packed(d['x'][:m], d['qp'], d['sp'], 203, d['b']) for m in (1, 3, 4, 5, 8, 9, 20)]\n"
            "for y in ys:\n"
            "    assert np.array_equal(y, ys[-1][:len(y)])\n"
            "np.save(OUT, ys[-1])\n"
            "print(_C.isa(), _C.int8_dot())\n")
    C = _backend.native()
    paths = []
    for name, env in (("vnni", {}), ("novnni", {"PYAIML_HIDE_VNNI": "1"}), ("avx2", {"PYAIML_ISA": "avx2"})):
        if name == "vnni" and C.int8_dot() != "avx512_vnni":
            continue
        if name == "avx2" and "avx2" not in C.supported_isas():
            continue
        out = tmp_path / f"{name}.npy"
        r = run_py(f"OUT = {str(out)!r}\n" + code, PYAIML_BACKEND="cpp", **env)
        assert r.returncode == 0, r.stderr[-2000:]
        want = {"vnni": "avx512 avx512_vnni", "novnni": "avx512 float32", "avx2": "avx2 float32"}[name]
        if name != "novnni" or "avx512" in C.supported_isas():
            assert want in r.stdout, (name, r.stdout)
        paths.append(out)
    ys = [np.load(p) for p in paths]
    for y in ys[1:]:
        np.testing.assert_array_equal(y, ys[0])


def test_pack_q8_errors():
    from pyaiml.llm.quant import pack_q8

    with pytest.raises(ValueError, match="q must be a 2-D int8 array"):
        pack_q8(np.zeros(64, np.int8), np.zeros(2, np.float16))
    with pytest.raises(ValueError, match="multiple of 32"):
        pack_q8(np.zeros((63, 10), np.int8), np.zeros((2, 10), np.float16))
    with pytest.raises(ValueError, match=r"scale must have shape \(in/32, out\) = \(2, 10\)"):
        pack_q8(np.zeros((64, 10), np.int8), np.zeros((3, 10), np.float16))


@needs_cpp
@pytest.mark.parametrize("op", ["linear_q8_packed", "linear_w8a8_packed"])
def test_linear_q8_packed_errors(op, rng):
    from pyaiml.llm.quant import pack_q8

    f = getattr(_backend.native(), op)
    q, s = _q8(rng, 64, 70)
    qp, sp = pack_q8(q, s)
    x = rng.standard_normal((2, 64)).astype(np.float32)
    with pytest.raises(ValueError, match=f"{op}: n must lie in the last panel"):
        f(x, qp, sp, 130)
    with pytest.raises(ValueError, match="n must lie in the last panel"):
        f(x, qp, sp, 64)
    with pytest.raises(ValueError, match="q must be packed"):
        f(np.ones((2, 32), np.float32), qp, sp, 70)
    with pytest.raises(ValueError, match="scale must have shape"):
        f(x, qp, np.ascontiguousarray(sp[:, :1]), 70)
    with pytest.raises(ValueError, match="scale must be C-contiguous"):
        f(x, qp, sp[:, :1], 70)
    with pytest.raises(ValueError, match="bias"):
        f(x, qp, sp, 70, np.ones(64, np.float32))
    with pytest.raises(ValueError, match="multiple of 32"):
        f(np.ones((2, 40), np.float32), qp, sp, 70)


def test_linear_q8_public_op(rng):
    q, s = _q8(rng, 64, 40)
    x = rng.standard_normal((2, 3, 64)).astype(np.float32)
    got = ops.linear_q8(x, q, s)
    assert got.shape == (2, 3, 40) and got.dtype == np.float32
    _close(got.reshape(6, 40), ref_q8(x.reshape(6, 64), q, s), 64)
    # equals ops.linear on the dequantized weight
    w = (q.reshape(2, 32, 40).astype(np.float32) * s.astype(np.float32)[:, None]).reshape(64, 40)
    _close(got, ops.linear(x, np.ascontiguousarray(w.T)).astype(np.float64), 64)


@needs_cpp
def test_thread_count_independent(rng):
    """The columns are split over the pool; each column's sum is one thread's, in one order."""
    from pyaiml.llm.quant import pack_q8

    x = rng.standard_normal((3, 256)).astype(np.float32)
    w = rng.standard_normal((256, 1000)).astype(np.float32)
    q, s = _q8(rng, 256, 1000)
    n0 = pyaiml.get_num_threads()
    try:
        out = []
        for t in (1, 2):
            pyaiml.set_num_threads(t)
            out.append((_backend.resolve("gemm", "cpp")(x[None], w[None])[0], ops.linear_q8(x, q, s),
                        _backend.resolve("linear_q8_packed", "cpp")(x, *pack_q8(q, s), 1000)))
        for a, b in zip(out[0], out[1]):
            np.testing.assert_array_equal(a, b)
    finally:
        pyaiml.set_num_threads(n0)


@needs_cpp
def test_nan_is_reported(rng):
    w = rng.standard_normal((64, 10)).astype(np.float32)
    x = np.ones((1, 64), np.float32)
    x[0, 5] = np.nan
    with pytest.raises(ValueError, match="x"):
        ops.linear(x, np.ascontiguousarray(w.T).T)  # weight (out, in) as a view of w: the GEMV path
    xs = np.ones((20, 64), np.float32)
    xs[13, 7] = np.inf
    with pytest.raises(ValueError, match="x"):
        ops.linear(xs, np.ascontiguousarray(w.T).T)  # 20 rows, 10 columns: the GEMM's narrow path
    q, s = _q8(rng, 64, 10)
    with pytest.raises(ValueError, match="x"):
        ops.linear_q8(x, q, s)


def test_linear_q8_errors(rng):
    q, s = _q8(rng, 64, 8)
    x = np.ones((2, 64), np.float32)
    with pytest.raises(TypeError, match="x must be float32"):
        ops.linear_q8(x.astype(np.float64), q, s)
    with pytest.raises(TypeError, match="q must be a 2-D int8"):
        ops.linear_q8(x, q.astype(np.int16), s)
    with pytest.raises(TypeError, match="scale must be a 2-D float16"):
        ops.linear_q8(x, q, s.astype(np.float32))
    with pytest.raises(ValueError, match="last dimension"):
        ops.linear_q8(np.ones((2, 63), np.float32), q, s)
    with pytest.raises(ValueError, match="multiple of 32"):
        ops.linear_q8(np.ones((2, 48), np.float32), np.zeros((48, 8), np.int8), np.zeros((1, 8), np.float16))
    with pytest.raises(ValueError, match="bias must be float32 of shape"):
        ops.linear_q8(x, q, s, np.ones(9, np.float32))
    with pytest.raises(ValueError, match="empty"):
        ops.linear_q8(np.ones((0, 64), np.float32), q, s)
    bad = s.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="scale must be finite"):
        ops.linear_q8(x, q, bad)


@needs_cpp
@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_every_isa(isa):
    """The float32 and int8 kernels under PYAIML_ISA (one interpreter per ISA)."""
    run_under_isa(isa, "import numpy as np\n"
                       "import test_gemv as t\n"
                       "rng = np.random.default_rng(0)\n"
                       "for M, K, N in t.SHAPES + [(9, 64, 70), (40, 320, 129)]:\n"
                       "    if M <= 8:\n"
                       "        t.test_gemv_f32('cpp', M, K, N, rng)\n"
                       "    if K % 32 == 0:\n"
                       "        t.test_linear_q8('cpp', M, K, N, rng)\n"
                       "        t.test_linear_q8_packed('cpp', M, K, N, rng)\n"
                       "        t.test_linear_w8a8_packed('cpp', M, K, N, rng)\n"
                       "    t.test_linear_f32_packed('cpp', M, K, N, rng)\n"
                       "for K in (31, 300, 768, 4000):\n"
                       "    t.test_rows_do_not_depend_on_the_batch(K, rng)\n"
                       "    t.test_linear_f32_packed_same_bits_as_gemm(K, rng)\n"
                       "for K, N in ((40, 100), (300, 64), (300, 100)):\n"
                       "    t.test_partial_row_tiles(K, N, rng)\n")


@needs_cpp
@pytest.mark.parametrize("K", [1, 31, 96, 300, 544, 768, 2048, 2304, 4000])
def test_rows_do_not_depend_on_the_batch(K, rng):
    """A row's result is bit for bit the same whether it goes through the streaming kernel
    (up to 8 rows) or the GEMM (more rows), for float32 and int8: a sequence's logits do not
    depend on how many others it is decoded with. N = 203 leaves a tail of columns under one
    vector on every ISA (16, 8, 4 lanes): the masked float32 tail and the int8 single columns."""
    N = 203
    x = rng.standard_normal((20, K)).astype(np.float32)
    w = rng.standard_normal((K, N)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    gemm = _backend.resolve("gemm", "cpp")
    big = gemm(x[None], w[None], b)[0]
    for m in (1, 3, 8):
        np.testing.assert_array_equal(gemm(x[None, :m], w[None], b)[0], big[:m])
    # at most one vector of columns (a classifier head): the GEMM's narrow path, 8 rows at a
    # time, against the streaming kernel (one row: its K blocks' chains interleaved, 12 at a
    # time, so K = 4000's 16 blocks take two groups); and column slices of a wider product
    for n in (10, 3, 16):
        wn = np.ascontiguousarray(w[:, :n])
        bign = gemm(x[None], wn[None], b[:n])[0]
        np.testing.assert_array_equal(bign, big[:, :n])
        for m in (1, 5, 8, 9, 13):
            np.testing.assert_array_equal(gemm(x[None, :m], wn[None], b[:n])[0], bign[:m])
    if K % 32 == 0:
        q, s = _q8(rng, K, N)
        big = ops.linear_q8(x, q, s, b)
        for m in (1, 5, 8):
            np.testing.assert_array_equal(ops.linear_q8(x[:m], q, s, b), big[:m])
        from pyaiml.llm.quant import pack_q8

        qp, sp = pack_q8(q, s)
        packed = _backend.resolve("linear_q8_packed", "cpp")
        big = packed(x, qp, sp, N, b)
        for m in (1, 2, 3, 5, 8, 9):
            np.testing.assert_array_equal(packed(x[:m], qp, sp, N, b), big[:m])


@needs_cpp
@pytest.mark.parametrize("K,N", [(40, 100), (300, 64), (300, 100), (600, 200)])
def test_partial_row_tiles(K, N, rng):
    """Every row count past the GEMM's whole register tiles (14 rows on AVX-512, 6 on AVX2 and
    baseline), on its paths: A read in place (K <= 64, or N <= 64), packed (the rest), K in
    more than one block (600). The rows of a short tile come from their own kernel; each must be
    bit for bit the row of a taller product (the same chain of multiply-adds), with the bias
    and ReLU epilogue, and near the float64 product."""
    x = rng.standard_normal((45, K)).astype(np.float32)
    w = rng.standard_normal((K, N)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    gemm = _backend.resolve("gemm", "cpp")
    want = x.astype(np.float64) @ w.astype(np.float64)
    big = gemm(x[None], w[None], b)[0]
    big_relu = gemm(x[None], w[None], b, relu=True)[0]
    _close(big, want + b, K)
    np.testing.assert_array_equal(big_relu, np.maximum(big, 0))
    for m in range(9, 45):  # above 8 rows: the GEMM, not the streaming kernel
        np.testing.assert_array_equal(gemm(x[None, :m], w[None], b)[0], big[:m], err_msg=f"rows {m}")
        np.testing.assert_array_equal(gemm(x[None, 45 - m:], w[None], b)[0], big[45 - m:], err_msg=f"last {m}")
    np.testing.assert_array_equal(gemm(x[None, :30], w[None], b, relu=True)[0], big_relu[:30])
