"""keras.layers.Masking: padded timesteps (every feature equal to mask_value) are skipped by
the recurrent layers after it, so a padded batch gives each sequence's own result (the oracle:
the same layers run on each sequence without its padding); also through
GlobalAveragePooling1D, in Sequential and functional models, in training. No torch needed."""
import numpy as np
import pytest

from pyaiml import keras
from pyaiml.keras import layers


def _padded(rng, lengths, T, D, value=0.0):
    x = np.full((len(lengths), T, D), value, np.float32)
    seqs = []
    for i, n in enumerate(lengths):
        s = rng.standard_normal((n, D)).astype(np.float32)
        x[i, :n] = s
        seqs.append(s)
    return x, seqs


@pytest.mark.parametrize("rnn", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize("value", [0.0, -1.0])
def test_recurrent_layers_skip_masked_steps(rnn, value):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, seqs = _padded(rng, [5, 2, 7], 7, 4, value)
    make = getattr(layers, rnn)
    model = keras.Sequential([keras.Input((7, 4)), layers.Masking(mask_value=value), make(6), layers.Dense(2)])
    got = model.predict(x, verbose=0)
    plain = keras.Sequential([keras.Input((None, 4)), make(6), layers.Dense(2)])
    plain.set_weights(model.get_weights())
    for i, s in enumerate(seqs):
        np.testing.assert_allclose(got[i], plain.predict(s[None], verbose=0)[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model(x), got)


def test_masking_zeroes_and_masks_in_a_functional_model_that_trains():
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    x, seqs = _padded(rng, [3, 6, 1, 4], 6, 3)
    m = layers.Masking()
    out = m(x)
    np.testing.assert_array_equal(out, x)  # padding was already the mask value (zeros)
    np.testing.assert_array_equal(m.compute_mask(None), np.arange(6)[None, :] < np.array([3, 6, 1, 4])[:, None])
    i = keras.Input((6, 3))
    h = layers.GlobalAveragePooling1D()(layers.Masking()(i))
    model = keras.Model(i, h)
    got = model.predict(x, verbose=0)
    for k, s in enumerate(seqs):
        np.testing.assert_allclose(got[k], s.mean(0), rtol=1e-6)  # the mean over real steps only
    clf = keras.Sequential([keras.Input((6, 3)), layers.Masking(), layers.LSTM(4), layers.Dense(1)])
    clf.compile(optimizer="adam", loss="mse")
    y = np.array([s.sum() for s in seqs], np.float32)[:, None]
    h = clf.fit(x, y, epochs=20, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert layers.Masking.from_config(layers.Masking(mask_value=-1.0).get_config()).mask_value == -1.0
    with pytest.raises(TypeError, match="mask_value must be a number"):
        layers.Masking("x")
    with pytest.raises(ValueError, match="rank >= 2"):
        layers.Masking()(np.zeros(3, np.float32))
