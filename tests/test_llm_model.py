"""The Llama decoder on tiny random configs: HF safetensors parity, attention variants, RoPE, errors."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from backbones.llm import config as llm_config
from backbones.llm.model import Llama, attention_weights, rope
from backbones.llm.sampling import choose_next
from backbones.llm.weights import CheckpointError


def _tiny_model(**changes):
    cfg = llm_config.tiny().replace(**changes)
    return Llama(cfg, rngs=nnx.Rngs(0))


def _logits(model, ids):
    tokens = jnp.asarray([ids], jnp.int32)
    pos = jnp.arange(len(ids))[None]
    out, _ = model(tokens, pos, jnp.ones_like(tokens, bool))
    return np.asarray(out[0])


def test_hf_safetensors_checkpoint_equals_pytorch_reference(tmp_path, smollm2):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_cfg = transformers.LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                      max_position_embeddings=256)
    ref = transformers.LlamaForCausalLM(hf_cfg).eval()
    ref.save_pretrained(tmp_path, safe_serialization=True)
    smollm2.tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))

    from backbones import load_llm

    ours = load_llm(str(tmp_path))
    assert not ours.config.tie_embeddings and ours.config.n_kv_heads == 2
    ids = ours.encode("A tiny random model still has to agree, token by token.")
    with torch.no_grad():
        expected = ref(torch.tensor([ids])).logits[0].numpy()
    got = ours.logits(ids)
    assert np.abs(got - expected).max() <= 1e-4 * (expected.max() - expected.min())


def test_hf_checkpoint_with_a_wrong_tensor_shape_is_refused(tmp_path):
    from safetensors.numpy import save_file

    cfg = {"model_type": "llama", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
           "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "tie_word_embeddings": True}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    save_file({"model.embed_tokens.weight": np.zeros((16, 7), np.float32)}, str(tmp_path / "model.safetensors"))
    from backbones.llm.weights import load_hf_llama

    with pytest.raises(CheckpointError, match="model.embed_tokens.weight.*expected \\(16, 8\\)"):
        load_hf_llama(tmp_path)


def test_corrupt_or_missing_files_give_clear_errors(tmp_path):
    from backbones import load_llm

    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a gguf file at all")
    with pytest.raises(CheckpointError, match="not a readable GGUF"):
        load_llm(str(bad))
    with pytest.raises(FileNotFoundError, match="neither a named model"):
        load_llm(str(tmp_path / "nothing-here.gguf"))
    with pytest.raises(FileNotFoundError, match="smollm2-135m"):
        load_llm("gpt-17")


def test_grouped_query_attention_equals_repeated_full_attention():
    gqa = _tiny_model()                                   # 4 query heads share 2 KV heads
    full = _tiny_model(n_kv_heads=4)
    for name in ("embed", "attn_norm", "wq", "wo", "ffn_norm", "w_gate", "w_up", "w_down", "final_norm"):
        getattr(full, name).set_value(getattr(gqa, name)[...])
    # Query heads 2j, 2j+1 read KV head j.
    full.wk.set_value(jnp.repeat(gqa.wk[...], 2, axis=2))
    full.wv.set_value(jnp.repeat(gqa.wv[...], 2, axis=2))
    ids = [5, 17, 42, 3, 99, 7]
    np.testing.assert_allclose(_logits(gqa, ids), _logits(full, ids), atol=1e-5)


def test_softmax_plus_one_against_closed_form():
    scores = jnp.array([[0.5, -1.0, 2.0, 0.0]])
    mask = jnp.array([[True, True, True, False]])
    e = np.exp([0.5, -1.0, 2.0])
    np.testing.assert_allclose(attention_weights(scores, mask, True)[0, :3], e / (1 + e.sum()), rtol=1e-6)
    np.testing.assert_allclose(attention_weights(scores, mask, False)[0, :3], e / e.sum(), rtol=1e-6)
    assert float(attention_weights(scores, mask, True)[0, 3]) == 0.0
    # Large scores must not overflow.
    big = attention_weights(jnp.array([[1000.0, 999.0]]), jnp.ones((1, 2), bool), True)
    np.testing.assert_allclose(big[0], np.exp([0.0, -1.0]) / (np.exp(-1000.0) + 1 + np.exp(-1.0)), rtol=1e-6)


def test_softmax_plus_one_off_is_the_default_and_changes_outputs_when_on():
    ids = [1, 2, 3, 4]
    base = _tiny_model()
    quiet = _tiny_model(softmax_plus_one=True)
    assert not base.cfg.softmax_plus_one
    assert not np.allclose(_logits(base, ids), _logits(quiet, ids))


def test_rope_scores_depend_only_on_relative_position():
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)

    def score(m, n):
        return float(jnp.sum(rope(q, jnp.array([[m]]), 1e4) * rope(k, jnp.array([[n]]), 1e4)))

    assert score(7, 3) == pytest.approx(score(104, 100), rel=1e-4)
    assert score(0, 0) == pytest.approx(float(jnp.sum(q * k)), rel=1e-5)


def test_causality_and_padding_do_not_leak():
    model = _tiny_model()
    a = _logits(model, [3, 4, 5, 6, 7])
    b = _logits(model, [3, 4, 5, 60, 70])
    np.testing.assert_allclose(a[:3], b[:3], atol=1e-6)   # later tokens never affect earlier logits
    # Padding, as backbones.llm.api lays out a batch: left pads (valid=False, position 0) before the real
    # tokens [3, 4, 5] at positions 0..2. Whatever ids the pads hold, the real positions' logits are the
    # same, and equal those of [3, 4, 5] alone.
    alone = _logits(model, [3, 4, 5])
    tokens = jnp.asarray([[1, 2, 3, 4, 5], [60, 70, 3, 4, 5]], jnp.int32)
    positions = jnp.asarray([[0, 0, 0, 1, 2]] * 2)
    valid = jnp.asarray([[False, False, True, True, True]] * 2)
    out = np.asarray(model(tokens, positions, valid)[0])
    assert np.isfinite(out[:, 2:]).all()
    np.testing.assert_allclose(out[0, 2:], out[1, 2:], atol=1e-6)
    np.testing.assert_allclose(out[:, 2:], np.stack([alone, alone]), atol=1e-5)
    # the test can see a leak: the same pad ids attended to (valid=True) do move the real logits
    seen = np.asarray(model(tokens, positions, jnp.ones_like(valid))[0])
    assert np.abs(seen[0, 2:] - seen[1, 2:]).max() > 1e-3


def test_cache_decoding_equals_full_forward():
    from backbones.llm.model import KVCache

    model = _tiny_model()
    ids = jnp.asarray([[9, 8, 7, 6, 5, 4]], jnp.int32)
    full, _ = model(ids, jnp.arange(6)[None], jnp.ones_like(ids, bool))
    cache = KVCache.zeros(model.cfg, 1, 8)
    out, cache = model(ids[:, :4], jnp.arange(4)[None], jnp.ones((1, 4), bool), cache=cache, slot=0)
    steps = [out[:, -1]]
    for t in (4, 5):
        out, cache = model(ids[:, t:t + 1], jnp.array([[t]]), jnp.ones((1, 1), bool), cache=cache, slot=t)
        steps.append(out[:, -1])
    np.testing.assert_allclose(np.stack(steps, 1)[0], np.asarray(full[0, 3:]), atol=1e-5)


def test_gradients_reach_every_parameter():
    model = _tiny_model()
    ids = jnp.asarray([[1, 2, 3, 4]], jnp.int32)

    def loss(m):
        out, _ = m(ids, jnp.arange(4)[None], jnp.ones_like(ids, bool))
        return jnp.mean(jax.nn.log_softmax(out)[..., 0])

    grads = nnx.grad(loss)(model)
    for path, g in nnx.to_flat_state(grads):
        assert np.isfinite(np.asarray(g[...])).all() and np.abs(np.asarray(g[...])).sum() > 0, path


def test_top_p_never_samples_outside_the_nucleus():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    keys = jax.random.split(jax.random.key(0), 400)
    draws = np.array([int(choose_next(logits, k, 1.0, None, 0.7)[0]) for k in keys[:200]])
    assert set(draws) <= {0, 1} and {0, 1} <= set(draws)   # 0.5 + 0.3 covers p = 0.7
    draws_k = np.array([int(choose_next(logits, k, 1.0, 3, None)[0]) for k in keys[200:]])
    assert set(draws_k) <= {0, 1, 2}


def test_full_size_config_builds_abstractly():
    model = nnx.eval_shape(lambda: Llama(llm_config.smollm2_135m(), rngs=nnx.Rngs(0)))
    n = sum(int(np.prod(v.shape)) for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
    assert 134_000_000 < n < 135_000_000   # 134.5M parameters with the tied head
