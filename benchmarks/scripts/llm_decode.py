"""pyaiml.llm side by side with transformers and llama.cpp: prefill and greedy decode of
GPT-2 small and a ~110M Llama (issue 18, acceptance 3 and 4), in one process, same
threads, same checkpoint, same token ids.

Checkpoints: benchmarks/scripts/llm_gguf.py builds them (random weights, torch seed 0,
``save_pretrained``) and converts them with llama.cpp's own convert_hf_to_gguf.py to F32,
F16 and Q8_0 GGUF files; every side reads that one folder (or its GGUF conversions).

Sides (batch 1, --prompt tokens of prefill, then --decode greedy steps of one token):

- pyaiml f32 and pyaiml int8 (``model.quantize()``), through the public model API only:
  ``llm.load``, ``model.new_cache``, ``model.forward(..., last_only=True)``.
- transformers f32: AutoModelForCausalLM with attn_implementation="sdpa",
  torch.inference_mode, its own KV cache (``past_key_values``), one token per call.
- llama.cpp F32 / F16 / Q8_0 through llama_cpp.Llama(n_threads=T, n_threads_batch=T,
  n_ctx, n_batch >= prompt, verbose=False): ``eval`` of the prompt, then one ``eval`` per
  token, greedy from the last logits (llama_get_logits_ith(ctx, -1)); the context's
  memory is cleared before each repeat. llama.cpp keeps its default F16 KV cache.
- pyaiml f32 batch 8: 8 sequences of random ids decoding together through one
  ``model.forward`` per step on a batch-8 cache; throughput = 8 x steps / time, set
  against the batch-1 decode rate of the same run.

Every side's first-token greedy choice comes from its own logits; the prompt logits of
pyaiml f32 and llama.cpp F32 are checked against transformers first (pyaiml within 1e-4 of
the largest logit, llama.cpp within 1e-2, its F16 KV cache included). Each side first runs
once uncounted (the whole prefill and 4 decode steps: allocations, thread start-up, page
faults of the weights), then the sides alternate in each of --repeats runs; figures are
medians with [min-max]. Per side the CPU time (time.process_time, all threads) over wall
time shows how many cores it really kept busy. The load average (os.getloadavg) is
printed before and after each model.

Memory bandwidth: timed ``torch.sum`` over a 1 GiB float32 tensor with T threads (a
read-only stream; the tensor is allocated once and touched first, so no page faults are
timed): best of 7 at the start, then best of 3 after every repeat (then a 0.5 s pause); the
largest sample of the run is taken as the machine's limit (on a shared machine the samples
spread widely: 20 to 56 GB/s within one hour here), and the samples' spread is printed.
For each decode side, the fraction of that bandwidth = bytes of weights read per token x
tokens/s / bandwidth. Bytes read per token: every
weight except the embedding tables, which a step touches one row of (a tied head is read
whole as the head); pyaiml from ``weights_nbytes()`` less its token/position tables,
transformers the same figure (same tensors in float32), llama.cpp from the GGUF file's
tensor sizes less token_embd (unless it is also the output) and position_embd. The KV
cache's reads are not counted (at 192 positions about 3% of GPT-2's weights in float32).

Resident memory (acceptance 4): a fresh subprocess loads only pyaiml's float32 model,
prefills and decodes, and reports its largest VmRSS during decode against
``weights_nbytes()`` + ``cache.nbytes``, also with the RSS of the interpreter before the
model was loaded (Python, NumPy, pyaiml) taken off.

The allocator is left at glibc's defaults for every side (same process).

What it is not: a test; nothing here asserts a speed. Without llama-cpp-python (the
``bench`` extra) the llama.cpp sides are skipped with a line saying so.

Run: python benchmarks/scripts/llm_decode.py [--model gpt2|llama|both] [--threads 2]
     [--prompt 128] [--decode 64] [--repeats 3] [--quick] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def _args(argv=None):
    p = argparse.ArgumentParser(description="pyaiml.llm vs transformers vs llama.cpp, prefill and decode")
    p.add_argument("--model", choices=["gpt2", "llama", "both"], default="both")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--decode", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=8, help="sequences of the batched pyaiml decode (0: skip)")
    p.add_argument("--quick", action="store_true", help="smoke run: prompt 16, decode 4, 1 repeat, no RSS probe")
    p.add_argument("--no-llama-cpp", action="store_true", help="skip the llama.cpp sides")
    p.add_argument("--no-rss", action="store_true", help="skip the resident-memory subprocess")
    p.add_argument("--cache", default=None, help="folder for checkpoints and GGUF files (llm_gguf.py)")
    p.add_argument("--converter", default=None, help="llama.cpp folder with convert_hf_to_gguf.py")
    p.add_argument("--json", default=None, help="write every figure to this file")
    p.add_argument("--rss-probe", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.quick:
        a.prompt, a.decode, a.repeats, a.no_rss = 16, 4, 1, True
    for name in ("threads", "prompt", "decode", "repeats"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be >= 1 (received {getattr(a, name)})")
    return a


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def rss_probe(a) -> int:
    """Runs in a fresh interpreter: pyaiml f32 only, prints one JSON line."""
    import pyaiml
    from pyaiml import llm, ops

    pyaiml.set_num_threads(a.threads)
    base = _rss_bytes()
    m = llm.load(a.rss_probe, tokenizer=False)
    cache = m.new_cache(1, a.prompt + a.decode)
    ids = np.random.default_rng(1).integers(0, m.vocab_size, (1, a.prompt))
    peak = 0
    with ops.finite_checks(False):
        nxt = m.forward(ids, cache, last_only=True).argmax(-1)[:, None]
        for _ in range(a.decode):
            nxt = m.forward(nxt, cache, last_only=True).argmax(-1)[:, None]
            peak = max(peak, _rss_bytes())
    print(json.dumps({"rss_decode_max": peak, "rss_before_load": base, "weights": m.weights_nbytes(),
                      "kv_cache": cache.nbytes}))
    return 0


class Bandwidth:
    """Read bandwidth in bytes/s: timed torch.sum over one ``gib`` GiB float32 tensor with
    ``threads`` threads, held for the whole run and sampled again and again, since other
    processes on a shared machine come and go; ``best`` is the largest seen."""

    def __init__(self, threads, gib=1.0):
        import torch

        torch.set_num_threads(threads)
        self.x = torch.ones(int(gib * 2**30) // 4, dtype=torch.float32)
        self.x.sum()  # touch every page before timing
        self.samples = []

    def sample(self, tries=3) -> float:
        best = float("inf")
        for _ in range(tries):
            t0 = time.perf_counter()
            self.x.sum()
            best = min(best, time.perf_counter() - t0)
        self.samples.append(self.x.numel() * 4 / best)
        return self.samples[-1]

    @property
    def best(self) -> float:
        return max(self.samples)

    def describe(self) -> str:
        v = np.array(self.samples) / 1e9
        return (f"best {v.max():.1f} GB/s of {len(v)} samples (min {v.min():.1f}, median {np.median(v):.1f}); "
                "torch.sum over 1 GiB float32")


# -- sides -----------------------------------------------------------------------------------
class Timed:
    """(prefill wall, decode wall, prefill cpu, decode cpu) of one run."""

    def __init__(self):
        self.w0 = time.perf_counter()
        self.c0 = time.process_time()

    def mark(self):
        self.w1, self.c1 = time.perf_counter(), time.process_time()

    def end(self):
        w2, c2 = time.perf_counter(), time.process_time()
        return self.w1 - self.w0, w2 - self.w1, self.c1 - self.c0, c2 - self.c1


def pyaiml_side(model, ids, decode):
    from pyaiml import ops

    def run(n=decode):
        cache = model.new_cache(ids.shape[0], ids.shape[1] + decode)
        with ops.finite_checks(False):
            t = Timed()
            nxt = model.forward(ids, cache, last_only=True).argmax(-1)[:, None]
            t.mark()
            for _ in range(n):
                nxt = model.forward(nxt, cache, last_only=True).argmax(-1)[:, None]
            return t.end()

    return run


def torch_side(ref, ids, decode):
    import torch

    x = torch.tensor(ids)

    def run(n=decode):
        with torch.inference_mode():
            t = Timed()
            out = ref(x, use_cache=True)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            t.mark()
            past = out.past_key_values
            for _ in range(n):
                out = ref(nxt, past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            return t.end()

    return run


def llama_cpp_logits(lm):
    import llama_cpp

    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(lm.ctx, -1), shape=(lm.n_vocab(),))


def llama_cpp_clear(lm):
    import llama_cpp

    lm.reset()
    mem = llama_cpp.llama_get_memory(lm.ctx)
    if mem is not None:
        llama_cpp.llama_memory_clear(mem, True)


def llama_cpp_side(lm, ids, decode):
    prompt = [int(i) for i in ids[0]]

    def run(n=decode):
        llama_cpp_clear(lm)
        t = Timed()
        lm.eval(prompt)
        nxt = int(llama_cpp_logits(lm).argmax())
        t.mark()
        for _ in range(n):
            lm.eval([nxt])
            nxt = int(llama_cpp_logits(lm).argmax())
        return t.end()

    return run


def gguf_bytes_per_token(path, conv_dir) -> int:
    """Bytes of the GGUF tensors one decode step reads (all but the embedding tables).
    Reads the file with the gguf package, or with the converter's own copy of it."""
    try:
        from gguf import GGUFReader
    except ImportError:
        sys.path.append(os.path.join(conv_dir, "gguf-py"))
        from gguf import GGUFReader

    r = GGUFReader(path)
    sizes = {t.name: int(t.n_bytes) for t in r.tensors}
    n = sum(sizes.values()) - sizes.get("position_embd.weight", 0)
    if "output.weight" in sizes:
        n -= sizes.get("token_embd.weight", 0)
    return n


