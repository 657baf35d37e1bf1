"""Keras layers that exist only as a tape ``call()``: Permute, RepeatVector,
GlobalMaxPooling1D/2D, AveragePooling1D/2D, ZeroPadding2D, UpSampling2D, Rescaling, Lambda,
the activation layers ReLU, LeakyReLU, ELU, Softmax, PReLU, Identity, Conv1DTranspose /
Conv2DTranspose, DepthwiseConv2D, SeparableConv2D, Masking, ZeroPadding1D,
Cropping1D/2D, UpSampling1D, SpatialDropout1D/2D, GaussianNoise, GaussianDropout,
UnitNormalization, GroupNormalization, Resizing and CenterCrop.

What they are. Shape and pooling layers written with pyaiml.autograd.functional's
primitives (transpose, repeat, max, average_pool, pad, arithmetic), so their gradients come
from the tape and they work in functional and subclassed models, in custom training loops,
and in Sequential (which then trains through the tape: pyaiml/keras/models.py). Each has a
pure ``compute_output_shape`` (batch excluded) and a ``get_config`` that round-trips.
Channels last unless ``data_format="channels_first"``.

Not here: AveragePooling with padding="same" (refused with a ValueError), bilinear
upsampling. Tests: tests/test_keras_extras.py (values against torch/NumPy, gradients
against torch autograd in float64).
"""
from __future__ import annotations

import numpy as np

from pyaiml.autograd import functional as F
from pyaiml.autograd.tape import value_of as _v
from pyaiml.keras import layers as _layers
from pyaiml.keras._common import tuple_n
from pyaiml.keras.layers import InputSpecError, Layer, _shape_str

_layers.BUILTIN_MODULES.add(__name__)


def _data_format(cname, df):
    df = df or "channels_last"
    if df not in ("channels_last", "channels_first"):
        raise ValueError(f"{cname}: data_format must be 'channels_last' or 'channels_first'. Received {df!r}")
    return df


def _need_rank(layer, shape, rank):
    if len(shape) != rank:
        raise InputSpecError(f"{layer.name}: {type(layer).__name__} expects inputs of rank {rank + 1} (with the batch). "
                             f"Received input shape {_shape_str(tuple(shape))}")


class Permute(Layer):
    """Reorder the non-batch axes: ``dims`` is a permutation of 1..rank (Keras's numbering)."""

    def __init__(self, dims, **kw):
        super().__init__(**kw)
        dims = tuple(int(d) for d in dims)
        if sorted(dims) != list(range(1, len(dims) + 1)):
            raise ValueError(f"Permute: dims must be a permutation of 1..{len(dims)}. Received {dims}")
        self.dims = dims

    def compute_output_shape(self, s):
        _need_rank(self, s, len(self.dims))
        return tuple(s[d - 1] for d in self.dims)

    def call(self, inputs, training=None):
        return F.transpose(inputs, (0,) + self.dims)

    def get_config(self):
        return {**super().get_config(), "dims": list(self.dims)}


class RepeatVector(Layer):
    """(batch, features) -> (batch, n, features)."""

    def __init__(self, n, **kw):
        super().__init__(**kw)
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"RepeatVector: n must be a positive integer. Received {n!r}")
        self.n = int(n)

    def compute_output_shape(self, s):
        _need_rank(self, s, 1)
        return (self.n, s[0])

    def call(self, inputs, training=None):
        return F.repeat(F.expand_dims(inputs, 1), self.n, axis=1)

    def get_config(self):
        return {**super().get_config(), "n": self.n}


class _GlobalMax(Layer):
    rank = 2

    def __init__(self, data_format=None, keepdims=False, **kw):
        super().__init__(**kw)
        self.data_format = _data_format(type(self).__name__, data_format)
        self.keepdims = bool(keepdims)

    def _axes(self):
        first = 1 if self.data_format == "channels_last" else 2
        return tuple(range(first, first + self.rank))

    def compute_output_shape(self, s):
        _need_rank(self, s, self.rank + 1)
        ax = [a - 1 for a in self._axes()]
        if self.keepdims:
            return tuple(1 if i in ax else d for i, d in enumerate(s))
        return tuple(d for i, d in enumerate(s) if i not in ax)

    def call(self, inputs, training=None):
        return F.max(inputs, axis=self._axes(), keepdims=self.keepdims)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}


class GlobalMaxPooling1D(_GlobalMax):
    rank = 1


class GlobalMaxPooling2D(_GlobalMax):
    rank = 2


class _AvgPool(Layer):
    rank = 2

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kw):
        super().__init__(**kw)
        cname = type(self).__name__
        self.pool_size = tuple_n(pool_size, self.rank, f"{cname}: pool_size")
        self.strides = self.pool_size if strides is None else tuple_n(strides, self.rank, f"{cname}: strides")
        if padding != "valid":
            raise ValueError(f"{cname}: only padding='valid' is supported. Received {padding!r}")
        self.padding = padding
        self.data_format = _data_format(cname, data_format)

    def _spatial_axes(self):
        first = 1 if self.data_format == "channels_last" else 2
        return tuple(range(first, first + self.rank))

    def compute_output_shape(self, s):
        _need_rank(self, s, self.rank + 1)
        out = list(s)
        for a, k, st in zip(self._spatial_axes(), self.pool_size, self.strides):
            n = s[a - 1]
            if n is not None:
                if n < k:
                    raise InputSpecError(f"{self.name}: input size {n} is smaller than pool_size {k}. Input shape "
                                         f"{_shape_str(tuple(s))}")
                out[a - 1] = (n - k) // st + 1
        return tuple(out)

    def call(self, inputs, training=None):
        return F.average_pool(inputs, self.pool_size, self.strides, self._spatial_axes())

    def get_config(self):
        return {**super().get_config(), "pool_size": list(self.pool_size), "strides": list(self.strides),
                "padding": self.padding, "data_format": self.data_format}


