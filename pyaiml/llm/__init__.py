"""Hugging Face checkpoints (GPT-2, Llama / Mistral / Qwen2, BERT) on pyaiml's kernels.

    import pyaiml.llm as llm
    model = llm.load("path/to/checkpoint")        # config.json + safetensors + tokenizer.json
    out = model.generate("Once upon a time", max_new_tokens=64, temperature=0.8, top_p=0.95, seed=0)
    print(out.text)
    for piece in model.stream("Hello", max_new_tokens=32):
        print(piece, end="", flush=True)
    bert = llm.load("path/to/bert")
    vectors = bert.embed(["a sentence", "another one"], pooling="mean")

:func:`load` reads the folder with the ``safetensors`` and ``tokenizers`` packages (the
``llm`` extra: ``pip install 'pyaiml[llm]'``); torch and transformers are not needed.
Weights are held in float32 (bfloat16 and float16 checkpoints are converted at load).
``import pyaiml.llm`` works without those packages; :func:`load` then raises ImportError
saying what to install.

Not here: training, GPU execution. Tests: tests/test_llm_*.py (against transformers on
small random checkpoints).
"""
from __future__ import annotations

import os

from pyaiml.llm.cache import KVCache
from pyaiml.llm.checkpoint import (
    family,
    load_tensors,
    read_config,
    read_generation_config,
)
from pyaiml.llm.generate import Generation, chat, generate, stream
from pyaiml.llm.models import GPT2, Bert, DecoderLM, Llama
from pyaiml.llm.tokenizer import Tokenizer

__all__ = [
    "GPT2",
    "Bert",
    "DecoderLM",
    "Generation",
    "KVCache",
    "Llama",
    "Tokenizer",
    "chat",
    "family",
    "generate",
    "load",
    "stream",
]

_CLASSES = {"gpt2": GPT2, "llama": Llama, "bert": Bert}


def load(path, tokenizer: bool = True, key=None):
    """The model of a checkpoint folder: a :class:`GPT2` / :class:`Llama` decoder (with
    ``generate``, ``stream``, ``chat``, ``logits``) or a :class:`Bert` encoder (``encode``,
    ``embed``).

    tokenizer: read tokenizer.json when the folder has one (``model.tokenizer``; None
    otherwise, and prompts must then be token ids).
    key: for a folder whose weight file was encrypted (``pyaiml llm quantize --key-file``,
    or ``pyaiml encrypt``); see pyaiml.privacy.
    """
    cfg = read_config(path)
    fam = family(cfg)
    p = os.fspath(path)
    gcfg = read_generation_config(p)
    tensors, meta = load_tensors(p, key=key)
    quantized = meta.get("format") == "pyaiml-q8_0"
    if quantized:
        from pyaiml.llm.quant import load_quantized_tensors

        tensors = load_quantized_tensors(tensors, meta, p)
    tok = None
    if tokenizer and os.path.isfile(os.path.join(p, "tokenizer.json")):
        eos = gcfg.get("eos_token_id", cfg.get("eos_token_id"))
        tok = Tokenizer(p, eos_token_id=eos)
    model = _CLASSES[fam](cfg, tensors, tokenizer=tok, generation_config=gcfg, path=p)
    if quantized:
        model.quantization = "q8_0"
    return model
