"""Numba fallback of the Word2Vec epoch trainer (same arguments and results as
``pyaiml._C.w2v_train_epoch``; see csrc/cpu/word2vec.h for the contract).

It draws the same random numbers in the same order as the C++ trainer (splitmix64 per job
seeded from (seed, epoch, job)), uses the same interpolated sigmoid table and the same
update order, so with workers=1 the two agree up to float rounding. ``workers`` > 1 runs
that many Python threads over the ``nogil`` kernel, each taking every workers-th job.

Not here: vocabulary and tables (pyaiml/text/vocab.py). Tests: tests/test_word2vec.py.
"""
from __future__ import annotations

import threading

import numba as nb
import numpy as np

SIG_N = 1024
SIG_MAX = 8.0
_x = (np.arange(SIG_N + 1, dtype=np.float64) / SIG_N) * (2.0 * SIG_MAX) - SIG_MAX
SIG_TABLE = (1.0 / (1.0 + np.exp(-_x))).astype(np.float32)

U = np.uint64
GOLDEN = U(0x9E3779B97F4A7C15)
M1 = U(0xBF58476D1CE4E5B9)
M2 = U(0x94D049BB133111EB)
EPOCH_MUL = U(0x632BE59BD9B4E019)


@nb.njit(cache=True, nogil=True)
def _splitmix(st):
    s = st[0] + GOLDEN
    st[0] = s
    z = s
    z = (z ^ (z >> U(30))) * M1
    z = (z ^ (z >> U(27))) * M2
    return z ^ (z >> U(31))


@nb.njit(cache=True, nogil=True)
def _below(r, n):
    return ((r >> U(32)) * U(n)) >> U(32)


@nb.njit(cache=True, nogil=True)
def _sigmoid(f, tab):
    x = (f + np.float32(SIG_MAX)) * np.float32(SIG_N / (2.0 * SIG_MAX))
    if not (x > np.float32(0.0)):
        return tab[0]
    if x >= np.float32(SIG_N):
        return tab[SIG_N]
    i = int(x)
    w = x - np.float32(i)
    return tab[i] + w * (tab[i + 1] - tab[i])


@nb.njit(cache=True, nogil=True)
def _softplus_neg(x):
    if x > 0:
        return np.log1p(np.exp(-x))
    return -x + np.log1p(np.exp(x))


@nb.njit(cache=True, nogil=True)
def _train_rows(l1, neu1e, syn, rows, labels, n, alpha, want_loss, tab, g, loss):
    ld = l1.shape[0]
    BLOCK = 16
    for b0 in range(0, n, BLOCK):
        nb_ = min(BLOCK, n - b0)
        for t in range(nb_):
            r = rows[b0 + t]
            f = np.float32(0.0)
            for k in range(ld):
                f += l1[k] * syn[r, k]
            lab = labels[b0 + t]
            g[t] = (lab - _sigmoid(f, tab)) * alpha
            if want_loss:
                loss += _softplus_neg(np.float64(f) if lab > 0.5 else -np.float64(f))
        for t in range(nb_):
            r = rows[b0 + t]
            gt = g[t]
            for k in range(ld):
                s = syn[r, k]
                neu1e[k] += gt * s
                syn[r, k] = s + gt * l1[k]
    return loss


@nb.njit(cache=True, nogil=True)
def _train_example(syn1neg, syn1, l1, neu1e, w, st, alpha, loss, hs, negative, V, alias_thr, alias_idx,
                   codes, points, code_off, want_loss, tab, rows, labels, g):
    if hs:
        c0 = code_off[w]
        c1 = code_off[w + 1]
        n = c1 - c0
        for d in range(n):
            rows[d] = points[c0 + d]
            labels[d] = np.float32(1.0) - np.float32(codes[c0 + d])
        loss = _train_rows(l1, neu1e, syn1, rows, labels, n, alpha, want_loss, tab, g, loss)
    if negative > 0:
        n = 0
        rows[n] = w
        labels[n] = np.float32(1.0)
        n += 1
        for d in range(negative):
            r = _splitmix(st)
            i = _below(r, V)
            if (r & U(0xFFFFFFFF)) < U(alias_thr[i]):
                t = np.int32(i)
            else:
                t = alias_idx[i]
            if t == w:
                continue
            rows[n] = t
            labels[n] = np.float32(0.0)
            n += 1
        loss = _train_rows(l1, neu1e, syn1neg, rows, labels, n, alpha, want_loss, tab, g, loss)
    return loss


