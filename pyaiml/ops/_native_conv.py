"""Adapters from the conv family's registry signatures (see pyaiml/reference/conv.py) to
pyaiml._C entry points (csrc/bindings/conv.cpp)."""
from __future__ import annotations

from pyaiml import _backend

_C = _backend.native()


def conv2d(x, w, b, p, cl=False, relu=False):
    return _C.conv2d(x, w, b, p, cl, relu)


def conv2d_checked(x, w, b, p, cl=False, relu=False):
    """(y, x_finite): the forward with x's NaN/inf check in the kernel (the channels-last
    depthwise kernel scans x's rows as it reads them: no separate pass over x)."""
    return _C.conv2d(x, w, b, p, cl, relu, False, True)


def conv2d_backward(gy, x, w, p, cl=False, need_b=True, need_x=True, need_w=True):
    return _C.conv2d_backward(gy, x, w, p, cl, need_b, False, need_x, need_w)
