"""keras.layers.TimeDistributed (pyaiml/keras/recurrent.py).

What it checks: the wrapped layer applied to every step with shared weights, forward and
gradients (input and weights) against torch in float64; output shapes and masks; inside
the three ways to build a model; save/load; bad inputs named. What it is not: speed.
Run: PYTHONPATH=$PWD python -m pytest -q tests/test_keras_time_distributed.py
"""
import numpy as np
import pytest

from pyaiml import keras
from pyaiml.autograd import GradientTape
from pyaiml.keras import layers

torch = pytest.importorskip("torch")


def test_forward_and_gradients_match_torch():
    r = np.random.default_rng(0)
    x = r.standard_normal((3, 5, 4))
    td = layers.TimeDistributed(layers.Dense(6, activation="tanh"))
    td.build((5, 4))
    td._cast(np.float64)
    td.layer.set_weights([r.standard_normal(w.shape) * 0.5 for w in td.layer.get_weights()])  # bias non-zero
    k, b = td.layer.get_weights()
    with GradientTape() as tape:
        xv = tape.watch(np.array(x))
        y = td(xv)
        loss = keras.ops.sum(keras.ops.multiply(y, y))
    grads = tape.gradient(loss, [xv] + td.trainable_variables)
    assert len(grads) == 3

    xt = torch.tensor(x, requires_grad=True)
    kt = torch.tensor(k, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    yt = torch.tanh(xt @ kt + bt)
    (yt * yt).sum().backward()
    np.testing.assert_allclose(np.asarray(y.numpy()), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    for g, ref in zip(grads, [xt.grad, kt.grad, bt.grad]):
        np.testing.assert_allclose(np.asarray(g), ref.numpy(), rtol=1e-9, atol=1e-11)


def test_shapes_shared_weights_and_mask():
    td = layers.TimeDistributed(layers.Dense(7))
    x = np.ones((2, 9, 3), "float32")
    y = td(x)
    assert np.asarray(y).shape == (2, 9, 7)
    assert len(td.trainable_variables) == 2 and td.layer.get_weights()[0].shape == (3, 7)
    assert td.compute_output_shape((None, 3)) == (None, 7)
    m = np.array([[1, 1, 0]], bool)
    assert td.compute_mask(m) is m
    # each step alone through the inner Dense gives the same rows
    x = np.random.default_rng(1).standard_normal((2, 4, 3)).astype("float32")
    y = np.asarray(td(x))
    np.testing.assert_allclose(y[:, 2], np.asarray(td.layer(x[:, 2])), rtol=1e-6)


def test_in_sequential_functional_and_save_load(tmp_path):
    r = np.random.default_rng(2)
    x = r.standard_normal((64, 6, 3)).astype("float32")
    y = (x.sum(-1, keepdims=True) > 0).astype("float32")
    inp = keras.Input((6, 3))
    h = layers.TimeDistributed(layers.Dense(8, activation="relu"))(inp)
    out = layers.TimeDistributed(layers.Dense(1, activation="sigmoid"))(h)
    f = keras.Model(inp, out)
    s = keras.Sequential([keras.Input((6, 3)), layers.TimeDistributed(layers.Dense(8, activation="relu")),
                          layers.TimeDistributed(layers.Dense(1, activation="sigmoid"))])
    for model in (f, s):
        model.compile(optimizer=keras.optimizers.Adam(0.02), loss="binary_crossentropy", metrics=["accuracy"])
        hist = model.fit(x, y, epochs=15, batch_size=16, verbose=0).history
        assert hist["loss"][-1] < 0.6 * hist["loss"][0]
        path = str(tmp_path / f"{model.name}.keras")
        model.save(path)
        back = keras.models.load_model(path)
        assert type(back.layers[-1]).__name__ == "TimeDistributed"
        np.testing.assert_allclose(np.asarray(back.predict(x, verbose=0)), np.asarray(model.predict(x, verbose=0)),
                                   rtol=1e-5, atol=1e-6)


def test_bad_inputs_are_named():
    with pytest.raises(TypeError, match="TimeDistributed: layer must be"):
        layers.TimeDistributed("dense")
    td = layers.TimeDistributed(layers.Dense(2), name="td")
    with pytest.raises(ValueError, match=r"td: TimeDistributed needs an input of at least 3 dimensions \(batch, steps, features\). Received input shape \(None, 3\)$"):
        td(np.ones((4, 3), "float32"))
