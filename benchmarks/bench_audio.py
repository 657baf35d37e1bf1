"""Audio: pyaiml.audio vs librosa / scipy (validated first). Quick cases only (short run)."""
import pytest

from pyaiml.bench import audio

CASES = list(audio.cases(quick=True))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("impl", ["pyaiml", "librosa", "scipy"])
def test_audio(benchmark, case, impl):
    if impl not in case.fns:
        pytest.skip(f"{impl} not installed or not a peer of this case")
    case.validate()
    benchmark.group = f"audio {case.name}"
    benchmark.extra_info["audio_seconds"] = case.work
    benchmark(case.fns[impl])
