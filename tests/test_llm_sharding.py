"""The frozen LLM over a (data, model) mesh: the sharding rules on abstract meshes (in process), and
tiny random Llama and Gemma 3 models on 4 simulated CPU devices (a subprocess, since the device count
is fixed when jax starts) whose logits, scores and greedy generations equal the unsharded model's.
The real SmolLM2 checkpoint's scores and a lazily read HF checkpoint under a mesh are the slow
tests at the end."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from jax.sharding import AbstractMesh, PartitionSpec as P

from backbones.llm import config as llm_config
from backbones.llm import gemma3
from backbones.llm.sharding import cache_shardings, logical_to_spec, param_spec
from backbones.mesh import DATA, MODEL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mesh(data, model):
    return AbstractMesh((data, model), (DATA, MODEL))


def _shapes(cfg):
    L, D, H, K, E, F, V = (cfg.n_layers, cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.hidden_dim,
                           cfg.vocab_size)
    return {"embed": (V, D), "head": (D, V), "wq": (L, D, H, E), "wk": (L, D, K, E), "wv": (L, D, K, E),
            "wo": (L, H, E, D), "w_gate": (L, D, F), "w_up": (L, D, F), "w_down": (L, F, D),
            "bq": (L, H, E), "bk": (L, K, E), "bv": (L, K, E), "attn_norm": (L, D), "final_norm": (D,),
            "q_norm": (L, E), "post_ffn_norm": (L, D)}


def test_rules_shard_vocab_heads_and_mlp_over_model():
    s = _shapes(llm_config.tiny())          # V=256 D=32 L=2 H=4 K=2 E=8 F=64
    mesh = _mesh(2, 2)
    want = {"embed": P(MODEL), "head": P(None, MODEL), "wq": P(None, None, MODEL), "wk": P(None, None, MODEL),
            "wv": P(None, None, MODEL), "wo": P(None, MODEL), "w_gate": P(None, None, MODEL),
            "w_up": P(None, None, MODEL), "w_down": P(None, MODEL), "bq": P(None, MODEL), "bk": P(None, MODEL),
            "bv": P(None, MODEL), "attn_norm": P(), "final_norm": P(), "q_norm": P(), "post_ffn_norm": P()}
    assert {n: param_spec(n, shape, mesh) for n, shape in s.items()} == want


def test_a_dimension_the_axis_does_not_divide_is_replicated():
    s = _shapes(llm_config.tiny())          # K=2 on model=4: whole KV heads, split query heads
    mesh = _mesh(1, 4)
    assert param_spec("wk", s["wk"], mesh) == P() and param_spec("bk", s["bk"], mesh) == P()
    assert param_spec("wq", s["wq"], mesh) == P(None, None, MODEL)
    smol = _shapes(llm_config.smollm2_135m())   # 9 query / 3 KV heads, F=1536, V=49152
    m2 = _mesh(1, 2)
    assert param_spec("wq", smol["wq"], m2) == P() and param_spec("wo", smol["wo"], m2) == P()
    assert param_spec("w_up", smol["w_up"], m2) == P(None, None, MODEL)
    assert param_spec("embed", (49153, 576), m2) == P()
    # a mesh with a single model device shards nothing
    assert all(param_spec(n, shape, _mesh(4, 1)) == P() for n, shape in s.items())


def test_shard_shapes_of_gemma3_on_an_abstract_mesh():
    from jax.sharding import NamedSharding

    cfg = gemma3.gemma3_270m()              # V=262144 D=640 H=4 K=1 E=256 F=2048
    mesh = _mesh(2, 4)
    s = _shapes(cfg)
    shard = {n: NamedSharding(mesh, param_spec(n, s[n], mesh)).shard_shape(s[n]) for n in ("embed", "wq", "wk", "w_down")}
    assert shard == {"embed": (65536, 640), "wq": (18, 640, 1, 256), "wk": (18, 640, 1, 256), "w_down": (18, 512, 640)}


def test_batch_and_cache_specs():
    cfg = llm_config.tiny()
    assert logical_to_spec(("batch", "time"), (4, 7), _mesh(2, 2)) == P(DATA)
    assert logical_to_spec(("batch", "time"), (3, 7), _mesh(2, 2)) == P()
    k, v, valid = (s.spec for s in cache_shardings(cfg, 4, 16, _mesh(2, 2)))
    assert k == v == P(None, DATA, None, MODEL) and valid == P(DATA)
    k, _, valid = (s.spec for s in cache_shardings(cfg, 1, 16, _mesh(2, 4)))
    assert k == P() and valid == P()             # one row on data=2, 2 KV heads on model=4: replicated


def test_unknown_parameter_and_wrong_rank_are_errors():
    with pytest.raises(ValueError, match="no sharding rule for parameter 'w_new'"):
        param_spec("w_new", (4, 4), _mesh(1, 2))
    with pytest.raises(ValueError, match="has 2 dimensions"):
        param_spec("wq", (4, 4), _mesh(1, 2))


def test_int8_with_a_mesh_is_refused_clearly():
    import jax.numpy as jnp
    from flax import nnx

    from backbones import load_llm
    from backbones.llm.api import _build
    from backbones.llm.model import Llama
    from backbones.mesh import make_mesh

    mesh = make_mesh(1, 1)
    with pytest.raises(ValueError, match="int8.*cannot be sharded.*'fp32' or 'bf16'"):
        load_llm("smollm2-135m", weights="int8", mesh=mesh)       # refused before the file is read
    cfg = llm_config.tiny()
    model = Llama(cfg, rngs=nnx.Rngs(0))
    params = {k: np.asarray(v[...]) for k, v in vars(model).items() if isinstance(v, nnx.Param)}
    with pytest.raises(ValueError, match="cannot be sharded"):
        _build(cfg, params, jnp.float32, "int8-lossless", mesh=mesh)


# ----------------------------------------------------------------- 4 simulated CPU devices

# XLA's backend optimisation off: the tiny models compile in 40 s of CPU instead of 67 (both the
# unsharded reference and the sharded models run under the same flags).
TINY_SCRIPT = textwrap.dedent("""
    import json, os
    os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0 "
                               "--xla_llvm_disable_expensive_passes=true")
    import jax, numpy as np
    from flax import nnx
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from backbones.llm import config as llm_config, gemma3
    from backbones.llm.api import FrozenLLM, _build
    from backbones.llm.model import Llama
    from backbones.llm.tokenizer import ChatTemplate
    from backbones.mesh import make_mesh
    assert len(jax.devices()) == 4

    def byte_tokenizer():                       # 256 byte tokens: fits the tiny configs' vocabulary
        alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
        t = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
        t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        t.decoder = decoders.ByteLevel()
        return t

    class Lazy:
        # a lazy parameter: shape, block reads by index tuple; reading it whole is an error
        def __init__(self, a):
            self.a, self.shape, self.reads = a, a.shape, []
        def __getitem__(self, index):
            out = self.a[index]
            self.reads.append(list(out.shape))
            return out
        def __array__(self, dtype=None, copy=None):
            raise AssertionError("a lazy parameter was read whole")

    def frozen(cfg, params, mesh):
        model, fmt = _build(cfg, params, jax.numpy.float32, "fp32", mesh=mesh)
        return FrozenLLM(model, byte_tokenizer(), ChatTemplate(None), bos_id=1, eos_ids=[0], weights=fmt)

    out = {}
    for family, cfg, cls in (("llama", llm_config.tiny(), Llama), ("gemma3", gemma3.tiny(), gemma3.Gemma3)):
        init = cls(cfg, rngs=nnx.Rngs(0))
        params = {k: np.asarray(v[...]) for k, v in vars(init).items() if isinstance(v, nnx.Param)}
        ref = frozen(cfg, params, None)
        ids = ref.encode("hello there, how are you")
        queries = [ref.encode(w) for w in ("cat", "dog", "a bird", "x")]
        cands = [ref.encode(w) for w in (" yes", " no way")]
        texts = ["abc", "hello", "x y z", "q"]
        prompts = [ref.encode(p) for p in texts]    # shapes shared by generate(texts): no new compile
        allowed = list(range(40, 120))
        want = dict(logits=ref.logits(ids), batch=ref.score_batch(ids, queries, cands),
                    score=ref.score("the sky is", [" blue", " purple"]),
                    greedy=ref.generate_ids(prompts, 8, stop_at_eos=False),
                    allowed=ref.generate_ids(prompts, 8, stop_at_eos=False, allowed_ids=allowed),
                    prefix=ref.generate_ids(prompts, 6, stop_at_eos=False, prefix=ref.encode("once upon")),
                    text=ref.generate(texts, 8, chat=False, stop_at_eos=False))
        for data, model in ((1, 4), (2, 2)):
            lazy = {k: Lazy(v) for k, v in params.items()}
            llm = frozen(cfg, lazy, make_mesh(data, model))
            embed = llm.model.embed.get_value()
            r = dict(embed_spec=list(embed.sharding.spec),
                     embed_shards=sorted({tuple(s.data.shape) for s in embed.addressable_shards}),
                     wq_spec=list(llm.model.wq.get_value().sharding.spec),
                     wk_spec=list(llm.model.wk.get_value().sharding.spec),
                     w_down_shards=sorted({tuple(s.data.shape) for s in llm.model.w_down.get_value().addressable_shards}),
                     embed_reads=lazy["embed"].reads,
                     tokens_spec=list(llm._on_mesh(np.zeros((4, 8), np.int32)).sharding.spec),
                     cache_spec=list(llm._empty_cache(4, 16).k.sharding.spec))
            got_logits = llm.logits(ids)
            r["logits"] = float(np.abs(got_logits - want["logits"]).max())
            r["logits_scale"] = float(np.abs(want["logits"]).max())
            r["batch"] = float(np.abs(llm.score_batch(ids, queries, cands) - want["batch"]).max())
            r["allowed"] = llm.generate_ids(prompts, 8, stop_at_eos=False, allowed_ids=allowed) == want["allowed"]
            r["greedy"] = llm.generate_ids(prompts, 8, stop_at_eos=False) == want["greedy"]
            if (data, model) == (2, 2):     # the other entry points on one mesh (each compiles anew)
                r["score"] = float(np.abs(np.array(llm.score("the sky is", [" blue", " purple"]))
                                          - np.array(want["score"])).max())
                r["prefix"] = llm.generate_ids(prompts, 6, stop_at_eos=False,
                                               prefix=ref.encode("once upon")) == want["prefix"]
                r["text"] = llm.generate(texts, 8, chat=False, stop_at_eos=False) == want["text"]
            out[f"{family}:{data}x{model}"] = r
        out[family + ":sizes"] = dict(V=cfg.vocab_size, D=cfg.dim, F=cfg.hidden_dim, L=cfg.n_layers)
    print("RESULT" + json.dumps(out))
