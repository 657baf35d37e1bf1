"""Fuzz tests of conv1d / conv2d and their backward (hypothesis), every backend.

Drawn: batch, channels, groups (sometimes not dividing the channels), kernel sizes,
strides, dilations, padding (int, per-axis tuple, "same", "valid"; sometimes more than the
input), data format (channels first or last), dtype (float32; float64, which runs through
pyaiml.reference; sometimes mixed), fused ReLU, the backward's output_mask, arrays whose
data is not 64-byte aligned. Valid calls are compared with conv_oracle below, invalid ones
must raise ValueError/TypeError naming the op.

Oracle: every output's receptive field gathered by index arithmetic (out-of-range taps read
0), one einsum per group; grad_w by the same gather, grad_x scattered back with np.add.at;
float64. It shares no code with pyaiml.reference.conv (shifted slices of a padded copy).
Tolerance: the rule of tests/test_conv.py, 3e-5 * sqrt(terms) * max(1, max|want|) + 1e-5 for
float32 (1e-12 scale for float64), terms the length of the longest sum.

Run: PYTHONPATH=$PWD pytest -q tests/test_fuzz_conv.py (50 examples per backend);
PYAIML_FUZZ=slow for 2000, or ``pytest -m slow tests/test_fuzz_conv.py``.
"""
import numpy as np
from hypothesis import strategies as st

import pyaiml.ops as ops
from fuzzing import SEEDS, assert_close, fuzz_test, misaligned, valid_or_raises
from helpers import backends_for

BACKENDS = backends_for("conv2d")


