"""pyaiml.llm.quant: int8 weight-only quantization with blocks of 32 (llama.cpp's Q8_0).

Checks: the round-trip error of every block is at most half a quantization step
(max|w| / 254) plus the float16 rounding of its scale; a quantized model's next-token
distributions stay close to float32 ones (mean KL divergence < 0.01 on random prompts; the
issue's bar for a trained model, here on random checkpoints whose logits are sharper);
``pyaiml llm quantize`` writes the documented layout, and loading it gives exactly the
model that ``model.quantize()`` makes in memory; errors.

Skipped without torch, transformers, safetensors or tokenizers.
"""
import llm_checkpoints as ck
import numpy as np
import pytest

from pyaiml import llm
from pyaiml.cli import main
from pyaiml.llm.quant import BLOCK, QLinear, dequantize_q8_0, quantize_q8_0

torch, transformers = ck.require()


@pytest.mark.parametrize("axis", [0, 1])
def test_round_trip_error_bound(axis):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((96, 64)) * rng.uniform(0.01, 3, (1, 64))).astype(np.float32)
    w = w if axis == 0 else np.ascontiguousarray(w.T)
    if axis == 0:  # one all-zero block: its scale is 0 and it must come back as zeros
        w[:32, 5] = 0.0
    else:
        w[5, :32] = 0.0
    q, s = quantize_q8_0(w, axis=axis)
    assert q.dtype == np.int8 and s.dtype == np.float16 and q.shape == w.shape
    assert s.shape == ((3, 64) if axis == 0 else (64, 3))
    back = dequantize_q8_0(q, s, axis=axis)
    wk = np.moveaxis(w, axis, 0).reshape(3, BLOCK, 64)
    err = np.abs(np.moveaxis(back, axis, 0).reshape(3, BLOCK, 64) - wk).max(axis=1)
    amax = np.abs(wk).max(axis=1)
    assert np.all(err <= amax / 254 * 1.002 + amax * 2.0 ** -11)
    assert np.abs(q).max() <= 127
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize_q8_0(np.ones((33, 4), np.float32), axis=0)


def _kl(a, b):
    def logsm(x):
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))
    la, lb = logsm(a.astype(np.float64)), logsm(b.astype(np.float64))
    return float((np.exp(la) * (la - lb)).sum(-1).mean())


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_quantized_model_quality_and_file_round_trip(which, tmp_path, capsys):
    src, dst = tmp_path / "f32", tmp_path / "q8"
    (ck.make_gpt2 if which == "gpt2" else ck.make_llama)(src, tie_word_embeddings=which == "gpt2")
    ref = llm.load(src)
    mem = llm.load(src)
    n = mem.quantize()
    assert n == 4 * ref.num_layers + 1  # qkv, proj/o, fc/gate_up, down, and the head (GPT-2's tied to wte)
    assert mem.weights_nbytes() < (0.35 if which == "gpt2" else 0.6) * ref.weights_nbytes()
    ids = np.random.default_rng(1).integers(3, 320, (3, 40))
    a, b = ref.logits(ids), mem.logits(ids)
    kl = _kl(a, b)
    assert 0 < kl < 0.01, kl
    assert main(["llm", "quantize", str(src), str(dst)]) == 0
    assert "int8 Q8_0" in capsys.readouterr().out
    from safetensors import safe_open

    with safe_open(dst / "model.safetensors", "numpy") as f:
        assert f.metadata() == {"format": "pyaiml-q8_0", "block_size": "32"}
        names = set(f.keys())
        if which == "llama":
            q = f.get_tensor("model.layers.0.mlp.up_proj.weight.q8")
            assert q.dtype == np.int8 and q.shape == (96, 64)
            assert f.get_tensor("model.layers.0.mlp.up_proj.weight.q8_scale").shape == (96, 2)
            assert "lm_head.weight.q8" in names and "model.embed_tokens.weight" in names
        else:
            assert f.get_tensor("transformer.h.0.mlp.c_fc.weight.q8").shape == (64, 256)  # Conv1D (in, out)
            assert f.get_tensor("transformer.h.0.mlp.c_fc.weight.q8_scale").shape == (2, 256)
            # the tied head/embedding, quantized along C; no float32 copy of it is kept
            assert f.get_tensor("transformer.wte.weight.q8").shape == (320, 64)
            assert f.get_tensor("transformer.wte.weight.q8_scale").shape == (320, 2)
            assert "transformer.wte.weight" not in names and "transformer.wpe.weight" in names
    for extra in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (dst / extra).exists()
    loaded = llm.load(dst)
    assert loaded.quantization == "q8_0" and isinstance(loaded.layers[0]["qkv"], QLinear)
    np.testing.assert_array_equal(loaded.logits(ids), b)
    assert loaded.generate("KING:", max_new_tokens=8).ids == mem.generate("KING:", max_new_tokens=8).ids


