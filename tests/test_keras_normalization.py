"""keras.layers.Normalization (pyaiml/keras/preprocessing_layers.py).

What it checks: adapt() statistics and outputs against NumPy for several axes, given
mean/variance, invert, the input gradient against torch in float64, use in Sequential and
functional models with save/load, and errors naming the layer and what was received.
What it is not: speed.
Run: PYTHONPATH=$PWD python -m pytest -q tests/test_keras_normalization.py
"""
import numpy as np
import pytest

from pyaiml import keras
from pyaiml.autograd import GradientTape
from pyaiml.keras import layers

R = np.random.default_rng(0)


@pytest.mark.parametrize("shape,axis,keep", [((200, 5), -1, (1,)), ((60, 4, 3), -1, (2,)), ((60, 4, 3), 1, (1,)),
                                             ((60, 4, 3), (1, 2), (1, 2)), ((60, 4, 3), None, ())])
def test_adapt_matches_numpy(shape, axis, keep):
    x = (R.standard_normal(shape) * R.uniform(0.5, 4, shape[-1]) + 7).astype("float32")
    n = layers.Normalization(axis=axis)
    n.adapt(x)
    red = tuple(i for i in range(len(shape)) if i not in keep)
    mean, var = x.astype(np.float64).mean(axis=red, keepdims=True), x.astype(np.float64).var(axis=red, keepdims=True)
    np.testing.assert_allclose(n.get_weights()[0].reshape(-1), mean.reshape(-1), rtol=1e-5)
    np.testing.assert_allclose(n.get_weights()[1].reshape(-1), var.reshape(-1), rtol=1e-5)
    y = np.asarray(n(x))
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var), rtol=1e-4, atol=1e-5)
    assert n.trainable_variables == [] and len(n.get_weights()) == 2
    back = layers.Normalization(axis=axis, invert=True)
    back.build(shape[1:])
    back.set_weights(n.get_weights())
    np.testing.assert_allclose(np.asarray(back(y)), x, rtol=1e-4, atol=1e-4)


def test_given_mean_variance_and_zero_variance():
    n = layers.Normalization(mean=[1.0, 2.0, 3.0], variance=[4.0, 0.0, 1.0])
    y = np.asarray(n(np.array([[3.0, 2.5, 3.0]], "float32")))
    np.testing.assert_allclose(y, [[1.0, 0.5 / 1e-7, 0.0]], rtol=1e-5)
    assert n.get_weights() == []
    cfg = n.get_config()
    assert cfg["mean"] == [1.0, 2.0, 3.0] and cfg["variance"] == [4.0, 0.0, 1.0] and cfg["invert"] is False
    inv = layers.Normalization(mean=2.0, variance=9.0, invert=True)
    np.testing.assert_allclose(np.asarray(inv(np.ones((2, 3), "float32"))), np.full((2, 3), 5.0))


def test_adapt_from_batches_and_flat_array():
    x = R.standard_normal((90, 3)).astype("float32")
    a, b = layers.Normalization(), layers.Normalization()
    a.adapt(x)
    b.adapt([x[:40], x[40:]])
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-6)
    c = layers.Normalization()
    c.adapt(np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_allclose(c.get_weights()[0], [2.5])
    np.testing.assert_allclose(c.get_weights()[1], [1.25])


def test_input_gradient_matches_torch():
    torch = pytest.importorskip("torch")
    x = R.standard_normal((8, 4)) * 3 + 1
    n = layers.Normalization()
    n.adapt(x)
    n._cast(np.float64)
    mean, var = n.get_weights()
    c = R.standard_normal((8, 4))
    with GradientTape() as tape:
        xv = tape.watch(np.array(x))
        y = n(xv)
        loss = keras.ops.sum(keras.ops.multiply(keras.ops.multiply(y, y), c))
    (g,) = tape.gradient(loss, [xv])
    xt = torch.tensor(x, requires_grad=True)
    yt = (xt - torch.tensor(mean)) / torch.sqrt(torch.tensor(var))
    (yt * yt * torch.tensor(c)).sum().backward()
    np.testing.assert_allclose(np.asarray(g), xt.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_in_models_and_save_load(tmp_path):
    x = (R.standard_normal((256, 3)) * [100.0, 0.01, 5.0] + [1000.0, -3.0, 0.0]).astype("float32")
    y = ((x[:, 0] - 1000) / 100 + (x[:, 1] + 3) / 0.01 > 0).astype("float32")
    norm = layers.Normalization()
    norm.adapt(x)
    inp = keras.Input((3,))
    out = layers.Dense(1, activation="sigmoid")(norm(inp))
    f = keras.Model(inp, out)
    s_norm = layers.Normalization()
    s_norm.adapt(x)
    s = keras.Sequential([keras.Input((3,)), s_norm, layers.Dense(1, activation="sigmoid")])
    for model in (f, s):
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy", metrics=["accuracy"])
        h = model.fit(x, y, epochs=10, batch_size=32, verbose=0).history
        assert h["accuracy"][-1] > 0.9
        path = str(tmp_path / f"{model.name}.keras")
        model.save(path)
        back = keras.models.load_model(path)
        np.testing.assert_allclose(np.asarray(back.predict(x, verbose=0)), np.asarray(model.predict(x, verbose=0)),
                                   rtol=1e-5, atol=1e-6)
        nb = next(la for la in back.layers if type(la).__name__ == "Normalization")
        np.testing.assert_allclose(nb.get_weights()[0], norm.get_weights()[0], rtol=1e-6)


def test_errors_name_the_layer():
    with pytest.raises(ValueError, match="mean and variance must be given together"):
        layers.Normalization(mean=1.0)
    with pytest.raises(TypeError, match="axis must be None, an int or a tuple of ints. Received 'x'"):
        layers.Normalization(axis="x")
    with pytest.raises(ValueError, match="axis may not include the batch axis 0"):
        layers.Normalization(axis=0)
    n = layers.Normalization(mean=0.0, variance=1.0, name="nz")
    with pytest.raises(ValueError, match="nz: Normalization was given mean and variance"):
        n.adapt(np.ones((4, 2)))
    m = layers.Normalization(axis=3, name="n3")
    with pytest.raises(ValueError, match="n3: Normalization axis 3 is out of range for inputs of rank 2"):
        m.adapt(np.ones((4, 2)))
    k = layers.Normalization(name="nk")
    k.adapt(np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"nk: adapt\(\) data of shape \(None, 3\) does not fit"):
        k.adapt(np.ones((4, 3)))
    with pytest.raises(ValueError, match="do not broadcast"):
        layers.Normalization(mean=[1.0, 2.0], variance=[1.0, 1.0])(np.ones((2, 3), "float32"))
