"""pyaiml.hmm.load and HMMClassifier.load on files that are not what ``save`` wrote: members
that are not parameters of the class (one named ``score`` used to replace the method),
negative or non-finite probabilities, mixture weights and means, bad covariances, configs
the constructor refuses, classifier parts that disagree with each other. Each is a
ValueError naming the file; the saved models themselves load back with identical scores."""
import json

import numpy as np
import pytest

from pyaiml import hmm as ph
from pyaiml.hmm import HMMClassifier


def _rewrite(path, **changes):
    z = dict(np.load(path))
    for k, v in changes.items():
        if v is None:
            z.pop(k, None)
        else:
            z[k] = v
    np.savez(path, **z)


def _meta(path):
    return json.loads(np.load(path)["__meta__"].tobytes())


def _arr(obj):
    return np.frombuffer(json.dumps(obj).encode(), np.uint8)


def _gauss():
    m = ph.GaussianHMM(2, "diag", init_params="")
    m.startprob_ = np.array([0.6, 0.4])
    m.transmat_ = np.array([[0.7, 0.3], [0.2, 0.8]])
    m.means_ = np.array([[0.0, 1.0], [2.0, -1.0]])
    m.covars_ = np.array([[1.0, 0.5], [0.7, 1.2]])
    return m


def _gmm():
    m = ph.GMMHMM(2, 2, covariance_type="diag", init_params="")
    m.startprob_ = np.array([0.6, 0.4])
    m.transmat_ = np.array([[0.7, 0.3], [0.2, 0.8]])
    m.weights_ = np.array([[0.3, 0.7], [0.5, 0.5]])
    m.means_ = np.arange(8.0).reshape(2, 2, 2) / 4
    m.covars_ = np.ones((2, 2, 2))
    return m


X = np.array([[0.1, 0.9], [1.8, -1.2], [0.3, 0.2], [2.2, -0.7]])


@pytest.fixture
def saved(tmp_path):
    def make(m, data=X):
        p = str(tmp_path / "m.npz")
        m.save(p)
        assert ph.load(p).score(data) == m.score(data)
        return p
    return make


def test_member_named_like_a_method_is_refused(saved):
    p = saved(_gauss())
    _rewrite(p, score=np.array(1.0))
    with pytest.raises(ValueError, match=rf"load: {p}.*members \['score'\] are not GaussianHMM parameters"):
        ph.load(p)


@pytest.mark.parametrize("make,name,value,msg", [
    (_gauss, "startprob_", np.array([1.5, -0.5]), r"startprob_ must be non-negative \(probabilities\). Received -0.5"),
    (_gauss, "transmat_", np.array([[0.7, 0.3], [1.2, -0.2]]), r"transmat_ must be non-negative.*\[1, 1\]"),
    (_gauss, "means_", np.array([[0.0, np.nan], [2.0, -1.0]]),
     r"means_ must be finite. Received nan at index \[0, 1\]"),
    (_gauss, "covars_", np.array([[1.0, -0.5], [0.7, 1.2]]), r"covars_: .*'diag' covars must be positive"),
    (_gauss, "startprob_", np.array([0.6, 0.3]), r"startprob must sum to 1"),
    (_gmm, "weights_", np.array([[1.5, -0.5], [0.5, 0.5]]), r"weights_ must be non-negative.*Received -0.5"),
    (_gmm, "means_", np.full((2, 2, 2), np.inf), r"means_ must be finite. Received inf"),
    (_gmm, "covars_", np.full((2, 2, 2), -1.0), r"covariances must be positive"),
    (_gmm, "weights_", np.array([["a", "b"], ["c", "d"]]), r"weights_ must be numeric. Received dtype <U1"),
])
def test_bad_parameter_values(saved, make, name, value, msg):
    p = saved(make())
    _rewrite(p, **{name: value})
    with pytest.raises(ValueError, match=rf"load: {p}.*{msg}"):
        ph.load(p)


def test_categorical_negative_emission_probabilities(saved):
    m = ph.CategoricalHMM(2, init_params="")
    m.startprob_, m.transmat_ = np.array([0.5, 0.5]), np.array([[0.5, 0.5], [0.5, 0.5]])
    m.emissionprob_ = np.array([[0.2, 0.8, 0.0], [0.1, 0.1, 0.8]])
    p = saved(m, np.array([[0], [2], [1]]))
    _rewrite(p, emissionprob_=np.array([[1.2, -0.2, 0.0], [0.1, 0.1, 0.8]]))
    with pytest.raises(ValueError, match=rf"{p}.*emissionprob_ must be non-negative.*Received -0.2 at index \[0, 1\]"):
        ph.load(p)
    m.save(p)
    _rewrite(p, n_features=np.array(7))
    with pytest.raises(ValueError, match=rf"{p}.*emissionprob_ must have shape \(2, 7\)"):
        ph.load(p)


