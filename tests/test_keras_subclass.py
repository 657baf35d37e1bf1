"""Tests of subclassing (``keras.layers.Layer`` / ``keras.Model`` with build/call) and of
every built-in layer's tape ``call()``.

What they are: (1) each built-in layer's call() on the tape, in float64: its output against
the layer's inference path (``forward``), its input gradient and every weight gradient
against central finite differences (tests/test_keras_layers.py checks them against torch); (2) a subclassed model with a nested block used
twice (shared weights), a residual branch and a concatenation, its gradients against the
same network written in torch (float64); (3) the Keras 3 lifecycle: build on first call
with the batch-inclusive shape, add_weight's signature, the training flag passed and
inherited, nested layers tracked (weights, trainable toggling), compile/fit/evaluate/
predict; (4) save/load of a registered subclassed model; (5) the errors: a NumPy function
in call(), a layer without call(), an unregistered class.
Run: PYTHONPATH=$PWD python -m pytest -q tests/test_keras_subclass.py
"""
import numpy as np
import pytest

from pyaiml import keras
from pyaiml.autograd import GradientTape, Tensor
from pyaiml.keras import layers, ops

torch = pytest.importorskip("torch")


def R(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ---------------------------------------------------------------- (1) built-in layers on the tape
LAYERS = [
    ("dense_relu", lambda: layers.Dense(5, activation="relu"), (4, 3)),
    ("dense_3d_softmax", lambda: layers.Dense(4, activation="softmax"), (2, 3, 6)),
    ("dense_gelu", lambda: layers.Dense(4, activation="gelu", use_bias=False), (3, 5)),
    ("conv2d_same_even", lambda: layers.Conv2D(4, 2, padding="same", activation="relu"), (2, 5, 6, 3)),
    ("conv2d_stride_tanh", lambda: layers.Conv2D(3, 3, strides=2, activation="tanh"), (2, 7, 7, 2)),
    ("conv2d_channels_first", lambda: layers.Conv2D(3, 3, padding="same", data_format="channels_first"), (2, 2, 5, 5)),
    ("conv1d_causal", lambda: layers.Conv1D(4, 3, padding="causal", dilation_rate=2), (2, 9, 3)),
    ("conv1d_groups", lambda: layers.Conv1D(4, 3, groups=2, activation="sigmoid"), (2, 8, 4)),
    ("maxpool2d_same", lambda: layers.MaxPooling2D(2, padding="same"), (2, 5, 7, 3)),
    ("maxpool1d", lambda: layers.MaxPooling1D(3, strides=2), (2, 9, 3)),
    ("gap2d", lambda: layers.GlobalAveragePooling2D(), (2, 4, 5, 3)),
    ("gap1d_keepdims", lambda: layers.GlobalAveragePooling1D(keepdims=True), (2, 6, 3)),
    ("flatten", lambda: layers.Flatten(), (2, 3, 4)),
    ("reshape", lambda: layers.Reshape((6, -1)), (2, 3, 4)),
    ("activation_softmax", lambda: layers.Activation("softmax"), (3, 5)),
    ("layernorm", lambda: layers.LayerNormalization(), (2, 3, 6)),
    ("batchnorm_train", lambda: layers.BatchNormalization(), (8, 4)),
    ("batchnorm_infer", lambda: layers.BatchNormalization(), (8, 2, 4)),
    ("mha_self", lambda: layers.MultiHeadAttention(2, 3), (2, 5, 4)),
]


def _randomise(layer):
    for v in layer.variables:
        v.value[...] = R(*v.shape, seed=v.size)


def _fd(f, a, eps=1e-6):
    """Central differences of the scalar f() in every element of the array a (in place)."""
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + eps
        hi = f()
        a[i] = old - eps
        lo = f()
        a[i] = old
        g[i] = (hi - lo) / (2 * eps)
    return g


@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[x[0] for x in LAYERS])
def test_layer_call_on_the_tape_against_finite_differences(name, make, shape):
    layer = make()
    x = R(*shape, seed=1)
    layer.build(shape[1:])
    layer._cast(np.float64)
    _randomise(layer)
    if name == "batchnorm_infer":
        layer.moving_variance[...] = np.abs(layer.moving_variance) + 0.5
    training = name == "batchnorm_train"
    xt = Tensor(x, True)
    tv = layer.trainable_variables
    with GradientTape() as tape:
        y = layer(xt, training=training)
    assert isinstance(y, Tensor)
    if not training:
        np.testing.assert_allclose(y.value, layer.forward(x, training=False), rtol=1e-10, atol=1e-12)
    c = R(*y.shape, seed=2)
    grads = tape.gradient(y, [xt] + tv, output_gradients=c)
    xs = x.copy()

    def f():
        return float((np.asarray(layer(xs, training=training)) * c).sum())
    saved = [v.value.copy() for v in layer.non_trainable_variables]
    np.testing.assert_allclose(grads[0], _fd(f, xs), rtol=1e-5, atol=1e-7)
    for n, v, g in zip(layer._trainable_names, tv, grads[1:]):
        np.testing.assert_allclose(g, _fd(f, v.value), rtol=1e-5, atol=1e-7, err_msg=n)
    for v, a in zip(layer.non_trainable_variables, saved):
        v.value[...] = a


