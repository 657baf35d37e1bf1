"""The training step's fusion plan (pyaiml/keras/fusion.py: made at compile(), handed to the
layers as arguments) and its fused paths against torch autograd in float64: a max-pool after a
ReLU takes the ReLU's gradient through its window indices (the layer before skips its
ReLU mask), the first layer computes only its weight and bias gradients (the conv op's output_mask),
softmax + cross-entropy on the logits. Shapes are odd on purpose (pool 2 floors 7 -> 3, the
last row/column gets no gradient) and the data give exact zeros and all-negative windows.
"""
import numpy as np
import pytest

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
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    for l in model.layers:
        l._cast(np.float64)
    fused = model._fusion()
    assert fused
    with _NoFiniteChecks():
        for l in model.layers:
            l.zero_grad()
        out = model._forward(x, True, fused)
        val, g, _ = model._loss_and_pred(y, out, fused)
        model._backward(g)
    tx = torch.tensor(x)
    logits = _torch_forward(model, tx)
    loss = F.cross_entropy(logits, torch.tensor(y.argmax(-1)))
    loss.backward()
    np.testing.assert_allclose(out, logits.detach().numpy(), **TOL)
    assert abs(val - loss.item()) < 1e-9
    for l in model.layers:
        if hasattr(l, "_t"):
            np.testing.assert_allclose(l.grads["kernel"], l._t[0].grad.numpy(), **TOL)
            np.testing.assert_allclose(l.grads["bias"], l._t[1].grad.numpy(), **TOL)
    return model


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
    m = _check_step(m, x, y)
    pools = [l for l in m.layers if isinstance(l, L.MaxPooling2D)]
    assert all(p._gated and p._win is not None for p in pools)  # the fused path ran
    assert any((p._win == 255).any() for p in pools)  # and windows without gradient occurred


def test_speech_like_conv1d_gradients(rng):
    m = Sequential([L.Conv1D(6, 3, activation="relu", input_shape=(29, 1)), L.MaxPooling1D(2),
                    L.Conv1D(4, 3, activation="relu"), L.MaxPooling1D(2), L.Flatten(),
                    L.Dense(3, activation="softmax")])
    x, y = _data(rng, (29, 1))
    m = _check_step(m, x, y)
    assert all(l._gated for l in m.layers if isinstance(l, L.MaxPooling1D))


def test_pool_after_linear_conv_and_after_activation_layer(rng):
    # conv without activation -> pool: nothing to fuse (x may be negative)
    m = Sequential([L.Conv2D(3, (3, 3), input_shape=(11, 9, 2)), L.MaxPooling2D(2), L.Conv2D(4, (2, 2)),
                    L.Activation("relu"), L.MaxPooling2D(2), L.Flatten(), L.Dense(3, activation="softmax")])
    x, y = _data(rng, (11, 9, 2))
    m = _check_step(m, x, y)
    p1, p2 = [l for l in m.layers if isinstance(l, L.MaxPooling2D)]
    assert not p1._gated and p2._gated


def test_fused_step_outside_model_leaves_layers_unchanged(rng):
    """The fusion decisions reach a layer only as arguments of the model's calls: a layer used
    on its own after training still applies its own ReLU gradient."""
    m = Sequential([L.Conv2D(3, (3, 3), activation="relu", input_shape=(8, 8, 1)), L.MaxPooling2D(2), L.Flatten(),
                    L.Dense(3, activation="softmax")])
    x, y = _data(rng, (8, 8, 1))
    m = _check_step(m, x, y)
    conv = m.layers[0]
    assert m.fusion_plan.train[0].relu_grad_done  # inside the step the pool applied the ReLU gradient
    z = conv.forward(x, True)
    dy = rng.standard_normal(z.shape)
    conv.zero_grad()
    dx = conv.backward(dy.copy())
    tx = torch.tensor(x, requires_grad=True)
    k, b = torch.tensor(conv.kernel, requires_grad=True), torch.tensor(conv.bias, requires_grad=True)
    tz = F.relu(F.conv2d(tx.permute(0, 3, 1, 2), k, b)).permute(0, 2, 3, 1)
    tz.backward(torch.tensor(dy))
    np.testing.assert_allclose(dx, tx.grad.numpy(), **TOL)
    np.testing.assert_allclose(conv.grads["kernel"], k.grad.numpy(), **TOL)


