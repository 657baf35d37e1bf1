"""Small random Hugging Face checkpoints for the pyaiml.llm tests (tests/ is on sys.path).

Each ``make_*`` builds a tiny model with transformers (random weights, a fixed torch seed),
saves it with ``save_pretrained`` (safetensors) into a folder, adds a tokenizer trained
here with the ``tokenizers`` library on the first lines of Tiny Shakespeare (byte-level
BPE for the decoders, WordPiece for BERT), and returns the transformers model in eval mode
as the oracle. Importing this module needs torch, transformers, safetensors and
tokenizers: test files call :func:`require` first, which skips when one is missing.
"""
from __future__ import annotations

import json
import os

import pytest

CHATML = ("{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}"
          "{{ raise_exception('unknown role ' + m['role']) }}{% endif %}"
          "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def require():
    """(torch, transformers), skipping the calling module when an oracle package is missing."""
    for name in ("safetensors", "tokenizers"):
        pytest.importorskip(name)
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    return torch, transformers


def _lines(n=1500):
    from pyaiml.datasets.shakespeare import load_tiny_shakespeare

    return load_tiny_shakespeare().splitlines()[:n]


def bpe_tokenizer(folder, specials, bos=None, vocab_size=320, chat_template=None, extra_config=None):
    """Byte-level BPE trained on Shakespeare; ``bos`` (a special token) is prepended to
    every encoding when given. Writes tokenizer.json and tokenizer_config.json."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_lines(), trainer)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1024}
    cfg.update(extra_config or {})
    if chat_template:
        cfg["chat_template"] = chat_template
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f)
    return tok


def wordpiece_tokenizer(folder, vocab_size=400):
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(_lines(), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                                show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "[PAD]", "cls_token": "[CLS]",
                   "sep_token": "[SEP]", "unk_token": "[UNK]", "mask_token": "[MASK]"}, f)
    return tok


def _save(model, folder, dtype=None, **kw):
    import torch

    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(folder, **kw)
    if dtype is not None:
        model = model.to(torch.float32)  # the oracle: the stored (rounded) weights, run in float32
    return model.eval()


def make_gpt2(folder, seed=0, dtype=None, tokenizer=True, save_kw=None, **overrides):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    if tokenizer:
        bpe_tokenizer(folder, ["<|endoftext|>"], extra_config={"eos_token": "<|endoftext|>",
                                                                "bos_token": "<|endoftext|>"})
    # initializer_range 0.2 (not 0.02): a tiny model that does not repeat one token, so the
    # greedy comparisons see varied sequences (29 distinct ids in 48, partial UTF-8 included)
    cfg = {"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 320, "n_positions": 128, "bos_token_id": 0, "eos_token_id": 0,
               "pad_token_id": 0, "initializer_range": 0.2}
    cfg.update(overrides)
    torch.manual_seed(seed)
    return _save(GPT2LMHeadModel(GPT2Config(**cfg)), folder, dtype, **(save_kw or {}))


def make_llama(folder, seed=0, kind="llama", dtype=None, tokenizer=True, save_kw=None, **overrides):
    """Llama (GQA: 4 query heads on 2 key/value heads), or kind="mistral" / "qwen2"."""
    import torch
    import transformers

    if tokenizer:
        bpe_tokenizer(folder, ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"], bos="<s>", chat_template=CHATML,
                      extra_config={"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    cfg = {"vocab_size": 320, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "max_position_embeddings": 256, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
               "initializer_range": 0.2}
    cfg.update(overrides)
    names = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "mistral": ("MistralConfig", "MistralForCausalLM"),
             "qwen2": ("Qwen2Config", "Qwen2ForCausalLM")}[kind]
    config = getattr(transformers, names[0])(**cfg)
    torch.manual_seed(seed)
    model = getattr(transformers, names[1])(config)
    if kind == "qwen2":  # its q/k/v biases start at zero: make them matter
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.1)
    return _save(model, folder, dtype, **(save_kw or {}))


def make_bert(folder, seed=0, tokenizer=True, **overrides):
    import torch
    from transformers import BertConfig, BertModel

    if tokenizer:
        wordpiece_tokenizer(folder)
    cfg = {"vocab_size": 400, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
               "max_position_embeddings": 64, "pad_token_id": 0}
    cfg.update(overrides)
    torch.manual_seed(seed)
    return _save(BertModel(BertConfig(**cfg)), folder)
