"""Drop-in ``torch.nn`` modules running pyaiml's kernels: Conv1d, Conv2d, MaxPool1d,
MaxPool2d, MultiheadAttention.

Each subclasses the torch module of the same name, so constructor signatures, parameter
initialisation, ``extra_repr`` and state_dict keys are torch's own (a model can swap layers
and load its old checkpoint); only ``forward`` changes. ``convert(model)`` swaps the
supported layers of an existing model in place, keeping its parameters.

MultiheadAttention uses pyaiml's attention op when ``need_weights=False`` (and there is no
attention dropout in training, no bias_k/bias_v, no add_zero_attn, and q/k/v share the
embedding size); otherwise it runs torch's implementation, since the fast op does not
return attention weights. Modules cast to float16 or bfloat16 (before or after ``convert``)
run torch's own kernels through the ops' dtype fallback, with one DtypeFallbackWarning per
dtype (pyaiml's kernels are float32/float64). Not here: CUDA. Tests:
tests/test_torch_bridge_nn.py, tests/test_attention_dropout.py (half-precision fallback).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from pyaiml.torch import ops

__all__ = ["Conv1d", "Conv2d", "MaxPool1d", "MaxPool2d", "MultiheadAttention", "convert"]


def _batched(x: Tensor, nd: int, fn):
    if x.dim() == nd + 1:  # unbatched (C, *spatial), as torch accepts
        r = fn(x.unsqueeze(0))
        return tuple(t.squeeze(0) for t in r) if isinstance(r, tuple) else r.squeeze(0)
    return fn(x)


class Conv2d(torch.nn.Conv2d):
    """``torch.nn.Conv2d`` running pyaiml's conv2d kernel (NCHW or channels_last storage)."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if self.padding_mode != "zeros":
            return _batched(input, 2, lambda x: ops.conv2d(
                F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode), weight, bias, self.stride,
                0, self.dilation, self.groups))
        return _batched(input, 2, lambda x: ops.conv2d(x, weight, bias, self.stride, self.padding, self.dilation,
                                                       self.groups))


class Conv1d(torch.nn.Conv1d):
    """``torch.nn.Conv1d`` running pyaiml's conv1d kernel."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if self.padding_mode != "zeros":
            return _batched(input, 1, lambda x: ops.conv1d(
                F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode), weight, bias, self.stride,
                0, self.dilation, self.groups))
        return _batched(input, 1, lambda x: ops.conv1d(x, weight, bias, self.stride, self.padding, self.dilation,
                                                       self.groups))


def _check_pool(name, dilation, ceil_mode):
    d = dilation if isinstance(dilation, (tuple, list)) else (dilation,)
    if any(e != 1 for e in d):
        raise NotImplementedError(f"pyaiml.torch.nn.{name}: dilation must be 1. Received {dilation!r}")
    if ceil_mode:
        raise NotImplementedError(f"pyaiml.torch.nn.{name}: ceil_mode=True is not supported")


class MaxPool2d(torch.nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` running pyaiml's kernel (dilation 1, floor mode)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        _check_pool("MaxPool2d", dilation, ceil_mode)
        super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)

    def forward(self, input: Tensor) -> Tensor:
        return _batched(input, 2, lambda x: ops.max_pool2d(x, self.kernel_size, self.stride, self.padding,
                                                                    return_indices=self.return_indices))


class MaxPool1d(torch.nn.MaxPool1d):
    """``torch.nn.MaxPool1d`` running pyaiml's kernel (dilation 1, floor mode)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        _check_pool("MaxPool1d", dilation, ceil_mode)
        super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)

    def forward(self, input: Tensor) -> Tensor:
        return _batched(input, 1, lambda x: ops.max_pool1d(x, self.kernel_size, self.stride, self.padding,
                                                                    return_indices=self.return_indices))


def _additive(mask: Optional[Tensor], dtype) -> Optional[Tensor]:
    """torch MHA mask (bool True = masked out, or float added) -> float mask to add."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


class MultiheadAttention(torch.nn.MultiheadAttention):
    """``torch.nn.MultiheadAttention``; ``need_weights=False`` runs pyaiml's attention op.

    Same constructor, parameters (``in_proj_weight``, ``in_proj_bias``, ``out_proj.*``) and
    mask conventions as torch (bool masks: True = not allowed). Returns (output, None) on the
    pyaiml path.
    """

    def _fast_ok(self, need_weights: bool) -> bool:
        return (not need_weights and self._qkv_same_embed_dim and self.bias_k is None and self.bias_v is None
                and not self.add_zero_attn and (self.dropout == 0.0 or not self.training))

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Optional[Tensor] = None,
                need_weights: bool = True, attn_mask: Optional[Tensor] = None, average_attn_weights: bool = True,
                is_causal: bool = False):
        if not self._fast_ok(need_weights):
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                   attn_mask=attn_mask, average_attn_weights=average_attn_weights,
                                   is_causal=is_causal)
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
            if self.batch_first:
                query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        if not self.batch_first:  # (L, B, E) -> (B, L, E)
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        B, L, E = query.shape
        S = key.shape[1]
        H = self.num_heads
        hd = E // H
        w = self.in_proj_weight
        b = self.in_proj_bias
        if query is key and key is value:
            q, k, v = F.linear(query, w, b).chunk(3, dim=-1)
        else:
            wq, wk, wv = w.chunk(3)
            bq, bk, bv = b.chunk(3) if b is not None else (None, None, None)
            q, k, v = F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)
        q = q.reshape(B, L, H, hd).transpose(1, 2)
        k = k.reshape(B, S, H, hd).transpose(1, 2)
        v = v.reshape(B, S, H, hd).transpose(1, 2)
        mask = None
        causal = False
        am = _additive(attn_mask, query.dtype)
        if am is not None:
            mask = am.reshape(B, H, L, S) if am.dim() == 3 else am
        kp = _additive(key_padding_mask, query.dtype)
        if kp is not None:
            kp = kp.reshape(B, 1, 1, S)
            mask = kp if mask is None else mask + kp
        if mask is None and is_causal:
            causal = True
        o = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        o = o.transpose(1, 2).reshape(B, L, E)
        o = F.linear(o, self.out_proj.weight, self.out_proj.bias)
        if not self.batch_first:
            o = o.transpose(0, 1)
        if unbatched:
            o = o.squeeze(1) if not self.batch_first else o.squeeze(0)
        return o, None


_SWAP = {
    torch.nn.Conv1d: Conv1d,
    torch.nn.Conv2d: Conv2d,
    torch.nn.MaxPool1d: MaxPool1d,
    torch.nn.MaxPool2d: MaxPool2d,
    torch.nn.MultiheadAttention: MultiheadAttention,
}


def convert(model: torch.nn.Module) -> torch.nn.Module:
    """Swap, in place, every plain torch Conv1d/Conv2d/MaxPool1d/MaxPool2d/MultiheadAttention
    of ``model`` (the model itself included) for the pyaiml module of the same name, keeping
    parameters and buffers. Pooling layers with options pyaiml lacks (dilation, ceil_mode)
    stay torch's. Returns ``model``."""
    for m in model.modules():
        cls = _SWAP.get(type(m))
        if cls is None:
            continue
        if cls in (MaxPool1d, MaxPool2d):
            try:
                _check_pool(cls.__name__, m.dilation, m.ceil_mode)
            except NotImplementedError:
                continue
        m.__class__ = cls
    return model
