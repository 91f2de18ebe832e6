"""Memory plan: the bytes each device holds for the frozen LLM plus an SPAE train step on a
(data, model) mesh, computed without allocating anything.

    python -m eval.scale_plan --llm llama3-8b --mesh data=1,model=8 --spae train/configs/spae_photos64.py
    python -m eval.scale_plan --llm path/to/config.json --mesh data=2,model=4 --dtype bfloat16 --device-gb 80

Rows, each as its total and its share on one device:
  LLM weights       every parameter of `jax.eval_shape`'s model in --dtype, laid out by the sharding
                    rules of backbones/llm/sharding.py (NamedSharding.shard_shape on an AbstractMesh);
  LLM KV cache      --kv-batch rows of --kv-slots slots (batch over data, KV heads over model), the
                    cache scoring and generation fill (0 leaves it out);
  SPAE codebook     the frozen (V', D) float32 table (the LLM's embedding rows; V' = --codebook-rows,
                    by default the whole vocabulary, an upper bound: SmolLM2's word filter keeps
                    21,163 of 49,152), rows split over model and padded to a multiple of it, as
                    `spae.training.StepFn` places it;
  SPAE train state  parameters, optimiser moments, EMA copies, discriminator: replicated;
  SPAE frozen nets  the fixed perceptual network: replicated;
  SPAE batch        one batch of the config, split over data;
  SPAE step temps   XLA's buffer assignment for the compiled, SPMD-partitioned train step on abstract
                    inputs (`jit(...).lower(...).compile().memory_analysis()`: temporaries plus outputs
                    not aliased to the donated state). This is a measurement of the real program's
                    per-device buffers, but compiled for the CPU backend (data x model simulated CPU
                    devices; nothing runs): a GPU/TPU compiler fuses differently, so read it as an
                    estimate within tens of percent. --no-step skips it (a few minutes of compile
                    for large codebooks).

The verdict adds every row and compares the sum with --device-gb (decimal GB, 1e9 bytes: the
conservative reading of a "16 GB" device); framework overheads (CUDA context, allocator slack) are
not counted. The LLM's own forward temporaries are not in the sum either: during an SPAE train step
the LLM does not run, the table SPAE reads is its own copy.

Named LLM configs (--llm): smollm2-135m, gemma3-270m, llama3-8b, llama3-70b, gemma3-12b, with the
published hyperparameters (Meta's Llama 3 8B / 70B config.json; Gemma 3 12B's text_config:
V=262208, D=3840, 48 layers, 16 query / 8 KV heads of 256, F=15360, window 1024 every 6th layer
global, linear RoPE scaling 8), or a path to a Hugging Face config.json (Llama, Mistral, Qwen 2,
Gemma 2 / 3). --dtype defaults to bfloat16 for models of 1B parameters and more, else float32.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from backbones.cli_errors import add_debug_flag, cli_main

GB = 1e9
BIG_PARAMS = 1e9            # at or above: bfloat16 by default


def named_llm_configs() -> dict:
    """name -> config of the LLMs the plan knows by name (published hyperparameters)."""
    from backbones.llm import config as llm_config
    from backbones.llm import gemma3
    from backbones.llm.config import LlamaConfig

    return {
        "smollm2-135m": llm_config.smollm2_135m(),
        "gemma3-270m": gemma3.gemma3_270m(),
        "llama3-8b": LlamaConfig(vocab_size=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, head_dim=128,
                                 hidden_dim=14336, rope_base=500000.0, norm_eps=1e-5, tie_embeddings=False,
                                 max_seq_len=8192),
        "llama3-70b": LlamaConfig(vocab_size=128256, dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, head_dim=128,
                                  hidden_dim=28672, rope_base=500000.0, norm_eps=1e-5, tie_embeddings=False,
                                  max_seq_len=8192),
        "gemma3-12b": gemma3.Gemma3Config(vocab_size=262208, dim=3840, n_layers=48, n_heads=16, n_kv_heads=8,
                                          head_dim=256, hidden_dim=15360, rope_base=1e6, rope_local_base=1e4,
                                          rope_scale=8.0, sliding_window=1024, sliding_window_pattern=6,
                                          query_pre_attn_scalar=256.0, max_seq_len=131072),
    }


def llm_config(name_or_path: str):
    """A named config, or one read from a Hugging Face config.json."""
    named = named_llm_configs()
    if name_or_path in named:
        return named[name_or_path]
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ValueError(f"--llm {name_or_path!r} is neither a named config ({', '.join(named)}) nor a config.json")
    cfg = json.loads(path.read_text())
    if str(cfg.get("model_type", "")).startswith("gemma"):
        from backbones.llm.gemma3 import Gemma3Config

        return Gemma3Config.from_hf_config(cfg)
    from backbones.llm.config import LlamaConfig

    return LlamaConfig.from_hf_config(cfg)


def abstract_mesh(data: int, model: int):
    from jax.sharding import AbstractMesh

    from backbones.mesh import AXES

    return AbstractMesh((int(data), int(model)), AXES)


def _nbytes(shape, dtype) -> int:
    import numpy as np

    return int(math.prod(shape)) * np.dtype(dtype).itemsize


def _shard_bytes(shape, dtype, spec, mesh) -> int:
    from jax.sharding import NamedSharding

    return _nbytes(NamedSharding(mesh, spec).shard_shape(tuple(shape)), dtype)


def llm_weights(cfg, mesh, dtype) -> list[dict]:
    """One row per parameter of the abstract model: name, shape, spec, total and per-device bytes."""
    import jax.numpy as jnp
    from flax import nnx

    from backbones.llm.gemma3 import Gemma3, Gemma3Config
    from backbones.llm.model import Llama
    from backbones.llm.sharding import param_spec

    cls = Gemma3 if isinstance(cfg, Gemma3Config) else Llama
    model = nnx.eval_shape(lambda: cls(cfg, rngs=nnx.Rngs(0), dtype=jnp.dtype(dtype)))
    rows = []
    for name, var in vars(model).items():
        if not isinstance(var, nnx.Param):
            continue
        shape, dt = tuple(var.shape), var.get_value().dtype
        spec = param_spec(name, shape, mesh)
        rows.append(dict(name=name, shape=shape, spec=tuple(spec), total=_nbytes(shape, dt),
                         per_device=_shard_bytes(shape, dt, spec, mesh)))
    return rows


def kv_cache(cfg, mesh, batch: int, slots: int, dtype) -> dict:
    """The KVCache of `batch` rows x `slots` slots in `dtype`, laid out by the cache rules."""
    import numpy as np

    from backbones.llm.sharding import cache_shardings

    kv = (cfg.n_layers, batch, slots, cfg.n_kv_heads, cfg.head_dim)
    total = per = 0
    for sharding, (shape, dt) in zip(cache_shardings(cfg, batch, slots, mesh),
                                     ((kv, dtype), (kv, dtype), ((batch, slots), np.bool_))):
        total += _nbytes(shape, dt)
        per += _nbytes(sharding.shard_shape(shape), dt)
    return dict(total=total, per_device=per)


def spae_config(path: str, rows: int, dim: int, overrides=()):
    """The SPAE config with its codebook replaced by a (rows, dim) table of the LLM's shape (the
    shapes are what matter here) and train.init_from dropped (a checkpoint to start from changes no shape)."""
    from spae.training import resolve_config
    from train import trainlib

    cfg = trainlib.load_config(path, list(overrides))
    cfg.train.init_from = None
    cfg.vocab.update(source="random", random_size=int(rows), random_dim=int(dim))
    return resolve_config(cfg)


def _stand_in_words(rows: int) -> list[str]:
    """Words for a words semantic head when there is no tokenizer: the ImageNet class names' words
    (so the head has the size it would have) padded to `rows` entries."""
    from backbones.vision import imagenet
    from spae.semantic import _name_words

    words = list(dict.fromkeys(w for lems in imagenet.lemmas() for name in lems for w in _name_words(name)))
    return (words + [f"#{i}" for i in range(max(rows - len(words), 0))])[:rows]


def spae_state(cfg, mesh) -> dict:
    """The abstract TrainState split as the trainer splits it: codebook rows over model (padded to
    a multiple), everything else replicated. -> bytes per part, the abstract trees and the row counts."""
    import jax
    import numpy as np
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec as P

    from backbones.mesh import MODEL
    from spae.codebook import FrozenCodebook, _is_var
    from spae.training import FROZEN, TrainState

    rows, dim = cfg.vocab.random_size, cfg.vocab.random_dim
    words = _stand_in_words(rows) if cfg.model.get("semantic_head", "words") == "words" and \
        cfg.model.get("semantic_backbone", "none") != "none" else None
    ts = nnx.eval_shape(lambda cb: TrainState(cfg, cb, rngs=nnx.Rngs(0), words=words),
                        jax.ShapeDtypeStruct((rows, dim), np.float32))
    graphdef, frozen, train = nnx.split(ts, FROZEN, ...)
    m = int(dict(mesh.shape).get(MODEL, 1))
    out = dict(codebook_total=0, codebook_per_device=0, frozen_nets=0, rows=[])

    def place(x):
        if not isinstance(x, nnx.Variable):
            return x
        v = x.get_value()
        if isinstance(x, FrozenCodebook):
            out["rows"].append(int(v.shape[0]))
            shape = (v.shape[0] + (-v.shape[0] % m),) + tuple(v.shape[1:])
            spec = P(MODEL if m > 1 else None)
            out["codebook_total"] += _nbytes(v.shape, v.dtype)
            out["codebook_per_device"] += _shard_bytes(shape, v.dtype, spec, mesh)
        else:
            shape, spec = tuple(v.shape), P()
            out["frozen_nets"] += _nbytes(shape, v.dtype)
        return x.replace(jax.ShapeDtypeStruct(shape, v.dtype, sharding=NamedSharding(mesh, spec)))

    out["frozen"] = jax.tree.map(place, frozen, is_leaf=_is_var)
    out["train"] = train
    out["graphdef"] = graphdef
    out["train_state"] = sum(_nbytes(x.shape, x.dtype) for x in jax.tree.leaves(train))
    return out


def spae_batch(cfg) -> dict:
    """Abstract arrays of one training batch (the keys the step reads for this config)."""
    import jax
    import numpy as np

    from spae.training import model_config

    b, s, c = cfg.data.batch_size, cfg.data.image_size, cfg.data.channels
    batch = {"image": jax.ShapeDtypeStruct((b, s, s, c), np.uint8)}
    if cfg.loss.semantic > 0:
        k = cfg.loss.semantic_k
        batch["sem_ids"] = jax.ShapeDtypeStruct((b, k), np.int32)
        batch["sem_prob"] = jax.ShapeDtypeStruct((b, k), np.float32)
    mc = model_config(cfg)
    if mc.has_semantic_path:
        positions = sum((mc.grid // st) ** 2 for st in mc.strides[:mc.semantic_layers])
        batch["sem_feat"] = jax.ShapeDtypeStruct((b, 2, mc.semantic_features), np.float32)
        batch["sem_rows"] = jax.ShapeDtypeStruct((b, positions), np.int32)
    return batch


def spae_step_bytes(cfg, state: dict, batch: dict, data: int, model: int) -> int:
    """Per-device temporaries (+ outputs not aliased to the donated state) of the compiled,
    partitioned SPAE train step on abstract inputs; needs data x model devices (simulated CPU ones)."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P

    from backbones.mesh import DATA, make_mesh
    from spae.training import _compiled_step

    if len(jax.devices()) < data * model:
        raise ValueError(f"the step needs {data * model} devices to compile over, {len(jax.devices())} are visible: "
                         "run `python -m eval.scale_plan` (it simulates them) or pass --no-step")
    mesh = make_mesh(data, model)

    def on(tree, spec_of):    # the abstract trees re-laid on the concrete mesh
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, spec_of(x))),
                            tree)

    frozen = on(state["frozen"], lambda x: x.sharding.spec)
    train = on(state["train"], lambda x: P())
    batch = on(batch, lambda x: P(DATA))
    cfg_json = json.dumps(cfg.to_dict(), sort_keys=True, default=list)
    step = _compiled_step(state["graphdef"], cfg_json, mesh, tuple(state["rows"]),
                          jax.tree.map(lambda x: x.sharding, frozen))
    stats = step.lower(train, frozen, batch).compile().memory_analysis()
    return int(stats.temp_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes)