class AveragePooling1D(_AvgPool):
    rank = 1


class AveragePooling2D(_AvgPool):
    rank = 2


class ZeroPadding2D(Layer):
    """Pad rows and columns with zeros: ``padding`` an int, (rows, cols) or
    ((top, bottom), (left, right))."""

    def __init__(self, padding=(1, 1), data_format=None, **kw):
        super().__init__(**kw)
        p = padding
        try:
            if isinstance(p, (int, np.integer)):
                p = ((int(p),) * 2,) * 2
            elif all(isinstance(v, (int, np.integer)) for v in p):
                p = tuple((int(v), int(v)) for v in p)
            else:
                p = tuple(tuple(int(v) for v in pair) for pair in p)
            ok = len(p) == 2 and all(len(pair) == 2 and min(pair) >= 0 for pair in p)
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(f"ZeroPadding2D: padding must be an int, (rows, cols) or ((top, bottom), (left, right)) "
                             f"of non-negative ints. Received {padding!r}")
        self.padding = p
        self.data_format = _data_format("ZeroPadding2D", data_format)

    def _widths(self):
        (t, b), (l, r) = self.padding
        if self.data_format == "channels_last":
            return [(0, 0), (t, b), (l, r), (0, 0)]
        return [(0, 0), (0, 0), (t, b), (l, r)]

    def compute_output_shape(self, s):
        _need_rank(self, s, 3)
        w = self._widths()[1:]
        return tuple(None if d is None else d + lo + hi for d, (lo, hi) in zip(s, w))

    def call(self, inputs, training=None):
        return F.pad(inputs, self._widths())

    def get_config(self):
        return {**super().get_config(), "padding": [list(p) for p in self.padding], "data_format": self.data_format}


class UpSampling2D(Layer):
    """Repeat rows and columns ``size`` times (nearest neighbour)."""

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kw):
        super().__init__(**kw)
        self.size = tuple_n(size, 2, "UpSampling2D: size")
        if interpolation != "nearest":
            raise ValueError(f"UpSampling2D: only interpolation='nearest' is supported. Received {interpolation!r}")
        self.interpolation = interpolation
        self.data_format = _data_format("UpSampling2D", data_format)

    def _axes(self):
        return (1, 2) if self.data_format == "channels_last" else (2, 3)

    def compute_output_shape(self, s):
        _need_rank(self, s, 3)
        out = list(s)
        for a, k in zip(self._axes(), self.size):
            out[a - 1] = None if s[a - 1] is None else s[a - 1] * k
        return tuple(out)

    def call(self, inputs, training=None):
        x = inputs
        for a, k in zip(self._axes(), self.size):
            if k > 1:
                x = F.repeat(x, k, axis=a)
        return x

    def get_config(self):
        return {**super().get_config(), "size": list(self.size), "data_format": self.data_format,
                "interpolation": self.interpolation}


class Rescaling(Layer):
    """x * scale + offset (e.g. Rescaling(1/255) for pixel values)."""

    def __init__(self, scale, offset=0.0, **kw):
        super().__init__(**kw)
        self.scale, self.offset = float(scale), float(offset)

    def call(self, inputs, training=None):
        y = F.multiply(inputs, np.asarray(self.scale, dtype=inputs.dtype))
        return F.add(y, np.asarray(self.offset, dtype=inputs.dtype)) if self.offset else y

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


class ReLU(Layer):
    """Keras's ReLU layer: x from ``threshold`` up, capped at ``max_value``; below the threshold
    ``negative_slope * (x - threshold)``. The defaults are the plain ReLU."""
    supports_masking = True

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kw):
        super().__init__(**kw)
        if max_value is not None and float(max_value) < 0:
            raise ValueError(f"{self.name}: ReLU max_value must be >= 0. Received {max_value}")
        if float(negative_slope) < 0:
            raise ValueError(f"{self.name}: ReLU negative_slope must be >= 0. Received {negative_slope}")
        self.max_value = None if max_value is None else float(max_value)
        self.negative_slope, self.threshold = float(negative_slope), float(threshold)

    def call(self, inputs, training=None):
        if self.negative_slope == 0.0 and self.threshold == 0.0:
            y = F.relu(inputs)
        else:
            xv = np.asarray(getattr(inputs, "value", inputs))
            below = F.multiply(F.subtract(inputs, self.threshold), self.negative_slope)
            y = F.where(xv >= self.threshold, inputs, below)
        return y if self.max_value is None else F.minimum(y, self.max_value)

    def get_config(self):
        return {**super().get_config(), "max_value": self.max_value, "negative_slope": self.negative_slope,
                "threshold": self.threshold}


class LeakyReLU(Layer):
    """x for x > 0, ``negative_slope * x`` otherwise (Keras 3's default slope 0.3)."""
    supports_masking = True

    def __init__(self, negative_slope=0.3, **kw):
        if "alpha" in kw:  # Keras 2's name for it
            negative_slope = kw.pop("alpha")
        super().__init__(**kw)
        if float(negative_slope) < 0:
            raise ValueError(f"{self.name}: LeakyReLU negative_slope must be >= 0. Received {negative_slope}")
        self.negative_slope = float(negative_slope)

    def call(self, inputs, training=None):
        return F.leaky_relu(inputs, self.negative_slope)

    def get_config(self):
        return {**super().get_config(), "negative_slope": self.negative_slope}


class ELU(Layer):
    """x for x > 0, ``alpha * (exp(x) - 1)`` otherwise."""
    supports_masking = True

    def __init__(self, alpha=1.0, **kw):
        super().__init__(**kw)
        self.alpha = float(alpha)

    def call(self, inputs, training=None):
        return F.elu(inputs, self.alpha)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


