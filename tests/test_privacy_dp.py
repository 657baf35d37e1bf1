"""DP-SGD (pyaiml.privacy.dp) on Keras models: the per-example rules of the ops their
layers record (pyaiml.autograd.per_example, driven by GradientTape.clipped_gradient).

Per-example gradients: the clipped sums and the squared norms against a loop that takes the
tape's ordinary gradient on one example at a time, in float64 (layers re-typed with
``_cast``), to 1e-10: sums of a few hundred float64 products. Both the "build G_i" and the
Gram-matrix forms of the norms are hit (the rule picks one by shape; tests/
test_autograd_per_example.py checks each form on its own). The DP step: with noise_multiplier=0 it
is clipped-mean SGD (float32, 1e-5 relative); the noise is measured on a model whose
gradient is exactly zero (10,200 weights: the sample std is within 3.5% of the
expected one at about 5 standard errors). The accountant against dp-accounting called
directly. Bad arguments raise ValueError/TypeError naming the argument.
"""
import warnings

import numpy as np
import pytest
from helpers import run_py

from pyaiml import keras
from pyaiml.keras import layers as L
from pyaiml.privacy import (
    DPSGD,
    DPKerasAdamOptimizer,
    DPKerasSGDOptimizer,
    compute_epsilon,
    compute_noise_multiplier,
)

dpa = pytest.importorskip("dp_accounting")

TOL = {"rtol": 1e-10, "atol": 1e-10}


# ---------------------------------------------------------------------------- per-example gradients
def _prepare(model, x):
    model.build((None,) + x.shape[1:])
    for layer in model._layers:
        layer._cast(np.float64)
    return [l for l in model._layers if l.trainable and l._trainable_names]


def _loop_grads(model, x, y):
    """Reference: the tape's ordinary gradient of each example alone (a batch of one: its own
    loss); {(layer name, weight name): (n, *weight shape)}."""
    names = [(l.name, n) for l in model._layers if l.trainable for n in l._trainable_names]
    ref = []
    for i in range(len(x)):
        tape, loss, _, _ = model._recorded_loss(x[i:i + 1], y[i:i + 1])
        ref.append(tape.gradient(loss, model._train_vars()))
    return {key: np.stack([r[j] for r in ref]) for j, key in enumerate(names)}


def check_per_example(model, x, y, loss, seed=0):
    model.compile(optimizer="sgd", loss=loss)
    tl = _prepare(model, x)
    ref = _loop_grads(model, x, y)
    n = len(x)
    c = np.random.default_rng(seed).uniform(0.1, 1.0, n)
    seen = []

    def factors(sq):
        seen.append(sq)
        return c
    tape, lv, _, _ = model._recorded_loss(x, y)
    grads, sq = tape.clipped_gradient(lv, model._train_vars(), factors, n)
    want = sum((r.reshape(n, -1) ** 2).sum(axis=1) for r in ref.values())
    np.testing.assert_allclose(sq, want, rtol=1e-10)
    np.testing.assert_allclose(seen[0], want, rtol=1e-10)
    assert len(grads) == len(ref)
    for g, (key, r) in zip(grads, ref.items()):
        np.testing.assert_allclose(g, np.tensordot(c, r, axes=1), err_msg=str(key), **TOL)
    return tl


def _seed():
    keras.utils.set_random_seed(3)
    return np.random.default_rng(5)


@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_2d(use_bias):
    rng = _seed()
    x = rng.standard_normal((9, 5))
    y = rng.integers(0, 3, 9)
    m = keras.Sequential([L.Input((5,)), L.Dense(7, activation="tanh", use_bias=use_bias),
                          L.Dense(6, activation="relu"), L.Dense(3, activation="softmax")])
    check_per_example(m, x, y, "sparse_categorical_crossentropy")


