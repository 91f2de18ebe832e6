"""Contrastive losses over an image-text logit matrix, with several positives per row allowed.

``positives[i, j]`` is True when text j correctly describes image i (the diagonal, plus any other
pair with the same caption or the same class), so duplicates in a batch are not pushed apart.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def clip_loss(logits, positives):  # logits (B, B) image x text; positives (B, B) bool
    """Symmetric cross-entropy (CLIP), the target spread evenly over each row's / column's positives."""
    pos = positives.astype(logits.dtype)
    t_img = pos / pos.sum(1, keepdims=True)
    t_txt = pos.T / pos.T.sum(1, keepdims=True)
    l_img = -jnp.sum(t_img * jax.nn.log_softmax(logits, axis=1), axis=1).mean()
    l_txt = -jnp.sum(t_txt * jax.nn.log_softmax(logits.T, axis=1), axis=1).mean()
    return 0.5 * (l_img + l_txt)


def siglip_loss(logits, positives):  # logits already include the learned bias
    """Pairwise sigmoid loss (SigLIP): -log sigmoid(z * logit), z = +1 for positives, -1 otherwise."""
    z = jnp.where(positives, 1.0, -1.0).astype(logits.dtype)
    return -jnp.sum(jax.nn.log_sigmoid(z * logits)) / logits.shape[0]


LOSSES = {"clip": clip_loss, "siglip": siglip_loss}