class Softmax(Layer):
    """Softmax along ``axis`` (default the last)."""

    def __init__(self, axis=-1, **kw):
        super().__init__(**kw)
        self.axis = int(axis)

    def call(self, inputs, training=None):
        nd = np.ndim(getattr(inputs, "value", inputs))
        if not -nd <= self.axis < nd or self.axis % nd == 0:
            raise ValueError(f"{self.name}: Softmax axis {self.axis} is not a feature axis of inputs of rank {nd}")
        return F.softmax(inputs, self.axis % nd)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


class PReLU(Layer):
    """max(0, x) + alpha * min(0, x) with a learned ``alpha`` per input element (shared along
    ``shared_axes``, 1-based without the batch as in Keras)."""

    def __init__(self, alpha_initializer="zeros", alpha_regularizer=None, alpha_constraint=None, shared_axes=None,
                 **kw):
        super().__init__(**kw)
        if alpha_regularizer is not None or alpha_constraint is not None:
            raise ValueError(f"{self.name}: PReLU alpha_regularizer and alpha_constraint are not supported")
        self.alpha_initializer = alpha_initializer
        axes = [] if shared_axes is None else ([shared_axes] if isinstance(shared_axes, int) else list(shared_axes))
        self.shared_axes = [int(a) for a in axes]

    def build(self, input_shape):
        shape = list(input_shape)
        for a in self.shared_axes:
            if not 1 <= a <= len(shape):
                raise ValueError(f"{self.name}: PReLU shared axis {a} is outside 1..{len(shape)} for inputs of shape "
                                 f"{_shape_str(input_shape)}")
            shape[a - 1] = 1
        if any(d is None for d in shape):
            raise ValueError(f"{self.name}: PReLU needs a known size on every unshared axis. Received "
                             f"{_shape_str(input_shape)}")
        self.alpha = self.add_weight(shape=tuple(shape), initializer=self.alpha_initializer, name="alpha")
        super().build(input_shape)

    def call(self, inputs, training=None):
        return F.add(F.relu(inputs), F.multiply(self.alpha, F.minimum(inputs, 0.0)))

    def get_config(self):
        ini = self.alpha_initializer
        return {**super().get_config(), "alpha_initializer": ini if isinstance(ini, (str, int, float)) else "zeros",
                "shared_axes": self.shared_axes or None}


class Identity(Layer):
    """Returns its input."""
    supports_masking = True

    def call(self, inputs, training=None):
        return inputs


def _non_negative(v, r, what):
    """An int or r ints, each >= 0, as a tuple of r."""
    t = (v,) * r if isinstance(v, (int, np.integer)) else tuple(v) if isinstance(v, (tuple, list)) else None
    if t is None or len(t) != r or any(not isinstance(a, (int, np.integer)) or a < 0 for a in t):
        raise ValueError(f"{what} must be an int or a tuple of {r} ints >= 0. Received {v!r}")
    return tuple(int(a) for a in t)


def _transpose_geometry(n, k, s, d, padding, op):
    """(crop start into the uncropped transposed output, output length) along one axis, Keras
    3's rule (its JAX/TensorFlow form: the output is a conv of the stride-dilated input padded
    left_pad / right_pad; the uncropped output is that with k_eff - 1 on both sides)."""
    ke = (k - 1) * d + 1
    if padding == "valid":
        op = max(ke, s) - ke if op is None else op
        return 0, (n - 1) * s + ke + op
    pad_len = s + ke - 2 if op is None else ke + ke % 2 - 2 + op
    left = min(pad_len // 2 + pad_len % 2, ke - 1)
    return ke - 1 - left, (n - 1) * s + pad_len - ke + 2


class _ConvTranspose(Layer, _layers._ActMixin):
    """Keras's Conv1DTranspose / Conv2DTranspose, channels last. The kernel is stored as Keras
    stores it, kernel_size + (filters, input channels); the product is
    pyaiml.autograd.functional.conv_transpose (the matching conv's input gradient, on the
    conv kernels), then the crop or zero extension of Keras's padding / output_padding rule,
    the bias and the activation, all on the tape."""
    rank = 2

    def __init__(self, filters, kernel_size, strides=1, padding="valid", output_padding=None, data_format=None,
                 dilation_rate=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kw):
        super().__init__(**kw)
        cname, r = type(self).__name__, self.rank
        self.filters, self.kernel_size, self.strides, self.dilation_rate = _layers.conv_args(
            cname, r, filters, kernel_size, strides, dilation_rate)
        pad = padding.lower() if isinstance(padding, str) else padding
        if pad not in ("valid", "same"):
            raise ValueError(f"{cname}: padding must be 'valid' or 'same'. Received {padding!r}")
        self.padding = pad
        if (data_format or "channels_last") != "channels_last":
            raise ValueError(f"{cname}: only data_format='channels_last' is supported. Received {data_format!r}")
        self.data_format = "channels_last"
        self.output_padding = None if output_padding is None else _non_negative(output_padding, r,
                                                                                 f"{cname}: output_padding")
        if self.output_padding is not None and any(o >= st for o, st in zip(self.output_padding, self.strides)):
            raise ValueError(f"{cname}: output_padding must be smaller than strides. Received output_padding="
                             f"{self.output_padding}, strides={self.strides}")
        self.activation = _layers._acts.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer

    def build(self, input_shape):
        if len(input_shape) != self.rank + 1 or input_shape[-1] is None:
            raise InputSpecError(f"{self.name}: {type(self).__name__} expects inputs of rank {self.rank + 2} with "
                                 f"known channels (channels last). Received input shape {_shape_str(input_shape)}")
        self.kernel = self.add_weight(shape=self.kernel_size + (self.filters, int(input_shape[-1])),
                                      initializer=self.kernel_initializer, name="kernel")
        if self.use_bias:
            self.bias = self.add_weight(shape=(self.filters,), initializer=self.bias_initializer, name="bias")
        super().build(input_shape)

    def _geometry(self, spatial):
        ops_ = self.output_padding or (None,) * self.rank
        return [_transpose_geometry(n, k, s, d, self.padding, o) for n, k, s, d, o in
                zip(spatial, self.kernel_size, self.strides, self.dilation_rate, ops_)]

    def compute_output_shape(self, input_shape):
        sp = tuple(input_shape[:-1])
        if len(sp) != self.rank:
            raise InputSpecError(f"{type(self).__name__} expects rank-{self.rank + 2} inputs. Received "
                                 f"{_shape_str(input_shape)}")
        out = [None if n is None else g[1] for n, g in zip(sp, self._geometry([n or 1 for n in sp]))]
        return tuple(out) + (self.filters,)

    def call(self, inputs, training=None):
        r = self.rank
        w = F.transpose(self.kernel, (r + 1, r) + tuple(range(r)))  # (k, filters, in) -> (in, filters, k)
        sp = np.shape(getattr(inputs, "value", inputs))[1:-1]
        full = [(n - 1) * s + (k - 1) * d + 1 for n, s, k, d in zip(sp, self.strides, self.kernel_size,
                                                                      self.dilation_rate)]
        geo = self._geometry(sp)
        extra = [max(0, start + length - f) for (start, length), f in zip(geo, full)]
        # bias and ReLU inside the product, unless Keras's output reaches past its last row
        # (zeros there, then the bias)
        inner = not any(extra)
        relu = self.activation is _layers._acts.relu and inner
        y = F.conv_transpose(inputs, w, self.strides, self.dilation_rate, self.bias if self.use_bias and inner else
                             None, "relu" if relu else None)
        if any(extra):
            y = F.pad(y, [(0, 0)] + [(0, e) for e in extra] + [(0, 0)])
        if any(start or length != f for (start, length), f in zip(geo, full)):
            y = F.getitem(y, (slice(None),) + tuple(slice(st, st + ln) for st, ln in geo) + (slice(None),))
        if self.use_bias and not inner:
            y = F.add(y, self.bias)
        return y if relu else _layers._apply_act(self.activation, y)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding,
                "output_padding": None if self.output_padding is None else list(self.output_padding),
                "data_format": self.data_format, "dilation_rate": list(self.dilation_rate),
                "activation": self.activation.name, "use_bias": self.use_bias,
                "kernel_initializer": _layers._init_name(self.kernel_initializer),
                "bias_initializer": _layers._init_name(self.bias_initializer)}