def test_embedding_and_masked_average_on_the_tape():
    emb = layers.Embedding(7, 3, mask_zero=True)
    ids = np.array([[1, 2, 0, 0], [3, 3, 6, 0]])
    emb.build(ids.shape[1:])
    emb._cast(np.float64)
    gap = layers.GlobalAveragePooling1D()
    with GradientTape() as tape:
        h = emb(ids)
        y = gap(h, mask=ids != 0)
        loss = ops.sum(ops.square(y))
    g = tape.gradient(loss, emb.trainable_variables[0])
    t = torch.tensor(emb.embeddings, requires_grad=True)
    m = torch.tensor(ids != 0, dtype=torch.float64)[..., None]
    yt = (t[torch.tensor(ids)] * m).sum(1) / m.sum(1)
    (yt ** 2).sum().backward()
    np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-10)


def test_mha_cross_attention_scores_and_dropout_on_the_tape():
    mha = layers.MultiHeadAttention(2, 4, value_dim=3)
    q, v = R(2, 5, 6, seed=1), R(2, 7, 4, seed=2)
    mha(q, v)
    mha._cast(np.float64)
    _randomise(mha)
    mask = R(2, 5, 7, seed=3) > -0.5
    mask[..., 0] = True
    qt = Tensor(q, True)
    with GradientTape() as tape:
        y, scores = mha(qt, v, attention_mask=mask, return_attention_scores=True)
        loss = ops.sum(y * y)
    with GradientTape() as tape2:
        y2 = mha(qt, v, attention_mask=mask)
        loss2 = ops.sum(y2 * y2)
    assert scores.shape == (2, 2, 5, 7)
    np.testing.assert_allclose(scores.value.sum(-1), 1, rtol=1e-12)
    np.testing.assert_allclose(np.where(mask[:, None], 0, scores.value), 0, atol=1e-300)
    np.testing.assert_allclose(y.value, y2.value, rtol=1e-10)  # explicit scores path == the attention kernel
    g1 = tape.gradient(loss, [qt] + mha.trainable_variables)
    g2 = tape2.gradient(loss2, [qt] + mha.trainable_variables)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    drop = layers.MultiHeadAttention(2, 4, dropout=0.5)
    x = R(2, 5, 6).astype(np.float32)
    with GradientTape():
        a = drop(x, x, training=True).value
    b = drop(x, x, training=False)
    assert not np.allclose(a, b)
    seq = keras.Sequential([layers.Input((5, 6)), layers.MultiHeadAttention(2, 4, dropout=0.2)])
    seq.compile("adam", "mse")
    w0 = [w.copy() for w in seq.get_weights()]
    assert np.isfinite(seq.train_on_batch(x, x))  # Sequential trains through the tape: dropout included
    assert any(not np.array_equal(a, b) for a, b in zip(w0, seq.get_weights()))
    np.testing.assert_allclose(seq.predict(x, verbose=0), seq.layers[0](x), rtol=1e-6)


# ---------------------------------------------------------------- (2) a subclassed model against torch
class Block(layers.Layer):
    def __init__(self, units, **kw):
        super().__init__(**kw)
        self.d1 = layers.Dense(units, activation="tanh")
        self.d2 = layers.Dense(units)

    def call(self, x):
        h = self.d1(x)
        return ops.relu(self.d2(h) + h)  # residual


