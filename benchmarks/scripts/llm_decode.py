"""First speed check of pyaiml.llm against transformers on a GPT-2-small-shaped checkpoint
(12 layers, width 768, 12 heads, vocabulary 50257, random weights saved with
save_pretrained): prefill of --prompt tokens and batch-1 greedy decode, float32, same
thread count on both sides, alternating runs, medians with [min-max].

Both sides are checked first: the logits of the prompt agree within 1e-4 (relative to the
largest). transformers runs its model with its KV cache (``past_key_values``) one token at
a time, as pyaiml does; torch.inference_mode, attn_implementation="sdpa". pyaiml with
``--int8`` also times the Q8_0 model (dequantized per GEMM in this first version).

Run: python benchmarks/scripts/llm_decode.py [--threads 2 --prompt 128 --decode 32 --repeats 3 --int8]
"""
import argparse
import os
import tempfile
import time

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import pyaiml
from pyaiml import llm, ops

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--prompt", type=int, default=128)
p.add_argument("--decode", type=int, default=32)
p.add_argument("--repeats", type=int, default=3)
p.add_argument("--int8", action="store_true")
a = p.parse_args()
torch.set_num_threads(a.threads)
pyaiml.set_num_threads(a.threads)

d = tempfile.mkdtemp(prefix="pyaiml-llm-bench-")
torch.manual_seed(0)
ref = GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024,
                                 attn_implementation="sdpa")).eval()
ref.save_pretrained(d)
m = llm.load(d)
ids = np.random.default_rng(0).integers(0, 50257, (1, a.prompt))
with torch.inference_mode():
    want = ref(torch.tensor(ids)).logits.numpy()
got = m.logits(ids)
err = np.abs(got - want).max() / np.abs(want).max()
assert err < 1e-4, err
print(f"checked: logits within {err:.1e} (relative); weights {m.weights_nbytes() / 2**20:.0f} MiB float32; "
      f"{a.threads} threads, prompt {a.prompt}, decode {a.decode}")


def run_pyaiml(model):
    cache = model.new_cache(1, a.prompt + a.decode)
    with ops.finite_checks(False):
        t0 = time.perf_counter()
        nxt = model.forward(ids, cache, last_only=True).argmax(-1)[:, None]
        t1 = time.perf_counter()
        for _ in range(a.decode):
            nxt = model.forward(nxt, cache, last_only=True).argmax(-1)[:, None]
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def run_torch():
    with torch.inference_mode():
        x = torch.tensor(ids)
        t0 = time.perf_counter()
        out = ref(x, use_cache=True)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        t1 = time.perf_counter()
        past = out.past_key_values
        for _ in range(a.decode):
            out = ref(nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1


sides = {"pyaiml f32": lambda: run_pyaiml(m), "transformers f32": run_torch}
if a.int8:
    mq = llm.load(d)
    mq.quantize()
    sides["pyaiml int8"] = lambda: run_pyaiml(mq)
res = {k: [] for k in sides}
for r in range(a.repeats + 1):
    for k, f in sides.items():
        t = f()
        if r:
            res[k].append(t)
print(f"| side | prefill {a.prompt} tok/s | decode tok/s |")
print("|---|---:|---:|")
for k, v in res.items():
    pre = [a.prompt / t[0] for t in v]
    dec = [a.decode / t[1] for t in v]
    print(f"| {k} | {np.median(pre):.0f} [{min(pre):.0f}-{max(pre):.0f}] | {np.median(dec):.1f} "
          f"[{min(dec):.1f}-{max(dec):.1f}] |")
for f in os.listdir(d):
    os.remove(os.path.join(d, f))
os.rmdir(d)
