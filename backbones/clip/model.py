"""CLIP in Flax NNX: a ViT image tower, a causal Transformer text tower, projections, logit scale.

Parameter layout mirrors the Hugging Face ``CLIPModel`` (separate q/k/v projections,
pre-LayerNorm blocks), so the loaders in :mod:`backbones.clip.loaders` only rename,
transpose and split. Both towers return L2-normalised embeddings of width ``embed_dim``.

Axes: B batch, T tokens, N heads, H head width, D model width, E embedding width.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from backbones.clip.config import CLIPConfig, TextConfig, VisionConfig


def activation(name: str):
    if name == "quick_gelu":
        return lambda x: x * jax.nn.sigmoid(1.702 * x)
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    raise ValueError(f"unknown activation {name!r} (expected 'quick_gelu' or 'gelu')")


class Attention(nnx.Module):
    def __init__(self, width: int, heads: int, *, rngs: nnx.Rngs):
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        self.heads = heads
        self.q_proj = nnx.Linear(width, width, rngs=rngs)
        self.k_proj = nnx.Linear(width, width, rngs=rngs)
        self.v_proj = nnx.Linear(width, width, rngs=rngs)
        self.out_proj = nnx.Linear(width, width, rngs=rngs)

    def __call__(self, x, causal: bool):  # x: (B, T, D)
        B, T, D = x.shape
        split = lambda y: y.reshape(B, T, self.heads, D // self.heads)  # (B, T, N, H)
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        logits = jnp.einsum("BTNH,BSNH->BNTS", q, k) / jnp.sqrt(D // self.heads).astype(x.dtype)
        if causal:
            mask = jnp.tril(jnp.ones((T, T), bool))
            logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(x.dtype)
        out = jnp.einsum("BNTS,BSNH->BTNH", weights, v).reshape(B, T, D)
        return self.out_proj(out)


class MLP(nnx.Module):
    def __init__(self, width: int, hidden: int, act: str, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(width, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, width, rngs=rngs)
        self.act = activation(act)

    def __call__(self, x):  # (B, T, D)
        return self.fc2(self.act(self.fc1(x)))


class Block(nnx.Module):
    """Pre-LayerNorm residual block: x + attn(ln1(x)); x + mlp(ln2(x))."""

    def __init__(self, width, heads, mlp_dim, act, eps, *, rngs: nnx.Rngs):
        self.layer_norm1 = nnx.LayerNorm(width, epsilon=eps, rngs=rngs)
        self.self_attn = Attention(width, heads, rngs=rngs)
        self.layer_norm2 = nnx.LayerNorm(width, epsilon=eps, rngs=rngs)
        self.mlp = MLP(width, mlp_dim, act, rngs=rngs)

    def __call__(self, x, causal: bool):
        x = x + self.self_attn(self.layer_norm1(x), causal)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nnx.Module):
    def __init__(self, width, layers, heads, mlp_dim, act, eps, *, rngs: nnx.Rngs):
        self.layers = nnx.List([Block(width, heads, mlp_dim, act, eps, rngs=rngs) for _ in range(layers)])

    def __call__(self, x, causal: bool):
        for block in self.layers:
            x = block(x, causal)
        return x


def _normal(rngs, shape, std):
    return std * jax.random.normal(rngs.params(), shape, jnp.float32)


class VisionTower(nnx.Module):
    """Patchify (conv, no bias) -> [class token; patches] + positions -> LN -> blocks -> LN(class token) -> proj."""

    def __init__(self, cfg: VisionConfig, embed_dim: int, *, rngs: nnx.Rngs):
        if cfg.image_size % cfg.patch_size:
            raise ValueError(f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
        D, P = cfg.width, cfg.patch_size
        self.patch_embedding = nnx.Conv(3, D, (P, P), strides=(P, P), padding="VALID", use_bias=False, rngs=rngs)
        self.class_embedding = nnx.Param(_normal(rngs, (D,), D ** -0.5))
        self.position_embedding = nnx.Param(_normal(rngs, (cfg.grid ** 2 + 1, D), 0.02))
        self.pre_layernorm = nnx.LayerNorm(D, epsilon=cfg.ln_eps, rngs=rngs)
        self.encoder = Encoder(D, cfg.layers, cfg.heads, cfg.mlp_dim, cfg.act, cfg.ln_eps, rngs=rngs)
        self.post_layernorm = nnx.LayerNorm(D, epsilon=cfg.ln_eps, rngs=rngs)
        self.projection = nnx.Linear(D, embed_dim, use_bias=False, rngs=rngs)
        self.image_size = cfg.image_size

    def __call__(self, pixels):  # pixels: (B, S, S, 3) normalised float
        if pixels.ndim != 4 or pixels.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"expected pixels (B, {self.image_size}, {self.image_size}, 3), got {pixels.shape}")
        x = self.patch_embedding(pixels)                                   # (B, g, g, D)
        B = x.shape[0]
        x = x.reshape(B, -1, x.shape[-1])                                  # (B, g*g, D)
        cls = jnp.broadcast_to(self.class_embedding[...], (B, 1, x.shape[-1]))
        x = jnp.concatenate([cls.astype(x.dtype), x], axis=1) + self.position_embedding[...]  # (B, T, D)
        x = self.encoder(self.pre_layernorm(x), causal=False)
        return self.projection(self.post_layernorm(x[:, 0]))               # (B, E)


class FeatureHead(nnx.Module):
    """The LiT image side: pooled features of a frozen backbone (B, F) -> (B, E) through a trained Linear.

    The backbone's ImageNet classifier rows live in the same feature space (logit_c = w_c . f + b_c),
    so `directions` maps them, without the bias, to embeddings of their class names' meaning."""

    def __init__(self, cfg: VisionConfig, embed_dim: int, *, rngs: nnx.Rngs):
        F = cfg.feature_dim
        # Feature standardisation, set from the training features and never optimised (the trainer
        # leaves FEATURE_STATS out of the optimizer); saved with the weights.
        self.feature_mean = nnx.Param(jnp.zeros((F,), jnp.float32))
        self.feature_scale = nnx.Param(jnp.ones((F,), jnp.float32))
        self.projection = nnx.Linear(F, embed_dim, rngs=rngs)
        self.feature_dim = F

    def __call__(self, feats):  # (B, F) pooled backbone features
        if feats.ndim != 2 or feats.shape[1] != self.feature_dim:
            raise ValueError(f"expected backbone features (B, {self.feature_dim}), got {feats.shape}")
        return self.projection((feats - self.feature_mean[...]) / self.feature_scale[...])   # (B, E)

    def directions(self, rows):  # (K, F) feature-space directions (classifier rows) -> (K, E)
        # w . f = (w * scale) . standardised f + const: the same direction in the head's input space
        return (rows * self.feature_scale[...]) @ self.projection.kernel[...]


