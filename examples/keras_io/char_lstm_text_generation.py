"""Character-level text generation with an LSTM.

Written as the keras.io example "Character-level text generation with LSTM" writes it
(overlapping 40-character windows cut every 3 characters, one-hot encoded; a single
``LSTM(128)`` and a softmax ``Dense`` over the characters; RMSprop; a ``sample`` function
that reweights the predicted distribution by a temperature; after each epoch, text
generated at several temperatures); only the imports changed and Nietzsche's writings
swapped for Tiny Shakespeare, the copy that ships with pyaiml
(``pyaiml.datasets.load_tiny_shakespeare``; public domain).

Not a language model worth reading: a few epochs on a slice of the text give
Shakespeare-shaped words, not Shakespeare.

Run:  python examples/keras_io/char_lstm_text_generation.py [--epochs N] [--chars N]
Tested briefly by tests/test_keras_io_examples.py; not a benchmark.
"""
from __future__ import annotations

import argparse
import random

import numpy as np

from pyaiml import keras
from pyaiml.datasets import load_tiny_shakespeare
from pyaiml.keras import layers

maxlen = 40
step = 3


def load_text(max_chars=None):
    text = load_tiny_shakespeare().lower()
    text = text.replace("\n", " ")  # We remove newlines chars for nicer display
    if max_chars is not None:
        if not isinstance(max_chars, int) or max_chars <= maxlen:
            raise ValueError(f"max_chars must be an int greater than maxlen={maxlen}, got {max_chars!r}")
        text = text[:max_chars]
    return text


def vectorize(text):
    chars = sorted(set(text))
    char_indices = {c: i for i, c in enumerate(chars)}
    indices_char = {i: c for i, c in enumerate(chars)}

    # cut the text in semi-redundant sequences of maxlen characters
    sentences = []
    next_chars = []
    for i in range(0, len(text) - maxlen, step):
        sentences.append(text[i: i + maxlen])
        next_chars.append(text[i + maxlen])

    x = np.zeros((len(sentences), maxlen, len(chars)), dtype="bool")
    y = np.zeros((len(sentences), len(chars)), dtype="bool")
    for i, sentence in enumerate(sentences):
        for t, char in enumerate(sentence):
            x[i, t, char_indices[char]] = 1
        y[i, char_indices[next_chars[i]]] = 1
    return x, y, chars, char_indices, indices_char


def make_model(n_chars, units=128):
    model = keras.Sequential(
        [
            keras.Input(shape=(maxlen, n_chars)),
            layers.LSTM(units),
            layers.Dense(n_chars, activation="softmax"),
        ]
    )
    optimizer = keras.optimizers.RMSprop(learning_rate=0.01)
    model.compile(loss="categorical_crossentropy", optimizer=optimizer)
    return model


def sample(preds, temperature=1.0):
    """Draw an index from a probability array, sharpened (temperature < 1) or flattened
    (temperature > 1)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    preds = np.asarray(preds).astype("float64")
    preds = np.log(np.maximum(preds, 1e-12)) / temperature
    exp_preds = np.exp(preds - preds.max())
    preds = exp_preds / np.sum(exp_preds)
    probas = np.random.multinomial(1, preds, 1)
    return int(np.argmax(probas))


def generate(model, seed_text, length, temperature, char_indices, indices_char):
    """`length` characters continuing `seed_text` (its last maxlen characters are used)."""
    generated = ""
    sentence = seed_text[-maxlen:]
    for _ in range(length):
        x_pred = np.zeros((1, maxlen, len(char_indices)), dtype="float32")
        for t, char in enumerate(sentence):
            x_pred[0, t, char_indices[char]] = 1.0
        preds = model.predict(x_pred, verbose=0)[0]
        next_index = sample(preds, temperature)
        next_char = indices_char[next_index]
        sentence = sentence[1:] + next_char
        generated += next_char
    return generated


def main(epochs=40, batch_size=128, max_chars=200_000, gen_length=400, diversities=(0.2, 0.5, 1.0, 1.2),
         units=128, verbose=2, seed=0):
    keras.utils.set_random_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    text = load_text(max_chars)
    print("Corpus length:", len(text))
    x, y, chars, char_indices, indices_char = vectorize(text)
    print("Total chars:", len(chars))
    print("Number of sequences:", len(x))

    model = make_model(len(chars), units)
    losses, samples = [], {}
    for epoch in range(epochs):
        history = model.fit(x, y, batch_size=batch_size, epochs=1, verbose=verbose)
        losses.append(history.history["loss"][-1])
        print()
        print(f"Generating text after epoch: {epoch}")

        start_index = random.randint(0, len(text) - maxlen - 1)
        for diversity in diversities:
            print("...Diversity:", diversity)
            sentence = text[start_index: start_index + maxlen]
            print('...Generating with seed: "' + sentence + '"')
            generated = generate(model, sentence, gen_length, diversity, char_indices, indices_char)
            samples[diversity] = generated
            print("...Generated: ", generated)
            print()
    return losses, samples


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--chars", type=int, default=200_000, help="use the first N characters of the text")
    a = ap.parse_args()
    main(a.epochs, max_chars=a.chars)
