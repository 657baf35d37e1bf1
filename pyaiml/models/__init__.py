"""User-facing models under the names their peers use: ``from pyaiml.models import Word2Vec``
(gensim 4 API, see pyaiml.text). The submodules ``pyaiml.models.word2vec`` and
``pyaiml.models.keyedvectors`` carry gensim's module names, so ``from gensim.models import
word2vec, keyedvectors`` becomes ``from pyaiml.models import word2vec, keyedvectors``."""
from pyaiml.models import keyedvectors, word2vec
from pyaiml.text import KeyedVectors, LineSentence, PathLineSentences, Word2Vec

__all__ = ["KeyedVectors", "LineSentence", "PathLineSentences", "Word2Vec", "keyedvectors", "word2vec"]
