"""pyaiml.torch.integrations.transformers: ``attn_implementation="pyaiml"`` in Hugging Face models.

Oracle: the same model (tiny random configs built with torch.manual_seed, no files) with
transformers' own "sdpa" implementation. Logits agree within 1e-5 absolute (measured ~1e-7:
both sides run float32 softmax-weighted sums in a different order). Padding is checked two
ways: against sdpa on a padded batch, and against each sequence run alone without padding
(so a mask silently ignored on both sides would still fail). A spy on the bridge's kernel
entry points proves pyaiml's op ran. Training: GPT-2 with attention dropout through the
integration; loss decreases, gradients finite, seeded runs bitwise equal, and with dropout 0
the gradients match sdpa's. Skips cleanly without torch or transformers.
"""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

import pyaiml.torch.integrations.transformers as pyaiml_hf
from pyaiml.torch import _kernels as K
from pyaiml.torch import ops as pto

NAME = pyaiml_hf.register()
ATOL = 1e-5


@pytest.fixture
def spy(monkeypatch):
    """Counts the calls of the bridge's attention kernels."""
    calls = {"sdpa": 0, "dropout": 0, "backward": 0}
    for name, key in (("scaled_dot_product_attention", "sdpa"), ("scaled_dot_product_attention_dropout", "dropout"),
                      ("scaled_dot_product_attention_backward", "backward"),
                      ("scaled_dot_product_attention_dropout_backward", "backward")):
        orig = getattr(K, name)

        def wrapped(*a, _orig=orig, _key=key, **kw):
            calls[_key] += 1
            return _orig(*a, **kw)

        monkeypatch.setattr(K, name, wrapped)
    return calls


def _gpt2(**kw):
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=101, n_positions=64, bos_token_id=0,
                     eos_token_id=0, **kw)
    return GPT2LMHeadModel(cfg)


def _bert():
    torch.manual_seed(1)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     vocab_size=101, max_position_embeddings=64)
    return BertModel(cfg)


def _llama():
    torch.manual_seed(2)
    cfg = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=96, vocab_size=101, max_position_embeddings=64, bos_token_id=0,
                      eos_token_id=0)
    return LlamaForCausalLM(cfg)


def _batch(lengths, L, left, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 101, (len(lengths), L), generator=g)
    am = torch.zeros(len(lengths), L, dtype=torch.long)
    for b, n in enumerate(lengths):
        if left:
            am[b, L - n:] = 1
        else:
            am[b, :n] = 1
    return ids, am


def _run(model, impl, out_attr, **inputs):
    model.set_attn_implementation(impl)
    with torch.no_grad():
        return getattr(model(**inputs), out_attr)


def test_register_is_idempotent_and_checks_its_name():
    assert pyaiml_hf.register() == "pyaiml" and pyaiml_hf.registered()
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface
    assert AttentionInterface._global_mapping["pyaiml"] is pyaiml_hf.attention_forward
    assert "pyaiml" in AttentionMaskInterface._global_mapping
    for bad in ("sdpa", "", "flash_attention_2", 3):
        with pytest.raises(ValueError, match="register: name must be a new non-empty string"):
            pyaiml_hf.register(bad)
    assert not pyaiml_hf.registered("not-registered")


@pytest.mark.parametrize("left", [True, False], ids=["left_pad", "right_pad"])
def test_gpt2_logits_match_sdpa_with_padding(left, spy):
    model = _gpt2().eval()
    ids, am = _batch([13, 6, 9, 1], 13, left)
    want = _run(model, "sdpa", "logits", input_ids=ids, attention_mask=am)
    got = _run(model, NAME, "logits", input_ids=ids, attention_mask=am)
    assert spy["sdpa"] == 2  # one call per layer, through pyaiml's kernel
    assert model.config._attn_implementation == NAME
    real = am.bool()
    torch.testing.assert_close(got[real], want[real], rtol=0, atol=ATOL)
    # each sequence alone, unpadded, at the positions GPT-2 gave it in the batch (0..L-1
    # whatever the mask: left-padded tokens keep their column's position)
    for b in range(ids.shape[0]):
        sel = real[b]
        pos = torch.arange(ids.shape[1])[sel][None]
        alone = _run(model, NAME, "logits", input_ids=ids[b, sel][None], position_ids=pos)
        torch.testing.assert_close(got[b, sel], alone[0], rtol=0, atol=ATOL)