def test_float32_training_matches_unfused_reference(rng):
    """One float32 fit step of the mission's CNN shape (batch 8) gives the same weights as
    the same step with the fusions switched off (the model's plain layer-by-layer path)."""
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
    # b: the same step without the pool/ReLU fusion (pools see training=False: no indices)
    with _NoFiniteChecks():
        for l in b.layers:
            l.zero_grad()
        out = b._forward(x, False, True)
        _, g, _ = b._loss_and_pred(y, out, True)
        b._backward(g)
        b.optimizer.apply(b._params())
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)


def test_fusion_plan_of_the_mission_cnn():
    """The plan is made at compile() and says, per layer, what the fused step shares."""
    from pyaiml.keras.fusion import UNFUSED, LayerFusion

    m = Sequential([L.Conv2D(4, (3, 3), activation="relu", input_shape=(12, 12, 3), name="c1"),
                    L.MaxPooling2D((2, 2), name="p1"), L.Conv2D(5, (3, 3), activation="relu", name="c2"),
                    L.MaxPooling2D((2, 2), name="p2"), L.Flatten(name="f"), L.Dense(8, activation="relu", name="d1"),
                    L.Dense(3, activation="softmax", name="out")])
    assert m.fusion_plan is None  # not compiled
    m.compile(optimizer="adam", loss="categorical_crossentropy")
    plan = m.fusion_plan
    assert plan.loss_fused and plan.names == ("c1", "p1", "c2", "p2", "f", "d1", "out")
    assert plan.train == (LayerFusion(relu_grad_done=True, dy_owned=True), LayerFusion(relu_input=True, dy_owned=True),
                          LayerFusion(relu_grad_done=True, dy_owned=True), LayerFusion(relu_input=True, dy_owned=True),
                          None, LayerFusion(dy_owned=True), LayerFusion(activation_in_loss=True, dy_owned=True))
    assert plan.evaluate[-1] == LayerFusion(activation_in_loss=True) and plan.evaluate[0] == UNFUSED
    assert plan.need_dx == (False, True, True, True, True, True, True)
    assert plan.describe() == [
        "c1: skips its ReLU mask (the max-pool after it applied it)", "c1: no input gradient (first layer)",
        "p1: takes the previous layer's ReLU gradient through its window indices",
        "c2: skips its ReLU mask (the max-pool after it applied it)",
        "p2: takes the previous layer's ReLU gradient through its window indices",
        "out: activation left to the loss (it takes the logits)"]
    assert plan.records(True, True) is plan.train and plan.records(False, True) is plan.evaluate
    assert plan.records(False, False) is None and not plan.records(True, False)[-1].activation_in_loss
    x = np.random.default_rng(0).standard_normal((2, 12, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(m(x, training=True).sum(axis=-1), 1, rtol=1e-5)  # softmax kept outside the step
    # from_logits, or a loss that does not pair with the last activation: nothing folded into the loss
    m.compile(optimizer="adam", loss="mse")
    assert not m.fusion_plan.loss_fused and not m.fusion_plan.train[-1].activation_in_loss
    # the plan follows the layers: a pool after a linear conv takes no ReLU gradient
    m2 = Sequential([L.Conv2D(3, (3, 3), input_shape=(9, 9, 1)), L.MaxPooling2D(2), L.Flatten(),
                     L.Dense(2, activation="softmax")])
    m2.compile(optimizer="sgd", loss="categorical_crossentropy")
    assert not m2.fusion_plan.train[1].relu_input and not m2.fusion_plan.train[0].relu_grad_done
    m2.pop()
    m2.add(L.Dense(2, activation="sigmoid"))
    assert not m2.fusion_plan.loss_fused  # re-planned for the new last layer


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
    m = Sequential([L.Dense(4, activation="relu", input_shape=(6,)), L.Dense(3, activation="softmax")])
    m.compile(optimizer="sgd", loss="categorical_crossentropy")
    x = rng.standard_normal((9, 6)).astype(np.float32)
    np.testing.assert_array_equal(m.predict(x, verbose=0), np.asarray(m(x)))
