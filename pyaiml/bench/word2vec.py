"""Word2Vec suite: training throughput of pyaiml.models.Word2Vec against gensim.models.Word2Vec.

Both train the same corpus (gensim's bundled Lee background corpus, repeated to ~1M words;
~200k in quick mode) with the same hyperparameters (vector_size 100, window 5, negative 5,
min_count 5, sample 1e-3), skip-gram and CBOW, workers 1 and 2. Each timed call is one
``train(..., epochs=1)`` on a model whose vocabulary was built beforehand (training only);
throughput is raw corpus words per second. Validation before timing: both vocabularies hold
the same words.

``quality(...)`` trains both for 5 epochs per seed and scores WordSim-353 (Spearman) and
the Google analogies; benchmarks/bench_word2vec.py and the results file use it.
"""
from __future__ import annotations

import numpy as np

from pyaiml.bench.harness import Case

HP = dict(vector_size=100, window=5, negative=5, min_count=5, sample=1e-3)


def corpus(quick=False):
    from pyaiml.datasets.lee_corpus import lee_sentences

    return lee_sentences(200_000 if quick else 1_000_000)


def cases(quick: bool = False):
    try:
        from gensim.models import Word2Vec as GW
    except ImportError:
        GW = None
    from pyaiml.models import Word2Vec as PW

    sents = corpus(quick)
    if sents is None:
        return
    raw = sum(map(len, sents))
    for sg in (1, 0):
        for workers in (1, 2):
            kw = dict(HP, sg=sg, workers=workers, seed=1)
            p = PW(**kw)
            p.build_vocab(sents)
            fns = {"pyaiml": lambda p=p: p.train(sents, total_examples=len(sents), epochs=1)}
            peer = None
            validate = None
            if GW is not None:
                g = GW(**kw)
                g.build_vocab(sents)
                fns["gensim"] = lambda g=g: g.train(sents, total_examples=len(sents), epochs=1)
                peer = "gensim"

                def validate(p=p, g=g):
                    if set(p.wv.index_to_key) != set(g.wv.index_to_key):
                        raise AssertionError("word2vec: vocabularies differ from gensim's")

            name = f"{'skip-gram' if sg else 'cbow'} workers={workers}"
            yield Case("word2vec", name, f"{raw} words V{len(p.wv)} D100", None, "pyaiml", fns, peer, validate,
                       unit="words/s", work=float(raw))


def _scores(wv, ws, an):
    sp = wv.evaluate_word_pairs(ws)[1]
    rho = float(sp[0] if isinstance(sp, tuple) else sp.statistic)
    acc = float(wv.evaluate_word_analogies(an)[0])
    return rho, acc


def quality(seeds=(1, 2, 3), sg=0, workers=2, min_words=1_000_000, epochs=5, log=print):
    """Mean WordSim-353 Spearman and analogy accuracy of pyaiml and gensim over seeds."""
    from gensim.models import Word2Vec as GW

    from pyaiml.datasets.lee_corpus import analogies_path, lee_sentences, wordsim353_path
    from pyaiml.models import Word2Vec as PW

    sents = lee_sentences(min_words)
    ws, an = wordsim353_path(), analogies_path()
    out = {"pyaiml": [], "gensim": []}
    for seed in seeds:
        kw = dict(HP, sg=sg, workers=workers, seed=seed, epochs=epochs)
        for name, cls in (("pyaiml", PW), ("gensim", GW)):
            m = cls(sents, **kw)
            r = _scores(m.wv, ws, an)
            out[name].append(r)
            log(f"{name} sg={sg} seed={seed}: spearman {r[0]:.4f} analogy {r[1]:.4f}")
    res = {k: {"spearman": float(np.mean([r[0] for r in v])), "analogy": float(np.mean([r[1] for r in v])),
               "runs": v} for k, v in out.items()}
    res["words"] = sum(map(len, sents))
    return res
