"""``pyaiml llm generate|bench|quantize``: the command-line side of pyaiml.llm (the parser lives in
pyaiml/cli.py; this module runs the subcommands).

- ``pyaiml llm generate MODEL_DIR --prompt TEXT [--max-tokens N --temperature T --top-k K
  --top-p P --repetition-penalty R --stop S --seed N --chat --threads N]`` streams the
  continuation to stdout as it is generated and prints a one-line summary (tokens, finish
  reason, tokens/s) to stderr.
- ``pyaiml llm bench MODEL_DIR [--prompt-tokens 128 --decode-tokens 32 --batch 1 --repeats 3
  --threads N --json PATH]`` times prefill (one forward over the prompt) and decode (one
  cached step per token, greedy, end-of-sequence ignored) on random token ids and prints
  tokens/s for each (median of the repeats, with min and max).
- ``pyaiml llm quantize MODEL_DIR OUT_DIR`` writes an int8 copy (pyaiml.llm.quant's layout).

Not here: model code. Tests: tests/test_llm_cli.py.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np


def _load(args):
    import pyaiml
    from pyaiml import llm

    if getattr(args, "threads", None):
        pyaiml.set_num_threads(args.threads)
    kf = getattr(args, "key_file", None)
    return llm.load(args.model_dir, key=None if kf is None else f"file:{kf}")


def run_generate(args) -> int:
    model = _load(args)
    if not hasattr(model, "generate"):
        print(f"pyaiml llm generate: {args.model_dir} is a {model.family} encoder; it embeds text but does not "
              "generate", file=sys.stderr)
        return 2
    kw = {"max_new_tokens": args.max_tokens, "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
              "repetition_penalty": args.repetition_penalty, "stop": args.stop or None, "seed": args.seed,
              "ignore_eos": args.ignore_eos}
    if model.tokenizer is None:
        print(f"pyaiml llm generate: {args.model_dir} has no tokenizer.json", file=sys.stderr)
        return 2
    if args.chat:
        text = model.tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}])
        prompt = model.tokenizer.encode(text, add_special_tokens=False)
    else:
        prompt = args.prompt
    if not args.no_echo and not args.chat:
        sys.stdout.write(args.prompt)
    t0 = time.perf_counter()
    out = model.generate(prompt, callback=lambda piece: (sys.stdout.write(piece), sys.stdout.flush()), **kw)
    dt = time.perf_counter() - t0
    sys.stdout.write("\n")
    t = out.timings
    rate = t["decode_steps"] / t["decode_s"] if t["decode_s"] > 0 else float("nan")
    print(f"[{len(out.prompt_ids)} prompt tokens, {len(out.ids)} generated, finish: {out.finish_reason}, "
          f"{dt:.2f} s; prefill {t['prefill_s'] * 1e3:.0f} ms, decode {rate:.1f} tokens/s]", file=sys.stderr)
    return 0


def bench(model, prompt_tokens=128, decode_tokens=32, batch=1, repeats=3, seed=0) -> dict:
    """Prefill and decode throughput of a decoder on random ids: a dict of tokens/s
    (median, min, max over ``repeats``) plus the shape and the weights' size."""
    from pyaiml import get_num_threads, ops

    rng = np.random.default_rng(seed)
    lo = min(3, model.vocab_size - 1)
    ids = rng.integers(lo, model.vocab_size, (batch, prompt_tokens))
    pre, dec = [], []
    for r in range(repeats + 1):  # the first run warms up (allocations, kernel choice)
        cache = model.new_cache(batch, prompt_tokens + decode_tokens)
        with ops.finite_checks(False):
            t0 = time.perf_counter()
            logits = model.forward(ids, cache, last_only=True)
            t1 = time.perf_counter()
            nxt = logits.argmax(-1)[:, None]
            for _ in range(decode_tokens):
                nxt = model.forward(nxt, cache, last_only=True).argmax(-1)[:, None]
            t2 = time.perf_counter()
        if r:
            pre.append(batch * prompt_tokens / (t1 - t0))
            dec.append(batch * decode_tokens / (t2 - t1))

    def stats(v):
        return {"median": float(np.median(v)), "min": float(np.min(v)), "max": float(np.max(v))}

    return {"model_type": model.config.get("model_type"), "layers": model.num_layers, "width": model.hidden_size,
            "weights_mib": model.weights_nbytes() / 2**20, "threads": get_num_threads(), "batch": batch,
            "prompt_tokens": prompt_tokens, "decode_tokens": decode_tokens, "repeats": repeats,
            "prefill_tokens_per_s": stats(pre), "decode_tokens_per_s": stats(dec)}


def run_bench(args) -> int:
    model = _load(args)
    if not hasattr(model, "forward"):
        print(f"pyaiml llm bench: {args.model_dir} is a {model.family} encoder; bench times decoders",
              file=sys.stderr)
        return 2
    r = bench(model, args.prompt_tokens, args.decode_tokens, args.batch, args.repeats)
    p, d = r["prefill_tokens_per_s"], r["decode_tokens_per_s"]
    print(f"{args.model_dir}: {r['model_type']}, {r['layers']} layers, width {r['width']}, "
          f"{r['weights_mib']:.1f} MiB float32 weights; {r['threads']} threads, batch {r['batch']}")
    print(f"prefill {r['prompt_tokens']:>4} tokens: {p['median']:10.1f} tokens/s  (min {p['min']:.1f}, max {p['max']:.1f})")
    print(f"decode  {r['decode_tokens']:>4} tokens: {d['median']:10.1f} tokens/s  (min {d['min']:.1f}, max {d['max']:.1f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


def run_quantize(args) -> int:
    from pyaiml.llm.quant import save_quantized

    kf, skf = args.key_file, args.source_key_file
    r = save_quantized(args.model_dir, args.out_dir, key=None if kf is None else f"file:{kf}",
                       src_key=None if skf is None else f"file:{skf}")
    print(f"{args.out_dir}: {r['quantized']} weights in int8 Q8_0 (blocks of 32, float16 scales), {r['kept']} tensors "
          f"kept in float32; model.safetensors {r['bytes'] / 2**20:.2f} MiB")
    return 0


def run(args) -> int:
    try:
        if args.llm_cmd == "generate":
            return run_generate(args)
        if args.llm_cmd == "bench":
            return run_bench(args)
        if args.llm_cmd == "quantize":
            return run_quantize(args)
    except (ValueError, TypeError, ImportError, OSError) as e:
        print(f"pyaiml llm {args.llm_cmd}: {e}", file=sys.stderr)
        return 1
    return 2
