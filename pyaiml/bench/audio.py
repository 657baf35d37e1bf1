"""Audio suite: pyaiml.audio against librosa (and scipy for resampling and WAV reading).

Throughput is seconds of audio processed per second of wall time ("x" real time).
Cases: the recognizer pipeline mfcc_features over FSDD recordings (when FSDD is found:
PYAIML_FSDD or ./data/fsdd) against the same pipeline written with librosa; mfcc and log-mel on longer
signals with librosa's parameters; polyphase resampling; WAV reading.
Validation first: the librosa pipeline is configured to compute the same features
(same trimming, pre-emphasis, framing with the end padded, Hamming window, HTK filters,
log, DCT, lifter, deltas, CMVN) and must agree before anything is timed.
"""
from __future__ import annotations

import os

import numpy as np

from pyaiml.bench.harness import Case, check_close

SR = 8000
# mfcc_features defaults at 8 kHz: 25 ms / 10 ms frames, 256-point FFT, 26 HTK mel bands 20-4000 Hz
P = dict(win=200, hop=80, n_fft=256, n_mels=26, fmin=20.0, lifter=22.0, trim_frame=200, trim_hop=50, top_db=40.0)


def librosa_pipeline(librosa, y, sr):
    """mfcc_features' steps written with librosa (transposed back to (frames, 39))."""
    y, _ = librosa.effects.trim(y, top_db=P["top_db"], frame_length=P["trim_frame"], hop_length=P["trim_hop"])
    y = librosa.effects.preemphasis(y, coef=0.97, zi=0.0)
    n = len(y)
    T = 1 if n <= P["win"] else 1 + -(-(n - P["win"]) // P["hop"])
    # librosa centres the 200-sample window in the 256-sample frame: shift by the 28 zeros in
    # front so frame t holds the same samples (|FFT| ignores the shift); the end padded to T frames
    lo = (P["n_fft"] - P["win"]) // 2
    y = np.pad(y, (lo, (T - 1) * P["hop"] + P["n_fft"] - n - lo))
    M = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=P["n_fft"], hop_length=P["hop"], win_length=P["win"],
                                       window="hamming", center=False, n_mels=P["n_mels"], fmin=P["fmin"],
                                       htk=True, norm=None)[:, :T]
    C = librosa.feature.mfcc(S=librosa.power_to_db(M, top_db=None), n_mfcc=13, lifter=P["lifter"])
    d1 = librosa.feature.delta(C, width=5, mode="nearest") if C.shape[1] >= 5 else np.zeros_like(C)
    d2 = librosa.feature.delta(d1, width=5, mode="nearest") if C.shape[1] >= 5 else np.zeros_like(C)
    F = np.concatenate([C, d1, d2]).T.astype(np.float64)
    F -= F.mean(0)
    sd = F.std(0)
    return (F / np.where(sd * sd > 1e-8, sd, 1.0)).astype(np.float32)


def _fsdd_path():
    from pyaiml.datasets.fsdd import find_fsdd, holds_fsdd

    p = find_fsdd()[0]
    return p if p is not None and holds_fsdd(p) else None


