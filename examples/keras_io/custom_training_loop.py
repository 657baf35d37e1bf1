"""Writing a training loop from scratch: a GradientTape, keras.ops and an optimizer.

Written as the keras.io guide "Writing a training loop from scratch" writes it (a
functional MLP, a loss object, ``optimizer.apply_gradients(zip(grads,
model.trainable_weights))``, a metric updated per batch and reset per epoch, a separate
validation loop, then the same step with a loss written directly in ``keras.ops``); only
the imports changed (``GradientTape`` comes from pyaiml.autograd, where the TensorFlow
version has ``tf.GradientTape``) and MNIST swapped for the bundled 8x8 digits.

Run:  python examples/keras_io/custom_training_loop.py [--epochs N]
Tested briefly by tests/test_keras_io_examples.py; not a benchmark.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from pyaiml import keras
from pyaiml.autograd import GradientTape
from pyaiml.datasets import load_digits
from pyaiml.keras import layers, ops


def get_model():
    inputs = keras.Input(shape=(64,), name="digits")
    x1 = layers.Dense(64, activation="relu")(inputs)
    x2 = layers.Dense(64, activation="relu")(x1)
    outputs = layers.Dense(10, name="predictions")(x2)
    return keras.Model(inputs=inputs, outputs=outputs)


def batches(x, y, batch_size, shuffle_seed=None):
    idx = np.arange(len(x))
    if shuffle_seed is not None:
        np.random.default_rng(shuffle_seed).shuffle(idx)
    for i in range(0, len(x), batch_size):
        j = idx[i:i + batch_size]
        yield x[j], y[j]


def main(epochs=3, verbose=1, seed=0):
    keras.utils.set_random_seed(seed)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_train, x_val, y_train, y_val = keras.utils.stratified_split(x, y, test_size=0.2, seed=seed)

    model = get_model()
    optimizer = keras.optimizers.Adam(learning_rate=1e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    train_acc_metric = keras.metrics.SparseCategoricalAccuracy()
    val_acc_metric = keras.metrics.SparseCategoricalAccuracy()

    def train_step(x, y):
        with GradientTape() as tape:
            logits = model(x, training=True)
            loss_value = loss_fn(y, logits)
        grads = tape.gradient(loss_value, model.trainable_weights)
        optimizer.apply_gradients(zip(grads, model.trainable_weights))
        train_acc_metric.update_state(y, logits.numpy())
        return loss_value

    def train_step_ops(x, y):
        """The same step with the loss written in keras.ops."""
        with GradientTape() as tape:
            logits = model(x, training=True)
            loss_value = ops.mean(ops.sparse_categorical_crossentropy(y, logits, from_logits=True))
        grads = tape.gradient(loss_value, model.trainable_weights)
        optimizer.apply_gradients(zip(grads, model.trainable_weights))
        train_acc_metric.update_state(y, logits.numpy())
        return loss_value

    for epoch in range(epochs):
        start_time = time.time()
        step_fn = train_step if epoch % 2 == 0 else train_step_ops
        for step, (x_batch_train, y_batch_train) in enumerate(batches(x_train, y_train, 32, seed + epoch)):
            loss_value = step_fn(x_batch_train, y_batch_train)
            if verbose and step % 20 == 0:
                print(f"Training loss (for 1 batch) at step {step}: {float(loss_value):.4f}")
        train_acc = train_acc_metric.result()
        train_acc_metric.reset_state()
        for x_batch_val, y_batch_val in batches(x_val, y_val, 64):
            val_logits = model(x_batch_val, training=False)
            val_acc_metric.update_state(y_batch_val, val_logits)
        val_acc = val_acc_metric.result()
        val_acc_metric.reset_state()
        print(f"epoch {epoch + 1}: training acc {train_acc:.4f}, validation acc {val_acc:.4f}, "
              f"time {time.time() - start_time:.2f}s")
    return val_acc


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    main(ap.parse_args().epochs)
