"""NumPy references for the ``gemm``, ``linear_q8``, ``linear_q8_packed`` and
``linear_f32_packed`` ops (float64 accumulation)."""
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
    P, K, W = qp.shape
    q = qp.transpose(1, 0, 2).reshape(K, P * W)[:, :n]
    scale = sp.transpose(1, 0, 2).reshape(K // 32, P * W)[:, :n]
    return linear_q8(x2, q, scale, bias)


def linear_f32_packed(x2, wp, n, bias=None):
    """x2 (M, K) @ W [+ bias] with W packed in panels of 64 columns (pyaiml.llm.layers.to_panels)."""
    P, K, W = wp.shape
    w = wp.transpose(1, 0, 2).reshape(K, P * W)[:, :n]
    y = x2.astype(np.float64) @ w.astype(np.float64)
    if bias is not None:
        y += bias
    return y.astype(np.float32)
