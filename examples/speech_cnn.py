"""Spoken-digit recognition with the mission's 1-D CNN (pyaiml.keras) on real recordings.

Data: the Free Spoken Digit Dataset (FSDD; Zohar Jackson et al., CC BY-SA 4.0), 2,500
8 kHz recordings of the digits 0-9 by 5 speakers, official split (recording indexes 0-4
test, 5-49 train). Not shipped with pyaiml: pass the folder holding ``recordings/`` as the
first argument, or in PYAIML_FSDD, or put it in ./data/fsdd.

Features: each recording becomes a 128-point vector, the mean log power spectrum
(256-point frames, hop 128, Hann window, pre-emphasis 0.97; bins 1-128, i.e. 31 Hz-4 kHz),
standardised with the training set's statistics, so it fits the mission's model input
(128, 1): Conv1D 64 k3 relu, MaxPool 2, Conv1D 64 k3 relu, MaxPool 2, Dense 10 softmax,
Adam, categorical cross-entropy, batch 32, 10 epochs. The convolution runs along
frequency. Prints one line per epoch and the test accuracy.

Run: python examples/speech_cnn.py [FSDD_DIR]
Not a test and not a benchmark (see pyaiml/bench/train.py for the model's step time).
"""
from __future__ import annotations

import glob
import os
import sys
import time
import wave

import numpy as np

import pyaiml as tf
from pyaiml.datasets.fsdd import find_fsdd

def read_wav(path):
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected mono 16-bit PCM")
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    return x


def log_spectrum(x, n=256, hop=128):
    x = np.append(x[0], x[1:] - 0.97 * x[:-1])
    if len(x) < n:
        x = np.pad(x, (0, n - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop] * np.hanning(n).astype(np.float32)
    p = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    return np.log(p.mean(axis=0)[1:129] + 1e-10).astype(np.float32)


def load(root):
    files = sorted(glob.glob(os.path.join(root, "recordings", "*.wav")))
    if not files:
        raise SystemExit(f"no FSDD recordings under {root}/recordings (pass the FSDD folder as an argument)")
    X, y, test = [], [], []
    for f in files:
        digit, _speaker, idx = os.path.basename(f)[:-4].split("_")
        X.append(log_spectrum(read_wav(f)))
        y.append(int(digit))
        test.append(int(idx) < 5)
    X, y, test = np.stack(X), np.array(y), np.array(test)
    mu, sd = X[~test].mean(0), X[~test].std(0) + 1e-6
    X = ((X - mu) / sd)[:, :, None]
    return X[~test], y[~test], X[test], y[test]


def main():
    root = find_fsdd(sys.argv[1] if len(sys.argv) > 1 else None)[0]
    if root is None:
        raise SystemExit("FSDD not found: pass its folder, set PYAIML_FSDD, or put it in ./data/fsdd")
    tf.set_num_threads(2)
    tf.keras.utils.set_random_seed(0)
    X_train, y_train_ids, X_test, y_test_ids = load(root)
    y_train = tf.keras.utils.to_categorical(y_train_ids, 10)
    y_test = tf.keras.utils.to_categorical(y_test_ids, 10)
    print(f"FSDD: {len(X_train)} training and {len(X_test)} test recordings, features {X_train.shape[1:]}")

    model = tf.keras.Sequential([
        tf.keras.layers.Conv1D(filters=64, kernel_size=3, activation='relu', input_shape=(128, 1)),
        tf.keras.layers.MaxPooling1D(pool_size=2),
        tf.keras.layers.Conv1D(filters=64, kernel_size=3, activation='relu'),
        tf.keras.layers.MaxPooling1D(pool_size=2),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(10, activation='softmax')
    ])
    model.compile(optimizer='adam', loss='categorical_crossentropy', metrics=['accuracy'])
    t = time.perf_counter()
    model.fit(X_train, y_train, epochs=10, batch_size=32, verbose=2)
    dt = time.perf_counter() - t
    loss, acc = model.evaluate(X_test, y_test, verbose=0)
    print(f"speech Conv1D on FSDD: test accuracy {acc:.4f}, loss {loss:.4f}, 10 epochs in {dt:.1f} s")


if __name__ == "__main__":
    main()
