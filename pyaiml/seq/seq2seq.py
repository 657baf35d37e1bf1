"""Encoder-decoder Transformer translator with greedy and beam-search decoding.

``Seq2SeqTransformer``: source ids -> PositionalEmbedding(mask_zero) -> encoder blocks ->
LayerNorm = context; target ids (shifted right, starting with ``<bos>``) ->
PositionalEmbedding -> decoder blocks (causal self-attention, cross-attention over the
context with source padding hidden) -> LayerNorm -> Dense logits.

The Keras ``Sequential`` model takes one input, so this class is a small model of its own
with the same conventions: ``compile(optimizer, loss)`` with pyaiml.keras optimizers and
losses, ``fit(x=(src, tgt_in), y=tgt_out, batch_size, epochs, validation_data, callbacks,
verbose, shuffle)`` returning a keras ``History`` (callbacks such as EarlyStopping work),
``evaluate``, ``predict`` (logits). The loss ignores target positions equal to
``pad_id``. ``translate(src, method='greedy'|'beam')`` decodes with key/value caches (the
encoder's keys/values are computed once per sentence).

Ids: 0 = <pad>, 1 = <bos>, 2 = <eos> by default (``make_tokenizers`` and ``encode_pairs``
build them). Not here: shared source/target embeddings, label smoothing.
Tests: tests/test_transformer_seq2seq.py.
"""
from __future__ import annotations


import numpy as np

from pyaiml.autograd import GradientTape
from pyaiml.autograd import functional as F
from pyaiml.keras import callbacks as kcb
from pyaiml.keras import layers as kl
from pyaiml.keras import losses as klosses
from pyaiml.keras import optimizers as kopt
from pyaiml.keras._common import rng
from pyaiml.ops import _validate
from pyaiml.seq.layers import PositionalEmbedding, TransformerDecoderBlock, TransformerEncoderBlock
from pyaiml.seq.tokenizer import CharTokenizer

SPECIALS = ("<pad>", "<bos>", "<eos>")


class WordVocab:
    """Whitespace-word vocabulary (specials first, then words sorted): ``encode`` splits on
    single spaces, ``decode`` joins with single spaces, so text with single spaces between
    words round-trips exactly. An unknown word raises ValueError naming it. JSON:
    ``{"format": "pyaiml-word-vocab", "version": 1, "specials": [...], "words": [...]}``."""

    def __init__(self, words, specials=SPECIALS):
        self.specials, self.words = list(specials), list(words)
        self._w2i = {w: len(self.specials) + i for i, w in enumerate(self.words)}
        if len(self._w2i) != len(self.words):
            raise ValueError("WordVocab: words contains duplicates")
        self.vocab_size = len(self.specials) + len(self.words)

    @classmethod
    def from_texts(cls, texts, specials=SPECIALS):
        return cls(sorted({w for t in texts for w in t.split(" ")}), specials)

    def encode(self, text):
        if not isinstance(text, str):
            raise TypeError(f"WordVocab.encode: text must be str. Received {type(text).__name__}")
        out = []
        for w in text.split(" ") if text else []:
            i = self._w2i.get(w)
            if i is None:
                raise ValueError(f"WordVocab.encode: word {w!r} is not in the vocabulary")
            out.append(i)
        return np.asarray(out, dtype=np.int64)

    def decode(self, ids, skip_specials=True):
        ns = len(self.specials)
        return " ".join(self.words[i - ns] if i >= ns else self.specials[i] for i in np.asarray(ids).tolist()
                        if i >= ns or not skip_specials)

    def to_json(self):
        import json

        return json.dumps({"format": "pyaiml-word-vocab", "version": 1, "specials": self.specials,
                           "words": self.words})


def make_tokenizers(pairs, byte_fallback=False, source="word"):
    """(source, target) tokenizers with <pad>, <bos>, <eos> = ids 0, 1, 2: the source is a
    WordVocab (``source='word'``) or a CharTokenizer (``'char'``), the target characters."""
    if source == "word":
        src = WordVocab.from_texts([s for s, _ in pairs])
    elif source == "char":
        src = CharTokenizer.from_text("".join(s for s, _ in pairs), SPECIALS, byte_fallback)
    else:
        raise ValueError(f"make_tokenizers: source must be 'word' or 'char'. Received {source!r}")
    tgt = CharTokenizer.from_text("".join(t for _, t in pairs), SPECIALS, byte_fallback)
    return src, tgt


