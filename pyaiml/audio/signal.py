"""Signal front end for speech features: resampling, pre-emphasis, framing, windows, power
spectra. Vectorised NumPy; arrays are time-major: frames are rows, (n_frames, ...).

What it is not: a general DSP library (no arbitrary filters, no STFT inversion).
Conventions follow librosa where it has the same function (``center`` padding by
n_fft // 2, periodic windows zero-padded to n_fft, power = |X|**2), so results compare
directly; shapes are transposed with respect to librosa's (n_freq, n_frames).
Test: tests/test_audio_signal.py.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from pyaiml.audio._checks import as_signal, check_int, check_positive

# --------------------------------------------------------------------------- resampling


def _kaiser_lowpass(half: int, cutoff: float, beta: float) -> np.ndarray:
    """Windowed-sinc low-pass FIR of 2*half+1 taps, cutoff as a fraction of Nyquist, unit DC gain."""
    m = np.arange(-half, half + 1, dtype=np.float64)
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(2 * half + 1, beta)
    return h / h.sum()


def resample(y, orig_sr: int, target_sr: int, *, taps_per_side: int = 10, beta: float = 5.0) -> np.ndarray:
    """Rational-rate resampling by a polyphase windowed-sinc filter.

    The rate ratio is reduced to up/down (gcd); the signal is (virtually) upsampled by
    ``up`` with zeros, low-pass filtered by a Kaiser-windowed sinc with cutoff at the lower
    of the two Nyquist frequencies, ``2 * taps_per_side * max(up, down) + 1`` taps, and
    kept every ``down``-th sample; only the products that reach a kept sample are computed
    (polyphase). The filter is centred, so no delay is added. Output length is
    ceil(n * up / down). With the defaults this is the same filter as
    ``scipy.signal.resample_poly(y, up, down)`` (window ('kaiser', 5.0), half length
    10 * max(up, down)) and matches it to float32 rounding.

    Parameters
    ----------
    y : array, shape (n,) or (n, channels)
    orig_sr, target_sr : int > 0
    taps_per_side : int > 0
        Filter half-length in units of max(up, down); more is sharper and slower.
    beta : float >= 0
        Kaiser window shape (5: ~ -55 dB stop band).

    Returns
    -------
    float32 array, shape (ceil(n * up / down),) or (..., channels)
    """
    x = as_signal(y, "resample", "y", allow_2d=True)
    orig_sr = check_int(orig_sr, "resample", "orig_sr", minimum=1)
    target_sr = check_int(target_sr, "resample", "target_sr", minimum=1)
    check_int(taps_per_side, "resample", "taps_per_side", minimum=1)
    if orig_sr == target_sr:
        return x.astype(np.float32, copy=True)
    g = math.gcd(orig_sr, target_sr)
    up, down = target_sr // g, orig_sr // g
    if max(up, down) > 10000:
        raise ValueError(f"resample: the rate ratio {target_sr}/{orig_sr} reduces to {up}/{down}; "
                         "ratios with terms above 10000 need too long a filter")
    half = taps_per_side * max(up, down)
    h = _kaiser_lowpass(half, 1.0 / max(up, down), beta) * up
    n = x.shape[0]
    n_out = -(-n * up // down)
    # Output m sits at upsampled index t = m*down; it sums x[j] * h[t + half - j*up] over the
    # taps of phase p = (t + half) % up: j = (t + half) // up - k, filter index p + k*up.
    # Outputs m = r, r + up, r + 2 up, ... share the phase and step by `down` input samples,
    # so each residue r is one matrix-vector product over a strided (count, K) view of x:
    # no gather. (10 s, 44.1 -> 16 kHz: 0.46 s with a gathered (M, K) index array, ~0.03 s so.)
    K = (2 * half) // up + 1                         # taps per phase (zero-filled past the end)
    hp = np.zeros((up, K))
    for p in range(up):
        taps = h[p::up]
        hp[p, :taps.size] = taps
    hp = np.ascontiguousarray(hp[:, ::-1])            # reversed: windows run forward in x
    C = 1 if x.ndim == 1 else x.shape[1]
    pad_lo, pad_hi = K, K + half // up + 2
    xp = np.zeros((pad_lo + n + pad_hi, C))
    xp[pad_lo:pad_lo + n] = x.reshape(n, C)
    s0, s1 = xp.strides
    out = np.empty((n_out, C))
    for r in range(min(up, n_out)):
        t0 = r * down + half
        b0, p = t0 // up, t0 % up
        cnt = len(range(r, n_out, up))
        start = b0 - (K - 1) + pad_lo                # first sample of output r's window
        V = np.lib.stride_tricks.as_strided(xp[start:], shape=(C, cnt, K), strides=(s1, down * s0, s0),
                                            writeable=False)
        out[r::up] = (V @ hp[p]).T
    out = out.astype(np.float32)
    return out[:, 0] if x.ndim == 1 else out


def speed_perturb(y, factor: float, *, taps_per_side: int = 10, beta: float = 5.0) -> np.ndarray:
    """Play ``y`` ``factor`` times faster (tempo and pitch together), at the same sample rate.

    The training augmentation of Ko et al. (2015, "Audio augmentation for speech
    recognition"): copies at 0.9 and 1.1 shift every formant by -10% / +10% and change the
    duration, which stands in for speakers with longer or shorter vocal tracts. Done by
    :func:`resample` with the ratio ``factor`` written as a fraction p/q (denominator at most
    100): output length ceil(n * q / p).

    Parameters
    ----------
    y : array, shape (n,) or (n, channels)
    factor : float in [0.5, 2.0]; 1.0 returns a float32 copy.

    Returns
    -------
    float32 array, shape (ceil(n / factor),) (or with channels)
    """
    from fractions import Fraction

    try:
        f = float(factor)
    except (TypeError, ValueError):
        raise ValueError(f"speed_perturb: factor must be a number in [0.5, 2.0]. Received {factor!r}") from None
    if not (0.5 <= f <= 2.0):
        raise ValueError(f"speed_perturb: factor must be a number in [0.5, 2.0]. Received {factor!r}")
    r = Fraction(f).limit_denominator(100)
    return resample(y, r.numerator, r.denominator, taps_per_side=taps_per_side, beta=beta)


# --------------------------------------------------------------------------- filters, frames


def pre_emphasis(y, coef: float = 0.97) -> np.ndarray:
    """First-order high-pass y[t] - coef * y[t-1] (y[-1] taken as 0), along axis 0.

    Parameters
    ----------
    y : array, shape (n,) or (n, channels)
    coef : float in [0, 1)

    Returns
    -------
    float32 array, same shape as y
    """
    x = as_signal(y, "pre_emphasis", "y", allow_2d=True)
    if not (0.0 <= float(coef) < 1.0):
        raise ValueError(f"pre_emphasis: coef must be in [0, 1). Received {coef!r}")
    out = np.empty_like(x, dtype=np.float32)
    out[0] = x[0]
    np.subtract(x[1:], np.float32(coef) * x[:-1], out=out[1:], casting="unsafe")
    return out


_PAD_MODES = ("constant", "reflect", "edge")


def frame(y, frame_length: int, hop_length: int, *, center: bool = False, pad_end: bool = False,
          pad_mode: str = "constant") -> np.ndarray:
    """Cut a 1-D signal into overlapping frames.

    Parameters
    ----------
    y : array, shape (n,)
    frame_length, hop_length : int > 0
    center : bool
        Pad ``frame_length // 2`` samples at both ends first, so frame t is centred on
        sample t * hop_length (librosa's convention).
    pad_end : bool
        Pad the end so that the last, partial frame is kept (1 + ceil((n - L) / hop) frames)
        instead of dropped (1 + (n - L) // hop frames).
    pad_mode : {"constant", "reflect", "edge"}
        How padding is filled (zeros, mirror without the edge sample, repeat the edge).

    Returns
    -------
    array, shape (n_frames, frame_length): a read-only strided view when no padding is
    done, else a view of a padded copy.

    Raises
    ------
    ValueError if the (padded) signal is shorter than one frame.
    """
    x = as_signal(y, "frame", "y")
    L = check_int(frame_length, "frame", "frame_length", minimum=1)
    hop = check_int(hop_length, "frame", "hop_length", minimum=1)
    if pad_mode not in _PAD_MODES:
        raise ValueError(f"frame: pad_mode must be one of {', '.join(_PAD_MODES)}. Received {pad_mode!r}")
    lo = hi = 0
    if center:
        lo = hi = L // 2
    if pad_end:
        n = x.shape[0] + lo + hi
        extra = (L - n) if n < L else (-(n - L)) % hop
        hi += extra
    if lo or hi:
        if pad_mode == "reflect" and x.shape[0] <= max(lo, hi):
            raise ValueError(f"frame: pad_mode='reflect' needs more than {max(lo, hi)} samples. "
                             f"Received {x.shape[0]}")
        x = np.pad(x, (lo, hi), mode=pad_mode)
    if x.shape[0] < L:
        raise ValueError(f"frame: y must hold at least frame_length={L} samples (after padding). "
                         f"Received {x.shape[0]}; use center=True or pad_end=True to pad short signals")
    n_frames = 1 + (x.shape[0] - L) // hop
    return np.lib.stride_tricks.as_strided(x, shape=(n_frames, L), strides=(hop * x.strides[0], x.strides[0]),
                                           writeable=False)


_WINDOWS = ("hann", "hamming", "povey", "rectangular", "blackman")


def get_window(window, n: int, *, periodic: bool = True) -> np.ndarray:
    """Analysis window of length n.

    Parameters
    ----------
    window : {"hann", "hamming", "povey", "rectangular", "blackman"} or array of length n
        hann = 0.5 - 0.5 cos(2 pi k / M); hamming = 0.54 - 0.46 cos(2 pi k / M);
        blackman = 0.42 - 0.5 cos(2 pi k / M) + 0.08 cos(4 pi k / M);
        povey (Kaldi's) = (0.5 - 0.5 cos(2 pi k / (n - 1)))**0.85, always symmetric.
    n : int > 0
    periodic : bool
        M = n for periodic (FFT analysis; scipy's ``fftbins=True`` and librosa's default),
        M = n - 1 for symmetric.

    Returns
    -------
    float64 array, shape (n,)
    """
    n = check_int(n, "get_window", "n", minimum=1)
    if not isinstance(window, str):
        w = np.asarray(window, dtype=np.float64)
        if w.shape != (n,):
            raise ValueError(f"get_window: window array must have shape ({n},). Received {w.shape}")
        return w
    if window not in _WINDOWS:
        raise ValueError(f"get_window: window must be one of {', '.join(_WINDOWS)} or an array. Received {window!r}")
    if window == "rectangular" or n == 1:
        return np.ones(n)
    k = np.arange(n, dtype=np.float64)
    if window == "povey":
        return (0.5 - 0.5 * np.cos(2 * np.pi * k / (n - 1))) ** 0.85
    M = n if periodic else n - 1
    c = np.cos(2 * np.pi * k / M)
    if window == "hann":
        return 0.5 - 0.5 * c
    if window == "hamming":
        return 0.54 - 0.46 * c
    return 0.42 - 0.5 * c + 0.08 * np.cos(4 * np.pi * k / M)


@functools.lru_cache(maxsize=32)
def _window32(name: str, n: int) -> np.ndarray:
    w = get_window(name, n).astype(np.float32)
    w.flags.writeable = False
    return w


def power_spectrum(frames, n_fft: int | None = None, *, window=None, power: float = 2.0) -> np.ndarray:
    """|rfft(frames * window, n_fft)| ** power, per frame.

    Parameters
    ----------
    frames : array, shape (n_frames, L)
    n_fft : int >= L, default L (frames are zero-padded at the end to n_fft)
    window : name, array of length L, or None (no window)
    power : float > 0 (2: power, 1: magnitude)

    Returns
    -------
    float32 array, shape (n_frames, n_fft // 2 + 1)
    """
    fr = np.asarray(frames)
    if fr.ndim != 2 or fr.shape[0] == 0 or fr.shape[1] == 0:
        raise ValueError(f"power_spectrum: frames must be 2-D (n_frames, frame_length), non-empty. "
                         f"Received shape {fr.shape}")
    L = fr.shape[1]
    n_fft = L if n_fft is None else check_int(n_fft, "power_spectrum", "n_fft", minimum=1)
    if n_fft < L:
        raise ValueError(f"power_spectrum: n_fft must be >= frame length {L}. Received {n_fft}")
    check_positive(power, "power_spectrum", "power")
    fr = fr.astype(np.float32, copy=False)
    if window is not None:
        fr = fr * (_window32(window, L) if isinstance(window, str) else get_window(window, L).astype(np.float32))
    X = np.fft.rfft(fr, n=n_fft, axis=1)
    S = X.real ** 2 + X.imag ** 2
    if power != 2.0:
        S = S ** (power / 2.0)
    return S.astype(np.float32, copy=False)


def spectrogram(y, *, n_fft: int = 512, hop_length: int | None = None, win_length: int | None = None,
                window="hann", center: bool = True, pad_mode: str = "constant", power: float = 2.0) -> np.ndarray:
    """Short-time power spectrogram, librosa's ``abs(stft(...)) ** power`` transposed.

    The window (length ``win_length``, default n_fft) is zero-padded on both sides to
    n_fft and frames of n_fft samples are taken every ``hop_length`` (default n_fft // 4);
    ``center`` pads n_fft // 2 at both ends.

    Returns
    -------
    float32 array, shape (n_frames, n_fft // 2 + 1)
    """
    x = as_signal(y, "spectrogram", "y")
    n_fft = check_int(n_fft, "spectrogram", "n_fft", minimum=1)
    hop = n_fft // 4 if hop_length is None else check_int(hop_length, "spectrogram", "hop_length", minimum=1)
    wl = n_fft if win_length is None else check_int(win_length, "spectrogram", "win_length", minimum=1)
    if wl > n_fft:
        raise ValueError(f"spectrogram: win_length must be <= n_fft={n_fft}. Received {wl}")
    w = get_window(window, wl)
    if wl < n_fft:
        lo = (n_fft - wl) // 2
        w = np.pad(w, (lo, n_fft - wl - lo))
    fr = frame(x, n_fft, hop, center=center, pad_mode=pad_mode)
    return power_spectrum(fr, n_fft, window=w, power=power)
