"""A Llama-family decoder in Flax NNX: RMSNorm, RoPE, grouped-query attention, SwiGLU.

Layer weights are stacked on a leading layer axis and the forward pass scans over them, so a
30-layer model compiles as fast as a 1-layer one. Axis letters in einsums and comments:
B batch, T query time, S key time (cache slots), D width, H query heads, K key/value heads,
G = H // K query heads per key/value head, E head dim, F SwiGLU width, V vocabulary, L layers.

RoPE uses the Hugging Face "half split" layout (rotate x[:E/2] with x[E/2:]); the GGUF loader
undoes llama.cpp's interleaved Q/K row order so both checkpoint formats share one model. Its
frequencies may be scaled (`config.RopeScaling`: linear, or Llama 3.x's "llama3"). Qwen 2 adds
biases to the query/key/value projections (`bq`, `bk`, `bv`, present when cfg.qkv_bias), Mistral a
sliding attention window (cfg.sliding_window).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from backbones.llm.config import LlamaConfig, RopeScaling
from backbones.llm.quant import project, table_logits, table_rows

# The axes each matrix contracts in its product, counted after its LAYER_AXES leading (stacked
# layer) axes: what an int8 group runs along. Names not listed (norm scales, the q/k/v biases) stay
# in the compute dtype.
CONTRACTED_AXES = {"embed": (1,), "head": (0,), "wq": (0,), "wk": (0,), "wv": (0,), "wo": (0, 1),
                   "w_gate": (0,), "w_up": (0,), "w_down": (0,)}
LAYER_AXES = {"embed": 0, "head": 0}   # every other matrix is stacked over layers: 1


class KVCache(NamedTuple):
    k: jax.Array       # (L, B, S, K, E)
    v: jax.Array       # (L, B, S, K, E)
    valid: jax.Array   # (B, S) bool: slot holds a real (non-padding) token

    @classmethod
    def zeros(cls, cfg: LlamaConfig, batch: int, slots: int, dtype=jnp.float32) -> "KVCache":
        shape = (cfg.n_layers, batch, slots, cfg.n_kv_heads, cfg.head_dim)
        return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((batch, slots), bool))


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (x32 * scale.astype(jnp.float32)).astype(x.dtype)


def rope_frequencies(half: int, base: float, scaling: RopeScaling | None = None) -> np.ndarray:
    """(E/2,) float32 inverse frequencies base^(-i / (E/2)), scaled as `scaling` says (computed in
    float64 on the host: a constant of the jitted step)."""
    inv = float(base) ** (-np.arange(half, dtype=np.float64) / half)
    if scaling is None:
        pass
    elif scaling.kind == "linear":
        inv = inv / scaling.factor
    else:                                   # llama3: long wavelengths / factor, a blend between the bands
        wavelen = 2 * math.pi / inv
        low_wavelen = scaling.original_max_position / scaling.low_freq_factor     # longer: divided by factor
        high_wavelen = scaling.original_max_position / scaling.high_freq_factor   # shorter: kept
        smooth = ((scaling.original_max_position / wavelen - scaling.low_freq_factor)
                  / (scaling.high_freq_factor - scaling.low_freq_factor))
        blended = (1 - smooth) * inv / scaling.factor + smooth * inv
        inv = np.where(wavelen > low_wavelen, inv / scaling.factor,
                       np.where(wavelen < high_wavelen, inv, blended))
    return inv.astype(np.float32)


def rope(x: jax.Array, positions: jax.Array, base: float | jax.Array,
         scaling: RopeScaling | None = None) -> jax.Array:
    """Rotary embedding, half-split layout. x (B, T, N, E), positions (B, T) int (or float).
    `base` may be traced (Gemma picks it per layer inside the scan) when there is no `scaling`."""
    half = x.shape[-1] // 2
    if scaling is None:
        inv_freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)        # (E/2,)
    else:
        inv_freq = jnp.asarray(rope_frequencies(half, base, scaling))
    angle = positions.astype(jnp.float32)[..., None] * inv_freq                  # (B, T, E/2)
    cos, sin = jnp.cos(angle)[:, :, None, :], jnp.sin(angle)[:, :, None, :]      # (B, T, 1, E/2)
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def output_logits(h: jax.Array, model) -> jax.Array:
    """(B, T, D) final hidden states -> (B, T, V) float32 logits through the model's output head.

    `model.head` (D, V) when untied; else `model.tied_head`, a (V, D) copy of the embedding table in
    a compact storage format (int8 / bf16) when one was made; else the (V, D) embedding table itself.
    The tied head contracts over the table's own minor axis: a transposed (D, V) view made XLA copy
    the whole table on every decode step once an addend (generate_ids' bias) followed the product.
    A config with `final_softcap` (Gemma 2) squashes the logits to cap * tanh(logits / cap)."""
    if model.head is not None:
        logits = project("BTD,DV->BTV", h.astype(jnp.float32), model.head.get_value())
    else:
        table = model.tied_head if model.tied_head is not None else model.embed
        logits = table_logits(h, table.get_value())
    cap = getattr(model.cfg, "final_softcap", None)
    return logits if cap is None else cap * jnp.tanh(logits / cap)


def attention_weights(scores: jax.Array, mask: jax.Array, plus_one: bool) -> jax.Array:
    """Softmax over the last axis, masked; with plus_one the denominator is 1 + sum(exp)."""
    scores = jnp.where(mask, scores, -jnp.inf)
    peak = jnp.max(scores, axis=-1, keepdims=True)
    if plus_one:
        peak = jnp.maximum(peak, 0.0)  # the implicit extra logit is 0
    peak = jax.lax.stop_gradient(jnp.where(jnp.isfinite(peak), peak, 0.0))
    e = jnp.exp(scores - peak)
    denom = jnp.sum(e, axis=-1, keepdims=True)
    if plus_one:
        denom = denom + jnp.exp(-peak)
    return e / jnp.maximum(denom, 1e-30)


def with_new_keys(k_past, v_past, k, v, slot):
    """One layer's keys/values to attend to: (B, S, K, E) past slots with this step's (B, T, K, E)
    written at [slot, slot + T), or this step's alone when there is no cache."""
    if k_past is None:
        return k, v
    return (jax.lax.dynamic_update_slice(k_past, k.astype(k_past.dtype), (0, slot, 0, 0)),
            jax.lax.dynamic_update_slice(v_past, v.astype(v_past.dtype), (0, slot, 0, 0)))


def scan_layers(block, x, xs, cache: KVCache | None, slot, kv_valid):
    """Scan `block(x, xs_l, k_past, v_past) -> (x, k, v)` over the layer axis of `xs`.

    With a cache, each layer reads its (B, S, K, E) past slots as scan input and returns only this
    step's (B, T, K, E) keys and values; one in-place update writes all layers' new slots after the
    scan. Returning the whole updated cache from the scan instead copies L*B*S*K*E values per step,
    and carrying it through the scan copies it once per layer. -> (x, KVCache with kv_valid, or None)."""
    if cache is None:
        x, _ = jax.lax.scan(lambda x, p: (block(x, p, None, None)[0], None), x, xs)
        return x, None

    def step(x, xs_l):
        p, k_past, v_past = xs_l
        x, k, v = block(x, p, k_past, v_past)
        return x, (k.astype(k_past.dtype), v.astype(v_past.dtype))

    x, (k_new, v_new) = jax.lax.scan(step, x, (xs, cache.k, cache.v))                # (L, B, T, K, E)
    k = jax.lax.dynamic_update_slice(cache.k, k_new, (0, 0, slot, 0, 0))
    v = jax.lax.dynamic_update_slice(cache.v, v_new, (0, 0, slot, 0, 0))
    return x, KVCache(k, v, kv_valid)


class Llama(nnx.Module):
    """Decoder-only transformer; call returns (logits (B, T, V) float32, updated cache or None)."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.cfg = cfg
        self.dtype = dtype
        L, D, H, K, E, F, V = (cfg.n_layers, cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim,
                               cfg.hidden_dim, cfg.vocab_size)
        init = nnx.initializers.normal(0.02)

        def param(shape):
            return nnx.Param(init(rngs.params(), shape, dtype))

        self.embed = param((V, D))                          # (V, D)
        self.attn_norm = nnx.Param(jnp.ones((L, D), dtype))
        self.wq = param((L, D, H, E))
        self.wk = param((L, D, K, E))
        self.wv = param((L, D, K, E))
        self.wo = param((L, H, E, D))
        self.ffn_norm = nnx.Param(jnp.ones((L, D), dtype))
        self.w_gate = param((L, D, F))
        self.w_up = param((L, D, F))
        self.w_down = param((L, F, D))
        self.final_norm = nnx.Param(jnp.ones((D,), dtype))
        self.head = None if cfg.tie_embeddings else param((D, V))
        self.tied_head = nnx.data(None)   # set by the loader to a compact copy of `embed` (quant.py), or left None
        bias = (lambda *shape: nnx.Param(jnp.zeros(shape, dtype))) if cfg.qkv_bias else (lambda *shape: None)
        self.bq = bias(L, H, E)             # (L, H, E), added before RoPE; None without cfg.qkv_bias
        self.bk = bias(L, K, E)             # (L, K, E)
        self.bv = bias(L, K, E)             # (L, K, E)

    def _layer(self, x, h, p, positions, k_all, v_all, mask):
        """Rest of one block. x (B,T,D) residual, h its attention-normed copy;
        k_all/v_all (B,S,K,E) with this step's keys already written."""
        cfg = self.cfg
        B, T, _ = x.shape
        G = cfg.n_heads // cfg.n_kv_heads
        q = project("BTD,DHE->BTHE", h, p["wq"])
        if "bq" in p:
            q = q + p["bq"].astype(q.dtype)
        q = rope(q, positions, cfg.rope_base, cfg.rope_scaling)
        q = q.reshape(B, T, cfg.n_kv_heads, G, cfg.head_dim)                     # (B,T,K,G,E)
        scores = jnp.einsum("BTKGE,BSKE->BKGTS", q, k_all).astype(jnp.float32)
        scores = scores / jnp.sqrt(jnp.float32(cfg.head_dim))
        w = attention_weights(scores, mask[:, None, None], cfg.softmax_plus_one).astype(x.dtype)
        out = jnp.einsum("BKGTS,BSKE->BTKGE", w, v_all).reshape(B, T, cfg.n_heads, cfg.head_dim)
        x = x + project("BTHE,HED->BTD", out, p["wo"])
        h = rms_norm(x, p["ffn_norm"], cfg.norm_eps)
        gate = jax.nn.silu(project("BTD,DF->BTF", h, p["w_gate"]))
        x = x + project("BTF,FD->BTD", gate * project("BTD,DF->BTF", h, p["w_up"]), p["w_down"])
        return x

    def __call__(self, tokens: jax.Array, positions: jax.Array, valid: jax.Array,
                 cache: KVCache | None = None, slot: jax.Array | int = 0,
                 return_hidden: bool = False):
        """tokens, positions (B, T) int; valid (B, T) bool (False for padding).

        Without a cache, attention is causal within `tokens`. With a cache of S slots, this step's
        keys are written at slots [slot, slot + T) and queries attend to valid slots up to their own.
        """
        cfg = self.cfg
        B, T = tokens.shape
        x = table_rows(self.embed.get_value(), tokens, self.dtype)                 # (B, T, D)
        # Stored values go into the layer scan as they are (int8 / bf16 included) and are cast one
        # layer at a time inside it, so no float copy of the whole stack is ever made.
        stacked = {n: getattr(self, n).get_value()
                   for n in ("attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w_gate", "w_up", "w_down",
                             "bq", "bk", "bv") if getattr(self, n) is not None}
        if cache is None:
            kv_valid = valid                                                    # (B, S=T)
            q_slot = jnp.arange(T)
        else:
            kv_valid = jax.lax.dynamic_update_slice(cache.valid, valid, (0, slot))
            q_slot = slot + jnp.arange(T)
        S = kv_valid.shape[1]
        offset = q_slot[None, :, None] - jnp.arange(S)[None, None, :]                         # (1,T,S)
        mask = kv_valid[:, None, :] & (offset >= 0)                                          # (B,T,S)
        if cfg.sliding_window is not None:   # slots equal positions up to a per-row offset, as in Gemma3
            mask = mask & (offset < cfg.sliding_window)

        def block(x, p, k_past, v_past):
            h = rms_norm(x, p["attn_norm"], cfg.norm_eps)
            k = project("BTD,DKE->BTKE", h, p["wk"])
            v = project("BTD,DKE->BTKE", h, p["wv"])
            if "bk" in p:
                k, v = k + p["bk"].astype(k.dtype), v + p["bv"].astype(v.dtype)
            k = rope(k, positions, cfg.rope_base, cfg.rope_scaling)
            k_all, v_all = with_new_keys(k_past, v_past, k, v, slot)
            x = self._layer(x, h, p, positions, k_all.astype(x.dtype), v_all.astype(x.dtype), mask)
            return x, k, v

        x, new_cache = scan_layers(block, x, stacked, cache, slot, kv_valid)
        h = rms_norm(x, self.final_norm[...], cfg.norm_eps)
        if return_hidden:
            return h, new_cache
        return output_logits(h, self), new_cache
