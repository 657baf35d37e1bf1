"""Keras 3 recurrent layers on the tape: SimpleRNN, LSTM, GRU, the Bidirectional and TimeDistributed wrappers.

What it is. Each layer's ``call()`` is two recorded tape ops: the input projection of every
time step as one GEMM (``F.dense`` on (batch, steps, features): x @ kernel + bias), then
one scan record (``_scan`` below) that runs the recurrence step by step (h @ recurrent_kernel
plus the gates' pointwise math) and whose backward is back-propagation through time written
out here: per step only the (batch, gates*units) x (gates*units, units) product for the
state gradient; the recurrent kernel's gradient is one GEMM over all steps at the end. The
scan keeps, per step, the activated gates and states its backward needs.

Keras 3 semantics and layouts: ``kernel`` (features, G*units), ``recurrent_kernel`` (units,
G*units), gate order i, f, c, o (LSTM, G=4) and z, r, h (GRU, G=3); GRU ``reset_after=True``
(the default) has ``bias`` (2, 3*units): the input bias and the recurrent bias (the latter
inside the reset gate's product, as torch.nn.GRU); ``reset_after=False`` has bias (3*units,)
and applies the reset gate before the product. ``get_weights``/``set_weights`` are these
arrays. A mask (batch, steps) from ``Embedding(mask_zero=True)`` or ``mask=`` carries the
states through padded steps; the output of a padded step is the previous output (zeros
before the first real step), or zeros with ``zero_output_for_mask`` (set by Bidirectional
when it returns sequences), as Keras does. ``go_backwards`` reads the steps in reverse and
returns the sequence in that reversed order. ``initial_state`` (a list: [h] or [h, c]) is
differentiated too. ``dropout`` drops input features with one mask per sequence (Keras 3's
rule: the same features for every step) in training.

``recurrent_dropout`` (training only) follows Keras 3 (keras/src/layers/rnn, since 3.8): masks
drawn once per call from the layer's ``seed``, shared by every step, scaled by 1/(1-rate),
multiplying h_{t-1} inside the recurrent product only (the carried state and the GRU's
z * h_{t-1} keep the undropped state). SimpleRNN: one (batch, units) mask. LSTM and GRU run
Keras's implementation=1 there: one state mask per gate, and with ``dropout`` > 0 one input
mask per gate as well. Those calls take the NumPy scan (the fused kernels have no mask input);
its backward through time carries the masks (dh_{t-1} gets mask_g * (dgate_g @ U_g^T), and
U_g's gradient sums (h_{t-1} * mask_g)^T dgate_g). Inference runs as with rate 0.

``stateful=True`` (Keras 3): the final states of a call ([h] or [h, c], NumPy arrays in
``layer.states``) start the next call; every call must then have the same batch size (a
ValueError names the layer and both sizes); ``reset_state()`` / ``reset_states()`` set them
back to zeros; they are constants of the next call (no gradient across calls, truncated
back-propagation) and are not saved with the model (Keras keeps them out of the file); an
explicit ``initial_state`` wins over them. Unlike Keras the batch size need not be declared:
the first call fixes it. The model machinery's calls on placeholder data (shape probes,
builds, one-row output counts) neither read nor change them: those callers run inside
``_common.placeholder_run()`` and the layer reads ``_common.in_placeholder_run()``.
Bidirectional passes ``stateful`` to both directions and has ``reset_state`` and ``states``.
Keras 3 has no ``Model.reset_states``; neither does pyaiml (reset the layers).

The LSTM, and the GRU with reset_after=True, in float32 with Keras's default activations
(tanh, sigmoid) run their scan on the fused kernels instead (``_lstm_fused`` /
``_gru_fused``: pyaiml.ops.lstm_sequence / gru_sequence, the C++ kernels of
csrc/cpu/rnn.cpp or their Numba fallbacks; one tape record whose backward is the fused
backward through time; the LSTM's record takes in the input projection too, so that the
kernel's gradient comes from the same pass as the recurrent kernel's), with every option
above; float64, other activations, GRU with
reset_after=False and SimpleRNN keep the NumPy scan here (NumPy around pyaiml's GEMM,
per-step calls).

Not here: activations other than tanh, sigmoid, relu and linear (refused with a
ValueError), RNN over custom cells, C++ kernels for SimpleRNN, GRU with reset_after=False and
training with recurrent_dropout, ``reset_states(values)`` (Keras 3 has none either).
Tests: tests/test_rnn_kernel.py (the fused LSTM and GRU against the NumPy scan for every
option, in float32); tests/test_keras_recurrent.py (forward and every gradient against torch.nn.LSTM /
GRU / RNN and a torch transcription in float64 for every supported option, masks,
Bidirectional merge modes, the three ways to build a model, save/load);
tests/test_keras_time_distributed.py (TimeDistributed against torch, in models, save/load);
tests/test_keras_rnn_options.py (recurrent_dropout against a torch float64 transcription
with the same masks, stateful calls against one call on the concatenated steps, fit,
predict, save/load).
"""
from __future__ import annotations

import numpy as np

from pyaiml import ops
from pyaiml.autograd import functional as F
from pyaiml.autograd.tape import Tensor, record, value_of
from pyaiml.keras import initializers as _inits
from pyaiml.keras import layers as _layers
from pyaiml.keras._common import in_placeholder_run, rng
from pyaiml.keras.layers import InputSpecError, Layer, _init_name, _shape_str
from pyaiml.ops._validate import finite_checks, require_finite

_layers.BUILTIN_MODULES.add(__name__)


# ---------------------------------------------------------------- orthogonal initializer
def orthogonal(shape, dtype=np.float32):
    """Keras's Orthogonal (gain 1): the Q factor of a normal matrix, sign-corrected, for
    shape (rows..., cols) flattened to (prod(rows), cols)."""
    if len(shape) < 2:
        raise ValueError(f"orthogonal: the shape must have at least 2 dimensions. Received {tuple(shape)}")
    rows, cols = int(np.prod(shape[:-1])), int(shape[-1])
    a = rng().standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return q.reshape(shape).astype(dtype)


_inits._TABLE.setdefault("orthogonal", orthogonal)


# ---------------------------------------------------------------- pointwise activations of the scan
# Each: forward in place on a buffer, and the derivative from the activation's output y.
def _sigmoid_(z):
    # 0.5 * tanh(0.5 z) + 0.5: stable for any z, in place (4 ufunc calls, no temporaries)
    np.multiply(z, 0.5, out=z)
    np.tanh(z, out=z)
    np.multiply(z, 0.5, out=z)
    np.add(z, 0.5, out=z)
    return z


def _relu_(z):
    return np.maximum(z, 0, out=z)


_ACT_FWD = {"tanh": lambda z: np.tanh(z, out=z), "sigmoid": _sigmoid_, "relu": _relu_, "linear": lambda z: z}
def _dtanh(y):
    d = np.multiply(y, y)
    return np.subtract(1, d, out=d)  # one temporary, not two (the backward runs it on (T, B, 4H))


