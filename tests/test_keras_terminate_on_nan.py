"""keras.callbacks.TerminateOnNaN (pyaiml/keras/callbacks.py).

What it checks: a NaN or infinite batch loss in the logs sets model.stop_training and says
so; a finite one, or logs without a loss, leave it alone; driven through CallbackList as
fit drives it; and fit with the callback stops at a non-finite loss where without it fit raises
(tests/test_keras_api.py has that).
Run: PYTHONPATH=$PWD python -m pytest -q tests/test_keras_terminate_on_nan.py
"""
import numpy as np
import pytest

from pyaiml import keras
from pyaiml.keras import callbacks, layers


def _model():
    m = keras.Sequential([keras.Input((3,)), layers.Dense(1)])
    m.compile(optimizer="sgd", loss="mse")
    return m


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), np.float32("nan")])
def test_non_finite_loss_stops_training(bad, capsys):
    m = _model()
    m.stop_training = False
    cl = callbacks.CallbackList([callbacks.TerminateOnNaN()], m, {})
    cl.on_train_batch_end(0, {"loss": 0.5})
    assert m.stop_training is False
    cl.on_train_batch_end(4, {"loss": bad})
    assert m.stop_training is True
    assert "Batch 4: Invalid loss, terminating training" in capsys.readouterr().out


def test_finite_or_missing_loss_keeps_training(capsys):
    m = _model()
    m.stop_training = False
    cb = callbacks.TerminateOnNaN()
    cb.set_model(m)
    for logs in ({"loss": 1e30}, {"accuracy": float("nan")}, {}, None):
        cb.on_train_batch_end(1, logs)
    assert m.stop_training is False and capsys.readouterr().out == ""


def test_accepted_by_fit():
    m = _model()
    x = np.random.default_rng(0).standard_normal((32, 3)).astype("float32")
    h = m.fit(x, x[:, :1], epochs=3, batch_size=8, callbacks=[callbacks.TerminateOnNaN()], verbose=0)
    assert len(h.history["loss"]) == 3 and np.isfinite(h.history["loss"]).all()


def _functional():
    inp = keras.Input((3,))
    m = keras.Model(inp, layers.Dense(1)(inp))
    m.compile(optimizer="sgd", loss="mse")
    return m


@pytest.mark.parametrize("make", [_model, _functional], ids=["sequential", "functional"])
def test_fit_stops_on_a_non_finite_loss_with_the_callback_and_raises_without(make, capsys):
    x = np.random.default_rng(1).standard_normal((64, 3)).astype("float32")
    y = 3.0 * x[:, :1]
    m = make()
    before = [w.copy() for w in m.get_weights()]
    sgd = keras.optimizers.SGD(learning_rate=1e20)  # diverges: the float32 weights overflow within a few steps
    m.compile(optimizer=sgd, loss="mse")
    with pytest.raises(FloatingPointError, match="the loss became"):
        m.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0)
    m = make()
    m.set_weights(before)
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=1e20), loss="mse")
    h = m.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0, callbacks=[callbacks.TerminateOnNaN()])
    assert "Invalid loss, terminating training" in capsys.readouterr().out
    assert m.stop_training is True
    assert len(h.history["loss"]) <= 1  # stopped inside the first epoch
