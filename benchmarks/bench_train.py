"""Training steps of the mission's Keras models: pyaiml.keras vs torch (validated first)."""
import pytest

from pyaiml.bench import train

CASES = list(train.cases(quick=False))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("impl", ["pyaiml", "torch_cl", "torch_nchw", "torch"])
def test_train(benchmark, case, impl):
    if impl not in case.fns:
        pytest.skip(f"{impl} not part of this case (or not installed)")
    if case.validate is not None:
        case.validate()
    benchmark.group = f"train {case.name}"
    benchmark.extra_info["samples"] = case.work
    benchmark(case.fns[impl])
