"""DepthwiseConv2D and SeparableConv2D against torch (grouped conv2d, then a 1x1 conv), with
Keras's 'same' padding (the extra row/column at the end) done by padding explicitly on the
torch side; values, and gradients of the input and every weight through the tape; a model
that trains and round-trips through save/load; Keras 3 itself when installed."""
import numpy as np
import pytest
from helpers import assert_saves_and_loads, keras3_on_torch

torch = pytest.importorskip("torch")

from pyaiml import keras
from pyaiml.autograd import GradientTape
from pyaiml.autograd import functional as F
from pyaiml.keras import layers


def same_pads(n, k, s, d):
    out = -(-n // s)
    tot = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
    return tot // 2, tot - tot // 2


def torch_forward(x, dk, pk, bias, strides, dilation, padding, act):
    """x NHWC numpy (requires_grad tensors allowed for dk, pk, bias)."""
    c, m = dk.shape[2], dk.shape[3]
    tx = x.permute(0, 3, 1, 2)
    if padding == "same":
        (t, b), (lft, r) = (same_pads(n, k, s, d) for n, k, s, d in zip(tx.shape[2:], dk.shape[:2], strides, dilation))
        tx = torch.nn.functional.pad(tx, (lft, r, t, b))
    w = dk.permute(2, 3, 0, 1).reshape(c * m, 1, dk.shape[0], dk.shape[1])
    y = torch.nn.functional.conv2d(tx, w, None, strides, 0, dilation, c)
    if pk is not None:
        y = torch.nn.functional.conv2d(y, pk.permute(3, 2, 0, 1))
    if bias is not None:
        y = y + bias[None, :, None, None]
    y = y.permute(0, 2, 3, 1)
    return torch.relu(y) if act == "relu" else y


CASES = [((3, 3), (1, 1), (1, 1), "same", 1), ((3, 3), (2, 2), (1, 1), "same", 2), ((2, 3), (1, 2), (1, 1), "valid", 1),
         ((3, 3), (1, 1), (2, 2), "same", 1), ((4, 4), (2, 2), (1, 1), "same", 3)]


@pytest.mark.parametrize("sep", [False, True], ids=["depthwise", "separable"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_values_and_gradients_against_torch(case, sep):
    k, s, d, padding, m = case
    act = "relu" if sep else None
    layer = (layers.SeparableConv2D(5, k, strides=s, dilation_rate=d, padding=padding, depth_multiplier=m,
                                    activation=act, bias_initializer="glorot_uniform") if sep else
             layers.DepthwiseConv2D(k, strides=s, dilation_rate=d, padding=padding, depth_multiplier=m,
                                    bias_initializer="glorot_uniform"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 8, 3)).astype(np.float32)
    y = layer(x)
    weights = layer.get_weights()
    dk = torch.from_numpy(weights[0].copy()).requires_grad_()
    pk = torch.from_numpy(weights[1].copy()).requires_grad_() if sep else None
    tb = torch.from_numpy(weights[-1].copy()).requires_grad_()
    tx = torch.from_numpy(x).requires_grad_()
    ty = torch_forward(tx, dk, pk, tb, s, d, padding, act)
    assert y.shape == tuple(ty.shape) == (2,) + layer.compute_output_shape(x.shape[1:])
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    g0 = rng.standard_normal(y.shape).astype(np.float32)
    with GradientTape() as tape:
        xx = tape.watch(x)
        loss = F.sum(F.multiply(layer(xx), g0))
    grads = tape.gradient(loss, [xx] + layer.trainable_variables)
    (ty * torch.from_numpy(g0)).sum().backward()
    want = [tx.grad, dk.grad] + ([pk.grad] if sep else []) + [tb.grad]
    for got, w in zip(grads, want):
        np.testing.assert_allclose(got, w.numpy(), rtol=1e-4, atol=1e-4)


def test_model_trains_and_saves(tmp_path):
    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 2))
    h = layers.SeparableConv2D(8, 3, padding="same", activation="relu")(i)
    h = layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2)(h)
    out = layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling2D()(h))
    m = keras.Model(i, out)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8, 8, 2)).astype(np.float32)
    y = (x[:, :, :, 0].mean((1, 2)) > 0).astype(np.int64)
    h = m.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert_saves_and_loads(m, x, tmp_path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="depth_multiplier must be a positive integer"):
        layers.DepthwiseConv2D(3, depth_multiplier=0)
    with pytest.raises(ValueError, match="filters must be a positive integer"):
        layers.SeparableConv2D(0, 3)
    with pytest.raises(ValueError, match="padding must be 'valid' or 'same'"):
        layers.SeparableConv2D(2, 3, padding="causal")
    with pytest.raises(Exception, match="expects inputs of rank 4"):
        layers.DepthwiseConv2D(3)(np.zeros((2, 5, 3), np.float32))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_against_keras_itself():
    K = keras3_on_torch()
    x = np.random.default_rng(1).standard_normal((2, 9, 8, 3)).astype(np.float32)
    for k, s, d, padding, m in CASES:
        kw = {"strides": s, "dilation_rate": d, "padding": padding, "depth_multiplier": m}
        for kl, pl in ((K.layers.DepthwiseConv2D(k, **kw), layers.DepthwiseConv2D(k, **kw)),
                       (K.layers.SeparableConv2D(4, k, **kw), layers.SeparableConv2D(4, k, **kw))):
            ref = np.asarray(kl(x).detach().cpu())
            pl(x)
            pl.set_weights([np.asarray(w) for w in kl.get_weights()])
            np.testing.assert_allclose(pl(x), ref, rtol=1e-5, atol=1e-5, err_msg=str((k, s, d, padding, m)))
