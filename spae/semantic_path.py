"""The semantic path: SPAE's top layers read from a frozen pretrained image backbone.

    backbone = load_semantic_backbone("efficientnet-lite0")      # frozen
    feats = backbone_features(backbone, images, "words")          # (B, 1000) class logits (mlp: pooled features)
    targets = model.semantic_targets(feats)                       # per semantic layer (B, h_l, w_l, d)
    ids, zhat, aux = model.quantize(z, feats)                     # SAQ: those layers match the targets

The pixel CNN trained from scratch on a few thousand CPU steps cannot learn what a photo shows; a
frozen ImageNet backbone already knows (V2L and VQGAN-LC read a frozen pretrained encoder for the
same reason). The head is small and trained; the backbone never trains and is never part of the
model's state: the trainer reads its features once per training image, and `Tokenizer.encode` reads
them from the images it is given. Decoding reads no backbone.

Each semantic layer's token is still the nearest row of the frozen LLM codebook (in the learned
code space), chosen by SAQ; the head predicts the vector each position matches. Two heads:
`WordHead` (the default) scores the words of ImageNet class names from the classifier's logits;
`SemanticHead`, an MLP, reads any backbone's pooled features. A head's training target is one word
per position, in the teacher's rank order: layer 1 gets the teacher's top word, layer 2's four
positions (row-major) its next four words (`rank_targets`). A soft target over several words would
pull the prediction to their mean, which lies nearest to none of them.

Backbones: any name or path `backbones.load_vision` takes (EfficientNet-Lite0/1/2 ImageNet
classifiers, pooled features), or "clip:NAME" for `backbones.load_clip(NAME)`'s image tower. A
user's own backbone passes through `load_tokenizer(..., semantic_backbone=obj)`: an object with
`.embed(images) -> (B, F)` float features (images: a list of uint8 (H, W, 3) arrays), like
`VisionBackbone.embed`, and `.class_logits(images) -> (B, C)` for the words head.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["SemanticHead", "WordHead", "SemanticRows", "word_head_for", "split_positions", "flatten_positions", "rank_targets", "vocabulary_ce", "load_semantic_backbone", "NO_BACKBONE", "SEMANTIC_HEADS", "backbone_features",
           "check_backbone"]

NO_BACKBONE = "none"
SEMANTIC_HEADS = ("words", "mlp")     # model.semantic_head: WordHead (class logits) | SemanticHead (pooled features)


def split_positions(flat: jax.Array, shapes: Sequence[tuple[int, int]]) -> list[jax.Array]:
    """(B, P, d) positions, layer after layer in row-major order -> per layer (B, h_l, w_l, d)."""
    out, start = [], 0
    for hl, wl in shapes:
        out.append(flat[:, start:start + hl * wl].reshape(-1, hl, wl, flat.shape[-1]))
        start += hl * wl
    return out


def flatten_positions(targets: Sequence[jax.Array]) -> jax.Array:
    """The inverse of split_positions: per layer (..., h_l, w_l, d) -> (..., P, d)."""
    return jnp.concatenate([t.reshape(t.shape[:-3] + (-1, t.shape[-1])) for t in targets], axis=-2)


class SemanticRows(nnx.Variable):
    """Codebook rows a word head can name: fixed (never optimised), rebuilt from the vocabulary on load."""


class WordHead(nnx.Module):
    """Class logits (B, C) of a frozen ImageNet classifier -> the vector each semantic position matches.

    r(x) = softmax(logits / T) @ R scores the U words that name classes (R (C, U) starts as the
    teacher's `imagenet_word_matrix`); position p takes the soft-argmax code sum_u w_u codes[rows_u],
    w proportional to r_u ** beta over the words not taken by positions before it (a large beta
    makes it the code of the p-th best word, whatever the scale of r). Mixing happens between word scores, linear in the class probabilities,
    and only then becomes one code: mixing per-class code vectors instead lands between words, on
    none of them (measured: 45-63% top-word agreement on held-out images), and an MLP on pooled
    features learnt its 16,000 training images (94%) but not held-out ones (10-39%).
    Trained: R, T and beta (the semantic loss, e.g. to read 64 px images as their sharp sources).
    """

    def __init__(self, relevance: np.ndarray, rows: np.ndarray, shapes: Sequence[tuple[int, int]],
                 beta: float = 100.0):
        relevance = np.asarray(relevance, np.float32)
        if relevance.ndim != 2 or relevance.shape[1] != len(rows):
            raise ValueError(f"relevance must be (C, U={len(rows)}); got {relevance.shape}")
        self.shapes = tuple(tuple(int(v) for v in s) for s in shapes)
        self.relevance = nnx.Param(jnp.asarray(relevance))
        self.rows = SemanticRows(jnp.asarray(rows, jnp.int32))
        self.log_temperature = nnx.Param(jnp.zeros((), jnp.float32))
        self.log_beta = nnx.Param(jnp.log(jnp.asarray(beta, jnp.float32)))

    def word_scores(self, logits: jax.Array) -> jax.Array:  # (B, C) -> (B, U)
        q = jax.nn.softmax(logits.astype(jnp.float32) / jnp.exp(self.log_temperature[...]), axis=-1)
        return q @ self.relevance[...]

    def __call__(self, logits: jax.Array, codes: jax.Array) -> list[jax.Array]:
        r = self.word_scores(logits)                                              # (B, U)
        e = jnp.take(codes, self.rows[...], axis=0).astype(jnp.float32)           # (U, d)
        beta = jnp.exp(self.log_beta[...])
        log_r = jnp.log(jnp.maximum(r, 1e-30))
        taken = jnp.zeros(r.shape, bool)
        first, picks = None, []
        for _ in range(sum(h * w for h, w in self.shapes)):
            s = jnp.where(taken, -jnp.inf, beta * log_r)      # weights proportional to r ** beta: scale-free
            w = jax.nn.softmax(s, axis=-1)                                        # (B, U)
            t = w @ e                                                             # (B, d)
            if first is None:
                first = t
            else:   # where no word with weight is left, repeat the top word (as rank_targets does)
                left = jnp.any(~taken & (r > 0), axis=-1, keepdims=True)
                t = jnp.where(left, t, first)
            picks.append(t)
            taken = taken | jax.nn.one_hot(jnp.argmax(jax.lax.stop_gradient(s), -1), r.shape[1], dtype=bool)
        return split_positions(jnp.stack(picks, 1), self.shapes)                # (B, P, d) -> per layer


class SemanticHead(nnx.Module):
    """Pooled backbone features (B, F) -> the vector each semantic layer's positions match.

    shapes: the (h_l, w_l) token grid of each semantic layer; d: the code space width.
    Returns a list of (B, h_l, w_l, d), one per semantic layer.
    """

    def __init__(self, features: int, shapes: Sequence[tuple[int, int]], d: int, hidden: int, *, rngs: nnx.Rngs):
        self.shapes = tuple(tuple(int(v) for v in s) for s in shapes)
        self.d = int(d)
        positions = sum(h * w for h, w in self.shapes)
        self.norm = nnx.LayerNorm(features, rngs=rngs)
        self.hidden = nnx.Linear(features, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, positions * self.d, rngs=rngs)

    def __call__(self, feats: jax.Array, codes=None) -> list[jax.Array]:
        h = nnx.gelu(self.hidden(self.norm(feats.astype(jnp.float32))))
        flat = self.out(h)                                                  # (B, P * d)
        return split_positions(flat.reshape(flat.shape[0], -1, self.d), self.shapes)


def rank_targets(ids: np.ndarray, prob: np.ndarray, positions: int) -> np.ndarray:
    """One target row per semantic position, in the teacher's rank order: (N, K) ids sorted by
    relevance, their (N, K) weights -> (N, positions) int32 rows.

    Position p takes the teacher's rank-p word (layer 1 = rank 0, layer 2's four = ranks 1..4), or
    its top word where the teacher gives rank p no weight (fewer named words than positions)."""
    ids, prob = np.asarray(ids), np.asarray(prob)
    if ids.shape != prob.shape or ids.ndim != 2:
        raise ValueError(f"teacher ids and weights must be one (N, K) shape; got {ids.shape} and {prob.shape}")
    k = ids.shape[1]
    ranks = np.minimum(np.arange(positions), k - 1)                         # (P,)
    picked = ids[:, ranks]                                                   # (N, P)
    has_weight = prob[:, ranks] > 0
    return np.where(has_weight, picked, ids[:, :1]).astype(np.int32)


def vocabulary_ce(targets: jax.Array, codes: jax.Array, rows: jax.Array, temperature: float) -> jax.Array:
    """Cross-entropy of picking row `rows` from the whole table by distance to `targets`.

    targets (N, d), codes (V, d), rows (N,) int -> mean over N of -log softmax_v(-||t - c_v||^2 / T)[row].
    The table is a constant here: the semantic words must not move the code space the pixels use."""
    t = targets.astype(jnp.float32)
    c = jax.lax.stop_gradient(codes).astype(jnp.float32)
    logits = (2.0 * t @ c.T - jnp.sum(c * c, -1)[None, :]) / temperature   # -||t - c||^2 / T + const(t)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, rows[:, None], axis=1))


class _ClipImages:
    """A contrastive model's image tower with the `.embed(images)` contract of VisionBackbone."""

    def __init__(self, clip, name: str):
        self.clip, self.name = clip, name

    def embed(self, images) -> np.ndarray:
        return np.asarray(self.clip.encode_image(np.stack([np.asarray(im) for im in images])), np.float32)


