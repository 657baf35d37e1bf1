"""Word2Vec quality against gensim on a real corpus (slow; run with -m slow).

Both libraries train on gensim's bundled Lee background corpus repeated to ~1M words with
vector_size 100, window 5, negative 5, min_count 5, sample 1e-3, 5 epochs; the mean over
seeds 1-3 of the WordSim-353 Spearman correlation and of the Google analogy accuracy must
not be worse than gensim's by more than 0.03 (the issue's acceptance rule). Calibration:
seed-to-seed spread of either library's Spearman on this corpus is about +-0.02.
A second, faster check holds in the default run: on ~200k words, one seed, pyaiml's
Spearman is positive and within 0.08 of gensim's.
"""
import pytest

gensim = pytest.importorskip("gensim")

from pyaiml.bench.word2vec import quality  # noqa: E402
from pyaiml.datasets.lee_corpus import lee_sentences  # noqa: E402

if lee_sentences() is None:  # pragma: no cover
    pytest.skip("gensim's bundled test data is not installed", allow_module_level=True)


@pytest.mark.slow
@pytest.mark.parametrize("sg", [0, 1])
def test_quality_matches_gensim_over_three_seeds(sg):
    r = quality(seeds=(1, 2, 3), sg=sg, workers=2, min_words=1_000_000, epochs=5)
    assert r["words"] >= 1_000_000
    assert r["pyaiml"]["spearman"] >= r["gensim"]["spearman"] - 0.03, r
    assert r["pyaiml"]["analogy"] >= r["gensim"]["analogy"] - 0.03, r


def test_quality_quick_check():
    from pyaiml import _backend

    if _backend.choose("word2vec_train_epoch")[0] == "numpy":
        pytest.skip("the pure-Python oracle trainer is too slow for 1M word-epochs")
    r = quality(seeds=(1,), sg=0, workers=2, min_words=200_000, epochs=5, log=lambda *a: None)
    assert r["pyaiml"]["spearman"] > 0.0, r
    assert r["pyaiml"]["spearman"] >= r["gensim"]["spearman"] - 0.08, r
