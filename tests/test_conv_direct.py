"""The direct (implicit-GEMM) conv kernels of csrc/cpu/conv.cpp, the Winograd weight gradient
and the backward's output_mask, on awkward shapes: every backend against torch (float64
autograd), the C++ kernels against their _naive oracles, thread-count independence.

Paths covered (channels last, no groups): few input channels (C 1..4: forward, grad_w in
registers, grad_x with pixels in vector lanes), C >= 16 at stride 1 (grad_x as the forward
of the flipped kernel), 3x3 stride 1 with C, OC >= 16 (Winograd forward, grad_x and grad_w),
1x3 stride 1 with C, OC >= 16 (Winograd F(2, 3) forward and grad_x).
Tolerances: the rule of tests/test_conv.py (_check). Without torch the oracle is
pyaiml.reference.conv, as in tests/test_conv.py; the naive-vs-fast checks need no torch.
"""
import numpy as np
import pytest

from helpers import backends_for, run_under_isa, same_at_thread_counts
from test_conv import _check

import pyaiml.ops as ops
from pyaiml import _backend

# (N, C, OC, H, W, KH, KW, stride, padding, dilation, groups)
DIRECT2 = [
    (5, 1, 16, 9, 97, 3, 3, 1, 0, 1, 1),           # C 1, OW 95: tiles of 12 + a short one
    (1, 2, 33, 7, 9, 3, 3, 2, 1, 1, 1),            # stride 2, OC 33 (a partial vector)
    (5, 3, 1, 11, 10, 3, 3, 1, "same", 2, 1),      # OC 1, dilation 2, padding
    (1, 4, 16, 1, 1, 1, 1, 1, 0, 1, 1),            # 1x1 image
    (2, 3, 32, 32, 32, 3, 3, 1, 0, 1, 1),          # cnn-a1's layer
    (1, 3, 33, 5, 6, 5, 2, (2, 1), (2, 1), 1, 1),  # kernel larger than the image side, per-axis stride
    (2, 4, 7, 13, 3, 2, 3, 1, (3, 2), (1, 2), 1),  # padding beyond the kernel extent
    (2, 16, 16, 7, 9, 3, 3, 1, 1, 1, 1),           # Winograd forward, grad_x, grad_w
    (5, 17, 33, 13, 11, 3, 3, 1, 0, 1, 1),         # Winograd, odd C and OC
    (1, 16, 17, 6, 6, 3, 3, 1, 2, 1, 1),           # Winograd, padding 2 (grad_x by the direct kernel)
    (2, 20, 16, 9, 8, 3, 3, 2, 1, 1, 1),           # C >= 16 strided: grad_x per image
    (2, 16, 24, 9, 10, 3, 2, 1, (2, 1), 2, 1),     # C >= 16 dilated: grad_x as a direct forward
    (3, 24, 20, 5, 5, 1, 1, 1, 0, 1, 1),           # 1x1
    (2, 6, 12, 9, 7, 3, 3, 1, 1, 1, 3),            # groups: still im2col + GEMM
    (2, 16, 20, 5, 9, 1, 3, 1, 1, 1, 1),           # 1x3 Winograd F(2, 3) with zero rows (padding 1 on H)
    (1, 17, 16, 3, 4, 1, 3, 1, (0, 2), 1, 1),      # 1x3 Winograd, odd output width
]
# (N, C, OC, L, K, stride, padding, dilation, groups)
DIRECT1 = [
    (5, 1, 64, 97, 3, 1, 0, 1, 1),                 # speech1-like
    (3, 64, 64, 33, 3, 1, 0, 1, 1),                # speech2-like: grad_x as a direct forward
    (2, 3, 33, 7, 5, 2, 2, 1, 1),
    (1, 17, 1, 1, 1, 1, 0, 1, 1),
    (2, 16, 17, 8, 3, 1, 1, 1, 1),                 # Winograd F(2, 3): forward and grad_x, padding 1
    (1, 20, 33, 97, 3, 1, "same", 1, 1),
    (5, 17, 16, 4, 3, 1, 2, 1, 1),                 # padding 2: grad_x window starts at the edge
]