def _dsigmoid(y):
    d = np.subtract(1, y)
    d *= y
    return d


_ACT_DY = {  # d act / d z as a function of y = act(z)
    "tanh": _dtanh,
    "sigmoid": _dsigmoid,
    "relu": lambda y: (y > 0).astype(y.dtype),
    "linear": lambda y: np.ones_like(y),
}


def _check_act(cname, arg, act):
    name = getattr(act, "name", act)
    if name not in _ACT_FWD:
        raise ValueError(f"{cname}: {arg} must be one of {', '.join(sorted(_ACT_FWD))}. Received {name!r}")
    return name


# ---------------------------------------------------------------- the scan op
def _mm(a, b):
    """a @ b through pyaiml's GEMM (its thread pool: the per-step products are small, and
    NumPy's BLAS pool, sized apart from pyaiml.set_num_threads, oversubscribes a loaded
    machine: 32x128 @ 128x512 took 61 us on one OpenBLAS thread, 270 us on two, 80 us here)."""
    return ops.matmul(a, b)  # any strides: the GEMM packs its operands itself


def _keep_masks(gen, rate, shape, dt):
    """Inverted-dropout multipliers of ``shape``: 0 with probability ``rate``, else
    1 / (1 - rate) (the rule of F.dropout, drawn the same way from ``gen``)."""
    keep = gen.random(shape, dtype=np.float32) >= rate
    return keep.astype(dt) * dt.type(1.0 / (1.0 - rate))


# recurrent_dropout: rm (n, B, H) holds n multipliers for the previous state, one per block of
# H columns of the recurrent kernel (n = G per-gate masks for LSTM and GRU, n = 1 for
# SimpleRNN; Keras 3's implementation=1 rule); the state itself (carried to the next step, and
# the GRU's z * h_prev) is never dropped, only its copy inside the recurrent product.
def _rec(hp, U, rm):
    """hp (B, H) times U (H, n*H), block g of U fed hp * rm[g] (rm None: hp @ U)."""
    if rm is None:
        return _mm(hp, U)
    if len(rm) == 1:
        return _mm(hp * rm[0], U)
    H = hp.shape[1]
    out = np.empty((hp.shape[0], U.shape[1]), hp.dtype)
    for g in range(len(rm)):
        out[:, g * H:(g + 1) * H] = _mm(hp * rm[g], U[:, g * H:(g + 1) * H])
    return out


def _rec_back(d, UT, rm):
    """The gradient reaching hp from the gradient d (B, n*H) of ``_rec(hp, U, rm)``; UT = U^T."""
    if rm is None:
        return _mm(d, UT)
    H = UT.shape[1]
    acc = _mm(d[:, :H], UT[:H]) * rm[0] if len(rm) > 1 else _mm(d, UT) * rm[0]
    for g in range(1, len(rm)):
        acc += _mm(d[:, g * H:(g + 1) * H], UT[g * H:(g + 1) * H]) * rm[g]
    return acc


def _rec_wgrad(hprev, dd, rm):
    """The gradient of U in ``_rec`` summed over all steps: hprev (B, T, H) the states fed in,
    dd (B, T, n*H) the products' gradients."""
    B, T, H = hprev.shape
    if rm is None:
        return _mm(hprev.reshape(B * T, H).T, dd.reshape(B * T, -1))
    n = len(rm)
    out = np.empty((H, dd.shape[2]), dd.dtype)
    w = dd.shape[2] // n
    for g in range(n):
        hm = (hprev * rm[g][:, None, :]).reshape(B * T, H)
        out[:, g * w:(g + 1) * w] = _mm(hm.T, dd[:, :, g * w:(g + 1) * w].reshape(B * T, w))
    return out


# The fused kernels (pyaiml.ops.lstm_sequence, gru_sequence) run the LSTM and the GRU
# (reset_after=True) when they cover them: float32 and Keras's default activations. Tests
# switch this off to compare with the NumPy scan.
_FUSED_LSTM = True


def _lstm_fused(x, kernel, bias, U, h0, c0, mask, with_c):
    """The whole LSTM layer as one tape record: the input projection xp = x @ kernel + bias
    (one GEMM), then the recurrence on pyaiml.ops.lstm_sequence (C++ / Numba / NumPy by the
    registry). Its backward is the fused backward through time, which also returns the
    kernel's and the bias's gradients (sharing the pass over grad_xp with the recurrent
    kernel's) and grad_x = grad_xp @ kernel^T. Result as ``_scan`` for kind "lstm"."""
    xv, kv, Uv = value_of(x), value_of(kernel), value_of(U)
    dt = xv.dtype
    bv = None if bias is None else value_of(bias)
    h0v = None if h0 is None else np.asarray(value_of(h0), dt)
    c0v = None if c0 is None else np.asarray(value_of(c0), dt)
    xp = ops.linear(xv, kv.T, bv)  # checks x, kernel and bias for NaN/inf
    for name, a in (("recurrent_kernel", Uv), ("h0", h0v), ("c0", c0v)):
        if a is not None:
            require_finite(a, "lstm_sequence", name)
    with finite_checks(False):  # xp comes from checked inputs: no second pass over its B T 4H values
        saved = ops.lstm_sequence(xp, Uv, h0v, c0v, mask)
    del xp
    hs, cs = saved[0], saved[1]
    T = hs.shape[1]
    out = np.concatenate([hs, cs[:, T:]], axis=1) if with_c else hs

    def back(gout, needs):
        gout = np.asarray(gout, dt)
        gh, gc = (gout[:, :T], gout[:, T]) if with_c else (gout, None)
        want_w = needs[1] or needs[2]
        res = ops.lstm_sequence_backward(gh, gc, Uv, saved, h0v, c0v, mask, need_recurrent_kernel=needs[3],
                                         x=xv if want_w else None, kernel=kv if needs[0] else None)
        gU, gh0, gc0 = res[1:4]
        gW, gb = res[4:6] if want_w else (None, None)
        gx = res[-1] if needs[0] else None
        return (gx, gW if needs[1] else None, gb if needs[2] else None, gU, gh0 if needs[4] else None,
                gc0 if needs[5] else None)

    return record(out, (x, kernel, bias, U, h0, c0), back, "lstm")


def _gru_fused(xp, U, b_rec, h0, mask):
    """The GRU (reset_after) recurrence as one tape record on pyaiml.ops.gru_sequence: same
    arguments and result as ``_scan`` for kind "gru"."""
    xv, Uv = value_of(xp), value_of(U)
    dt = xv.dtype
    bv = None if b_rec is None else np.asarray(value_of(b_rec), dt)
    h0v = None if h0 is None else np.asarray(value_of(h0), dt)
    saved = ops.gru_sequence(xv, Uv, bv, h0v, mask)

    def back(gout, needs):
        gx, gU, gb, gh0 = ops.gru_sequence_backward(np.asarray(gout, dt), Uv, saved, bv, h0v, mask,
                                                    need_recurrent_kernel=needs[1], need_recurrent_bias=needs[2])
        return (gx if needs[0] else None, gU, gb, gh0 if needs[3] else None, None)

    return record(saved[0], (xp, U, b_rec, h0, None), back, "gru_scan")


