"""SPAE model: VQGAN-style CNN encoder/decoder around the frozen-codebook SAQ pyramid.

    model = SPAE(vocab.embeddings, ModelConfig(...), rngs=nnx.Rngs(0))
    z = model.encode(x)                      # x (B, H, W, C) in [-1, 1] -> (B, H/f, W/f, d)
    ids, zhat, aux = model.quantize(z)       # SAQ over the frozen codebook
    ids, zhat, aux = model.quantize(z, feats)  # with a semantic path: the top layers from backbone features
    y = model.decode(zhat[k - 1])            # image from the first k layers, (B, H, W, C)
    ids, zhat, aux = model.quantize(z, mesh=mesh)  # codebook rows split over the mesh's "model" axis
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spae.codebook import FrozenCodebook, normalize_codebook
from spae.quantizer import DEFAULT_CHUNK, embed_pyramid, layer_shapes, saq_quantize_aux
from spae.semantic_path import SEMANTIC_HEADS, SemanticHead, word_head_for

__all__ = ["ModelConfig", "ResBlock", "CodeProjection", "Encoder", "Decoder", "SPAE"]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    image_size: int = 32                 # H = W of the model's input
    channels: int = 1                    # 1 (grey) or 3 (RGB)
    ch: int = 32                         # base width
    ch_mult: tuple = (1, 2, 2)           # one entry per resolution; f = patch * 2 ** (len - 1)
    patch: int = 1                       # p x p pixels folded into channels before the first conv (p = 1: none)
    num_res_blocks: int = 1
    strides: tuple = (8, 4, 2, 1)        # pyramid layer strides on the latent grid
    chunk_size: int = DEFAULT_CHUNK      # vocabulary chunk of the nearest-neighbour search
    dtype: str = "float32"               # compute dtype of the convolutions (bfloat16 on accelerators)
    codebook_norm: str = "none"          # none | sphere | center_sphere: geometry of the search (codebook.py)
    code_dim: int = 0                    # 0: SAQ in the LLM embedding space; > 0: in a learned projection
    straight_through: str = "identity"   # identity | rotation: how the pyramid's gradient reaches z
    decoder_growth: int = 0              # residual blocks added to the decoder at each resolution (Decoder)
    semantic_backbone: str = "none"      # none | a load_vision name (efficientnet-lite0) | clip:NAME (semantic_path)
    semantic_layers: int = 0             # top layers whose tokens the semantic path predicts (0 with "none")
    semantic_head: str = "words"         # words: class logits -> teacher-word scores (WordHead) | mlp: pooled features
    semantic_features: int = 0           # input width: 1000 class logits (words), 1280 pooled features (mlp)
    semantic_hidden: int = 1024          # hidden width of the mlp head

    @property
    def has_semantic_path(self) -> bool:
        return self.semantic_backbone != "none"

    @property
    def factor(self) -> int:
        return self.patch * 2 ** (len(self.ch_mult) - 1)

    @property
    def grid(self) -> int:
        return self.image_size // self.factor

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        for k in ("ch_mult", "strides"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


def space_to_depth(x, p: int):  # (B, H, W, C) -> (B, H/p, W/p, p*p*C), each p x p block's pixels as channels
    if p == 1:
        return x
    b, h, w, c = x.shape
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // p, w // p, p * p * c)


def depth_to_space(x, p: int):  # (B, h, w, p*p*C) -> (B, h*p, w*p, C): space_to_depth's inverse
    if p == 1:
        return x
    b, h, w, pc = x.shape
    c = pc // (p * p)
    x = x.reshape(b, h, w, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * p, w * p, c)


def _groups(n: int) -> int:
    """GroupNorm groups with >= 8 channels each: a spatially constant input (the top pyramid
    layer is one token repeated) must not be normalised by a near-zero variance."""
    for g in (32, 16, 8, 4, 2, 1):
        if n % g == 0 and n // g >= 8:
            return g
    return 1


class ResBlock(nnx.Module):
    """Pre-activation residual block; `identity=True` zeroes its last conv, so it starts as x -> x."""

    def __init__(self, cin: int, cout: int, *, dtype, rngs: nnx.Rngs, identity: bool = False):
        if identity and cin != cout:
            raise ValueError(f"an identity-initialised ResBlock keeps its width; got {cin} -> {cout}")
        self.norm1 = nnx.GroupNorm(cin, num_groups=_groups(cin), rngs=rngs)
        self.conv1 = nnx.Conv(cin, cout, (3, 3), padding="SAME", dtype=dtype, rngs=rngs)
        self.norm2 = nnx.GroupNorm(cout, num_groups=_groups(cout), rngs=rngs)
        zeros = nnx.initializers.zeros_init()
        self.conv2 = nnx.Conv(cout, cout, (3, 3), padding="SAME", dtype=dtype, rngs=rngs,
                              **(dict(kernel_init=zeros) if identity else {}))
        self.skip = nnx.Conv(cin, cout, (1, 1), dtype=dtype, rngs=rngs) if cin != cout else None

    def __call__(self, x):  # (B, H, W, cin) -> (B, H, W, cout)
        h = self.conv1(nnx.swish(self.norm1(x)))
        h = self.conv2(nnx.swish(self.norm2(h)))
        return (x if self.skip is None else self.skip(x)) + h


class CodeProjection(nnx.Module):
    """A learned linear map of the frozen codebook (V, d) -> (V, k): the table SAQ searches in.

    The LLM's embedding rows stay frozen and every row is still one LLM token; only the space
    the search runs in is learned (the trainable projector of VQGAN-LC and V2L over a frozen
    table), so all codes move together and usage does not collapse onto a few rows, as it did
    on scenes with the raw table. Initialised to the top-k principal directions of the centred
    table, scaled so the projected rows keep the centred table's mean squared norm.
    """

    def __init__(self, codebook: jax.Array, k: int, *, rngs: nnx.Rngs):
        v, d = codebook.shape
        if not 0 < k <= d:
            raise ValueError(f"code_dim must be in 1..{d} (the embedding width); got {k}")
        mean = codebook.mean(axis=0)
        centred = codebook - mean
        cov = centred.T @ centred / v                              # (d, d)
        evals, evecs = jnp.linalg.eigh(cov)                        # ascending
        top = evecs[:, ::-1][:, :k]                                # (d, k)
        scale = jnp.sqrt(jnp.sum(evals) / jnp.maximum(jnp.sum(evals[::-1][:k]), 1e-12))
        self.linear = nnx.Linear(d, k, rngs=rngs)
        self.linear.kernel.value = (top * scale).astype(jnp.float32)
        self.linear.bias.value = (-(mean @ top) * scale).astype(jnp.float32)

    def __call__(self, codebook):  # (V, d) -> (V, k)
        return self.linear(codebook)


class Encoder(nnx.Module):
    """(B, H, W, C) -> (B, H/f, W/f, d); with `codebook` given, also owns the learned map of
    the codebook into the latent space (so the generator EMA and export carry it)."""

    def __init__(self, cfg: ModelConfig, d: int, *, rngs: nnx.Rngs, codebook=None):
        dtype = jnp.dtype(cfg.dtype)
        widths = [cfg.ch * m for m in cfg.ch_mult]
        self.patch = cfg.patch
        self.conv_in = nnx.Conv(cfg.channels * cfg.patch ** 2, widths[0], (3, 3), padding="SAME", dtype=dtype,
                                rngs=rngs)
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(cin, w, dtype=dtype, rngs=rngs))
                cin = w
            if i < len(widths) - 1:
                blocks.append(nnx.Conv(w, w, (3, 3), strides=(2, 2), padding="SAME", dtype=dtype, rngs=rngs))
        blocks.append(ResBlock(cin, cin, dtype=dtype, rngs=rngs))
        self.blocks = nnx.List(blocks)
        self.norm_out = nnx.GroupNorm(cin, num_groups=_groups(cin), rngs=rngs)
        self.proj = nnx.Conv(cin, d, (1, 1), rngs=rngs)   # to the latent width, in float32
        self.code_proj = nnx.data(None if codebook is None else CodeProjection(codebook, d, rngs=rngs))

    def __call__(self, x):
        h = self.conv_in(space_to_depth(x, self.patch))
        for block in self.blocks:
            h = block(h)
        return self.proj(nnx.swish(self.norm_out(h)).astype(jnp.float32))


class Decoder(nnx.Module):
    """(B, h, w, d) -> (B, h*f, w*f, C).

    `cfg.decoder_growth` = n adds n residual blocks at the end of each resolution (`grown[i]`,
    before the upsampling to the next one), each starting as the identity: a decoder grown from a
    trained one first draws exactly what that one drew, and its parameter names are a superset of
    the smaller decoder's (growing 1 -> 2 keeps `grown/i/0` too), so train.init_from can load it.
    """

    def __init__(self, cfg: ModelConfig, d: int, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(cfg.dtype)
        widths = [cfg.ch * m for m in cfg.ch_mult][::-1]
        self.dtype = dtype
        self.conv_in = nnx.Conv(d, widths[0], (1, 1), dtype=dtype, rngs=rngs)
        blocks, cin = [ResBlock(widths[0], widths[0], dtype=dtype, rngs=rngs)], widths[0]
        up_after = []
        for i, w in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(cin, w, dtype=dtype, rngs=rngs))
                cin = w
            if i < len(widths) - 1:
                blocks.append(nnx.Conv(w, w, (3, 3), padding="SAME", dtype=dtype, rngs=rngs))
                up_after.append(len(blocks) - 1)  # nearest x2 before this conv
        self.blocks = nnx.List(blocks)
        self.up_after = tuple(up_after)
        self.grown = nnx.List([nnx.List([ResBlock(w, w, dtype=dtype, rngs=rngs, identity=True)
                                         for _ in range(cfg.decoder_growth)]) for w in widths])
        self.norm_out = nnx.GroupNorm(cin, num_groups=_groups(cin), rngs=rngs)
        self.patch = cfg.patch
        self.conv_out = nnx.Conv(cin, cfg.channels * cfg.patch ** 2, (3, 3), padding="SAME", rngs=rngs)

    def __call__(self, z):
        h = self.conv_in(z.astype(self.dtype))
        resolution = 0
        for i, block in enumerate(self.blocks):
            if i in self.up_after:
                for extra in self.grown[resolution]:
                    h = extra(h)
                resolution += 1
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
            h = block(h)
        for extra in self.grown[resolution]:
            h = extra(h)
        return depth_to_space(self.conv_out(nnx.swish(self.norm_out(h)).astype(jnp.float32)), self.patch)


class SPAE(nnx.Module):
    """Encoder -> SAQ over a frozen codebook (V, d) -> decoder."""

    def __init__(self, codebook: np.ndarray, cfg: ModelConfig, *, rngs: nnx.Rngs, words=None):
        codebook = jnp.asarray(codebook, jnp.float32)      # concrete, or abstract under eval_shape
        if codebook.ndim != 2:
            raise ValueError(f"codebook must be (V, d); got {codebook.shape}")
        if cfg.patch < 1:
            raise ValueError(f"model.patch must be at least 1; got {cfg.patch}")
        if cfg.image_size % cfg.factor:
            raise ValueError(f"image_size {cfg.image_size} is not a multiple of the downsampling {cfg.factor}")
        shapes = layer_shapes(cfg.grid, cfg.grid, cfg.strides)  # validates the strides
        if cfg.has_semantic_path != (cfg.semantic_layers > 0) or not 0 <= cfg.semantic_layers < len(shapes):
            raise ValueError(f"model.semantic_layers must be in 1..{len(shapes) - 1} with a semantic_backbone, and 0 "
                             f"with 'none'; got {cfg.semantic_layers} with {cfg.semantic_backbone!r}")
        if cfg.has_semantic_path and cfg.semantic_features <= 0:
            raise ValueError("model.semantic_features must be the head's input width (1000 class logits for the "
                             "words head, the backbone's feature width for mlp)")
        if cfg.has_semantic_path and cfg.semantic_head not in SEMANTIC_HEADS:
            raise ValueError(f"model.semantic_head must be one of {', '.join(SEMANTIC_HEADS)}; got {cfg.semantic_head!r}")
        if cfg.has_semantic_path and cfg.semantic_head == "words" and words is None:
            raise ValueError("the words semantic head names vocabulary words: build SPAE(..., words=vocab.words)")
        self.cfg = cfg
        table = normalize_codebook(codebook, cfg.codebook_norm)
        # (V, d), never a Param; rows stay in vocabulary order, so ids still map to LLM ids.
        self.codebook = FrozenCodebook(table)
        d = cfg.code_dim or codebook.shape[1]                       # latent width
        self.encoder = Encoder(cfg, d, rngs=rngs, codebook=table if cfg.code_dim else None)
        self.decoder = Decoder(cfg, d, rngs=rngs)
        head = None
        if cfg.has_semantic_path and cfg.semantic_head == "words":
            head = word_head_for(words, shapes[:cfg.semantic_layers])
            if head.relevance.shape[0] != cfg.semantic_features:
                raise ValueError(f"the words head reads {head.relevance.shape[0]} class logits; "
                                 f"model.semantic_features is {cfg.semantic_features}")
        elif cfg.has_semantic_path:
            head = SemanticHead(cfg.semantic_features, shapes[:cfg.semantic_layers], d, cfg.semantic_hidden, rngs=rngs)
        self.semantic = nnx.data(head)

    @property
    def num_layers(self) -> int:
        return len(self.cfg.strides)

    def encode(self, x):  # (B, H, W, C) in [-1, 1] -> (B, h, w, d)
        return self.encoder(x)

    def codes(self) -> jax.Array:
        """The (V, d_latent) table SAQ searches in: the frozen codebook, or its learned projection."""
        table = self.codebook[...]
        return table if self.encoder.code_proj is None else self.encoder.code_proj(table)

    def semantic_targets(self, feats) -> list:
        """Backbone features (B, F) -> per semantic layer the (B, h_l, w_l, d) vectors its tokens match."""
        if self.semantic is None:
            return []
        if feats is None:
            raise ValueError(f"this SPAE's top {self.cfg.semantic_layers} layers read the frozen backbone "
                             f"{self.cfg.semantic_backbone!r}: give its features (B, {self.cfg.semantic_features})")
        return self.semantic(feats, self.codes())

    def quantize(self, z, feats=None, mesh=None):  # -> ids list of (B, h_l, w_l), zhat list of (B, h, w, d), aux
        """SAQ of z (B, h, w, d); with a semantic path, feats (B, F) give the top layers' targets.
        mesh: a (data, model) mesh whose "model" axis splits the codebook's rows (same ids)."""
        return self.quantize_with_targets(z, self.semantic_targets(feats), mesh)

    def quantize_with_targets(self, z, layer_targets=(), mesh=None):
        """SAQ of z whose first len(layer_targets) layers match the given (B, h_l, w_l, d) vectors."""
        return saq_quantize_aux(z, self.codes(), self.cfg.strides, chunk_size=self.cfg.chunk_size,
                                straight_through=self.cfg.straight_through, layer_targets=layer_targets,
                                mesh=mesh)

    def decode(self, zhat):  # (B, h, w, d) -> (B, H, W, C)
        return self.decoder(zhat)

    def embed(self, ids: Sequence[jax.Array], layers: int | None = None, mesh=None):
        """Running average (B, h, w, d) of the first `layers` layers of a pyramid of codebook rows."""
        return embed_pyramid(ids, self.codes(), self.cfg.strides, layers, mesh)

    def decode_ids(self, ids: Sequence[jax.Array], layers: int | None = None, mesh=None):
        return self.decode(self.embed(ids, layers, mesh))

    def __call__(self, x, feats=None, mesh=None):
        """Full pass: x (B, H, W, C) [, backbone features (B, F)] -> (reconstruction from all layers, ids, zhat, aux)."""
        z = self.encode(x)
        ids, zhat, aux = self.quantize(z, feats, mesh)
        aux["z"] = z
        return self.decode(zhat[-1]), ids, zhat, aux
