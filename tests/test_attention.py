"""scaled_dot_product_attention and its backward: every backend against torch (float64
autograd) on awkward shapes, every mask kind, causal, GQA, decode; all-masked rows, NaN in
masked positions, bad input, thread-count independence, every ISA.

Tolerance: float32 softmax-weighted sums of O(L) terms of size O(1): errors ~1e-6 measured
(C++ tiles, base-2 exponent polynomial); we allow rtol 1e-3 and atol 1e-4 * (1 + max|ref|),
far below any indexing or masking bug (errors O(0.1) and up).
The big shapes and the memory high-water test are marked slow.
Without torch (or with PYAIML_TEST_NO_TORCH=1) the C++ and Numba backends are checked
against pyaiml.reference.attention instead, and the NumPy backend, which is that reference,
is skipped; the naive-vs-fast, thread-count and every-ISA checks need no torch.
"""
import itertools
import math

import numpy as np
import pytest

import pyaiml
import pyaiml.ops as ops
from pyaiml import _backend
from helpers import backends_for, optional_torch, oracle_for, run_py
from pyaiml.reference import attention as R

torch = optional_torch()
F = torch.nn.functional if torch is not None else None

BACKENDS = backends_for("attention_forward")


def close(got, want, what=""):
    want = np.asarray(want, dtype=np.float64)
    atol = 1e-4 * (1.0 + (np.abs(want).max() if want.size else 0.0))
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=1e-3, atol=atol, err_msg=what)


def make_mask(kind, lead, Lq, Lk, rng):
    """A mask of `kind` that leaves key 0 visible in every row (torch gives NaN otherwise)."""
    B = lead[0] if lead else 1
    if kind is None:
        return None
    if kind == "bool2d":
        m = rng.random((Lq, Lk)) > 0.4
    elif kind == "bool_full":
        m = rng.random(lead + (Lq, Lk)) > 0.4
    elif kind == "bool_pad":  # key padding, broadcast over heads and queries (stride 0 on Lq)
        m = rng.random((B,) + (1,) * (len(lead) - 1) + (1, Lk)) > 0.3 if lead else rng.random((1, Lk)) > 0.3
    elif kind == "float":
        m = np.where(rng.random((1, Lq, Lk)) > 0.3, rng.standard_normal((1, Lq, Lk)), -np.inf).astype(np.float32)
    elif kind == "float_col":  # broadcast over keys (stride 0 on Lk)
        m = rng.standard_normal((Lq, 1)).astype(np.float32)
    else:
        raise ValueError(kind)
    m = np.array(m)
    if m.dtype == np.bool_:
        m[..., 0] = True
    elif kind == "float":
        m[..., 0] = 0.0
    return m


def torch_ref(q, k, v, mask, causal, scale, gqa, g):
    """float64 torch autograd: (out, lse, dq, dk, dv). Causal + mask combined into one mask."""
    tq, tk, tv = (torch.tensor(np.ascontiguousarray(x), dtype=torch.float64, requires_grad=True) for x in (q, k, v))
    Lq, Lk = q.shape[-2], k.shape[-2]
    tm = None
    if mask is not None:
        tm = torch.tensor(mask) if mask.dtype == np.bool_ else torch.tensor(mask.astype(np.float64))
    if causal and tm is not None:
        tri = torch.ones(Lq, Lk, dtype=torch.bool).tril()
        tm = (tm & tri) if tm.dtype == torch.bool else tm.masked_fill(~tri, -math.inf)
        causal = False
    out = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm, is_causal=causal, scale=scale, enable_gqa=gqa)
    out.backward(torch.tensor(g, dtype=torch.float64))
    # lse of the scores, with the same masking
    kk = tk.detach()
    if gqa and q.ndim >= 3 and q.shape[-3] != k.shape[-3]:
        kk = kk.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
    s = tq.detach() @ kk.transpose(-1, -2) * scale
    if tm is not None:
        s = s.masked_fill(~tm, -math.inf) if tm.dtype == torch.bool else s + tm
    if causal:
        s = s.masked_fill(~torch.ones(Lq, Lk, dtype=torch.bool).tril(), -math.inf)
    lse = torch.logsumexp(s, dim=-1)
    return out.detach().numpy(), lse.numpy(), tq.grad.numpy(), tk.grad.numpy(), tv.grad.numpy()


