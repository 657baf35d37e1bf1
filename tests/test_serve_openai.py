"""pyaiml.serve, OpenAI-compatible routes, with the official ``openai`` client pointed at a
server on a free loopback port: completions and chat (plain and streamed) equal
``TransformerLM.generate`` token for token, greedy and seeded sampling, also while 16 other
streams run in the same decode batch; stop strings, n, echo, usage counts, end-of-sequence
through a small custom LMAdapter; embeddings (float and base64); 4xx for bad requests,
429 when the queue is full, a disconnected stream frees its slot, 504 past the timeout.

Every test is bounded: tiny models, at most a few hundred tokens per request.
"""
import json
import threading
import time

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

import serve_models

from pyaiml.serve import LMAdapter, ServerThread, create_app


class BigramAdapter(LMAdapter):
    """A whole language model in a few lines: next-token logits from a (V, V) table
    indexed by the last token. Shows what a model family implements to be served."""

    context_length = 64
    model_type = "bigram"

    def __init__(self, table, chars):
        self.table, self.chars = np.asarray(table, dtype=np.float32), chars
        self.vocab_size = len(chars)
        self.eos_ids = frozenset([chars.index("$")])

    def encode(self, text):
        return [self.chars.index(c) for c in text]

    def decode_text(self, ids):
        return "".join(self.chars[i] for i in ids if self.chars[i] != "$")

    def start(self, prompt_ids):
        return {"ids": list(prompt_ids), "done": 0}

    def pending(self, s):
        return len(s["ids"]) - s["done"]

    def prefill(self, s, budget):
        s["done"] += min(budget, self.pending(s))
        return self.table[s["ids"][-1]] if self.pending(s) == 0 else None

    def decode(self, states):
        for s in states:
            s["done"] += 1
        return self.table[[s["ids"][-1] for s in states]]

    def append(self, s, token):
        s["ids"].append(token)


def _bigram():
    chars = "abcd$"
    t = np.full((5, 5), -10.0)
    for a, b in ("ab", "bc", "cd", "d$", "$$"):
        t[chars.index(a), chars.index(b)] = 10.0
    return BigramAdapter(t, chars)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    d = tmp_path_factory.mktemp("lmmodels")
    serve_models.transformer_lm().save(d / "lm.npz")  # no end token: every request runs to max_tokens
    serve_models.transformer_lm(specials=["<eos>"]).save(d / "lm_eos.npz")
    serve_models.word2vec().save(str(d / "w2v.npz"))
    return {"lm": str(d / "lm.npz"), "lm_eos": str(d / "lm_eos.npz"), "w2v": str(d / "w2v.npz")}


@pytest.fixture(scope="module")
def lm(paths):
    from pyaiml.seq import TransformerLM

    return TransformerLM.load(paths["lm"])


@pytest.fixture(scope="module")
def server(paths):
    app = create_app({"lm": paths["lm"], "lm_eos": paths["lm_eos"], "w2v": paths["w2v"], "bigram": _bigram()},
                     max_running=32, max_queue=64,
                     max_tokens_limit=1024, max_body_bytes=64 << 10)
    with ServerThread(app) as srv:
        srv.app = app
        yield srv


@pytest.fixture(scope="module")
def client(server):
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    yield c
    c.close()


def _ref(lm, prompt, n, temperature=0.0, top_p=None, seed=None):
    """What generate gives for the same request: the continuation's ids and text, up to and
    including the first end-of-sequence token (where the server stops; generate goes on)."""
    ids = lm.tokenizer.encode(prompt)
    out = lm.generate(ids, max_new_tokens=n, temperature=temperature or 1.0, top_p=top_p, seed=seed,
                      do_sample=temperature > 0)
    cont = out[len(ids):]
    if "<eos>" in lm.tokenizer.specials:
        eos = np.flatnonzero(cont == lm.tokenizer.special_id("<eos>"))
        cont = cont[:eos[0] + 1] if eos.size else cont
    return cont, lm.tokenizer.decode(cont)


