"""The tape's fusion pass (pyaiml/autograd/fusion.py) and its fused paths against torch
autograd in float64: a max-pool after a conv with a fused ReLU takes the ReLU's gradient
through its window indices (the conv skips its ReLU mask) only when the pool is the conv's
only reader; an input that needs no gradient is not given one (the conv op's output_mask);
softmax + cross-entropy on the logits. Shapes are odd on purpose (pool 2 floors 7 -> 3, the
last row/column gets no gradient) and the data give exact zeros and all-negative windows.
"""
import numpy as np
import pytest

from pyaiml.autograd import GradientTape, fusion
from pyaiml.autograd import functional as AF
from pyaiml.keras import layers as L
from pyaiml.keras.models import Sequential, _NoFiniteChecks

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL = dict(rtol=1e-9, atol=1e-10)


def _torch_forward(model, tx):
    """The model's computation written with torch.nn.functional on its own weights."""
    h = tx
    for l in model.layers:
        if isinstance(l, L._Conv):
            k = torch.tensor(l.kernel, requires_grad=True)
            b = torch.tensor(l.bias, requires_grad=True)
            l._t = (k, b)
            if l.rank == 2:
                h = F.conv2d(h.permute(0, 3, 1, 2), k, b).permute(0, 2, 3, 1)
            else:
                h = F.conv1d(h.permute(0, 2, 1), k, b).permute(0, 2, 1)
            h = F.relu(h) if l.activation.name == "relu" else h
        elif isinstance(l, L.Activation):
            h = F.relu(h)
        elif isinstance(l, L.MaxPooling2D):
            h = F.max_pool2d(h.permute(0, 3, 1, 2), l.pool_size).permute(0, 2, 3, 1)
        elif isinstance(l, L.MaxPooling1D):
            h = F.max_pool1d(h.permute(0, 2, 1), l.pool_size[0]).permute(0, 2, 1)
        elif isinstance(l, L.Flatten):
            h = h.reshape(h.shape[0], -1)
        elif isinstance(l, L.Dense):
            k = torch.tensor(l.kernel, requires_grad=True)
            b = torch.tensor(l.bias, requires_grad=True)
            l._t = (k, b)
            h = h @ k + b
        else:
            raise AssertionError(type(l))
    return h  # logits (softmax fused into the loss)


def _check_step(model, x, y):
    """One recorded training step of ``model`` in float64 against torch; returns the pass's
    report on it."""
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    for l in model.layers:
        l._cast(np.float64)
    with _NoFiniteChecks():
        tape, loss, val, _ = model._recorded_loss(x, y)
        out = model._forward(x)  # the probabilities, for the comparison
        report = fusion.run(tape._nodes, (loss,), report=True)
        grads = dict(zip(map(id, model._train_vars()), tape.gradient(loss, model._train_vars())))
    tx = torch.tensor(x)
    logits = _torch_forward(model, tx)
    tl = F.cross_entropy(logits, torch.tensor(y.argmax(-1)))
    tl.backward()
    np.testing.assert_allclose(np.asarray(getattr(out, "value", out)).sum(-1), 1, rtol=1e-12)
    assert abs(val - tl.item()) < 1e-9
    for l in model.layers:
        if hasattr(l, "_t"):
            np.testing.assert_allclose(grads[id(l._var("kernel"))], l._t[0].grad.numpy(), **TOL)
            np.testing.assert_allclose(grads[id(l._var("bias"))], l._t[1].grad.numpy(), **TOL)
    return report


def _data(rng, shape, n=4):
    x = rng.integers(-3, 4, (n,) + shape).astype(np.float64) / 2  # ties and exact zeros
    y = np.eye(3)[rng.integers(0, 3, n)]
    return x, y


@pytest.mark.parametrize("shape", [(11, 13, 2), (10, 10, 3)])
def test_mission_like_cnn_gradients(rng, shape):
    m = Sequential([L.Conv2D(4, (3, 3), activation="relu", input_shape=shape), L.MaxPooling2D((2, 2)),
                    L.Conv2D(5, (3, 3), activation="relu"), L.MaxPooling2D((2, 2)), L.Flatten(),
                    L.Dense(3, activation="softmax")])
    x, y = _data(rng, shape)
    r = _check_step(m, x, y)
    assert r.rules() == ["relu_into_pool", "no_input_gradient", "relu_into_pool", "softmax_into_loss"]


def test_speech_like_conv1d_gradients(rng):
    m = Sequential([L.Conv1D(6, 3, activation="relu", input_shape=(29, 1)), L.MaxPooling1D(2),
                    L.Conv1D(4, 3, activation="relu"), L.MaxPooling1D(2), L.Flatten(),
                    L.Dense(3, activation="softmax")])
    x, y = _data(rng, (29, 1))
    assert _check_step(m, x, y).rules().count("relu_into_pool") == 2


