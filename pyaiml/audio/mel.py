"""Mel scale, mel filterbank, log-mel spectrogram and MFCC (DCT-II, liftering).

What it is: the textbook definitions, vectorised, with librosa's conventions for the same
parameters (mel scales, triangular filters, Slaney area norm, power_to_db, ortho DCT-II,
sinusoidal lifter), so ``mfcc(y, sr, ...)`` equals ``librosa.feature.mfcc(y=y, sr=sr,
...).T`` to float32 rounding. Outputs are time-major: (n_frames, n_mels / n_mfcc).
What it is not: a feature pipeline for recognisers; see pyaiml.audio.features.
Test: tests/test_audio_features.py (textbook transcription and librosa).
"""
from __future__ import annotations

import functools
import numbers

import numpy as np

from pyaiml.audio._checks import check_int, check_positive
from pyaiml.audio.signal import spectrogram

# Slaney's (Auditory Toolbox) mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(f, htk: bool = False):
    """Hz -> mel. HTK: 2595 log10(1 + f / 700). Slaney (default): f / (200/3) below 1 kHz,
    15 + 27 log(f / 1000) / log(6.4) above."""
    f = np.asarray(f, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    m = f / _F_SP
    hi = f >= _MIN_LOG_HZ
    return np.where(hi, _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP, m)


def mel_to_hz(m, htk: bool = False):
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(m, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    hi = m >= _MIN_LOG_MEL
    return np.where(hi, _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(m, _MIN_LOG_MEL) - _MIN_LOG_MEL)), _F_SP * m)


def mel_frequencies(n: int, fmin: float, fmax: float, htk: bool = False) -> np.ndarray:
    """n frequencies (Hz) equally spaced on the mel scale from fmin to fmax."""
    return mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n), htk)


def _check_band(sr, fmin, fmax, fn, n_mels=None):
    sr = check_positive(sr, fn, "sr")
    fmin = check_positive(fmin, fn, "fmin", allow_zero=True)
    fmax = sr / 2.0 if fmax is None else check_positive(fmax, fn, "fmax")
    if fmax > sr / 2.0 + 1e-9:
        raise ValueError(f"{fn}: fmax must be <= sr / 2 = {sr / 2:g} Hz (the Nyquist frequency). Received "
                         f"fmax={fmax:g} with sr={sr:g}; lower fmax or resample the signal to at least "
                         f"{2 * fmax:g} Hz")
    if fmin >= fmax:
        raise ValueError(f"{fn}: fmin must be < fmax. Received fmin={fmin:g}, fmax={fmax:g}")
    return sr, fmin, fmax


def mel_filterbank(sr, n_fft: int, n_mels: int = 128, fmin: float = 0.0, fmax: float | None = None,
                   htk: bool = False, norm="slaney", dtype=np.float32) -> np.ndarray:
    """Triangular mel filters over the rfft bins.

    Filter i rises linearly from mel point i to i+1 and falls to i+2, where the n_mels + 2
    points are equally spaced in mel between fmin and fmax; weights are evaluated at the
    bin frequencies k * sr / n_fft.

    Parameters
    ----------
    sr : sample rate (Hz) > 0
    n_fft : int > 0
    n_mels : int > 0
    fmin, fmax : band edges in Hz; fmax defaults to sr / 2 and may not exceed it
    htk : bool
        HTK mel scale instead of Slaney's.
    norm : "slaney", None, or a number p (1, 2, np.inf)
        "slaney": scale each filter by 2 / (f[i+2] - f[i]) (unit area in Hz);
        None: peak 1; p: unit p-norm per filter.

    Returns
    -------
    array, shape (n_mels, n_fft // 2 + 1)
    """
    return _filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm, np.dtype(dtype).str).copy()


@functools.lru_cache(maxsize=64)
def _filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm, dtype):
    """Cached, read-only :func:`mel_filterbank` (feature extraction calls it per utterance)."""
    fn = "mel_filterbank"
    sr, fmin, fmax = _check_band(sr, fmin, fmax, fn)
    n_fft = check_int(n_fft, fn, "n_fft", minimum=1)
    n_mels = check_int(n_mels, fn, "n_mels", minimum=1)
    if not (norm is None or norm == "slaney" or (isinstance(norm, numbers.Real) and not isinstance(norm, bool)
                                                 and norm > 0)):
        raise ValueError(f"{fn}: norm must be 'slaney', None or a positive number (1, 2, np.inf). Received {norm!r}")
    fft_f = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    mel_f = mel_frequencies(n_mels + 2, fmin, fmax, htk)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_f[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    W = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":
        W *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    elif norm is not None:
        if np.isinf(norm):
            s = np.abs(W).max(axis=1)
        else:
            s = (np.abs(W) ** norm).sum(axis=1) ** (1.0 / norm)
        W = W / np.where(s > 0, s, 1.0)[:, None]
    W = W.astype(dtype)
    W.flags.writeable = False
    return W


def power_to_db(S, ref: float = 1.0, amin: float = 1e-10, top_db: float | None = 80.0) -> np.ndarray:
    """10 log10(max(S, amin) / max(ref, amin)), floored at max - top_db when top_db is given.
    (ref may be a callable applied to S, e.g. np.max.)"""
    S = np.asarray(S)
    check_positive(amin, "power_to_db", "amin")
    r = ref(S) if callable(ref) else ref
    out = 10.0 * np.log10(np.maximum(amin, S)) - 10.0 * np.log10(np.maximum(amin, r))
    if top_db is not None:
        check_positive(top_db, "power_to_db", "top_db", allow_zero=True)
        out = np.maximum(out, out.max() - top_db)
    return out


def melspectrogram(y=None, sr=22050, *, S=None, n_fft: int = 2048, hop_length: int | None = None,
                   win_length: int | None = None, window="hann", center: bool = True, pad_mode: str = "constant",
                   power: float = 2.0, n_mels: int = 128, fmin: float = 0.0, fmax: float | None = None,
                   htk: bool = False, norm="slaney") -> np.ndarray:
    """Mel spectrogram: mel_filterbank @ |STFT|**power, per frame.

    Parameters are librosa's (hop_length defaults to n_fft // 4). Give either the signal y
    (1-D) or a power spectrogram S of shape (n_frames, n_fft // 2 + 1).

    Returns
    -------
    float32 array, shape (n_frames, n_mels)
    """
    fn = "melspectrogram"
    if (y is None) == (S is None):
        raise ValueError(f"{fn}: give exactly one of y (signal) or S (power spectrogram)")
    if S is None:
        S = spectrogram(y, n_fft=n_fft, hop_length=hop_length, win_length=win_length, window=window,
                        center=center, pad_mode=pad_mode, power=power)
    else:
        S = np.asarray(S, dtype=np.float32)
        if S.ndim != 2 or S.shape[1] != n_fft // 2 + 1:
            raise ValueError(f"{fn}: S must be 2-D (n_frames, n_fft // 2 + 1 = {n_fft // 2 + 1}). "
                             f"Received shape {S.shape}")
    W = _filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm, "<f4")
    return S @ W.T


