"""Text: vocabulary, the simple tokenizer, streamed corpora, Word2Vec and KeyedVectors (gensim 4 API).

``from pyaiml.models import Word2Vec`` is the user-facing import (as in gensim).
"""
from pyaiml.text.corpora import LineSentence, PathLineSentences
from pyaiml.text.keyedvectors import KeyedVectors
from pyaiml.text.tokenize import simple_tokenize
from pyaiml.text.word2vec import Word2Vec

__all__ = ["KeyedVectors", "LineSentence", "PathLineSentences", "Word2Vec", "simple_tokenize"]