class Net(keras.Model):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.embed = layers.Dense(6)
        self.block = Block(6)  # used twice: shared weights
        self.head = layers.Dense(3, activation="softmax")

    def call(self, x, training=False):
        h = self.embed(x)
        h = self.block(self.block(h))
        return self.head(ops.concatenate([h, x], axis=-1))


def test_subclassed_model_gradients_match_torch():
    m = Net()
    x = R(5, 4)
    m(x.astype(np.float32))
    m._cast(np.float64)
    for v in m.variables:
        v.value[...] = R(*v.shape, seed=v.size + len(v.name)) * 0.5
    tv = m.trainable_variables
    assert len(tv) == 8 and len({id(v) for v in tv}) == 8  # the shared block's weights once
    c = R(5, 3, seed=9)
    with GradientTape() as tape:
        y = m(x)
        loss = ops.sum(y * c)
    grads = tape.gradient(loss, tv)
    W = [torch.tensor(v.value, requires_grad=True) for v in tv]
    ek, eb, k1, b1, k2, b2, hk, hb = W
    xt = torch.tensor(x)

    def block(h):
        a = torch.tanh(h @ k1 + b1)
        return torch.relu(a @ k2 + b2 + a)
    h = block(block(xt @ ek + eb))
    yt = torch.softmax(torch.cat([h, xt], -1) @ hk + hb, -1)
    np.testing.assert_allclose(y.value, yt.detach().numpy(), rtol=1e-10)
    (yt * torch.tensor(c)).sum().backward()
    for g, w in zip(grads, W):
        np.testing.assert_allclose(g, w.grad.numpy(), rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- (3) the lifecycle
class Linear(layers.Layer):
    def __init__(self, units=4, **kw):
        super().__init__(**kw)
        self.units = units
        self.seen = []

    def build(self, input_shape):
        self.seen.append(input_shape)
        self.w = self.add_weight(shape=(input_shape[-1], self.units), initializer="random_normal", trainable=True,
                                 name="w")
        self.b = self.add_weight(shape=(self.units,), initializer="zeros", name="b")
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")

    def call(self, inputs, training=None):
        if training:
            self.count.assign_add(1.0)
        return ops.matmul(inputs, self.w) + self.b


def test_build_add_weight_and_training_flag():
    lin = Linear(3)
    y = lin(np.ones((2, 5)))
    assert lin.seen == [(2, 5)] and lin.built and y.shape == (2, 3) and type(y) is np.ndarray
    assert [v.name for v in lin.variables] == [f"{lin.name}/w", f"{lin.name}/b", f"{lin.name}/count"]
    assert len(lin.trainable_variables) == 2 and len(lin.non_trainable_variables) == 1
    assert lin.w.dtype == np.float32 and isinstance(lin.w, keras.Variable)
    lin(np.ones((2, 5)), training=True)
    assert float(lin.count.numpy()) == 1.0
    lin(np.ones((2, 5)))
    assert float(lin.count.numpy()) == 1.0
    assert [w.shape for w in lin.get_weights()] == [(5, 3), (3,), ()]
    lin.set_weights([np.ones((5, 3)), np.zeros(3), np.zeros(())])
    np.testing.assert_allclose(lin(np.ones((1, 5))), [[5, 5, 5]])
    with pytest.raises(ValueError, match=r"weight 'w' must have shape \(5, 3\)"):
        lin.set_weights([np.ones((3, 5)), np.zeros(3), np.zeros(())])


class Outer(layers.Layer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.parts = [layers.Dense(4), layers.Dropout(0.5), Linear(2)]

    def call(self, x):  # no training argument: inner layers inherit the caller's flag
        for p in self.parts:
            x = p(x)
        return x


def test_nested_layers_tracked_training_inherited_and_freezing():
    o = Outer()
    x = np.ones((64, 3), np.float32)
    o(x)
    assert len(o.trainable_variables) == 4 and len(o.variables) == 5
    assert len(o.get_weights()) == 5
    a = o(x, training=False)
    b = o(x, training=False)
    np.testing.assert_array_equal(a, b)  # inference: dropout off
    with GradientTape():
        c = o(x, training=True).value
    assert not np.allclose(c, a)  # training: the Dropout inside saw training=True
    o.trainable = False
    assert o.trainable_variables == [] and not o.parts[0].trainable
    o.trainable = True
    assert len(o.trainable_variables) == 4


class Classifier(keras.Model):
    def __init__(self, n_classes=3, **kw):
        super().__init__(**kw)
        self.n_classes = n_classes
        self.hidden = layers.Dense(16, activation="relu")
        self.drop = layers.Dropout(0.1)
        self.out = layers.Dense(n_classes, activation="softmax")

    def call(self, x, training=False):
        return self.out(self.drop(self.hidden(x), training=training))

    def get_config(self):
        return {**super().get_config(), "n_classes": self.n_classes}


def _blobs(n=300, seed=0):
    r = np.random.default_rng(seed)
    y = r.integers(0, 3, n)
    x = (r.standard_normal((n, 4)) + np.eye(3, 4)[y] * 3).astype(np.float32)
    return x, y


def test_subclassed_model_fit_evaluate_predict():
    keras.utils.set_random_seed(0)
    x, y = _blobs()
    m = Classifier()
    m.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    h = m.fit(x, y, epochs=8, batch_size=32, validation_split=0.2, verbose=0)
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert h.history["loss"][-1] < h.history["loss"][0] and h.history["val_accuracy"][-1] > 0.9
    _, acc = m.evaluate(x, y, verbose=0)
    assert acc > 0.9
    p = m.predict(x[:7])
    assert p.shape == (7, 3) and np.allclose(p.sum(1), 1, atol=1e-5)
    r = m.train_on_batch(x[:16], y[:16], return_dict=True)
    assert set(r) == {"loss", "accuracy"}
    assert m.count_params() == 4 * 16 + 16 + 16 * 3 + 3
    lines = []
    m.summary(print_fn=lines.append)
    assert any("(Dense)" in ln and "(None, 16)" in ln and " 80" in ln for ln in lines) and lines[-2].startswith("Non-trainable params: 0")


def test_custom_training_loop_with_apply_gradients():
    keras.utils.set_random_seed(1)
    x, y = _blobs(200)
    m = Classifier()
    opt = keras.optimizers.SGD(0.1)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    first = last = None
    for step in range(40):
        xb, yb = x[step % 5 * 40:(step % 5 + 1) * 40], y[step % 5 * 40:(step % 5 + 1) * 40]
        with GradientTape() as tape:
            probs = m(xb, training=True)
            loss = loss_fn(yb, probs) if step % 2 else ops.mean(ops.sparse_categorical_crossentropy(yb, probs))
        grads = tape.gradient(loss, m.trainable_weights)
        opt.apply_gradients(zip(grads, m.trainable_weights))
        first = float(loss) if first is None else first
        last = float(loss)
    assert last < 0.5 * first


def test_loss_objects_record_on_the_tape():
    m = Classifier()
    x, y = _blobs(32)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    with GradientTape() as tape:
        loss = loss_fn(y, m(x, training=True))
    assert isinstance(loss, Tensor) and loss.shape == ()
    assert all(g is not None for g in tape.gradient(loss, m.trainable_variables))


# ---------------------------------------------------------------- (4) save / load
@keras.saving.register_keras_serializable(package="tests")
class SavedNet(Classifier):
    pass


def test_registered_subclassed_model_save_and_load(tmp_path):
    keras.utils.set_random_seed(2)
    x, y = _blobs(120)
    m = SavedNet(n_classes=3, name="saved")
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(x, y, epochs=2, verbose=0)
    p = tmp_path / "s.keras"
    m.save(p)
    m2 = keras.models.load_model(p)
    assert type(m2) is SavedNet and m2.name == "saved" and m2.n_classes == 3
    np.testing.assert_allclose(m2.predict(x[:5]), m.predict(x[:5]), rtol=1e-6)
    assert m2.compiled and m2.optimizer.iterations == m.optimizer.iterations
    m.history = None
    h = m2.fit(x, y, epochs=3, initial_epoch=2, verbose=0)
    assert h.epoch == [0, 1, 2]  # the saved History continues
    w = tmp_path / "w.npz"
    m.save_weights(w)
    m3 = SavedNet()
    m3(x[:1])
    m3.load_weights(w)
    np.testing.assert_allclose(m3.predict(x[:5]), m.predict(x[:5]), rtol=1e-6)


def test_unregistered_subclassed_model_cannot_be_saved(tmp_path):
    m = Classifier()
    m(np.ones((1, 4), np.float32))
    with pytest.raises(ValueError, match="Classifier is a subclassed model whose class is not registered"):
        m.save(tmp_path / "c.keras")


def test_registered_class_missing_at_load_names_it(tmp_path):
    from pyaiml.keras import serialization

    @keras.saving.register_keras_serializable(package="gone")
    class Temp(Classifier):
        pass
    m = Temp(name="temp_model")
    m(np.ones((1, 4), np.float32))
    p = tmp_path / "t.keras"
    m.save(p)
    del serialization._REGISTRY["gone>Temp"]
    with pytest.raises(ValueError, match=r"model 'temp_model' is of class 'gone>Temp'.*not registered.*"
                                         r"register_keras_serializable"):
        keras.models.load_model(p)
    m2 = keras.models.load_model(p, custom_objects={"gone>Temp": Temp})
    assert type(m2) is Temp


# ---------------------------------------------------------------- (5) errors
class UsesNumpy(layers.Layer):
    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], 2))

    def call(self, x):
        return np.tanh(ops.matmul(x, self.w))


