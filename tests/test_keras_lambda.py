"""keras.layers.Lambda: a function of keras.ops as a layer, in the three model kinds, trained
through the tape (gradients equal to the same function written as a Layer subclass), its
output shape (probed, given, or a function of the input shape), its arguments, and saving:
a registered function round-trips, an unregistered one (a lambda) is a ValueError naming the
layer. No torch needed."""
import numpy as np
import pytest

from pyaiml import keras
from pyaiml.autograd import GradientTape
from pyaiml.keras import layers, ops


@keras.saving.register_keras_serializable(package="LambdaTest")
def scaled_square(x, k=1.0):
    return ops.multiply(ops.square(x), k)


class ScaledSquare(layers.Layer):
    def __init__(self, k=1.0, **kw):
        super().__init__(**kw)
        self.k = k

    def call(self, x):
        return ops.multiply(ops.square(x), self.k)


def _pair(seed=0):
    keras.utils.set_random_seed(seed)
    a = keras.Sequential([keras.Input((5,)), layers.Dense(4), layers.Lambda(scaled_square, arguments={"k": 0.5}),
                          layers.Dense(3)])
    b = keras.Sequential([keras.Input((5,)), layers.Dense(4), ScaledSquare(0.5), layers.Dense(3)])
    b.set_weights(a.get_weights())
    return a, b


def test_lambda_trains_as_the_same_function_in_a_layer():
    a, b = _pair()
    x = np.random.default_rng(0).standard_normal((16, 5)).astype(np.float32)
    y = np.random.default_rng(1).standard_normal((16, 3)).astype(np.float32)
    np.testing.assert_array_equal(a.predict(x, verbose=0), b.predict(x, verbose=0))
    for m in (a, b):
        with GradientTape() as tape:
            loss = ops.mean(ops.square(ops.subtract(m(x, training=True), y)))
        m._g = tape.gradient(loss, m.trainable_variables)
    for ga, gb in zip(a._g, b._g):
        np.testing.assert_array_equal(ga, gb)
    for m in (a, b):
        m.compile(optimizer="adam", loss="mse")
        m.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0)
    np.testing.assert_allclose(a.predict(x, verbose=0), b.predict(x, verbose=0), rtol=1e-6, atol=1e-7)


def test_output_shapes_and_functional_list_input():
    seq = keras.Sequential([keras.Input((6,)), layers.Lambda(lambda t: ops.reshape(t, (-1, 2, 3))), layers.Flatten()])
    assert seq.layers[0].compute_output_shape((6,)) == (2, 3)  # probed
    given = layers.Lambda(lambda t: ops.reshape(t, (-1, 2, 3)), output_shape=(2, 3))
    assert given.compute_output_shape((6,)) == (2, 3)
    fn = layers.Lambda(lambda t: t[:, :2], output_shape=lambda s: (s[0], 2))
    assert fn.compute_output_shape((6,)) == (2,)
    assert seq.predict(np.ones((2, 6), np.float32), verbose=0).shape == (2, 6)
    a, b = keras.Input((3,)), keras.Input((3,))
    m = keras.Model([a, b], layers.Lambda(lambda ab: ops.add(ab[0], ops.multiply(ab[1], 2.0)))([a, b]))
    x1, x2 = np.ones((2, 3), np.float32), np.full((2, 3), 3.0, np.float32)
    np.testing.assert_array_equal(m.predict([x1, x2], verbose=0), np.full((2, 3), 7.0, np.float32))


def test_save_and_load_a_registered_function(tmp_path):
    a, _ = _pair()
    x = np.random.default_rng(2).standard_normal((4, 5)).astype(np.float32)
    a.save(tmp_path / "m.keras")
    b = keras.models.load_model(tmp_path / "m.keras")
    lam = b.layers[1]
    assert lam.function is scaled_square and lam.arguments == {"k": 0.5}
    np.testing.assert_array_equal(b.predict(x, verbose=0), a.predict(x, verbose=0))


def test_unsaveable_and_bad_arguments_are_clear(tmp_path):
    m = keras.Sequential([keras.Input((3,)), layers.Lambda(lambda t: ops.multiply(t, 2.0), name="doubler")])
    with pytest.raises(ValueError, match="doubler: a Lambda layer's function .* cannot be saved"):
        m.save(tmp_path / "m.keras")
    assert not (tmp_path / "m.keras").exists()
    with pytest.raises(TypeError, match="Lambda needs a callable. Received int"):
        layers.Lambda(3)
    with pytest.raises(ValueError, match="mask"):
        layers.Lambda(lambda t: t, mask=lambda t, m: m)
    cfg = {"name": "x", "function": "Nowhere>fn", "arguments": {}, "output_shape": None}
    with pytest.raises(ValueError, match="'Nowhere>fn', which is not registered"):
        layers.Lambda.from_config(cfg)