def _scan(kind, xp, U, b_rec, h0, c0, mask, act, ract, reset_after, with_c, rmask=None):
    """The recurrence over time as one tape record.

    xp (B, T, G*H): the input projection (x @ kernel + input bias); U (H, G*H) the recurrent
    kernel; b_rec (G*H,) the GRU's recurrent bias (reset_after) or None; h0, c0 (B, H) or
    None (zeros); mask (B, T) bool or None. Returns (B, T, H) states h_1..h_T (carried
    through masked steps), with the final cell state appended as step T+1 when ``with_c``
    (LSTM), as one Tensor when a tape records. rmask (n, B, H) or None: the recurrent dropout
    multipliers of the previous state inside the recurrent product (see ``_rec``), n = 1
    (SimpleRNN) or one per gate (LSTM, GRU).
    """
    xv, Uv = value_of(xp), value_of(U)
    if (kind == "gru" and reset_after and act == "tanh" and ract == "sigmoid" and _FUSED_LSTM and rmask is None
            and xv.dtype == np.float32 and Uv.dtype == np.float32):
        return _gru_fused(xp, U, b_rec, h0, mask)
    B, T, GH = xv.shape
    H = Uv.shape[0]
    dt = xv.dtype
    h0v = np.zeros((B, H), dt) if h0 is None else np.asarray(value_of(h0), dt)
    c0v = np.zeros((B, H), dt) if (c0 is None or kind != "lstm") else np.asarray(value_of(c0), dt)
    brv = None if b_rec is None else value_of(b_rec)
    rm = None if rmask is None else np.asarray(rmask, dt)
    rm_zr = None if rm is None else rm[:2]
    mb = None if mask is None else np.ascontiguousarray(np.asarray(mask, dtype=bool).T[:, :, None])  # (T, B, 1)
    m = None if mb is None else mb.astype(dt)
    fa, fr = _ACT_FWD[act], _ACT_FWD[ract]
    fast = kind == "lstm" and act == "tanh" and ract == "sigmoid"
    if fast:  # per-column factors: 0.5 for the sigmoid gates i, f, o; 1 for the tanh gate c
        scale = np.full(GH, 0.5, dt)
        scale[2 * H:3 * H] = 1
        shift = np.full(GH, 0.5, dt)
        shift[2 * H:3 * H] = 0

    hs = np.empty((T + 1, B, H), dt)  # hs[t + 1] = h after step t
    hs[0] = h0v
    gates = np.empty((T, B, GH), dt)  # activated gates per step
    Uzr = Uv[:, :2 * H] if kind == "gru" else None
    Uh = Uv[:, 2 * H:] if kind == "gru" else None
    if kind == "lstm":
        cs = np.empty((T + 1, B, H), dt)
        cs[0] = c0v
        acs = np.empty((T, B, H), dt)  # act(c~) per step
    elif kind == "gru":
        extra = np.empty((T, B, H), dt)  # reset_after: h @ Uh + b_hh; else r * h_prev
    for t in range(T):
        hp = hs[t]
        g = gates[t]
        if kind == "lstm":
            np.add(_rec(hp, Uv, rm), xv[:, t], out=g)
            if fast:  # sigmoid(z) = 0.5 tanh(0.5 z) + 0.5: one tanh over all four gates
                g *= scale
                np.tanh(g, out=g)
                g *= scale
                g += shift
            else:
                fr(g[:, :2 * H])
                fa(g[:, 2 * H:3 * H])
                fr(g[:, 3 * H:])
            i, f, gg, o = g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:]
            c = np.multiply(f, cs[t], out=cs[t + 1])
            c += i * gg
            a = acs[t]
            np.copyto(a, c)
            fa(a)
            if m is None:
                np.multiply(o, a, out=hs[t + 1])
            else:  # padded steps keep the states exactly
                np.copyto(c, cs[t], where=~mb[t])
                hs[t + 1] = np.where(mb[t], o * a, hp)
        elif kind == "gru":
            x = xv[:, t]
            if reset_after:
                hpr = _rec(hp, Uv, rm)
                if brv is not None:
                    hpr += brv
                np.add(x[:, :2 * H], hpr[:, :2 * H], out=g[:, :2 * H])
                fr(g[:, :2 * H])
                r = g[:, H:2 * H]
                extra[t] = hpr[:, 2 * H:]
                np.multiply(r, extra[t], out=g[:, 2 * H:])
            else:
                np.add(_rec(hp, Uzr, rm_zr), x[:, :2 * H], out=g[:, :2 * H])
                fr(g[:, :2 * H])
                r = g[:, H:2 * H]
                np.multiply(r, hp if rm is None else hp * rm[2], out=extra[t])
                g[:, 2 * H:] = _mm(extra[t], Uh)
            g[:, 2 * H:] += x[:, 2 * H:]
            fa(g[:, 2 * H:])
            z, n = g[:, :H], g[:, 2 * H:]
            h = n + z * (hp - n)
            if m is not None:
                h = np.where(mb[t], h, hp)
            hs[t + 1] = h
        else:
            np.add(_rec(hp, Uv, rm), xv[:, t], out=g)
            fa(g)
            h = g if m is None else np.where(mb[t], g, hp)
            hs[t + 1] = h
    out_tb = hs[1:]
    if with_c and kind == "lstm":
        out_tb = np.concatenate([out_tb, cs[T:]], axis=0)
    out = np.ascontiguousarray(out_tb.transpose(1, 0, 2))

    def back(gout, needs):
        gout = np.asarray(gout, dt)
        gh_seq = gout[:, :T].transpose(1, 0, 2)  # (T, B, H) view
        dh = np.zeros((B, H), dt)
        dc = np.zeros((B, H), dt)
        if with_c and kind == "lstm":
            dc = np.array(gout[:, T], dtype=dt)
        dpre = np.empty((B, T, GH), dt)  # gradient of the gates' pre-activations (= of xp)
        UT = np.ascontiguousarray(Uv.T)
        UzrT = UT[:2 * H] if kind == "gru" else None
        UhT = np.ascontiguousarray(UT[2 * H:]) if kind == "gru" else None
        dA = _ACT_DY[act]
        dR = _ACT_DY[ract]
        if kind == "lstm":
            # the gates' derivatives for all steps at once (a few large passes instead of
            # several small ones per step): recurrent activation for i, f, o; activation for c
            dG = dR(gates)
            dG[:, :, 2 * H:3 * H] = dA(gates[:, :, 2 * H:3 * H])
            dAc = dA(acs)
        elif kind == "simple_rnn":
            dG = dA(gates)
        if kind == "gru":
            dhpr = np.empty((B, T, GH), dt) if reset_after else None  # gradient of h @ U (+ b_hh)
        for t in range(T - 1, -1, -1):
            dh += gh_seq[t]
            hp = hs[t]
            g = gates[t]
            d = dpre[:, t]
            if m is not None:
                mt = m[t]
                dht = dh * mt
                dh_carry = dh - dht
            else:
                dht, dh_carry = dh, None
            if kind == "lstm":
                i, f, gg, o = g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:]
                a = acs[t]
                if m is not None:
                    dct = dc * mt
                    dc_carry = dc - dct
                else:
                    dct, dc_carry = dc, None
                dct = dct + dht * o * dAc[t]
                np.multiply(dct, gg, out=d[:, :H])
                np.multiply(dct, cs[t], out=d[:, H:2 * H])
                np.multiply(dct, i, out=d[:, 2 * H:3 * H])
                np.multiply(dht, a, out=d[:, 3 * H:])
                d *= dG[t]
                dc = dct * f
                if dc_carry is not None:
                    dc += dc_carry
                dh = _rec_back(d, UT, rm)
            elif kind == "gru":
                z, r, n = g[:, :H], g[:, H:2 * H], g[:, 2 * H:]
                dn = dht * (1 - z) * dA(n)
                d[:, :H] = dht * (hp - n) * dR(z)
                d[:, 2 * H:] = dn
                dhprev = dht * z
                if reset_after:
                    d[:, H:2 * H] = dn * extra[t] * dR(r)
                    e = dhpr[:, t]
                    e[:, :2 * H] = d[:, :2 * H]
                    e[:, 2 * H:] = dn * r
                    dhprev += _rec_back(e, UT, rm)
                else:
                    drh_t = _mm(dn, UhT)
                    if rm is None:
                        d[:, H:2 * H] = drh_t * hp * dR(r)
                        dhprev += drh_t * r
                    else:
                        d[:, H:2 * H] = drh_t * (hp * rm[2]) * dR(r)
                        dhprev += drh_t * r * rm[2]
                    dhprev += _rec_back(d[:, :2 * H], UzrT, rm_zr)
                dh = dhprev
            else:
                np.multiply(dht, dG[t], out=d)
                dh = _rec_back(d, UT, rm)
            if dh_carry is not None:
                dh += dh_carry
        gx = dpre if needs[0] else None
        gU = gb = None
        hprev = np.ascontiguousarray(hs[:T].transpose(1, 0, 2)) if needs[1] else None  # (B, T, H)
        if needs[1]:
            if kind == "gru" and reset_after:
                gU = _rec_wgrad(hprev, dhpr, rm)
            elif kind == "gru":
                gU = np.empty_like(Uv)
                gU[:, :2 * H] = _rec_wgrad(hprev, dpre[:, :, :2 * H], rm_zr)
                rh = np.ascontiguousarray(extra.transpose(1, 0, 2)).reshape(B * T, H)
                gU[:, 2 * H:] = _mm(rh.T, dpre[:, :, 2 * H:].reshape(T * B, H))
            else:
                gU = _rec_wgrad(hprev, dpre, rm)
        if b_rec is not None and needs[2]:
            gb = dhpr.reshape(T * B, GH).sum(axis=0)
        gh0 = dh if (h0 is not None and needs[3]) else None
        gc0 = dc if (c0 is not None and kind == "lstm" and needs[4]) else None
        return gx, gU, gb, gh0, gc0

    return record(out, (xp, U, b_rec, h0, c0), back, f"{kind}_scan")


