"""Keras 3's recurrent cells written step by step in torch, float64: the oracle of
tests/test_keras_recurrent.py and tests/test_keras_rnn_options.py for what torch.nn has no
switch for (masks, zero_output_for_mask, GRU reset_after=False, other activations, initial
states, go_backwards, dropout multipliers per gate)."""
import numpy as np
import torch


def act_t(name):
    return {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu, "linear": lambda z: z}[name]


def keras_recurrence(kind, x, W, U, b, act="tanh", ract="sigmoid", reset_after=True, mask=None, go_backwards=False,
                     h0=None, c0=None, zero_output_for_mask=False, xm=None, rm=None):
    """(output sequence, h_T, c_T) of a SimpleRNN ("simple_rnn"), LSTM or GRU with Keras's
    weights W (D, G H), U (H, G H), b. ``xm`` (n, B, D) input and ``rm`` (n, B, H) state
    dropout multipliers (n = 1: one mask for all gates, else one per gate); None: no dropout."""
    a, ra = act_t(act), act_t(ract)
    Bn, Tn, _ = x.shape
    H = U.shape[0]
    G = U.shape[1] // H
    if go_backwards:
        x = x.flip(1)
        mask = None if mask is None else mask[:, ::-1].copy()

    def gates(m):  # a multiplier per gate (None: none)
        if m is None:
            return [None] * G
        m = [torch.tensor(np.asarray(v, dtype=np.float64)) for v in m]
        return [m[g if len(m) > 1 else 0] for g in range(G)]

    xg, rg = gates(xm), gates(rm)

    def mul(v, m):
        return v if m is None else v * m

    def blk(M, g):
        return M[..., g * H:(g + 1) * H]

    h = torch.zeros(Bn, H, dtype=torch.float64) if h0 is None else h0
    c = torch.zeros(Bn, H, dtype=torch.float64) if c0 is None else c0
    prev = torch.zeros(Bn, H, dtype=torch.float64)
    outs = []
    for t in range(Tn):
        xt = x[:, t]
        c_new = None
        if kind == "lstm":
            z = [mul(xt, xg[g]) @ blk(W, g) + mul(h, rg[g]) @ blk(U, g) + (0 if b is None else blk(b, g))
                 for g in range(4)]
            c_new = ra(z[1]) * c + ra(z[0]) * a(z[2])
            h_new = ra(z[3]) * a(c_new)
        elif kind == "gru":
            bi = None if b is None else (b[0] if reset_after else b)
            xp = [mul(xt, xg[g]) @ blk(W, g) + (0 if bi is None else blk(bi, g)) for g in range(3)]
            if reset_after:
                hp = [mul(h, rg[g]) @ blk(U, g) + (0 if b is None else blk(b[1], g)) for g in range(3)]
                z, r = ra(xp[0] + hp[0]), ra(xp[1] + hp[1])
                n = a(xp[2] + r * hp[2])
            else:
                z = ra(xp[0] + mul(h, rg[0]) @ blk(U, 0))
                r = ra(xp[1] + mul(h, rg[1]) @ blk(U, 1))
                n = a(xp[2] + (r * mul(h, rg[2])) @ blk(U, 2))
            h_new = z * h + (1 - z) * n
        else:
            h_new = a(mul(xt, xg[0]) @ W + mul(h, rg[0]) @ U + (0 if b is None else b))
        if mask is not None:
            m = torch.tensor(mask[:, t, None])
            out = torch.where(m, h_new, torch.zeros_like(h_new) if zero_output_for_mask else prev)
            h = torch.where(m, h_new, h)
            if c_new is not None:
                c = torch.where(m, c_new, c)
        else:
            out, h = h_new, h_new
            if c_new is not None:
                c = c_new
        prev = out
        outs.append(out)
    return torch.stack(outs, 1), h, c
