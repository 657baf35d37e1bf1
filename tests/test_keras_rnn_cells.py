"""keras.layers.RNN with SimpleRNNCell / LSTMCell / GRUCell and with a user's cell. Oracles:
the fused LSTM / GRU / SimpleRNN layers (same weights: outputs, states and every gradient), a
NumPy loop for the keras.io guide's MinimalRNNCell; training and save/load of a model with a
registered custom cell. No torch needed."""
import numpy as np
import pytest
from helpers import assert_saves_and_loads

from pyaiml import keras
from pyaiml.autograd import GradientTape
from pyaiml.keras import layers, ops

X = np.random.default_rng(0).standard_normal((3, 6, 4)).astype(np.float32)
PAIRS = {"lstm": (layers.LSTMCell, layers.LSTM, 2), "gru": (layers.GRUCell, layers.GRU, 1),
         "simple": (layers.SimpleRNNCell, layers.SimpleRNN, 1)}


@pytest.mark.parametrize("kind", sorted(PAIRS))
@pytest.mark.parametrize("backwards", [False, True])
def test_cells_match_the_fused_layers(kind, backwards):
    cell_cls, layer_cls, n_states = PAIRS[kind]
    keras.utils.set_random_seed(1)
    rnn = layers.RNN(cell_cls(5), return_sequences=True, return_state=True, go_backwards=backwards)
    ref = layer_cls(5, return_sequences=True, return_state=True, go_backwards=backwards)
    got = rnn(X)
    ref(X)
    ref.set_weights(rnn.get_weights())
    want = ref(X)
    assert len(got) == len(want) == 1 + n_states
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-6)
    w0 = np.random.default_rng(2).standard_normal(np.shape(want[0])).astype(np.float32)
    grads = []
    for layer in (rnn, ref):
        with GradientTape() as tape:
            xx = tape.watch(X)
            loss = ops.sum(ops.multiply(layer(xx)[0], w0))
        grads.append(tape.gradient(loss, [xx] + layer.trainable_variables))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_last_output_initial_state_and_forget_bias():
    cell = layers.LSTMCell(3)
    rnn = layers.RNN(cell)
    y = rnn(X)
    assert y.shape == (3, 3)
    np.testing.assert_array_equal(cell.bias.value[3:6], 1.0)  # unit_forget_bias
    np.testing.assert_array_equal(cell.bias.value[:3], 0.0)
    h0 = [np.full((3, 3), 0.5, np.float32), np.zeros((3, 3), np.float32)]
    assert not np.allclose(rnn(X, initial_state=h0), y)
    assert layers.RNN(layers.GRUCell(2), return_sequences=True).compute_output_shape((6, 4)) == (6, 2)


@keras.saving.register_keras_serializable(package="RNNCellTest")
class MinimalRNNCell(layers.Layer):
    """The keras.io guide's custom cell: h_t = x_t K + h_{t-1} U (no activation)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), initializer="uniform", name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(self.units, self.units), initializer="uniform",
                                                name="recurrent_kernel")

    def call(self, inputs, states):
        prev_output = states[0]
        h = ops.matmul(inputs, self.kernel)
        output = h + ops.matmul(prev_output, self.recurrent_kernel)
        return output, [output]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_custom_cell_against_a_numpy_loop_trains_and_saves(tmp_path):
    keras.utils.set_random_seed(0)
    rnn = layers.RNN(MinimalRNNCell(4), return_sequences=True)
    y = np.asarray(rnn(X))
    k, u = rnn.cell.kernel.value, rnn.cell.recurrent_kernel.value
    h = np.zeros((3, 4), np.float32)
    for t in range(X.shape[1]):
        h = X[:, t] @ k + h @ u
        np.testing.assert_allclose(y[:, t], h, rtol=1e-5, atol=1e-6)
    m = keras.Sequential([keras.Input((6, 4)), layers.RNN(MinimalRNNCell(8)), layers.Dense(1)])
    m.compile(optimizer="adam", loss="mse")
    target = X.sum((1, 2))[:, None].astype(np.float32)
    hist = m.fit(X, target, epochs=20, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert_saves_and_loads(m, X, tmp_path)


def test_errors():
    with pytest.raises(TypeError, match="cell must be a layer with a state_size"):
        layers.RNN(layers.Dense(3))
    with pytest.raises(ValueError, match="stateful"):
        layers.RNN(layers.LSTMCell(2), stateful=True)
    with pytest.raises(ValueError, match="units must be a positive integer"):
        layers.LSTMCell(0)
    with pytest.raises(ValueError, match="reset_after"):
        layers.GRUCell(2, reset_after=False)
    with pytest.raises(Exception, match="rank 3"):
        layers.RNN(layers.SimpleRNNCell(2))(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="at least one step"):
        layers.RNN(layers.LSTMCell(2))(np.zeros((2, 0, 3), np.float32))
    with pytest.raises(ValueError, match=r"initial_state must be 2 array\(s\) of shapes \[\(2, 2\), \(2, 2\)\]"):
        layers.RNN(layers.LSTMCell(2))(np.zeros((2, 4, 3), np.float32), initial_state=[np.ones((2, 5))])
