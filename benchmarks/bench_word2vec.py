"""Word2Vec training throughput: pyaiml vs gensim (same corpus and hyperparameters).

One timed call = one epoch of ``train`` on a model with its vocabulary built (training only).
Same cases as ``pyaiml bench word2vec``; quality figures come from
tests/test_word2vec_quality.py (``-m slow``) and are recorded in benchmarks/results/word2vec.md.
"""
import pytest

from pyaiml.bench import word2vec

CASES = list(word2vec.cases(quick=True))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("impl", ["pyaiml", "gensim"])
def test_word2vec(benchmark, case, impl):
    if impl not in case.fns:
        pytest.skip(f"{impl} not installed")
    if case.validate:
        case.validate()
    benchmark.group = f"word2vec {case.name}"
    benchmark.extra_info["words"] = case.work
    benchmark.pedantic(case.fns[impl], rounds=3, iterations=1, warmup_rounds=1)