def _stream_text(stream):
    text, finish, usage = [], None, None
    for ch in stream:
        if ch.usage is not None:
            usage = ch.usage
        for c in ch.choices:
            if getattr(c, "text", None):
                text.append(c.text)
            if getattr(c, "delta", None) is not None and c.delta.content:
                text.append(c.delta.content)
            finish = c.finish_reason or finish
    return "".join(text), finish, usage


# ---------------------------------------------------------------------- completions
def test_models_list(client):
    ids = sorted(m.id for m in client.models.list())
    assert ids == ["bigram", "lm", "lm_eos", "w2v"]
    assert client.models.retrieve("lm").owned_by == "pyaiml"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_greedy_completion_equals_generate(client, lm):
    prompt = "first citizen:"
    _, text = _ref(lm, prompt, 40)
    r = client.completions.create(model="lm", prompt=prompt, max_tokens=40, temperature=0)
    assert r.choices[0].text == text and r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == len(prompt) and r.usage.completion_tokens == 40 and r.usage.total_tokens == 54
    assert r.object == "text_completion" and r.model == "lm"


@pytest.mark.parametrize("temperature, top_p, seed", [(0.0, None, None), (0.9, None, 3), (1.3, 0.8, 11)])
def test_streamed_completion_equals_generate(client, lm, temperature, top_p, seed):
    """Past the context of 48 tokens too: the window slides as generate slides it."""
    prompt = "all: speak"
    ids, text = _ref(lm, prompt, 90, temperature, top_p, seed)
    s = client.completions.create(model="lm", prompt=prompt, max_tokens=90, temperature=temperature,
                                  top_p=1.0 if top_p is None else top_p, seed=seed, stream=True,
                                  stream_options={"include_usage": True})
    got, finish, usage = _stream_text(s)
    assert got == text and finish == ("length" if len(ids) == 90 else "stop")
    assert usage.completion_tokens == len(ids) and usage.prompt_tokens == len(prompt)


def test_stream_is_exact_while_16_others_share_the_batch(server, client, lm):
    """16 sampled streams run; a greedy stream started among them equals generate token for
    token, and the scheduler really ran it in a decode batch of 17."""
    st = server.app.state.serve
    sch = st.lms["lm"][1]
    seen = []
    orig = sch.on_step
    sch.on_step = lambda b, r, w: (seen.append(b), orig(b, r, w))
    started = threading.Barrier(17, timeout=60)
    results = [None] * 16

    def background(i):
        with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120) as c:
            s = c.completions.create(model="lm", prompt="resolved", max_tokens=300, temperature=1.0, seed=100 + i,
                                     stream=True)
            parts, first = [], True
            for ch in s:
                if first:
                    first = False
                    started.wait()
                parts.append(ch.choices[0].text)
            results[i] = "".join(parts)

    ts = [threading.Thread(target=background, args=(i,)) for i in range(16)]
    try:
        for t in ts:
            t.start()
        started.wait()
        _, text = _ref(lm, "before we", 60)
        got, finish, _ = _stream_text(client.completions.create(model="lm", prompt="before we", max_tokens=60,
                                                                temperature=0, stream=True))
        assert got == text and finish == "length"
        for t in ts:
            t.join(120)
    finally:
        sch.on_step = orig
    assert max(seen) == 17
    for i in (0, 15):  # the background streams are exact too
        assert results[i] == _ref(lm, "resolved", 300, 1.0, None, 100 + i)[1]


def test_n_choices_use_seed_plus_index(client, lm):
    r = client.completions.create(model="lm", prompt="speak", max_tokens=20, temperature=0.8, seed=7, n=3)
    assert [c.index for c in r.choices] == [0, 1, 2]
    for j, c in enumerate(r.choices):
        assert c.text == _ref(lm, "speak", 20, 0.8, None, 7 + j)[1]
    assert r.usage.completion_tokens == 60 and r.usage.prompt_tokens == 5


def test_prompt_list_echo_and_zero_tokens(client, lm):
    r = client.completions.create(model="lm", prompt=["all", "hear"], max_tokens=5, temperature=0, echo=True)
    assert [c.text for c in r.choices] == ["all" + _ref(lm, "all", 5)[1], "hear" + _ref(lm, "hear", 5)[1]]
    assert r.usage.prompt_tokens == 7
    r = client.completions.create(model="lm", prompt="all", max_tokens=0)
    assert r.choices[0].text == "" and r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 0
    ids = [int(t) for t in lm.tokenizer.encode("speak")]
    r = client.completions.create(model="lm", prompt=ids, max_tokens=6, temperature=0)
    assert r.choices[0].text == _ref(lm, "speak", 6)[1]


