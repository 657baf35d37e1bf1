"""ISA selection at the native boundary: a PYAIML_ISA the CPU cannot run stops with a
ValueError (it is not a missing build), and the PYAIML_HIDE_ISA testing hook plays a CPU
without AVX-512 (or AVX2) on any machine. Every check runs in a fresh interpreter, since the
ISA is fixed at the extension's first use."""
import json

import pytest

from pyaiml import _backend

from helpers import run_py

MATMUL = ("import numpy as np, pyaiml.ops as o\n"
          "a = np.random.default_rng(0).standard_normal((37, 65), dtype=np.float32)\n"
          "b = np.random.default_rng(1).standard_normal((65, 33), dtype=np.float32)\n"
          "err = float(np.abs(o.matmul(a, b) - a.astype(np.float64) @ b).max())\n")


def _run(code, **env):
    return run_py(code, **env)


def _compiled():
    C = _backend.native()
    if C is None:
        pytest.skip("C++ backend not built")
    return C.compiled_isas()


@pytest.mark.parametrize("forced,hidden", [("avx512", "avx512"), ("avx2", "avx2"), ("avx512", "avx2")])
def test_unsupported_isa_raises_not_supported(forced, hidden):
    if forced not in _compiled():
        pytest.skip(f"this build has no {forced} code")
    r = _run(MATMUL, PYAIML_ISA=forced, PYAIML_HIDE_ISA=hidden, PYAIML_BACKEND="")
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError: ") and f"PYAIML_ISA={forced} is not supported by this CPU" in last, r.stderr
    assert "supported: baseline" in last
    # the wrong diagnosis: a fallback to Numba with "not built ... reinstall" advice
    assert "is not built" not in r.stderr and "reinstall" not in r.stderr and "RuntimeWarning" not in r.stderr


def test_unsupported_isa_raises_on_every_call():
    if "avx512" not in _compiled():
        pytest.skip("this build has no AVX-512 code")
    code = ("import numpy as np, pyaiml.ops as o\n"
            "n = 0\n"
            "for _ in range(2):\n"
            "    try:\n"
            "        o.matmul(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32))\n"
            "    except ValueError as e:\n"
            "        n += 'not supported by this CPU' in str(e)\n"
            "print(n)\n")
    r = _run(code, PYAIML_ISA="avx512", PYAIML_HIDE_ISA="avx512", PYAIML_BACKEND="")
    assert r.returncode == 0 and r.stdout.strip() == "2", r.stderr


@pytest.mark.parametrize("hidden,best", [("avx512", "avx2"), ("avx2", "baseline"), ("avx2,avx512", "baseline"),
                                         ("avx512,avx2", "baseline")])
def test_hidden_isas_pick_the_next_best(hidden, best):
    compiled = _compiled()
    if "avx512" not in compiled:
        pytest.skip("this build has no AVX-512 code")
    if best not in _backend.native().supported_isas():  # a CPU without AVX2 at all
        best = "baseline"
    code = MATMUL + ("import json; from pyaiml import _backend; C = _backend.native()\n"
                     "print(json.dumps([C.isa(), C.supported_isas(), err]))\n")
    r = _run(code, PYAIML_HIDE_ISA=hidden, PYAIML_BACKEND="", PYAIML_ISA="")
    assert r.returncode == 0, r.stderr
    isa, supported, err = json.loads(r.stdout)
    assert isa == best and supported[-1] == best and "avx512" not in supported
    assert err < 1e-3  # the float64 product as oracle


@pytest.mark.parametrize("val", ["sse4", "baseline", "avx512,", ",avx2", "AVX2"])
def test_hide_isa_bad_value(val):
    r = _run("import pyaiml", PYAIML_HIDE_ISA=val, PYAIML_ISA="")
    assert r.returncode != 0
    assert "ValueError" in r.stderr and "PYAIML_HIDE_ISA" in r.stderr and repr(val) in r.stderr
