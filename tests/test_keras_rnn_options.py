"""recurrent_dropout and stateful=True of pyaiml.keras's SimpleRNN, LSTM, GRU (and Bidirectional).

What it checks. recurrent_dropout: the forward values and every gradient (inputs, weights)
in float64 against a step-by-step torch transcription of Keras 3's rule fed the same masks
(captured from the layer): for SimpleRNN one (batch, units) mask on the previous state; for
LSTM and GRU (both reset_after settings) Keras 3's implementation=1, one mask per gate on the
previous state inside the recurrent product and, with dropout > 0, one input mask per gate;
the state carried to the next step and the GRU's z * h_prev use the undropped state. With
and without a padding mask, go_backwards, inside Bidirectional; inference equals rate 0;
seeded reproducibility; float32 (LSTM leaves its fused kernel in training) against float64.
stateful: two consecutive calls equal one call on the concatenated steps (every layer
kind, float32 fused kernels and float64 scan, with a padding mask, go_backwards as the
reversed concatenation), ``states``, ``reset_state``/``reset_states``, the batch size error,
no gradient across calls, shape probes and builds leave the states alone (functional,
subclassed, load, a user's build() on zeros, the one-row runs of train_on_batch and
evaluate), fit of a stateful model lowers the loss, predict continues the states,
save/load keeps the flag and not the values, Bidirectional; the keras.io-style example
examples/keras_io/stateful_lstm_text.py trains briefly and generates. The placeholder-run
flag itself (pyaiml/keras/_common.py): nesting, restored after an exception, one per thread,
read by the layer. Tolerance: 1e-9 absolute in
float64 (same products summed in another order), 1e-5 for float32 against float64.
What it is not: a speed test.
Run: PYTHONPATH=$PWD python -m pytest -q tests/test_keras_rnn_options.py
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rnn_transcription import keras_recurrence

from pyaiml import keras
from pyaiml.autograd import GradientTape
from pyaiml.autograd import functional as F
from pyaiml.keras import layers
from pyaiml.keras import recurrent as R

TOL = 1e-9
B, T, D, H = 3, 6, 4, 5
CLS = {"simple_rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}
GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}
KINDS = [("simple_rnn", {}), ("lstm", {}), ("gru", {"reset_after": True}), ("gru", {"reset_after": False})]
KIND_IDS = ["rnn", "lstm", "gru", "gru_before"]


def _t(a):
    return torch.tensor(np.asarray(a, dtype=np.float64))


def _pad_mask():
    m = np.ones((B, T), dtype=bool)
    m[0, 4:] = False  # post-padding
    m[1, :2] = False  # pre-padding
    m[2, 1] = m[2, 3] = False  # holes
    return m


def _make(kind, init_seed=0, dtype=np.float64, **kw):
    keras.utils.set_random_seed(init_seed)
    layer = CLS[kind](H, **kw)
    layer.build((T, D))
    if dtype == np.float64:
        layer._cast(np.float64)
    rs = np.random.default_rng(init_seed + 100)
    layer.set_weights([rs.normal(0, 0.5, w.shape) for w in layer.get_weights()])
    return layer


@pytest.fixture
def drawn(monkeypatch):
    """The dropout multipliers the layers draw (through recurrent._keep_masks), in order."""
    got = []
    real = R._keep_masks

    def spy(gen, rate, shape, dt):
        m = real(gen, rate, shape, dt)
        got.append(m)
        return m
    monkeypatch.setattr(R, "_keep_masks", spy)
    return got


def _run(layer, x, cot, training=True, mask=None):
    """Output and gradients (x, weights...) of sum(out * cot) on a GradientTape."""
    with GradientTape() as tape:
        xx = tape.watch(np.array(x))
        out = layer(xx, training=training, mask=mask)
        loss = F.sum(F.multiply(out, cot))
    return out.value, tape.gradient(loss, [xx] + layer.trainable_variables)


def _close(a, b, what, tol=TOL):
    assert a is not None and b is not None, what
    np.testing.assert_allclose(a, b, atol=tol, rtol=0, err_msg=what)


def _ones(n, b, d):
    return np.ones((n, b, d))


# ---------------------------------------------------------------- recurrent_dropout against torch
@pytest.mark.parametrize("kind,kw", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_recurrent_dropout_against_transcription(kind, kw, masked, go_backwards, drawn):
    layer = _make(kind, recurrent_dropout=0.4, seed=3, return_sequences=True, go_backwards=go_backwards, **kw)
    rs = np.random.default_rng(11)
    x = rs.normal(size=(B, T, D))
    cot = rs.normal(size=(B, T, H))
    mask = _pad_mask() if masked else None
    po, pg = _run(layer, x, cot, mask=mask)
    assert len(drawn) == 1
    rm = drawn[0]
    # Keras 3: SimpleRNN one mask on h_{t-1}; LSTM and GRU one per gate (implementation=1)
    assert rm.shape == (GATES[kind], B, H)
    assert set(np.unique(rm)) <= {0.0, 1 / 0.6} and (rm == 0).any() and (rm != 0).any()
    ws = [_t(w).requires_grad_() for w in layer.get_weights()]
    xt = _t(x).requires_grad_()
    seq, _, _ = keras_recurrence(kind, xt, *ws, xm=_ones(1, B, D), rm=rm, reset_after=kw.get("reset_after", True),
                            mask=mask, go_backwards=go_backwards)
    tg = torch.autograd.grad((seq * _t(cot)).sum(), [xt] + ws)
    _close(po, seq.detach().numpy(), "output")
    for i, (a, b) in enumerate(zip(pg, tg)):
        _close(a, b.numpy(), f"gradient {i}")


@pytest.mark.parametrize("kind,kw", KINDS, ids=KIND_IDS)
def test_recurrent_dropout_with_input_dropout_and_states(kind, kw, drawn):
    """dropout and recurrent_dropout together: LSTM and GRU take one input mask per gate
    (Keras 3's implementation=1), SimpleRNN one input mask; return_state's final states."""
    layer = _make(kind, dropout=0.3, recurrent_dropout=0.25, seed=5, return_sequences=True, return_state=True,
                  **kw)
    rs = np.random.default_rng(12)
    x = rs.normal(size=(B, T, D))
    n_st = 2 if kind == "lstm" else 1
    cots = [rs.normal(size=(B, T, H))] + [rs.normal(size=(B, H)) for _ in range(n_st)]
    mask = _pad_mask()
    with GradientTape() as tape:
        xx = tape.watch(np.array(x))
        outs = layer(xx, training=True, mask=mask)
        loss = None
        for o, c in zip(outs, cots):
            term = F.sum(F.multiply(o, c))
            loss = term if loss is None else F.add(loss, term)
    pg = tape.gradient(loss, [xx] + layer.trainable_variables)
    if kind == "simple_rnn":  # the input mask comes from F.dropout: the seed's first draw, (B, 1, D)
        keep = np.random.default_rng(5).random((B, 1, D), dtype=np.float32) >= 0.3
        xm = (keep[:, 0] / 0.7)[None]
        (rm,) = drawn
    else:
        xm, rm = drawn
        assert xm.shape == (GATES[kind], B, D) and rm.shape == (GATES[kind], B, H)
    ws = [_t(w).requires_grad_() for w in layer.get_weights()]
    xt = _t(x).requires_grad_()
    seq, h, c = keras_recurrence(kind, xt, *ws, xm=xm, rm=rm, reset_after=kw.get("reset_after", True), mask=mask)
    touts = [seq, h] + ([c] if kind == "lstm" else [])
    tloss = sum((o * _t(cc)).sum() for o, cc in zip(touts, cots))
    tg = torch.autograd.grad(tloss, [xt] + ws)
    for i, (a, b) in enumerate(zip(outs, touts)):
        _close(a.value, b.detach().numpy(), f"output {i}")
    for i, (a, b) in enumerate(zip(pg, tg)):
        _close(a, b.numpy(), f"gradient {i}")


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_bidirectional_recurrent_dropout_against_transcription(kind, drawn):
    keras.utils.set_random_seed(2)
    bi = layers.Bidirectional(CLS[kind](H, return_sequences=True, recurrent_dropout=0.3, seed=7))
    bi.build((T, D))
    bi._cast(np.float64)
    rs = np.random.default_rng(8)
    bi.set_weights([rs.normal(0, 0.5, w.shape) for w in bi.get_weights()])
    x = rs.normal(size=(B, T, D))
    cot = rs.normal(size=(B, T, 2 * H))
    mask = _pad_mask()
    po, pg = _run(bi, x, cot, mask=mask)
    rf, rb = drawn  # forward layer's, then backward layer's (its own seed: other masks)
    assert not np.array_equal(rf, rb)
    ws = [_t(w).requires_grad_() for w in bi.get_weights()]
    xt = _t(x).requires_grad_()
    one = _ones(1, B, D)
    yf, _, _ = keras_recurrence(kind, xt, *ws[:3], xm=one, rm=rf, mask=mask, zero_output_for_mask=True)
    yb, _, _ = keras_recurrence(kind, xt, *ws[3:], xm=one, rm=rb, mask=mask, go_backwards=True, zero_output_for_mask=True)
    y = torch.cat([yf, yb.flip(1)], -1)
    tg = torch.autograd.grad((y * _t(cot)).sum(), [xt] + ws)
    _close(po, y.detach().numpy(), "output")
    for i, (a, b) in enumerate(zip(pg, tg)):
        _close(a, b.numpy(), f"gradient {i}")


@pytest.mark.parametrize("kind,kw", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inference_ignores_recurrent_dropout(kind, kw, dtype):
    x = np.random.default_rng(1).normal(size=(B, T, D)).astype(dtype)
    with_rd = _make(kind, dtype=dtype, recurrent_dropout=0.5, dropout=0.2, seed=1, return_sequences=True, **kw)
    plain = _make(kind, dtype=dtype, return_sequences=True, **kw)
    np.testing.assert_array_equal(with_rd(x), plain(x))
    np.testing.assert_array_equal(with_rd(x, training=False), plain(x))
    assert not np.allclose(with_rd(x, training=True), plain(x))


@pytest.mark.parametrize("kind,kw", KINDS, ids=KIND_IDS)
def test_recurrent_dropout_is_seeded_and_drawn_per_call(kind, kw):
    x = np.random.default_rng(2).normal(size=(B, T, D))
    a = _make(kind, recurrent_dropout=0.5, seed=9, return_sequences=True, **kw)
    b = _make(kind, recurrent_dropout=0.5, seed=9, return_sequences=True, **kw)
    c = _make(kind, recurrent_dropout=0.5, seed=10, return_sequences=True, **kw)
    ya1, ya2 = a(x, training=True), a(x, training=True)
    np.testing.assert_array_equal(ya1, b(x, training=True))
    np.testing.assert_array_equal(ya2, b(x, training=True))
    assert not np.allclose(ya1, ya2)  # a new mask for each call (each batch)
    assert not np.allclose(ya1, c(x, training=True))


@pytest.mark.parametrize("kind,kw", KINDS, ids=KIND_IDS)
def test_recurrent_dropout_float32_matches_float64(kind, kw, drawn):
    """float32 training leaves the fused kernels (no mask input) for the NumPy scan."""
    x = np.random.default_rng(3).normal(size=(B, T, D))
    l64 = _make(kind, recurrent_dropout=0.3, dropout=0.2, seed=4, return_sequences=True, **kw)
    l32 = _make(kind, dtype=np.float32, recurrent_dropout=0.3, dropout=0.2, seed=4, return_sequences=True, **kw)
    cot = np.random.default_rng(4).normal(size=(B, T, H))
    o64, g64 = _run(l64, x, cot, mask=_pad_mask())
    o32, g32 = _run(l32, x.astype(np.float32), cot.astype(np.float32), mask=_pad_mask())
    assert o32.dtype == np.float32
    _close(o32, o64, "output", 1e-5)
    for i, (a, b) in enumerate(zip(g32, g64)):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4, err_msg=f"gradient {i}")


def test_recurrent_dropout_config_and_save_load(tmp_path):
    for layer in (layers.LSTM(3, recurrent_dropout=0.25, seed=1), layers.GRU(4, recurrent_dropout=0.5),
                  layers.SimpleRNN(2, recurrent_dropout=0.1, stateful=True),
                  layers.Bidirectional(layers.GRU(3, recurrent_dropout=0.2, stateful=True))):
        cfg = layer.get_config()
        again = type(layer).from_config(cfg)
        assert again.get_config() == cfg
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape=(T, D)), layers.LSTM(H, recurrent_dropout=0.3, seed=2),
                              layers.Dense(1)])
    p = tmp_path / "rd.keras"
    model.save(p)
    back = keras.models.load_model(p)
    assert back.layers[0].recurrent_dropout == 0.3 and back.layers[0].seed == 2
    x = np.random.default_rng(0).normal(size=(4, T, D)).astype(np.float32)
    np.testing.assert_allclose(back.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-7)


def test_fit_with_recurrent_dropout_lowers_the_loss():
    keras.utils.set_random_seed(0)
    rs = np.random.default_rng(0)
    x = rs.normal(size=(64, 7, 3)).astype(np.float32)
    y = (x[:, :, 0].sum(axis=1) > 0).astype(np.int64)
    model = keras.Sequential([keras.Input(shape=(7, 3)), layers.LSTM(8, recurrent_dropout=0.2, dropout=0.1, seed=1),
                              layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy")
    h = model.fit(x, y, epochs=8, batch_size=16, verbose=0)
    assert h.history["loss"][-1] < 0.8 * h.history["loss"][0]


# ---------------------------------------------------------------- stateful
STATEFUL_KINDS = KINDS + [("lstm", {"activation": "relu"})]
STATEFUL_IDS = KIND_IDS + ["lstm_relu"]


@pytest.mark.parametrize("kind,kw", STATEFUL_KINDS, ids=STATEFUL_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("masked", [False, True])
def test_two_calls_equal_one_call_on_the_concatenation(kind, kw, dtype, masked):
    x = np.random.default_rng(5).normal(size=(B, T, D)).astype(dtype)
    mask = _pad_mask() if masked else None
    st = _make(kind, dtype=dtype, stateful=True, return_sequences=True, **kw)
    ref = _make(kind, dtype=dtype, return_sequences=True, return_state=True, **kw)
    y1 = st(x[:, :2], mask=None if mask is None else mask[:, :2])
    y2 = st(x[:, 2:], mask=None if mask is None else mask[:, 2:])
    out = ref(x, mask=mask)
    tol = 1e-9 if dtype == np.float64 else 2e-6
    seq = out[0]
    if masked:  # a padded step outputs the previous output: across the cut, the first call's last
        seq = np.where(mask[:, :, None], seq, 0)
        y1, y2 = (np.where(m[:, :, None], y, 0) for y, m in ((y1, mask[:, :2]), (y2, mask[:, 2:])))
    np.testing.assert_allclose(np.concatenate([y1, y2], axis=1), seq, atol=tol, rtol=0)
    assert len(st.states) == len(out) - 1
    for a, b in zip(st.states, out[1:]):
        np.testing.assert_allclose(a, b, atol=tol, rtol=0)
        assert a.dtype == dtype and a.shape == (B, H)


@pytest.mark.parametrize("kind,kw", KINDS, ids=KIND_IDS)
def test_stateful_go_backwards_continues_in_reading_order(kind, kw):
    """go_backwards reads each call's steps in reverse: calls on A then on B equal one call
    on B followed by A."""
    x = np.random.default_rng(6).normal(size=(B, T, D))
    st = _make(kind, stateful=True, go_backwards=True, return_sequences=True, **kw)
    ref = _make(kind, go_backwards=True, return_sequences=True, **kw)
    a, b = x[:, :4], x[:, 4:]
    ya, yb = st(a), st(b)
    np.testing.assert_allclose(np.concatenate([ya, yb], axis=1), ref(np.concatenate([b, a], axis=1)),
                               atol=TOL, rtol=0)


@pytest.mark.parametrize("kind,kw", KINDS, ids=KIND_IDS)
def test_reset_state_and_alias(kind, kw):
    x = np.random.default_rng(7).normal(size=(B, T, D))
    st = _make(kind, stateful=True, **kw)
    fresh = _make(kind, **kw)
    assert st.states is None
    st.reset_state()  # before any call: nothing to reset
    first = st(x)
    np.testing.assert_allclose(first, fresh(x), atol=TOL, rtol=0)
    assert not np.allclose(st(x), first)  # continues from the kept states
    st.reset_state()
    assert all(not s.any() for s in st.states) and st.states[0].shape == (B, H)
    np.testing.assert_allclose(st(x), first, atol=TOL, rtol=0)
    st.reset_states()
    np.testing.assert_allclose(st(x), first, atol=TOL, rtol=0)


def test_explicit_initial_state_wins_and_is_kept():
    x = np.random.default_rng(8).normal(size=(B, T, D))
    st = _make("lstm", stateful=True)
    ref = _make("lstm", return_state=True)
    st(x)
    h0 = np.random.default_rng(9).normal(size=(B, H))
    c0 = np.random.default_rng(10).normal(size=(B, H))
    y = st(x, initial_state=[h0, c0])
    out = ref(x, initial_state=[h0, c0])
    np.testing.assert_allclose(y, out[0], atol=TOL, rtol=0)
    np.testing.assert_allclose(st.states[1], out[2], atol=TOL, rtol=0)


def test_wrong_batch_size_is_named():
    st = layers.GRU(3, stateful=True, name="chars")
    st(np.zeros((4, 5, 2), np.float32))
    with pytest.raises(ValueError, match=r"chars: a stateful GRU keeps its states for a batch of 4; .*"
                                         r"Received a batch of 3"):
        st(np.zeros((3, 5, 2), np.float32))
    with pytest.raises(TypeError, match="stateful must be True or False. Received 'yes'"):
        layers.LSTM(3, stateful="yes")
    with pytest.raises(ValueError, match="recurrent_dropout must be in"):
        layers.SimpleRNN(3, recurrent_dropout=1.0)


@pytest.mark.parametrize("kind,kw", KINDS, ids=KIND_IDS)
def test_no_gradient_flows_between_calls(kind, kw):
    """Truncated back-propagation: the kept states are constants of the next call."""
    x = np.random.default_rng(9).normal(size=(B, T, D))
    st = _make(kind, stateful=True, return_sequences=True, **kw)
    ref = _make(kind, return_sequences=True, return_state=True, **kw)
    st(x[:, :3])
    init = [np.array(s) for s in st.states]
    cot = np.random.default_rng(10).normal(size=(B, 3, H))
    po, pg = _run(st, x[:, 3:], cot, training=True)
    with GradientTape() as tape:
        xx = tape.watch(np.array(x[:, 3:]))
        out = ref(xx, initial_state=init, training=True)[0]
        loss = F.sum(F.multiply(out, cot))
    rg = tape.gradient(loss, [xx] + ref.trainable_variables)
    _close(po, out.value, "output")
    for i, (a, b) in enumerate(zip(pg, rg)):
        _close(a, b, f"gradient {i}")


def _chunks(n_batch=4, n_chunks=6, steps=5, seed=0):
    """A long sine-like signal per row, cut into consecutive chunks of ``steps``; the target
    of each chunk is the next value after it."""
    rs = np.random.default_rng(seed)
    L = n_chunks * steps + 1
    t = np.arange(L)
    sig = np.sin(t[None] * rs.uniform(0.2, 0.5, (n_batch, 1)) + rs.uniform(0, 6, (n_batch, 1)))
    xs = np.stack([sig[:, k * steps:(k + 1) * steps] for k in range(n_chunks)])[..., None]  # (K, B, S, 1)
    ys = np.stack([sig[:, (k + 1) * steps] for k in range(n_chunks)])[..., None]
    return xs.astype(np.float32), ys.astype(np.float32)


def test_sequential_stateful_fit_predict_and_save_load(tmp_path):
    keras.utils.set_random_seed(0)
    xs, ys = _chunks()
    K, Bn, S = xs.shape[:3]
    model = keras.Sequential([keras.Input(shape=(S, 1), batch_size=Bn), layers.LSTM(12, stateful=True),
                              layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.02), "mse")
    # samples ordered chunk by chunk: batch k holds chunk k of every row (Keras's stateful layout)
    x, y = xs.reshape(K * Bn, S, 1), ys.reshape(K * Bn, 1)
    lstm = model.layers[0]
    reset = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: lstm.reset_state())
    h = model.fit(x, y, epochs=12, batch_size=Bn, shuffle=False, verbose=0, callbacks=[reset])
    assert h.history["loss"][-1] < 0.5 * h.history["loss"][0]
    assert lstm.states is not None and lstm.states[0].shape == (Bn, 12)
    # predict continues the states across batches: equals the same weights run on whole rows
    lstm.reset_state()
    p = model.predict(x, batch_size=Bn, verbose=0)
    ref = keras.Sequential([keras.Input(shape=(K * S, 1)), layers.LSTM(12, return_sequences=True)])
    ref.layers[0].set_weights(lstm.get_weights())
    whole = ref.predict(np.concatenate(list(xs), axis=1), verbose=0)  # (B, K*S, 12)
    dense_w, dense_b = model.layers[1].get_weights()
    want = whole[:, S - 1::S] @ dense_w + dense_b  # (B, K, 1)
    np.testing.assert_allclose(p.reshape(K, Bn, 1), want.transpose(1, 0, 2), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="keeps its states for a batch of 4"):
        model.predict(x[:6], batch_size=3, verbose=0)
    # save/load: the flag and the weights, not the state values (Keras keeps them out of the file)
    path = tmp_path / "stateful.keras"
    model.save(path)
    back = keras.models.load_model(path)
    assert back.layers[0].stateful and back.layers[0].states is None
    lstm.reset_state()
    np.testing.assert_allclose(back.predict(x, batch_size=Bn, verbose=0), model.predict(x, batch_size=Bn, verbose=0),
                               rtol=1e-6, atol=1e-6)
    assert len(back.get_weights()) == len(model.get_weights()) == 5


def test_functional_probes_leave_the_states_alone(tmp_path):
    keras.utils.set_random_seed(1)
    xs, _ = _chunks(n_batch=3, n_chunks=2, seed=1)
    inp = keras.Input(shape=(None, 1), batch_size=3)
    gru = layers.GRU(6, stateful=True, return_sequences=True)
    model = keras.Model(inp, layers.Dense(2)(gru(inp)))
    assert gru.states is None  # building the graph ran probes through the layer
    plain = layers.GRU(6, return_sequences=True)
    plain.build((None, 1))
    plain.set_weights(gru.get_weights())
    a, b = model.predict(xs[0], batch_size=3, verbose=0), model.predict(xs[1], batch_size=3, verbose=0)
    w, bias = model.layers[-1].get_weights()
    want = plain(np.concatenate([xs[0], xs[1]], axis=1)) @ w + bias
    np.testing.assert_allclose(np.concatenate([a, b], axis=1), want, rtol=1e-5, atol=1e-6)
    path = tmp_path / "f.keras"
    model.save(path)
    back = keras.models.load_model(path)
    gru_back = next(lay for lay in back.layers if isinstance(lay, layers.GRU))
    assert gru_back.stateful and gru_back.states is None


@keras.saving.register_keras_serializable(package="RnnOptionsTest")
class _Tagger(keras.Model):
    def __init__(self, units=6, **kw):
        super().__init__(**kw)
        self.units = units
        self.rnn = layers.SimpleRNN(units, stateful=True, return_sequences=True)
        self.head = layers.Dense(1)

    def call(self, x, training=False):
        return self.head(self.rnn(x, training=training))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_subclassed_build_fit_and_load_leave_the_states_alone(tmp_path):
    keras.utils.set_random_seed(2)
    xs, ys = _chunks(n_batch=4, n_chunks=3, seed=2)
    model = _Tagger()
    model.build((4, 5, 1))
    assert model.rnn.states is None
    model.compile(keras.optimizers.Adam(0.01), "mse")
    y = np.repeat(ys, 5, axis=2)[..., None].reshape(12, 5, 1)
    h = model.fit(xs.reshape(12, 5, 1), y, epochs=3, batch_size=4, shuffle=False, verbose=0)
    assert np.isfinite(h.history["loss"]).all()
    model.rnn.reset_state()
    a = model.predict(xs[0], batch_size=4, verbose=0)
    b = model.predict(xs[1], batch_size=4, verbose=0)
    plain = layers.SimpleRNN(6, return_sequences=True)
    plain.build((None, 1))
    plain.set_weights(model.rnn.get_weights())
    w, bias = model.head.get_weights()
    want = plain(np.concatenate([xs[0], xs[1]], axis=1)) @ w + bias
    np.testing.assert_allclose(np.concatenate([a, b], axis=1), want, rtol=1e-5, atol=1e-6)
    fresh = _Tagger()  # first use builds on the first rows of the data: the states stay untouched
    fresh.compile(keras.optimizers.Adam(0.01), "mse")
    fresh.predict(xs[0], batch_size=4, verbose=0)
    assert fresh.rnn.states[0].shape == (4, 6)
    path = tmp_path / "s.keras"
    model.save(path)
    back = keras.models.load_model(path)
    assert back.rnn.stateful and back.rnn.states is None


def test_bidirectional_stateful():
    keras.utils.set_random_seed(3)
    x = np.random.default_rng(11).normal(size=(B, T, D)).astype(np.float32)
    bi = layers.Bidirectional(layers.LSTM(H, stateful=True))
    assert bi.stateful and bi.states is None
    first = bi(x)
    assert len(bi.states) == 4 and bi.states[0].shape == (B, H)
    assert not np.allclose(bi(x), first)
    bi.reset_state()
    np.testing.assert_allclose(bi(x), first, rtol=1e-6, atol=1e-7)
    bi.reset_states()
    np.testing.assert_allclose(bi(x), first, rtol=1e-6, atol=1e-7)
    with pytest.raises(AttributeError, match="stateful"):
        layers.Bidirectional(layers.LSTM(H)).reset_state()
    with pytest.raises(ValueError, match="backward_layer.stateful"):
        layers.Bidirectional(layers.LSTM(H, stateful=True), backward_layer=layers.LSTM(H, go_backwards=True))


# ---------------------------------------------------------------- the placeholder-run flag
def test_placeholder_flag_nests_and_restores():
    from pyaiml.keras._common import batch_run, in_placeholder_run, placeholder_run

    assert not in_placeholder_run()
    with placeholder_run():
        assert in_placeholder_run()
        with placeholder_run():
            assert in_placeholder_run()
        assert in_placeholder_run()  # the inner block restored what it found, not False
        with batch_run():
            assert not in_placeholder_run()
            with placeholder_run():
                assert in_placeholder_run()
            assert not in_placeholder_run()
        assert in_placeholder_run()
    assert not in_placeholder_run()
    with pytest.raises(KeyError), placeholder_run(), batch_run():
        raise KeyError("inside")
    assert not in_placeholder_run()  # both blocks restored while the error went through them
    with placeholder_run():
        with pytest.raises(RuntimeError), batch_run():
            raise RuntimeError("inside")
        assert in_placeholder_run()


def test_placeholder_flag_is_per_thread():
    import threading

    from pyaiml.keras._common import in_placeholder_run, placeholder_run

    entered, release, seen = threading.Event(), threading.Event(), {}

    def other():
        seen["start"] = in_placeholder_run()  # the main thread is inside placeholder_run now
        with placeholder_run():
            seen["inside"] = in_placeholder_run()
            entered.set()
            release.wait(10)
        seen["after"] = in_placeholder_run()

    with placeholder_run():
        t = threading.Thread(target=other)
        t.start()
        assert entered.wait(10)
    assert not in_placeholder_run()  # the other thread is still inside its own block
    release.set()
    t.join(10)
    assert seen == {"start": False, "inside": True, "after": False}


def test_stateful_layer_reads_the_flag():
    from pyaiml.keras._common import batch_run, placeholder_run

    x = np.random.default_rng(12).normal(size=(B, T, D))
    st = _make("gru", stateful=True)
    with placeholder_run():
        st(np.zeros((1, T, D)))  # neither fixes the batch size nor keeps the final state
        assert st.states is None
        with batch_run():
            first = st(x)
    assert st.states[0].shape == (B, H)
    kept = [np.array(v) for v in st.states]
    with placeholder_run():
        np.testing.assert_allclose(st(x), first, atol=TOL, rtol=0)  # zeros, not the kept state, start it
    for a, b in zip(st.states, kept):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(st(x), first)  # outside: continues from the kept state


class _BuildsOnZeros(keras.Model):
    """A subclassed model whose own build() runs its layers on zeros (no super().build)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.rnn = layers.LSTM(5, stateful=True)
        self.head = layers.Dense(1)

    def build(self, input_shape):
        self.call(np.zeros((1,) + tuple(input_shape[1:]), np.float32))

    def call(self, x, training=False):
        return self.head(self.rnn(x, training=training))


def test_user_build_on_zeros_and_one_row_runs_leave_the_states_alone():
    """A user's build(input_shape), and the one-row runs of train_on_batch and evaluate (output
    count, target check), are placeholder runs: the states keep the batch size of the data."""
    keras.utils.set_random_seed(4)
    xs, ys = _chunks(n_batch=4, n_chunks=3, seed=4)
    model = _BuildsOnZeros()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    model.predict(xs[0], batch_size=4, verbose=0)  # the first use builds through build() on one row of zeros
    assert model.rnn.states[0].shape == (4, 5)
    model.rnn.reset_state()
    model.train_on_batch(xs[0], ys[0])
    after_first = [np.array(v) for v in model.rnn.states]
    model.train_on_batch(xs[1], ys[1])
    assert not np.allclose(model.rnn.states[0], after_first[0])  # the real batch carried them on
    model.rnn.reset_state()
    model.evaluate(xs[0], ys[0], batch_size=4, verbose=0)
    want = [np.array(v) for v in model.rnn.states]
    model.rnn.reset_state()
    model.predict(xs[0], batch_size=4, verbose=0)  # the same batch from zeros: the same states
    for a, b in zip(model.rnn.states, want):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- the keras.io-style example
def _example():
    import importlib
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples", "keras_io"))
    try:
        return importlib.import_module("stateful_lstm_text")
    finally:
        sys.path.pop(0)


def test_example_batches_continue_row_by_row():
    ex = _example()
    ids = np.arange(103)
    x, y = ex.make_batches(ids, batch_size=4, seq_len=5)
    assert x.shape == y.shape == (20, 5)  # 25 characters per stream: 5 windows of 5
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
    for k in range(4):  # row i of batch k + 1 starts where row i of batch k ended
        np.testing.assert_array_equal(x[(k + 1) * 4:(k + 2) * 4, 0], x[k * 4:(k + 1) * 4, -1] + 1)
    with pytest.raises(ValueError, match="too short"):
        ex.make_batches(np.arange(10), batch_size=4, seq_len=5)
    with open(ex.__file__) as f:
        src = f.read()
    assert "import tensorflow" not in src and "import torch" not in src and "from pyaiml import keras" in src


def test_example_trains_and_generates(capsys):
    ex = _example()
    losses, samples = ex.main(epochs=3, batch_size=16, seq_len=40, max_chars=20000, units=64, gen_length=30,
                              verbose=0)
    assert losses[-1] < losses[0] - 0.4  # ~3.43 -> ~2.71 on the first 20000 characters
    text = ex.load_text(20000)
    assert sorted(samples) == [0.5, 1.0] and all(len(s) == 30 for s in samples.values())
    assert set("".join(samples.values())) <= set(text)
    assert "temperature 0.5" in capsys.readouterr().out
