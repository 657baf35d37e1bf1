"""Sequential's inference plan (models.Sequential._forward, Layer._inference_fn): predict and
model(x) run a per-shape plan of one callable per layer. It must give the bits of the layers'
own forward on every backend, read the weights at each call (set_weights, fit, in-place
writes), follow add()/pop(), and step aside for masks. Also the C++ Winograd weight cache,
whose key is the weights' content."""
import numpy as np
import pytest
from helpers import backends_for

import pyaiml
from pyaiml import keras
from pyaiml.keras import layers as L


def _models():
    keras.utils.set_random_seed(3)
    yield "mission_cnn", (32, 32, 3), keras.Sequential([
        L.Conv2D(32, (3, 3), activation="relu", input_shape=(32, 32, 3)), L.MaxPooling2D((2, 2)),
        L.Conv2D(64, (3, 3), activation="relu"), L.MaxPooling2D((2, 2)), L.Flatten(),
        L.Dense(10, activation="softmax")])
    yield "same_padding_tanh", (9, 11, 5), keras.Sequential([
        L.Conv2D(16, 3, padding="same", activation="tanh", input_shape=(9, 11, 5)),
        L.MaxPooling2D(2, padding="same"), L.Conv2D(18, (2, 3), strides=(2, 1), use_bias=False),
        L.Flatten(), L.Dense(7, activation="relu"), L.Dense(3)])
    yield "channels_first", (4, 12, 10), keras.Sequential([
        L.Conv2D(20, 3, data_format="channels_first", activation="relu", input_shape=(4, 12, 10)),
        L.MaxPooling2D(2, data_format="channels_first"), L.Flatten(), L.Dense(5, activation="softmax")])
    yield "conv1d_speech", (40, 13), keras.Sequential([
        L.Conv1D(16, 3, activation="relu", input_shape=(40, 13)), L.MaxPooling1D(2),
        L.Conv1D(24, 5, padding="same", activation="relu"), L.GlobalAveragePooling1D(), L.Dropout(0.3),
        L.Dense(4, activation="softmax")])


MODELS = list(_models())


@pytest.mark.parametrize("backend", backends_for("conv2d"))
@pytest.mark.parametrize("i", range(len(MODELS)), ids=[m[0] for m in MODELS])
@pytest.mark.parametrize("n", [1, 3, 32])
def test_plan_gives_the_layers_bits(backend, i, n, monkeypatch):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    _, shape, model = MODELS[i]
    x = np.random.default_rng(n).standard_normal((n,) + shape).astype(np.float32)
    want = model._forward_layers(x)  # each layer's forward, no plan
    for _ in range(2):  # the call that makes the plan, then one that runs it
        got = model.predict(x, verbose=0)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(model(x), want)
    plan = model._iplans[(x.shape, x.dtype, backend)]
    assert plan is not None and len(plan) == len(model._layers)


def test_plan_reads_the_weights_at_each_call():
    _, shape, model = next(_models())
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x = np.random.default_rng(0).random((2,) + shape, dtype=np.float32)
    before = model.predict(x, verbose=0)
    w = model.get_weights()
    model.set_weights([a * 1.5 for a in w])
    after = model.predict(x, verbose=0)
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, model._forward_layers(x))
    model.layers[2].kernel[...] = 0.0  # an in-place write: the Winograd conv's weights
    zeroed = model.predict(x, verbose=0)
    np.testing.assert_array_equal(zeroed, model._forward_layers(x))
    np.testing.assert_allclose(zeroed, np.broadcast_to(zeroed[0], zeroed.shape), rtol=0, atol=0)  # input gone
    y = np.eye(10, dtype=np.float32)[[1, 4]]
    model.set_weights(w)
    model.fit(x, y, epochs=1, verbose=0)
    np.testing.assert_array_equal(model.predict(x, verbose=0), model._forward_layers(x))


