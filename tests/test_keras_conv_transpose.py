"""Conv1DTranspose / Conv2DTranspose and the tape op under them (F.conv_transpose).

Oracles: torch.nn.functional.conv_transpose1d/2d (values in float32 through the layer, the
op's gradients in float64 through torch autograd) with no padding, cut to the output Keras
gives; where that output starts and how long it is comes from TensorFlow's rule, written out
here on its own: the result is the input gradient of a conv with "same" (or no) padding from
the output size back to the input size, so its first row is that conv's top padding,
max((n - 1) * s + k_eff - out, 0) // 2; the output length is Keras's deconv_output_length.
Keras 3 itself (torch backend) when it is installed: its output shapes over a grid, and its
layer's values where its torch backend can match TensorFlow's rule."""
import numpy as np
import pytest
from helpers import keras3_on_torch

torch = pytest.importorskip("torch")

from pyaiml import keras
from pyaiml.autograd import GradientTape
from pyaiml.autograd import functional as F
from pyaiml.keras import layers


def keras_length(n, k, s, d, padding, op):
    """keras.src.utils.conv_utils.deconv_output_length, written out."""
    ke = k + (k - 1) * (d - 1)
    if op is None:
        return n * s + max(ke - s, 0) if padding == "valid" else n * s
    pad = ke // 2 if padding == "same" else 0
    return (n - 1) * s + ke - 2 * pad + op


def tf_start(n, k, s, d, out):
    """TensorFlow: the output is the input gradient of conv(out -> n) with 'same' padding, whose
    top padding is max((n - 1) * s + k_eff - out, 0) // 2 (0 for 'valid')."""
    ke = (k - 1) * d + 1
    return max((n - 1) * s + ke - out, 0) // 2


def torch_reference(x, kernel, bias, strides, dilation, padding, op):
    """Keras channels-last x and kernel (k..., filters, in) through torch, uncropped, then cut."""
    r = x.ndim - 2
    tx = torch.from_numpy(np.moveaxis(x, -1, 1).copy())
    tw = torch.from_numpy(np.ascontiguousarray(kernel.transpose((r + 1, r) + tuple(range(r)))))
    f = torch.nn.functional.conv_transpose2d if r == 2 else torch.nn.functional.conv_transpose1d
    full = np.moveaxis(f(tx, tw, None, stride=strides, dilation=dilation).numpy(), 1, -1)
    idx = [slice(None)]
    for ax in range(r):
        n, k, s, d = x.shape[1 + ax], kernel.shape[ax], strides[ax], dilation[ax]
        o = None if op is None else op[ax]
        length = keras_length(n, k, s, d, padding, o)
        start = 0 if padding == "valid" else tf_start(n, k, s, d, length)
        if start + length > full.shape[1 + ax]:
            pw = [(0, 0)] * full.ndim
            pw[1 + ax] = (0, start + length - full.shape[1 + ax])
            full = np.pad(full, pw)
        idx.append(slice(start, start + length))
    out = full[tuple(idx)]
    return out + bias if bias is not None else out


CASES = [  # rank, kernel, strides, dilation, padding, output_padding
    (2, (3, 3), (2, 2), (1, 1), "same", None),
    (2, (3, 3), (2, 2), (1, 1), "valid", None),
    (2, (4, 4), (2, 2), (1, 1), "same", None),
    (2, (2, 2), (2, 2), (1, 1), "valid", None),
    (2, (1, 1), (3, 2), (1, 1), "valid", None),   # kernel smaller than the stride: zero rows
    (2, (3, 2), (1, 1), (2, 1), "same", None),    # dilated, stride 1
    (2, (5, 3), (3, 2), (1, 1), "same", (2, 1)),
    (2, (3, 3), (2, 2), (1, 1), "valid", (1, 0)),
    (1, (3,), (2,), (1,), "same", None),
    (1, (4,), (3,), (1,), "valid", (2,)),
    (1, (3,), (1,), (3,), "valid", None),
]


