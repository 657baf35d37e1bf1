"""The ``gelu_tanh``, ``swiglu`` and ``rope_qk`` registry ops (pyaiml/ops/transformer.py; C++
csrc/cpu/act.cpp, Numba, NumPy) against NumPy on every backend: sizes that are not
multiples of the vector width, 1-D to 3-D and non-contiguous inputs (gelu), row-strided
inputs (swiglu), large magnitudes (saturation, no overflow to NaN), RoPE bit for bit against
NumPy's float32 rotate-half (head sizes below and above the vector width, grouped kv heads,
a v part after q and k), and under every ISA this CPU runs. Also pyaiml.llm's GPT-2 and
Llama MLPs on them (the model tests compare whole graphs with transformers).

Tolerance: 1e-6 * (1 + |want|) elementwise (the vector tanh/exp are accurate to ~2e-7).
"""

import numpy as np
import pytest
from helpers import backends_for, run_under_isa

from pyaiml import _backend, ops  # noqa: F401 (ops registers gelu_tanh, swiglu and rope_qk)
from pyaiml.reference import transformer as ref


def _close(got, want):
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.all(np.abs(got.astype(np.float64) - want) <= 1e-6 * (1 + np.abs(want))), \
        np.abs(got.astype(np.float64) - want).max()


@pytest.mark.parametrize("backend", backends_for("gelu_tanh"))
@pytest.mark.parametrize("shape", [(1,), (15,), (3, 17), (2, 5, 1000)])
def test_gelu_tanh(backend, shape, rng):
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    x.reshape(-1)[:1] = 0.0
    f = _backend.resolve("gelu_tanh", backend)
    _close(f(x), ref.gelu_tanh(x).astype(np.float64))
    if len(shape) > 1:
        xt = x.swapaxes(0, -1)  # not contiguous
        _close(f(xt), ref.gelu_tanh(np.ascontiguousarray(xt)).astype(np.float64))
    big = np.array([-1e4, -60.0, -9.0, 9.0, 60.0, 1e4], np.float32)
    got = f(big)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref.gelu_tanh(big), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", backends_for("swiglu"))
@pytest.mark.parametrize("rows,inter", [(1, 1), (3, 15), (5, 64), (2, 1000)])
def test_swiglu(backend, rows, inter, rng):
    x = (rng.standard_normal((rows, 2 * inter)) * 4).astype(np.float32)
    f = _backend.resolve("swiglu", backend)
    _close(f(x), ref.swiglu(x).astype(np.float64))
    wide = np.zeros((rows, 2 * inter + 3), np.float32)
    wide[:, 1:2 * inter + 1] = x
    _close(f(wide[:, 1:2 * inter + 1]), ref.swiglu(x).astype(np.float64))
    big = np.array([[-1e4, -80.0, 80.0, 1e4, 2.0, 2.0, 2.0, 2.0]], np.float32)
    got = f(big)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref.swiglu(big), rtol=1e-6, atol=1e-6)


def _rope_numpy(x, cos, sin):
    """Rotate-half RoPE of x (B, L, H, D) in float32, as Llama's reference writes it."""
    h = x.shape[-1] // 2
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    x1, x2 = x[..., :h], x[..., h:]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


@pytest.mark.parametrize("backend", backends_for("rope_qk"))
@pytest.mark.parametrize("B,L,H,Hk,D", [(1, 1, 12, 4, 64), (2, 3, 4, 4, 6), (1, 5, 2, 1, 128), (3, 2, 3, 1, 34)])
def test_rope_qk(backend, B, L, H, Hk, D, rng):
    W = (H + 2 * Hk) * D
    qkv = (rng.standard_normal((B, L, W)) * 3).astype(np.float32)
    ang = rng.uniform(0, 100, (B, L, D // 2)).astype(np.float32)
    cos, sin = np.cos(ang), np.sin(ang)
    q, k = _backend.resolve("rope_qk", backend)(qkv, cos, sin, H, Hk)
    assert q.shape == (B, H, L, D) and k.shape == (B, L, Hk, D)
    want_q = _rope_numpy(qkv[..., :H * D].reshape(B, L, H, D), cos, sin)
    want_k = _rope_numpy(qkv[..., H * D:(H + Hk) * D].reshape(B, L, Hk, D), cos, sin)
    np.testing.assert_array_equal(q, want_q.transpose(0, 2, 1, 3))
    np.testing.assert_array_equal(k, want_k)


@pytest.mark.skipif(not _backend.cpp_available(), reason="needs pyaiml._C")
def test_rope_qk_errors(rng):
    C = _backend.native()
    qkv = np.zeros((1, 2, 6 * 8), np.float32)
    cs = np.zeros((1, 2, 4), np.float32)
    with pytest.raises(ValueError, match="must hold H \\+ Hk"):
        C.rope_qk(qkv, cs, cs, 5, 2)
    with pytest.raises(ValueError, match="cos and sin must be"):
        C.rope_qk(qkv, cs[:, :1], cs, 2, 2)
    with pytest.raises(ValueError, match="rows must be contiguous"):
        C.rope_qk(np.zeros((1, 2, 96), np.float32)[:, :, ::2], cs, cs, 2, 2)
    with pytest.raises(ValueError, match="qkv must have dtype float32"):
        C.rope_qk(qkv.astype(np.float64), cs, cs, 2, 2)


@pytest.mark.skipif(not _backend.cpp_available(), reason="needs pyaiml._C")
@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_every_isa(isa):
    run_under_isa(isa, "import numpy as np\n"
                       "import test_act as t\n"
                       "rng = np.random.default_rng(0)\n"
                       "for s in [(1,), (15,), (3, 17), (2, 5, 1000)]:\n"
                       "    t.test_gelu_tanh('cpp', s, rng)\n"
                       "for r, i in [(1, 1), (3, 15), (2, 1000)]:\n"
                       "    t.test_swiglu('cpp', r, i, rng)\n"
                       "for c in [(1, 1, 12, 4, 64), (2, 3, 4, 4, 6), (3, 2, 3, 1, 34)]:\n"
                       "    t.test_rope_qk('cpp', *c, rng)\n")
