"""Tests of the tape (pyaiml/autograd): every differentiable primitive against torch
autograd in float64, and the tape's own rules.

What they are: for each op in pyaiml.autograd.functional, the value and the gradient of
<output, c> (c a random cotangent) with respect to every input, compared with torch on the
same float64 inputs (tolerance 1e-9 relative: both sides are float64 and compute the same
formulas; the reductions' summation order differs). Then the tape semantics: gradients of
a value used twice add up, unconnected sources give None, sources given as the arrays
behind Variables, persistent tapes, nested tapes, eager ops off the tape return arrays,
and the TypeError a NumPy function on a tape value raises. What they are not: layer or
model tests (tests/test_keras_subclass.py, tests/test_keras_functional.py).
Run: PYTHONPATH=$PWD python -m pytest -q tests/test_keras_tape.py
"""
import numpy as np
import pytest

from pyaiml.autograd import GradientTape, Tensor, Variable, calling
from pyaiml.autograd import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

RTOL, ATOL = 1e-9, 1e-11


def _rng(seed=0):
    return np.random.default_rng(seed)


def gradcheck(ours, theirs, *inputs, seed=1, diff=None):
    """Compare ours(*Tensors) with theirs(*torch tensors): value and input gradients."""
    diff = diff if diff is not None else [np.asarray(x).dtype.kind == "f" for x in inputs]
    ts = [Tensor(np.array(x), True) if d else np.array(x) for x, d in zip(inputs, diff)]
    with GradientTape() as tape:
        out = ours(*ts)
    assert isinstance(out, Tensor), "the op did not record"
    c = _rng(seed).standard_normal(out.shape)
    grads = tape.gradient(out, [t for t in ts if isinstance(t, Tensor)], output_gradients=c)
    tt = [torch.tensor(np.array(x), requires_grad=bool(d)) if d else torch.tensor(np.array(x))
          for x, d in zip(inputs, diff)]
    tout = theirs(*tt)
    np.testing.assert_allclose(out.value, tout.detach().numpy(), rtol=RTOL, atol=ATOL)
    tout.backward(torch.tensor(c))
    k = 0
    for t, d in zip(tt, diff):
        if d:
            np.testing.assert_allclose(grads[k], t.grad.numpy(), rtol=1e-8, atol=1e-10)
            k += 1


def R(*shape, seed=0, pos=False):
    a = _rng(seed).standard_normal(shape)
    return np.abs(a) + 0.5 if pos else a


# ---------------------------------------------------------------- elementwise
BINARY = [
    ("add", F.add, torch.add), ("subtract", F.subtract, torch.sub), ("multiply", F.multiply, torch.mul),
    ("divide", F.divide, torch.div), ("maximum", F.maximum, torch.maximum), ("minimum", F.minimum, torch.minimum),
]


@pytest.mark.parametrize("name,ours,theirs", BINARY, ids=[b[0] for b in BINARY])
@pytest.mark.parametrize("sa,sb", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 5)), ((), (3, 2))])
def test_binary_broadcasting(name, ours, theirs, sa, sb):
    gradcheck(ours, theirs, R(*sa, seed=1, pos=name == "divide"), R(*sb, seed=2, pos=name == "divide"))


def test_power_both_ways():
    gradcheck(F.power, torch.pow, R(3, 4, pos=True), R(3, 4, seed=3))
    gradcheck(lambda a: F.power(a, 3.0), lambda a: torch.pow(a, 3.0), R(3, 4))
    gradcheck(lambda a: a ** 2 + 1.0 / a - 3 * a, lambda a: a ** 2 + 1.0 / a - 3 * a, R(5, pos=True))


UNARY = [
    ("exp", F.exp, torch.exp, False), ("log", F.log, torch.log, True), ("log1p", F.log1p, torch.log1p, True),
    ("sqrt", F.sqrt, torch.sqrt, True), ("rsqrt", F.rsqrt, torch.rsqrt, True), ("square", F.square, torch.square, False),
    ("abs", F.abs, torch.abs, False), ("sin", F.sin, torch.sin, False), ("cos", F.cos, torch.cos, False),
    ("negative", F.negative, torch.neg, False), ("softplus", F.softplus, TF.softplus, False),
    ("silu", F.silu, TF.silu, False), ("relu", F.relu, torch.relu, False), ("sigmoid", F.sigmoid, torch.sigmoid, False),
    ("tanh", F.tanh, torch.tanh, False), ("gelu", F.gelu, TF.gelu, False),
    ("gelu_tanh", lambda a: F.gelu(a, True), lambda a: TF.gelu(a, approximate="tanh"), False),
    ("leaky_relu", lambda a: F.leaky_relu(a, 0.1), lambda a: TF.leaky_relu(a, 0.1), False),
    ("elu", F.elu, TF.elu, False),
    ("clip", lambda a: F.clip(a, -0.5, 0.7), lambda a: torch.clamp(a, -0.5, 0.7), False),
    ("reciprocal", F.reciprocal, torch.reciprocal, True),
]


