"""Word2Vec's gensim 4 model API beyond training: online vocabulary updates, vocabulary
reports, build_vocab_from_freq, score, predict_output_word, reset_from, the running loss,
vectors_lockf on every backend, gensim's exception types and log warnings, LineSentence.

Oracles: gensim 4.4 (vocabulary counts and reports on the same corpus, predict_output_word on
the same weights), the NumPy trainer (lockf), and the definitions written out here (score's
hierarchical-softmax log probabilities; the Huffman paths form a probability distribution).
Not here: training quality and file formats (tests/test_word2vec*.py, test_io_word2vec_files.py).
Run: PYTHONPATH=. python -m pytest -q tests/test_w2v_gensim_api.py
"""
from __future__ import annotations

import bz2
import logging
import warnings

import numpy as np
import pytest
from helpers import backends_for

from pyaiml.models import LineSentence, PathLineSentences, Word2Vec
from pyaiml.models.keyedvectors import KeyedVectors

OP = "word2vec_train_epoch"

TEXTS = [["human", "interface", "computer"], ["survey", "user", "computer", "system", "response", "time"],
         ["eps", "user", "interface", "system"], ["system", "human", "system", "eps"],
         ["user", "response", "time"], ["trees"], ["graph", "trees"], ["graph", "minors", "trees"],
         ["graph", "minors", "survey"]]
NEW = [["computer", "artificial", "intelligence"], ["artificial", "trees"], ["human", "intelligence"],
       ["artificial", "graph"], ["intelligence"], ["artificial", "intelligence", "system"]]


def topic_corpus(n_sent=200, seed=0):
    r = np.random.default_rng(seed)
    return [[f"{t}{int(i)}" for i in r.integers(0, 8, 10)] for t in r.choice(["a", "b"], n_sent)]


def _counts(wv):
    return {k: wv.get_vecattr(k, "count") for k in wv.index_to_key}


# -- vocabulary -----------------------------------------------------------------------------
def test_online_update_keeps_trained_rows_and_matches_gensim_counts():
    gensim = pytest.importorskip("gensim")
    m = Word2Vec(TEXTS, vector_size=10, min_count=0, seed=42, workers=1)
    before = m.wv.vectors.copy()
    syn1neg = m.syn1neg.copy()
    m.build_vocab(NEW, update=True)
    g = gensim.models.Word2Vec(TEXTS, vector_size=10, min_count=0, seed=42, workers=1)
    g.build_vocab(NEW, update=True)
    assert len(m.wv) == len(g.wv) == 14
    assert _counts(m.wv) == {k: int(g.wv.get_vecattr(k, "count")) for k in g.wv.index_to_key}
    assert m.wv.index_to_key[12:] == ["artificial", "intelligence"]  # appended, in first-seen order
    np.testing.assert_array_equal(m.wv.vectors[:12], before)  # trained rows kept
    np.testing.assert_array_equal(m.syn1neg[:12], syn1neg)
    assert not m.syn1neg[12:].any() and np.abs(m.wv.vectors[12:]).max() <= 0.5 / 10 * 2
    m.train(NEW, total_examples=len(NEW), epochs=m.epochs)
    assert not np.array_equal(m.wv["artificial"], before[0])


def test_update_without_vocabulary_is_a_runtime_error():
    m = Word2Vec(min_count=1)
    with pytest.raises(RuntimeError, match="no vocabulary to update"):
        m.build_vocab(NEW, update=True)


@pytest.mark.parametrize("kw", [{"min_count": 4, "max_final_vocab": 4}, {"min_count": 2, "max_final_vocab": 4},
                                {"min_count": 1, "sample": 1e-2}, {"min_count": 0, "sample": 0}])