def encode_pairs(pairs, src_tok, tgt_tok, src_len, tgt_len):
    """Pairs -> (src (N, src_len), tgt_in (N, tgt_len), tgt_out (N, tgt_len)) int64,
    right-padded with 0; tgt_in = <bos> + target, tgt_out = target + <eos>."""
    n = len(pairs)
    src = np.zeros((n, src_len), dtype=np.int64)
    tin = np.zeros((n, tgt_len), dtype=np.int64)
    tout = np.zeros((n, tgt_len), dtype=np.int64)
    for i, (s, t) in enumerate(pairs):
        a, b = src_tok.encode(s), tgt_tok.encode(t)
        if len(a) > src_len or len(b) + 1 > tgt_len:
            raise ValueError(f"encode_pairs: pair {i} ({s!r} -> {t!r}) does not fit src_len={src_len}, "
                             f"tgt_len={tgt_len} (target needs len + 1)")
        src[i, :len(a)] = a
        tin[i, 0] = 1
        tin[i, 1:len(b) + 1] = b
        tout[i, :len(b)] = b
        tout[i, len(b)] = 2
    return src, tin, tout


def _NoFiniteChecks():  # noqa: N802 (the name its callers use)
    """The NaN/inf input checks off inside the block, in this thread only."""
    return _validate.finite_checks(False)


