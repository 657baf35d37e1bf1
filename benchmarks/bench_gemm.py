"""GEMM: pyaiml.ops.matmul vs torch.mm vs numpy.matmul (validated first)."""
import pytest

from pyaiml.bench import gemm

CASES = list(gemm.cases(quick=False))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("impl", ["pyaiml", "torch", "numpy"])
def test_gemm(benchmark, case, impl):
    if impl not in case.fns:
        pytest.skip(f"{impl} not installed")
    case.validate()
    benchmark.group = f"gemm {case.name}"
    benchmark.extra_info["gflop"] = case.flops / 1e9
    benchmark(case.fns[impl])