def test_scan_and_prepare_report_like_gensim(kw):
    gensim = pytest.importorskip("gensim")
    m, g = Word2Vec(vector_size=10, **kw), gensim.models.Word2Vec(vector_size=10, **kw)
    total, n = m.scan_vocab(TEXTS)
    assert (total, n) == (29, 9)
    g.scan_vocab(TEXTS)
    got, want = m.prepare_vocab(dry_run=True), g.prepare_vocab(dry_run=True)
    for k in ("drop_unique", "retain_total", "num_retained_words", "downsample_unique"):
        assert got[k] == want[k], k
    assert abs(got["downsample_total"] - want["downsample_total"]) <= 1
    m.prepare_vocab()
    g.prepare_vocab()
    assert m.effective_min_count == g.effective_min_count
    assert sorted(m.wv.index_to_key) == sorted(g.wv.index_to_key)


def test_build_vocab_from_freq_and_update():
    m = Word2Vec(vector_size=10, min_count=0, hs=1, negative=0)
    m.build_vocab_from_freq({"a": 3, "b": 5, "c": 1})
    assert m.wv.index_to_key == ["b", "a", "c"] and m.corpus_total_words == 9
    m.build_vocab_from_freq({"a": 1, "d": 2}, update=True)
    assert _counts(m.wv) == {"b": 5, "a": 4, "c": 1, "d": 2}
    assert m.syn1.shape == (4, 10)
    with pytest.raises(ValueError, match="counts must be integers >= 0. Received -1 for 'x'"):
        m.build_vocab_from_freq({"x": -1})
    with pytest.raises(TypeError, match="word_freq must be a dict"):
        m.build_vocab_from_freq([("a", 1)])


def test_empty_vocabulary_defers_to_train_with_both_error_types(caplog):
    with caplog.at_level(logging.WARNING, logger="pyaiml.text"):
        m = Word2Vec(min_count=5)
        m.build_vocab([["a", "b"]])  # gensim builds an empty vocabulary and fails in train
    assert "vocabulary is empty" in caplog.text and len(m.wv) == 0
    for exc in (ValueError, RuntimeError):
        with pytest.raises(exc, match=r"vocabulary is empty.*min_count=5"):
            m.train([["a", "b"]], total_examples=1, epochs=1)
    with pytest.raises(RuntimeError, match="corpus is empty"):
        Word2Vec([])


