"""Tests of the tape-only layers (pyaiml/keras/tape_layers.py), AdamW and gradient
clipping, ReduceLROnPlateau and CSVLogger, and keras.utils.pad_sequences.

What they are: each layer's values and gradients against torch autograd in float64 and its
compute_output_shape against the real output; a Sequential holding such layers training
through the tape; AdamW for 20 steps against torch.optim.AdamW (Keras adds epsilon to
sqrt(v) after bias correction of the step, torch to sqrt(v_hat): they differ by O(epsilon),
so epsilon is 1e-12 here and the tolerance 1e-6); clipnorm/clipvalue against the rule
written out; the callbacks' effects on a short fit; pad_sequences on Keras's documented
cases. Run: PYTHONPATH=$PWD python -m pytest -q tests/test_keras_extras.py
"""
import csv

import numpy as np
import pytest

from pyaiml import keras
from pyaiml.autograd import GradientTape, Tensor
from pyaiml.keras import layers, utils

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def R(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def nchw(t):
    return t.permute(0, 3, 1, 2)


def nhwc(t):
    return t.permute(0, 2, 3, 1)


CASES = [
    ("permute", lambda: layers.Permute((2, 3, 1)), (2, 3, 4, 5), lambda t: t.permute(0, 2, 3, 1)),
    ("repeat_vector", lambda: layers.RepeatVector(3), (2, 4), lambda t: t[:, None].expand(2, 3, 4)),
    ("gmp1d", lambda: layers.GlobalMaxPooling1D(), (2, 6, 3), lambda t: t.amax(1)),
    ("gmp2d_keepdims", lambda: layers.GlobalMaxPooling2D(keepdims=True), (2, 4, 5, 3), lambda t: t.amax((1, 2), True)),
    ("avgpool1d", lambda: layers.AveragePooling1D(3, strides=2), (2, 9, 3),
     lambda t: TF.avg_pool1d(t.permute(0, 2, 1), 3, 2).permute(0, 2, 1)),
    ("avgpool2d", lambda: layers.AveragePooling2D(2), (2, 6, 7, 3), lambda t: nhwc(TF.avg_pool2d(nchw(t), 2))),
    ("avgpool2d_cf", lambda: layers.AveragePooling2D((2, 3), strides=1, data_format="channels_first"), (2, 3, 5, 6),
     lambda t: TF.avg_pool2d(t, (2, 3), 1)),
    ("zeropad2d", lambda: layers.ZeroPadding2D(((1, 2), (0, 3))), (2, 3, 4, 2),
     lambda t: TF.pad(t, (0, 0, 0, 3, 1, 2))),
    ("upsampling2d", lambda: layers.UpSampling2D((2, 3)), (2, 3, 4, 2),
     lambda t: nhwc(TF.interpolate(nchw(t), scale_factor=(2, 3), mode="nearest"))),
    ("rescaling", lambda: layers.Rescaling(1 / 255, offset=-0.5), (2, 5), lambda t: t / 255 - 0.5),
]


@pytest.mark.parametrize("name,make,shape,theirs", CASES, ids=[c[0] for c in CASES])
def test_layer_values_gradients_and_shapes(name, make, shape, theirs):
    layer = make()
    x = R(*shape, seed=1)
    assert layer.compute_output_shape(shape[1:]) == layer(x.astype(np.float32)).shape[1:]
    xt = Tensor(x, True)
    with GradientTape() as tape:
        y = layer(xt)
    c = R(*y.shape, seed=2)
    g = tape.gradient(y, xt, output_gradients=c)
    tt = torch.tensor(x, requires_grad=True)
    yt = theirs(tt)
    np.testing.assert_allclose(y.value, yt.detach().numpy(), rtol=1e-12, atol=1e-14)
    yt.backward(torch.tensor(c))
    np.testing.assert_allclose(g, tt.grad.numpy(), rtol=1e-10, atol=1e-14)
    again = type(layer).from_config(layer.get_config())
    assert again.get_config() == layer.get_config()


def test_layer_argument_errors():
    with pytest.raises(ValueError, match=r"Permute: dims must be a permutation of 1..2. Received \(0, 1\)"):
        layers.Permute((0, 1))
    with pytest.raises(ValueError, match="RepeatVector: n must be a positive integer"):
        layers.RepeatVector(0)
    with pytest.raises(ValueError, match="AveragePooling2D: only padding='valid'"):
        layers.AveragePooling2D(padding="same")
    with pytest.raises(ValueError, match="ZeroPadding2D: padding must be"):
        layers.ZeroPadding2D(((1, 2, 3), (0, 0)))
    with pytest.raises(ValueError, match="expects inputs of rank 4"):
        layers.UpSampling2D()(keras.Input((3, 4)))


def test_sequential_with_tape_only_layers_trains():
    keras.utils.set_random_seed(0)
    r = np.random.default_rng(0)
    x = r.random((96, 8, 8, 1)).astype(np.float32) * 255
    y = (x[:, :4].mean((1, 2, 3)) > x[:, 4:].mean((1, 2, 3))).astype(np.int64)
    m = keras.Sequential([keras.Input((8, 8, 1)), layers.Rescaling(1 / 255), layers.ZeroPadding2D(1),
                          layers.Conv2D(4, 3, activation="relu"), layers.AveragePooling2D(2),
                          layers.UpSampling2D(2), layers.GlobalMaxPooling2D(), layers.Dense(2, activation="softmax")])
    m.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy", metrics=["accuracy"])
    h = m.fit(x, y, epochs=8, batch_size=16, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert m.predict(x[:3]).shape == (3, 2)


def _torch_like_steps(opt_ours, opt_torch_cls, steps=20, **tkw):
    w0 = R(4, 3, seed=5).astype(np.float64)
    w = w0.copy()
    tw = torch.tensor(w0, requires_grad=True)
    topt = opt_torch_cls([tw], **tkw)
    for i in range(steps):
        g = R(4, 3, seed=10 + i)
        opt_ours.apply([(w, g.copy())])
        topt.zero_grad()
        tw.grad = torch.tensor(g)
        topt.step()
    return w, tw.detach().numpy()


def test_adamw_matches_torch():
    ours = keras.optimizers.AdamW(learning_rate=0.01, weight_decay=0.1, epsilon=1e-12)
    w, tw = _torch_like_steps(ours, torch.optim.AdamW, lr=0.01, weight_decay=0.1, eps=1e-12)
    np.testing.assert_allclose(w, tw, rtol=1e-6, atol=1e-9)
    assert keras.optimizers.get("adamw").weight_decay == 0.004
    cfg = keras.optimizers.serialize(ours)
    assert cfg["class_name"] == "AdamW" and keras.optimizers.get(cfg).weight_decay == 0.1
    with pytest.raises(ValueError, match="AdamW: weight_decay must be a number >= 0"):
        keras.optimizers.AdamW(weight_decay=-1)


def test_clipnorm_and_clipvalue():
    g = np.array([3.0, 4.0])
    w = np.zeros(2)
    keras.optimizers.SGD(1.0, clipnorm=1.0).apply([(w, g.copy())])
    np.testing.assert_allclose(w, [-0.6, -0.8])
    w = np.zeros(2)
    keras.optimizers.SGD(1.0, clipvalue=3.5).apply([(w, g.copy())])
    np.testing.assert_allclose(w, [-3.0, -3.5])


def test_reduce_lr_on_plateau_and_csv_logger(tmp_path):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).standard_normal((32, 3)).astype(np.float32)
    y = np.random.default_rng(1).standard_normal((32, 1)).astype(np.float32)  # noise: loss plateaus fast
    inp = keras.Input((3,))
    m = keras.Model(inp, layers.Dense(1)(inp))
    m.compile(keras.optimizers.SGD(0.5), "mse")
    path = tmp_path / "log.csv"
    rl = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=1e-3, min_lr=0.01)
    h = m.fit(x, y, epochs=12, batch_size=32, verbose=0, callbacks=[rl, keras.callbacks.CSVLogger(path)])
    lrs = h.history["learning_rate"]
    assert lrs[0] == 0.5 and lrs[-1] < 0.5 and min(lrs) >= 0.01
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))
    rows = list(csv.reader(path.read_text().splitlines()))
    assert rows[0] == ["epoch", "loss", "learning_rate"] and len(rows) == 13
    assert [int(r[0]) for r in rows[1:]] == list(range(12))
    np.testing.assert_allclose([float(r[1]) for r in rows[1:]], h.history["loss"])
    m.fit(x, y, epochs=2, verbose=0, callbacks=[keras.callbacks.CSVLogger(path, append=True)])
    assert len(path.read_text().splitlines()) == 15
    with pytest.raises(ValueError, match="factor must be in"):
        keras.callbacks.ReduceLROnPlateau(factor=1.5)


