"""GroupNormalization against torch.nn.GroupNorm (values and every gradient; channels last here,
channels first there) and Dot against NumPy (batched dot products along the given axes, and
the cosine with normalize=True) with tape gradients against central differences; both in a
functional model that trains and round-trips through save/load."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers import assert_saves_and_loads

from pyaiml import keras
from pyaiml.autograd import GradientTape
from pyaiml.autograd import functional as F
from pyaiml.keras import layers, ops


@pytest.mark.parametrize("shape,groups", [((2, 5, 6, 8), 4), ((3, 7, 6), 3), ((2, 4, 4, 6), 6), ((2, 5, 4), 1)])
def test_group_norm_against_torch(shape, groups):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32) * 3 + 1
    layer = layers.GroupNormalization(groups, epsilon=1e-5, gamma_initializer="glorot_uniform",
                                      beta_initializer="glorot_uniform")
    y = layer(x)
    gamma, beta = layer.get_weights()
    tn = torch.nn.GroupNorm(groups, shape[-1], eps=1e-5)
    with torch.no_grad():
        tn.weight.copy_(torch.from_numpy(gamma))
        tn.bias.copy_(torch.from_numpy(beta))
    tx = torch.from_numpy(np.moveaxis(x, -1, 1).copy()).requires_grad_()
    ty = tn(tx)
    np.testing.assert_allclose(y, np.moveaxis(ty.detach().numpy(), 1, -1), rtol=1e-4, atol=1e-5)
    g0 = rng.standard_normal(shape).astype(np.float32)
    with GradientTape() as tape:
        xx = tape.watch(x)
        loss = F.sum(F.multiply(layer(xx), g0))
    gx, gg, gb = tape.gradient(loss, [xx, layer.gamma, layer.beta])
    (ty * torch.from_numpy(np.moveaxis(g0, -1, 1).copy())).sum().backward()
    np.testing.assert_allclose(gx, np.moveaxis(tx.grad.numpy(), 1, -1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gg, tn.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gb, tn.bias.grad.numpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(Exception, match="divisible by groups"):
        layers.GroupNormalization(5)(x)


def _dot_oracle(a, b, a1, a2, normalize):
    if normalize:
        a = a / np.linalg.norm(a, axis=a1, keepdims=True)
        b = b / np.linalg.norm(b, axis=a2, keepdims=True)
    out = np.stack([np.tensordot(a[i], b[i], axes=(a1 - 1, a2 - 1)) for i in range(len(a))])
    return out.reshape(len(a), 1) if out.ndim == 1 else out


@pytest.mark.parametrize("sa,sb,axes", [((3, 4), (3, 4), -1), ((3, 5, 4), (3, 6, 4), (2, 2)),
                                        ((3, 5, 4), (3, 5, 6), (1, 1)), ((2, 4, 3), (2, 3), (2, 1))])
@pytest.mark.parametrize("normalize", [False, True])
def test_dot_values_and_gradients(sa, sb, axes, normalize):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    layer = layers.Dot(axes=axes, normalize=normalize)
    ax = [axes, axes] if isinstance(axes, int) else list(axes)
    a1, a2 = (x % len(s) for x, s in zip(ax, (sa, sb)))
    want = _dot_oracle(a, b, a1, a2, normalize)
    y = layer([a, b])
    np.testing.assert_allclose(np.asarray(getattr(y, "value", y)), want, rtol=1e-6, atol=1e-6)
    assert (len(a),) + layer.compute_output_shape([sa[1:], sb[1:]]) == want.shape
    w = rng.standard_normal(want.shape)
    with GradientTape() as tape:
        aa, bb = tape.watch(a), tape.watch(b)
        loss = ops.sum(ops.multiply(layer([aa, bb]), w))
    ga, gb = tape.gradient(loss, [aa, bb])
    for g, x, which in ((ga, a, 0), (gb, b, 1)):
        fd = np.zeros_like(x)
        for i in np.ndindex(x.shape):
            d = np.zeros_like(x)
            d[i] = 1e-6
            args_p = (a + d, b) if which == 0 else (a, b + d)
            args_m = (a - d, b) if which == 0 else (a, b - d)
            fd[i] = (np.sum(_dot_oracle(*args_p, a1, a2, normalize) * w)
                     - np.sum(_dot_oracle(*args_m, a1, a2, normalize) * w)) / 2e-6
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-7)


def test_in_a_functional_model(tmp_path):
    keras.utils.set_random_seed(0)
    u, v = keras.Input((6,)), keras.Input((6,))
    eu, ev = layers.Dense(8)(u), layers.Dense(8)(v)
    sim = layers.Dot(axes=1, normalize=True)([eu, ev])
    i2 = keras.Input((4, 4, 8))
    g = layers.GlobalAveragePooling2D()(layers.GroupNormalization(2)(i2))
    out = layers.Dense(1)(layers.Concatenate()([sim, g]))
    m = keras.Model([u, v, i2], out)
    m.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((32, 6)).astype(np.float32), rng.standard_normal((32, 6)).astype(np.float32),
          rng.standard_normal((32, 4, 4, 8)).astype(np.float32)]
    y = rng.standard_normal((32, 1)).astype(np.float32)
    h = m.fit(xs, y, epochs=10, batch_size=8, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert_saves_and_loads(m, xs, tmp_path)
    with pytest.raises(Exception, match="dot axes differ in size"):
        layers.Dot(axes=1)([keras.Input((3,)), keras.Input((4,))])