def test_add_and_pop_drop_the_plans():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([L.Conv2D(8, 3, input_shape=(6, 6, 2)), L.Flatten()])
    x = np.random.default_rng(1).random((2, 6, 6, 2), dtype=np.float32)
    assert model.predict(x, verbose=0).shape == (2, 128)
    model.add(L.Dense(3))
    assert model.predict(x, verbose=0).shape == (2, 3)
    np.testing.assert_array_equal(model.predict(x, verbose=0), model._forward_layers(x))
    model.pop()
    assert model.predict(x, verbose=0).shape == (2, 128)


def test_a_mask_runs_without_a_plan():
    keras.utils.set_random_seed(2)
    model = keras.Sequential([L.Embedding(20, 4, mask_zero=True), L.LSTM(5)])
    ids = np.array([[3, 5, 0, 0], [2, 9, 4, 1]])
    model.build((None, 4))
    with pyaiml.ops._validate.finite_checks(False):
        want = model._forward_layers(ids)  # the mask path (tests/test_keras_recurrent.py checks it)
    for _ in range(2):
        np.testing.assert_array_equal(model.predict(ids, verbose=0), want)
    assert model._iplans[(ids.shape, ids.dtype, pyaiml._backend._getenv("PYAIML_BACKEND"))] is None



def test_predict_of_one_batch_does_not_return_the_input():
    model = keras.Sequential([L.Flatten(input_shape=(2, 3))])
    x = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    out = model.predict(x, verbose=0)
    out[...] = -1
    assert x.min() == 0  # the caller's array untouched


@pytest.mark.skipif("cpp" not in backends_for("conv2d"), reason="needs the C++ backend")
def test_winograd_weight_cache_follows_the_weights_content():
    from pyaiml import _C

    rng = np.random.default_rng(5)
    p = (1, 1, 0, 0, 0, 0, 1, 1, 1)
    x = rng.standard_normal((1, 15, 15, 32)).astype(np.float32)
    w = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)

    def check(w):
        got = _C.conv2d(x, w, b, p, True, False)
        want = _C.conv2d(x, w, b, p, True, False, True)  # the naive kernel (double sums)
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)
        return got

    first = check(w)
    np.testing.assert_array_equal(_C.conv2d(x, w, b, p, True, False), first)  # a cached transform: same bits
    w[17, 3, 1, 2] += 1.0  # one element written in place, same address
    changed = check(w)
    assert not np.array_equal(changed, first)
    w2 = w.copy()  # the same content at another address
    np.testing.assert_array_equal(check(w2), changed)
    for k in range(10):  # more weights than the cache keeps, then the first again
        check(rng.standard_normal((64, 32, 3, 3)).astype(np.float32) * k)
    np.testing.assert_array_equal(check(w), changed)
    w[...] = 0
    np.testing.assert_allclose(check(w), np.broadcast_to(b, (1, 13, 13, 64)), rtol=0, atol=0)


@pytest.mark.skipif("cpp" not in backends_for("conv2d"), reason="needs the C++ backend")
@pytest.mark.parametrize("shape,oc", [((1, 15, 15, 32), 64), ((1, 32, 32, 3), 32), ((3, 9, 9, 16), 16),
                                      ((2, 30, 30, 32), 48)])
def test_small_batch_conv_bits_do_not_depend_on_the_threads(shape, oc):
    """The batch-1 splits (Winograd tile blocks sized by the thread count, the direct kernel's
    balanced row chunks) keep every result independent of the number of threads."""
    from pyaiml import _C

    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((oc, shape[-1], 3, 3)).astype(np.float32)
    b = rng.standard_normal(oc).astype(np.float32)
    p = (1, 1, 0, 0, 0, 0, 1, 1, 1)
    was = pyaiml.get_num_threads()
    try:
        outs = []
        for t in (1, 2, 3):
            pyaiml.set_num_threads(t)
            outs.append(_C.conv2d(x, w, b, p, True, True))
    finally:
        pyaiml.set_num_threads(was)
    want = _C.conv2d(x, w, b, p, True, True, True)
    np.testing.assert_allclose(outs[0], want, rtol=2e-4, atol=2e-4)
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
