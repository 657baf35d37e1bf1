"""Thin adapters from the registry's op signatures to pyaiml._C entry points."""
from __future__ import annotations

from pyaiml import _backend

_C = _backend.native()


def gemm(a3, b3, bias=None, relu=False):
    return _C.gemm(a3, b3, bias, relu)


def gemm_checked(a3, b3, bias=None, relu=False):
    """(c, finite): finite is False when some value of a3 @ b3 was NaN or inf."""
    return _C.gemm(a3, b3, bias, relu, False, True)