def reference_ref(q, k, v, mask, causal, scale, gqa, g):
    """torch_ref's results from pyaiml.reference.attention (float64), on its (N, H, L, D) form."""
    lead, klead = q.shape[:-2], k.shape[:-2]
    Lq, Lk = q.shape[-2], k.shape[-2]
    N = int(np.prod(lead[:-1])) if len(lead) > 1 else 1
    H, Hk = (lead[-1] if lead else 1), (klead[-1] if klead else 1)
    q4, k4, v4, g4 = (np.asarray(a, np.float64).reshape((N, h) + a.shape[-2:])
                      for a, h in ((q, H), (k, Hk), (v, Hk), (g, H)))
    m4 = None
    if mask is not None:
        m4 = np.ascontiguousarray(np.broadcast_to(mask, lead + (Lq, Lk))).reshape(N, H, Lq, Lk)
        m4 = m4 if m4.dtype == np.bool_ else m4.astype(np.float64)
    out, lse = R.attention_forward(q4, k4, v4, m4, causal, scale)
    dq, dk, dv = R.attention_backward(g4, q4, k4, v4, m4, causal, scale)
    return (out.reshape(lead + out.shape[-2:]), lse.reshape(lead + (Lq,)), dq.reshape(q.shape), dk.reshape(k.shape),
            dv.reshape(v.shape))


def oracle_ref(backend, *args):
    """torch_ref where torch is installed, else reference_ref (skips the numpy backend)."""
    return (torch_ref if oracle_for(backend, torch) == "torch" else reference_ref)(*args)


def run_backend(backend, monkeypatch, *args, **kw):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    return args, kw


# (lead_q, lead_kv, Lq, Lk, D, Dv, mask kind, causal); gqa when the head dims differ.
LS = [1, 7, 33, 97, 257]
DS = [1, 3, 64, 80, 128, 256]
MASKS = [None, "bool2d", "bool_full", "bool_pad", "float", "float_col"]
LEADS = [((2, 3), (2, 3)), ((2, 4), (2, 2)), ((2, 2, 3), (2, 2, 3)), ((3,), (3,)), ((1, 6), (1, 1))]


def _sample_cases(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n):
        lq, lkv = LEADS[t % len(LEADS)]
        Lq = LS[rng.integers(len(LS))]
        Lk = LS[rng.integers(len(LS))] if t % 3 else Lq
        D = DS[rng.integers(len(DS))]
        Dv = D if t % 4 else DS[rng.integers(len(DS))]
        mk = MASKS[t % len(MASKS)]
        causal = bool(t % 2)
        # keep the default run fast: no 257 x 257 x 256 numba/numpy cases
        if Lq * Lk * max(D, Dv) > 257 * 97 * 128:
            D = Dv = 64
        out.append((lq, lkv, Lq, Lk, D, Dv, mk, causal))
    return out


CASES = _sample_cases(24, 7)


def _check_case(backend, case, monkeypatch, seed=0):
    lq, lkv, Lq, Lk, D, Dv, mk, causal = case
    oracle_for(backend, torch)  # skips before any work when there is no oracle
    rng = np.random.default_rng(seed)
    gqa = lq != lkv
    q = rng.standard_normal(lq + (Lq, D), dtype=np.float32)
    k = rng.standard_normal(lkv + (Lk, D), dtype=np.float32)
    v = rng.standard_normal(lkv + (Lk, Dv), dtype=np.float32)
    g = rng.standard_normal(lq + (Lq, Dv), dtype=np.float32)
    mask = make_mask(mk, lq, Lq, Lk, rng)
    scale = 1.0 / math.sqrt(D)
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    out, lse = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=gqa,
                                                return_lse=True)
    dq, dk, dv = ops.scaled_dot_product_attention_backward(g, q, k, v, attn_mask=mask, is_causal=causal,
                                                           enable_gqa=gqa, out=out, lse=lse)
    r_out, r_lse, r_dq, r_dk, r_dv = oracle_ref(backend, q, k, v, mask, causal, scale, gqa, g)
    assert out.dtype == np.float32 and out.shape == r_out.shape
    assert lse.shape == lq + (Lq,) and dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
    close(out, r_out, "out")
    close(lse, r_lse, "lse")
    close(dq, r_dq, "dq")
    close(dk, r_dk, "dk")
    close(dv, r_dv, "dv")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}-L{c[2]}x{c[3]}-D{c[4]}/{c[5]}-{c[6]}-{'c' if c[7] else 'n'}" for c in CASES])
