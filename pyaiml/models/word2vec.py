"""``pyaiml.models.word2vec``: the names of ``gensim.models.word2vec`` that pyaiml provides.

Code written against gensim (``from gensim.models import word2vec``; ``word2vec.Word2Vec``,
``word2vec.LineSentence``) runs on pyaiml with that one import changed. The classes live in
pyaiml.text; this module only gathers them under gensim's module name.

Tests: tools/peer_gensim.py (gensim's own test_word2vec.py through this module).
"""
from pyaiml.text.corpora import LineSentence, PathLineSentences
from pyaiml.text.keyedvectors import GensimPickleError, KeyedVectors
from pyaiml.text.word2vec import VocabularyError, Word2Vec

MAX_WORDS_IN_BATCH = 10000  # gensim's constant: longer sentences are cut into pieces of this many words

__all__ = [
           "MAX_WORDS_IN_BATCH",
           "GensimPickleError",
           "KeyedVectors",
           "LineSentence",
           "PathLineSentences",
           "VocabularyError",
           "Word2Vec",
]
