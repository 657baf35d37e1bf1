"""Encoder-decoder Transformer that translates English number words into digits
("four hundred seven thousand twenty-one" -> "407021"), trained on pairs generated
offline with a fixed seed (source: word tokens, target: digit characters); prints held-out exact-match accuracy (greedy and beam search)
and a few translations.

Run:  PYTHONPATH=$PWD python examples/translation.py                 (a few minutes)
      PYTHONPATH=$PWD python examples/translation.py --train 2000 --epochs 1   (smoke)
"""
import argparse
import time

import numpy as np

from pyaiml.datasets.number_words import number_pairs
from pyaiml.keras import optimizers, schedules
from pyaiml.keras.callbacks import EarlyStopping
from pyaiml.keras.utils import set_random_seed
from pyaiml.seq.seq2seq import Seq2SeqTransformer, encode_pairs, make_tokenizers


def exact_match(model, src, pairs, tgt_tok, **kw):
    hyp = model.translate(src, **kw)
    out = [tgt_tok.decode(h) for h in hyp]
    return float(np.mean([o == t for o, (_, t) in zip(out, pairs)])), out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=6000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--max-value", type=int, default=1000000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    set_random_seed(a.seed)
    train, test = number_pairs(a.train, a.test, a.max_value, seed=a.seed)
    src_tok, tgt_tok = make_tokenizers(train + test)
    S = max(len(src_tok.encode(s)) for s, _ in train + test)  # words
    T = max(len(t) for _, t in train + test) + 1
    xs, xi, yo = encode_pairs(train, src_tok, tgt_tok, S, T)
    ts, ti, to = encode_pairs(test, src_tok, tgt_tok, S, T)
    m = Seq2SeqTransformer(src_tok.vocab_size, tgt_tok.vocab_size, S, T, width=a.width, num_heads=4, enc_layers=2,
                           dec_layers=2)
    steps = a.epochs * -(-len(train) // a.batch)
    lr = schedules.ExponentialDecay(a.lr, decay_steps=steps, decay_rate=0.1)  # lr / 10 by the end
    m.compile(optimizers.Adam(lr, global_clipnorm=1.0))
    print(f"{len(train)} training pairs, {len(test)} held-out pairs (disjoint numbers < {a.max_value:,}); "
          f"source length {S}, target length {T}; {m.count_params():,} parameters", flush=True)
    t0 = time.perf_counter()
    m.fit((xs, xi), yo, batch_size=a.batch, epochs=a.epochs, validation_data=((ts, ti), to), verbose=2,
          callbacks=[EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=False)])
    print(f"training: {time.perf_counter() - t0:.0f} s", flush=True)
    acc_g, out = exact_match(m, ts, test, tgt_tok, method="greedy")
    print(f"held-out exact match (greedy): {acc_g:.4f} ({round(acc_g * len(test))}/{len(test)})", flush=True)
    k = min(len(test), 300)
    acc_b, _ = exact_match(m, ts[:k], test[:k], tgt_tok, method="beam", beam_width=a.beam)
    print(f"held-out exact match (beam {a.beam}, first {k}): {acc_b:.4f}", flush=True)
    for (s, t), o in list(zip(test, out))[:8]:
        print(f"  {s!r} -> {o!r} (want {t!r}){'' if o == t else '  MISS'}")


if __name__ == "__main__":
    main()
