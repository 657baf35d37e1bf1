"""The one place where pyaiml.torch calls kernels: NumPy arrays in, NumPy arrays out.

Every op in pyaiml/torch/ops.py reaches its kernel through a function of this module, each a
plain call of the public ``pyaiml.ops.<name>`` (which picks the C++ / Numba / NumPy backend).
Tests replace a function here to spy on what the bridge passes to its kernel.

HMM: ``hmm_forward_backward`` / ``hmm_grads`` take log-probabilities (not necessarily
normalised: gradcheck perturbs them) and call the registry op ``hmm_forward_backward`` of
``pyaiml.ops.hmm`` (through ``fb_checked``: the public wrapper would reject unnormalised
probabilities) with its log-space recursions. That op takes probabilities, so the inputs are
shifted by their maximum before ``exp`` and the shift is added back to the log-likelihood:
the likelihood is homogeneous in pi (degree 1) and in A (degree T - 1), and posteriors and
expected transition counts do not change.

This is not a public API. Tests: tests/test_torch_bridge*.py.
"""
from __future__ import annotations

import numpy as np

import pyaiml.ops as ops
from pyaiml.ops import hmm as _hmm


def kernel_source() -> dict:
    """op name -> where its kernel comes from (every op: pyaiml.ops)."""
    names = ("conv2d", "conv2d_backward", "conv1d", "conv1d_backward", "max_pool2d", "max_pool2d_backward",
             "max_pool1d", "max_pool1d_backward", "max_pool2d_values", "max_pool1d_values",
             "scaled_dot_product_attention",
             "scaled_dot_product_attention_backward", "scaled_dot_product_attention_dropout",
             "scaled_dot_product_attention_dropout_backward", "hmm_forward_backward")
    return {n: "pyaiml.ops" for n in names}


# --------------------------------------------------------------------------- convolution

def conv2d(x, weight, bias, stride, padding, dilation, groups, data_format):
    return ops.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups,
                      data_format=data_format)


def conv2d_backward(grad_out, x, weight, stride, padding, dilation, groups, data_format, needs_bias_grad,
                    needs_input_grad=True):
    return ops.conv2d_backward(grad_out, x, weight, stride=stride, padding=padding, dilation=dilation, groups=groups,
                               data_format=data_format,
                               output_mask=(bool(needs_input_grad), True, bool(needs_bias_grad)))


def conv1d(x, weight, bias, stride, padding, dilation, groups, data_format):
    return ops.conv1d(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups,
                      data_format=data_format)


def conv1d_backward(grad_out, x, weight, stride, padding, dilation, groups, data_format, needs_bias_grad,
                    needs_input_grad=True):
    return ops.conv1d_backward(grad_out, x, weight, stride=stride, padding=padding, dilation=dilation, groups=groups,
                               data_format=data_format,
                               output_mask=(bool(needs_input_grad), True, bool(needs_bias_grad)))


# --------------------------------------------------------------------------- max pooling
# Indices are flat positions h * W + w (1-D: l) in the unpadded input plane, laid out like y.

def max_pool2d(x, kernel_size, stride, padding, data_format):
    """-> (y, int64 indices h * W + w), both laid out like y."""
    return ops.max_pool2d(x, kernel_size, stride=stride, padding=padding, data_format=data_format,
                          return_indices=True)


def max_pool2d_values(x, kernel_size, stride, padding, data_format):
    """-> y only (no indices written): inference calls that no graph will differentiate."""
    return ops.max_pool2d(x, kernel_size, stride=stride, padding=padding, data_format=data_format)


def max_pool1d_values(x, kernel_size, stride, padding, data_format):
    return ops.max_pool1d(x, kernel_size, stride=stride, padding=padding, data_format=data_format)


def max_pool2d_backward(grad_out, x, kernel_size, stride, padding, data_format, indices):
    return ops.max_pool2d_backward(grad_out, x, kernel_size, stride=stride, padding=padding, data_format=data_format,
                                   indices=indices)


def max_pool1d(x, kernel_size, stride, padding, data_format):
    """-> (y, int64 indices into L), both laid out like y."""
    return ops.max_pool1d(x, kernel_size, stride=stride, padding=padding, data_format=data_format,
                          return_indices=True)


def max_pool1d_backward(grad_out, x, kernel_size, stride, padding, data_format, indices):
    return ops.max_pool1d_backward(grad_out, x, kernel_size, stride=stride, padding=padding, data_format=data_format,
                                   indices=indices)


# --------------------------------------------------------------------------- attention

def scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale, enable_gqa):
    """-> (out like q with v's last dim, lse (..., L) float32)."""
    return ops.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=0.0, is_causal=is_causal,
                                            scale=scale, enable_gqa=enable_gqa, return_lse=True)


def scaled_dot_product_attention_backward(grad_out, q, k, v, attn_mask, is_causal, scale, enable_gqa, out, lse):
    return ops.scaled_dot_product_attention_backward(grad_out, q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                                     scale=scale, enable_gqa=enable_gqa, out=out, lse=lse)


def scaled_dot_product_attention_dropout(q, k, v, attn_mask, is_causal, scale, enable_gqa, dropout_p, seed):
    """-> out like q with v's last dim; dropout mask from ``seed`` (pyaiml.ops.attention)."""
    return ops.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                                            scale=scale, enable_gqa=enable_gqa, dropout_seed=seed)


def scaled_dot_product_attention_dropout_backward(grad_out, q, k, v, attn_mask, is_causal, scale, enable_gqa,
                                                  dropout_p, seed):
    return ops.scaled_dot_product_attention_backward(grad_out, q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                                     scale=scale, enable_gqa=enable_gqa, dropout_p=dropout_p,
                                                     dropout_seed=seed)


# --------------------------------------------------------------------------- HMM
# One sequence: K states, T steps. log_startprob (K,), log_transmat (K, K), log_emission (T, K).

def _shifted_exp(a):
    """exp(a - m) and m = max of the finite entries (0 when there are none)."""
    fin = a[np.isfinite(a)]
    m = float(fin.max()) if fin.size else 0.0
    with np.errstate(under="ignore"):
        return np.exp(a - m), m


def _fb(log_startprob, log_transmat, log_emission, xi):
    ls, lA, lB = (np.ascontiguousarray(a, dtype=np.float64) for a in (log_startprob, log_transmat, log_emission))
    T = lB.shape[0]
    pi, ms = _shifted_exp(ls)
    A, mA = _shifted_exp(lA)
    off = np.array([0, T], dtype=np.int64)
    lp, post, x, _, _ = _hmm.fb_checked(pi, A, lB, off, True, True, xi)
    ll = float(lp[0])
    if np.isfinite(ll):
        ll += ms + (T - 1) * mA
    return ll, post, x


def hmm_forward_backward(log_startprob, log_transmat, log_emission):
    """-> (log-likelihood float64 scalar, posteriors (T, K) float64; NaN where logL = -inf)."""
    ll, post, _ = _fb(log_startprob, log_transmat, log_emission, False)
    return ll, post


def hmm_grads(log_startprob, log_transmat, log_emission):
    """d logL / d inputs: (gamma_0 (K,), sum_t xi_t (K, K), gamma (T, K)), float64."""
    _, gamma, xi = _fb(log_startprob, log_transmat, log_emission, True)
    return gamma[0].copy(), xi, gamma
