"""Tests of the functional API (pyaiml/keras/functional.py, merging.py, serialization.py).

What they are: a two-input, two-output graph with a shared layer, branches and every merge
(Add, Subtract, Multiply, Concatenate), its values and gradients against the same network
in torch (float64); training it with targets as lists and dicts, per-output losses,
loss_weights and metrics, and the log names; keras.ops and arithmetic on symbolic tensors;
unknown sizes (variable-length token ids); summary() alignment with long names; save and
load (graph, custom registered layer, op nodes, optimizer state); and the errors: merges of
mismatched shapes, a disconnected or unused input, an unregistered class at load.
Run: PYTHONPATH=$PWD python -m pytest -q tests/test_keras_functional.py
"""
import numpy as np
import pytest

from pyaiml import keras
from pyaiml.autograd import GradientTape
from pyaiml.keras import layers, ops

torch = pytest.importorskip("torch")


def R(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _graph():
    a = keras.Input((4,), name="a")
    b = keras.Input((3,), name="b")
    pa = layers.Dense(6, name="pa")(a)
    pb = layers.Dense(6, activation="relu", name="pb")(b)
    shared = layers.Dense(5, activation="tanh", name="shared")
    sa, sb = shared(pa), shared(pb)
    m1 = layers.Add(name="add")([sa, sb])
    m2 = layers.Subtract(name="sub")([sa, sb])
    m3 = layers.Multiply(name="mul")([m1, m2])
    cat = layers.Concatenate(name="cat")([m3, pa])
    cls = layers.Dense(3, activation="softmax", name="cls")(cat)
    reg = layers.Dense(1, name="reg")(m1)
    return keras.Model([a, b], [cls, reg], name="two_heads")


def test_graph_values_and_gradients_match_torch():
    m = _graph()
    assert m.input_names == ["a", "b"] and m.output_names == ["cls", "reg"]
    assert [type(l).__name__ for l in m.layers][:2] == ["InputLayer", "InputLayer"]
    m._cast(np.float64)
    for v in m.variables:
        v.value[...] = R(*v.shape, seed=v.size + len(v.name)) * 0.6
    xa, xb = R(7, 4, seed=1), R(7, 3, seed=2)
    c1, c2 = R(7, 3, seed=3), R(7, 1, seed=4)
    tv = m.trainable_variables
    assert len(tv) == 10  # the shared layer's weights once
    with GradientTape() as tape:
        y1, y2 = m([xa, xb])
        loss = ops.sum(y1 * c1) + ops.sum(y2 * c2)
    grads = tape.gradient(loss, tv)
    T = {v.name: torch.tensor(v.value, requires_grad=True) for v in tv}

    def dense(name, x):
        return x @ T[f"{name}/kernel"] + T[f"{name}/bias"]
    ta, tb = torch.tensor(xa), torch.tensor(xb)
    pa, pb = dense("pa", ta), torch.relu(dense("pb", tb))
    sa, sb = torch.tanh(dense("shared", pa)), torch.tanh(dense("shared", pb))
    m1, m2 = sa + sb, sa - sb
    t1 = torch.softmax(dense("cls", torch.cat([m1 * m2, pa], -1)), -1)
    t2 = dense("reg", m1)
    np.testing.assert_allclose(y1.value, t1.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(y2.value, t2.detach().numpy(), rtol=1e-10)
    ((t1 * torch.tensor(c1)).sum() + (t2 * torch.tensor(c2)).sum()).backward()
    for v, g in zip(tv, grads):
        np.testing.assert_allclose(g, T[v.name].grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=v.name)
    # inference on arrays (no tape: the layers' fast path): plain arrays, the same numbers
    p1, _ = m([xa, xb])
    assert type(p1) is np.ndarray
    np.testing.assert_allclose(p1, y1.value, rtol=1e-10)
    np.testing.assert_allclose(m.predict([xa, xb])[1], y2.value, rtol=1e-5)  # predict feeds float32


def _data(n=240, seed=0):
    r = np.random.default_rng(seed)
    xa, xb = r.standard_normal((n, 4)).astype(np.float32), r.standard_normal((n, 3)).astype(np.float32)
    ycls = (xa[:, 0] + xb[:, 0] > 0).astype(np.int64) + (xa[:, 1] > 1)
    yreg = (xa[:, :1] - xb[:, 1:2]).astype(np.float32)
    return xa, xb, ycls, yreg


def test_fit_with_lists_and_dicts_loss_weights_and_metrics():
    keras.utils.set_random_seed(0)
    xa, xb, ycls, yreg = _data()
    m = _graph()
    m.compile(keras.optimizers.Adam(0.02), loss={"cls": "sparse_categorical_crossentropy", "reg": "mse"},
              loss_weights={"cls": 1.0, "reg": 0.5}, metrics={"cls": ["accuracy"]})
    h = m.fit({"a": xa, "b": xb}, {"cls": ycls, "reg": yreg}, epochs=10, batch_size=32, verbose=0,
              validation_data=([xa[:40], xb[:40]], [ycls[:40], yreg[:40]]))
    assert set(h.history) == {"loss", "cls_loss", "reg_loss", "cls_accuracy", "val_loss", "val_cls_loss",
                              "val_reg_loss", "val_cls_accuracy"}
    for k in ("cls_loss", "reg_loss"):
        assert h.history[k][-1] < 0.6 * h.history[k][0], k
    np.testing.assert_allclose(h.history["loss"][-1], h.history["cls_loss"][-1] + 0.5 * h.history["reg_loss"][-1],
                               rtol=1e-5)
    r = m.evaluate([xa, xb], [ycls, yreg], verbose=0, return_dict=True)
    assert r["cls_accuracy"] > 0.8
    m.compile("adam", ["sparse_categorical_crossentropy", "mse"], metrics=[["accuracy"], []])
    out = m.train_on_batch([xa[:8], xb[:8]], [ycls[:8], yreg[:8]], return_dict=True)
    assert set(out) == {"loss", "cls_loss", "reg_loss", "cls_accuracy"}
    with pytest.raises(ValueError, match=r"has 2 output\(s\) \(\['cls', 'reg'\]\); received 1 target"):
        m.fit([xa, xb], ycls, verbose=0)
    with pytest.raises(ValueError, match=r"no value for input\(s\) \['b'\]"):
        m.predict({"a": xa})
    with pytest.raises(ValueError, match=r"input 'b' expects shape \(None, 3\). Received \(5, 4\)"):
        m.predict([xa[:5], xa[:5]])


def test_ops_and_arithmetic_on_symbolic_tensors(tmp_path):
    inp = keras.Input((6,), name="x")
    h = layers.Dense(6, name="d")(inp)
    z = ops.concatenate([h * 2.0 + inp, ops.exp(-ops.abs(h))], axis=-1)
    z = z[:, 1:10]
    out = ops.softmax(layers.Dense(4, name="head")(z))
    assert z.shape == (None, 9) and out.shape == (None, 4)
    m = keras.Model(inputs=inp, outputs=out)
    x = R(5, 6).astype(np.float32)
    hv = m.get_layer("d")(x)
    zv = np.concatenate([hv * 2 + x, np.exp(-np.abs(hv))], -1)[:, 1:10]
    want = ops.softmax(m.get_layer("head")(zv))
    np.testing.assert_allclose(m.predict(x), want, rtol=1e-5)
    m.compile("adam", "categorical_crossentropy")
    m.fit(x, np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]], epochs=2, verbose=0)
    p = tmp_path / "ops.keras"
    m.save(p)
    m2 = keras.models.load_model(p)
    np.testing.assert_allclose(m2.predict(x), m.predict(x), rtol=1e-6)