@pytest.mark.parametrize("steps,width", [(6, 3), (3, 16)])  # (T*T > in*out: build G_i), (T*T <= in*out: Gram)
def test_dense_3d(steps, width):
    rng = _seed()
    x = rng.standard_normal((7, steps, 5))
    y = rng.standard_normal((7, steps, 2))
    m = keras.Sequential([L.Input((steps, 5)), L.Dense(width, activation="sigmoid"), L.Dense(2)])
    check_per_example(m, x, y, "mse")


def test_conv1d():
    rng = _seed()
    x = rng.standard_normal((6, 11, 3))
    y = rng.integers(0, 4, 6)
    m = keras.Sequential([L.Input((11, 3)), L.Conv1D(4, 3, strides=2, padding="same", activation="relu"),
                          L.Conv1D(6, 2, padding="causal", dilation_rate=2, groups=2),
                          L.Conv1D(5, 2, padding="valid", use_bias=False), L.Flatten(),
                          L.Dense(4, activation="softmax")])
    check_per_example(m, x, y, "sparse_categorical_crossentropy")


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("strides", [1, 2, (2, 1)])
def test_conv2d(padding, strides):
    rng = _seed()
    x = rng.standard_normal((5, 9, 8, 2))
    y = rng.integers(0, 3, 5)
    m = keras.Sequential([L.Input((9, 8, 2)), L.Conv2D(4, 3, strides=strides, padding=padding, activation="relu"),
                          L.Conv2D(6, (2, 3), padding=padding, groups=2), L.MaxPooling2D(2, padding="same"),
                          L.Flatten(), L.Dense(3, activation="softmax")])
    check_per_example(m, x, y, "sparse_categorical_crossentropy")


def test_conv2d_gram_form_channels_first_dilation():
    # 3x3 outputs with a 3x3x8 kernel and 16 filters: L*L = 81 < K*OC = 1152, the Gram form
    rng = _seed()
    x = rng.standard_normal((4, 3, 3, 8))
    y = rng.standard_normal((4, 3, 3, 16))
    m = keras.Sequential([L.Input((3, 3, 8)), L.Conv2D(16, 3, padding="same", activation="tanh")])
    check_per_example(m, x, y, "mse")
    x2 = rng.standard_normal((4, 2, 9, 8))
    y2 = rng.integers(0, 2, 4)
    m2 = keras.Sequential([L.Input((2, 9, 8)), L.Conv2D(3, 2, dilation_rate=(1, 2), data_format="channels_first",
                                                        activation="relu"), L.Flatten(), L.Dense(2, activation="softmax")])
    check_per_example(m2, x2, y2, "sparse_categorical_crossentropy")


def test_embedding_repeated_ids():
    rng = _seed()
    ids = rng.integers(0, 7, (8, 6))
    ids[0] = 3  # one example holding a single id six times
    y = rng.integers(0, 3, 8)
    m = keras.Sequential([L.Input((6,)), L.Embedding(7, 4), L.Flatten(), L.Dense(3, activation="softmax")])
    check_per_example(m, ids, y, "sparse_categorical_crossentropy")


def test_mixed_model():
    rng = _seed()
    ids = rng.integers(0, 9, (7, 10))
    ids[:, 7:] = 0  # padding, masked in the average
    y = rng.integers(0, 2, 7)
    m = keras.Sequential([L.Input((10,)), L.Embedding(9, 6, mask_zero=True),
                          L.Conv1D(5, 3, padding="same", activation="relu"), L.LayerNormalization(),
                          L.Dense(4, activation="gelu"), L.GlobalAveragePooling1D(),
                          L.Dense(2, activation="softmax")])
    check_per_example(m, ids, y, "sparse_categorical_crossentropy")


def test_frozen_layers_are_skipped():
    rng = _seed()
    x = rng.standard_normal((6, 5))
    y = rng.integers(0, 2, 6)
    m = keras.Sequential([L.Input((5,)), L.Dense(4, activation="relu", trainable=False),
                          L.Dense(3, activation="relu"), L.Dense(2, activation="softmax")])
    tl = check_per_example(m, x, y, "sparse_categorical_crossentropy")
    assert [l.name for l in tl] == [m.layers[1].name, m.layers[2].name]