@pytest.mark.parametrize("name,ours,theirs,pos", UNARY, ids=[u[0] for u in UNARY])
def test_unary(name, ours, theirs, pos):
    gradcheck(ours, theirs, R(4, 7, pos=pos))


@pytest.mark.parametrize("axis", [-1, 1, 0])
def test_softmax_and_log_softmax(axis):
    gradcheck(lambda a: F.softmax(a, axis), lambda a: torch.softmax(a, axis), R(3, 5, 4))
    gradcheck(lambda a: F.log_softmax(a, axis), lambda a: torch.log_softmax(a, axis), R(3, 5, 4))


def test_cast_keeps_the_gradient():
    gradcheck(lambda a: F.cast(F.cast(a, "float32"), "float64") * 2, lambda a: a.float().double() * 2, R(3, 4))


# ---------------------------------------------------------------- reductions
@pytest.mark.parametrize("axis,keepdims", [(None, False), (1, False), ((0, 2), True), (-1, True)])
def test_reductions(axis, keepdims):
    tax = tuple(range(3)) if axis is None else axis
    x = R(3, 4, 5)
    gradcheck(lambda a: F.sum(a, axis, keepdims), lambda a: torch.sum(a, tax, keepdims), x)
    gradcheck(lambda a: F.mean(a, axis, keepdims), lambda a: torch.mean(a, tax, keepdims), x)
    gradcheck(lambda a: F.var(a, axis, keepdims), lambda a: torch.var(a, tax, unbiased=False, keepdim=keepdims), x)
    gradcheck(lambda a: F.std(a, axis, keepdims), lambda a: torch.std(a, tax, unbiased=False, keepdim=keepdims), x)
    gradcheck(lambda a: F.logsumexp(a, axis, keepdims), lambda a: torch.logsumexp(a, tax, keepdims), x)
    gradcheck(lambda a: F.max(a, axis, keepdims), lambda a: torch.amax(a, tax, keepdims), x)
    gradcheck(lambda a: F.min(a, axis, keepdims), lambda a: torch.amin(a, tax, keepdims), x)


def test_max_ties_share_the_gradient():
    x = np.array([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]])
    gradcheck(lambda a: F.max(a, 1), lambda a: torch.amax(a, 1), x)


# ---------------------------------------------------------------- shapes and indexing
def test_shape_ops():
    x = R(2, 3, 4)
    gradcheck(lambda a: F.reshape(a, (4, -1)), lambda a: a.reshape(4, -1), x)
    gradcheck(lambda a: F.transpose(a, (2, 0, 1)), lambda a: a.permute(2, 0, 1), x)
    gradcheck(lambda a: F.transpose(a), lambda a: a.permute(2, 1, 0), x)
    gradcheck(lambda a: F.swapaxes(a, 0, 2), lambda a: a.transpose(0, 2), x)
    gradcheck(lambda a: F.expand_dims(a, 1), lambda a: a.unsqueeze(1), x)
    gradcheck(lambda a: F.squeeze(a, 1), lambda a: a.squeeze(1), R(3, 1, 2))
    gradcheck(lambda a: F.broadcast_to(a, (2, 3, 4)), lambda a: a.expand(2, 3, 4), R(3, 1))
    gradcheck(lambda a: F.tile(a, (2, 1, 3)), lambda a: a.repeat(2, 1, 3), x)
    gradcheck(lambda a: F.repeat(a, 3, 1), lambda a: a.repeat_interleave(3, 1), x)
    gradcheck(lambda a: F.pad(a, ((0, 0), (1, 2), (3, 0))), lambda a: TF.pad(a, (3, 0, 1, 2)), x)


