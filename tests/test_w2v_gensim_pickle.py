"""Files saved by gensim (pickles): refused by default with a message saying how to import
them; read through gensim with ``trusted=True``; converted in memory with ``from_gensim``.

Files: gensim 4.4's own test_data (models saved by gensim 1.0 to 4.x, and a KeyedVectors of
3.2), used by gensim's tests that tools/peer_gensim.py leaves out for this reason. Oracle:
gensim's own load of the same file. Skipped without gensim.
Run: PYTHONPATH=. python -m pytest -q tests/test_w2v_gensim_pickle.py
"""
from __future__ import annotations

import gzip
import os
import shutil

import numpy as np
import pytest

from pyaiml.models import KeyedVectors, Word2Vec
from pyaiml.models.word2vec import GensimPickleError

gensim = pytest.importorskip("gensim")
from gensim.test.utils import datapath, lee_corpus_list

MODELS = ["word2vec_old", "word2vec_old_sep", "model-from-gensim-3.8.0.w2v", "word2vec_3.3",
          "old_w2v_models/w2v_1.0.0.mdl", "old_w2v_models/w2v_2.3.0.mdl", "old_w2v_models/w2v_3.4.0.mdl"]


@pytest.mark.parametrize("name", MODELS[:3])
def test_gensim_pickles_are_refused_by_default(name):
    with pytest.raises(GensimPickleError, match=r"saved by gensim.*trusted=True.*from_gensim"):
        Word2Vec.load(datapath(name))
    with pytest.raises(ValueError, match="does not unpickle files by default"):
        KeyedVectors.load(datapath(name))


def test_compressed_gensim_pickle_is_recognised(tmp_path):
    p = tmp_path / "m.gz"
    with open(datapath("word2vec_old"), "rb") as f, gzip.open(p, "wb") as g:
        shutil.copyfileobj(f, g)
    with pytest.raises(GensimPickleError):
        Word2Vec.load(str(p))


@pytest.mark.parametrize("name", MODELS)
def test_trusted_load_reads_gensim_models_and_trains_on(name, tmp_path):
    path = datapath(name)
    want = gensim.models.Word2Vec.load(path)
    m = Word2Vec.load(path, trusted=True)
    assert m.wv.index_to_key == list(want.wv.index_to_key)
    np.testing.assert_array_equal(m.wv.vectors, want.wv.vectors)
    if want.negative:
        np.testing.assert_array_equal(m.syn1neg, want.syn1neg)
    assert (m.sg, m.hs, m.negative, m.window, m.vector_size) == (want.sg, want.hs, want.negative, want.window,
                                                                  want.vector_size)
    m.build_vocab(lee_corpus_list[:50], update=True)
    m.train(lee_corpus_list[:50], total_examples=50, epochs=1)
    m.save(str(tmp_path / "converted"))
    assert Word2Vec.load(str(tmp_path / "converted")).wv.index_to_key == m.wv.index_to_key


def test_trusted_load_of_gensim_keyed_vectors():
    path = datapath("old_keyedvectors_320.dat")
    want = gensim.models.KeyedVectors.load(path)
    kv = KeyedVectors.load(path, trusted=True)
    assert kv.index_to_key == list(want.index_to_key)
    np.testing.assert_array_equal(kv.get_vector("computer"), want.get_vector("computer"))
    assert KeyedVectors.load(datapath("word2vec_old"), trusted=True).index_to_key == \
        list(gensim.models.Word2Vec.load(datapath("word2vec_old")).wv.index_to_key)


def test_non_gensim_files_are_not_mistaken_for_pickles(tmp_path):
    p = tmp_path / "junk"
    p.write_bytes(b"\x80\x03junk")
    with pytest.raises(ValueError, match="not a .npz"):
        Word2Vec.load(str(p))
    assert not os.path.exists(str(p) + ".npy")
