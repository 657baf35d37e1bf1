"""Mel filterbank, log-mel, MFCC, deltas, CMVN, trimming and the mfcc_features pipeline,
against (a) a loop-by-loop transcription of the textbook definitions written below and
(b) librosa (when installed) for the same parameters.

Tolerances: features are float32 (spectra from a float32 FFT, float64 filterbank and DCT
rounded to float32). Measured max abs errors are ~4e-6..8e-6 dB for log-mel (values up to
~40 dB) and ~3e-5..7e-5 for MFCC (values up to ~250); the tests allow 1e-4 dB and 1e-3, a
margin for other FFT implementations and instruction sets.
"""
import math

import numpy as np
import pytest

from pyaiml.audio import (cmvn, delta, hz_to_mel, log_mel_spectrogram, mel_filterbank, mel_to_hz, melspectrogram,
                          mfcc, mfcc_features, trim_silence)

# ----------------------------------------------------------------------------- textbook


def tb_hz_to_mel(f, htk):
    if htk:
        return 2595.0 * math.log10(1.0 + f / 700.0)
    if f < 1000.0:
        return 3.0 * f / 200.0
    return 15.0 + 27.0 * math.log(f / 1000.0) / math.log(6.4)


def tb_mel_to_hz(m, htk):
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    if m < 15.0:
        return 200.0 * m / 3.0
    return 1000.0 * 6.4 ** ((m - 15.0) / 27.0)


