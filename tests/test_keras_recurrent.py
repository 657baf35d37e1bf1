"""Recurrent layers of pyaiml.keras (SimpleRNN, LSTM, GRU, Bidirectional) on the tape.

What it checks: forward values and the gradients of the inputs, the initial states and
every weight against torch in float64: torch.nn.RNN / LSTM / GRU with the Keras weights
copied in (gate order mapped: Keras i,f,c,o = torch i,f,g,o; Keras z,r,h = torch r,z,n
reordered), and a step-by-step torch transcription of Keras's rules for what torch.nn has
no switch for (masks, zero_output_for_mask, GRU reset_after=False, other activations,
initial states, return_state: tests/rnn_transcription.py). Tolerance: 1e-9 absolute in float64 (the two sides sum the
same products in a different order). Also: masks from Embedding(mask_zero=True) equal
running each sequence unpadded, Bidirectional's merge modes, dropout's per-sequence mask,
Keras weight layouts and initialisers, the three ways to build a model, fit, save/load,
and the errors. What it is not: a speed test.
Run: PYTHONPATH=$PWD python -m pytest -q tests/test_keras_recurrent.py
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rnn_transcription import keras_recurrence

from pyaiml import keras
from pyaiml.autograd import GradientTape
from pyaiml.autograd import functional as F
from pyaiml.keras import layers

TOL = 1e-9
B, T, D, H = 3, 6, 4, 5
CLS = {"simple_rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}


def _t(a):
    return torch.tensor(np.asarray(a, dtype=np.float64))


def _make(kind, init_seed=0, **kw):
    seed = init_seed
    keras.utils.set_random_seed(seed)
    layer = CLS[kind](H, **kw)
    layer.build((T, D))
    layer._cast(np.float64)
    rs = np.random.default_rng(seed + 100)
    layer.set_weights([rs.normal(0, 0.5, w.shape) for w in layer.get_weights()])  # biases non-zero too
    return layer


def _run_pyaiml(layer, x, cotangents, initial_state=None, mask=None, training=False, extra_call_kw=None):
    """Outputs and gradients (x, initial states..., trainable weights...) of sum(out_i * cot_i)."""
    with GradientTape() as tape:
        xx = tape.watch(np.array(x))
        st = None if initial_state is None else [tape.watch(np.array(s)) for s in initial_state]
        kw = dict(extra_call_kw or {})
        if st is not None:
            kw["initial_state"] = st
        if mask is not None:
            kw["mask"] = mask
        out = layer(xx, training=training, **kw)
        outs = out if isinstance(out, list) else [out]
        loss = None
        for o, c in zip(outs, cotangents):
            term = F.sum(F.multiply(o, c))
            loss = term if loss is None else F.add(loss, term)
    srcs = [xx] + (st or []) + layer.trainable_variables
    grads = tape.gradient(loss, srcs)
    return [o.value for o in outs], grads


def _torch_side(kind, layer, x, cots, return_sequences, return_state, initial_state=None, **kw):
    ws = [_t(w).requires_grad_() for w in layer.get_weights()]
    W, U = ws[0], ws[1]
    b = ws[2] if len(ws) > 2 else None
    xt = _t(x).requires_grad_()
    st = [] if initial_state is None else [_t(s).requires_grad_() for s in initial_state]
    h0 = st[0] if st else None
    c0 = st[1] if len(st) > 1 else None
    seq, h, c = keras_recurrence(kind, xt, W, U, b, act=layer.activation.name,
                             ract=getattr(layer, "recurrent_activation", layer.activation).name,
                             reset_after=getattr(layer, "reset_after", True), h0=h0, c0=c0, **kw)
    out = seq if return_sequences else seq[:, -1]
    outs = [out] + ([h, c] if kind == "lstm" else [h]) if return_state else [out]
    loss = sum((o * _t(cc)).sum() for o, cc in zip(outs, cots))
    srcs = [xt] + st + ws
    grads = torch.autograd.grad(loss, srcs, allow_unused=True)
    return [o.detach().numpy() for o in outs], [None if g is None else g.numpy() for g in grads]


def _cots(kind, return_sequences, return_state, seed=7):
    rs = np.random.default_rng(seed)
    out = [rs.normal(size=(B, T, H) if return_sequences else (B, H))]
    if return_state:
        out += [rs.normal(size=(B, H)) for _ in range(2 if kind == "lstm" else 1)]
    return out


def _close(a, b, what):
    assert a is not None and b is not None, what
    np.testing.assert_allclose(a, b, atol=TOL, rtol=0, err_msg=what)


def _compare(kind, layer, x, return_sequences=False, return_state=False, initial_state=None, mask=None, **kw):
    cots = _cots(kind, return_sequences, return_state)
    po, pg = _run_pyaiml(layer, x, cots, initial_state=initial_state, mask=mask)
    to, tg = _torch_side(kind, layer, x, cots, return_sequences, return_state, initial_state=initial_state,
                         mask=mask, go_backwards=layer.go_backwards,
                         zero_output_for_mask=layer.zero_output_for_mask, **kw)
    assert len(po) == len(to) and len(pg) == len(tg)
    for i, (a, b) in enumerate(zip(po, to)):
        _close(a, b, f"output {i}")
    for i, (a, b) in enumerate(zip(pg, tg)):
        _close(a, b, f"gradient {i}")


# ---------------------------------------------------------------- against torch.nn modules
def _torch_module(kind, layer):
    """torch.nn.RNN/LSTM/GRU holding the Keras layer's weights (gate order mapped)."""
    ws = layer.get_weights()
    k, u = ws[0], ws[1]
    b = ws[2] if len(ws) > 2 else None
    bias = b is not None
    if kind == "lstm":
        m = torch.nn.LSTM(D, H, batch_first=True, bias=bias)
        perm = np.arange(4 * H)  # i, f, c(g), o: the same order
        bih, bhh = (b, np.zeros_like(b)) if bias else (None, None)
    elif kind == "gru":
        m = torch.nn.GRU(D, H, batch_first=True, bias=bias)
        perm = np.r_[np.arange(H, 2 * H), np.arange(H), np.arange(2 * H, 3 * H)]  # torch r, z, n <- keras z, r, h
        bih, bhh = (b[0], b[1]) if bias else (None, None)
    else:
        m = torch.nn.RNN(D, H, batch_first=True, bias=bias, nonlinearity=layer.activation.name)
        perm = np.arange(H)
        bih, bhh = (b, np.zeros_like(b)) if bias else (None, None)
    m = m.double()
    with torch.no_grad():
        m.weight_ih_l0.copy_(_t(k[:, perm].T))
        m.weight_hh_l0.copy_(_t(u[:, perm].T))
        if bias:
            m.bias_ih_l0.copy_(_t(bih[perm]))
            m.bias_hh_l0.copy_(_t(bhh[perm]))
    return m, perm


