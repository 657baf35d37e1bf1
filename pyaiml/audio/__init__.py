"""pyaiml.audio: WAV I/O and speech features in NumPy (no audio library needed).

- WAV: :func:`read_wav` (PCM 8/16/24/32-bit, float 32/64-bit, plain or EXTENSIBLE, any
  channels and rate -> float32 in [-1, 1]), :func:`write_wav` (atomic).
- Signal: :func:`resample` (polyphase windowed sinc), :func:`pre_emphasis`, :func:`frame`,
  :func:`get_window` (hann, hamming, povey, ...), :func:`power_spectrum`, :func:`spectrogram`.
- Mel: :func:`hz_to_mel`/:func:`mel_to_hz` (HTK and Slaney scales), :func:`mel_filterbank`,
  :func:`melspectrogram`, :func:`log_mel_spectrogram`, :func:`power_to_db`, :func:`mfcc`.
- Post-processing: :func:`delta`, :func:`cmvn` (per utterance), :func:`speaker_cmvn` (per
  speaker), :func:`trim_silence`, and the recognizer pipeline :func:`mfcc_features` ->
  (n_frames, 39) (:func:`mfcc_features_batch` with ``normalize="speaker"``).
- Augmentation: :func:`speed_perturb` (0.9 / 1.1 speed copies for training).

Feature arrays are time-major, (n_frames, n_features): the transpose of librosa's layout.
Tests: tests/test_audio_wav.py, tests/test_audio_signal.py, tests/test_audio_features.py.
"""
from pyaiml.audio.features import (cmvn, delta, mfcc_features, mfcc_features_batch, rms_db, speaker_cmvn,
                                   trim_silence)
from pyaiml.audio.mel import (dct_matrix, hz_to_mel, lifter_weights, log_mel_spectrogram, mel_filterbank,
                              mel_frequencies, mel_to_hz, melspectrogram, mfcc, power_to_db)
from pyaiml.audio.signal import (frame, get_window, power_spectrum, pre_emphasis, resample, spectrogram,
                                 speed_perturb)
from pyaiml.audio.wav import WavError, read_wav, write_wav

__all__ = [
    "read_wav", "write_wav", "WavError",
    "resample", "speed_perturb", "pre_emphasis", "frame", "get_window", "power_spectrum", "spectrogram",
    "hz_to_mel", "mel_to_hz", "mel_frequencies", "mel_filterbank", "melspectrogram", "log_mel_spectrogram",
    "power_to_db", "dct_matrix", "lifter_weights", "mfcc",
    "delta", "cmvn", "speaker_cmvn", "rms_db", "trim_silence", "mfcc_features", "mfcc_features_batch",
]
