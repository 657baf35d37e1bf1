"""The ``pyaiml`` command: ``pyaiml info``, ``pyaiml bench [suite ...]``, ``pyaiml demo``, the encrypted-file
tools ``pyaiml encrypt|decrypt|rekey|keygen``, ``pyaiml llm generate|bench|quantize`` (pyaiml.llm.cli),
``pyaiml serve`` (pyaiml/serve/server.py) and ``pyaiml bench serve`` (pyaiml/serve/bench.py)."""
from __future__ import annotations

import argparse
import json
import sys


def _info(args) -> int:
    import pyaiml

    info = pyaiml.backend_info()
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    v = info["versions"]
    print(f"pyaiml {v['pyaiml']}  (python {v['python']}, numpy {v['numpy']}, numba {v.get('numba', 'not installed')})")
    print(f"C++ backend : {'available' if info['cpp']['available'] else 'MISSING'} - {info['cpp']['reason']}")
    print(f"Numba       : {'available' if info['numba']['available'] else 'MISSING'} - {info['numba']['reason']}")
    print(f"CUDA        : {'available' if info['cuda']['available'] else 'not available'} - {info['cuda']['reason']}")
    if info["isa"]:
        print(f"ISA         : {info['isa']} ({info['isa_reason']})")
    print(f"threads     : {info['num_threads']}")
    if info["backend_env"]:
        print(f"PYAIML_BACKEND={info['backend_env']}")
    print("ops:")
    for name, d in info["ops"].items():
        isa = f"/{d['isa']}" if d["isa"] else ""
        print(f"  {name:<34} {d['backend']}{isa:<8} {d['reason']}")
    return 0


def _bench(args) -> int:
    from pyaiml.bench import SUITES
    from pyaiml.bench.harness import format_table, run_suites

    names = args.suites or ["all"]
    if "all" in names:
        names = list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(f"pyaiml bench: unknown suite(s) {unknown}; valid: {', '.join(SUITES)}, all", file=sys.stderr)
        return 2
    import os

    threads = args.threads or min(2, os.cpu_count() or 1)
    print(f"pyaiml bench {' '.join(names)}: {threads} threads, {'quick' if args.quick else 'full'} run; "
          "ratio = peer time / pyaiml time (> 1: pyaiml faster)")
    if args.quick:
        from pyaiml.bench.harness import QUICK_NOTE

        print(QUICK_NOTE)
    print(format_table([]).splitlines()[0])
    report = run_suites(names, quick=args.quick, threads=threads, json_path=args.json)
    m = report["machine"]
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores, ISA {m['isa']}, commit {m['commit']}; allocator: {m['allocator']}")
    secs = report.get("suite_seconds", {})
    print(f"seconds per suite: {', '.join(f'{k} {v:.0f}' for k, v in secs.items())}; total {sum(secs.values()):.0f}")
    if args.quick:
        print(report["note"])
    if args.json:
        print(f"JSON written to {args.json}")
    if args.plot:
        from pyaiml.bench.plot import plot_ratios

        plot_ratios(report, args.plot)
        print(f"plot written to {args.plot}")
    return 1 if any("error" in r for r in report["rows"]) else 0


def _demo(args) -> int:
    from pyaiml.demo import main as demo_main

    return demo_main(only=args.only, fsdd=args.fsdd, quick=args.quick, threads=args.threads)


def _crypto(args) -> int:
    from pyaiml.privacy import crypto

    try:
        if args.cmd == "keygen":
            print(f"{args.path}: new key, id {crypto.generate_key_file(args.path)}")
        elif args.cmd == "encrypt":
            out = crypto.encrypt_file(args.src, args.dst or args.src, crypto.KeyFile(args.key_file))
            print(f"{out}: encrypted with key {crypto.key_id(crypto.KeyFile(args.key_file).read())}")
        elif args.cmd == "decrypt":
            print(f"{crypto.decrypt_file(args.src, args.dst or args.src, crypto.KeyFile(args.key_file))}: decrypted")
        else:
            new = crypto.KeyFile(args.new_key_file)
            out = crypto.rekey_file(args.src, crypto.KeyFile(args.key_file), new)
            print(f"{out}: re-encrypted with key {crypto.key_id(new.read())}")
    except (ValueError, OSError) as e:
        print(f"pyaiml {args.cmd}: {e}", file=sys.stderr)
        return 1
    return 0