def load_semantic_backbone(name: str):
    """The frozen backbone a semantic path reads, by the name its config records."""
    if not name or name == NO_BACKBONE:
        raise ValueError("this tokenizer has no semantic path (model.semantic_backbone is 'none')")
    try:
        if name.startswith("clip:"):
            from backbones import load_clip

            return _ClipImages(load_clip(name[len("clip:"):] or None), name)
        from backbones import load_vision

        return load_vision(name)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise ValueError(f"the semantic path reads the backbone {name!r}, which cannot be loaded ({e}); "
                         "install it, or give its path / object with load_tokenizer(..., semantic_backbone=...)") from e


def backbone_features(backbone, images, head: str) -> np.ndarray:
    """What a semantic head reads from the backbone: class logits (words) or pooled features (mlp).
    images: a list of uint8 (H, W, 3) arrays."""
    if head == "words":
        if not hasattr(backbone, "class_logits"):
            raise ValueError("the words semantic head reads an ImageNet classifier's class logits; this backbone "
                             "has no .class_logits(images) (load_vision's backbones do)")
        return backbone.class_logits(images)
    return backbone.embed(images)


def check_backbone(feats: np.ndarray, n: int, width: int, name: str) -> np.ndarray:
    """The features a backbone returned for n images, as float32 (n, width); a clear error otherwise."""
    feats = np.asarray(feats, np.float32)
    if feats.shape != (n, width):
        raise ValueError(f"the semantic backbone {name!r} returned features of shape {feats.shape} for {n} images; "
                         f"this tokenizer was trained on ({n}, {width}): it needs the backbone its config.json names")
    return feats