@pytest.mark.parametrize("act", [None, "relu"])
@pytest.mark.parametrize("case", CASES, ids=[f"r{c[0]}k{c[1]}s{c[2]}d{c[3]}{c[4]}op{c[5]}" for c in CASES])
def test_layer_values_against_torch_and_the_tensorflow_rule(case, act):
    """Bias and ReLU run inside the phase convs of a strided layer, after the cut otherwise (rows
    past the transposed conv's last one hold the bias alone, ReLU'd)."""
    r, k, s, d, padding, op = case
    cls = layers.Conv2DTranspose if r == 2 else layers.Conv1DTranspose
    layer = cls(5, k, strides=s, dilation_rate=d, padding=padding, output_padding=op, activation=act,
                bias_initializer="glorot_uniform")
    x = np.random.default_rng(0).standard_normal((2,) + (7, 6)[:r] + (3,)).astype(np.float32)
    y = layer(x)
    want = torch_reference(x, layer.kernel.value, layer.bias.value, s, d, padding, op)
    if act == "relu":
        want = np.maximum(want, 0)
    assert y.shape == want.shape == (2,) + layer.compute_output_shape(x.shape[1:])
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES[:4] + CASES[8:10], ids=str)
def test_op_gradients_against_torch_float64(case):
    r, k, s, d, _, _ = case
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2,) + (5, 4)[:r] + (3,))
    w = rng.standard_normal((3, 4) + k)  # (in, out, k...)
    with GradientTape() as tape:
        xx, ww = tape.watch(x), tape.watch(w)
        y = F.conv_transpose(xx, ww, s, d)
        g0 = rng.standard_normal(np.shape(y.value))
        loss = F.sum(F.multiply(y, g0))
    gx, gw = tape.gradient(loss, [xx, ww])
    tx = torch.from_numpy(np.moveaxis(x, -1, 1).copy()).requires_grad_()
    tw = torch.from_numpy(w).requires_grad_()
    f = torch.nn.functional.conv_transpose2d if r == 2 else torch.nn.functional.conv_transpose1d
    ty = f(tx, tw, stride=s, dilation=d)
    np.testing.assert_allclose(y.value, np.moveaxis(ty.detach().numpy(), 1, -1), rtol=1e-12, atol=1e-12)
    (ty * torch.from_numpy(np.moveaxis(g0, -1, 1).copy())).sum().backward()
    np.testing.assert_allclose(gx, np.moveaxis(tx.grad.numpy(), 1, -1), rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-11, atol=1e-11)


