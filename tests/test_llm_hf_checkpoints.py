"""Hugging Face checkpoint directories of every supported architecture, sharded, against transformers.

Each architecture is a random tiny transformers model (seeded; norms and biases randomised so they
matter) saved by `save_pretrained` in 3 safetensors shards, with a tiny word-level tokenizer.json
and a tokenizer_config.json carrying a chat template, and loaded end to end by `load_llm(dir)`:
Llama 3.x with "llama3" RoPE scaling (transformers 5's `rope_parameters` layout and the older
`rope_scaling` + `rope_theta` one), Qwen 2 (q/k/v biases, tied head), Mistral (a sliding window
shorter than the sequence), Gemma 2 (soft-caps, no QK-norm), Gemma 3 (text-only, linear RoPE
scaling of global layers) and Gemma3ForConditionalGeneration's language model. Some are stored
in bf16. Then the lazy reader: slices equal slices of the whole, a layer slice reads only its
shard, and damaged, missing or unsupported checkpoints fail naming what is wrong.
"""
import json
import shutil

import numpy as np
import pytest

from backbones import load_llm
from backbones.llm.weights import CheckpointError, HFCheckpoint, LazyParam, load_hf_llama

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
BOS = 2
CHAT = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{{ eos_token }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}")
SMALL = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
             head_dim=16, max_position_embeddings=256, initializer_range=0.2)   # large enough that attention is sharp


def _write_tokenizer(directory, n_words=40):
    """A word-level tokenizer.json (ids 0..3 special, then w0..w{n-1}) and a tokenizer_config.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(SPECIALS + [f"w{i}" for i in range(n_words)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<bos>", "eos_token": {"content": "<eos>"}, "chat_template": CHAT}))


def _randomise(model, seed):
    """Norm scales and biases start at constants; make them random so a wrong mapping shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model


def _save_in_3_shards(model, directory, dtype):
    """save_pretrained with the shard size that gives exactly 3 files; the model is left in `dtype`
    (so its own logits use the weights as stored)."""
    model.to(dtype)
    total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    for frac in (0.34, 0.36, 0.4, 0.45, 0.5, 0.3, 0.55):
        if directory.exists():
            shutil.rmtree(directory)
        model.save_pretrained(directory, max_shard_size=int(total * frac))
        index = json.loads((directory / "model.safetensors.index.json").read_text())
        if len(set(index["weight_map"].values())) == 3:
            return index
    raise AssertionError(f"no shard size gave 3 shards of {total} bytes")