def tb_filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm):
    lo, hi = tb_hz_to_mel(fmin, htk), tb_hz_to_mel(fmax, htk)
    edges = [tb_mel_to_hz(lo + (hi - lo) * i / (n_mels + 1), htk) for i in range(n_mels + 2)]
    W = np.zeros((n_mels, n_fft // 2 + 1))
    for i in range(n_mels):
        a, c, b = edges[i], edges[i + 1], edges[i + 2]
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if a <= f <= c:
                W[i, k] = (f - a) / (c - a)
            elif c < f <= b:
                W[i, k] = (b - f) / (b - c)
        if norm == "slaney":
            W[i] *= 2.0 / (b - a)
    return W


def tb_mfcc(y, sr, n_fft, hop, n_mels, n_mfcc, htk, norm, lifter, fmin=0.0, fmax=None):
    """Centred zero-padded frames, periodic Hann, |DFT|^2, triangles, 10 log10 (floored 80 dB
    below the max), DCT-II orthonormal, lifter -- each step a plain loop or formula."""
    fmax = sr / 2 if fmax is None else fmax
    y = np.concatenate([np.zeros(n_fft // 2), y.astype(np.float64), np.zeros(n_fft // 2)])
    T = 1 + (len(y) - n_fft) // hop
    w = np.array([0.5 - 0.5 * math.cos(2 * math.pi * t / n_fft) for t in range(n_fft)])
    k = np.arange(n_fft // 2 + 1)[:, None]
    E = np.exp(-2j * math.pi * k * np.arange(n_fft)[None, :] / n_fft)
    P = np.array([np.abs(E @ (y[t * hop:t * hop + n_fft] * w)) ** 2 for t in range(T)])
    M = P @ tb_filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm).T
    D = 10.0 * np.log10(np.maximum(M, 1e-10))
    D = np.maximum(D, D.max() - 80.0)
    C = np.zeros((T, n_mfcc))
    for t in range(T):
        for n in range(n_mfcc):
            s = sum(D[t, m] * math.cos(math.pi * n * (m + 0.5) / n_mels) for m in range(n_mels))
            C[t, n] = s * math.sqrt((1.0 if n == 0 else 2.0) / n_mels)
            if lifter > 0:
                C[t, n] *= 1 + lifter / 2 * math.sin(math.pi * (n + 1) / lifter)
    return D, C


def _speechlike(n, sr=8000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    y = 0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t) + 0.05 * rng.standard_normal(n)
    return y.astype(np.float32)


# ----------------------------------------------------------------------------- mel scale, filters


@pytest.mark.parametrize("htk", [False, True])
def test_mel_scale_textbook(htk):
    f = np.array([0.0, 1.0, 440.0, 999.0, 1000.0, 1001.0, 3999.0, 11025.0])
    np.testing.assert_allclose(hz_to_mel(f, htk), [tb_hz_to_mel(v, htk) for v in f], rtol=1e-12)
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f, htk), htk), f, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("htk", [False, True])
@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [(8000, 256, 26, 20.0, 4000.0), (8000, 200, 40, 0.0, None),
                                                       (16000, 512, 7, 300.0, 3400.0), (22050, 2048, 128, 0, None)])
@pytest.mark.parametrize("norm", [None, "slaney"])
def test_filterbank_textbook_and_librosa(htk, sr, n_fft, n_mels, fmin, fmax, norm):
    W = mel_filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm, dtype=np.float64)
    want = tb_filterbank(sr, n_fft, n_mels, fmin, sr / 2 if fmax is None else fmax, htk, norm)
    np.testing.assert_allclose(W, want, rtol=1e-9, atol=1e-12)
    librosa = pytest.importorskip("librosa")
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            L = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm,
                                    dtype=np.float64)
    np.testing.assert_allclose(W, L, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("p", [1, 2, np.inf])
def test_filterbank_pnorm(p):
    W = mel_filterbank(8000, 256, 20, norm=p, dtype=np.float64)
    np.testing.assert_allclose(np.linalg.norm(W, ord=p, axis=1), 1.0, rtol=1e-12)
    librosa = pytest.importorskip("librosa")
    np.testing.assert_allclose(W, librosa.filters.mel(sr=8000, n_fft=256, n_mels=20, norm=p, dtype=np.float64),
                               rtol=1e-9, atol=1e-12)


def test_filterbank_errors():
    with pytest.raises(ValueError, match=r"fmax must be <= sr / 2 = 4000 Hz.*fmax=8000 with sr=8000"):
        mel_filterbank(8000, 256, 40, fmax=8000)
    with pytest.raises(ValueError, match="fmin must be < fmax"):
        mel_filterbank(8000, 256, 40, fmin=3000, fmax=2000)
    with pytest.raises(ValueError, match="norm must be 'slaney', None or a positive number"):
        mel_filterbank(8000, 256, 40, norm="area")
    with pytest.raises(ValueError, match="n_mels must be >= 1"):
        mel_filterbank(8000, 256, 0)


# ----------------------------------------------------------------------------- log-mel, MFCC


@pytest.mark.parametrize("n", [97, 1001, 3000])
@pytest.mark.parametrize("htk,norm,lifter", [(False, "slaney", 0.0), (True, None, 22.0)])
def test_logmel_mfcc_textbook(n, htk, norm, lifter):
    y, sr, n_fft, hop, n_mels = _speechlike(n), 8000, 256, 80, 26
    D, C = tb_mfcc(y, sr, n_fft, hop, n_mels, 13, htk, norm, lifter)
    got_D = log_mel_spectrogram(y, sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels, htk=htk, norm=norm)
    got_C = mfcc(y, sr, n_mfcc=13, lifter=lifter, n_fft=n_fft, hop_length=hop, n_mels=n_mels, htk=htk, norm=norm)
    assert got_D.shape == D.shape and got_C.shape == C.shape and got_C.dtype == np.float32
    np.testing.assert_allclose(got_D, D, rtol=0, atol=1e-4)
    np.testing.assert_allclose(got_C, C, rtol=0, atol=1e-3)


@pytest.mark.parametrize("sr,n_fft,hop,win,n_mels,n_mfcc,htk,norm,lifter,fmax", [
    (8000, 256, 80, 200, 40, 13, False, "slaney", 0, None),
    (8000, 256, 80, None, 26, 13, True, None, 22, 3800.0),
    (16000, 512, 160, 400, 40, 20, True, "slaney", 0, None),
    (22050, 2048, 512, None, 128, 20, False, "slaney", 0, None),  # librosa's defaults
])
def test_mfcc_logmel_librosa(sr, n_fft, hop, win, n_mels, n_mfcc, htk, norm, lifter, fmax):
    librosa = pytest.importorskip("librosa")
    y = _speechlike(sr, sr, seed=3)
    kw = dict(n_fft=n_fft, hop_length=hop, win_length=win, n_mels=n_mels, htk=htk, norm=norm, fmax=fmax)
    M = melspectrogram(y, sr, **kw)
    LM = librosa.feature.melspectrogram(y=y, sr=sr, **kw)
    np.testing.assert_allclose(M, LM.T, rtol=2e-4, atol=1e-6 * LM.max())
    D = log_mel_spectrogram(y, sr, **kw)
    LD = librosa.power_to_db(LM)
    np.testing.assert_allclose(D, LD.T, rtol=0, atol=1e-4)
    C = mfcc(y, sr, n_mfcc=n_mfcc, lifter=lifter, **kw)
    if norm == "slaney":  # librosa's mfcc takes `norm` for its DCT, so the mel norm is its default
        kw.pop("norm")
        LC = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=n_mfcc, lifter=lifter, **kw)
    else:
        LC = librosa.feature.mfcc(S=LD, n_mfcc=n_mfcc, lifter=lifter)
    np.testing.assert_allclose(C, LC.T, rtol=0, atol=1e-3)


