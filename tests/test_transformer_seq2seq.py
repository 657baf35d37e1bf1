"""Seq2SeqTransformer: training through fit on a tiny task, greedy decoding equals
teacher-forced argmax, beam width 1 equals greedy, errors, the number-words data.
The full run (>= 95% held-out exact match) is the slow test."""
import os
import subprocess
import sys

import numpy as np
import pytest

from pyaiml.datasets.number_words import number_pairs, number_to_words
from pyaiml.keras import optimizers
from pyaiml.keras.utils import set_random_seed
from pyaiml.seq.seq2seq import Seq2SeqTransformer, encode_pairs, make_tokenizers


def test_number_to_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(21) == "twenty-one"
    assert number_to_words(407021) == "four hundred seven thousand twenty-one"
    assert number_to_words(1000000) == "one million"
    assert number_to_words(999999999).startswith("nine hundred ninety-nine million")
    with pytest.raises(ValueError, match="n must be an integer"):
        number_to_words(-1)
    tr, te = number_pairs(50, 10, 1000, seed=3)
    assert len(tr) == 50 and len(te) == 10
    assert not {t for _, t in tr} & {t for _, t in te}
    assert number_pairs(50, 10, 1000, seed=3) == (tr, te)


@pytest.fixture(scope="module")
def trained():
    """Reverse a short string of letters: learnable in a few seconds."""
    set_random_seed(0)
    rs = np.random.default_rng(0)
    pairs = []
    for _ in range(400):
        s = "".join(rs.choice(list("abcde"), size=rs.integers(1, 5)))
        pairs.append((s, s[::-1]))
    st, tt = make_tokenizers(pairs)
    S, T = 4, 5
    x, xi, y = encode_pairs(pairs, st, tt, S, T)
    m = Seq2SeqTransformer(st.vocab_size, tt.vocab_size, S, T, width=32, num_heads=2, enc_layers=1, dec_layers=1,
                           dropout=0.0, activation="gelu")
    m.compile(optimizers.Adam(5e-3))
    h = m.fit((x, xi), y, batch_size=32, epochs=12, verbose=0, validation_data=((x[:50], xi[:50]), y[:50]))
    return m, pairs, st, tt, x, xi, y, h


def test_fit_reduces_loss(trained):
    m, pairs, st, tt, x, xi, y, h = trained
    assert h.history["loss"][-1] < 0.5 * h.history["loss"][0]
    assert "val_loss" in h.history and "val_token_accuracy" in h.history
    loss, acc = m.evaluate((x, xi), y)
    assert acc > 0.6


def test_greedy_matches_teacher_forced_argmax(trained):
    m, pairs, st, tt, x, xi, y, h = trained
    src = x[:40]
    hyp = m.translate(src)
    # rebuild the greedy output by full recomputation, one token at a time
    T = m.tgt_len
    cur = np.zeros((len(src), T), dtype=np.int64)
    cur[:, 0] = 1
    out = np.zeros((len(src), T), dtype=np.int64)
    for t in range(T):
        z = m.predict((src, cur))
        out[:, t] = z[:, t].argmax(-1)
        if t + 1 < T:
            cur[:, t + 1] = out[:, t]
    for i, hh in enumerate(hyp):
        e = np.flatnonzero(out[i] == 2)
        want = out[i, :e[0]] if len(e) else out[i]
        assert hh.tolist() == want.tolist()


def test_beam_search(trained):
    m, pairs, st, tt, x, xi, y, h = trained
    src = x[:30]
    g = m.translate(src, method="greedy")
    b1 = m.translate(src, method="beam", beam_width=1, length_penalty=0.0)
    assert [a.tolist() for a in g] == [b.tolist() for b in b1]
    b4 = m.translate(src, method="beam", beam_width=4)
    acc = np.mean([tt.decode(o) == t for o, (_, t) in zip(b4, pairs[:30])])
    assert acc >= 0.5


def test_errors(trained):
    m = trained[0]
    with pytest.raises(ValueError, match="method must be 'greedy' or 'beam'"):
        m.translate(np.array([[3, 4]]), method="sample")
    with pytest.raises(ValueError, match="beam_width must be a positive integer"):
        m.translate(np.array([[3, 4]]), method="beam", beam_width=0)
    with pytest.raises(ValueError, match="exceeds the model's src_len"):
        m.translate(np.ones((1, 9), dtype=np.int64))
    with pytest.raises(ValueError, match="x must be a pair"):
        m.fit(np.zeros((2, 3), np.int64), np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="y must be an integer array shaped like tgt_in"):
        m.fit((np.zeros((2, 3), np.int64), np.zeros((2, 3), np.int64)), np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError, match="does not fit"):
        st, tt = make_tokenizers([("abc", "cba")])
        encode_pairs([("abc", "cba")], st, tt, 2, 3)  # the target needs 3 + 1
    with pytest.raises(RuntimeError, match="compile"):
        Seq2SeqTransformer(5, 5, 3, 3, width=8, num_heads=2).fit((np.zeros((1, 3), np.int64),) * 2,
                                                                  np.zeros((1, 3), np.int64))


@pytest.mark.slow
def test_translation_example_reaches_95_percent():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, os.path.join(root, "examples", "translation.py")], capture_output=True,
                       text=True, cwd=root, env={**os.environ, "PYTHONPATH": root}, timeout=3600)
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if "exact match (greedy)" in l)
    assert float(line.split(":")[1].split()[0]) >= 0.95, r.stdout
