"""pyaiml kernels as PyTorch custom ops (``torch.ops.pyaiml.*``) with autograd and fake kernels.

Registered in pure Python at import (``torch.library.custom_op``): nothing here is compiled
against torch, so one pyaiml build serves every torch version the tests cover. Each forward op
has a fake (shape/stride) kernel and an autograd formula whose backward is itself a custom
op, so ``torch.compile(fullgraph=True)`` traces forward and backward without graph breaks.

Ops (all CPU, float32 or float64):
  pyaiml::conv2d / conv1d (+ _backward), pyaiml::max_pool2d / max_pool1d (+ _backward),
  pyaiml::sdpa (+ sdpa_backward), pyaiml::sdpa_dropout (+ sdpa_dropout_backward),
  pyaiml::hmm_forward_backward (+ hmm_expected_counts).

Attention dropout (``dropout_p > 0``): each call draws a 62-bit seed from a torch generator
(``generator=`` or torch's default CPU generator, so ``torch.manual_seed`` reproduces the
masks); pyaiml::sdpa_dropout takes the seed as an argument and the kernel derives the keep
mask from it (pyaiml.ops.attention.dropout_keep_mask: NumPy's Philox keyed by the seed);
the backward gets the same seed and regenerates the same mask. Under torch.compile the draw is
traced too (each compiled call draws a fresh seed; tests/test_attention_dropout.py). With
``dropout_p = 0`` the call is exactly the op without dropout (pyaiml::sdpa).

Other dtypes: float16 and bfloat16 tensors (e.g. a model converted with ``convert`` after
``.to(torch.bfloat16)``) run torch's own function instead (``torch.nn.functional``), with one
:class:`DtypeFallbackWarning` per dtype per process; pyaiml's kernels are float32/float64.

Data exchange: a CPU tensor with plain (or channels-last) strides is handed to the kernel as
a NumPy view (``Tensor.numpy()``, no copy); outputs come back with ``torch.from_numpy`` (no
copy). Other strides are made contiguous first (one copy). A 4-D tensor stored channels last
(``memory_format=torch.channels_last``) runs the NHWC kernel on its permuted view, without a
copy, and gives a channels-last result, as torch's own conv does; likewise a 3-D tensor stored
(N, L, C) runs the NLC kernel.

The public functions below (``conv2d``, ...) take ``torch.nn.functional`` arguments, check
them (device, dtype, ranks; the shape and parameter checks are remembered per call signature)
and call the ops. In plain eager code they skip torch.library's Python dispatcher and run
the op's implementation directly (through an autograd.Function applying the op's registered
formula when gradients are needed); under torch.compile, functorch transforms, torch
function or dispatch modes, or with tensor subclasses they call the registered ops. All kernel calls go through
pyaiml/torch/_kernels.py. Not here: CUDA kernels, double backward, half-precision kernels.
Tests: tests/test_torch_bridge*.py.
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as TF
from torch import Tensor

from pyaiml.ops._validate import int_arg, int_tuple, window_out
from pyaiml.torch import _kernels as K
from pyaiml.torch import _threads

_FLOATS = (torch.float32, torch.float64)
_HALF = (torch.float16, torch.bfloat16)


class DtypeFallbackWarning(UserWarning):
    """A pyaiml.torch function ran torch's own kernel for a dtype pyaiml has no kernel for."""


_FALLBACK_WARNED: set = set()


def _fallback(op: str, t) -> bool:
    """True when ``t`` is a CPU float16/bfloat16 tensor: the caller then runs torch's own
    function. Warns once per dtype per process (``_FALLBACK_WARNED`` records which)."""
    if not (isinstance(t, Tensor) and t.dtype in _HALF and t.is_cpu):
        return False
    if t.dtype not in _FALLBACK_WARNED:
        _FALLBACK_WARNED.add(t.dtype)
        warnings.warn(f"pyaiml.torch: {t.dtype} tensors run on torch's own kernels (pyaiml's kernels take float32 "
                      f"or float64; first seen in {op}). Convert the model with .float() for pyaiml's kernels. "
                      f"Shown once per dtype.", DtypeFallbackWarning, stacklevel=3)
    return True


# --------------------------------------------------------------------------- helpers

def _check_tensor(op: str, name: str, t, dtype=None) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor. Received {type(t).__name__}")
    if not t.is_cpu:  # (t.device.type builds a device object: 0.7 us against 0.1)
        raise ValueError(f"{op}: {name} is on device '{t.device}'; pyaiml's torch ops run on CPU tensors only "
                         f"(no {t.device.type} kernels yet). Move it with .cpu() or use torch's own op")
    if t.dtype not in _FLOATS:
        raise TypeError(f"{op}: {name} must be float32 or float64. Received dtype {t.dtype}")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{op}: {name} must have the same dtype as the first input ({dtype}). Received {t.dtype}")


def _cl(x: Tensor) -> bool:
    """True when x is stored channels last (N, *spatial, C) but is not plain contiguous."""
    return x.dim() >= 3 and not x.is_contiguous() and x.movedim(1, -1).is_contiguous()


def _np(t: Tensor, cl: bool = False) -> np.ndarray:
    """A NumPy view of t (copy only when its strides are neither plain nor channels last)."""
    if t.requires_grad:
        t = t.detach()
    if cl:
        t = t.movedim(1, -1)
    if not t.is_contiguous():
        t = t.contiguous()
    return t.numpy()