def test_gpt2_mask_is_not_ignored():
    """Padding changes the logits of real tokens after it (right pad: none; left pad: all),
    so an integration that dropped the mask would differ from sdpa here."""
    model = _gpt2().eval()
    ids, am = _batch([5, 9], 9, left=True)
    with_mask = _run(model, NAME, "logits", input_ids=ids, attention_mask=am)
    without = _run(model, NAME, "logits", input_ids=ids)
    assert (with_mask[0, -5:] - without[0, -5:]).abs().max() > 1e-3


@pytest.mark.parametrize("left", [True, False], ids=["left_pad", "right_pad"])
def test_bert_hidden_states_match_sdpa_with_padding(left, spy):
    model = _bert().eval()
    ids, am = _batch([11, 4, 7], 11, left, seed=1)
    want = _run(model, "sdpa", "last_hidden_state", input_ids=ids, attention_mask=am)
    got = _run(model, NAME, "last_hidden_state", input_ids=ids, attention_mask=am)
    assert spy["sdpa"] == 2
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)  # padded rows too
    b = 1
    sel = am[b].bool()
    if not left:  # right padding keeps positions: the sequence alone gives the same states
        alone = _run(model, NAME, "last_hidden_state", input_ids=ids[b, sel][None])
        torch.testing.assert_close(got[b, sel], alone[0], rtol=0, atol=ATOL)
    # the pooled output too
    model.set_attn_implementation(NAME)
    with torch.no_grad():
        p1 = model(input_ids=ids, attention_mask=am).pooler_output
    model.set_attn_implementation("sdpa")
    with torch.no_grad():
        p2 = model(input_ids=ids, attention_mask=am).pooler_output
    torch.testing.assert_close(p1, p2, rtol=0, atol=ATOL)


def test_llama_gqa_logits_match_sdpa_with_padding(spy):
    model = _llama().eval()
    ids, am = _batch([10, 3, 7], 10, left=True, seed=2)
    want = _run(model, "sdpa", "logits", input_ids=ids, attention_mask=am)
    got = _run(model, NAME, "logits", input_ids=ids, attention_mask=am)
    assert spy["sdpa"] == 2
    real = am.bool()
    torch.testing.assert_close(got[real], want[real], rtol=0, atol=ATOL)


def test_llama_greedy_generation_with_cache_matches_sdpa():
    model = _llama().eval()
    ids, am = _batch([8, 5], 8, left=True, seed=3)
    outs = {}
    for impl in ("sdpa", NAME):
        model.set_attn_implementation(impl)
        with torch.no_grad():
            outs[impl] = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=8, do_sample=False,
                                        pad_token_id=0)
    assert torch.equal(outs["sdpa"], outs[NAME])


def test_from_config_and_unsupported_arguments():
    cfg = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16)
    model = GPT2LMHeadModel._from_config(cfg, attn_implementation=NAME)
    assert model.config._attn_implementation == NAME
    q = torch.zeros(1, 2, 3, 8)
    with pytest.raises(ValueError, match="softcap is not supported"):
        pyaiml_hf.attention_forward(model.transformer.h[0].attn, q, q, q, None, softcap=30.0)
    with pytest.raises(ValueError, match="paged cache"):
        pyaiml_hf.attention_forward(model.transformer.h[0].attn, q, q, q, None, cache=object())
    with pytest.warns(UserWarning, match="does not return attention weights"):
        out, w = pyaiml_hf.attention_forward(model.transformer.h[0].attn, q, q, q, None, output_attentions=True)
    assert out.shape == (1, 3, 2, 8) and w is None