def _pads(padding, k, d, s):
    """Resolved (before, after) padding per axis, torch's rules; None if padding='same'
    with a stride > 1 (invalid)."""
    nd = len(k)
    if padding == "valid":
        return [(0, 0)] * nd
    if padding == "same":
        if any(e != 1 for e in s):
            return None
        return [((d[i] * (k[i] - 1)) // 2, d[i] * (k[i] - 1) - (d[i] * (k[i] - 1)) // 2) for i in range(nd)]
    p = (padding,) * nd if isinstance(padding, int) else padding
    return [(e, e) for e in p]


def conv_oracle(x, w, b, s, pads, d, G, gy=None):
    """x (N, C, H, W), w (OC, C/G, KH, KW), b (OC,): (y, grad_x, grad_w, grad_b) in float64,
    channels first; the gradients only when gy is given."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    N, C, H, W = x.shape
    OC, Cg, KH, KW = w.shape
    OCg = OC // G
    (pt, pb), (pl, pr) = pads
    OH = (H + pt + pb - d[0] * (KH - 1) - 1) // s[0] + 1
    OW = (W + pl + pr - d[1] * (KW - 1) - 1) // s[1] + 1
    ih = (np.arange(OH) * s[0] - pt)[:, None] + np.arange(KH) * d[0]      # (OH, KH)
    iw = (np.arange(OW) * s[1] - pl)[:, None] + np.arange(KW) * d[1]      # (OW, KW)
    inside = ((ih >= 0) & (ih < H))[:, :, None, None] & ((iw >= 0) & (iw < W))[None, None]
    IH = np.clip(ih, 0, H - 1)[:, :, None, None]
    IW = np.clip(iw, 0, W - 1)[None, None]
    cols = x[:, :, IH, IW] * inside                                        # (N, C, OH, KH, OW, KW)
    y = np.zeros((N, OC, OH, OW))
    for g in range(G):
        o, c = slice(g * OCg, (g + 1) * OCg), slice(g * Cg, (g + 1) * Cg)
        y[:, o] = np.einsum("ncakbl,ockl->noab", cols[:, c], w[o])
    y += np.asarray(b, np.float64)[None, :, None, None]
    if gy is None:
        return y
    gy = gy.astype(np.float64)
    gw = np.zeros_like(w)
    gx = np.zeros_like(x)
    for g in range(G):
        o, c = slice(g * OCg, (g + 1) * OCg), slice(g * Cg, (g + 1) * Cg)
        gw[o] = np.einsum("noab,ncakbl->ockl", gy[:, o], cols[:, c])
        dcols = np.einsum("noab,ockl->ncakbl", gy[:, o], w[o]) * inside
        np.add.at(gx, (slice(None), c, IH, IW), dcols)
    return y, gx, gw, gy.sum(axis=(0, 2, 3))


@st.composite
def conv_cases(draw):
    nd = draw(st.sampled_from([1, 2]))
    G = draw(st.integers(1, 3))
    groups_ok = draw(st.integers(0, 9)) > 0            # 1 in 10: channels that groups may not divide
    C = G * draw(st.integers(1, 3)) if groups_ok else draw(st.integers(1, 6))
    OC = G * draw(st.integers(1, 3)) if groups_ok else draw(st.integers(1, 6))
    Cw = C // G if groups_ok else draw(st.integers(1, 3))
    k = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    d = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    sp = tuple(draw(st.integers(1, 11)) for _ in range(nd))
    kind = draw(st.sampled_from(["int", "tuple", "same", "valid"]))
    if kind == "int":
        padding = draw(st.integers(0, 3))
    elif kind == "tuple":
        padding = tuple(draw(st.integers(0, 3)) for _ in range(nd))
    else:
        padding = kind
    if kind == "same" and draw(st.integers(0, 9)):  # 'same' needs stride 1; 1 in 10 tries another
        s = (1,) * nd
    else:
        s = tuple(draw(st.sampled_from([1, 1, 2, 3])) for _ in range(nd))
    dtype = draw(st.sampled_from([np.float32, np.float32, np.float32, np.float64]))
    return dict(nd=nd, N=draw(st.integers(1, 3)), C=C, OC=OC, Cw=Cw, G=G, k=k, s=s, d=d, sp=sp,
                padding=padding, cl=draw(st.booleans()), dtype=dtype,
                wdtype=dtype if draw(st.integers(0, 19)) else np.float64 if dtype == np.float32 else np.float32,
                bias=draw(st.booleans()), relu=draw(st.booleans()),
                mask=draw(st.sampled_from([None, (True, True, True), (False, True, True), (True, False, False),
                                           (False, False, True)])),
                misalign=draw(st.integers(0, 3)) == 0, seed=draw(SEEDS))


def _valid(c, pads):
    if c["wdtype"] != c["dtype"] or c["C"] % c["G"] or c["OC"] % c["G"] or c["Cw"] * c["G"] != c["C"]:
        return False
    if pads is None:
        return False
    return all(c["sp"][i] + sum(pads[i]) >= c["d"][i] * (c["k"][i] - 1) + 1 for i in range(c["nd"]))


def _tol(dtype, want, terms):
    eps = 3e-5 if dtype == np.float32 else 1e-12
    return eps * np.sqrt(max(terms, 1)) * max(1.0, float(np.abs(want).max()) if want.size else 1.0) + eps / 3


def check_conv(backend, c):
    """conv1d/conv2d forward (with or without fused ReLU) and backward against conv_oracle,
    or ValueError/TypeError for invalid arguments."""
    nd, r = c["nd"], np.random.default_rng(c["seed"])
    op, bop = ("conv1d", "conv1d_backward") if nd == 1 else ("conv2d", "conv2d_backward")
    fwd, bwd = (ops.conv1d, ops.conv1d_backward) if nd == 1 else (ops.conv2d, ops.conv2d_backward)
    fmt = ("NLC" if c["cl"] else "NCL") if nd == 1 else ("NHWC" if c["cl"] else "NCHW")
    x = r.standard_normal((c["N"], c["C"]) + c["sp"]).astype(c["dtype"])           # channels first
    w = r.standard_normal((c["OC"], c["Cw"]) + c["k"]).astype(c["wdtype"])
    b = r.standard_normal(c["OC"]).astype(c["dtype"]) if c["bias"] else None
    stride, dilation = (c["s"][0], c["d"][0]) if nd == 1 else (c["s"], c["d"])
    perm = ((0, 2, 1) if nd == 1 else (0, 2, 3, 1)) if c["cl"] else None
    inv = ((0, 2, 1) if nd == 1 else (0, 3, 1, 2)) if c["cl"] else None
    xi = np.ascontiguousarray(x.transpose(perm)) if perm else x
    if c["misalign"]:
        xi, w = misaligned(xi), misaligned(w)
    pads = _pads(c["padding"], c["k"], c["d"], c["s"])
    valid = _valid(c, pads)
    kw = dict(stride=stride, padding=c["padding"], dilation=dilation, groups=c["G"], data_format=fmt)
    y = valid_or_raises(valid, op, fwd, xi, w, b, activation="relu" if c["relu"] else None, **kw)
    if not valid:
        gy = np.zeros((1,) * (nd + 2), c["dtype"])
        valid_or_raises(False, bop, bwd, gy, xi, w, **kw)
        return
    # the oracle in 2-D channels first (1-D as H = 1)
    x4, w4 = (x[:, :, None], w[:, :, None]) if nd == 1 else (x, w)
    p4 = [(0, 0)] + pads if nd == 1 else pads
    s4, d4 = ((1,) + c["s"], (1,) + c["d"]) if nd == 1 else (c["s"], c["d"])
    zero_b = np.zeros(c["OC"])
    gy4 = r.standard_normal(conv_oracle(x4, w4, zero_b, s4, p4, d4, c["G"]).shape)
    want, gx_w, gw_w, gb_w = conv_oracle(x4, w4, b if b is not None else zero_b, s4, p4, d4, c["G"], gy4)
    if c["relu"]:
        want = np.maximum(want, 0)
    if nd == 1:
        want, gy4, gx_w, gw_w = want[:, :, 0], gy4[:, :, 0], gx_w[:, :, 0], gw_w[:, :, 0]
    terms = c["Cw"] * int(np.prod(c["k"]))
    assert y.dtype == c["dtype"]
    assert_close("y", y.transpose(inv) if inv else y, want, _tol(c["dtype"], want, terms))
    gy = gy4.astype(c["dtype"])
    gyi = np.ascontiguousarray(gy.transpose(perm)) if perm else gy
    if c["misalign"]:
        gyi = misaligned(gyi)
    got = bwd(gyi, xi, w, output_mask=c["mask"], **kw)
    n_terms = c["N"] * int(np.prod(gy.shape[2:]))
    mask = c["mask"] or (True, True, True)
    x_terms = (c["OC"] // c["G"]) * int(np.prod(c["k"]))
    for name, g, wnt, terms, m in (("grad_x", got[0], gx_w, x_terms, mask[0]),
                                   ("grad_w", got[1], gw_w, n_terms, mask[1]),
                                   ("grad_b", got[2], gb_w, n_terms, mask[2])):
        if not m:
            assert g is None, f"{name} was not asked for"
            continue
        assert g.dtype == c["dtype"], name
        if name == "grad_x" and inv:
            g = g.transpose(inv)
        assert_close(name, g, wnt, _tol(c["dtype"], wnt, terms))


test_conv_fuzz = fuzz_test(check_conv, conv_cases(), BACKENDS)
test_conv_fuzz_slow = fuzz_test(check_conv, conv_cases(), BACKENDS, slow=True)
