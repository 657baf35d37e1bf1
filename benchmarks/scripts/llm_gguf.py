"""Checkpoints and GGUF files for the side-by-side decoder benchmark (llm_decode.py).

What it is: one place that builds the two random checkpoints every side of the benchmark
reads, and turns them into GGUF files with llama.cpp's own converter:

- ``gpt2``: GPT-2 small shape (12 layers, width 768, 12 heads, vocabulary 50257,
  n_positions 1024), 124.4M parameters (tied head).
- ``llama``: a Llama with grouped-query attention, 12 layers, width 768, 12 heads of 64,
  4 key/value heads, SwiGLU width 1536, vocabulary 32000, untied head, RoPE theta 10000:
  110.5M parameters (the ~110M Llama of issue 18; width 1536 instead of Llama's usual
  8/3 x 768 = 2048 keeps it at ~110M rather than 125M).

Both come from transformers with ``torch.manual_seed(0)`` and ``save_pretrained``
(safetensors, float32), plus a tokenizer trained here with the ``tokenizers`` library on
Tiny Shakespeare: a byte-level BPE for GPT-2 (``<|endoftext|>``; the converter pads the
vocabulary to 50257 with unused entries), and a Llama-style BPE for Llama (``<unk>``,
``<s>``, ``</s>``, the 256 ``<0xNN>`` byte-fallback tokens, ``▁`` for spaces), padded to
32000 with ``<unused_N>`` entries because llama.cpp needs one token per embedding row.
The benchmark feeds token ids, so what the vocabulary holds does not change the timing.
The GPT-2 config.json also carries ``n_ctx`` (= n_positions), as OpenAI's GPT-2 configs
do, because the converter reads it.

The GGUF files (F32, F16, Q8_0: the converter's ``--outtype``) are written by
``convert_hf_to_gguf.py`` from the llama.cpp sources that llama-cpp-python vendors (found
with ``--converter DIR``, ``$PYAIML_LLAMA_CPP_CONVERTER``, or fetched once with
``pip download --no-binary :all: llama-cpp-python==<installed version>`` into the cache).
One step is added to the converter, in the subprocess that runs it: it identifies a BPE
pre-tokenizer by hashing the token ids of a fixed text against the list of published
models, and a tokenizer trained here is on no list, so for the GPT-2 checkpoint (whose
tokenizer.json uses GPT-2's byte-level pre-tokenizer) the unrecognised hash is answered
with "gpt-2", which is what convert_hf_to_gguf_update.py would register for it. Tensors,
layouts and quantisation are the converter's own.

Files live under ``--cache`` (default $TMPDIR/pyaiml-llm-bench) and are rebuilt when the
recorded recipe (config, seed, torch/transformers versions) changes.

What it is not: a test, or a general GGUF exporter for pyaiml. Tested by running it:
``python benchmarks/scripts/llm_gguf.py --model both`` prints the files it made; the
benchmark loads every one of them on its side.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

GPT2 = {"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 1024}
LLAMA = {"num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "num_key_value_heads": 4,
         "intermediate_size": 1536, "vocab_size": 32000, "max_position_embeddings": 2048, "rope_theta": 10000.0,
         "tie_word_embeddings": False}
NAMES = {"gpt2": "gpt2-small", "llama": "llama-110m"}
OUTTYPES = ("f32", "f16", "q8_0")
SEED = 0


def default_cache() -> str:
    return os.path.join(tempfile.gettempdir(), "pyaiml-llm-bench")


def _shakespeare_lines():
    from pyaiml.datasets.shakespeare import load_tiny_shakespeare

    return [line for line in load_tiny_shakespeare().splitlines() if line.strip()]


def _gpt2_tokenizer(folder, vocab_size):
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
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_shakespeare_lines(), trainer)
    tok.save(os.path.join(folder, "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1024, "bos_token": "<|endoftext|>",
           "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    return tok.get_vocab_size()


def _llama_tokenizer(folder, vocab_size):
    """A tokenizer shaped like Llama's tokenizer.json (BPE with byte fallback, '▁' for
    spaces), trained on Shakespeare and padded to exactly ``vocab_size`` entries."""
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        normalizers,
        trainers,
    )

    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]

    def shell(model):
        t = Tokenizer(model)
        t.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        t.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                       decoders.Strip(content=" ", left=1)])
        return t

    tok = shell(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials + byte_tokens, show_progress=False)
    tok.train_from_iterator(_shakespeare_lines(), trainer)
    # rebuild from the trained vocabulary and merges: only <unk>/<s>/</s> stay special,
    # the byte tokens become plain vocabulary entries (as in Llama's file), and unused
    # entries fill the vocabulary up to vocab_size
    model = json.loads(tok.to_str())["model"]
    vocab = dict(model["vocab"])
    n = len(vocab)
    for i in range(n, vocab_size):
        vocab[f"<unused_{i}>"] = i
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    out = shell(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    out.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    out.save(os.path.join(folder, "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 2048, "bos_token": "<s>",
           "eos_token": "</s>", "unk_token": "<unk>", "add_prefix_space": None}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    if out.get_vocab_size() != vocab_size:
        raise RuntimeError(f"llama tokenizer: {out.get_vocab_size()} entries, wanted {vocab_size}")
    return n


def _recipe(kind):
    import torch
    import transformers

    return {"kind": kind, "config": GPT2 if kind == "gpt2" else LLAMA, "seed": SEED, "torch": torch.__version__,
            "transformers": transformers.__version__, "recipe": 2}


def checkpoint(kind, cache=None) -> str:
    """The folder of the ``kind`` ('gpt2' or 'llama') checkpoint, built if missing or stale."""
    if kind not in NAMES:
        raise ValueError(f"checkpoint: kind must be one of {sorted(NAMES)}. Received {kind!r}")
    folder = os.path.join(cache or default_cache(), NAMES[kind])
    stamp = os.path.join(folder, "recipe.json")
    want = _recipe(kind)
    if os.path.isfile(stamp):
        with open(stamp) as f:
            if json.load(f) == want:
                return folder
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    os.makedirs(folder, exist_ok=True)
    for f in glob.glob(os.path.join(folder, "*")):
        os.remove(f)
    torch.manual_seed(SEED)
    if kind == "gpt2":
        cfg = transformers.GPT2Config(**GPT2)
        model = transformers.GPT2LMHeadModel(cfg)
    else:
        cfg = transformers.LlamaConfig(**LLAMA)
        model = transformers.LlamaForCausalLM(cfg)
    model.eval().save_pretrained(folder)
    if kind == "gpt2":
        # OpenAI's GPT-2 configs carry n_ctx; the converter reads it
        p = os.path.join(folder, "config.json")
        with open(p) as f:
            c = json.load(f)
        c["n_ctx"] = GPT2["n_positions"]
        with open(p, "w") as f:
            json.dump(c, f, indent=2)
        want["trained_vocab"] = _gpt2_tokenizer(folder, GPT2["vocab_size"])
    else:
        want["trained_vocab"] = _llama_tokenizer(folder, LLAMA["vocab_size"])
    trained = want.pop("trained_vocab")
    with open(stamp, "w") as f:
        json.dump(want, f, indent=1)
    with open(os.path.join(folder, "tokenizer_trained_entries.txt"), "w") as f:
        f.write(f"{trained}\n")
    return folder


def _llama_cpp_version():
    from importlib.metadata import version

    return version("llama-cpp-python")


def converter_dir(cache=None, given=None) -> str:
    """A llama.cpp source folder holding convert_hf_to_gguf.py (and its gguf-py and
    conversion packages): ``given``, $PYAIML_LLAMA_CPP_CONVERTER, or the vendored copy in
    llama-cpp-python's sdist (fetched with pip into the cache once)."""
    for d in (given, os.environ.get("PYAIML_LLAMA_CPP_CONVERTER")):
        if d:
            if not os.path.isfile(os.path.join(d, "convert_hf_to_gguf.py")):
                raise ValueError(f"converter: no convert_hf_to_gguf.py in {d!r}")
            return d
    ver = _llama_cpp_version()
    root = os.path.join(cache or default_cache(), f"llama.cpp-{ver}")
    if os.path.isfile(os.path.join(root, "convert_hf_to_gguf.py")):
        return root
    dl = tempfile.mkdtemp(prefix="llama-cpp-sdist-")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", "llama-cpp-python", "--no-deps",
                    f"llama-cpp-python=={ver}", "-d", dl, "-q"], check=True)
    (sdist,) = glob.glob(os.path.join(dl, "llama_cpp_python-*.tar.gz"))
    keep = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
    with tarfile.open(sdist) as tar:
        members = []
        for m in tar.getmembers():
            parts = m.name.split("/vendor/llama.cpp/", 1)
            if len(parts) == 2 and parts[1].startswith(keep) and (m.isfile() or m.isdir()):
                m.name = parts[1]
                members.append(m)
        tar.extractall(root, members=members, filter="data")
    shutil.rmtree(dl, ignore_errors=True)
    return root


