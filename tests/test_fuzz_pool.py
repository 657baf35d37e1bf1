"""Fuzz tests of max_pool1d / max_pool2d and their backward (hypothesis), every backend.

Drawn: shapes, kernel size, stride (default or given), padding (sometimes more than half
the kernel, or a kernel larger than the padded input: invalid), data format, dtype
(float32; float64, which runs through pyaiml.reference), index format, fused ReLU, arrays
whose data is not 64-byte aligned, and small-integer data, so that windows hold ties (the
first maximum in row-major window order wins, as in torch) and, with ReLU, windows whose
maximum is <= 0. Valid calls are compared
with pool_oracle below, exactly (pooling only selects; gradients are sums of a few grad_out
values, compared to 1e-6); invalid ones must raise ValueError/TypeError naming the op.

Oracle: each window gathered by index arithmetic from a -inf padded copy, np.argmax (first
maximum), the gradient scattered back with np.add.at. Shares no code with
pyaiml.reference.pool.

Run: PYTHONPATH=$PWD pytest -q tests/test_fuzz_pool.py (50 examples per backend);
PYAIML_FUZZ=slow for 2000, or ``pytest -m slow tests/test_fuzz_pool.py``.
"""
import numpy as np
from hypothesis import strategies as st

import pyaiml.ops as ops
from fuzzing import SEEDS, assert_close, fuzz_test, misaligned, valid_or_raises
from helpers import backends_for

BACKENDS = backends_for("max_pool2d")


def pool_oracle(x, k, s, p, gy=None, relu=False):
    """x (N, C, H, W): (y, flat index h * W + w, window position, grad_x) in float64 (grad_x
    only when gy is given); relu: y = max(y, 0), position 255 and no gradient where the
    window's maximum is <= 0."""
    N, C, H, W = x.shape
    OH = (H + 2 * p[0] - k[0]) // s[0] + 1
    OW = (W + 2 * p[1] - k[1]) // s[1] + 1
    ih = (np.arange(OH) * s[0] - p[0])[:, None] + np.arange(k[0])      # (OH, KH)
    iw = (np.arange(OW) * s[1] - p[1])[:, None] + np.arange(k[1])      # (OW, KW)
    inside = ((ih >= 0) & (ih < H))[:, None, :, None] & ((iw >= 0) & (iw < W))[None, :, None, :]
    IH = np.clip(ih, 0, H - 1)[:, None, :, None]
    IW = np.clip(iw, 0, W - 1)[None, :, None, :]
    win = np.where(inside, x.astype(np.float64)[:, :, IH, IW], -np.inf)  # (N, C, OH, OW, KH, KW)
    win = win.reshape(N, C, OH, OW, k[0] * k[1])
    pos = win.argmax(-1)
    y = np.take_along_axis(win, pos[..., None], -1)[..., 0]
    flat = np.take_along_axis(np.broadcast_to((IH * W + IW).reshape(OH, OW, -1), win.shape), pos[..., None], -1)[..., 0]
    if relu:
        pos = np.where(y > 0, pos, 255)
        y = np.maximum(y, 0)
    if gy is None:
        return y, flat, pos, None
    gx = np.zeros((N, C, H * W))
    g = np.where(pos == 255, 0.0, gy.astype(np.float64))
    n, c = np.meshgrid(np.arange(N), np.arange(C), indexing="ij")
    np.add.at(gx, (n[..., None, None], c[..., None, None], flat), g)
    return y, flat, pos, gx.reshape(N, C, H, W)


