"""Word2Vec (pyaiml.models.Word2Vec / pyaiml.text): vocabulary and tables, the trainers
(C++, Numba, NumPy oracle) against each other, determinism, learning on a synthetic corpus,
loss, KeyedVectors queries, file formats (gensim interop when gensim is installed), save/load,
the mission's sample, and bad input. Fast cases only; tests/test_word2vec_quality.py holds
the slow comparison with gensim on a real corpus.
"""
import contextlib
import io
import os
import warnings

import numpy as np
import pytest
from helpers import backends_for

from pyaiml import _backend
from pyaiml.models import KeyedVectors, Word2Vec
from pyaiml.text import simple_tokenize
from pyaiml.text import vocab as V

OP = "word2vec_train_epoch"

MISSION = '''
from pyaiml.models import Word2Vec

sentences = [
    'I love machine learning',
    'Machine learning is awesome',
    'I hate machine learning',
    'Machine learning is difficult'
]

model = Word2Vec(sentences, vector_size=100, window=5, min_count=1, workers=4)

print(model.wv['machine learning'])
'''


def topic_corpus(n_sent=600, seed=0, L=12):
    """Two topics with disjoint vocabularies; sentences draw words from one topic."""
    r = np.random.default_rng(seed)
    a = [f"a{i}" for i in range(20)]
    b = [f"b{i}" for i in range(20)]
    return [list(r.choice(a if r.random() < 0.5 else b, L)) for _ in range(n_sent)]


def heavy_ok():
    """The pure-Python oracle is too slow for the larger training cases."""
    return _backend.choose(OP)[0] != "numpy"


# -- the mission's sample -------------------------------------------------------------------
def test_mission_sample_runs_and_prints_100_dims():
    out = io.StringIO()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        V._warned_plain[0] = False
        with contextlib.redirect_stdout(out):
            ns = {}
            exec(MISSION, ns)
    assert any("plain string" in str(x.message) for x in w)
    v = ns["model"].wv["machine learning"]
    assert v.shape == (100,) and v.dtype == np.float32 and np.all(np.isfinite(v))
    np.testing.assert_allclose(v, (ns["model"].wv["machine"] + ns["model"].wv["learning"]) / 2, rtol=1e-6)
    assert out.getvalue().strip().startswith("[") and len(out.getvalue().split()) >= 100
    assert "awesome" in ns["model"].wv and "a" not in ns["model"].wv  # words, not characters


def test_simple_tokenize():
    assert simple_tokenize("I love Machine-Learning! Don't.") == ["i", "love", "machine", "learning", "don't"]
    assert simple_tokenize("") == []
    with pytest.raises(TypeError, match="must be a str"):
        simple_tokenize(3)


# -- vocabulary and tables -----------------------------------------------------------------
def test_vocab_order_min_count_and_max_final_vocab():
    sents = [["x", "y", "y", "z", "z", "z", "w"]] * 2
    m = Word2Vec(vector_size=8, min_count=2)
    m.build_vocab(sents)
    assert m.wv.index_to_key == ["z", "y", "x", "w"]
    assert m.wv.get_vecattr("z", "count") == 6
    m = Word2Vec(vector_size=8, min_count=1, max_final_vocab=2)
    m.build_vocab(sents)
    assert m.wv.index_to_key == ["z", "y"]
    m = Word2Vec(vector_size=8, min_count=2, trim_rule=lambda w, c, mc: 1 if w == "z" else (2 if w == "w" else 0))
    m.build_vocab(sents)
    assert m.wv.index_to_key == ["y", "x", "w"]
    counts, _, _ = V.scan([["a"] * 5 + [f"r{i}" for i in range(50)]], max_vocab_size=10)
    assert "a" in counts and len(counts) <= 10


def test_vocab_matches_gensim():
    gensim = pytest.importorskip("gensim")
    sents = topic_corpus(200) + [["rare"], ["once", "more"]]
    g = gensim.models.Word2Vec(vector_size=8, min_count=3, sample=1e-3)
    g.build_vocab(sents)
    m = Word2Vec(vector_size=8, min_count=3, sample=1e-3)
    m.build_vocab(sents)
    assert set(g.wv.index_to_key) == set(m.wv.index_to_key)
    for w in m.wv.index_to_key:
        assert g.wv.get_vecattr(w, "count") == m.wv.get_vecattr(w, "count")
        # gensim's keep probability as a 2**32 threshold: ours agrees to rounding
        gs = min(g.wv.get_vecattr(w, "sample_int"), 2**32 - 1)
        assert abs(int(m._sample_thr[m.wv.key_to_index[w]]) - gs) <= 2