FEATURE_STATS = ("feature_mean", "feature_scale")   # FeatureHead params that are data statistics, not trained


class FrozenTable(nnx.Variable):
    """A lookup table that is not a Param: outside the optimizer, gradients and saved checkpoints."""


class TextTower(nnx.Module):
    """Token + position embedding -> causal blocks -> final LN -> feature at the end token -> proj."""

    def __init__(self, cfg: TextConfig, embed_dim: int, *, rngs: nnx.Rngs):
        D = cfg.width
        if cfg.frozen_token_dim:
            self.token_table = FrozenTable(jnp.zeros((cfg.vocab_size, cfg.frozen_token_dim), jnp.float32))
            self.token_proj = nnx.Linear(cfg.frozen_token_dim, D, rngs=rngs)
        else:
            self.token_embedding = nnx.Embed(cfg.vocab_size, D, embedding_init=nnx.initializers.normal(0.02),
                                             rngs=rngs)
        self.frozen = bool(cfg.frozen_token_dim)
        self.position_embedding = nnx.Param(_normal(rngs, (cfg.context_length, D), 0.01))
        self.encoder = Encoder(D, cfg.layers, cfg.heads, cfg.mlp_dim, cfg.act, cfg.ln_eps, rngs=rngs)
        self.final_layer_norm = nnx.LayerNorm(D, epsilon=cfg.ln_eps, rngs=rngs)
        self.projection = nnx.Linear(D, embed_dim, use_bias=False, rngs=rngs)
        self.pool, self.eos_id, self.context_length = cfg.pool, cfg.eos_id, cfg.context_length

    def end_positions(self, ids):  # ids: (B, T) -> (B,)
        if self.pool == "argmax":
            return jnp.argmax(ids, axis=-1)
        return jnp.argmax(ids == self.eos_id, axis=-1)  # first end token

    def __call__(self, ids):  # ids: (B, T) int, T <= context_length
        if ids.ndim != 2 or ids.shape[1] > self.context_length:
            raise ValueError(f"expected token ids (B, T<={self.context_length}), got {ids.shape}")
        T = ids.shape[1]
        if self.frozen:
            tok = self.token_proj(jnp.take(jax.lax.stop_gradient(self.token_table[...]), ids, axis=0))
        else:
            tok = self.token_embedding(ids)                                 # (B, T, D)
        x = tok + self.position_embedding[:T]                               # (B, T, D)
        x = self.final_layer_norm(self.encoder(x, causal=True))
        pooled = jnp.take_along_axis(x, self.end_positions(ids)[:, None, None], axis=1)[:, 0]  # (B, D)
        return self.projection(pooled)                                      # (B, E)


