"""Fuzz tests of the activations and softmax (hypothesis): relu, sigmoid, tanh, gelu (exact
and tanh), softmax, log_softmax, and their backward.

Drawn: shapes of rank 0-3 (empty dimensions included), float32 or float64, values at
scales from 0.01 to 1e4 (saturation, overflow of exp), dim (sometimes out of range),
grad_out of the wrong shape, integer inputs, an unknown ``approximate``. Valid calls are
compared with the oracles below, invalid ones must raise ValueError/TypeError naming the op.

Oracles, float64: relu, sigmoid, tanh, gelu element by element with Python's math module;
softmax and log_softmax through a log-sum-exp by np.logaddexp.reduce; their backward as
the vector-Jacobian product with the explicit Jacobian; the backward of sigmoid and tanh
from the derivative of the math-module function, and of gelu by central differences of
the float64 oracle.
Tolerance: float32 2e-6 relative + 1e-6 absolute (1e-5 relative for the gradients, which
multiply rounded outputs); float64 1e-12 (1e-7 for gelu's finite differences).

Run: PYTHONPATH=$PWD pytest -q tests/test_fuzz_activations.py (50 examples per op);
PYAIML_FUZZ=slow for 2000, or ``pytest -m slow tests/test_fuzz_activations.py``.
"""
import math

import numpy as np
import pytest
from hypothesis import strategies as st

import pyaiml.ops as ops
from fuzzing import SEEDS, assert_close, fuzz_test, valid_or_raises

ELEMENTWISE = ["relu", "sigmoid", "tanh", "gelu"]


def _each(f, x):
    return np.vectorize(f, otypes=[np.float64])(x.astype(np.float64)) if x.size else x.astype(np.float64)


def _sigmoid(v):
    return 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))


def _gelu(v, approximate):
    if approximate == "tanh":
        return 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)))
    return 0.5 * v * (1 + math.erf(v / math.sqrt(2)))


def elementwise_oracle(name, x, approximate="none"):
    """(y, dy/dx) in float64."""
    if name == "relu":
        return np.maximum(x.astype(np.float64), 0), (x > 0).astype(np.float64)
    if name == "sigmoid":
        s = _each(_sigmoid, x)
        return s, s * (1 - s)
    if name == "tanh":
        t = _each(math.tanh, x)
        return t, 1 - t * t
    y = _each(lambda v: _gelu(v, approximate), x)
    h = 1e-5 * np.maximum(1.0, np.abs(x.astype(np.float64)))
    up = _each(lambda v: _gelu(v, approximate), x.astype(np.float64) + h)
    down = _each(lambda v: _gelu(v, approximate), x.astype(np.float64) - h)
    return y, (up - down) / (2 * h)


def softmax_oracle(x, dim, g):
    """(softmax, log_softmax, softmax VJP with g, log_softmax VJP with g) in float64."""
    x = np.moveaxis(x.astype(np.float64), dim, -1)
    g = np.moveaxis(g.astype(np.float64), dim, -1)
    lse = np.logaddexp.reduce(x, axis=-1)[..., None]
    logp = x - lse
    p = np.exp(logp)
    n = x.shape[-1]
    jac = np.eye(n) * p[..., None, :] - p[..., :, None] * p[..., None, :]     # d p_j / d x_i, symmetric
    vjp_soft = np.einsum("...i,...ij->...j", g, jac)
    jac_log = np.eye(n) - np.broadcast_to(p[..., None, :], p.shape + (n,))      # d logp_i / d x_j
    vjp_log = np.einsum("...i,...ij->...j", g, jac_log)
    return tuple(np.moveaxis(a, -1, dim) for a in (p, logp, vjp_soft, vjp_log))


@st.composite
def activation_cases(draw):
    rank = draw(st.integers(0, 3))
    shape = tuple(draw(st.integers(0, 5)) for _ in range(rank))
    return dict(name=draw(st.sampled_from(ELEMENTWISE)), shape=shape,
                dtype=draw(st.sampled_from([np.float32, np.float64])),
                scale=draw(st.sampled_from([0.01, 1.0, 3.0, 30.0, 1e4])),
                approximate=draw(st.sampled_from(["none", "tanh", "none", "tanh", "erf"])),
                broken=draw(st.sampled_from([None] * 8 + ["grad_shape", "int"])), seed=draw(SEEDS))


def _tol(dtype, want, grad=False):
    rel = (1e-5 if grad else 2e-6) if dtype == np.float32 else 1e-12
    return dict(atol=1e-6 if dtype == np.float32 else 1e-13, rtol=rel)


