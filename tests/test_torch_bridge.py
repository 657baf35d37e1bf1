"""pyaiml.torch custom ops: parity with torch, gradcheck (float64), opcheck, bad input,
threads, and importing without torch.

Oracles: torch's own functional ops; brute-force path enumeration for the HMM. The kernels
are pyaiml.ops' (whichever backend PYAIML_BACKEND selects). Skips cleanly without torch.
"""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

import pyaiml.torch as pt  # noqa: E402
from pyaiml.torch import _kernels  # noqa: E402
from helpers import run_py  # noqa: E402

# float32 tolerance: sums of <= ~300 products in another order, ~1e-6 relative per term.
TOL32 = dict(rtol=1e-4, atol=1e-4)
TOL64 = dict(rtol=1e-10, atol=1e-10)


def _t(rng, *shape, dtype=torch.float64, grad=False):
    return torch.tensor(rng.standard_normal(shape), dtype=dtype, requires_grad=grad)


def _close(a, b, dtype):
    torch.testing.assert_close(a, b, **(TOL64 if dtype == torch.float64 else TOL32))


def _grads(f, inputs):
    out = f(*inputs)
    g = torch.randn_like(out) if out.dim() else torch.ones_like(out)
    gs = torch.autograd.grad(out, [i for i in inputs if i is not None and i.requires_grad], g)
    return out, gs, g


# --------------------------------------------------------------------------- conv

CONV2D_CASES = [
    # (N, C, H, W, OC, K, kwargs)
    (2, 3, 7, 9, 4, (3, 3), dict()),
    (1, 4, 8, 8, 6, (3, 2), dict(stride=2, padding=1)),
    (3, 4, 9, 7, 4, (3, 3), dict(dilation=2, padding=(2, 1), groups=2)),
    (2, 3, 6, 5, 5, (4, 4), dict(padding="same")),
    (2, 2, 5, 5, 3, (2, 3), dict(padding="valid", stride=(1, 2))),
    (1, 1, 1, 1, 1, (1, 1), dict()),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CONV2D_CASES)
def test_conv2d_matches_torch(rng, case, dtype):
    N, C, H, W, OC, Kk, kw = case
    G = kw.get("groups", 1)
    x = _t(rng, N, C, H, W, dtype=dtype, grad=True)
    w = _t(rng, OC, C // G, *Kk, dtype=dtype, grad=True)
    b = _t(rng, OC, dtype=dtype, grad=True)
    y, gs, g = _grads(lambda x, w, b: pt.conv2d(x, w, b, **kw), (x, w, b))
    y_ref = F.conv2d(x, w, b, **kw)
    gs_ref = torch.autograd.grad(y_ref, (x, w, b), g)
    _close(y, y_ref, dtype)
    for a, r in zip(gs, gs_ref):
        _close(a, r, dtype)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("compiled", [False, True])
def test_conv_backward_skips_grad_x_for_an_input_without_grad(rng, fmt, compiled, monkeypatch):
    """A network's images need no gradient: the backward asks the kernels for grad_w and
    grad_b only (needs_input_grad=False returns an empty grad_x), on the eager path and
    through the registered op; the weight gradients still match torch's."""
    asked = []
    real = _kernels.conv2d_backward

    def spy(*a):
        asked.append(a[-1])  # needs_input_grad
        return real(*a)

    monkeypatch.setattr(_kernels, "conv2d_backward", spy)
    x = _t(rng, 3, 4, 9, 8, dtype=torch.float32).contiguous(memory_format=fmt)
    w = _t(rng, 5, 4, 3, 3, dtype=torch.float32, grad=True)
    b = _t(rng, 5, dtype=torch.float32, grad=True)
    f = (lambda x, w, b: torch.ops.pyaiml.conv2d(x, w, b, [1, 1], [1, 1], [1, 1], 1, False)) if compiled else (
        lambda x, w, b: pt.conv2d(x, w, b, padding=1))
    y = f(x, w, b)
    g = torch.randn_like(y)
    gw, gb = torch.autograd.grad(y, (w, b), g)
    gw_ref, gb_ref = torch.autograd.grad(F.conv2d(x, w, b, padding=1), (w, b), g)
    assert asked == [False]
    _close(gw, gw_ref, torch.float32)
    _close(gb, gb_ref, torch.float32)
    gx, gw2, gb2 = torch.ops.pyaiml.conv2d_backward(g, x, w.detach(), [1, 1], [1, 1], [1, 1], 1, False, True, False)
    assert gx.numel() == 0
    _close(gw2, gw_ref, torch.float32)
    _close(gb2, gb_ref, torch.float32)


def test_conv2d_no_bias_and_channels_last(rng):
    x = _t(rng, 2, 5, 8, 7, dtype=torch.float32).to(memory_format=torch.channels_last).requires_grad_()
    w = _t(rng, 3, 5, 3, 3, dtype=torch.float32, grad=True)
    y = pt.conv2d(x, w, None, padding=1)
    # NHWC kernel on the permuted view: the result is stored channels last, like torch's.
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    y_ref = F.conv2d(x, w, None, padding=1)
    _close(y, y_ref, torch.float32)
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, w), g)
    gx_ref, gw_ref = torch.autograd.grad(y_ref, (x, w), g)
    assert gx.is_contiguous(memory_format=torch.channels_last)
    _close(gx, gx_ref, torch.float32)
    _close(gw, gw_ref, torch.float32)