def test_quantize_errors(tmp_path):
    ck.make_bert(tmp_path / "bert", tokenizer=False)
    with pytest.raises(ValueError, match="BERT encoders are not quantized"):
        llm.quant.save_quantized(tmp_path / "bert", tmp_path / "out")
    ck.make_gpt2(tmp_path / "g", tokenizer=False)
    with pytest.raises(ValueError, match="must differ"):
        llm.quant.save_quantized(tmp_path / "g", tmp_path / "g")
    llm.quant.save_quantized(tmp_path / "g", tmp_path / "gq")
    with pytest.raises(ValueError, match="already quantized"):
        llm.quant.save_quantized(tmp_path / "gq", tmp_path / "gqq")
    with pytest.raises(ValueError, match="scheme must be 'q8_0'"):
        llm.load(tmp_path / "g").quantize("q4_0")
    from safetensors.numpy import load_file, save_file

    t = load_file(tmp_path / "gq" / "model.safetensors")
    del t["transformer.h.0.attn.c_attn.weight.q8_scale"]
    save_file(t, tmp_path / "gq" / "model.safetensors", metadata={"format": "pyaiml-q8_0", "block_size": "32"})
    with pytest.raises(ValueError, match=r"c_attn.weight.q8 has no .*q8_scale"):
        llm.load(tmp_path / "gq")


def test_qlinear_activations():
    """QLinear quantizes its input per row and block of 32 by default (the W8A8 op) and keeps it
    float32 with activations="float" (the weight-only op, ops.linear_q8's answers); both close to
    the dequantized float32 product; a bad value is refused."""
    from pyaiml import ops
    from pyaiml.reference.gemm import linear_w8a8_packed

    rng = np.random.default_rng(4)
    w = rng.standard_normal((96, 70)).astype(np.float32)
    b = rng.standard_normal(70).astype(np.float32)
    q, s = quantize_q8_0(w, axis=0)
    x = rng.standard_normal((2, 3, 96)).astype(np.float32)
    a8, af = QLinear(q, s, b), QLinear(q, s, b, activations="float")
    y8, yf = a8(x), af(x)
    assert y8.shape == yf.shape == (2, 3, 70)
    np.testing.assert_allclose(yf, ops.linear_q8(x.reshape(6, 96), q, s, b).reshape(2, 3, 70), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y8.reshape(6, 70), linear_w8a8_packed(x.reshape(6, 96), a8.qp, a8.sp, 70, b),
                               rtol=1e-5, atol=1e-5)
    want = x @ dequantize_q8_0(q, s, axis=0) + b
    assert np.abs(y8 - want).max() <= 0.02 * np.abs(want).max()
    assert 0 < np.abs(y8 - yf).max() <= 0.02 * np.abs(want).max()
    with pytest.raises(ValueError, match="activations must be 'int8'"):
        QLinear(q, s, b, activations="int4")


def test_encrypted_checkpoints(tmp_path, capsys):
    """Weight files encrypted by `pyaiml llm quantize --key-file` and by `pyaiml encrypt`
    (a float32 source) load with the key to the same logits; a wrong key, a
    flipped byte, a missing key and a key for a plain folder are clear errors."""
    pytest.importorskip("cryptography")
    from pyaiml.privacy import crypto

    src, enc, q = tmp_path / "f32", tmp_path / "enc", tmp_path / "q8"
    ck.make_llama(src)
    keyf, other = tmp_path / "k.key", tmp_path / "o.key"
    crypto.generate_key_file(keyf)
    crypto.generate_key_file(other)
    ids = np.random.default_rng(2).integers(3, 320, (2, 24))
    ref = llm.load(src)
    assert main(["llm", "quantize", str(src), str(q), "--key-file", str(keyf)]) == 0
    blob = (q / "model.safetensors").read_bytes()
    assert crypto.is_sealed(blob)
    plain_q = llm.quant.save_quantized(src, tmp_path / "q8plain")
    assert plain_q["quantized"] > 0
    np.testing.assert_array_equal(llm.load(q, key=f"file:{keyf}").logits(ids),
                                  llm.load(tmp_path / "q8plain").logits(ids))
    # a whole float32 folder encrypted with `pyaiml encrypt`
    import shutil

    shutil.copytree(src, enc)
    assert main(["encrypt", str(src / "model.safetensors"), str(enc / "model.safetensors"),
                 "--key-file", str(keyf)]) == 0
    np.testing.assert_array_equal(llm.load(enc, key=f"file:{keyf}").logits(ids), ref.logits(ids))
    with pytest.raises(ValueError, match="wrong key"):
        llm.load(q, key=f"file:{other}")
    with pytest.raises(ValueError, match="is encrypted .*pass key="):
        llm.load(q)
    with pytest.raises(ValueError, match="not encrypted, but a key was given"):
        llm.load(src, key=f"file:{keyf}")
    bad = bytearray(blob)
    bad[len(bad) // 2] ^= 1
    (q / "model.safetensors").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="failed authentication"):
        llm.load(q, key=f"file:{keyf}")