# ---------------------------------------------------------------- the layers
_KIND_GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}


class _RNN(Layer):
    """Shared machinery of SimpleRNN, LSTM and GRU (Keras 3's RNN layer arguments)."""

    supports_masking = True
    kind = "simple_rnn"

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 dropout=0.0, recurrent_dropout=0.0, return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, zero_output_for_mask=False, seed=None, **kw):
        if kw.get("name") is None:  # Keras's names: lstm, gru_1, simple_rnn_2
            kw["name"] = _layers._auto_name(self.kind)
        super().__init__(**kw)
        cname = type(self).__name__
        if not isinstance(units, (int, np.integer)) or isinstance(units, bool) or units < 1:
            raise ValueError(f"{cname}: units must be a positive integer. Received {units!r}")
        self.units = int(units)
        self.activation = _layers._acts.get(activation)
        self.recurrent_activation = _layers._acts.get(recurrent_activation)
        self._act = _check_act(cname, "activation", self.activation)
        self._ract = _check_act(cname, "recurrent_activation", self.recurrent_activation)
        self.use_bias = bool(use_bias)
        for n, v in (("kernel_initializer", kernel_initializer), ("recurrent_initializer", recurrent_initializer),
                     ("bias_initializer", bias_initializer)):
            _inits.get(v)
        self.kernel_initializer = kernel_initializer
        self.recurrent_initializer = recurrent_initializer
        self.bias_initializer = bias_initializer
        try:
            dropout = float(dropout)
            recurrent_dropout = float(recurrent_dropout)
        except (TypeError, ValueError):
            raise ValueError(f"{cname}: dropout and recurrent_dropout must be numbers in [0, 1). Received "
                             f"{dropout!r}, {recurrent_dropout!r}") from None
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{cname}: dropout must be in [0, 1). Received {dropout!r}")
        if not 0.0 <= recurrent_dropout < 1.0:
            raise ValueError(f"{cname}: recurrent_dropout must be in [0, 1). Received {recurrent_dropout!r}")
        if not isinstance(stateful, (bool, np.bool_)):
            raise TypeError(f"{cname}: stateful must be True or False. Received {stateful!r}")
        self.dropout = dropout
        self.recurrent_dropout = recurrent_dropout
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.states = None  # stateful: the final states of the last call, NumPy (batch, units) arrays
        self.unroll = bool(unroll)  # accepted for compatibility: the scan is the same either way
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.seed = seed
        self._rng = np.random.default_rng(seed) if seed is not None else None

    # ---- shapes and weights
    @property
    def _n_states(self):
        return 2 if self.kind == "lstm" else 1

    def _bias_shape(self):
        return (_KIND_GATES[self.kind] * self.units,)

    def build(self, input_shape):
        cname = type(self).__name__
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise InputSpecError(f"{self.name}: {cname} expects inputs of shape (batch, steps, features) with known "
                                 f"features. Received input shape {_shape_str(tuple(input_shape))}")
        G = _KIND_GATES[self.kind]
        self.add_weight("kernel", (int(input_shape[-1]), G * self.units), self.kernel_initializer)
        self.add_weight("recurrent_kernel", (self.units, G * self.units), self.recurrent_initializer)
        if self.use_bias:
            self.add_weight("bias", self._bias_shape(), self._bias_init())
        super().build(input_shape)

    def _bias_init(self):
        return self.bias_initializer

    def compute_output_shape(self, s):
        s = tuple(s)
        if len(s) != 2:
            raise InputSpecError(f"{self.name}: {type(self).__name__} expects inputs of shape (batch, steps, "
                                 f"features). Received input shape {_shape_str(s)}")
        out = (s[0], self.units) if self.return_sequences else (self.units,)
        if self.return_state:
            return [out] + [(self.units,)] * self._n_states
        return out

    def compute_mask(self, mask):
        if mask is None:
            return None
        return mask if self.return_sequences and not self.return_state else None

    def _check_input(self, shape):
        if self.input_shape is not None and (len(shape) != 2 or shape[-1] != self.input_shape[-1]):
            raise InputSpecError(f"Input of shape {_shape_str(tuple(shape))} does not fit layer {self.name!r} "
                                 f"({type(self).__name__}), which expects {_shape_str((None, self.input_shape[-1]))}")

    # ---- the computation
    def _split_bias(self):
        """(input bias or None, recurrent bias or None) as tape values."""
        if not self.use_bias:
            return None, None
        return self._var("bias"), None

    def _states(self, initial_state, B, dt):
        if initial_state is None:
            return [None] * self._n_states
        st = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        if len(st) != self._n_states:
            raise ValueError(f"{self.name}: initial_state must be a list of {self._n_states} arrays "
                             f"({'[h, c]' if self.kind == 'lstm' else '[h]'}). Received {len(st)}")
        out = []
        for s in st:
            s = s if isinstance(s, Tensor) else np.asarray(s, dtype=dt)
            if tuple(s.shape) != (B, self.units):
                raise ValueError(f"{self.name}: each initial state must have shape (batch, units) = "
                                 f"({B}, {self.units}). Received {tuple(s.shape)}")
            out.append(s)
        return out

    def _kept_states(self, B, dt):
        """The states a stateful layer starts this call from: the last call's final states
        (zeros before the first call and after ``reset_state``)."""
        if self.states is None:
            self.states = [np.zeros((B, self.units), dt) for _ in range(self._n_states)]
        kept_b = self.states[0].shape[0]
        if kept_b != B:
            raise ValueError(f"{self.name}: a stateful {type(self).__name__} keeps its states for a batch of "
                             f"{kept_b}; every call must have that batch size. Received a batch of {B} (give fit "
                             f"and predict batch_size={kept_b} and a sample count that is a multiple of it; for "
                             f"another batch size, build a second model and copy the weights with set_weights)")
        return [np.asarray(v, dt) for v in self.states]

    def reset_state(self):
        """Set the kept states of a stateful layer back to zeros (Keras 3; the batch size stays).
        Nothing to do before the first call or on a layer that is not stateful."""
        if self.states is not None:
            self.states = [np.zeros_like(v) for v in self.states]

    def reset_states(self):
        """Keras 3's compatibility alias of ``reset_state``."""
        self.reset_state()

    def call(self, sequences, initial_state=None, mask=None, training=False):
        x = sequences
        xv = value_of(x)
        if xv.ndim != 3:
            raise InputSpecError(f"{self.name}: {type(self).__name__} expects inputs of shape (batch, steps, "
                                 f"features). Received shape {tuple(xv.shape)}")
        if xv.dtype.kind in "iub":  # integer or boolean features (not ids): as the layer's floats, as Keras
            x = xv = xv.astype(self._compute_dtype)
        elif xv.dtype.kind != "f":
            raise TypeError(f"{self.name}: inputs must be numbers. Received dtype {xv.dtype}")
        B, T, _ = xv.shape
        if T == 0:
            raise ValueError(f"{self.name}: the input has no time steps (shape {tuple(xv.shape)})")
        m = None
        if mask is not None:
            m = np.asarray(value_of(mask), dtype=bool)
            if m.shape != (B, T):
                raise ValueError(f"{self.name}: mask must have shape (batch, steps) = ({B}, {T}). Received {m.shape}")
            if m.all():
                m = None
        dt = xv.dtype
        G, H = _KIND_GATES[self.kind], self.units
        # Keras 3: an LSTM or GRU with recurrent_dropout > 0 runs its cell's implementation=1, one
        # dropout mask per gate for the inputs and for the state; otherwise one input mask
        per_gate = self.kind != "simple_rnn" and self.recurrent_dropout > 0
        xmask = rmask = None
        if training and self.dropout > 0:
            if per_gate:
                xmask = _keep_masks(self._rng or rng(), self.dropout, (G, B, xv.shape[2]), dt)
            else:
                x = F.dropout(x, self.dropout, self._rng or rng(), noise_shape=(None, 1, None))
        if training and self.recurrent_dropout > 0:
            rmask = _keep_masks(self._rng or rng(), self.recurrent_dropout, (G if per_gate else 1, B, H), dt)
        if self.go_backwards:
            x = F.getitem(x, (slice(None), slice(None, None, -1)))
            if m is not None:
                m = m[:, ::-1]
        # placeholder data (shape probes, builds on zeros, one-row output counts: keras/_common.py)
        probing = self.stateful and in_placeholder_run()
        if self.stateful and initial_state is None and not probing:
            initial_state = self._kept_states(B, dt)
        states = self._states(initial_state, B, xv.dtype)
        b_in, b_rec = self._split_bias()
        with_c = self.kind == "lstm" and (self.return_state or self.stateful)
        kernel, U = self._var("kernel"), self._var("recurrent_kernel")
        if (self.kind == "lstm" and self._act == "tanh" and self._ract == "sigmoid" and _FUSED_LSTM
                and xmask is None and rmask is None
                and value_of(x).dtype == np.float32 and value_of(kernel).dtype == np.float32
                and value_of(U).dtype == np.float32):
            y = _lstm_fused(x, kernel, b_in, U, states[0], states[1], m, with_c)
        else:
            if xmask is None:
                xp = F.dense(x, kernel, b_in)
            else:  # gate g's projection sees x * xmask[g]
                parts = []
                for g in range(G):
                    cols = slice(g * H, (g + 1) * H)
                    bg = None if b_in is None else F.getitem(b_in, cols)
                    xg = F.multiply(x, xmask[g][:, None, :])
                    parts.append(F.dense(xg, F.getitem(kernel, (slice(None), cols)), bg))
                xp = F.concatenate(parts, axis=-1)
            y = _scan(self.kind, xp, U, b_rec, states[0], states[1] if self.kind == "lstm" else None, m,
                      self._act, self._ract, getattr(self, "reset_after", True), with_c, rmask)
        hs = F.getitem(y, (slice(None), slice(0, T))) if with_c else y
        h_last = F.getitem(hs, (slice(None), T - 1))
        if self.stateful and not probing:  # kept as constants: no gradient flows between calls
            kept = [np.array(value_of(h_last))]
            if self.kind == "lstm":
                kept.append(np.array(value_of(y)[:, T]))
            self.states = kept
        if self.return_sequences:
            out = hs
            if m is not None:
                keep = m if self.zero_output_for_mask else np.logical_or.accumulate(m, axis=1)
                out = F.multiply(hs, keep[:, :, None].astype(xv.dtype))
        else:
            out = h_last
            if m is not None and not m.any(axis=1).all():
                out = F.multiply(h_last, m.any(axis=1)[:, None].astype(xv.dtype))
        if not self.return_state:
            return out
        st = [h_last]
        if self.kind == "lstm":
            st.append(F.getitem(y, (slice(None), T)))
        return [out] + st

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation.name,
                "recurrent_activation": self.recurrent_activation.name, "use_bias": self.use_bias,
                "kernel_initializer": _init_name(self.kernel_initializer),
                "recurrent_initializer": _init_name(self.recurrent_initializer),
                "bias_initializer": _init_name(self.bias_initializer), "dropout": self.dropout,
                "recurrent_dropout": self.recurrent_dropout, "return_sequences": self.return_sequences,
                "return_state": self.return_state, "go_backwards": self.go_backwards, "stateful": self.stateful,
                "unroll": self.unroll, "zero_output_for_mask": self.zero_output_for_mask, "seed": self.seed}


