"""Character-level language model with a stateful LSTM (truncated back-propagation through time).

The Keras recipe for long text with a stateful recurrent layer: the text is cut into
``batch_size`` contiguous streams; batch k holds the k-th window of every stream, so row i
of each batch continues row i of the previous one and ``LSTM(stateful=True)`` carries its
final states from one batch to the next (fit with ``shuffle=False``; the states are reset at
the start of every epoch by a callback, and gradients stop at the batch boundary). The model
predicts the next character at every step (``return_sequences=True``, ``Embedding`` in,
softmax ``Dense`` out) and regularises its recurrence with ``recurrent_dropout``. Generation
uses the Keras idiom for another batch size: a second, batch-1 stateful model gets the
trained weights (``set_weights``), reads the seed text once, and then takes one character
per call, its state carrying the whole history.

Data: Tiny Shakespeare, the copy that ships with pyaiml
(``pyaiml.datasets.load_tiny_shakespeare``; public domain). Not a language model worth reading:
a few epochs on a slice of the text give Shakespeare-shaped words.

Run:  python examples/keras_io/stateful_lstm_text.py [--epochs N] [--chars N]
Tested briefly by tests/test_keras_rnn_options.py; not a benchmark.
"""
from __future__ import annotations

import argparse

import numpy as np

from pyaiml import keras
from pyaiml.datasets import load_tiny_shakespeare
from pyaiml.keras import layers


def load_text(max_chars=None):
    text = load_tiny_shakespeare()
    return text if max_chars is None else text[:max_chars]


def make_batches(ids, batch_size, seq_len):
    """(x, y) ordered for a stateful model: sample k * batch_size + i is window k of stream i;
    y is x shifted by one character. Streams are contiguous slices of ``ids``."""
    per_stream = (len(ids) - 1) // batch_size
    n_windows = per_stream // seq_len
    if n_windows < 1:
        raise ValueError(f"the text is too short for batch_size={batch_size} streams of seq_len={seq_len} "
                         f"characters. Received {len(ids)} characters")
    span = n_windows * seq_len
    streams = np.stack([ids[i * per_stream: i * per_stream + span + 1] for i in range(batch_size)])
    x = streams[:, :-1].reshape(batch_size, n_windows, seq_len).transpose(1, 0, 2)
    y = streams[:, 1:].reshape(batch_size, n_windows, seq_len).transpose(1, 0, 2)
    return x.reshape(-1, seq_len), y.reshape(-1, seq_len)


def make_model(vocab_size, batch_size, seq_len, units=128, recurrent_dropout=0.1, seed=0):
    return keras.Sequential([
        keras.Input(shape=(seq_len,), batch_size=batch_size),
        layers.Embedding(vocab_size, 32),
        layers.LSTM(units, return_sequences=True, stateful=True, recurrent_dropout=recurrent_dropout, seed=seed),
        layers.Dense(vocab_size, activation="softmax"),
    ])


def sample(preds, temperature, rs):
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    logits = np.log(np.maximum(np.asarray(preds, np.float64), 1e-12)) / temperature
    p = np.exp(logits - logits.max())
    return int(rs.choice(len(p), p=p / p.sum()))


def generate(model, seed_text, length, temperature, char_to_id, id_to_char, units, rs):
    """Continue ``seed_text`` with a batch-1 copy of ``model``: the seed is read in one call,
    then one character per call; the LSTM's kept state holds the history."""
    gen = keras.Sequential([
        keras.Input(shape=(None,), batch_size=1),
        layers.Embedding(len(char_to_id), 32),
        layers.LSTM(units, return_sequences=True, stateful=True),
        layers.Dense(len(char_to_id), activation="softmax"),
    ])
    gen.build((1, None))
    gen.set_weights(model.get_weights())
    ids = np.array([[char_to_id[c] for c in seed_text]])
    preds = gen.predict(ids, batch_size=1, verbose=0)[0, -1]
    out = []
    for _ in range(length):
        nxt = sample(preds, temperature, rs)
        out.append(id_to_char[nxt])
        preds = gen.predict(np.array([[nxt]]), batch_size=1, verbose=0)[0, -1]
    return "".join(out)


def main(epochs=10, batch_size=32, seq_len=50, max_chars=200_000, units=128, gen_length=300,
         temperatures=(0.5, 1.0), verbose=2, seed=0):
    keras.utils.set_random_seed(seed)
    rs = np.random.default_rng(seed)
    text = load_text(max_chars)
    chars = sorted(set(text))
    char_to_id = {c: i for i, c in enumerate(chars)}
    id_to_char = dict(enumerate(chars))
    ids = np.array([char_to_id[c] for c in text], dtype=np.int64)
    x, y = make_batches(ids, batch_size, seq_len)
    print(f"Corpus length: {len(text)}, {len(chars)} characters, {len(x) // batch_size} batches of "
          f"{batch_size} x {seq_len}")

    model = make_model(len(chars), batch_size, seq_len, units, seed=seed)
    model.compile(keras.optimizers.Adam(0.005), "sparse_categorical_crossentropy")
    lstm = model.layers[1]
    reset = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: lstm.reset_state())
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=verbose,
                        callbacks=[reset])
    samples = {}
    for temperature in temperatures:
        seed_text = text[:seq_len]
        samples[temperature] = generate(model, seed_text, gen_length, temperature, char_to_id, id_to_char,
                                        units, rs)
        print(f"...temperature {temperature}: {seed_text!r} -> {samples[temperature]!r}")
    return history.history["loss"], samples


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--chars", type=int, default=200_000, help="use the first N characters of the text")
    a = ap.parse_args()
    main(a.epochs, max_chars=a.chars)