class Conv2DTranspose(_ConvTranspose):
    """2-D transposed convolution: (batch, rows, cols, channels) -> (batch, rows', cols', filters)."""
    rank = 2


class Conv1DTranspose(_ConvTranspose):
    """1-D transposed convolution: (batch, steps, channels) -> (batch, steps', filters)."""
    rank = 1


class DepthwiseConv2D(Layer):
    """Keras's DepthwiseConv2D, channels last: each input channel convolved with its own
    ``depth_multiplier`` kernels (output channel c * depth_multiplier + m), as a grouped conv
    on the tape (pyaiml.ops.conv2d with groups = channels). The kernel is stored as Keras
    stores it, (kh, kw, channels, depth_multiplier)."""

    def __init__(self, kernel_size, strides=(1, 1), padding="valid", depth_multiplier=1, data_format=None,
                 dilation_rate=(1, 1), activation=None, use_bias=True, depthwise_initializer="glorot_uniform",
                 bias_initializer="zeros", **kw):
        super().__init__(**kw)
        cname = type(self).__name__
        _, self.kernel_size, self.strides, self.dilation_rate = _layers.conv_args(
            cname, 2, 1, kernel_size, strides, dilation_rate)
        if not isinstance(depth_multiplier, (int, np.integer)) or depth_multiplier < 1:
            raise ValueError(f"{cname}: depth_multiplier must be a positive integer. Received {depth_multiplier!r}")
        self.depth_multiplier = int(depth_multiplier)
        self.padding = _conv_padding(cname, padding)
        if (data_format or "channels_last") != "channels_last":
            raise ValueError(f"{cname}: only data_format='channels_last' is supported. Received {data_format!r}")
        self.data_format = "channels_last"
        self.activation = _layers._acts.get(activation)
        self.use_bias = bool(use_bias)
        self.depthwise_initializer, self.bias_initializer = depthwise_initializer, bias_initializer

    def _channels(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise InputSpecError(f"{self.name}: {type(self).__name__} expects inputs of rank 4 with known channels "
                                 f"(batch, rows, cols, channels). Received input shape {_shape_str(input_shape)}")
        return int(input_shape[-1])

    def build(self, input_shape):
        c = self._channels(input_shape)
        self.depthwise_kernel = self.add_weight(shape=self.kernel_size + (c, self.depth_multiplier),
                                                initializer=self.depthwise_initializer, name="depthwise_kernel")
        if self.use_bias:
            self.bias = self.add_weight(shape=(c * self.depth_multiplier,), initializer=self.bias_initializer,
                                        name="bias")
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        c = self._channels(input_shape)
        return _conv_out(input_shape[:2], self.kernel_size, self.strides, self.dilation_rate, self.padding) + (
            c * self.depth_multiplier,)

    def _depthwise(self, inputs):
        c = int(self.depthwise_kernel.value.shape[2])
        w = F.reshape(F.transpose(self.depthwise_kernel, (2, 3, 0, 1)), (c * self.depth_multiplier, 1) +
                      self.kernel_size)  # (kh, kw, C, m) -> OIHW (C m, 1, kh, kw)
        return _conv_same(inputs, w, None, self.strides, self.dilation_rate, self.padding, c)

    def call(self, inputs, training=None):
        y = self._depthwise(inputs)
        if self.use_bias:
            y = F.add(y, self.bias)
        return _layers._apply_act(self.activation, y)

    def get_config(self):
        return {**super().get_config(), "kernel_size": list(self.kernel_size), "strides": list(self.strides),
                "padding": self.padding, "depth_multiplier": self.depth_multiplier,
                "data_format": self.data_format, "dilation_rate": list(self.dilation_rate),
                "activation": self.activation.name, "use_bias": self.use_bias,
                "depthwise_initializer": _layers._init_name(self.depthwise_initializer),
                "bias_initializer": _layers._init_name(self.bias_initializer)}


class SeparableConv2D(DepthwiseConv2D):
    """Keras's SeparableConv2D: a depthwise conv (``depth_multiplier`` kernels per channel),
    then a 1x1 conv to ``filters`` channels, then the bias and the activation. Kernels as Keras
    stores them: depthwise (kh, kw, channels, multiplier), pointwise (1, 1, channels *
    multiplier, filters)."""

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), depth_multiplier=1, activation=None, use_bias=True,
                 depthwise_initializer="glorot_uniform", pointwise_initializer="glorot_uniform",
                 bias_initializer="zeros", **kw):
        super().__init__(kernel_size, strides, padding, depth_multiplier, data_format, dilation_rate, activation,
                         use_bias, depthwise_initializer, bias_initializer, **kw)
        self.filters = _layers.conv_args(type(self).__name__, 2, filters, 1, 1, 1)[0]
        self.pointwise_initializer = pointwise_initializer

    def build(self, input_shape):
        c = self._channels(input_shape)
        self.depthwise_kernel = self.add_weight(shape=self.kernel_size + (c, self.depth_multiplier),
                                                initializer=self.depthwise_initializer, name="depthwise_kernel")
        self.pointwise_kernel = self.add_weight(shape=(1, 1, c * self.depth_multiplier, self.filters),
                                                initializer=self.pointwise_initializer, name="pointwise_kernel")
        if self.use_bias:
            self.bias = self.add_weight(shape=(self.filters,), initializer=self.bias_initializer, name="bias")
        Layer.build(self, input_shape)

    def compute_output_shape(self, input_shape):
        self._channels(input_shape)
        return _conv_out(input_shape[:2], self.kernel_size, self.strides, self.dilation_rate, self.padding) + (
            self.filters,)

    def call(self, inputs, training=None):
        y = self._depthwise(inputs)
        pw = F.transpose(self.pointwise_kernel, (3, 2, 0, 1))  # (1, 1, C m, filters) -> (filters, C m, 1, 1)
        relu = self.activation is _layers._acts.relu
        y = F.conv(y, pw, self.bias if self.use_bias else None, 1, 0, 1, 1, "NHWC",
                   activation="relu" if relu else None)
        return y if relu else _layers._apply_act(self.activation, y)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "pointwise_initializer": _layers._init_name(self.pointwise_initializer)}


