"""Numba fallback for the ``lstm_forward`` / ``lstm_backward`` and ``gru_forward`` /
``gru_backward`` ops.

Same arguments and results as pyaiml.reference.rnn (the registry's raw form, csrc/cpu/rnn.h):
Keras 3's LSTM cell, and its GRU cell with reset_after=True, over a whole sequence. Parallel
over the batch rows (rows do not interact, so each runs its whole sequence alone and results
do not depend on the thread count); per step the row's recurrent product h U as an i-k-j
loop that vectorises, then the gates' pointwise math. The recurrent kernel's gradient is one
NumPy product over all steps at the end (so are the projection's, when asked for). Computes in the input's dtype. Not the fast path
(the C++ kernel is). Tests: tests/test_rnn_kernel.py (PYAIML_BACKEND=numba, against the
reference and torch).
"""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, fastmath=True)
def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


@nb.njit(parallel=True, cache=True, fastmath=True)
def _forward(xp, U, h0, c0, mask, has_mask, hs, cs, gates, tc):
    B, T, G = xp.shape
    H = G // 4
    for b in nb.prange(B):
        z = np.empty(G, dtype=xp.dtype)
        hp = h0[b].copy()
        for j in range(H):
            cs[b, 0, j] = c0[b, j]
        for t in range(T):
            for j in range(G):
                z[j] = xp[b, t, j]
            for k in range(H):
                hk = hp[k]
                for j in range(G):
                    z[j] += hk * U[k, j]
            for j in range(G):
                if 2 * H <= j < 3 * H:
                    gates[b, t, j] = np.tanh(z[j])
                else:
                    gates[b, t, j] = _sig(z[j])
            real = (not has_mask) or mask[b, t]
            for j in range(H):
                c = gates[b, t, H + j] * cs[b, t, j] + gates[b, t, j] * gates[b, t, 2 * H + j]
                tcj = np.tanh(c)
                tc[b, t, j] = tcj
                if real:
                    cs[b, t + 1, j] = c
                    hs[b, t, j] = gates[b, t, 3 * H + j] * tcj
                else:
                    cs[b, t + 1, j] = cs[b, t, j]
                    hs[b, t, j] = hp[j]
            for j in range(H):
                hp[j] = hs[b, t, j]


@nb.njit(parallel=True, cache=True, fastmath=True)
def _backward(grad_h, has_gh, grad_c, has_gc, U, mask, has_mask, hs, cs, gates, tc, dxp, dh0, dc0):
    B, T, H = hs.shape
    G = 4 * H
    for b in nb.prange(B):
        dh = np.zeros(H, dtype=hs.dtype)
        dc = np.zeros(H, dtype=hs.dtype)
        if has_gc:
            for j in range(H):
                dc[j] = grad_c[b, j]
        for t in range(T - 1, -1, -1):
            if has_gh:
                for j in range(H):
                    dh[j] += grad_h[b, t, j]
            if has_mask and not mask[b, t]:
                for j in range(G):
                    dxp[b, t, j] = 0.0
                continue
            for j in range(H):
                i = gates[b, t, j]
                f = gates[b, t, H + j]
                gg = gates[b, t, 2 * H + j]
                o = gates[b, t, 3 * H + j]
                tcj = tc[b, t, j]
                dct = dc[j] + dh[j] * o * (1.0 - tcj * tcj)
                dxp[b, t, j] = dct * gg * i * (1.0 - i)
                dxp[b, t, H + j] = dct * cs[b, t, j] * f * (1.0 - f)
                dxp[b, t, 2 * H + j] = dct * i * (1.0 - gg * gg)
                dxp[b, t, 3 * H + j] = dh[j] * tcj * o * (1.0 - o)
                dc[j] = dct * f
            for k in range(H):
                s = 0.0
                for j in range(G):
                    s += dxp[b, t, j] * U[k, j]
                dh[k] = s
        for j in range(H):
            dh0[b, j] = dh[j]
            dc0[b, j] = dc[j]


def _mask_arg(mask, B, T):
    if mask is None:
        return np.ones((1, 1), dtype=np.bool_), False
    return np.ascontiguousarray(mask, dtype=np.bool_), True


def lstm_forward(xp, U, h0, c0, mask=None):
    B, T, G = xp.shape
    H = G // 4
    dt = xp.dtype
    hs = np.empty((B, T, H), dt)
    cs = np.empty((B, T + 1, H), dt)
    gates = np.empty((B, T, G), dt)
    tc = np.empty((B, T, H), dt)
    m, has = _mask_arg(mask, B, T)
    _forward(xp, U, h0, c0, m, has, hs, cs, gates, tc)
    return hs, cs, gates, tc