class SimpleRNN(_RNN):
    """h_t = activation(x_t @ kernel + h_{t-1} @ recurrent_kernel + bias)."""

    kind = "simple_rnn"

    def __init__(self, units, activation="tanh", **kw):
        if "recurrent_activation" in kw:
            raise TypeError("SimpleRNN: unexpected keyword argument 'recurrent_activation'")
        super().__init__(units, activation=activation, **kw)

    def get_config(self):
        cfg = super().get_config()
        cfg.pop("recurrent_activation")
        return cfg


class LSTM(_RNN):
    """Long short-term memory; gates i, f, c, o along the kernels' last axis (Keras 3 layout).
    ``unit_forget_bias`` (default True) starts the forget gate's bias at 1."""

    kind = "lstm"

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", unit_forget_bias=True, **kw):
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation, **kw)
        self.unit_forget_bias = bool(unit_forget_bias)

    def _bias_init(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        base, H = _inits.get(self.bias_initializer), self.units

        def init(shape, dtype=np.float32):
            b = np.asarray(base(shape), dtype=dtype)
            b[H:2 * H] = 1.0
            return b
        return init

    def get_config(self):
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}


class GRU(_RNN):
    """Gated recurrent unit; gates z, r, h along the kernels' last axis (Keras 3 layout).
    ``reset_after=True`` (Keras 3's default, torch.nn.GRU's formula): bias (2, 3*units) holds
    the input bias and the recurrent bias; ``reset_after=False``: bias (3*units,)."""

    kind = "gru"

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", reset_after=True, **kw):
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation, **kw)
        self.reset_after = bool(reset_after)

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _split_bias(self):
        if not self.use_bias:
            return None, None
        if not self.reset_after:
            return self._var("bias"), None
        b = self._var("bias")
        return F.getitem(b, 0), F.getitem(b, 1)

    def get_config(self):
        return {**super().get_config(), "reset_after": self.reset_after}


