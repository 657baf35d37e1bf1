"""examples/speech_digits.py end to end on a small synthetic FSDD-layout folder (three
speakers with different pitch and speed saying three 'digits' made of tone sweeps): both
recognizers, per-speaker CMVN, speed copies, SpecAugment, leave-one-speaker-out and the
enrolment option all run and report; the recognizers beat chance by far on held-out speakers.
(The FSDD figures themselves come from running the example on the real data; see
benchmarks/RESULTS.md.)"""
import importlib.util
import os
import re

import numpy as np
import pytest

from pyaiml.audio import write_wav

HERE = os.path.dirname(os.path.abspath(__file__))


def _example():
    spec = importlib.util.spec_from_file_location(
        "speech_digits_example", os.path.join(HERE, "..", "examples", "speech_digits.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fsdd_like(tmp_path_factory):
    d = tmp_path_factory.mktemp("fsdd") / "recordings"
    d.mkdir()
    rng = np.random.default_rng(0)
    rate = 8000
    for spk, (pitch, speed) in {"ann": (1.0, 1.0), "bob": (0.8, 1.1), "cy": (1.2, 0.9)}.items():
        for digit in range(3):
            for idx in range(8):
                n = int(rate * (0.35 + 0.05 * digit) / speed)
                t = np.arange(n) / rate
                f_lo, f_hi = [(300, 900), (900, 300), (500, 500)][digit]
                f = pitch * (f_lo + (f_hi - f_lo) * t / t[-1]) * (1 + 0.02 * rng.normal())
                y = 0.4 * np.sin(2 * np.pi * np.cumsum(f) / rate) * np.hanning(n)
                y += 0.4 * np.sin(4 * np.pi * np.cumsum(f) / rate) * np.hanning(n) * (digit == 2)
                y = np.concatenate([np.zeros(300), y + 0.003 * rng.normal(size=n), np.zeros(300)])
                write_wav(str(d / f"{digit}_{spk}_{idx}.wav"), y.astype(np.float32), rate)
    return str(d.parent)


def test_example_runs_every_option(fsdd_like, tmp_path, capsys):
    ex = _example()
    rc = ex.main(["--data", fsdd_like, "--loso", "--epochs", "8", "--iter", "4", "--states", "3", "--mix", "1",
                  "--emission", "gaussian", "--frames", "40", "--estimators", "2", "--enroll", "5",
                  "--out", str(tmp_path / "out")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "speed x0.9: 72 recordings" in out and "speed x1.1: 72 recordings" in out
    for name in ("hmm", "cnn"):
        for spk in ("ann", "bob", "cy"):
            assert re.search(rf"{name} loso-{spk} accuracy: [01]\.\d+", out)
        mean = float(re.search(rf"{name} loso-mean accuracy: ([01]\.\d+)", out).group(1))
        assert mean > 0.6, (name, mean)  # chance is 1/3
    off = {n: float(re.search(rf"  {n} official: ([01]\.\d+)", out).group(1)) for n in ("hmm", "cnn")}
    assert min(off.values()) > 0.6, off


def test_example_utterance_norm_and_no_augmentation(fsdd_like, tmp_path, capsys):
    ex = _example()
    rc = ex.main(["--data", fsdd_like, "--recognizers", "hmm", "--norm", "utterance", "--speed", "",
                  "--iter", "3", "--states", "3", "--mix", "1", "--emission", "gaussian",
                  "--out", str(tmp_path / "out")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "speed x" not in out
    assert re.search(r"hmm official accuracy: [01]\.\d+", out)
