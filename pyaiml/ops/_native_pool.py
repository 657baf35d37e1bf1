"""Adapters from the pooling registry signatures (see pyaiml/reference/pool.py) to the
pyaiml._C entry points (csrc/bindings/conv.cpp, kernels in csrc/cpu/pool.cpp)."""
from __future__ import annotations

from pyaiml import _backend

_C = _backend.native()


def max_pool2d(x, q, cl=False, index=None, relu=False):
    return _C.max_pool2d(x, q, cl, index is not None, relu, index == "window", True)


def max_pool2d_backward(gy, x, q, cl=False, indices=None, index="flat"):
    return _C.max_pool2d_backward(gy, x, q, cl, indices, index == "window")