def test_conv_non_contiguous_inputs(rng):
    base = _t(rng, 2, 3, 10, 12, dtype=torch.float32)
    x = base[:, :, ::2, 1::2]  # strided view: neither plain nor channels-last
    assert not x.is_contiguous()
    w = _t(rng, 4, 3, 3, 3, dtype=torch.float32).transpose(2, 3)  # transposed weight view
    _close(pt.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1), torch.float32)
    x1 = _t(rng, 2, 7, 3, dtype=torch.float32).transpose(1, 2)  # (N, C, L) stored (N, L, C)
    w1 = _t(rng, 5, 3, 2, dtype=torch.float32)
    y1 = pt.conv1d(x1, w1)
    assert y1.transpose(1, 2).is_contiguous()
    _close(y1, F.conv1d(x1, w1), torch.float32)


CONV1D_CASES = [
    (2, 3, 11, 4, 3, dict()),
    (1, 4, 9, 4, 2, dict(stride=2, padding=1, groups=4)),
    (3, 2, 8, 5, 3, dict(dilation=2, padding="same")),
    (1, 1, 1, 1, 1, dict()),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CONV1D_CASES)
def test_conv1d_matches_torch(rng, case, dtype):
    N, C, L, OC, Kk, kw = case
    G = kw.get("groups", 1)
    x = _t(rng, N, C, L, dtype=dtype, grad=True)
    w = _t(rng, OC, C // G, Kk, dtype=dtype, grad=True)
    b = _t(rng, OC, dtype=dtype, grad=True)
    y, gs, g = _grads(lambda x, w, b: pt.conv1d(x, w, b, **kw), (x, w, b))
    y_ref = F.conv1d(x, w, b, **kw)
    _close(y, y_ref, dtype)
    for a, r in zip(gs, torch.autograd.grad(y_ref, (x, w, b), g)):
        _close(a, r, dtype)


# --------------------------------------------------------------------------- pool

POOL2D_CASES = [
    ((2, 3, 8, 8), dict(kernel_size=2)),
    ((1, 2, 7, 9), dict(kernel_size=3, stride=2, padding=1)),
    ((2, 1, 5, 6), dict(kernel_size=(2, 3), stride=(1, 2))),
    ((1, 1, 1, 1), dict(kernel_size=1)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", POOL2D_CASES)
def test_max_pool2d_matches_torch(rng, case, dtype):
    shape, kw = case
    x = _t(rng, *shape, dtype=dtype, grad=True)
    y, (gx,), g = _grads(lambda x: pt.max_pool2d(x, **kw), (x,))
    y_ref = F.max_pool2d(x, **kw)
    _close(y, y_ref, dtype)
    _close(gx, torch.autograd.grad(y_ref, x, g)[0], dtype)


def test_max_pool2d_channels_last_and_ties(rng):
    x = torch.zeros(1, 2, 4, 4).to(memory_format=torch.channels_last).requires_grad_()  # all ties
    y = pt.max_pool2d(x, 2)
    assert y.is_contiguous(memory_format=torch.channels_last)
    g = torch.arange(8, dtype=torch.float32).reshape(1, 2, 2, 2)
    gx = torch.autograd.grad(y, x, g)[0]
    gx_ref = torch.autograd.grad(F.max_pool2d(x, 2), x, g)[0]  # first maximum gets the gradient
    _close(gx, gx_ref, torch.float32)
    xr = _t(rng, 2, 3, 9, 8, dtype=torch.float32).to(memory_format=torch.channels_last)
    _close(pt.max_pool2d(xr, 3, 2, 1), F.max_pool2d(xr, 3, 2, 1), torch.float32)


@pytest.mark.parametrize("channels_last", [False, True])
def test_max_pool_indices_match_torch(rng, channels_last):
    x = _t(rng, 2, 3, 7, 9, dtype=torch.float32)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    y, i = pt.max_pool2d(x, 3, 2, 1, return_indices=True)
    y_ref, i_ref = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert i.dtype == torch.int64 and torch.equal(i, i_ref)
    _close(y, y_ref, torch.float32)
    x1 = _t(rng, 2, 3, 10, dtype=torch.float32)
    y1, i1 = pt.max_pool1d(x1, 3, 2, 1, return_indices=True)
    assert torch.equal(i1, F.max_pool1d(x1, 3, 2, 1, return_indices=True)[1])


@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1)])
def test_max_pool1d_matches_torch(rng, kw):
    x = _t(rng, 2, 3, 11, grad=True)
    y, (gx,), g = _grads(lambda x: pt.max_pool1d(x, **kw), (x,))
    y_ref = F.max_pool1d(x, **kw)
    _close(y, y_ref, torch.float64)
    _close(gx, torch.autograd.grad(y_ref, x, g)[0], torch.float64)


