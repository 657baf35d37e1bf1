"""Adapters from the conv family's registry signatures (see pyaiml/reference/conv.py) to
pyaiml._C entry points (csrc/bindings/conv.cpp)."""
from __future__ import annotations

from pyaiml import _backend

_C = _backend.native()


def conv2d(x, w, b, p, cl=False, relu=False):
    return _C.conv2d(x, w, b, p, cl, relu)


def conv2d_backward(gy, x, w, p, cl=False, need_b=True, need_x=True, need_w=True):
    return _C.conv2d_backward(gy, x, w, p, cl, need_b, False, need_x, need_w)
