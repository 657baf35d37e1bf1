"""Argument checks for pyaiml.audio; messages name the function, the argument, the rule and
what was received. Not public API."""
from __future__ import annotations

import numbers

import numpy as np


def as_signal(y, fn: str, name: str = "y", *, allow_2d: bool = False) -> np.ndarray:
    """A non-empty, finite, real signal as float32 (float64 kept), shape (n,) or (n, channels)."""
    try:
        x = np.asarray(y)
    except Exception as e:
        raise TypeError(f"{fn}: {name} must be an array. Received {type(y).__name__}") from e
    if x.dtype.kind not in "fiu" or x.dtype == np.bool_:
        raise TypeError(f"{fn}: {name} must be a real numeric array. Received dtype {x.dtype}")
    ok_nd = (1, 2) if allow_2d else (1,)
    if x.ndim not in ok_nd:
        want = "1-D (n,) or 2-D (n, channels)" if allow_2d else "1-D (n,)"
        raise ValueError(f"{fn}: {name} must be {want}. Received shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{fn}: {name} must not be empty. Received shape {x.shape}")
    if x.dtype != np.float64:
        x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        i = int(np.argwhere(~np.isfinite(x))[0][0])
        raise ValueError(f"{fn}: {name} must be finite (no NaN or inf). Received {x.flat[np.argmax(~np.isfinite(x))]} "
                         f"at sample {i}")
    return x


def check_int(v, fn: str, name: str, minimum: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{fn}: {name} must be an integer. Received {v!r}")
    v = int(v)
    if minimum is not None and v < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}. Received {v}")
    return v


def check_positive(v, fn: str, name: str, allow_zero: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v):
        raise TypeError(f"{fn}: {name} must be a finite number. Received {v!r}")
    v = float(v)
    if v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{fn}: {name} must be {'>= 0' if allow_zero else '> 0'}. Received {v}")
    return v
