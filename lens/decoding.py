"""Beam search and top-k sampling over any incremental decoder (jit-friendly, fixed length).

Both take `step(token (B,), pos: scalar int, cache) -> (logits (B, V), cache)`, where every
leaf of `cache` has the batch on axis 0, so a beam reorder is a gather on that axis.
Sequences are (B, max_len + 1): position 0 is BOS; after EOS a sequence holds PAD.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

Step = Callable[[jax.Array, jax.Array, Any], tuple[jax.Array, Any]]
NEG = -1e9  # a finite "minus infinity" keeps top_k and arithmetic free of NaNs


def _forbid(logp, ids):
    for i in ids:
        logp = logp.at[..., i].set(NEG)
    return logp


def beam_search(step: Step, cache, batch: int, beam: int, max_len: int, *, bos: int, eos: int, pad: int,
                forbid: tuple[int, ...] = (), length_penalty: float = 0.0):
    """Returns (sequences (B, max_len + 1), scores (B,)) of the best beam per example.

    `cache` must already be tiled to B * beam rows (beam-major inside each example).
    Scores are summed log-probs divided by ((5 + len) / 6) ** length_penalty (GNMT).
    Beam width 1 is exactly greedy decoding.
    """
    seqs = jnp.full((batch, beam, max_len + 1), pad, jnp.int32).at[:, :, 0].set(bos)
    # Only beam 0 is alive at first, so the first step does not pick K copies of one token.
    scores = jnp.tile(jnp.array([0.0] + [NEG] * (beam - 1)), (batch, 1))  # (B, K)
    done = jnp.zeros((batch, beam), bool)
    lengths = jnp.zeros((batch, beam), jnp.int32)

    def body(t, carry):
        seqs, scores, done, lengths, cache = carry
        logits, cache = step(seqs[:, :, t].reshape(-1), t, cache)  # (B*K, V)
        v = logits.shape[-1]
        logp = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(batch, beam, v)
        logp = _forbid(logp, (bos, pad) + tuple(forbid))
        pad_row = jnp.full((v,), NEG).at[pad].set(0.0)  # a finished beam only extends with PAD, free
        logp = jnp.where(done[..., None], pad_row, logp)
        flat = (scores[..., None] + logp).reshape(batch, beam * v)  # (B, K*V)
        top, idx = jax.lax.top_k(flat, beam)  # (B, K)
        src, tok = idx // v, (idx % v).astype(jnp.int32)
        seqs = jnp.take_along_axis(seqs, src[..., None], axis=1).at[:, :, t + 1].set(tok)
        was_done = jnp.take_along_axis(done, src, axis=1)
        lengths = jnp.take_along_axis(lengths, src, axis=1) + (~was_done).astype(jnp.int32)
        done = was_done | (tok == eos)
        rows = (jnp.arange(batch)[:, None] * beam + src).reshape(-1)  # (B*K,) rows to keep
        cache = jax.tree.map(lambda x: x[rows], cache)
        return seqs, top, done, lengths, cache

    seqs, scores, done, lengths, _ = jax.lax.fori_loop(0, max_len, body, (seqs, scores, done, lengths, cache))
    norm = scores / ((5.0 + lengths) / 6.0) ** length_penalty
    best = jnp.argmax(norm, axis=1)  # (B,)
    pick = lambda x: jnp.take_along_axis(x, best[:, None, None] if x.ndim == 3 else best[:, None], axis=1)[:, 0]
    return pick(seqs), pick(norm)


def sample(step: Step, cache, batch: int, max_len: int, key, *, bos: int, eos: int, pad: int,
           top_k: int = 10, temperature: float = 1.0, forbid: tuple[int, ...] = ()):
    """Top-k sampling: returns sequences (B, max_len + 1); rows are independent samples."""
    seqs = jnp.full((batch, max_len + 1), pad, jnp.int32).at[:, 0].set(bos)
    done = jnp.zeros((batch,), bool)

    def body(t, carry):
        seqs, done, cache, key = carry
        key, sub = jax.random.split(key)
        logits, cache = step(seqs[:, t], t, cache)  # (B, V)
        logits = _forbid(logits.astype(jnp.float32) / temperature, (bos, pad) + tuple(forbid))
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # (B, 1) the k-th largest logit
        logits = jnp.where(logits < kth, NEG, logits)
        tok = jax.random.categorical(sub, logits).astype(jnp.int32)
        tok = jnp.where(done, pad, tok)
        return seqs.at[:, t + 1].set(tok), done | (tok == eos), cache, key

    seqs, *_ = jax.lax.fori_loop(0, max_len, body, (seqs, done, cache, key))
    return seqs
