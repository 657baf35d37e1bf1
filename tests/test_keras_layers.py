"""pyaiml.keras layers: forward and every gradient against torch autograd in float64.

Each layer is built in float32 (as in training), re-typed to float64 with ``_cast``, called
on a GradientTape (its call(), what every model trains through) and differentiated, then
compared with the same computation written with torch.nn.functional on the layer's own
weights; the inference path (``forward``, what predict runs) is compared too. Tolerance:
1e-9 relative (float64 round-off of sums of a few hundred terms). Convolution/pooling/
attention run on pyaiml.ops (whichever backend PYAIML_BACKEND picks).
"""
import numpy as np
import pytest

from pyaiml.autograd import GradientTape
from pyaiml.keras import layers as L

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL = dict(rtol=1e-9, atol=1e-10)


def _t(a, grad=False):
    t = torch.tensor(np.asarray(a, dtype=np.float64))
    if grad:
        t.requires_grad_(True)
    return t


def run(layer, x, training=False, mask=None):
    """The layer's call() on a tape: (y, dy, dx, {weight name: gradient}) for a random dy;
    dx None for integer inputs. Without training, the inference path must agree."""
    layer._ensure_built(x.shape[1:])
    layer._cast(np.float64)
    kw = {} if mask is None else {"mask": mask}
    floats = np.asarray(x).dtype.kind == "f"
    with GradientTape() as tape:
        xt = tape.watch(x) if floats else x
        y = layer(xt, training=training, **kw)
    dy = np.random.default_rng(7).standard_normal(y.shape)
    tv = layer.trainable_variables
    gs = tape.gradient(y, ([xt] if floats else []) + tv, output_gradients=dy)
    dx = gs.pop(0) if floats else None
    if not training:
        np.testing.assert_allclose(layer.forward(np.asarray(x), False, mask), y.value, **TOL)
    return y.value, dy, dx, dict(zip(layer._trainable_names, gs))


def check(y, ty, dx, tx, dy, grads=()):
    ty.backward(_t(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), **TOL)
    if tx is not None:
        np.testing.assert_allclose(dx, tx.grad.numpy(), **TOL)
    for ours, t in grads:
        np.testing.assert_allclose(ours, t.grad.numpy(), **TOL)


ACTS = {"relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "softmax": lambda z: F.softmax(z, -1),
        "gelu": F.gelu, "linear": lambda z: z}


@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 33)])
def test_dense(rng, act, shape):
    layer = L.Dense(6, activation=act)
    x = rng.standard_normal(shape)
    y, dy, dx, G = run(layer, x)
    tx, tk, tb = _t(x, True), _t(layer.kernel, True), _t(layer.bias, True)
    ty = ACTS[act](tx @ tk + tb)
    check(y, ty, dx, tx, dy, [(G["kernel"], tk), (G["bias"], tb)])


@pytest.mark.parametrize("act", list(ACTS))
def test_activation_layer(rng, act):
    x = rng.standard_normal((4, 9)) * 3
    layer = L.Activation(act)
    y, dy, dx, _ = run(layer, x)
    tx = _t(x, True)
    check(y, ACTS[act](tx), dx, tx, dy)