def pyaiml_bytes_per_token(m) -> int:
    """weights_nbytes() less the token/position tables a step reads one row of."""
    n = m.weights_nbytes()
    for name in ("embed", "wpe", "wte"):
        t = getattr(m, name, None)
        if isinstance(t, np.ndarray):
            n -= t.nbytes
    return n


# -- one model -------------------------------------------------------------------------------
def run_model(kind, a, bwm, out):
    import llm_gguf
    import torch
    import transformers

    import pyaiml
    from pyaiml import llm

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    folder = llm_gguf.checkpoint(kind, a.cache)
    ggufs = {}
    if a.no_llama_cpp:
        print("llama.cpp: skipped (--no-llama-cpp)")
    else:
        try:
            import llama_cpp
        except ImportError as e:
            print(f"llama.cpp: skipped, llama_cpp is not importable ({e}); pip install llama-cpp-python "
                  "(the bench extra)")
        else:
            for t in llm_gguf.OUTTYPES:
                try:
                    ggufs[t] = llm_gguf.gguf(kind, t, a.cache, a.converter)
                except (RuntimeError, OSError, ValueError, subprocess.CalledProcessError) as e:  # skip that side, say why
                    print(f"llama.cpp {t.upper()}: skipped, conversion failed: {str(e)[:400]}")
    load0 = os.getloadavg()
    torch.set_num_threads(a.threads)
    pyaiml.set_num_threads(a.threads)
    m = llm.load(folder, tokenizer=False)
    mq = llm.load(folder, tokenizer=False)
    mq.quantize()
    ref = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa",
                                                            dtype=torch.float32).eval()
    V = m.vocab_size
    ids = np.random.default_rng(0).integers(0, V, (1, a.prompt))
    with torch.inference_mode():
        want = ref(torch.tensor(ids)).logits.numpy()
    scale = np.abs(want).max()
    err = float(np.abs(m.logits(ids) - want).max() / scale)
    if err >= 1e-4:
        raise RuntimeError(f"{kind}: pyaiml f32 logits differ from transformers by {err:.2e} (relative)")
    checks = {"pyaiml f32": err}
    lms = {}
    for t, path in ggufs.items():
        import llama_cpp

        lm = llama_cpp.Llama(model_path=path, n_threads=a.threads, n_threads_batch=a.threads,
                             n_ctx=a.prompt + a.decode + 8, n_batch=max(512, a.prompt), verbose=False)
        llama_cpp_clear(lm)
        lm.eval([int(i) for i in ids[0]])
        e = float(np.abs(llama_cpp_logits(lm) - want[0, -1]).max() / scale)
        checks[f"llama.cpp {t.upper()}"] = e
        if t == "f32" and e >= 1e-2:
            raise RuntimeError(f"{kind}: llama.cpp F32 last logits differ from transformers by {e:.2e} (relative); "
                               f"the conversion of {path} is not the same model")
        lms[t] = (lm, path)
    print(f"\n## {kind}: {folder}\n")
    print(f"{m!r}; {a.threads} threads, prompt {a.prompt}, decode {a.decode}, repeats {a.repeats} (after one uncounted warm-up run per side)")
    print("prompt-logit agreement with transformers (max abs diff / max abs logit): "
          + ", ".join(f"{k} {v:.1e}" for k, v in checks.items()))

    bpt = {"pyaiml f32": pyaiml_bytes_per_token(m), "pyaiml int8": pyaiml_bytes_per_token(mq)}
    bpt["transformers f32"] = bpt["pyaiml f32"]
    sides = {"pyaiml f32": pyaiml_side(m, ids, a.decode), "pyaiml int8": pyaiml_side(mq, ids, a.decode),
             "transformers f32": torch_side(ref, ids, a.decode)}
    for t, (lm, path) in lms.items():
        sides[f"llama.cpp {t.upper()}"] = llama_cpp_side(lm, ids, a.decode)
        bpt[f"llama.cpp {t.upper()}"] = gguf_bytes_per_token(path, llm_gguf.converter_dir(a.cache, a.converter))
    if a.batch > 1:
        idsb = np.random.default_rng(2).integers(0, V, (a.batch, a.prompt))
        sides[f"pyaiml f32 batch {a.batch}"] = pyaiml_side(m, idsb, a.decode)
    res = {k: [] for k in sides}
    for k, f in sides.items():  # warm-up: the whole prefill, a few decode steps
        f(min(4, a.decode))
    for _ in range(a.repeats):
        for k, f in sides.items():
            res[k].append(f())
        # sampled after the sides, then a pause: in three runs that sampled just before
        # pyaiml's prefill, that prefill kept only one core busy (CPU/wall ~1.0, against ~1.95
        # without); other jobs starting on the machine may explain it as well
        bwm.sample()
        time.sleep(0.5)
    bw = bwm.best
    load1 = os.getloadavg()

    def stat(v):
        return {"median": float(np.median(v)), "min": float(np.min(v)), "max": float(np.max(v))}

    rows = {}
    for k, v in res.items():
        nb = a.batch if "batch" in k else 1
        pre = [nb * a.prompt / t[0] for t in v]
        dec = [nb * a.decode / t[1] for t in v]
        rows[k] = {"prefill": stat(pre), "decode": stat(dec),
                   "cpu_per_wall_prefill": float(np.median([t[2] / t[0] for t in v])),
                   "cpu_per_wall_decode": float(np.median([t[3] / t[1] for t in v]))}
        if k in bpt:
            rows[k]["bytes_per_token"] = bpt[k]
            rows[k]["bandwidth_fraction"] = bpt[k] * rows[k]["decode"]["median"] / bw

    tf = rows["transformers f32"]
    lf = rows.get("llama.cpp F32")
    print(f"\nload average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, after {load1[0]:.2f} "
          f"{load1[1]:.2f} {load1[2]:.2f}; read bandwidth so far: {bwm.describe()}\n")
    print(f"| side | prefill {a.prompt} tok/s | decode tok/s | MB read / token | % of bandwidth | "
          "CPU/wall prefill, decode | vs transformers (prefill, decode) | vs llama.cpp F32 (prefill, decode) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")

    def fmt(s, d):
        return f"{s['median']:.{d}f} [{s['min']:.{d}f}-{s['max']:.{d}f}]"

    for k, row in rows.items():
        mb = f"{row['bytes_per_token'] / 1e6:.0f}" if "bytes_per_token" in row else ""
        frac = f"{100 * row['bandwidth_fraction']:.0f}%" if "bandwidth_fraction" in row else ""
        vt = (f"{row['prefill']['median'] / tf['prefill']['median']:.2f}x, "
              f"{row['decode']['median'] / tf['decode']['median']:.2f}x")
        if "batch" in k:  # a batch's throughput is set against pyaiml's batch 1 below, not against peers
            vt = ""
        vl = "" if lf is None or "batch" in k else (f"{row['prefill']['median'] / lf['prefill']['median']:.2f}x, "
                                    f"{row['decode']['median'] / lf['decode']['median']:.2f}x")
        print(f"| {k} | {fmt(row['prefill'], 0)} | {fmt(row['decode'], 1)} | {mb} | {frac} | "
              f"{row['cpu_per_wall_prefill']:.2f}, {row['cpu_per_wall_decode']:.2f} | {vt} | {vl} |")

    # acceptance 3 of issue 18, as ratios of medians
    pf, pq = rows["pyaiml f32"], rows["pyaiml int8"]
    goals = [("f32 decode vs transformers", pf["decode"]["median"] / tf["decode"]["median"], 2.0),
             ("f32 prefill vs transformers", pf["prefill"]["median"] / tf["prefill"]["median"], 1.5)]
    if lf is not None:
        goals += [("f32 decode vs llama.cpp F32", pf["decode"]["median"] / lf["decode"]["median"], 1.0),
                  ("f32 prefill vs llama.cpp F32", pf["prefill"]["median"] / lf["prefill"]["median"], 1.0)]
    if "llama.cpp Q8_0" in rows:
        goals.append(("int8 decode vs llama.cpp Q8_0",
                      pq["decode"]["median"] / rows["llama.cpp Q8_0"]["decode"]["median"], 1.0))
    bk = f"pyaiml f32 batch {a.batch}"
    if bk in rows:
        goals.append((f"batch-{a.batch} decode throughput vs batch-1", rows[bk]["decode"]["median"]
                      / pf["decode"]["median"], 5.0))
    print("\nissue 18 acceptance 3 (ratio of medians, goal):")
    for name, v, goal in goals:
        print(f"  {name}: {v:.2f}x (goal >= {goal}x: {'met' if v >= goal else 'not met'})")

    rss = None
    if not a.no_rss:
        del m, mq, ref, lms, sides
        cmd = [sys.executable, os.path.abspath(__file__), "--rss-probe", folder, "--threads", str(a.threads),
               "--prompt", str(a.prompt), "--decode", str(a.decode)]
        pr = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if pr.returncode:
            print(f"RSS probe failed: {pr.stderr[-800:]}")
        else:
            rss = json.loads(pr.stdout.strip().splitlines()[-1])
            need = rss["weights"] + rss["kv_cache"]
            print(f"\nresident memory during pyaiml f32 decode (fresh process): {rss['rss_decode_max'] / 2**20:.0f} MiB "
                  f"= {rss['rss_decode_max'] / need:.3f}x weights {rss['weights'] / 2**20:.0f} MiB + KV cache "
                  f"{rss['kv_cache'] / 2**20:.1f} MiB (goal <= 1.15x); without the interpreter's "
                  f"{rss['rss_before_load'] / 2**20:.0f} MiB before load: "
                  f"{(rss['rss_decode_max'] - rss['rss_before_load']) / need:.3f}x")
    out[kind] = {"folder": folder, "gguf": ggufs, "checks": checks, "rows": rows, "bandwidth": bw,
                 "bandwidth_samples": list(bwm.samples),
                 "load_before": load0, "load_after": load1, "goals": {n: v for n, v, _ in goals}, "rss": rss}


def main(argv=None):
    a = _args(argv)
    if a.rss_probe:
        return rss_probe(a)
    from importlib.metadata import PackageNotFoundError, version

    import torch
    import transformers

    import pyaiml

    try:
        lcp = version("llama-cpp-python")
    except PackageNotFoundError:
        lcp = "absent"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True,
                            cwd=HERE).stdout.strip()
    print(f"commit {commit}; torch {torch.__version__}, transformers {transformers.__version__}, "
          f"llama-cpp-python {lcp}; {os.cpu_count()} CPUs; load average {os.getloadavg()}")
    bwm = Bandwidth(a.threads)
    bwm.sample(tries=7)
    print(f"read bandwidth ({a.threads} threads): {bwm.describe()}")
    pyaiml.set_num_threads(a.threads)
    out = {"commit": commit, "threads": a.threads, "prompt": a.prompt, "decode": a.decode, "repeats": a.repeats,
           "llama_cpp_python": lcp}
    for kind in (["gpt2", "llama"] if a.model == "both" else [a.model]):
        run_model(kind, a, bwm, out)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
