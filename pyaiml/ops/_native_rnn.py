"""Adapters from the registry's LSTM and GRU signatures to pyaiml._C (float32, C-contiguous; see
csrc/bindings/rnn.cpp). A bool mask is passed as is (one byte per step)."""
from __future__ import annotations

from pyaiml import _backend

_C = _backend.native()


def lstm_forward(xp, U, h0, c0, mask=None):
    return _C.lstm_forward(xp, U, h0, c0, mask)


def lstm_backward(grad_h, grad_c, U, h0, c0, mask, hs, cs, gates, tc, need_recurrent_kernel=True, x=None,
                  kernel=None):
    return _C.lstm_backward(grad_h, grad_c, U, h0, c0, mask, hs, cs, gates, tc, bool(need_recurrent_kernel), x,
                            kernel)


def gru_forward(xp, U, brec, h0, mask=None):
    return _C.gru_forward(xp, U, brec, h0, mask)


def gru_backward(grad_h, U, brec, h0, mask, hs, gates, hn, need_recurrent_kernel=True, need_recurrent_bias=True):
    return _C.gru_backward(grad_h, U, brec, h0, mask, hs, gates, hn, bool(need_recurrent_kernel),
                           bool(need_recurrent_bias))
