"""Feature post-processing (deltas, CMVN), silence trimming, and the speech-recognizer feature
pipeline :func:`mfcc_features`.

What it is: per-utterance NumPy code, time-major (n_frames, n_features).
What it is not: a streaming front end (CMVN and trimming look at the whole utterance).
Test: tests/test_audio_features.py; baseline check of the pipeline on FSDD:
benchmarks/fsdd_hmm_baseline.py.
"""
from __future__ import annotations

import numpy as np

from pyaiml.audio._checks import as_signal, check_int, check_positive
from pyaiml.audio.mel import log_mel_spectrogram, mfcc
from pyaiml.audio.signal import frame, power_spectrum, pre_emphasis


def delta(X, width: int = 2, order: int = 1) -> np.ndarray:
    """Regression deltas along time (HTK's formula).

    d[t] = sum_{n=1..N} n (X[t+n] - X[t-n]) / (2 sum_{n=1..N} n^2),  N = ``width``,
    with X[t] for t outside the utterance replaced by the nearest edge frame. ``order=2``
    applies it twice (delta-deltas, as HTK and Kaldi do). Order 1 equals
    ``librosa.feature.delta(X.T, width=2N+1, mode='nearest').T``.

    Parameters
    ----------
    X : array, shape (n_frames, n_features)
    width : int >= 1 (N; the window spans 2N + 1 frames)
    order : int >= 1

    Returns
    -------
    float32 array, same shape as X
    """
    fn = "delta"
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"{fn}: X must be 2-D (n_frames, n_features), non-empty. Received shape {X.shape}")
    N = check_int(width, fn, "width", minimum=1)
    order = check_int(order, fn, "order", minimum=1)
    den = 2.0 * sum(n * n for n in range(1, N + 1))
    D = X.astype(np.float32)
    T = D.shape[0]
    for _ in range(order):
        P = np.concatenate([np.repeat(D[:1], N, axis=0), D, np.repeat(D[-1:], N, axis=0)])
        out = np.zeros_like(D)
        for n in range(1, N + 1):
            out += n * (P[N + n:N + n + T] - P[N - n:N - n + T])
        D = out / np.float32(den)
    return D