def _build(tmp_path_factory, name, cls, cfg, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    model = _randomise(cls(cfg), seed).eval()
    directory = tmp_path_factory.mktemp(name) / "ckpt"
    index = _save_in_3_shards(model, directory, dtype)
    _write_tokenizer(directory)
    return directory, model.float(), index


def _compare(directory, ref, ids, **load_kw):
    llm = load_llm(str(directory), weights="fp32", **load_kw)
    with torch.no_grad():
        expected = ref(torch.tensor([ids])).logits[0].float().numpy()
    got = llm.logits(ids)
    assert got.shape == expected.shape
    err = np.abs(got - expected).max() / (expected.max() - expected.min())
    assert err <= 1e-4, f"max error {err:.2e} of the logit range"
    return llm, got


def _ids(n, seed=0, bos=False):
    ids = list(np.random.default_rng(seed).integers(len(SPECIALS), 44, n))
    return [BOS] + ids if bos else ids


LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


@pytest.fixture(scope="module")
def llama3(tmp_path_factory):
    cfg = transformers.LlamaConfig(**SMALL, num_hidden_layers=3, rope_parameters=dict(LLAMA3_ROPE),
                                   tie_word_embeddings=False)
    return _build(tmp_path_factory, "llama3", transformers.LlamaForCausalLM, cfg, torch.bfloat16)


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    cfg = transformers.Qwen2Config(**SMALL, num_hidden_layers=3, tie_word_embeddings=True, rope_theta=1e6)
    return _build(tmp_path_factory, "qwen2", transformers.Qwen2ForCausalLM, cfg, torch.bfloat16, seed=1)


# --------------------------------------------------------------------------- architectures


def test_llama3_rope_scaling_new_layout_in_bf16_shards(llama3):
    directory, ref, index = llama3
    saved = json.loads((directory / "config.json").read_text())
    assert saved["rope_parameters"]["rope_type"] == "llama3" and not saved.get("rope_scaling")
    assert {v for v in index["weight_map"].values()} == {f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)}
    ids = _ids(96)                                     # beyond original_max_position_embeddings = 64
    llm, got = _compare(directory, ref, ids)
    assert llm.config.rope_scaling.kind == "llama3" and llm.config.rope_base == 500000.0
    # The scaling matters at these positions: the same weights with plain RoPE give other logits.
    plain_cfg = transformers.LlamaConfig(**dict(ref.config.to_dict(), rope_parameters={"rope_type": "default",
                                                                                        "rope_theta": 500000.0}))
    plain = transformers.LlamaForCausalLM(plain_cfg).eval()
    plain.load_state_dict(ref.state_dict())
    with torch.no_grad():
        unscaled = plain(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(unscaled - got).max() > 1e-2 * (got.max() - got.min())
    # End to end: the tokenizer and the chat template of the directory.
    assert llm.chat_prompt("w1 w2") == "<user>w1 w2<eos><assistant>"
    assert llm.encode("w1 w2") == [5, 6] and llm.eos_ids == (1,)


def test_llama3_rope_scaling_old_layout(llama3, tmp_path):
    directory, ref, _ = llama3
    old = tmp_path / "old"
    shutil.copytree(directory, old)
    cfg = json.loads((old / "config.json").read_text())
    rope = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rope.pop("rope_theta")
    cfg["rope_scaling"] = rope
    (old / "config.json").write_text(json.dumps(cfg))
    llm, _ = _compare(old, ref, _ids(80, seed=1))
    assert llm.config.rope_scaling.original_max_position == 64


def test_qwen2_qkv_bias_tied_head_bf16(qwen2):
    directory, ref, index = qwen2
    assert "model.layers.0.self_attn.k_proj.bias" in index["weight_map"]
    llm, got = _compare(directory, ref, _ids(24))
    assert llm.config.qkv_bias and llm.config.tie_embeddings and llm.config.rope_base == 1e6
    # int8 storage leaves the biases (not matrices) in the compute dtype and stays close.
    q8 = load_llm(str(directory), weights="int8")
    assert q8.weights == "int8" and q8.model.bk[...].dtype == np.float32
    assert np.abs(q8.logits(_ids(24)) - got).max() < 0.05 * (got.max() - got.min())


def test_mistral_sliding_window_shorter_than_the_sequence(tmp_path_factory):
    cfg = transformers.MistralConfig(**SMALL, num_hidden_layers=2, sliding_window=6)
    directory, ref, _ = _build(tmp_path_factory, "mistral", transformers.MistralForCausalLM, cfg, seed=2)
    llm, _ = _compare(directory, ref, _ids(20, seed=2))
    assert llm.config.sliding_window == 6


def test_gemma2_soft_caps_and_alternating_window(tmp_path_factory):
    cfg = transformers.Gemma2Config(**SMALL, num_hidden_layers=4, sliding_window=4, query_pre_attn_scalar=12,
                                    attn_logit_softcapping=2.0, final_logit_softcapping=3.0)
    directory, ref, _ = _build(tmp_path_factory, "gemma2", transformers.Gemma2ForCausalLM, cfg, seed=3)
    llm, got = _compare(directory, ref, _ids(14, seed=3, bos=True))
    c = llm.config
    assert (c.qk_norm, c.attn_softcap, c.final_softcap, c.sliding_window_pattern) == (False, 2.0, 3.0, 2)
    assert np.abs(got).max() <= 3.0 and llm.add_bos


def test_gemma3_text_bf16_linear_scaled_global_layers(tmp_path_factory):
    types = ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]
    cfg = transformers.Gemma3TextConfig(
        **SMALL, num_hidden_layers=4, layer_types=types, sliding_window=4, query_pre_attn_scalar=16,
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e6},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})
    directory, ref, _ = _build(tmp_path_factory, "gemma3", transformers.Gemma3ForCausalLM, cfg, torch.bfloat16, 4)
    llm, _ = _compare(directory, ref, _ids(14, seed=4, bos=True))
    assert llm.config.local_layers == (True, True, False, True) and llm.config.rope_scale == 4.0
    assert llm.chat_prompt("w3") == "<user>w3<eos><assistant>" and llm.bos_id == BOS


