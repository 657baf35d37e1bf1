"""Acceptance check for the Tiny Shakespeare language model: train the `pyaiml demo` text
model (2 causal Transformer blocks, width 128, 4 heads, context 64, Adam 2e-3, batch 32) for
a wall-clock budget on the 90/10 split, then report the loss on the WHOLE validation tenth
(every non-overlapping window), not a subset.

Run: python benchmarks/scripts/lm_15min.py [--seconds 150]
"""
import argparse
import time

from pyaiml.datasets import load_tiny_shakespeare
from pyaiml.keras import optimizers
from pyaiml.keras.utils import set_random_seed
from pyaiml.seq import CharTokenizer, TransformerLM

p = argparse.ArgumentParser()
p.add_argument("--seconds", type=float, default=150.0)
a = p.parse_args()
text = load_tiny_shakespeare()
n_val = len(text) // 10
train, val = text[:-n_val], text[-n_val:]
set_random_seed(0)
tok = CharTokenizer.from_text(text)
tr, va = tok.encode(train), tok.encode(val)
lm = TransformerLM(tokenizer=tok, context=64, width=128, num_layers=2, num_heads=4)
lm.compile(optimizers.Adam(2e-3, global_clipnorm=1.0))
t = time.perf_counter()
lm.fit_text(tr, None, batch_size=32, steps=10 ** 9, eval_every=5, time_budget=a.seconds, seed=0, log=lambda s: None)
h = lm.history[-1]
t_eval = time.perf_counter()
full = lm.evaluate_ids(va)
print(f"trained {h['step']} steps in {h['seconds']:.0f} s (wall {t_eval - t:.0f} s incl. bookkeeping); "
      f"validation loss on all {len(va) // 64} windows of the held-out 10%: {full:.3f} nats/char "
      f"(evaluated in {time.perf_counter() - t_eval:.0f} s)")
print(lm.generate("ROMEO:\n", max_new_tokens=200, temperature=0.8, top_k=40, seed=1))