@st.composite
def pool_cases(draw):
    nd = draw(st.sampled_from([1, 2]))
    k = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    sp = tuple(draw(st.integers(1, 9)) for _ in range(nd))
    pad_ok = draw(st.integers(0, 9)) > 0                     # 1 in 10: padding may exceed k // 2
    p = tuple(draw(st.integers(0, e // 2 if pad_ok else 3)) for e in k)
    stride = draw(st.one_of(st.none(), st.tuples(*[st.integers(1, 4)] * nd)))
    index_format = draw(st.sampled_from(["flat", "window"]))
    return dict(nd=nd, N=draw(st.integers(1, 2)), C=draw(st.integers(1, 5)), k=k, sp=sp, p=p, stride=stride,
                as_int=draw(st.booleans()), cl=draw(st.booleans()),
                dtype=draw(st.sampled_from([np.float32, np.float32, np.float32, np.float64])),
                relu=draw(st.booleans()), indices=draw(st.booleans()), index_format=index_format,
                misalign=draw(st.integers(0, 3)) == 0, seed=draw(SEEDS))


def check_pool(backend, c):
    """max_pool1d/2d forward (values, flat or window indices, fused ReLU) and backward (from
    the returned indices, or recomputed) against pool_oracle, or ValueError/TypeError."""
    nd, r = c["nd"], np.random.default_rng(c["seed"])
    op, bop = ("max_pool1d", "max_pool1d_backward") if nd == 1 else ("max_pool2d", "max_pool2d_backward")
    fwd, bwd = (ops.max_pool1d, ops.max_pool1d_backward) if nd == 1 else (ops.max_pool2d, ops.max_pool2d_backward)
    fmt = ("NLC" if c["cl"] else "NCL") if nd == 1 else ("NHWC" if c["cl"] else "NCHW")
    x = r.integers(-3, 4, (c["N"], c["C"]) + c["sp"]).astype(c["dtype"])      # ties and non-positive windows
    perm = ((0, 2, 1) if nd == 1 else (0, 2, 3, 1)) if c["cl"] else None
    inv = ((0, 2, 1) if nd == 1 else (0, 3, 1, 2)) if c["cl"] else None
    xi = np.ascontiguousarray(x.transpose(perm)) if perm else x
    if c["misalign"]:
        xi = misaligned(xi)
    k2 = (1,) + c["k"] if nd == 1 else c["k"]
    s = c["k"] if c["stride"] is None else c["stride"]
    s2, p2, sp2 = ((1,) + s, (0,) + c["p"], (1,) + c["sp"]) if nd == 1 else (s, c["p"], c["sp"])
    one = lambda t: t[0] if c["as_int"] and len(set(t)) == 1 else t  # noqa: E731  int or tuple
    kw = dict(kernel_size=one(c["k"]), stride=None if c["stride"] is None else one(c["stride"]), padding=one(c["p"]),
              data_format=fmt)
    valid = (all(c["p"][i] <= c["k"][i] // 2 for i in range(nd))
             and all(c["sp"][i] + 2 * c["p"][i] >= c["k"][i] for i in range(nd)))
    flat_relu = c["relu"] and c["indices"] and c["index_format"] == "flat"      # flat indices cannot carry ReLU
    act = "relu" if c["relu"] else None
    res = valid_or_raises(valid and not flat_relu, op, fwd, xi, return_indices=c["indices"], activation=act,
                          index_format=c["index_format"], **kw)
    if not valid:
        valid_or_raises(False, bop, bwd, np.zeros((1,) * (nd + 2), c["dtype"]), xi, **kw)
        return
    if flat_relu:
        return
    OH = (sp2[0] + 2 * p2[0] - k2[0]) // s2[0] + 1
    OW = (sp2[1] + 2 * p2[1] - k2[1]) // s2[1] + 1
    gy4 = r.standard_normal((c["N"], c["C"], OH, OW)).astype(c["dtype"])
    x4 = x[:, :, None] if nd == 1 else x
    y_w, flat_w, pos_w, gx_w = pool_oracle(x4, k2, s2, p2, gy4, c["relu"])
    sq = (lambda a: a[:, :, 0]) if nd == 1 else (lambda a: a)  # noqa: E731
    back = (lambda a: a.transpose(inv)) if inv else (lambda a: a)  # noqa: E731
    y, idx = res if c["indices"] else (res, None)
    assert y.dtype == c["dtype"]
    np.testing.assert_array_equal(back(y), sq(y_w))
    if idx is not None:
        want = sq(flat_w) if c["index_format"] == "flat" else sq(pos_w)
        assert idx.dtype == (np.int64 if c["index_format"] == "flat" else np.uint8)
        np.testing.assert_array_equal(back(idx), want)
    gy = sq(gy4)
    gyi = np.ascontiguousarray(gy.transpose(perm)) if perm else gy
    if c["misalign"]:
        gyi = misaligned(gyi)
    if c["relu"] and idx is None:
        return  # without window indices the backward is max pooling's alone
    gx = bwd(gyi, xi, indices=idx, index_format=c["index_format"], **kw)
    assert gx.dtype == c["dtype"]
    assert_close("grad_x", back(gx), sq(gx_w), 1e-6)


test_pool_fuzz = fuzz_test(check_pool, pool_cases(), BACKENDS)
test_pool_fuzz_slow = fuzz_test(check_pool, pool_cases(), BACKENDS, slow=True)
