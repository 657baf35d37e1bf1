"""Tests of the 1-D CNN speech recipe (pyaiml.speech): pad_or_crop, build_cnn, CNNClassifier.
FSDD parts skip without ../shared/data/fsdd; the full-accuracy run is marked slow.
Run: PYTHONPATH=$PWD python -m pytest -q tests/test_speech_cnn.py [-m slow]
"""
import numpy as np
import pytest

from helpers import shared_data
from pyaiml.speech import CNNClassifier, build_cnn, pad_or_crop


def test_pad_or_crop():
    a = np.arange(10, dtype=np.float32).reshape(5, 2)
    b = np.ones((2, 2), dtype=np.float32)
    out = pad_or_crop([a, b], 3)
    assert out.shape == (2, 3, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], a[1:4])           # centre crop
    np.testing.assert_array_equal(out[1], [[1, 1], [1, 1], [0, 0]])  # centre pad, extra frame at the end
    out = pad_or_crop([a, b], 4, align="start", value=-1)
    np.testing.assert_array_equal(out[0], a[:4])
    np.testing.assert_array_equal(out[1], [[1, 1], [1, 1], [-1, -1], [-1, -1]])
    with pytest.raises(ValueError, match="n_frames must be"):
        pad_or_crop([a], 0)
    with pytest.raises(ValueError, match="same number of features"):
        pad_or_crop([a, np.ones((3, 3))], 3)
    with pytest.raises(ValueError, match="empty list"):
        pad_or_crop([], 3)
    with pytest.raises(ValueError, match="align must be"):
        pad_or_crop([a], 3, align="end")


def test_build_cnn_shapes():
    m = build_cnn(32, 13, 4, filters=8)
    names = [type(l).__name__ for l in m.layers]
    assert names == ["Conv1D", "MaxPooling1D", "Conv1D", "MaxPooling1D", "GlobalAveragePooling1D", "Dense"]
    p = m.predict(np.zeros((3, 32, 13), np.float32), verbose=0)
    assert p.shape == (3, 4) and np.allclose(p.sum(1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="n_frames must be >= 8"):
        build_cnn(6, 13, 4)


def _synthetic(n=40, seed=0):
    rng = np.random.default_rng(seed)
    X, y = [], []
    for i in range(n):
        c = i % 2
        T = int(rng.integers(12, 24))
        base = np.sin(np.linspace(0, 3, T))[:, None] * (1 if c else -1)
        X.append((base + 0.3 * rng.standard_normal((T, 4))).astype(np.float32))
        y.append(c)
    return X, np.array(y)


def test_cnn_classifier_synthetic_and_errors():
    X, y = _synthetic()
    clf = CNNClassifier(filters=8, hidden=8, epochs=10, batch_size=8, learning_rate=1e-2).fit(X, y)
    assert clf.n_frames_ >= 16 and clf.n_features_in_ == 4
    Xt, yt = _synthetic(20, seed=1)
    assert clf.score(Xt, yt) >= 0.9
    P = clf.predict_proba(Xt)
    assert P.shape == (20, 2) and np.allclose(P.sum(1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="3 features per frame, but the model was fitted with 4"):
        clf.predict([np.zeros((20, 3), np.float32)])
    with pytest.raises(ValueError, match="at least one sequence"):
        clf.predict([])
    with pytest.raises(ValueError, match="one label per sequence"):
        CNNClassifier().fit(X, y[:-1])
    with pytest.raises(ValueError, match="at least 2 classes"):
        CNNClassifier().fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="not fitted"):
        CNNClassifier().predict(X)


def _fsdd(digits):
    from pyaiml.audio import mfcc_features
    from pyaiml.datasets import load_fsdd

    ds = load_fsdd(shared_data("fsdd"))
    keep = np.flatnonzero(np.isin(ds.digits, digits))
    feats = {int(i): mfcc_features(ds.signals[i], ds.rates[i], name=ds.filenames[i]) for i in keep}
    return feats, ds, [i for i in ds.train_idx if i in feats], [i for i in ds.test_idx if i in feats]


def test_fsdd_cnn_three_digits_small():
    feats, ds, tr, te = _fsdd([0, 3, 7])
    clf = CNNClassifier(filters=16, hidden=16, epochs=6, n_frames=48).fit([feats[i] for i in tr], ds.digits[tr])
    assert clf.score([feats[i] for i in te], ds.digits[te]) >= 0.8  # chance is 1/3


@pytest.mark.slow
def test_fsdd_cnn_official_split():
    feats, ds, tr, te = _fsdd(list(range(10)))
    clf = CNNClassifier().fit([feats[i] for i in tr], ds.digits[tr])
    assert clf.score([feats[i] for i in te], ds.digits[te]) >= 0.985