@pytest.mark.parametrize("backend", backends_for("conv2d"))
@pytest.mark.parametrize("i", range(len(DIRECT2)))
def test_direct_conv2d_matches_oracle(backend, i, rng, monkeypatch):
    if backend == "numpy" and i % 3:
        pytest.skip("sampled: numpy backend runs every third case")
    _check(2, backend, True, np.float32, DIRECT2[i], rng, monkeypatch)
    if backend == "cpp":
        _check(2, backend, False, np.float32, DIRECT2[i], rng, monkeypatch)


@pytest.mark.parametrize("backend", backends_for("conv2d"))
@pytest.mark.parametrize("i", range(len(DIRECT1)))
def test_direct_conv1d_matches_oracle(backend, i, rng, monkeypatch):
    _check(1, backend, True, np.float32, DIRECT1[i], rng, monkeypatch)


def _params(s, p, d, G=1):
    sh, sw = (s, s) if isinstance(s, int) else s
    (pt, pb), (pl, pr) = [(v, v) if isinstance(v, int) else v for v in ((p, p) if isinstance(p, int) else p)]
    dh, dw = (d, d) if isinstance(d, int) else d
    return (sh, sw, pt, pb, pl, pr, dh, dw, G)


@pytest.mark.skipif(not _backend.cpp_available(), reason="needs pyaiml._C")
@pytest.mark.parametrize("case", [
    (1, 3, 16, 28, 28, 3, 3, 1, 0, 1),
    (5, 2, 33, 8, 7, 3, 2, 2, ((1, 0), (2, 1)), (1, 2)),
    (3, 4, 1, 5, 9, 2, 3, 1, ((0, 3), (1, 1)), 1),
    (2, 1, 17, 1, 97, 1, 5, (1, 3), ((0, 0), (4, 2)), 1),
    (3, 32, 64, 15, 15, 3, 3, 1, 0, 1),
    (2, 17, 16, 7, 5, 3, 3, 1, ((2, 1), (0, 2)), 1),
    (2, 33, 19, 6, 9, 2, 3, 1, ((1, 1), (0, 0)), 2),
    (3, 16, 33, 2, 13, 1, 3, 1, ((0, 1), (2, 1)), 1),   # 1x3 Winograd F(2, 3)
    (2, 64, 64, 1, 63, 1, 3, 1, 0, 1),                  # speech2's layer
    (2, 256, 72, 9, 9, 3, 3, 2, 1, 1),                  # weights > 512 KB: tasks of one channel block
])
def test_direct_kernels_match_naive(case):
    """Asymmetric padding, per-axis stride/dilation; every subset of the gradients."""
    C_ = _backend.native()
    N, C, OC, H, W, KH, KW, s, pad, d = case
    p = _params(s, pad, d)
    r = np.random.default_rng(0)
    x = r.standard_normal((N, H, W, C), dtype=np.float32)
    w = r.standard_normal((OC, C, KH, KW), dtype=np.float32)
    b = r.standard_normal(OC, dtype=np.float32)
    for relu in (False, True):
        np.testing.assert_allclose(C_.conv2d(x, w, b, p, True, relu), C_.conv2d(x, w, b, p, True, relu, True),
                                   rtol=1e-4, atol=1e-4)
    y = C_.conv2d(x, w, None, p, True)
    gy = r.standard_normal(y.shape, dtype=np.float32)
    want = C_.conv2d_backward(gy, x, w, p, True, True, True)
    tol = 2e-4 * np.sqrt(gy.size)
    for need_x in (False, True):
        for need_w in (False, True):
            for need_b in (False, True):
                got = C_.conv2d_backward(gy, x, w, p, True, need_b, False, need_x, need_w)
                for g, wt, need in zip(got, want, (need_x, need_w, need_b)):
                    if need:
                        np.testing.assert_allclose(g, wt, rtol=1e-4, atol=tol)
                    else:
                        assert g is None