def test_mfcc_from_S_and_errors():
    y = _speechlike(2000)
    L = log_mel_spectrogram(y, 8000, n_fft=256, hop_length=80, n_mels=20)
    np.testing.assert_allclose(mfcc(S=L, n_mfcc=13), mfcc(y, 8000, n_mfcc=13, n_fft=256, hop_length=80, n_mels=20),
                               atol=1e-5)
    ln = log_mel_spectrogram(y, 8000, n_fft=256, hop_length=80, n_mels=20, log="ln")
    np.testing.assert_allclose(ln, np.log(np.maximum(melspectrogram(y, 8000, n_fft=256, hop_length=80, n_mels=20),
                                                     1e-10)), rtol=1e-6)
    with pytest.raises(ValueError, match="n_mfcc must be <= n_mels=20"):
        mfcc(S=L, n_mfcc=21)
    with pytest.raises(ValueError, match=r"S must be 2-D \(n_frames, n_fft // 2 \+ 1 = 129\)"):
        melspectrogram(S=np.ones((5, 100)), sr=8000, n_fft=256)
    with pytest.raises(ValueError, match="exactly one of y"):
        melspectrogram(y, 8000, S=np.ones((5, 129)), n_fft=256)
    with pytest.raises(ValueError, match="fmax must be <= sr / 2"):
        mfcc(y, 8000, fmax=5000.0, n_fft=256)
    with pytest.raises(ValueError, match="log must be 'db' or 'ln'"):
        log_mel_spectrogram(y, 8000, log="log10")


# ----------------------------------------------------------------------------- deltas, CMVN


