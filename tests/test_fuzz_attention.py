"""Fuzz tests of scaled_dot_product_attention and its backward (hypothesis), every backend.

Drawn: 0-2 leading dimensions, GQA (k/v heads dividing q's, or not: invalid), Lq and Lk
from 0 (empty results, rows with no visible key), head dims D and Dv, masks (none, bool,
additive float with -inf entries) of every broadcastable shape (and some that do not
broadcast), is_causal, scale (default or any finite value, negative included), dtype
(float32; float64, which runs through pyaiml.reference; sometimes mixed), the backward with
or without the forward's out and lse, arrays whose data is not 64-byte aligned, and a few
more invalid calls (dropout_p > 0, D or L mismatches, integer masks). Valid calls are
compared with attention_oracle below, invalid ones must raise ValueError/TypeError naming
the op.

Oracle: the definition in float64 over the full (..., Lq, Lk) score matrix (k/v heads
repeated for GQA), pyaiml's documented conventions for rows with no visible key (zero
output and gradients, lse = +inf), the analytic softmax backward. Shares no code with
pyaiml.reference.attention.
Tolerance: that of tests/test_attention.py, rtol 1e-3 and atol 1e-4 * (1 + max|want|) for
float32; 1e-9 for float64.

Run: PYTHONPATH=$PWD pytest -q tests/test_fuzz_attention.py (50 examples per backend);
PYAIML_FUZZ=slow for 2000, or ``pytest -m slow tests/test_fuzz_attention.py``.
"""
import math

import numpy as np
from hypothesis import strategies as st

import pyaiml.ops as ops
from fuzzing import SEEDS, assert_close, fuzz_test, misaligned, valid_or_raises
from helpers import backends_for

BACKENDS = backends_for("attention_forward")
OP = "scaled_dot_product_attention"


def attention_oracle(q, k, v, mask, causal, scale, g):
    """(out, lse, dq, dk, dv) of softmax(q k^T * scale + mask) v by definition, float64.
    k and v may have fewer heads (dim -3) than q, dividing them (GQA)."""
    q, k, v, g = (a.astype(np.float64) for a in (q, k, v, g))
    G = q.shape[-3] // k.shape[-3] if q.ndim >= 3 else 1
    kx, vx = (np.repeat(a, G, axis=-3) for a in (k, v)) if G > 1 else (k, v)
    Lq, Lk = q.shape[-2], k.shape[-2]
    s = np.einsum("...id,...jd->...ij", q, kx) * scale
    vis = np.ones(s.shape, bool)
    if causal:
        vis &= np.tril(np.ones((Lq, Lk), bool))
    if mask is not None:
        if mask.dtype == np.bool_:
            vis &= mask
        else:
            vis &= mask != -np.inf
            s = s + np.where(vis, mask.astype(np.float64), 0.0)
    s = np.where(vis, s, -np.inf)
    live = vis.any(-1)
    mx = np.where(live, np.max(s, axis=-1, initial=-np.inf), 0.0)
    e = np.where(vis, np.exp(s - mx[..., None]), 0.0)
    den = e.sum(-1)
    p = e / np.where(live, den, 1.0)[..., None]
    lse = np.where(live, mx + np.log(np.where(live, den, 1.0)), np.inf)
    out = np.einsum("...ij,...jd->...id", p, vx)
    dp = np.einsum("...id,...jd->...ij", g, vx)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    dq = np.einsum("...ij,...jd->...id", ds, kx) * scale
    dk = np.einsum("...ij,...id->...jd", ds, q) * scale
    dv = np.einsum("...ij,...id->...jd", p, g)
    if G > 1:
        dk, dv = (a.reshape(a.shape[:-3] + (k.shape[-3], G) + a.shape[-2:]).sum(-3) for a in (dk, dv))
    return out, lse, dq, dk, dv


