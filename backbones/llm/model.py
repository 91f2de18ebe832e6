"""A Llama-family decoder in Flax NNX: RMSNorm, RoPE, grouped-query attention, SwiGLU.

Layer weights are stacked on a leading layer axis and the forward pass scans over them, so a
30-layer model compiles as fast as a 1-layer one. Axis letters in einsums and comments:
B batch, T query time, S key time (cache slots), D width, H query heads, K key/value heads,
G = H // K query heads per key/value head, E head dim, F SwiGLU width, V vocabulary, L layers.

RoPE uses the Hugging Face "half split" layout (rotate x[:E/2] with x[E/2:]); the GGUF loader
undoes llama.cpp's interleaved Q/K row order so both checkpoint formats share one model.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from backbones.llm.config import LlamaConfig


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


def rope(x: jax.Array, positions: jax.Array, base: float) -> jax.Array:
    """Rotary embedding, half-split layout. x (B, T, N, E), positions (B, T) int."""
    half = x.shape[-1] // 2
    inv_freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)            # (E/2,)
    angle = positions.astype(jnp.float32)[..., None] * inv_freq                  # (B, T, E/2)
    cos, sin = jnp.cos(angle)[:, :, None, :], jnp.sin(angle)[:, :, None, :]      # (B, T, 1, E/2)
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def output_logits(h: jax.Array, embed, head) -> jax.Array:
    """(B, T, D) final hidden states -> (B, T, V) float32 logits; tied to `embed` when `head` is None."""
    w = embed[...].T if head is None else head[...]                                   # (D, V)
    return jnp.einsum("BTD,DV->BTV", h.astype(jnp.float32), w.astype(jnp.float32))


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

    def _layer(self, x, h, p, positions, k_all, v_all, mask):
        """Rest of one block. x (B,T,D) residual, h its attention-normed copy;
        k_all/v_all (B,S,K,E) with this step's keys already written."""
        cfg = self.cfg
        B, T, _ = x.shape
        G = cfg.n_heads // cfg.n_kv_heads
        q = rope(jnp.einsum("BTD,DHE->BTHE", h, p["wq"]), positions, cfg.rope_base)
        q = q.reshape(B, T, cfg.n_kv_heads, G, cfg.head_dim)                     # (B,T,K,G,E)
        scores = jnp.einsum("BTKGE,BSKE->BKGTS", q, k_all).astype(jnp.float32)
        scores = scores / jnp.sqrt(jnp.float32(cfg.head_dim))
        w = attention_weights(scores, mask[:, None, None], cfg.softmax_plus_one).astype(x.dtype)
        out = jnp.einsum("BKGTS,BSKE->BTKGE", w, v_all).reshape(B, T, cfg.n_heads, cfg.head_dim)
        x = x + jnp.einsum("BTHE,HED->BTD", out, p["wo"])
        h = rms_norm(x, p["ffn_norm"], cfg.norm_eps)
        gate = jax.nn.silu(jnp.einsum("BTD,DF->BTF", h, p["w_gate"]))
        x = x + jnp.einsum("BTF,FD->BTD", gate * jnp.einsum("BTD,DF->BTF", h, p["w_up"]), p["w_down"])
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
        x = jnp.take(self.embed[...], tokens, axis=0).astype(self.dtype)      # (B, T, D)
        stacked = {n: getattr(self, n)[...].astype(self.dtype)
                   for n in ("attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w_gate", "w_up", "w_down")}
        if cache is None:
            kv_valid = valid                                                    # (B, S=T)
            q_slot = jnp.arange(T)
        else:
            kv_valid = jax.lax.dynamic_update_slice(cache.valid, valid, (0, slot))
            q_slot = slot + jnp.arange(T)
        S = kv_valid.shape[1]
        mask = kv_valid[:, None, :] & (jnp.arange(S)[None, None, :] <= q_slot[None, :, None])  # (B,T,S)

        def block(x, xs):
            p, k_cache, v_cache = xs
            h = rms_norm(x, p["attn_norm"], cfg.norm_eps)
            k = rope(jnp.einsum("BTD,DKE->BTKE", h, p["wk"]), positions, cfg.rope_base)
            v = jnp.einsum("BTD,DKE->BTKE", h, p["wv"])
            if k_cache is None:
                k_all, v_all = k, v
            else:
                k_all = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, slot, 0, 0))
                v_all = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, slot, 0, 0))
            x = self._layer(x, h, p, positions, k_all.astype(x.dtype), v_all.astype(x.dtype), mask)
            return x, ((k_all, v_all) if k_cache is not None else None)

        if cache is None:
            x, _ = jax.lax.scan(lambda c, p: block(c, (p, None, None)), x, stacked)
            new_cache = None
        else:
            x, (k_new, v_new) = jax.lax.scan(block, x, (stacked, cache.k, cache.v))
            new_cache = KVCache(k_new, v_new, kv_valid)
        h = rms_norm(x, self.final_norm[...], cfg.norm_eps)
        if return_hidden:
            return h, new_cache
        return output_logits(h, self.embed, self.head), new_cache
