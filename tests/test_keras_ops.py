"""Tests of ``pyaiml.keras.ops`` (pyaiml/keras/ops.py): Keras 3 names and arguments.

What they are: eager results on NumPy inputs against NumPy (arrays in, arrays out),
gradients through the tape against torch autograd in float64 for the ops keras.io
examples use (arithmetic, matmul, shapes, reductions, activations, where, the
cross-entropies that return one value per sample, attention in Keras's layout), and the
errors. The symbolic (functional API) path is tested in tests/test_keras_functional.py;
each primitive's gradient in tests/test_keras_tape.py.
Run: PYTHONPATH=$PWD python -m pytest -q tests/test_keras_ops.py
"""
import numpy as np
import pytest

from pyaiml import keras
from pyaiml.autograd import GradientTape, Tensor
from pyaiml.keras import ops

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def R(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def gradcheck(ours, theirs, *inputs, seed=1):
    ts = [Tensor(np.array(x), True) for x in inputs]
    with GradientTape() as tape:
        out = ours(*ts)
    c = np.random.default_rng(seed).standard_normal(out.shape)
    grads = tape.gradient(out, ts, output_gradients=c)
    tt = [torch.tensor(np.array(x), requires_grad=True) for x in inputs]
    tout = theirs(*tt)
    np.testing.assert_allclose(out.value, tout.detach().numpy(), rtol=1e-9, atol=1e-11)
    tout.backward(torch.tensor(c))
    for g, t in zip(grads, tt):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-8, atol=1e-10)


def test_exported_as_keras_ops():
    assert keras.ops is ops
    for name in ("add", "subtract", "multiply", "divide", "matmul", "reshape", "transpose", "concatenate", "stack",
                 "split", "mean", "sum", "max", "exp", "log", "sqrt", "softmax", "relu", "gelu", "sigmoid", "tanh",
                 "where", "one_hot", "arange", "convert_to_tensor"):
        assert name in ops.__all__, name


def test_eager_on_arrays_returns_arrays():
    a, b = R(3, 4), R(4, 2, seed=2)
    for got, want in [
        (ops.add(a, 1.0), a + 1), (ops.subtract(a, a), np.zeros_like(a)), (ops.multiply(a, 2), a * 2),
        (ops.divide(a, 2.0), a / 2), (ops.matmul(a, b), a @ b), (ops.reshape(a, (2, 6)), a.reshape(2, 6)),
        (ops.transpose(a), a.T), (ops.concatenate([a, a], axis=1), np.concatenate([a, a], 1)),
        (ops.stack([a, a]), np.stack([a, a])), (ops.mean(a, axis=0), a.mean(0)), (ops.sum(a), a.sum()),
        (ops.max(a, axis=-1, keepdims=True), a.max(-1, keepdims=True)), (ops.exp(a), np.exp(a)),
        (ops.log(np.abs(a)), np.log(np.abs(a))), (ops.sqrt(np.abs(a)), np.sqrt(np.abs(a))),
        (ops.relu(a), np.maximum(a, 0)), (ops.sigmoid(a), 1 / (1 + np.exp(-a))), (ops.tanh(a), np.tanh(a)),
        (ops.softmax(a), np.exp(a) / np.exp(a).sum(-1, keepdims=True)),
        (ops.where(a > 0, a, 0.0), np.where(a > 0, a, 0.0)), (ops.arange(5), np.arange(5)),
        (ops.arange(1, 7, 2, dtype="float32"), np.arange(1, 7, 2, dtype=np.float32)),
        (ops.convert_to_tensor([1, 2], dtype="float32"), np.array([1, 2], np.float32)),
        (ops.expand_dims(a, 0), a[None]), (ops.squeeze(a[None]), a),
    ]:
        assert type(got) is np.ndarray
        np.testing.assert_allclose(got, want, rtol=1e-12)
    parts = ops.split(a, 2, axis=1)
    assert isinstance(parts, list) and len(parts) == 2 and parts[1].shape == (3, 2)
    np.testing.assert_array_equal(ops.one_hot(np.array([1, 0, 2]), 3), np.eye(3)[[1, 0, 2]])
    assert ops.one_hot(np.array([1]), 4).dtype == np.float32
    assert ops.shape(a) == (3, 4)


def test_gelu_default_is_keras_tanh_approximation():
    x = R(5)
    np.testing.assert_allclose(ops.gelu(x), TF.gelu(torch.tensor(x), approximate="tanh").numpy(), rtol=1e-12)
    np.testing.assert_allclose(ops.gelu(x, approximate=False), TF.gelu(torch.tensor(x)).numpy(), rtol=1e-12)