def test_sample_thresholds_formula():
    cnt = np.array([1000, 100, 10, 1])
    thr = V.sample_thresholds(cnt, 1e-2)
    t = 1e-2 * cnt.sum()
    p = np.minimum((np.sqrt(cnt / t) + 1) * t / cnt, 1)
    np.testing.assert_allclose(thr / 2**32, p, atol=1e-9)
    assert np.all(V.sample_thresholds(cnt, 0) == 2**32 - 1)


def test_alias_table_is_the_unigram_power_distribution():
    cnt = np.array([50, 20, 20, 7, 3, 1, 1], dtype=np.int64)
    thr, alias = V.alias_table(cnt, 0.75)
    Vn = len(cnt)
    p = thr.astype(np.float64) / 2**32
    got = p / Vn
    np.add.at(got, alias, (1 - p) / Vn)
    want = cnt**0.75 / (cnt**0.75).sum()
    np.testing.assert_allclose(got, want, atol=1e-8)


def test_huffman_is_prefix_free_and_optimal():
    import heapq

    cnt = np.array([40, 30, 10, 9, 5, 3, 2, 1])
    codes, points, off = V.huffman(cnt)
    words = ["".join(map(str, codes[off[i]:off[i + 1]])) for i in range(len(cnt))]
    for i, a in enumerate(words):
        for j, b in enumerate(words):
            assert i == j or not b.startswith(a)
    assert np.all(points >= 0) and np.all(points < len(cnt) - 1)
    h = list(map(int, cnt))
    heapq.heapify(h)
    cost = 0
    while len(h) > 1:
        s = heapq.heappop(h) + heapq.heappop(h)
        cost += s
        heapq.heappush(h, s)
    assert sum(int(c) * len(w) for c, w in zip(cnt, words)) == cost
    assert all(points[off[i]] == len(cnt) - 2 for i in range(len(cnt)))  # paths start at the root


def test_pack_cuts_long_sentences_and_drops_unknown_words():
    k2i = {"a": 0, "b": 1}
    words, off, raw, n = V.pack([["a", "zz", "b"], ["a"] * 25000, ["zz"]], k2i)
    assert raw == 25004 and n == 3
    assert list(np.diff(off)) == [2, 10000, 10000, 5000]
    assert words.dtype == np.int32 and words[:2].tolist() == [0, 1]
    jobs = V.jobs(off)
    assert jobs[0] == 0 and jobs[-1] == len(off) - 1 and np.all(np.diff(jobs) > 0)


# -- trainers against each other ------------------------------------------------------------
def _tables(m, sents):
    words, off, _, _ = V.pack(sents, m.wv.key_to_index)
    return words, off, V.jobs(off, job_words=50)


@pytest.mark.parametrize("sg,hs,neg,D", [(1, 0, 5, 19), (0, 0, 5, 19), (1, 1, 0, 19), (0, 1, 0, 19), (0, 1, 3, 19),
                                         (1, 0, 4, 130), (0, 1, 2, 130)])
def test_backends_agree_with_the_numpy_oracle(sg, hs, neg, D):
    """D=19 pads to 32 floats (a specialised kernel on every ISA); D=130 pads to 144 (the
    generic kernel on every ISA)."""
    sents = topic_corpus(12, L=9)
    base = Word2Vec(vector_size=D, min_count=1, sg=sg, hs=hs, negative=neg, window=3, sample=1e-2, seed=3,
                    workers=1)
    base.build_vocab(sents)
    words, off, jobs = _tables(base, sents)
    results = {}
    for b in ["numpy"] + [x for x in backends_for(OP) if x != "numpy"]:
        s0, s1n, s1 = (None if a is None else a.copy() for a in (base._syn0p, base._syn1negp, base._syn1p))
        fn = _backend.resolve(OP, b)
        outs = []
        for ep in range(2):
            outs.append(fn(s0, s1n, s1, words, off, jobs, base._sample_thr, base._alias_thr, base._alias_idx,
                           base._codes, base._points, base._code_off, sg, hs, neg, 3, 1, 1, 0.05, 0.001, ep, 2,
                           3, 1, True))
        results[b] = (s0, s1n if neg else s1, outs)
    ref = results.pop("numpy")  # the oracle here; test_backends_match_the_hs_definition checks it
    assert ref[2][0][2] > 0
    for b, (s0, s1x, outs) in results.items():
        # float32 kernels vs the float64 oracle over a few hundred updates; sigma table error 3e-6
        np.testing.assert_allclose(s0, ref[0], rtol=2e-3, atol=2e-5, err_msg=b)
        np.testing.assert_allclose(s1x, ref[1], rtol=2e-3, atol=2e-5, err_msg=b)
        for (l, e, p), (lr, er, pr) in zip(outs, ref[2]):
            assert (e, p) == (er, pr), b  # the same random draws: same subsampling and windows
            assert l == pytest.approx(lr, rel=1e-4), b
        assert np.all(s0[:, D:] == 0), b  # padding stays zero