def test_pool_after_linear_conv_and_after_activation_layer(rng):
    # conv without activation -> pool: nothing to fuse (x may be negative); a separate
    # Activation('relu') layer is its own op, so the conv before it offers nothing either
    m = Sequential([L.Conv2D(3, (3, 3), input_shape=(11, 9, 2)), L.MaxPooling2D(2), L.Conv2D(4, (2, 2)),
                    L.Activation("relu"), L.MaxPooling2D(2), L.Flatten(), L.Dense(3, activation="softmax")])
    x, y = _data(rng, (11, 9, 2))
    assert "relu_into_pool" not in _check_step(m, x, y).rules()


def _conv_relu(rng):
    x = rng.integers(-3, 4, (2, 7, 7, 2)).astype(np.float64) / 2
    w = rng.standard_normal((3, 2, 3, 3))
    b = rng.standard_normal(3) * 0.1
    return x, w, b


def _torch_conv_relu(x, w, b):
    tw, tb = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
    z = F.relu(F.conv2d(torch.tensor(x).permute(0, 3, 1, 2), tw, tb))
    return z, tw, tb


def test_a_second_reader_keeps_the_relu_mask(rng):
    """A conv + ReLU read by a max pool and by a second op whose gradient is not zero where
    the ReLU is off (a scaled sum, as a residual branch): the pool's gate covers only its own
    path, so the conv keeps its mask; gradients against torch."""
    x, w, b = _conv_relu(rng)
    with GradientTape() as tape:
        tw, tb = tape.watch(w), tape.watch(b)
        z = AF.conv(x, tw, tb, data_format="NHWC", activation="relu")
        loss = AF.add(AF.sum(AF.multiply(AF.max_pool(z, (2, 2), (2, 2)), 1.5)), AF.sum(AF.multiply(z, 0.7)))
    r = fusion.run(tape._nodes, (loss,), report=True)
    assert "relu_into_pool" not in r.rules()
    gw, gb = tape.gradient(loss, [tw, tb])
    tz, tw_, tb_ = _torch_conv_relu(x, w, b)
    ((F.max_pool2d(tz, 2) * 1.5).sum() + (tz * 0.7).sum()).backward()
    np.testing.assert_allclose(gw, tw_.grad.numpy(), **TOL)
    np.testing.assert_allclose(gb, tb_.grad.numpy(), **TOL)


def test_a_gradient_seeded_at_the_conv_output_keeps_the_mask(rng):
    x, w, b = _conv_relu(rng)
    with GradientTape(persistent=True) as tape:
        tw = tape.watch(w)
        z = AF.conv(x, tw, b, data_format="NHWC", activation="relu")
        AF.max_pool(z, (2, 2), (2, 2))  # a reader that offers the gate
    dz = rng.standard_normal(z.shape)
    assert fusion.run(tape._nodes, (z,), report=True).rules() == ["no_input_gradient"]
    gw = tape.gradient(z, tw, output_gradients=dz)
    tz, tw_, _ = _torch_conv_relu(x, w, b)
    tz.permute(0, 2, 3, 1).backward(torch.tensor(dz))
    np.testing.assert_allclose(gw, tw_.grad.numpy(), **TOL)


def test_pool_as_only_reader_fuses_and_matches_unfused(rng):
    x, w, b = _conv_relu(rng)

    def grads():
        with GradientTape() as tape:
            tw, tb = tape.watch(w), tape.watch(b)
            z = AF.conv(x, tw, tb, data_format="NHWC", activation="relu")
            loss = AF.sum(AF.multiply(AF.max_pool(z, (2, 2), (2, 2)), np.arange(1.0, 4.0)))
        rules = fusion.run(tape._nodes, (loss,), report=True).rules()
        return rules, tape.gradient(loss, [tw, tb])

    rules, fused = grads()
    assert rules == ["relu_into_pool", "no_input_gradient"]
    with fusion.disabled():
        rules_off, plain = grads()
    assert rules_off == ["no_input_gradient"]
    for a, c in zip(fused, plain):
        np.testing.assert_allclose(a, c, **TOL)


def test_float32_training_matches_the_step_without_the_pass(rng):
    """One float32 step of the mission's CNN shape (batch 8) gives the same weights with and
    without the pass's fusions."""
    def make():
        from pyaiml.keras import utils
        utils.set_random_seed(3)
        mm = Sequential([L.Conv2D(8, (3, 3), activation="relu", input_shape=(16, 16, 3)), L.MaxPooling2D((2, 2)),
                         L.Conv2D(8, (3, 3), activation="relu"), L.MaxPooling2D((2, 2)), L.Flatten(),
                         L.Dense(10, activation="softmax")])
        mm.compile(optimizer="adam", loss="categorical_crossentropy")
        return mm

    x = rng.standard_normal((8, 16, 16, 3)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 8)]
    a, b = make(), make()
    a.train_on_batch(x, y)
    with fusion.disabled():
        b.train_on_batch(x, y)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)