def test_stop_strings_cut_the_text(client, lm):
    prompt = "first citizen:"
    _, text = _ref(lm, prompt, 60)
    stop = text[20:23]
    want = text[:text.find(stop)]
    r = client.completions.create(model="lm", prompt=prompt, max_tokens=60, temperature=0, stop=[stop, "\x00never"])
    assert r.choices[0].text == want and r.choices[0].finish_reason == "stop"
    got, finish, _ = _stream_text(client.completions.create(model="lm", prompt=prompt, max_tokens=60, temperature=0,
                                                            stop=stop, stream=True))
    assert got == want and finish == "stop"


def test_end_of_sequence_token_ends_the_completion(client, paths):
    """A TransformerLM whose tokenizer has '<eos>': the completion stops there (generate
    itself runs on); the seed below samples it within 60 tokens."""
    from pyaiml.seq import TransformerLM

    lm = TransformerLM.load(paths["lm_eos"])
    ids, text = _ref(lm, "all: speak", 60, 0.9, None, 3)
    assert len(ids) < 60 and ids[-1] == lm.tokenizer.special_id("<eos>")
    r = client.completions.create(model="lm_eos", prompt="all: speak", max_tokens=60, temperature=0.9, seed=3)
    assert r.choices[0].text == text and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == len(ids)


def test_end_of_sequence_through_a_custom_adapter(client):
    r = client.completions.create(model="bigram", prompt="a", max_tokens=50, temperature=0)
    assert r.choices[0].text == "bcd" and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 4  # b, c, d and the end token
    got, finish, _ = _stream_text(client.completions.create(model="bigram", prompt="b", max_tokens=50,
                                                            temperature=0, stream=True))
    assert (got, finish) == ("cd", "stop")
    r = client.completions.create(model="bigram", prompt="a", max_tokens=2, temperature=0)
    assert r.choices[0].text == "bc" and r.choices[0].finish_reason == "length"


