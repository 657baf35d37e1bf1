"""int8 (Q8_0) quality of pyaiml.llm on a GPT-2-architecture model trained here on Tiny Shakespeare.

What it does, end to end, on this machine's CPU:
1. splits /work/shared/data/tinyshakespeare/input.txt (or --data) at the first newline after
   90% of its characters: the first part trains, the rest is held out;
2. trains a byte-level BPE tokenizer (``tokenizers``, --vocab tokens incl. ``<|endoftext|>``)
   on the training part only;
3. trains a transformers ``GPT2LMHeadModel`` from scratch with torch (AdamW, linear warm-up then
   cosine decay, random windows of --ctx tokens, --steps steps; dropout 0.1 as GPT-2's default),
   and writes it with ``save_pretrained`` plus tokenizer.json into --out/f32;
4. loads that folder with ``pyaiml.llm.load`` and scores the held-out tokens in non-overlapping
   windows of --ctx tokens (every position after the first of a window is predicted):
   float32 perplexity (checked against transformers' on the same windows), the int8 model
   made by ``model.quantize()`` and the folder written by ``pyaiml.llm.quant.save_quantized``
   loaded back; their perplexity ratio to float32 and the mean KL(f32 || int8) of the
   next-token distributions over all predicted held-out positions.

What it is not: a tuned language model (a few minutes of CPU training: the figures describe a
small, under-trained model, and the script prints its held-out loss so that is visible), nor a
speed benchmark. Which tensors become int8 is pyaiml.llm.quant's choice (the block projections,
and GPT-2's tied head/embedding since main 9e5ca51); the JSON reports how many.

Run: python benchmarks/scripts/llm_int8_quality.py [--steps 300 --threads 2 --out DIR]
     (again with --out DIR --reuse: re-score that model, e.g. after a change to pyaiml.llm)
Figures: benchmarks/results/llm.md, section "int8 quality".
"""
import argparse
import json
import math
import os
import tempfile
import time

import numpy as np
import torch

import pyaiml
from pyaiml import llm
from pyaiml.llm.quant import save_quantized

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(HERE, "..", "..", "..", "shared", "data", "tinyshakespeare", "input.txt")

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--data", default=DEFAULT_DATA if os.path.exists(DEFAULT_DATA)
               else "/work/shared/data/tinyshakespeare/input.txt")
p.add_argument("--out", default=None, help="folder for the checkpoints (default: a new temporary folder)")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--vocab", type=int, default=2048)
p.add_argument("--layers", type=int, default=4)
p.add_argument("--width", type=int, default=256)
p.add_argument("--heads", type=int, default=4)
p.add_argument("--ctx", type=int, default=128)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--steps", type=int, default=300)
p.add_argument("--lr", type=float, default=2e-3)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--eval-batch", type=int, default=32)
p.add_argument("--reuse", action="store_true",
               help="score the model and tokenizer already in --out/f32 (written by an earlier run) instead of "
                    "training them again")
a = p.parse_args()

torch.set_num_threads(a.threads)
pyaiml.set_num_threads(a.threads)
torch.manual_seed(a.seed)
if a.reuse and not a.out:
    p.error("--reuse needs --out, the folder of the earlier run")
out_dir = a.out or tempfile.mkdtemp(prefix="pyaiml-int8-quality-")
f32_dir, q8_dir = os.path.join(out_dir, "f32"), os.path.join(out_dir, "q8_0")
os.makedirs(f32_dir, exist_ok=True)

# ------------------------------------------------------------------ data and tokenizer
with open(a.data, encoding="utf-8") as f:
    text = f.read()
cut = text.index("\n", int(0.9 * len(text))) + 1
train_text, held_text = text[:cut], text[cut:]

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

if a.reuse:
    tok = Tokenizer.from_file(os.path.join(f32_dir, "tokenizer.json"))
else:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=a.vocab, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(train_text.split("\n\n"), trainer=trainer)
    tok.save(os.path.join(f32_dir, "tokenizer.json"))
V = tok.get_vocab_size()
train_ids = np.array(tok.encode(train_text).ids, dtype=np.int64)
held_ids = np.array(tok.encode(held_text).ids, dtype=np.int64)
assert tok.decode(held_ids[:200].tolist()) == held_text[:len(tok.decode(held_ids[:200].tolist()))]
print(f"data: {len(train_text)} / {len(held_text)} characters -> {len(train_ids)} / {len(held_ids)} tokens "
      f"(vocabulary {V}, {len(train_text) / len(train_ids):.2f} characters per token)")

# ------------------------------------------------------------------ training
from transformers import GPT2Config, GPT2LMHeadModel

if a.reuse:
    model = GPT2LMHeadModel.from_pretrained(f32_dir, attn_implementation="sdpa")
    c = model.config
    a.layers, a.width, a.heads, a.ctx = c.n_layer, c.n_embd, c.n_head, c.n_positions
else:
    cfg = GPT2Config(vocab_size=V, n_positions=a.ctx, n_embd=a.width, n_layer=a.layers, n_head=a.heads,
                     bos_token_id=0, eos_token_id=0, attn_implementation="sdpa")
    model = GPT2LMHeadModel(cfg)
nparams = sum(t.numel() for t in model.parameters())
print(f"model: GPT-2 architecture, {a.layers} layers x {a.width} ({a.heads} heads), context {a.ctx}, "
      f"{nparams / 1e6:.2f} M parameters (tied head){' (reused from ' + f32_dir + ')' if a.reuse else ''}")
