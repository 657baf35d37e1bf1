"""Speaker-robustness options of the CNN speech recipe: SpecAugment masking (spans, bands
shared across feature groups, reproducibility, errors) and CNNClassifier's spec_augment= and
n_estimators= (the ensemble's probabilities are the mean of its members')."""
import numpy as np
import pytest

from pyaiml.speech import CNNClassifier, SpecAugment


def _runs(mask_1d):
    """(start, length) of the runs of True in a 1-D bool array."""
    m = np.r_[False, mask_1d, False].astype(np.int8)
    d = np.diff(m)
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return list(zip(starts, ends - starts))


def test_masks_have_the_declared_spans():
    B = np.random.default_rng(0).normal(size=(64, 30, 12)).astype(np.float32) + 5.0  # no natural zeros
    aug = SpecAugment(time_masks=2, time_width=5, feature_masks=1, feature_width=2, feature_groups=3, value=0.0)
    out = aug(B, np.random.default_rng(1))
    assert out.shape == B.shape and out.dtype == np.float32
    assert not np.shares_memory(out, B)
    masked = out == 0
    np.testing.assert_array_equal(out[~masked], B[~masked])
    some_time, some_feat = 0, 0
    for i in range(len(B)):
        full_frames = masked[i].all(axis=1)               # time masks blank whole frames
        assert full_frames.sum() <= 2 * 5
        assert all(n <= 10 for _, n in _runs(full_frames))
        some_time += full_frames.any()
        cols = masked[i][~full_frames].all(axis=0) if (~full_frames).any() else np.zeros(12, bool)
        g = cols.reshape(3, 4)
        np.testing.assert_array_equal(g[0], g[1])          # the same band in every group
        np.testing.assert_array_equal(g[0], g[2])
        assert g[0].sum() <= 2 and len(_runs(g[0])) <= 1
        some_feat += g[0].any()
        assert (masked[i] == (full_frames[:, None] | cols[None, :])).all()  # nothing else masked
    assert some_time > 40 and some_feat > 30               # widths 0 are allowed, but most draw > 0
    again = aug(B, np.random.default_rng(1))
    np.testing.assert_array_equal(out, again)


def test_no_masks_is_identity_and_errors():
    B = np.ones((2, 5, 6), np.float32)
    np.testing.assert_array_equal(SpecAugment(0, 3, 0, 3)(B, np.random.default_rng(0)), B)
    with pytest.raises(ValueError, match="time_width must be an integer >= 0"):
        SpecAugment(time_width=-1)
    with pytest.raises(ValueError, match="feature_groups must be an integer >= 1"):
        SpecAugment(feature_groups=0)
    with pytest.raises(ValueError, match="must divide the 6 features"):
        SpecAugment(feature_groups=4)(B, np.random.default_rng(0))
    with pytest.raises(ValueError, match="must be 3-D"):
        SpecAugment()(np.ones((5, 6)), np.random.default_rng(0))


def _toy(rng, n=60, T=(14, 24), D=6):
    X, y = [], []
    for i in range(n):
        c = i % 3
        t = int(rng.integers(*T))
        x = rng.normal(0, 0.3, (t, D))
        x[:, c] += np.sin(np.linspace(0, (c + 1) * np.pi, t))
        X.append(x.astype(np.float32))
        y.append(c)
    return X, np.array(y)


def test_ensemble_is_mean_of_members_and_options_train():
    rng = np.random.default_rng(3)
    X, y = _toy(rng)
    clf = CNNClassifier(n_frames=16, filters=8, hidden=8, epochs=3, batch_size=16, n_estimators=2,
                        spec_augment=True, random_state=5).fit(X, y)
    assert len(clf.models_) == 2 and clf.model_ is clf.models_[0]
    assert clf.history_.epoch == [0, 1, 2]
    from pyaiml.speech import pad_or_crop
    B = pad_or_crop(X, 16)
    want = np.mean([m.predict(B, verbose=0) for m in clf.models_], axis=0)
    np.testing.assert_allclose(clf.predict_proba(X), want, rtol=1e-5, atol=1e-6)
    w0 = clf.models_[0].get_weights()
    w1 = clf.models_[1].get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(w0, w1))  # different seeds
    again = CNNClassifier(n_frames=16, filters=8, hidden=8, epochs=3, batch_size=16, n_estimators=2,
                          spec_augment=True, random_state=5).fit(X, y)
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))  # reproducible
    plain = CNNClassifier(n_frames=16, filters=8, hidden=8, epochs=3, batch_size=16, random_state=5).fit(X, y)
    assert any(not np.array_equal(a, b) for a, b in zip(plain.model_.get_weights(), w0))  # masking changed training


def test_average_epochs_is_the_mean_of_the_last_epochs_weights():
    from pyaiml import keras
    from pyaiml.speech import build_cnn, pad_or_crop

    X, y = _toy(np.random.default_rng(4))
    clf = CNNClassifier(n_frames=16, filters=8, hidden=8, epochs=4, batch_size=16, random_state=2,
                        average_epochs=2).fit(X, y)
    # the same training by hand, epoch by epoch, keeping every epoch's weights
    keras.utils.set_random_seed(2)
    model = build_cnn(16, 6, 3, filters=8, kernel_size=3, hidden=8, dropout=0.3, learning_rate=1e-3)
    B, Y = pad_or_crop(X, 16), keras.utils.to_categorical(y, 3)
    seen = []
    for ep in range(4):
        model.fit(B, Y, batch_size=16, epochs=ep + 1, initial_epoch=ep, verbose=0)
        seen.append([np.asarray(a, dtype=np.float64) for a in model.get_weights()])
    want = [(a + b) / 2 for a, b in zip(seen[2], seen[3])]
    got = clf.model_.get_weights()
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(g, s) for g, s in zip(got, seen[3]))  # not just the last epoch
    assert clf.history_.epoch == [0, 1, 2, 3]


def test_kernel_size_tuple_alternates_over_the_ensemble():
    X, y = _toy(np.random.default_rng(6))
    clf = CNNClassifier(n_frames=16, filters=8, hidden=8, epochs=2, batch_size=16, n_estimators=3,
                        kernel_size=(3, 5), random_state=1).fit(X, y)
    sizes = [m.layers[0].get_weights()[0].shape[0] for m in clf.models_]
    assert sizes == [3, 5, 3]
    assert clf.predict_proba(X).shape == (len(X), 3)


@pytest.mark.parametrize("kw, match", [({"n_estimators": 0}, "n_estimators must be an integer >= 1"),
                                       ({"kernel_size": ()}, "kernel_size must be an integer >= 1 or a non-empty tuple"),
                                       ({"kernel_size": (3, 0)}, "kernel_size must be"),
                                       ({"kernel_size": 2.5}, "kernel_size must be"),
                                       ({"average_epochs": -1}, r"average_epochs must be an integer in \[0, epochs=1\]"),
                                       ({"average_epochs": 2}, "average_epochs must be"),
                                       ({"average_epochs": True}, "average_epochs must be"),
                                       ({"n_estimators": 1.5}, "n_estimators must be"),
                                       ({"spec_augment": "yes"}, "spec_augment must be None, True or a SpecAugment")])
def test_option_errors(kw, match):
    X, y = _toy(np.random.default_rng(0), n=6)
    with pytest.raises(ValueError, match=match):
        CNNClassifier(n_frames=16, epochs=1, **kw).fit(X, y)