# ---------------------------------------------------------------------- chat
def test_chat_plain_and_streamed(client, lm):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "speak"}]
    prompt = "system: be brief\nuser: speak\nassistant:"
    _, text = _ref(lm, prompt, 30, 0.7, None, 5)
    cut = text.find("\nuser:")
    want = text if cut < 0 else text[:cut]
    r = client.chat.completions.create(model="lm", messages=msgs, max_tokens=30, temperature=0.7, seed=5)
    m = r.choices[0].message
    assert m.role == "assistant" and m.content == want and r.object == "chat.completion"
    assert r.usage.prompt_tokens == len(prompt)
    chunks = list(client.chat.completions.create(model="lm", messages=msgs, max_tokens=30, temperature=0.7, seed=5,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].object == "chat.completion.chunk"
    got, finish, _ = _stream_text(chunks)
    assert got == want and finish == r.choices[0].finish_reason
    r = client.chat.completions.create(model="lm", messages=[{"role": "user", "content": [{"type": "text",
                                       "text": "speak"}]}], max_completion_tokens=4, temperature=0)
    assert r.usage.completion_tokens <= 4


def test_chat_stops_at_the_next_user_line(client):
    """The bigram model writes 'bcd': with a stop at 'c' the reply is 'b', and the default
    chat stop never cuts a reply that has no '\\nuser:' in it."""
    ad = _bigram()
    assert ad.chat_prompt([{"role": "user", "content": "x"}]) == "user: x\nassistant:"
    assert "\nuser:" in ad.chat_stop


# ---------------------------------------------------------------------- embeddings
def test_embeddings_float_and_base64(client, paths):
    from pyaiml.models import Word2Vec

    kv = Word2Vec.load(paths["w2v"]).wv
    texts = ["Speak, all!", "first citizen resolved"]
    want = [np.mean([kv[w] for w in ("speak", "all")], axis=0),
            np.mean([kv[w] for w in ("first", "citizen", "resolved")], axis=0)]
    r = client.embeddings.create(model="w2v", input=texts)  # the client asks for base64 by default
    for d, w in zip(r.data, want):
        np.testing.assert_allclose(d.embedding, w, rtol=1e-6)
    assert r.usage.prompt_tokens == 5
    r = client.embeddings.create(model="w2v", input="speak zebra", encoding_format="float")
    np.testing.assert_allclose(r.data[0].embedding, kv["speak"], rtol=1e-6)
    assert r.usage.prompt_tokens == 2  # 'zebra' is counted, not averaged
    with pytest.raises(openai.BadRequestError, match="no word in the vocabulary"):
        client.embeddings.create(model="w2v", input="zebra quagga")
    with pytest.raises(openai.NotFoundError, match="embedding models here"):
        client.embeddings.create(model="lm", input="speak")


# ---------------------------------------------------------------------- errors and limits
@pytest.mark.parametrize("kw, match", [
    ({"temperature": 3}, r"'temperature' must be a number in \[0.0, 2.0\]. Received 3"),
    ({"top_p": 0}, r"'top_p' must be a number in \(0.0, 1.0\]. Received 0"),
    ({"max_tokens": 5000}, r"'max_tokens' must be an integer in \[0, 1024\]. Received 5000"),
    ({"max_tokens": -1}, r"'max_tokens' must be an integer in \[0, 1024\]"),
    ({"n": 0}, r"'n' must be an integer in \[1, 16\]"),
    ({"stop": ["a", "b", "c", "d", "e"]}, r"'stop' must be a non-empty string or a list of at most 4"),
    ({"seed": "x"}, r"'seed' must be an integer"),
    ({"logprobs": 2}, r"'logprobs' is not supported"),
    ({"presence_penalty": 0.5}, r"'presence_penalty' is not supported"),
    ({"prompt": ""}, r"'prompt' is empty"),
    ({"prompt": [1, 2, 99999]}, r"token ids must be in \[0, "),
    ({"prompt": {"a": 1}}, r"'prompt' must be a non-empty string or a list of token ids"),
])
def test_bad_completion_requests_are_400(client, kw, match):
    args = {"model": "lm", "prompt": "speak", "max_tokens": 4, **kw}
    with pytest.raises(openai.BadRequestError, match=match) as e:
        client.completions.create(**args)
    assert e.value.status_code == 400 and e.value.body["type"] == "invalid_request_error"


def test_malformed_and_unknown_are_4xx_in_openai_format(server, client):
    with pytest.raises(openai.NotFoundError, match="The model 'gpt-4' does not exist") as e:
        client.completions.create(model="gpt-4", prompt="x")
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="'messages' must be a non-empty list"):
        client.chat.completions.create(model="lm", messages=[])
    with pytest.raises(openai.BadRequestError, match=r"messages\[0\].content must be a string"):
        client.chat.completions.create(model="lm", messages=[{"role": "user", "content": 5}])
    with httpx.Client(base_url=server.url, timeout=30) as h:
        r = h.post("/v1/completions", content=b"{oops")
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
        r = h.post("/v1/completions", content=b'"just a string"')
        assert r.status_code == 400 and "must be a JSON object" in r.json()["error"]["message"]
        r = h.post("/v1/completions", content=b"x" * (65 << 10))
        assert r.status_code == 413 and "limit of 65536" in r.json()["error"]["message"]
        r = h.post("/v1/completions", json={"model": 5, "prompt": "x"})
        assert r.status_code == 400 and "'model' must be a string" in r.json()["error"]["message"]
        assert h.post("/v1/completions", json={"model": "lm", "prompt": "x", "max_tokens": 1}).status_code == 200


def test_disconnect_mid_stream_frees_the_slot(server):
    """The client leaves after a few tokens of 1000: the request stops at the next step
    (far fewer than 1000 decode steps run) and its slot and cache are freed."""
    ad, sch = server.app.state.serve.lms["lm"]
    steps0 = sch.steps
    released, orig = [], ad.release
    ad.release = lambda s: (released.append(s), orig(s))[1]
    body = {"model": "lm", "prompt": "all", "max_tokens": 1000, "stream": True}
    try:
        with httpx.Client(base_url=server.url, timeout=60) as h, h.stream("POST", "/v1/completions", json=body) as r:
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]
            assert any(x.startswith("data: ") for x in got)
            assert sch.running == 1 and released == []
        t0 = time.monotonic()
        while (sch.running or not released) and time.monotonic() - t0 < 20:
            time.sleep(0.01)
    finally:
        del ad.release
    assert sch.running == 0 and sch.waiting == 0
    assert sch.steps - steps0 < 1000
    assert len(released) == 1 and released[0].caches is None  # the KV caches are dropped


