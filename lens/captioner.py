"""The LENS captioner: an image encoder and a Transformer decoder with cross-attention.

Two encoders: `encoder="cnn"`, a small CNN trained from pixels (the synthetic-scenes captioner),
and `encoder="features"`, a trained map from a frozen ImageNet backbone's pooled features
(`backbones.load_vision(backbone)`, computed outside the model, cached when training) to
`feature_tokens` memory tokens: what lets a small decoder caption real pictures.

The decoder writes captions as tokens of the frozen LLM's tokenizer, through a compact
output vocabulary (`lens.caption_vocab.CaptionVocab` maps compact ids <-> LLM ids), so a
small decoder does not spend its capacity on a 49,152-way softmax of mostly unused tokens.

Decoding is incremental: `init_cache` / `decode_step` keep the self-attention keys and
values of earlier positions (a KV cache), and the cross-attention keys and values of the
image tokens are computed once per image by `cross_kv`.

Shapes: B batch, S image side, N image tokens, T text positions, D width, H heads,
K head width, V compact vocabulary.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class CaptionerConfig:
    vocab_size: int  # compact output vocabulary, specials included
    image_size: int = 64  # square input side S; images are resized to it
    channels: tuple[int, ...] = (32, 64, 128)  # CNN widths; each stage halves the side
    width: int = 192  # D, the Transformer width
    heads: int = 4  # H; D must divide by it
    encoder_layers: int = 1  # self-attention layers over the image tokens
    decoder_layers: int = 3
    mlp_ratio: int = 4
    max_len: int = 24  # T, positions of the decoder including BOS
    encoder: str = "cnn"  # "cnn": pixels (B, S, S, 3); "features": frozen backbone features (B, F)
    backbone: str = ""  # features: the `backbones.load_vision` name whose pooled features come in
    feature_dim: int = 0  # features: F
    feature_tokens: int = 8  # features: N memory tokens made from one feature vector

    def __post_init__(self):
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads}")
        if self.encoder == "cnn":
            if self.image_size % (2 ** len(self.channels)):
                raise ValueError(f"image_size {self.image_size} must be divisible by 2**{len(self.channels)}")
        elif self.encoder == "features":
            if not self.backbone or self.feature_dim <= 0 or self.feature_tokens <= 0:
                raise ValueError("encoder='features' needs backbone (a load_vision name), feature_dim > 0 and "
                                 f"feature_tokens > 0; got {self.backbone!r}, {self.feature_dim}, {self.feature_tokens}")
        else:
            raise ValueError(f"encoder must be 'cnn' or 'features', got {self.encoder!r}")

    @property
    def num_image_tokens(self) -> int:
        if self.encoder == "features":
            return self.feature_tokens
        return (self.image_size // 2 ** len(self.channels)) ** 2

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CaptionerConfig":
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        return cls(**d)


class Attention(nnx.Module):
    """Multi-head attention with separate query and key/value sources."""

    def __init__(self, width: int, heads: int, *, rngs: nnx.Rngs):
        self.heads = heads
        self.head_dim = width // heads
        init = nnx.initializers.normal(1.0 / math.sqrt(width))
        self.q = nnx.Linear(width, width, kernel_init=init, rngs=rngs)
        self.k = nnx.Linear(width, width, kernel_init=init, rngs=rngs)
        self.v = nnx.Linear(width, width, kernel_init=init, rngs=rngs)
        self.o = nnx.Linear(width, width, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def _split(self, x):  # (B, T, D) -> (B, T, H, K)
        return x.reshape(*x.shape[:-1], self.heads, self.head_dim)

    def kv(self, src):  # (B, N, D) -> two (B, N, H, K)
        return self._split(self.k(src)), self._split(self.v(src))

    def attend(self, x, k, v, mask=None):
        """x (B, T, D) queries; k, v (B, N, H, K); mask broadcastable to (B, H, T, N), True = keep."""
        q = self._split(self.q(x)) / math.sqrt(self.head_dim)  # (B, T, H, K)
        logits = jnp.einsum("BTHK,BNHK->BHTN", q, k)
        if mask is not None:
            logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("BHTN,BNHK->BTHK", weights, v)  # (B, T, H, K)
        return self.o(out.reshape(*x.shape[:-1], -1))  # (B, T, D)

    def __call__(self, x, src=None, mask=None):
        k, v = self.kv(x if src is None else src)
        return self.attend(x, k, v, mask)


class Mlp(nnx.Module):
    def __init__(self, width: int, ratio: int, *, rngs: nnx.Rngs):
        self.up = nnx.Linear(width, width * ratio, rngs=rngs)
        self.down = nnx.Linear(width * ratio, width, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def __call__(self, x):
        return self.down(jax.nn.gelu(self.up(x)))


class EncoderBlock(nnx.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int, *, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(width, rngs=rngs)
        self.attn = Attention(width, heads, rngs=rngs)
        self.norm2 = nnx.LayerNorm(width, rngs=rngs)
        self.mlp = Mlp(width, mlp_ratio, rngs=rngs)

    def __call__(self, x):  # (B, N, D)
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ImageEncoder(nnx.Module):
    """uint8 or float images (B, S, S, 3) -> image tokens (B, N, D), N = (S / 2**stages)**2."""

    def __init__(self, cfg: CaptionerConfig, *, rngs: nnx.Rngs):
        self.image_size = cfg.image_size
        chans = (3,) + tuple(cfg.channels)
        self.convs = nnx.List([nnx.Conv(a, b, (3, 3), strides=2, rngs=rngs) for a, b in zip(chans[:-1], chans[1:])])
        self.mixes = nnx.List([nnx.Conv(b, b, (3, 3), rngs=rngs) for b in chans[1:]])
        self.norms = nnx.List([nnx.GroupNorm(b, num_groups=min(8, b), rngs=rngs) for b in chans[1:]])
        self.proj = nnx.Linear(chans[-1], cfg.width, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (cfg.num_image_tokens, cfg.width)))
        self.blocks = nnx.List([EncoderBlock(cfg.width, cfg.heads, cfg.mlp_ratio, rngs=rngs) for _ in range(cfg.encoder_layers)])
        self.norm = nnx.LayerNorm(cfg.width, rngs=rngs)

    def __call__(self, images):
        if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(
                f"expected images (B, {self.image_size}, {self.image_size}, 3), got {images.shape}; "
                "resize with lens.images.prepare_images first")
        x = images.astype(jnp.float32) / 127.5 - 1.0  # (B, S, S, 3) in [-1, 1]
        for conv, mix, norm in zip(self.convs, self.mixes, self.norms):
            x = jax.nn.gelu(conv(x))  # (B, S', S', C) with S' halved
            x = x + mix(jax.nn.gelu(norm(x)))
        b, h, w, c = x.shape
        x = self.proj(x.reshape(b, h * w, c)) + self.pos[...]  # (B, N, D)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class FeatureEncoder(nnx.Module):
    """Frozen-backbone features (B, F) -> memory tokens (B, N, D): one Linear to N x D, positions,
    encoder blocks. The backbone itself stays outside (frozen, its features cached in training)."""

    def __init__(self, cfg: CaptionerConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.in_norm = nnx.LayerNorm(cfg.feature_dim, rngs=rngs)
        self.proj = nnx.Linear(cfg.feature_dim, cfg.feature_tokens * cfg.width, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (cfg.feature_tokens, cfg.width)))
        self.blocks = nnx.List([EncoderBlock(cfg.width, cfg.heads, cfg.mlp_ratio, rngs=rngs) for _ in range(cfg.encoder_layers)])
        self.norm = nnx.LayerNorm(cfg.width, rngs=rngs)

    def __call__(self, features):
        if features.ndim != 2 or features.shape[-1] != self.cfg.feature_dim:
            raise ValueError(f"expected {self.cfg.backbone} features (B, {self.cfg.feature_dim}), got {features.shape}; "
                             "Captioner.caption computes them from images")
        b = features.shape[0]
        x = self.proj(self.in_norm(features.astype(jnp.float32)))  # (B, N * D)
        x = x.reshape(b, self.cfg.feature_tokens, self.cfg.width) + self.pos[...]  # (B, N, D)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class DecoderBlock(nnx.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int, *, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(width, rngs=rngs)
        self.self_attn = Attention(width, heads, rngs=rngs)
        self.norm2 = nnx.LayerNorm(width, rngs=rngs)
        self.cross_attn = Attention(width, heads, rngs=rngs)
        self.norm3 = nnx.LayerNorm(width, rngs=rngs)
        self.mlp = Mlp(width, mlp_ratio, rngs=rngs)

    def __call__(self, x, self_k, self_v, self_mask, cross_k, cross_v):
        """x (B, T, D); self_k/v (B, T', H, K) incl. x's own positions; cross_k/v (B, N, H, K)."""
        x = x + self.self_attn.attend(self.norm1(x), self_k, self_v, self_mask)
        x = x + self.cross_attn.attend(self.norm2(x), cross_k, cross_v)
        return x + self.mlp(self.norm3(x))


class CaptionerModel(nnx.Module):
    """Image encoder + causal Transformer decoder with cross-attention over the image tokens."""

    def __init__(self, cfg: CaptionerConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.encoder = FeatureEncoder(cfg, rngs=rngs) if cfg.encoder == "features" else ImageEncoder(cfg, rngs=rngs)
        self.embed = nnx.Embed(cfg.vocab_size, cfg.width, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (cfg.max_len, cfg.width)))
        self.blocks = nnx.List([DecoderBlock(cfg.width, cfg.heads, cfg.mlp_ratio, rngs=rngs) for _ in range(cfg.decoder_layers)])
        self.norm = nnx.LayerNorm(cfg.width, rngs=rngs)
        self.head = nnx.Linear(cfg.width, cfg.vocab_size, rngs=rngs)

    # -- teacher forcing -------------------------------------------------------------------
    def __call__(self, inputs, tokens):
        """inputs: images (B, S, S, 3) or backbone features (B, F) (cfg.encoder); tokens (B, T) starting
        with BOS -> logits (B, T, V) for the next token."""
        return self.decode_logits(self.encoder(inputs), tokens)

    def decode_logits(self, memory, tokens):
        t = tokens.shape[1]
        if t > self.cfg.max_len:
            raise ValueError(f"{t} positions exceed max_len {self.cfg.max_len}")
        x = self.embed(tokens) + self.pos[:t]  # (B, T, D)
        causal = jnp.tril(jnp.ones((t, t), bool))  # (T, T)
        for block in self.blocks:
            k, v = block.self_attn.kv(block.norm1(x))
            ck, cv = block.cross_attn.kv(memory)
            x = block(x, k, v, causal, ck, cv)
        return self.head(self.norm(x))

    # -- incremental decoding --------------------------------------------------------------
    def cross_kv(self, memory):
        """Image tokens (B, N, D) -> per layer (k, v), each (B, N, H, K); computed once per image."""
        return [block.cross_attn.kv(memory) for block in self.blocks]

    def init_cache(self, batch: int):
        """Empty self-attention cache: per layer (k, v), each (B, max_len, H, K)."""
        shape = (batch, self.cfg.max_len, self.cfg.heads, self.cfg.width // self.cfg.heads)
        return [(jnp.zeros(shape), jnp.zeros(shape)) for _ in self.blocks]

    def decode_step(self, token, pos, cache, cross):
        """token (B,) at position pos (scalar) -> logits (B, V) and the cache with pos filled."""
        x = self.embed(token[:, None]) + jax.lax.dynamic_slice_in_dim(self.pos[...], pos, 1)[None]  # (B, 1, D)
        visible = (jnp.arange(self.cfg.max_len) <= pos)[None, None, None, :]  # (1, 1, 1, T)
        new_cache = []
        for block, (k_all, v_all), (ck, cv) in zip(self.blocks, cache, cross):
            k, v = block.self_attn.kv(block.norm1(x))  # (B, 1, H, K)
            k_all = jax.lax.dynamic_update_slice_in_dim(k_all, k, pos, axis=1)
            v_all = jax.lax.dynamic_update_slice_in_dim(v_all, v, pos, axis=1)
            x = block(x, k_all, v_all, visible, ck, cv)
            new_cache.append((k_all, v_all))
        return self.head(self.norm(x))[:, 0], new_cache


def init_model(cfg: CaptionerConfig, seed: int = 0) -> CaptionerModel:
    """A freshly initialised model, built in one jitted call with the "rbg" PRNG (eager init, or
    threefry, compiles far longer on CPU than the model's own training step)."""
    return _jitted_init(cfg)(jax.random.key(seed, impl="rbg"))


@functools.lru_cache(maxsize=8)
def _jitted_init(cfg: CaptionerConfig):
    return nnx.jit(lambda key: CaptionerModel(cfg, rngs=nnx.Rngs(key)))


def count_params(model: nnx.Module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def caption_loss(model: CaptionerModel, inputs, rows, label_smoothing: float = 0.0):
    """Teacher-forcing cross-entropy. rows (B, T + 1) = `BOS t1 .. EOS PAD ..` -> (loss, aux).

    PAD targets (id 0) are masked out; the loss is the mean over real target tokens.
    """
    prefix, targets = rows[:, :-1], rows[:, 1:]  # (B, T) each
    logits = model(inputs, prefix).astype(jnp.float32)  # (B, T, V)
    v = logits.shape[-1]
    onehot = jax.nn.one_hot(targets, v)
    if label_smoothing:
        onehot = onehot * (1.0 - label_smoothing) + label_smoothing / v
    nll = -jnp.sum(onehot * jax.nn.log_softmax(logits), axis=-1)  # (B, T)
    mask = (targets != 0).astype(jnp.float32)
    ntok = jnp.maximum(mask.sum(), 1.0)
    loss = jnp.sum(nll * mask) / ntok
    acc = jnp.sum((jnp.argmax(logits, -1) == targets) * mask) / ntok
    return loss, {"loss": loss, "token_acc": acc}