def test_variable_length_token_ids():
    keras.utils.set_random_seed(3)
    ids = keras.Input(shape=(None,), dtype="int32", name="tokens")
    h = layers.Embedding(20, 8)(ids)
    h = layers.MultiHeadAttention(2, 4)(h, h)
    h = layers.GlobalAveragePooling1D()(h)
    out = layers.Dense(2, activation="softmax")(h)
    assert h.shape == (None, 8)
    m = keras.Model(ids, out)
    r = np.random.default_rng(0)
    x = r.integers(1, 20, (64, 10))
    y = (x[:, 0] > 10).astype(int)
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert m.predict(x[:3, :7]).shape == (3, 2)  # another length


def test_summary_aligned_with_long_names():
    a = keras.Input((4,), name="a_rather_long_input_name_for_the_first_branch")
    d = layers.Dense(3, name="an_even_longer_dense_layer_name_that_pushes_the_columns_right")(a)
    out = layers.Add(name="merge")([d, layers.Dense(3, name="short")(a)])
    m = keras.Model(a, out, name="long_names")
    lines = []
    m.summary(print_fn=lines.append)
    head = next(ln for ln in lines if ln.startswith("Layer (type)"))
    col = head.index("Output Shape")
    rows = [ln for ln in lines if "(Dense)" in ln or "(Add)" in ln or "(InputLayer)" in ln]
    assert len(rows) == 4
    for ln in rows:
        assert ln[col] == "(" and ln[col - 2:col] == "  ", ln  # shapes start in the header's column
    pcol = head.index("Param #") + len("Param #")
    assert all(ln[pcol - 1].isdigit() for ln in rows)  # counts right-aligned under the header
    assert "merge (Add)" in "".join(lines) and "Total params: 30" in lines


