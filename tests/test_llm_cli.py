"""``pyaiml llm generate|bench`` on small random checkpoints, run in-process through
pyaiml.cli.main: the streamed text equals the library's, the summary line, chat mode,
bench figures and JSON, and errors (missing folder, encoder checkpoints, bad numbers).

Skipped without torch, transformers, safetensors or tokenizers (the checkpoints are made
with transformers).
"""
import json

import llm_checkpoints as ck
import pytest

from pyaiml import llm
from pyaiml.cli import main

torch, transformers = ck.require()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("llama")
    ck.make_llama(d)
    return d


def test_generate_streams_the_library_text(folder, capsys):
    want = llm.load(folder).generate("KING:", max_new_tokens=12, temperature=0.9, top_k=40, seed=3, ignore_eos=True)
    rc = main(["llm", "generate", str(folder), "--prompt", "KING:", "--max-tokens", "12", "--temperature", "0.9",
               "--top-k", "40", "--seed", "3", "--ignore-eos", "--threads", "1"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert out == "KING:" + want.text + "\n"
    assert "12 generated, finish: length" in err and "tokens/s" in err


def test_generate_chat_and_stop(folder, capsys):
    m = llm.load(folder)
    msgs = [{"role": "user", "content": "Speak."}]
    want = m.chat(msgs, max_new_tokens=10, ignore_eos=True)
    assert main(["llm", "generate", str(folder), "--prompt", "Speak.", "--chat", "--max-tokens", "10",
                 "--ignore-eos"]) == 0
    out, _ = capsys.readouterr()
    assert out == want.text + "\n"
    stop = want.text[3:5]
    assert main(["llm", "generate", str(folder), "--prompt", "Speak.", "--chat", "--max-tokens", "10",
                 "--ignore-eos", "--stop", stop]) == 0
    out, err = capsys.readouterr()
    assert out == want.text[:want.text.find(stop)] + "\n" and "finish: stop" in err


def test_bench_reports_and_writes_json(folder, capsys, tmp_path):
    js = tmp_path / "b.json"
    rc = main(["llm", "bench", str(folder), "--prompt-tokens", "16", "--decode-tokens", "4", "--repeats", "1",
               "--batch", "2", "--json", str(js)])
    out, _ = capsys.readouterr()
    assert rc == 0 and "prefill   16 tokens" in out and "decode     4 tokens" in out
    r = json.loads(js.read_text())
    assert r["batch"] == 2 and r["layers"] == 2 and r["model_type"] == "llama"
    assert r["prefill_tokens_per_s"]["median"] > 0 and r["decode_tokens_per_s"]["min"] > 0


def test_errors(folder, tmp_path, capsys):
    assert main(["llm", "generate", str(tmp_path / "none"), "--prompt", "x"]) == 1
    assert "does not exist" in capsys.readouterr().err
    ck.make_bert(tmp_path / "bert", tokenizer=False)
    assert main(["llm", "generate", str(tmp_path / "bert"), "--prompt", "x"]) == 2
    assert "bert encoder" in capsys.readouterr().err
    assert main(["llm", "bench", str(tmp_path / "bert")]) == 2
    with pytest.raises(SystemExit):
        main(["llm", "bench", str(folder), "--decode-tokens", "0"])
    assert "--decode-tokens must be >= 1" in capsys.readouterr().err
    assert main(["llm", "generate", str(folder), "--prompt", "x", "--top-p", "2"]) == 1
    assert "top_p must be in (0, 1]" in capsys.readouterr().err