def _hs_epoch_by_definition(syn0, syn1, sents, codes, points, code_off, sg, window, alpha):
    """One hierarchical-softmax epoch written from the update rule (gensim's order: each
    output row updated right after its own dot product), float64, exact sigma, no
    subsampling, fixed windows, constant alpha, CBOW as the mean of the context.
    Returns (syn0, syn1, loss, pairs)."""
    syn0, syn1 = syn0.astype(np.float64), syn1.astype(np.float64)
    loss, pairs = 0.0, 0

    def example(l1, w):
        nonlocal loss
        neu1e = np.zeros_like(l1)
        for c, node in zip(codes[code_off[w]:code_off[w + 1]], points[code_off[w]:code_off[w + 1]]):
            f = float(l1 @ syn1[node])
            g = (1 - int(c) - 1 / (1 + np.exp(-f))) * alpha
            loss += np.log1p(np.exp(-f if c == 0 else f))  # -log sigma(+-f)
            neu1e += g * syn1[node]
            syn1[node] += g * l1
        return neu1e

    for sent in sents:
        n = len(sent)
        for i in range(n):
            ctx = [sent[j] for j in range(max(i - window, 0), min(i + window + 1, n)) if j != i]
            if sg:
                for c in ctx:
                    syn0[c] += example(syn0[c].copy(), sent[i])
                    pairs += 1
            elif ctx:
                e = example(syn0[ctx].mean(0), sent[i])
                for c in ctx:
                    syn0[c] += e
                pairs += 1
    return syn0, syn1, loss, pairs


@pytest.mark.parametrize("backend", backends_for(OP))
@pytest.mark.parametrize("sg", [1, 0])
def test_backends_match_the_hs_definition(backend, sg):
    """Every trainer, the NumPy oracle included, against the update rule written out here:
    hierarchical softmax with no random draws (no subsampling, no negatives, no window
    shrinking, alpha constant), over two dozen sentences."""
    sents = topic_corpus(24, seed=5, L=7)
    m = Word2Vec(vector_size=19, min_count=1, sg=sg, hs=1, negative=0, window=2, sample=0, shrink_windows=False,
                 workers=1, seed=2)
    m.build_vocab(sents)
    words, off, jobs = _tables(m, sents)
    s0 = m._syn0p.copy()
    s1 = (0.1 * np.random.default_rng(0).standard_normal(m._syn1p.shape)).astype(np.float32)
    s1[:, 19:] = 0
    packed = [words[off[i]:off[i + 1]].tolist() for i in range(len(off) - 1)]
    want0, want1, want_loss, want_pairs = _hs_epoch_by_definition(s0, s1, packed, m._codes, m._points,
                                                                   m._code_off, sg, 2, 0.05)
    got0, got1 = s0.copy(), s1.copy()
    loss, eff, pairs = _backend.resolve(OP, backend)(
        got0, None, got1, words, off, jobs, m._sample_thr, m._alias_thr, m._alias_idx, m._codes, m._points,
        m._code_off, sg, 1, 0, 2, 1, 0, 0.05, 0.05, 0, 1, 2, 1, True)
    assert (eff, pairs) == (len(words), want_pairs)
    # float32 rows over ~1000 sequential updates against float64; a wrong sign, row or
    # order of updates gives errors of 1e-2 and up
    np.testing.assert_allclose(got0, want0, rtol=1e-3, atol=2e-5)
    np.testing.assert_allclose(got1, want1, rtol=1e-3, atol=2e-5)
    assert loss == pytest.approx(want_loss, rel=1e-4)


@pytest.mark.parametrize("sg", [1, 0])
def test_workers1_seed_is_exactly_repeatable(sg):
    sents = topic_corpus(150 if heavy_ok() else 20)
    a = Word2Vec(sents, vector_size=24, min_count=1, sg=sg, workers=1, seed=7, epochs=2)
    b = Word2Vec(sents, vector_size=24, min_count=1, sg=sg, workers=1, seed=7, epochs=2)
    c = Word2Vec(sents, vector_size=24, min_count=1, sg=sg, workers=1, seed=8, epochs=2)
    assert np.array_equal(a.wv.vectors, b.wv.vectors)
    assert not np.array_equal(a.wv.vectors, c.wv.vectors)


