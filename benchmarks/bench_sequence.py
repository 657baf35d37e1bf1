"""Transformer LM training step and cached generation: pyaiml vs torch (validated first)."""
import pytest

from pyaiml.bench import sequence

CASES = list(sequence.cases(quick=False))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("impl", ["pyaiml", "torch", "torch_uncached", "torch_cached"])
def test_sequence(benchmark, case, impl):
    if impl not in case.fns:
        pytest.skip(f"{impl} not part of this case (or not installed)")
    if case.validate is not None:
        case.validate()
    benchmark.group = f"sequence {case.name}"
    benchmark.extra_info["tokens"] = case.work
    benchmark(case.fns[impl])
