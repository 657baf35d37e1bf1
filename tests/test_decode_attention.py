"""_C.decode_attention: one decode step's attention of a decoder layer in one call (RoPE of the
new q and k, k and v written into the KV cache, attention over the cache in place, padding
slots masked). Checked bit for bit against the calls it replaces (rope_qk, the cache writes,
attention_forward on the same arrays), against a float64 NumPy oracle, under every ISA this
CPU runs, and for bad input (an error naming the argument). pyaiml.llm's graphs on it are
compared with the unfused path in tests/test_llm_models.py.

Tolerance against the oracle: 2e-5 absolute (float32 sums over at most 70 slots of values
of order 1).
"""
import math

import numpy as np
import pytest
from helpers import run_under_isa

from pyaiml import _backend

pytestmark = pytest.mark.skipif(not _backend.cpp_available(), reason="needs pyaiml._C")


def _case(rng, B, H, Hk, D, Tmax, start, layers=2, rope=True, padded=False):
    W = (H + 2 * Hk) * D + 5  # a wider row than the three parts (an unused tail)
    qkv = rng.standard_normal((B, 1, W)).astype(np.float32)
    ck = rng.standard_normal((layers, B, Hk, Tmax, D)).astype(np.float32)
    cv = rng.standard_normal((layers, B, Hk, Tmax, D)).astype(np.float32)
    cs = None
    if rope:
        ang = rng.uniform(0, 50, (B, 1, D // 2)).astype(np.float32)
        cs = (np.cos(ang), np.sin(ang))
    valid = None
    if padded:
        valid = np.ones((B, Tmax), bool)
        for b in range(B):
            valid[b, :min(b, start)] = False  # row b: its first b slots are left padding
    return qkv, ck, cv, cs, valid


def _unfused(C, qkv, ck, cv, layer, start, H, Hk, scale, cs, valid):
    """The separate calls pyaiml.llm made before: the same bits are the contract."""
    B, _, _ = qkv.shape
    D = ck.shape[-1]
    if cs is not None:
        q, k = C.rope_qk(qkv, cs[0], cs[1], H, Hk)  # q (B, H, 1, D), k (B, 1, Hk, D)
    else:
        q = np.ascontiguousarray(qkv[:, :, :H * D].reshape(B, 1, H, D).transpose(0, 2, 1, 3))
        k = qkv[:, :, H * D:(H + Hk) * D].reshape(B, 1, Hk, D)
    v = qkv[:, :, (H + Hk) * D:(H + 2 * Hk) * D].reshape(B, 1, Hk, D)
    ck[layer, :, :, start:start + 1] = k.transpose(0, 2, 1, 3)
    cv[layer, :, :, start:start + 1] = v.transpose(0, 2, 1, 3)
    T = start + 1
    m = None if valid is None else np.broadcast_to(valid[:, None, None, :T], (B, H, 1, T))
    o, _ = C.attention_forward(q, ck[layer, :, :, :T], cv[layer, :, :, :T], m, False, scale, False)
    return o.transpose(0, 2, 1, 3).reshape(B, 1, H * D)


def _oracle(qkv, ck, cv, layer, start, H, Hk, scale, cs, valid):
    B = qkv.shape[0]
    D = ck.shape[-1]
    x = qkv[:, 0].astype(np.float64)
    q = x[:, :H * D].reshape(B, H, D)
    k = x[:, H * D:(H + Hk) * D].reshape(B, Hk, D)
    v = x[:, (H + Hk) * D:(H + 2 * Hk) * D].reshape(B, Hk, D)
    if cs is not None:
        c, s = (a[:, 0, None, :].astype(np.float64) for a in cs)

        def rot(t):
            a, b = t[..., :D // 2], t[..., D // 2:]
            return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)

        q, k = rot(q), rot(k)
    K = ck[layer].astype(np.float64).copy()
    V = cv[layer].astype(np.float64).copy()
    K[:, :, start], V[:, :, start] = k, v
    T = start + 1
    out = np.zeros((B, H, D))
    for b in range(B):
        for h in range(H):
            g = h // (H // Hk)
            sc = K[b, g, :T] @ q[b, h] * scale
            if valid is not None:
                sc = np.where(valid[b, :T], sc, -np.inf)
            p = np.exp(sc - sc.max())
            out[b, h] = (p / p.sum()) @ V[b, g, :T]
    return out.reshape(B, 1, H * D)


CASES = [(1, 12, 4, 64, 80, 40, True, False), (3, 4, 2, 8, 16, 0, True, False), (3, 4, 2, 8, 16, 9, True, True),
         (2, 3, 3, 6, 70, 69, False, True), (1, 2, 1, 34, 9, 5, False, False), (4, 8, 8, 16, 33, 20, True, True)]


@pytest.mark.parametrize("B,H,Hk,D,Tmax,start,rope,padded", CASES)
def test_same_bits_as_the_separate_calls_and_the_oracle(B, H, Hk, D, Tmax, start, rope, padded, rng):
    C = _backend.native()
    qkv, ck, cv, cs, valid = _case(rng, B, H, Hk, D, Tmax, start, rope=rope, padded=padded)
    scale = 1.0 / math.sqrt(D)
    ck2, cv2 = ck.copy(), cv.copy()
    layer = 1
    args = (cs[0], cs[1]) if rope else (None, None)
    got = C.decode_attention(qkv, ck, cv, layer, start, H, Hk, scale, *args, valid)
    want = _unfused(C, qkv, ck2, cv2, layer, start, H, Hk, scale, cs, valid)
    assert got.shape == (B, 1, H * D) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(ck, ck2)  # the new k and v written alike, nothing else touched
    np.testing.assert_array_equal(cv, cv2)
    ref = _oracle(qkv, ck, cv, layer, start, H, Hk, scale, cs, valid)
    assert np.abs(got - ref).max() < 2e-5


def test_padding_slots_are_never_read(rng):
    # NaN in the padded slots: masked pairs are skipped (the kernel's NaN-safe rerun), so the
    # result is the oracle's over the real slots only
    C = _backend.native()
    qkv, ck, cv, cs, valid = _case(rng, 3, 4, 2, 8, 16, 9, rope=True, padded=True)
    ck[0][~valid[:, None, :].repeat(2, axis=1)] = np.nan
    cv[0][~valid[:, None, :].repeat(2, axis=1)] = np.nan
    got = C.decode_attention(qkv, ck, cv, 0, 9, 4, 2, 0.3, cs[0], cs[1], valid)
    assert np.isfinite(got).all()
    ref = _oracle(qkv, np.nan_to_num(ck), np.nan_to_num(cv), 0, 9, 4, 2, 0.3, cs, valid)
    assert np.abs(got - ref).max() < 2e-5


def test_bad_input_names_the_argument(rng):
    C = _backend.native()
    qkv, ck, cv, cs, valid = _case(rng, 2, 4, 2, 8, 16, 3, padded=True)
    c, s = cs
    cases = [
        ((qkv.astype(np.float64), ck, cv, 0, 3, 4, 2, 1.0, c, s, None), ValueError, "qkv must have dtype float32"),
        ((qkv, ck[0], cv, 0, 3, 4, 2, 1.0, c, s, None), ValueError, "cache_k must be 5-D"),
        ((qkv, ck, cv[:, :, :, ::2], 0, 3, 4, 2, 1.0, c, s, None), ValueError, "C-contiguous"),
        ((qkv, ck, cv, 2, 3, 4, 2, 1.0, c, s, None), ValueError, r"layer must lie in \[0, 2\)"),
        ((qkv, ck, cv, 0, 16, 4, 2, 1.0, c, s, None), ValueError, r"start must lie in \[0, 16\)"),
        ((qkv, ck, cv, 0, -1, 4, 2, 1.0, c, s, None), ValueError, "start must lie"),
        ((qkv, ck, cv, 0, 3, 6, 2, 1.0, c, s, None), ValueError, "qkv must be"),
        ((qkv, ck, cv, 0, 3, 4, 3, 1.0, c, s, None), ValueError, "multiple of Hk"),
        ((qkv[:1], ck, cv, 0, 3, 4, 2, 1.0, c, s, None), ValueError, "qkv must be"),
        ((qkv, ck, cv, 0, 3, 4, 2, 1.0, c, None, None), ValueError, "cos and sin must be given together"),
        ((qkv, ck, cv, 0, 3, 4, 2, 1.0, c[:, :, :2], s, None), ValueError, "cos and sin must be"),
        ((qkv, ck, cv, 0, 3, 4, 2, 1.0, c, s, valid[:, :5]), ValueError, "valid must be"),
        ((qkv, ck, np.zeros((2, 2, 2, 15, 8), np.float32), 0, 3, 4, 2, 1.0, c, s, None), ValueError, "the same shape"),
        ((qkv[:, :, ::2], ck, cv, 0, 3, 4, 2, 1.0, c, s, None), ValueError, "qkv"),
    ]
    for args, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            C.decode_attention(*args)
    ro = ck.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        C.decode_attention(qkv, ro, cv, 0, 3, 4, 2, 1.0, c, s, None)


@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_every_isa(isa):
    run_under_isa(isa, "import numpy as np\n"
                       "import test_decode_attention as t\n"
                       "rng = np.random.default_rng(0)\n"
                       "for c in t.CASES:\n"
                       "    t.test_same_bits_as_the_separate_calls_and_the_oracle(*c, rng)\n"
                       "t.test_padding_slots_are_never_read(rng)\n")


# ---------------------------------------------------------------- DecoderLayerPlan
def _panels(w):
    from pyaiml.llm.layers import to_panels

    return to_panels(np.ascontiguousarray(w, dtype=np.float32))


def _layer(rng, C, H, Hk, D, I, llama):
    """Random weights of one decoder layer, (in, out) layouts."""
    f = lambda *s: (rng.standard_normal(s) * 0.3).astype(np.float32)
    w = {"ln1_w": 1 + f(C), "ln2_w": 1 + f(C), "qkv": f(C, (H + 2 * Hk) * D), "o": f(H * D, C),
         "up": f(C, 2 * I if llama else I), "down": f(I, C)}
    if not llama:
        w.update(ln1_b=f(C), ln2_b=f(C), qkv_b=f((H + 2 * Hk) * D), o_b=f(C), up_b=f(I), down_b=f(C))
    return w


def _plan(C_mod, w, C, H, Hk, D, llama, eps=1e-5, scale=None):
    g = w.get
    return C_mod.DecoderLayerPlan(C, H, Hk, D, llama, eps, "swiglu" if llama else "gelu_tanh", llama,
                                  1 / math.sqrt(D) if scale is None else scale, w["ln1_w"], g("ln1_b"),
                                  _panels(w["qkv"]), g("qkv_b"), _panels(w["o"]), g("o_b"), w["ln2_w"], g("ln2_b"),
                                  _panels(w["up"]), w["up"].shape[1], g("up_b"), _panels(w["down"]), g("down_b"))


def _layer_oracle(h, w, cache_k, cache_v, layer, start, H, Hk, D, llama, cs, valid, eps=1e-5):
    h = h.astype(np.float64)

    def norm(x, wt, b):
        if llama:
            return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * wt
        mu = x.mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * wt + b

    def lin(x, name):
        y = x @ w[name].astype(np.float64)
        return y + w[name + "_b"] if name + "_b" in w else y

    qkv = lin(norm(h, w["ln1_w"], w.get("ln1_b")), "qkv")[:, None].astype(np.float32)
    att = _oracle(qkv, cache_k, cache_v, layer, start, H, Hk, 1 / math.sqrt(D), cs, valid)[:, 0]
    h1 = h + lin(att, "o")
    u = lin(norm(h1, w["ln2_w"], w.get("ln2_b")), "up")
    if llama:
        I = u.shape[1] // 2
        g = u[:, :I] / (1 + np.exp(-u[:, :I])) * u[:, I:]
    else:
        g = 0.5 * u * (1 + np.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))
    return h1 + lin(g, "down")


@pytest.mark.parametrize("llama", [True, False])
@pytest.mark.parametrize("B,H,Hk,D,C,I,start", [(1, 4, 2, 8, 32, 48, 6), (3, 3, 3, 6, 18, 20, 0), (10, 2, 1, 16, 70, 33, 3)])
def test_layer_plan_against_a_float64_layer(llama, B, H, Hk, D, C, I, start, rng):
    Cm = _backend.native()
    if not llama:
        Hk = H
    w = _layer(rng, C, H, Hk, D, I, llama)
    _, ck, cv, cs, valid = _case(rng, B, H, Hk, D, 12, start, rope=llama, padded=True)
    h = rng.standard_normal((B, C)).astype(np.float32)
    ref = _layer_oracle(h, w, ck.copy(), cv.copy(), 1, start, H, Hk, D, llama, cs, valid)
    plan = _plan(Cm, w, C, H, Hk, D, llama)
    got = plan.run(h, ck, cv, 1, start, *(cs if llama else (None, None)), valid)
    assert got.shape == (B, C) and got.dtype == np.float32
    assert np.abs(got - ref).max() < 1e-4 * (1 + np.abs(ref).max())


def test_layer_plan_bad_input(rng):
    Cm = _backend.native()
    C, H, Hk, D, I = 32, 4, 2, 8, 48
    w = _layer(rng, C, H, Hk, D, I, True)
    plan = _plan(Cm, w, C, H, Hk, D, True)
    _, ck, cv, cs, _ = _case(rng, 2, H, Hk, D, 12, 3)
    h = np.zeros((2, C), np.float32)
    with pytest.raises(ValueError, match=r"h must be C-contiguous \(B, 32\)"):
        plan.run(h[:, :16], ck, cv, 0, 3, *cs)
    with pytest.raises(ValueError, match="takes RoPE tables"):
        plan.run(h, ck, cv, 0, 3)
    with pytest.raises(ValueError, match="the cache must be"):
        plan.run(h[:1], ck, cv, 0, 3, *cs)
    with pytest.raises(ValueError, match="start must lie"):
        plan.run(h, ck, cv, 0, 12, *cs)
    bad = dict(w, qkv=w["qkv"][:-1])
    with pytest.raises(ValueError, match="qkv must be packed as"):
        _plan(Cm, bad, C, H, Hk, D, True)
    with pytest.raises(ValueError, match="act must be 'swiglu' or 'gelu_tanh'"):
        Cm.DecoderLayerPlan(C, H, Hk, D, True, 1e-5, "relu", True, 1.0, w["ln1_w"], None, _panels(w["qkv"]), None,
                            _panels(w["o"]), None, w["ln2_w"], None, _panels(w["up"]), 2 * I, None,
                            _panels(w["down"]), None)
    with pytest.raises(ValueError, match="RMS norm takes no bias"):
        Cm.DecoderLayerPlan(C, H, Hk, D, True, 1e-5, "swiglu", True, 1.0, w["ln1_w"], w["ln1_w"], _panels(w["qkv"]),
                            None, _panels(w["o"]), None, w["ln2_w"], None, _panels(w["up"]), 2 * I, None,
                            _panels(w["down"]), None)
    with pytest.raises(ValueError, match="ln2_w must be C-contiguous with shape"):
        Cm.DecoderLayerPlan(C, H, Hk, D, True, 1e-5, "swiglu", True, 1.0, w["ln1_w"], None, _panels(w["qkv"]), None,
                            _panels(w["o"]), None, w["ln2_w"][:-1], None, _panels(w["up"]), 2 * I, None,
                            _panels(w["down"]), None)


def test_layer_plan_int8_products(rng):
    # int8 products as QLinear holds them ((q, scale, activations)); the plan's output equals
    # the separate C++ calls' (norms, _C.linear_w8a8_packed / linear_q8_packed, attention, adds)
    from pyaiml.llm.quant import QLinear, quantize_q8_0

    Cm = _backend.native()
    C, H, Hk, D, I, B, start = 64, 4, 2, 16, 96, 2, 5
    w = _layer(rng, C, H, Hk, D, I, True)
    _, ck, cv, cs, valid = _case(rng, B, H, Hk, D, 12, start, padded=True)
    h = rng.standard_normal((B, C)).astype(np.float32)
    for acts in ("int8", "float"):
        q = {k: QLinear(*quantize_q8_0(w[k], axis=0), activations=acts) for k in ("qkv", "o", "up", "down")}
        spec = {k: (v.qp, v.sp, acts) for k, v in q.items()}
        plan = Cm.DecoderLayerPlan(C, H, Hk, D, True, 1e-5, "swiglu", True, 1 / math.sqrt(D), w["ln1_w"], None,
                                   spec["qkv"], None, spec["o"], None, w["ln2_w"], None, spec["up"], 2 * I, None,
                                   spec["down"], None)
        ck2, cv2 = ck.copy(), cv.copy()
        got = plan.run(h, ck, cv, 0, start, *cs, valid)
        prod = Cm.linear_w8a8_packed if acts == "int8" else Cm.linear_q8_packed  # the C++ kernels, any backend

        def lin(k, x, prod=prod, q=q):
            return prod(x, q[k].qp, q[k].sp, q[k].n, None)

        a = Cm.norm(h, w["ln1_w"], None, 1e-5, True)
        att = Cm.decode_attention(lin("qkv", a)[:, None], ck2, cv2, 0, start, H, Hk, 1 / math.sqrt(D), *cs, valid)[:, 0]
        h1 = h + lin("o", att)
        want = h1 + lin("down", Cm.swiglu(lin("up", Cm.norm(h1, w["ln2_w"], None, 1e-5, True))))
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(ck, ck2)
    bad = (q["up"].qp, q["up"].sp.astype(np.float32), "int8")
    with pytest.raises(ValueError, match="up's scales must be float16"):
        Cm.DecoderLayerPlan(C, H, Hk, D, True, 1e-5, "swiglu", True, 1.0, w["ln1_w"], None, spec["qkv"], None,
                            spec["o"], None, w["ln2_w"], None, bad, 2 * I, None, spec["down"], None)
    with pytest.raises(ValueError, match="activations must be 'int8' or 'float'"):
        Cm.DecoderLayerPlan(C, H, Hk, D, True, 1e-5, "swiglu", True, 1.0, w["ln1_w"], None, spec["qkv"], None,
                            spec["o"], None, w["ln2_w"], None, (q["up"].qp, q["up"].sp, "int4"), 2 * I, None,
                            spec["down"], None)


@pytest.mark.parametrize("llama", [True, False])
def test_layer_plan_rows_on_their_own_caches(llama, rng):
    # run_rows: each row has its own cache and slot (the server's batch); every row equals,
    # bit for bit, run() of that row alone on its cache, and the caches get the same slots
    Cm = _backend.native()
    C, H, Hk, D, I = 32, 4, 2 if llama else 4, 8, 48
    w = _layer(rng, C, H, Hk, D, I, llama)
    plan = _plan(Cm, w, C, H, Hk, D, llama)
    starts = [0, 7, 3, 12]
    caches = [_case(rng, 1, H, Hk, D, s + 1 + b, s, rope=llama) for b, s in enumerate(starts)]
    B = len(starts)
    h = rng.standard_normal((B, C)).astype(np.float32)
    cos = np.concatenate([c[3][0] for c in caches]) if llama else None
    sin = np.concatenate([c[3][1] for c in caches]) if llama else None
    ks = [c[1] for c in caches]
    vs = [c[2] for c in caches]
    k2, v2 = [k.copy() for k in ks], [v.copy() for v in vs]
    got = plan.run_rows(h, ks, vs, 1, starts, cos, sin)
    for b, s in enumerate(starts):
        cs = (cos[b:b + 1], sin[b:b + 1]) if llama else (None, None)
        np.testing.assert_array_equal(got[b:b + 1], plan.run(h[b:b + 1], k2[b], v2[b], 1, s, *cs))
        np.testing.assert_array_equal(ks[b], k2[b])
        np.testing.assert_array_equal(vs[b], v2[b])
    with pytest.raises(ValueError, match="one entry per row of h"):
        plan.run_rows(h, ks[:3], vs, 1, starts, cos, sin)
    with pytest.raises(ValueError, match=r"caches_k\[1\] must be \(layers, 1"):
        plan.run_rows(h, [ks[0], np.zeros((2, 2, Hk, 9, D), np.float32)] + ks[2:],
                      [vs[0], np.zeros((2, 2, Hk, 9, D), np.float32)] + vs[2:], 1, starts, cos, sin)
    with pytest.raises(ValueError, match="start must lie"):
        plan.run_rows(h, ks, vs, 1, [0, 7, 3, 99], cos, sin)
