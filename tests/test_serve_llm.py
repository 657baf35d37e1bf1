"""pyaiml.serve with pyaiml.llm checkpoints, through the official ``openai`` client against a
server on a free loopback port: tiny random GPT-2, Llama (with a ChatML template) and
int8-quantized Llama folders for completions and chat, a BERT folder for embeddings.

Checks: greedy completions (plain and streamed) equal the model's own ``generate`` token
for token, also with 16 other requests in the same decode batch (both families) and with
the prompt prefilled in chunks; seeded sampling equals ``generate(seed=)``; chat renders
the checkpoint's template as ``model.chat`` does; GPT-2's position limit is a 400; a
client that leaves mid-stream frees its slot and its KV cache; BERT embeddings equal
``Bert.embed`` (mean pooling, unit length) for text and token-id inputs, with 4xx for bad
inputs. Skipped without torch, transformers, safetensors, tokenizers or the serve extra.

Bounded: models of 2 layers and width 64, at most a few hundred tokens per request.
"""
import threading
import time

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

import llm_checkpoints as ck

torch, transformers = ck.require()

from pyaiml import llm
from pyaiml.serve import ServerThread, create_app

CHUNK = 16  # the server's prefill chunk: prompts longer than this are prefilled in pieces
PROMPT = "ROMEO:\nBut soft"
LONG = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from pyaiml.llm.quant import save_quantized

    d = tmp_path_factory.mktemp("llmserve")
    ck.make_gpt2(d / "gpt2")
    ck.make_llama(d / "llama")
    save_quantized(d / "llama", d / "llama_q8")
    ck.make_bert(d / "bert")
    return {k: str(d / k) for k in ("gpt2", "llama", "llama_q8", "bert")}


@pytest.fixture(scope="module")
def refs(folders):
    """Separate copies of the models, for the reference runs in the test thread."""
    return {k: llm.load(v) for k, v in folders.items()}


@pytest.fixture(scope="module")
def server(folders):
    app = create_app(dict(folders), max_running=32, max_queue=64, prefill_chunk=CHUNK, max_tokens_limit=512)
    with ServerThread(app) as srv:
        srv.app = app
        yield srv


@pytest.fixture(scope="module")
def client(server):
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    yield c
    c.close()


def _text(stream):
    parts, finish, usage = [], None, None
    for ch in stream:
        usage = ch.usage or usage
        for c in ch.choices:
            piece = getattr(c, "text", None)
            if piece is None and getattr(c, "delta", None) is not None:
                piece = c.delta.content
            parts.append(piece or "")
            finish = c.finish_reason or finish
    return "".join(parts), finish, usage


def _finish(g):
    return "stop" if g.finish_reason == "eos" else g.finish_reason


# ---------------------------------------------------------------------- completions
def test_models_are_listed(client):
    assert sorted(m.id for m in client.models.list()) == ["bert", "gpt2", "llama", "llama_q8"]


@pytest.mark.parametrize("name", ["gpt2", "llama", "llama_q8"])
def test_greedy_completion_equals_generate(client, refs, name):
    ref = refs[name].generate(PROMPT, max_new_tokens=40)
    r = client.completions.create(model=name, prompt=PROMPT, max_tokens=40, temperature=0)
    assert r.choices[0].text == ref.text and r.choices[0].finish_reason == _finish(ref)
    assert r.usage.prompt_tokens == len(ref.prompt_ids) and r.usage.completion_tokens == len(ref.ids)
    got, finish, usage = _text(client.completions.create(model=name, prompt=PROMPT, max_tokens=40, temperature=0,
                                                         stream=True, stream_options={"include_usage": True}))
    assert got == ref.text and finish == _finish(ref) and usage.completion_tokens == len(ref.ids)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_chunked_prefill_is_exact(server, client, refs, name):
    """A prompt of several chunks: the scheduler prefills it in pieces of at most CHUNK
    tokens and the greedy completion is still generate's (one-shot prefill) exactly."""
    ad = server.app.state.serve.lms[name][0]
    ids = refs[name].tokenizer.encode(LONG)
    assert len(ids) > 3 * CHUNK
    budgets, orig = [], ad.prefill
    ad.prefill = lambda s, b: (budgets.append(min(ad.pending(s), b)), orig(s, b))[1]
    try:
        r = client.completions.create(model=name, prompt=LONG, max_tokens=20, temperature=0)
    finally:
        del ad.prefill
    ref = refs[name].generate(LONG, max_new_tokens=20)
    assert r.choices[0].text == ref.text
    assert len(budgets) >= 4 and max(budgets) == CHUNK and sum(budgets) == len(ids)


