"""Brief runs of the keras.io-style example programs in examples/keras_io/.

What they are: each program's main() for a few epochs on its shipped or generated data,
with a loose accuracy floor that a broken model, a gradient that does not reach some
weights, or a graph wired wrong would miss (the floors sit well under what a run reaches:
residual CNN ~0.9 test accuracy after 3 epochs, Transformer ~0.9 validation accuracy after
3, custom loop ~0.9 after 3). What they are not: measurements of speed or of final accuracy.
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
                                  "custom_training_loop"])
def test_examples_import_only_pyaiml(name):
    with open(os.path.join(os.path.dirname(__file__), "..", "examples", "keras_io", f"{name}.py")) as f:
        src = f.read()
    assert "import tensorflow" not in src and "import torch" not in src and "from pyaiml import keras" in src
