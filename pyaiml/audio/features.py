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
from pyaiml.audio.mel import _dct_lifter, _filterbank
from pyaiml.audio.signal import _window32, frame, get_window, pre_emphasis


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


def speaker_cmvn(features, speakers, *, variance: bool = True, eps: float = 1e-8, reference=None,
                 reference_speakers=None) -> list:
    """Per-speaker cepstral mean (and variance) normalisation.

    Every utterance of one speaker is normalised with the mean and standard deviation of all
    that speaker's frames, instead of its own (:func:`cmvn`). A short word carries too few
    frames for stable statistics of its own, and its own mean removes part of the word; a
    speaker's statistics over many words remove the speaker (vocal tract, channel, level) and
    keep the word. Measured on FSDD, leave one speaker out (each held-out speaker normalised
    over their own recordings): Gaussian HMM 85.3% -> 91.7%, GMM-HMM 84.0% -> 91.9%, 1-D CNN
    77.7% -> 84.5% (examples/speech_digits.py --loso; benchmarks/RESULTS.md).

    Use the same grouping at recognition time: a new speaker's recordings are normalised
    together (an enrolment set of their utterances, or the session so far); with
    ``reference`` the statistics come from those utterances instead of ``features``
    themselves (e.g. a known speaker's training recordings for their test recordings).

    Parameters
    ----------
    features : sequence of arrays, shape (n_frames_i, n_features), one per utterance
    speakers : sequence of hashable labels, one per utterance (any grouping works: a
        speaker, a session, a speaker and an augmentation factor)
    variance : also divide by the standard deviation; features whose std is below
        sqrt(eps) are only centred.
    reference, reference_speakers : optional utterances (and their labels) to take each
        speaker's statistics from; every speaker in ``speakers`` must appear there.

    Returns
    -------
    list of float32 arrays, same shapes, in the order given
    """
    arrs, spk = _utterances(features, speakers, "features", "speakers")
    if reference is None:
        if reference_speakers is not None:
            raise ValueError("speaker_cmvn: reference_speakers needs reference")
        ref, ref_spk = arrs, spk
    else:
        ref, ref_spk = _utterances(reference, reference_speakers, "reference", "reference_speakers")
        if ref[0].shape[1] != arrs[0].shape[1]:
            raise ValueError(f"speaker_cmvn: reference has {ref[0].shape[1]} features per frame, features have "
                             f"{arrs[0].shape[1]}")
    groups: dict = {}
    for i, g in enumerate(ref_spk):
        groups.setdefault(g, []).append(i)
    missing = sorted({repr(g) for g in spk if g not in groups})
    if missing:
        raise ValueError(f"speaker_cmvn: no reference utterances for speaker(s) {', '.join(missing[:5])}")
    stats = {}
    for g, idx in groups.items():
        X = np.concatenate([ref[i] for i in idx]).astype(np.float64)
        mu = X.mean(axis=0)
        if variance:
            sd = X.std(axis=0)
            stats[g] = (mu, np.where(sd * sd > eps, sd, 1.0))
        else:
            stats[g] = (mu, 1.0)
    return [((a - stats[g][0]) / stats[g][1]).astype(np.float32) for a, g in zip(arrs, spk)]


