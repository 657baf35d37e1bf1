"""pyaiml.keras Sequential API: the mission's two Keras samples with only their imports
changed, compile/fit/evaluate/predict/*_on_batch, callbacks, progress output, utilities,
and clear errors for bad input. Tiny random data: these check behaviour, not accuracy
(accuracy on real data: tests/test_keras_train.py).
"""
import io
import textwrap

import numpy as np
import pytest

import pyaiml
from pyaiml.keras import callbacks, layers as L, utils
from pyaiml.keras.models import NonFiniteLossError, Sequential

SAMPLE2 = """
from pyaiml.keras.models import Sequential
from pyaiml.keras.layers import Conv2D, MaxPooling2D, Flatten, Dense

model = Sequential()
model.add(Conv2D(32, (3, 3), activation='relu', input_shape=(32, 32, 3)))
model.add(MaxPooling2D((2, 2)))
model.add(Conv2D(64, (3, 3), activation='relu'))
model.add(MaxPooling2D((2, 2)))
model.add(Flatten())
model.add(Dense(10, activation='softmax'))

model.compile(optimizer='adam', loss='categorical_crossentropy', metrics=['accuracy'])

model.fit(X_train, y_train, epochs=10, batch_size=32)
"""

SAMPLE3 = """
import pyaiml as tf

model = tf.keras.Sequential([
    tf.keras.layers.Conv1D(filters=64, kernel_size=3, activation='relu', input_shape=(128, 1)),
    tf.keras.layers.MaxPooling1D(pool_size=2),
    tf.keras.layers.Conv1D(filters=64, kernel_size=3, activation='relu'),
    tf.keras.layers.MaxPooling1D(pool_size=2),
    tf.keras.layers.Flatten(),
    tf.keras.layers.Dense(10, activation='softmax')
])

model.compile(optimizer='adam', loss='categorical_crossentropy', metrics=['accuracy'])

model.fit(X_train, y_train, epochs=10, batch_size=32)
"""


def _onehot(rng, n, c=10):
    return utils.to_categorical(rng.integers(0, c, n), c)


def test_mission_sample_2_runs(rng, capsys):
    ns = {"X_train": rng.random((40, 32, 32, 3), dtype=np.float32), "y_train": _onehot(rng, 40)}
    exec(SAMPLE2, ns)
    model = ns["model"]
    assert [type(l).__name__ for l in model.layers] == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten",
                                                        "Dense"]
    assert model.count_params() == 896 + 18496 + 23050  # Keras's figures for this model
    assert len(model.history.history["loss"]) == 10
    out = capsys.readouterr().out
    assert out.count("\n") == 10 and "Epoch 10/10" in out  # one line per epoch: not a terminal


def test_mission_sample_3_runs(rng):
    ns = {"X_train": rng.standard_normal((40, 128, 1)).astype(np.float32), "y_train": _onehot(rng, 40)}
    exec(SAMPLE3, ns)
    model = ns["model"]
    assert model.output_shape == (10,)
    assert model.layers[2].output_shape == (61, 64)
    assert len(model.history.history["accuracy"]) == 10


def test_fit_evaluate_predict_shapes(rng):
    x = rng.standard_normal((50, 6)).astype(np.float32)
    y = rng.integers(0, 3, 50)
    m = Sequential([L.Input((6,)), L.Dense(8, activation="relu"), L.Dense(3, activation="softmax")])
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    h = m.fit(x, y, epochs=3, batch_size=16, verbose=0, validation_data=(x[:10], y[:10]))
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"} and h.epoch == [0, 1, 2]
    loss, acc = m.evaluate(x, y, verbose=0)
    p = m.predict(x, batch_size=7)
    assert p.shape == (50, 3) and p.dtype == np.float32
    # evaluate's figures are those of the predictions: mean cross-entropy and accuracy
    p64 = p.astype(np.float64)
    assert loss == pytest.approx(-np.mean(np.log(p64[np.arange(50), y])), rel=1e-4)
    assert acc == pytest.approx(np.mean(p.argmax(1) == y), abs=1e-7)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)
    np.testing.assert_allclose(m.predict_on_batch(x[:5]), p[:5], rtol=1e-6)
    r = m.train_on_batch(x[:16], y[:16], return_dict=True)
    assert set(r) == {"loss", "accuracy"}
    assert len(m.test_on_batch(x[:16], y[:16])) == 2
    # evaluate's loss equals the mean of the per-sample losses
    from pyaiml.keras.losses import SparseCategoricalCrossentropy
    want = SparseCategoricalCrossentropy()(y, m.predict(x))
    assert abs(m.evaluate(x, y, verbose=0)[0] - want) < 1e-5