# --------------------------------------------------------------------------- attention

def _sdpa_inputs(rng, B, H, Hk, L, S, E, Ev, dtype):
    return (_t(rng, B, H, L, E, dtype=dtype, grad=True), _t(rng, B, Hk, S, E, dtype=dtype, grad=True),
            _t(rng, B, Hk, S, Ev, dtype=dtype, grad=True))


SDPA_CASES = [
    dict(),
    dict(is_causal=True),
    dict(scale=0.3),
    dict(mask="bool"),
    dict(mask="float"),
    dict(gqa=True),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", SDPA_CASES, ids=lambda c: ",".join(c) or "plain")
def test_sdpa_matches_torch(rng, case, dtype):
    B, H, L, S, E, Ev = 2, 4, 5, 7, 8, 3
    Hk = 2 if case.get("gqa") else H
    q, k, v = _sdpa_inputs(rng, B, H, Hk, L, S, E, Ev, dtype)
    mask = None
    if case.get("mask") == "bool":
        mask = torch.tensor(rng.random((L, S)) > 0.3)
        mask[:, 0] = True  # no fully masked row
    elif case.get("mask") == "float":
        mask = _t(rng, B, 1, L, S, dtype=dtype)
    kw = dict(attn_mask=mask, is_causal=case.get("is_causal", False), scale=case.get("scale"),
              enable_gqa=bool(case.get("gqa")))
    y, gs, g = _grads(lambda q, k, v: pt.scaled_dot_product_attention(q, k, v, **kw), (q, k, v))
    y_ref = F.scaled_dot_product_attention(q, k, v, **kw)
    _close(y, y_ref, dtype)
    for a, r in zip(gs, torch.autograd.grad(y_ref, (q, k, v), g)):
        _close(a, r, dtype)


# --------------------------------------------------------------------------- HMM

def _hmm_brute(ls, lA, lB):
    """Log-likelihood and posteriors by enumerating every state path (tiny K, T)."""
    T, Kn = lB.shape
    paths = np.array(np.meshgrid(*[np.arange(Kn)] * T, indexing="ij")).reshape(T, -1).T
    lp = np.array([ls[p[0]] + lB[0, p[0]] + sum(lA[p[t - 1], p[t]] + lB[t, p[t]] for t in range(1, T))
                   for p in paths])
    ll = np.logaddexp.reduce(lp)
    w = np.exp(lp - ll)
    post = np.zeros((T, Kn))
    for p, wi in zip(paths, w):
        post[np.arange(T), p] += wi
    return ll, post


def _hmm_inputs(rng, T, Kn, grad=False, normalised=True):
    a = rng.standard_normal(Kn)
    A = rng.standard_normal((Kn, Kn))
    Bm = rng.standard_normal((T, Kn))
    if normalised:
        a = a - np.logaddexp.reduce(a)
        A = A - np.logaddexp.reduce(A, axis=1, keepdims=True)
    return tuple(torch.tensor(z, dtype=torch.float64, requires_grad=grad) for z in (a, A, Bm))


@pytest.mark.parametrize("T,Kn", [(1, 3), (4, 3), (5, 2)])
def test_hmm_matches_brute_force(rng, T, Kn):
    ls, lA, lB = _hmm_inputs(rng, T, Kn)
    ll, post = pt.hmm_forward_backward(ls, lA, lB)
    ll_ref, post_ref = _hmm_brute(ls.numpy(), lA.numpy(), lB.numpy())
    assert ll.shape == () and post.shape == (T, Kn)
    np.testing.assert_allclose(ll.item(), ll_ref, rtol=1e-12)
    np.testing.assert_allclose(post.numpy(), post_ref, rtol=1e-10, atol=1e-12)


def test_hmm_gradients_are_expected_counts(rng):
    ls, lA, lB = _hmm_inputs(rng, 6, 3, grad=True)
    ll, post = pt.hmm_forward_backward(ls, lA, lB)
    assert not post.requires_grad
    g0, gA, gB = torch.autograd.grad(ll, (ls, lA, lB))
    _close(gB, post, torch.float64)          # d logL / d log_emission = posteriors
    _close(g0, post[0], torch.float64)       # d logL / d log_startprob = gamma_0
    # Expected transitions sum to T - 1 and their row sums are the posteriors of steps 0..T-2.
    np.testing.assert_allclose(gA.sum().item(), 5.0, rtol=1e-12)
    _close(gA.sum(1), post[:-1].sum(0), torch.float64)


def test_hmm_stable_with_long_sequences(rng):
    ls, lA, lB = _hmm_inputs(rng, 2000, 4)
    ll, post = pt.hmm_forward_backward(ls, lA, lB * 30.0)  # products underflow in linear space
    assert torch.isfinite(ll) and torch.isfinite(post).all()
    # Rounding of 2000 chained logsumexps: measured 2.2e-10, allowed 1e-8.
    torch.testing.assert_close(post.sum(1), torch.ones(2000, dtype=torch.float64), rtol=1e-8, atol=1e-8)


def test_hmm_float32_in_float32_out(rng):
    ls, lA, lB = (t.float() for t in _hmm_inputs(rng, 5, 3))
    ll, post = pt.hmm_forward_backward(ls, lA, lB)
    assert ll.dtype == torch.float32 and post.dtype == torch.float32


# --------------------------------------------------------------------------- gradcheck

def _gradcheck_cases(rng):
    d = torch.float64
    x4, w4, b4 = _t(rng, 2, 4, 6, 5, grad=True), _t(rng, 6, 2, 3, 2, grad=True), _t(rng, 6, grad=True)
    x3, w3, b3 = _t(rng, 2, 3, 9, grad=True), _t(rng, 4, 3, 3, grad=True), _t(rng, 4, grad=True)
    q, k, v = _sdpa_inputs(rng, 1, 2, 1, 3, 4, 5, 2, d)
    # Distinct values so the max-pool argmax is well separated for finite differences.
    xp2 = torch.tensor(rng.permutation(2 * 3 * 6 * 6).reshape(2, 3, 6, 6) * 0.1, dtype=d, requires_grad=True)
    xp1 = torch.tensor(rng.permutation(2 * 3 * 9).reshape(2, 3, 9) * 0.1, dtype=d, requires_grad=True)
    hmm = _hmm_inputs(rng, 5, 3, grad=True, normalised=False)
    return {
        "conv2d": (lambda x, w, b: pt.conv2d(x, w, b, stride=(2, 1), padding=1, groups=2), (x4, w4, b4)),
        "conv2d_same": (lambda x, w: pt.conv2d(x, w, None, padding="same", dilation=2, groups=2), (x4, w4)),
        "conv1d": (lambda x, w, b: pt.conv1d(x, w, b, stride=2, padding=1), (x3, w3, b3)),
        "max_pool2d": (lambda x: pt.max_pool2d(x, 3, 2, 1), (xp2,)),
        "max_pool1d": (lambda x: pt.max_pool1d(x, 2), (xp1,)),
        "sdpa": (lambda q, k, v: pt.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
                 (q, k, v)),
        "hmm": (lambda a, A, B: pt.hmm_forward_backward(a, A, B)[0], hmm),
    }


@pytest.mark.parametrize("name", ["conv2d", "conv2d_same", "conv1d", "max_pool2d", "max_pool1d", "sdpa", "hmm"])
def test_gradcheck_float64(name):
    f, inputs = _gradcheck_cases(np.random.default_rng(7))[name]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- opcheck

def _opcheck_cases(rng):
    f = torch.float32
    x = _t(rng, 2, 4, 7, 6, dtype=f, grad=True)
    xcl = _t(rng, 2, 4, 7, 6, dtype=f).to(memory_format=torch.channels_last).requires_grad_()
    w = _t(rng, 6, 2, 3, 3, dtype=f, grad=True)
    b = _t(rng, 6, dtype=f, grad=True)
    x1, w1 = _t(rng, 2, 3, 9, dtype=f, grad=True), _t(rng, 4, 3, 2, dtype=f, grad=True)
    gy = _t(rng, 2, 6, 4, 6, dtype=f)
    q, k, v = _sdpa_inputs(rng, 2, 2, 2, 3, 5, 4, 4, f)
    mask = torch.tensor(rng.random((3, 5)) > 0.2)
    mask[:, 0] = True
    out, lse = torch.ops.pyaiml.sdpa(q.detach(), k.detach(), v.detach(), None, False, None, False)
    hmm = _hmm_inputs(rng, 4, 3, grad=True)
    ops = torch.ops.pyaiml
    idx2 = ops.max_pool2d(x.detach(), [2, 2], [2, 2], [0, 0])[1]
    idx1 = ops.max_pool1d(x1.detach(), [3], [2], [1])[1]
    return [
        (ops.conv2d.default, (x, w, b, [2, 1], [1, 1], [1, 1], 2, False)),
        (ops.conv2d.default, (xcl, w, None, [1, 1], [0, 0], [1, 1], 2, True)),
        (ops.conv2d_backward.default, (gy, x.detach(), w.detach(), [2, 1], [1, 1], [1, 1], 2, False, True)),
        (ops.conv2d_backward.default, (gy, x.detach(), w.detach(), [2, 1], [1, 1], [1, 1], 2, False, True, False)),
        (ops.conv1d.default, (x1, w1, None, [1], [1], [2], 1, False)),
        (ops.conv1d_backward.default, (_t(rng, 2, 4, 9, dtype=f), x1.detach(), w1.detach(), [1], [1], [2], 1,
                                       False, False)),
        (ops.max_pool2d.default, (x, [2, 2], [2, 2], [0, 0])),
        (ops.max_pool2d.default, (xcl, [3, 3], [2, 2], [1, 1])),
        (ops.max_pool2d_backward.default, (_t(rng, 2, 4, 3, 3, dtype=f), x.detach(), idx2, [2, 2], [2, 2], [0, 0])),
        (ops.max_pool1d.default, (x1, [3], [2], [1])),
        (ops.max_pool1d_backward.default, (_t(rng, 2, 3, 5, dtype=f), x1.detach(), idx1, [3], [2], [1])),
        (ops.sdpa.default, (q, k, v, mask, False, None, False)),
        (ops.sdpa.default, (q, k, v, None, True, 0.5, False)),
        (ops.sdpa_backward.default, (torch.randn_like(out), q.detach(), k.detach(), v.detach(), None, False, None,
                                     False, out, lse)),
        (ops.hmm_forward_backward.default, hmm),
        (ops.hmm_expected_counts.default, tuple(t.detach() for t in hmm)),
    ]


def test_opcheck_all_ops():
    # Registration, schemas, fake kernels and autograd of every op.
    for op, args in _opcheck_cases(np.random.default_rng(3)):
        res = torch.library.opcheck(op, args)
        bad = {k: v for k, v in res.items() if v != "SUCCESS"}
        assert not bad, f"{op}: {bad}"


# --------------------------------------------------------------------------- bad input

def test_bad_device_names_the_device():
    x = torch.empty(1, 1, 4, 4, device="meta")
    w = torch.empty(1, 1, 3, 3, device="meta")
    with pytest.raises(ValueError, match=r"x is on device 'meta'.*CPU tensors only"):
        pt.conv2d(x, w)
    with pytest.raises(ValueError, match=r"query is on device 'meta'"):
        pt.scaled_dot_product_attention(torch.empty(1, 2, 3, device="meta"), torch.empty(1, 2, 3),
                                        torch.empty(1, 2, 3))


def test_bad_dtypes_and_integer_inputs(rng):
    x = torch.ones(1, 1, 4, 4, dtype=torch.int64)
    w = torch.ones(1, 1, 3, 3)
    with pytest.raises(TypeError, match=r"x must be float32 or float64. Received dtype torch.int64"):
        pt.conv2d(x, w)
    with pytest.raises(TypeError, match=r"weight must have the same dtype .* Received torch.float64"):
        pt.conv2d(torch.ones(1, 1, 4, 4), w.double())
    # float16 runs torch's own kernel (with one warning; tests/test_attention_dropout.py checks it)
    h = torch.randn(1, 1, 4, 4).half()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.equal(pt.max_pool2d(h, 2), torch.nn.functional.max_pool2d(h, 2))
    with pytest.raises(RuntimeError, match="floating point"):  # torch refuses grad on integer tensors
        torch.ones(3, dtype=torch.int64).requires_grad_()
    with pytest.raises(TypeError, match=r"log_emission must be float32 or float64. Received dtype torch.int32"):
        pt.hmm_forward_backward(torch.zeros(2, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64),
                                torch.zeros(3, 2, dtype=torch.int32))


def test_bad_shapes_and_options():
    x = torch.zeros(1, 2, 5, 5)
    with pytest.raises(ValueError, match=r"x must be 4-D \(N, C, H, W\). Received shape \(2, 5, 5\)"):
        pt.conv2d(x[0], torch.zeros(1, 2, 3, 3))
    with pytest.raises(ValueError, match="padding='same' needs stride 1"):
        pt.conv2d(x, torch.zeros(1, 2, 3, 3), stride=2, padding="same")
    with pytest.raises(ValueError, match="stride must be >= 1"):
        pt.conv2d(x, torch.zeros(1, 2, 3, 3), stride=0)
    with pytest.raises(NotImplementedError, match="ceil_mode"):
        pt.max_pool2d(x, 2, ceil_mode=True)
    with pytest.raises(NotImplementedError, match="dilation must be 1"):
        pt.max_pool1d(x[0], 2, dilation=2)
    with pytest.raises(ValueError, match="at most half the kernel"):
        pt.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match=r"dropout_p must lie in \[0, 1\]"):
        pt.scaled_dot_product_attention(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(1, 2, 3),
                                        dropout_p=1.1)
    with pytest.raises(ValueError, match=r"log_transmat must have shape \(K, K\) = \(2, 2\)"):
        pt.hmm_forward_backward(torch.zeros(2), torch.zeros(3, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"log_emission must have shape \(T, K\)"):
        pt.hmm_forward_backward(torch.zeros(2), torch.zeros(2, 2), torch.zeros(0, 2))


def test_channel_mismatch_and_kernel_errors():
    with pytest.raises(ValueError, match=r"x has 3 channels but weight \(2, 2, 3, 3\) with groups=1 expects 2"):
        pt.conv2d(torch.zeros(1, 3, 5, 5), torch.zeros(2, 2, 3, 3))
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\)"):
        pt.conv2d(torch.zeros(1, 2, 5, 5), torch.zeros(2, 2, 3, 3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"kernel \(3, 3\) .* must fit in the padded input \(2, 2\)"):
        pt.conv2d(torch.zeros(1, 2, 2, 2), torch.zeros(2, 2, 3, 3))
    with pytest.raises(ValueError, match=r"kernel_size \(3, 3\) must fit in the padded input \(2, 2\)"):
        pt.max_pool2d(torch.zeros(1, 1, 2, 2), 3)
    # Called raw, past the wrapper's checks, the kernel layer still refuses: an exception, no crash.
    with pytest.raises((ValueError, RuntimeError)):
        torch.ops.pyaiml.conv2d(torch.zeros(1, 3, 5, 5), torch.zeros(2, 2, 3, 3), None, [1, 1], [0, 0], [1, 1], 1,
                                False)


# --------------------------------------------------------------------------- threads, import

def test_threads_follow_torch():
    import pyaiml

    old_t, old_p = torch.get_num_threads(), pyaiml.get_num_threads()
    try:
        torch.set_num_threads(1)
        pt.conv2d(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 2, 2))
        assert pyaiml.get_num_threads() == 1
        torch.set_num_threads(2)
        pt.max_pool2d(torch.zeros(1, 1, 2, 2), 2)
        assert pyaiml.get_num_threads() == 2
        pt.set_thread_sync(False)
        torch.set_num_threads(1)
        pt.max_pool2d(torch.zeros(1, 1, 2, 2), 2)
        assert pyaiml.get_num_threads() == 2
    finally:
        pt.set_thread_sync(True)
        torch.set_num_threads(old_t)
        pyaiml.set_num_threads(old_p)


