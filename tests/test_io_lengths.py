"""HMM ``lengths`` checks (pyaiml.ops.hmm.offsets_from_lengths and every model method that
takes lengths), on every backend: lengths whose int64 or uint64 sum wraps round to the
frame count, negative, zero, fractional, non-numeric and 2-D lengths give a ValueError
naming ``lengths`` before any kernel runs; valid lengths give offsets equal to NumPy's
cumulative sum and the same scores as a list of arrays."""
import numpy as np
import pytest

from helpers import backends_for
from pyaiml import hmm as ph
from pyaiml import ops
from pyaiml.ops.hmm import offsets_from_lengths

BACKENDS = backends_for("hmm_forward_backward")

# (lengths, n frames, message): sums that wrap round in 64 bits first
BAD = [
    (np.array([2**62] * 3 + [2**62 + 6], dtype=np.int64), 6, r"cannot exceed the number of frames 6.*lengths\[0\]"),
    (np.array([2**64 - 1, 7], dtype=np.uint64), 6, r"cannot exceed the number of frames 6.*18446744073709551615"),
    ([2**70, 1], 6, r"cannot exceed the number of frames 6.*lengths\[0\] = 1180591620717411303424"),
    ([3, -1, 4], 6, r"every sequence length must be >= 1. Received lengths\[1\] = -1"),
    ([6, 0], 6, r"every sequence length must be >= 1. Received lengths\[1\] = 0"),
    ([2.5, 3.5], 6, r"lengths must be whole numbers. Received lengths\[0\] = 2.5"),
    ([np.nan, 6.0], 6, r"lengths must be whole numbers"),
    ([[3, 3]], 6, r"lengths must be a non-empty 1-D sequence.*shape \(1, 2\)"),
    ([], 6, r"lengths must be a non-empty 1-D sequence.*shape \(0,\)"),
    (["3", "3"], 6, r"lengths must be integers. Received dtype <U1"),
    ([True] * 6, 6, r"lengths must be integers. Received dtype bool"),
    ([[1], [2, 3]], 6, r"lengths must be a 1-D sequence of integers"),
    ([1] * 7, 6, r"lengths must sum to the number of frames 6. Received 7 sequences"),
    ([2, 3], 6, r"lengths must sum to the number of frames 6. Received a sum of 5"),
]


@pytest.mark.parametrize("lengths,n,msg", BAD)
def test_offsets_reject(lengths, n, msg):
    with pytest.raises(ValueError, match=msg):
        offsets_from_lengths(lengths, n, "op")


def test_offsets_sum_that_wraps_with_every_length_in_range():
    # each length <= n, but the int64 sum 5 * 2**62 wraps round to 2**62 = n
    n = 2**62
    with pytest.raises(ValueError, match=f"sum to the number of frames {n}. Received a sum of {5 * 2**62}"):
        offsets_from_lengths([2**62] * 5, n, "op")
    off = offsets_from_lengths([2**61, 2**61], n, "op")
    assert off.dtype == np.int64 and off.tolist() == [0, 2**61, 2**62]


@pytest.mark.parametrize("lengths", [[7, 1, 22], np.array([7, 1, 22], np.uint8), np.array([7, 1, 22], np.uint64),
                                     np.array([7.0, 1.0, 22.0]), np.array([7, 1, 22], dtype=object)])
def test_offsets_valid(lengths):
    off = offsets_from_lengths(lengths, 30, "op")
    assert off.dtype == np.int64
    np.testing.assert_array_equal(off, np.r_[0, np.cumsum([7, 1, 22])])


def _model():
    rng = np.random.default_rng(0)
    m = ph.GaussianHMM(2, "diag", init_params="", n_iter=1)
    m.startprob_ = np.array([0.6, 0.4])
    m.transmat_ = np.array([[0.7, 0.3], [0.2, 0.8]])
    m.means_ = rng.normal(size=(2, 2))
    m.covars_ = np.ones((2, 2))
    return m


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lengths,n,msg", BAD[:6])
def test_models_reject_on_every_backend(backend, lengths, n, msg, monkeypatch):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    m = _model()
    X = np.random.default_rng(1).normal(size=(n, 2))
    for call in (m.score, m.score_samples, m.predict, m.predict_proba, m.decode, m.fit):
        with pytest.raises(ValueError, match=msg):
            call(X, lengths)
    pi, A = m.startprob_, m.transmat_
    lb = np.zeros((n, 2))
    with pytest.raises(ValueError, match="hmm_forward_backward: .*" + msg):
        ops.hmm_forward_backward(pi, A, lb, lengths)
    with pytest.raises(ValueError, match="hmm_viterbi: .*" + msg):
        ops.hmm_viterbi(pi, A, lb, lengths)


@pytest.mark.parametrize("backend", BACKENDS)
def test_models_valid_unsigned_lengths(backend, monkeypatch):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    m = _model()
    X = np.random.default_rng(1).normal(size=(9, 2))
    want = m.score([X[:4], X[4:]], per_sequence=True)
    got = m.score(X, np.array([4, 5], np.uint64), per_sequence=True)
    np.testing.assert_array_equal(got, want)