def test_learns_xor_like_problem(rng):
    utils.set_random_seed(1)
    x = rng.standard_normal((400, 2)).astype(np.float32)
    y = ((x[:, 0] * x[:, 1]) > 0).astype(np.float32)
    m = Sequential([L.Dense(16, activation="tanh", input_shape=(2,)), L.Dense(1, activation="sigmoid")])
    m.compile(optimizer=pyaiml.keras.optimizers.Adam(0.05), loss="binary_crossentropy", metrics=["accuracy"])
    m.fit(x, y, epochs=25, batch_size=50, verbose=0)
    assert m.evaluate(x, y, verbose=0)[1] > 0.9


def test_summary_and_weights(rng, capsys):
    m = Sequential([L.Conv2D(4, 3, input_shape=(8, 8, 2)), L.BatchNormalization(), L.Flatten(), L.Dense(5)])
    m.summary()
    out = capsys.readouterr().out
    assert "conv2d" in out and "(None, 6, 6, 4)" in out and "Non-trainable params: 8" in out
    ws = m.get_weights()
    assert [w.shape for w in ws] == [(3, 3, 2, 4), (4,), (4,), (4,), (4,), (4,), (144, 5), (5,)]
    new = [rng.standard_normal(w.shape).astype(np.float32) for w in ws]
    m.set_weights(new)
    for a, b in zip(m.get_weights(), new):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="set_weights: the model has 8 weight arrays. Received 7"):
        m.set_weights(new[:-1])
    with pytest.raises(ValueError, match=r"weight 'kernel' must have shape \(3, 3, 2, 4\)"):
        m.set_weights([np.zeros((2, 2, 2, 4))] + new[1:])


def test_set_random_seed_repeats_runs(rng):
    x = rng.standard_normal((64, 5)).astype(np.float32)
    y = rng.integers(0, 2, 64)

    def run():
        utils.set_random_seed(42)
        m = Sequential([L.Dense(6, activation="relu", input_shape=(5,)), L.Dropout(0.3), L.Dense(2, activation="softmax")])
        m.compile("adam", "sparse_categorical_crossentropy")
        m.fit(x, y, epochs=2, batch_size=8, verbose=0)
        return m.get_weights()

    for a, b in zip(run(), run()):
        np.testing.assert_array_equal(a, b)


def test_to_categorical():
    np.testing.assert_array_equal(utils.to_categorical([0, 2, 1], 3), np.eye(3)[[0, 2, 1]])
    assert utils.to_categorical(np.array([[1], [0]])).shape == (2, 2)
    with pytest.raises(ValueError, match="does not fit num_classes=2"):
        utils.to_categorical([0, 2], 2)


def test_progress_tty_and_verbose(rng):
    x = rng.standard_normal((20, 3)).astype(np.float32)
    y = rng.standard_normal((20, 1)).astype(np.float32)
    m = Sequential([L.Dense(1, input_shape=(3,))])
    m.compile("sgd", "mse")

    class TTY(io.StringIO):
        def isatty(self):
            return True

    s = TTY()
    m.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[callbacks.ProgbarLogger(1, stream=s)])
    assert "\r" in s.getvalue() and "Epoch 2/2" in s.getvalue()
    s2 = io.StringIO()
    m.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[callbacks.ProgbarLogger(1, stream=s2)])
    assert "\r" not in s2.getvalue() and s2.getvalue().count("\n") == 3


def test_early_stopping_restores_best(rng):
    x = rng.standard_normal((30, 3)).astype(np.float32)
    y = rng.standard_normal((30, 1)).astype(np.float32)
    m = Sequential([L.Dense(1, input_shape=(3,))])
    m.compile(optimizer="sgd", loss="mse")
    seen = []
    # val_loss is made to rise after epoch 2 by a callback that records weights per epoch
    vals = iter([5.0, 3.0, 1.0, 2.0, 4.0, 6.0, 7.0, 8.0])

    class Fake(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = next(vals)
            seen.append(m.get_weights())

    es = callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    h = m.fit(x, y, epochs=8, verbose=0, callbacks=[Fake(), es])
    assert len(h.epoch) == 5 and es.stopped_epoch == 4 and es.best_epoch == 2
    for a, b in zip(m.get_weights(), seen[2]):
        np.testing.assert_array_equal(a, b)
    # restores also when training runs to the end without stopping
    vals = iter([3.0, 1.0, 2.0])
    seen.clear()
    es = callbacks.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)
    m.fit(x, y, epochs=3, verbose=0, callbacks=[Fake(), es])
    for a, b in zip(m.get_weights(), seen[1]):
        np.testing.assert_array_equal(a, b)


