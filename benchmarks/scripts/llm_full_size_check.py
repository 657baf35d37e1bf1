"""Issue-size correctness check of pyaiml.llm against transformers (too slow for the test
suite, which runs the same comparisons on tiny checkpoints: tests/test_llm_*.py).

Checkpoints with random weights (torch seed 0, ``save_pretrained``, no download): GPT-2 small
(12 layers, 768, 12 heads, vocabulary 50257, tied head), a ~110M Llama with grouped-query
attention (12 layers, 768, 12 heads on 4 key/value heads, SwiGLU 1536, vocabulary 32000,
untied head) and a small BERT (4 layers, 256, 4 heads). For the decoders: float32 logits of a
128-token prompt (max |difference| / max |logit|), 64 greedy tokens from pyaiml's ``generate``
against transformers' ``generate(do_sample=False)``, alone and as a left-padded batch of two
prompts of different lengths (each row against its own unpadded transformers run), and the
same for pyaiml int8 against pyaiml float32 (agreement of greedy tokens, not a bound). For
BERT: mean-pooled embeddings of a right-padded batch (max |difference|).

Random weights give flat next-token distributions, where two candidates can be within
float32 rounding of each other; a divergence is reported with the logit gap at the step where
it happens, so a tie can be told from an error.

Run: python benchmarks/scripts/llm_full_size_check.py [--threads 2 --tokens 64]
"""
import argparse
import tempfile

import numpy as np
import torch
import transformers

import pyaiml
from pyaiml import llm

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--tokens", type=int, default=64)
a = p.parse_args()
torch.set_num_threads(a.threads)
pyaiml.set_num_threads(a.threads)
rng = np.random.default_rng(0)


def build(kind):
    d = tempfile.mkdtemp(prefix=f"pyaiml-check-{kind}-")
    torch.manual_seed(0)
    if kind == "gpt2":
        m = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257,
                                                                 n_positions=1024))
    elif kind == "llama":
        m = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=32000, hidden_size=768, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=12,
            num_key_value_heads=4, max_position_embeddings=1024, tie_word_embeddings=False))
    else:
        m = transformers.BertModel(transformers.BertConfig(vocab_size=30522, hidden_size=256, num_hidden_layers=4,
                                                           num_attention_heads=4, intermediate_size=1024))
    m.eval().save_pretrained(d)
    return m, d


def first_divergence(a_ids, b_ids, logits_fn):
    for i, (x, y) in enumerate(zip(a_ids, b_ids)):
        if x != y:
            lg = logits_fn(i)
            top = np.sort(lg)[-2:]
            return f"differs at step {i} (top-2 logit gap there {top[1] - top[0]:.2e})"
    return "identical" if len(a_ids) == len(b_ids) else f"lengths {len(a_ids)} / {len(b_ids)}"


for kind in ("gpt2", "llama"):
    ref, d = build(kind)
    m = llm.load(d)
    V = m.vocab_size
    ids = rng.integers(0, V, (1, 128))
    with torch.inference_mode():
        want = ref(torch.tensor(ids)).logits.numpy()
    got = m.logits(ids)
    rel = np.abs(got - want).max() / np.abs(want).max()
    print(f"{kind}: prompt logits max |diff| / max |logit| = {rel:.2e} (bound 1e-4)")

    def ref_greedy(prompt):
        with torch.inference_mode():
            out = ref.generate(torch.tensor([prompt]), max_new_tokens=a.tokens, min_new_tokens=a.tokens,
                               do_sample=False, eos_token_id=None, pad_token_id=0)
        return out[0, len(prompt):].tolist()

    prompts = [rng.integers(0, V, 20).tolist(), rng.integers(0, V, 33).tolist()]
    for j, pr in enumerate(prompts):
        r = ref_greedy(pr)
        g = m.generate(pr, max_new_tokens=a.tokens).ids

        def gap(i, pr=pr, r=r):
            with torch.inference_mode():
                return ref(torch.tensor([pr + r[:i]])).logits[0, -1].numpy()
        print(f"  prompt {j} ({len(pr)} tokens), {a.tokens} greedy tokens alone: {first_divergence(g, r, gap)}")
    batch = m.generate(prompts, max_new_tokens=a.tokens)  # one result per prompt
    for j, pr in enumerate(prompts):
        r = ref_greedy(pr)
        print(f"  prompt {j} in a left-padded batch of 2: {first_divergence(batch[j].ids, r, lambda i: np.zeros(2))}")
    mq = llm.load(d)
    mq.quantize()
    gq = mq.generate(prompts[0], max_new_tokens=a.tokens).ids
    g = m.generate(prompts[0], max_new_tokens=a.tokens).ids
    agree = sum(x == y for x, y in zip(gq, g))
    print(f"  int8 against float32, prompt 0: {agree}/{len(g)} greedy tokens equal "
          f"({first_divergence(gq, g, lambda i: np.zeros(2)).split(' (')[0]})")

ref, d = build("bert")
m = llm.load(d)
ids = rng.integers(1000, 30000, (3, 40))
mask = np.ones_like(ids)
mask[1, 25:] = 0
mask[2, 10:] = 0
with torch.inference_mode():
    h = ref(torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
want = (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
got = m.embed(ids, attention_mask=mask, pooling="mean")
print(f"bert: mean-pooled embeddings of a right-padded batch, max |diff| = {np.abs(got - want).max():.2e} (bound 1e-5)")