def test_position_bias_folds_into_the_mask():
    """T5-style relative bias: the integration equals transformers' sdpa function given the
    same bias, with a bool mask, with a float mask and causal without a mask."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(4)
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    bias = torch.randn(1, 3, 5, 5)
    bmask = torch.rand(2, 1, 5, 5) > 0.3
    bmask[..., 0] = True

    class M(torch.nn.Module):
        is_causal = True

    for mask in (None, bmask, torch.zeros(2, 1, 5, 5).masked_fill(~bmask, -1e9)):
        got, _ = pyaiml_hf.attention_forward(M(), q, k, v, mask, position_bias=bias)
        want, _ = sdpa_attention_forward(M(), q, k, v, mask, position_bias=bias)
        torch.testing.assert_close(got, want, rtol=0, atol=ATOL)


def _train(model, impl, steps, seed, lr=3e-3):
    model.set_attn_implementation(impl)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(100)
    ids = torch.randint(1, 101, (4, 16), generator=g)  # a fixed batch: the loss must fall
    torch.manual_seed(seed)
    losses, grads_finite = [], True
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        grads_finite &= all(torch.isfinite(p.grad).all().item() for p in model.parameters() if p.grad is not None)
        opt.step()
        losses.append(loss.item())
    return losses, grads_finite


def test_gpt2_trains_with_attention_dropout(spy):
    losses, finite = _train(_gpt2(attn_pdrop=0.2, resid_pdrop=0.0, embd_pdrop=0.0), NAME, 12, seed=5)
    assert spy["dropout"] == 2 * 12 and spy["sdpa"] == 0 and spy["backward"] == 2 * 12
    assert finite and all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.5, losses
    again, _ = _train(_gpt2(attn_pdrop=0.2, resid_pdrop=0.0, embd_pdrop=0.0), NAME, 12, seed=5)
    assert again == losses  # bitwise: torch.manual_seed reproduces every dropout mask
    other, _ = _train(_gpt2(attn_pdrop=0.2, resid_pdrop=0.0, embd_pdrop=0.0), NAME, 3, seed=6)
    assert other[1:] != losses[1:3]  # another seed, other masks
    # eval mode: no dropout, the flash kernel
    model = _gpt2(attn_pdrop=0.2).eval()
    model.set_attn_implementation(NAME)
    n = spy["sdpa"]
    with torch.no_grad():
        model(input_ids=torch.ones(1, 4, dtype=torch.long))
    assert spy["sdpa"] == n + 2


def test_gpt2_gradients_match_sdpa_without_dropout():
    grads = {}
    for impl in ("sdpa", NAME):
        model = _gpt2(attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
        model.set_attn_implementation(impl)
        model.train()
        ids, am = _batch([9, 5], 9, left=False, seed=7)
        labels = ids.masked_fill(am == 0, -100)
        model(input_ids=ids, attention_mask=am, labels=labels).loss.backward()
        grads[impl] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for n, g in grads["sdpa"].items():
        torch.testing.assert_close(grads[NAME][n], g, rtol=1e-4, atol=ATOL, msg=n)


def test_bfloat16_model_falls_back_to_torch():
    model = _gpt2().eval().to(torch.bfloat16)
    ids, am = _batch([7, 4], 7, left=True, seed=8)
    saved = set(pto._FALLBACK_WARNED)
    pto._FALLBACK_WARNED.discard(torch.bfloat16)
    try:
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            got = _run(model, NAME, "logits", input_ids=ids, attention_mask=am)
    finally:
        pto._FALLBACK_WARNED.clear()
        pto._FALLBACK_WARNED.update(saved)
    want = _run(model, "sdpa", "logits", input_ids=ids, attention_mask=am)
    assert got.dtype == torch.bfloat16
    real = am.bool()
    torch.testing.assert_close(got[real], want[real], rtol=0, atol=0)
    assert sum(issubclass(w.category, pto.DtypeFallbackWarning) for w in rec) == 1