@nb.njit(cache=True, nogil=True)
def _train_jobs(syn0, syn1neg, syn1, words, sent_off, job_off, sample_thr, alias_thr, alias_idx, codes, points,
                code_off, sg, hs, negative, window, cbow_mean, shrink_windows, alpha0, min_alpha, epoch, epochs,
                seed, want_loss, first_job, step, tab, job_loss, job_eff, job_pairs, max_sent, max_rows, lockf,
                use_lockf):
    V, ld = syn0.shape
    total_words = max(words.shape[0], 1)
    total = np.float64(total_words) * np.float64(epochs)
    sent = np.empty(max_sent, np.int32)
    rows = np.empty(max_rows, np.int32)
    labels = np.empty(max_rows, np.float32)
    g = np.empty(16, np.float32)
    neu1 = np.zeros(ld, np.float32)
    neu1e = np.zeros(ld, np.float32)
    st = np.empty(1, np.uint64)
    n_jobs = job_off.shape[0] - 1
    for job in range(first_job, n_jobs, step):
        st[0] = U(seed) + EPOCH_MUL * U(epoch + 1) + GOLDEN * U(job + 1)
        loss = 0.0
        eff = 0
        pairs = 0
        for s in range(job_off[job], job_off[job + 1]):
            w0 = sent_off[s]
            w1 = sent_off[s + 1]
            progress = (np.float64(epoch) * np.float64(total_words) + np.float64(w0)) / total
            al = alpha0 - (alpha0 - min_alpha) * progress
            if al < min_alpha:
                al = min_alpha
            alpha = np.float32(al)
            n = 0
            for p in range(w0, w1):
                w = words[p]
                if (_splitmix(st) >> U(32)) <= U(sample_thr[w]):
                    sent[n] = w
                    n += 1
            eff += n
            for i in range(n):
                b = 0
                if shrink_windows:
                    b = np.int64(_below(_splitmix(st), window))
                lo = max(i - window + b, 0)
                hi = min(i + window - b + 1, n)
                if sg:
                    for j in range(lo, hi):
                        if j == i:
                            continue
                        l1 = syn0[sent[j]]
                        neu1e[:] = 0
                        loss = _train_example(syn1neg, syn1, l1, neu1e, sent[i], st, alpha, loss, hs, negative, V,
                                              alias_thr, alias_idx, codes, points, code_off, want_loss, tab, rows,
                                              labels, g)
                        if use_lockf:
                            f = lockf[sent[j]]
                            for k in range(ld):
                                l1[k] += f * neu1e[k]
                        else:
                            for k in range(ld):
                                l1[k] += neu1e[k]
                        pairs += 1
                else:
                    count = 0
                    neu1[:] = 0
                    for j in range(lo, hi):
                        if j == i:
                            continue
                        r = sent[j]
                        for k in range(ld):
                            neu1[k] += syn0[r, k]
                        count += 1
                    if count == 0:
                        continue
                    inv = np.float32(1.0) / np.float32(count)
                    if cbow_mean:
                        for k in range(ld):
                            neu1[k] *= inv
                    neu1e[:] = 0
                    loss = _train_example(syn1neg, syn1, neu1, neu1e, sent[i], st, alpha, loss, hs, negative, V,
                                          alias_thr, alias_idx, codes, points, code_off, want_loss, tab, rows,
                                          labels, g)
                    if not cbow_mean:
                        for k in range(ld):
                            neu1e[k] *= inv
                    for j in range(lo, hi):
                        if j == i:
                            continue
                        r = sent[j]
                        if use_lockf:
                            f = lockf[r]
                            for k in range(ld):
                                syn0[r, k] += f * neu1e[k]
                        else:
                            for k in range(ld):
                                syn0[r, k] += neu1e[k]
                    pairs += 1
        job_loss[job] = loss
        job_eff[job] = eff
        job_pairs[job] = pairs


def train_epoch(syn0, syn1neg, syn1, words, sent_off, job_off, sample_thr, alias_thr, alias_idx, codes, points,
                code_off, sg, hs, negative, window, cbow_mean, shrink_windows, alpha, min_alpha, epoch, epochs,
                seed, workers, compute_loss, lockf=None):
    """One epoch; returns (loss, effective_words, examples). Arrays as in the C++ binding."""
    V = syn0.shape[0]
    n_jobs = len(job_off) - 1
    max_sent = max(1, int(np.max(np.diff(sent_off))) if len(sent_off) > 1 else 1)
    max_rows = negative + 1
    if hs and V > 1:
        max_rows = max(max_rows, int(np.max(np.diff(code_off))))
    if negative == 0:
        syn1neg = np.zeros((1, syn0.shape[1]), np.float32)
        alias_thr = np.zeros(1, np.uint32)
        alias_idx = np.zeros(1, np.int32)
    if not hs:
        syn1 = np.zeros((1, syn0.shape[1]), np.float32)
        codes = np.zeros(1, np.uint8)
        points = np.zeros(1, np.int32)
        code_off = np.zeros(2, np.int64)
    job_loss = np.zeros(n_jobs, np.float64)
    job_eff = np.zeros(n_jobs, np.int64)
    job_pairs = np.zeros(n_jobs, np.int64)
    args = (syn0, syn1neg, syn1, words, sent_off, job_off, sample_thr, alias_thr, alias_idx, codes, points,
            code_off, int(sg), int(hs), int(negative), int(window), int(cbow_mean), int(shrink_windows),
            float(alpha), float(min_alpha), int(epoch), int(epochs), np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF),
            bool(compute_loss))
    use_lockf = lockf is not None
    lockf = lockf if use_lockf else np.ones(1, np.float32)
    tail = (SIG_TABLE, job_loss, job_eff, job_pairs, max_sent, max_rows, lockf, use_lockf)
    W = max(1, min(int(workers), n_jobs))
    if W == 1:
        _train_jobs(*args, 0, 1, *tail)
    else:
        th = [threading.Thread(target=_train_jobs, args=(*args, t, W, *tail)) for t in range(1, W)]
        for t in th:
            t.start()
        _train_jobs(*args, 0, W, *tail)
        for t in th:
            t.join()
    return float(job_loss.sum()), int(job_eff.sum()), int(job_pairs.sum())