def _run_converter(conv_dir, folder, outtype, outfile):
    """In a fresh interpreter: the converter, with the GPT-2 pre-tokenizer answer added."""
    sys.path.insert(0, conv_dir)
    sys.path.insert(1, os.path.join(conv_dir, "gguf-py"))
    import convert_hf_to_gguf as cv
    from conversion.base import TextModel

    asked = TextModel.get_vocab_base_pre

    def vocab_base_pre(self, tokenizer):
        try:
            return asked(self, tokenizer)
        except NotImplementedError:
            with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as f:
                pre = json.load(f).get("pre_tokenizer") or {}
            if pre.get("type") == "ByteLevel":
                return "gpt-2"
            raise

    TextModel.get_vocab_base_pre = vocab_base_pre
    sys.argv = ["convert_hf_to_gguf.py", folder, "--outtype", outtype, "--outfile", outfile]
    cv.main()


def gguf(kind, outtype, cache=None, conv=None, log=None) -> str:
    """Path of the GGUF file of checkpoint ``kind`` in ``outtype`` (f32, f16, q8_0)."""
    if outtype not in OUTTYPES:
        raise ValueError(f"gguf: outtype must be one of {OUTTYPES}. Received {outtype!r}")
    folder = checkpoint(kind, cache)
    out_dir = folder + ".gguf"
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, f"{NAMES[kind]}-{outtype.upper()}.gguf")
    src = os.path.join(folder, "model.safetensors")
    if os.path.isfile(out) and os.path.getmtime(out) >= os.path.getmtime(src):
        return out
    d = converter_dir(cache, conv)
    logf = log or (out + ".log")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join([repo] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    with open(logf, "w") as lf:
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--run-converter", d, folder, outtype,
                            out + ".part"], check=False, stdout=lf, stderr=subprocess.STDOUT,
                           env=dict(os.environ, PYTHONPATH=path))
    if r.returncode:
        with open(logf) as lf:
            tail = lf.read()[-3000:]
        raise RuntimeError(f"convert_hf_to_gguf.py failed for {folder} ({outtype}); log {logf}:\n{tail}")
    os.replace(out + ".part", out)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=["gpt2", "llama", "both"], default="both")
    p.add_argument("--outtype", action="append", choices=OUTTYPES)
    p.add_argument("--cache", default=None)
    p.add_argument("--converter", default=None, help="llama.cpp folder with convert_hf_to_gguf.py")
    p.add_argument("--run-converter", nargs=4, metavar=("DIR", "FOLDER", "OUTTYPE", "OUTFILE"),
                   help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.run_converter:
        _run_converter(*a.run_converter)
        return 0
    kinds = ["gpt2", "llama"] if a.model == "both" else [a.model]
    for k in kinds:
        print(checkpoint(k, a.cache))
        for t in a.outtype or OUTTYPES:
            path = gguf(k, t, a.cache, a.converter)
            print(f"{path}  {os.path.getsize(path) / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