@pytest.mark.parametrize("T", [1, 3, 7, 50])
@pytest.mark.parametrize("N", [1, 2, 4])
def test_delta_textbook(T, N):
    X = np.random.default_rng(T).standard_normal((T, 5)).astype(np.float32)
    want = np.zeros((T, 5))
    den = 2 * sum(n * n for n in range(1, N + 1))
    for t in range(T):
        for n in range(1, N + 1):
            want[t] += n * (X[min(t + n, T - 1)] - X[max(t - n, 0)])
    want /= den
    np.testing.assert_allclose(delta(X, N), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(delta(X, N, order=2), delta(delta(X, N), N), rtol=1e-6)
    if T >= 2 * N + 1:
        librosa = pytest.importorskip("librosa")
        np.testing.assert_allclose(delta(X, N), librosa.feature.delta(X.T, width=2 * N + 1, mode="nearest").T,
                                   rtol=1e-4, atol=1e-5)


def test_cmvn():
    X = np.random.default_rng(0).standard_normal((40, 6)) * [1, 2, 3, 4, 5, 0] + 7
    Y = cmvn(X)
    np.testing.assert_allclose(Y.mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(Y.std(0)[:5], 1, rtol=1e-5)
    assert np.all(Y[:, 5] == 0)  # a constant column is only centred
    np.testing.assert_allclose(cmvn(X, variance=False), X - X.mean(0), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"cmvn: X must be 2-D.*Received shape \(0, 3\)"):
        cmvn(np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"delta: X must be 2-D.*Received shape \(5,\)"):
        delta(np.zeros(5))


# ----------------------------------------------------------------------------- trimming


@pytest.mark.parametrize("top_db,fl,hop", [(60, 2048, 512), (30, 200, 50), (20, 256, 64)])
def test_trim_matches_librosa(top_db, fl, hop):
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(top_db)
    y = np.concatenate([1e-4 * rng.standard_normal(3000), _speechlike(6000), 1e-3 * rng.standard_normal(2500)])
    y = y.astype(np.float32)
    got, (a, b) = trim_silence(y, top_db=top_db, frame_length=fl, hop_length=hop)
    want, idx = librosa.effects.trim(y, top_db=top_db, frame_length=fl, hop_length=hop)
    assert (a, b) == tuple(int(v) for v in idx)
    np.testing.assert_array_equal(got, want)
    if top_db <= 30:  # the 1e-3 noise is ~50 dB down: cut at 30 dB, kept at 60
        assert 2000 < a < 3200 and 8800 < b <= 9000 + fl


def test_trim_stereo_and_silent():
    y = np.zeros((10000, 2), dtype=np.float32)
    y[4000:5000, 1] = _speechlike(1000)
    got, (a, b) = trim_silence(y, top_db=40, frame_length=256, hop_length=64)
    assert got.shape[1] == 2 and a <= 4000 and b >= 5000 and b - a < 1600
    librosa = pytest.importorskip("librosa")
    _, idx = librosa.effects.trim(np.ascontiguousarray(y.T), top_db=40, frame_length=256, hop_length=64)
    assert (a, b) == tuple(int(v) for v in idx)
    z = np.zeros(500, dtype=np.float32)
    got, (a, b) = trim_silence(z)  # all zero: nothing is below the loudest frame, kept whole
    assert (a, b) == (0, 500)


# ----------------------------------------------------------------------------- pipeline


def test_mfcc_features_pipeline():
    rng = np.random.default_rng(0)
    sr = 8000
    y = np.concatenate([1e-4 * rng.standard_normal(4000), _speechlike(4000), 1e-4 * rng.standard_normal(4000)])
    F = mfcc_features(y, sr)
    assert F.dtype == np.float32 and F.shape[1] == 39
    # trimmed to the ~0.5 s of speech (plus at most a frame or two): ~50 frames of 10 ms, not 150
    assert 45 <= F.shape[0] <= 60
    np.testing.assert_allclose(F.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(F.std(0), 1, rtol=1e-3)
    # the untrimmed, unnormalised static part equals the steps done by hand
    G = mfcc_features(y, sr, trim=False, normalize=False, deltas=False)
    from pyaiml.audio import frame, get_window, power_spectrum, pre_emphasis

    P = power_spectrum(frame(pre_emphasis(y), 200, 80, pad_end=True), 256, window=get_window("hamming", 200))
    L = np.log(np.maximum(P @ mel_filterbank(sr, 256, 26, 20.0, None, True, None).T, 1e-10))
    np.testing.assert_allclose(G, mfcc(S=L, n_mfcc=13, lifter=22), rtol=1e-5, atol=1e-4)
    assert mfcc_features(np.stack([y, y], 1), sr).shape == F.shape  # stereo -> mono
    assert mfcc_features(y, 16000, n_mels=40, n_mfcc=20, deltas=False).shape[1] == 20


def test_mfcc_features_errors():
    with pytest.raises(ValueError, match=r"mfcc_features \(x\.wav\): signal must not be empty"):
        mfcc_features(np.zeros(0), 8000, name="x.wav")
    with pytest.raises(ValueError, match=r"mfcc_features \(s\.wav\): signal is silent"):
        mfcc_features(np.zeros(8000), 8000, name="s.wav")
    with pytest.raises(ValueError, match=r"mfcc_features \(lo\.wav\): .*fmax must be <= sr / 2 = 2000 Hz"):
        mfcc_features(_speechlike(4000), 4000, fmax=4000.0, name="lo.wav")
    with pytest.raises(ValueError, match="finite"):
        mfcc_features(np.array([0.1, np.nan] * 500), 8000)
    with pytest.raises(ValueError, match="rate must be > 0"):
        mfcc_features(_speechlike(4000), 0)


def test_mfcc_features_batch_equals_loop():
    from pyaiml.audio import mfcc_features_batch

    rng = np.random.default_rng(5)
    sigs = [np.concatenate([1e-4 * rng.standard_normal(n // 3), _speechlike(n, seed=n)]) for n in (700, 2500, 4001)]
    sigs.append(_speechlike(3000, 16000, seed=1))
    rates = [8000, 8000, 8000, 16000]
    for kw in [{}, dict(deltas=False), dict(normalize=False, trim=False), dict(delta_width=3, n_mels=30)]:
        got = mfcc_features_batch(sigs, rates, **kw)
        for g, y, r in zip(got, sigs, rates):
            np.testing.assert_allclose(g, mfcc_features(y, r, **kw), rtol=1e-4, atol=2e-4)
    assert len(mfcc_features_batch(sigs[:3], 8000)) == 3
    with pytest.raises(ValueError, match=r"mfcc_features \(b\.wav\): signal is silent"):
        mfcc_features_batch([sigs[0], np.zeros(900)], 8000, names=["a.wav", "b.wav"])
    with pytest.raises(ValueError, match="rates must be one rate or one per signal"):
        mfcc_features_batch(sigs, [8000, 8000])
    with pytest.raises(TypeError, match="unexpected keyword"):
        mfcc_features_batch(sigs, 8000, n_mfccs=12)
    with pytest.raises(ValueError, match="signals must not be empty"):
        mfcc_features_batch([], 8000)
