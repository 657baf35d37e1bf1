"""Sequence classification with a bidirectional LSTM.

Written as the keras.io example "Bidirectional LSTM on IMDB" writes it (an Embedding, two
stacked ``Bidirectional(LSTM(...))`` layers, the first returning sequences, a sigmoid Dense,
``keras.utils.pad_sequences``, binary cross-entropy); only the imports changed, the
Embedding given ``mask_zero=True`` so the padding is skipped, and the IMDB reviews swapped
for generated "reviews" whose label depends on word order, so counting words is not
enough: each holds one "good" word (id 3) and one "bad" word (id 4) among random filler
and is positive when the last of the two is "good" ("bad at first, but good in the end").

Run:  python examples/keras_io/lstm_sequence_classification.py [--epochs N]
Tested briefly by tests/test_keras_io_examples.py; not a benchmark.
"""
from __future__ import annotations

import argparse

import numpy as np

from pyaiml import keras
from pyaiml.keras import layers

max_features = 100  # Only consider the top 100 words
maxlen = 30  # Only consider the first 30 words of each review


def load_data(n=1200, seed=0):
    """Generated reviews: lists of word ids of varying length, labels 0/1 (the later of the
    words 3 and 4 decides)."""
    r = np.random.default_rng(seed)
    seqs, labels = [], []
    for _ in range(n):
        length = int(r.integers(6, maxlen + 1))
        words = r.integers(5, max_features, length)
        good, bad = r.choice(length, size=2, replace=False)
        words[good], words[bad] = 3, 4
        seqs.append(words.tolist())
        labels.append(int(good > bad))
    x = keras.utils.pad_sequences(seqs, maxlen=maxlen)
    y = np.array(labels, dtype="float32")
    cut = int(0.8 * n)
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def make_model(embed_dim=16, units=16):
    # Input for variable-length sequences of integers
    inputs = keras.Input(shape=(None,), dtype="int32")
    # Embed each integer in an embed_dim-dimensional vector
    x = layers.Embedding(max_features, embed_dim, mask_zero=True)(inputs)
    # Add 2 bidirectional LSTMs
    x = layers.Bidirectional(layers.LSTM(units, return_sequences=True))(x)
    x = layers.Bidirectional(layers.LSTM(units))(x)
    # Add a classifier
    outputs = layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


def main(epochs=8, verbose=2, seed=0):
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_val, y_val) = load_data(seed=seed)
    print(len(x_train), "Training sequences")
    print(len(x_val), "Validation sequences")
    model = make_model()
    if verbose:
        model.summary()
    model.compile(optimizer=keras.optimizers.Adam(5e-3), loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, batch_size=32, epochs=epochs, validation_data=(x_val, y_val),
                        verbose=verbose)
    acc = history.history["val_accuracy"][-1]
    print(f"validation accuracy: {acc:.3f}")
    return acc


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    main(ap.parse_args().epochs)
