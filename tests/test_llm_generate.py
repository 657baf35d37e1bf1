"""pyaiml.llm generation: greedy tokens identical to transformers' ``generate`` (GPT-2,
Llama with GQA and dynamic RoPE past its trained length, Mistral with a sliding window),
padded batches equal to single runs, the logits processors against transformers' own
(repetition penalty, temperature, top-k, top-p), seeded sampling, stop strings, end of
sequence, streaming and callbacks, chat templates, and option errors.

Skipped without torch, transformers, safetensors or tokenizers.
"""
import llm_checkpoints as ck
import numpy as np
import pytest

from pyaiml import llm
from pyaiml.llm.generate import process_logits, sample

torch, transformers = ck.require()

N_NEW = 48


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpt2")
    return ck.make_gpt2(d), llm.load(d)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    d = tmp_path_factory.mktemp("llama")
    return ck.make_llama(d), llm.load(d)


def _hf_greedy(ref, ids, n, **kw):
    with torch.no_grad():
        out = ref.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                           max_new_tokens=n, do_sample=False, **kw)
    return out[0, len(ids):].tolist()


def _hf_trim(ids, eos):
    """transformers pads a finished sequence with pad ids; keep up to its first eos."""
    for i, t in enumerate(ids):
        if t in eos:
            return ids[:i + 1]
    return ids


PROMPT = "ROMEO:\nBut soft, what light"


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_greedy_matches_transformers(which, gpt2, llama):
    ref, m = {"gpt2": gpt2, "llama": llama}[which]
    ids = m.tokenizer.encode(PROMPT)
    out = m.generate(PROMPT, max_new_tokens=N_NEW)
    assert out.prompt_ids == ids
    assert out.ids == _hf_trim(_hf_greedy(ref, ids, N_NEW), m.eos_token_ids)
    assert out.finish_reason == ("eos" if out.ids[-1] in m.eos_token_ids else "length")
    assert out.text == m.tokenizer.decode(out.ids)


def test_greedy_dynamic_rope_past_trained_length(tmp_path):
    # 12 prompt tokens + 40 new ones run past max_position_embeddings = 24: the base grows every step
    ck.make_llama(tmp_path, tokenizer=False, max_position_embeddings=24,
                  rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()  # fresh: its rope cache is stateful
    ids = np.random.default_rng(3).integers(3, 320, 12).tolist()
    got = llm.load(tmp_path).generate(ids, max_new_tokens=40, ignore_eos=True)
    assert got.ids == _hf_greedy(ref, ids, 40, eos_token_id=None)


def test_greedy_mistral_sliding_window(tmp_path):
    ref = ck.make_llama(tmp_path, kind="mistral", sliding_window=8, tokenizer=False)
    ids = np.random.default_rng(4).integers(3, 320, 6).tolist()
    got = llm.load(tmp_path).generate(ids, max_new_tokens=40, ignore_eos=True)
    assert got.ids == _hf_greedy(ref, ids, 40, eos_token_id=None)


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_padded_batch_equals_single_runs_and_transformers(which, gpt2, llama):
    ref, m = {"gpt2": gpt2, "llama": llama}[which]
    prompts = ["First Citizen:", "Before we proceed any further, hear me speak.", "All:\nSpeak"]
    batch = m.generate(prompts, max_new_tokens=32)
    assert [len(b.prompt_ids) for b in batch] == [len(m.tokenizer.encode(p)) for p in prompts]
    for p, b in zip(prompts, batch):
        single = m.generate(p, max_new_tokens=32)
        assert b.ids == single.ids and b.text == single.text
    seqs = [b.prompt_ids for b in batch]
    L = max(map(len, seqs))
    ids = torch.full((3, L), m.pad_token_id)
    mask = torch.zeros((3, L), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, L - len(s):] = torch.tensor(s)
        mask[i, L - len(s):] = 1
    with torch.no_grad():
        out = ref.generate(ids, attention_mask=mask, max_new_tokens=32, do_sample=False, pad_token_id=m.pad_token_id)
    for i, b in enumerate(batch):
        assert b.ids == _hf_trim(out[i, L:].tolist(), m.eos_token_ids)


def test_repetition_penalty_greedy_matches_transformers(llama):
    ref, m = llama
    ids = m.tokenizer.encode(PROMPT)
    got = m.generate(ids, max_new_tokens=32, repetition_penalty=1.5, ignore_eos=True)
    assert got.ids == _hf_greedy(ref, ids, 32, repetition_penalty=1.5, eos_token_id=None)
    assert got.ids != m.generate(ids, max_new_tokens=32, ignore_eos=True).ids


@pytest.mark.parametrize("opts", [
    {"temperature": 0.7},
    {"temperature": 1.3, "top_k": 5},
    {"temperature": 1.0, "top_p": 0.8},
    {"temperature": 0.5, "top_k": 20, "top_p": 0.5, "repetition_penalty": 1.3},
])
def test_logits_processing_matches_transformers(opts):
    from transformers.generation import logits_process as lp

    rng = np.random.default_rng(5)
    logits = (rng.standard_normal((3, 50)) * 3).astype(np.float32)
    history = [rng.integers(0, 50, 7).tolist() for _ in range(3)]
    got = process_logits(logits, history, opts["temperature"], opts.get("top_k"), opts.get("top_p"),
                         opts.get("repetition_penalty", 1.0))
    x = torch.tensor(logits, dtype=torch.float64)
    hist = torch.tensor(history)
    procs = []
    if "repetition_penalty" in opts:
        procs.append(lp.RepetitionPenaltyLogitsProcessor(opts["repetition_penalty"]))
    procs.append(lp.TemperatureLogitsWarper(opts["temperature"]))
    if "top_k" in opts:
        procs.append(lp.TopKLogitsWarper(opts["top_k"]))
    if "top_p" in opts:
        procs.append(lp.TopPLogitsWarper(opts["top_p"]))
    for p in procs:
        x = p(hist, x)
    want = x.numpy()
    assert np.array_equal(np.isinf(got), np.isinf(want))
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-12)
    assert np.isinf(got).any() == ("top_k" in opts or "top_p" in opts)


