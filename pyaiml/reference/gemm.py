"""NumPy references for the ``gemm``, ``linear_q8``, ``linear_q8_packed``,
``linear_w8a8_packed`` and ``linear_f32_packed`` ops (float64 accumulation)."""
from __future__ import annotations

import numpy as np


def gemm(a3, b3, bias=None, relu=False):
    """a3 (Bt, M, K) @ b3 (Bt, K, N) [+ bias (N,)] [relu] -> (Bt, M, N) in a3's dtype."""
    c = np.matmul(a3.astype(np.float64), b3.astype(np.float64))
    if bias is not None:
        c += bias
    if relu:
        np.maximum(c, 0.0, out=c)
    return c.astype(a3.dtype)


def _unpanel(p, n):
    """(rows, n) from panels of 64 columns (panels, rows, 64), as pyaiml.llm lays them out."""
    P, rows, W = p.shape
    return p.transpose(1, 0, 2).reshape(rows, P * W)[:, :n]


def linear_q8(x2, q, scale, bias=None):
    """x2 (M, K) @ (q * scale per 32 rows) [+ bias] in float64, returned as float32."""
    K, N = q.shape
    w = (q.reshape(K // 32, 32, N).astype(np.float64) * scale.astype(np.float64)[:, None, :]).reshape(K, N)
    y = x2.astype(np.float64) @ w
    if bias is not None:
        y += bias
    return y.astype(np.float32)


def linear_q8_packed(x2, qp, sp, n, bias=None):
    """linear_q8 with q and scale packed in panels of 64 columns (pyaiml.llm.quant.pack_q8)."""
    return linear_q8(x2, _unpanel(qp, n), _unpanel(sp, n), bias)


def linear_f32_packed(x2, wp, n, bias=None):
    """x2 (M, K) @ W [+ bias] with W packed in panels of 64 columns (pyaiml.llm.layers.to_panels)."""
    y = x2.astype(np.float64) @ _unpanel(wp, n).astype(np.float64)
    if bias is not None:
        y += bias
    return y.astype(np.float32)


def quantize_rows_q8(x2):
    """(xq, xs): each row of x2 (M, K) quantized per block of 32 as the W8A8 kernels do:
    xs = amax / 127 and xq = rint(x * (127 / amax)) in [-127, 127] (0 where amax is 0), in
    float32 arithmetic; a block with NaN or inf gets xq 0 and xs NaN. xq (M, K/32, 32) float32
    holding integers, xs (M, K/32) float32."""
    M, K = x2.shape
    xb = np.asarray(x2, np.float32).reshape(M, K // 32, 32)
    finite = np.isfinite(xb).all(axis=2)
    amax = np.where(finite, np.abs(np.where(np.isfinite(xb), xb, 0)).max(axis=2), 0).astype(np.float32)
    inv = np.zeros_like(amax)
    np.divide(np.float32(127), amax, out=inv, where=amax > 0)
    xq = np.clip(np.rint(np.where(finite[:, :, None], xb, 0) * inv[:, :, None]), -127, 127)
    # a block holding NaN or inf: xq 0 and xs NaN, so its row's products are NaN
    return xq, np.where(finite, amax / np.float32(127), np.float32(np.nan)).astype(np.float32)


def linear_w8a8_packed(x2, qp, sp, n, bias=None):
    """linear_q8_packed with x quantized per row and 32-block (quantize_rows_q8): the block sums
    exact, then scaled by scale x xs and added in float64."""
    K = qp.shape[1]
    q = _unpanel(qp, n).astype(np.float64).reshape(K // 32, 32, n)
    scale = _unpanel(sp, n).astype(np.float64)
    xq, xs = quantize_rows_q8(x2)
    isum = np.einsum("mbk,bkn->mbn", xq.astype(np.float64), q)
    y = (isum * (scale[None] * xs.astype(np.float64)[:, :, None])).sum(axis=1)
    if bias is not None:
        y += bias
    return y.astype(np.float32)
