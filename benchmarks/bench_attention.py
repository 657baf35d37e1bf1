"""Attention: pyaiml.ops.scaled_dot_product_attention (+ backward) vs torch SDPA (validated first)."""
import pytest

from pyaiml.bench import attention

CASES = list(attention.cases(quick=False))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("impl", ["pyaiml", "torch"])
def test_attention(benchmark, case, impl):
    if impl not in case.fns:
        pytest.skip(f"{impl} not installed")
    if case.validate is not None:
        case.validate()
    benchmark.group = f"attention {case.name}"
    benchmark.extra_info["gflop"] = case.flops / 1e9
    benchmark(case.fns[impl])