def plan(llm, mesh_shape: tuple[int, int], spae: str | None = None, dtype: str | None = None,
         codebook_rows: int | None = None, kv_batch: int = 16, kv_slots: int = 1024, step: bool = True,
         spae_overrides=()) -> dict:
    """The plan as data: {'rows': [{'item', 'total', 'per_device', 'layout'}], 'per_device': sum, ...}.
    `llm` is a config object or a name / config.json path (`llm_config`)."""
    import numpy as np

    cfg = llm_config(llm) if isinstance(llm, str) else llm
    data, model = mesh_shape
    mesh = abstract_mesh(data, model)
    n_params = sum(math.prod(r["shape"]) for r in llm_weights(cfg, mesh, np.float32))
    dtype = dtype or ("bfloat16" if n_params >= BIG_PARAMS else "float32")
    weights = llm_weights(cfg, mesh, dtype)
    dt = "bf16" if dtype == "bfloat16" else "fp32"
    rows = [dict(item=f"LLM weights ({n_params / 1e9:.2f} B params, {dt})", total=sum(r["total"] for r in weights),
                 per_device=sum(r["per_device"] for r in weights),
                 layout="vocab, heads, KV heads, FFN over model (sharding.py)")]
    if kv_batch:
        kv = kv_cache(cfg, mesh, kv_batch, kv_slots, dtype)
        rows.append(dict(item=f"LLM KV cache ({kv_batch} x {kv_slots} slots, {dt})", layout="batch over data, KV heads over model",
                         **kv))
    out = dict(llm=cfg, dtype=dtype, mesh=(data, model), weights=weights, rows=rows)
    if spae:
        scfg = spae_config(spae, codebook_rows or cfg.vocab_size, cfg.dim, spae_overrides)
        if scfg.data.batch_size % data:
            raise ValueError(f"the SPAE batch of {scfg.data.batch_size} does not split over data={data}")
        state = spae_state(scfg, mesh)
        batch = spae_batch(scfg)
        rows += [dict(item=f"SPAE codebook ({scfg.vocab.random_size:,} x {cfg.dim:,} fp32)",
                      total=state["codebook_total"], per_device=state["codebook_per_device"],
                      layout="rows over model (padded to a multiple)"),
                 dict(item="SPAE train state (params, optimiser, EMA, disc.)", total=state["train_state"],
                      per_device=state["train_state"], layout="replicated"),
                 dict(item="SPAE frozen nets (perceptual)", total=state["frozen_nets"],
                      per_device=state["frozen_nets"], layout="replicated"),
                 dict(item=f"SPAE batch ({scfg.data.batch_size} images)",
                      total=sum(_nbytes(x.shape, x.dtype) for x in batch.values()),
                      per_device=sum(_nbytes(x.shape, x.dtype) for x in batch.values()) // data,
                      layout="over data")]
        if step:
            rows.append(dict(item="SPAE step temporaries (XLA, CPU compile)", total=None,
                             per_device=spae_step_bytes(scfg, state, batch, data, model),
                             layout="partitioned step's buffer assignment"))
        out["spae"] = spae
    out["per_device"] = sum(r["per_device"] for r in rows)
    return out