def _utterances(features, speakers, fname, sname):
    feats = list(features)
    if not feats:
        raise ValueError(f"speaker_cmvn: {fname} must hold at least one utterance. Received an empty sequence")
    if speakers is None:
        raise ValueError(f"speaker_cmvn: {sname} must have one label per utterance ({len(feats)}). Received None")
    spk = list(speakers)
    if len(spk) != len(feats):
        raise ValueError(f"speaker_cmvn: {sname} must have one label per utterance ({len(feats)}). "
                         f"Received {len(spk)}")
    arrs = []
    for i, x in enumerate(feats):
        try:
            a = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"speaker_cmvn: {fname}[{i}] must be an array of numbers. Received "
                             f"{type(x).__name__} of dtype {getattr(np.asarray(x), 'dtype', '?')}") from None
        if a.ndim != 2 or a.shape[0] == 0:
            raise ValueError(f"speaker_cmvn: {fname}[{i}] must be 2-D (n_frames, n_features), non-empty. "
                             f"Received shape {a.shape}")
        if a.shape[1] != np.shape(feats[0])[1]:
            raise ValueError(f"speaker_cmvn: every utterance must have {np.shape(feats[0])[1]} features (as "
                             f"{fname}[0]). Received {a.shape[1]} in {fname}[{i}]")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"speaker_cmvn: {fname}[{i}] must be finite. Received NaN or inf values")
        arrs.append(a)
    return arrs, spk


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
                  normalize: bool = True, trim: bool = True, trim_top_db: float = 40.0, trim_frame_ms: float = 25.0,
                  min_silence_db: float = -90.0, name: str | None = None) -> np.ndarray:
    """Speech features for the isolated-word recognizers: (n_frames, 39) float32 by default.

    Pipeline, per utterance:
      1. ``trim_silence`` (``trim_top_db`` (40 dB) below the loudest frame, frames of
         ``trim_frame_ms``, hop a quarter of that) -- the recordings of different speakers
         carry different amounts of silence, and models that learn it generalise worse to
         new speakers. Measured on FSDD with benchmarks/fsdd_hmm_baseline.py (hmmlearn
         GaussianHMM, 8 states left-right, flat start; official split / leave-one-speaker-
         out mean): 40 dB 95.2% / 85.3%, 30 dB 94.8% / 82.2%, 20 dB 90.4% / -, untrimmed
         95.6% / 84.8% (FSDD itself comes trimmed close to the speech);
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
      7. with ``normalize`` (True or "utterance"): per-utterance CMVN of every column
         (False or "none": none; per-speaker CMVN: ``mfcc_features_batch(...,
         normalize="speaker", speakers=...)`` or :func:`speaker_cmvn`).

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
    if isinstance(normalize, str) and normalize == "speaker":
        raise ValueError("mfcc_features: normalize='speaker' needs all of a speaker's utterances; use "
                         "mfcc_features_batch(signals, rates, normalize='speaker', speakers=...) or speaker_cmvn")
    if normalize not in (True, False, "utterance", "none"):
        raise ValueError(f"mfcc_features: normalize must be True/'utterance' or False/'none'. Received {normalize!r}")
    normalize = normalize in (True, "utterance")
    return _pipeline([signal], [rate], [name], dict(
        n_mfcc=n_mfcc, n_mels=n_mels, win_ms=win_ms, hop_ms=hop_ms, n_fft=n_fft, fmin=fmin, fmax=fmax,
        window=window, preemph=preemph, lifter=lifter, deltas=deltas, delta_width=delta_width,
        normalize=normalize, trim=trim, trim_top_db=trim_top_db, trim_frame_ms=trim_frame_ms,
        min_silence_db=min_silence_db))[0]


def mfcc_features_batch(signals, rates, *, names=None, speakers=None, **kwargs) -> list:
    """:func:`mfcc_features` for many utterances at once; same keyword arguments, same results.

    Trimming and framing run per utterance; the FFT, filterbank and DCT run in blocks of 1024
    frames over all utterances of one rate, deltas and CMVN once over the concatenation.
    Measured on FSDD (1000 recordings, CPU time): about the same as a loop over
    mfcc_features (0.5-0.65 s both); it is a convenience (one call, names in errors, mixed
    rates), not a speed-up.

    Parameters
    ----------
    signals : sequence of arrays, shape (n_i,) or (n_i, channels)
    rates : one rate for all, or a sequence of rates (one per signal)
    names : optional sequence of names for error messages (file names, say)
    speakers : with ``normalize="speaker"``, one speaker label per signal: CMVN over each
        speaker's utterances (:func:`speaker_cmvn`) instead of per utterance.

    Returns
    -------
    list of float32 arrays, shape (n_frames_i, n_features)
    """
    signals = list(signals)
    if not signals:
        raise ValueError("mfcc_features_batch: signals must not be empty. Received an empty sequence")
    if np.ndim(rates) == 0:
        rates = [rates] * len(signals)
    rates = list(rates)
    if len(rates) != len(signals):
        raise ValueError(f"mfcc_features_batch: rates must be one rate or one per signal ({len(signals)}). "
                         f"Received {len(rates)}")
    names = [None] * len(signals) if names is None else list(names)
    if len(names) != len(signals):
        raise ValueError(f"mfcc_features_batch: names must have one entry per signal ({len(signals)}). "
                         f"Received {len(names)}")
    unknown = set(kwargs) - _DEFAULTS.keys()
    if unknown:
        raise TypeError(f"mfcc_features_batch: unexpected keyword argument(s) {sorted(unknown)}")
    kw = dict(_DEFAULTS, **kwargs)
    by_speaker = isinstance(kw["normalize"], str) and kw["normalize"] == "speaker"
    if by_speaker:
        if speakers is None or len(list(speakers)) != len(signals):
            raise ValueError(f"mfcc_features_batch: normalize='speaker' needs speakers=, one label per signal "
                             f"({len(signals)}). Received {None if speakers is None else len(list(speakers))}")
        kw["normalize"] = False
    elif speakers is not None:
        raise ValueError("mfcc_features_batch: speakers= is only used with normalize='speaker'. Received "
                         f"normalize={kw['normalize']!r}")
    elif kw["normalize"] not in (True, False, "utterance", "none"):
        raise ValueError(f"mfcc_features_batch: normalize must be True/'utterance', False/'none' or 'speaker'. "
                         f"Received {kw['normalize']!r}")
    else:
        kw["normalize"] = kw["normalize"] in (True, "utterance")
    out = [None] * len(signals)
    for r in sorted(set(float(v) if np.isscalar(v) else -1.0 for v in rates)):
        idx = [i for i, v in enumerate(rates) if (float(v) if np.isscalar(v) else -1.0) == r]
        res = _pipeline([signals[i] for i in idx], [rates[i] for i in idx], [names[i] for i in idx], kw)
        for i, f in zip(idx, res):
            out[i] = f
    if by_speaker:
        out = speaker_cmvn(out, list(speakers))
    return out


_DEFAULTS = dict(n_mfcc=13, n_mels=26, win_ms=25.0, hop_ms=10.0, n_fft=None, fmin=20.0, fmax=None, window="hamming",
                 preemph=0.97, lifter=22.0, deltas=True, delta_width=2, normalize=True, trim=True, trim_top_db=40.0,
                 trim_frame_ms=25.0, min_silence_db=-90.0)


def _segment_delta(D, seg_id, starts, ends, N):
    """Regression deltas of concatenated utterances, each edge-replicated within its own span."""
    T = D.shape[0]
    t = np.arange(T)
    lo, hi = starts[seg_id], ends[seg_id] - 1
    out = np.zeros_like(D)
    for n in range(1, N + 1):
        out += n * (D[np.minimum(t + n, hi)] - D[np.maximum(t - n, lo)])
    return out / np.float32(2.0 * sum(n * n for n in range(1, N + 1)))


def _pipeline(signals, rates, names, kw):
    """The steps of mfcc_features over utterances sharing one rate; returns a list of arrays."""
    prepared = []
    rate0 = None
    for signal, rate, name in zip(signals, rates, names):
        fn = "mfcc_features" + (f" ({name})" if name else "")
        x = as_signal(signal, fn, "signal", allow_2d=True)
        if x.ndim == 2:
            x = x.mean(axis=1, dtype=np.float32)
        rate = check_positive(rate, fn, "rate")
        peak = float(np.max(np.abs(x)))
        if peak == 0.0 or 20.0 * np.log10(peak) < kw["min_silence_db"]:
            raise ValueError(f"{fn}: signal is silent (peak {peak:.3g}, below {kw['min_silence_db']} dBFS); "
                             "no features can be computed")
        if rate0 is None:
            rate0 = rate
            win = int(round(kw["win_ms"] * rate / 1000.0))
            hop = int(round(kw["hop_ms"] * rate / 1000.0))
            if win < 2 or hop < 1:
                raise ValueError(f"{fn}: win_ms={kw['win_ms']} and hop_ms={kw['hop_ms']} at rate {rate:g} give a "
                                 f"window of {win} and a hop of {hop} samples; need >= 2 and >= 1")
            n_fft = kw["n_fft"]
            if n_fft is None:
                n_fft = 1 << (win - 1).bit_length()
            elif n_fft < win:
                raise ValueError(f"{fn}: n_fft must be >= the window length {win} samples. Received {n_fft}")
            tl = max(2, int(round(kw["trim_frame_ms"] * rate / 1000.0)))
        if kw["trim"]:
            x, _ = trim_silence(x, top_db=kw["trim_top_db"], frame_length=tl, hop_length=max(1, tl // 4))
        if kw["preemph"]:
            x = pre_emphasis(x, kw["preemph"])
        prepared.append(frame(x, win, hop, center=False, pad_end=True))
    counts = np.array([f.shape[0] for f in prepared])
    ends = np.cumsum(counts)
    starts = ends - counts
    fn = "mfcc_features" + (f" ({names[0]})" if len(names) == 1 and names[0] else "")
    try:  # validates fmax <= rate / 2, n_mfcc <= n_mels, ...
        W = _filterbank(rate0, n_fft, check_int(kw["n_mels"], fn, "n_mels", minimum=1), kw["fmin"], kw["fmax"],
                        True, None, "<f4")
        n_mfcc = check_int(kw["n_mfcc"], fn, "n_mfcc", minimum=1)
        if n_mfcc > W.shape[0]:
            raise ValueError(f"n_mfcc must be <= n_mels={W.shape[0]}. Received {n_mfcc}")
        D = _dct_lifter(W.shape[0], n_mfcc, check_positive(kw["lifter"], fn, "lifter", allow_zero=True))
    except ValueError as e:  # name the utterance too
        raise ValueError(f"{fn}: {e}") from e
    F = np.concatenate(prepared) if len(prepared) > 1 else prepared[0]
    w = _window32(kw["window"], win) if isinstance(kw["window"], str) else \
        get_window(kw["window"], win).astype(np.float32)
    C = np.empty((F.shape[0], n_mfcc), dtype=np.float32)
    # Spectra in blocks of 1024 frames (1 MiB of float32 spectrum): one rfft over all 90k FSDD
    # frames at once measured 3x slower than the same work in cache-sized blocks.
    for b in range(0, F.shape[0], 1024):
        X = np.fft.rfft(F[b:b + 1024] * w, n=n_fft, axis=1)
        P = X.real ** 2 + X.imag ** 2
        C[b:b + 1024] = np.log(np.maximum(P.astype(np.float32) @ W.T, np.float32(1e-10))) @ D
    if kw["deltas"]:
        N = check_int(kw["delta_width"], fn, "delta_width", minimum=1)
        seg = np.repeat(np.arange(len(counts)), counts)
        d1 = _segment_delta(C, seg, starts, ends, N)
        C = np.concatenate([C, d1, _segment_delta(d1, seg, starts, ends, N)], axis=1)
    if kw["normalize"]:  # per-utterance CMVN over each span
        C64 = C.astype(np.float64)
        mu = np.add.reduceat(C64, starts, axis=0) / counts[:, None]
        Y = C64 - np.repeat(mu, counts, axis=0)
        var = np.add.reduceat(Y * Y, starts, axis=0) / counts[:, None]
        sd = np.sqrt(var)
        Y /= np.repeat(np.where(var > 1e-8, sd, 1.0), counts, axis=0)
        C = Y.astype(np.float32)
    return [C[a:b] for a, b in zip(starts, ends)]
