"""keras.layers.Resizing against torch.nn.functional.interpolate (bilinear with
align_corners=False and no antialiasing, and 'nearest-exact': the half-pixel rules TensorFlow
uses), up and down, values and input gradients; in a model that trains and saves; Keras 3
itself when installed."""
import numpy as np
import pytest
from helpers import assert_saves_and_loads, keras3_on_torch

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
    assert_saves_and_loads(m, x, tmp_path)
    with pytest.raises(ValueError, match="height must be a positive integer"):
        layers.Resizing(0, 4)
    with pytest.raises(ValueError, match="interpolation must be"):
        layers.Resizing(4, 4, interpolation="bicubic")
    with pytest.raises(Exception, match="expects inputs of rank 4"):
        layers.CenterCrop(2, 2)(np.ones((3, 4, 5), np.float32))


@pytest.mark.parametrize("src,dst", [((8, 9), (4, 5)), ((7, 7), (7, 2)), ((5, 6), (8, 3)), ((6, 4), (3, 9))], ids=str)
def test_center_crop_and_aspect_crop(src, dst):
    """The crop case against slicing at (size - target) // 2; the smaller-image case and
    Resizing(crop_to_aspect_ratio=True) against torch: the largest centred crop of the target's
    aspect ratio, then bilinear."""
    x = np.random.default_rng(2).standard_normal((2,) + src + (3,)).astype(np.float32)
    (h, w), (th, tw) = src, dst

    def aspect_then_resize(a):
        ch = max(min(h, int(w * th / tw)), 1)
        cw = max(min(w, int(h * tw / th)), 1)
        hs, ws = int((h - ch) / 2), int((w - cw) / 2)
        c = torch.from_numpy(np.moveaxis(a[:, hs:hs + ch, ws:ws + cw], -1, 1).copy())
        r = torch.nn.functional.interpolate(c, size=dst, mode="bilinear", align_corners=False, antialias=False)
        return np.moveaxis(r.numpy(), 1, -1)

    if h >= th and w >= tw:
        want = x[:, (h - th) // 2:(h - th) // 2 + th, (w - tw) // 2:(w - tw) // 2 + tw]
    else:
        want = aspect_then_resize(x)
    np.testing.assert_allclose(layers.CenterCrop(*dst)(x), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layers.Resizing(*dst, crop_to_aspect_ratio=True)(x), aspect_then_resize(x),
                               rtol=1e-5, atol=1e-6)
    c = layers.CenterCrop(*dst)
    assert layers.CenterCrop.from_config(c.get_config()).get_config() == c.get_config()


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_against_keras_itself():
    K = keras3_on_torch()
    x = np.random.default_rng(1).random((2, 7, 6, 3)).astype(np.float32) * 255
    for interp in ("bilinear", "nearest"):
        for dst in ((14, 12), (3, 4), (7, 9)):
            for crop in (False, True):
                ref = np.asarray(K.layers.Resizing(*dst, interpolation=interp, crop_to_aspect_ratio=crop)(x)
                                 .detach().cpu())
                got = layers.Resizing(*dst, interpolation=interp, crop_to_aspect_ratio=crop)(x)
                np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-3, err_msg=str((interp, dst, crop)))
    for dst in ((4, 4), (7, 2), (9, 5), (3, 8)):
        ref = np.asarray(K.layers.CenterCrop(*dst)(x).detach().cpu())
        np.testing.assert_allclose(layers.CenterCrop(*dst)(x), ref, rtol=1e-5, atol=1e-3, err_msg=str(dst))
