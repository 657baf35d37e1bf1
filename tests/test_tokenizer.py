"""CharTokenizer: exact round trips, byte fallback, errors, JSON format."""
import json

import numpy as np
import pytest

from pyaiml.seq.tokenizer import CharTokenizer


def test_round_trip_with_unknown_characters():
    tok = CharTokenizer.from_text("hello world\n", specials=["<pad>"])
    for s in ["hello", "", "héllo wörld – ✓ 𝄞 日本", "\x00\uffff", "world\nhello"]:
        ids = tok.encode(s)
        assert ids.dtype == np.int64
        assert tok.decode(ids) == s
    # known characters are one id each; an unknown one becomes its UTF-8 bytes
    assert len(tok.encode("hello")) == 5
    assert len(tok.encode("é")) == 2 and len(tok.encode("𝄞")) == 4
    assert tok.vocab_size == 1 + len(set("hello world\n")) + 256


def test_ids_layout_and_specials():
    tok = CharTokenizer(["a", "b"], specials=["<pad>", "<eos>"])
    assert tok.encode("ab").tolist() == [2, 3]
    assert tok.special_id("<eos>") == 1
    assert tok.decode([2, 1, 3]) == "ab"
    assert tok.decode([2, 1, 3], skip_specials=False) == "a<eos>b"
    assert tok.encode("<pad>").tolist()[:1] != [0]  # specials are never produced from text


def test_no_byte_fallback_errors():
    tok = CharTokenizer.from_text("abc", byte_fallback=False)
    assert tok.vocab_size == 3
    with pytest.raises(ValueError, match=r"character 'z' \(U\+007A\) at position 1"):
        tok.encode("az")


def test_bad_inputs():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(TypeError, match="text must be str"):
        tok.encode(b"abc")
    with pytest.raises(ValueError, match=r"ids must be in \[0, 259\)"):
        tok.decode([0, 500])
    with pytest.raises(ValueError, match="1-D"):
        tok.decode([[0]])
    with pytest.raises(ValueError, match="single characters"):
        CharTokenizer(["ab"])
    with pytest.raises(ValueError, match="duplicates"):
        CharTokenizer(["a", "a"])


def test_json_round_trip(tmp_path):
    tok = CharTokenizer.from_text("xyz\n✓", specials=["<pad>", "<bos>"])
    d = json.loads(tok.to_json())
    assert d == {"format": "pyaiml-char-tokenizer", "version": 1, "specials": ["<pad>", "<bos>"],
                 "chars": ["\n", "x", "y", "z", "✓"], "byte_fallback": True}
    p = tmp_path / "tok.json"
    tok.save(p)
    t2 = CharTokenizer.load(p)
    assert t2 == tok
    assert t2.encode("zx✓é").tolist() == tok.encode("zx✓é").tolist()
    with pytest.raises(ValueError, match="format"):
        CharTokenizer.from_json('{"chars": []}')
    with pytest.raises(ValueError, match="not valid JSON"):
        CharTokenizer.from_json("{")


def test_decode_of_a_list_equals_decode_of_an_array():
    tok = CharTokenizer.from_text("hello world\n", specials=["<pad>"])
    ids = tok.encode("hello wörld 日本").tolist()
    assert tok.decode(ids) == tok.decode(np.asarray(ids)) == "hello wörld 日本"
    assert tok.decode([]) == ""
    with pytest.raises(ValueError, match=r"ids must be in \[0, "):
        tok.decode([0, tok.vocab_size])
    with pytest.raises(ValueError, match=r"ids must be in \[0, "):
        tok.decode([-1])