def test_autoencoder_trains_and_saves(tmp_path):
    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 1))
    h = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(i)
    out = layers.Conv2DTranspose(1, 3, strides=2, padding="same", activation="sigmoid")(h)
    m = keras.Model(i, out)
    m.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    x = (rng.random((64, 8, 8, 1)) > 0.5).astype(np.float32) * np.linspace(0, 1, 8, dtype=np.float32)[None, :, None,
                                                                                                       None]
    hist = m.fit(x, x, epochs=20, batch_size=16, verbose=0)
    assert hist.history["loss"][-1] < 0.9 * hist.history["loss"][0]
    assert m.predict(x[:3], verbose=0).shape == (3, 8, 8, 1)
    m.save(tmp_path / "ae.keras")
    np.testing.assert_array_equal(keras.models.load_model(tmp_path / "ae.keras").predict(x, verbose=0),
                                  m.predict(x, verbose=0))
    seq = keras.Sequential([keras.Input((4, 3)), layers.Conv1DTranspose(2, 3, strides=2)])
    assert seq.predict(np.ones((2, 4, 3), np.float32), verbose=0).shape == (2, 9, 2)


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="output_padding must be smaller than strides"):
        layers.Conv2DTranspose(2, 3, strides=2, output_padding=2)
    with pytest.raises(ValueError, match="padding must be 'valid' or 'same'"):
        layers.Conv2DTranspose(2, 3, padding="full")
    with pytest.raises(ValueError, match="channels_last"):
        layers.Conv2DTranspose(2, 3, data_format="channels_first")
    with pytest.raises(ValueError, match="filters must be a positive integer"):
        layers.Conv1DTranspose(0, 3)
    with pytest.raises(TypeError, match="conv_transpose: x must have dtype float32 or float64. Received int64"):
        layers.Conv2DTranspose(2, 3)(np.ones((1, 3, 3, 2), np.int64))
    with pytest.raises(Exception, match="expects inputs of rank 4"):
        layers.Conv2DTranspose(2, 3)(np.zeros((2, 5, 3), np.float32))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_against_keras_itself():
    """Keras 3 on its torch backend (bench extra): output shapes over a grid, and values where
    its torch backend follows TensorFlow's rule (not with both a torch padding and a torch
    output padding, its own docstring says)."""
    K = keras3_on_torch()
    from keras.src.backend.common.backend_utils import (
        _convert_conv_transpose_padding_args_from_keras_to_torch as to_torch,
    )
    from keras.src.backend.common.backend_utils import (
        compute_conv_transpose_output_shape,
    )

    for n in (4, 7):
        for k in (1, 2, 3, 4, 5):
            for s in (1, 2, 3):
                for padding in ("valid", "same"):
                    for op in [None] + list(range(s)):
                        want = compute_conv_transpose_output_shape((2, n, n, 3), (k, k), 6, (s, s), padding,
                                                                   None if op is None else (op, op))
                        lay = layers.Conv2DTranspose(6, k, strides=s, padding=padding,
                                                     output_padding=None if op is None else op)
                        assert (2,) + lay.compute_output_shape((n, n, 3)) == tuple(want), (n, k, s, padding, op)
                        tp, top = to_torch(k, s, 1, padding, op)
                        if tp > 0 and top > 0:
                            continue
                        kl = K.layers.Conv2DTranspose(6, k, strides=s, padding=padding, output_padding=op)
                        x = np.random.default_rng(k * 10 + s).standard_normal((2, n, n, 3)).astype(np.float32)
                        ref = kl(x)
                        lay(x)
                        lay.set_weights([np.asarray(w) for w in kl.get_weights()])
                        np.testing.assert_allclose(lay(x), np.asarray(ref.detach().cpu()), rtol=1e-5, atol=1e-5,
                                                   err_msg=str((n, k, s, padding, op)))


@pytest.mark.parametrize("case", [CASES[0], CASES[4], CASES[6], CASES[9]], ids=str)
def test_layer_gradients_with_bias_and_relu_against_torch(case):
    r, k, s, d, padding, op = case
    cls = layers.Conv2DTranspose if r == 2 else layers.Conv1DTranspose
    layer = cls(4, k, strides=s, dilation_rate=d, padding=padding, output_padding=op, activation="relu",
                bias_initializer="glorot_uniform")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2,) + (5, 4)[:r] + (3,)).astype(np.float32)
    y = layer(x)
    g0 = rng.standard_normal(y.shape).astype(np.float32)
    with GradientTape() as tape:
        xx = tape.watch(x)
        loss = F.sum(F.multiply(layer(xx), g0))
    gx, gk, gb = tape.gradient(loss, [xx, layer.kernel, layer.bias])
    tx = torch.from_numpy(x).requires_grad_()
    tk = torch.from_numpy(layer.kernel.value.copy()).requires_grad_()
    tb = torch.from_numpy(layer.bias.value.copy()).requires_grad_()
    tw = tk.permute((r + 1, r) + tuple(range(r)))
    f = torch.nn.functional.conv_transpose2d if r == 2 else torch.nn.functional.conv_transpose1d
    full = f(tx.movedim(-1, 1), tw, None, stride=s, dilation=d).movedim(1, -1)
    idx = [slice(None)]
    for ax in range(r):
        n = x.shape[1 + ax]
        length = keras_length(n, k[ax], s[ax], d[ax], padding, None if op is None else op[ax])
        start = 0 if padding == "valid" else tf_start(n, k[ax], s[ax], d[ax], length)
        extra = start + length - full.shape[1 + ax]
        if extra > 0:
            pw = [0, 0] * (r + 2)
            pw[2 * (r - ax) + 1] = extra  # torch.nn.functional.pad: last axis first, (before, after) pairs
            full = torch.nn.functional.pad(full, pw)
        idx.append(slice(start, start + length))
    ty = torch.relu(full[tuple(idx)] + tb)
    (ty * torch.from_numpy(g0)).sum().backward()
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gk, tk.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-4, atol=1e-4)
