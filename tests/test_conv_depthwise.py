"""Depthwise conv2d (groups == C, OC = m * C) and the 1x1 channels-last path: pyaiml.ops.conv2d
and conv2d_backward against torch.nn.functional.conv2d with float64 autograd, both data
formats, float32 (C++ csrc/cpu/conv_depthwise.cpp, and the Numba fallback's _dw_* kernels)
and float64 (NumPy reference), on awkward channel counts (1, 3, 7, 33), kernels 1/3/5/7,
stride 1/2, dilation 1/2, symmetric, asymmetric and "same" padding, batch 1 and 3; the C++
kernels against their _naive oracle and under every ISA this CPU runs (PYAIML_ISA, one
interpreter each); thread-count independence.

Tolerance: the rule of tests/test_conv.py (_close): |got - want| <= 3e-5 * sqrt(n_terms) *
max|want| + 1e-5, n_terms the longest sum (KH*KW for y, m*KH*KW for grad_x, N*OH*OW for
grad_w/grad_b). float64 results are held to 1e-9 of that scale (they are float64 sums).
"""

import re

import numpy as np
import pytest
from helpers import backends_for, optional_torch, run_under_isa, same_at_thread_counts
from test_conv import _close

import pyaiml
from pyaiml import _backend, ops

torch = optional_torch()
needs_torch = pytest.mark.skipif(torch is None, reason="torch is the oracle here")
needs_cpp = pytest.mark.skipif(not _backend.cpp_available(), reason="needs pyaiml._C")

# (N, C, m, H, W, k, stride, padding, dilation)
CASES = [
    (1, 3, 1, 9, 11, 3, 1, 1, 1),
    (3, 7, 1, 13, 12, 3, 2, 1, 1),
    (3, 33, 1, 10, 9, 5, 1, 2, 1),
    (1, 33, 1, 17, 19, 5, 2, 2, 1),
    (3, 3, 2, 12, 14, 3, 1, "same", 2),
    (1, 7, 3, 15, 8, 7, 1, 3, 1),
    (3, 16, 1, 8, 8, 7, 2, (3, 1), 1),
    (1, 33, 1, 6, 37, 1, 1, 0, 1),
    (3, 7, 1, 9, 10, 1, 2, 0, 1),
    (1, 3, 1, 5, 6, 3, 1, 0, 2),
    (3, 24, 1, 11, 13, 3, 2, (0, 2), (2, 1)),
    (1, 2, 4, 4, 3, 3, 1, 4, 1),          # padding larger than the input, OC = 4 C
    (3, 40, 1, 7, 7, 5, 1, "same", 1),
    # channels last, kernel width 3/5/7, stride 1/2, output width >= 7 (k3: <= 14): the sliding
    # rows (7 or 8 pixels a block, the last block overlapping), vector, vector pair and masked
    # channel tails, rows with no kernel row inside the input (padding 5 > k - 1)
    (2, 17, 1, 9, 14, 3, 1, 1, 1),
    (1, 48, 1, 6, 23, 5, 2, 2, 1),
    (2, 5, 2, 11, 16, 7, 1, 3, 1),
    (1, 16, 1, 3, 9, 5, 1, (5, 2), 1),
    (2, 33, 1, 8, 27, 3, 2, 1, 1),
    # channels first with output rows of at least 16 (the channels-first kernels; narrower rows
    # run the channels-last ones on transposed copies)
    (2, 9, 1, 7, 40, 3, 1, 1, 1),
    (1, 5, 1, 9, 35, 5, 2, 2, 1),
]
IDS = [f"N{c[0]}C{c[1]}m{c[2]}_{c[3]}x{c[4]}_k{c[5]}s{c[6]}p{c[7]}d{c[8]}".replace(" ", "") for c in CASES]
# grouped (1 < G < C) and 1x1 channels-last shapes, run through the same checks
# (N, C, OC, H, W, k, stride, padding, dilation, groups)
OTHER = [
    (3, 8, 12, 7, 9, 3, 1, 1, 1, 4),
    (1, 6, 6, 8, 8, 3, 2, 1, 1, 2),
    (3, 33, 7, 9, 10, 1, 1, 0, 1, 1),
    (1, 24, 144, 5, 7, 1, 1, 0, 1, 1),
    (3, 96, 24, 6, 5, 1, 1, 0, 1, 1),
    # small groups, Cg == OCg in {2, 4, 8}, C a multiple of 16: channels-last direct forward
    (3, 32, 32, 7, 9, 3, 1, 1, 1, 8),
    (2, 16, 16, 6, 5, 3, 2, 1, 1, 8),
    (1, 64, 64, 7, 6, 3, 1, (2, 1), 2, 8),
    (2, 48, 48, 5, 7, 5, 1, 2, 1, 24),
    (1, 16, 16, 4, 4, 3, 1, 0, 1, 4),
]