@keras.saving.register_keras_serializable(package="tests")
class Scale(layers.Layer):
    def __init__(self, init=1.0, **kw):
        super().__init__(**kw)
        self.init = init

    def build(self, input_shape):
        self.s = self.add_weight(shape=(input_shape[-1],), initializer=self.init, name="s")

    def call(self, x):
        return x * self.s

    def get_config(self):
        return {**super().get_config(), "init": self.init}


def test_save_and_load_graph_with_custom_layer(tmp_path):
    keras.utils.set_random_seed(1)
    xa, xb, ycls, _ = _data(64)
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    h = Scale(0.5, name="scale")(layers.Concatenate()([a, b]))
    shared = layers.Dense(4, activation="relu")
    out = layers.Dense(3, activation="softmax", name="out")(layers.Add()([shared(h), shared(h * 2.0)]))
    m = keras.Model([a, b], out)
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit([xa, xb], ycls, epochs=2, verbose=0)
    p = tmp_path / "g.keras"
    m.save(p)
    m2 = keras.models.load_model(p)
    assert type(m2).__name__ == "Functional" and isinstance(m2.get_layer("scale"), Scale)
    np.testing.assert_allclose(m2.predict([xa, xb]), m.predict([xa, xb]), rtol=1e-6)
    assert m2.optimizer.iterations == m.optimizer.iterations
    m2.fit([xa, xb], ycls, epochs=1, verbose=0)
    cfg = m.get_config()
    assert [n["layer"] for n in cfg["nodes"]].count(shared.name) == 2


def test_unregistered_custom_layer_at_load_names_layer_and_class(tmp_path):
    class Plain(layers.Layer):
        def call(self, x):
            return x * 2.0

    inp = keras.Input((3,))
    m = keras.Model(inp, layers.Dense(2)(Plain(name="plain_one")(inp)))
    p = tmp_path / "u.keras"
    m.save(p)
    with pytest.raises(ValueError, match=r"layer 'plain_one' is of class 'Plain' \(module [\w.]+\), which is not "
                                         r"registered.*register_keras_serializable"):
        keras.models.load_model(p)
    m2 = keras.models.load_model(p, custom_objects={"Plain": Plain})
    np.testing.assert_allclose(m2.predict(np.ones((1, 3))), m.predict(np.ones((1, 3))))


def test_merge_shape_errors_name_the_layer_and_shapes():
    a, b = keras.Input((4,)), keras.Input((5,))
    with pytest.raises(ValueError, match=r"Layer 'bad_add' \(Add\) needs inputs of the same shape.*Received inputs "
                                         r"of shapes \(None, 4\), \(None, 5\)"):
        layers.Add(name="bad_add")([a, b])
    c = keras.Input((2, 3))
    d = keras.Input((4, 5))
    with pytest.raises(ValueError, match=r"Layer 'cat' \(Concatenate\) needs inputs whose shapes match except on axis "
                                         r"-1. Received inputs of shapes \(None, 2, 3\), \(None, 4, 5\)"):
        layers.Concatenate(name="cat")([c, d])
    with pytest.raises(ValueError, match=r"Layer 'sub' \(Subtract\) needs exactly 2 inputs. Received 3"):
        layers.Subtract(name="sub")([a, a, a])
    with pytest.raises(ValueError, match=r"'one' \(Add\) must be called on a list of tensors"):
        layers.Add(name="one")(a)
    with pytest.raises(ValueError, match=r"conv: Conv2D expects inputs of rank 4 .*Received input shape \(None, 4\)"):
        layers.Conv2D(3, 3, name="conv")(a)
    del d


