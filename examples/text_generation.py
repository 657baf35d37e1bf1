"""Character-level Transformer language model on Tiny Shakespeare, trained with
pyaiml's Keras-style API, then sampled with key/value-cached generation.

Run:  PYTHONPATH=$PWD python examples/text_generation.py            (about 15 min budget)
      PYTHONPATH=$PWD python examples/text_generation.py --steps 50 --time-budget 60   (smoke)
The text is the copy shipped in pyaiml/datasets/data (or --data PATH to input.txt);
90/10 split; validation loss in nats per character is logged as JSON lines.
"""
import argparse
import time


import pyaiml
from pyaiml.datasets.shakespeare import load_tiny_shakespeare, split_text
from pyaiml.keras import optimizers
from pyaiml.keras.utils import set_random_seed
from pyaiml.seq import CharTokenizer, TransformerLM


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="path to input.txt (default: the shipped copy)")
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--time-budget", type=float, default=900.0, help="seconds of training (evaluation excluded)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--val-windows", type=int, default=200, help="validation windows per periodic evaluation")
    ap.add_argument("--save", default=None, help="save the trained model (.npz)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    set_random_seed(a.seed)
    text = load_tiny_shakespeare(a.data)
    train, val = split_text(text, 0.1)
    tok = CharTokenizer.from_text(text)
    tr_ids, va_ids = tok.encode(train), tok.encode(val)
    lm = TransformerLM(tokenizer=tok, context=a.context, width=a.width, num_layers=a.layers, num_heads=a.heads)
    lm.compile(optimizers.Adam(a.lr, global_clipnorm=1.0))
    print(f"{len(text):,} characters, vocabulary {tok.vocab_size} ({len(tok.chars)} characters + 256 byte tokens); "
          f"model {lm.count_params():,} parameters; threads {pyaiml.get_num_threads()}", flush=True)
    t0 = time.perf_counter()
    lm.fit_text(tr_ids, va_ids, batch_size=a.batch, steps=a.steps, eval_every=a.eval_every,
                time_budget=a.time_budget, seed=a.seed, max_val_windows=a.val_windows,
                log=lambda s: print(s, flush=True))
    wall = time.perf_counter() - t0
    full = lm.evaluate_ids(va_ids)
    h = lm.history[-1]
    print(f"trained {h['step']} steps ({h['step'] * a.batch * a.context:,} tokens) in {h['seconds']:.0f} s of "
          f"training ({wall:.0f} s with evaluation); full validation loss {full:.4f} nats/char", flush=True)
    if a.save:
        lm.save(a.save)
    for prompt, seed in (("ROMEO:\n", 1), ("First Citizen:\n", 2), ("KING HENRY:\nMy lord,", 3)):
        t = time.perf_counter()
        s = lm.generate(prompt, max_new_tokens=300, temperature=0.8, top_k=40, seed=seed)
        dt = time.perf_counter() - t
        print(f"\n--- sample (prompt {prompt!r}, seed {seed}, temperature 0.8, top_k 40; "
              f"{300 / dt:.0f} tokens/s cached) ---\n{s}", flush=True)


if __name__ == "__main__":
    main()