def test_matches_oracle(backend, case, monkeypatch):
    _check_case(backend, case, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", [(lq, lkv, Lq, Lk, D, D, mk, c) for (lq, lkv), Lq, Lk, D, mk, c in itertools.product(
    [((2, 3), (2, 3)), ((1, 4), (1, 2))], [1, 97, 257], [7, 257], [1, 80, 256], [None, "bool_full", "float"], [False, True])])
def test_matches_oracle_full(backend, case, monkeypatch):
    if backend != "cpp" and case[2] * case[3] * case[4] > 97 * 257 * 80:
        pytest.skip("big case: C++ only")
    _check_case(backend, case, monkeypatch, seed=1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("Lq,Lk,Hq,Hk,causal,mk", [
    (1, 2000, 8, 2, False, None),       # decode path, GQA
    (2, 1500, 4, 4, True, "bool_pad"),  # decode path, causal + padding mask
    (3, 1100, 2, 1, False, "float"),
    (1, 5000, 1, 1, False, None),
])
def test_decode(backend, Lq, Lk, Hq, Hk, causal, mk, monkeypatch):
    if backend != "cpp" and Lk > 2000:
        pytest.skip("long decode: C++ only")
    _check_case(backend, ((2, Hq), (2, Hk), Lq, Lk, 64, 64, mk, causal), monkeypatch)


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_tiles(backend, monkeypatch):
    """Several query and key tiles, partial last tiles, causal with Lq > Lk and Lq < Lk."""
    if backend != "cpp":
        pytest.skip("C++ tiling")
    _check_case(backend, ((1, 2), (1, 2), 300, 260, 64, 48, "bool2d", True), monkeypatch)
    _check_case(backend, ((1, 2), (1, 2), 200, 450, 96, 64, None, True), monkeypatch)
    # one head: the split backward scheme
    _check_case(backend, ((1, 1), (1, 1), 333, 333, 64, 64, None, False), monkeypatch)


# The C++ forward works on query strips of MR rows (14 with AVX-512, 6 otherwise; the last
# strip partial, run with its own row count), key chunks of 256 (partial last chunk, causal
# diagonal inside a chunk), K^T packed in panels of NR keys (32/16/8) and V read in place
# when Dv is a multiple of NR, else packed zero-padded. Lengths around every one of those
# sizes, head dims 1, 3, 64, 80, with and without causal and masks, and GQA.
_STRIP_LS = [1, 7, 33, 97, 128, 129]
_STRIP_DS = [1, 3, 64, 80]


def _strip_cases():
    out = []
    for i, (L, D) in enumerate(itertools.product(_STRIP_LS, _STRIP_DS)):
        Lk = (L, 300, 40)[i % 3]
        Dv = (D, 32, 17)[(i // 3) % 3]
        mk = (None, None, "bool_pad", "float", None, "bool_full")[i % 6]
        lead = (((1, 8), (1, 8)), ((2, 4), (2, 2)))[i % 2]
        out.append((lead[0], lead[1], L, Lk, D, Dv, mk, bool((i // 2) % 2)))
    return out


STRIP_CASES = _strip_cases()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", STRIP_CASES, ids=[f"L{c[2]}x{c[3]}-D{c[4]}/{c[5]}-{c[6]}-{'c' if c[7] else 'n'}" for c in STRIP_CASES])
def test_forward_strips(backend, case, monkeypatch):
    if backend != "cpp" and case[2] * case[3] * max(case[4], case[5]) > 129 * 300 * 32:
        pytest.skip("big case: C++ only")
    _check_case(backend, case, monkeypatch, seed=3)


def test_fast_path_matches_general_path(rng, monkeypatch):
    """Plain 4-D float32 calls skip the Python argument handling; the result is the general
    path's, bit for bit (same kernel), and every other call still takes the general path."""
    monkeypatch.delenv("PYAIML_BACKEND", raising=False)
    q = rng.standard_normal((2, 3, 129, 80), dtype=np.float32)
    k = rng.standard_normal((2, 3, 97, 80), dtype=np.float32)
    v = rng.standard_normal((2, 3, 97, 17), dtype=np.float32)
    for causal in (False, True):
        for scale in (None, 0.3):
            o, l = ops.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, return_lse=True)
            # Fortran-ordered copies are not C-contiguous: the general path copies them
            qf, kf, vf = (np.asfortranarray(x) for x in (q, k, v))
            o2, l2 = ops.scaled_dot_product_attention(qf, kf, vf, is_causal=causal, scale=scale, return_lse=True)
            o3 = ops.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
            assert np.array_equal(o, o2) and np.array_equal(l, l2) and np.array_equal(o, o3)
            r = oracle_ref(_backend.chosen_backend("attention_forward"), q, k, v, None, causal, scale or 80 ** -0.5, False,
                           np.zeros((2, 3, 129, 17), np.float32))
            close(o, r[0])
            close(l, r[1])
    # an int scale and a float32 scale take the general path and agree
    a = ops.scaled_dot_product_attention(q, k, v, scale=1)
    b = ops.scaled_dot_product_attention(q, k, v, scale=np.float32(1.0))
    c = ops.scaled_dot_product_attention(q, k, v, scale=1.0)
    assert np.array_equal(a, c) and np.array_equal(b, c)
    with pytest.raises(ValueError, match="scale must be finite"):
        ops.scaled_dot_product_attention(q, k, v, scale=float("inf"))


def test_every_isa_strips():
    """The strip kernel without a mask (the plain softmax path), partial strips and chunks,
    Dv packed and in place, causal, on every ISA this machine runs."""
    C = _backend.native()
    if C is None:
        pytest.skip("C++ backend not built")
    code = """
import numpy as np, pyaiml, pyaiml.ops as ops
from pyaiml.reference.attention import attention_forward
rng = np.random.default_rng(0)
for (Lq, Lk, D, Dv) in ((129, 300, 64, 64), (7, 33, 3, 17), (128, 128, 80, 32), (1, 97, 1, 1)):
    q = rng.standard_normal((1, 3, Lq, D), dtype=np.float32)
    k = rng.standard_normal((1, 3, Lk, D), dtype=np.float32)
    v = rng.standard_normal((1, 3, Lk, Dv), dtype=np.float32)
    for causal in (False, True):
        res = []
        for nt in (1, 2):
            pyaiml.set_num_threads(nt)
            o, l = ops.scaled_dot_product_attention(q, k, v, is_causal=causal, return_lse=True)
            res.append((o, l))
        ro, rl = attention_forward(q, k, v, None, causal, D ** -0.5)
        assert np.allclose(res[0][0], ro, rtol=1e-4, atol=1e-5), abs(res[0][0] - ro).max()
        assert np.allclose(res[0][1], rl, rtol=1e-4, atol=1e-5), abs(res[0][1] - rl).max()
        assert np.array_equal(res[0][0], res[1][0]) and np.array_equal(res[0][1], res[1][1])
print("ok")
"""
    import os
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for isa in C.supported_isas():
        r = run_py(code, PYAIML_ISA=isa, PYAIML_BACKEND="cpp", PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
        assert r.returncode == 0 and "ok" in r.stdout, (isa, r.stderr[-2000:])


@pytest.mark.parametrize("backend", BACKENDS)
def test_fully_masked_rows(backend, monkeypatch):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    rng = np.random.default_rng(3)
    q = rng.standard_normal((2, 2, 9, 16), dtype=np.float32)
    k = rng.standard_normal((2, 2, 70, 16), dtype=np.float32)
    v = rng.standard_normal((2, 2, 70, 8), dtype=np.float32)
    g = rng.standard_normal((2, 2, 9, 8), dtype=np.float32)
    for mask in (rng.random((9, 70)) > 0.5, np.where(rng.random((9, 70)) > 0.5, 0.0, -np.inf).astype(np.float32)):
        dead = [0, 4]
        mask[dead] = False if mask.dtype == np.bool_ else -np.inf
        out, lse = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask, return_lse=True)
        dq, dk, dv = ops.scaled_dot_product_attention_backward(g, q, k, v, attn_mask=mask, out=out, lse=lse)
        assert np.isfinite(out).all() and np.isfinite(dq).all() and np.isfinite(dk).all() and np.isfinite(dv).all()
        assert (out[:, :, dead] == 0).all() and (dq[:, :, dead] == 0).all() and np.isposinf(lse[:, :, dead]).all()
        live = [i for i in range(9) if i not in dead]
        vis = mask if mask.dtype == np.bool_ else mask == 0
        r_out, _, r_dq, r_dk, r_dv = oracle_ref(backend, q[:, :, live], k, v, vis[live], False, 0.25, False,
                                                g[:, :, live])
        close(out[:, :, live], r_out)
        close(dq[:, :, live], r_dq)
        close(dk, r_dk)
        close(dv, r_dv)
    # Lk = 0: every row is empty
    out, lse = ops.scaled_dot_product_attention(q, k[:, :, :0], v[:, :, :0], return_lse=True)
    assert out.shape == (2, 2, 9, 8) and (out == 0).all() and np.isposinf(lse).all()
    # Lq = 0: empty result
    out = ops.scaled_dot_product_attention(q[:, :, :0], k, v)
    assert out.shape == (2, 2, 0, 8)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["bool", "float", "causal"])
def test_nan_in_masked_positions_does_not_leak(backend, kind, monkeypatch):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    rng = np.random.default_rng(4)
    L, D = 40, 16
    q = rng.standard_normal((1, 2, L, D), dtype=np.float32)
    k = rng.standard_normal((1, 2, L, D), dtype=np.float32)
    v = rng.standard_normal((1, 2, L, D), dtype=np.float32)
    g = rng.standard_normal((1, 2, L, D), dtype=np.float32)
    hidden = [5, 17, 39]  # keys nobody may see
    if kind == "bool":
        mask, causal = np.ones((L, L), dtype=bool), False
        mask[:, hidden] = False
    elif kind == "float":
        mask, causal = np.zeros((L, L), dtype=np.float32), False
        mask[:, hidden] = -np.inf
    else:  # causal: the last key is seen only by the last query; poison query 0's future keys
        mask, causal, hidden = None, True, []
    clean = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    cg = ops.scaled_dot_product_attention_backward(g, q, k, v, attn_mask=mask, is_causal=causal)
    kp, vp = k.copy(), v.copy()
    if hidden:
        kp[..., hidden, :] = np.nan
        vp[..., hidden, 0] = np.inf
    out = ops.scaled_dot_product_attention(q, kp, vp, attn_mask=mask, is_causal=causal)
    grads = ops.scaled_dot_product_attention_backward(g, q, kp, vp, attn_mask=mask, is_causal=causal)
    np.testing.assert_allclose(out, clean, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, cg):  # hidden keys get exactly zero gradients, as in the clean run
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # NaN where it is due: a NaN in a visible key poisons exactly the rows that see it.
    kn = k.copy()
    kn[0, 1, 30] = np.nan
    out = ops.scaled_dot_product_attention(q, kn, v, attn_mask=mask, is_causal=causal)
    bad = np.isnan(out).any(-1)
    assert not bad[0, 0].any()  # other head untouched
    rows_seeing = np.arange(L) >= 30 if causal else np.ones(L, dtype=bool)
    assert (bad[0, 1] == rows_seeing).all()


def test_return_lse_and_recompute(rng):
    q = rng.standard_normal((2, 3, 50, 24), dtype=np.float32)
    k = rng.standard_normal((2, 3, 70, 24), dtype=np.float32)
    v = rng.standard_normal((2, 3, 70, 24), dtype=np.float32)
    g = rng.standard_normal((2, 3, 50, 24), dtype=np.float32)
    out, lse = ops.scaled_dot_product_attention(q, k, v, is_causal=True, return_lse=True, scale=0.3)
    a = ops.scaled_dot_product_attention_backward(g, q, k, v, is_causal=True, scale=0.3, out=out, lse=lse)
    b = ops.scaled_dot_product_attention_backward(g, q, k, v, is_causal=True, scale=0.3)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    assert lse.dtype == np.float32 and lse.shape == (2, 3, 50)


def test_float64_matches_torch():
    oracle_for("numpy", torch)
    rng = np.random.default_rng(5)
    q = rng.standard_normal((2, 2, 13, 8))
    k = rng.standard_normal((2, 1, 17, 8))
    v = rng.standard_normal((2, 1, 17, 5))
    g = rng.standard_normal((2, 2, 13, 5))
    out, lse = ops.scaled_dot_product_attention(q, k, v, enable_gqa=True, return_lse=True)
    grads = ops.scaled_dot_product_attention_backward(g, q, k, v, enable_gqa=True)
    r = oracle_ref("numpy", q, k, v, None, False, 1 / math.sqrt(8), True, g)  # float64 runs pyaiml.reference
    assert out.dtype == np.float64
    for got, want in zip((out, lse) + grads, r):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_cpp_naive_matches_fast(rng):
    C = _backend.native()
    if C is None:
        pytest.skip("C++ backend not built")
    q = rng.standard_normal((2, 4, 150, 40), dtype=np.float32)
    k = rng.standard_normal((2, 2, 190, 40), dtype=np.float32)
    v = rng.standard_normal((2, 2, 190, 24), dtype=np.float32)
    g = rng.standard_normal((2, 4, 150, 24), dtype=np.float32)
    m = np.broadcast_to(rng.random((1, 1, 150, 190)) > 0.3, (2, 4, 150, 190))
    fo, fl = C.attention_forward(q, k, v, m, True, 0.2, False)
    no, nl = C.attention_forward(q, k, v, m, True, 0.2, True)
    np.testing.assert_allclose(fo, no, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fl, nl, rtol=1e-5, atol=1e-5)
    fg = C.attention_backward(g, q, k, v, m, True, 0.2, fo, fl, False)
    ng = C.attention_backward(g, q, k, v, m, True, 0.2, None, None, True)
    for a, b in zip(fg, ng):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("heads", [1, 8])  # split and fused backward schemes
def test_results_do_not_depend_on_thread_count(heads, rng):
    if not _backend.cpp_available():
        pytest.skip("C++ backend not built")
    q = rng.standard_normal((1, heads, 300, 64), dtype=np.float32)
    k = rng.standard_normal((1, heads, 1200, 64), dtype=np.float32)
    v = rng.standard_normal((1, heads, 1200, 64), dtype=np.float32)
    g = rng.standard_normal((1, heads, 300, 64), dtype=np.float32)
    qd = q[:, :, :1]
    n0 = pyaiml.get_num_threads()
    res = []
    try:
        for nt in (1, 2, 3):
            pyaiml.set_num_threads(nt)
            o, l = ops.scaled_dot_product_attention(q, k, v, is_causal=True, return_lse=True)
            gr = ops.scaled_dot_product_attention_backward(g, q, k, v, is_causal=True, out=o, lse=l)
            dec = ops.scaled_dot_product_attention(qd, k, v)
            res.append((o, l, dec) + gr)
    finally:
        pyaiml.set_num_threads(n0)
    for other in res[1:]:
        for a, b in zip(res[0], other):
            assert np.array_equal(a, b)


def test_every_isa():
    C = _backend.native()
    if C is None:
        pytest.skip("C++ backend not built")
    code = """
import numpy as np, pyaiml.ops as ops
from pyaiml.reference.attention import attention_forward, attention_backward
rng = np.random.default_rng(0)
q = rng.standard_normal((2, 3, 45, 19), dtype=np.float32)
k = rng.standard_normal((2, 3, 1100, 19), dtype=np.float32)
v = rng.standard_normal((2, 3, 1100, 21), dtype=np.float32)
g = rng.standard_normal((2, 3, 45, 21), dtype=np.float32)
m = rng.random((45, 1100)) > 0.2
for qq, gg in ((q, g), (q[:, :, :1], g[:, :, :1])):
    o, l = ops.scaled_dot_product_attention(qq, k, v, attn_mask=m[:qq.shape[2]], is_causal=True, return_lse=True)
    ro, rl = attention_forward(qq, k, v, np.broadcast_to(m[:qq.shape[2]], (2, 3, qq.shape[2], 1100)), True, 19 ** -0.5)
    assert np.allclose(o, ro, rtol=1e-4, atol=1e-5), abs(o - ro).max()
    gr = ops.scaled_dot_product_attention_backward(gg, qq, k, v, attn_mask=m[:qq.shape[2]], is_causal=True, out=o, lse=l)
    rg = attention_backward(gg, qq, k, v, np.broadcast_to(m[:qq.shape[2]], (2, 3, qq.shape[2], 1100)), True, 19 ** -0.5)
    for a, b in zip(gr, rg):
        assert np.allclose(a, b, rtol=1e-3, atol=1e-5), abs(a - b).max()
print("ok")
"""
    import os
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for isa in C.supported_isas():
        r = run_py(code, PYAIML_ISA=isa, PYAIML_BACKEND="cpp", PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
        assert r.returncode == 0 and "ok" in r.stdout, (isa, r.stderr[-2000:])


def test_bad_input():
    q = np.zeros((2, 3, 5, 8), dtype=np.float32)
    k = np.zeros((2, 3, 6, 8), dtype=np.float32)
    v = np.zeros((2, 3, 6, 4), dtype=np.float32)
    sdpa = ops.scaled_dot_product_attention
    with pytest.raises(ValueError, match="dropout_p=0.1 needs dropout_seed"):
        sdpa(q, k, v, dropout_p=0.1)
    with pytest.raises(TypeError, match="q must have dtype float32 or float64"):
        sdpa(q.astype(np.int32), k, v)
    with pytest.raises(TypeError, match="same dtype"):
        sdpa(q, k.astype(np.float64), v)
    with pytest.raises(ValueError, match="same last dimension D"):
        sdpa(q, np.zeros((2, 3, 6, 7), np.float32), v)
    with pytest.raises(ValueError, match="same length"):
        sdpa(q, k, np.zeros((2, 3, 7, 4), np.float32))
    with pytest.raises(ValueError, match="leading"):
        sdpa(q, np.zeros((3, 3, 6, 8), np.float32), np.zeros((3, 3, 6, 4), np.float32))
    with pytest.raises(ValueError, match="enable_gqa"):
        sdpa(q, k[:, :1], v[:, :1])
    with pytest.raises(ValueError, match="must divide"):
        sdpa(np.zeros((2, 3, 5, 8), np.float32), np.zeros((2, 2, 6, 8), np.float32),
             np.zeros((2, 2, 6, 4), np.float32), enable_gqa=True)
    with pytest.raises(ValueError, match="attn_mask must broadcast"):
        sdpa(q, k, v, attn_mask=np.ones((5, 7), dtype=bool))
    with pytest.raises(TypeError, match="attn_mask must be bool"):
        sdpa(q, k, v, attn_mask=np.ones((5, 6), dtype=np.int64))
    with pytest.raises(ValueError, match="at least 2-D"):
        sdpa(q[0, 0, 0], k, v)
    with pytest.raises(ValueError, match="same number of dimensions"):
        sdpa(q[0], k, v)
    with pytest.raises(ValueError, match="head dims must be >= 1"):
        sdpa(q[..., :0], k[..., :0], v)
    with pytest.raises(ValueError, match="scale must be finite"):
        sdpa(q, k, v, scale=float("nan"))
    bwd = ops.scaled_dot_product_attention_backward
    with pytest.raises(ValueError, match="grad_out must have shape"):
        bwd(np.zeros((2, 3, 5, 8), np.float32), q, k, v)
    with pytest.raises(ValueError, match="both out and lse"):
        bwd(np.zeros((2, 3, 5, 4), np.float32), q, k, v, out=np.zeros((2, 3, 5, 4), np.float32))
    with pytest.raises(ValueError, match="lse must have shape"):
        bwd(np.zeros((2, 3, 5, 4), np.float32), q, k, v, out=np.zeros((2, 3, 5, 4), np.float32),
            lse=np.zeros((2, 3), np.float32))
    C = _backend.native()
    if C is not None:  # the binding checks on its own too
        with pytest.raises(ValueError, match="attn_mask must have shape"):
            C.attention_forward(q, k, v, np.ones((2, 3, 5, 5), bool), False, 1.0, False)
        with pytest.raises(ValueError, match="C-contiguous"):
            C.attention_forward(q[:, :, ::2], k, v, None, False, 1.0, False)
        with pytest.raises(ValueError, match="same head dim"):
            C.attention_forward(q, np.zeros((2, 3, 6, 7), np.float32), v, None, False, 1.0, False)


def test_views_and_lists():
    """Non-contiguous views and 2-D inputs (no leading dims) work."""
    rng = np.random.default_rng(6)
    base = rng.standard_normal((4, 40, 32), dtype=np.float32)
    q = base[::2, :, ::2]
    k = base[1::2, ::-1, 1::2]
    v = base[1::2, :, :16]
    out = ops.scaled_dot_product_attention(q, k, v)
    r = oracle_ref(_backend.chosen_backend("attention_forward"), q, k, v, None, False, 0.25, False,
                   np.zeros((2, 40, 16), np.float32))
    close(out, r[0])
    out2 = ops.scaled_dot_product_attention(q[0], k[0], v[0], attn_mask=np.ones(40, dtype=bool))
    close(out2, r[0][0])


@pytest.mark.slow
def test_memory_long_sequence():
    """(1, 16, 8192, 64) forward + backward: peak RSS beyond inputs, outputs and gradients
    stays under 64 MiB (a score matrix would take 4 GiB). Measured in a fresh process with
    the kernel's high-water mark reset after the inputs exist."""
    if not _backend.cpp_available():
        pytest.skip("C++ backend not built")
    code = """
import numpy as np, pyaiml, pyaiml.ops as ops
def rss(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
shape = (1, 16, 8192, 64)
rng = np.random.default_rng(0)
q, k, v, g = (np.empty(shape, np.float32) for _ in range(4))
for x in (q, k, v, g):
    rng.standard_normal(out=x, dtype=np.float32)
ops.scaled_dot_product_attention(q[:, :, :64], k[:, :, :64], v[:, :, :64])  # warm: imports, pool
open('/proc/self/clear_refs', 'w').write('5')
base = rss('VmRSS')
out, lse = ops.scaled_dot_product_attention(q, k, v, return_lse=True)
dq, dk, dv = ops.scaled_dot_product_attention_backward(g, q, k, v, out=out, lse=lse)
peak = rss('VmHWM')
results = sum(x.nbytes for x in (out, lse, dq, dk, dv))
print("EXTRA", (peak - base - results) / 2**20, "RESULTS", results / 2**20)
"""
    import os
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = run_py(code, timeout=900, PYAIML_BACKEND="cpp", PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
    assert r.returncode == 0, r.stderr[-2000:]
    extra = float(r.stdout.split("EXTRA")[1].split()[0])
    print(r.stdout)
    assert extra < 64.0, r.stdout