def test_numpy_function_in_call_is_a_clear_error_when_training():
    layer = UsesNumpy(name="np_layer")
    assert layer(np.ones((2, 3))).shape == (2, 2)  # no tape: a plain array, NumPy works
    inp = keras.Input((3,))
    m = keras.Model(inp, layers.Dense(1)(layer(inp)))
    m.compile("sgd", "mse")
    with pytest.raises(TypeError, match=r"layer 'np_layer' \(UsesNumpy\)\.call\(\) applied numpy\.tanh to a tape "
                                        r"tensor of shape \(4, 2\).*keras\.ops"):
        m.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0)


def test_layer_without_call_and_bad_add_weight():
    class NoCall(layers.Layer):
        pass

    with pytest.raises(NotImplementedError, match=r"Layer 'no_call' \(NoCall\) does not define call"):
        NoCall()(np.ones((1, 2)))

    class BadShape(layers.Layer):
        def build(self, input_shape):
            self.add_weight(shape=(None, 3))

        def call(self, x):
            return x
    with pytest.raises(ValueError, match=r"add_weight: shape must be a tuple of ints.*Received \(None, 3\)"):
        BadShape()(np.ones((1, 2)))


def test_model_constructor_errors():
    with pytest.raises(TypeError, match="a subclassed model takes no inputs/outputs"):
        Classifier(inputs=1)
    m = Classifier()
    with pytest.raises(RuntimeError, match="call model.compile"):
        m.fit(np.ones((2, 4)), np.zeros(2))
    m.compile("adam", {"nope": "mse"})
    with pytest.raises(ValueError, match=r"loss names \['nope'\] are not outputs"):
        m.fit(np.ones((2, 4)), np.zeros(2), verbose=0)


# ---------------------------------------------------------------- Sequential on the tape
def test_sequential_under_a_user_tape_matches_its_training_step():
    """A Sequential model called on a user's GradientTape gives the gradients its own training
    step computes (the same call() path)."""
    from pyaiml.autograd import functional as F

    keras.utils.set_random_seed(6)
    seq = keras.Sequential([layers.Input((7, 7, 2)), layers.Conv2D(4, 3, activation="relu", padding="same"),
                            layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(5, activation="tanh"),
                            layers.Dense(3, activation="softmax")])
    seq.compile("sgd", "categorical_crossentropy")
    for layer in seq.layers:
        layer._cast(np.float64)
    x = R(4, 7, 7, 2)
    y = np.eye(3)[[0, 2, 1, 1]]
    tape, loss, _, _ = seq._recorded_loss(x, y)
    want = tape.gradient(loss, seq._train_vars())
    with GradientTape() as tape:
        probs = seq(x, training=True)
        loss = F.loss(seq.loss, y, probs)  # the softmax output is differentiated from its logits
    got = tape.gradient(loss, seq.trainable_weights)
    assert len(got) == len(want) == 6
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
