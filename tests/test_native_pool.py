"""Max-pool backward with caller-supplied flat indices: every layout scatters each output's
gradient to the input element its index names, as torch's max_pool2d backward does, even
when that element lies outside the output's own window (the channels-last tiled kernel used
to drop those gradients). Oracle: torch.ops.aten.max_pool2d_with_indices_backward."""
import numpy as np
import pytest

import pyaiml.ops as ops

from helpers import backends_for

torch = pytest.importorskip("torch")


def _torch_backward(gy, x, k, s, p, idx):
    """NCHW float64 grad_x from torch's kernel (a scatter-add at the flat indices)."""
    t = lambda a, dt: torch.from_numpy(np.ascontiguousarray(a)).to(dt)
    g = torch.ops.aten.max_pool2d_with_indices_backward(t(gy, torch.float64), t(x, torch.float64), list(k), list(s),
                                                        list(p), [1, 1], False, t(idx, torch.int64))
    return g.numpy()


CASES = [  # N, C, H, W, kernel, stride, padding
    (2, 3, 8, 8, (2, 2), (2, 2), (0, 0)),     # tiled, channel tail only
    (1, 33, 7, 9, (2, 2), (2, 2), (0, 0)),    # tiled, vector lanes + tail, uncovered edge
    (2, 16, 6, 6, (1, 2), (1, 2), (0, 0)),    # tiled 1x2 (the unrolled kernel)
    (1, 17, 9, 9, (3, 3), (3, 3), (0, 0)),    # tiled, run-time window size
    (2, 8, 7, 7, (3, 3), (2, 2), (1, 1)),     # overlapping windows with padding (scatter path)
]


@pytest.mark.parametrize("backend", backends_for("max_pool2d_backward"))
@pytest.mark.parametrize("case", CASES)
def test_flat_indices_outside_their_window_scatter_like_torch(case, backend, monkeypatch, rng):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    N, C, H, W, k, s, p = case
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    y = ops.max_pool2d(x, k, s, p)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    idx = rng.integers(0, H * W, size=y.shape).astype(np.int64)  # mostly outside their window
    want = _torch_backward(gy, x, k, s, p, idx)
    got_cf = ops.max_pool2d_backward(gy, x, k, s, p, indices=idx)
    got_cl = ops.max_pool2d_backward(gy.transpose(0, 2, 3, 1), x.transpose(0, 2, 3, 1), k, s, p, data_format="NHWC",
                                     indices=idx.transpose(0, 2, 3, 1))
    # Sums of a few float32 gradients in another order than torch's float64: 1e-6 relative.
    np.testing.assert_allclose(got_cf, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_cl.transpose(0, 3, 1, 2), want, rtol=1e-6, atol=1e-6)
    assert abs(float(got_cl.sum()) - float(gy.sum())) < 1e-3  # no gradient dropped


@pytest.mark.parametrize("backend", backends_for("max_pool2d_backward"))
def test_one_index_outside_its_window_nhwc(backend, monkeypatch, rng):
    # The forward's own indices with one changed: all other gradients stay where they were.
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    x = rng.standard_normal((1, 4, 4, 16)).astype(np.float32)  # NHWC, 2x2 windows tile it
    y, idx = ops.max_pool2d(x, 2, data_format="NHWC", return_indices=True)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    base = ops.max_pool2d_backward(gy, x, 2, data_format="NHWC", indices=idx)
    idx2 = idx.copy()
    idx2[0, 0, 0, 5] = 15  # window (0, 0) of channel 5 points at (3, 3), in window (1, 1)
    got = ops.max_pool2d_backward(gy, x, 2, data_format="NHWC", indices=idx2)
    want = base.copy()
    h, w = divmod(int(idx[0, 0, 0, 5]), 4)
    want[0, h, w, 5] -= gy[0, 0, 0, 5]
    want[0, 3, 3, 5] += gy[0, 0, 0, 5]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend", backends_for("max_pool2d_backward"))
def test_1d_nlc_indices_outside_their_window(backend, monkeypatch, rng):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    x = rng.standard_normal((2, 12, 9)).astype(np.float32)  # (N, L, C)
    y = ops.max_pool1d(x, 3, data_format="NLC")
    gy = rng.standard_normal(y.shape).astype(np.float32)
    idx = rng.integers(0, 12, size=y.shape).astype(np.int64)
    got = ops.max_pool1d_backward(gy, x, 3, data_format="NLC", indices=idx)
    want = np.zeros(x.shape, np.float64)
    for n in range(2):
        for o in range(y.shape[1]):
            for c in range(9):
                want[n, idx[n, o, c], c] += gy[n, o, c]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_forward_indices_still_exact_nhwc(rng):
    # The common case (the forward's own indices) is unchanged: torch's gradient exactly.
    x = rng.standard_normal((2, 33, 10, 10)).astype(np.float32)
    y, idx = ops.max_pool2d(x, 2, return_indices=True)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    want = _torch_backward(gy, x, (2, 2), (2, 2), (0, 0), idx)
    got = ops.max_pool2d_backward(gy.transpose(0, 2, 3, 1), x.transpose(0, 2, 3, 1), 2, data_format="NHWC",
                                  indices=idx.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(got.transpose(0, 3, 1, 2), want.astype(np.float32))


def test_out_of_range_index_still_refused_nhwc():
    x = np.zeros((1, 4, 4, 8), np.float32)
    idx = np.zeros((1, 2, 2, 8), np.int64)
    idx[0, 1, 1, 3] = 16
    with pytest.raises(ValueError, match=r"indices must lie in \[0, (H\*W\) = \[0, )?16\)"):
        ops.max_pool2d_backward(np.ones((1, 2, 2, 8), np.float32), x, 2, data_format="NHWC", indices=idx)


@pytest.mark.skipif("cpp" not in backends_for("max_pool2d"), reason="needs the C++ backend")
@pytest.mark.parametrize("index", [None, "flat", "window"])
@pytest.mark.parametrize("relu", [False, True])
def test_channels_first_2x2_forward_against_the_reference(index, relu):
    """The vectorised channels-first 2x2 / stride-2 forward (pool.cpp two_by_two_v): every
    width from 1 to 70 (whole vectors, tails, an uncovered last column), odd heights, ties
    (small integers) and NaNs, the maxima and both index kinds equal to the NumPy reference."""
    from pyaiml import _C
    from pyaiml.reference import pool as ref

    rng = np.random.default_rng(11)
    q = (2, 2, 2, 2, 0, 0)
    for W in range(2, 71):
        H = 2 + W % 5
        x = rng.integers(-3, 4, (2, 3, H, W)).astype(np.float32)
        x[rng.random(x.shape) < 0.02] = np.nan
        got = _C.max_pool2d(x, q, False, index is not None, relu, index == "window")
        want = ref.max_pool2d(x, q, False, index, relu)
        np.testing.assert_array_equal(got[0], want[0])
        if index is not None:
            np.testing.assert_array_equal(got[1], want[1])