def head_accuracy(head, codes: jax.Array, feats: np.ndarray, rows: np.ndarray,
                  batch_size: int = 1024) -> np.ndarray:
    """Share of positions whose nearest code is their teacher row: feats (N, F), rows (N, P) -> (P,)."""
    from spae.quantizer import nearest_code

    @jax.jit
    def picks(f):
        t = flatten_positions(head(f, codes))                                      # (n, P, d)
        return nearest_code(t.reshape(-1, t.shape[-1]), codes).reshape(t.shape[:2])

    got = np.concatenate([np.asarray(picks(jnp.asarray(feats[i:i + batch_size])))
                          for i in range(0, len(feats), batch_size)])
    return (got == rows).mean(0)


def fit_semantic_head(head, codes: jax.Array, feats: np.ndarray, rows: np.ndarray, *,
                      steps: int, batch_size: int = 512, lr: float = 1e-3, weight_decay: float = 1e-4,
                      temperature: float = 0.25, seed: int = 0, progress: bool = True) -> list[float]:
    """Fit the head alone, in place, on precomputed features: feats (N, V, F) (V views of each image),
    rows (N, P) teacher rows per position; the code table `codes` (V', d) is fixed. Deterministic for
    a seed. Returns the loss every 100 steps."""
    import optax
    from tqdm import tqdm

    feats, rows = np.asarray(feats, np.float32), np.asarray(rows, np.int32)
    n, views, f = feats.shape
    codes = jax.lax.stop_gradient(jnp.asarray(codes))
    sched = optax.warmup_cosine_decay_schedule(lr / 10, lr, min(100, steps // 10 + 1), max(steps, 2), lr / 20)
    opt = nnx.Optimizer(head, optax.adamw(sched, weight_decay=weight_decay), wrt=nnx.Param)

    @nnx.jit
    def step(head, opt, f_b, r_b):
        def loss_fn(head):
            t = flatten_positions(head(f_b, codes))                                # (b, P, d)
            return vocabulary_ce(t.reshape(-1, t.shape[-1]), codes, r_b.reshape(-1), temperature)

        loss, grads = nnx.value_and_grad(loss_fn)(head)
        opt.update(head, grads)
        return loss

    rng = np.random.default_rng(seed)
    curve = []
    for i in tqdm(range(steps), desc="semantic head", disable=not progress):
        pick = rng.integers(0, n, batch_size)
        view = rng.integers(0, views, batch_size)
        loss = step(head, opt, jnp.asarray(feats[pick, view]), jnp.asarray(rows[pick]))
        if i % 100 == 0 or i == steps - 1:
            curve.append(float(loss))
    return curve


def word_head_for(words: Sequence[str], shapes: Sequence[tuple[int, int]], specificity: bool = True) -> WordHead:
    """A WordHead over the vocabulary words that name ImageNet classes, started at the teacher's matrix."""
    from spae.semantic import imagenet_word_matrix

    rows, relevance = imagenet_word_matrix(words, specificity=specificity)
    return WordHead(relevance, rows, shapes)
