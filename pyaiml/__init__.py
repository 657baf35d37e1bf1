"""pyaiml: hand-written C++ kernels behind the Python APIs users already know.

- ``pyaiml.ops``: functional ops with ``torch.nn.functional`` semantics.
- ``pyaiml.keras``: Keras-compatible models and layers (``import pyaiml as tf`` then
  ``tf.keras.Sequential`` works too).
- ``pyaiml.hmm``: hmmlearn-compatible hidden Markov models.
- ``pyaiml.models``: gensim-compatible Word2Vec.

``backend_info()`` says what each op runs on and why.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

from pyaiml._backend import backend_info, get_num_threads, get_spin_us, set_num_threads, set_spin_us  # noqa: E402

_SUBMODULES = ("ops", "keras", "hmm", "models", "text", "audio", "datasets", "torch", "reference")

__all__ = ["backend_info", "get_num_threads", "get_spin_us", "set_num_threads", "set_spin_us", "__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"pyaiml.{name}")
    raise AttributeError(f"module 'pyaiml' has no attribute {name!r}")
