"""Sharding rules of the frozen LLM over the (data, model) mesh of `backbones.mesh`.

    from backbones.llm.sharding import param_spec, shard_params, cache_zeros
    param_spec("wq", (L, D, H, E), mesh)        # P(None, None, 'model', None)
    params = shard_params(numpy_or_lazy_params, mesh, dtypes)   # name -> sharded jax.Array

The "logical axis rules" pattern: every array names its dimensions with logical axes (PARAM_AXES,
TOKENS_AXES, CACHE_AXES), and one table (RULES) says which mesh axis each logical axis splits over.
`logical_to_spec` turns logical axes into a PartitionSpec for a given mesh:

    vocab (embedding / codebook rows, the head's V)  -> model
    heads (query heads H)                            -> model
    kv_heads (key/value heads K)                     -> model
    mlp (the gated-FFN width F)                      -> model
    batch                                            -> data
    everything else (layers, D, head dim, slots)     -> replicated

A dimension whose size the mesh axis does not divide is replicated instead, never padded: SmolLM2's
9 query and 3 KV heads stay whole on model=2 while its F=1536 and V=49152 split.
Llama (`model.py`) and Gemma 3 (`gemma3.py`) share their parameter names and layouts; Gemma's extra
norms are replicated like every other norm. Only float parameters are sharded here: the int8 storage
format (quant.py) keeps a permuted layout with per-group scales and is refused with a mesh by `_build`.
"""
from __future__ import annotations

import functools
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from backbones.mesh import DATA, MODEL

# Logical axis -> mesh axis it splits over; a logical axis not listed is replicated.
RULES: dict[str, str] = {"vocab": MODEL, "heads": MODEL, "kv_heads": MODEL, "mlp": MODEL, "batch": DATA}

# Parameter name -> logical axes of its dimensions (layer-stacked weights lead with "layers").
PARAM_AXES: dict[str, tuple] = {
    "embed": ("vocab", "embed"),                          # (V, D)
    "tied_head": ("vocab", "embed"),                      # (V, D): a tied head's compact copy of embed
    "head": ("embed", "vocab"),                           # (D, V)
    "wq": ("layers", "embed", "heads", "head_dim"),       # (L, D, H, E)
    "wk": ("layers", "embed", "kv_heads", "head_dim"),    # (L, D, K, E)
    "wv": ("layers", "embed", "kv_heads", "head_dim"),    # (L, D, K, E)
    "wo": ("layers", "heads", "head_dim", "embed"),       # (L, H, E, D)
    "bq": ("layers", "heads", "head_dim"),                # (L, H, E) attention biases (Qwen-style)
    "bk": ("layers", "kv_heads", "head_dim"),             # (L, K, E)
    "bv": ("layers", "kv_heads", "head_dim"),             # (L, K, E)
    "w_gate": ("layers", "embed", "mlp"),                 # (L, D, F)
    "w_up": ("layers", "embed", "mlp"),                   # (L, D, F)
    "w_down": ("layers", "mlp", "embed"),                 # (L, F, D)
}
NORM_SUFFIX = "norm"    # attn_norm, ffn_norm, final_norm, q_norm, k_norm, post_*_norm: replicated

TOKENS_AXES = ("batch", "time")                           # tokens, positions, valid: (B, T)
# KVCache fields (model.KVCache): k, v (L, B, S, K, E); valid (B, S).
CACHE_AXES = (("layers", "batch", "slots", "kv_heads", "head_dim"),
              ("layers", "batch", "slots", "kv_heads", "head_dim"),
              ("batch", "slots"))


def logical_to_spec(axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules: Mapping[str, str] = RULES) -> PartitionSpec:
    """Logical axes of an array of `shape` -> its PartitionSpec on `mesh`: each dimension over the
    mesh axis its rule names, or replicated (None) when there is no rule, the mesh lacks that axis,
    the axis size does not divide the dimension, or an earlier dimension already took that axis."""
    if len(axes) != len(shape):
        raise ValueError(f"logical axes {tuple(axes)} do not match the shape {tuple(shape)}")
    spec, used = [], set()
    for name, size in zip(axes, shape):
        target = rules.get(name) if name is not None else None
        n = mesh.shape.get(target, 1) if target is not None else 1
        if target is None or target in used or n == 1 or size % n:
            spec.append(None)
        else:
            spec.append(target)
            used.add(target)
    while spec and spec[-1] is None:
        spec.pop()
    return PartitionSpec(*spec)


