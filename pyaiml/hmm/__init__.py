"""hmmlearn-compatible hidden Markov models on pyaiml's batched, threaded kernels.

``CategoricalHMM``, ``GaussianHMM`` (spherical, diag, full, tied) and ``GMMHMM`` take the
constructor arguments, attribute shapes and methods of hmmlearn 0.3 (``fit``, ``score``,
``score_samples``, ``predict``, ``predict_proba``, ``decode``, ``sample``; ``X`` +
``lengths``). Additions: a list of arrays wherever ``X, lengths`` is accepted,
``score(X, lengths, per_sequence=True)``, ``n_init`` restarts, ``left_right`` topologies whose
zeros survive EM, ``save``/``load`` without pickle.
"""
from pyaiml.hmm.base import BaseHMM, ConvergenceMonitor, ConvergenceWarning, left_right, load
from pyaiml.hmm.models import GMMHMM, CategoricalHMM, GaussianHMM
from pyaiml.hmm.classifier import HMMClassifier

__all__ = ["BaseHMM", "CategoricalHMM", "GaussianHMM", "GMMHMM", "ConvergenceMonitor", "ConvergenceWarning",
           "left_right", "load", "HMMClassifier"]
