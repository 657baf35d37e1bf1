"""Fuzz tests of hmm_forward_backward and hmm_viterbi (hypothesis), every backend.

Drawn: K 1..4 states, 1..3 sequences of 1..5 frames, random stochastic startprob and
transmat with structural zeros, emission log-likelihoods with some -inf (so that some
sequences cannot be emitted at all), float64 or float32 frames, the "scaling" and "log"
implementations, which outputs to compute, arrays whose data is not 64-byte aligned, and
invalid calls (probabilities that do not sum to 1 or are negative, wrong shapes, lengths
that do not add up or are 0, NaN or +inf frames, an unknown implementation). Valid calls
are compared with the brute-force oracle below, invalid ones must raise ValueError/TypeError
naming the op.

Oracle: every one of the K**T state paths of each sequence enumerated, its log-probability
summed term by term in float64: the log-likelihood is their log-sum-exp, posteriors and
expected transitions the path-weighted counts, the Viterbi score their maximum. The Viterbi
path is checked by its own score (ties between paths are allowed to go either way). A
sequence the model cannot emit must get log-likelihood -inf; its posteriors are not checked,
and it adds nothing to xi.
Tolerance: 1e-9 * (1 + |value|) for float64 results, 2e-6 * (1 + |value|) for float32.

Run: PYTHONPATH=$PWD pytest -q tests/test_fuzz_hmm.py (50 examples per backend);
PYAIML_FUZZ=slow for 2000, or ``pytest -m slow tests/test_fuzz_hmm.py``.
"""
import itertools

import numpy as np
from hypothesis import strategies as st

import pyaiml.ops as ops
from fuzzing import SEEDS, assert_close, fuzz_test, misaligned, valid_or_raises
from helpers import backends_for


def path_oracle(pi, A, lb):
    """One sequence, lb (T, K): (logprob, posteriors (T, K), xi (K, K), best path score)."""
    T, K = lb.shape
    paths = np.array(list(itertools.product(range(K), repeat=T)))                 # (K**T, T)
    with np.errstate(divide="ignore"):
        lpi, lA = np.log(pi), np.log(A)
    score = lpi[paths[:, 0]] + lb[0, paths[:, 0]]
    for t in range(1, T):
        score = score + lA[paths[:, t - 1], paths[:, t]] + lb[t, paths[:, t]]
    best = score.max()
    if best == -np.inf:
        return -np.inf, None, np.zeros((K, K)), -np.inf
    lp = best + np.log(np.exp(score - best).sum())
    w = np.exp(score - lp)
    post = np.stack([np.bincount(paths[:, t], weights=w, minlength=K) for t in range(T)])
    xi = np.zeros((K, K))
    for t in range(1, T):
        np.add.at(xi, (paths[:, t - 1], paths[:, t]), w)
    return lp, post, xi, best


def _stochastic(r, shape):
    """Rows summing to 1 with about 1 entry in 6 zero (never a whole row)."""
    p = r.random(shape) * (r.random(shape) > 1 / 6)
    p[..., r.integers(shape[-1])] += 0.5
    return p / p.sum(-1, keepdims=True)


@st.composite
def hmm_cases(draw):
    K = draw(st.integers(1, 4))
    lengths = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
    broken = draw(st.sampled_from([None] * 24 + ["pi_sum", "pi_neg", "A_shape", "A_row", "len_sum", "len_zero",
                                                  "lb_width", "lb_nan", "lb_posinf", "impl"]))
    return dict(K=K, lengths=lengths, broken=broken, log=draw(st.booleans()),
                f32=draw(st.integers(0, 4)) == 0, posteriors=draw(st.booleans()), xi=draw(st.booleans()),
                as_list=draw(st.booleans()), misalign=draw(st.integers(0, 3)) == 0, seed=draw(SEEDS))


