"""Convolutional autoencoder for image denoising.

Written as the keras.io example "Convolutional autoencoder for image denoising" writes it
(a functional encoder of Conv2D + MaxPooling2D, a decoder back to the image size, trained
first to reconstruct images and then to map noisy images to clean ones, its decoder two
``Conv2DTranspose(strides=2)`` layers); only the imports changed and MNIST swapped for the
bundled 8x8 digits upscaled to 16x16. Prints the reconstruction error of the noisy inputs and
of the denoised outputs on held-out images.

Run:  python examples/keras_io/denoising_autoencoder.py [--epochs N]
Tested briefly by tests/test_keras_io_examples.py; not a benchmark.
"""
from __future__ import annotations

import argparse

import numpy as np

from pyaiml import keras
from pyaiml.datasets import load_digits
from pyaiml.keras import layers


def preprocess(array):
    """Normalizes the supplied array and reshapes it into the appropriate format."""
    array = array.astype("float32") / 16.0
    array = array.reshape((len(array), 8, 8, 1))
    return np.repeat(np.repeat(array, 2, axis=1), 2, axis=2)


def noise(array, seed=0):
    """Adds random noise to each image in the supplied array."""
    noise_factor = 0.4
    rng = np.random.default_rng(seed)
    noisy_array = array + noise_factor * rng.normal(loc=0.0, scale=1.0, size=array.shape)
    return np.clip(noisy_array, 0.0, 1.0).astype("float32")


def make_autoencoder():
    inputs = layers.Input(shape=(16, 16, 1))

    # Encoder
    x = layers.Conv2D(32, (3, 3), activation="relu", padding="same")(inputs)
    x = layers.MaxPooling2D((2, 2), padding="same")(x)
    x = layers.Conv2D(32, (3, 3), activation="relu", padding="same")(x)
    x = layers.MaxPooling2D((2, 2), padding="same")(x)

    # Decoder
    x = layers.Conv2DTranspose(32, (3, 3), strides=2, activation="relu", padding="same")(x)
    x = layers.Conv2DTranspose(32, (3, 3), strides=2, activation="relu", padding="same")(x)
    x = layers.Conv2D(1, (3, 3), activation="sigmoid", padding="same")(x)

    # Autoencoder
    autoencoder = keras.Model(inputs, x)
    autoencoder.compile(optimizer="adam", loss="binary_crossentropy")
    return autoencoder


def main(epochs=5, verbose=2, seed=0):
    keras.utils.set_random_seed(seed)
    x, _ = load_digits(return_X_y=True)
    data = preprocess(x)
    train_data, test_data = data[:1400], data[1400:]
    noisy_train_data, noisy_test_data = noise(train_data, seed), noise(test_data, seed + 1)

    autoencoder = make_autoencoder()
    if verbose:
        autoencoder.summary()
    autoencoder.fit(x=train_data, y=train_data, epochs=max(1, epochs // 2), batch_size=64, shuffle=True,
                    validation_data=(test_data, test_data), verbose=verbose)
    autoencoder.fit(x=noisy_train_data, y=train_data, epochs=epochs, batch_size=64, shuffle=True,
                    validation_data=(noisy_test_data, test_data), verbose=verbose)
    predictions = autoencoder.predict(noisy_test_data)
    before = float(np.mean((noisy_test_data - test_data) ** 2))
    after = float(np.mean((predictions - test_data) ** 2))
    print(f"mean squared error on held-out images: noisy input {before:.4f}, denoised {after:.4f}")
    return before, after


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    main(ap.parse_args().epochs)