def test_plain_string_sentences_are_logged_as_gensim_words(caplog):
    with caplog.at_level(logging.WARNING, logger="pyaiml.text"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the UserWarning comes once per process; the log line every time
        Word2Vec(min_count=1).build_vocab(["human machine", "machine"])
    assert "Each 'sentences' item should be a list of words (usually unicode strings)." in caplog.text


def test_reset_from_takes_vocabulary_and_fresh_weights():
    a = Word2Vec(TEXTS, vector_size=8, min_count=1, seed=3)
    b = Word2Vec(NEW, vector_size=8, min_count=1, seed=3)
    a.reset_from(b)
    assert a.wv.key_to_index == b.wv.key_to_index and _counts(a.wv) == _counts(b.wv)
    fresh = Word2Vec(vector_size=8, min_count=1, seed=3)
    fresh.build_vocab(NEW)
    np.testing.assert_array_equal(a.wv.vectors, fresh.wv.vectors)
    with pytest.raises(TypeError, match="other_model must be a pyaiml Word2Vec with a vocabulary"):
        a.reset_from(Word2Vec())


# -- train() contract -----------------------------------------------------------------------
def test_train_requires_counts_and_epochs_like_gensim():
    m = Word2Vec(vector_size=4, min_count=1)
    m.build_vocab(TEXTS)
    with pytest.raises(ValueError, match="give total_examples"):
        m.train(TEXTS, epochs=1)
    with pytest.raises(ValueError, match="give epochs explicitly"):
        m.train(TEXTS, total_examples=9)
    kv = KeyedVectors(4)
    kv.add_vectors(["a"], np.ones((1, 4)))
    m.wv = kv
    with pytest.raises(RuntimeError, match="wv is not the one build_vocab made"):
        m.train(TEXTS, total_examples=9, epochs=1)


def test_running_loss_is_the_total_of_the_latest_train_call():
    m = Word2Vec(vector_size=8, min_count=1, sg=1, hs=1, negative=5, sample=0, epochs=3, compute_loss=True,
                 workers=1)
    m.build_vocab(topic_corpus(50))
    m.train(topic_corpus(50), total_examples=50, epochs=3)
    assert len(m.epoch_losses) == 3 and m.get_latest_training_loss() == pytest.approx(sum(m.epoch_losses))
    m.train(topic_corpus(50), total_examples=50, epochs=1)
    assert m.get_latest_training_loss() == pytest.approx(m.epoch_losses[0])  # restarts per call


def test_alpha_rising_between_calls_is_logged(caplog):
    m = Word2Vec(vector_size=4, min_count=1)
    m.build_vocab(TEXTS)
    m.train(TEXTS, total_examples=9, epochs=1)
    with caplog.at_level(logging.WARNING, logger="pyaiml.text"):
        m.train(TEXTS, total_examples=9, epochs=1)
    assert "Effective 'alpha' higher than previous training cycles" in caplog.text


def test_load_is_a_class_method_only(tmp_path):
    m = Word2Vec(TEXTS, vector_size=4, min_count=1)
    m.save(str(tmp_path / "m"))
    with pytest.raises(AttributeError, match="class method"):
        m.load(str(tmp_path / "m"))
    m.wv.save(str(tmp_path / "kv"))
    with pytest.raises(AttributeError, match="expected 'pyaiml.Word2Vec/1'"):
        Word2Vec.load(str(tmp_path / "kv"))
    with pytest.raises(ValueError, match="expected 'pyaiml.Word2Vec/1'"):
        Word2Vec.load(str(tmp_path / "kv"))


# -- vectors_lockf --------------------------------------------------------------------------
@pytest.mark.parametrize("sg", [0, 1])
@pytest.mark.parametrize("backend", backends_for(OP))
def test_lockf_freezes_and_scales_updates_on_every_backend(backend, sg, monkeypatch):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    sents = topic_corpus(12 if backend == "numpy" else 120)
    m = Word2Vec(vector_size=8, min_count=1, sg=sg, hs=1, negative=2, workers=1, seed=4, sample=0)
    m.build_vocab(sents)
    start = m.wv.vectors.copy()
    lockf = np.ones(len(m.wv), np.float32)
    lockf[0], lockf[1] = 0.0, 0.5
    m.wv.vectors_lockf = lockf
    m.train(sents, total_examples=len(sents), epochs=2)
    np.testing.assert_array_equal(m.wv.vectors[0], start[0])  # frozen exactly
    assert (m.wv.vectors[1] != start[1]).all() and (m.wv.vectors[2] != start[2]).all()
    # a scalar factor applies to every word; 0 freezes the whole input layer
    m.wv.vectors_lockf = np.zeros(1, np.float32)
    now = m.wv.vectors.copy()
    m.train(sents, total_examples=len(sents), epochs=1)
    np.testing.assert_array_equal(m.wv.vectors, now)
    with pytest.raises(ValueError, match="vectors_lockf must have 1 or"):
        m.wv.vectors_lockf = np.ones(2, np.float32)
        m.train(sents, total_examples=len(sents), epochs=1)


def test_lockf_matches_the_numpy_trainer(monkeypatch):
    sents = topic_corpus(10)
    lockf = np.linspace(0, 1.5, 16).astype(np.float32)

    def run():
        m = Word2Vec(vector_size=4, min_count=1, hs=1, negative=2, workers=1, seed=9, sg=1)
        m.build_vocab(sents)
        m.wv.vectors_lockf = lockf[:len(m.wv)]
        m.train(sents, total_examples=len(sents), epochs=1)
        return m.wv.vectors

    got = run()
    monkeypatch.setenv("PYAIML_BACKEND", "numpy")
    np.testing.assert_allclose(got, run(), rtol=2e-3, atol=2e-5)


# -- queries on the model -------------------------------------------------------------------
def test_score_is_the_hierarchical_softmax_log_probability():
    for sg in (0, 1):
        m = Word2Vec(topic_corpus(60), vector_size=6, min_count=1, sg=sg, hs=1, negative=0, window=2, seed=1)
        wv, syn1 = m.wv, m.syn1.astype(np.float64)

        def logp(w, l1, wv=wv, syn1=syn1):
            code, point = wv.get_vecattr(w, "code"), wv.get_vecattr(w, "point")
            f = syn1[point] @ l1
            return float(np.sum(-np.logaddexp(0, -(1 - 2.0 * code) * f)))

        s = ["a1", "a2", "zz-unknown", "a3"]
        ids = ["a1", "a2", "a3"]
        want = 0.0
        for i, w in enumerate(ids):
            ctx = [c for j, c in enumerate(ids[max(0, i - 2):i + 3], max(0, i - 2)) if j != i]
            if sg:
                want += sum(logp(w, wv[c].astype(np.float64)) for c in ctx)
            else:
                want += logp(w, np.mean([wv[c] for c in ctx], axis=0).astype(np.float64))
        got = m.score([s, ["a1"]], total_sentences=5)
        assert got.dtype == np.float32 and got.shape == (2,)
        assert got[0] == pytest.approx(want, rel=1e-5) and got[1] == 0.0
        # the Huffman paths define a distribution over the vocabulary
        l1 = wv["b2"].astype(np.float64)
        assert sum(np.exp(logp(w, l1)) for w in wv.index_to_key) == pytest.approx(1.0, rel=1e-9)
    with pytest.raises(RuntimeError, match="hierarchical softmax"):
        Word2Vec(TEXTS, min_count=1).score(TEXTS)


def test_predict_output_word_like_gensim():
    gensim = pytest.importorskip("gensim")
    g = gensim.models.Word2Vec(TEXTS, vector_size=10, min_count=1, seed=1, workers=1)
    m = Word2Vec.from_gensim(g)
    want = g.predict_output_word(["system", "human"], topn=5)
    got = m.predict_output_word(["system", m.wv.get_index("human")], topn=5)
    assert [w for w, _ in got] == [w for w, _ in want]
    np.testing.assert_allclose([p for _, p in got], [p for _, p in want], rtol=1e-4)
    assert m.predict_output_word(["nope"]) is None
    with pytest.raises(RuntimeError, match="negative=0"):
        Word2Vec(TEXTS, min_count=1, hs=1, negative=0).predict_output_word(["system"])


# -- corpora --------------------------------------------------------------------------------
def test_line_sentence_reads_plain_bz2_and_open_files(tmp_path):
    text = "a b c\n\nd  e\n" + " ".join(f"w{i}" for i in range(7)) + "\n"
    (tmp_path / "c.txt").write_text(text)
    (tmp_path / "c.txt.bz2").write_bytes(bz2.compress(text.encode()))
    want = [["a", "b", "c"], ["d", "e"], [f"w{i}" for i in range(7)]]  # an empty line is no sentence (gensim)
    assert list(LineSentence(str(tmp_path / "c.txt"))) == want
    assert list(LineSentence(str(tmp_path / "c.txt.bz2"))) == want
    with open(tmp_path / "c.txt", "rb") as f:
        ls = LineSentence(f, max_sentence_length=3, limit=4)
        assert list(ls) == want[:2] + [["w0", "w1", "w2"], ["w3", "w4", "w5"], ["w6"]]
        assert list(LineSentence(f, limit=2)) == want[:1]
        assert list(ls) == list(ls)  # rewound per pass
    assert list(PathLineSentences(str(tmp_path))) == want + want
    m = Word2Vec(corpus_file=str(tmp_path / "c.txt.bz2"), vector_size=4, min_count=1, epochs=1)
    assert len(m.wv) == 12
    with pytest.raises(ValueError, match="max_sentence_length must be an integer >= 1. Received 0"):
        LineSentence(str(tmp_path / "c.txt"), max_sentence_length=0)
    with pytest.raises(TypeError, match="source must be a path or an open file"):
        LineSentence(3)
