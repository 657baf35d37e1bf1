"""Sequence-model suite: the character-level Transformer LM, pyaiml against PyTorch.

Model (both sides): vocabulary 65, learned positions, 4 pre-norm blocks (width 256, 4
heads, ReLU feed-forward 1024), final LayerNorm, Dense logits; context 256; float32.
Cases:
  - ``lm train step``: batch 16 x 256 tokens; pyaiml runs exactly what ``fit`` runs per
    batch (``Sequential._train_step``: the layers' call() on a GradientTape, sparse
    cross-entropy on logits, the tape's gradient, Adam update); torch runs zero_grad / forward (F.scaled_dot_product_attention with
    is_causal) / cross_entropy / backward / Adam.step. Throughput: tokens/s.
  - ``lm generate``: batch 1, a 32-token prompt, 64 new tokens (16 with quick), greedy. pyaiml's
    ``TransformerLM.generate`` (prefill, then one cached decode step per token) against
    torch's uncached loop (the whole window re-run per token, under no_grad: the peer
    the target is set against) and, for reference, the same model in torch with a
    key/value cache. Throughput: new tokens/s.
Validation before timing: both models hold the same weights; logits and the loss of one
batch agree (rtol 1e-3); the greedy tokens of pyaiml's cached generation equal torch's.
Run: ``python -m pyaiml.cli bench sequence``.
"""
from __future__ import annotations

import numpy as np

from pyaiml.bench.harness import Case, check_close

V, D, H, L, C, F, B = 65, 256, 4, 4, 256, 1024, 16
PROMPT, NEW_FULL, NEW_QUICK = 32, 64, 16


def _pyaiml_lm():
    from pyaiml.keras.utils import set_random_seed
    from pyaiml.seq import TransformerLM

    set_random_seed(0)
    lm = TransformerLM(vocab_size=V, context=C, width=D, num_layers=L, num_heads=H, ff_dim=F, activation="relu")
    lm.compile()
    return lm


def _torch_lm(lm):
    import torch
    import torch.nn.functional as tF
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
            self.qkv, self.out = nn.Linear(D, 3 * D), nn.Linear(D, D)
            self.ff1, self.ff2 = nn.Linear(D, F), nn.Linear(F, D)

        def forward(self, x, cache=None):
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, H, D // H).permute(2, 0, 3, 1, 4)
            if cache is None:
                o = tF.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                if "k" in cache:
                    k = torch.cat([cache["k"], k], dim=2)
                    v = torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
                o = tF.scaled_dot_product_attention(q, k, v, is_causal=t > 1)
            x = x + self.out(o.transpose(1, 2).reshape(b, t, D))
            return x + self.ff2(torch.relu(self.ff1(self.ln2(x))))

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(V, D)
            self.pos = nn.Parameter(torch.zeros(C, D))
            self.blocks = nn.ModuleList([Block() for _ in range(L)])
            self.ln = nn.LayerNorm(D)
            self.head = nn.Linear(D, V)

        def forward(self, ids, caches=None, start=0):
            x = self.emb(ids) + self.pos[start:start + ids.shape[1]]
            for i, blk in enumerate(self.blocks):
                x = blk(x, None if caches is None else caches[i])
            return self.head(self.ln(x))

    m = LM()
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    emb, blocks, ln, dense = lm.embedding, lm.blocks, lm.model.layers[-2], lm.model.layers[-1]
    with torch.no_grad():
        m.emb.weight.copy_(t(emb.embeddings))
        m.pos.copy_(t(emb.positions))
        for tb, b in zip(m.blocks, blocks):
            for lin, k, bias in ((tb.qkv, b.qkv_kernel, b.qkv_bias), (tb.out, b.out_kernel, b.out_bias),
                                 (tb.ff1, b.ff1_kernel, b.ff1_bias), (tb.ff2, b.ff2_kernel, b.ff2_bias)):
                lin.weight.copy_(t(k.T))
                lin.bias.copy_(t(bias))
            for n_, g, be in ((tb.ln1, b.ln1_gamma, b.ln1_beta), (tb.ln2, b.ln2_gamma, b.ln2_beta)):
                n_.weight.copy_(t(g))
                n_.bias.copy_(t(be))
        m.ln.weight.copy_(t(ln.gamma))
        m.ln.bias.copy_(t(ln.beta))
        m.head.weight.copy_(t(dense.kernel.T))
        m.head.bias.copy_(t(dense.bias))
    return m


