"""NumPy reference for the ``lstm_forward`` / ``lstm_backward`` and ``gru_forward`` /
``gru_backward`` ops: slow and obvious.

The registry's raw form (pyaiml/ops/rnn.py prepares it; csrc/cpu/rnn.h documents it):
xp (B, T, 4H) the input projection x W + b for all steps, U (H, 4H) the recurrent kernel,
h0 / c0 (B, H), mask (B, T) bool or None. Keras 3's LSTM cell, gates i, f, c, o, sigmoid
and tanh; a padded step (mask False) keeps h and c. The GRU is Keras 3's reset_after=True
cell (xp (B, T, 3H), gates z, r, h, a recurrent bias (3H,)). Computes in float64 and returns the
input's dtype. Not the fast path (C++ and Numba are); the oracle the others are tested
against in tests/test_rnn_kernel.py, and the float64 implementation of pyaiml.ops.
"""
from __future__ import annotations

import numpy as np


def _sigmoid(z):
    return 0.5 * np.tanh(0.5 * z) + 0.5


def lstm_forward(xp, U, h0, c0, mask=None):
    """-> hs (B, T, H), cs (B, T + 1, H) (cs[:, 0] = c0), gates (B, T, 4H) activated,
    tc (B, T, H) = tanh of each step's new cell (before a mask keeps the old one)."""
    dt = xp.dtype
    B, T, G = xp.shape
    H = G // 4
    x = xp.astype(np.float64)
    Uf = U.astype(np.float64)
    h = h0.astype(np.float64)
    c = c0.astype(np.float64)
    hs = np.empty((B, T, H))
    cs = np.empty((B, T + 1, H))
    cs[:, 0] = c
    gates = np.empty((B, T, G))
    tc = np.empty((B, T, H))
    for t in range(T):
        z = x[:, t] + h @ Uf
        g = np.concatenate([_sigmoid(z[:, :2 * H]), np.tanh(z[:, 2 * H:3 * H]), _sigmoid(z[:, 3 * H:])], axis=1)
        i, f, gg, o = g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:]
        cn = f * c + i * gg
        tcn = np.tanh(cn)
        hn = o * tcn
        if mask is not None:
            m = np.asarray(mask[:, t], dtype=bool)[:, None]
            cn = np.where(m, cn, c)
            hn = np.where(m, hn, h)
        gates[:, t], tc[:, t], cs[:, t + 1], hs[:, t] = g, tcn, cn, hn
        h, c = hn, cn
    return hs.astype(dt), cs.astype(dt), gates.astype(dt), tc.astype(dt)


def lstm_backward(grad_h, grad_c, U, h0, c0, mask, hs, cs, gates, tc, need_recurrent_kernel=True, x=None,
                  kernel=None):
    """Back-propagation through time from the forward's saved arrays.

    grad_h (B, T, H) or None, grad_c (B, H) (gradient of the last cell state) or None;
    x (B, T, D) or None: the input of the projection xp = x W + b.
    -> grad_xp (B, T, 4H), grad_U (H, 4H) or None, grad_h0 (B, H), grad_c0 (B, H), and
    grad_W (D, 4H) = x^T grad_xp and grad_b (4H,) when x is given (else None, None), and
    grad_x (B, T, D) = grad_xp kernel^T when kernel (D, 4H) is given (else None).
    """
    dt = hs.dtype
    B, T, H = hs.shape
    Uf = U.astype(np.float64)
    g64 = gates.astype(np.float64)
    tc64 = tc.astype(np.float64)
    cs64 = cs.astype(np.float64)
    dh = np.zeros((B, H))
    dc = np.zeros((B, H)) if grad_c is None else grad_c.astype(np.float64)
    dxp = np.zeros((B, T, 4 * H))
    for t in range(T - 1, -1, -1):
        if grad_h is not None:
            dh = dh + grad_h[:, t]
        m = np.ones((B, 1)) if mask is None else np.asarray(mask[:, t], dtype=np.float64)[:, None]
        g = g64[:, t]
        i, f, gg, o = g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:]
        tcn = tc64[:, t]
        dht, dct = dh * m, dc * m
        dct = dct + dht * o * (1 - tcn ** 2)
        dz = np.concatenate([dct * gg * i * (1 - i), dct * cs64[:, t] * f * (1 - f), dct * i * (1 - gg ** 2),
                             dht * tcn * o * (1 - o)], axis=1)
        dxp[:, t] = dz
        dc = dct * f + dc * (1 - m)
        dh = dz @ Uf.T + dh * (1 - m)
    gU = None
    if need_recurrent_kernel:
        hprev = np.concatenate([h0[:, None].astype(np.float64), hs[:, :T - 1].astype(np.float64)], axis=1)
        gU = (hprev.reshape(B * T, H).T @ dxp.reshape(B * T, 4 * H)).astype(dt)
    gW = gb = None
    if x is not None:
        d2 = dxp.reshape(B * T, 4 * H)
        gW = (x.reshape(B * T, -1).astype(np.float64).T @ d2).astype(dt)
        gb = d2.sum(axis=0).astype(dt)
    gx = None if kernel is None else (dxp @ kernel.astype(np.float64).T).astype(dt)
    return dxp.astype(dt), gU, dh.astype(dt), dc.astype(dt), gW, gb, gx


