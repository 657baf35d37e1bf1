"""HMM: pyaiml.hmm vs hmmlearn 0.3 ('scaling' and 'log'), validated first (same cases as
`pyaiml bench hmm`). hmmlearn 'log' at K=64 is slow (tens of seconds per call)."""
import pytest

from pyaiml.bench import hmm

CASES = list(hmm.cases(quick=False))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("impl", ["pyaiml", "hmmlearn"])
def test_hmm(benchmark, case, impl):
    key = next((k for k in case.fns if k.startswith(impl)), None)
    if key is None:
        pytest.skip(f"{impl} not installed")
    case.validate()
    benchmark.group = f"hmm {case.name}"
    benchmark.extra_info["state_steps"] = case.work
    benchmark(case.fns[key])
