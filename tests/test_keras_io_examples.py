"""Brief runs of the keras.io-style example programs in examples/keras_io/.

What they are: each program's main() for a few epochs on its shipped or generated data,
with a loose accuracy floor that a broken model, a gradient that does not reach some
weights, or a graph wired wrong would miss (the floors sit well under what a run reaches:
residual CNN ~0.9 test accuracy after 3 epochs, Transformer ~0.9 validation accuracy after
3, custom loop ~0.9 after 3, bidirectional LSTM ~0.95 after 3; the autoencoder's denoised
error ~0.3 of the noisy input's; the ticket model's two losses fall; the character LSTM's loss
~3.11 -> ~2.70 in 3 epochs on 6000 characters; the addition seq2seq model's per-character
validation accuracy ~0.37 -> ~0.51 in 10 epochs on 5000 questions). What they are not: measurements of speed or of final accuracy.
Run: PYTHONPATH=$PWD python -m pytest -q tests/test_keras_io_examples.py
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples", "keras_io"))


def test_functional_residual_image_classifier(capsys):
    import image_classification_residual as ex

    acc = ex.main(epochs=3, verbose=0)
    assert acc > 0.75
    assert "test accuracy" in capsys.readouterr().out


def test_subclassed_transformer_text_classifier():
    import text_classification_transformer as ex

    model = ex.make_model()
    # the TransformerBlock's attention, its feed-forward Sequential, norms; both embeddings; two Dense heads
    assert len(model.trainable_variables) == 8 + 4 + 4 + 2 + 4
    acc = ex.main(epochs=3, verbose=0)
    assert acc > 0.7


def test_custom_training_loop_with_keras_ops(capsys):
    import custom_training_loop as ex

    acc = ex.main(epochs=3, verbose=0)
    assert acc > 0.8
    out = capsys.readouterr().out
    assert out.count("validation acc") == 3


@pytest.mark.parametrize("name", ["image_classification_residual", "text_classification_transformer",
                                  "custom_training_loop", "denoising_autoencoder", "multi_input_multi_output",
                                  "lstm_sequence_classification", "char_lstm_text_generation", "addition_rnn"])
def test_examples_import_only_pyaiml(name):
    with open(os.path.join(os.path.dirname(__file__), "..", "examples", "keras_io", f"{name}.py")) as f:
        src = f.read()
    assert "import tensorflow" not in src and "import torch" not in src and "from pyaiml import keras" in src


def test_denoising_autoencoder(capsys):
    import denoising_autoencoder as ex

    before, after = ex.main(epochs=2, verbose=0)
    assert after < 0.6 * before  # the denoised images are closer to the clean ones than the noisy inputs
    assert "denoised" in capsys.readouterr().out


def test_multi_input_multi_output_ticket_model():
    import multi_input_multi_output as ex

    model = ex.make_model()
    assert model.input_names == ["title", "body", "tags"] and model.output_names == ["priority", "department"]
    h = ex.main(epochs=2, verbose=0)
    assert h["priority_loss"][-1] < h["priority_loss"][0] and h["department_loss"][-1] < h["department_loss"][0]


def test_bidirectional_lstm_sequence_classifier(capsys):
    import lstm_sequence_classification as ex

    model = ex.make_model()
    # two Bidirectional(LSTM) layers: kernel, recurrent kernel and bias on each side
    assert [type(layer).__name__ for layer in model.layers].count("Bidirectional") == 2
    assert len(model.trainable_variables) == 1 + 2 * 6 + 2
    acc = ex.main(epochs=3, verbose=0)
    assert acc > 0.8  # the label depends on word order: a bag of words stays near 0.5
    assert "validation accuracy" in capsys.readouterr().out


def test_char_lstm_text_generator_trains_and_generates(capsys):
    import char_lstm_text_generation as ex

    losses, samples = ex.main(epochs=3, max_chars=6000, gen_length=25, diversities=(0.2, 1.0), units=64, verbose=0)
    assert losses[-1] < losses[0] - 0.2  # ~3.11 -> ~2.70 on the first 6000 characters
    assert sorted(samples) == [0.2, 1.0] and all(len(s) == 25 for s in samples.values())
    text = ex.load_text(6000)
    assert set("".join(samples.values())) <= set(text)
    assert "Generating text after epoch: 2" in capsys.readouterr().out


def test_char_lstm_sample_temperature():
    import char_lstm_text_generation as ex
    import numpy as np

    preds = [0.6, 0.3, 0.1]
    np.random.seed(0)
    cold = [ex.sample(preds, 0.05) for _ in range(200)]
    hot = [ex.sample(preds, 5.0) for _ in range(2000)]
    assert cold.count(0) == 200  # a low temperature picks the most likely index
    assert 0.2 < hot.count(2) / 2000 < 0.45  # a high one flattens towards uniform (0.1 -> ~0.29)
    with pytest.raises(ValueError, match="temperature"):
        ex.sample(preds, 0)


def test_addition_seq2seq_accuracy_rises(capsys):
    import addition_rnn as ex

    model = ex.make_model(units=32)
    assert [type(layer).__name__ for layer in model.layers] == ["LSTM", "RepeatVector", "LSTM", "TimeDistributed"]
    assert tuple(model.output_shape)[-2:] == (ex.DIGITS + 1, len(ex.chars))
    acc = ex.main(epochs=10, training_size=5000, verbose=0)  # ~0.37 -> ~0.51 per character
    assert acc[-1] > acc[0] + 0.07 and acc[-1] > 0.45
    out = capsys.readouterr().out
    assert out.count("Q ") == 100 and ("☑" in out or "☒" in out)
    with pytest.raises(ValueError, match="training_size"):
        ex.generate_data(5)
