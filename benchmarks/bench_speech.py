"""Speech: training the 10 FSDD digit HMMs, pyaiml.hmm.HMMClassifier vs the same recipe on
hmmlearn (Gaussian and 3-mixture GMM emissions), validated first (same cases as
`pyaiml bench speech`). Skips without the FSDD copy or hmmlearn. hmmlearn's GMM recipe takes
~80 s or more per call."""
import pytest

from pyaiml.bench import speech

CASES = list(speech.cases(quick=False))
if not CASES:
    pytest.skip("FSDD data or hmmlearn not available", allow_module_level=True)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("impl", ["pyaiml", "hmmlearn"])
def test_speech(benchmark, case, impl):
    key = next(k for k in case.fns if k.startswith(impl))
    case.validate()
    benchmark.group = f"speech {case.name}"
    benchmark.extra_info["frames_x_iterations"] = case.work
    benchmark.pedantic(case.fns[key], rounds=1 if "gmm" in case.name else 3, iterations=1)