# ---------------------------------------------------------------------------- the DP step
def _clipped_mean_reference(model, x, y, clip):
    """Per-example gradients (ordinary backward, one example at a time, float32), clipped and averaged."""
    per = _loop_grads(model, x, y)
    keys = list(per)
    norms = np.sqrt(sum((per[k].astype(np.float64).reshape(len(x), -1) ** 2).sum(axis=1) for k in keys))
    c = np.minimum(1.0, clip / norms)
    return {k: np.tensordot(c, per[k].astype(np.float64), axes=1) / len(x) for k in keys}, norms


@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_zero_noise_is_clipped_mean(base):
    rng = _seed()
    x = rng.standard_normal((12, 6)).astype(np.float32)
    y = rng.integers(0, 3, 12)
    m = keras.Sequential([L.Input((6,)), L.Dense(5, activation="relu"), L.Dense(3, activation="softmax")])
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    w0 = [w.copy() for w in m.get_weights()]
    ref, norms = _clipped_mean_reference(m, x, y, 1.0)
    clip = float(np.median(norms))  # half the examples clipped
    ref, _ = _clipped_mean_reference(m, x, y, clip)
    opt = DPSGD(l2_norm_clip=clip, noise_multiplier=0.0, learning_rate=0.1, base=base)
    m.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    m.set_weights(w0)
    m.train_on_batch(x, y)
    assert 0.3 < opt.clipped_fraction < 0.7
    names = [(l.name, n) for l in m._layers for n in l._weight_names]
    for (lname, wname), before, after in zip(names, w0, m.get_weights()):
        g = ref[(lname, wname)]
        if base == "sgd":
            want = before - 0.1 * g
        else:  # first Adam step: m = 0.1 g, v = 0.001 g^2; alpha = lr sqrt(0.001) / 0.1
            want = before - 0.1 * np.sqrt(1 - 0.999) / 0.1 * (0.1 * g) / (np.sqrt(0.001 * g * g) + 1e-7)
        np.testing.assert_allclose(after, want, rtol=1e-5, atol=1e-6, err_msg=f"{lname}/{wname}")


def test_noise_std_on_zero_gradient():
    keras.utils.set_random_seed(0)
    x = np.ones((10, 50), np.float32)
    m = keras.Sequential([L.Input((50,)), L.Dense(200, kernel_initializer="zeros")])
    opt = DPSGD(l2_norm_clip=2.0, noise_multiplier=1.5, learning_rate=1.0, seed=11)
    m.compile(optimizer=opt, loss="mse")
    m.train_on_batch(x, np.zeros((10, 200), np.float32))  # prediction = target: every gradient is 0
    step = np.concatenate([w.ravel() for w in m.get_weights()])  # weights were 0: -(noise)/batch
    want = 2.0 * 1.5 / 10
    assert step.size == 10200
    assert abs(step.std() / want - 1) < 0.035
    assert abs(step.mean()) < 4 * want / np.sqrt(step.size)