def test_concatenate_stack_split():
    a, b, c = R(2, 3), R(2, 5, seed=2), R(2, 1, seed=3)
    gradcheck(lambda x, y, z: F.concatenate([x, y, z], 1), lambda x, y, z: torch.cat([x, y, z], 1), a, b, c)
    gradcheck(lambda x, y: F.stack([x, y], 1), lambda x, y: torch.stack([x, y], 1), a, R(2, 3, seed=4))
    gradcheck(lambda x: F.split(x, [1, 4], 1)[1] * 2 + 0, lambda x: torch.split(x, [1, 3, 1], 1)[1] * 2, b)
    gradcheck(lambda x: F.concatenate(F.split(x, 5, 1)[::-1], 1), lambda x: torch.cat(torch.split(x, 1, 1)[::-1], 1), b)
    # a constant among the inputs
    gradcheck(lambda x: F.concatenate([x, np.ones((2, 2))], 1), lambda x: torch.cat([x, torch.ones(2, 2, dtype=x.dtype)], 1), a)


def test_getitem_basic_and_fancy():
    x = R(4, 5, 3)
    gradcheck(lambda a: a[1:3, ::2, -1], lambda a: a[1:3, ::2, -1], x)
    gradcheck(lambda a: a[..., None, 0], lambda a: a[..., None, 0], x)
    idx = np.array([0, 2, 2, 3])
    gradcheck(lambda a: a[idx], lambda a: a[torch.tensor(idx)], x)
    gradcheck(lambda a: a[:, np.array([4, 4, 0])], lambda a: a[:, torch.tensor([4, 4, 0])], x)


def test_take_and_take_along_axis():
    x = R(6, 4)
    ids = np.array([[0, 5, 5], [2, 1, 0]])
    gradcheck(lambda a: F.take(a, ids, 0), lambda a: a[torch.tensor(ids)], x)  # embedding lookup
    neg = np.array([[-1, 5, 0], [1, -6, -1]])  # the same rows reached by negative ids too
    gradcheck(lambda a: F.take(a, neg, 0), lambda a: a[torch.tensor(neg)], x)
    gradcheck(lambda a: F.take(a, np.array([3, 0, 3]), 1), lambda a: a[:, torch.tensor([3, 0, 3])], x)
    ta = np.array([[1, 1], [0, 3], [2, 2], [3, 0], [1, 2], [0, 0]])
    gradcheck(lambda a: F.take_along_axis(a, ta, 1), lambda a: torch.gather(a, 1, torch.tensor(ta)), x)


def test_where():
    c = R(3, 4, seed=5) > 0
    gradcheck(lambda a, b: F.where(c, a, b), lambda a, b: torch.where(torch.tensor(c), a, b), R(3, 4), R(1, 4, seed=2))
    gradcheck(lambda a: F.where(c, a, 0.0), lambda a: torch.where(torch.tensor(c), a, 0.0), R(3, 4))


# ---------------------------------------------------------------- linear algebra
@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((4,), (4, 3)),
                                   ((3, 4), (4,)), ((4,), (4,))])
def test_matmul(sa, sb):
    gradcheck(F.matmul, torch.matmul, R(*sa), R(*sb, seed=2))


def test_matmul_operator_and_numpy_left_operand():
    w = R(4, 3, seed=3)
    gradcheck(lambda a: a @ w, lambda a: a @ torch.tensor(w), R(2, 4))
    gradcheck(lambda a: w.T @ a, lambda a: torch.tensor(w.T) @ a, R(4, 2))  # ndarray @ Tensor
    gradcheck(lambda a: np.float64(2.0) * a - w[:, 0], lambda a: 2.0 * a - torch.tensor(w[:, 0]), R(4))


@pytest.mark.parametrize("bias", [True, False])
def test_dense(bias):
    if bias:
        gradcheck(F.dense, lambda x, k, b: x @ k + b, R(2, 3, 4), R(4, 5, seed=2), R(5, seed=3))
    else:
        gradcheck(F.dense, lambda x, k: x @ k, R(7, 4), R(4, 5, seed=2))


