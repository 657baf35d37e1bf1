"""Per-example gradients of the ops where a weight meets the batch: the rules DP-SGD clips by.

What it is. A rule holds what one op saved in its forward pass and the gradient of its output
for a batch whose examples are independent (row i of the output depends only on row i of
the input). For the weights it covers (``names``) it gives
- ``sq_norms()``: (B,) float64, the squared L2 norm of example i's gradient over those weights,
  without building the (B, *weight shape) arrays where a smaller form exists;
- ``clipped(c)``: sum over examples of c_i times example i's gradient, one array per weight;
- ``grads()``: the per-example gradients themselves, (B, *weight shape) per weight.
Rules: :class:`DenseRule` (x @ kernel + bias), :class:`ConvRule` (1-D/2-D convolution, any
stride, padding, dilation, groups and layout), :class:`RowRule` (layer normalisation's
gamma and beta), :class:`EmbeddingRule` (rows of a table looked up by ids) and
:class:`BroadcastRule` (a weight added to or multiplied with batch-shaped values).

Who uses them. The tape's clipped gradient (``GradientTape.clipped_gradient``,
pyaiml/autograd/tape.py), which attaches a rule to every recorded op of these kinds; every
Keras model's DP-SGD step goes through it.

Not here: ops that mix examples (batch normalisation with batch statistics), recurrent
kernels, attention weights inside one fused op. Tests: tests/test_privacy_dp.py (Keras
models' clipped gradients against a loop over single examples),
tests/test_autograd_per_example.py (each rule).
"""
from __future__ import annotations

import numpy as np

from pyaiml import ops


def sqnorms(a):
    """(B, ...) -> (B,) float64: the squared L2 norm of each example's slice."""
    a2 = a.reshape(a.shape[0], -1)
    return np.einsum("ij,ij->i", a2, a2).astype(np.float64)


def _weighted_sum(c, g):
    """sum_i c_i g_i over the first axis."""
    return np.tensordot(c.astype(g.dtype), g, axes=1)


class Rule:
    """Base: ``names`` are the weights covered; subclasses define ``grads`` and may define a
    cheaper ``sq_norms`` and ``clipped``."""

    names: tuple = ()

    def grads(self):
        raise NotImplementedError

    def sq_norms(self):
        return sum(sqnorms(g) for g in self.grads())

    def clipped(self, c):
        return tuple(_weighted_sum(c, g) for g in self.grads())


class DenseRule(Rule):
    """y = x @ kernel (+ bias), x (B, ..., in), kernel (in, out). Example i's kernel gradient is
    G_i = X_i^T D_i, X_i (T, in) its inputs, D_i (T, out) its output gradients (T = 1 for 2-D x)."""

    def __init__(self, x, dz, kernel=True, bias=False):
        self.x, self.dz = x, dz
        self.kernel, self.bias = kernel, bias
        self.names = (("kernel",) if kernel else ()) + (("bias",) if bias else ())
        B = x.shape[0]
        self.x3 = x.reshape(B, -1, x.shape[-1])
        self.d3 = dz.reshape(B, -1, dz.shape[-1])
        self.g = None  # G_i, when sq_norms built them (long sequences)

    def grads(self):
        out = []
        if self.kernel:
            out.append(np.matmul(self.x3.transpose(0, 2, 1), self.d3))
        if self.bias:
            out.append(self.d3.sum(axis=1))
        return tuple(out)

    def sq_norms(self):
        x3, d3 = self.x3, self.d3
        T, D = x3.shape[1:]
        k = np.zeros(x3.shape[0])
        if self.kernel:
            if T == 1:  # ||x_i d_i^T||^2 = ||x_i||^2 ||d_i||^2: no (B, in, out) array
                k = sqnorms(x3) * sqnorms(d3)
            elif T * T <= D * d3.shape[-1]:  # ||X_i^T D_i||^2 = <X_i X_i^T, D_i D_i^T>: (B, T, T) arrays
                k = np.einsum("bts,bts->b", np.matmul(x3, x3.transpose(0, 2, 1)),
                              np.matmul(d3, d3.transpose(0, 2, 1))).astype(np.float64)
            else:  # long sequences: build G_i (kept for clipped)
                self.g = np.matmul(x3.transpose(0, 2, 1), d3)
                k = sqnorms(self.g)
        if self.bias:
            k = k + sqnorms(d3.sum(axis=1))
        return k

    def clipped(self, c):
        B = self.x.shape[0]
        units = self.d3.shape[-1]
        dzc = (self.dz.reshape(B, -1) * c.astype(self.dz.dtype)[:, None]).reshape(-1, units)
        out = []
        if self.kernel:
            if self.g is not None:
                out.append(_weighted_sum(c, self.g))
            else:
                out.append(ops.matmul(self.x.reshape(-1, self.x.shape[-1]).T, dzc))
        if self.bias:
            out.append(dzc.sum(axis=0))
        return tuple(out)


