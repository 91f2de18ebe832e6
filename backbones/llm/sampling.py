"""Next-token choice from logits: greedy, temperature, top-k and top-p (nucleus) sampling."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def choose_next(logits: jax.Array, key: jax.Array, temperature: float, top_k: int | None,
                top_p: float | None) -> jax.Array:
    """logits (B, V) float32 -> token ids (B,). temperature 0 means greedy (argmax)."""
    if temperature <= 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]                      # (B, 1)
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p is not None and 0.0 < top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)                                # (B, V) best first
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        # Keep a token when the mass before it is < top_p (so the best token is always kept).
        keep_sorted = (cum - jax.nn.softmax(sorted_logits, axis=-1)) < top_p
        keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
        logits = jnp.where(keep, logits, -jnp.inf)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