def param_axes(name: str, ndim: int) -> tuple:
    """Logical axes of the parameter `name` (norm scales: replicated); an unknown name is an error,
    so that a new parameter is given a rule rather than silently replicated."""
    if name in PARAM_AXES:
        axes = PARAM_AXES[name]
        if len(axes) != ndim:
            raise ValueError(f"parameter {name!r} has {ndim} dimensions; its rule names {len(axes)}: {axes}")
        return axes
    if name.endswith(NORM_SUFFIX):
        return (None,) * ndim
    raise ValueError(f"no sharding rule for parameter {name!r}: add it to backbones/llm/sharding.py PARAM_AXES")


def param_spec(name: str, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """The PartitionSpec of an LLM parameter on `mesh` by the rules above."""
    return logical_to_spec(param_axes(name, len(shape)), shape, mesh)


def param_sharding(name: str, shape: Sequence[int], mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, param_spec(name, shape, mesh))


def place(src, shape: Sequence[int], sharding: NamedSharding, dtype) -> jax.Array:
    """A jax.Array of `shape` laid out by `sharding`, each device's block read as `src[index]`: for a
    numpy array a view, for a lazy parameter (an object with `__getitem__` of an index tuple) one
    read of that block, so no process ever holds more of a large matrix than its own shards."""
    dtype = np.dtype(dtype)
    return jax.make_array_from_callback(tuple(shape), sharding,
                                        lambda index: np.asarray(src[index]).astype(dtype, copy=False))


def shard_params(params: Mapping[str, object], mesh: Mesh, dtypes: Mapping[str, object]) -> dict[str, jax.Array]:
    """Every parameter placed on `mesh` by its rule, stored in dtypes[name]."""
    return {name: place(src, src.shape, param_sharding(name, src.shape, mesh), dtypes[name])
            for name, src in params.items()}


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(shape: Sequence[int], mesh: Mesh) -> NamedSharding:
    """(B, ...) inputs: B over data when it divides, the rest replicated."""
    return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (len(shape) - 1), shape, mesh))


def cache_shardings(cfg, batch: int, slots: int, mesh: Mesh) -> tuple[NamedSharding, ...]:
    """NamedShardings of a KVCache's (k, v, valid) for `batch` rows of `slots` slots."""
    kv = (cfg.n_layers, batch, slots, cfg.n_kv_heads, cfg.head_dim)
    shapes = (kv, kv, (batch, slots))
    return tuple(NamedSharding(mesh, logical_to_spec(axes, shape, mesh)) for axes, shape in zip(CACHE_AXES, shapes))


def cache_zeros(cfg, batch: int, slots: int, dtype, mesh: Mesh):
    """An empty KVCache made directly in its sharded layout (no full copy on one device first)."""
    return _cache_maker(cfg, batch, slots, jnp.dtype(dtype), mesh)()


@functools.lru_cache(maxsize=32)
def _cache_maker(cfg, batch: int, slots: int, dtype, mesh: Mesh):
    """The compiled zero-cache maker of one (config, shape, dtype, mesh): compiled once, not per call."""
    from backbones.llm.model import KVCache

    out = KVCache(*cache_shardings(cfg, batch, slots, mesh))
    return jax.jit(lambda: KVCache.zeros(cfg, batch, slots, dtype=dtype), out_shardings=out)


def constrain_cache(cache, cfg, mesh: Mesh):
    """Inside a jitted step: keep a (possibly re-batched) cache in its rule layout."""
    batch, slots = cache.valid.shape
    return type(cache)(*(jax.lax.with_sharding_constraint(x, s)
                         for x, s in zip(cache, cache_shardings(cfg, batch, slots, mesh))))


def mesh_of(array) -> Mesh | None:
    """The Mesh an array is laid out on (None for an array on one device or not a jax.Array)."""
    sharding = getattr(array, "sharding", None)
    return sharding.mesh if isinstance(sharding, NamedSharding) and isinstance(sharding.mesh, Mesh) else None


def float_dtype(fmt: str) -> jnp.dtype:
    """Storage dtype of a matrix in the float format `fmt` ('fp32' | 'bf16')."""
    if fmt == "bf16":
        return jnp.dtype(jnp.bfloat16)
    if fmt == "fp32":
        return jnp.dtype(jnp.float32)
    raise ValueError(f"weights={fmt!r} cannot be sharded over a mesh: use 'fp32' or 'bf16' (int8 groups keep a "
                     "permuted per-group layout that the sharding rules do not split)")