def test_gradients_of_a_small_block_against_torch():
    def ours(x, w, b, g):
        h = ops.gelu(ops.matmul(x, w) + b)
        h = ops.concatenate([h, ops.tanh(h) * g], axis=-1)
        h = ops.reshape(ops.transpose(h, (1, 0, 2)), (3, -1))
        return ops.softmax(ops.sqrt(ops.exp(h) + 1.0) - ops.mean(h, axis=0, keepdims=True))

    def theirs(x, w, b, g):
        h = TF.gelu(x @ w + b, approximate="tanh")
        h = torch.cat([h, torch.tanh(h) * g], -1)
        h = h.permute(1, 0, 2).reshape(3, -1)
        return torch.softmax(torch.sqrt(torch.exp(h) + 1.0) - h.mean(0, keepdim=True), -1)
    gradcheck(ours, theirs, R(2, 3, 4), R(4, 5, seed=2), R(5, seed=3), R(5, seed=4))


def test_split_stack_where_max_gradients():
    def ours(x):
        a, b = ops.split(x, 2, axis=1)
        s = ops.stack([a, b * 2], axis=0)
        return ops.where(s > 0, s, ops.exp(s) - 1) + ops.max(x, axis=1, keepdims=True)

    def theirs(x):
        a, b = torch.split(x, 2, 1)
        s = torch.stack([a, b * 2], 0)
        return torch.where(s > 0, s, torch.exp(s) - 1) + x.amax(1, keepdim=True)
    gradcheck(ours, theirs, R(3, 4))


@pytest.mark.parametrize("from_logits", [True, False])
def test_cross_entropies_per_sample(from_logits):
    z = R(6, 4)
    ids = np.array([0, 3, 1, 1, 2, 0])
    y = np.eye(4)[ids]

    def prep(t):
        return t if from_logits else torch.softmax(t, -1)

    gradcheck(lambda a: ops.sparse_categorical_crossentropy(ids, a if from_logits else ops.softmax(a), from_logits),
              lambda a: TF.cross_entropy(a, torch.tensor(ids), reduction="none"), z)
    gradcheck(lambda a: ops.categorical_crossentropy(y, a if from_logits else ops.softmax(a), from_logits),
              lambda a: TF.cross_entropy(a, torch.tensor(y), reduction="none"), z)
    t = (R(6, 4, seed=5) > 0).astype(np.float64)
    gradcheck(lambda a: ops.binary_crossentropy(t, a if from_logits else ops.sigmoid(a), from_logits),
              lambda a: TF.binary_cross_entropy_with_logits(a, torch.tensor(t), reduction="none"), z)
    del prep


def test_dot_product_attention_keras_layout():
    q, k, v = R(2, 5, 3, 4), R(2, 6, 3, 4, seed=2), R(2, 6, 3, 4, seed=3)
    gradcheck(lambda a, b, c: ops.dot_product_attention(a, b, c),
              lambda a, b, c: TF.scaled_dot_product_attention(a.transpose(1, 2), b.transpose(1, 2),
                                                              c.transpose(1, 2)).transpose(1, 2), q, k, v)


def test_take_pad_tile_repeat_and_clip():
    gradcheck(lambda a: ops.take(a, np.array([[2, 0], [1, 1]]), axis=0), lambda a: a[torch.tensor([[2, 0], [1, 1]])],
              R(3, 4))
    gradcheck(lambda a: ops.pad(a, [[1, 0], [0, 2]]), lambda a: TF.pad(a, (0, 2, 1, 0)), R(3, 4))
    gradcheck(lambda a: ops.tile(a, (2, 1)) * ops.clip(ops.repeat(a, 2, axis=0), -0.5, 0.5),
              lambda a: a.repeat(2, 1) * torch.clamp(a.repeat_interleave(2, 0), -0.5, 0.5), R(3, 4))


def test_variables_and_python_operators_in_ops():
    w = keras.Variable(R(3, 2))
    x = R(4, 3, seed=2)
    with GradientTape() as tape:
        loss = ops.mean(ops.square(x @ w - 1.0))
    g = tape.gradient(loss, w)
    tw = torch.tensor(w.value, requires_grad=True)
    ((torch.tensor(x) @ tw - 1.0) ** 2).mean().backward()
    np.testing.assert_allclose(g, tw.grad.numpy(), rtol=1e-10)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="pad: only mode='constant'"):
        ops.pad(np.ones(3), [[1, 1]], mode="reflect")
    with pytest.raises(ValueError, match="where: give both x1 and x2"):
        ops.where(np.ones(3) > 0, 1.0)
    with pytest.raises(ValueError, match="cannot be split into 2 equal parts"):
        ops.split(np.ones((3, 3)), 2, axis=0)
