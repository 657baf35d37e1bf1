"""pyaiml.keras losses: values and gradients against torch autograd (float64), the fused
softmax/sigmoid + cross-entropy path, activation ops, and label-mismatch errors.
Tolerance 1e-10 relative: float64 sums of a few dozen terms.
"""
import numpy as np
import pytest

import pyaiml.ops as ops
from pyaiml.keras import losses

torch = pytest.importorskip("torch")
F = torch.nn.functional
TOL = dict(rtol=1e-10, atol=1e-12)


def _t(a, grad=False):
    t = torch.tensor(np.asarray(a, dtype=np.float64))
    return t.requires_grad_(True) if grad else t


def _cmp(loss, y, p, tfn):
    val, g = loss.value_and_grad(y, p)
    tp = _t(p, True)
    tv = tfn(_t(y) if np.asarray(y).dtype.kind == "f" else torch.tensor(y), tp)
    tv.backward()
    np.testing.assert_allclose(val, tv.item(), **TOL)
    np.testing.assert_allclose(g, tp.grad.numpy(), **TOL)


def test_mse(rng):
    p, y = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    _cmp(losses.MeanSquaredError(), y, p, lambda y, p: F.mse_loss(p, y))


def test_categorical_from_logits(rng):
    z = rng.standard_normal((7, 5)) * 10
    y = rng.random((7, 5))
    y /= y.sum(1, keepdims=True)  # soft labels too
    _cmp(losses.CategoricalCrossentropy(from_logits=True), y, z, lambda y, z: F.cross_entropy(z, y))


def test_categorical_from_probs(rng):
    p = rng.random((7, 5)) + 0.05
    y = np.eye(5)[rng.integers(0, 5, 7)]
    _cmp(losses.CategoricalCrossentropy(), y, p,
         lambda y, p: -(y * torch.log((p / p.sum(1, keepdim=True)).clamp(1e-7, 1 - 1e-7))).sum(1).mean())


def test_categorical_over_time_steps(rng):
    # (batch, steps, classes): the loss is the mean over batch x steps rows, and so is the gradient's scale
    z = rng.standard_normal((3, 4, 5)) * 3
    y = np.eye(5)[rng.integers(0, 5, (3, 4))]
    _cmp(losses.CategoricalCrossentropy(from_logits=True), y, z,
         lambda y, z: F.cross_entropy(z.reshape(-1, 5), y.reshape(-1, 5)))
    p = rng.random((3, 4, 5)) + 0.05
    _cmp(losses.CategoricalCrossentropy(), y, p,
         lambda y, p: -(y * torch.log((p / p.sum(-1, keepdim=True)).clamp(1e-7, 1 - 1e-7))).sum(-1).mean())


def test_sparse_categorical(rng):
    z = rng.standard_normal((9, 4)) * 5
    ids = rng.integers(0, 4, 9)
    _cmp(losses.SparseCategoricalCrossentropy(from_logits=True), ids, z, lambda y, z: F.cross_entropy(z, y))
    p = F.softmax(_t(z), -1).numpy()
    _cmp(losses.SparseCategoricalCrossentropy(), ids, p,
         lambda y, p: F.nll_loss(torch.log((p / p.sum(1, keepdim=True)).clamp(1e-7, 1 - 1e-7)), y))


def test_binary(rng):
    z = rng.standard_normal((8, 3)) * 4
    y = rng.integers(0, 2, (8, 3)).astype(np.float64)
    _cmp(losses.BinaryCrossentropy(from_logits=True), y, z, lambda y, z: F.binary_cross_entropy_with_logits(z, y))
    p = 1 / (1 + np.exp(-z))
    _cmp(losses.BinaryCrossentropy(), y, p, lambda y, p: F.binary_cross_entropy(p, y))


def test_fused_softmax_matches_unfused(rng):
    z = rng.standard_normal((6, 10))
    y = np.eye(10)[rng.integers(0, 10, 6)]
    loss = losses.CategoricalCrossentropy()
    v1, g1 = loss.value_and_grad_logits(y, z)
    p = ops.softmax(z)
    v2, gp = loss.value_and_grad(y, p)
    np.testing.assert_allclose(v1, v2, rtol=1e-12)
    np.testing.assert_allclose(g1, ops.softmax_backward(gp, p), rtol=1e-9, atol=1e-12)