@pytest.mark.parametrize("backend", backends_for(OP))
@pytest.mark.parametrize("sg,hs,neg,workers", [(1, 0, 5, 2), (0, 0, 5, 1), (1, 1, 0, 1), (0, 1, 0, 2)])
def test_learns_topics(backend, sg, hs, neg, workers, monkeypatch):
    if backend == "numpy":
        pytest.skip("the pure-Python oracle is too slow for this corpus (it is checked on a tiny one)")
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    sents = topic_corpus(1500)
    m = Word2Vec(sents, vector_size=32, window=4, min_count=1, sg=sg, hs=hs, negative=neg, workers=workers,
                 seed=1, epochs=5, sample=0, compute_loss=True)
    wv = m.wv
    same = np.mean([wv.similarity(f"a{i}", f"a{j}") for i in range(5) for j in range(5, 10)])
    cross = np.mean([wv.similarity(f"a{i}", f"b{j}") for i in range(5) for j in range(5, 10)])
    assert same > cross, (same, cross)
    # Every vector shares a common component whose size depends on how two Hogwild threads
    # interleave on this 40-word vocabulary (raw cross-topic cosine 0.1 with one thread; with
    # two, -0.2 to 0.7 between runs of one seed, gensim 0.17-0.25). Without it the topics are
    # the whole signal: centred same-topic cosine ~0.96, cross-topic ~-0.96 in every mode and
    # run; untrained vectors give ~0 for both.
    X = wv.vectors - wv.vectors.mean(axis=0)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    a, b = X[[wv.key_to_index[f"a{i}"] for i in range(10)]], X[[wv.key_to_index[f"b{i}"] for i in range(10)]]
    c_same, c_cross = np.mean(a[:5] @ a[5:].T), np.mean(a[:5] @ b[5:].T)
    assert c_same > 0.6 and c_cross < -0.6, (c_same, c_cross)
    top = [w for w, _ in wv.most_similar("a3", topn=5)]
    assert sum(w.startswith("a") for w in top) >= 4
    assert len(m.epoch_losses) == 5 and all(l > 0 for l in m.epoch_losses)
    assert m.epoch_losses[-1] < m.epoch_losses[0]


def test_loss_first_epoch_value():
    """hs only, no subsampling, no window shrinking: no randomness; with syn1 = 0 at the start
    the first example's loss is len(path) * log 2, and the epoch loss equals the oracle's."""
    sents = [["p", "q", "r", "p", "q", "p"]]
    m = Word2Vec(vector_size=16, min_count=1, sg=1, hs=1, negative=0, window=1, sample=0, shrink_windows=False,
                 compute_loss=True, workers=1)
    m.build_vocab(sents)
    words, off, jobs = _tables(m, sents)
    args = lambda s0, s1: (s0, None, s1, words, off, jobs, m._sample_thr, m._alias_thr, m._alias_idx, m._codes,
                           m._points, m._code_off, 1, 1, 0, 1, 1, 0, 0.025, 0.0001, 0, 1, 1, 1, True)
    first = words[:2]  # first example: context words[1] predicts words[0]
    n0 = int(m._code_off[first[0] + 1] - m._code_off[first[0]])
    s0, s1 = m._syn0p.copy(), np.zeros_like(m._syn1p)
    s1[:] = 0
    ref = _backend.resolve(OP, "numpy")(s0.copy(), None, s1.copy(), *args(s0, s1)[3:])
    assert ref[2] == 10  # 6 words, window 1: 2 * 6 - 2 pairs
    for b in backends_for(OP):
        if b == "numpy":
            continue
        got = _backend.resolve(OP, b)(*args(s0.copy(), s1.copy()))
        assert got[0] == pytest.approx(ref[0], rel=1e-5)
        assert got[2] == 10
    # one word, path of length n0, zero output weights -> n0 log 2
    one = [["p", "q"]]
    w2, o2, j2 = _tables(m, one)
    got = _backend.resolve(OP)(m._syn0p.copy(), None, np.zeros_like(m._syn1p), w2[:2], o2, j2, m._sample_thr,
                               m._alias_thr, m._alias_idx, m._codes, m._points, m._code_off, 1, 1, 0, 1, 1, 0,
                               0.0, 0.0, 0, 1, 1, 1, True)
    nq = int(m._code_off[w2[1] + 1] - m._code_off[w2[1]])
    assert got[0] == pytest.approx((n0 + nq) * np.log(2), rel=1e-9)


def test_callbacks_and_latest_loss():
    seen = []

    class CB:
        def on_epoch_end(self, model):
            seen.append(model.get_latest_training_loss())

        def on_train_begin(self, model):
            seen.append("begin")

    m = Word2Vec(topic_corpus(30), vector_size=8, min_count=1, epochs=3, compute_loss=True, callbacks=[CB()])
    assert seen[0] == "begin" and len(seen) == 4 and all(x > 0 for x in seen[1:])
    assert m.get_latest_training_loss() == seen[-1]
    m2 = Word2Vec(topic_corpus(30), vector_size=8, min_count=1, epochs=1)
    assert m2.get_latest_training_loss() == 0.0