""")


def _run(script: str, tmp_path, *argv: str, timeout=600) -> dict:
    """Run a script in a fresh process (its own device count) -> the JSON it prints after RESULT."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)
    path = tmp_path / "script.py"
    path.write_text(script)
    proc = subprocess.run([sys.executable, str(path), *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT", 1)[1])


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    return _run(TINY_SCRIPT, tmp_path_factory.mktemp("llm_sharding"))


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_parameters_are_really_sharded(tiny_runs, family):
    size = tiny_runs[family + ":sizes"]
    V, D, F, L = size["V"], size["D"], size["F"], size["L"]
    for mesh, model in (("1x4", 4), ("2x2", 2)):
        r = tiny_runs[f"{family}:{mesh}"]
        assert r["embed_spec"] == ["model"]
        assert r["embed_shards"] == [[V // model, D]]
        assert r["w_down_shards"] == [[L, F // model, D]]
        assert r["wq_spec"] == [None, None, "model"]     # H=4 splits on 2 and 4
        # every read of the lazy table was one device's block, never the whole table
        assert r["embed_reads"] and all(read == [V // model, D] for read in r["embed_reads"])
    assert tiny_runs[f"{family}:1x4"]["wk_spec"] == []     # K=2 on model=4: whole
    assert tiny_runs[f"{family}:2x2"]["wk_spec"] == [None, None, "model"]
    r = tiny_runs[f"{family}:2x2"]     # the data axis is used
    assert r["tokens_spec"] == ["data"]
    assert r["cache_spec"] == [None, "data", None, "model"]


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_sharded_outputs_equal_the_unsharded_model(tiny_runs, family):
    for mesh in ("1x4", "2x2"):
        r = tiny_runs[f"{family}:{mesh}"]
        assert r["logits"] <= 1e-5 * max(1.0, r["logits_scale"]), (mesh, r["logits"])
        assert r["batch"] <= 1e-4, (mesh, r["batch"])            # summed log-probs of (4, 2) candidates
        assert r["greedy"] and r["allowed"], mesh
    r = tiny_runs[f"{family}:2x2"]
    assert r["score"] <= 1e-4 and r["prefix"] and r["text"]


SMOL_SCRIPT = textwrap.dedent("""
    import json, os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import numpy as np
    from backbones import load_llm
    from backbones.mesh import make_mesh
    from eval.llm_quality import PARITY_PROMPTS
    ref = load_llm("smollm2-135m", weights="fp32")
    llm = load_llm("smollm2-135m", mesh=make_mesh(data=2, model=2))     # weights=None: fp32 with a mesh
    prompt, cands = "The capital of France is", [" Paris", " London", " a city"]
    queries = [ref.encode(p) for p in PARITY_PROMPTS[:2]]
    ids = [ref.encode(c) for c in cands]
    pre = ref.encode("Continue each text:")
    print("RESULT" + json.dumps(dict(
        weights=llm.weights, embed=list(llm.model.embed.get_value().sharding.spec),
        w_up=list(llm.model.w_up.get_value().sharding.spec), wq=list(llm.model.wq.get_value().sharding.spec),
        score=float(np.abs(np.array(llm.score(prompt, cands)) - np.array(ref.score(prompt, cands))).max()),
        batch=float(np.abs(llm.score_batch(pre, queries, ids) - ref.score_batch(pre, queries, ids)).max()))))
""")


@pytest.mark.slow
def test_smollm2_scores_equal_under_a_mesh(tmp_path):
    from backbones.llm.api import named_model_path

    try:
        named_model_path("smollm2-135m")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    r = _run(SMOL_SCRIPT, tmp_path)
    assert r["weights"] == "fp32"
    assert r["embed"] == ["model"] and r["w_up"] == [None, None, "model"]
    assert r["wq"] == []                  # 9 query heads do not split over 2
    assert r["score"] < 1e-4 and r["batch"] < 1e-4


HF_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import numpy as np, torch, transformers
    from backbones import load_llm
    from backbones.mesh import make_mesh
    d = sys.argv[1]
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                                   max_position_embeddings=256)
    transformers.LlamaForCausalLM(cfg).eval().save_pretrained(d, safe_serialization=True)
    load_llm("smollm2-135m", weights="fp32").tokenizer.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "<|im_end|>"}, f)
    ref, llm = load_llm(d, weights="fp32"), load_llm(d, mesh=make_mesh(data=2, model=2))
    ids = ref.encode("A tiny random model still has to agree, token by token.")
    prompts = [ids, ids[:5]]
    print("RESULT" + json.dumps(dict(
        head=list(llm.model.head.get_value().sharding.spec),
        logits=float(np.abs(ref.logits(ids) - llm.logits(ids)).max()),
        greedy=ref.generate_ids(prompts, 6, stop_at_eos=False) == llm.generate_ids(prompts, 6, stop_at_eos=False))))
""")


@pytest.mark.slow   # lazy blocks onto a mesh: test_parameters_are_really_sharded; lazy HF reads: test_llm_hf_checkpoints
def test_lazy_hf_checkpoint_onto_a_mesh(tmp_path):
    """A safetensors directory (read lazily, slice by slice) loads onto data=2,model=2 as it loads alone."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from backbones.llm.api import named_model_path

    try:
        named_model_path("smollm2-135m")         # its tokenizer serves the tiny checkpoint
    except FileNotFoundError as e:
        pytest.skip(str(e))
    r = _run(HF_SCRIPT, tmp_path, str(tmp_path / "ckpt"))
    assert r["head"] == [None, "model"] and r["logits"] < 1e-5 and r["greedy"]