def _gb(n) -> str:
    if n is None:
        return "-"
    return f"{n / GB:.2f} GB" if n >= 0.1 * GB else f"{n / 1e6:.1f} MB"


def render(p: dict, device_gb: float) -> str:
    data, model = p["mesh"]
    n = data * model
    name = type(p["llm"]).__name__.replace("Config", "")
    head = (f"scale plan: {name} V={p['llm'].vocab_size} D={p['llm'].dim} L={p['llm'].n_layers} ({p['dtype']})"
            + (f" + SPAE {p['spae']}" if p.get("spae") else "") + f" on data={data} x model={model} ({n} devices)")
    width = max(len(r["item"]) for r in p["rows"]) + 2
    lines = [head, "", f"{'item':<{width}}{'total':>12}{'per device':>14}   layout"]
    for r in p["rows"]:
        lines.append(f"{r['item']:<{width}}{_gb(r['total']):>12}{_gb(r['per_device']):>14}   {r['layout']}")
    lines.append(f"{'sum':<{width}}{'':>12}{_gb(p['per_device']):>14}")
    share = p["per_device"] / (device_gb * GB)
    verdict = "yes" if share <= 1 else "no"
    lines += ["", f"verdict: fits {n} devices of {device_gb:g} GB: {verdict} "
                  f"({p['per_device'] / GB:.2f} GB per device, {100 * share:.0f}% of {device_gb:g} GB)"]
    return "\n".join(lines)