def _torch64(x, w, b, gy, s, p, d, G):
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tw = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.conv2d(tx, tw, tb, stride=s, padding=p, dilation=d, groups=G)
    gx, gw, gb = torch.autograd.grad(y, (tx, tw, tb), torch.tensor(gy, dtype=torch.float64))
    return y.detach().numpy(), gx.numpy(), gw.numpy(), gb.numpy()


def _run(N, C, OC, H, W, k, s, p, d, G, cl, dtype, seed):
    r = np.random.default_rng(seed)
    x = r.standard_normal((N, C, H, W))
    w = r.standard_normal((OC, C // G, k, k))
    b = r.standard_normal(OC)
    with torch.no_grad():
        oshape = tuple(torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), stride=s, padding=p,
                                                  dilation=d, groups=G).shape)
    gy = r.standard_normal(oshape)
    want = _torch64(x, w, b, gy, s, p, d, G)
    fmt = "NHWC" if cl else "NCHW"
    xi = x.transpose(0, 2, 3, 1) if cl else x
    gyi = gy.transpose(0, 2, 3, 1) if cl else gy
    xi, gyi, wi, bi = (np.ascontiguousarray(a, dtype=dtype) for a in (xi, gyi, w, b))
    y = ops.conv2d(xi, wi, bi, stride=s, padding=p, dilation=d, groups=G, data_format=fmt)
    gx, gw, gb = ops.conv2d_backward(gyi, xi, wi, stride=s, padding=p, dilation=d, groups=G, data_format=fmt)
    assert y.dtype == dtype and gx.dtype == dtype and gw.dtype == dtype and gb.dtype == dtype
    if cl:
        y, gx = y.transpose(0, 3, 1, 2), gx.transpose(0, 3, 1, 2)
    scale = 1e-9 if dtype == np.float64 else 1.0
    terms = {"y": C // G * k * k, "grad_x": OC // G * k * k, "grad_w": N * oshape[2] * oshape[3]}
    terms["grad_b"] = terms["grad_w"]
    for name, got, ref in zip(("y", "grad_x", "grad_w", "grad_b"), (y, gx, gw, gb), want):
        got = np.asarray(got, np.float64)
        assert got.shape == ref.shape, f"{name}: shape {got.shape} != {ref.shape}"
        err = np.abs(got - ref).max()
        tol = scale * (3e-5 * np.sqrt(terms[name]) * max(1.0, float(np.abs(ref).max())) + 1e-5)
        assert err <= tol, f"{name}: max error {err:.3g} > {tol:.3g}"


def _backends():
    return [b for b in backends_for("conv2d") if b != "numpy"]


@needs_torch
@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("cl", [False, True], ids=["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_depthwise_matches_torch(case, cl, backend, monkeypatch):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    N, C, m, H, W, k, s, p, d = case
    _run(N, C, m * C, H, W, k, s, p, d, C, cl, np.float32, sum(map(ord, str(case))))


@needs_torch
@pytest.mark.parametrize("cl", [False, True], ids=["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES[:5], ids=IDS[:5])
def test_depthwise_float64_matches_torch(case, cl):
    N, C, m, H, W, k, s, p, d = case
    _run(N, C, m * C, H, W, k, s, p, d, C, cl, np.float64, 7)


@needs_torch
@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("cl", [False, True], ids=["NCHW", "NHWC"])
@pytest.mark.parametrize("case", OTHER)
def test_grouped_and_pointwise_match_torch(case, cl, backend, monkeypatch):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    _run(*case, cl, np.float32, 11)


def _raw(case, cl, seed=3):
    """A depthwise case as _C arguments: x, w, b, gy, p (sh, sw, pt, pb, pl, pr, dh, dw, G)."""
    N, C, m, H, W, k, s, p, d = case
    s2, d2 = (s, s) if isinstance(s, int) else s, (d, d) if isinstance(d, int) else d
    if p == "same":
        e = [d2[i] * (k - 1) for i in range(2)]
        pads = [(e[i] // 2, e[i] - e[i] // 2) for i in range(2)]
    else:
        pp = (p, p) if isinstance(p, int) else p
        pads = [(pp[0], pp[0]), (pp[1], pp[1])]
    OH = (H + sum(pads[0]) - d2[0] * (k - 1) - 1) // s2[0] + 1
    OW = (W + sum(pads[1]) - d2[1] * (k - 1) - 1) // s2[1] + 1
    r = np.random.default_rng(seed)
    OC = m * C
    x = r.standard_normal((N, H, W, C) if cl else (N, C, H, W), dtype=np.float32)
    w = r.standard_normal((OC, 1, k, k), dtype=np.float32)
    b = r.standard_normal(OC, dtype=np.float32)
    gy = r.standard_normal((N, OH, OW, OC) if cl else (N, OC, OH, OW), dtype=np.float32)
    prm = (s2[0], s2[1], pads[0][0], pads[0][1], pads[1][0], pads[1][1], d2[0], d2[1], C)
    return x, w, b, gy, prm, {"y": k * k, "grad_x": m * k * k, "grad_w": N * OH * OW, "grad_b": N * OH * OW}


def check_naive(case, cl):
    """The C++ depthwise kernels against the _naive ones (loops in double); raises AssertionError."""
    C_ = _backend.native()
    x, w, b, gy, p, terms = _raw(case, cl)
    for relu in (False, True):
        _close(f"y relu={relu}", C_.conv2d(x, w, b, p, cl, relu, False),
               C_.conv2d(x, w, b, p, cl, relu, True).astype(np.float64), terms["y"])
    want = C_.conv2d_backward(gy, x, w, p, cl, True, True)
    got = C_.conv2d_backward(gy, x, w, p, cl, True, False)
    for what, g, r in zip(("grad_x", "grad_w", "grad_b"), got, want):
        _close(what, g, r.astype(np.float64), terms[what])
    for mask in [(True, False, False), (False, True, False), (False, False, True)]:
        got = C_.conv2d_backward(gy, x, w, p, cl, mask[2], False, mask[0], mask[1])
        for what, on, g, r in zip(("grad_x", "grad_w", "grad_b"), mask, got, want):
            if on:
                _close(f"{what} alone", g, r.astype(np.float64), terms[what])
            else:
                assert g is None


@needs_cpp
@pytest.mark.parametrize("cl", [False, True], ids=["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cpp_matches_naive(case, cl):
    check_naive(case, cl)


@needs_cpp
@pytest.mark.parametrize("case", OTHER)
def test_grouped_and_pointwise_match_naive(case):
    """Channels last (the small-group forward and the 1x1 pointwise kernel) against _naive."""
    C_ = _backend.native()
    N, C, OC, H, W, k, s, p, d, G = case
    p2 = (p, p) if isinstance(p, int) else p
    r = np.random.default_rng(2)
    x = r.standard_normal((N, H, W, C), dtype=np.float32)
    w = r.standard_normal((OC, C // G, k, k), dtype=np.float32)
    b = r.standard_normal(OC, dtype=np.float32)
    prm = (s, s, p2[0], p2[0], p2[1], p2[1], d, d, G)
    for relu in (False, True):
        _close(f"y relu={relu}", C_.conv2d(x, w, b, prm, True, relu, False),
               C_.conv2d(x, w, b, prm, True, relu, True).astype(np.float64), C // G * k * k)
    y = C_.conv2d(x, w, b, prm, True, False, False)
    gy = r.standard_normal(y.shape, dtype=np.float32)
    want = C_.conv2d_backward(gy, x, w, prm, True, True, True)
    got = C_.conv2d_backward(gy, x, w, prm, True, True, False)
    terms = (OC // G * k * k, N * y.shape[1] * y.shape[2], N * y.shape[1] * y.shape[2])
    for what, g, ref, n in zip(("grad_x", "grad_w", "grad_b"), got, want, terms):
        _close(what, g, ref.astype(np.float64), n)


@needs_cpp
@pytest.mark.parametrize("cl", [False, True], ids=["NCHW", "NHWC"])
@pytest.mark.parametrize("case", [CASES[1], CASES[4], (4, 96, 1, 12, 12, 3, 1, 1, 1)])
def test_results_do_not_depend_on_thread_count(case, cl):
    C_ = _backend.native()
    x, w, b, gy, p, _ = _raw(case, cl)
    same_at_thread_counts(lambda: (C_.conv2d(x, w, b, p, cl, True, False),)
                          + tuple(C_.conv2d_backward(gy, x, w, p, cl, True)))


@needs_cpp
def test_small_groups_do_not_depend_on_thread_count():
    C_ = _backend.native()
    r = np.random.default_rng(4)
    x = r.standard_normal((5, 9, 11, 32), dtype=np.float32)
    w = r.standard_normal((32, 4, 3, 3), dtype=np.float32)
    b = r.standard_normal(32, dtype=np.float32)
    p = (1, 1, 1, 1, 1, 1, 1, 1, 8)
    gy = r.standard_normal((5, 9, 11, 32), dtype=np.float32)
    same_at_thread_counts(lambda: (C_.conv2d(x, w, b, p, True, False, False),)
                          + tuple(C_.conv2d_backward(gy, x, w, p, True, True)))


# Channels-last forwards whose input and output together pass 32 MB (conv_common.h
# kStreamBytes): y goes out through non-temporal stores. (N, C, H, W, k, stride, padding):
# the 4-pixel blocks (k3 stride 1) and the sliding rows (k5 stride 2).
LARGE = [(8, 64, 96, 96, 3, 1, 1), (12, 64, 96, 96, 5, 2, 2)]


def check_large(case):
    """The streamed forward against _naive, with ReLU, at 1 and 2 threads bit for bit."""
    C_ = _backend.native()
    N, C, H, W, k, s, p = case
    r = np.random.default_rng(6)
    x = r.standard_normal((N, H, W, C), dtype=np.float32)
    w = r.standard_normal((C, 1, k, k), dtype=np.float32)
    b = r.standard_normal(C, dtype=np.float32)
    prm = (s, s, p, p, p, p, 1, 1, C)
    y = same_at_thread_counts(lambda: C_.conv2d(x, w, b, prm, True, True, False), counts=(1, 2))
    assert x.nbytes + y.nbytes >= 32 << 20
    _close("y streamed", y, C_.conv2d(x, w, b, prm, True, True, True).astype(np.float64), k * k)


@needs_cpp
@pytest.mark.parametrize("case", LARGE)
def test_streamed_output_matches_naive(case):
    check_large(case)


@needs_cpp
@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_every_isa(isa):
    """check_naive on every case in both layouts under PYAIML_ISA (one interpreter per ISA),
    and the public op against torch on a few, the grouped and 1x1 ones too."""
    run_under_isa(isa, "import numpy as np\n"
                       "import test_conv_depthwise as t\n"
                       "for case in t.CASES:\n"
                       "    for cl in (False, True):\n"
                       "        t.check_naive(case, cl)\n"
                       "for case in t.LARGE:\n"
                       "    t.check_large(case)\n"
                       "if t.torch is not None:\n"
                       "    for case in t.CASES[:4]:\n"
                       "        for cl in (False, True):\n"
                       "            N, C, m, H, W, k, s, p, d = case\n"
                       "            t._run(N, C, m * C, H, W, k, s, p, d, C, cl, np.float32, 5)\n"
                       "    for case in t.OTHER:\n"
                       "        for cl in (False, True):\n"
                       "            t._run(*case, cl, np.float32, 5)\n"
                       "for case in t.TILES:\n"
                       "    t.test_channels_first_on_tiles_equal_channels_last_bits(case)\n"
                       "for case in t.GROUPED_TILES:\n"
                       "    t.test_channels_first_small_groups_equal_channels_last_bits(case)\n")


def _raises_at_every_thread_count(spot, *args, **kw):
    """ops.conv2d(*args, **kw) raises the finite-check error naming x's index ``spot`` at 1, 2 and
    3 threads."""
    n0 = pyaiml.get_num_threads()
    for n in (1, 2, 3):
        pyaiml.set_num_threads(n)
        try:
            with pytest.raises(ValueError, match=rf"x must be finite .* at index {re.escape(str(spot))}"):
                ops.conv2d(*args, **kw)
        finally:
            pyaiml.set_num_threads(n0)


@needs_cpp
@pytest.mark.parametrize("case", [(2, 32, 11, 9, 3, 1, 1), (2, 32, 10, 16, 3, 2, 0), (1, 16, 12, 15, 5, 2, 0),
                                  (2, 16, 10, 10, 1, 3, 0), (1, 16, 6, 6, 3, 1, 4), (2, 8, 7, 40, 3, 2, 0),
                                  (2, 8, 9, 11, 3, 2, 0, 2)],
                         ids=["k3s1", "k3s2-last-row-unread", "k5s2-slide-last-row-unread", "k1s3-rows-unread",
                              "pad-past-input", "wide-rows-nchw-kernel", "two-outputs-per-channel"])
def test_nan_anywhere_in_x_is_reported_by_the_fused_check(case):
    """The depthwise forward checks x inside the kernel, a row (channels last) or a plane
    (channels first, rows of 16 outputs or more) at a time: a NaN or inf anywhere (first, last,
    rows that no output reads) raises the same error, naming the index, at 1-3 threads; with
    checks off the op runs."""
    N, C, H, W, k, s, p, m = case + (1,) * (8 - len(case))
    r = np.random.default_rng(7)
    x = r.standard_normal((N, H, W, C), dtype=np.float32)
    w = r.standard_normal((m * C, 1, k, k), dtype=np.float32)
    ops.conv2d(x, w, stride=s, padding=p, groups=C, data_format="NHWC")
    spots = [(0, 0, 0, 0), (N - 1, H - 1, W - 1, C - 1), (N - 1, H // 2, 1, C // 2), (0, H - 1, 0, 3), (0, 1, W - 2, 5)]
    for i, spot in enumerate(spots):
        bad = x.copy()
        bad[spot] = np.nan if i % 2 else np.inf
        _raises_at_every_thread_count(spot, bad, w, stride=s, padding=p, groups=C, data_format="NHWC",
                                      activation="relu")
        nchw = np.ascontiguousarray(bad.transpose(0, 3, 1, 2))
        at = (spot[0], spot[3], spot[1], spot[2])
        with pytest.raises(ValueError, match=rf"x must be finite .* at index {re.escape(str(at))}"):
            ops.conv2d(nchw, w, stride=s, padding=p, groups=C)
        with ops.finite_checks(False):
            ops.conv2d(bad, w, stride=s, padding=p, groups=C, data_format="NHWC")
    wbad = w.copy()
    wbad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="weight must be finite"):
        ops.conv2d(x, wbad, stride=s, padding=p, groups=C, data_format="NHWC")


@needs_cpp
def test_nan_anywhere_in_x_is_reported_by_the_pointwise_kernel():
    """The 1x1 channels-last kernel checks x a pixel tile at a time: a NaN or inf at the first,
    last or any pixel raises the op's error with its index, at 1-3 threads."""
    r = np.random.default_rng(8)
    x = r.standard_normal((3, 7, 9, 24), dtype=np.float32)
    w = r.standard_normal((40, 24, 1, 1), dtype=np.float32)
    for i, spot in enumerate([(0, 0, 0, 0), (2, 6, 8, 23), (1, 3, 4, 11), (2, 0, 5, 7)]):
        bad = x.copy()
        bad[spot] = np.inf if i % 2 else np.nan
        _raises_at_every_thread_count(spot, bad, w, data_format="NHWC")


def test_bad_groups_are_rejected():
    x = np.zeros((1, 6, 5, 5), np.float32)
    with pytest.raises(ValueError, match="weight.shape"):
        ops.conv2d(x, np.zeros((6, 2, 3, 3), np.float32), groups=6)
    with pytest.raises(ValueError, match="groups must divide the output channels"):
        ops.conv2d(x, np.zeros((8, 1, 3, 3), np.float32), groups=6)


# channels first on the sliding rows' shapes (channels-last tiles), and one map too large for them
TILES = [(2, 240, 14, 14, 5, 1, 2), (3, 72, 7, 7, 5, 1, 2), (2, 40, 14, 14, 5, 2, 2), (1, 88, 9, 13, 3, 1, 1),
          (2, 33, 11, 10, 7, 1, 3), (1, 24, 15, 15, 3, 2, 0), (2, 5, 8, 12, 5, 1, (2, 1)), (2, 19, 7, 7, 3, 1, 1),
          (1, 9, 13, 13, 7, 2, 3), (1, 24, 28, 30, 5, 1, 2), (1, 16, 40, 33, 7, 2, 3), (1, 40, 70, 60, 5, 1, 2)]


@needs_cpp
@pytest.mark.parametrize("case", TILES, ids=["C240-14x14-k5", "C72-7x7-k5", "C40-k5s2", "C88-k3", "C33-k7",
                                              "C24-k3s2-unpadded", "C5-k5-uneven-pad", "C19-7x7-k3", "C9-k7s2",
                                              "C24-28x30-k5", "C16-40x33-k7s2", "C40-70x60-k5-past-tiles"])
def test_channels_first_on_tiles_equal_channels_last_bits(case):
    """Channels first on the sliding rows' shapes runs the channels-last sliding kernels on
    tiles of each image's channel blocks: the same bits as the channels-last op on the
    transposed input (bias, fused ReLU, channel counts that leave a partial block), and
    torch's result; a NaN in the last block is still reported."""
    N, C, H, W, k, s, p = case
    r = np.random.default_rng(3)
    x = r.standard_normal((N, C, H, W), dtype=np.float32)
    w = r.standard_normal((C, 1, k, k), dtype=np.float32)
    b = r.standard_normal(C, dtype=np.float32)
    xl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    for act in (None, "relu"):
        y = ops.conv2d(x, w, b, stride=s, padding=p, groups=C, activation=act)
        yl = ops.conv2d(xl, w, b, stride=s, padding=p, groups=C, data_format="NHWC", activation=act)
        np.testing.assert_array_equal(y, yl.transpose(0, 3, 1, 2))
    if torch is not None:
        pp = (p, p) if isinstance(p, int) else p
        ref = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                         torch.from_numpy(b).double(), stride=s, padding=pp, groups=C)
        np.testing.assert_allclose(ops.conv2d(x, w, b, stride=s, padding=p, groups=C), ref.numpy(),
                                   rtol=1e-5, atol=1e-5)
    bad = x.copy()
    bad[N - 1, C - 1, H - 1, W - 1] = np.nan
    with pytest.raises(ValueError, match=rf"x must be finite .* at index {re.escape(str((N - 1, C - 1, H - 1, W - 1)))}"):
        ops.conv2d(bad, w, b, stride=s, padding=p, groups=C)


# channels first, small groups (2, 4 or 8 channels each, C a multiple of 16): channels-last tiles
GROUPED_TILES = [(2, 128, 32, 14, 14, 3, 1, 1, 1), (1, 64, 8, 9, 11, 3, 2, 1, 1), (2, 32, 16, 7, 7, 5, 1, 2, 1),
                 (1, 48, 12, 10, 8, 3, 1, (2, 1), 2), (1, 16, 2, 12, 12, 3, 1, 0, 1)]


@needs_cpp
@pytest.mark.parametrize("case", GROUPED_TILES, ids=["C128G32", "C64G8s2", "C32G16k5", "C48G12d2", "C16G2"])
def test_channels_first_small_groups_equal_channels_last_bits(case):
    """Channels first with small groups runs the channels-last grouped kernel on tiles of each
    image's channel blocks: the same bits as the channels-last op (bias, ReLU), torch's result
    in float64, and a NaN in the last block still reported."""
    N, C, G, H, W, k, s, p, d = case
    r = np.random.default_rng(11)
    x = r.standard_normal((N, C, H, W), dtype=np.float32)
    w = r.standard_normal((C, C // G, k, k), dtype=np.float32)
    b = r.standard_normal(C, dtype=np.float32)
    xl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    kw = {"stride": s, "padding": p, "dilation": d, "groups": G}
    # the grouped kernel takes groups that divide a vector (the baseline build's is 4 floats:
    # groups of 8 go through im2col there, in each layout's own order)
    vl = {"avx512": 16, "avx2": 8}.get(_backend.native().isa(), 4)
    for act in (None, "relu"):
        y = ops.conv2d(x, w, b, activation=act, **kw)
        yl = ops.conv2d(xl, w, b, data_format="NHWC", activation=act, **kw).transpose(0, 3, 1, 2)
        if vl % (C // G) == 0:
            np.testing.assert_array_equal(y, yl)
        else:
            np.testing.assert_allclose(y, yl, rtol=1e-5, atol=1e-4)
    if torch is not None:
        pp = (p, p) if isinstance(p, int) else p
        ref = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                         torch.from_numpy(b).double(), stride=s, padding=pp, dilation=d, groups=G)
        np.testing.assert_allclose(ops.conv2d(x, w, b, **kw), ref.numpy(), rtol=1e-5, atol=1e-4)
    bad = x.copy()
    bad[N - 1, C - 1, H - 1, 0] = np.inf
    with pytest.raises(ValueError, match=rf"x must be finite .* at index {re.escape(str((N - 1, C - 1, H - 1, 0)))}"):
        ops.conv2d(bad, w, b, **kw)
