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

    yield "conv1d_native", (21, 6), keras.Sequential([
        L.Conv1D(8, 3, activation="relu", input_shape=(21, 6)), L.MaxPooling1D(2),
        L.Conv1D(10, 3, padding="same", dilation_rate=2), L.Flatten(), L.Dropout(0.5),
        L.Dense(5, activation="relu"), L.Dense(4, activation="softmax")])


MODELS = list(_models())


@pytest.mark.parametrize("backend", backends_for("conv2d"))
@pytest.mark.parametrize("i", range(len(MODELS)), ids=[m[0] for m in MODELS])
@pytest.mark.parametrize("n", [1, 3, 32])
def test_plan_gives_the_layers_bits(backend, i, n, monkeypatch):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    _, shape, model = MODELS[i]
    x = np.random.default_rng(n).standard_normal((n,) + shape).astype(np.float32)
    want = model._forward_layers(x)  # each layer's forward, no plan
    # On C++ the models made only of conv (ReLU or linear), max pool, flatten and dense layers
    # run as one native SequentialPlan, whose softmax is C++'s (a few ulps from NumPy's); the
    # others (a tanh conv, global average pooling) as a plan of one callable per layer.
    native = backend == "cpp" and MODELS[i][0] in ("mission_cnn", "channels_first", "conv1d_native")
    first = model.predict(x, verbose=0)  # the call that makes the plan gives the plan's bits
    np.testing.assert_array_equal(model.predict(x, verbose=0), first)
    for _ in range(2):
        for got in (model.predict(x, verbose=0), model(x)):
            assert got.dtype == want.dtype and got.shape == want.shape
            if native:
                np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-8)
            else:
                np.testing.assert_array_equal(got, want)
    plan = model._iplans[(x.shape, x.dtype, backend)]
    assert plan is not None and len(plan) == (1 if native else len(model._layers))


def test_plan_reads_the_weights_at_each_call():
    _, shape, model = next(_models())
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x = np.random.default_rng(0).random((2,) + shape, dtype=np.float32)
    before = model.predict(x, verbose=0)
    w = model.get_weights()
    model.set_weights([a * 1.5 for a in w])
    after = model.predict(x, verbose=0)
    assert not np.array_equal(before, after)
    np.testing.assert_allclose(after, model._forward_layers(x), rtol=2e-6, atol=1e-8)
    model.layers[2].kernel[...] = 0.0  # an in-place write: the Winograd conv's weights
    zeroed = model.predict(x, verbose=0)
    np.testing.assert_allclose(zeroed, model._forward_layers(x), rtol=2e-6, atol=1e-8)
    np.testing.assert_allclose(zeroed, np.broadcast_to(zeroed[0], zeroed.shape), rtol=0, atol=0)  # input gone
    y = np.eye(10, dtype=np.float32)[[1, 4]]
    model.set_weights(w)
    model.fit(x, y, epochs=1, verbose=0)
    np.testing.assert_allclose(model.predict(x, verbose=0), model._forward_layers(x), rtol=2e-6, atol=1e-8)


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