# ---------------------------------------------------------------- Bidirectional
_MERGE_MODES = ("concat", "sum", "mul", "ave", None)


class Bidirectional(Layer):
    """Run a recurrent layer forward and a copy of it backward over the steps and merge the
    two outputs (``merge_mode`` concat, sum, mul, ave, or None for a list). The backward
    layer's sequence is flipped back to the input's order before merging. Weights: the
    forward layer's, then the backward layer's (Keras's order)."""

    supports_masking = True

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None, **kw):
        if not isinstance(layer, _RNN):
            raise TypeError(f"Bidirectional: layer must be a SimpleRNN, LSTM or GRU instance. Received "
                             f"{type(layer).__name__}")
        if merge_mode not in _MERGE_MODES:
            raise ValueError(f"Bidirectional: merge_mode must be one of 'concat', 'sum', 'mul', 'ave' or None. "
                             f"Received {merge_mode!r}")
        if weights is not None:
            raise ValueError("Bidirectional: weights= is not supported; call set_weights after building")
        if kw.get("name") is None:
            kw["name"] = _layers._auto_name("bidirectional")
        super().__init__(**kw)
        self.merge_mode = merge_mode
        cfg = layer.get_config()
        cfg.pop("input_shape", None)
        cfg["name"] = "forward_" + layer.name.removeprefix("forward_")
        self.forward_layer = type(layer).from_config(cfg)
        if backward_layer is None:
            bcfg = dict(cfg, name="backward_" + layer.name.removeprefix("backward_"),
                        go_backwards=not layer.go_backwards)
            if cfg.get("seed") is not None:  # its own dropout masks, still reproducible
                bcfg["seed"] = int(cfg["seed"]) + 1
            self.backward_layer = type(layer).from_config(bcfg)
        else:
            if not isinstance(backward_layer, _RNN):
                raise TypeError(f"Bidirectional: backward_layer must be a SimpleRNN, LSTM or GRU instance. "
                                 f"Received {type(backward_layer).__name__}")
            for attr in ("return_sequences", "return_state", "stateful"):
                if getattr(backward_layer, attr) != getattr(layer, attr):
                    raise ValueError(f"Bidirectional: backward_layer.{attr} must equal layer.{attr} "
                                     f"({getattr(layer, attr)}). Received {getattr(backward_layer, attr)}")
            if backward_layer.go_backwards == layer.go_backwards:
                raise ValueError("Bidirectional: backward_layer.go_backwards must differ from layer.go_backwards")
            self.backward_layer = backward_layer
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        self.stateful = layer.stateful
        # Keras: padded steps of a returned sequence are zeros on both sides
        self.forward_layer.zero_output_for_mask = self.return_sequences
        self.backward_layer.zero_output_for_mask = self.return_sequences
        if layer._input_shape_arg is not None and self._input_shape_arg is None:
            self._input_shape_arg = layer._input_shape_arg

    def reset_state(self):
        """Both wrapped layers' kept states back to zeros (Keras 3: AttributeError when the
        wrapped layer is not stateful)."""
        if not self.stateful:
            raise AttributeError(f"{self.name}: reset_state needs a stateful layer (the wrapped layer has "
                                 f"stateful=False)")
        self.forward_layer.reset_state()
        self.backward_layer.reset_state()

    def reset_states(self):
        """Keras 3's compatibility alias of ``reset_state``."""
        self.reset_state()

    @property
    def states(self):
        """The forward layer's kept states then the backward layer's, or None before the first call."""
        f, b = self.forward_layer.states, self.backward_layer.states
        return tuple(f + b) if f and b else None

    def per_example_support(self):
        """DP-SGD: the wrapped layers have no per-example gradient rule (the reason, named)."""
        if not self.trainable:
            return None
        return self.forward_layer.per_example_support() or self.backward_layer.per_example_support()

    def build(self, input_shape):
        self.forward_layer.build(tuple(input_shape))
        self.backward_layer.build(tuple(input_shape))
        super().build(input_shape)

    def compute_output_shape(self, s):
        o = self.forward_layer.compute_output_shape(s)
        st = []
        if self.return_state:
            o, st = o[0], o[1:]
            st = st + st
        if self.merge_mode == "concat":
            o = o[:-1] + (2 * o[-1],)
        elif self.merge_mode is None:
            return [o, o] + st
        return [o] + st if self.return_state else o

    def compute_mask(self, mask):
        if mask is None or not self.return_sequences or self.return_state or self.merge_mode is None:
            return None
        return mask

    def call(self, sequences, initial_state=None, mask=None, training=False):
        fs = bs = None
        if initial_state is not None:
            st = list(initial_state)
            n = len(st)
            if n % 2:
                raise ValueError(f"{self.name}: initial_state must hold the forward layer's states then the "
                                 f"backward layer's (an even count). Received {n}")
            fs, bs = st[:n // 2], st[n // 2:]
        y = self.forward_layer(sequences, initial_state=fs, mask=mask, training=training)
        y_rev = self.backward_layer(sequences, initial_state=bs, mask=mask, training=training)
        if self.return_state:
            y, f_states = y[0], y[1:]
            y_rev, b_states = y_rev[0], y_rev[1:]
        if self.return_sequences:
            y_rev = F.getitem(y_rev, (slice(None), slice(None, None, -1)))
        if self.merge_mode == "concat":
            out = F.concatenate([y, y_rev], axis=-1)
        elif self.merge_mode == "sum":
            out = F.add(y, y_rev)
        elif self.merge_mode == "ave":
            out = F.multiply(F.add(y, y_rev), np.asarray(0.5, dtype=value_of(y).dtype))
        elif self.merge_mode == "mul":
            out = F.multiply(y, y_rev)
        else:
            out = [y, y_rev]
        if self.return_state:
            return (out if isinstance(out, list) else [out]) + list(f_states) + list(b_states)
        return out

    def get_config(self):
        from pyaiml.keras import serialization

        cfg = {**super().get_config(), "layer": serialization.serialize_layer(self.forward_layer),
               "merge_mode": self.merge_mode}
        b = self.backward_layer
        cfg["backward_layer"] = serialization.serialize_layer(b)
        return cfg

    @classmethod
    def from_config(cls, config):
        from pyaiml.keras import serialization

        config = dict(config)
        layer = serialization.deserialize_layer(config.pop("layer"))
        back = config.pop("backward_layer", None)
        if back is not None:
            back = serialization.deserialize_layer(back)
        return cls(layer, backward_layer=back, **config)


# ---------------------------------------------------------------- TimeDistributed
class TimeDistributed(Layer):
    """Apply one layer to every time step: (batch, steps, *features) is folded to
    (batch*steps, *features), run through the wrapped layer (one set of weights shared by all
    steps), and unfolded to (batch, steps, *out). A mask on the steps passes through
    unchanged. Weights: the wrapped layer's."""

    supports_masking = True

    def __init__(self, layer, **kw):
        if not isinstance(layer, Layer):
            raise TypeError(f"TimeDistributed: layer must be a keras.layers.Layer instance. Received "
                            f"{type(layer).__name__}")
        if kw.get("name") is None:
            kw["name"] = _layers._auto_name("time_distributed")
        super().__init__(**kw)
        self.layer = layer
        if layer._input_shape_arg is not None and self._input_shape_arg is None:
            self._input_shape_arg = layer._input_shape_arg

    def per_example_support(self):
        return self.layer.per_example_support() if self.trainable else None

    def _need_steps(self, s):
        if len(s) < 2:
            raise InputSpecError(f"{self.name}: TimeDistributed needs an input of at least 3 dimensions (batch, "
                                 f"steps, features). Received input shape {_shape_str(tuple(s))}")

    def build(self, input_shape):
        s = tuple(input_shape)
        self._need_steps(s)
        if not self.layer.built:
            self.layer.build(s[1:])
            self.layer.built = True
        super().build(s)

    def compute_output_shape(self, s):
        s = tuple(s)
        self._need_steps(s)
        return (s[0],) + tuple(self.layer.compute_output_shape(s[1:]))

    def compute_mask(self, mask):
        return mask

    def call(self, inputs, training=False):
        shape = value_of(inputs).shape
        if len(shape) < 3:
            raise InputSpecError(f"{self.name}: TimeDistributed needs an input of at least 3 dimensions (batch, "
                                 f"steps, features). Received input shape {_shape_str(tuple(shape[1:]))}")
        b, t = shape[0], shape[1]
        y = self.layer(F.reshape(inputs, (b * t,) + tuple(shape[2:])), training=training)
        if isinstance(y, (list, tuple)):
            raise TypeError(f"{self.name}: TimeDistributed needs a wrapped layer with one output; "
                            f"{self.layer.name!r} returned {len(y)}")
        return F.reshape(y, (b, t) + tuple(value_of(y).shape[1:]))

    def get_config(self):
        from pyaiml.keras import serialization

        return {**super().get_config(), "layer": serialization.serialize_layer(self.layer)}

    @classmethod
    def from_config(cls, config):
        from pyaiml.keras import serialization

        config = dict(config)
        return cls(serialization.deserialize_layer(config.pop("layer")), **config)


# ---------------------------------------------------------------- cells and the RNN wrapper
class _Cell(_layers.Layer):
    """A recurrent cell: ``call(inputs, states) -> (output, new_states)`` for one step, written
    with the tape's ops (so ``RNN(cell)`` trains through the tape, step by step). Weights as
    Keras names and lays them out."""

    def __init__(self, units, activation="tanh", use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", **kw):
        super().__init__(**kw)
        if not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"{type(self).__name__}: units must be a positive integer. Received {units!r}")
        self.units = int(units)
        self.activation = _layers._acts.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer, self.recurrent_initializer = kernel_initializer, recurrent_initializer
        self.bias_initializer = bias_initializer

    _gates = 1

    @property
    def state_size(self):
        return self.units

    @property
    def output_size(self):
        return self.units

    def build(self, input_shape):
        d = int(input_shape[-1])
        g = self._gates * self.units
        self.kernel = self.add_weight(shape=(d, g), initializer=self.kernel_initializer, name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(self.units, g), initializer=self.recurrent_initializer,
                                                name="recurrent_kernel")
        if self.use_bias:
            self.bias = self.add_weight(shape=self._bias_shape(g), initializer=self.bias_initializer, name="bias")
        self.built = True

    def _bias_shape(self, g):
        return (g,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation.name,
                "use_bias": self.use_bias, "kernel_initializer": _layers._init_name(self.kernel_initializer),
                "recurrent_initializer": _layers._init_name(self.recurrent_initializer),
                "bias_initializer": _layers._init_name(self.bias_initializer)}


def _act(a, x):
    return _layers._apply_act(a, x)


class SimpleRNNCell(_Cell):
    """h_t = activation(x_t K + h_{t-1} U + b)."""

    def call(self, inputs, states, training=None):
        h = states[0] if isinstance(states, (list, tuple)) else states
        z = F.add(F.matmul(inputs, self.kernel), F.matmul(h, self.recurrent_kernel))
        if self.use_bias:
            z = F.add(z, self.bias)
        y = _act(self.activation, z)
        return y, [y]


class LSTMCell(_Cell):
    """Keras's LSTM cell (gates i, f, c, o along the last axis; recurrent_activation for i, f,
    o, activation for the candidate and the output)."""
    _gates = 4

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True, unit_forget_bias=True,
                 **kw):
        super().__init__(units, activation, use_bias, **kw)
        self.recurrent_activation = _layers._acts.get(recurrent_activation)
        self.unit_forget_bias = bool(unit_forget_bias)

    @property
    def state_size(self):
        return [self.units, self.units]

    def build(self, input_shape):
        super().build(input_shape)
        if self.use_bias and self.unit_forget_bias and _layers._init_name(self.bias_initializer) == "zeros":
            self.bias.value[self.units:2 * self.units] = 1.0  # Keras: the forget gate's bias starts at 1

    def call(self, inputs, states, training=None):
        h, c = states
        z = F.add(F.matmul(inputs, self.kernel), F.matmul(h, self.recurrent_kernel))
        if self.use_bias:
            z = F.add(z, self.bias)
        i, f, g, o = F.split(z, 4, -1)
        i, f, o = (_act(self.recurrent_activation, t) for t in (i, f, o))
        c2 = F.add(F.multiply(f, c), F.multiply(i, _act(self.activation, g)))
        h2 = F.multiply(o, _act(self.activation, c2))
        return h2, [h2, c2]

    def get_config(self):
        return {**super().get_config(), "recurrent_activation": self.recurrent_activation.name,
                "unit_forget_bias": self.unit_forget_bias}


