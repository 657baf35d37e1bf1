"""Conv/pool: pyaiml.ops conv1d/conv2d/max_pool2d vs torch.nn.functional (validated first).

The cases (cnn-a1/a2, mid, tiny, speech1/2, pool-a1/a2; forward and forward+backward) and
their implementations come from pyaiml/bench/conv.py; `pyaiml bench conv` runs the same
cases interleaved with ratios.
"""
import pytest

from pyaiml.bench import conv

CASES = list(conv.cases(quick=False))
IMPLS = ["pyaiml", "pyaiml_cf", "torch", "torch_cl", "numba"]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("impl", IMPLS)
def test_conv(benchmark, case, impl):
    if impl not in case.fns:
        pytest.skip(f"{impl} not measured for {case.name}")
    case.validate()
    benchmark.group = f"{case.suite} {case.name}"
    if case.flops:
        benchmark.extra_info["gflop"] = case.flops / 1e9
    benchmark(case.fns[impl])
