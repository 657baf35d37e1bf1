"""torch bridge: mission CNN training step with pyaiml's Conv2d/MaxPool2d vs pure torch
(NCHW and channels_last), and custom-op call overhead (validated first)."""
import pytest

pytest.importorskip("torch")

from pyaiml.bench import torch_bridge  # noqa: E402

CASES = list(torch_bridge.cases(quick=False))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("impl", ["pyaiml", "torch", "kernel direct"])
def test_torch_bridge(benchmark, case, impl):
    if impl not in case.fns:
        pytest.skip(f"{impl} not part of this case")
    if case.validate is not None:
        case.validate()
    benchmark.group = f"torch_bridge {case.name}"
    benchmark(case.fns[impl])
