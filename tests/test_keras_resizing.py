"""keras.layers.Resizing against torch.nn.functional.interpolate (bilinear with
align_corners=False and no antialiasing, and 'nearest-exact': the half-pixel rules TensorFlow
uses), up and down, values and input gradients; in a model that trains and saves; Keras 3
itself when installed."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pyaiml import keras
from pyaiml.autograd import GradientTape
from pyaiml.autograd import functional as F
from pyaiml.keras import layers

CASES = [((7, 5), (14, 10)), ((8, 8), (3, 5)), ((5, 9), (5, 4)), ((6, 6), (9, 4)), ((1, 4), (3, 4))]


@pytest.mark.parametrize("interp", ["bilinear", "nearest"])
@pytest.mark.parametrize("src,dst", CASES, ids=str)
def test_against_torch(src, dst, interp):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2,) + src + (3,))
    layer = layers.Resizing(*dst, interpolation=interp)
    mode = "bilinear" if interp == "bilinear" else "nearest-exact"
    tx = torch.from_numpy(np.moveaxis(x, -1, 1).copy()).requires_grad_()
    kw = {"align_corners": False, "antialias": False} if interp == "bilinear" else {}
    ty = torch.nn.functional.interpolate(tx, size=dst, mode=mode, **kw)
    y = layer(x.astype(np.float32))
    assert y.shape == (2,) + layer.compute_output_shape(x.shape[1:])
    np.testing.assert_allclose(y, np.moveaxis(ty.detach().numpy(), 1, -1), rtol=1e-5, atol=1e-6)
    g0 = rng.standard_normal(y.shape)
    with GradientTape() as tape:
        xx = tape.watch(x)
        loss = F.sum(F.multiply(layer(xx), g0))
    gx = tape.gradient(loss, xx)
    (ty * torch.from_numpy(np.moveaxis(g0, -1, 1).copy())).sum().backward()
    np.testing.assert_allclose(gx, np.moveaxis(tx.grad.numpy(), 1, -1), rtol=1e-10, atol=1e-10)


def test_model_and_errors(tmp_path):
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((8, 8, 1)), layers.Resizing(16, 16), layers.Conv2D(4, 3, activation="relu"),
                          layers.GlobalAveragePooling2D(), layers.Dense(1)])
    m.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype(np.float32)
    m.fit(x, x.mean((1, 2, 3))[:, None], epochs=2, verbose=0)
    m.save(tmp_path / "m.keras")
    np.testing.assert_array_equal(keras.models.load_model(tmp_path / "m.keras").predict(x, verbose=0),
                                  m.predict(x, verbose=0))
    with pytest.raises(ValueError, match="height must be a positive integer"):
        layers.Resizing(0, 4)
    with pytest.raises(ValueError, match="interpolation must be"):
        layers.Resizing(4, 4, interpolation="bicubic")
    with pytest.raises(ValueError, match="crop_to_aspect_ratio"):
        layers.Resizing(4, 4, crop_to_aspect_ratio=True)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_against_keras_itself():
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    K = pytest.importorskip("keras")
    if K.backend.backend() != "torch":
        pytest.skip("Keras runs another backend here")
    x = np.random.default_rng(1).random((2, 7, 6, 3)).astype(np.float32) * 255
    for interp in ("bilinear", "nearest"):
        for dst in ((14, 12), (3, 4), (7, 9)):
            ref = np.asarray(K.layers.Resizing(*dst, interpolation=interp)(x).detach().cpu())
            np.testing.assert_allclose(layers.Resizing(*dst, interpolation=interp)(x), ref, rtol=1e-5, atol=1e-3,
                                       err_msg=str((interp, dst)))