def _pt(a: np.ndarray, dtype: torch.dtype, cl: bool = False) -> Tensor:
    """A tensor on a kernel's output (no copy); channels-last results come back as NC* views."""
    t = torch.from_numpy(a if a.flags.c_contiguous else np.ascontiguousarray(a))
    if t.dtype != dtype:
        t = t.to(dtype)
    return t.movedim(-1, 1) if cl else t


def _empty(shape: Sequence, like: Tensor, cl: bool, dtype=None) -> Tensor:
    dtype = like.dtype if dtype is None else dtype
    if cl:
        t = like.new_empty([shape[0], *shape[2:], shape[1]], dtype=dtype)
        return t.movedim(-1, 1)
    return like.new_empty(list(shape), dtype=dtype)


def _check_impl(op: str, *ts) -> None:
    for t in ts:
        if t is not None and not t.is_cpu:
            raise ValueError(f"{op}: tensors must be on the CPU. Received a tensor on '{t.device}'")


# --------------------------------------------------------------------------- eager calls

# In plain eager code a call skips torch.library's Python dispatcher (about 20-30 us per call)
# and runs the op's implementation directly; with gradients needed, through an
# autograd.Function that applies the op's own registered formula (the same setup_context and
# backward functions). Under torch.compile, functorch transforms, torch function or dispatch
# modes, or tensor subclasses, calls go through the registered ops as before.
_PLAIN = (Tensor, torch.nn.Parameter)


def _direct(*ts) -> bool:
    if (torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()
            or torch._C._len_torch_dispatch_stack() or torch._C._is_torch_function_mode_enabled()):
        return False
    return all(t is None or type(t) in _PLAIN for t in ts)


class _Spec:
    __slots__ = ("backward", "impl", "setup")

    def __init__(self, impl, setup, backward):
        self.impl, self.setup, self.backward = impl, setup, backward


class _Direct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec, *inputs):
        out = spec.impl(*inputs)
        spec.setup(ctx, inputs, out)
        ctx.spec = spec
        ctx.arg0 = 1  # ctx.needs_input_grad[0] is spec's: the op's inputs start at 1
        return out

    @staticmethod
    def backward(ctx, *grads):
        return (None, *ctx.spec.backward(ctx, *grads))


def _run(spec, op, args, tensors):
    """One public call: direct (see above) or through the registered op."""
    if not _direct(*tensors):
        return op(*args)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _Direct.apply(spec, *args)
    return spec.impl(*args)


def _either(op, impl):
    """A backward op for an autograd formula: the implementation itself when no graph is being
    recorded (plain eager backward), else the registered op (double backward, compile)."""
    def call(*a):
        if not torch.is_grad_enabled() and _direct(*[t for t in a if isinstance(t, Tensor)]):
            return impl(*a)
        return op(*a)

    return call


_CHECKED: dict = {}


def _key(v):
    return tuple(v) if isinstance(v, list) else v


def _checked(fn, *args):
    """fn(*args) (a pure check-and-normalise of shapes and parameters), remembered per argument
    values: a repeated call with the same shapes and parameters skips the checks. Arguments
    that cannot be hashed (or are not plain values) are checked every time."""
    try:
        key = (fn, *args)  # the common case: every argument hashable as it is
        hit = _CHECKED.get(key)
    except TypeError:
        try:
            key = (fn, *(_key(a) for a in args))
            hit = _CHECKED.get(key)
        except TypeError:
            return fn(*args)
    if hit is None:
        if not all(a is None or type(a) in (int, bool, str, float, tuple, list, torch.Size) for a in args[1:]):
            return fn(*args)
        hit = fn(*args)
        if len(_CHECKED) > 4096:
            _CHECKED.clear()
        _CHECKED[key] = hit
    return hit


# --------------------------------------------------------------------------- convolution

def _conv_out(sp, k, stride, padding, dilation, same):
    if same:
        return list(sp)
    return [(sp[i] + 2 * padding[i] - dilation[i] * (k[i] - 1) - 1) // stride[i] + 1 for i in range(len(sp))]


def _kpad(padding, same, nd):
    if same:
        return "same"
    return tuple(padding) if nd == 2 else padding[0]


def _kt(v, nd):
    return tuple(v) if nd == 2 else v[0]


def _conv_fwd_impl(nd, x, weight, bias, stride, padding, dilation, groups, same):
    _check_impl(f"pyaiml::conv{nd}d", x, weight, bias)
    _threads.sync()
    cl = _cl(x)
    fmt = ("NHWC" if cl else "NCHW") if nd == 2 else ("NLC" if cl else "NCL")
    fn = K.conv2d if nd == 2 else K.conv1d
    y = fn(_np(x, cl), _np(weight), None if bias is None else _np(bias), _kt(stride, nd), _kpad(padding, same, nd),
           _kt(dilation, nd), groups, fmt)
    return _pt(y, x.dtype, cl)


def _conv_bwd_impl(nd, grad_out, x, weight, stride, padding, dilation, groups, same, needs_bias_grad,
                   needs_input_grad=True):
    _check_impl(f"pyaiml::conv{nd}d_backward", grad_out, x, weight)
    _threads.sync()
    cl = _cl(x)
    fmt = ("NHWC" if cl else "NCHW") if nd == 2 else ("NLC" if cl else "NCL")
    fn = K.conv2d_backward if nd == 2 else K.conv1d_backward
    gx, gw, gb = fn(_np(grad_out, cl), _np(x, cl), _np(weight), _kt(stride, nd), _kpad(padding, same, nd),
                    _kt(dilation, nd), groups, fmt, needs_bias_grad, needs_input_grad)
    gb = _pt(gb, x.dtype) if needs_bias_grad else x.new_empty((0,))
    # grad_x not asked for (an input that needs no gradient, such as a network's images): empty
    gx = _pt(gx, x.dtype, cl) if needs_input_grad else x.new_empty((0,))
    return gx, _pt(gw, x.dtype), gb


def _conv_fwd_fake(nd, x, weight, stride, padding, dilation, same):
    shape = [x.shape[0], weight.shape[0], *_conv_out(x.shape[2:], weight.shape[2:], stride, padding, dilation, same)]
    return _empty(shape, x, _cl(x))


def _conv_bwd_fake(x, weight, needs_bias_grad, needs_input_grad=True):
    gb = x.new_empty((weight.shape[0],) if needs_bias_grad else (0,))
    gx = _empty(list(x.shape), x, _cl(x)) if needs_input_grad else x.new_empty((0,))
    return gx, weight.new_empty(list(weight.shape)), gb


@torch.library.custom_op("pyaiml::conv2d", mutates_args=(), device_types="cpu")
def _conv2d_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], padding: List[int],
               dilation: List[int], groups: int, same: bool) -> Tensor:
    return _conv_fwd_impl(2, x, weight, bias, stride, padding, dilation, groups, same)