class GatedBigram(BigramAdapter):
    """The bigram model, with decode steps that wait for ``gate``: holds requests in their
    slots for as long as a test needs."""

    def __init__(self):
        b = _bigram()
        super().__init__(b.table, b.chars)
        self.gate = threading.Event()

    def decode(self, states):
        assert self.gate.wait(30)
        return super().decode(states)


def test_queue_full_is_429():
    ad = GatedBigram()
    app = create_app({"slow": ad}, max_running=1, max_queue=1)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as h:
        # a 2-token prompt: the prefill gives the first token, then decode steps wait at the gate
        body = {"model": "slow", "prompt": "ab", "max_tokens": 10, "stream": True, "temperature": 0}
        try:
            with h.stream("POST", "/v1/completions", json=body) as r1:
                lines1 = r1.iter_lines()
                assert json.loads(next(lines1)[6:])["choices"][0]["text"] == "c"  # running
                with h.stream("POST", "/v1/completions", json=body) as r2:  # waiting
                    assert r2.status_code == 200
                    r3 = h.post("/v1/completions", json=body)
                    assert r3.status_code == 429 and r3.json()["error"]["code"] == "queue_full"
                    assert "queue of this model is full (1 waiting requests)" in r3.json()["error"]["message"]
                    ad.gate.set()
                    assert _sse_text(r2.iter_lines()) == "cd"
                assert _sse_text(lines1) == "d"  # its first event ('c') was read above
        finally:
            ad.gate.set()
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
        assert c.completions.create(model="slow", prompt="a", max_tokens=2, temperature=0).choices[0].text == "bc"


def _sse_text(lines):
    out = []
    for line in lines:
        if line.startswith("data: {"):
            out.append(json.loads(line[6:])["choices"][0]["text"])
    return "".join(out)


def test_timeout_is_504_and_frees_the_slot():
    ad = GatedBigram()
    app = create_app({"slow": ad}, request_timeout=0.3)
    sch = app.state.serve.lms["slow"][1]
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as h:
        try:
            r = h.post("/v1/completions", json={"model": "slow", "prompt": "a", "max_tokens": 5})
            assert r.status_code == 504 and "longer than the server's limit of 0.3 s" in r.json()["error"]["message"]
            with h.stream("POST", "/v1/completions", json={"model": "slow", "prompt": "a", "max_tokens": 5,
                                                           "stream": True}) as r:
                events = [x for x in r.iter_lines() if x.startswith("data: ")]
            assert "longer than the server's limit" in json.loads(events[-1][6:])["error"]["message"]
        finally:
            ad.gate.set()
        t0 = time.monotonic()
        while (sch.running or sch.waiting) and time.monotonic() - t0 < 20:
            time.sleep(0.01)
        assert sch.running == 0 and sch.waiting == 0


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_transformer_lm_chunked_prefill_gives_the_one_shot_bits(lm, chunk):
    """A prompt prefilled in chunks (one-token chunks included) ends with the logits of one
    prefill over the whole prompt (what generate runs), bit for bit, and so does the next
    decode step."""
    from pyaiml.serve.engine import TransformerLMAdapter

    ad = TransformerLMAdapter(lm)
    ids = ad.encode("To be, or not to be, that is ")
    assert len(ids) % 2 == 1  # chunks of 2 leave a last chunk of one token
    one = ad.start(ids)
    want = ad.prefill(one, len(ids))
    st, out = ad.start(ids), None
    while ad.pending(st):
        out = ad.prefill(st, chunk)
    np.testing.assert_array_equal(out, want)
    ad.append(one, 5)
    ad.append(st, 5)
    both = ad.decode([st, one])
    np.testing.assert_array_equal(both[0], both[1])