def test_gemma3_conditional_generation_language_model(tmp_path_factory):
    text = dict(SMALL, num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"], sliding_window=4)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                  patch_size=14)
    cfg = transformers.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4)
    directory, ref, index = _build(tmp_path_factory, "gemma3mm", transformers.Gemma3ForConditionalGeneration,
                                   cfg, seed=5)
    assert any("vision_tower" in k for k in index["weight_map"])
    _compare(directory, ref, _ids(10, seed=5, bos=True))


# ----------------------------------------------------------------------------- lazy reading


def test_lazy_slices_equal_slices_of_the_whole(qwen2):
    _, params = load_hf_llama(qwen2[0])
    rng = np.random.default_rng(0)
    for name in ("wq", "wo", "w_down", "bq", "embed", "final_norm"):
        lazy = params[name]
        assert isinstance(lazy, LazyParam) and lazy.dtype == np.float32
        whole = np.asarray(lazy)
        assert whole.shape == lazy.shape and whole.dtype == np.float32
        for _ in range(40):
            index = []
            for n in lazy.shape:
                kind = rng.integers(4)
                if kind == 0:
                    index.append(slice(None))
                elif kind == 1:
                    index.append(int(rng.integers(-n, n)))
                else:
                    a, b = sorted(rng.integers(-n - 1, n + 2, 2))
                    index.append(slice(int(a), int(b), int(rng.integers(1, 3)) * (1 if kind == 2 else -1)))
            index = tuple(index[:int(rng.integers(1, len(index) + 1))])
            np.testing.assert_array_equal(lazy[index], whole[index])
        np.testing.assert_array_equal(lazy[..., 0], whole[..., 0])


def test_lazy_matches_transformers_state_dict_layout(llama3):
    directory, ref, _ = llama3
    _, params = load_hf_llama(directory)
    sd = {k: v.float().numpy() for k, v in ref.state_dict().items()}
    D, H, E = 32, 4, 16
    q1 = sd["model.layers.1.self_attn.q_proj.weight"]                       # (H*E, D)
    np.testing.assert_array_equal(params["wq"][1], q1.T.reshape(D, H, E))
    np.testing.assert_array_equal(params["head"][:, 3:9], sd["lm_head.weight"][3:9].T)


def _shard_of(index, name):
    return index["weight_map"][name]


def test_a_layer_slice_reads_only_its_shard(llama3, tmp_path):
    directory, _, index = llama3
    first = _shard_of(index, "model.layers.0.self_attn.q_proj.weight")
    last = _shard_of(index, "model.layers.2.self_attn.q_proj.weight")
    assert first != last
    copy = tmp_path / "ckpt"
    shutil.copytree(directory, copy)
    _, params = load_hf_llama(copy)
    expected = np.asarray(params["wq"])
    # Overwrite every data byte of the last layer's shard with 0xFF (NaN in bf16): layer 0 still reads,
    # equal to before; the last layer fails naming that shard and tensor.
    path = copy / last
    raw = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")
    raw[start:] = b"\xff" * (len(raw) - start)
    path.write_bytes(bytes(raw))
    _, fresh = load_hf_llama(copy)                     # headers intact: loads; no data read yet
    np.testing.assert_array_equal(fresh["wq"][0:1], expected[0:1])
    with pytest.raises(CheckpointError, match=f"{last}.*model.layers.2.self_attn.q_proj.weight.*non-finite"):
        fresh["wq"][2]
    # Once loaded, a layer-0 slice needs no other file at all: delete the last shard.
    _, again = load_hf_llama(copy)
    path.unlink()
    np.testing.assert_array_equal(again["wq"][:1, :, 1:3], expected[:1, :, 1:3])
    with pytest.raises(CheckpointError, match=f"{last}.*the shard is gone"):
        again["wq"][2]