def _simulate_devices(n: int) -> None:
    """Before jax's backends start: n simulated CPU devices to compile the partitioned step over
    (nothing runs on them), with XLA's backend optimisation off (it changes compile time, not the
    buffer assignment). Once a backend is running (a library caller's), its devices are kept."""
    import jax

    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0 "
                               "--xla_llvm_disable_expensive_passes=true").strip()
    try:
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:
        pass


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llm", required=True, help="named config (llama3-8b, llama3-70b, gemma3-12b, smollm2-135m, "
                                                "gemma3-270m) or a config.json path")
    p.add_argument("--mesh", default="data=1,model=8", help="data=D,model=M (default data=1,model=8)")
    p.add_argument("--spae", default=None, help="an SPAE config file (train/configs/spae_*.py); none: the LLM alone")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                   help="LLM storage (default: bfloat16 from 1B parameters, else float32)")
    p.add_argument("--device-gb", type=float, default=16.0, help="memory of one device, GB (1e9 bytes)")
    p.add_argument("--codebook-rows", type=int, default=None, help="SPAE codebook rows (default: the vocabulary)")
    p.add_argument("--kv-batch", type=int, default=16, help="KV cache rows (0: no cache row)")
    p.add_argument("--kv-slots", type=int, default=1024, help="KV cache slots per row")
    p.add_argument("--no-step", action="store_true", help="skip compiling the SPAE step (no temporaries row)")
    p.add_argument("--detail", action="store_true", help="also list every LLM parameter's layout")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an SPAE config field")
    add_debug_flag(p)
    args = p.parse_args(argv)
    from backbones.mesh import parse_mesh

    shape = parse_mesh(args.mesh)
    data, model = shape.get("data", 1), shape.get("model", 1)
    if args.spae and not args.no_step:
        _simulate_devices(data * model)
    result = plan(args.llm, (data, model), spae=args.spae, dtype=args.dtype, codebook_rows=args.codebook_rows,
                  kv_batch=args.kv_batch, kv_slots=args.kv_slots, step=bool(args.spae) and not args.no_step,
                  spae_overrides=args.set)
    print(render(result, args.device_gb))
    if args.detail:
        print("\nLLM parameters:")
        for r in result["weights"]:
            spec = ", ".join(str(s) for s in r["spec"]) or "replicated"
            print(f"  {r['name']:<16}{str(r['shape']):<28}{_gb(r['total']):>12}{_gb(r['per_device']):>12}   ({spec})")


if __name__ == "__main__":
    main()