@pytest.mark.parametrize("backend", backends_for("conv2d"))
@pytest.mark.parametrize("nd", [1, 2])
def test_output_mask(backend, nd, rng, monkeypatch):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    if nd == 2:
        x = rng.standard_normal((3, 9, 8, 3), dtype=np.float32)
        w = rng.standard_normal((16, 3, 3, 3), dtype=np.float32)
        fwd, bwd, fmt = ops.conv2d, ops.conv2d_backward, "NHWC"
    else:
        x = rng.standard_normal((3, 20, 17), dtype=np.float32)
        w = rng.standard_normal((16, 17, 3), dtype=np.float32)
        fwd, bwd, fmt = ops.conv1d, ops.conv1d_backward, "NLC"
    gy = rng.standard_normal(fwd(x, w, padding=1, data_format=fmt).shape, dtype=np.float32)
    full = bwd(gy, x, w, padding=1, data_format=fmt)
    for mask in [(a, b, c) for a in (False, True) for b in (False, True) for c in (False, True)]:
        got = bwd(gy, x, w, padding=1, data_format=fmt, output_mask=mask)
        for g, f, m in zip(got, full, mask):
            if m:
                np.testing.assert_allclose(g, f, rtol=1e-5, atol=1e-5)
            else:
                assert g is None
    # output_mask overrides needs_bias_grad
    assert bwd(gy, x, w, padding=1, data_format=fmt, needs_bias_grad=False, output_mask=(False, True, True))[2] \
        is not None
    assert bwd(gy, x, w, padding=1, data_format=fmt, needs_bias_grad=False)[2] is None


def test_output_mask_errors(rng):
    x = rng.standard_normal((2, 3, 6, 6), dtype=np.float32)
    w = rng.standard_normal((4, 3, 3, 3), dtype=np.float32)
    gy = np.zeros((2, 4, 4, 4), np.float32)
    for bad in [(True, True), (1, 1, 1), "xwb", (True, True, None)]:
        with pytest.raises(TypeError, match="output_mask must be a tuple of 3 bools"):
            ops.conv2d_backward(gy, x, w, output_mask=bad)
    gx, gw, gb = ops.conv2d_backward(gy[:0], x[:0], w, output_mask=(False, True, False))
    assert gx is None and gw.shape == w.shape and not gw.any() and gb is None


@pytest.mark.skipif(not _backend.cpp_available(), reason="needs pyaiml._C")
@pytest.mark.parametrize("shape", [
    ((11, 9, 10, 3), (33, 3, 3, 3), 0),    # few channels
    ((17, 7, 9, 16), (24, 16, 3, 3), 1),   # Winograd: several images per chunk
    ((5, 1, 40, 20), (16, 20, 1, 3), 0),   # 1-D, grad_x as a direct forward
])
def test_direct_results_do_not_depend_on_thread_count(shape, rng):
    xs, ws, pad = shape
    x = rng.standard_normal(xs, dtype=np.float32)
    w = rng.standard_normal(ws, dtype=np.float32)
    b = rng.standard_normal(ws[0], dtype=np.float32)
    gy = rng.standard_normal(ops.conv2d(x, w, padding=pad, data_format="NHWC").shape, dtype=np.float32)
    same_at_thread_counts(lambda: (ops.conv2d(x, w, b, padding=pad, data_format="NHWC"),)
                          + ops.conv2d_backward(gy, x, w, padding=pad, data_format="NHWC"))


@pytest.mark.skipif(not _backend.cpp_available(), reason="needs pyaiml._C")
@pytest.mark.parametrize("OC", [72, 68])
def test_direct_forward_with_wide_weights_at_every_thread_count(OC):
    """Weights past 512 KB (3x3, 256 -> 72 or 68: blocks of 2 vectors and a partial one) run as
    tasks of one block of output channels over a chunk of rows: the same bits at 1, 2 and 3
    threads, and the naive kernel's values, with bias and ReLU, stride 2 and padding."""
    C_ = _backend.native()
    rng = np.random.default_rng(OC)
    x = rng.standard_normal((3, 11, 9, 256), dtype=np.float32)
    w = rng.standard_normal((OC, 256, 3, 3), dtype=np.float32)
    b = rng.standard_normal(OC, dtype=np.float32)
    p = _params(2, 1, 1)
    y = same_at_thread_counts(lambda: C_.conv2d(x, w, b, p, True, True))
    np.testing.assert_allclose(y, C_.conv2d(x, w, b, p, True, True, True), rtol=1e-4, atol=1e-3)