def test_logits_stable_for_huge_values():
    z = np.array([[1000.0, -1000.0, 0.0]], dtype=np.float32)
    v, g = losses.CategoricalCrossentropy(from_logits=True).value_and_grad(np.array([[0, 1.0, 0]], np.float32), z)
    assert np.isfinite(v) and np.isfinite(g).all() and abs(v - 2000) < 1e-3
    v, g = losses.BinaryCrossentropy(from_logits=True).value_and_grad(np.array([[1.0, 0, 1]], np.float32), z)
    assert np.isfinite(v) and np.isfinite(g).all()


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "softmax", "log_softmax", "gelu", "gelu_tanh"])
def test_activation_ops(rng, name):
    x = rng.standard_normal((5, 7)) * 6
    tx = _t(x, True)
    fwd = {"relu": (ops.relu, F.relu), "sigmoid": (ops.sigmoid, torch.sigmoid), "tanh": (ops.tanh, torch.tanh),
           "softmax": (ops.softmax, lambda t: F.softmax(t, -1)),
           "log_softmax": (ops.log_softmax, lambda t: F.log_softmax(t, -1)),
           "gelu": (ops.gelu, F.gelu),
           "gelu_tanh": (lambda a: ops.gelu(a, "tanh"), lambda t: F.gelu(t, approximate="tanh"))}[name]
    y = fwd[0](x)
    ty = fwd[1](tx)
    g = rng.standard_normal(x.shape)
    ty.backward(_t(g))
    bwd = {"relu": lambda: ops.relu_backward(g, x), "sigmoid": lambda: ops.sigmoid_backward(g, y),
           "tanh": lambda: ops.tanh_backward(g, y), "softmax": lambda: ops.softmax_backward(g, y),
           "log_softmax": lambda: ops.log_softmax_backward(g, y), "gelu": lambda: ops.gelu_backward(g, x),
           "gelu_tanh": lambda: ops.gelu_backward(g, x, "tanh")}[name]()
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(bwd, tx.grad.numpy(), rtol=1e-10, atol=1e-13)
    # float32 in, float32 out
    assert fwd[0](x.astype(np.float32)).dtype == np.float32


def test_activation_op_errors():
    with pytest.raises(TypeError, match="relu: x must have dtype float32 or float64"):
        ops.relu(np.arange(3))
    with pytest.raises(ValueError, match="softmax: dim must be in"):
        ops.softmax(np.zeros((2, 3)), dim=2)
    with pytest.raises(ValueError, match="approximate must be"):
        ops.gelu(np.zeros(3), "fast")
    assert np.all(np.isfinite(ops.sigmoid(np.array([-1e4, 1e4], np.float32))))


def test_label_mismatch_errors():
    with pytest.raises(ValueError, match="looks like integer class ids.*sparse_categorical_crossentropy"):
        losses.CategoricalCrossentropy().check_labels(np.zeros(5), (10,))
    with pytest.raises(ValueError, match="looks one-hot encoded.*loss='categorical_crossentropy'"):
        losses.SparseCategoricalCrossentropy().check_labels(np.zeros((5, 10)), (10,))
    with pytest.raises(ValueError, match=r"class ids must be in \[0, 10\)"):
        losses.SparseCategoricalCrossentropy().check_labels(np.array([1, 10]), (10,))
    with pytest.raises(ValueError, match="Unknown loss identifier 'crossentropy'.*categorical_crossentropy"):
        losses.get("crossentropy")


def test_relu_backward_in_place(rng):
    g = rng.standard_normal((4, 9)).astype(np.float32)
    y = np.maximum(rng.standard_normal((4, 9)).astype(np.float32), 0)
    want = ops.relu_backward(g, y)
    out = np.empty_like(g)
    assert ops.relu_backward(g, y, out=out) is out
    np.testing.assert_array_equal(out, want)
    g2 = g.copy()
    ops.relu_backward(g2, y, out=g2)
    np.testing.assert_array_equal(g2, want)
    with pytest.raises(ValueError, match="out must match"):
        ops.relu_backward(g, y, out=np.empty((4, 9), np.float64))
