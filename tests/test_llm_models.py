"""pyaiml.llm graphs against transformers on small random checkpoints saved with
``save_pretrained``: GPT-2, Llama (GQA, RoPE scaling: linear, dynamic, llama3), Mistral
(sliding window), Qwen2 (q/k/v biases) and BERT (padding masks, pooler, mean embeddings);
bfloat16 and sharded checkpoints.

Tolerances: decoder logits within 1e-4 relative to the largest logit (float32 on both
sides; the products are summed in a different order, ~1e-7 observed); BERT hidden states
and embeddings within 1e-5 absolute (LayerNorm keeps them O(1)). Skipped without torch,
transformers, safetensors or tokenizers.
"""
import llm_checkpoints as ck
import numpy as np
import pytest

from pyaiml import llm

torch, transformers = ck.require()

RTOL = 1e-4


def _close(got, ref, rtol=RTOL):
    err = np.abs(got - ref).max() / np.abs(ref).max()
    assert err < rtol, f"max error {err:.2e} relative to the largest logit"


def _hf_logits(model, ids, mask=None):
    with torch.no_grad():
        kw = {} if mask is None else {"attention_mask": torch.tensor(mask)}
        if mask is not None:  # positions count each row's own tokens, as pyaiml.llm does
            pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
            kw["position_ids"] = torch.tensor(pos)
        return model(torch.tensor(ids), **kw).logits.numpy()


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpt2")
    return ck.make_gpt2(d), llm.load(d), d


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    d = tmp_path_factory.mktemp("llama")
    ref = ck.make_llama(d, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
    return ref, llm.load(d), d


IDS = np.random.default_rng(0).integers(3, 320, (2, 23))


def test_gpt2_logits(gpt2):
    ref, m, _ = gpt2
    assert isinstance(m, llm.GPT2) and m.num_layers == 2 and m.vocab_size == 320
    _close(m.logits(IDS), _hf_logits(ref, IDS))


def test_llama_gqa_llama3_rope_logits(llama):
    ref, m, _ = llama
    assert isinstance(m, llm.Llama) and (m.num_heads, m.num_kv_heads) == (4, 2)
    assert m.rope.rope_type == "llama3"
    _close(m.logits(IDS), _hf_logits(ref, IDS))


@pytest.mark.parametrize("scaling", [{"rope_type": "linear", "factor": 2.0}, {"rope_type": "dynamic", "factor": 2.0},
                                     None])
def test_llama_rope_variants(tmp_path, scaling):
    # max_position_embeddings 16 < 23 tokens: dynamic scaling grows its base for this call
    ref = ck.make_llama(tmp_path, rope_scaling=scaling, max_position_embeddings=16, rope_theta=500.0, tokenizer=False)
    m = llm.load(tmp_path)
    assert m.rope.rope_type == (scaling or {}).get("rope_type", "default")
    _close(m.logits(IDS), _hf_logits(ref, IDS))


def test_mistral_sliding_window(tmp_path):
    ref = ck.make_llama(tmp_path, kind="mistral", sliding_window=8, tokenizer=False)
    m = llm.load(tmp_path)
    assert m.window == 8
    _close(m.logits(IDS), _hf_logits(ref, IDS))
    # the window matters: the same weights with full attention give other logits
    m.window = None
    assert np.abs(m.logits(IDS) - _hf_logits(ref, IDS)).max() > 1e-3


def test_qwen2_qkv_bias(tmp_path):
    ref = ck.make_llama(tmp_path, kind="qwen2", tokenizer=False, tie_word_embeddings=True)
    m = llm.load(tmp_path)
    assert m.layers[0]["qkv"].b is not None and m.layers[0]["o"].b is None
    _close(m.logits(IDS), _hf_logits(ref, IDS))


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_left_padding_equals_unpadded(which, gpt2, llama):
    ref, m, _ = {"gpt2": gpt2, "llama": llama}[which]
    rng = np.random.default_rng(1)
    seqs = [rng.integers(3, 320, n) for n in (9, 4, 13)]
    L = 13
    ids = np.zeros((3, L), np.int64)
    mask = np.zeros((3, L), np.int64)
    for b, s in enumerate(seqs):
        ids[b, L - len(s):] = s
        mask[b, L - len(s):] = 1
    got = m.logits(ids, attention_mask=mask)
    hf = _hf_logits(ref, ids, mask)
    for b, s in enumerate(seqs):
        alone = m.logits(s[None])[0]
        _close(got[b, L - len(s):], alone)
        _close(got[b, L - len(s):], hf[b, L - len(s):])


def _decode_run(m, ids, valid, steps=6):
    cache = m.new_cache(ids.shape[0], ids.shape[1] + steps)
    out = [m.forward(ids, cache, valid, last_only=True)]
    for _ in range(steps - 1):
        out.append(m.forward(out[-1].argmax(-1)[:, None], cache, None, last_only=True))
    return np.stack(out), cache.k.copy(), cache.v.copy()


@pytest.mark.parametrize("which", ["gpt2", "llama", "mistral", "qwen2", "llama-int8", "gpt2-int8", "llama-w8"])
@pytest.mark.parametrize("batch", [3, 10])
def test_fused_decode_steps_same_bits(which, batch, gpt2, llama, tmp_path, monkeypatch):
    # A decode step's attention as one native call (_C.decode_attention) and a whole layer as
    # one (_C.DecoderLayerPlan) against the separate norm, product, RoPE, cache-write
    # and attention calls: logits and caches equal bit for bit, with and without left padding,
    # at 3 rows (the streaming GEMV) and 10 (sgemm). The Mistral (window 4, shorter than the
    # run) takes the separate calls once past its window, the Qwen2 has q/k/v biases, and the
    # int8 models' plans run the W8A8 (or weight-only) products.
    from pyaiml import _backend
    from pyaiml.llm import models

    if not _backend.cpp_available() or _backend.chosen_backend("attention_forward") != "cpp":
        pytest.skip("needs pyaiml._C as the backend")
    if which in ("mistral", "qwen2"):
        ck.make_llama(tmp_path, kind=which, sliding_window=4, tokenizer=False)
        m = llm.load(tmp_path)
    else:
        m = {"gpt2": gpt2, "llama": llama}[which.split("-")[0]][1]
        if "-" in which:  # int8 weights: W8A8 products, or weight-only ones ("llama-w8")
            m = llm.load({"gpt2": gpt2, "llama": llama}[which.split("-")[0]][2], tokenizer=False)
            m.quantize()
            for d in m.layers:
                for v in d.values():
                    if which == "llama-w8" and hasattr(v, "activations"):
                        v.activations = "float"
    ids = np.random.default_rng(2).integers(3, 320, (batch, 7))
    valid = np.ones(ids.shape, bool)
    valid[1, :3] = valid[2, :5] = False
    for v in (None, valid):
        fused = _decode_run(m, ids, v)
        assert sum(p is not None for p in m._plans) == m.num_layers
        monkeypatch.setattr(models, "FUSED_DECODE_ATTENTION", False)
        monkeypatch.setattr(models, "FUSED_DECODE_LAYER", False)
        apart = _decode_run(m, ids, v)
        monkeypatch.setattr(models, "FUSED_DECODE_ATTENTION", True)
        monkeypatch.setattr(models, "FUSED_DECODE_LAYER", True)
        for a, b in zip(fused, apart):
            np.testing.assert_array_equal(a, b)


def test_decode_plans_follow_swapped_weights(tmp_path, monkeypatch):
    # plans are made from the layers' arrays: a replaced Linear, a replaced array of one, or
    # quantize makes new ones
    from pyaiml import _backend
    from pyaiml.llm import models
    from pyaiml.llm.models import Linear

    if not _backend.cpp_available() or _backend.chosen_backend("attention_forward") != "cpp":
        pytest.skip("needs pyaiml._C as the backend")

    def apart(model):  # the layer-by-layer graph's logits
        with monkeypatch.context() as mp:
            mp.setattr(models, "FUSED_DECODE_LAYER", False)
            return _decode_run(model, ids, None)[0]

    ck.make_llama(tmp_path, tokenizer=False)
    m = llm.load(tmp_path)
    ids = np.random.default_rng(3).integers(3, 320, (1, 5))
    before = _decode_run(m, ids, None)[0]
    plans = m._plans
    d = m.layers[1]
    d["down"] = Linear(d["down"].wt * 2.0)
    after = _decode_run(m, ids, None)[0]
    assert m._plans is not plans and m._plans[1] is not plans[1]
    assert not np.array_equal(before[1:], after[1:])
    m2 = llm.load(tmp_path, tokenizer=False)
    m2.layers[1]["down"] = Linear(m2.layers[1]["down"].wt * 2.0)
    np.testing.assert_array_equal(after, apart(m2))
    # a Linear's array replaced (not the Linear): new plans too
    plans = m._plans
    m.layers[0]["o"].wp = m.layers[0]["o"].wp * np.float32(0.5)
    m2.layers[0]["o"].wp = m2.layers[0]["o"].wp * np.float32(0.5)
    got = _decode_run(m, ids, None)[0]
    assert m._plans[0] is not plans[0]
    np.testing.assert_array_equal(got, apart(m2))
    plans = m._plans
    m.quantize()
    got = _decode_run(m, ids, None)[0]
    assert not any(p is q for p, q in zip(m._plans, plans))
    m2.quantize()
    np.testing.assert_array_equal(got, apart(m2))


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_server_decode_on_plans_same_bits(which, gpt2, llama, monkeypatch):
    # pyaiml serve's batched decode (DecoderAdapter: every sequence on its own cache, of its own
    # length) on the layer plans' run_rows against the layer-by-layer graph: the same logits,
    # and each sequence's logits those of generate's one-row step
    from pyaiml import _backend
    from pyaiml.llm import models
    from pyaiml.serve.llm_adapter import DecoderAdapter

    if not _backend.cpp_available() or _backend.chosen_backend("attention_forward") != "cpp":
        pytest.skip("needs pyaiml._C as the backend")
    m = {"gpt2": gpt2, "llama": llama}[which][1]
    rng = np.random.default_rng(4)
    prompts = [list(rng.integers(3, 320, n)) for n in (3, 9, 5)]

    def run(fused):
        monkeypatch.setattr(models, "FUSED_DECODE_LAYER", fused)
        ad = DecoderAdapter(m)
        sts = [ad.start(p) for p in prompts]
        for st in sts:
            while ad.pending(st):
                ad.prefill(st, 64)
        out = []
        for _ in range(4):
            lg = ad.decode(sts)
            out.append(lg)
            for st, t in zip(sts, lg.argmax(-1)):
                ad.append(st, t)
        return np.stack(out)

    calls = []

    class Spy:  # counts the plans' run_rows calls
        def __init__(self, p):
            self.p = p

        def run_rows(self, *a):
            calls.append(1)
            return self.p.run_rows(*a)

    plans = m._decode_plans
    monkeypatch.setattr(m, "_decode_plans", lambda: [Spy(p) for p in plans()], raising=False)
    fused = run(True)
    assert len(calls) == 4 * m.num_layers  # every layer of the 4 steps on a plan
    apart = run(False)
    np.testing.assert_array_equal(fused, apart)


def test_bfloat16_checkpoint_is_widened(tmp_path):
    ref = ck.make_gpt2(tmp_path, dtype=torch.bfloat16, tokenizer=False)
    m = llm.load(tmp_path)
    assert m.layers[0]["qkv"].wt.dtype == np.float32
    _close(m.logits(IDS), _hf_logits(ref, IDS))


def test_sharded_checkpoint(tmp_path):
    ref = ck.make_llama(tmp_path, tokenizer=False, save_kw={"max_shard_size": "150KB"})
    import os

    assert os.path.exists(tmp_path / "model.safetensors.index.json")
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]) > 1
    _close(llm.load(tmp_path).logits(IDS), _hf_logits(ref, IDS))