def _fsdd_signals(limit):
    from pyaiml.datasets.fsdd import load_fsdd

    ds = load_fsdd(_fsdd_path())
    idx = np.arange(len(ds))
    if limit and limit < len(ds):
        idx = idx[:: len(ds) // limit][:limit]  # spread over digits and speakers
    return [ds.signals[i] for i in idx], [int(ds.rates[i]) for i in idx], [ds.filenames[i] for i in idx], ds.path


def cases(quick: bool = False):
    from pyaiml import audio as A

    try:
        import librosa
    except ImportError:
        librosa = None
    rng = np.random.default_rng(0)

    if _fsdd_path() is not None:
        sigs, rates, names, folder = _fsdd_signals(250 if quick else 0)
        secs = sum(len(y) / r for y, r in zip(sigs, rates))
        fns = {"pyaiml": lambda: [A.mfcc_features(y, r) for y, r in zip(sigs, rates)]}
        if librosa is not None:
            fns["librosa"] = lambda: [librosa_pipeline(librosa, y, r) for y, r in zip(sigs, rates)]

        def validate():
            if librosa is None:
                return
            for y, r, f in list(zip(sigs, rates, names))[::25]:
                got, want = A.mfcc_features(y, r), librosa_pipeline(librosa, y, r)
                # ln vs dB differ by a constant factor that CMVN removes; float32 rounding left
                check_close(f"mfcc_features {f}", got, want, rtol=0, atol=2e-3)

        yield Case("audio", f"fsdd mfcc_features x{len(sigs)}", f"{secs:.0f} s @ 8 kHz -> (T, 39)", None, "pyaiml",
                   fns, "librosa" if librosa else None, validate, unit="x", work=secs)

        wav_names = [os.path.join(folder, f) for f in names[:: 5 if not quick else 1][:250]]
        wsecs = sum(len(A.read_wav(p)[0]) / SR for p in wav_names)
        fns = {"pyaiml": lambda: [A.read_wav(p) for p in wav_names]}
        try:
            from scipy.io import wavfile

            fns["scipy"] = lambda: [(wavfile.read(p)[1] / np.float32(32768)).astype(np.float32) for p in wav_names]
        except ImportError:
            wavfile = None

        def validate_wav():
            if wavfile is not None:
                for p in wav_names[:20]:
                    check_close(f"read_wav {p}", A.read_wav(p)[0], wavfile.read(p)[1] / 32768.0, rtol=0, atol=0)

        yield Case("audio", f"read_wav fsdd x{len(wav_names)}", "16-bit mono 8 kHz files", None, "pyaiml", fns,
                   "scipy" if wavfile is not None else None, validate_wav, unit="x", work=wsecs)

    for sr, dur, n_fft, hop, n_mels in [(8000, 1.0, 256, 80, 40), (16000, 10.0, 512, 160, 40),
                                        (22050, 10.0, 2048, 512, 128)]:
        y = (0.1 * rng.standard_normal(int(sr * dur))).astype(np.float32)
        kw = dict(n_fft=n_fft, hop_length=hop, n_mels=n_mels)
        fns = {"pyaiml": lambda y=y, sr=sr, kw=kw: A.mfcc(y, sr, n_mfcc=13, **kw)}
        if librosa is not None:
            fns["librosa"] = lambda y=y, sr=sr, kw=kw: librosa.feature.mfcc(y=y, sr=sr, n_mfcc=13, **kw)

        def validate(y=y, sr=sr, kw=kw):
            if librosa is not None:
                check_close("mfcc", A.mfcc(y, sr, n_mfcc=13, **kw), librosa.feature.mfcc(y=y, sr=sr, n_mfcc=13, **kw).T,
                            rtol=0, atol=5e-3)

        yield Case("audio", f"mfcc {dur:g} s @ {sr // 1000} kHz", f"n_fft {n_fft} hop {hop} mels {n_mels}", None,
                   "pyaiml", fns, "librosa" if librosa else None, validate, unit="x", work=dur)

    sr, dur = 16000, 10.0
    y = (0.1 * rng.standard_normal(int(sr * dur))).astype(np.float32)
    kw = dict(n_fft=512, hop_length=160, n_mels=80)
    fns = {"pyaiml": lambda: A.log_mel_spectrogram(y, sr, **kw)}
    if librosa is not None:
        fns["librosa"] = lambda: librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, **kw))

    def validate_lm():
        if librosa is not None:
            check_close("log-mel", A.log_mel_spectrogram(y, sr, **kw),
                        librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, **kw)).T, rtol=0, atol=2e-3)

    yield Case("audio", "log-mel 10 s @ 16 kHz", "n_fft 512 hop 160 mels 80", None, "pyaiml", fns,
               "librosa" if librosa else None, validate_lm, unit="x", work=dur)


    try:
        from scipy import signal as ss
    except ImportError:
        ss = None
    for a, b, dur in [(8000, 16000, 10.0), (44100, 16000, 10.0)]:
        y = (0.1 * rng.standard_normal(int(a * dur))).astype(np.float32)
        from math import gcd

        g = gcd(a, b)
        fns = {"pyaiml": lambda y=y, a=a, b=b: A.resample(y, a, b)}
        if ss is not None:
            fns["scipy"] = lambda y=y, g=g, a=a, b=b: ss.resample_poly(y, b // g, a // g)

        def validate_rs(y=y, a=a, b=b, g=g):
            if ss is not None:
                check_close("resample", A.resample(y, a, b), ss.resample_poly(y.astype(np.float64), b // g, a // g),
                            rtol=0, atol=1e-5)

        yield Case("audio", f"resample {a // 1000 if a % 1000 == 0 else a / 1000:g}k->{b // 1000}k 10 s",
                   f"{a} -> {b} Hz", None, "pyaiml", fns, "scipy" if ss is not None else None, validate_rs,
                   unit="x", work=dur)
