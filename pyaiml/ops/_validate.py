"""Argument checks shared by the ops: dtype, ndim, emptiness and finiteness, with messages
that name the op, the argument, the rule and what was received."""
from __future__ import annotations

import numpy as np

from pyaiml import _backend

FLOATS = (np.float32, np.float64)
_F32 = np.dtype(np.float32)

_check_finite = [True]


def set_check_finite(enabled: bool) -> None:
    """Turn the NaN/inf input checks of pyaiml.ops on (default) or off."""
    _check_finite[0] = bool(enabled)


def get_check_finite() -> bool:
    return _check_finite[0]


def as_array(x, op: str, name: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__array__") or isinstance(x, (list, tuple, int, float)):
        try:
            return np.asarray(x)
        except Exception as e:  # pragma: no cover - odd array-likes
            raise TypeError(f"{op}: {name} must be an array. Received {type(x).__name__}: {e}") from e
    raise TypeError(f"{op}: {name} must be a NumPy array or array-like. Received {type(x).__name__}")


def float_dtype(x: np.ndarray, op: str, name: str) -> np.dtype:
    if x.dtype not in FLOATS:
        raise TypeError(f"{op}: {name} must have dtype float32 or float64. Received {x.dtype}")
    return x.dtype


def require_ndim(x: np.ndarray, ndims, op: str, name: str, what: str = "") -> None:
    ok = x.ndim in ndims if isinstance(ndims, (tuple, list, range)) else x.ndim == ndims
    if not ok:
        want = ndims if not isinstance(ndims, (tuple, list, range)) else " or ".join(map(str, ndims))
        raise ValueError(f"{op}: {name} must be {want}-D{(' ' + what) if what else ''}. Received shape {tuple(x.shape)}")


def require_nonempty(x: np.ndarray, op: str, name: str) -> None:
    if x.size == 0:
        raise ValueError(f"{op}: {name} must not be empty. Received shape {tuple(x.shape)}")


def all_finite(x: np.ndarray) -> bool:
    """True when every entry of the float array ``x`` is finite.

    float32: one native pass when the extension is loaded (~0.4 us on a small array; it
    falls back to NumPy for non-contiguous arrays itself). float64: a NaN or inf anywhere
    makes the sum NaN or inf, so a finite sum settles it in one vectorised pass without a
    temporary (100000 x 13 frames: 0.33 ms, against 0.44 ms for ``np.isfinite(x).all()``
    and 1.26 ms for the scalar ``_C.all_finite`` loop); a sum that overflows falls back to
    the exact test."""
    dt = x.dtype
    if dt is _F32 or dt == _F32:
        C = _backend._C
        if C is not None or _backend.native() is not None:
            return (C or _backend._C).all_finite(x)
    elif np.isfinite(np.add.reduce(x, axis=None)):
        return True
    return bool(np.isfinite(x).all())


def require_finite(x: np.ndarray, op: str, name: str) -> None:
    if not _check_finite[0]:
        return
    dt = x.dtype
    if dt is _F32 and _backend._C is not None:  # the common case, ~0.35 us on a small array
        if _backend._C.all_finite(x):
            return
    elif dt.kind != "f":
        return
    if not all_finite(x):
        bad = np.argwhere(~np.isfinite(x))[0]
        v = x[tuple(bad)]
        raise ValueError(
            f"{op}: {name} must be finite (no NaN or inf). Received {v} at index {tuple(int(i) for i in bad)} "
            "(pyaiml.ops.set_check_finite(False) skips this check)"
        )
