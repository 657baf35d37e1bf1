"""Text classification with a Transformer: subclassed ``TransformerBlock`` and
``TokenAndPositionEmbedding`` layers in a functional model.

Written as the keras.io example "Text classification with Transformer" writes it (two
custom ``layers.Layer`` subclasses with ``call``, MultiHeadAttention, LayerNormalization,
Dropout, ``keras.ops.arange`` for positions, ``keras.utils.pad_sequences``); only the
imports changed and the IMDB reviews swapped for generated "reviews": sequences of word ids
whose label is whether "positive" words (ids 3..12) outnumber "negative" ones (13..22)
among random filler, so the model has to count words across the sequence.

Run:  python examples/keras_io/text_classification_transformer.py [--epochs N]
Tested briefly by tests/test_keras_io_examples.py; not a benchmark.
"""
from __future__ import annotations

import argparse

import numpy as np

from pyaiml import keras
from pyaiml.keras import layers, ops

vocab_size = 200  # Only consider the top 200 words
maxlen = 40  # Only consider the first 40 words of each review


class TransformerBlock(layers.Layer):
    def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1, **kwargs):
        super().__init__(**kwargs)
        self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.ffn = keras.Sequential([layers.Dense(ff_dim, activation="relu"), layers.Dense(embed_dim)])
        self.layernorm1 = layers.LayerNormalization(epsilon=1e-6)
        self.layernorm2 = layers.LayerNormalization(epsilon=1e-6)
        self.dropout1 = layers.Dropout(rate)
        self.dropout2 = layers.Dropout(rate)

    def call(self, inputs, training=False):
        attn_output = self.att(inputs, inputs)
        attn_output = self.dropout1(attn_output, training=training)
        out1 = self.layernorm1(inputs + attn_output)
        ffn_output = self.ffn(out1)
        ffn_output = self.dropout2(ffn_output, training=training)
        return self.layernorm2(out1 + ffn_output)


class TokenAndPositionEmbedding(layers.Layer):
    def __init__(self, maxlen, vocab_size, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.token_emb = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
        self.pos_emb = layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

    def call(self, x):
        maxlen = ops.shape(x)[-1]
        positions = ops.arange(start=0, stop=maxlen, step=1)
        positions = self.pos_emb(positions[None])
        x = self.token_emb(x)
        return x + positions


def load_data(n=1200, seed=0):
    """Generated reviews: lists of word ids of varying length, labels 0/1."""
    r = np.random.default_rng(seed)
    seqs, labels = [], []
    for _ in range(n):
        length = int(r.integers(10, maxlen + 10))
        words = r.integers(23, vocab_size, length)
        k = int(r.integers(1, 8))
        pos = int(r.integers(0, k + 1))
        idx = r.choice(length, size=min(k, length), replace=False)
        words[idx[:pos]] = r.integers(3, 13, len(idx[:pos]))
        words[idx[pos:]] = r.integers(13, 23, len(idx[pos:]))
        seqs.append(words.tolist())
        labels.append(int(pos * 2 > k))
    x = keras.utils.pad_sequences(seqs, maxlen=maxlen)
    y = np.array(labels)
    cut = int(0.8 * n)
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def make_model(embed_dim=32, num_heads=2, ff_dim=32):
    inputs = layers.Input(shape=(maxlen,))
    embedding_layer = TokenAndPositionEmbedding(maxlen, vocab_size, embed_dim)
    x = embedding_layer(inputs)
    transformer_block = TransformerBlock(embed_dim, num_heads, ff_dim)
    x = transformer_block(x)
    x = layers.GlobalAveragePooling1D()(x)
    x = layers.Dropout(0.1)(x)
    x = layers.Dense(20, activation="relu")(x)
    x = layers.Dropout(0.1)(x)
    outputs = layers.Dense(2, activation="softmax")(x)
    return keras.Model(inputs=inputs, outputs=outputs)


def main(epochs=6, verbose=2, seed=0):
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_val, y_val) = load_data(seed=seed)
    model = make_model()
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x_train, y_train, batch_size=32, epochs=epochs, validation_data=(x_val, y_val),
                        verbose=verbose)
    acc = history.history["val_accuracy"][-1]
    print(f"validation accuracy: {acc:.3f}")
    return acc


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6)
    main(ap.parse_args().epochs)
