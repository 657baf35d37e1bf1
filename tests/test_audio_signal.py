"""pyaiml.audio signal front end: resampling (scipy.signal.resample_poly), pre-emphasis,
framing, windows (scipy.signal.get_window, Kaldi's povey formula), power spectra (a DFT
written out, and librosa.stft where installed), and the argument errors."""
import numpy as np
import pytest

from pyaiml.audio import frame, get_window, power_spectrum, pre_emphasis, resample, spectrogram


@pytest.mark.parametrize("n", [1, 7, 97, 1000])
@pytest.mark.parametrize("rates", [(8000, 16000), (16000, 8000), (44100, 8000), (8000, 11025), (22050, 16000)])
def test_resample_matches_scipy(n, rates):
    sig = pytest.importorskip("scipy.signal")
    from math import gcd

    a, b = rates
    g = gcd(a, b)
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    y = resample(x, a, b)
    want = sig.resample_poly(x.astype(np.float64), b // g, a // g)
    assert y.dtype == np.float32 and y.shape == want.shape == (-(-n * (b // g) // (a // g)),)
    # float64 inside, float32 out: error ~ float32 rounding of values up to ~4
    np.testing.assert_allclose(y, want, rtol=0, atol=2e-6 * max(1.0, np.abs(want).max()))


def test_resample_tone_and_channels():
    t = np.arange(8000) / 8000.0
    x = np.stack([np.sin(2 * np.pi * 440 * t), np.cos(2 * np.pi * 300 * t)], axis=1)
    y = resample(x, 8000, 16000)
    assert y.shape == (16000, 2)
    t2 = np.arange(16000) / 16000.0
    # away from the edges, a band-limited tone is reproduced closely
    np.testing.assert_allclose(y[200:-200, 0], np.sin(2 * np.pi * 440 * t2)[200:-200], atol=2e-3)
    np.testing.assert_allclose(y[200:-200, 1], np.cos(2 * np.pi * 300 * t2)[200:-200], atol=2e-3)
    np.testing.assert_array_equal(resample(x, 8000, 8000), x.astype(np.float32))
    with pytest.raises(ValueError, match="orig_sr must be >= 1"):
        resample(x, 0, 8000)
    with pytest.raises(TypeError, match="target_sr must be an integer"):
        resample(x, 8000, 16000.5)
    with pytest.raises(ValueError, match="y must not be empty"):
        resample(np.zeros(0), 8000, 16000)


def test_pre_emphasis():
    x = np.array([1.0, 2.0, 4.0, -1.0], dtype=np.float32)
    np.testing.assert_allclose(pre_emphasis(x, 0.5), [1.0, 1.5, 3.0, -3.0])
    X = np.stack([x, 2 * x], 1)
    np.testing.assert_allclose(pre_emphasis(X, 0.5)[:, 1], [2.0, 3.0, 6.0, -6.0])
    with pytest.raises(ValueError, match=r"coef must be in \[0, 1\)"):
        pre_emphasis(x, 1.5)
    with pytest.raises(ValueError, match="finite"):
        pre_emphasis(np.array([0.0, np.nan]))
    with pytest.raises(TypeError, match="real numeric"):
        pre_emphasis(np.array(["a"]))


@pytest.mark.parametrize("n", [7, 33, 97, 100])
@pytest.mark.parametrize("L,hop", [(7, 3), (25, 10), (8, 8)])
def test_frame(n, L, hop):
    x = np.arange(n, dtype=np.float32)
    if n >= L:
        F = frame(x, L, hop)
        assert F.shape == (1 + (n - L) // hop, L)
        for t in range(F.shape[0]):
            np.testing.assert_array_equal(F[t], x[t * hop:t * hop + L])
    F = frame(x, L, hop, pad_end=True)
    n_want = 1 if n <= L else 1 + -(-(n - L) // hop)
    assert F.shape == (n_want, L)
    xp = np.concatenate([x, np.zeros(L + hop, np.float32)])
    for t in range(n_want):
        np.testing.assert_array_equal(F[t], xp[t * hop:t * hop + L])
    assert (n_want - 1) * hop + L >= n  # every sample is in a frame
    F = frame(x, L, hop, center=True)
    assert F.shape[0] == 1 + (n + 2 * (L // 2) - L) // hop
    np.testing.assert_array_equal(F[0, L // 2:], xp[:L - L // 2])
    if n > L // 2:
        Fr = frame(x, L, hop, center=True, pad_mode="reflect")
        np.testing.assert_array_equal(Fr[0, :L // 2], x[1:L // 2 + 1][::-1])


def test_frame_errors():
    with pytest.raises(ValueError, match=r"at least frame_length=10 samples.*Received 5"):
        frame(np.zeros(5), 10, 2)
    with pytest.raises(ValueError, match="hop_length must be >= 1"):
        frame(np.zeros(50), 10, 0)
    with pytest.raises(ValueError, match="pad_mode must be one of"):
        frame(np.zeros(50), 10, 2, center=True, pad_mode="wrap")
    with pytest.raises(ValueError, match=r"must be 1-D \(n,\)"):
        frame(np.zeros((50, 2)), 10, 2)
    with pytest.raises(ValueError, match="reflect"):
        frame(np.zeros(3), 10, 2, center=True, pad_mode="reflect")


@pytest.mark.parametrize("n", [1, 7, 200, 256])
@pytest.mark.parametrize("name", ["hann", "hamming", "blackman"])
def test_windows_match_scipy(n, name):
    sig = pytest.importorskip("scipy.signal")
    np.testing.assert_allclose(get_window(name, n), sig.get_window(name, n, fftbins=True), atol=1e-12)
    np.testing.assert_allclose(get_window(name, n, periodic=False), sig.get_window(name, n, fftbins=False),
                               atol=1e-12)


def test_povey_and_errors():
    n = 400
    w = get_window("povey", n)
    k = np.arange(n)
    np.testing.assert_allclose(w, np.power(0.5 - 0.5 * np.cos(2 * np.pi * k / (n - 1)), 0.85))
    assert w[0] == 0 and abs(w[(n - 1) // 2] - 1) < 1e-4
    with pytest.raises(ValueError, match="window must be one of"):
        get_window("kaiser", 8)
    with pytest.raises(ValueError, match=r"window array must have shape \(8,\)"):
        get_window(np.ones(7), 8)


@pytest.mark.parametrize("L,n_fft", [(7, 7), (25, 32), (200, 256), (33, 33)])
def test_power_spectrum_textbook(L, n_fft):
    rng = np.random.default_rng(L)
    F = rng.standard_normal((3, L)).astype(np.float32)
    P = power_spectrum(F, n_fft, window="hamming")
    w = get_window("hamming", L)
    k = np.arange(n_fft // 2 + 1)[:, None]
    t = np.arange(L)[None, :]
    E = np.exp(-2j * np.pi * k * t / n_fft)  # DFT written out
    want = np.abs((F * w) @ E.T) ** 2
    assert P.shape == (3, n_fft // 2 + 1) and P.dtype == np.float32
    np.testing.assert_allclose(P, want, rtol=1e-4, atol=1e-4 * want.max())
    np.testing.assert_allclose(power_spectrum(F, n_fft, power=1.0), np.abs(np.fft.rfft(F, n_fft)), rtol=1e-5)
    with pytest.raises(ValueError, match=f"n_fft must be >= frame length {L}"):
        power_spectrum(F, L - 1)
    with pytest.raises(ValueError, match=r"frames must be 2-D"):
        power_spectrum(F[0])


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("n_fft,hop,win", [(256, 80, 200), (512, 128, None), (64, 16, 63)])
def test_spectrogram_matches_librosa(center, n_fft, hop, win):
    librosa = pytest.importorskip("librosa")
    y = np.random.default_rng(1).standard_normal(3001).astype(np.float32)
    S = spectrogram(y, n_fft=n_fft, hop_length=hop, win_length=win, center=center)
    R = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop, win_length=win, center=center, pad_mode="constant")) ** 2
    assert S.shape == R.T.shape
    np.testing.assert_allclose(S, R.T, rtol=1e-4, atol=1e-5 * R.max())