def test_fit_poisson_batches_epsilon_and_seed():
    rng = _seed()
    x = rng.standard_normal((200, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)

    def run(seed):
        keras.utils.set_random_seed(1)
        m = keras.Sequential([L.Input((4,)), L.Dense(2, activation="softmax")])
        opt = DPSGD(1.0, 1.3, learning_rate=0.5, seed=seed, delta=1e-4)
        m.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        sizes = []
        orig = m._train_step_dp

        def spy(xb, yb, e):
            sizes.append(len(xb))
            assert e == 20
            return orig(xb, yb, e)
        m._train_step_dp = spy
        h = m.fit(x, y, batch_size=20, epochs=3, verbose=0)
        return m, opt, h, sizes

    m, opt, h, sizes = run(7)
    assert opt.steps == 30 and len(sizes) == 30
    assert len(set(sizes)) > 3  # Poisson: sizes vary around 20
    assert abs(np.mean(sizes) - 20) < 4 * np.sqrt(20 * 0.9 / 30)
    for e, eps in enumerate(h.history["epsilon"]):
        assert eps == pytest.approx(compute_epsilon(10 * (e + 1), 0.1, 1.3, 1e-4), rel=1e-12)
    assert h.history["accuracy"][-1] > 0.8
    m2, *_ = run(7)
    for a, b in zip(m.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)
    m3, *_ = run(8)
    assert not np.array_equal(m.get_weights()[0], m3.get_weights()[0])


def test_empty_batches_take_noise_only_steps():
    rng = _seed()
    x = rng.standard_normal((40, 3)).astype(np.float32)
    y = rng.integers(0, 2, 40)
    m = keras.Sequential([L.Input((3,)), L.Dense(2, activation="softmax")])
    opt = DPSGD(1.0, 1.0, learning_rate=0.1, seed=0)
    m.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    h = m.fit(x, y, batch_size=1, epochs=1, verbose=0)  # q = 1/40: most batches are empty
    assert opt.steps == 40 and np.isfinite(h.history["loss"][0])
    assert opt.epsilon() == pytest.approx(compute_epsilon(40, 1 / 40, 1.0, 1e-5))


def test_shuffle_mode_warns_and_uses_fixed_batches():
    rng = _seed()
    x = rng.standard_normal((30, 3)).astype(np.float32)
    y = rng.integers(0, 2, 30)
    m = keras.Sequential([L.Input((3,)), L.Dense(2, activation="softmax")])
    m.compile(optimizer=DPSGD(1.0, 1.0, sampling="shuffle", seed=0), loss="sparse_categorical_crossentropy")
    sizes = []
    orig = m._train_step_dp
    m._train_step_dp = lambda xb, yb, e: (sizes.append(len(xb)), orig(xb, yb, e))[1]
    with pytest.warns(UserWarning, match="not a privacy guarantee"):
        m.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert sizes == [8, 8, 8, 6]


def test_train_on_batch_has_no_sampling_rate():
    m = keras.Sequential([L.Input((3,)), L.Dense(2)])
    opt = DPSGD(1.0, 1.0, seed=0)
    m.compile(optimizer=opt, loss="mse")
    m.train_on_batch(np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32))
    assert opt.steps == 1
    with pytest.raises(ValueError, match="train_on_batch"):
        opt.epsilon()


def test_fit_after_train_on_batch_logs_nan_epsilon():
    m = keras.Sequential([L.Input((3,)), L.Dense(2)])
    m.compile(optimizer=DPSGD(1.0, 1.0, seed=0), loss="mse")
    x, y = np.ones((8, 3), np.float32), np.zeros((8, 2), np.float32)
    m.train_on_batch(x, y)
    with pytest.warns(UserWarning, match="epsilon spent is unknown"):
        h = m.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.isnan(h.history["epsilon"]).all() and m.optimizer.steps == 5


def test_apply_without_per_example_gradients_refused():
    opt = DPSGD(1.0, 1.0)
    w, g = np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(RuntimeError, match="per-example"):
        opt.apply([(w, g)])


def test_save_and_load_keep_the_ledger(tmp_path):
    rng = _seed()
    x = rng.standard_normal((50, 3)).astype(np.float32)
    y = rng.integers(0, 2, 50)
    m = keras.Sequential([L.Input((3,)), L.Dense(2, activation="softmax")])
    m.compile(optimizer=DPSGD(1.0, 1.2, learning_rate=0.05, base="adam", seed=0), loss="sparse_categorical_crossentropy")
    m.fit(x, y, batch_size=10, epochs=2, verbose=0)
    p = str(tmp_path / "dp.keras")
    m.save(p)
    m2 = keras.models.load_model(p)
    assert isinstance(m2.optimizer, DPSGD) and type(m2.optimizer.base).__name__ == "Adam"
    assert m2.optimizer.steps == 10
    assert m2.optimizer.epsilon() == pytest.approx(m.optimizer.epsilon())
    assert m2.optimizer.iterations == m.optimizer.iterations == 10
    # only while loading: "dpsgd" is no optimizer= string (it needs a clip and a noise multiplier)
    with pytest.raises(ValueError, match="Valid identifiers: adagrad, adam, adamw, nadam, rmsprop, sgd$"):
        keras.optimizers.get("dpsgd")