decay = [t for n, t in model.named_parameters() if t.dim() >= 2]
no_decay = [t for n, t in model.named_parameters() if t.dim() < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                        lr=a.lr, betas=(0.9, 0.95))
warm = max(1, a.steps // 20)


def lr_at(s):
    if s < warm:
        return a.lr * (s + 1) / warm
    return a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, a.steps - warm))))


gen = np.random.default_rng(a.seed)
n_windows = (len(held_ids) - 1) // a.ctx
windows = held_ids[: n_windows * a.ctx].reshape(n_windows, a.ctx)


def held_loss_torch(m, n=16):
    m.eval()
    with torch.no_grad():
        x = torch.from_numpy(windows[:n])
        loss = m(input_ids=x, labels=x).loss.item()
    m.train()
    return loss


model.train()
t0 = time.perf_counter()
for step in range(0 if a.reuse else a.steps):
    idx = gen.integers(0, len(train_ids) - a.ctx, size=a.batch)
    x = torch.from_numpy(np.stack([train_ids[i:i + a.ctx] for i in idx]))
    for g in opt.param_groups:
        g["lr"] = lr_at(step)
    loss = model(input_ids=x, labels=x).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if step % 100 == 0 or step == a.steps - 1:
        print(f"step {step:5d}  train loss {loss.item():.3f}  held-out loss (16 windows) "
              f"{held_loss_torch(model):.3f}  {time.perf_counter() - t0:.0f} s", flush=True)
train_s = time.perf_counter() - t0
model.eval()
if not a.reuse:
    model.save_pretrained(f32_dir)
    print(f"trained {a.steps} steps x {a.batch} x {a.ctx} tokens in {train_s:.0f} s; saved to {f32_dir}")

# ------------------------------------------------------------------ scoring
m32 = llm.load(f32_dir)
mq = llm.load(f32_dir)
nq = mq.quantize()
info = save_quantized(f32_dir, q8_dir)
mf = llm.load(q8_dir)


def log_probs(logits):
    lg = np.asarray(logits, dtype=np.float64)[:, :-1]
    lg = lg - lg.max(-1, keepdims=True)
    return lg - np.log(np.exp(lg).sum(-1, keepdims=True))


sides = {
    "tf": lambda ids: model(input_ids=torch.from_numpy(ids)).logits.numpy(),
    "f32": m32.logits,
    "q": mq.logits,
    "f": mf.logits,
}
nll = dict.fromkeys(sides, 0.0)
kl = {"q": 0.0, "f": 0.0}
diff = {"tf": 0.0, "qf": 0.0}
count = 0
t1 = time.perf_counter()
with torch.no_grad():
    for b0 in range(0, n_windows, a.eval_batch):
        ids = windows[b0:b0 + a.eval_batch]
        tgt = ids[:, 1:, None]
        lp = {k: log_probs(fn(ids)) for k, fn in sides.items()}
        for k in sides:
            nll[k] -= np.take_along_axis(lp[k], tgt, -1).sum()
        p32 = np.exp(lp["f32"])
        for k in kl:
            kl[k] += (p32 * (lp["f32"] - lp[k])).sum()
        diff["tf"] = max(diff["tf"], float(np.abs(lp["f32"] - lp["tf"]).max()))
        diff["qf"] = max(diff["qf"], float(np.abs(lp["q"] - lp["f"]).max()))
        count += tgt.size
nll = {k: v / count for k, v in nll.items()}
print(f"scored {count} held-out positions with 4 models in {time.perf_counter() - t1:.0f} s")

res = {
    "held_out_tokens_predicted": count,
    "windows": n_windows,
    "train_seconds": None if a.reuse else round(train_s, 1),
    "params_millions": round(nparams / 1e6, 3),
    "layers_quantized": nq,
    "q8_file_bytes": info["bytes"],
    "f32_file_bytes": os.path.getsize(os.path.join(f32_dir, "model.safetensors")),
    "ppl_transformers_f32": math.exp(nll["tf"]),
    "ppl_pyaiml_f32": math.exp(nll["f32"]),
    "max_abs_logprob_diff_pyaiml_vs_transformers": diff["tf"],
    "ppl_int8_quantize": math.exp(nll["q"]),
    "ppl_int8_saved_folder": math.exp(nll["f"]),
    "ppl_ratio_int8_quantize": math.exp(nll["q"] - nll["f32"]),
    "ppl_ratio_int8_saved_folder": math.exp(nll["f"] - nll["f32"]),
    "mean_kl_f32_int8_quantize": kl["q"] / count,
    "mean_kl_f32_int8_saved_folder": kl["f"] / count,
    "max_abs_logprob_diff_quantize_vs_saved": diff["qf"],
}
counts = np.bincount(train_ids, minlength=V).astype(np.float64) + 1.0
uni = np.log(counts / counts.sum())
res["unigram_ppl_held_out"] = math.exp(-uni[windows[:, 1:]].mean())
print(json.dumps(res, indent=1))
print(f"\n| model | held-out perplexity | ratio to f32 | mean KL(f32 || int8) |\n|---|---:|---:|---:|\n"
      f"| transformers f32 | {res['ppl_transformers_f32']:.3f} | | |\n"
      f"| pyaiml f32 | {res['ppl_pyaiml_f32']:.3f} | 1 | |\n"
      f"| pyaiml int8, model.quantize() | {res['ppl_int8_quantize']:.3f} | {res['ppl_ratio_int8_quantize']:.5f} | "
      f"{res['mean_kl_f32_int8_quantize']:.2e} |\n"
      f"| pyaiml int8, save_quantized folder | {res['ppl_int8_saved_folder']:.3f} | "
      f"{res['ppl_ratio_int8_saved_folder']:.5f} | {res['mean_kl_f32_int8_saved_folder']:.2e} |")
