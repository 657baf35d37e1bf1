"""Sequence to sequence learning for performing number addition.

Written as the keras.io example "Sequence to sequence learning for performing number
addition" writes it (questions such as "535+61" padded with spaces and reversed, answers
such as "596 ", both one-hot encoded over "0123456789+ "; an ``LSTM(128)`` encoder, a
``RepeatVector`` as long as the answer, an ``LSTM(128, return_sequences=True)`` decoder and a
softmax ``Dense`` applied at every step through ``TimeDistributed``; Adam, categorical
cross-entropy, per-character accuracy; after each epoch ten validation questions answered
and marked right or wrong); only the imports changed. The data are generated, as in the
original.

Not a reproduction of the original's figures: it trains on 50000 questions for 30 epochs
to reach ~99% validation accuracy; the brief runs here use fewer of both.

Run:  python examples/keras_io/addition_rnn.py [--epochs N] [--size N]
Tested briefly by tests/test_keras_io_examples.py; not a benchmark.
"""
from __future__ import annotations

import argparse

import numpy as np

from pyaiml import keras
from pyaiml.keras import layers

# Parameters for the model and dataset.
TRAINING_SIZE = 50000
DIGITS = 3
REVERSE = True

# Maximum length of input is 'int + int' (e.g., '345+678'). Maximum length of
# int is DIGITS.
MAXLEN = DIGITS + 1 + DIGITS


class CharacterTable:
    """Given a set of characters:
    + Encode them to a one-hot integer representation
    + Decode the one-hot or integer representation to their character output
    + Decode a vector of probabilities to their character output
    """

    def __init__(self, chars):
        """Initialize character table.
        # Arguments
            chars: Characters that can appear in the input.
        """
        self.chars = sorted(set(chars))
        self.char_indices = {c: i for i, c in enumerate(self.chars)}
        self.indices_char = dict(enumerate(self.chars))

    def encode(self, C, num_rows):
        """One-hot encode given string C.
        # Arguments
            C: string, to be encoded.
            num_rows: Number of rows in the returned one-hot encoding. This is
                used to keep the # of rows for each data the same.
        """
        x = np.zeros((num_rows, len(self.chars)))
        for i, c in enumerate(C):
            x[i, self.char_indices[c]] = 1
        return x

    def decode(self, x, calc_argmax=True):
        """Decode the given vector or 2D array to their character output.
        # Arguments
            x: A vector or a 2D array of probabilities or one-hot representations;
                or a vector of character indices (used with `calc_argmax=False`).
            calc_argmax: Whether to find the character index with maximum
                probability, defaults to `True`.
        """
        if calc_argmax:
            x = x.argmax(axis=-1)
        return "".join(self.indices_char[int(i)] for i in x)


# All the numbers, plus sign and space for padding.
chars = "0123456789+ "
ctable = CharacterTable(chars)


def generate_data(training_size=TRAINING_SIZE, seed=0):
    """Distinct questions 'a+b' (a, b of 1 to DIGITS digits) and their answers, encoded."""
    if not isinstance(training_size, int) or not 10 <= training_size <= 400_000:
        raise ValueError(f"training_size must be an int in [10, 400000] (distinct pairs), got {training_size!r}")
    r = np.random.default_rng(seed)
    questions = []
    expected = []
    seen = set()
    print("Generating data...")
    while len(questions) < training_size:
        def f():
            return int("".join(r.choice(list("0123456789")) for i in range(r.integers(1, DIGITS + 1))))

        a, b = f(), f()
        # Skip any addition questions we've already seen
        # Also skip any such that x+Y == Y+x (hence the sorting).
        key = tuple(sorted((a, b)))
        if key in seen:
            continue
        seen.add(key)
        # Pad the data with spaces such that it is always MAXLEN.
        q = f"{a}+{b}"
        query = q + " " * (MAXLEN - len(q))
        ans = str(a + b)
        # Answers can be of maximum size DIGITS + 1.
        ans += " " * (DIGITS + 1 - len(ans))
        if REVERSE:
            # Reverse the query, e.g., '12+345  ' becomes '  543+21'. (Note the
            # space used for padding.)
            query = query[::-1]
        questions.append(query)
        expected.append(ans)
    print("Total questions:", len(questions))

    print("Vectorization...")
    x = np.zeros((len(questions), MAXLEN, len(chars)), dtype=bool)
    y = np.zeros((len(questions), DIGITS + 1, len(chars)), dtype=bool)
    for i, sentence in enumerate(questions):
        x[i] = ctable.encode(sentence, MAXLEN)
    for i, sentence in enumerate(expected):
        y[i] = ctable.encode(sentence, DIGITS + 1)

    # Shuffle (x, y) in unison as the later parts of x will almost all be larger
    # digits.
    indices = np.arange(len(y))
    r.shuffle(indices)
    x = x[indices]
    y = y[indices]

    # Explicitly set apart 10% for validation data that we never train over.
    split_at = len(x) - len(x) // 10
    (x_train, x_val) = x[:split_at], x[split_at:]
    (y_train, y_val) = y[:split_at], y[split_at:]

    print("Training Data:")
    print(x_train.shape)
    print(y_train.shape)

    print("Validation Data:")
    print(x_val.shape)
    print(y_val.shape)
    return (x_train, y_train), (x_val, y_val)