def test_damaged_truncated_or_missing_shard_is_named(llama3, tmp_path):
    directory, _, index = llama3
    shard = _shard_of(index, "model.layers.1.mlp.up_proj.weight")
    bad = tmp_path / "nan"
    shutil.copytree(directory, bad)
    raw = bytearray((bad / shard).read_bytes())
    raw[-64:] = b"\xff" * 64                           # the last tensor of the shard: NaNs
    (bad / shard).write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=f"{shard}.*non-finite"):
        load_llm(str(bad), weights="fp32")

    cut = tmp_path / "cut"
    shutil.copytree(directory, cut)
    (cut / shard).write_bytes((directory / shard).read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=f"{shard} is truncated"):
        load_hf_llama(cut)

    gone = tmp_path / "gone"
    shutil.copytree(directory, gone)
    (gone / shard).unlink()
    with pytest.raises(CheckpointError, match=f"names the shard '{shard}'.*missing"):
        load_hf_llama(gone)

    mism = tmp_path / "mismatch"
    shutil.copytree(directory, mism)
    idx = json.loads((mism / HFCheckpoint.INDEX).read_text())
    other = next(f for f in set(idx["weight_map"].values()) if f != shard)
    idx["weight_map"]["model.layers.1.mlp.up_proj.weight"] = other
    (mism / HFCheckpoint.INDEX).write_text(json.dumps(idx))
    with pytest.raises(CheckpointError, match="do not match"):
        load_hf_llama(mism)


@pytest.mark.parametrize("rope", [{"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}},
                                  {"rope_scaling": {"type": "dynamic", "factor": 2.0}, "rope_theta": 1e4}])
def test_unsupported_rope_type_is_refused_by_name(llama3, tmp_path, rope):
    directory = tmp_path / "ckpt"
    shutil.copytree(llama3[0], directory)
    cfg = json.loads((directory / "config.json").read_text())
    cfg.pop("rope_parameters")
    cfg.update(rope)
    (directory / "config.json").write_text(json.dumps(cfg))
    kind = (rope.get("rope_parameters") or rope.get("rope_scaling"))
    with pytest.raises(ValueError, match=f"RoPE type '{kind.get('rope_type') or kind.get('type')}'.*not supported"):
        load_llm(str(directory))


def test_single_file_directory_still_loads(tmp_path):
    from safetensors.numpy import save_file

    cfg = {"model_type": "llama", "vocab_size": 8, "hidden_size": 4, "intermediate_size": 6, "num_hidden_layers": 1,
           "num_attention_heads": 2, "num_key_value_heads": 1, "tie_word_embeddings": True}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(0)
    shapes = {"model.embed_tokens.weight": (8, 4), "model.norm.weight": (4,),
              "model.layers.0.input_layernorm.weight": (4,), "model.layers.0.post_attention_layernorm.weight": (4,),
              "model.layers.0.self_attn.q_proj.weight": (4, 4), "model.layers.0.self_attn.k_proj.weight": (2, 4),
              "model.layers.0.self_attn.v_proj.weight": (2, 4), "model.layers.0.self_attn.o_proj.weight": (4, 4),
              "model.layers.0.mlp.gate_proj.weight": (6, 4), "model.layers.0.mlp.up_proj.weight": (6, 4),
              "model.layers.0.mlp.down_proj.weight": (4, 6)}
    tensors = {k: rng.standard_normal(s).astype(np.float16) for k, s in shapes.items()}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    _, params = load_hf_llama(tmp_path)
    np.testing.assert_array_equal(params["w_down"][0], tensors["model.layers.0.mlp.down_proj.weight"].T)
    np.testing.assert_array_equal(params["wk"][0], tensors["model.layers.0.self_attn.k_proj.weight"].T.reshape(4, 1, 2))