def test_dense_with_relu_in_the_epilogue():
    gradcheck(lambda x, k, b: F.dense(x, k, b, activation="relu"), lambda x, k, b: torch.relu(x @ k + b),
              R(3, 6, 4), R(4, 5, seed=2), R(5, seed=3))
    # float32 with the checks off (inside fit): the GEMM's own epilogue, the same values
    from pyaiml import ops as pops

    x, k, b = (a.astype(np.float32) for a in (R(9, 4), R(4, 5, seed=2), R(5, seed=3)))
    with pops.finite_checks(False):
        fused = F.dense(x, k, b, activation="relu")
    np.testing.assert_allclose(fused, np.maximum(x @ k + b, 0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="activation must be None or 'relu'"):
        F.dense(x, k, b, activation="gelu")


def test_einsum():
    gradcheck(lambda a, b: F.einsum("bij,bjk->bik", a, b), lambda a, b: torch.einsum("bij,bjk->bik", a, b),
              R(2, 3, 4), R(2, 4, 5, seed=2))
    gradcheck(lambda a, b: F.einsum("btd,dhk->bthk", a, b), lambda a, b: torch.einsum("btd,dhk->bthk", a, b),
              R(2, 3, 4), R(4, 2, 3, seed=2))


# ---------------------------------------------------------------- nn ops
@pytest.mark.parametrize("fmt,stride,pad,dil,groups,act", [
    ("NHWC", 1, 0, 1, 1, None), ("NHWC", 2, 1, 1, 1, "relu"), ("NCHW", 1, 1, 2, 1, None), ("NHWC", 1, 0, 1, 2, None)])
def test_conv2d(fmt, stride, pad, dil, groups, act):
    x = R(2, 6, 7, 4) if fmt == "NHWC" else R(2, 4, 6, 7)
    w, b = R(6, 4 // groups, 3, 3, seed=2), R(6, seed=3)

    def theirs(x_, w_, b_):
        xin = x_.permute(0, 3, 1, 2) if fmt == "NHWC" else x_
        y = TF.conv2d(xin, w_, b_, stride, pad, dil, groups)
        y = torch.relu(y) if act else y
        return y.permute(0, 2, 3, 1) if fmt == "NHWC" else y
    gradcheck(lambda x_, w_, b_: F.conv(x_, w_, b_, stride, pad, dil, groups, fmt, act), theirs, x, w, b)


def test_conv1d_and_input_gradient_skipped():
    x, w = R(3, 9, 4), R(5, 4, 3, seed=2)
    gradcheck(lambda x_, w_: F.conv(x_, w_, None, 2, 1, 1, 1, "NLC"),
              lambda x_, w_: TF.conv1d(x_.permute(0, 2, 1), w_, None, 2, 1).permute(0, 2, 1), x, w)
    # x a plain array (a model's input): only the weight gradient is asked of the kernel
    gradcheck(lambda w_: F.conv(x, w_, None, 1, 0, 1, 1, "NLC"),
              lambda w_: TF.conv1d(torch.tensor(x).permute(0, 2, 1), w_).permute(0, 2, 1), w)


def test_max_pool():
    x = R(2, 6, 8, 3)
    gradcheck(lambda a: F.max_pool(a, (2, 2), (2, 2), 0, "NHWC"),
              lambda a: TF.max_pool2d(a.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1), x)
    gradcheck(lambda a: F.max_pool(a, 3, 2, 1, "NLC"),
              lambda a: TF.max_pool1d(a.permute(0, 2, 1), 3, 2, 1).permute(0, 2, 1), R(2, 9, 3))


def test_average_pool():
    gradcheck(lambda a: F.average_pool(a, (2, 2), (2, 2), (1, 2)),
              lambda a: TF.avg_pool2d(a.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1), R(2, 6, 8, 3))
    gradcheck(lambda a: F.average_pool(a, (3,), (1,), (1,)),  # overlapping windows
              lambda a: TF.avg_pool1d(a.permute(0, 2, 1), 3, 1).permute(0, 2, 1), R(2, 7, 3))


@pytest.mark.parametrize("masked,causal", [(False, False), (True, False), (False, True)])
def test_attention(masked, causal):
    q, k, v = R(2, 3, 5, 4), R(2, 3, 6, 4, seed=2), R(2, 3, 6, 3, seed=3)
    m = (_rng(7).random((2, 1, 5, 6)) > 0.3) if masked else None
    if m is not None:
        m[..., 0] = True
    if causal:
        k, v = k[:, :, :5], v[:, :, :5]
    tm = None if m is None else torch.tensor(m)
    gradcheck(lambda a, b, c: F.attention(a, b, c, m, 0.3, causal),
              lambda a, b, c: TF.scaled_dot_product_attention(a, b, c, attn_mask=tm, scale=0.3, is_causal=causal),
              q, k, v)


def test_layer_norm():
    gradcheck(lambda x, g, b: F.layer_norm(x, g, b, 1e-3),
              lambda x, g, b: TF.layer_norm(x, (5,), g, b, 1e-3), R(2, 3, 5), R(5, seed=2), R(5, seed=3))
    gradcheck(lambda x: F.layer_norm(x, None, None, 1e-5), lambda x: TF.layer_norm(x, (5,), eps=1e-5), R(4, 5))


def test_batch_norm_batch_statistics_and_moving():
    x, g, b = R(8, 3, 4), R(4, seed=2), R(4, seed=3)
    gradcheck(lambda x_, g_, b_: F.batch_norm(x_, None, None, g_, b_, 1e-3, -1, True)[0],
              lambda x_, g_, b_: TF.batch_norm(x_.permute(0, 2, 1), None, None, g_, b_, True, 0.0, 1e-3).permute(0, 2, 1),
              x, g, b)
    mu, var = R(4, seed=4), R(4, seed=5, pos=True)
    gradcheck(lambda x_, g_, b_: F.batch_norm(x_, mu, var, g_, b_, 1e-3, -1),
              lambda x_, g_, b_: TF.batch_norm(x_.permute(0, 2, 1), torch.tensor(mu), torch.tensor(var), g_, b_, False,
                                               0.0, 1e-3).permute(0, 2, 1), x, g, b)


def test_dropout_gradient_is_its_mask():
    x = R(50, 40)
    t = Tensor(x, True)
    with GradientTape() as tape:
        y = F.dropout(t, 0.25, np.random.default_rng(3))
    g = tape.gradient(y, t, output_gradients=np.ones_like(x))
    np.testing.assert_allclose(g, y.value / np.where(x == 0, 1, x), rtol=1e-14)
    assert 0.2 < (g == 0).mean() < 0.3 and np.allclose(g[g != 0], 1 / 0.75)


def test_loss_record_fuses_softmax_cross_entropy():
    from pyaiml.keras import losses

    z = R(6, 5)
    y = np.eye(5)[[0, 2, 4, 1, 1, 3]]
    gradcheck(lambda a: F.loss(losses.CategoricalCrossentropy(), y, F.softmax(a)),
              lambda a: TF.cross_entropy(a, torch.tensor(y)), z)
    ids = np.array([0, 2, 4, 1, 1, 3])
    gradcheck(lambda a: F.loss(losses.SparseCategoricalCrossentropy(from_logits=True), ids, a),
              lambda a: TF.cross_entropy(a, torch.tensor(ids)), z)
    gradcheck(lambda a: F.loss(losses.MeanSquaredError(), y, a), lambda a: TF.mse_loss(a, torch.tensor(y)), z)


def test_one_hot_no_gradient():
    np.testing.assert_array_equal(F.one_hot(np.array([2, 0, 5]), 3), [[0, 0, 1], [1, 0, 0], [0, 0, 0]])


# ---------------------------------------------------------------- tape semantics
def test_value_used_twice_adds_gradients_and_unconnected_is_none():
    w = Variable(np.array([1.0, 2.0, 3.0]))
    u = Variable(np.ones(3))
    with GradientTape() as tape:
        y = F.sum(w * w + w)
    gw, gu = tape.gradient(y, [w, u])
    np.testing.assert_allclose(gw, 2 * w.value + 1)
    assert gu is None


def test_sources_may_be_the_arrays_behind_variables():
    arr = np.array([1.0, -2.0])
    w = Variable(arr)
    assert w.value is arr
    with GradientTape() as tape:
        y = F.sum(F.square(w))
    np.testing.assert_allclose(tape.gradient(y, [arr])[0], 2 * arr)


def test_non_persistent_tape_refuses_a_second_gradient_and_persistent_allows():
    w = Variable(np.ones(2))
    with GradientTape() as tape:
        y = F.sum(w * 3)
    tape.gradient(y, w)
    with pytest.raises(RuntimeError, match="persistent"):
        tape.gradient(y, w)
    with GradientTape(persistent=True) as tape:
        y = F.sum(w * 3)
        z = F.sum(w * w)
    np.testing.assert_allclose(tape.gradient(y, w), [3, 3])
    np.testing.assert_allclose(tape.gradient(z, w), [2, 2])


def test_watch_and_nested_tapes():
    x = np.array([0.5, 2.0])
    with GradientTape() as outer:
        xt = outer.watch(x)
        with GradientTape() as inner:
            y = F.sum(F.exp(xt))
        gi = inner.gradient(y, xt)
        z = F.sum(xt * 2)
    np.testing.assert_allclose(gi, np.exp(x))
    np.testing.assert_allclose(outer.gradient(z, xt), [2, 2])


def test_eager_off_the_tape_returns_plain_arrays():
    w = Variable(np.ones((2, 2)))
    y = F.matmul(w, np.ones((2, 1)))
    assert type(y) is np.ndarray and y.shape == (2, 1)
    with GradientTape():
        z = F.exp(np.ones(3))  # nothing needs a gradient: no record
    assert type(z) is np.ndarray
    with GradientTape() as tape:
        y = F.relu(w)
    assert isinstance(y, Tensor) and len(tape._nodes) == 1


def test_non_trainable_variable_gets_no_gradient_and_assign():
    v = Variable(np.ones(3), trainable=False)
    with GradientTape() as tape:
        y = F.sum(v * 2)
    assert not isinstance(y, Tensor) and tape.gradient(y, v) is None
    v.assign(np.arange(3.0))
    v.assign_add(1.0)
    np.testing.assert_allclose(v.numpy(), [1, 2, 3])
    with pytest.raises(ValueError, match="assign needs shape"):
        v.assign(np.ones(4))


def test_numpy_function_on_a_tape_value_names_the_layer():
    class Who:
        name = "my_block"

    w = Variable(np.ones(3))
    with GradientTape():
        y = w * 2
        with calling(Who()):
            with pytest.raises(TypeError, match=r"layer 'my_block' \(Who\)\.call\(\) applied numpy\.exp.*keras\.ops"):
                np.exp(y)
            with pytest.raises(TypeError, match=r"numpy\.concatenate"):
                np.concatenate([y, y])
            with pytest.raises(TypeError, match=r"numpy\.asarray"):
                np.asarray(y)
        assert np.array_equal(y > 1, [True] * 3)  # comparisons are fine
    assert np.array_equal(np.asarray(w), np.ones(3))  # off the tape a Variable is an array


def test_watch_refuses_integers():
    with GradientTape() as tape, pytest.raises(TypeError, match="floating-point"):
        tape.watch(np.arange(3))


# ---------------------------------------------------------------- the ReLU-gradient fusion of conv + max pool
def _conv_pool_torch(x, w, b, extra):
    y = torch.relu(TF.conv2d(x.permute(0, 3, 1, 2), w, b, 1, 1))
    p = TF.max_pool2d(y, 2).permute(0, 2, 3, 1)
    out = p.sum() * 0 + (p * torch.tensor(_cot(p.shape))).sum()
    if extra:  # the conv's output also read directly (a residual path): its ReLU mask must stay
        out = out + (y.permute(0, 2, 3, 1) * torch.tensor(_cot(tuple(y.permute(0, 2, 3, 1).shape), 5))).sum()
    return out


def _cot(shape, seed=4):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("extra", [False, True])
def test_conv_relu_then_max_pool_gradients(extra, monkeypatch):
    import pyaiml.ops as pops

    x, w, b = R(2, 6, 6, 3), R(4, 3, 3, 3, seed=2), R(4, seed=3)
    x[0, :2] = -5  # some windows entirely negative before the ReLU (the pool passes no gradient there)
    calls = []
    real = pops.relu_backward
    monkeypatch.setattr(pops, "relu_backward", lambda *a, **k: calls.append(1) or real(*a, **k))

    def ours(x_, w_, b_):
        y = F.conv(x_, w_, b_, 1, 1, 1, 1, "NHWC", "relu")
        p = F.max_pool(y, (2, 2), (2, 2), 0, "NHWC")
        out = F.sum(p * _cot(p.shape))
        if extra:
            out = out + F.sum(y * _cot(y.shape, 5))
        return out
    gradcheck(ours, lambda x_, w_, b_: _conv_pool_torch(x_, w_, b_, extra), x, w, b)
    assert len(calls) == (1 if extra else 0)  # the mask is skipped only when the pool applied it