def test_gpt2_untied_head_and_layer_scaling(tmp_path):
    ref = ck.make_gpt2(tmp_path, tokenizer=False, tie_word_embeddings=False, scale_attn_by_inverse_layer_idx=True,
                       activation_function="gelu")
    m = llm.load(tmp_path)
    assert isinstance(m.wte, np.ndarray) and m.scale[1] == pytest.approx(16 ** -0.5 / 2)
    _close(m.logits(IDS), _hf_logits(ref, IDS))


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    d = tmp_path_factory.mktemp("bert")
    return ck.make_bert(d), llm.load(d), d


def test_bert_hidden_states_and_pooler(bert):
    ref, m, _ = bert
    ids = np.random.default_rng(2).integers(5, 400, (2, 11))
    types = np.zeros_like(ids)
    types[:, 6:] = 1
    h, pooled = m.encode(ids, token_type_ids=types)
    with torch.no_grad():
        out = ref(torch.tensor(ids), token_type_ids=torch.tensor(types))
    np.testing.assert_allclose(h, out.last_hidden_state.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(pooled, out.pooler_output.numpy(), atol=1e-5, rtol=0)


def test_bert_padding_mask_and_embeddings(bert):
    ref, m, _ = bert
    texts = ["To be, or not to be", "Now is the winter of our discontent made glorious summer"]
    tok = m.tokenizer
    seqs = [tok.encode(t) for t in texts]
    assert seqs[0][0] == tok.token_to_id("[CLS]") and seqs[0][-1] == tok.token_to_id("[SEP]")
    L = max(map(len, seqs))
    ids = np.zeros((2, L), np.int64)
    mask = np.zeros((2, L), np.int64)
    for b, s in enumerate(seqs):
        ids[b, :len(s)] = s
        mask[b, :len(s)] = 1
    with torch.no_grad():
        out = ref(torch.tensor(ids), attention_mask=torch.tensor(mask))
    hs = out.last_hidden_state.numpy()
    mean_ref = (hs * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(m.embed(texts), mean_ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(m.embed(texts, pooling="pooler"), out.pooler_output.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(m.embed(texts, pooling="cls"), hs[:, 0], atol=1e-5, rtol=0)
    unit = m.embed(texts, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-6)
    # padding changes nothing for the shorter text
    np.testing.assert_allclose(m.embed(texts[:1]), m.embed(texts)[:1], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="pooling must be"):
        m.embed(texts, pooling="max")


# -- errors --------------------------------------------------------------------------------

def test_missing_config_names_the_folder_contents(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"no config.json .*Found: weights.bin"):
        llm.load(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        llm.load(tmp_path / "nope")


def test_unsupported_architecture_is_named(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]}')
    with pytest.raises(ValueError, match=r"model_type='t5', architectures=\['T5ForConditionalGeneration'\].*gpt2"):
        llm.load(tmp_path)


def test_pickle_only_checkpoint_is_refused(tmp_path, gpt2):
    import shutil

    shutil.copy(gpt2[2] / "config.json", tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ValueError, match=r"no model.safetensors.*pytorch_model.bin.*never loaded"):
        llm.load(tmp_path)


def test_missing_tensor_and_wrong_shape_are_named(tmp_path, gpt2):
    import json
    import shutil

    from safetensors.numpy import load_file, save_file

    shutil.copy(gpt2[2] / "config.json", tmp_path)
    t = load_file(gpt2[2] / "model.safetensors")
    save_file({k: v for k, v in t.items() if k != "transformer.h.1.mlp.c_fc.weight"}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing tensor 'h.1.mlp.c_fc.weight'"):
        llm.load(tmp_path)
    save_file(t, tmp_path / "model.safetensors")
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["n_positions"] = 64
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"'wpe.weight' has shape \(128, 64\); config.json implies \(64, 64\)"):
        llm.load(tmp_path)


def test_truncated_safetensors_is_refused(tmp_path, gpt2):
    import shutil

    shutil.copy(gpt2[2] / "config.json", tmp_path)
    data = (gpt2[2] / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"model.safetensors: tensor .* beyond the file"):
        llm.load(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(ValueError, match="header declares"):
        llm.load(tmp_path)


def test_unsupported_rope_type_is_named(tmp_path):
    ck.make_llama(tmp_path, tokenizer=False, rope_scaling={"rope_type": "yarn", "factor": 2.0,
                                                           "original_max_position_embeddings": 128})
    with pytest.raises(ValueError, match="rope type 'yarn' is not supported"):
        llm.load(tmp_path)


def test_bad_ids_and_positions(gpt2):
    _, m, _ = gpt2
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 320\)"):
        m.logits(np.array([[1, 320]]))
    with pytest.raises(ValueError, match="exceed the model's 128 positions"):
        m.logits(np.ones((1, 129), np.int64))
    with pytest.raises(ValueError, match="left padding"):
        m.logits(np.ones((1, 3), np.int64), attention_mask=[[1, 0, 1]])