def _tf_pads(n, k, s, d):
    out = -(-n // s)
    tot = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
    return tot // 2, tot - tot // 2


CONV2D = [
    # (N, H, W, C), filters, kernel, strides, padding, dilation, groups
    ((2, 9, 7, 3), 4, (3, 3), (1, 1), "valid", (1, 1), 1),
    ((2, 9, 7, 3), 5, (3, 2), (1, 1), "same", (1, 1), 1),
    ((1, 10, 11, 2), 3, (3, 3), (2, 2), "same", (1, 1), 1),
    ((1, 8, 9, 4), 4, (2, 3), (2, 1), "valid", (1, 1), 2),
    ((2, 9, 9, 2), 3, (3, 3), (1, 1), "same", (2, 2), 1),
    ((3, 5, 5, 1), 2, (1, 1), (1, 1), "valid", (1, 1), 1),
]


@pytest.mark.parametrize("xs,f,k,s,pad,d,g", CONV2D)
def test_conv2d(rng, xs, f, k, s, pad, d, g):
    layer = L.Conv2D(f, k, strides=s, padding=pad, dilation_rate=d, groups=g, activation="relu")
    x = rng.standard_normal(xs)
    y, dy, dx, G = run(layer, x)
    tx, tw, tb = _t(x, True), _t(layer.kernel, True), _t(layer.bias, True)
    xi = tx.permute(0, 3, 1, 2)
    if pad == "same":
        (t0, t1), (l0, l1) = [_tf_pads(n, kk, ss, dd) for n, kk, ss, dd in zip(xs[1:3], k, s, d)]
        xi = F.pad(xi, (l0, l1, t0, t1))
    ty = F.relu(F.conv2d(xi, tw, tb, stride=s, dilation=d, groups=g)).permute(0, 2, 3, 1)
    check(y, ty, dx, tx, dy, [(G["kernel"], tw), (G["bias"], tb)])
    assert layer.output_shape == y.shape[1:]


CONV1D = [
    ((2, 17, 3), 4, 3, 1, "valid", 1),
    ((2, 16, 1), 5, 4, 1, "same", 1),
    ((3, 20, 2), 3, 3, 2, "same", 1),
    ((2, 15, 2), 3, 3, 1, "causal", 2),
    ((1, 128, 1), 8, 3, 1, "valid", 1),
]


@pytest.mark.parametrize("xs,f,k,s,pad,d", CONV1D)
def test_conv1d(rng, xs, f, k, s, pad, d):
    layer = L.Conv1D(f, k, strides=s, padding=pad, dilation_rate=d, activation="tanh")
    x = rng.standard_normal(xs)
    y, dy, dx, G = run(layer, x)
    tx, tw, tb = _t(x, True), _t(layer.kernel, True), _t(layer.bias, True)
    xi = tx.permute(0, 2, 1)
    if pad == "same":
        xi = F.pad(xi, _tf_pads(xs[1], k, s, d))
    elif pad == "causal":
        xi = F.pad(xi, (d * (k - 1), 0))
    ty = torch.tanh(F.conv1d(xi, tw, tb, stride=s, dilation=d)).permute(0, 2, 1)
    check(y, ty, dx, tx, dy, [(G["kernel"], tw), (G["bias"], tb)])


def test_conv_keras_weight_layout(rng):
    layer = L.Conv2D(5, (3, 2), input_shape=(6, 6, 4))
    layer._ensure_built((6, 6, 4))
    k, b = layer.get_weights()
    assert k.shape == (3, 2, 4, 5) and b.shape == (5,)
    k2 = rng.standard_normal(k.shape).astype(np.float32)
    layer.set_weights([k2, b])
    np.testing.assert_array_equal(layer.get_weights()[0], k2)
    np.testing.assert_array_equal(layer.kernel, k2.transpose(3, 2, 0, 1))
    c1 = L.Conv1D(7, 3)
    c1._ensure_built((10, 2))
    assert c1.get_weights()[0].shape == (3, 2, 7)
    d = L.Dense(3)
    d._ensure_built((4,))
    assert d.get_weights()[0].shape == (4, 3)


@pytest.mark.parametrize("xs,p,s,pad", [((2, 8, 8, 3), (2, 2), None, "valid"), ((2, 7, 9, 2), (2, 2), None, "valid"),
                                        ((1, 7, 7, 2), (3, 3), (2, 2), "valid"), ((2, 7, 5, 3), (2, 2), None, "same"),
                                        ((1, 6, 6, 1), (3, 2), (1, 2), "same")])
def test_maxpool2d(rng, xs, p, s, pad):
    layer = L.MaxPooling2D(p, strides=s, padding=pad)
    x = rng.standard_normal(xs)
    y, dy, dx, _ = run(layer, x)
    tx = _t(x, True)
    xi = tx.permute(0, 3, 1, 2)
    st = s or p
    if pad == "same":
        (t0, t1), (l0, l1) = [_tf_pads(n, kk, ss, 1) for n, kk, ss in zip(xs[1:3], p, st)]
        xi = F.pad(xi, (l0, l1, t0, t1), value=-np.inf)
    ty = F.max_pool2d(xi, p, st).permute(0, 2, 3, 1)
    check(y, ty, dx, tx, dy)
    assert layer.output_shape == y.shape[1:]


@pytest.mark.parametrize("xs,p,s", [((2, 17, 3), 2, None), ((1, 126, 4), 2, None), ((2, 10, 2), 3, 2)])
def test_maxpool1d(rng, xs, p, s):
    layer = L.MaxPooling1D(p, strides=s)
    x = rng.standard_normal(xs)
    y, dy, dx, _ = run(layer, x)
    tx = _t(x, True)
    ty = F.max_pool1d(tx.permute(0, 2, 1), p, s or p).permute(0, 2, 1)
    check(y, ty, dx, tx, dy)


def test_global_average_pooling(rng):
    x = rng.standard_normal((3, 5, 4, 6))
    y, dy, dx, _ = run(L.GlobalAveragePooling2D(), x)
    tx = _t(x, True)
    check(y, tx.mean(dim=(1, 2)), dx, tx, dy)
    x = rng.standard_normal((3, 7, 2))
    y, dy, dx, _ = run(L.GlobalAveragePooling1D(), x)
    tx = _t(x, True)
    check(y, tx.mean(dim=1), dx, tx, dy)
    # masked (from Embedding(mask_zero=True)): average over the valid steps only
    m = np.array([[1, 1, 0, 0, 0, 0, 0], [1] * 7, [1, 0, 1, 0, 1, 0, 1]], dtype=bool)
    y, dy, dx, _ = run(L.GlobalAveragePooling1D(), x, mask=m)
    tx = _t(x, True)
    tm = _t(m)[:, :, None]
    check(y, (tx * tm).sum(1) / tm.sum(1), dx, tx, dy)


def test_flatten_reshape(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    y, dy, dx, _ = run(L.Flatten(), x)
    tx = _t(x, True)
    check(y, tx.reshape(2, -1), dx, tx, dy)
    y, dy, dx, _ = run(L.Reshape((12, 5)), x)
    tx = _t(x, True)
    check(y, tx.reshape(2, 12, 5), dx, tx, dy)


@pytest.mark.parametrize("shape", [(16, 5), (4, 3, 3, 6)])
def test_batchnorm(rng, shape):
    layer = L.BatchNormalization(momentum=0.9, epsilon=1e-3)
    layer._ensure_built(shape[1:])
    layer._cast(np.float64)
    layer.gamma[...] = rng.standard_normal(shape[-1])
    layer.beta[...] = rng.standard_normal(shape[-1])
    x = rng.standard_normal(shape) * 2 + 1
    y, dy, dx, G = run(layer, x, training=True)
    tx, tg, tb = _t(x, True), _t(layer.gamma, True), _t(layer.beta, True)
    c = shape[-1]
    xi = tx.reshape(-1, c)
    rm, rv = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    ty = F.batch_norm(xi, rm, rv, tg, tb, training=True, momentum=0.1, eps=1e-3).reshape(shape)
    check(y, ty, dx, tx, dy, [(G["gamma"], tg), (G["beta"], tb)])
    np.testing.assert_allclose(layer.moving_mean, rm.numpy(), **TOL)  # same rule: 0.9*old + 0.1*batch
    xr = x.reshape(-1, c)
    np.testing.assert_allclose(layer.moving_variance, 0.9 + 0.1 * xr.var(0), **TOL)  # Keras: biased variance
    # inference uses the moving statistics
    y2 = layer.forward(x, False)
    want = (x - layer.moving_mean) / np.sqrt(layer.moving_variance + 1e-3) * layer.gamma + layer.beta
    np.testing.assert_allclose(y2, want, **TOL)


def test_layernorm(rng):
    x = rng.standard_normal((3, 4, 7)) * 3
    layer = L.LayerNormalization(epsilon=1e-5)
    layer._ensure_built(x.shape[1:])
    layer._cast(np.float64)
    layer.gamma[...] = rng.standard_normal(7)
    layer.beta[...] = rng.standard_normal(7)
    y, dy, dx, G = run(layer, x)
    tx, tg, tb = _t(x, True), _t(layer.gamma, True), _t(layer.beta, True)
    ty = F.layer_norm(tx, (7,), tg, tb, eps=1e-5)
    check(y, ty, dx, tx, dy, [(G["gamma"], tg), (G["beta"], tb)])


def test_embedding(rng):
    ids = rng.integers(0, 11, size=(4, 6))
    layer = L.Embedding(11, 5)
    y, dy, _, G = run(layer, ids)
    te = _t(layer.embeddings, True)
    ty = F.embedding(torch.tensor(ids), te)
    ty.backward(_t(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), **TOL)
    np.testing.assert_allclose(G["embeddings"], te.grad.numpy(), **TOL)
    with pytest.raises(ValueError, match=r"ids must be in \[0, 11\)"):
        layer.forward(np.array([[0, 11]]))


def test_dropout(rng):
    x = rng.standard_normal((50, 40))
    layer = L.Dropout(0.3, seed=3)
    y, dy, dx, _ = run(layer, x, training=True)
    keep = y != 0
    assert 0.6 < keep.mean() < 0.8
    np.testing.assert_allclose(y[keep], x[keep] / 0.7, **TOL)
    np.testing.assert_allclose(dx, np.where(keep, dy / 0.7, 0), **TOL)
    np.testing.assert_array_equal(layer.forward(x, False), x)


def _mha_torch(layer, q, v, k, mask):
    h, kd, vd = layer.num_heads, layer.key_dim, layer.value_dim
    tw = {n: _t(getattr(layer, n), True) for n in layer._weight_names}
    tq, tv, tk = _t(q, True), _t(v, True), _t(k, True)

    def proj(x, nm):
        return torch.einsum("btd,dhk->bhtk", x, tw[f"{nm}_kernel"]) + tw[f"{nm}_bias"][None, :, None, :]

    Q, K, V = proj(tq, "query"), proj(tk, "key"), proj(tv, "value")
    s = Q @ K.transpose(-1, -2) / np.sqrt(kd)
    if mask is not None:
        s = s.masked_fill(~torch.tensor(mask)[:, None], -np.inf)
    p = torch.softmax(s, -1)
    o = p @ V
    out = torch.einsum("bhtv,hvo->bto", o, tw["output_kernel"]) + tw["output_bias"]
    return out, tq, tv, tk, tw


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("with_mask", [False, True])
def test_multihead_attention(rng, causal, with_mask):
    B, T, S, D = 2, 5, 6, 8
    layer = L.MultiHeadAttention(num_heads=2, key_dim=3, value_dim=4)
    q, v, k = rng.standard_normal((B, T, D)), rng.standard_normal((B, S, 7)), rng.standard_normal((B, S, 5))
    layer.build(q.shape[1:], v.shape[1:], k.shape[1:])
    layer._cast(np.float64)
    for n in layer._weight_names:
        getattr(layer, n)[...] = rng.standard_normal(getattr(layer, n).shape) * 0.5
    mask = None
    if with_mask:
        mask = np.ones((B, T, S), dtype=bool)
        mask[0, :, 4:] = False
        mask[1, :, 2] = False
    with GradientTape() as tape:
        tq_, tv_, tk_ = tape.watch(q), tape.watch(v), tape.watch(k)
        y = layer(tq_, tv_, tk_, attention_mask=mask, use_causal_mask=causal)
    np.testing.assert_allclose(layer._attend(q, v, k, mask, causal), y.value, **TOL)  # the inference path
    full = mask if mask is not None else np.ones((B, T, S), dtype=bool)
    if causal:
        full = full & np.tril(np.ones((T, S), dtype=bool))
    out, tq, tv, tk, tw = _mha_torch(layer, q, v, k, full)
    dy = rng.standard_normal(y.shape)
    grads = tape.gradient(y, [tq_, tv_, tk_] + layer.trainable_variables, output_gradients=dy)
    out.backward(_t(dy))
    np.testing.assert_allclose(y.value, out.detach().numpy(), **TOL)
    for ours, t in zip(grads[:3], (tq, tv, tk)):
        np.testing.assert_allclose(ours, t.grad.numpy(), **TOL)
    for n, ours in zip(layer._trainable_names, grads[3:]):
        np.testing.assert_allclose(ours, tw[n].grad.numpy(), **TOL)


def test_multihead_self_attention_in_sequence(rng):
    """Sequential path: self-attention, padding mask from Embedding(mask_zero=True)."""
    from pyaiml.keras.models import Sequential

    ids = np.array([[3, 5, 2, 0, 0], [1, 4, 4, 6, 2]])
    m = Sequential([L.Embedding(8, 6, mask_zero=True, input_shape=(5,)),
                    L.MultiHeadAttention(2, 3, use_causal_mask=True), L.GlobalAveragePooling1D(), L.Dense(3)])
    m.build((None, 5))
    for layer in m.layers:
        layer._cast(np.float64)
    y = m._forward(ids)
    emb, mha = m.layers[0], m.layers[1]
    x = emb.embeddings[ids]
    valid = ids != 0
    full = valid[:, None, :] & np.tril(np.ones((5, 5), dtype=bool))
    out, *_ = _mha_torch(mha, x, x, x, full)
    o = out.detach().numpy()
    pooled = (o * valid[:, :, None]).sum(1) / valid.sum(1, keepdims=True)
    want = pooled @ m.layers[3].kernel + m.layers[3].bias
    np.testing.assert_allclose(y, want, **TOL)


def test_config_round_trip():
    for layer in [L.Dense(3, activation="relu", use_bias=False), L.Conv2D(4, 3, strides=2, padding="same"),
                  L.Conv1D(2, 5, dilation_rate=2, padding="causal"), L.MaxPooling2D(3, 2, "same"), L.Dropout(0.2),
                  L.BatchNormalization(momentum=0.9), L.Embedding(10, 4, mask_zero=True),
                  L.MultiHeadAttention(2, 4), L.LayerNormalization(epsilon=1e-6), L.Activation("gelu")]:
        cfg = L.serialize(layer)
        again = L.deserialize(cfg)
        assert type(again) is type(layer)
        assert L.serialize(again)["config"] == cfg["config"]


def test_layer_errors():
    with pytest.raises(ValueError, match="Unknown activation identifier 'relux'.*relu"):
        L.Dense(3, activation="relux")
    with pytest.raises(ValueError, match="padding must be one of valid, same"):
        L.Conv2D(3, 3, padding="full")
    with pytest.raises(ValueError, match="kernel_size must be"):
        L.Conv2D(3, (3, 3, 3))
    with pytest.raises(ValueError, match="rate must be in"):
        L.Dropout(1.5)
    with pytest.raises(TypeError, match="unexpected keyword"):
        L.Dense(3, bogus=1)
    c = L.Conv2D(4, 3)
    with pytest.raises(ValueError, match="expects inputs of rank 4"):
        c._ensure_built((8, 8))
    with pytest.raises(ValueError, match="smaller than the"):
        L.Conv2D(4, 5)._ensure_built((3, 3, 1))


@pytest.mark.parametrize("make,xs", [
    (lambda: L.Conv2D(4, 3, activation="relu"), (3, 9, 8, 3)),
    (lambda: L.Conv2D(5, (3, 2), strides=2, padding="same"), (2, 9, 8, 2)),
    (lambda: L.Conv2D(3, 3, padding="same", dilation_rate=2), (2, 9, 9, 2)),
    (lambda: L.Conv1D(6, 3, activation="relu"), (4, 20, 1)),
    (lambda: L.Conv1D(4, 4, padding="same"), (2, 13, 3)),
    (lambda: L.Conv1D(4, 3, padding="causal", dilation_rate=2), (2, 13, 2)),
])
def test_conv_first_layer_weight_grad_path(rng, make, xs):
    """An input that needs no gradient (a model's first layer) takes the conv's weight-
    gradient-only path (im2col + GEMM): the same weight gradients."""
    layer = make()
    x = rng.standard_normal(xs)
    y, dy, dx, full = run(layer, x)
    with GradientTape() as tape:
        y2 = layer(x)
    gs = tape.gradient(y2, layer.trainable_variables, output_gradients=dy)
    for k, g in zip(layer._trainable_names, gs):
        np.testing.assert_allclose(g, full[k], **TOL)


def test_direct_calls_take_other_sizes_on_free_axes():
    """A layer built by a direct call is tied only to the axes its weights fix (Keras's input
    specs): a Dense layer's features, a conv's channels; lengths and image sizes stay free."""
    from pyaiml.keras.models import Sequential

    rng = np.random.default_rng(0)
    x7 = rng.standard_normal((2, 7, 3)).astype(np.float32)
    conv = L.Conv1D(4, 3)
    y5 = conv(x7[:, :5])
    np.testing.assert_allclose(conv(x7)[:, :3], y5, rtol=1e-5, atol=1e-6)  # valid conv: same first outputs
    dense = L.Dense(2)
    np.testing.assert_allclose(dense(x7)[:, :5], dense(x7[:, :5]), rtol=1e-6)
    gap = L.GlobalAveragePooling1D()
    assert gap(x7[:, :5]).shape == gap(x7).shape == (2, 3)
    c2 = L.Conv2D(2, 3, data_format="channels_first")
    assert c2(np.zeros((1, 3, 6, 6), np.float32)).shape == (1, 2, 4, 4)
    assert c2(np.zeros((1, 3, 8, 7), np.float32)).shape == (1, 2, 6, 5)
    with pytest.raises(L.InputSpecError, match=r"expects \(None, None, 3\)"):
        conv(np.zeros((2, 7, 4), np.float32))
    with pytest.raises(L.InputSpecError, match=r"expects \(None, 3, None, None\)"):
        c2(np.zeros((1, 4, 8, 7), np.float32))
    with pytest.raises(L.InputSpecError, match="does not fit layer"):
        conv(np.zeros((2, 3), np.float32))  # rank
    # a built layer in a model for another length: the shapes after it follow the new length
    m = Sequential([conv, L.Flatten(), L.Dense(2)])
    m.build((None, 9, 3))
    assert m.layers[1].output_shape == (7 * 4,) and m.predict(np.zeros((2, 9, 3), np.float32), verbose=0).shape == (2, 2)