def make_model(units=128, num_layers=1):
    print("Build model...")
    model = keras.Sequential()
    # "Encode" the input sequence using a LSTM, producing an output of size 128.
    # Note: In a situation where your input sequences have a variable length,
    # use input_shape=(None, num_feature).
    model.add(layers.Input((MAXLEN, len(chars))))
    model.add(layers.LSTM(units))
    # As the decoder RNN's input, repeatedly provide with the last output of
    # RNN for each time step. Repeat 'DIGITS + 1' times as that's the maximum
    # length of output, e.g., when DIGITS=3, max output is 999+999=1998.
    model.add(layers.RepeatVector(DIGITS + 1))
    # The decoder RNN could be multiple layers stacked or a single layer.
    for _ in range(num_layers):
        # By setting return_sequences to True, return not only the last output but
        # all the outputs so far in the form of (num_samples, timesteps,
        # output_dim). This is necessary as TimeDistributed in the below expects
        # the first dimension to be the timesteps.
        model.add(layers.LSTM(units, return_sequences=True))

    # Apply a dense layer to the every temporal slice of an input. For each of step
    # of the output sequence, decide which character should be chosen.
    model.add(layers.TimeDistributed(layers.Dense(len(chars), activation="softmax")))
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def main(epochs=30, training_size=TRAINING_SIZE, batch_size=32, units=128, verbose=2, seed=0):
    keras.utils.set_random_seed(seed)
    r = np.random.default_rng(seed + 1)
    (x_train, y_train), (x_val, y_val) = generate_data(training_size, seed)
    model = make_model(units)
    if verbose:
        model.summary()
    val_acc = []
    # Train the model each generation and show predictions against the validation
    # dataset.
    for epoch in range(1, epochs + 1):
        print()
        print("Iteration", epoch)
        history = model.fit(
            x_train,
            y_train,
            batch_size=batch_size,
            epochs=1,
            validation_data=(x_val, y_val),
            verbose=verbose,
        )
        val_acc.append(history.history["val_accuracy"][-1])
        # Select 10 samples from the validation set at random so we can visualize
        # errors.
        for _ in range(10):
            ind = int(r.integers(0, len(x_val)))
            rowx, rowy = x_val[np.array([ind])], y_val[np.array([ind])]
            preds = np.argmax(model.predict(rowx, verbose=0), axis=-1)
            q = ctable.decode(rowx[0])
            correct = ctable.decode(rowy[0])
            guess = ctable.decode(preds[0], calc_argmax=False)
            print("Q", q[::-1] if REVERSE else q, end=" ")
            print("T", correct, end=" ")
            if correct == guess:
                print("☑ " + guess)
            else:
                print("☒ " + guess)
        print(f"validation accuracy: {val_acc[-1]:.3f}")
    return val_acc


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--size", type=int, default=TRAINING_SIZE, help="number of generated questions")
    a = ap.parse_args()
    main(a.epochs, a.size)
