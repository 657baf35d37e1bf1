"""Speaker-robust speech features: speaker_cmvn (against a NumPy transcription of its
definition), mfcc_features_batch(normalize="speaker"), speed_perturb (length, pitch shift
measured on a tone, and scipy's resample_poly as the oracle), and their errors."""
import numpy as np
import pytest

from pyaiml.audio import mfcc_features, mfcc_features_batch, speaker_cmvn, speed_perturb


def _feats(rng, n, T=(5, 40), D=6, shift=0.0):
    return [rng.normal(shift, 2.0, (int(rng.integers(*T)), D)) for _ in range(n)]


def test_speaker_cmvn_matches_definition():
    rng = np.random.default_rng(0)
    F = _feats(rng, 7, shift=3.0) + _feats(rng, 4, shift=-1.0)
    spk = ["a"] * 7 + ["b"] * 4
    order = rng.permutation(len(F))  # interleaved speakers
    F, spk = [F[i] for i in order], [spk[i] for i in order]
    out = speaker_cmvn(F, spk)
    for s in ("a", "b"):
        idx = [i for i, g in enumerate(spk) if g == s]
        X = np.concatenate([F[i] for i in idx])
        mu, sd = X.mean(0), X.std(0)
        for i in idx:
            np.testing.assert_allclose(out[i], (F[i] - mu) / sd, rtol=1e-5, atol=1e-5)
            assert out[i].dtype == np.float32 and out[i].shape == F[i].shape
        Y = np.concatenate([out[i] for i in idx]).astype(np.float64)
        np.testing.assert_allclose(Y.mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(Y.std(0), 1, atol=1e-5)
    centred = speaker_cmvn(F, spk, variance=False)
    idx = [i for i, g in enumerate(spk) if g == "a"]
    np.testing.assert_allclose(np.concatenate([centred[i] for i in idx]).std(0),
                               np.concatenate([F[i] for i in idx]).std(0), rtol=1e-5)


def test_speaker_cmvn_with_reference_statistics():
    rng = np.random.default_rng(4)
    train = _feats(rng, 6, shift=2.0)
    test = _feats(rng, 3, shift=2.5)
    out = speaker_cmvn(test, ["s"] * 3, reference=train, reference_speakers=["s"] * 6)
    X = np.concatenate(train)
    for a, b in zip(out, test):
        np.testing.assert_allclose(a, (b - X.mean(0)) / X.std(0), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="no reference utterances for speaker"):
        speaker_cmvn(test, ["t"] * 3, reference=train, reference_speakers=["s"] * 6)
    with pytest.raises(ValueError, match="reference_speakers must have one label"):
        speaker_cmvn(test, ["s"] * 3, reference=train)
    with pytest.raises(ValueError, match="reference_speakers needs reference"):
        speaker_cmvn(test, ["s"] * 3, reference_speakers=["s"])


def test_speaker_cmvn_constant_column_only_centred():
    F = [np.ones((4, 2)) * [1.0, 5.0], np.ones((3, 2)) * [1.0, 5.0]]
    F[0][:, 0] += np.arange(4)
    out = speaker_cmvn(F, [0, 0])
    assert np.all(np.isfinite(np.concatenate(out)))
    np.testing.assert_allclose(np.concatenate(out)[:, 1], 0.0)


@pytest.mark.parametrize("bad, match", [
    (([], []), "at least one utterance"),
    (([np.zeros((3, 2))], ["a", "b"]), "one label per utterance"),
    (([np.zeros((3, 2)), np.zeros((3, 3))], ["a", "a"]), r"must have 2 features .*features\[1\]"),
    (([np.zeros((0, 2))], ["a"]), r"features\[0\] must be 2-D"),
    (([np.full((3, 2), np.nan)], ["a"]), "finite"),
])
def test_speaker_cmvn_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        speaker_cmvn(*bad)


def _words(rng, n, rate=8000):
    t = np.arange(int(0.4 * rate)) / rate
    out = []
    for i in range(n):
        f0 = 200 + 40 * i
        y = 0.3 * np.sin(2 * np.pi * f0 * t) * np.hanning(t.size) + 0.01 * rng.normal(size=t.size)
        out.append(np.concatenate([np.zeros(400), y, np.zeros(400)]).astype(np.float32))
    return out


def test_mfcc_batch_speaker_normalisation():
    rng = np.random.default_rng(1)
    sig = _words(rng, 5)
    spk = ["x", "y", "x", "y", "x"]
    raw = mfcc_features_batch(sig, 8000, normalize=False)
    got = mfcc_features_batch(sig, 8000, normalize="speaker", speakers=spk)
    want = speaker_cmvn(raw, spk)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    per_utt = mfcc_features_batch(sig, 8000, normalize="utterance")
    for a, b in zip(per_utt, mfcc_features_batch(sig, 8000)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="needs speakers="):
        mfcc_features_batch(sig, 8000, normalize="speaker")
    with pytest.raises(ValueError, match="only used with normalize='speaker'"):
        mfcc_features_batch(sig, 8000, speakers=spk)
    with pytest.raises(ValueError, match="normalize must be"):
        mfcc_features_batch(sig, 8000, normalize="global")
    with pytest.raises(ValueError, match="needs all of a speaker's utterances"):
        mfcc_features(sig[0], 8000, normalize="speaker")


@pytest.mark.parametrize("factor", [0.9, 1.1, 0.8, 1.25])
def test_speed_perturb_shifts_pitch_and_length(factor):
    rate, f0 = 8000, 440.0
    t = np.arange(rate) / rate
    y = np.sin(2 * np.pi * f0 * t).astype(np.float32)
    z = speed_perturb(y, factor)
    assert z.dtype == np.float32
    assert abs(z.size - y.size / factor) <= 1
    spec = np.abs(np.fft.rfft(z[200:-200] * np.hanning(z.size - 400)))
    peak = np.argmax(spec) * rate / (z.size - 400)
    assert abs(peak - f0 * factor) < 3.0, peak


def test_speed_perturb_matches_scipy():
    signal = pytest.importorskip("scipy.signal")
    y = np.random.default_rng(2).normal(size=997).astype(np.float32)
    for factor, (up, down) in ((0.9, (10, 9)), (1.1, (10, 11))):
        want = signal.resample_poly(y.astype(np.float64), up, down)
        got = speed_perturb(y, factor)
        np.testing.assert_allclose(got, want[:got.size], atol=2e-5)
    np.testing.assert_array_equal(speed_perturb(y, 1.0), y)


@pytest.mark.parametrize("factor", [0.3, 2.5, "fast", None, float("nan")])
def test_speed_perturb_errors(factor):
    with pytest.raises(ValueError, match="factor must be a number in"):
        speed_perturb(np.ones(100, np.float32), factor)