def test_lambda_callback_and_schedule(rng):
    x = rng.standard_normal((16, 3)).astype(np.float32)
    y = rng.standard_normal((16, 1)).astype(np.float32)
    from pyaiml.keras import optimizers

    m = Sequential([L.Dense(1, input_shape=(3,))])
    sched = optimizers.schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)
    m.compile(optimizer=optimizers.SGD(learning_rate=sched, momentum=0.9, nesterov=True), loss="mse")
    events = []
    cb = callbacks.LambdaCallback(on_epoch_end=lambda e, logs: events.append(("end", e)),
                                  on_train_batch_end=lambda b, logs: events.append(("batch", b)))
    m.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[cb])
    assert events == [("batch", 0), ("batch", 1), ("end", 0), ("batch", 0), ("batch", 1), ("end", 1)]
    assert m.optimizer.iterations == 4 and abs(m.optimizer.current_lr() - 0.025) < 1e-12


def test_import_as_tf():
    tf = pyaiml
    m = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))])
    assert m.output_shape == (2,)
    assert tf.keras.utils.to_categorical([1], 2).tolist() == [[0.0, 1.0]]


# ------------------------------------------------------------------ bad input
def _small():
    m = Sequential([L.Dense(4, activation="relu", input_shape=(5,)), L.Dense(3, activation="softmax")])
    m.compile("adam", "categorical_crossentropy", ["accuracy"])
    return m


def test_unknown_identifiers():
    m = _small()
    with pytest.raises(ValueError, match="Unknown optimizer identifier 'adamm'. Valid identifiers: adagrad, adam, adamw, nadam, rmsprop, sgd"):
        m.compile("adamm", "mse")
    with pytest.raises(ValueError, match="Unknown loss identifier 'cross'.*binary_crossentropy"):
        m.compile("adam", "cross")
    with pytest.raises(ValueError, match="Unknown metric identifier 'acuracy'.*accuracy"):
        m.compile("adam", "mse", ["acuracy"])
    with pytest.raises(ValueError, match="Unknown initializer identifier 'glorot'.*glorot_uniform"):
        L.Dense(3, kernel_initializer="glorot")


def test_label_errors(rng):
    m = _small()
    x = rng.standard_normal((10, 5)).astype(np.float32)
    with pytest.raises(ValueError, match="looks like integer class ids.*sparse_categorical_crossentropy"):
        m.fit(x, rng.integers(0, 3, 10), verbose=0)
    m.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="looks one-hot encoded"):
        m.fit(x, utils.to_categorical(rng.integers(0, 3, 10), 3), verbose=0)
    with pytest.raises(ValueError, match="x and y must have the same number of samples. Received x with 10 samples "
                                         "and y with 9"):
        m.fit(x, rng.integers(0, 3, 9), verbose=0)


def test_input_shape_errors(rng):
    m = _small()
    with pytest.raises(ValueError, match=r"Input of shape \(None, 6\) does not fit the model: its first layer 'dense.*"
                                         r"expects \(None, 5\)"):
        m.predict(np.zeros((2, 6), np.float32))
    c = Sequential([L.Conv2D(2, 3, input_shape=(8, 8, 1))])
    with pytest.raises(ValueError, match=r"does not fit the model.*expects \(None, 8, 8, 1\)"):
        c.predict(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="x contains NaN"):
        m.predict(np.full((2, 5), np.nan, np.float32))
    with pytest.raises(RuntimeError, match="call model.compile"):
        Sequential([L.Dense(1, input_shape=(2,))]).fit(np.zeros((2, 2)), np.zeros(2))


def test_nan_loss_names_epoch_and_batch(rng):
    x = rng.standard_normal((64, 5)).astype(np.float32)
    y = rng.standard_normal((64, 1)).astype(np.float32)
    y[40] = np.inf  # batch 3 of 16 in epoch 1 (no shuffling)
    m = Sequential([L.Dense(1, input_shape=(5,))])
    m.compile("sgd", "mse")
    with pytest.raises(NonFiniteLossError, match=r"the loss became (nan|inf) at epoch 1, batch 3 \(of 4\)"):
        m.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    # a diverging learning rate is caught in a later epoch
    m2 = Sequential([L.Dense(1, input_shape=(5,))])
    m2.compile(optimizer=pyaiml.keras.optimizers.SGD(1e4), loss="mse")
    with pytest.raises(NonFiniteLossError, match=r"at epoch \d+, batch \d+"), np.errstate(all="ignore"):
        m2.fit(x * 100, np.ones((64, 1), np.float32), batch_size=16, epochs=50, verbose=0)


def test_source_compiles():
    for s in (SAMPLE2, SAMPLE3):
        compile(textwrap.dedent(s), "sample", "exec")