def test_bad_meta_and_config(saved, tmp_path):
    p = saved(_gauss())
    meta = _meta(p)
    _rewrite(p, __meta__=_arr({**meta, "class": "VariationalGaussianHMM"}))
    with pytest.raises(ValueError, match=rf"{p}.*unknown model class 'VariationalGaussianHMM'"):
        ph.load(p)
    _rewrite(p, __meta__=_arr({**meta, "config": {**meta["config"], "steal": 1}}))
    with pytest.raises(ValueError, match=rf"{p}.*config names \['steal'\], which are not GaussianHMM arguments"):
        ph.load(p)
    _rewrite(p, __meta__=_arr({**meta, "config": {**meta["config"], "n_components": 0}}))
    with pytest.raises(ValueError, match=rf"{p}.*config is invalid.*n_components must be an integer >= 1"):
        ph.load(p)
    _rewrite(p, __meta__=np.frombuffer(b"\xff{", np.uint8))
    with pytest.raises(ValueError, match=rf"{p}.*__meta__ is not JSON"):
        ph.load(p)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"\x80\x04not an archive")
    with pytest.raises(ValueError, match=rf"load: {junk} .*not a .npz \(ZIP\) archive"):
        ph.load(str(junk))


def _clf(tmp_path, **kw):
    rng = np.random.default_rng(0)
    Xs = [rng.normal(size=(12, 2)) + (i % 2) * 3 for i in range(8)]
    y = np.array(["a", "b"] * 4)
    clf = HMMClassifier(n_states=2, n_iter=2, **kw).fit(Xs, y)
    p = str(tmp_path / "clf.npz")
    clf.save(p)
    back = HMMClassifier.load(p)
    np.testing.assert_array_equal(back.log_likelihoods(Xs), clf.log_likelihoods(Xs))
    return clf, p


def test_classifier_parts_must_agree(tmp_path):
    clf, p = _clf(tmp_path)
    z = dict(np.load(p))
    _rewrite(p, classes=np.array(["a", "a"]))
    with pytest.raises(ValueError, match=rf"HMMClassifier.load: {p}.*classes must be distinct"):
        HMMClassifier.load(p)
    np.savez(p, **z)
    _rewrite(p, model_1=None)
    with pytest.raises(ValueError, match=rf"{p}.*\['model_1'\] are missing or unexpected for 2 classes"):
        HMMClassifier.load(p)
    np.savez(p, **z)
    other = ph.GaussianHMM(3, "diag", init_params="")
    other.startprob_, other.transmat_ = np.full(3, 1 / 3), np.full((3, 3), 1 / 3)
    other.means_, other.covars_ = np.zeros((3, 2)), np.ones((3, 2))
    other.save(str(tmp_path / "o.npz"))
    _rewrite(p, model_0=np.frombuffer((tmp_path / "o.npz").read_bytes(), np.uint8))
    with pytest.raises(ValueError, match=rf"{p} \(model_0\).*GaussianHMM with 3 states.*describes GaussianHMM "
                                         r"models with 2 states"):
        HMMClassifier.load(p)
    np.savez(p, **z)
    bad = bytearray(z["model_1"].tobytes())
    bad[len(bad) // 2] ^= 0xFF
    _rewrite(p, model_1=np.frombuffer(bytes(bad), np.uint8))
    with pytest.raises(ValueError, match=rf"{p} \(model_1\) is corrupted"):
        HMMClassifier.load(p)
    np.savez(p, **z)
    meta = json.loads(z["__meta__"].tobytes())
    _rewrite(p, __meta__=_arr({**meta, "config": {**meta["config"], "emission": "poisson"}}))
    with pytest.raises(ValueError, match=rf"{p}.*config is invalid.*emission must be one of"):
        HMMClassifier.load(p)
    np.savez(p, **z)
    _rewrite(p, __meta__=_arr({**meta, "n_features": 5}))
    with pytest.raises(ValueError, match=rf"{p} \(model_0\).*the model has 2 features, the classifier 5"):
        HMMClassifier.load(p)


def test_classifier_diag_scores_match_a_plain_model(tmp_path):
    """The classifier's models score with the models' own (kernel) emissions: a copy of the
    fitted parameters in a fresh GaussianHMM gives the same log-likelihoods."""
    clf, _ = _clf(tmp_path)
    rng = np.random.default_rng(5)
    Xs = [rng.normal(size=(9, 2)), rng.normal(size=(4, 2)) + 3]
    for j, m in enumerate(clf.models_):
        fresh = ph.GaussianHMM(2, "diag", init_params="", implementation=clf.implementation)
        fresh.startprob_, fresh.transmat_ = m.startprob_, m.transmat_
        fresh.means_, fresh.covars_ = m.means_, m._covars_
        assert "_compute_log_likelihood" not in vars(m)
        np.testing.assert_array_equal(clf.log_likelihoods(Xs)[:, j], fresh.score(Xs, per_sequence=True))