def check_elementwise(c):
    """relu, sigmoid, tanh, gelu and their backward against the math-module oracle, or
    ValueError/TypeError for invalid arguments."""
    r = np.random.default_rng(c["seed"])
    name, dt = c["name"], c["dtype"]
    x = (c["scale"] * r.standard_normal(c["shape"])).astype(dt)
    if c["broken"] == "int":
        x = np.round(x).astype(np.int32)
    kw = {"approximate": c["approximate"]} if name == "gelu" else {}
    bad_approx = name == "gelu" and c["approximate"] not in ("none", "tanh")
    if name == "gelu" and c["approximate"] == "none" and x.ndim == 0:
        return  # known defect, see test_gelu_keeps_a_0d_shape: not fuzzed until fixed
    y = valid_or_raises(c["broken"] != "int" and not bad_approx, name, getattr(ops, name), x, **kw)
    if y is None:
        return
    want, deriv = elementwise_oracle(name, x, c["approximate"])
    assert y.dtype == dt and y.shape == x.shape
    assert_close(name, y, want, **_tol(dt, want))
    g = r.standard_normal(x.shape).astype(dt)
    bname = name + "_backward"
    second = x if name in ("relu", "gelu") else y          # relu/gelu take x, sigmoid/tanh their output
    gb = np.zeros(x.shape + (1,), dt) if c["broken"] == "grad_shape" else g
    got = valid_or_raises(c["broken"] is None, bname, getattr(ops, bname), gb, second, **kw)
    if got is None:
        return
    assert got.dtype == dt
    tol = _tol(dt, want, grad=True)
    if name == "gelu" and dt == np.float64:
        tol = dict(atol=1e-9, rtol=1e-7)                   # central differences in float64
    assert_close(bname, got, g.astype(np.float64) * deriv, **tol)


@st.composite
def softmax_cases(draw):
    rank = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 5)) for _ in range(rank))  # empty dims: test_softmax_over_an_empty_dimension
    dim = draw(st.integers(-rank, rank - 1)) if draw(st.integers(0, 9)) else draw(st.sampled_from([rank, -rank - 1]))
    return dict(shape=shape, dim=dim, dtype=draw(st.sampled_from([np.float32, np.float64])),
                scale=draw(st.sampled_from([0.01, 1.0, 3.0, 30.0, 1e4])), log=draw(st.booleans()),
                broken=draw(st.sampled_from([None] * 8 + ["grad_shape", "int"])), seed=draw(SEEDS))


def check_softmax(c):
    """softmax / log_softmax and their backward against log-sum-exp and the explicit
    Jacobian, or ValueError/TypeError for invalid arguments."""
    r = np.random.default_rng(c["seed"])
    dt, dim, rank = c["dtype"], c["dim"], len(c["shape"])
    name = "log_softmax" if c["log"] else "softmax"
    x = (c["scale"] * r.standard_normal(c["shape"])).astype(dt)
    if c["broken"] == "int":
        x = np.round(x).astype(np.int32)
    dim_ok = -rank <= dim < rank
    y = valid_or_raises(dim_ok and c["broken"] != "int", name, getattr(ops, name), x, dim)
    if y is None:
        return
    g = r.standard_normal(x.shape).astype(dt)
    p, logp, vjp_soft, vjp_log = softmax_oracle(x, dim, g)
    want = logp if c["log"] else p
    assert y.dtype == dt
    assert_close(name, y, want, **_tol(dt, want))
    gb = g[..., :1] if c["broken"] == "grad_shape" and x.shape[-1] > 1 else g
    bname = name + "_backward"
    got = valid_or_raises(gb is g, bname, getattr(ops, bname), gb, y, dim)
    if got is None:
        return
    wg = vjp_log if c["log"] else vjp_soft
    tol = _tol(dt, wg, grad=True)
    scale = float(np.abs(g).max()) * (1 + float(np.abs(wg).max()))
    assert_close(bname, got, wg, atol=tol["atol"] * scale * 10, rtol=tol["rtol"])


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_over_an_empty_dimension(name):
    x = np.ones((2, 0), np.float32)
    y = getattr(ops, name)(x, -1)  # empty, as torch
    assert y.shape == (2, 0) and y.dtype == np.float32
    assert getattr(ops, name + "_backward")(y, y, -1).shape == (2, 0)
    z = getattr(ops, name)(np.ones((0, 3), np.float64), 1)
    assert z.shape == (0, 3)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_of_a_0d_input(name):
    # torch: dim 0 or -1; softmax of a scalar is 1, log_softmax 0, both gradients 0
    x = np.array(2.5, np.float32)
    for dim in (0, -1):
        y = getattr(ops, name)(x, dim)
        assert y.shape == () and float(y) == (1.0 if name == "softmax" else 0.0)
        g = getattr(ops, name + "_backward")(np.array(1.0, np.float32), y, dim)
        assert g.shape == () and float(g) == 0.0
    with pytest.raises(ValueError, match=f"{name}: dim must be in \\[-1, 0\\] for a 0-D input. Received 1"):
        getattr(ops, name)(x, 1)


@pytest.mark.parametrize("backward", [False, True])
def test_gelu_keeps_a_0d_shape(backward):
    x = np.array(0.5, np.float32)
    y = ops.gelu_backward(np.array(1.0, np.float32), x) if backward else ops.gelu(x)
    assert y.shape == ()
    want = elementwise_oracle("gelu", x)[1 if backward else 0]
    assert abs(float(y) - float(want)) < 1e-6


test_elementwise_fuzz = fuzz_test(check_elementwise, activation_cases())
test_elementwise_fuzz_slow = fuzz_test(check_elementwise, activation_cases(), slow=True)
test_softmax_fuzz = fuzz_test(check_softmax, softmax_cases())
test_softmax_fuzz_slow = fuzz_test(check_softmax, softmax_cases(), slow=True)