def test_bridge_runs_on_torchs_openmp_threads(monkeypatch):
    """The first bridged op moves pyaiml's parallel_for onto torch's OpenMP team (libgomp is
    loaded with torch), unless PYAIML_HOST_OPENMP=0."""
    from pyaiml import _backend
    from pyaiml.torch import _threads

    C = _backend.native()
    if C is None:
        pytest.skip("C++ backend not built")
    was = C.get_host_openmp()
    try:
        for env, want in (("0", False), ("1", True)):
            C.set_host_openmp(False)
            monkeypatch.setenv("PYAIML_HOST_OPENMP", env)
            monkeypatch.setattr(_threads, "_first_op_done", [False])
            pt.max_pool2d(torch.zeros(1, 1, 2, 2), 2)
            assert C.get_host_openmp() is want
    finally:
        C.set_host_openmp(was)


@pytest.mark.parametrize("name, kw", [("max_pool2d", {"return_indices": True}),
                                      ("max_pool2d_values", {})])  # with indices / plain inference
def test_zero_copy_output_and_input(name, kw):
    x = torch.randn(2, 3, 8, 8)
    # The kernel sees a view of x's storage, and the op's output owns a NumPy buffer (no copy back).
    seen = {}
    orig = getattr(_kernels, name)

    def spy(xa, *a, **k):
        seen["ptr"] = xa.__array_interface__["data"][0]
        return orig(xa, *a, **k)

    setattr(_kernels, name, spy)
    try:
        pt.max_pool2d(x, 2, **kw)
        assert seen["ptr"] == x.data_ptr()
        xcl = x.to(memory_format=torch.channels_last)
        pt.max_pool2d(xcl, 2, **kw)
        assert seen["ptr"] == xcl.data_ptr()
    finally:
        setattr(_kernels, name, orig)


def test_import_without_torch(tmp_path):
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys; sys.modules['torch'] = None\n"
            "import pyaiml, pyaiml.ops\n"
            "try:\n    import pyaiml.torch\nexcept ImportError as e:\n    print('MSG', e)\n")
    r = run_py(code, PYTHONPATH=root)
    assert r.returncode == 0, r.stderr
    assert "MSG pyaiml.torch needs PyTorch" in r.stdout and "pip install torch" in r.stdout