@st.composite
def attention_cases(draw):
    nlead = draw(st.integers(0, 2))
    gqa = draw(st.booleans()) and nlead > 0
    Hk = draw(st.integers(1, 3)) if nlead else 1
    Hq = Hk * draw(st.integers(1, 3)) if gqa else Hk
    if gqa and not draw(st.integers(0, 9)):
        Hk = draw(st.integers(1, 4))                       # may not divide Hq: invalid
    lead = ((draw(st.integers(1, 2)),) if nlead == 2 else ()) + ((Hq,) if nlead else ())
    klead = lead[:-1] + (Hk,) if nlead else ()
    Lq, Lk = draw(st.integers(0, 9)), draw(st.integers(0, 9))
    full = lead + (Lq, Lk)
    kind = draw(st.sampled_from([None, "bool", "float"]))
    mshape = None
    if kind is not None:
        keep = draw(st.integers(0, len(full)))             # leading dimensions dropped
        mshape = tuple(e if draw(st.booleans()) else 1 for e in full[len(full) - keep:])
        if mshape and not draw(st.integers(0, 9)):         # 1 in 10: a shape that does not broadcast
            i = draw(st.integers(0, len(mshape) - 1))
            mshape = mshape[:i] + (full[len(full) - keep + i] + 1,) + mshape[i + 1:]
    broken = draw(st.sampled_from([None] * 16 + ["dropout", "D", "Lv", "mask_int", "dtype", "gqa_2d"]))
    return dict(lead=lead, klead=klead, gqa=gqa or broken == "gqa_2d", Lq=Lq, Lk=Lk, D=draw(st.integers(1, 8)),
                Dv=draw(st.integers(1, 8)), kind=kind, mshape=mshape, causal=draw(st.booleans()),
                scale=draw(st.one_of(st.none(), st.floats(-1.5, 1.5, allow_nan=False))),
                dtype=draw(st.sampled_from([np.float32, np.float32, np.float32, np.float64])),
                keep_out=draw(st.booleans()), broken=broken, misalign=draw(st.integers(0, 3)) == 0,
                seed=draw(SEEDS))


def _valid(c):
    lead, klead, Lq, Lk = c["lead"], c["klead"], c["Lq"], c["Lk"]
    if c["broken"] is not None:
        return False
    if c["gqa"] and (lead[-1] % klead[-1]):
        return False
    if c["mshape"] is not None:
        try:
            np.broadcast_shapes(c["mshape"], lead + (Lq, Lk))
        except ValueError:
            return False
        if np.broadcast_shapes(c["mshape"], lead + (Lq, Lk)) != lead + (Lq, Lk):
            return False
    return True


def check_attention(backend, c):
    """scaled_dot_product_attention (out, lse) and its backward against attention_oracle, or
    ValueError/TypeError for invalid arguments."""
    r = np.random.default_rng(c["seed"])
    dt, broken = c["dtype"], c["broken"]
    D, Dv, Lq, Lk = c["D"], c["Dv"], c["Lq"], c["Lk"]
    lead, klead = c["lead"], c["klead"]
    if broken == "gqa_2d":
        lead = klead = ()
    q = r.standard_normal(lead + (Lq, D)).astype(dt)
    other = np.float32 if dt == np.float64 else np.float64
    k = r.standard_normal(klead + (Lk, D + (broken == "D"))).astype(other if broken == "dtype" else dt)
    v = r.standard_normal(klead + (Lk + (broken == "Lv"), Dv)).astype(dt)
    g = r.standard_normal(lead + (Lq, Dv)).astype(dt)
    if c["misalign"]:
        q, k, v, g = (misaligned(a) for a in (q, k, v, g))
    mask = None
    if c["kind"] == "bool":
        mask = r.random(c["mshape"]) < 0.7
    elif c["kind"] == "float":
        mask = np.where(r.random(c["mshape"]) < 0.7, r.standard_normal(c["mshape"]), -np.inf).astype(dt)
    if broken == "mask_int":
        mask = np.ones(c["mshape"] or (Lq, Lk), np.int64)
    kw = dict(attn_mask=mask, is_causal=c["causal"], scale=c["scale"], enable_gqa=c["gqa"])
    valid = _valid(c)
    res = valid_or_raises(valid, OP, ops.scaled_dot_product_attention, q, k, v,
                          dropout_p=0.3 if broken == "dropout" else 0.0, return_lse=True, **kw)
    if not valid:
        if broken != "dropout":
            valid_or_raises(False, OP + "_backward", ops.scaled_dot_product_attention_backward, g, q, k, v, **kw)
        return
    out, lse = res
    scale = 1 / math.sqrt(D) if c["scale"] is None else c["scale"]
    want = attention_oracle(q, k, v, mask, c["causal"], scale, g)
    extra = dict(out=out, lse=lse) if c["keep_out"] else {}
    grads = ops.scaled_dot_product_attention_backward(g, q, k, v, **kw, **extra)
    for name, got, wnt in zip(("out", "lse", "dq", "dk", "dv"), (out, lse) + tuple(grads), want):
        assert got.dtype == dt, name
        big = float(np.abs(wnt[np.isfinite(wnt)]).max()) if np.isfinite(wnt).any() else 0.0
        if dt == np.float32:
            assert_close(name, got, wnt, 1e-4 * (1 + big), 1e-3)
        else:
            assert_close(name, got, wnt, 1e-9 * (1 + big), 1e-9)


test_attention_fuzz = fuzz_test(check_attention, attention_cases(), BACKENDS)
test_attention_fuzz_slow = fuzz_test(check_attention, attention_cases(), BACKENDS, slow=True)