def test_fusion_plan_of_the_mission_cnn():
    """model.fusion_plan: the pass's decisions on a traced step, which leaves the model as it was."""
    m = Sequential([L.Conv2D(4, (3, 3), activation="relu", input_shape=(12, 12, 3), name="c1"),
                    L.MaxPooling2D((2, 2), name="p1"), L.Conv2D(5, (3, 3), activation="relu", name="c2"),
                    L.MaxPooling2D((2, 2), name="p2"), L.Flatten(name="f"), L.BatchNormalization(name="bn"),
                    L.Dropout(0.5, name="drop"), L.Dense(8, activation="relu", name="d1"),
                    L.Dense(3, activation="softmax", name="out")])
    assert m.fusion_plan is None  # not compiled
    m.compile(optimizer="adam", loss="categorical_crossentropy")
    before = [w.copy() for w in m.get_weights()]
    from pyaiml.keras._common import rng as krng
    state = krng().bit_generator.state
    plan = m.fusion_plan
    assert plan.rules() == ["relu_into_pool", "no_input_gradient", "relu_into_pool", "softmax_into_loss"]
    assert plan.describe()[0].startswith("relu_into_pool: #0 conv (its 1 max pool(s)")
    assert m.fusion_plan is plan  # kept while the layers stay
    for a, c in zip(before, m.get_weights()):  # no update; moving statistics restored
        np.testing.assert_array_equal(a, c)
    assert krng().bit_generator.state == state  # the dropout generator too
    # a loss that does not pair with the last activation: nothing folded into the loss
    m.compile(optimizer="adam", loss="mse")
    assert "softmax_into_loss" not in m.fusion_plan.rules()
    # the plan follows the layers: a pool after a linear conv takes no ReLU gradient
    m2 = Sequential([L.Conv2D(3, (3, 3), input_shape=(9, 9, 1)), L.MaxPooling2D(2), L.Flatten(),
                     L.Dense(2, activation="softmax")])
    m2.compile(optimizer="sgd", loss="categorical_crossentropy")
    assert m2.fusion_plan.rules() == ["no_input_gradient", "softmax_into_loss"]
    m2.pop()
    m2.add(L.Dense(2, activation="sigmoid"))
    m2._build(m2._input_shape)
    assert m2.fusion_plan.rules() == ["no_input_gradient"]  # re-traced for the new last layer


def test_fusion_plan_leaves_a_stateful_recurrent_model_as_it_was(rng):
    from pyaiml import keras

    m = Sequential([keras.Input((5, 3), batch_size=4), keras.layers.LSTM(6, stateful=True),
                    L.Dense(2, activation="softmax")])
    m.compile(optimizer="adam", loss="categorical_crossentropy")
    x = rng.standard_normal((4, 5, 3)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[[0, 1, 1, 0]]
    m.train_on_batch(x, y)
    kept = [s.copy() for s in m.layers[0].states]
    assert m.fusion_plan.rules()[-1] == "softmax_into_loss"  # traced on one sample
    for a, b in zip(kept, m.layers[0].states):
        np.testing.assert_array_equal(a, b)
    m.train_on_batch(x, y)  # the batch-4 states still fit


def test_lean_dense_inside_the_model_loops_gives_the_ops_bits(rng):
    """With the NaN/inf checks off (as fit/evaluate/predict run), Dense calls the registry's
    GEMM directly: the same bits as the checked path through ops.linear, for 2-D and 3-D
    inputs."""
    from pyaiml import ops

    d = L.Dense(7, activation="softmax")
    for shape in ((5, 11), (2, 3, 11)):
        x = rng.standard_normal(shape).astype(np.float32)
        d.built = False
        d.build(shape)
        checked = d.forward(x)
        with ops.finite_checks(False):
            lean = d.forward(x)
        np.testing.assert_array_equal(lean, checked)
    from pyaiml.keras import activations as A

    z = rng.standard_normal((7, 10)).astype(np.float32) * 5
    with ops.finite_checks(False):  # the lean softmax of the inference path: ops.softmax's bits
        np.testing.assert_array_equal(A.softmax.forward(z), ops.softmax(z, -1))
    m = Sequential([L.Dense(4, activation="relu", input_shape=(6,)), L.Dense(3, activation="softmax")])
    m.compile(optimizer="sgd", loss="categorical_crossentropy")
    x = rng.standard_normal((9, 6)).astype(np.float32)
    np.testing.assert_array_equal(m.predict(x, verbose=0), np.asarray(m(x)))