def cmvn(X, *, variance: bool = True, eps: float = 1e-8) -> np.ndarray:
    """Per-utterance cepstral mean (and variance) normalisation: (X - mean) / std per feature,
    over time. Features with std < sqrt(eps) are only centred.

    Parameters
    ----------
    X : array, shape (n_frames, n_features)

    Returns
    -------
    float32 array, same shape
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"cmvn: X must be 2-D (n_frames, n_features), non-empty. Received shape {X.shape}")
    X64 = X.astype(np.float64)
    Y = X64 - X64.mean(axis=0)
    if variance:
        sd = Y.std(axis=0)
        Y /= np.where(sd * sd > eps, sd, 1.0)
    return Y.astype(np.float32)


def _frame_ms(y, frame_length, hop_length):
    fr = frame(y, frame_length, hop_length, center=True, pad_mode="constant")
    return np.mean(np.square(fr, dtype=np.float64), axis=1)


def rms_db(y, frame_length: int, hop_length: int) -> np.ndarray:
    """Frame RMS in dB relative to the loudest frame (librosa.feature.rms with center=True and
    zero padding, then amplitude_to_db(ref=np.max, amin=1e-5)).

    y : shape (n,) or (n, channels); the reference is the loudest frame of any channel.
    Returns shape (n_frames,) or (n_frames, channels).
    """
    x = as_signal(y, "rms_db", "y", allow_2d=True)
    if x.ndim == 1:
        ms = _frame_ms(x, frame_length, hop_length)
    else:
        ms = np.stack([_frame_ms(np.ascontiguousarray(x[:, c]), frame_length, hop_length)
                       for c in range(x.shape[1])], axis=1)
    return 10.0 * np.log10(np.maximum(1e-10, ms)) - 10.0 * np.log10(max(1e-10, float(ms.max())))


def trim_silence(y, *, top_db: float = 60.0, frame_length: int = 2048, hop_length: int = 512):
    """Cut leading and trailing silence, like ``librosa.effects.trim``.

    Frames (centred, zero padded) whose RMS is more than ``top_db`` dB below the loudest
    frame's are silent; the kept span runs from the first non-silent frame's start
    (frame * hop) to the last one's end ((frame + 1) * hop, clipped to the signal).
    For multi-channel y, a frame is non-silent when any channel is (reference: the loudest
    frame of any channel).

    Parameters
    ----------
    y : array, shape (n,) or (n, channels)
    top_db : float > 0
    frame_length, hop_length : int > 0

    Returns
    -------
    (y[start:end], (start, end)). A signal that is entirely zero is returned whole, as
    librosa does (every frame is 0 dB below the loudest).
    """
    x = as_signal(y, "trim_silence", "y", allow_2d=True)
    check_positive(top_db, "trim_silence", "top_db")
    check_int(frame_length, "trim_silence", "frame_length", minimum=1)
    check_int(hop_length, "trim_silence", "hop_length", minimum=1)
    db = rms_db(x, frame_length, hop_length)
    loud = (db if db.ndim == 1 else db.max(axis=1)) > -top_db
    nz = np.flatnonzero(loud)
    if nz.size == 0:  # pragma: no cover - the loudest frame is always at 0 dB
        return x[:0], (0, 0)
    start = int(nz[0]) * hop_length
    end = min(x.shape[0], (int(nz[-1]) + 1) * hop_length)
    return x[start:end], (start, end)


def mfcc_features(signal, rate, *, n_mfcc: int = 13, n_mels: int = 26, win_ms: float = 25.0, hop_ms: float = 10.0,
                  n_fft: int | None = None, fmin: float = 20.0, fmax: float | None = None, window="hamming",
                  preemph: float = 0.97, lifter: float = 22.0, deltas: bool = True, delta_width: int = 2,
                  normalize: bool = True, trim: bool = True, trim_top_db: float = 30.0, trim_frame_ms: float = 25.0,
                  min_silence_db: float = -90.0, name: str | None = None) -> np.ndarray:
    """Speech features for the isolated-word recognizers: (n_frames, 39) float32 by default.

    Pipeline, per utterance:
      1. ``trim_silence`` (``trim_top_db`` below the loudest frame, frames of
         ``trim_frame_ms``, hop a quarter of that) -- the recordings of different speakers
         carry very different amounts of silence, and models that learn it generalise
         badly to new speakers;
      2. pre-emphasis y[t] - ``preemph`` y[t-1];
      3. frames of ``win_ms`` (25 ms) every ``hop_ms`` (10 ms), not centred, the last partial
         frame zero padded; ``window`` (Hamming); |rfft|^2 with n_fft = the next power of
         two >= the window (256 at 8 kHz);
      4. ``n_mels`` (26) HTK-scale mel filters from ``fmin`` (20 Hz) to ``fmax`` (default
         rate / 2, i.e. 4 kHz at 8 kHz: the whole band, which suits telephone-rate audio),
         unnormalised triangles; natural log (floor 1e-10);
      5. ``n_mfcc`` (13) ortho DCT-II coefficients (c0 included as the energy term),
         lifter ``lifter`` (22);
      6. with ``deltas``: deltas and delta-deltas (regression width ``delta_width``) appended
         -> 3 * n_mfcc columns;
      7. with ``normalize``: per-utterance CMVN of every column.

    Parameters
    ----------
    signal : array, shape (n,) (a 2-D (n, channels) signal is averaged to mono)
    rate : sample rate in Hz
    name : shown in error messages (e.g. the file name)

    Raises
    ------
    ValueError
        Empty signal, a signal whose peak is below ``min_silence_db`` dBFS (all silent),
        fmax > rate / 2, or a trimmed signal shorter than one window.
    """
    fn = "mfcc_features" + (f" ({name})" if name else "")
    x = as_signal(signal, fn, "signal", allow_2d=True)
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32)
    rate = check_positive(rate, fn, "rate")
    peak = float(np.max(np.abs(x)))
    if peak == 0.0 or 20.0 * np.log10(peak) < min_silence_db:
        raise ValueError(f"{fn}: signal is silent (peak {peak:.3g}, below {min_silence_db} dBFS); "
                         "no features can be computed")
    win = int(round(win_ms * rate / 1000.0))
    hop = int(round(hop_ms * rate / 1000.0))
    if win < 2 or hop < 1:
        raise ValueError(f"{fn}: win_ms={win_ms} and hop_ms={hop_ms} at rate {rate:g} give a window of {win} "
                         f"and a hop of {hop} samples; need >= 2 and >= 1")
    if n_fft is None:
        n_fft = 1 << (win - 1).bit_length()
    elif n_fft < win:
        raise ValueError(f"{fn}: n_fft must be >= the window length {win} samples. Received {n_fft}")
    if trim:
        tl = max(2, int(round(trim_frame_ms * rate / 1000.0)))
        x, _ = trim_silence(x, top_db=trim_top_db, frame_length=tl, hop_length=max(1, tl // 4))
    if preemph:
        x = pre_emphasis(x, preemph)
    fr = frame(x, win, hop, center=False, pad_end=True)
    P = power_spectrum(fr, n_fft, window=window)
    try:
        L = log_mel_spectrogram(S=P, sr=rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=True,
                                norm=None, log="ln")
        C = mfcc(S=L, n_mfcc=n_mfcc, lifter=lifter)
    except ValueError as e:  # name the utterance too
        raise ValueError(f"{fn}: {e}") from e
    if deltas:
        d1 = delta(C, delta_width)
        C = np.concatenate([C, d1, delta(d1, delta_width)], axis=1)
    if normalize:
        C = cmvn(C)
    return C