CASES = [("simple_rnn", {}), ("simple_rnn", {"activation": "relu"}), ("lstm", {}), ("gru", {})]


@pytest.mark.parametrize("kind,kw", CASES, ids=["rnn_tanh", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("use_bias", [True, False])
def test_against_torch_nn(kind, kw, return_sequences, go_backwards, use_bias):
    layer = _make(kind, return_sequences=return_sequences, go_backwards=go_backwards, use_bias=use_bias, **kw)
    x = np.random.default_rng(1).normal(size=(B, T, D))
    m, perm = _torch_module(kind, layer)
    xt = _t(x).requires_grad_()
    seq, _ = m(xt.flip(1) if go_backwards else xt)
    out = seq if return_sequences else seq[:, -1]
    cot = _cots(kind, return_sequences, False)[0]
    (out * _t(cot)).sum().backward()
    po, pg = _run_pyaiml(layer, x, [cot])
    _close(po[0], out.detach().numpy(), "output")
    inv = np.argsort(perm)
    _close(pg[0], xt.grad.numpy(), "input gradient")
    _close(pg[1], m.weight_ih_l0.grad.numpy()[inv].T, "kernel gradient")
    _close(pg[2], m.weight_hh_l0.grad.numpy()[inv].T, "recurrent_kernel gradient")
    if use_bias:
        gih, ghh = m.bias_ih_l0.grad.numpy()[inv], m.bias_hh_l0.grad.numpy()[inv]
        if kind == "gru":
            _close(pg[3], np.stack([gih, ghh]), "bias gradient")
        else:
            _close(pg[3], gih, "bias gradient")  # torch's two biases get the same gradient
    else:
        assert len(pg) == 3


# ---------------------------------------------------------------- against the transcription (options torch.nn lacks)
def _pad_mask(seed=3):
    m = np.ones((B, T), dtype=bool)
    m[0, 4:] = False  # post-padding
    m[1, :2] = False  # pre-padding
    m[2, 1] = m[2, 3] = False  # holes
    return m


OPTION_CASES = [
    ("lstm", {}), ("gru", {}), ("gru", {"reset_after": False}), ("simple_rnn", {}),
    ("lstm", {"activation": "relu", "recurrent_activation": "tanh"}),
    ("gru", {"activation": "linear", "recurrent_activation": "sigmoid", "reset_after": False}),
    ("simple_rnn", {"activation": "sigmoid"}), ("lstm", {"use_bias": False}), ("gru", {"use_bias": False}),
]


@pytest.mark.parametrize("kind,kw", OPTION_CASES)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("seq_state", [(True, False), (False, True), (True, True)])
def test_options_against_transcription(kind, kw, masked, go_backwards, seq_state):
    return_sequences, return_state = seq_state
    layer = _make(kind, return_sequences=return_sequences, return_state=return_state, go_backwards=go_backwards,
                  **kw)
    x = np.random.default_rng(2).normal(size=(B, T, D))
    _compare(kind, layer, x, return_sequences, return_state, mask=_pad_mask() if masked else None)


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn"])
@pytest.mark.parametrize("masked", [False, True])
def test_initial_state_gradients(kind, masked):
    layer = _make(kind, return_sequences=True, return_state=True)
    rs = np.random.default_rng(4)
    x = rs.normal(size=(B, T, D))
    st = [rs.normal(size=(B, H)) for _ in range(2 if kind == "lstm" else 1)]
    _compare(kind, layer, x, True, True, initial_state=st, mask=_pad_mask() if masked else None)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_zero_output_for_mask(kind):
    layer = _make(kind, return_sequences=True, zero_output_for_mask=True)
    x = np.random.default_rng(5).normal(size=(B, T, D))
    _compare(kind, layer, x, True, False, mask=_pad_mask())


def test_fully_padded_row_gives_zero_output():
    layer = _make("lstm")
    x = np.random.default_rng(6).normal(size=(B, T, D))
    m = np.ones((B, T), bool)
    m[1] = False
    _compare("lstm", layer, x, False, False, mask=m)
    out = layer(x, mask=m)
    assert np.all(out[1] == 0) and np.all(out[0] != 0)


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn"])
def test_padded_steps_keep_the_state_exactly(kind):
    layer = CLS[kind](4, return_sequences=True, return_state=True)
    x = np.random.default_rng(11).normal(size=(2, 6, 3)).astype(np.float32)
    m = np.ones((2, 6), bool)
    m[0, 3:] = False
    out = layer(x, mask=m)
    seq, h = out[0], out[1]
    assert np.array_equal(seq[0, 3:], np.repeat(seq[0, 2:3], 3, axis=0))  # previous output repeated, bit for bit
    assert np.array_equal(h[0], seq[0, 2]) and np.array_equal(h[1], seq[1, 5])


# ---------------------------------------------------------------- masks from Embedding
@pytest.mark.parametrize("cls", [layers.LSTM, layers.GRU, layers.SimpleRNN])
def test_embedding_mask_equals_unpadded_sequences(cls):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([layers.Embedding(20, 4, mask_zero=True), cls(6)])
    ids = np.array([[3, 5, 7, 0, 0], [2, 9, 4, 11, 6], [8, 0, 0, 0, 0]])
    out = model.predict(ids, verbose=0)
    emb, rnn = model.layers
    for i, n in enumerate([3, 5, 1]):
        ref = rnn(emb(ids[i:i + 1, :n]))
        np.testing.assert_allclose(out[i], ref[0], rtol=1e-5, atol=1e-6)
    model.compile("adam", "mse")
    h = model.fit(ids, np.zeros((3, 6), np.float32), epochs=2, verbose=0)
    assert np.isfinite(h.history["loss"]).all()


def test_functional_mask_reaches_lstm_and_return_sequences_passes_it_on():
    keras.utils.set_random_seed(1)
    inp = keras.Input(shape=(None,), dtype="int64")
    e = layers.Embedding(30, 4, mask_zero=True)(inp)
    s = layers.LSTM(5, return_sequences=True)(e)
    o = layers.GlobalAveragePooling1D()(s)  # averages over the real steps only
    model = keras.Model(inp, o)
    ids = np.array([[4, 6, 0, 0], [1, 2, 3, 5]])
    out = model.predict(ids, verbose=0)
    emb, lstm = model.get_layer(index=1), model.get_layer(index=2)
    seq = lstm(emb(ids[:1, :2]))
    np.testing.assert_allclose(out[0], seq[0].mean(axis=0), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- Bidirectional
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_bidirectional_against_transcription(merge_mode, return_sequences, masked):
    keras.utils.set_random_seed(2)
    bi = layers.Bidirectional(layers.LSTM(H, return_sequences=return_sequences), merge_mode=merge_mode)
    bi.build((T, D))
    bi._cast(np.float64)
    rs = np.random.default_rng(8)
    bi.set_weights([rs.normal(0, 0.5, w.shape) for w in bi.get_weights()])
    x = rs.normal(size=(B, T, D))
    mask = _pad_mask() if masked else None
    shape = (B, T, H) if return_sequences else (B, H)
    n_out = 2 if merge_mode is None else 1
    width = 2 * H if merge_mode == "concat" else H
    cots = [rs.normal(size=shape[:-1] + (width,)) for _ in range(n_out)]
    po, pg = _run_pyaiml(bi, x, cots, mask=mask)

    ws = [_t(w).requires_grad_() for w in bi.get_weights()]
    xt = _t(x).requires_grad_()
    zo = return_sequences
    yf, _, _ = keras_recurrence("lstm", xt, *ws[:3], mask=mask, zero_output_for_mask=zo)
    yb, _, _ = keras_recurrence("lstm", xt, *ws[3:], mask=mask, go_backwards=True, zero_output_for_mask=zo)
    if return_sequences:
        yb = yb.flip(1)
    else:
        yf, yb = yf[:, -1], yb[:, -1]
    outs = {"concat": lambda: [torch.cat([yf, yb], -1)], "sum": lambda: [yf + yb], "mul": lambda: [yf * yb],
            "ave": lambda: [(yf + yb) / 2], None: lambda: [yf, yb]}[merge_mode]()
    loss = sum((o * _t(c)).sum() for o, c in zip(outs, cots))
    tg = torch.autograd.grad(loss, [xt] + ws)
    for a, b in zip(po, outs):
        _close(a, b.detach().numpy(), "output")
    for i, (a, b) in enumerate(zip(pg, tg)):
        _close(a, b.numpy(), f"gradient {i}")


@pytest.mark.parametrize("kind", ["gru", "simple_rnn"])
@pytest.mark.parametrize("return_state", [False, True])
def test_bidirectional_other_layers_against_transcription(kind, return_state):
    keras.utils.set_random_seed(4)
    bi = layers.Bidirectional(CLS[kind](H, return_sequences=True, return_state=return_state))
    bi.build((T, D))
    bi._cast(np.float64)
    rs = np.random.default_rng(9)
    bi.set_weights([rs.normal(0, 0.5, w.shape) for w in bi.get_weights()])
    x = rs.normal(size=(B, T, D))
    mask = _pad_mask()
    cots = [rs.normal(size=(B, T, 2 * H))] + ([rs.normal(size=(B, H)) for _ in range(2)] if return_state else [])
    po, pg = _run_pyaiml(bi, x, cots, mask=mask)
    ws = [_t(w).requires_grad_() for w in bi.get_weights()]
    xt = _t(x).requires_grad_()
    yf, hf, _ = keras_recurrence(kind, xt, *ws[:3], mask=mask, zero_output_for_mask=True)
    yb, hb, _ = keras_recurrence(kind, xt, *ws[3:], mask=mask, go_backwards=True, zero_output_for_mask=True)
    outs = [torch.cat([yf, yb.flip(1)], -1)] + ([hf, hb] if return_state else [])
    loss = sum((o * _t(c)).sum() for o, c in zip(outs, cots))
    tg = torch.autograd.grad(loss, [xt] + ws)
    for a, b in zip(po, outs):
        _close(a, b.detach().numpy(), "output")
    for i, (a, b) in enumerate(zip(pg, tg)):
        _close(a, b.numpy(), f"gradient {i}")


def test_bidirectional_return_state_and_shapes():
    bi = layers.Bidirectional(layers.GRU(4, return_sequences=True, return_state=True))
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    out = bi(x)
    assert [o.shape for o in out] == [(2, 5, 8), (2, 4), (2, 4)]
    assert bi.compute_output_shape((5, 3)) == [(5, 8), (4,), (4,)]
    names = [w.name for w in bi.variables]
    assert names[0].startswith("forward_gru") and names[3].startswith("backward_gru")
    assert [w.shape for w in bi.get_weights()] == [(3, 12), (4, 12), (2, 12)] * 2


# ---------------------------------------------------------------- weights, initialisers, dropout
def test_keras_weight_layouts_and_initialisers():
    keras.utils.set_random_seed(0)
    lstm, gru, gru0, rnn = layers.LSTM(8), layers.GRU(8), layers.GRU(8, reset_after=False), layers.SimpleRNN(8)
    for layer in (lstm, gru, gru0, rnn):
        layer.build((None, 3))
    assert [w.shape for w in lstm.get_weights()] == [(3, 32), (8, 32), (32,)]
    assert [w.shape for w in gru.get_weights()] == [(3, 24), (8, 24), (2, 24)]
    assert [w.shape for w in gru0.get_weights()] == [(3, 24), (8, 24), (24,)]
    assert [w.shape for w in rnn.get_weights()] == [(3, 8), (8, 8), (8,)]
    b = lstm.get_weights()[2]
    assert np.all(b[8:16] == 1) and np.all(b[:8] == 0) and np.all(b[16:] == 0)  # unit_forget_bias
    u = rnn.get_weights()[1]
    np.testing.assert_allclose(u @ u.T, np.eye(8), atol=1e-5)  # orthogonal recurrent kernel
    u4 = lstm.get_weights()[1]  # (8, 32): orthonormal rows
    np.testing.assert_allclose(u4 @ u4.T, np.eye(8), atol=1e-5)
    assert layers.LSTM(8, unit_forget_bias=False, bias_initializer="ones").get_config()["unit_forget_bias"] is False


def test_set_weights_round_trip_and_counts():
    layer = layers.LSTM(4)
    layer.build((None, 3))
    ws = [np.random.default_rng(i).normal(size=w.shape).astype(np.float32) for i, w in enumerate(layer.get_weights())]
    layer.set_weights(ws)
    for a, b in zip(layer.get_weights(), ws):
        np.testing.assert_array_equal(a, b)
    assert layer.count_params() == 3 * 16 + 4 * 16 + 16
    with pytest.raises(ValueError, match="recurrent_kernel"):
        layer.set_weights([ws[0], ws[0], ws[2]])


def test_dropout_is_one_input_mask_per_sequence():
    layer = _make("lstm", dropout=0.5, seed=3, return_sequences=True)
    x = np.random.default_rng(9).normal(size=(B, T, D))
    keep = np.random.default_rng(3).random((B, 1, D), dtype=np.float32) >= 0.5
    ref = _make("lstm", return_sequences=True)
    np.testing.assert_allclose(layer(x, training=True), ref(x * keep * 2.0), atol=1e-12)
    np.testing.assert_allclose(layer(x, training=False), ref(x), atol=1e-12)


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn"])
def test_dropout_gradients_against_transcription(kind):
    layer = _make(kind, dropout=0.3, seed=5, return_sequences=True)
    x = np.random.default_rng(10).normal(size=(B, T, D))
    keep = np.random.default_rng(5).random((B, 1, D), dtype=np.float32) >= 0.3
    cots = _cots(kind, True, False)
    po, pg = _run_pyaiml(layer, x, cots, mask=_pad_mask(), training=True)
    ws = [_t(w).requires_grad_() for w in layer.get_weights()]
    xt = _t(x).requires_grad_()
    seq, _, _ = keras_recurrence(kind, xt * _t(keep / 0.7), *ws, act=layer.activation.name, mask=_pad_mask())
    tg = torch.autograd.grad((seq * _t(cots[0])).sum(), [xt] + ws)
    _close(po[0], seq.detach().numpy(), "output")
    for i, (a, b) in enumerate(zip(pg, tg)):
        _close(a, b.numpy(), f"gradient {i}")


# ---------------------------------------------------------------- the three ways to build a model, fit, save/load
def _seq_data(n=64, seed=0):
    rs = np.random.default_rng(seed)
    x = rs.normal(size=(n, 7, 3)).astype(np.float32)
    y = (x[:, :, 0].sum(axis=1) > 0).astype(np.int64)  # needs the whole sequence
    return x, y


def test_sequential_fit_and_save_load(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = _seq_data()
    model = keras.Sequential([keras.Input(shape=(7, 3)), layers.Bidirectional(layers.LSTM(8, return_sequences=True)),
                              layers.GRU(6), layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy", metrics=["accuracy"])
    h = model.fit(x, y, epochs=8, batch_size=16, verbose=0)
    assert h.history["loss"][-1] < 0.8 * h.history["loss"][0]
    p = tmp_path / "rnn.keras"
    model.save(p)
    back = keras.models.load_model(p)
    np.testing.assert_allclose(back.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-7)
    assert [type(layer).__name__ for layer in back.layers][-3:] == ["Bidirectional", "GRU", "Dense"]
    model.set_weights(model.get_weights())


def test_functional_fit_and_save_load(tmp_path):
    keras.utils.set_random_seed(1)
    x, y = _seq_data(seed=1)
    inp = keras.Input(shape=(None, 3))
    seq, h, c = layers.LSTM(8, return_sequences=True, return_state=True)(inp)
    s2 = layers.SimpleRNN(8)(seq, initial_state=[h])
    out = layers.Dense(2, activation="softmax")(layers.Concatenate()([s2, c]))
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy")
    hist = model.fit(x, y, epochs=6, batch_size=16, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    p = tmp_path / "f.keras"
    model.save(p)
    back = keras.models.load_model(p)
    np.testing.assert_allclose(back.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-7)


@keras.saving.register_keras_serializable(package="RecurrentTest")
class _Classifier(keras.Model):
    def __init__(self, units=8, **kw):
        super().__init__(**kw)
        self.units = units
        self.rnn = layers.Bidirectional(layers.GRU(units), merge_mode="sum")
        self.head = layers.Dense(2, activation="softmax")

    def call(self, x, training=False):
        return self.head(self.rnn(x, training=training))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_subclassed_fit_and_save_load(tmp_path):
    keras.utils.set_random_seed(2)
    x, y = _seq_data(seed=2)
    model = _Classifier()
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy")
    hist = model.fit(x, y, epochs=6, batch_size=16, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert len(model.trainable_variables) == 3 * 2 + 2
    p = tmp_path / "s.keras"
    model.save(p)
    back = keras.models.load_model(p)
    np.testing.assert_allclose(back.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-7)


def test_encoder_decoder_with_states_learns_to_reverse():
    """keras.io's character-level sequence-to-sequence wiring: the encoder's final [h, c]
    start the decoder (teacher forcing); the task is reversing a sequence of 5 symbols."""
    keras.utils.set_random_seed(3)
    rs = np.random.default_rng(3)
    n, L, V = 256, 5, 6
    src = rs.integers(1, V, (n, L))
    tgt = src[:, ::-1]
    dec_in = np.concatenate([np.zeros((n, 1), np.int64), tgt[:, :-1]], axis=1)  # 0 = start
    enc_inputs = keras.Input(shape=(None, V))
    _, state_h, state_c = layers.LSTM(32, return_state=True)(enc_inputs)
    dec_inputs = keras.Input(shape=(None, V))
    dec_seq, _, _ = layers.LSTM(32, return_sequences=True, return_state=True)(dec_inputs,
                                                                            initial_state=[state_h, state_c])
    outputs = layers.Dense(V, activation="softmax")(dec_seq)
    model = keras.Model([enc_inputs, dec_inputs], outputs)
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy", metrics=["accuracy"])
    onehot = np.eye(V, dtype=np.float32)
    h = model.fit([onehot[src], onehot[dec_in]], tgt, epochs=15, batch_size=32, verbose=0)
    assert h.history["accuracy"][-1] > 0.75  # ~0.96 reached; chance is 0.2 without the encoder's states
    assert h.history["loss"][-1] < 0.6 * h.history["loss"][0]


def test_config_round_trip():
    for layer in (layers.LSTM(3, return_sequences=True, go_backwards=True, unit_forget_bias=False),
                  layers.GRU(4, reset_after=False, activation="relu", dropout=0.25),
                  layers.SimpleRNN(2, activation="linear", use_bias=False),
                  layers.Bidirectional(layers.LSTM(3), merge_mode="mul")):
        cfg = layer.get_config()
        again = type(layer).from_config(cfg).get_config()
        assert again == cfg


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("make,match", [
    (lambda: layers.LSTM(0), "units must be a positive integer"),
    (lambda: layers.GRU(4, recurrent_dropout=1.0), "recurrent_dropout must be in"),
    (lambda: layers.SimpleRNN(4, activation="softmax"), "activation must be one of"),
    (lambda: layers.LSTM(4, dropout=1.0), "dropout must be in"),
    (lambda: layers.Bidirectional(layers.LSTM(4), merge_mode="max"), "merge_mode"),
    (lambda: layers.Bidirectional(layers.LSTM(4), backward_layer=layers.LSTM(4)), "go_backwards"),
])
def test_constructor_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bidirectional_needs_a_recurrent_layer():
    with pytest.raises(TypeError, match="layer must be a SimpleRNN, LSTM or GRU instance. Received Dense"):
        layers.Bidirectional(layers.Dense(4))


def test_integer_features_are_taken_as_floats():
    layer = layers.GRU(3)
    x = np.arange(24).reshape(2, 4, 3) % 3
    np.testing.assert_array_equal(layer(x), layer(x.astype(np.float32)))
    with pytest.raises(TypeError, match="inputs must be numbers. Received dtype <U1"):
        layer(np.full((2, 4, 3), "a"))


def test_call_errors():
    layer = layers.LSTM(4)
    with pytest.raises(ValueError, match=r"expects inputs of shape \(batch, steps, features\)"):
        layer(np.zeros((2, 3), np.float32))
    x = np.zeros((2, 3, 5), np.float32)
    with pytest.raises(ValueError, match=r"initial_state must be a list of 2"):
        layer(x, initial_state=[np.zeros((2, 4), np.float32)])
    with pytest.raises(ValueError, match=r"shape \(batch, units\) = \(2, 4\)"):
        layer(x, initial_state=[np.zeros((2, 3), np.float32)] * 2)
    with pytest.raises(ValueError, match=r"mask must have shape \(batch, steps\) = \(2, 3\)"):
        layer(x, mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="does not fit"):
        keras.Sequential([keras.Input(shape=(3, 5)), layers.LSTM(4)]).predict(np.zeros((2, 3, 6)), verbose=0)


def test_dp_sgd_names_the_recurrent_layer_it_cannot_clip():
    pytest.importorskip("dp_accounting")
    from pyaiml.privacy import DPSGD

    model = keras.Sequential([keras.Input(shape=(5, 3)), layers.Bidirectional(layers.LSTM(4)), layers.Dense(2)])
    model.build()
    with pytest.raises(ValueError, match=r"'forward_lstm[_0-9]*' \(LSTM\) has trainable weights .* no per-example"):
        model.compile(DPSGD(l2_norm_clip=1.0, noise_multiplier=1.0), "mse")
