"""The 8x8 handwritten digits (1,797 images, 10 classes), shipped inside the package.

Data: the UCI Machine Learning Repository's "Optical Recognition of Handwritten Digits"
(E. Alpaydin, C. Kaynak, 1998; CC BY 4.0),
https://archive.ics.uci.edu/ml/datasets/Optical+Recognition+of+Handwritten+Digits ,
in the compact CSV copy that scikit-learn distributes (see data/README.md). No download,
no scikit-learn needed. Not a general dataset loader. Tests: tests/test_keras_data.py.
"""
from __future__ import annotations

import gzip
import os
from types import SimpleNamespace

import numpy as np

_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "digits.csv.gz")

DESCR = (
    "Optical Recognition of Handwritten Digits (UCI ML Repository, E. Alpaydin and C. Kaynak, "
    "1998, CC BY 4.0): 1,797 8x8 images with integer pixels 0..16 and labels 0..9. "
    "https://archive.ics.uci.edu/ml/datasets/Optical+Recognition+of+Handwritten+Digits"
)


def load_digits(return_X_y: bool = False, n_class: int = 10):
    """Load the 8x8 digits.

    Parameters
    ----------
    return_X_y : if True return ``(data, target)`` instead of a namespace.
    n_class : keep only the classes ``0 .. n_class-1`` (1..10).

    Returns
    -------
    namespace with ``data`` (n, 64) float64 pixels 0..16, ``images`` (n, 8, 8),
    ``target`` (n,) int64, ``target_names`` (n_class,), ``DESCR``; or ``(data, target)``.
    """
    if not isinstance(n_class, (int, np.integer)) or not 1 <= n_class <= 10:
        raise ValueError(f"load_digits: n_class must be an integer in 1..10. Received {n_class!r}")
    try:
        with gzip.open(_PATH, "rt") as f:
            raw = np.loadtxt(f, delimiter=",", dtype=np.float64)
    except (OSError, ValueError) as e:
        raise OSError(f"load_digits: cannot read the bundled data file {_PATH}: {e}") from e
    if raw.shape != (1797, 65):
        raise OSError(f"load_digits: the bundled data file {_PATH} is damaged: shape {raw.shape}, expected (1797, 65)")
    data = raw[:, :64]
    target = raw[:, 64].astype(np.int64)
    keep = target < n_class
    data, target = data[keep], target[keep]
    if return_X_y:
        return data, target
    return SimpleNamespace(data=data, images=data.reshape(-1, 8, 8), target=target,
                           target_names=np.arange(n_class), DESCR=DESCR)
