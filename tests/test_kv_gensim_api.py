"""KeyedVectors' gensim 4 query API against gensim itself on the same vectors: most_similar
(keys, vectors, 2-D arrays, weighted pairs, restrict_vocab), most_similar_cosmul, closer_than,
rank, distances, get_mean_vector, relative_cosine_similarity, most_similar_to_given,
vectors_for_all, unit_normalize_all, kv[key] = vec, add_vectors(replace=), and gensim's
exception types (each also a ValueError, pyaiml's rule for bad input).

Oracle: gensim 4.4's KeyedVectors holding the same keys and float32 vectors (skipped without
gensim). Not here: file formats (tests/test_io_word2vec_files.py).
Run: PYTHONPATH=. python -m pytest -q tests/test_kv_gensim_api.py
"""
from __future__ import annotations

import numpy as np
import pytest

from pyaiml.models.keyedvectors import (
    EmptyKeyListError,
    KeyedVectors,
    TruncatedFileError,
    _load_word2vec_format,
)

gensim = pytest.importorskip("gensim")
GKV = gensim.models.KeyedVectors

V, D = 97, 7  # awkward sizes


def pair(seed=0):
    r = np.random.default_rng(seed)
    keys = [f"w{i}" for i in range(V)]
    vecs = r.standard_normal((V, D)).astype(np.float32)
    ours, theirs = KeyedVectors(D), GKV(D)
    ours.add_vectors(keys, vecs)
    theirs.add_vectors(keys, vecs)
    return ours, theirs


def same(got, want, rel=1e-5):
    assert [k for k, _ in got] == [k for k, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=rel, atol=1e-6)


@pytest.mark.parametrize("query", [
    {"positive": "w3"}, {"positive": ["w3", "w5"], "negative": ["w7"]}, {"positive": [("w3", 2.0), ("w9", -0.5)]},
    {"positive": "w3", "negative": "w4"}, {"positive": ["w1"], "restrict_vocab": 20}, {"positive": ["w1"], "topn": 1},
])
def test_most_similar_like_gensim(query):
    ours, theirs = pair()
    same(ours.most_similar(**query), theirs.most_similar(**query))


@pytest.mark.parametrize("query", [
    {"positive": "w3"}, {"positive": ["w3", "w5"], "negative": ["w7"]}, {"positive": "w3", "negative": "w4"},
    {"positive": ["w1"], "topn": 1},
])
def test_most_similar_cosmul_like_gensim(query):
    ours, theirs = pair()
    same(ours.most_similar_cosmul(**query), theirs.most_similar_cosmul(**query))
    v = ours.get_vector("w3", norm=True)
    same(ours.most_similar_cosmul([v], topn=5), theirs.most_similar_cosmul([v], topn=5))


def test_most_similar_on_vectors_and_2d_arrays():
    ours, theirs = pair(1)
    block = ours.vectors[:5]
    same(ours.most_similar(positive=block), theirs.most_similar(positive=block))
    same(ours.most_similar([ours["w2"]], topn=4), theirs.most_similar([theirs["w2"]], topn=4))
    np.testing.assert_allclose(ours.most_similar("w2", topn=None), theirs.most_similar("w2", topn=None), rtol=1e-5,
                               atol=1e-6)
    assert ours.most_similar("w2", topn=np.uint8(0)) == []
    with pytest.raises(ValueError, match="must be 1-D or 2-D"):
        ours.most_similar(positive=np.zeros((2, 2, D), np.float32))
    with pytest.raises(KeyError, match="'nope' not in vocabulary"):
        ours.most_similar("nope")


