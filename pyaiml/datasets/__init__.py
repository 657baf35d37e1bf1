"""Datasets: small ones shipped with pyaiml (digits) and readers of public corpora found on
disk (FSDD recordings, gensim's bundled Lee corpus); nothing is downloaded."""
from pyaiml.datasets.digits import load_digits
from pyaiml.datasets.fsdd import FSDD, load_fsdd
from pyaiml.datasets.lee_corpus import analogies_path, lee_sentences, wordsim353_path

__all__ = ["load_digits", "load_fsdd", "FSDD", "lee_sentences", "wordsim353_path", "analogies_path"]