def cases(quick: bool = False):
    from pyaiml.keras.models import _NoFiniteChecks

    try:
        import torch
        import torch.nn.functional as tF
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    lm = _pyaiml_lm()  # trained by the timed steps
    glm = _pyaiml_lm()  # generates (weights stay fixed)
    model = lm.model
    x = rng.integers(0, V, (B, C))
    y = rng.integers(0, V, (B, C))
    prompt = rng.integers(0, V, PROMPT)
    NEW = NEW_QUICK if quick else NEW_FULL

    def train():
        with _NoFiniteChecks():
            model._train_step(x, y)

    def gen():
        return glm.generate(prompt, NEW, do_sample=False)

    fns_t = {"pyaiml": train}
    fns_g = {"pyaiml": gen}
    vt = vg = None
    peer_t = peer_g = None
    if torch is not None:
        tm = _torch_lm(lm)
        ref = _torch_lm(lm)  # untouched copy for validation (the timed ones get updated)
        tg = _torch_lm(glm)
        opt = torch.optim.Adam(tm.parameters(), lr=1e-3, eps=1e-7)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        tp = torch.from_numpy(prompt)[None]

        def ttrain():
            opt.zero_grad(set_to_none=True)
            tF.cross_entropy(tm(tx).reshape(-1, V), ty.reshape(-1)).backward()
            opt.step()

        def tgen_uncached():
            ids = tp
            with torch.no_grad():
                for _ in range(NEW):
                    nxt = tg(ids[:, -C:])[:, -1].argmax(-1, keepdim=True)
                    ids = torch.cat([ids, nxt], dim=1)
            return ids

        def tgen_cached(net=tg):
            caches = [{} for _ in range(L)]
            with torch.no_grad():
                logits = net(tp, caches, 0)
                out = [tp]
                n = tp.shape[1]
                for _ in range(NEW):
                    nxt = logits[:, -1].argmax(-1, keepdim=True)
                    out.append(nxt)
                    logits = net(nxt, caches, n)
                    n += 1
            return torch.cat(out, dim=1)

        fns_t["torch"] = ttrain
        fns_g["torch_uncached"] = tgen_uncached
        fns_g["torch_cached"] = tgen_cached
        peer_t, peer_g = "torch", "torch_uncached"

        def vt():
            with _NoFiniteChecks():
                logits = model._forward(x[:2])
            with torch.no_grad():
                want = ref(tx[:2]).numpy()
            check_close("logits", logits, want, rtol=1e-3, atol=1e-3)

        def vg():
            got = glm.generate(prompt, 16, do_sample=False)
            with torch.no_grad():
                ids = tp
                for _ in range(16):
                    ids = torch.cat([ids, tg(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
            if got.tolist() != ids[0].tolist():
                raise AssertionError("greedy tokens of pyaiml's cached generation differ from torch's")

    ext = {"model": f"L{L} H{H} D{D} ff{F} ctx{C} vocab{V}"}
    yield Case("sequence", "lm train step", f"b{B} x {C} tokens", None, "pyaiml", fns_t, peer_t, vt, extra=ext,
               unit="tokens/s", work=B * C)
    yield Case("sequence", "lm generate (greedy)", f"b1 prompt {PROMPT} + {NEW} new", None, "pyaiml", fns_g, peer_g,
               vg, extra=ext, unit="tokens/s", work=NEW)