class Seq2SeqTransformer:
    """Encoder-decoder Transformer.

    Parameters
    ----------
    src_vocab, tgt_vocab : int, vocabulary sizes
    src_len, tgt_len : int, longest source / target (target includes <bos> or <eos>)
    width : int, D; num_heads : int; ff_dim : int (default 4 D)
    enc_layers, dec_layers : int; dropout : float; position : 'learned' | 'sinusoidal'
    pad_id, bos_id, eos_id : special target ids (pad also marks source padding)
    """

    def __init__(self, src_vocab, tgt_vocab, src_len, tgt_len, width=128, num_heads=4, ff_dim=None, enc_layers=2,
                 dec_layers=2, dropout=0.0, position="learned", activation="relu", pad_id=0, bos_id=1, eos_id=2):
        for n, v in (("src_vocab", src_vocab), ("tgt_vocab", tgt_vocab), ("src_len", src_len), ("tgt_len", tgt_len),
                     ("width", width), ("num_heads", num_heads), ("enc_layers", enc_layers),
                     ("dec_layers", dec_layers)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"Seq2SeqTransformer: {n} must be a positive integer. Received {v!r}")
        ff = int(ff_dim or 4 * width)
        self.src_len, self.tgt_len = int(src_len), int(tgt_len)
        self.pad_id, self.bos_id, self.eos_id = int(pad_id), int(bos_id), int(eos_id)
        self.src_emb = PositionalEmbedding(src_vocab, src_len, width, position=position, dropout=dropout,
                                           mask_zero=True, name="src_embedding")
        self.enc = [TransformerEncoderBlock(num_heads, ff, dropout, activation=activation, name=f"encoder_{i}")
                    for i in range(enc_layers)]
        self.enc_ln = kl.LayerNormalization(epsilon=1e-5, name="encoder_norm")
        self.tgt_emb = PositionalEmbedding(tgt_vocab, tgt_len, width, position=position, dropout=dropout,
                                           name="tgt_embedding")
        self.dec = [TransformerDecoderBlock(num_heads, ff, dropout, activation=activation, name=f"decoder_{i}")
                    for i in range(dec_layers)]
        self.dec_ln = kl.LayerNormalization(epsilon=1e-5, name="decoder_norm")
        self.head = kl.Dense(tgt_vocab, name="logits")
        self.src_emb.build((self.src_len,))
        for b in self.enc:
            b.build((None, width))
        self.enc_ln.build((None, width))
        self.tgt_emb.build((self.tgt_len,))
        for b in self.dec:
            b.build((None, width), (None, width))
        self.dec_ln.build((None, width))
        self.head.build((None, width))
        self.tgt_vocab = int(tgt_vocab)
        self.compiled = False
        self.stop_training = False
        self.history = None

    @property
    def layers(self):
        return [self.src_emb, *self.enc, self.enc_ln, self.tgt_emb, *self.dec, self.dec_ln, self.head]

    def _train_vars(self):
        return [v for l in self.layers for v in l.trainable_variables]

    def count_params(self):
        return sum(l.count_params() for l in self.layers)

    def get_weights(self):
        return [w for l in self.layers for w in l.get_weights()]

    def set_weights(self, ws):
        ws = list(ws)
        for l in self.layers:
            k = len(l._weight_names)
            l.set_weights(ws[:k])
            ws = ws[k:]

    # ------------------------------------------------------------------ compile / steps
    def compile(self, optimizer="adam", loss=None, metrics=None):
        """``loss`` must be sparse categorical cross-entropy (default, from logits)."""
        self.optimizer = kopt.get(optimizer)
        loss = klosses.SparseCategoricalCrossentropy(from_logits=True) if loss is None else klosses.get(loss)
        if not isinstance(loss, klosses.SparseCategoricalCrossentropy):
            raise ValueError(f"Seq2SeqTransformer.compile: the loss must be sparse categorical cross-entropy. "
                             f"Received {type(loss).__name__}")
        if not loss.from_logits:
            loss = klosses.SparseCategoricalCrossentropy(from_logits=True)  # the model outputs logits
        self.loss = loss
        self.compiled = True
        return self

    def _check(self, x, y=None, what="x"):
        if not isinstance(x, (tuple, list)) or len(x) != 2:
            raise ValueError(f"{what} must be a pair (src, tgt_in) of int arrays")
        src, tin = (np.asarray(a) for a in x)
        for n, a, L in (("src", src, self.src_len), ("tgt_in", tin, self.tgt_len)):
            if a.ndim != 2 or a.dtype.kind not in "iu":
                raise ValueError(f"{what}: {n} must be a 2-D integer array (samples, length). "
                                 f"Received {a.dtype} {a.shape}")
            if a.shape[1] > L:
                raise ValueError(f"{what}: {n} is longer ({a.shape[1]}) than the model's {n} length {L}")
        if len(src) != len(tin):
            raise ValueError(f"{what}: src and tgt_in must have the same number of samples. Received {len(src)} "
                             f"and {len(tin)}")
        if y is not None:
            y = np.asarray(y)
            if y.shape != tin.shape or y.dtype.kind not in "iu":
                raise ValueError(f"y must be an integer array shaped like tgt_in {tin.shape}. Received {y.dtype} "
                                 f"{y.shape}")
            if y.size and (y.min() < 0 or y.max() >= self.tgt_vocab):
                raise ValueError(f"y ids must be in [0, {self.tgt_vocab}). Received [{y.min()}, {y.max()}]")
        return src, tin, y

    def encode(self, src, training=False):
        smask = src != self.pad_id
        h = self.src_emb.forward(src, training)
        for b in self.enc:
            h = b.forward(h, training, smask)
        return self.enc_ln.forward(h), smask

    def _forward(self, src, tin):
        """Teacher-forced logits through the layers' inference path (training is ``_call``)."""
        c, smask = self.encode(src)
        y = self.tgt_emb.forward(tin)
        for b in self.dec:
            y = b.forward(y, False, None, context=c, context_mask=smask)
        return self.head.forward(self.dec_ln.forward(y))

    def _call(self, src, tin):
        """The training forward pass through the layers' call() (recorded on a tape; dropout on)."""
        smask = src != self.pad_id
        h = self.src_emb(src, training=True)
        for b in self.enc:
            h = b(h, training=True, mask=smask)
        c = self.enc_ln(h)
        y = self.tgt_emb(tin, training=True)
        for b in self.dec:
            y = b(y, c, training=True, context_mask=smask)
        return self.head(self.dec_ln(y))

    def _loss(self, y, z):
        """Mean cross-entropy over non-pad targets and its gradient w.r.t. the logits."""
        sel = (y != self.pad_id).reshape(-1)
        z2 = z.reshape(-1, z.shape[-1])
        g = np.zeros_like(z2)
        if not sel.any():
            return 0.0, g.reshape(z.shape), sel
        val, gs = self.loss.value_and_grad_logits(y.reshape(-1)[sel], z2[sel])
        g[sel] = gs
        return val, g.reshape(z.shape), sel

    def train_on_batch(self, x, y):
        self._need_compiled("train_on_batch")
        src, tin, y = self._check(x, y)
        with _NoFiniteChecks():
            return self._train_step(src, tin, y)

    def _train_step(self, src, tin, y):
        """One step on a GradientTape: the mean cross-entropy over non-pad targets."""
        tv = self._train_vars()
        sel = np.flatnonzero((y != self.pad_id).reshape(-1))
        if not len(sel):  # nothing to learn from: a zero-gradient step, as for any empty loss
            self.optimizer.apply([(v.value, np.zeros_like(v.value)) for v in tv])
            return 0.0
        with GradientTape() as tape:
            z = self._call(src, tin)
            rows = F.take(F.reshape(z, (-1, z.shape[-1])), sel, 0)
            loss = F.loss(self.loss, y.reshape(-1)[sel], rows)
        val = float(loss.value)
        if not np.isfinite(val):
            raise FloatingPointError(f"Seq2SeqTransformer: the loss became {val}")
        grads = tape.gradient(loss, tv)
        self.optimizer.apply([(v.value, np.zeros_like(v.value) if g is None else g) for v, g in zip(tv, grads)])
        return val

    def _need_compiled(self, what):
        if not self.compiled:
            raise RuntimeError(f"{what}: call compile(optimizer) first")

    # ------------------------------------------------------------------ fit / evaluate / predict
    def fit(self, x=None, y=None, batch_size=32, epochs=1, verbose=1, callbacks=None, validation_data=None,
            shuffle=True):
        """Keras-style training; returns a History with loss / token_accuracy (and val_*)."""
        self._need_compiled("fit")
        src, tin, y = self._check(x, y)
        if validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("fit: validation_data must be ((src, tgt_in), tgt_out)")
            vx, vy = validation_data
            self._check(vx, vy, "validation x")
        bs = int(batch_size)
        if bs < 1:
            raise ValueError(f"fit: batch_size must be >= 1. Received {batch_size}")
        n = len(src)
        steps = -(-n // bs)
        history = kcb.History()
        cbs = list(callbacks or [])
        if verbose:
            cbs.append(kcb.ProgbarLogger(verbose))
        cbs.append(history)
        self.history = history
        cl = kcb.CallbackList(cbs, self, {"epochs": int(epochs), "steps": steps, "verbose": verbose, "samples": n})
        self.stop_training = False
        logs = {}
        with _NoFiniteChecks():
            cl.on_train_begin()
            for epoch in range(int(epochs)):
                cl.on_epoch_begin(epoch)
                order = rng().permutation(n) if shuffle else np.arange(n)
                tot = cnt = 0.0
                for b in range(steps):
                    cl.on_train_batch_begin(b)
                    ix = order[b * bs:(b + 1) * bs]
                    lv = self._train_step(src[ix], tin[ix], y[ix])
                    k = float((y[ix] != self.pad_id).sum())
                    tot += lv * k
                    cnt += k
                    logs = {"loss": tot / max(cnt, 1)}
                    cl.on_train_batch_end(b, logs)
                    if self.stop_training:
                        break
                if validation_data is not None:
                    r = self.evaluate(*validation_data, batch_size=max(bs, 64), return_dict=True)
                    logs.update({"val_" + k: v for k, v in r.items()})
                cl.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
            cl.on_train_end(logs)
        return history

    def evaluate(self, x=None, y=None, batch_size=64, return_dict=False, verbose=0):
        """Mean loss over non-pad target tokens and teacher-forced token accuracy."""
        self._need_compiled("evaluate")
        src, tin, y = self._check(x, y)
        tot = cnt = hit = 0.0
        with _NoFiniteChecks():
            for b in range(0, len(src), batch_size):
                s = slice(b, b + batch_size)
                z = self._forward(src[s], tin[s])
                val, _, sel = self._loss(y[s], z)
                k = float(sel.sum())
                tot += val * k
                cnt += k
                hit += float((z.argmax(-1).reshape(-1)[sel] == y[s].reshape(-1)[sel]).sum())
        r = {"loss": tot / max(cnt, 1), "token_accuracy": hit / max(cnt, 1)}
        return r if return_dict else [r["loss"], r["token_accuracy"]]

    def predict(self, x, batch_size=64):
        """Teacher-forced logits (N, T, tgt_vocab)."""
        src, tin, _ = self._check(x)
        outs = []
        with _NoFiniteChecks():
            for b in range(0, len(src), batch_size):
                outs.append(self._forward(src[b:b + batch_size], tin[b:b + batch_size]))
        return np.concatenate(outs)

    # ------------------------------------------------------------------ decoding
    def _dec_step(self, tok, pos, caches, cross, smask):
        """tok (B,) ids at position ``pos`` -> log-probabilities (B, V)."""
        h = self.tgt_emb.forward(tok[:, None], False, start=pos)
        for b, c, cc in zip(self.dec, caches, cross):
            h = b.step(h, c, cc, smask)
        z = self.head.forward(self.dec_ln.forward(h))[:, 0].astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def _src(self, src):
        src = np.asarray(src)
        if src.ndim == 1:
            src = src[None]
        if src.ndim != 2 or (src.size and src.dtype.kind not in "iu"):
            raise ValueError(f"translate: src must be a 2-D integer array (sentences, length). "
                             f"Received {src.dtype} {src.shape}")
        if src.shape[1] > self.src_len:
            raise ValueError(f"translate: src length {src.shape[1]} exceeds the model's src_len {self.src_len}")
        return src.astype(np.int64)

    def translate(self, src, method="greedy", beam_width=4, max_len=None, length_penalty=0.6, batch_size=256):
        """Decode each source row; returns a list of 1-D id arrays (no <bos>/<eos>).

        method : 'greedy' (batched argmax) or 'beam' (``beam_width`` hypotheses, scores
        are sums of log-probabilities divided by length**length_penalty)."""
        src = self._src(src)
        T = self.tgt_len if max_len is None else int(max_len)
        if not 1 <= T <= self.tgt_len:
            raise ValueError(f"translate: max_len must be in [1, {self.tgt_len}]. Received {max_len}")
        if method not in ("greedy", "beam"):
            raise ValueError(f"translate: method must be 'greedy' or 'beam'. Received {method!r}")
        if method == "beam" and (isinstance(beam_width, bool) or not isinstance(beam_width, (int, np.integer))
                                 or beam_width < 1):
            raise ValueError(f"translate: beam_width must be a positive integer. Received {beam_width!r}")
        out = []
        with _NoFiniteChecks():
            if method == "greedy":
                for b in range(0, len(src), batch_size):
                    out += self._greedy(src[b:b + batch_size], T)
            else:
                for i in range(len(src)):
                    out.append(self._beam(src[i:i + 1], T, int(beam_width), float(length_penalty)))
        return out

    def _greedy(self, src, T):
        B = len(src)
        c, smask = self.encode(src)
        caches = [b.new_cache(B, T) for b in self.dec]
        cross = [b.new_cross_cache(c) for b in self.dec]
        tok = np.full(B, self.bos_id, dtype=np.int64)
        res = np.zeros((B, T), dtype=np.int64)
        done = np.zeros(B, dtype=bool)
        for t in range(T):
            lp = self._dec_step(tok, t, caches, cross, smask)
            tok = lp.argmax(axis=1)
            res[:, t] = tok
            done |= tok == self.eos_id
            if done.all():
                break
        outs = []
        for r in res:
            e = np.flatnonzero(r == self.eos_id)
            outs.append(r[:e[0]] if len(e) else r)
        return outs

    def _beam(self, src, T, k, alpha):
        c, smask = self.encode(src)
        caches = [b.new_cache(1, T) for b in self.dec]
        cross = [b.new_cross_cache(c) for b in self.dec]
        seqs = [[]]
        scores = np.zeros(1)
        finished = []  # (normalised score, tokens)
        for t in range(T):
            last = np.array([s[-1] if s else self.bos_id for s in seqs], dtype=np.int64)
            n = len(seqs)
            m = None if smask is None else np.repeat(smask, n, axis=0)
            lp = self._dec_step(last, t, caches, cross, m)
            cand = scores[:, None] + lp  # (n, V)
            flat = np.argsort(-cand, axis=None, kind="stable")[:2 * k]
            new_seqs, new_scores, keep = [], [], []
            for f in flat:
                i, v = divmod(int(f), lp.shape[1])
                if v == self.eos_id:
                    L = len(seqs[i]) + 1
                    finished.append((cand[i, v] / L ** alpha, seqs[i]))
                else:
                    new_seqs.append(seqs[i] + [v])
                    new_scores.append(cand[i, v])
                    keep.append(i)
                if len(new_seqs) == k:
                    break
            finished.sort(key=lambda z: -z[0])
            finished = finished[:k]
            best_alive = max(new_scores) / (t + 2) ** alpha if new_scores else -np.inf
            # stop when no hypothesis is alive, or when the worst of k finished ones already
            # beats the best alive one (log-probabilities only fall as hypotheses grow)
            if not new_seqs or (len(finished) >= k and finished[-1][0] >= best_alive):
                break
            idx = np.asarray(keep)
            for cch in caches:
                cch.reorder(idx)
            for cc in cross:
                if cc.k.shape[0] != len(idx):
                    cc.k = np.repeat(cc.k[:1], len(idx), axis=0)
                    cc.v = np.repeat(cc.v[:1], len(idx), axis=0)
            seqs, scores = new_seqs, np.asarray(new_scores)
        if not finished:  # nothing ended within max_len: best unfinished hypothesis
            return np.asarray(seqs[int(np.argmax(scores))], dtype=np.int64)
        return np.asarray(finished[0][1], dtype=np.int64)