@pytest.mark.parametrize("name", ["gpt2", "llama_q8"])
def test_chunked_prefill_gives_the_one_shot_bits(refs, name):
    """Prefilled in chunks of 1, 7, 16 or all tokens, the last logits are bit for bit those
    of one forward over the whole prompt (what generate runs)."""
    from pyaiml.serve.llm_adapter import DecoderAdapter

    m = refs[name]
    ad = DecoderAdapter(m)
    ids = m.tokenizer.encode(LONG)
    want = m.forward(np.asarray([ids]), m.new_cache(1, len(ids)), None, last_only=True)[0]
    for chunk in (1, 7, CHUNK, len(ids)):
        s, out = ad.start(ids), None
        while ad.pending(s):
            out = ad.prefill(s, chunk)
        assert np.array_equal(out, want), chunk


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_seeded_sampling_equals_generate(client, refs, name):
    ref = refs[name].generate(PROMPT, max_new_tokens=40, temperature=0.9, top_p=0.8, seed=3)
    got, finish, _ = _text(client.completions.create(model=name, prompt=PROMPT, max_tokens=40, temperature=0.9,
                                                     top_p=0.8, seed=3, stream=True))
    assert got == ref.text and finish == _finish(ref)


def _long_runners(m, n, tokens):
    """n seeds whose sampled continuation of 'All:' runs ``tokens`` tokens without an
    end-of-sequence token (so the background streams stay in the batch throughout)."""
    seeds = []
    for s in range(200):
        g = m.generate("All:", max_new_tokens=tokens, temperature=1.0, seed=s)
        if g.finish_reason == "length":
            seeds.append((s, g.text))
            if len(seeds) == n:
                return seeds
    raise AssertionError(f"fewer than {n} of 200 seeds run {tokens} tokens")


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_stream_is_exact_while_16_others_share_the_batch(server, client, refs, name):
    sch = server.app.state.serve.lms[name][1]
    bg = _long_runners(refs[name], 16, 90)
    seen, orig, orig_submit = [], sch.on_step, sch.submit
    submitted = []

    def submit(req):
        orig_submit(req)
        submitted.append(req)

    def on_step(b, r, w):
        # Hold the decode loop until all 17 requests are in, stepping only to admit a newcomer:
        # without this, early streams can finish their 90 tokens before the last client connects.
        seen.append(b)
        deadline = time.monotonic() + 120
        while len(submitted) < 17 and sch.waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        orig(b, r, w)

    sch.submit, sch.on_step = submit, on_step
    results = [None] * 16

    def background(i, seed):
        with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=300) as c:
            s = c.completions.create(model=name, prompt="All:", max_tokens=90, temperature=1.0, seed=seed,
                                     stream=True)
            results[i] = "".join(ch.choices[0].text for ch in s)

    ts = [threading.Thread(target=background, args=(i, s)) for i, (s, _) in enumerate(bg)]
    try:
        for t in ts:
            t.start()
        deadline = time.monotonic() + 120
        while len(submitted) < 16 and time.monotonic() < deadline:
            time.sleep(0.001)
        got, finish, _ = _text(client.completions.create(model=name, prompt=PROMPT, max_tokens=30, temperature=0,
                                                         stream=True))
        for t in ts:
            t.join(300)
    finally:
        sch.on_step, sch.submit = orig, orig_submit
    ref = refs[name].generate(PROMPT, max_new_tokens=30)
    assert got == ref.text and finish == _finish(ref)
    assert max(seen) == 17
    assert results == [text for _, text in bg]


# ---------------------------------------------------------------------- chat
def test_chat_renders_the_checkpoint_template(client, refs):
    m = refs["llama"]
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who art thou?"}]
    ref = m.chat(msgs, max_new_tokens=30)
    r = client.chat.completions.create(model="llama", messages=msgs, max_tokens=30, temperature=0)
    assert r.choices[0].message.content == ref.text and r.choices[0].finish_reason == _finish(ref)
    want_ids = m.tokenizer.encode(m.tokenizer.apply_chat_template(msgs), add_special_tokens=False)
    assert r.usage.prompt_tokens == len(want_ids) == len(ref.prompt_ids)
    got, finish, _ = _text(client.chat.completions.create(model="llama", messages=msgs, max_tokens=30,
                                                          temperature=0, stream=True))
    assert got == ref.text and finish == _finish(ref)
    with pytest.raises(openai.BadRequestError, match="unknown role tool"):
        client.chat.completions.create(model="llama", messages=[{"role": "tool", "content": "x"}], max_tokens=2)


def test_chat_without_a_template_uses_the_plain_format(client, refs):
    m = refs["gpt2"]
    assert m.tokenizer.chat_template is None
    prompt = "user: Speak.\nassistant:"
    ref = m.generate(prompt, max_new_tokens=20)
    want = ref.text.split("\nuser:")[0]
    r = client.chat.completions.create(model="gpt2", messages=[{"role": "user", "content": "Speak."}],
                                       max_tokens=20, temperature=0)
    assert r.choices[0].message.content == want
    assert r.usage.prompt_tokens == len(m.tokenizer.encode(prompt))