def _model(c):
    """(startprob, transmat, framelogprob, lengths) of case c, with its defect if any."""
    r, K, broken = np.random.default_rng(c["seed"]), c["K"], c["broken"]
    pi, A = _stochastic(r, (K,)), _stochastic(r, (K, K))
    n = sum(c["lengths"])
    lb = 2 * r.standard_normal((n, K))
    lb[r.random((n, K)) < 0.06] = -np.inf
    lengths = list(c["lengths"])
    if broken == "pi_sum":
        pi = pi * 1.01
    elif broken == "pi_neg":
        if K == 1:
            pi = -pi
        else:  # still summing to 1
            pi[-1] += pi[0] + 0.25
            pi[0] = -0.25
    elif broken == "A_shape":
        A = np.hstack([A, np.zeros((K, 1))])
    elif broken == "A_row":
        A[K - 1] *= 0.98
    elif broken == "len_sum":
        lengths[-1] += 1
    elif broken == "len_zero":
        lengths.append(0)
    elif broken == "lb_width":
        lb = np.hstack([lb, np.zeros((n, 1))])
    elif broken == "lb_nan":
        lb[n // 2, 0] = np.nan
    elif broken == "lb_posinf":
        lb[n - 1, K - 1] = np.inf
    if c["f32"]:
        lb = lb.astype(np.float32)
    if c["misalign"]:
        pi, A, lb = misaligned(pi), misaligned(A), misaligned(lb)
    return pi, A, lb, (lengths if c["as_list"] else np.array(lengths))


def _oracle(pi, A, lb, lengths):
    off = np.concatenate([[0], np.cumsum(lengths)])
    return [path_oracle(pi, A, lb[off[s]:off[s + 1]].astype(np.float64)) for s in range(len(lengths))]


def _tol(f32, v):
    return (2e-6 if f32 else 1e-9) * (1 + np.abs(np.where(np.isfinite(v), v, 0)).max(initial=0))


def check_forward_backward(backend, c):
    """hmm_forward_backward (log-likelihoods, posteriors, xi) against the path enumeration,
    or ValueError/TypeError for invalid arguments."""
    pi, A, lb, lengths = _model(c)
    impl = "bogus" if c["broken"] == "impl" else ("log" if c["log"] else "scaling")
    op = "hmm_forward_backward"
    res = valid_or_raises(c["broken"] is None, op, ops.hmm_forward_backward, pi, A, lb, lengths,
                          implementation=impl, posteriors=c["posteriors"], xi=c["xi"])
    if res is None:
        return
    lp, post, xi = res
    want = _oracle(pi, A, lb, c["lengths"])
    out_dt = np.float32 if c["f32"] else np.float64
    w_lp = np.array([w[0] for w in want])
    assert lp.dtype == out_dt and lp.shape == (len(c["lengths"]),)
    assert_close("logprob", lp, w_lp, _tol(c["f32"], w_lp))
    if c["posteriors"]:
        assert post.dtype == out_dt and post.shape == lb.shape
        off = np.concatenate([[0], np.cumsum(c["lengths"])])
        for s, w in enumerate(want):
            if w[1] is not None:
                assert_close(f"posteriors of sequence {s}", post[off[s]:off[s + 1]], w[1], _tol(c["f32"], 1.0))
    else:
        assert post is None
    if c["xi"]:
        w_xi = sum(w[2] for w in want)
        assert xi.dtype == out_dt
        assert_close("xi", xi, w_xi, _tol(c["f32"], w_xi) * len(lb))
    else:
        assert xi is None


def check_viterbi(backend, c):
    """hmm_viterbi: the returned score is the best path's, and the returned path scores it,
    or ValueError/TypeError for invalid arguments."""
    pi, A, lb, lengths = _model(c)
    if c["broken"] == "impl":
        return  # hmm_viterbi has no implementation argument
    res = valid_or_raises(c["broken"] is None, "hmm_viterbi", ops.hmm_viterbi, pi, A, lb, lengths)
    if res is None:
        return
    lp, states = res
    want = _oracle(pi, A, lb, c["lengths"])
    best = np.array([w[3] for w in want])
    assert lp.dtype == (np.float32 if c["f32"] else np.float64) and lp.shape == best.shape
    assert_close("viterbi logprob", lp, best, _tol(c["f32"], best))
    assert states.dtype == np.int64 and states.shape == (len(lb),)
    assert ((states >= 0) & (states < c["K"])).all()
    off = np.concatenate([[0], np.cumsum(c["lengths"])])
    l64 = lb.astype(np.float64)
    with np.errstate(divide="ignore"):
        lpi, lA = np.log(pi), np.log(A)
    for s in range(len(best)):
        if best[s] == -np.inf:
            continue
        z = states[off[s]:off[s + 1]]
        own = lpi[z[0]] + l64[off[s], z[0]] + sum(lA[z[t - 1], z[t]] + l64[off[s] + t, z[t]] for t in range(1, len(z)))
        assert abs(own - best[s]) <= 1e-9 * (1 + abs(best[s])), (s, z, own, best[s])


test_forward_backward_fuzz = fuzz_test(check_forward_backward, hmm_cases(), backends_for("hmm_forward_backward"))
test_forward_backward_fuzz_slow = fuzz_test(check_forward_backward, hmm_cases(), backends_for("hmm_forward_backward"),
                                            slow=True)
test_viterbi_fuzz = fuzz_test(check_viterbi, hmm_cases(), backends_for("hmm_viterbi"))
test_viterbi_fuzz_slow = fuzz_test(check_viterbi, hmm_cases(), backends_for("hmm_viterbi"), slow=True)