class ConvRule(Rule):
    """A convolution's kernel (OC, C/groups, *k) and bias gradients per example.

    ``x``: the op's input (N, *spatial, C) with channels last or (N, C, *spatial); ``dz``: the
    gradient of its output (before any fused activation: the caller masks it); ``padding``:
    the op's symmetric padding, int or per-axis. With P_i the example's input patches (gathered
    from strided views: the channels-last memory order, so gathering copies contiguous runs)
    and D_i (L, OC) its output gradients, the kernel gradient is D_i^T P_i per group: one
    batched matmul (or, when L*L is the smaller size, its squared norm <P_i P_i^T, D_i D_i^T>
    without building it). The clipped sum is one GEMM per group, (c * D)^T P over all rows."""

    def __init__(self, x, dz, kernel_size, stride, padding, dilation, groups, channels_last, bias=False,
                 kernel=True):
        r = len(kernel_size)
        tup = lambda v: tuple(int(e) for e in v) if isinstance(v, (tuple, list)) else (int(v),) * r
        self.x, self.dz = x, dz
        self.k, self.s, self.p, self.d = tuple(kernel_size), tup(stride), tup(padding), tup(dilation)
        self.G, self.cl, self.bias, self.kernel, self.r = int(groups), bool(channels_last), bias, kernel, r
        self.OC = dz.shape[-1] if self.cl else dz.shape[1]
        self.names = (("kernel",) if kernel else ()) + (("bias",) if bias else ())
        self._pd = None
        self.g = None

    def _patches(self):
        """P (B, G, L, prod(k) * Cg) and D (B, G, L, OC/G)."""
        if self._pd is not None:
            return self._pd
        r, G = self.r, self.G
        x = self.x if self.cl else np.moveaxis(self.x, 1, -1)  # (B, *spatial, C)
        if any(self.p):
            x = np.pad(x, [(0, 0)] + [(q, q) for q in self.p] + [(0, 0)])
        dz = self.dz if self.cl else np.moveaxis(self.dz, 1, -1)  # (B, *out spatial, OC)
        B, C, osp = x.shape[0], x.shape[-1], dz.shape[1:-1]
        st = x.strides
        win = np.lib.stride_tricks.as_strided(
            x, (B,) + osp + self.k + (G, C // G),
            (st[0],) + tuple(st[1 + i] * self.s[i] for i in range(r))
            + tuple(st[1 + i] * self.d[i] for i in range(r)) + (st[-1] * (C // G), st[-1]),
            writeable=False)
        L = int(np.prod(osp))
        if G == 1:
            P = np.ascontiguousarray(win).reshape(B, 1, L, -1)
        else:  # (B, *osp, *k, G, Cg) -> (B, G, *osp, *k, Cg)
            P = np.ascontiguousarray(np.moveaxis(win, 2 * r + 1, 1)).reshape(B, G, L, -1)
        D = dz.reshape(B, L, G, self.OC // G).transpose(0, 2, 1, 3)
        self._dzl = dz.reshape(B, L, self.OC)
        self._pd = (P, D)
        return P, D

    def _kernel_layout(self, g):
        """(..., OC, prod(k) * Cg) in (k..., cin) column order -> (..., OC, Cg, *k), the kernel's."""
        r = self.r
        lead = g.shape[:-2]
        cg = g.shape[-1] // int(np.prod(self.k))
        g = g.reshape(lead + (self.OC,) + self.k + (cg,))
        n = len(lead)
        return np.moveaxis(g, n + 1 + r, n + 1)

    def grads(self):
        P, D = self._patches()
        B = P.shape[0]
        out = []
        if self.kernel:
            g = np.matmul(D.transpose(0, 1, 3, 2), P).reshape(B, self.OC, -1)
            out.append(np.ascontiguousarray(self._kernel_layout(g)))
        if self.bias:
            out.append(D.sum(axis=2).reshape(B, self.OC))
        return tuple(out)

    def sq_norms(self):
        P, D = self._patches()
        L, K = P.shape[2:]
        if not self.kernel:
            k = np.zeros(P.shape[0])
        elif L * L < K * D.shape[-1]:  # ||D_i^T P_i||^2 = <P_i P_i^T, D_i D_i^T>: (B, G, L, L) arrays
            k = np.einsum("bgls,bgls->b", np.matmul(P, P.transpose(0, 1, 3, 2)),
                          np.matmul(D, D.transpose(0, 1, 3, 2))).astype(np.float64)
        else:
            self.g = np.matmul(D.transpose(0, 1, 3, 2), P)  # (B, G, OC/G, K), kept for clipped
            k = sqnorms(self.g)
        if self.bias:
            k = k + sqnorms(D.sum(axis=2))
        return k

    def clipped(self, c):
        P, D = self._patches()
        B, G, L, K = P.shape
        cd = c.astype(D.dtype)
        out = []
        if self.kernel and self.g is not None:
            s = np.tensordot(cd, self.g, axes=1)  # (G, OC/G, K)
        elif self.kernel:  # every example's rows at once, per group: (c D)^T P, (OC/G, B*L) @ (B*L, K)
            dzc = (self._dzl * cd[:, None, None]).reshape(B * L, self.OC)
            og = self.OC // G
            s = np.stack([ops.matmul(dzc[:, j * og:(j + 1) * og].T, P[:, j].reshape(B * L, K)) for j in range(G)])
        if self.kernel:
            out.append(self._kernel_layout(s.reshape(self.OC, K)))
        if self.bias:
            out.append(np.tensordot(cd, D.sum(axis=2), axes=1).reshape(self.OC))
        return tuple(out)


class RowRule(Rule):
    """Per-row scale and shift (layer normalisation): out = xhat * gamma + beta over the last
    axis; each example's gamma/beta gradients are sums over its own rows."""

    def __init__(self, dy, xhat, gamma=True, beta=True):
        self.dy, self.xhat, self.gamma, self.beta = dy, xhat, gamma, beta
        self.names = (("gamma",) if gamma else ()) + (("beta",) if beta else ())

    def grads(self):
        dy, c = self.dy, self.dy.shape[-1]
        B = dy.shape[0]
        out = []
        if self.gamma:
            out.append((dy * self.xhat).reshape(B, -1, c).sum(axis=1))
        if self.beta:
            out.append(dy.reshape(B, -1, c).sum(axis=1))
        return tuple(out)


class EmbeddingRule(Rule):
    """Rows of a table (input_dim, dim) looked up by ids (B, ...): example i's gradient has one
    row per distinct id it holds (the sum of that id's output gradients); rows are gathered by
    sorting (example, id) keys."""

    names = ("embeddings",)

    def __init__(self, ids, dy, input_dim):
        self.ids, self.dy, self.input_dim = ids, dy, int(input_dim)

    def _rows(self):
        """(example index, id, summed output gradient) of each distinct (example, id) pair."""
        ids = self.ids.reshape(self.ids.shape[0], -1)
        B, T = ids.shape
        dim = self.dy.shape[-1]
        dy = self.dy.reshape(B * T, dim)
        if B * T == 0:
            e = np.zeros(0, np.int64)
            return e, e, dy[:0]
        key = (np.arange(B, dtype=np.int64)[:, None] * self.input_dim + ids).reshape(-1)
        order = np.argsort(key, kind="stable")
        ks = key[order]
        start = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
        rows = np.add.reduceat(dy[order], start, axis=0)
        return ks[start] // self.input_dim, ks[start] % self.input_dim, rows

    def grads(self):
        ex, idv, rows = self._rows()
        g = np.zeros((self.ids.shape[0], self.input_dim, self.dy.shape[-1]), dtype=self.dy.dtype)
        g[ex, idv] = rows
        return (g,)

    def sq_norms(self):
        ex, _, rows = self._rows()
        return np.bincount(ex, weights=sqnorms(rows), minlength=self.ids.shape[0]).astype(np.float64)

    def clipped(self, c):
        dim = self.dy.shape[-1]
        cc = c.astype(self.dy.dtype).reshape((-1,) + (1,) * (self.dy.ndim - 1))
        out = np.zeros((self.input_dim, dim), dtype=self.dy.dtype)
        np.add.at(out, self.ids.reshape(-1), (self.dy * cc).reshape(-1, dim))
        return (out,)


class BroadcastRule(Rule):
    """A weight w broadcast against batch-shaped values of shape (B, ...): ``contrib`` is the
    output gradient times d(out)/d(w) elementwise (g for an add, g * other for a multiply);
    example i's gradient sums it over the axes w was broadcast along."""

    def __init__(self, contrib, shape, name="weight"):
        self.contrib, self.shape, self.names = contrib, tuple(shape), (name,)

    def grads(self):
        g = self.contrib
        B = g.shape[0]
        lead = g.ndim - 1 - len(self.shape)  # axes after the batch that w does not have
        if lead < 0:
            raise ValueError(f"per-example gradients: a weight of shape {self.shape} broadcast against values of "
                             f"shape {g.shape} (it would need a batch axis of its own)")
        if lead:
            g = g.sum(axis=tuple(range(1, 1 + lead)))
        keep = tuple(1 + i for i, s in enumerate(self.shape) if s == 1 and g.shape[1 + i] != 1)
        if keep:
            g = g.sum(axis=keep, keepdims=True)
        return (np.ascontiguousarray(g.reshape((B,) + self.shape)),)