def test_corpus_file_and_train_again(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("\n".join(" ".join(s) for s in topic_corpus(40)))
    m = Word2Vec(corpus_file=str(p), vector_size=8, min_count=1, epochs=2, seed=2, workers=1)
    assert len(m.wv) == 40
    before = m.wv.vectors.copy()
    eff, raw = m.train(corpus_file=str(p), total_words=m.corpus_total_words, epochs=1)
    assert raw == 40 * 12 and 0 < eff <= raw
    assert not np.array_equal(before, m.wv.vectors)


# -- KeyedVectors ---------------------------------------------------------------------------
def small_kv():
    kv = KeyedVectors(3)
    kv.add_vectors(["king", "queen", "man", "woman", "apple"],
                   np.array([[1, 1, 0], [1, -1, 0.1], [0.5, 1, 0], [0.5, -1, 0.1], [0, 0, 1]], np.float32))
    return kv


def test_keyedvectors_lookup_and_errors():
    kv = small_kv()
    assert kv["king"].shape == (3,) and kv[["king", "man"]].shape == (2, 3)
    assert "king" in kv and "prince" not in kv and len(kv) == 5
    np.testing.assert_allclose(kv["king man"], (kv["king"] + kv["man"]) / 2)
    with pytest.raises(KeyError, match="closest known words: 'king'"):
        kv["kingg"]
    with pytest.raises(KeyError, match="neither is its word 'prince'"):
        kv["king prince"]
    np.testing.assert_allclose(np.linalg.norm(kv.get_vector("apple", norm=True)), 1, rtol=1e-6)


def test_keyedvectors_queries_against_brute_force():
    kv = small_kv()
    nv = kv.vectors / np.linalg.norm(kv.vectors, axis=1, keepdims=True)
    q = nv[1] - nv[0] + nv[2]
    q /= np.linalg.norm(q)
    sims = nv @ q
    order = [kv.index_to_key[i] for i in np.argsort(-sims) if i not in (0, 1, 2)]
    got = kv.most_similar(positive=["queen", "man"], negative=["king"], topn=2)
    assert [w for w, _ in got] == order[:2]
    assert got[0][1] == pytest.approx(sims[kv.key_to_index[order[0]]], rel=1e-5)
    assert kv.most_similar("king", topn=10, restrict_vocab=3)[0][0] in ("queen", "man")
    assert len(kv.most_similar("king", topn=10, restrict_vocab=3)) == 2
    assert kv.most_similar("king", topn=None).shape == (5,)
    assert {w for w, _ in kv.most_similar("king man", topn=10)} == {"queen", "woman", "apple"}
    assert kv.similarity("king", "man") == pytest.approx(float(nv[0] @ nv[2]), rel=1e-6)
    ws = ["king", "man", "woman", "apple"]
    sub = nv[[kv.key_to_index[w] for w in ws]]
    mean = sub.mean(axis=0)
    assert kv.doesnt_match(ws + ["unknown"]) == ws[int(np.argmin(sub @ mean))]


def test_keyedvectors_evaluations(tmp_path):
    kv = small_kv()
    ws = tmp_path / "ws.tsv"
    ws.write_text("# comment\nKing\tQueen\t8.0\nking\tman\t6.0\nking\tapple\t1.0\nman\tapple\t2.0\nfoo\tbar\t3\n")
    pearson, spearman, oov = kv.evaluate_word_pairs(str(ws))
    model = [kv.similarity(a, b) for a, b in [("king", "queen"), ("king", "man"), ("king", "apple"), ("man", "apple")]]
    from pyaiml.text.keyedvectors import _rank

    want = np.corrcoef(_rank([8, 6, 1, 2]), _rank(model))[0, 1]
    assert float(spearman[0]) == pytest.approx(want, abs=1e-9)
    assert oov == pytest.approx(20.0)
    an = tmp_path / "an.txt"
    an.write_text(": royal\nking queen man woman\nman woman king queen\nking queen xx yy\n")
    score, sections = kv.evaluate_word_analogies(str(an))
    assert sections[-1]["section"] == "Total accuracy"
    n = len(sections[0]["correct"]) + len(sections[0]["incorrect"])
    assert n == 2 and score == len(sections[0]["correct"]) / 2


@pytest.mark.parametrize("binary", [False, True])
def test_word2vec_format_round_trip(tmp_path, binary):
    r = np.random.default_rng(0)
    kv = KeyedVectors(7)
    kv.add_vectors([f"w{i}" for i in range(30)] + ["naïve"], r.standard_normal((31, 7)).astype(np.float32) * 1e-3)
    p = tmp_path / "v.bin"
    kv.save_word2vec_format(str(p), binary=binary)
    kv2 = KeyedVectors.load_word2vec_format(str(p), binary=binary)
    assert kv2.index_to_key == kv.index_to_key
    assert np.array_equal(kv2.vectors, kv.vectors)  # bit for bit, text included
    kv3 = KeyedVectors.load_word2vec_format(str(p), binary=binary, limit=5)
    assert len(kv3) == 5


@pytest.mark.parametrize("binary", [False, True])
def test_word2vec_format_interop_with_gensim(tmp_path, binary):
    gensim = pytest.importorskip("gensim")
    m = Word2Vec(topic_corpus(60), vector_size=10, min_count=1, epochs=1)
    p1 = tmp_path / "ours"
    m.wv.save_word2vec_format(str(p1), binary=binary)
    g = gensim.models.KeyedVectors.load_word2vec_format(str(p1), binary=binary)
    assert g.index_to_key == m.wv.index_to_key and np.array_equal(g.vectors, m.wv.vectors)
    gm = gensim.models.Word2Vec(topic_corpus(60), vector_size=10, min_count=1, epochs=1)
    p2 = tmp_path / "theirs"
    gm.wv.save_word2vec_format(str(p2), binary=binary)
    kv = KeyedVectors.load_word2vec_format(str(p2), binary=binary)
    assert kv.index_to_key == gm.wv.index_to_key and np.array_equal(kv.vectors, gm.wv.vectors)


def test_bad_vector_files(tmp_path):
    good = tmp_path / "g.txt"
    small_kv().save_word2vec_format(str(good), binary=False)
    lines = good.read_text().splitlines()
    trunc = tmp_path / "t.txt"
    trunc.write_text("\n".join(lines[:3]) + "\n")
    with pytest.raises(ValueError, match="truncated"):
        KeyedVectors.load_word2vec_format(str(trunc))
    short = tmp_path / "s.txt"
    short.write_text("2 3\n" + lines[1] + "\nqueen 1 2\n")
    with pytest.raises(ValueError, match="line 3 has 2 values, expected 3"):
        KeyedVectors.load_word2vec_format(str(short))
    foreign = tmp_path / "f.txt"
    foreign.write_text("hello world, this is not a vector file\n")
    with pytest.raises(ValueError, match="header"):
        KeyedVectors.load_word2vec_format(str(foreign))
    goodb = tmp_path / "g.bin"
    small_kv().save_word2vec_format(str(goodb), binary=True)
    tb = tmp_path / "t.bin"
    tb.write_bytes(goodb.read_bytes()[:-9])
    with pytest.raises(ValueError, match="truncated"):
        KeyedVectors.load_word2vec_format(str(tb), binary=True)
    with pytest.raises(ValueError, match="not a number"):
        KeyedVectors.load_word2vec_format(str(goodb), binary=False)


# -- native save/load -----------------------------------------------------------------------
def test_model_save_load_and_continue(tmp_path):
    sents = topic_corpus(40)
    m = Word2Vec(sents, vector_size=12, min_count=1, epochs=1, hs=1, negative=3, seed=5, workers=1)
    p = tmp_path / "model.w2v"
    m.save(str(p))
    saved = m.wv.vectors.copy()
    assert os.listdir(tmp_path) == ["model.w2v"]  # written through a temporary file, renamed
    m2 = Word2Vec.load(str(p))
    assert m2.wv.index_to_key == m.wv.index_to_key
    assert np.array_equal(m2.wv.vectors, m.wv.vectors) and np.array_equal(m2.syn1, m.syn1)
    assert np.array_equal(m2.syn1neg, m.syn1neg)
    m.train(sents, total_examples=len(sents), epochs=1)
    m2.train(sents, total_examples=len(sents), epochs=1)
    assert np.array_equal(m2.wv.vectors, m.wv.vectors)  # resumes identically (workers=1)
    kvp = tmp_path / "kv.npz"
    m.wv.save(str(kvp))
    kv = KeyedVectors.load(str(kvp))
    assert np.array_equal(kv.vectors, m.wv.vectors) and kv.get_vecattr("a1", "count") == m.wv.get_vecattr("a1", "count")
    assert np.array_equal(KeyedVectors.load(str(p)).vectors, saved)
    np.savez(tmp_path / "other.npz", x=np.arange(3))
    with pytest.raises(ValueError, match="not a pyaiml save file"):
        Word2Vec.load(str(tmp_path / "other.npz"))
    (tmp_path / "junk").write_bytes(b"\x80\x03junk")
    with pytest.raises(ValueError, match="junk is corrupted.*not a .npz \\(ZIP\\) archive"):
        KeyedVectors.load(str(tmp_path / "junk"))
    with pytest.raises(ValueError, match="expected 'pyaiml.Word2Vec/1'"):
        Word2Vec.load(str(kvp))


# -- bad input ------------------------------------------------------------------------------
def test_bad_input():
    with pytest.raises(ValueError, match="corpus is empty"):
        Word2Vec([], vector_size=8)
    with pytest.raises(ValueError, match="corpus is empty"):
        Word2Vec([[], []], vector_size=8)
    with pytest.raises(ValueError, match=r"vocabulary is empty.*min_count=5"):
        Word2Vec([["a", "b"]], vector_size=8)
    with pytest.raises(ValueError, match="vector_size must be an integer >= 1. Received 0"):
        Word2Vec(vector_size=0)
    with pytest.raises(ValueError, match="window must be an integer >= 1. Received 0"):
        Word2Vec(window=0)
    with pytest.raises(ValueError, match="negative=0 with hs=0"):
        Word2Vec(negative=0, hs=0)
    with pytest.raises(TypeError, match="tokens must be str. Received int 3"):
        Word2Vec([["a", 3]], min_count=1)
    with pytest.raises(TypeError, match="each sentence must be a list"):
        Word2Vec([42], min_count=1)
    with pytest.raises(TypeError, match="not one str"):
        Word2Vec("just one string", min_count=1)
    gen = (s for s in [["a", "b"]] * 5)
    with pytest.raises(TypeError, match="one-shot iterator"):
        Word2Vec(gen, min_count=1, epochs=2)
    m = Word2Vec((s for s in [["a", "b"]] * 5), min_count=1, epochs=1, vector_size=4)
    assert len(m.wv) == 2
    m = Word2Vec(vector_size=4, min_count=1)
    with pytest.raises(RuntimeError, match="build the vocabulary first"):
        m.train([["a"]])
    gen = (s for s in [["a", "b"]] * 5)
    m.build_vocab(gen)
    with pytest.raises(ValueError, match="generator already consumed"):
        m.train(gen, total_examples=5, epochs=1)


def test_native_entry_point_rejects_bad_arrays():
    C = _backend.native()
    if C is None:
        pytest.skip("C++ extension not built")
    m = Word2Vec(vector_size=8, min_count=1)
    m.build_vocab([["a", "b", "c"]])
    words, off, jobs = _tables(m, [["a", "b", "c"]])
    base = [m._syn0p, m._syn1negp, np.zeros((0, 16), np.float32), words, off, jobs, m._sample_thr, m._alias_thr,
            m._alias_idx, m._codes, m._points, m._code_off, 1, 0, 5, 5, 1, 1, 0.025, 1e-4, 0, 1, 1, 1, 0]
    bad = list(base)
    bad[3] = np.array([0, 1, 7], np.int32)
    with pytest.raises(ValueError, match=r"words must be in \[0, 3\)"):
        C.w2v_train_epoch(*bad)
    bad = list(base)
    bad[0] = np.zeros((3, 8), np.float32)
    with pytest.raises(ValueError, match="padded to a multiple of 16"):
        C.w2v_train_epoch(*bad)
    bad = list(base)
    bad[4] = np.array([0, 5], np.int64)
    with pytest.raises(ValueError, match="sent_off"):
        C.w2v_train_epoch(*bad)
    bad = list(base)
    bad[3] = words.astype(np.int64)
    with pytest.raises(ValueError, match="words must have dtype int32"):
        C.w2v_train_epoch(*bad)


@pytest.mark.parametrize("arg,value,msg", [
    ("window", 2**31, "window must be an integer <= 2147483647. Received 2147483648"),
    ("vector_size", 2**31, "vector_size must be an integer <= 2147483647"),
    ("workers", 2**31, "workers must be an integer <= 1024"),
    ("workers", 1025, "workers must be an integer <= 1024. Received 1025"),
    ("epochs", 2**63, "epochs must be an integer <= 9223372036854775807"),
    ("min_count", 2**63, "min_count must be an integer <= 9223372036854775807"),
    ("negative", 2**31, "negative must be an integer <= 1000"),
    ("max_vocab_size", 2**64, "max_vocab_size must be an integer <= 9223372036854775807"),
    ("max_final_vocab", 2**64, "max_final_vocab must be an integer <= 9223372036854775807"),
    ("seed", -1, "seed must be an integer >= 0. Received -1"),
    ("seed", 2**64, "seed must be an integer <= 18446744073709551615"),
    ("seed", 1.5, "seed must be an integer >= 0. Received 1.5"),
    ("window", np.int64(0), "window must be an integer >= 1. Received 0"),
])
def test_integer_arguments_are_range_checked_by_name(arg, value, msg):
    kw = {"min_count": 1, "vector_size": 4, arg: value}
    with pytest.raises(ValueError, match=f"Word2Vec: {msg}"):
        Word2Vec([["a", "b", "c"]] * 3, **kw)
    m = Word2Vec([["a", "b", "c"]] * 3, min_count=1, vector_size=4, epochs=1)
    with pytest.raises(ValueError, match="Word2Vec.train: epochs must be an integer <= 9223372036854775807"):
        m.train([["a", "b"]], total_examples=1, epochs=2**63)


def test_largest_seed_trains_like_the_numpy_oracle(monkeypatch):
    sents = topic_corpus(6, L=5)
    got = Word2Vec(sents, vector_size=4, min_count=1, epochs=1, workers=1, seed=2**64 - 1)
    monkeypatch.setenv("PYAIML_BACKEND", "numpy")
    want = Word2Vec(sents, vector_size=4, min_count=1, epochs=1, workers=1, seed=2**64 - 1)
    np.testing.assert_allclose(got.wv.vectors, want.wv.vectors, rtol=2e-3, atol=2e-5)


@pytest.mark.parametrize("backend", backends_for(OP))
def test_train_epoch_op_checks_arguments_on_every_backend(backend, monkeypatch):
    """pyaiml.ops.word2vec_train_epoch checks the arrays and integers for every backend (the
    Numba and NumPy trainers index without checks of their own)."""
    from pyaiml import ops

    monkeypatch.setenv("PYAIML_BACKEND", backend)
    m = Word2Vec(vector_size=8, min_count=1, hs=1, negative=2)
    m.build_vocab([["a", "b", "c"], ["a"]])
    words, off, jobs = _tables(m, [["a", "b", "c"], ["a"]])
    base = dict(syn0=m._syn0p, syn1neg=m._syn1negp, syn1=m._syn1p, words=words, sent_off=off, job_off=jobs,
                sample_thr=m._sample_thr, alias_thr=m._alias_thr, alias_idx=m._alias_idx, codes=m._codes,
                points=m._points, code_off=m._code_off, sg=1, hs=1, negative=2, window=5, cbow_mean=1,
                shrink_windows=1, alpha=0.025, min_alpha=1e-4, epoch=0, epochs=1, seed=1, workers=1,
                compute_loss=True)
    cases = [
        (ValueError, r"words must be in \[0, 3\). Received 7 at position 2",
         {"words": np.array([0, 1, 7, 0], np.int32)}),
        (ValueError, "padded to a multiple of 16", {"syn0": np.zeros((3, 8), np.float32)}),
        (TypeError, "syn1neg must be a float32 NumPy array", {"syn1neg": None}),
        (ValueError, r"sent_off must start at 0 and end at len\(words\) \(4\)",
         {"sent_off": np.array([0, 5], np.int64)}),
        (ValueError, "sent_off must be non-decreasing", {"sent_off": np.array([0, 3, 2, 4], np.int64)}),
        (ValueError, r"job_off must start at 0 and end at the number of sentences \(2\)",
         {"job_off": np.array([0, 1], np.int64)}),
        (TypeError, "words must have dtype int32. Received int64", {"words": words.astype(np.int64)}),
        (ValueError, "sample_thr must have length 3", {"sample_thr": m._sample_thr[:2]}),
        (ValueError, r"alias_idx must be in \[0, 3\)", {"alias_idx": np.array([0, 1, 3], np.int32)}),
        (ValueError, r"codes must be in \[0, 2\)", {"codes": np.full_like(m._codes, 2)}),
        (ValueError, r"points must be in \[0, 3\)", {"points": np.full_like(m._points, 9)}),
        (ValueError, r"window must be an integer in \[1, 2147483647\]. Received 2147483648", {"window": 2**31}),
        (ValueError, r"workers must be an integer in \[1, 1024\]. Received 0", {"workers": 0}),
        (ValueError, r"seed must be an integer in \[0, 18446744073709551615\]. Received -1", {"seed": -1}),
        (ValueError, r"epoch must be an integer in \[0, 0\]. Received 1", {"epoch": 1}),
        (ValueError, r"negative must be an integer in \[0, 1000\]", {"negative": 1001}),
        (ValueError, r"sg must be an integer in \[0, 1\]. Received 2", {"sg": 2}),
        (ValueError, "alpha must be a finite number. Received nan", {"alpha": float("nan")}),
    ]
    ref = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in base.items()}
    for err, msg, bad in cases:
        with pytest.raises(err, match=f"word2vec_train_epoch: .*{msg}"):
            ops.word2vec_train_epoch(**{**base, **bad})
    for k in ("syn0", "syn1neg", "syn1"):
        assert np.array_equal(base[k], ref[k])  # nothing was trained by a refused call
    loss, eff, pairs = ops.word2vec_train_epoch(**base)
    want = _backend.resolve(OP, "numpy")(**{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in ref.items()})
    assert (eff, pairs) == want[1:] and loss == pytest.approx(want[0], rel=1e-4)