# ---------------------------------------------------------------------- limits and faults
def test_gpt2_position_limit_is_400(client, refs):
    n = len(refs["gpt2"].tokenizer.encode(LONG))
    with pytest.raises(openai.BadRequestError, match=r"maximum context length is 128 tokens; the request needs "
                                                     rf"{n} for the prompt and 100 for the completion"):
        client.completions.create(model="gpt2", prompt=LONG, max_tokens=100)
    r = client.completions.create(model="gpt2", prompt=LONG, max_tokens=129 - n, temperature=0)
    assert r.usage.completion_tokens <= 129 - n


def test_disconnect_mid_stream_frees_slot_and_cache(server, refs):
    """A stream that would run 300 tokens (its seed is picked so) loses its client after a
    few: the request leaves the batch at the next step and its KV cache is dropped."""
    ad, sch = server.app.state.serve.lms["llama"]
    ((seed, _),) = _long_runners(refs["llama"], 1, 300)
    released, orig = [], ad.release
    ad.release = lambda s: (released.append(s), orig(s))[1]
    steps0 = sch.steps
    try:
        body = {"model": "llama", "prompt": "All:", "max_tokens": 300, "stream": True, "temperature": 1.0,
                "seed": seed}
        with httpx.Client(base_url=server.url, timeout=60) as h, h.stream("POST", "/v1/completions", json=body) as r:
            lines = r.iter_lines()
            assert any(next(lines).startswith("data: ") for _ in range(4))
            assert sch.running == 1 and released == []
        t0 = time.monotonic()
        while (sch.running or not released) and time.monotonic() - t0 < 30:
            time.sleep(0.01)
    finally:
        del ad.release
    assert sch.running == 0 and sch.waiting == 0
    assert len(released) == 1 and released[0].cache is None
    assert sch.steps - steps0 < 300 and len(released[0].ids) < len(refs["llama"].tokenizer.encode("All:")) + 300


# ---------------------------------------------------------------------- embeddings
def test_bert_embeddings_equal_embed(client, refs):
    bert = refs["bert"]
    texts = ["Before we proceed any further, hear me speak.", "Speak, speak."]
    want = bert.embed(texts, pooling="mean", normalize=True)
    r = client.embeddings.create(model="bert", input=texts)  # base64, the client's default
    assert [d.index for d in r.data] == [0, 1]
    np.testing.assert_allclose([d.embedding for d in r.data], want, rtol=1e-5, atol=1e-6)
    assert r.usage.prompt_tokens == sum(len(bert.tokenizer.encode(t)) for t in texts)
    np.testing.assert_allclose(np.linalg.norm([d.embedding for d in r.data], axis=1), 1.0, rtol=1e-5)
    ids = bert.tokenizer.encode(texts[1])
    r = client.embeddings.create(model="bert", input=ids, encoding_format="float")
    np.testing.assert_allclose(r.data[0].embedding, want[1], rtol=1e-5, atol=1e-6)


def test_bert_embedding_errors(server, client):
    with pytest.raises(openai.BadRequestError, match=r"input\[0\] has 80 tokens; model 'bert' reads at most 64"):
        client.embeddings.create(model="bert", input=[[5] * 80])
    with pytest.raises(openai.BadRequestError, match=r"token ids must be in \[0, 400\)"):
        client.embeddings.create(model="bert", input=[[5, 400]])
    with pytest.raises(openai.BadRequestError, match="'dimensions' must be 64"):
        client.embeddings.create(model="bert", input="x", dimensions=8)
    with httpx.Client(base_url=server.url, timeout=30) as h:
        r = h.post("/v1/embeddings", json={"model": "bert", "input": []})
        assert r.status_code == 400 and "'input' must be a string" in r.json()["error"]["message"]
        r = h.post("/v1/completions", json={"model": "bert", "prompt": "x"})
        assert r.status_code == 404 and "an embedding model: use /v1/embeddings" in r.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError, match="embedding models here"):
        client.embeddings.create(model="llama", input="x")


def test_in_memory_models_and_errors(folders, refs):
    from pyaiml.serve.llm_adapter import DecoderAdapter

    app = create_app({"g": llm.load(folders["gpt2"]), "b": llm.load(folders["bert"])})
    st = app.state.serve
    assert set(st.lms) == {"g"} and set(st.encoders) == {"b"}
    assert st.lms["g"][0].model_type == "pyaiml.llm.gpt2"
    st.close()
    with pytest.raises(ValueError, match="has no tokenizer.json"):
        DecoderAdapter(llm.load(folders["gpt2"], tokenizer=False))
    with pytest.raises(TypeError, match="must be a pyaiml.llm decoder"):
        DecoderAdapter(refs["bert"])
    with pytest.raises(ValueError, match="a folder without config.json"):
        create_app({"x": str(__import__("pathlib").Path(folders["gpt2"]).parent)})