@pytest.mark.skipif("cpp" not in backends_for("conv2d"), reason="needs the C++ backend")
def test_sequential_plan_refuses_bad_plans_and_arrays():
    from pyaiml import _C

    conv = (0, 1, 6, 6, 2, 4, 3, 3, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1)
    dense = (2, 1, 64, 3, 0, 1, 1)
    plan = _C.SequentialPlan([1, 6, 6, 2], [conv, dense], [1, 3])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 6, 6, 2)).astype(np.float32)
    w = [rng.standard_normal(s).astype(np.float32) for s in ((4, 2, 3, 3), (4,), (64, 3), (3,))]
    y = plan.run(x, w)
    from pyaiml import ops

    h = ops.conv2d(x, w[0], w[1], data_format="NHWC", activation="relu").reshape(1, -1)
    np.testing.assert_allclose(y, ops.softmax(h @ w[2] + w[3], -1), rtol=2e-6, atol=1e-7)
    bad_plans = [
        ([1, 6, 6, 2], [(7, 1)], [1, 3], "unknown step"),
        ([1, 6, 6, 2], [conv, (2, 1, 65, 3, 0, 1, 1)], [1, 3], "takes 65 values"),
        ([1, 6, 6, 2], [conv, dense], [1, 4], "output shape"),
        ([1, 6, 6, 2], [conv[:10]], [1, 3], "20 values"),
        ([1, 6, 6, 2], [(0, 1, 6, 6, 2, 4, 9, 3, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1), dense], [1, 3], "fit"),
        ([1, 6, 6, 2], [(0, 1, 6, 6, 2, 4, 3, 3, 1, 1, 0, 0, 0, 0, 1, 1, 3, 1, 1, 1), dense], [1, 3], "groups"),
        ([1, 6, 6, 2], [(1, 1, 6, 6, 2, 2, 2, 2, 2, 0, 0, 1)] + [(2, 1, 18, 3, 1, 0, 1)], [1, 3], "one activation"),
        ([1, 2 ** 40, 6, 2], [conv], [1, 3], "input sizes"),
        ([1, 6, 6, 2], [(2, 1, 72, -3, 0, 1, 0)], [1, 3], "dense sizes"),
        ([1, 6, 6, 2], [(2, 1, 72, 3.5, 0, 1, 0)], [1, 3], "must be integers"),
        ([1, 6, 6, 2], [("conv",)], [1, 3], "must be integers"),
    ]
    for ins, steps, outs, msg in bad_plans:
        with pytest.raises(ValueError, match=msg):
            _C.SequentialPlan(ins, steps, outs)
    bad_runs = [
        (x[:, :5], w, "shape"), (x.astype(np.float64), w, "float32"), (x, w[:3], "missing"),
        (x, w + [w[3]], "expected"), (x, [w[0][:2]] + w[1:], "values"), (x, [w[0].T] + w[1:], "contiguous"),
        (x, [w[0], w[1], w[2].astype(np.float64), w[3]], "float32"),
    ]
    for xx, ww, msg in bad_runs:
        with pytest.raises(ValueError, match=msg):
            plan.run(xx, ww)


@pytest.mark.skipif("cpp" not in backends_for("conv2d"), reason="needs the C++ backend")
@pytest.mark.parametrize("n", [1, 7, 10, 16, 17, 100, 1000])
def test_native_softmax_rows_against_float64(n):
    """The native plan's softmax (act.h softmax_rows) on a dense step with an identity kernel:
    rows of n logits over a wide range, a row with entries near -FLT_MAX (an -inf would make the
    identity product NaN), a NaN row."""
    from pyaiml import _C

    rng = np.random.default_rng(n)
    rows = 5
    x = (rng.standard_normal((rows, n)) * rng.uniform(0.1, 30, (rows, 1))).astype(np.float32)
    x[1] += 1e4  # large logits: max subtracted first
    if n > 1:
        x[2, : n // 2] = -3e38
    x[3, n // 3] = np.nan
    plan = _C.SequentialPlan([rows, n], [(2, rows, n, n, 0, 0, 1)], [rows, n])
    got = plan.run(x, [np.eye(n, dtype=np.float32)])
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=1, keepdims=True))
    want = e / e.sum(axis=1, keepdims=True)
    assert np.isnan(got[3]).all()
    ok = ~np.isnan(want).any(axis=1)
    np.testing.assert_allclose(got[ok], want[ok], rtol=3e-6, atol=1e-9)  # float32 x - max: ~1e-5 relative at e^-60
    np.testing.assert_allclose(got[ok].sum(axis=1), 1, rtol=1e-5)


@pytest.mark.skipif("cpp" not in backends_for("conv2d"), reason="needs the C++ backend")
@pytest.mark.parametrize("n", [1, 5, 13, 32])
def test_native_plan_bits_do_not_depend_on_threads_or_chunks(n, monkeypatch):
    """With several images per thread the native plan runs chunks of images on each thread;
    otherwise each kernel splits its own work. Either way the same bits, for any thread count."""
    monkeypatch.setenv("PYAIML_BACKEND", "cpp")
    _, shape, model = next(_models())
    x = np.random.default_rng(n).standard_normal((n,) + shape).astype(np.float32)
    was = pyaiml.get_num_threads()
    try:
        outs = []
        for t in (1, 2, 3):
            pyaiml.set_num_threads(t)
            outs.append(model(x))
            assert len(model._iplans[(x.shape, x.dtype, "cpp")]) == 1
    finally:
        pyaiml.set_num_threads(was)
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    np.testing.assert_allclose(outs[0], model._forward_layers(x), rtol=2e-6, atol=1e-8)


