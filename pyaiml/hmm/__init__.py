"""hmmlearn-compatible hidden Markov models on pyaiml's batched, threaded kernels.

``CategoricalHMM``, ``GaussianHMM`` (spherical, diag, full, tied), ``GMMHMM``,
``MultinomialHMM`` and ``PoissonHMM`` take the constructor arguments, attribute shapes and
methods of hmmlearn 0.3 (``fit``, ``score``, ``score_samples``, ``predict``,
``predict_proba``, ``decode``, ``sample``, ``aic``, ``bic``,
``get_stationary_distribution``; ``X`` + ``lengths``), and hmmlearn's own test suite passes
against them (tools/peer_suites.py hmmlearn). Additions: a list of arrays wherever
``X, lengths`` is accepted, ``score(X, lengths, per_sequence=True)``, ``n_init`` restarts,
``left_right`` topologies whose zeros survive EM, ``save``/``load`` without pickle.
``pyaiml.hmm.utils`` and ``pyaiml.hmm.lattice`` stand for hmmlearn.utils and hmmlearn._hmmc.
"""
from pyaiml.hmm.base import (
    DECODER_ALGORITHMS,
    BaseHMM,
    ConvergenceMonitor,
    ConvergenceWarning,
    left_right,
    load,
)
from pyaiml.hmm.classifier import HMMClassifier
from pyaiml.hmm.count_models import MultinomialHMM, PoissonHMM
from pyaiml.hmm.models import COVARIANCE_TYPES, GMMHMM, CategoricalHMM, GaussianHMM

__all__ = ["COVARIANCE_TYPES", "DECODER_ALGORITHMS", "GMMHMM", "BaseHMM", "CategoricalHMM", "ConvergenceMonitor",
           "ConvergenceWarning", "GaussianHMM", "HMMClassifier", "MultinomialHMM", "PoissonHMM", "left_right", "load"]