def _conv_padding(cname, padding):
    pad = padding.lower() if isinstance(padding, str) else padding
    if pad not in ("valid", "same"):
        raise ValueError(f"{cname}: padding must be 'valid' or 'same'. Received {padding!r}")
    return pad


def _conv_out(spatial, ks, st, dl, padding):
    out = []
    for n, k, s, d in zip(spatial, ks, st, dl):
        if n is None:
            out.append(None)
        elif padding == "same":
            out.append(-(-n // s))
        else:
            o = (n - d * (k - 1) - 1) // s + 1
            if o < 1:
                raise InputSpecError(f"input size {n} is smaller than the (dilated) kernel {d * (k - 1) + 1}")
            out.append(o)
    return tuple(out)


def _conv_same(x, w, bias, strides, dilation, padding, groups):
    """F.conv with Keras's padding: 'same' splits the total padding with the extra at the end;
    an even split goes to the kernel, an uneven one is an explicit pad first."""
    pads = [(0, 0)] * 2
    if padding == "same":
        sp = np.shape(getattr(x, "value", x))[1:3]
        pads = [_layers._same_pads(n, k, s, d) for n, k, s, d in zip(sp, np.shape(_v(w))[2:], strides, dilation)]
    if all(lo == hi for lo, hi in pads):
        return F.conv(x, w, bias, tuple(strides), tuple(lo for lo, _ in pads), tuple(dilation), groups, "NHWC")
    x = F.pad(x, [(0, 0)] + list(pads) + [(0, 0)])
    return F.conv(x, w, bias, tuple(strides), 0, tuple(dilation), groups, "NHWC")


class Masking(Layer):
    """Keras's Masking: a timestep whose features all equal ``mask_value`` is masked for the
    layers after it that take masks (LSTM, GRU, SimpleRNN, GlobalAveragePooling1D,
    MultiHeadAttention), and its values are zeroed (inputs * mask)."""
    supports_masking = True

    def __init__(self, mask_value=0.0, **kw):
        super().__init__(**kw)
        if not isinstance(mask_value, (int, float, np.integer, np.floating)):
            raise TypeError(f"Masking: mask_value must be a number. Received {mask_value!r}")
        self.mask_value = float(mask_value)
        self._keep = None

    def call(self, inputs, training=None):
        xv = np.asarray(getattr(inputs, "value", inputs))
        if xv.ndim < 2:
            raise ValueError(f"{self.name}: Masking expects inputs of rank >= 2 (batch, ..., features). Received "
                             f"shape {xv.shape}")
        self._keep = np.any(xv != xv.dtype.type(self.mask_value), axis=-1)
        return F.multiply(inputs, self._keep[..., None].astype(xv.dtype))

    def compute_mask(self, mask):
        return self._keep

    def get_config(self):
        return {**super().get_config(), "mask_value": self.mask_value}


def _pairs(name, v, r):
    """An int, r ints, or r (before, after) pairs of non-negative ints -> r pairs."""
    try:
        if isinstance(v, (int, np.integer)):
            p = ((int(v),) * 2,) * r
        elif all(isinstance(a, (int, np.integer)) for a in v):
            p = tuple((int(a), int(a)) for a in v) if r > 1 else (tuple(int(a) for a in v),)
        else:
            p = tuple(tuple(int(a) for a in pair) for pair in v)
        ok = len(p) == r and all(len(pair) == 2 and min(pair) >= 0 for pair in p)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{name}: expected an int, {r} ints or {r} (before, after) pairs of non-negative ints. "
                         f"Received {v!r}")
    return p


class ZeroPadding1D(Layer):
    """Zeros before and after the steps: ``padding`` an int or (before, after)."""

    def __init__(self, padding=1, **kw):
        super().__init__(**kw)
        self.padding = _pairs("ZeroPadding1D", padding, 1)[0]

    def compute_output_shape(self, s):
        _need_rank(self, s, 2)
        return (None if s[0] is None else s[0] + sum(self.padding), s[1])

    def call(self, inputs, training=None):
        return F.pad(inputs, [(0, 0), self.padding, (0, 0)])

    def get_config(self):
        return {**super().get_config(), "padding": list(self.padding)}


class _Cropping(Layer):
    """Drop (before, after) rows along each spatial axis, channels last."""
    rank = 1

    def __init__(self, cropping=1, data_format=None, **kw):
        super().__init__(**kw)
        self.cropping = _pairs(type(self).__name__, cropping, self.rank)
        if (data_format or "channels_last") != "channels_last":
            raise ValueError(f"{type(self).__name__}: only data_format='channels_last' is supported. Received "
                             f"{data_format!r}")

    def compute_output_shape(self, s):
        _need_rank(self, s, self.rank + 1)
        out = []
        for d, (lo, hi) in zip(s[:-1], self.cropping):
            if d is not None and d - lo - hi < 1:
                raise InputSpecError(f"{self.name}: cropping {self.cropping} leaves nothing of an axis of {d}")
            out.append(None if d is None else d - lo - hi)
        return tuple(out) + (s[-1],)

    def call(self, inputs, training=None):
        sp = np.shape(getattr(inputs, "value", inputs))[1:-1]
        for d, (lo, hi) in zip(sp, self.cropping):
            if d - lo - hi < 1:
                raise ValueError(f"{self.name}: cropping {self.cropping} leaves nothing of an axis of {d}")
        idx = (slice(None),) + tuple(slice(lo, d - hi) for d, (lo, hi) in zip(sp, self.cropping)) + (slice(None),)
        return F.getitem(inputs, idx)

    def get_config(self):
        c = list(self.cropping[0]) if self.rank == 1 else [list(p) for p in self.cropping]
        return {**super().get_config(), "cropping": c}


class Cropping1D(_Cropping):
    rank = 1


class Cropping2D(_Cropping):
    rank = 2


class UpSampling1D(Layer):
    """Repeat each step ``size`` times."""

    def __init__(self, size=2, **kw):
        super().__init__(**kw)
        if not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"UpSampling1D: size must be a positive integer. Received {size!r}")
        self.size = int(size)

    def compute_output_shape(self, s):
        _need_rank(self, s, 2)
        return (None if s[0] is None else s[0] * self.size, s[1])

    def call(self, inputs, training=None):
        return F.repeat(inputs, self.size, 1)

    def get_config(self):
        return {**super().get_config(), "size": self.size}