def test_a_deep_copy_runs_its_own_weights():
    """copy.deepcopy leaves the plans behind: the copy's predict reads the copy's weights."""
    import copy

    _, shape, model = next(_models())
    x = np.random.default_rng(4).random((2,) + shape, dtype=np.float32)
    want = model.predict(x, verbose=0)  # makes a plan
    twin = copy.deepcopy(model)
    np.testing.assert_array_equal(twin.predict(x, verbose=0), want)
    twin.set_weights([a * 0.5 for a in twin.get_weights()])
    assert not np.allclose(twin.predict(x, verbose=0), want)
    np.testing.assert_array_equal(model.predict(x, verbose=0), want)


def test_zero_samples():
    """predict and model(x) of no samples give an empty array of the output's shape; training
    and evaluating on none raise a ValueError (they divided by zero)."""
    _, shape, model = next(_models())
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x0, y0 = np.zeros((0,) + shape, np.float32), np.zeros((0, 10), np.float32)
    for out in (model.predict(x0, verbose=0), model(x0)):
        assert out.shape == (0, 10) and out.dtype == np.float32
    for f in (lambda: model.fit(x0, y0, verbose=0), lambda: model.evaluate(x0, y0, verbose=0),
              lambda: model.train_on_batch(x0, y0)):
        with pytest.raises(ValueError, match="at least one sample"):
            f()


class _Sub(keras.Model):
    def __init__(self):
        super().__init__()
        self.d = L.Dense(3)

    def call(self, x, training=False):
        return self.d(x)


def _three_ways():
    i = keras.Input((8,))
    yield "functional", keras.Model(i, L.Dense(3, activation="softmax")(L.Dense(4, activation="relu")(i)))
    yield "subclassed", _Sub()
    a, b = keras.Input((8,)), keras.Input((2,))
    yield "two in, two out", keras.Model([a, b], [L.Dense(3)(a), L.Dense(1)(L.Concatenate()([a, b]))])


@pytest.mark.parametrize("kind", ["functional", "subclassed", "two in, two out"])
def test_zero_samples_functional_and_subclassed(kind):
    """keras.Model as Sequential: predict, predict_on_batch and model(x) of no samples give
    empty float32 arrays of the outputs' shapes, in the outputs' structure (model(x) raised
    from its first kernel, predict said 'x holds no samples'); fit, evaluate, train_on_batch
    and test_on_batch on none raise a ValueError naming the call (evaluate returned 0.0, a
    training step's loss was NaN). A model first called on no samples builds as usual."""
    model = dict(_three_ways())[kind]
    two = kind == "two in, two out"
    x0 = [np.zeros((0, 8), np.float32), np.zeros((0, 2), np.float32)] if two else np.zeros((0, 8), np.float32)
    x1 = [np.ones((2, 8), np.float32), np.ones((2, 2), np.float32)] if two else np.ones((2, 8), np.float32)
    want = [(0, 3), (0, 1)] if two else [(0, 3)]
    for out in (model(x0), model.predict(x0, verbose=0), model.predict_on_batch(x0)):
        outs = out if two else [out]
        assert isinstance(out, list) == two
        assert [o.shape for o in outs] == want and all(o.dtype == np.float32 for o in outs)
    full = model.predict(x1, verbose=0)
    assert [o.shape for o in (full if two else [full])] == [(2,) + s[1:] for s in want]
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    y0 = [np.zeros((0, 3), np.float32), np.zeros((0, 1), np.float32)] if two else np.zeros((0, 3), np.float32)
    for name, f in (("fit", lambda: model.fit(x0, y0, verbose=0)),
                    ("evaluate", lambda: model.evaluate(x0, y0, verbose=0)),
                    ("train_on_batch", lambda: model.train_on_batch(x0, y0)),
                    ("test_on_batch", lambda: model.test_on_batch(x0, y0))):
        with pytest.raises(ValueError, match=f"{name}: x must hold at least one sample"):
            f()
    y1 = [np.zeros((2, 3), np.float32), np.zeros((2, 1), np.float32)] if two else np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="validation x must hold at least one sample"):
        model.fit(x1, y1, validation_data=(x0, y0), verbose=0)
    model.fit(x1, y1, verbose=0)  # still trains on samples


def _as_functional(seq, shape):
    """The same layers (fresh, with seq's weights) as keras.Model(inputs, outputs)."""
    i = keras.Input(shape)
    h = i
    for layer in seq.layers:
        h = type(layer).from_config(layer.get_config())(h)
    m = keras.Model(i, h)
    m.set_weights(seq.get_weights())
    return m