def test_distances_closer_than_rank_and_friends_like_gensim():
    ours, theirs = pair(2)
    np.testing.assert_allclose(ours.distances("w4"), theirs.distances("w4"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.distances("w4", ["w1", "w2"]), theirs.distances("w4", ["w1", "w2"]), rtol=1e-5)
    for a, b in [("w4", "w8"), ("w0", "w50"), ("w4", "w4")]:
        assert sorted(ours.closer_than(a, b)) == sorted(theirs.closer_than(a, b))
        assert ours.rank(a, b) == theirs.rank(a, b)
    assert ours.similarity("w4", "w4") == 1.0 and ours.distance("w4", "w4") == 0.0
    assert ours.n_similarity(["w1"], ["w2"]) == ours.similarity("w1", "w2")
    assert ours.n_similarity(["w1", "w3"], ["w2"]) == pytest.approx(float(theirs.n_similarity(["w1", "w3"], ["w2"])),
                                                                      rel=1e-5)
    assert ours.relative_cosine_similarity("w1", "w2", 5) == pytest.approx(
        theirs.relative_cosine_similarity("w1", "w2", 5), rel=1e-5)
    assert ours.most_similar_to_given("w1", ["w2", "w3", "w9"]) == theirs.most_similar_to_given("w1", ["w2", "w3", "w9"])
    assert ours.doesnt_match(["w1", "w2", "w3", "w4"]) == theirs.doesnt_match(["w1", "w2", "w3", "w4"])


@pytest.mark.parametrize("kw", [{}, {"pre_normalize": False}, {"post_normalize": True},
                                {"weights": [1, 2, -3, 0.5]}])
def test_get_mean_vector_like_gensim(kw):
    ours, theirs = pair(3)
    keys = ["w1", "w5", "missing", "w7"]
    np.testing.assert_allclose(ours.get_mean_vector(keys, **kw), theirs.get_mean_vector(keys, **kw), rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(KeyError):
        ours.get_mean_vector(keys, ignore_missing=False)
    with pytest.raises(ValueError, match="weights must have one value per key"):
        ours.get_mean_vector(keys, weights=[1, 2])
    with pytest.raises(ValueError, match="keys must not be empty"):
        ours.get_mean_vector([])


def test_adding_setting_and_copying_vectors():
    ours, theirs = pair(4)
    new = np.arange(2 * D, dtype=np.float64).reshape(2, D)
    for kv in (ours, theirs):
        kv.add_vectors(["w1", "fresh"], new)  # present key kept (replace=False)
    np.testing.assert_array_equal(ours.vectors, theirs.vectors)
    assert ours.vectors.dtype == np.float32 and ours.index_to_key == theirs.index_to_key
    for kv in (ours, theirs):
        kv.add_vectors(["w1", "fresh"], new + 1, replace=True)
        kv["w2"] = np.ones(D)
        kv[["w3", "other"]] = np.full((2, D), 2.0)
    np.testing.assert_array_equal(ours.vectors, theirs.vectors)
    assert len(ours) == V + 2
    sub = ours.vectors_for_all(["w3", "nope", "w3", "w1"])
    assert sub.index_to_key == ["w3", "w1"] and sub.get_vecattr("w3", "count") == 2
    ours.set_vecattr("w3", "count", 77)
    assert ours.vectors_for_all(["w3"], copy_vecattrs=True).get_vecattr("w3", "count") == 77
    with pytest.raises(ValueError, match=r"weights must hold one vector of 7 numbers per key, shape \(2, 7\)"):
        ours.add_vectors(["a", "b"], np.ones((2, 3)))
    pre = KeyedVectors(D, count=3)  # rows allocated up front are taken by the first adds
    pre.add_vector("x", np.ones(D))
    assert pre.vectors.shape == (1, D) and pre.get_index("x") == 0


def test_unit_normalize_all():
    ours, _ = pair(5)
    unit = ours.get_vector("w6", norm=True)
    ours.unit_normalize_all()
    np.testing.assert_allclose(ours["w6"], unit, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(ours.vectors, axis=1), 1.0, rtol=1e-5)


def test_gensim_exception_types_are_also_value_errors(tmp_path):
    ours, _ = pair(6)
    for exc in (ZeroDivisionError, ValueError):
        with pytest.raises(exc, match="must both be non-empty"):
            ours.n_similarity([], ["w1"])
    p = tmp_path / "v.bin"
    ours.save_word2vec_format(str(p), binary=True)
    data = p.read_bytes()
    p.write_bytes(b"98" + data[2:])  # one vector more than the file holds
    for exc in (EOFError, ValueError):
        with pytest.raises(exc, match="98 vectors"):
            KeyedVectors.load_word2vec_format(str(p), binary=True)
    assert issubclass(TruncatedFileError, EOFError) and issubclass(EmptyKeyListError, ZeroDivisionError)
    q = tmp_path / "v.txt"
    q.write_bytes(b"1 2\n\xe3\x81 0.5 0.25\n")
    with pytest.raises(UnicodeDecodeError, match=f"{q}.*line 2 is not utf8 text"):
        KeyedVectors.load_word2vec_format(str(q))
    assert KeyedVectors.load_word2vec_format(str(q), unicode_errors="ignore").index_to_key == [""]


def test_module_level_loader_takes_gensims_chunk_size(tmp_path):
    ours, _ = pair(7)
    p = tmp_path / "v.bin"
    ours.save_word2vec_format(str(p), binary=True)
    kv = _load_word2vec_format(cls=KeyedVectors, fname=str(p), binary=True, limit=5, binary_chunk_size=3)
    assert kv.index_to_key == ours.index_to_key[:5]
    with pytest.raises(ValueError, match="binary_chunk_size must be an integer >= 1. Received 0"):
        _load_word2vec_format(cls=KeyedVectors, fname=str(p), binary=True, binary_chunk_size=0)
