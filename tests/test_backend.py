"""The registry, ISA dispatch, thread pool and CLI."""
import json

import numpy as np
import pytest

import pyaiml
from pyaiml import _backend


from helpers import run_py


def test_backend_info_shape():
    info = pyaiml.backend_info()
    assert info["num_threads"] >= 1
    assert "gemm" in info["ops"]
    op = info["ops"]["gemm"]
    assert op["backend"] in ("cpp", "numba", "numpy") and op["reason"]
    assert set(op["implementations"]) >= {"cpp", "numba", "numpy"}
    assert info["versions"]["numpy"] == np.__version__


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_forced_backend(backend):
    r = run_py("import pyaiml, json; print(json.dumps(pyaiml.backend_info()['ops']['gemm']))", PYAIML_BACKEND=backend)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["backend"] == backend and "forced" in d["reason"]


@pytest.mark.parametrize("var,val", [("PYAIML_BACKEND", "fortran"), ("PYAIML_ISA", "sse9"), ("PYAIML_NUM_THREADS", "zero"),
                                     ("PYAIML_SPIN_US", "1ms"), ("PYAIML_SPIN_US", "-5"), ("PYAIML_SPIN_US", "99999999"),
                                     ("PYAIML_HOST_OPENMP", "off")])
def test_bad_env_values(var, val):
    r = run_py("import pyaiml", **{var: val})
    assert r.returncode != 0
    assert var in r.stderr and repr(val) in r.stderr and "ValueError" in r.stderr


def test_isa_dispatch_each_supported():
    C = _backend.native()
    if C is None:
        pytest.skip("C++ backend not built")
    code = ("import numpy as np, pyaiml; from pyaiml import _backend; C=_backend.native();"
            "a=np.random.default_rng(0).standard_normal((1,97,65),dtype=np.float32);"
            "b=np.random.default_rng(1).standard_normal((1,65,33),dtype=np.float32);"
            "print(C.isa(), float(np.abs(C.gemm(a,b)-a.astype(np.float64)@b).max()))")
    for isa in C.supported_isas():
        r = run_py(code, PYAIML_ISA=isa)
        assert r.returncode == 0, r.stderr
        got, err = r.stdout.split()
        assert got == isa and float(err) < 1e-3


def test_isa_not_supported_message():
    # On a CPU with every compiled ISA, PYAIML_HIDE_ISA (a testing hook) plays one without
    # AVX-512, so the test runs on AVX2 and AVX-512 machines alike.
    C = _backend.native()
    if C is None:
        pytest.skip("C++ backend not built")
    if "avx512" not in C.compiled_isas():
        pytest.skip("this build has no AVX-512 code")
    r = run_py("import pyaiml.ops as o, numpy as np; o.matmul(np.ones((2,2),np.float32), np.ones((2,2),np.float32))",
               PYAIML_ISA="avx512", PYAIML_HIDE_ISA="avx512", PYAIML_BACKEND="")
    assert r.returncode != 0 and "not supported by this CPU" in r.stderr
    assert "is not built" not in r.stderr and "C++17 compiler" not in r.stderr


def test_set_num_threads_roundtrip_and_results_independent(rng):
    old = pyaiml.get_num_threads()
    a = rng.standard_normal((300, 200), dtype=np.float32)
    b = rng.standard_normal((200, 150), dtype=np.float32)
    try:
        outs = []
        for n in (1, 2, 3):
            pyaiml.set_num_threads(n)
            assert pyaiml.get_num_threads() == n
            outs.append(pyaiml.ops.matmul(a, b))
        for o in outs[1:]:
            np.testing.assert_array_equal(o, outs[0])
    finally:
        pyaiml.set_num_threads(old)


@pytest.mark.parametrize("n", [0, -1, 1.5, "2", True])
def test_set_num_threads_bad(n):
    with pytest.raises(ValueError, match="set_num_threads: n must be an integer >= 1"):
        pyaiml.set_num_threads(n)