@pytest.mark.parametrize("backend", backends_for("conv2d"))
@pytest.mark.parametrize("i", range(len(MODELS)), ids=[m[0] for m in MODELS])
def test_functional_chain_runs_the_sequential_plan(backend, i, monkeypatch):
    """A functional model that is one chain of layers gets Sequential's plan: predict and
    model(x) give the Sequential twin's bits, and agree with the graph's own layer-by-layer run
    (the generic call path) as Sequential's plan does with its layers."""
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    _, shape, seq = MODELS[i]
    fun = _as_functional(seq, shape)
    assert fun._chain is not None
    for n in (1, 5):
        x = np.random.default_rng(n).standard_normal((n,) + shape).astype(np.float32)
        want = seq.predict(x, verbose=0)
        for got in (fun.predict(x, verbose=0), fun(x), fun(x, training=False), fun.predict(x, verbose=0)):
            np.testing.assert_array_equal(got, want)
        generic = L.Layer.__call__(fun, x, training=False)  # the graph's layers one by one
        np.testing.assert_allclose(generic, want, rtol=2e-6, atol=1e-8)
    assert fun._iplans  # the plans were made and kept


def test_functional_plan_is_for_chains_only_and_steps_aside():
    a = keras.Input((6,))
    branch = keras.Model(a, L.Add()([L.Dense(3)(a), L.Dense(3)(a)]))
    assert branch._chain is None
    shared = L.Dense(6)
    b = keras.Input((6,))
    assert keras.Model(b, shared(shared(b)))._chain is None  # one layer twice
    c = keras.Input((6,))
    assert keras.Model(c, [L.Dense(2)(c)])._chain is None  # outputs as a list: model(x) gives a list
    # a mask (Embedding(mask_zero=True)): no plan, the graph's own path with the mask
    ids = keras.Input((5,), dtype="int32")
    m = keras.Model(ids, L.Dense(2)(L.GlobalAveragePooling1D()(L.Embedding(9, 4, mask_zero=True)(ids))))
    x = np.array([[1, 2, 0, 0, 0], [3, 4, 5, 6, 7]], np.int32)
    want = L.Layer.__call__(m, x, training=False)
    np.testing.assert_array_equal(m.predict(x, verbose=0), want)
    np.testing.assert_array_equal(m(x), want)


def test_functional_plan_reads_the_weights_and_copies_leave_it():
    import copy

    _, shape, seq = MODELS[0]
    fun = _as_functional(seq, shape)
    x = np.random.default_rng(0).random((2,) + shape, dtype=np.float32)
    want = fun.predict(x, verbose=0)
    twin = copy.deepcopy(fun)
    assert not getattr(twin, "_iplans", None)
    np.testing.assert_array_equal(twin.predict(x, verbose=0), want)
    twin.set_weights([w * 0.5 for w in twin.get_weights()])
    assert not np.allclose(twin.predict(x, verbose=0), want)
    np.testing.assert_array_equal(fun.predict(x, verbose=0), want)  # the original kept its own
    fun.layers[-1].kernel[...] = 0  # an in-place write is seen at the next call
    assert not np.allclose(fun.predict(x, verbose=0), want)


def test_functional_plan_checks_its_input():
    _, shape, seq = MODELS[0]
    fun = _as_functional(seq, shape)
    x = np.zeros((2,) + shape, np.float32)
    x[1, 3, 4, 2] = np.nan
    with pytest.raises(ValueError, match=r"x contains NaN or inf \(first at sample 1, index \(3, 4, 2\)\)"):
        fun(x)
    with pytest.raises(ValueError, match="NaN or inf"):
        fun.predict(x, verbose=0)
    with pytest.raises(ValueError, match="expects shape"):
        fun(np.zeros((2, 31, 32, 3), np.float32))
    got = fun(np.zeros((2,) + shape, np.float64))  # float64 in: float32 out, as predict
    assert got.dtype == np.float32 and got.shape == (2, 10)


def test_functional_chain_with_a_subclassed_layer():
    class Twice(L.Layer):
        def call(self, x):
            return keras.ops.multiply(x, 2.0)

    i = keras.Input((4,))
    m = keras.Model(i, L.Dense(3)(Twice()(L.Dense(5, activation="relu")(i))))
    assert m._chain is not None
    x = np.random.default_rng(1).random((3, 4), dtype=np.float32)
    want = L.Layer.__call__(m, x, training=False)
    np.testing.assert_array_equal(m.predict(x, verbose=0), want)
    np.testing.assert_array_equal(m(x), want)