def log_mel_spectrogram(y=None, sr=22050, *, S=None, log: str = "db", amin: float = 1e-10,
                        top_db: float | None = 80.0, **kwargs) -> np.ndarray:
    """Log of :func:`melspectrogram`.

    log="db": ``power_to_db(M, ref=1, amin, top_db)`` (librosa's choice before its MFCC);
    log="ln": natural log ``ln(max(M, amin))`` (HTK/Kaldi style; top_db is ignored).
    Other keyword arguments go to :func:`melspectrogram`.

    Returns
    -------
    float32 array, shape (n_frames, n_mels)
    """
    if log not in ("db", "ln"):
        raise ValueError(f"log_mel_spectrogram: log must be 'db' or 'ln'. Received {log!r}")
    M = melspectrogram(y, sr, S=S, **kwargs)
    if log == "ln":
        return np.log(np.maximum(M, np.float32(amin)))
    return power_to_db(M, amin=amin, top_db=top_db).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _dct_lifter(n_in: int, n_out: int, lifter: float) -> np.ndarray:
    C = dct_matrix(n_in, n_out)
    if lifter > 0:
        C = C * lifter_weights(n_out, lifter)[None, :]
    C = C.astype(np.float32)
    C.flags.writeable = False
    return C


def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II basis, shape (n_in, n_out): C[k, n] = sqrt(2/N) cos(pi n (2k + 1) / 2N),
    column 0 scaled by 1/sqrt(2); ``x @ C`` equals scipy.fft.dct(x, type=2, norm='ortho')[:n_out]."""
    k = np.arange(n_in)[:, None]
    n = np.arange(n_out)[None, :]
    C = np.sqrt(2.0 / n_in) * np.cos(np.pi * n * (2 * k + 1) / (2 * n_in))
    C[:, 0] /= np.sqrt(2.0)
    return C


def lifter_weights(n_mfcc: int, lifter: float) -> np.ndarray:
    """Sinusoidal lifter 1 + (L / 2) sin(pi (n + 1) / L), n = 0..n_mfcc-1 (librosa's; HTK's
    form indexes from n = 1 with the c0 coefficient unliftered)."""
    n = np.arange(n_mfcc)
    return 1.0 + (lifter / 2.0) * np.sin(np.pi * (n + 1) / lifter)


def mfcc(y=None, sr=22050, *, S=None, n_mfcc: int = 20, lifter: float = 0.0, **kwargs) -> np.ndarray:
    """Mel-frequency cepstral coefficients: ortho DCT-II of the log-mel spectrogram, optionally
    liftered.

    Parameters
    ----------
    y, sr : signal (1-D) and rate; or S, a log-mel spectrogram (n_frames, n_mels)
    n_mfcc : int, 1 <= n_mfcc <= n_mels
    lifter : float >= 0 (0: none)
    kwargs : passed to :func:`log_mel_spectrogram` (log="db" by default, like librosa)

    Returns
    -------
    float32 array, shape (n_frames, n_mfcc)
    """
    fn = "mfcc"
    n_mfcc = check_int(n_mfcc, fn, "n_mfcc", minimum=1)
    lifter = check_positive(lifter, fn, "lifter", allow_zero=True)
    if S is None:
        S = log_mel_spectrogram(y, sr, **kwargs)
    else:
        if y is not None:
            raise ValueError(f"{fn}: give exactly one of y (signal) or S (log-mel spectrogram)")
        S = np.asarray(S, dtype=np.float32)
        if S.ndim != 2:
            raise ValueError(f"{fn}: S must be 2-D (n_frames, n_mels). Received shape {S.shape}")
    n_mels = S.shape[1]
    if n_mfcc > n_mels:
        raise ValueError(f"{fn}: n_mfcc must be <= n_mels={n_mels}. Received {n_mfcc}")
    return (S @ _dct_lifter(n_mels, n_mfcc, lifter)).astype(np.float32, copy=False)