def test_tf_privacy_names():
    o = DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.1, num_microbatches=None, learning_rate=0.2,
                            momentum=0.5)
    assert isinstance(o, DPSGD) and o.base.momentum == 0.5 and o.learning_rate == 0.2
    o = DPKerasAdamOptimizer(l2_norm_clip=1.0, noise_multiplier=1.1)
    assert type(o.base).__name__ == "Adam"
    base = keras.optimizers.RMSprop(learning_rate=0.003)
    o = DPSGD(1.0, 1.0, base=base)
    assert o.base is base and o.learning_rate == 0.003


# ---------------------------------------------------------------------------- accountant
@pytest.mark.parametrize("steps,q,sigma,delta", [(1000, 0.01, 1.1, 1e-5), (300, 0.044, 0.8, 1e-5), (1, 1.0, 2.0, 1e-6)])
def test_epsilon_matches_dp_accounting(steps, q, sigma, delta):
    ev = dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma)), steps)
    a = dpa.rdp.RdpAccountant()
    a.compose(ev)
    assert compute_epsilon(steps, q, sigma, delta) == pytest.approx(a.get_epsilon(delta), rel=1e-12)
    b = dpa.pld.PLDAccountant()
    b.compose(ev)
    assert compute_epsilon(steps, q, sigma, delta, accountant="pld") == pytest.approx(b.get_epsilon(delta), rel=1e-9)


def test_epsilon_edge_cases():
    assert compute_epsilon(0, 0.1, 1.0, 1e-5) == 0.0
    assert compute_epsilon(10, 0.1, 0.0, 1e-5) == float("inf")
    assert compute_epsilon(100, 0.1, 1.0, 1e-5) < compute_epsilon(200, 0.1, 1.0, 1e-5)
    assert compute_epsilon(100, 0.1, 2.0, 1e-5) < compute_epsilon(100, 0.1, 1.0, 1e-5)


def test_compute_noise_multiplier():
    s = compute_noise_multiplier(2.0, 500, 0.05, 1e-5)
    assert compute_epsilon(500, 0.05, s, 1e-5) <= 2.0
    assert compute_epsilon(500, 0.05, s * 0.995, 1e-5) > 2.0