def lstm_backward(grad_h, grad_c, U, h0, c0, mask, hs, cs, gates, tc, need_recurrent_kernel=True, x=None,
                  kernel=None):
    B, T, H = hs.shape
    dt = hs.dtype
    m, has = _mask_arg(mask, B, T)
    gh = np.zeros((1, 1, 1), dt) if grad_h is None else grad_h
    gc = np.zeros((1, 1), dt) if grad_c is None else grad_c
    dxp = np.empty((B, T, 4 * H), dt)
    dh0 = np.empty((B, H), dt)
    dc0 = np.empty((B, H), dt)
    _backward(gh, grad_h is not None, gc, grad_c is not None, U, m, has, hs, cs, gates, tc, dxp, dh0, dc0)
    gU = None
    if need_recurrent_kernel:  # one product over all steps: sum over (b, t) of h_{t-1}^T dz_t
        hprev = np.concatenate([h0[:, None], hs[:, :T - 1]], axis=1).reshape(B * T, H)
        gU = np.matmul(hprev.T, dxp.reshape(B * T, 4 * H))
    gW = gb = None
    if x is not None:  # the projection's gradients from the same dxp
        d2 = dxp.reshape(B * T, 4 * H)
        gW = np.matmul(x.reshape(B * T, -1).T, d2)
        gb = d2.sum(axis=0, dtype=dt)
    gx = None if kernel is None else np.matmul(dxp, kernel.T)
    return dxp, gU, dh0, dc0, gW, gb, gx


@nb.njit(parallel=True, cache=True, fastmath=True)
def _gru_forward(xp, U, brec, h0, mask, has_mask, hs, gates, hn):
    B, T, G = xp.shape
    H = G // 3
    for b in nb.prange(B):
        a = np.empty(G, dtype=xp.dtype)
        hp = h0[b].copy()
        for t in range(T):
            for j in range(G):
                a[j] = brec[j]
            for k in range(H):
                hk = hp[k]
                for j in range(G):
                    a[j] += hk * U[k, j]
            for j in range(2 * H):
                gates[b, t, j] = _sig(xp[b, t, j] + a[j])
            for j in range(H):
                hn[b, t, j] = a[2 * H + j]
                gates[b, t, 2 * H + j] = np.tanh(xp[b, t, 2 * H + j] + gates[b, t, H + j] * a[2 * H + j])
            real = (not has_mask) or mask[b, t]
            for j in range(H):
                if real:
                    n = gates[b, t, 2 * H + j]
                    hp[j] = n + gates[b, t, j] * (hp[j] - n)
                hs[b, t, j] = hp[j]


@nb.njit(parallel=True, cache=True, fastmath=True)
def _gru_backward(grad_h, has_gh, U, h0, mask, has_mask, hs, gates, hn, dxp, da, dh0):
    B, T, H = hs.shape
    G = 3 * H
    for b in nb.prange(B):
        dh = np.zeros(H, dtype=hs.dtype)
        for t in range(T - 1, -1, -1):
            if has_gh:
                for j in range(H):
                    dh[j] += grad_h[b, t, j]
            if has_mask and not mask[b, t]:
                for j in range(G):
                    dxp[b, t, j] = 0.0
                    da[b, t, j] = 0.0
                continue
            for j in range(H):
                z = gates[b, t, j]
                r = gates[b, t, H + j]
                n = gates[b, t, 2 * H + j]
                hp = h0[b, j] if t == 0 else hs[b, t - 1, j]
                dn = dh[j] * (1.0 - z) * (1.0 - n * n)
                dz = dh[j] * (hp - n) * z * (1.0 - z)
                dr = dn * hn[b, t, j] * r * (1.0 - r)
                dxp[b, t, j] = dz
                dxp[b, t, H + j] = dr
                dxp[b, t, 2 * H + j] = dn
                da[b, t, j] = dz
                da[b, t, H + j] = dr
                da[b, t, 2 * H + j] = dn * r
                dh[j] = dh[j] * z
            for k in range(H):
                s = 0.0
                for j in range(G):
                    s += da[b, t, j] * U[k, j]
                dh[k] += s
        for j in range(H):
            dh0[b, j] = dh[j]


def gru_forward(xp, U, brec, h0, mask=None):
    B, T, G = xp.shape
    H = G // 3
    dt = xp.dtype
    hs = np.empty((B, T, H), dt)
    gates = np.empty((B, T, G), dt)
    hn = np.empty((B, T, H), dt)
    m, has = _mask_arg(mask, B, T)
    b = np.zeros(G, dt) if brec is None else brec
    _gru_forward(xp, U, b, h0, m, has, hs, gates, hn)
    return hs, gates, hn


def gru_backward(grad_h, U, brec, h0, mask, hs, gates, hn, need_recurrent_kernel=True, need_recurrent_bias=True):
    B, T, H = hs.shape
    dt = hs.dtype
    m, has = _mask_arg(mask, B, T)
    gh = np.zeros((1, 1, 1), dt) if grad_h is None else grad_h
    dxp = np.empty((B, T, 3 * H), dt)
    da = np.empty((B, T, 3 * H), dt)
    dh0 = np.empty((B, H), dt)
    _gru_backward(gh, grad_h is not None, U, h0, m, has, hs, gates, hn, dxp, da, dh0)
    da2 = da.reshape(B * T, 3 * H)
    gU = None
    if need_recurrent_kernel:
        hprev = np.concatenate([h0[:, None], hs[:, :T - 1]], axis=1).reshape(B * T, H)
        gU = np.matmul(hprev.T, da2)
    gb = da2.sum(axis=0, dtype=dt) if need_recurrent_bias else None
    return dxp, gU, gb, dh0