class SpatialDropout1D(_layers.Dropout):
    """Dropout of whole channels (the same channels dropped at every step of a sample)."""
    _rank = 1

    def __init__(self, rate, seed=None, **kw):
        super().__init__(rate, None, seed, **kw)

    def call(self, inputs, training=None):
        if not training or self.rate == 0:
            return inputs
        shape = np.shape(getattr(inputs, "value", inputs))
        if len(shape) != self._rank + 2:
            raise ValueError(f"{self.name}: {type(self).__name__} expects inputs of rank {self._rank + 2}. "
                             f"Received shape {tuple(shape)}")
        ns = (shape[0],) + (1,) * self._rank + (shape[-1],)
        return F.dropout(inputs, self.rate, self._rng if self._rng is not None else _layers.rng(), ns)

    def get_config(self):
        cfg = super().get_config()
        cfg.pop("noise_shape", None)
        return cfg


class SpatialDropout2D(SpatialDropout1D):
    _rank = 2


class GaussianNoise(Layer):
    """Adds N(0, stddev^2) noise in training; the identity otherwise."""
    supports_masking = True

    def __init__(self, stddev, seed=None, **kw):
        super().__init__(**kw)
        if float(stddev) < 0:
            raise ValueError(f"GaussianNoise: stddev must be >= 0. Received {stddev!r}")
        self.stddev, self.seed = float(stddev), seed
        self._rng = np.random.default_rng(seed) if seed is not None else None

    def call(self, inputs, training=None):
        if not training or self.stddev == 0:
            return inputs
        xv = np.asarray(getattr(inputs, "value", inputs))
        r = self._rng if self._rng is not None else _layers.rng()
        return F.add(inputs, (r.standard_normal(xv.shape) * self.stddev).astype(xv.dtype))

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev, "seed": self.seed}


class GaussianDropout(Layer):
    """Multiplies by N(1, rate / (1 - rate)) noise in training; the identity otherwise."""
    supports_masking = True

    def __init__(self, rate, seed=None, **kw):
        super().__init__(**kw)
        if not 0 <= float(rate) < 1:
            raise ValueError(f"GaussianDropout: rate must be in [0, 1). Received {rate!r}")
        self.rate, self.seed = float(rate), seed
        self._rng = np.random.default_rng(seed) if seed is not None else None

    def call(self, inputs, training=None):
        if not training or self.rate == 0:
            return inputs
        xv = np.asarray(getattr(inputs, "value", inputs))
        r = self._rng if self._rng is not None else _layers.rng()
        sd = np.sqrt(self.rate / (1.0 - self.rate))
        return F.multiply(inputs, (1.0 + r.standard_normal(xv.shape) * sd).astype(xv.dtype))

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