class GRUCell(_Cell):
    """Keras 3's GRU cell with reset_after=True (gates z, r, h; the bias (2, 3 units): input and
    recurrent)."""
    _gates = 3

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True, reset_after=True,
                 **kw):
        super().__init__(units, activation, use_bias, **kw)
        if not reset_after:
            raise ValueError("GRUCell: only reset_after=True (Keras 3's default) is supported")
        self.recurrent_activation = _layers._acts.get(recurrent_activation)
        self.reset_after = True

    def _bias_shape(self, g):
        return (2, g)

    def call(self, inputs, states, training=None):
        h = states[0] if isinstance(states, (list, tuple)) else states
        xz = F.matmul(inputs, self.kernel)
        hz = F.matmul(h, self.recurrent_kernel)
        if self.use_bias:
            xz = F.add(xz, F.getitem(self.bias, 0))
            hz = F.add(hz, F.getitem(self.bias, 1))
        x_z, x_r, x_h = F.split(xz, 3, -1)
        h_z, h_r, h_h = F.split(hz, 3, -1)
        z = _act(self.recurrent_activation, F.add(x_z, h_z))
        r = _act(self.recurrent_activation, F.add(x_r, h_r))
        hh = _act(self.activation, F.add(x_h, F.multiply(r, h_h)))
        h2 = F.add(F.multiply(z, h), F.multiply(F.subtract(1.0, z), hh))
        return h2, [h2]

    def get_config(self):
        return {**super().get_config(), "recurrent_activation": self.recurrent_activation.name, "reset_after": True}