def test_sampling_follows_the_distribution():
    # 20000 draws from 4 tokens: each frequency within 4 standard errors of its probability
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4]]))
    rng = np.random.default_rng(0)
    draws = np.array([sample(logits, rng, greedy=False)[0] for _ in range(20000)])
    freq = np.bincount(draws, minlength=4) / draws.size
    se = np.sqrt(np.array([0.1, 0.2, 0.3, 0.4]) * (1 - np.array([0.1, 0.2, 0.3, 0.4])) / draws.size)
    assert np.all(np.abs(freq - [0.1, 0.2, 0.3, 0.4]) < 4 * se), freq
    masked = np.array([[0.0, -np.inf, 0.0, -np.inf]])
    assert set(sample(np.repeat(masked, 500, 0), rng, greedy=False)) == {0, 2}


def test_seeded_sampling(gpt2):
    _, m = gpt2
    a = m.generate(PROMPT, max_new_tokens=24, temperature=1.0, seed=7, ignore_eos=True)
    b = m.generate(PROMPT, max_new_tokens=24, temperature=1.0, seed=7, ignore_eos=True)
    c = m.generate(PROMPT, max_new_tokens=24, temperature=1.0, seed=8, ignore_eos=True)
    assert a.ids == b.ids and a.ids != c.ids
    greedy = m.generate(PROMPT, max_new_tokens=24, ignore_eos=True)
    assert m.generate(PROMPT, max_new_tokens=24, temperature=1.5, top_k=1, seed=1, ignore_eos=True).ids == greedy.ids
    assert m.generate(PROMPT, max_new_tokens=24, temperature=1.5, top_p=1e-6, seed=1, ignore_eos=True).ids == \
        greedy.ids


def test_eos_stops_and_stays_out_of_the_text(gpt2):
    _, m = gpt2
    full = m.generate(PROMPT, max_new_tokens=20, ignore_eos=True)
    k = 6
    eos = full.ids[k]
    first = full.ids.index(eos)
    saved = m.eos_token_ids
    m.eos_token_ids = [eos]
    try:
        out = m.generate(PROMPT, max_new_tokens=20)
    finally:
        m.eos_token_ids = saved
    assert out.finish_reason == "eos" and out.ids == full.ids[:first + 1]
    assert out.text == m.tokenizer.decode(full.ids[:first])