@torch.library.custom_op("pyaiml::conv2d_backward", mutates_args=(), device_types="cpu")
def _conv2d_backward_op(grad_out: Tensor, x: Tensor, weight: Tensor, stride: List[int], padding: List[int],
                        dilation: List[int], groups: int, same: bool,
                        needs_bias_grad: bool, needs_input_grad: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
    return _conv_bwd_impl(2, grad_out, x, weight, stride, padding, dilation, groups, same, needs_bias_grad,
                          needs_input_grad)


@torch.library.custom_op("pyaiml::conv1d", mutates_args=(), device_types="cpu")
def _conv1d_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], padding: List[int],
               dilation: List[int], groups: int, same: bool) -> Tensor:
    return _conv_fwd_impl(1, x, weight, bias, stride, padding, dilation, groups, same)


@torch.library.custom_op("pyaiml::conv1d_backward", mutates_args=(), device_types="cpu")
def _conv1d_backward_op(grad_out: Tensor, x: Tensor, weight: Tensor, stride: List[int], padding: List[int],
                        dilation: List[int], groups: int, same: bool,
                        needs_bias_grad: bool, needs_input_grad: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
    return _conv_bwd_impl(1, grad_out, x, weight, stride, padding, dilation, groups, same, needs_bias_grad,
                          needs_input_grad)


@_conv2d_op.register_fake
def _(x, weight, bias, stride, padding, dilation, groups, same):
    return _conv_fwd_fake(2, x, weight, stride, padding, dilation, same)


@_conv1d_op.register_fake
def _(x, weight, bias, stride, padding, dilation, groups, same):
    return _conv_fwd_fake(1, x, weight, stride, padding, dilation, same)


@_conv2d_backward_op.register_fake
def _(grad_out, x, weight, stride, padding, dilation, groups, same, needs_bias_grad, needs_input_grad=True):
    return _conv_bwd_fake(x, weight, needs_bias_grad, needs_input_grad)


@_conv1d_backward_op.register_fake
def _(grad_out, x, weight, stride, padding, dilation, groups, same, needs_bias_grad, needs_input_grad=True):
    return _conv_bwd_fake(x, weight, needs_bias_grad, needs_input_grad)


def _conv_setup(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation, groups, same = inputs
    ctx.save_for_backward(x, weight)
    ctx.params = (stride, padding, dilation, groups, same)
    ctx.has_bias = bias is not None


def _make_conv_backward(bwd_op):
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        # False for a network's input images: no grad_x work (arg0: see _Direct)
        need_x = bool(ctx.needs_input_grad[getattr(ctx, "arg0", 0)])
        gx, gw, gb = bwd_op(grad, x, weight, *ctx.params, ctx.has_bias, need_x)
        return (gx if need_x else None), gw, (gb if ctx.has_bias else None), None, None, None, None, None

    return backward


_CONV = {nd: _Spec(functools.partial(_conv_fwd_impl, nd), _conv_setup, _make_conv_backward(
    _either(getattr(torch.ops.pyaiml, f"conv{nd}d_backward"), functools.partial(_conv_bwd_impl, nd)))) for nd in (1, 2)}
_conv2d_op.register_autograd(_CONV[2].backward, setup_context=_conv_setup)
_conv1d_op.register_autograd(_CONV[1].backward, setup_context=_conv_setup)


def _ints(op, name, v, nd, minimum):
    """pyaiml.ops' integer-parameter rule (pyaiml/ops/_validate.py int_tuple) as a list."""
    return list(int_tuple(v, nd, op, name, minimum))


def _conv_params(nd, xshape, wshape, bshape, stride, padding, dilation, groups):
    op = f"pyaiml.torch.conv{nd}d"
    want = "(N, C, H, W)" if nd == 2 else "(N, C, L)"
    if len(xshape) != nd + 2:
        raise ValueError(f"{op}: x must be {nd + 2}-D {want}. Received shape {tuple(xshape)}")
    if len(wshape) != nd + 2:
        raise ValueError(f"{op}: weight must be {nd + 2}-D (Cout, Cin/groups, {'kH, kW' if nd == 2 else 'kL'}). "
                         f"Received shape {tuple(wshape)}")
    groups = int_arg(groups, op, "groups", 1)
    if xshape[1] != wshape[1] * groups or wshape[0] % groups != 0:
        raise ValueError(f"{op}: x has {xshape[1]} channels but weight {tuple(wshape)} with groups={groups} "
                         f"expects {wshape[1] * groups} (and Cout divisible by groups)")
    if bshape is not None and tuple(bshape) != (wshape[0],):
        raise ValueError(f"{op}: bias must have shape ({wshape[0]},). Received {tuple(bshape)}")
    s = _ints(op, "stride", stride, nd, 1)
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"{op}: padding must be an int, a tuple, 'valid' or 'same'. Received {padding!r}")
        same = padding == "same"
        if same and any(e != 1 for e in s):
            raise ValueError(f"{op}: padding='same' needs stride 1. Received stride {stride!r}")
        p = [0] * nd
    else:
        same = False
        p = _ints(op, "padding", padding, nd, 0)
    d = _ints(op, "dilation", dilation, nd, 1)
    k = tuple(wshape[2:])
    # Exact sizes (Python ints) within MAX_EXTENT before torch's int64 schema or a kernel sees them.
    ek = [d[i] * (k[i] - 1) + 1 for i in range(nd)]
    pads = [((e - 1) // 2, (e - 1) - (e - 1) // 2) for e in ek] if same else [(e, e) for e in p]
    window_out(op, tuple(xshape[2:]), k, s, pads, d, padding)
    if not same:
        osz = _conv_out(xshape[2:], wshape[2:], s, p, d, False)
        if any(o < 1 for o in osz):
            raise ValueError(f"{op}: the dilated kernel {tuple(wshape[2:])} (dilation {tuple(d)}) must fit in "
                             f"the padded input {tuple(xshape[2:])} (padding {tuple(p)})")
    return tuple(s), tuple(p), tuple(d), groups, same


def _conv(nd, x, weight, bias, stride, padding, dilation, groups):
    op = f"pyaiml.torch.conv{nd}d"
    if _fallback(op, x):
        return (TF.conv2d if nd == 2 else TF.conv1d)(x, weight, bias, stride, padding, dilation, groups)
    _check_tensor(op, "x", x)
    _check_tensor(op, "weight", weight, x.dtype)
    if bias is not None:
        _check_tensor(op, "bias", bias, x.dtype)
    s, p, d, groups, same = _checked(_conv_params, nd, x.shape, weight.shape, None if bias is None else bias.shape,
                                     stride, padding, dilation, groups)
    fn = torch.ops.pyaiml.conv2d if nd == 2 else torch.ops.pyaiml.conv1d
    return _run(_CONV[nd], fn, (x, weight, bias, list(s), list(p), list(d), groups, same), (x, weight, bias))


def conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride=1, padding: Union[int, str, tuple] = 0,
           dilation=1, groups: int = 1) -> Tensor:
    """``torch.nn.functional.conv2d`` on pyaiml's kernel. x (N, C, H, W), plain or channels-last
    storage; weight (Cout, Cin/groups, kH, kW); returns (N, Cout, OH, OW) stored like x."""
    return _conv(2, x, weight, bias, stride, padding, dilation, groups)


def conv1d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride=1, padding: Union[int, str, tuple] = 0,
           dilation=1, groups: int = 1) -> Tensor:
    """``torch.nn.functional.conv1d`` on pyaiml's kernel. x (N, C, L); weight (Cout, Cin/groups, kL)."""
    return _conv(1, x, weight, bias, stride, padding, dilation, groups)


# --------------------------------------------------------------------------- max pooling

def _pool_fwd_impl(nd, x, kernel_size, stride, padding):
    _check_impl(f"pyaiml::max_pool{nd}d", x)
    _threads.sync()
    cl = _cl(x)
    fmt = ("NHWC" if cl else "NCHW") if nd == 2 else ("NLC" if cl else "NCL")
    fn = K.max_pool2d if nd == 2 else K.max_pool1d
    y, idx = fn(_np(x, cl), _kt(kernel_size, nd), _kt(stride, nd), _kt(padding, nd), fmt)
    return _pt(y, x.dtype, cl), _pt(idx, torch.int64, cl)


def _pool_bwd_impl(nd, grad_out, x, indices, kernel_size, stride, padding):
    _check_impl(f"pyaiml::max_pool{nd}d_backward", grad_out, x, indices)
    _threads.sync()
    cl = _cl(x)
    fmt = ("NHWC" if cl else "NCHW") if nd == 2 else ("NLC" if cl else "NCL")
    fn = K.max_pool2d_backward if nd == 2 else K.max_pool1d_backward
    gx = fn(_np(grad_out, cl), _np(x, cl), _kt(kernel_size, nd), _kt(stride, nd), _kt(padding, nd), fmt,
            _np(indices, cl))
    return _pt(gx, x.dtype, cl)


def _pool_out(sp, k, s, p):
    return [(sp[i] + 2 * p[i] - k[i]) // s[i] + 1 for i in range(len(sp))]


# Forward ops return (y, int64 indices); the indices (flat h * W + w positions, as torch's)
# are saved for backward, which then scatters instead of recomputing the argmax.
@torch.library.custom_op("pyaiml::max_pool2d", mutates_args=(), device_types="cpu")
def _max_pool2d_op(x: Tensor, kernel_size: List[int], stride: List[int],
                   padding: List[int]) -> Tuple[Tensor, Tensor]:
    return _pool_fwd_impl(2, x, kernel_size, stride, padding)


@torch.library.custom_op("pyaiml::max_pool2d_backward", mutates_args=(), device_types="cpu")
def _max_pool2d_backward_op(grad_out: Tensor, x: Tensor, indices: Tensor, kernel_size: List[int], stride: List[int],
                            padding: List[int]) -> Tensor:
    return _pool_bwd_impl(2, grad_out, x, indices, kernel_size, stride, padding)


@torch.library.custom_op("pyaiml::max_pool1d", mutates_args=(), device_types="cpu")
def _max_pool1d_op(x: Tensor, kernel_size: List[int], stride: List[int],
                   padding: List[int]) -> Tuple[Tensor, Tensor]:
    return _pool_fwd_impl(1, x, kernel_size, stride, padding)


@torch.library.custom_op("pyaiml::max_pool1d_backward", mutates_args=(), device_types="cpu")
def _max_pool1d_backward_op(grad_out: Tensor, x: Tensor, indices: Tensor, kernel_size: List[int], stride: List[int],
                            padding: List[int]) -> Tensor:
    return _pool_bwd_impl(1, grad_out, x, indices, kernel_size, stride, padding)


def _pool_fwd_fake(x, kernel_size, stride, padding):
    shape = [x.shape[0], x.shape[1], *_pool_out(x.shape[2:], kernel_size, stride, padding)]
    return _empty(shape, x, _cl(x)), _empty(shape, x, _cl(x), torch.int64)


@_max_pool2d_op.register_fake
def _(x, kernel_size, stride, padding):
    return _pool_fwd_fake(x, kernel_size, stride, padding)


@_max_pool1d_op.register_fake
def _(x, kernel_size, stride, padding):
    return _pool_fwd_fake(x, kernel_size, stride, padding)


@_max_pool2d_backward_op.register_fake
def _(grad_out, x, indices, kernel_size, stride, padding):
    return _empty(list(x.shape), x, _cl(x))


@_max_pool1d_backward_op.register_fake
def _(grad_out, x, indices, kernel_size, stride, padding):
    return _empty(list(x.shape), x, _cl(x))


def _pool_setup(ctx, inputs, output):
    x, kernel_size, stride, padding = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(x, output[1])
    ctx.params = (kernel_size, stride, padding)


def _make_pool_backward(bwd_op):
    def backward(ctx, grad, grad_indices):
        x, indices = ctx.saved_tensors
        return bwd_op(grad, x, indices, *ctx.params), None, None, None

    return backward


_POOL = {nd: _Spec(functools.partial(_pool_fwd_impl, nd), _pool_setup, _make_pool_backward(
    _either(getattr(torch.ops.pyaiml, f"max_pool{nd}d_backward"), functools.partial(_pool_bwd_impl, nd))))
    for nd in (1, 2)}
_max_pool2d_op.register_autograd(_POOL[2].backward, setup_context=_pool_setup)
_max_pool1d_op.register_autograd(_POOL[1].backward, setup_context=_pool_setup)


def _pool_params(nd, shape, kernel_size, stride, padding, dilation, ceil_mode):
    op = f"pyaiml.torch.max_pool{nd}d"
    if len(shape) != nd + 2:
        raise ValueError(f"{op}: x must be {nd + 2}-D {'(N, C, H, W)' if nd == 2 else '(N, C, L)'}. "
                         f"Received shape {tuple(shape)}")
    k = _ints(op, "kernel_size", kernel_size, nd, 1)
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else _ints(
        op, "stride", stride, nd, 1)
    p = _ints(op, "padding", padding, nd, 0)
    if _ints(op, "dilation", dilation, nd, 1) != [1] * nd:
        raise NotImplementedError(f"{op}: dilation must be 1 (pyaiml's pooling kernel has no dilation). "
                                  f"Received {dilation!r}")
    if ceil_mode:
        raise NotImplementedError(f"{op}: ceil_mode=True is not supported. Received ceil_mode={ceil_mode!r}")
    if any(p[i] > k[i] // 2 for i in range(nd)):
        raise ValueError(f"{op}: padding must be at most half the kernel size. Received padding {padding!r} "
                         f"for kernel_size {kernel_size!r}")
    window_out(op, tuple(shape[2:]), k, s, [(e, e) for e in p], [1] * nd, padding, what="kernel_size")
    if any(o < 1 for o in _pool_out(shape[2:], k, s, p)):
        raise ValueError(f"{op}: kernel_size {tuple(k)} must fit in the padded input {tuple(shape[2:])} "
                         f"(padding {tuple(p)})")
    return tuple(k), tuple(s), tuple(p)


def _pool(nd, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    if _fallback(f"pyaiml.torch.max_pool{nd}d", x):
        fn = TF.max_pool2d if nd == 2 else TF.max_pool1d
        return fn(x, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=return_indices)
    _check_tensor(f"pyaiml.torch.max_pool{nd}d", "x", x)
    k, s, p = _checked(_pool_params, nd, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    if not return_indices and not (x.requires_grad and torch.is_grad_enabled()) and _direct(x):
        # plain eager inference: no graph will need the indices, so the kernel does not write them
        _threads.sync()
        cl = _cl(x)
        fmt = ("NHWC" if cl else "NCHW") if nd == 2 else ("NLC" if cl else "NCL")
        pool = K.max_pool2d_values if nd == 2 else K.max_pool1d_values
        return _pt(pool(_np(x, cl), _kt(k, nd), _kt(s, nd), _kt(p, nd), fmt), x.dtype, cl)
    fn = torch.ops.pyaiml.max_pool2d if nd == 2 else torch.ops.pyaiml.max_pool1d
    y, idx = _run(_POOL[nd], fn, (x, list(k), list(s), list(p)), (x,))
    return (y, idx) if return_indices else y


def max_pool2d(x: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False) -> Tensor:
    """``torch.nn.functional.max_pool2d`` on pyaiml's kernel (dilation 1, floor mode). With
    return_indices, also the int64 flat h * W + w positions of the maxima, as torch gives."""
    return _pool(2, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool1d(x: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False) -> Tensor:
    """``torch.nn.functional.max_pool1d`` on pyaiml's kernel (dilation 1, floor mode); with
    return_indices, also the int64 positions of the maxima."""
    return _pool(1, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


# --------------------------------------------------------------------------- attention

def _mask_np(m: Optional[Tensor]):
    if m is None:
        return None
    return m.detach().contiguous().numpy()


def _sdpa_fwd_impl(q, k, v, attn_mask, is_causal, scale, enable_gqa):
    _check_impl("pyaiml::sdpa", q, k, v, attn_mask)
    _threads.sync()
    out, lse = K.scaled_dot_product_attention(_np(q), _np(k), _np(v), _mask_np(attn_mask), is_causal, scale,
                                              enable_gqa)
    return _pt(out, q.dtype), _pt(lse, torch.float32)


def _sdpa_bwd_impl(grad_out, q, k, v, attn_mask, is_causal, scale, enable_gqa, out, lse):
    _check_impl("pyaiml::sdpa_backward", grad_out, q, k, v, attn_mask, out, lse)
    _threads.sync()
    gq, gk, gv = K.scaled_dot_product_attention_backward(_np(grad_out), _np(q), _np(k), _np(v), _mask_np(attn_mask),
                                                         is_causal, scale, enable_gqa, _np(out), _np(lse))
    return _pt(gq, q.dtype), _pt(gk, k.dtype), _pt(gv, v.dtype)


@torch.library.custom_op("pyaiml::sdpa", mutates_args=(), device_types="cpu")
def _sdpa_op(q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor], is_causal: bool, scale: Optional[float],
             enable_gqa: bool) -> Tuple[Tensor, Tensor]:
    return _sdpa_fwd_impl(q, k, v, attn_mask, is_causal, scale, enable_gqa)


@_sdpa_op.register_fake
def _(q, k, v, attn_mask, is_causal, scale, enable_gqa):
    return q.new_empty([*q.shape[:-1], v.shape[-1]]), q.new_empty(list(q.shape[:-1]), dtype=torch.float32)


@torch.library.custom_op("pyaiml::sdpa_backward", mutates_args=(), device_types="cpu")
def _sdpa_backward_op(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor], is_causal: bool,
                      scale: Optional[float], enable_gqa: bool, out: Tensor,
                      lse: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    return _sdpa_bwd_impl(grad_out, q, k, v, attn_mask, is_causal, scale, enable_gqa, out, lse)


@_sdpa_backward_op.register_fake
def _(grad_out, q, k, v, attn_mask, is_causal, scale, enable_gqa, out, lse):
    return q.new_empty(list(q.shape)), k.new_empty(list(k.shape)), v.new_empty(list(v.shape))


def _sdpa_setup(ctx, inputs, output):
    q, k, v, attn_mask, is_causal, scale, enable_gqa = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, attn_mask, out, lse)
    ctx.params = (is_causal, scale, enable_gqa)


_sdpa_bwd = _either(torch.ops.pyaiml.sdpa_backward, _sdpa_bwd_impl)


def _sdpa_backward(ctx, grad_out, grad_lse):
    q, k, v, attn_mask, out, lse = ctx.saved_tensors
    is_causal, scale, enable_gqa = ctx.params
    gq, gk, gv = _sdpa_bwd(grad_out, q, k, v, attn_mask, is_causal, scale, enable_gqa, out, lse)
    return gq, gk, gv, None, None, None, None


_SDPA = _Spec(_sdpa_fwd_impl, _sdpa_setup, _sdpa_backward)
_sdpa_op.register_autograd(_sdpa_backward, setup_context=_sdpa_setup)


def _sdpa_drop_fwd_impl(q, k, v, attn_mask, is_causal, scale, enable_gqa, dropout_p, seed):
    _check_impl("pyaiml::sdpa_dropout", q, k, v, attn_mask)
    _threads.sync()
    out = K.scaled_dot_product_attention_dropout(_np(q), _np(k), _np(v), _mask_np(attn_mask), is_causal, scale,
                                                 enable_gqa, dropout_p, seed)
    return _pt(out, q.dtype)


def _sdpa_drop_bwd_impl(grad_out, q, k, v, attn_mask, is_causal, scale, enable_gqa, dropout_p, seed):
    _check_impl("pyaiml::sdpa_dropout_backward", grad_out, q, k, v, attn_mask)
    _threads.sync()
    gq, gk, gv = K.scaled_dot_product_attention_dropout_backward(_np(grad_out), _np(q), _np(k), _np(v),
                                                                 _mask_np(attn_mask), is_causal, scale, enable_gqa,
                                                                 dropout_p, seed)
    return _pt(gq, q.dtype), _pt(gk, k.dtype), _pt(gv, v.dtype)


@torch.library.custom_op("pyaiml::sdpa_dropout", mutates_args=(), device_types="cpu")
def _sdpa_drop_op(q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor], is_causal: bool,
                  scale: Optional[float], enable_gqa: bool, dropout_p: float, seed: int) -> Tensor:
    return _sdpa_drop_fwd_impl(q, k, v, attn_mask, is_causal, scale, enable_gqa, dropout_p, seed)


@_sdpa_drop_op.register_fake
def _(q, k, v, attn_mask, is_causal, scale, enable_gqa, dropout_p, seed):
    return q.new_empty([*q.shape[:-1], v.shape[-1]])


@torch.library.custom_op("pyaiml::sdpa_dropout_backward", mutates_args=(), device_types="cpu")
def _sdpa_drop_backward_op(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor],
                           is_causal: bool, scale: Optional[float], enable_gqa: bool, dropout_p: float,
                           seed: int) -> Tuple[Tensor, Tensor, Tensor]:
    return _sdpa_drop_bwd_impl(grad_out, q, k, v, attn_mask, is_causal, scale, enable_gqa, dropout_p, seed)


@_sdpa_drop_backward_op.register_fake
def _(grad_out, q, k, v, attn_mask, is_causal, scale, enable_gqa, dropout_p, seed):
    return q.new_empty(list(q.shape)), k.new_empty(list(k.shape)), v.new_empty(list(v.shape))


def _sdpa_drop_setup(ctx, inputs, output):
    q, k, v, attn_mask, is_causal, scale, enable_gqa, dropout_p, seed = inputs
    ctx.save_for_backward(q, k, v, attn_mask)
    ctx.params = (is_causal, scale, enable_gqa, dropout_p, seed)


_sdpa_drop_bwd = _either(torch.ops.pyaiml.sdpa_dropout_backward, _sdpa_drop_bwd_impl)


def _sdpa_drop_backward(ctx, grad_out):
    q, k, v, attn_mask = ctx.saved_tensors
    gq, gk, gv = _sdpa_drop_bwd(grad_out, q, k, v, attn_mask, *ctx.params)
    return gq, gk, gv, None, None, None, None, None, None


_SDPA_DROP = _Spec(_sdpa_drop_fwd_impl, _sdpa_drop_setup, _sdpa_drop_backward)
_sdpa_drop_op.register_autograd(_sdpa_drop_backward, setup_context=_sdpa_drop_setup)

_SEED_HIGH = 2**62


def _dropout_seed(generator: Optional[torch.Generator]) -> int:
    """A seed in [0, 2**62) drawn from ``generator`` (torch's default CPU generator if None)."""
    return int(torch.randint(0, _SEED_HIGH, (1,), generator=generator).item())


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor] = None,
                                 dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None,
                                 enable_gqa: bool = False, *, generator: Optional[torch.Generator] = None) -> Tensor:
    """``torch.nn.functional.scaled_dot_product_attention`` on pyaiml's kernel.

    query (..., L, E), key (..., S, E), value (..., S, Ev) with equal leading dimensions
    (with ``enable_gqa``, key/value may have fewer heads on dimension -3, dividing query's);
    attn_mask bool (True = take part) or float (added to the scores), broadcastable to
    (..., L, S), not differentiated. Returns (..., L, Ev).

    dropout_p in [0, 1]: as torch, applied whenever it is > 0 (pass 0.0 outside training):
    each attention probability is zeroed with probability dropout_p and the kept ones are
    scaled by 1 / (1 - dropout_p). The mask comes from a seed drawn from ``generator`` (or
    torch's default CPU generator), so ``torch.manual_seed(s)`` before a run reproduces every
    mask of that run; the backward reuses the forward's seed. Runs the explicit-score path of
    pyaiml.ops (memory O(L * S) per head); dropout_p = 0 runs the flash kernel.
    float16/bfloat16 inputs run torch's own function (one DtypeFallbackWarning per dtype).
    """
    op = "pyaiml.torch.scaled_dot_product_attention"
    if _fallback(op, query):
        return TF.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                                               is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
    _check_tensor(op, "query", query)
    _check_tensor(op, "key", key, query.dtype)
    _check_tensor(op, "value", value, query.dtype)
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)):
        raise TypeError(f"{op}: dropout_p must be a float in [0, 1]. Received {type(dropout_p).__name__}")
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"{op}: dropout_p must lie in [0, 1]. Received {dropout_p!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{op}: generator must be a torch.Generator or None. Received {type(generator).__name__}")
    if query.dim() < 2 or key.dim() != query.dim() or value.dim() != query.dim():
        raise ValueError(f"{op}: query, key and value must have the same rank >= 2. Received shapes "
                         f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
    if key.shape[-1] != query.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(f"{op}: need query (..., L, E), key (..., S, E), value (..., S, Ev). Received shapes "
                         f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
    lead_q, lead_k, lead_v = query.shape[:-2], key.shape[:-2], value.shape[:-2]
    if lead_k != lead_v:
        raise ValueError(f"{op}: key and value must have the same leading dimensions. Received {tuple(key.shape)} "
                         f"and {tuple(value.shape)}")
    if lead_q != lead_k:
        ok = (enable_gqa and query.dim() >= 3 and lead_q[:-1] == lead_k[:-1]
              and lead_q[-1] % lead_k[-1] == 0)
        if not ok:
            raise ValueError(f"{op}: query and key must have the same leading dimensions (or, with enable_gqa=True, "
                             f"key heads dividing query heads on dim -3). Received {tuple(query.shape)} and "
                             f"{tuple(key.shape)}")
    if attn_mask is not None:
        if not isinstance(attn_mask, Tensor):
            raise TypeError(f"{op}: attn_mask must be a tensor or None. Received {type(attn_mask).__name__}")
        if attn_mask.device.type != "cpu":
            raise ValueError(f"{op}: attn_mask is on device '{attn_mask.device}'; pyaiml's torch ops run on CPU "
                             f"tensors only")
        if attn_mask.dtype != torch.bool and attn_mask.dtype != query.dtype:
            raise TypeError(f"{op}: attn_mask must be bool or {query.dtype}. Received {attn_mask.dtype}")
        if attn_mask.requires_grad:
            raise NotImplementedError(f"{op}: gradients with respect to attn_mask are not implemented; pass "
                                      f"attn_mask.detach()")
    if scale is not None:
        try:
            scale = float(scale)
        except OverflowError:
            raise ValueError(f"{op}: scale must be finite. Received an integer of {int(scale).bit_length()} bits") from None
        except (TypeError, ValueError) as e:
            raise TypeError(f"{op}: scale must be a real number or None. Received {type(scale).__name__}") from e
        if not math.isfinite(scale):
            raise ValueError(f"{op}: scale must be finite. Received {scale}")
    tensors = (query, key, value, attn_mask)
    if dropout_p > 0.0:
        return _run(_SDPA_DROP, torch.ops.pyaiml.sdpa_dropout, (query, key, value, attn_mask, bool(is_causal), scale,
                                                               bool(enable_gqa), float(dropout_p),
                                                               _dropout_seed(generator)), tensors)
    out, _ = _run(_SDPA, torch.ops.pyaiml.sdpa, (query, key, value, attn_mask, bool(is_causal), scale,
                                                 bool(enable_gqa)), tensors)
    return out


# --------------------------------------------------------------------------- HMM

@torch.library.custom_op("pyaiml::hmm_forward_backward", mutates_args=(), device_types="cpu")
def _hmm_op(log_startprob: Tensor, log_transmat: Tensor, log_emission: Tensor) -> Tuple[Tensor, Tensor]:
    _check_impl("pyaiml::hmm_forward_backward", log_startprob, log_transmat, log_emission)
    ll, post = K.hmm_forward_backward(_np(log_startprob), _np(log_transmat), _np(log_emission))
    dt = log_emission.dtype
    return torch.tensor(ll, dtype=dt), _pt(post, dt)


@_hmm_op.register_fake
def _(log_startprob, log_transmat, log_emission):
    return log_emission.new_empty(()), log_emission.new_empty(list(log_emission.shape))


@torch.library.custom_op("pyaiml::hmm_expected_counts", mutates_args=(), device_types="cpu")
def _hmm_counts_op(log_startprob: Tensor, log_transmat: Tensor,
                   log_emission: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    _check_impl("pyaiml::hmm_expected_counts", log_startprob, log_transmat, log_emission)
    g0, xi, gamma = K.hmm_grads(_np(log_startprob), _np(log_transmat), _np(log_emission))
    dt = log_emission.dtype
    return _pt(g0, dt), _pt(xi, dt), _pt(gamma, dt)


@_hmm_counts_op.register_fake
def _(log_startprob, log_transmat, log_emission):
    return (log_startprob.new_empty(list(log_startprob.shape)), log_transmat.new_empty(list(log_transmat.shape)),
            log_emission.new_empty(list(log_emission.shape)))


def _hmm_setup(ctx, inputs, output):
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(*inputs)


def _hmm_backward(ctx, grad_ll, grad_post):
    ls, lA, lB = ctx.saved_tensors
    g0, xi, gamma = torch.ops.pyaiml.hmm_expected_counts(ls, lA, lB)
    return grad_ll * g0, grad_ll * xi, grad_ll * gamma


_hmm_op.register_autograd(_hmm_backward, setup_context=_hmm_setup)


def hmm_forward_backward(log_startprob: Tensor, log_transmat: Tensor, log_emission: Tensor) -> Tuple[Tensor, Tensor]:
    """Forward-backward of one sequence in log space.

    Parameters
    ----------
    log_startprob : (K,) log initial state probabilities
    log_transmat : (K, K) log transition probabilities, row = from-state
    log_emission : (T, K) log p(x_t | state k), T >= 1

    Returns
    -------
    (log_likelihood 0-D, posteriors (T, K)); float64 inside, returned in the inputs' dtype.
    log_likelihood is differentiable: d/d log_emission = posteriors, d/d log_transmat = expected
    transition counts (sum over t of xi_t), d/d log_startprob = posteriors[0]. The posteriors
    output is not differentiable.
    """
    op = "pyaiml.torch.hmm_forward_backward"
    _check_tensor(op, "log_startprob", log_startprob)
    _check_tensor(op, "log_transmat", log_transmat, log_startprob.dtype)
    _check_tensor(op, "log_emission", log_emission, log_startprob.dtype)
    if log_startprob.dim() != 1 or log_startprob.shape[0] < 1:
        raise ValueError(f"{op}: log_startprob must be 1-D (K,) with K >= 1. Received shape "
                         f"{tuple(log_startprob.shape)}")
    Kn = log_startprob.shape[0]
    if tuple(log_transmat.shape) != (Kn, Kn):
        raise ValueError(f"{op}: log_transmat must have shape (K, K) = ({Kn}, {Kn}). Received shape "
                         f"{tuple(log_transmat.shape)}")
    if log_emission.dim() != 2 or log_emission.shape[1] != Kn or log_emission.shape[0] < 1:
        raise ValueError(f"{op}: log_emission must have shape (T, K) with T >= 1, K = {Kn}. Received shape "
                         f"{tuple(log_emission.shape)}")
    return torch.ops.pyaiml.hmm_forward_backward(log_startprob, log_transmat, log_emission)