def _llm_parser(sub) -> None:
    """``pyaiml llm generate|bench|quantize``: Hugging Face checkpoints (pyaiml.llm.cli runs them)."""
    pl = sub.add_parser("llm", help="Hugging Face checkpoints (GPT-2, Llama, BERT): generate text, benchmark, quantize")
    lsub = pl.add_subparsers(dest="llm_cmd")
    g = lsub.add_parser("generate", help="stream a continuation of --prompt to stdout")
    g.add_argument("model_dir", help="checkpoint folder: config.json, *.safetensors, tokenizer.json")
    g.add_argument("--prompt", required=True)
    g.add_argument("--max-tokens", type=int, default=128, help="new tokens at most (default 128)")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--repetition-penalty", type=float, default=1.0)
    g.add_argument("--stop", action="append", help="stop string (repeatable)")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--ignore-eos", action="store_true", help="go on past the end-of-sequence token")
    g.add_argument("--chat", action="store_true", help="send --prompt as a user message through the chat template")
    g.add_argument("--no-echo", action="store_true", help="do not print the prompt before the continuation")
    g.add_argument("--threads", type=int, default=None)
    g.add_argument("--key-file", default=None, help="key of an encrypted weight file")
    b = lsub.add_parser("bench", help="prefill and decode tokens/s on random ids")
    b.add_argument("model_dir")
    b.add_argument("--prompt-tokens", type=int, default=128)
    b.add_argument("--decode-tokens", type=int, default=32)
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--threads", type=int, default=None)
    b.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    b.add_argument("--key-file", default=None, help="key of an encrypted weight file")
    q = lsub.add_parser("quantize", help="write an int8 (Q8_0: blocks of 32, float16 scales) copy of a checkpoint")
    q.add_argument("model_dir")
    q.add_argument("out_dir")
    q.add_argument("--key-file", default=None, help="encrypt the written weight file with this key (AES-256-GCM)")
    q.add_argument("--source-key-file", default=None, help="key of an encrypted source weight file")


def main(argv=None) -> int:
    from pyaiml import __version__

    rest = sys.argv[1:] if argv is None else list(argv)
    if rest[:2] == ["bench", "serve"]:  # the server under load: its own options (pyaiml/serve/bench.py)
        from pyaiml.serve.bench import main as bench_serve

        return bench_serve(rest[2:])
    p = argparse.ArgumentParser(prog="pyaiml", description="pyaiml: fast kernels behind familiar Python APIs")
    p.add_argument("--version", action="version", version=f"pyaiml {__version__}")
    sub = p.add_subparsers(dest="cmd")
    pi = sub.add_parser("info", help="which backend and ISA each op runs on, and why")
    pi.add_argument("--json", action="store_true", help="print backend_info() as JSON")
    pb = sub.add_parser("bench", help="side-by-side benchmarks against the installed peers; 'pyaiml bench serve "
                        "--help': the server under load")
    pb.add_argument("suites", nargs="*", help="suites to run (default: all)")
    pb.add_argument("--quick", action="store_true", help="fewer shapes and repeats")
    pb.add_argument("--threads", type=int, default=None, help="threads for every library (default: 2)")
    pb.add_argument("--json", metavar="PATH", help="write the results as JSON")
    pb.add_argument("--plot", metavar="PATH", help="write a PNG bar chart of the ratios (needs matplotlib)")
    pd = sub.add_parser("demo", help="train the tutorial's models on bundled data and show what they learned")
    pd.add_argument("--only", metavar="LIST", help="comma-separated sections to run: word2vec,cnn,speech,text "
                    "(default: all)")
    pd.add_argument("--fsdd", metavar="DIR", help="Free Spoken Digit Dataset folder for the speech section "
                    "(default: $PYAIML_FSDD, else ./data/fsdd)")
    pd.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run in seconds")
    pd.add_argument("--threads", type=int, default=None, help="pyaiml threads (default: pyaiml's default)")
    for name, what in (("encrypt", "encrypt a model file (AES-256-GCM)"), ("decrypt", "decrypt an encrypted file"),
                       ("rekey", "re-encrypt an encrypted file under a new key, in place")):
        pe = sub.add_parser(name, help=what)
        pe.add_argument("src", help="the file")
        if name != "rekey":
            pe.add_argument("dst", nargs="?", help="where to write (default: in place)")
        pe.add_argument("--key-file", required=True, help="key file (64 hex digits, base64, or "
                        "32 raw bytes)" + ("; the current key" if name == "rekey" else ""))
        if name == "rekey":
            pe.add_argument("--new-key-file", required=True, help="key file of the new key")
    pk = sub.add_parser("keygen", help="write a new random key file (owner-readable only)")
    pk.add_argument("path")
    _llm_parser(sub)
    from pyaiml.serve.server import add_arguments as _serve_arguments

    _serve_arguments(sub.add_parser("serve", help="serve saved models over HTTP (OpenAI-compatible and Open "
                                    "Inference Protocol v2); needs the serve extra"))
    args = p.parse_args(argv)
    if args.cmd == "serve":
        from pyaiml.serve.server import main as serve_main

        return serve_main(args)
    if args.cmd in ("encrypt", "decrypt", "rekey", "keygen"):
        return _crypto(args)
    if args.cmd == "llm":
        if getattr(args, "llm_cmd", None) is None:
            p.parse_args(["llm", "--help"])
        for name in ("max_tokens", "prompt_tokens", "decode_tokens", "batch", "repeats", "threads"):
            v = getattr(args, name, None)
            if v is not None and v < (0 if name == "max_tokens" else 1):
                p.error(f"--{name.replace('_', '-')} must be >= {0 if name == 'max_tokens' else 1}. Received {v}")
        from pyaiml.llm.cli import run

        return run(args)
    if args.cmd == "info":
        return _info(args)
    if args.cmd == "bench":
        if args.threads is not None and args.threads < 1:
            p.error(f"--threads must be >= 1. Received {args.threads}")
        return _bench(args)
    if args.cmd == "demo":
        if args.threads is not None and args.threads < 1:
            p.error(f"--threads must be >= 1. Received {args.threads}")
        return _demo(args)
    p.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