def test_stop_strings(llama):
    _, m = llama
    full = m.generate(PROMPT, max_new_tokens=40, ignore_eos=True)
    text = full.text
    stop = text[len(text) // 2:len(text) // 2 + 3]
    at = text.find(stop)
    out = m.generate(PROMPT, max_new_tokens=40, ignore_eos=True, stop=["\u2603never", stop])
    assert out.finish_reason == "stop" and out.text == text[:at]
    assert len(out.ids) < len(full.ids) and full.ids[:len(out.ids)] == out.ids
    pieces = list(m.stream(PROMPT, max_new_tokens=40, ignore_eos=True, stop=stop))
    assert "".join(pieces) == text[:at]


def test_stream_and_callback(gpt2):
    _, m = gpt2
    full = m.generate(PROMPT, max_new_tokens=30, ignore_eos=True)
    pieces = list(m.stream(PROMPT, max_new_tokens=30, ignore_eos=True))
    assert len(pieces) > 3 and "".join(pieces) == full.text
    got = []
    m.generate(PROMPT, max_new_tokens=30, ignore_eos=True, callback=got.append)
    assert got == pieces
    seen = {}
    batch = m.generate([PROMPT, "KING:"], max_new_tokens=10, ignore_eos=True,
                       callback=lambda i, p: seen.setdefault(i, []).append(p))
    assert {i: "".join(p) for i, p in seen.items()} == {0: batch[0].text, 1: batch[1].text}
    with pytest.raises(TypeError, match="one prompt"):
        next(m.stream([PROMPT, PROMPT]))


def test_chat_renders_the_template(llama):
    _, m = llama
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who art thou?"}]
    text = m.tokenizer.apply_chat_template(msgs)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWho art thou?<|im_end|>\n" \
                   "<|im_start|>assistant\n"
    out = m.chat(msgs, max_new_tokens=8, ignore_eos=True)
    assert out.prompt_ids == m.tokenizer.encode(text, add_special_tokens=False)
    assert out.ids == m.generate(out.prompt_ids, max_new_tokens=8, ignore_eos=True).ids
    with pytest.raises(ValueError, match="unknown role tool"):
        m.chat([{"role": "tool", "content": "x"}])


def test_ids_prompts_and_zero_tokens(gpt2):
    _, m = gpt2
    ids = m.tokenizer.encode(PROMPT)
    a = m.generate(ids, max_new_tokens=5)
    assert a.ids == m.generate(np.array(ids), max_new_tokens=5).ids == m.generate(PROMPT, max_new_tokens=5).ids
    b = m.generate([ids, ids[:3]], max_new_tokens=5)
    assert isinstance(b, list) and b[0].ids == a.ids
    z = m.generate(PROMPT, max_new_tokens=0)
    assert z.ids == [] and z.text == "" and z.finish_reason == "length"


@pytest.mark.parametrize("kw, exc, msg", [
    ({"max_new_tokens": -1}, ValueError, "max_new_tokens must be >= 0"),
    ({"max_new_tokens": 2.5}, TypeError, "max_new_tokens must be an int"),
    ({"temperature": -0.1}, ValueError, "temperature must be >= 0"),
    ({"temperature": "hot"}, TypeError, "temperature must be a number"),
    ({"top_k": -2}, ValueError, "top_k must be >= 1"),
    ({"top_p": 0.0}, ValueError, r"top_p must be in \(0, 1\]"),
    ({"top_p": 1.5}, ValueError, r"top_p must be in \(0, 1\]"),
    ({"repetition_penalty": 0}, ValueError, "repetition_penalty must be > 0"),
    ({"stop": [""]}, TypeError, "stop must be a non-empty str"),
    ({"seed": 1.5}, TypeError, "seed must be an int"),
])
def test_option_errors(gpt2, kw, exc, msg):
    _, m = gpt2
    args = {"max_new_tokens": 4, **kw}
    with pytest.raises(exc, match=msg):
        m.generate(PROMPT, **args)


def test_prompt_errors(gpt2):
    _, m = gpt2
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        m.generate("", max_new_tokens=3)
    with pytest.raises(ValueError, match=r"outside \[0, 320\)"):
        m.generate([5, 999], max_new_tokens=3)
    with pytest.raises(TypeError, match="prompt must be"):
        m.generate(3.5, max_new_tokens=3)
    with pytest.raises(ValueError, match="exceed the model's 128 positions"):
        m.generate(list(range(3, 100)), max_new_tokens=40)