class UnitNormalization(Layer):
    """x / ||x||_2 along ``axis`` (the last by default; 1e-12 floor on the norm)."""
    supports_masking = True

    def __init__(self, axis=-1, **kw):
        super().__init__(**kw)
        self.axis = [int(a) for a in axis] if isinstance(axis, (list, tuple)) else int(axis)

    def call(self, inputs, training=None):
        ax = tuple(self.axis) if isinstance(self.axis, list) else self.axis
        n = F.sqrt(F.sum(F.square(inputs), ax, True))
        return F.divide(inputs, F.maximum(n, 1e-12))

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


class GroupNormalization(Layer):
    """Keras's GroupNormalization, channels last: the channels split into ``groups`` groups,
    each normalised over its channels and every non-batch position (mean, biased variance,
    ``epsilon``), then per-channel ``gamma`` and ``beta``."""

    def __init__(self, groups=32, axis=-1, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", **kw):
        super().__init__(**kw)
        if axis not in (-1,):
            raise ValueError(f"GroupNormalization: only axis=-1 (channels last) is supported. Received {axis!r}")
        if not isinstance(groups, (int, np.integer)) or groups < 1:
            raise ValueError(f"GroupNormalization: groups must be a positive integer. Received {groups!r}")
        self.groups, self.axis, self.epsilon = int(groups), -1, float(epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer, self.gamma_initializer = beta_initializer, gamma_initializer

    def build(self, input_shape):
        c = input_shape[-1] if input_shape else None
        if c is None or c % self.groups:
            raise InputSpecError(f"{self.name}: GroupNormalization needs channels ({c}) divisible by groups="
                                 f"{self.groups}. Received input shape {_shape_str(input_shape)}")
        if self.scale:
            self.gamma = self.add_weight(shape=(c,), initializer=self.gamma_initializer, name="gamma")
        if self.center:
            self.beta = self.add_weight(shape=(c,), initializer=self.beta_initializer, name="beta")
        super().build(input_shape)

    def call(self, inputs, training=None):
        shape = np.shape(getattr(inputs, "value", inputs))
        g = self.groups
        x = F.reshape(inputs, shape[:-1] + (g, shape[-1] // g))
        axes = tuple(range(1, len(shape) - 1)) + (len(shape),)  # positions and the group's channels
        mu = F.mean(x, axes, True)
        xc = F.subtract(x, mu)
        var = F.mean(F.square(xc), axes, True)
        y = F.reshape(F.divide(xc, F.sqrt(F.add(var, self.epsilon))), shape)
        if self.scale:
            y = F.multiply(y, self.gamma)
        if self.center:
            y = F.add(y, self.beta)
        return y

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "axis": self.axis, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale,
                "beta_initializer": _layers._init_name(self.beta_initializer),
                "gamma_initializer": _layers._init_name(self.gamma_initializer)}


class Resizing(Layer):
    """Keras's Resizing, channels last: images (batch, rows, cols, channels) to (height, width),
    "bilinear" (half-pixel centres, no antialiasing: TensorFlow's and torch's
    align_corners=False) or "nearest" (half-pixel centres, TensorFlow's). On the tape (gathers
    and weighted sums), so it has gradients."""

    def __init__(self, height, width, interpolation="bilinear", crop_to_aspect_ratio=False, data_format=None, **kw):
        super().__init__(**kw)
        for n, v in (("height", height), ("width", width)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"Resizing: {n} must be a positive integer. Received {v!r}")
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"Resizing: interpolation must be 'bilinear' or 'nearest'. Received {interpolation!r}")
        self.crop_to_aspect_ratio = bool(crop_to_aspect_ratio)
        if (data_format or "channels_last") != "channels_last":
            raise ValueError(f"Resizing: only data_format='channels_last' is supported. Received {data_format!r}")
        self.height, self.width, self.interpolation = int(height), int(width), interpolation

    def compute_output_shape(self, s):
        _need_rank(self, s, 3)
        return (self.height, self.width, s[-1])

    def _resize_axis(self, x, axis, n_out):
        n_in = np.shape(getattr(x, "value", x))[axis]
        if n_in == n_out:
            return x
        scale = n_in / n_out
        dst = np.arange(n_out, dtype=np.float64)
        if self.interpolation == "nearest":
            idx = np.minimum(np.floor((dst + 0.5) * scale).astype(np.int64), n_in - 1)
            return F.take(x, idx, axis)
        src = np.maximum((dst + 0.5) * scale - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        dt = np.asarray(getattr(x, "value", x)).dtype
        shape = [1] * np.ndim(getattr(x, "value", x))
        shape[axis] = n_out
        w = (src - i0).astype(dt).reshape(shape)
        return F.add(F.multiply(F.take(x, i0, axis), 1 - w), F.multiply(F.take(x, i1, axis), w))

    def call(self, inputs, training=None):
        nd = np.ndim(getattr(inputs, "value", inputs))
        if nd != 4:
            raise ValueError(f"{self.name}: {type(self).__name__} expects images (batch, rows, cols, channels). "
                             f"Received rank {nd}")
        if self.crop_to_aspect_ratio:
            inputs = _aspect_crop(inputs, self.height, self.width)
        return self._resize_axis(self._resize_axis(inputs, 1, self.height), 2, self.width)

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width,
                "interpolation": self.interpolation, "crop_to_aspect_ratio": self.crop_to_aspect_ratio}


def _aspect_crop(x, th, tw):
    """The largest centred crop with the aspect ratio th : tw (Keras's smart_resize rule:
    crop sizes truncated, at least 1; start (size - crop) / 2 truncated)."""
    h, w = np.shape(getattr(x, "value", x))[1:3]
    ch = max(min(h, int(float(w * th) / tw)), 1)
    cw = max(min(w, int(float(h * tw) / th)), 1)
    hs, ws = int(float(h - ch) / 2), int(float(w - cw) / 2)
    if (ch, cw) == (h, w):
        return x
    return F.getitem(x, (slice(None), slice(hs, hs + ch), slice(ws, ws + cw), slice(None)))


class CenterCrop(Resizing):
    """Keras's CenterCrop: the central (height, width) window, starting at (size - target) // 2;
    an image smaller than the target on either side is cropped to the target's aspect ratio and
    resized to it (bilinear), as Keras does."""

    def __init__(self, height, width, data_format=None, **kw):
        super().__init__(height, width, "bilinear", False, data_format, **kw)

    def call(self, inputs, training=None):
        nd = np.ndim(getattr(inputs, "value", inputs))
        if nd != 4:
            raise ValueError(f"{self.name}: CenterCrop expects images (batch, rows, cols, channels). Received rank "
                             f"{nd}")
        h, w = np.shape(getattr(inputs, "value", inputs))[1:3]
        if h >= self.height and w >= self.width:
            hs, ws = (h - self.height) // 2, (w - self.width) // 2
            return F.getitem(inputs, (slice(None), slice(hs, hs + self.height), slice(ws, ws + self.width),
                                      slice(None)))
        x = _aspect_crop(inputs, self.height, self.width)
        return self._resize_axis(self._resize_axis(x, 1, self.height), 2, self.width)

    def get_config(self):
        cfg = super().get_config()
        for k in ("interpolation", "crop_to_aspect_ratio"):
            cfg.pop(k)
        return cfg


class Lambda(Layer):
    """Keras's Lambda: ``function(inputs, **arguments)`` as a layer, written with keras.ops (or
    any tape op), so it trains on the tape. ``output_shape``: a shape without the batch axis, or
    a function of the input shape (with it); by default the output shape comes from running
    ``function`` once on zeros. Saving needs the function registered with
    ``@keras.saving.register_keras_serializable()`` (a model file holds no code): an
    unregistered function (a lambda) is a ValueError naming the layer at ``save``."""

    def __init__(self, function, output_shape=None, mask=None, arguments=None, **kw):
        super().__init__(**kw)
        if not callable(function):
            raise TypeError(f"{self.name}: Lambda needs a callable. Received {type(function).__name__}")
        if mask is not None:
            raise ValueError(f"{self.name}: Lambda(mask=...) is not supported (the output carries no mask)")
        self.function = function
        self.arguments = dict(arguments or {})
        self._output_shape_arg = output_shape

    def call(self, inputs, training=None):
        return self.function(inputs, **self.arguments)

    def compute_output_shape(self, input_shape):
        out = self._output_shape_arg
        if callable(out):
            return tuple(out((None,) + tuple(input_shape)))[1:]
        if out is not None:
            return tuple(out)
        from pyaiml.autograd.tape import paused
        from pyaiml.keras._common import placeholder_run
        from pyaiml.ops import _validate

        def zeros(shape):  # one sample; several inputs come as a list of shapes
            if isinstance(shape, list) or (shape and isinstance(shape[0], (tuple, list))):
                return [zeros(t) for t in shape]
            return np.zeros((1,) + tuple(1 if d is None else d for d in shape), np.float32)

        with paused(), _validate.finite_checks(False), placeholder_run():
            y = self.call(zeros(input_shape))
        return tuple(np.shape(getattr(y, "value", y)))[1:]

    def get_config(self):
        key = getattr(self.function, "_registered_name", None)
        if key is None:
            raise ValueError(f"{self.name}: a Lambda layer's function ({getattr(self.function, '__name__', '?')}) "
                             "cannot be saved: a model file holds no code. Register it with "
                             "@keras.saving.register_keras_serializable(), or write the layer as a Layer subclass")
        out = self._output_shape_arg
        if callable(out):
            raise ValueError(  # noqa: TRY004 (the value is fine; saving it is refused)
                f"{self.name}: a Lambda's output_shape function cannot be saved; give a shape")
        return {**super().get_config(), "function": key, "arguments": self.arguments,
                "output_shape": None if out is None else list(out)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from pyaiml.keras.serialization import get_registered_object

        cfg = dict(config)
        name = cfg.pop("function")
        fn = get_registered_object(name, custom_objects)
        if fn is None:
            raise ValueError(f"load_model: Lambda layer {cfg.get('name')!r} calls function {name!r}, which is not "
                             "registered: decorate it with @keras.saving.register_keras_serializable() (or pass "
                             f"custom_objects={{{name!r}: function}}) in the program that loads the model")
        if cfg.get("output_shape") is not None:
            cfg["output_shape"] = tuple(cfg["output_shape"])
        return cls(fn, **cfg)


CLASSES = (Permute, RepeatVector, GlobalMaxPooling1D, GlobalMaxPooling2D, AveragePooling1D, AveragePooling2D,
           ZeroPadding2D, UpSampling2D, Rescaling, Lambda, ReLU, LeakyReLU, ELU, Softmax, PReLU, Identity,
           Conv1DTranspose, Conv2DTranspose, DepthwiseConv2D, SeparableConv2D, Masking, ZeroPadding1D, Cropping1D,
           Cropping2D, UpSampling1D, SpatialDropout1D, SpatialDropout2D, GaussianNoise, GaussianDropout,
           UnitNormalization, GroupNormalization, Resizing, CenterCrop)
for _c in CLASSES:
    _layers._LAYERS[_c.__name__] = _c
