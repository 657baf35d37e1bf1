"""The ``gelu_tanh`` and ``swiglu`` registry ops (pyaiml/ops/transformer.py; C++
csrc/cpu/act.cpp, Numba, NumPy) against NumPy float64 on every backend: sizes that are not
multiples of the vector width, 1-D to 3-D and non-contiguous inputs (gelu), row-strided
inputs (swiglu), large magnitudes (saturation, no overflow to NaN), and under every ISA this
CPU runs. Also pyaiml.llm's GPT-2 and Llama MLPs on them (the model tests compare whole
graphs with transformers).

Tolerance: 1e-6 * (1 + |want|) elementwise (the vector tanh/exp are accurate to ~2e-7).
"""
import os

import numpy as np
import pytest
from helpers import backends_for, run_py

import pyaiml
from pyaiml import _backend, ops  # noqa: F401 (ops registers gelu_tanh and swiglu)
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


@pytest.mark.skipif(not _backend.cpp_available(), reason="needs pyaiml._C")
@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_every_isa(isa):
    if isa not in _backend.native().supported_isas():
        pytest.skip(f"this CPU does not run {isa}")
    tests = os.path.dirname(os.path.abspath(__file__))
    here = os.path.dirname(os.path.dirname(os.path.abspath(pyaiml.__file__)))
    code = ("import numpy as np\n"
            "import test_act as t\n"
            "rng = np.random.default_rng(0)\n"
            "for s in [(1,), (15,), (3, 17), (2, 5, 1000)]:\n"
            "    t.test_gelu_tanh('cpp', s, rng)\n"
            "for r, i in [(1, 1), (3, 15), (2, 1000)]:\n"
            "    t.test_swiglu('cpp', r, i, rng)\n"
            "from pyaiml import _backend\n"
            "print('ok', _backend.native().isa())\n")
    r = run_py(code, PYAIML_ISA=isa, PYAIML_BACKEND="cpp", PYTHONPATH=os.pathsep.join([here, tests]))
    assert r.returncode == 0 and f"ok {isa}" in r.stdout, (isa, r.stderr[-3000:])