def gru_forward(xp, U, brec, h0, mask=None):
    """GRU with reset_after (Keras 3's default; torch.nn.GRU's formula), gates z, r, h:
    a_t = h_{t-1} U + brec; z, r = sigmoid(xp_z + a_z, xp_r + a_r); n = tanh(xp_h + r a_h);
    h_t = z h_{t-1} + (1 - z) n; a padded step keeps h. brec (3H,) or None (zeros).
    -> hs (B, T, H), gates (B, T, 3H) = z, r, n, hn (B, T, H) = a_h."""
    dt = xp.dtype
    B, T, G = xp.shape
    H = G // 3
    x = xp.astype(np.float64)
    Uf = U.astype(np.float64)
    bf = np.zeros(G) if brec is None else brec.astype(np.float64)
    h = h0.astype(np.float64)
    hs = np.empty((B, T, H))
    gates = np.empty((B, T, G))
    hn = np.empty((B, T, H))
    for t in range(T):
        a = h @ Uf + bf
        zr = _sigmoid(x[:, t, :2 * H] + a[:, :2 * H])
        z, r = zr[:, :H], zr[:, H:]
        n = np.tanh(x[:, t, 2 * H:] + r * a[:, 2 * H:])
        hnew = z * h + (1 - z) * n
        if mask is not None:
            hnew = np.where(np.asarray(mask[:, t], dtype=bool)[:, None], hnew, h)
        gates[:, t, :2 * H], gates[:, t, 2 * H:], hn[:, t], hs[:, t] = zr, n, a[:, 2 * H:], hnew
        h = hnew
    return hs.astype(dt), gates.astype(dt), hn.astype(dt)


def gru_backward(grad_h, U, brec, h0, mask, hs, gates, hn, need_recurrent_kernel=True, need_recurrent_bias=True):
    """-> grad_xp (B, T, 3H), grad_U (H, 3H) or None, grad_brec (3H,) or None, grad_h0 (B, H)."""
    dt = hs.dtype
    B, T, H = hs.shape
    Uf = U.astype(np.float64)
    g64, hn64, hs64 = gates.astype(np.float64), hn.astype(np.float64), hs.astype(np.float64)
    hprev = np.concatenate([h0[:, None].astype(np.float64), hs64[:, :T - 1]], axis=1)
    dh = np.zeros((B, H))
    dxp = np.zeros((B, T, 3 * H))
    da = np.zeros((B, T, 3 * H))
    for t in range(T - 1, -1, -1):
        if grad_h is not None:
            dh = dh + grad_h[:, t]
        m = np.ones((B, 1)) if mask is None else np.asarray(mask[:, t], dtype=np.float64)[:, None]
        z, r, n = g64[:, t, :H], g64[:, t, H:2 * H], g64[:, t, 2 * H:]
        dht = dh * m
        dn = dht * (1 - z) * (1 - n ** 2)
        dz = dht * (hprev[:, t] - n) * z * (1 - z)
        dr = dn * hn64[:, t] * r * (1 - r)
        dxp[:, t] = np.concatenate([dz, dr, dn], axis=1)
        da[:, t] = np.concatenate([dz, dr, dn * r], axis=1)
        dh = dht * z + da[:, t] @ Uf.T + dh * (1 - m)
    gU = (hprev.reshape(B * T, H).T @ da.reshape(B * T, 3 * H)).astype(dt) if need_recurrent_kernel else None
    gb = da.reshape(B * T, 3 * H).sum(axis=0).astype(dt) if need_recurrent_bias else None
    return dxp.astype(dt), gU, gb, dh.astype(dt)