def test_pad_sequences():
    seqs = [[1, 2, 3], [4], [5, 6, 7, 8, 9]]
    np.testing.assert_array_equal(utils.pad_sequences(seqs), [[0, 0, 1, 2, 3], [0, 0, 0, 0, 4], [5, 6, 7, 8, 9]])
    np.testing.assert_array_equal(utils.pad_sequences(seqs, maxlen=4, padding="post", truncating="post", value=-1),
                                  [[1, 2, 3, -1], [4, -1, -1, -1], [5, 6, 7, 8]])
    np.testing.assert_array_equal(utils.pad_sequences(seqs, maxlen=2), [[2, 3], [0, 4], [8, 9]])
    assert utils.pad_sequences([[], [1]]).tolist() == [[0], [1]]
    assert utils.pad_sequences(seqs).dtype == np.int32
    with pytest.raises(ValueError, match="padding must be 'pre' or 'post'"):
        utils.pad_sequences(seqs, padding="middle")


def test_split_dataset():
    """keras.utils.split_dataset's size rules (int: samples, float: rounded fraction, None: the
    complement; the right part is the last right_size samples) on arrays, tuples and dicts."""
    x = np.arange(20).reshape(10, 2)
    y = np.arange(10)
    (xl, yl), (xr, yr) = utils.split_dataset((x, y), left_size=0.8)
    np.testing.assert_array_equal(xl, x[:8])
    np.testing.assert_array_equal(yr, y[8:])
    a, b = utils.split_dataset(y, right_size=3)
    assert a.tolist() == list(range(7)) and b.tolist() == [7, 8, 9]
    a, b = utils.split_dataset(y, left_size=4, right_size=2)  # a gap between the parts, as Keras
    assert a.tolist() == [0, 1, 2, 3] and b.tolist() == [8, 9]
    a, b = utils.split_dataset(y, left_size=0.33, right_size=0.5)
    assert a.tolist() == [0, 1, 2] and b.tolist() == [5, 6, 7, 8, 9]
    d1, d2 = utils.split_dataset({"a": x, "b": y}, left_size=0.5, shuffle=True, seed=3)
    assert set(d1) == {"a", "b"} and len(d1["a"]) == 5 and len(d2["b"]) == 5
    np.testing.assert_array_equal(d1["a"][:, 0] // 2, d1["b"])  # rows stay paired
    assert sorted(d1["b"].tolist() + d2["b"].tolist()) == list(range(10))
    e1, _ = utils.split_dataset({"a": x, "b": y}, left_size=0.5, shuffle=True, seed=3)
    np.testing.assert_array_equal(e1["b"], d1["b"])  # the seed repeats the split
    lst = utils.split_dataset([x, y], left_size=2)
    assert isinstance(lst[0], list) and lst[0][1].tolist() == [0, 1]


@pytest.mark.parametrize("kw, err, match", [
    ({}, ValueError, "give left_size, right_size or both"),
    ({"left_size": 0}, ValueError, "0 < left_size < 10"),
    ({"left_size": 10}, ValueError, "0 < left_size < 10"),
    ({"right_size": 1.0}, ValueError, "0 < right_size < 1"),
    ({"left_size": 0.7, "right_size": 0.5}, ValueError, "at most 1"),
    ({"left_size": 6, "right_size": 5}, ValueError, "exceed the dataset's 10"),
    ({"left_size": 0.01}, ValueError, "leave the left part empty"),
    ({"left_size": "half"}, TypeError, "left_size must be an int, a float or None"),
    ({"left_size": True}, TypeError, "left_size must be an int, a float or None"),
])
def test_split_dataset_errors(kw, err, match):
    with pytest.raises(err, match=match):
        utils.split_dataset(np.arange(10), **kw)


def test_split_dataset_bad_datasets():
    with pytest.raises(ValueError, match=r"same length. Received lengths \[3, 4\]"):
        utils.split_dataset((np.zeros(3), np.zeros(4)), left_size=1)
    with pytest.raises(TypeError, match="Received object"):
        utils.split_dataset(object(), left_size=1)
    with pytest.raises(ValueError, match="first \\(sample\\) axis"):
        utils.split_dataset(np.float32(1.0), left_size=1)