def l2_normalize(x, eps: float = 1e-12):
    return x / jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))


class CLIP(nnx.Module):
    def __init__(self, cfg: CLIPConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.vision = (FeatureHead(cfg.vision, cfg.embed_dim, rngs=rngs) if cfg.vision.backbone
                       else VisionTower(cfg.vision, cfg.embed_dim, rngs=rngs))
        self.text = TextTower(cfg.text, cfg.embed_dim, rngs=rngs)
        self.logit_scale = nnx.Param(jnp.asarray(cfg.logit_scale_init, jnp.float32))
        if cfg.logit_bias_init is not None:
            self.logit_bias = nnx.Param(jnp.asarray(cfg.logit_bias_init, jnp.float32))
        else:
            self.logit_bias = None

    def encode_image(self, pixels, normalize: bool = True):  # (B, S, S, 3), or LiT features (B, F) -> (B, E)
        z = self.vision(pixels)
        return l2_normalize(z) if normalize else z

    def encode_directions(self, rows, normalize: bool = True):  # LiT only: (K, F) classifier rows -> (K, E)
        z = self.vision.directions(rows)
        return l2_normalize(z) if normalize else z

    def encode_text(self, ids, normalize: bool = True):  # (B, T) -> (B, E)
        z = self.text(ids)
        return l2_normalize(z) if normalize else z

    def __call__(self, pixels, ids):
        """Image-text logits (B_img, B_txt) = exp(logit_scale) * cos (+ bias for SigLIP)."""
        img, txt = self.encode_image(pixels), self.encode_text(ids)
        logits = jnp.exp(self.logit_scale[...]) * img @ txt.T
        if self.logit_bias is not None:
            logits = logits + self.logit_bias[...]
        return logits, dict(image=img, text=txt)


def init_clip(cfg: CLIPConfig, seed: int = 0) -> CLIP:
    """A CLIP with random weights."""
    return CLIP(cfg, rngs=nnx.Rngs(seed))


def abstract_clip(cfg: CLIPConfig) -> CLIP:
    """The model with ShapeDtypeStruct leaves (no memory): for shape checks of full-size configs."""
    return nnx.eval_shape(lambda: CLIP(cfg, rngs=nnx.Rngs(0)))
