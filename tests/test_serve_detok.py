"""The streaming detokenizer of the completion routes (pyaiml.serve.openai_api._Choice.advance):
fed one token at a time, its text is at every step the full decode of the tokens so far, up to
the last complete character (never a replacement character, never taken back), and at the
end exactly the full decode: checked with a byte-level
BPE (GPT-2 style) and a SentencePiece-style BPE with byte fallback and a leading-space strip
(Llama style), on text with multi-byte characters, emoji and spaces."""
import pytest

tokenizers = pytest.importorskip("tokenizers")

from pyaiml.serve.openai_api import _Choice

TEXT = "Héllo wörld, ça va? 日本語 😀 end  two  spaces\nnew line ẞ"


class _Adapter:
    def __init__(self, tok):
        self.tok = tok

    def decode_text(self, ids):
        return self.tok.decode(list(ids), skip_special_tokens=False)


def _byte_level():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["hello world, the quick brown fox"] * 20, trainer)
    return tok


def _sentencepiece_style():
    from tokenizers import Tokenizer, decoders, models, normalizers

    vocab = {f"<0x{b:02X}>": b for b in range(256)}
    for ch in "▁abcdefghijklmnopqrstuvwxyzHW,?\n":
        vocab.setdefault(ch, len(vocab))
    for piece in ("▁w", "▁t", "he", "ll"):
        vocab[piece] = len(vocab)
    merges = [("▁", "w"), ("▁", "t"), ("h", "e"), ("l", "l")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1, right=0)])
    return tok


@pytest.mark.parametrize("make", [_byte_level, _sentencepiece_style])
def test_streamed_text_is_the_full_decode_up_to_the_last_complete_character(make):
    tok = make()
    ad = _Adapter(tok)
    ids = tok.encode(TEXT).ids
    assert ad.decode_text(ids) == TEXT  # the tokenizer round-trips the text
    c = _Choice(0, None)
    partial_seen, last = False, ""
    for i, t in enumerate(ids):
        c.ids.append(t)
        c.advance(ad)
        full = ad.decode_text(ids[:i + 1])
        # never a wrong or replacement character, never taken back
        assert TEXT.startswith(c.text) and c.text.startswith(last) and "\ufffd" not in c.text
        if full.endswith("\ufffd"):
            partial_seen = True
        else:
            assert c.text == full
        last = c.text
    assert c.text == TEXT
    assert partial_seen  # the text did split a character between tokens


@pytest.mark.parametrize("chat", [False, True])
@pytest.mark.parametrize("usage", [False, True])
def test_stream_chunks_are_the_json_of_the_chunk_object(chat, usage):
    import json

    from pyaiml.serve.openai_api import _chunk_head, _sse_chunk

    obj = "chat.completion.chunk" if chat else "text_completion"
    head = _chunk_head("cmpl-\"x\"", obj, 1700000000, "mödel")
    tail = ',"usage":null' if usage else ""
    for delta, finish, first in [("a", None, False), ('q"u\\o\nte\u2028 é 😀', None, False), ("", "stop", False),
                                 ("x", "length", False), ("", None, True), ("", None, False)]:
        if chat:
            d = {"role": "assistant", "content": delta} if first else ({"content": delta} if delta else {})
            ch = {"index": 3, "delta": d, "logprobs": None, "finish_reason": finish}
        else:
            ch = {"index": 3, "text": delta, "logprobs": None, "finish_reason": finish}
        o = {"id": "cmpl-\"x\"", "object": obj, "created": 1700000000, "model": "mödel", "choices": [ch]}
        if usage:
            o["usage"] = None
        want = f"data: {json.dumps(o, separators=(',', ':'))}\n\n"
        assert _sse_chunk(head, tail, 3, delta, finish, chat, first) == want
