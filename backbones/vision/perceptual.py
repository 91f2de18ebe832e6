"""A perceptual distance on the frozen backbone's features (in the manner of LPIPS, without learned weights).

    d = perceptual_distance(model, x, y)        # x, y (B, H, W, 3) floats in [0, 1] -> (B,)

Each image passes through the EfficientNet-Lite trunk at its own size (TF-SAME padding works at
any size); at each chosen stage the feature vector of every position is scaled to unit length,
and the distance is the squared difference summed over channels, averaged over positions, then
averaged over stages. It is 0 for equal images, symmetric, differentiable in both inputs (a
reconstruction loss for SPAE), and grows with blur and noise.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from backbones.vision.model import EfficientNetLite

DEFAULT_STAGES = ("stride2", "stride4", "stride8", "stride16", "stride32")


def to_model_input(x01: jax.Array) -> jax.Array:
    """(B, H, W, 3) in [0, 1] -> the checkpoints' input scale, (255 x - 127) / 128."""
    return (x01 * 255.0 - 127.0) / 128.0


def _unit(f: jax.Array, eps: float = 1e-8) -> jax.Array:  # (B, h, w, C) -> same, unit length along C
    f = f.astype(jnp.float32)
    return f * jax.lax.rsqrt(jnp.sum(f * f, axis=-1, keepdims=True) + eps)


def perceptual_distance(model: EfficientNetLite, x: jax.Array, y: jax.Array,
                        stages: Sequence[str] = DEFAULT_STAGES) -> jax.Array:
    """x, y (B, H, W, 3) in [0, 1] (H, W >= 32 keeps every stage non-empty) -> (B,) float32 distances."""
    if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"perceptual_distance wants two (B, H, W, 3) batches of one shape; got {x.shape}, {y.shape}")
    b = x.shape[0]
    feats = model.features(to_model_input(jnp.concatenate([x, y])))   # one pass over both batches
    per_stage = []
    for name in stages:
        if name not in feats or name == "pooled":
            raise ValueError(f"unknown stage {name!r}; choose from {DEFAULT_STAGES}")
        f = _unit(feats[name])
        per_stage.append(jnp.mean(jnp.sum((f[:b] - f[b:]) ** 2, axis=-1), axis=(1, 2)))   # (B,)
    return jnp.mean(jnp.stack(per_stage), axis=0)