def test_disconnected_and_unused_inputs():
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    out = layers.Add()([layers.Dense(2)(a), layers.Dense(2)(b)])
    with pytest.raises(ValueError, match=r"depends on Input 'b' \(shape \(None, 4\)\), which is not among the model's "
                                         r"inputs \('a'\): the graph is disconnected"):
        keras.Model(a, out)
    c = keras.Input((2,), name="c")
    with pytest.raises(ValueError, match=r"input 'c' \(shape \(None, 2\)\) is not connected to any output"):
        keras.Model([a, b, c], out)
    with pytest.raises(TypeError, match="outputs must be KerasTensors"):
        keras.Model(a, np.ones(3))
    with pytest.raises(TypeError, match="symbolic"):
        np.asarray(a)


def test_sequential_still_takes_an_input_tensor():
    s = keras.Sequential([keras.Input((3,)), layers.Dense(2)])
    assert s.built and s.predict(np.ones((2, 3))).shape == (2, 2)


def test_sequential_and_models_inside_a_graph(tmp_path):
    keras.utils.set_random_seed(4)
    augment = keras.Sequential([layers.Rescaling(0.5), layers.Dense(6, activation="relu")])
    inner_in = keras.Input((6,), name="inner_in")
    inner = keras.Model(inner_in, layers.Dense(4, name="inner_dense")(inner_in), name="inner")
    inp = keras.Input((3,), name="outer_in")
    h = augment(inp)
    out = layers.Dense(2, activation="softmax", name="top")(layers.Concatenate()([inner(h), h]))
    m = keras.Model(inp, out)
    assert len(m.trainable_variables) == 6 and m.count_params() == 3 * 6 + 6 + 6 * 4 + 4 + 10 * 2 + 2
    x = R(40, 3).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    m.compile("adam", "sparse_categorical_crossentropy")
    h0 = m.fit(x, y, epochs=4, verbose=0).history["loss"]
    assert h0[-1] < h0[0]
    before = inner.get_layer("inner_dense").kernel.copy()
    m.fit(x, y, epochs=1, verbose=0)
    assert not np.allclose(before, inner.get_layer("inner_dense").kernel)  # the nested model's weights train
    p = tmp_path / "nested.keras"
    m.save(p)
    m2 = keras.models.load_model(p)
    np.testing.assert_allclose(m2.predict(x), m.predict(x), rtol=1e-6)


def test_embedding_mask_reaches_attention_and_pooling_like_sequential():
    keras.utils.set_random_seed(5)
    emb, mha = layers.Embedding(12, 8, mask_zero=True), layers.MultiHeadAttention(2, 4)
    gap, head = layers.GlobalAveragePooling1D(), layers.Dense(3, activation="softmax")
    seq = keras.Sequential([keras.Input((6,)), emb, mha, gap, head])  # Sequential passes the mask (its own loop)
    ids = keras.Input((6,), dtype="int32")
    h = emb(ids)
    out = head(gap(mha(h, h)))
    m = keras.Model(ids, out)
    x = np.array([[3, 4, 5, 0, 0, 0], [7, 1, 2, 9, 11, 0], [5, 5, 5, 5, 5, 5]])
    np.testing.assert_allclose(m.predict(x), seq.predict(x), rtol=1e-5)
    # padding changes nothing: more zeros at the end give the same prediction
    x2 = np.array([[3, 4, 5, 0, 0, 0, 0, 0]])
    ids2 = keras.Input((None,), dtype="int32")
    h2 = emb(ids2)
    m2 = keras.Model(ids2, head(layers.GlobalAveragePooling1D()(mha(h2, h2))))
    np.testing.assert_allclose(m2.predict(x2), m2.predict(x2[:, :3]), rtol=1e-5)
    with GradientTape() as tape:  # on the tape too
        y = m(x, training=True)
    np.testing.assert_allclose(y.value, seq.predict(x), rtol=1e-5)
    assert tape is not None