PHASE_CASES = [
    # N, C, OC, H, W, KH, KW, stride, padding
    (2, 16, 24, 14, 14, 3, 3, 2, 1),                   # ResNet's stride-2 3x3, small
    (3, 32, 16, 9, 8, 1, 1, 2, 0),                     # 1x1 stride 2: three phases without taps
    (2, 16, 33, 11, 10, 5, 5, 3, 2),                   # stride 3, odd sizes
    (1, 20, 8, 7, 9, 2, 3, (2, 1), ((0, 1), (2, 0))),  # stride (2, 1), asymmetric padding
    (2, 16, 16, 12, 12, 3, 3, 2, 0),                   # no padding: a phase with top padding 1
    (1, 16, 40, 6, 6, 3, 3, 2, 3),                     # padding past the kernel: cropped input
    (2, 16, 16, 5, 5, 3, 3, 4, 1),                     # stride past the kernel: empty phases
]


@pytest.mark.skipif(not _backend.cpp_available(), reason="needs pyaiml._C")
@pytest.mark.parametrize("case", PHASE_CASES)
def test_strided_grad_x_by_phases_matches_naive(case):
    """Strided convs with C >= 16 take grad_x as one direct forward per output phase: equal
    to the naive kernel, and the same bits at 1, 2 and 3 threads."""
    C_ = _backend.native()
    N, C, OC, H, W, KH, KW, s, pad = case
    p = _params(s, pad, 1)
    r = np.random.default_rng(1)
    x = r.standard_normal((N, H, W, C), dtype=np.float32)
    w = r.standard_normal((OC, C, KH, KW), dtype=np.float32)
    y = C_.conv2d(x, w, None, p, True)
    gy = r.standard_normal(y.shape, dtype=np.float32)
    want = C_.conv2d_backward(gy, x, w, p, True, False, True)[0]
    gx = same_at_thread_counts(lambda: C_.conv2d_backward(gy, x, w, p, True, False, False, True, False)[0])
    np.testing.assert_allclose(gx, want, rtol=1e-4, atol=2e-4 * np.sqrt(gy.size))


@pytest.mark.skipif(not _backend.cpp_available(), reason="needs pyaiml._C")
def test_winograd_few_tiles_large_weights_at_every_thread_count(rng):
    """Few Winograd tiles (N2 7x7: 32) with transformed weights past 2 MB (192 -> 176) take
    the whole batch through each step at once: forward and grad_x (the flipped conv) equal
    the naive kernel and are the same bits at 1, 2 and 3 threads."""
    C_ = _backend.native()
    x = rng.standard_normal((2, 7, 7, 192), dtype=np.float32)
    w = rng.standard_normal((176, 192, 3, 3), dtype=np.float32)
    b = rng.standard_normal(176, dtype=np.float32)
    p = _params(1, 1, 1)
    gy = rng.standard_normal((2, 7, 7, 176), dtype=np.float32)
    y, gx = same_at_thread_counts(lambda: (C_.conv2d(x, w, b, p, True, True),
                                           C_.conv2d_backward(gy, x, w, p, True, False, False, True, False)[0]))
    np.testing.assert_allclose(y, C_.conv2d(x, w, b, p, True, True, True), rtol=1e-3, atol=2e-2)
    np.testing.assert_allclose(gx, C_.conv2d_backward(gy, x, w, p, True, False, True)[0], rtol=1e-3, atol=2e-2)


@pytest.mark.skipif(not _backend.cpp_available(), reason="needs pyaiml._C")
@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_blocked_direct_and_phase_paths_under_each_isa(isa):
    """The wide-weight forward, the strided grad_x phases and Winograd's few-tile path under
    PYAIML_ISA (one interpreter per ISA; vector widths 8 and 4 give other block edges: a last
    block of 4 channels at OC = 68 on the baseline build)."""
    run_under_isa(isa, "import numpy as np\n"
                       "import test_conv_direct as t\n"
                       "for oc in (72, 68):\n"
                       "    t.test_direct_forward_with_wide_weights_at_every_thread_count(oc)\n"
                       "for case in t.PHASE_CASES:\n"
                       "    t.test_strided_grad_x_by_phases_matches_naive(case)\n"
                       "t.test_winograd_few_tiles_large_weights_at_every_thread_count(np.random.default_rng(0))\n")