# ---------------------------------------------------------------------------- bad arguments and layers
@pytest.mark.parametrize("kw,match", [
    ({"l2_norm_clip": -1.0, "noise_multiplier": 1.0}, "l2_norm_clip must be finite and > 0. Received -1.0"),
    ({"l2_norm_clip": 0, "noise_multiplier": 1.0}, "l2_norm_clip must be finite and > 0"),
    ({"l2_norm_clip": float("nan"), "noise_multiplier": 1.0}, "l2_norm_clip must be finite"),
    ({"l2_norm_clip": 1.0, "noise_multiplier": -0.5}, "noise_multiplier must be finite and >= 0. Received -0.5"),
    ({"l2_norm_clip": 1.0, "noise_multiplier": float("inf")}, "noise_multiplier must be finite"),
    ({"l2_norm_clip": 1.0, "noise_multiplier": 1.0, "sampling": "fixed"}, "sampling must be one of poisson, shuffle"),
    ({"l2_norm_clip": 1.0, "noise_multiplier": 1.0, "delta": 1.0}, "delta must be finite and > 0 and < 1"),
    ({"l2_norm_clip": 1.0, "noise_multiplier": 1.0, "accountant": "gdp"}, "accountant must be one of rdp, pld"),
    ({"l2_norm_clip": 1.0, "noise_multiplier": 1.0, "num_microbatches": 4}, "num_microbatches must be None"),
    ({"l2_norm_clip": 1.0, "noise_multiplier": 1.0, "seed": -2}, "seed must be None or an integer >= 0"),
    ({"l2_norm_clip": 1.0, "noise_multiplier": 1.0, "base": "adadelta"}, "Unknown optimizer identifier 'adadelta'"),
    ({"l2_norm_clip": 1.0, "noise_multiplier": 1.0, "base": keras.optimizers.SGD(), "learning_rate": 0.1},
     "carries its own learning rate"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        DPSGD(**kw)


def test_bad_argument_types():
    with pytest.raises(TypeError, match="l2_norm_clip must be a real number"):
        DPSGD("1.0", 1.0)
    with pytest.raises(TypeError, match="noise_multiplier must be a real number"):
        DPSGD(1.0, True)
    with pytest.raises(TypeError, match="not another DPSGD"):
        DPSGD(1.0, 1.0, base=DPSGD(1.0, 1.0))
    with pytest.raises(ValueError, match="sampling_rate must be finite and > 0 and <= 1. Received 1.5"):
        compute_epsilon(10, 1.5, 1.0, 1e-5)
    with pytest.raises(ValueError, match="steps must be an integer >= 0"):
        compute_epsilon(-1, 0.1, 1.0, 1e-5)


def test_batchnorm_model_refused():
    m = keras.Sequential([L.Input((4,)), L.Dense(3), L.BatchNormalization(name="bn"), L.Dense(2)])
    with pytest.raises(ValueError, match=r"DP-SGD: layer 'bn' \(BatchNormalization\) normalises each example with "
                                         "statistics of the whole batch"):
        m.compile(optimizer=DPSGD(1.0, 1.0), loss="mse")
    m2 = keras.Sequential([L.Dense(3), L.BatchNormalization(name="bn2", trainable=False)])  # unbuilt, frozen
    with pytest.raises(ValueError, match="'bn2'"):
        m2.compile(optimizer=DPSGD(1.0, 1.0), loss="mse")


def test_layer_without_rule_refused():
    m = keras.Sequential([L.Input((5, 4)), L.MultiHeadAttention(2, 3, name="mha"), L.GlobalAveragePooling1D(),
                          L.Dense(2)])
    with pytest.raises(ValueError, match=r"layer 'mha' \(MultiHeadAttention\) has trainable weights .* no "
                                         "per-example gradient rule"):
        m.compile(optimizer=DPSGD(1.0, 1.0), loss="mse")
    m.layers[0].trainable = False  # frozen: its input gradient is per example, so DP-SGD trains the rest
    m.compile(optimizer=DPSGD(1.0, 1.0, seed=0), loss="mse")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.fit(np.ones((6, 5, 4), np.float32), np.zeros((6, 2), np.float32), batch_size=3, epochs=1, verbose=0)


def test_imports_without_dp_accounting():
    code = ("import sys; sys.modules['dp_accounting'] = None\n"  # import dp_accounting -> ImportError
            "import pyaiml, pyaiml.keras, pyaiml.privacy as p\n"
            "o = p.DPSGD(1.0, 1.0)\n"
            "try:\n    p.compute_epsilon(10, 0.1, 1.0, 1e-5)\nexcept ImportError as e:\n"
            "    print('ok', 'dp-accounting' in str(e))\n"
            "import numpy as np\n"
            "m = pyaiml.keras.Sequential([pyaiml.keras.layers.Input((3,)), pyaiml.keras.layers.Dense(2)])\n"
            "m.compile(optimizer=o, loss='mse')\n"
            "try:\n    m.fit(np.ones((4, 3)), np.zeros((4, 2)), batch_size=2, verbose=0)\n"
            "except ImportError as e:\n    print('fit', 'dp-accounting' in str(e), o.steps)\n")
    out = run_py(code, timeout=120)
    assert out.stdout.split() == ["ok", "True", "fit", "True", "0"], out.stderr