def test_env_num_threads():
    r = run_py("import pyaiml; print(pyaiml.get_num_threads())", PYAIML_NUM_THREADS="3")
    assert r.returncode == 0 and r.stdout.strip() == "3"


def test_concurrent_python_threads(rng):
    # Two Python threads calling kernels at once: the second runs serially, results exact.
    import threading

    a = rng.standard_normal((400, 300), dtype=np.float32)
    b = rng.standard_normal((300, 200), dtype=np.float32)
    want = pyaiml.ops.matmul(a, b)
    errs = []

    def work():
        for _ in range(20):
            if not np.array_equal(pyaiml.ops.matmul(a, b), want):
                errs.append("mismatch")

    ts = [threading.Thread(target=work) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errs


@pytest.mark.parametrize("spin_us", ["0", "1000"])
def test_pool_late_and_sleeping_workers(spin_us):
    # Workers that sleep between jobs (PYAIML_SPIN_US=0) wake late and skip jobs the caller
    # has finished; more threads than cores, many short jobs of every size, thread count
    # changes in between: every result right, nothing hangs.
    if _backend.native() is None:
        pytest.skip("C++ backend not built")
    code = """
import numpy as np, pyaiml, pyaiml.ops as o
rng = np.random.default_rng(0)
pyaiml.set_num_threads(7)
for i in range(300):
    M = int(rng.integers(1, 3000)); K = int(rng.integers(1, 40)); N = int(rng.integers(1, 70))
    a = rng.standard_normal((M, K), dtype=np.float32); b = rng.standard_normal((K, N), dtype=np.float32)
    np.testing.assert_allclose(o.matmul(a, b), a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)
    if i % 50 == 0:
        pyaiml.set_num_threads(int(rng.integers(1, 8)))
print("ok")
"""
    r = run_py(code, PYAIML_SPIN_US=spin_us)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr


def test_missing_extension_warns_once():
    code = ("import sys; sys.modules['pyaiml._C'] = None\n"
            "import warnings, numpy as np, pyaiml.ops as o\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    for _ in range(3): o.matmul(np.ones((3,3),np.float32), np.ones((3,3),np.float32))\n"
            "msgs=[str(x.message) for x in w]\n"
            "print(len(msgs)); print(msgs[0])\n"
            "import pyaiml; print(pyaiml.backend_info()['ops']['gemm']['backend'])")
    r = run_py(code, PYAIML_BACKEND="")
    assert r.returncode == 0, r.stderr
    n, msg, backend = r.stdout.strip().splitlines()
    assert n == "1" and "pyaiml._C is not built" in msg and "numba" in msg and "fast path" in msg
    assert backend == "numba"


def test_cli_info_and_version():
    r = run_py("from pyaiml.cli import main; raise SystemExit(main(['info']))")
    assert r.returncode == 0, r.stderr
    assert "gemm" in r.stdout and "threads" in r.stdout
    r = run_py("from pyaiml.cli import main; main(['--version'])")
    assert r.stdout.strip() == f"pyaiml {pyaiml.__version__}"


def test_cli_bench_gemm_quick_json(tmp_path):
    out = tmp_path / "r.json"
    code = ("import pyaiml.bench.gemm as g; g.SHAPES=[('t',64,48,40)]; g.QUICK={'t'};"
            "from pyaiml.cli import main; raise SystemExit(main(['bench','gemm','--quick','--threads','1','--json',%r]))" % str(out))
    r = run_py(code)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(out.read_text())
    row = rep["rows"][0]
    t = row["timings"]["pyaiml"]
    assert row["case"] == "t" and row["shape"] == "M64 K48 N40"
    assert t["gflops"] == pytest.approx(2.0 * 64 * 48 * 40 / t["median_s"] / 1e9, rel=1e-12)
    assert rep["machine"]["allocator"]
