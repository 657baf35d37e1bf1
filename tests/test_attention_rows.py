"""ops.attention_rows: each batch row attends over its own keys/values (ragged lengths,
KV-cache views read in place). Every row equals, bit for bit, a one-row
scaled_dot_product_attention on its own arrays on the same backend (the property the
server's batched decode relies on), the rows match a float64 NumPy oracle, and bad input
raises an error naming the argument."""
import numpy as np
import pytest

from pyaiml import ops

BACKENDS = ["cpp", "numba", "numpy"]


def _rows(rng, Hq, Hk, lens, D, Dv, Tmax=None, dtype=np.float32):
    keys, values = [], []
    for L in lens:
        T = max(L, 1) + 7 if Tmax is None else Tmax
        kc = rng.standard_normal((Hk, T, D)).astype(dtype)
        vc = rng.standard_normal((Hk, T, Dv)).astype(dtype)
        keys.append(kc[:, :L])
        values.append(vc[:, :L])
    q = rng.standard_normal((len(lens), Hq, 1, D)).astype(dtype)
    return q, keys, values


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("Hq,Hk,lens,D,Dv", [(4, 4, [1, 5, 37, 128, 2], 32, 32), (8, 2, [3, 64, 17], 16, 24),
                                             (12, 12, [1030, 7, 1100], 64, 64), (2, 1, [9], 8, 8),
                                             (4, 4, [0, 6], 16, 16)])
def test_each_row_equals_its_own_call(backend, Hq, Hk, lens, D, Dv, rng, monkeypatch):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    if backend == "numpy" and max(lens) > 200:
        pytest.skip("long rows: compiled backends only")
    q, keys, values = _rows(rng, Hq, Hk, lens, D, Dv)
    got = ops.attention_rows(q, keys, values)
    assert got.shape == (len(lens), Hq, 1, Dv) and got.dtype == np.float32
    for n, L in enumerate(lens):
        if L == 0:
            np.testing.assert_array_equal(got[n], 0)
            continue
        one = ops.scaled_dot_product_attention(q[n:n + 1], keys[n][None], values[n][None], enable_gqa=Hk != Hq)
        np.testing.assert_array_equal(got[n:n + 1], one)
        G = Hq // Hk
        k = np.repeat(keys[n].astype(np.float64), G, axis=0)
        v = np.repeat(values[n].astype(np.float64), G, axis=0)
        s = q[n].astype(np.float64) @ k.transpose(0, 2, 1) / np.sqrt(D)
        p = np.exp(s - s.max(-1, keepdims=True))
        want = (p / p.sum(-1, keepdims=True)) @ v
        np.testing.assert_allclose(got[n], want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_several_queries_scale_and_float64(backend, rng, monkeypatch):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    q, keys, values = _rows(rng, 4, 2, [5, 9], 8, 8)
    q = np.repeat(q, 3, axis=2) + rng.standard_normal((2, 4, 3, 8)).astype(np.float32)
    got = ops.attention_rows(q, keys, values, scale=0.3)
    for n in range(2):
        one = ops.scaled_dot_product_attention(q[n:n + 1], keys[n][None], values[n][None], scale=0.3,
                                               enable_gqa=True)
        np.testing.assert_array_equal(got[n:n + 1], one)
    got64 = ops.attention_rows(q.astype(np.float64), [k.astype(np.float64) for k in keys],
                               [v.astype(np.float64) for v in values], scale=0.3)
    assert got64.dtype == np.float64
    np.testing.assert_allclose(got64, got, rtol=1e-5, atol=1e-6)


def test_cache_views_are_read_in_place_without_changing_bits(rng):
    kc = rng.standard_normal((3, 4, 50, 16)).astype(np.float32)
    vc = rng.standard_normal((3, 4, 50, 16)).astype(np.float32)
    lens = [50, 13, 1]
    q = rng.standard_normal((3, 4, 1, 16)).astype(np.float32)
    views = ops.attention_rows(q, [kc[i, :, :L] for i, L in enumerate(lens)], [vc[i, :, :L] for i, L in enumerate(lens)])
    copies = ops.attention_rows(q, [kc[i, :, :L].copy() for i, L in enumerate(lens)],
                                [vc[i, :, :L].copy() for i, L in enumerate(lens)])
    np.testing.assert_array_equal(views, copies)
    strided = ops.attention_rows(q, [kc[i, :, :L, :] for i, L in enumerate(lens)],
                                 [np.asfortranarray(vc[i, :, :L]) for i, L in enumerate(lens)])
    np.testing.assert_array_equal(strided, copies)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_names_the_argument(backend, rng, monkeypatch):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    q, keys, values = _rows(rng, 4, 4, [3, 5], 8, 8)
    with pytest.raises(ValueError, match="one array per batch row"):
        ops.attention_rows(q, keys[:1], values)
    with pytest.raises(ValueError, match=r"keys\[1\]"):
        ops.attention_rows(q, [keys[0], keys[1][:, :, :4]], values)
    with pytest.raises(ValueError, match=r"values\[0\]"):
        ops.attention_rows(q, keys, [values[0][:, :2], values[1]])
    with pytest.raises(ValueError, match=r"keys\[0\]"):
        ops.attention_rows(q, [keys[0][None], keys[1]], values)
    with pytest.raises(TypeError, match=r"keys\[1\]"):
        ops.attention_rows(q, [keys[0], "x"], values)
    with pytest.raises(ValueError, match="heads"):
        ops.attention_rows(q, [keys[0][:3], keys[1]], [values[0][:3], values[1]])
    with pytest.raises(ValueError, match="q must be 4-D"):
        ops.attention_rows(q[0], keys, values)
    with pytest.raises(TypeError, match="float32 or float64"):
        ops.attention_rows(q.astype(np.int32), keys, values)
    with pytest.raises(ValueError, match="scale"):
        ops.attention_rows(q, keys, values, scale=float("nan"))
    with pytest.raises(TypeError, match="sequences"):
        ops.attention_rows(q, np.stack([keys[0], keys[0]]), values)


@pytest.mark.parametrize("backend", BACKENDS)
def test_other_dtypes_and_layouts(backend, rng, monkeypatch):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    q, keys, values = _rows(rng, 4, 4, [3, 5], 8, 8)
    base = ops.attention_rows(q, keys, values)
    got = ops.attention_rows(q, [k.astype(np.float64) for k in keys], [np.asfortranarray(v) for v in values])
    np.testing.assert_array_equal(got, base)
    with pytest.raises(TypeError, match=r"keys\[0\].*float32 or float64"):
        ops.attention_rows(q, [keys[0].astype(np.int64), keys[1]], values)


def test_keys_that_are_not_a_list_are_named(rng):
    q, keys, values = _rows(rng, 4, 4, [3, 5], 8, 8)
    with pytest.raises(TypeError, match="keys and values must be sequences"):
        ops.attention_rows(q, None, values)
    with pytest.raises(TypeError, match="keys and values must be sequences"):
        ops.attention_rows(q, keys, iter(values))
    assert ops.attention_rows(q, tuple(keys), tuple(values)).shape == (2, 4, 1, 8)
