"""NumPy oracle of the Word2Vec epoch trainer: slow, obvious, float64 inside.

Same arguments and results as ``pyaiml._C.w2v_train_epoch`` (csrc/cpu/word2vec.h) and the
Numba fallback; draws the same random numbers (splitmix64 in Python integers), but computes
sigma exactly and updates one output row at a time after the block's dot products, in
float64, writing float32 back. Jobs run one after another (``workers`` is ignored).
Only for tiny corpora (tests); the registry uses it for PYAIML_BACKEND=numpy.

Shapes: syn0/syn1neg/syn1 (V, ld) float32, ld a multiple of 16 (padding columns zero);
words (N,) int32; sent_off (S+1,) int64; job_off (J+1,) int64.
"""
from __future__ import annotations

import math

import numpy as np

MASK = (1 << 64) - 1


class _Rng:
    def __init__(self, seed, epoch, job):
        self.s = (seed + 0x632BE59BD9B4E019 * (epoch + 1) + 0x9E3779B97F4A7C15 * (job + 1)) & MASK

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)


def _below(r, n):
    return ((r >> 32) * n) >> 32


def _rows(l1, neu1e, syn, rows, labels, alpha, loss):
    """Dot products of l1 with every row first (blocks of 16, as the kernels do), then updates."""
    for b0 in range(0, len(rows), 16):
        blk = list(range(b0, min(b0 + 16, len(rows))))
        fs = [float(l1 @ syn[rows[t]].astype(np.float64)) for t in blk]
        for t, f in zip(blk, fs):
            lab = labels[t]
            g = (lab - 1.0 / (1.0 + math.exp(-f))) * alpha
            x = f if lab > 0.5 else -f
            loss += math.log1p(math.exp(-x)) if x > 0 else -x + math.log1p(math.exp(x))
            r = syn[rows[t]].astype(np.float64)
            neu1e += g * r
            syn[rows[t]] = (r + g * l1).astype(np.float32)
    return loss


def train_epoch(syn0, syn1neg, syn1, words, sent_off, job_off, sample_thr, alias_thr, alias_idx, codes, points,
                code_off, sg, hs, negative, window, cbow_mean, shrink_windows, alpha, min_alpha, epoch, epochs,
                seed, workers, compute_loss, lockf=None):
    V, ld = syn0.shape
    N = max(len(words), 1)
    total = float(N) * epochs
    loss_all, eff_all, pairs_all = 0.0, 0, 0
    for job in range(len(job_off) - 1):
        rng = _Rng(int(seed) & MASK, int(epoch), job)
        loss = 0.0
        for s in range(job_off[job], job_off[job + 1]):
            w0, w1 = int(sent_off[s]), int(sent_off[s + 1])
            al = max(alpha - (alpha - min_alpha) * ((epoch * N + w0) / total), min_alpha)
            al = float(np.float32(al))
            sent = [int(words[p]) for p in range(w0, w1) if (rng.next() >> 32) <= int(sample_thr[words[p]])]
            eff_all += len(sent)
            n = len(sent)

            def example(l1, w):
                nonlocal loss
                neu1e = np.zeros(ld)
                if hs:
                    c0, c1 = int(code_off[w]), int(code_off[w + 1])
                    loss = _rows(l1, neu1e, syn1, [int(p) for p in points[c0:c1]],
                                 [1.0 - float(c) for c in codes[c0:c1]], al, loss)
                if negative > 0:
                    rows, labels = [w], [1.0]
                    for _ in range(negative):
                        r = rng.next()
                        i = _below(r, V)
                        t = i if (r & 0xFFFFFFFF) < int(alias_thr[i]) else int(alias_idx[i])
                        if t != w:
                            rows.append(t)
                            labels.append(0.0)
                    loss = _rows(l1, neu1e, syn1neg, rows, labels, al, loss)
                return neu1e

            for i in range(n):
                b = _below(rng.next(), window) if shrink_windows else 0
                ctx = [j for j in range(max(i - window + b, 0), min(i + window - b + 1, n)) if j != i]
                if sg:
                    for j in ctx:
                        e = example(syn0[sent[j]].astype(np.float64), sent[i])
                        f = 1.0 if lockf is None else float(lockf[sent[j]])
                        syn0[sent[j]] = (syn0[sent[j]].astype(np.float64) + f * e).astype(np.float32)
                        pairs_all += 1
                elif ctx:
                    l1 = np.sum([syn0[sent[j]].astype(np.float64) for j in ctx], axis=0)
                    if cbow_mean:
                        l1 /= len(ctx)
                    e = example(l1, sent[i])
                    if not cbow_mean:
                        e /= len(ctx)
                    for j in ctx:
                        f = 1.0 if lockf is None else float(lockf[sent[j]])
                        syn0[sent[j]] = (syn0[sent[j]].astype(np.float64) + f * e).astype(np.float32)
                    pairs_all += 1
        loss_all += loss
    return (loss_all if compute_loss else 0.0), eff_all, pairs_all
