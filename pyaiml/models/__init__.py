"""User-facing models under the names their peers use: ``from pyaiml.models import Word2Vec``
(gensim 4 API, see pyaiml.text)."""
from pyaiml.text import KeyedVectors, Word2Vec

__all__ = ["Word2Vec", "KeyedVectors"]
