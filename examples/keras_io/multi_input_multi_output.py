"""A functional model with several inputs and outputs: ranking support tickets.

Written as the keras.io guide "The Functional API" writes its ticket model: three inputs
(title and body as word ids, tags as a binary vector), shared-size embeddings, a
concatenation, two outputs (a priority score and a department), per-output losses and
loss weights given as dicts by output name, ``fit`` on dicts of arrays. Only the imports
changed, the tickets are generated (the priority grows with certain "urgent" words and tags,
the department follows the tags), and each ``layers.LSTM`` encoder is a
``GlobalAveragePooling1D`` over a ``Dense`` projection (pyaiml has no recurrent layers yet).

Run:  python examples/keras_io/multi_input_multi_output.py [--epochs N]
Tested briefly by tests/test_keras_io_examples.py; not a benchmark.
"""
from __future__ import annotations

import argparse

import numpy as np

from pyaiml import keras
from pyaiml.keras import layers

num_tags = 12  # Number of unique issue tags
num_words = 1000  # Size of vocabulary obtained when preprocessing text data
num_departments = 4  # Number of departments for predictions


def make_model():
    title_input = keras.Input(shape=(None,), dtype="int32", name="title")  # Variable-length sequence of ints
    body_input = keras.Input(shape=(None,), dtype="int32", name="body")  # Variable-length sequence of ints
    tags_input = keras.Input(shape=(num_tags,), name="tags")  # Binary vectors of size `num_tags`

    # Embed each word in the title into a 64-dimensional vector
    title_features = layers.Embedding(num_words, 64)(title_input)
    # Embed each word in the text into a 64-dimensional vector
    body_features = layers.Embedding(num_words, 64)(body_input)

    # Reduce sequence of embedded words in the title into a single 128-dimensional vector
    title_features = layers.GlobalAveragePooling1D()(layers.Dense(128, activation="relu")(title_features))
    # Reduce sequence of embedded words in the body into a single 32-dimensional vector
    body_features = layers.GlobalAveragePooling1D()(layers.Dense(32, activation="relu")(body_features))

    # Merge all available features into a single large vector via concatenation
    x = layers.concatenate([title_features, body_features, tags_input])

    # Stick a logistic regression for priority prediction on top of the features
    priority_pred = layers.Dense(1, name="priority")(x)
    # Stick a department classifier on top of the features
    department_pred = layers.Dense(num_departments, name="department")(x)

    # Instantiate an end-to-end model predicting both priority and department
    return keras.Model(inputs=[title_input, body_input, tags_input], outputs=[priority_pred, department_pred])


def load_data(n=1280, seed=0):
    r = np.random.default_rng(seed)
    title_data = r.integers(1, num_words, size=(n, 10))
    body_data = r.integers(1, num_words, size=(n, 100))
    tags_data = (r.random((n, num_tags)) < 0.2).astype("float32")
    urgent = (title_data < 50).sum(1)  # words 1..49 are "urgent"
    priority_targets = (0.3 * urgent + tags_data[:, 0] - 0.5 * tags_data[:, 1]).astype("float32")[:, None]
    dept_targets = keras.utils.to_categorical(np.argmax(tags_data[:, :num_departments] * [4, 3, 2, 1], axis=1),
                                              num_departments)
    return title_data, body_data, tags_data, priority_targets, dept_targets


def main(epochs=4, verbose=2, seed=0):
    keras.utils.set_random_seed(seed)
    title_data, body_data, tags_data, priority_targets, dept_targets = load_data(seed=seed)
    model = make_model()
    if verbose:
        model.summary()
    model.compile(
        optimizer=keras.optimizers.RMSprop(1e-3),
        loss={
            "priority": "mse",  # the guide's BinaryCrossentropy(from_logits=True) needs 0/1 targets
            "department": keras.losses.CategoricalCrossentropy(from_logits=True),
        },
        loss_weights={"priority": 1.0, "department": 0.2},
        metrics={"department": ["categorical_accuracy"]},
    )
    history = model.fit(
        {"title": title_data, "body": body_data, "tags": tags_data},
        {"priority": priority_targets, "department": dept_targets},
        epochs=epochs,
        batch_size=32,
        validation_split=0.2,
        verbose=verbose,
    )
    h = history.history
    print(f"validation: priority mse {h['val_priority_loss'][-1]:.3f}, "
          f"department accuracy {h['val_department_categorical_accuracy'][-1]:.3f}")
    return h


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    main(ap.parse_args().epochs)
