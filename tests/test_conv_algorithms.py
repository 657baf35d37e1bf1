"""Every row of conv_plan (csrc/cpu/conv.cpp), the table that picks the conv algorithm for each
result of a shape: im2col + GEMM (conv_im2col.cpp), the direct kernels (conv_direct.cpp),
Winograd F(2x2, 3x3) and F(2, 3) (conv_winograd.cpp), the channels-first forward for few input
channels (conv_planar.cpp). For one or more shapes per row, the C++
fast kernels against their _naive oracle (loops in double, conv_naive.cpp): y with bias, with
and without the fused ReLU; grad_x, grad_w and grad_b computed together and each on its own
(output_mask); and bitwise the same results with 1 and 2 threads. The slow test reruns the
comparison under PYAIML_ISA for every ISA this CPU runs.

Shapes go to _C directly with raw (top, bottom, left, right) padding, so rows that only
asymmetric padding reaches are covered too. Tolerance: the rule of tests/test_conv.py (_close).
"""
import os

import numpy as np
import pytest

from helpers import run_py
from test_conv import _close

import pyaiml
from pyaiml import _backend

# name: the algorithms the plan gives forward / grad_x / grad_w ("as conv": grad_x is the
# forward conv of gy with the flipped kernel, run by that algorithm; "gcol": the direct grad_x
# with output pixels in vector lanes), then why.
# shape: (channels_last, N, C, OC, H, W, KH, KW, (sh, sw), (pt, pb, pl, pr), (dh, dw), G)
ROWS = {
    "wino/wino as conv/wino": (True, 2, 16, 17, 9, 7, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "wino/wino as conv/wino: 8 grad_w chunks of 2 images": (True, 16, 16, 16, 6, 6, 3, 3, (1, 1), (1, 1, 1, 1),
                                                            (1, 1), 1),
    "wino/wino as conv/wino: one tile block, output channels split over threads": (
        True, 1, 16, 70, 13, 11, 3, 3, (1, 1), (0, 0, 1, 1), (1, 1), 1),
    "wino/direct as conv/wino: bottom padding 3": (True, 2, 16, 16, 7, 7, 3, 3, (1, 1), (1, 3, 1, 0), (1, 1), 1),
    "wino/gcol/wino: padding 3 > KH - 1": (True, 2, 17, 16, 6, 7, 3, 3, (1, 1), (3, 3, 3, 3), (1, 1), 1),
    "direct/wino as conv/direct: OH*OW < 16 <= H*W": (True, 2, 16, 16, 5, 5, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "direct/direct as conv/direct: H*W < 16": (True, 2, 16, 16, 3, 3, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "direct/direct as conv/direct: OC < 16": (True, 3, 16, 8, 8, 9, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "direct/direct as conv/direct: 5x5 dilation 2": (True, 2, 16, 16, 11, 12, 5, 5, (1, 1), (2, 3, 4, 4), (2, 2), 1),
    # 1x1: grad_w by the pointwise kernel when C > OC, else the direct kernel; OC in vectors
    # (nv) of 16 / 8 / 4 lanes and pixels P = N*H*W against the tile of M = 24 / 12 accumulators
    # over the widest block's vectors (blocks of at most 3): full and partial tiles, blocks and
    # last vectors
    "pointwise/pointwise as conv/direct: 1x1": (True, 3, 16, 24, 5, 6, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "pointwise/pointwise as conv/direct: 1x1, OC 1": (True, 2, 5, 1, 3, 7, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "pointwise/pointwise as conv/direct: 1x1, 24 -> 144": (True, 1, 24, 144, 5, 7, 1, 1, (1, 1), (0, 0, 0, 0),
                                                            (1, 1), 1),
    "pointwise/pointwise as conv/direct: 1x1, 3 -> 100": (True, 2, 3, 100, 4, 5, 1, 1, (1, 1), (0, 0, 0, 0),
                                                           (1, 1), 1),
    "pointwise/pointwise as conv/pointwise: 1x1, 70 -> 40": (True, 1, 70, 40, 1, 13, 1, 1, (1, 1), (0, 0, 0, 0),
                                                              (1, 1), 1),
    # grad_w with C > OC: C in vector lanes, 512-pixel chunks (3 here, the last partial)
    "pointwise/pointwise as conv/pointwise: 1x1, 40 -> 8, 1150 pixels": (True, 2, 40, 8, 23, 25, 1, 1, (1, 1),
                                                                          (0, 0, 0, 0), (1, 1), 1),
    "direct/gcol/direct: C < 16, grad_w chunks of 2 images": (True, 20, 3, 32, 6, 9, 3, 3, (1, 1), (1, 1, 1, 1),
                                                              (1, 1), 1),
    "direct/gcol/direct: stride 2": (True, 2, 5, 7, 11, 10, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 1),
    "direct/gcol/direct: stride (1, 2), C >= 16": (True, 2, 16, 16, 7, 9, 3, 3, (1, 2), (1, 1, 1, 1), (1, 1), 1),
    # grad_w in the direct kernel's wide mode (partial sums per image chunk would pass 8 MB):
    # one accumulator, tasks over (k, o) blocks; Winograd's grad_w is not used on <= 64 pixels
    "wino/wino as conv/direct wide: 4x4, 128 -> 1024": (True, 2, 128, 1024, 4, 4, 3, 3, (1, 1), (1, 1, 1, 1),
                                                        (1, 1), 1),
    "direct/gcol/direct wide: stride 2, OC 700 (not whole vectors)": (True, 3, 130, 700, 6, 6, 3, 3, (2, 2),
                                                                      (1, 1, 1, 1), (1, 1), 1),
    "wino1d/wino1d as conv/wino1d": (True, 2, 16, 20, 1, 11, 1, 3, (1, 1), (0, 0, 1, 1), (1, 1), 1),
    "wino1d/wino1d as conv/wino1d: 2-D, odd OW": (True, 7, 32, 17, 2, 10, 1, 3, (1, 1), (0, 0, 0, 1), (1, 1), 1),
    "wino1d/gcol/direct: top padding 1": (True, 2, 16, 16, 3, 9, 1, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "direct/wino1d as conv/direct: OW < 4 <= W": (True, 2, 16, 16, 1, 4, 1, 3, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "direct/direct as conv/direct: 1x3 dilation 2": (True, 2, 16, 16, 1, 12, 1, 3, (1, 1), (0, 0, 2, 2), (1, 2), 1),
    "im2col: NCHW": (False, 2, 16, 16, 8, 8, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "im2col: NCHW, groups, per-axis stride and dilation": (False, 3, 6, 12, 11, 10, 3, 3, (2, 1), (1, 2, 0, 1),
                                                           (1, 2), 3),
    "im2col: NCHW, row tiles, 8 grad_w chunks": (False, 9, 64, 8, 16, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    # channels first, C <= 4, stride 1 or 2 (conv_planar.cpp): the forward with output pixels
    # in lanes and blocks of output channels (AVX-512 at most 12, AVX2 and baseline 6, in
    # equal blocks), the last step of a row short; the backward through channels last
    "planar/cl/cl: 3 -> 32, stride 1": (False, 2, 3, 32, 34, 34, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "planar/cl/cl: stride 2, padding 1, 3 -> 16, OW 20": (False, 2, 3, 16, 9, 40, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1),
                                                          1),
    "planar/cl/cl: 7x7 stride 2 padding 3, 3 -> 13": (False, 1, 3, 13, 12, 38, 7, 7, (2, 2), (3, 3, 3, 3), (1, 1), 1),
    "planar/cl/cl: 1 channel, stride (2, 1), 5x4, asymmetric padding": (False, 2, 1, 4, 11, 20, 5, 4, (2, 1),
                                                                         (2, 0, 1, 2), (1, 1), 1),
    "planar/cl/cl: 4 channels, stride (1, 2), 2x2, OC 30": (False, 1, 4, 30, 6, 40, 2, 2, (1, 2), (0, 1, 0, 1),
                                                             (1, 1), 1),
    # one pixel in and out, channels first: the same memory as channels last, so the
    # channels-last plan runs on the arrays as they are (pointwise, direct, depthwise)
    "single pixel NCHW as channels last: 1x1, 40 -> 24": (False, 3, 40, 24, 1, 1, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1),
                                                          1),
    "single pixel NCHW as channels last: 3x3 padding 1": (False, 2, 16, 8, 1, 1, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1),
                                                          1),
    "single pixel NCHW as channels last: depthwise 3x3": (False, 2, 16, 16, 1, 1, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1),
                                                          16),
    "im2col: NHWC depthwise (GEMM turned around)": (True, 2, 16, 16, 8, 9, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 16),
    "im2col: NHWC groups, OC/G 20 (GEMM N padded)": (True, 2, 4, 40, 7, 7, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 2),
    "im2col: NHWC groups, OC/G 32": (True, 2, 8, 64, 6, 6, 3, 3, (1, 1), (0, 1, 1, 0), (1, 1), 2),
    "im2col: NHWC groups, row tiles": (True, 1, 128, 64, 16, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 2),
}

MASKS = [(True, False, False), (False, True, False), (False, False, True), (False, True, True)]

needs_cpp = pytest.mark.skipif(not _backend.cpp_available(), reason="needs pyaiml._C")


def _arrays(name):
    cl, N, C, OC, H, W, KH, KW, (sh, sw), (pt, pb, pl, pr), (dh, dw), G = ROWS[name]
    OH = (H + pt + pb - dh * (KH - 1) - 1) // sh + 1
    OW = (W + pl + pr - dw * (KW - 1) - 1) // sw + 1
    r = np.random.default_rng(sum(map(ord, name)))
    x = r.standard_normal((N, H, W, C) if cl else (N, C, H, W), dtype=np.float32)
    w = r.standard_normal((OC, C // G, KH, KW), dtype=np.float32)
    b = r.standard_normal(OC, dtype=np.float32)
    gy = r.standard_normal((N, OH, OW, OC) if cl else (N, OC, OH, OW), dtype=np.float32)
    p = (sh, sw, pt, pb, pl, pr, dh, dw, G)
    terms = {"y": C // G * KH * KW, "grad_x": OC // G * KH * KW, "grad_w": N * OH * OW, "grad_b": N * OH * OW}
    return x, w, b, gy, p, cl, terms


def check_row(name):
    """The fast kernels against the _naive ones on ROWS[name]; raises AssertionError."""
    C_ = _backend.native()
    x, w, b, gy, p, cl, terms = _arrays(name)
    for relu in (False, True):
        y = C_.conv2d(x, w, b, p, cl, relu, False)
        _close(f"{name}: y (relu={relu})", y, C_.conv2d(x, w, b, p, cl, relu, True).astype(np.float64), terms["y"])
    want = C_.conv2d_backward(gy, x, w, p, cl, True, True)
    got = C_.conv2d_backward(gy, x, w, p, cl, True, False)
    for what, g, r in zip(("grad_x", "grad_w", "grad_b"), got, want):
        _close(f"{name}: {what}", g, r.astype(np.float64), terms[what])
    for mask in MASKS:
        got = C_.conv2d_backward(gy, x, w, p, cl, mask[2], False, mask[0], mask[1])
        for what, m, g, r in zip(("grad_x", "grad_w", "grad_b"), mask, got, want):
            if m:
                _close(f"{name}: {what} alone, mask {mask}", g, r.astype(np.float64), terms[what])
            else:
                assert g is None, f"{name}: {what} returned for mask {mask}"


@needs_cpp
@pytest.mark.parametrize("name", list(ROWS))
def test_fast_kernels_match_naive(name):
    check_row(name)


@needs_cpp
@pytest.mark.parametrize("name", list(ROWS))
def test_results_do_not_depend_on_thread_count(name):
    C_ = _backend.native()
    x, w, b, gy, p, cl, _ = _arrays(name)
    n0 = pyaiml.get_num_threads()
    outs = []
    try:
        for n in (1, 2):
            pyaiml.set_num_threads(n)
            outs.append((C_.conv2d(x, w, b, p, cl, True, False),) + tuple(C_.conv2d_backward(gy, x, w, p, cl, True)))
    finally:
        pyaiml.set_num_threads(n0)
    for a, a2 in zip(*outs):
        np.testing.assert_array_equal(a, a2)


@needs_cpp
@pytest.mark.parametrize("OC", [37, 144])
def test_pointwise_streamed_output(OC):
    """A 1x1 output of 32 MB or more leaves through non-temporal stores (the 64-byte-aligned
    body of each tile's rows; OC = 37 puts every tile's start at a different offset in its
    line): against NumPy in float64, with ReLU, and the same bits with 1 and 2 threads."""
    C_ = _backend.native()
    r = np.random.default_rng(OC)
    P = (32 << 20) // (4 * OC) + 13
    x = r.standard_normal((1, 1, P, 5), dtype=np.float32)
    w = r.standard_normal((OC, 5, 1, 1), dtype=np.float32)
    b = r.standard_normal(OC, dtype=np.float32)
    p = (1, 1, 0, 0, 0, 0, 1, 1, 1)
    want = x.reshape(P, 5).astype(np.float64) @ w.reshape(OC, 5).T.astype(np.float64) + b
    n0 = pyaiml.get_num_threads()
    outs = []
    try:
        for n in (1, 2):
            pyaiml.set_num_threads(n)
            outs.append(C_.conv2d(x, w, b, p, True, True, False))
    finally:
        pyaiml.set_num_threads(n0)
    _close(f"1x1 streamed OC={OC}", outs[0].reshape(P, OC), np.maximum(want, 0), 5)
    np.testing.assert_array_equal(outs[0], outs[1])


@needs_cpp
@pytest.mark.slow
def test_every_isa():
    """check_row on every row, under each ISA this CPU runs (one interpreter per ISA)."""
    C_ = _backend.native()
    tests = os.path.dirname(os.path.abspath(__file__))
    # the pyaiml this process imported (installed or checkout) first, then the tests folder
    here = os.path.dirname(os.path.dirname(os.path.abspath(pyaiml.__file__)))
    path = os.pathsep.join([here, tests, os.environ.get("PYTHONPATH", "")])
    code = ("import test_conv_algorithms as t\n"
            "for name in t.ROWS:\n"
            "    t.check_row(name)\n"
            "from pyaiml import _backend\n"
            "print('ok', _backend.native().isa())\n")
    for isa in C_.supported_isas():
        r = run_py(code, PYAIML_ISA=isa, PYAIML_BACKEND="cpp", PYTHONPATH=path)
        assert r.returncode == 0 and f"ok {isa}" in r.stdout, (isa, r.stderr[-3000:])


@needs_cpp
@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_planar_rows_on_other_isas(isa):
    """The planar forward's rows under the AVX2 and baseline builds (blocks of 6 channels,
    8- and 4-lane rows), in the default run; test_every_isa takes every row."""
    from helpers import run_under_isa

    run_under_isa(isa, "import test_conv_algorithms as t\n"
                       "for name in t.ROWS:\n"
                       "    if name.startswith('planar'):\n"
                       "        t.check_row(name)\n")


@needs_cpp
def test_pointwise_weights_changed_in_place_are_seen():
    """The 1x1 forward reuses its transposed weights while the weight array holds the same
    values: weights changed in place (a training step), another array at a reused address,
    and another shape behind the same pointer each give their own answer."""
    C_ = _backend.native()
    r = np.random.default_rng(3)
    x = r.standard_normal((2, 3, 3, 40), dtype=np.float32)
    w = r.standard_normal((24, 40, 1, 1), dtype=np.float32)
    p = (1, 1, 0, 0, 0, 0, 1, 1, 1)

    def naive(ww):
        return C_.conv2d(x, ww, None, p, True, False, True).astype(np.float64)

    for _ in range(2):  # the second call takes the kept copy
        _close("1x1 first weights", C_.conv2d(x, w, None, p, True, False, False), naive(w), 40)
    w[3, 7, 0, 0] += 1.0  # in place: same pointer, one value changed
    _close("1x1 weights changed in place", C_.conv2d(x, w, None, p, True, False, False), naive(w), 40)
    w[...] = r.standard_normal(w.shape, dtype=np.float32)
    _close("1x1 weights rewritten", C_.conv2d(x, w, None, p, True, False, False), naive(w), 40)
    w2 = w.reshape(40, 24, 1, 1)  # the same memory as another shape
    x2 = r.standard_normal((2, 3, 3, 24), dtype=np.float32)
    _close("1x1 same memory, other shape", C_.conv2d(x2, w2, None, p, True, False, False),
           C_.conv2d(x2, w2, None, p, True, False, True).astype(np.float64), 24)