class RNN(_layers.Layer):
    """Keras's RNN wrapper: runs ``cell`` over the steps of (batch, steps, features), one tape
    call per step (a cell written by the user trains too). ``return_sequences``,
    ``return_state``, ``go_backwards`` (the outputs then come in the order processed, as in
    Keras); ``initial_state`` as a call argument. Not here: masks, stateful, unroll (the built-in
    LSTM/GRU/SimpleRNN layers run fused kernels and take masks)."""

    def __init__(self, cell, return_sequences=False, return_state=False, go_backwards=False, stateful=False,
                 unroll=False, **kw):
        super().__init__(**kw)
        if not isinstance(cell, _layers.Layer) or not hasattr(cell, "state_size"):
            raise TypeError(f"RNN: cell must be a layer with a state_size. Received {type(cell).__name__}")
        if stateful:
            raise ValueError("RNN: stateful=True is not supported (the LSTM/GRU/SimpleRNN layers take it)")
        self.cell = cell
        self.return_sequences, self.return_state = bool(return_sequences), bool(return_state)
        self.go_backwards = bool(go_backwards)

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise InputSpecError(f"{self.name}: RNN expects inputs of rank 3 (batch, steps, features) with known "
                                 f"features. Received {_shape_str(tuple(input_shape))}")
        if not self.cell.built:  # the cell's weights now (a model rebuilt from its file sets them next)
            self.cell._build_for_call(np.zeros((1, int(input_shape[-1])), np.float32), [], {})
        super().build(input_shape)

    def _sizes(self):
        s = self.cell.state_size
        return [int(v) for v in s] if isinstance(s, (list, tuple)) else [int(s)]

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 2:
            raise InputSpecError(f"{self.name}: RNN expects inputs of rank 3 (batch, steps, features). Received "
                                 f"{_shape_str(tuple(input_shape))}")
        out = int(getattr(self.cell, "output_size", self._sizes()[0]))
        return (input_shape[0], out) if self.return_sequences else (out,)

    def call(self, inputs, training=None, initial_state=None, mask=None):
        if mask is not None:
            raise ValueError(f"{self.name}: RNN takes no mask (the LSTM/GRU/SimpleRNN layers do)")
        shape = value_of(inputs).shape
        if len(shape) != 3:
            raise ValueError(f"{self.name}: RNN expects inputs of rank 3 (batch, steps, features). Received shape "
                             f"{tuple(shape)}")
        if shape[1] == 0:
            raise ValueError(f"{self.name}: RNN needs at least one step. Received shape {tuple(shape)}")
        dt = value_of(inputs).dtype
        sizes = self._sizes()
        if initial_state is None:
            states = [np.zeros((shape[0], n), dt) for n in sizes]
        else:
            states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
            got = [tuple(np.shape(value_of(v))) for v in states]
            if got != [(shape[0], n) for n in sizes]:
                raise ValueError(f"{self.name}: initial_state must be {len(sizes)} array(s) of shapes "
                                 f"{[(shape[0], n) for n in sizes]}. Received {got}")
        steps = range(shape[1] - 1, -1, -1) if self.go_backwards else range(shape[1])
        outs = []
        for t in steps:
            out, states = self.cell(F.getitem(inputs, (slice(None), t)), states)
            states = list(states) if isinstance(states, (list, tuple)) else [states]
            outs.append(out)
        y = F.stack(outs, axis=1) if self.return_sequences else outs[-1]
        return [y] + states if self.return_state else y

    def get_config(self):
        from pyaiml.keras import serialization

        return {**super().get_config(), "cell": serialization.serialize_layer(self.cell),
                "return_sequences": self.return_sequences, "return_state": self.return_state,
                "go_backwards": self.go_backwards}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from pyaiml.keras import serialization

        config = dict(config)
        return cls(serialization.deserialize_layer(config.pop("cell"), custom_objects), **config)


CLASSES = (SimpleRNN, LSTM, GRU, Bidirectional, TimeDistributed, SimpleRNNCell, LSTMCell, GRUCell, RNN)
for _c in CLASSES:
    _layers._LAYERS[_c.__name__] = _c
