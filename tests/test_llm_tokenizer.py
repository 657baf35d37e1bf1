"""pyaiml.llm.tokenizer: encode/decode and special tokens against transformers' fast
tokenizer on the same tokenizer.json (byte-level BPE with and without a BOS template,
WordPiece), chat templates against transformers' ``apply_chat_template``, and the
streaming decoder (no partial UTF-8 characters, stop strings held back).

Skipped without torch, transformers, safetensors or tokenizers.
"""
import json

import llm_checkpoints as ck
import numpy as np
import pytest

from pyaiml import llm
from pyaiml.llm.tokenizer import TextStream, Tokenizer

torch, transformers = ck.require()

TEXTS = ["ROMEO:\nBut soft, what light through yonder window breaks?", "  two  spaces, tabs\tand é ü 日本",
         "[CLS] is not special in plain text <s> maybe"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = {}
    g = tmp_path_factory.mktemp("gpt2tok")
    ck.bpe_tokenizer(g, ["<|endoftext|>"], extra_config={"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"})
    out["gpt2"] = g
    ll = tmp_path_factory.mktemp("llamatok")
    ck.bpe_tokenizer(ll, ["<unk>", "<s>", "</s>"], bos="<s>", chat_template=ck.CHATML,
                     extra_config={"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    out["llama"] = ll
    b = tmp_path_factory.mktemp("berttok")
    ck.wordpiece_tokenizer(b)
    out["bert"] = b
    return out


@pytest.mark.parametrize("kind", ["gpt2", "llama", "bert"])
def test_encode_decode_match_transformers(folders, kind):
    ours = Tokenizer(folders[kind])
    hf = transformers.AutoTokenizer.from_pretrained(folders[kind])
    for t in TEXTS:
        for special in (True, False):
            ids = ours.encode(t, add_special_tokens=special)
            assert ids == hf(t, add_special_tokens=special)["input_ids"], (t, special)
            for skip in (True, False):
                assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip)
    assert ours.vocab_size == len(hf)
    if kind == "llama":
        assert ours.encode("hi")[0] == ours.bos_token_id == hf.bos_token_id
        assert ours.eos_token_ids == [hf.eos_token_id]
    if kind == "bert":
        assert ours.pad_token_id == hf.pad_token_id == 0


def _hf_chat(folder, msgs, gen):
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    return hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)


MSGS = [{"role": "system", "content": "Speak in verse."}, {"role": "user", "content": "What light?"},
        {"role": "assistant", "content": "It is the east."}, {"role": "user", "content": "And Juliet?"}]

FANCY = ("{{ bos_token }}{% for m in messages %}{% if loop.first and m['role'] == 'system' %}"
         "[SYS] {{ m['content'] | trim }} [/SYS]\n{% elif m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
         "{% else %} {{ m['content'] }}{{ eos_token }}\n{% endif %}{% endfor %}"
         "{% if add_generation_prompt %} {% endif %}{{ messages | length | tojson }}")


@pytest.mark.parametrize("gen", [True, False])
def test_chat_template_matches_transformers(folders, gen):
    ours = Tokenizer(folders["llama"])
    assert ours.apply_chat_template(MSGS, add_generation_prompt=gen) == _hf_chat(folders["llama"], MSGS, gen)


def test_chat_template_file_and_named_list(folders, tmp_path):
    import shutil

    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(folders["llama"] / name, tmp_path / name)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    cfg["chat_template"] = [{"name": "tool_use", "template": "nope"}, {"name": "default", "template": FANCY}]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert Tokenizer(tmp_path).apply_chat_template(MSGS) == _hf_chat(tmp_path, MSGS, True)
    assert Tokenizer(tmp_path).apply_chat_template(MSGS).startswith("<s>[SYS] Speak in verse. [/SYS]\n[INST]")
    (tmp_path / "chat_template.jinja").write_text(FANCY.replace("[INST]", "[USER]"))
    assert "[USER] What light?" in Tokenizer(tmp_path).apply_chat_template(MSGS)


def test_chat_template_errors(folders):
    with pytest.raises(ValueError, match="no chat template"):
        Tokenizer(folders["gpt2"]).apply_chat_template(MSGS)
    with pytest.raises(TypeError, match="messages must be a list"):
        Tokenizer(folders["llama"]).apply_chat_template("hello")
    with pytest.raises(ValueError, match="unknown role robot"):
        Tokenizer(folders["llama"]).apply_chat_template([{"role": "robot", "content": "x"}])


def test_stream_never_shows_partial_characters(folders):
    tok = Tokenizer(folders["gpt2"])
    text = "héllo wörld 日本語 done"
    ids = tok.encode(text)
    assert len(ids) > len(text.split())  # the accented letters are split into byte tokens
    st = TextStream(tok)
    pieces = [st.push(ids[:i], final=i == len(ids)) for i in range(1, len(ids) + 1)]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert sum(1 for p in pieces if p == "") >= 2  # something was held back


def test_stream_holds_back_a_possible_stop_string(folders):
    tok = Tokenizer(folders["gpt2"])
    text = "the east, and Juliet is the sun"
    ids = tok.encode(text)
    st = TextStream(tok, stop=["Juliet is", "XYZ"])
    shown = ""
    for i in range(1, len(ids) + 1):
        shown += st.push(ids[:i])
        assert "Jul" not in shown or "Juliet is" in text[:len(shown)]
        if st.stop_at is not None:
            break
    assert shown == "the east, and " == st.final_text


def test_missing_tokenizer(tmp_path):
    ck.make_gpt2(tmp_path, tokenizer=False)
    (tmp_path / "vocab.txt").write_text("a\n")
    with pytest.raises(ValueError, match=r"no tokenizer.json .*found: \['vocab.txt'\]"):
        Tokenizer(tmp_path)
    m = llm.load(tmp_path)
    assert m.tokenizer is None
    with pytest.raises(ValueError, match="has no tokenizer.json; pass token ids"):
        m.generate("hello", max_new_tokens=2)
    out = m.generate(np.array([5, 6, 7]), max_new_tokens=3, ignore_eos=True)
    assert out.text is None and len(out.ids) == 3
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable tokenizers file"):
        Tokenizer(tmp_path)
