"""SPAE losses: reconstruction, perceptual, GAN (StyleGAN-like discriminator), LeCam, semantic.

All images are float in [-1, 1], (B, H, W, C).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = [
    "l2_loss", "l1_loss", "psnr", "Discriminator", "FixedFeatures", "perceptual_loss",
    "gan_generator_loss", "gan_discriminator_loss", "lecam_loss", "semantic_loss", "schedule_weight",
    "usage_entropy_loss", "subsample_positions",
]


# ----------------------------------------------------------------------------- reconstruction


def l2_loss(x, y, weight=None):
    """Mean squared error; `weight` (broadcasting to x, e.g. (B, H, W, 1)) weights each pixel."""
    e = jnp.square(x.astype(jnp.float32) - y.astype(jnp.float32))
    return jnp.mean(e) if weight is None else jnp.mean(e * weight)


def l1_loss(x, y, weight=None):
    e = jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32))
    return jnp.mean(e) if weight is None else jnp.mean(e * weight)


def foreground_weight(x, alpha: float):
    """(B, H, W, 1) pixel weights 1 + alpha * [pixel differs from its image's background].

    x: (B, H, W, C) in [-1, 1]. The background colour is each image's per-channel median; a
    pixel is foreground when any channel is more than 0.1 (5% of the range) from it. Small
    objects on a plain background carry little of a plain pixel loss, and a model can settle
    on drawing the background only; this weight puts them back in the loss.
    """
    bg = jnp.median(x.reshape(x.shape[0], -1, x.shape[-1]), axis=1)[:, None, None, :]   # (B, 1, 1, C)
    fg = jnp.any(jnp.abs(x - bg) > 0.1, axis=-1, keepdims=True)
    return 1.0 + alpha * fg.astype(jnp.float32)


def psnr(x, y):
    """PSNR in dB of images in [-1, 1] (peak 1 after mapping to [0, 1]); mean over the batch."""
    mse = jnp.mean(jnp.square((jnp.clip(x, -1, 1) - jnp.clip(y, -1, 1)) / 2), axis=(1, 2, 3))
    return jnp.mean(10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-10)))


# ----------------------------------------------------------------------------- discriminator


class _DownBlock(nnx.Module):
    """StyleGAN2-style residual block: two 3x3 convs, 2x average pooling, skip / sqrt(2)."""

    def __init__(self, cin, cout, *, rngs):
        self.conv1 = nnx.Conv(cin, cin, (3, 3), padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(cin, cout, (3, 3), padding="SAME", rngs=rngs)
        self.skip = nnx.Conv(cin, cout, (1, 1), use_bias=False, rngs=rngs)

    def __call__(self, x):  # (B, H, W, cin) -> (B, H/2, W/2, cout)
        h = nnx.leaky_relu(self.conv1(x), 0.2)
        h = nnx.leaky_relu(self.conv2(h), 0.2)
        pool = lambda t: nnx.avg_pool(t, (2, 2), strides=(2, 2))
        return (pool(h) + self.skip(pool(x))) / math.sqrt(2.0)


class Discriminator(nnx.Module):
    """StyleGAN-like: residual down blocks to 4x4, minibatch stddev, conv, two dense layers."""

    def __init__(self, image_size: int, channels: int, ch: int = 32, max_ch: int = 256, *, rngs: nnx.Rngs):
        self.conv_in = nnx.Conv(channels, ch, (1, 1), rngs=rngs)
        blocks, size, cin = [], image_size, ch
        while size > 4:
            cout = min(cin * 2, max_ch)
            blocks.append(_DownBlock(cin, cout, rngs=rngs))
            size, cin = size // 2, cout
        self.blocks = nnx.List(blocks)
        self.conv_out = nnx.Conv(cin + 1, cin, (3, 3), padding="SAME", rngs=rngs)
        self.fc = nnx.Linear(cin * size * size, cin, rngs=rngs)
        self.out = nnx.Linear(cin, 1, rngs=rngs)

    def __call__(self, x):  # (B, H, W, C) -> (B,) logits
        h = nnx.leaky_relu(self.conv_in(x.astype(jnp.float32)), 0.2)
        for block in self.blocks:
            h = block(h)
        std = jnp.sqrt(jnp.var(h, axis=0) + 1e-8).mean()            # minibatch stddev feature
        h = jnp.concatenate([h, jnp.broadcast_to(std, h.shape[:-1] + (1,))], axis=-1)
        h = nnx.leaky_relu(self.conv_out(h), 0.2)
        h = nnx.leaky_relu(self.fc(h.reshape(h.shape[0], -1)), 0.2)
        return self.out(h)[:, 0]


def gan_generator_loss(fake_logits):
    """Non-saturating generator loss: softplus(-D(G(z)))."""
    return jnp.mean(jax.nn.softplus(-fake_logits))


def gan_discriminator_loss(real_logits, fake_logits):
    return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def lecam_loss(real_logits, fake_logits, ema_real, ema_fake):
    """LeCam regularisation (Tseng et al. 2021) with EMAs of the discriminator's outputs."""
    return (jnp.mean(jnp.square(jax.nn.relu(real_logits - ema_fake)))
            + jnp.mean(jnp.square(jax.nn.relu(ema_real - fake_logits))))


# ----------------------------------------------------------------------------- perceptual


class FixedFeatures(nnx.Module):
    """A fixed, randomly initialised (seeded) CNN whose multi-scale features define a
    perceptual distance. Never trained (keep it out of the optimizer). A stand-in where no
    pretrained perceptual network is installable; the contrastive model's tower can replace it."""

    def __init__(self, channels: int, widths=(32, 64, 128), seed: int = 1234):
        rngs = nnx.Rngs(seed)
        convs, cin = [], channels
        for w in widths:
            convs.append(nnx.Conv(cin, w, (3, 3), padding="SAME", rngs=rngs))
            convs.append(nnx.Conv(w, w, (3, 3), padding="SAME", rngs=rngs))
            cin = w
        self.convs = nnx.List(convs)

    def __call__(self, x):  # (B, H, W, C) -> list of (B, H/2^i, W/2^i, w_i), unit-normalised per position
        feats, h = [], x.astype(jnp.float32)
        for i, conv in enumerate(self.convs):
            h = nnx.relu(conv(h))
            if i % 2 == 1:
                feats.append(h / (jnp.linalg.norm(h, axis=-1, keepdims=True) + 1e-6))
                h = nnx.avg_pool(h, (2, 2), strides=(2, 2))
        return feats


class BackboneFeatures(nnx.Module):
    """The frozen ImageNet backbone as a perceptual feature net (`backbones.vision.perceptual`).

    Called on images in [-1, 1] like FixedFeatures; returns its unit-normalised stage features.
    Never trained: it sits under the train state's `percept` attribute, which the optimizer skips."""

    def __init__(self, name: str = "efficientnet-lite0", stages=("stride2", "stride4", "stride8", "stride16")):
        from backbones import load_vision

        self.net = load_vision(name).model
        self.stages = tuple(stages)

    def __call__(self, x):  # (B, H, W, 3) in [-1, 1] -> list of (B, h_s, w_s, C_s), unit length along C
        from backbones.vision.perceptual import to_model_input

        if x.shape[-1] != 3:
            raise ValueError(f"the backbone perceptual loss needs RGB images; got {x.shape[-1]} channel(s)")
        feats = self.net.features(to_model_input((x.astype(jnp.float32) + 1.0) / 2.0))
        return [f / (jnp.linalg.norm(f, axis=-1, keepdims=True) + 1e-6) for f in (feats[s] for s in self.stages)]


PERCEPTUAL_NETS = ("random", "effnet")   # loss.perceptual_net


def perceptual_net(name: str, channels: int) -> nnx.Module:
    """loss.perceptual_net -> the frozen feature net: a seeded random CNN or the ImageNet backbone."""
    if name == "random":
        return FixedFeatures(channels)
    if name == "effnet":
        return BackboneFeatures()
    raise ValueError(f"loss.perceptual_net must be one of {PERCEPTUAL_NETS}; got {name!r}")


def perceptual_loss(features, x, y):
    """Mean over scales of the squared distance between unit-normalised features."""
    fx, fy = features(x), jax.lax.stop_gradient(features(y))
    return sum(jnp.mean(jnp.sum(jnp.square(a - b), axis=-1)) for a, b in zip(fx, fy)) / len(fx)


# ----------------------------------------------------------------------------- semantic


def semantic_loss(target, topk_emb, topk_prob, temperature: float, neg_emb=None, neg_valid=None):
    """Cross-entropy between CLIP relevance over top-K tokens and the encoder's soft assignment.

    target:    (B, h, w, d) the vector a semantic layer matched (l*z - (l-1)*zhat_{l-1})
    topk_emb:  (B, K, d) embeddings of each image's K most relevant tokens
    topk_prob: (B, K) target distribution (softmax of CLIP relevance)
    soft assignment: softmax_k(-||target - e_k||^2 / temperature) at every position.
    neg_emb (B, h, w, d), neg_valid (B, h, w): optional extra candidate per position with
    target probability 0 (the token the quantizer actually chose there, when it is not one of
    the top-K), so the loss also pushes away from the winning off-list word.
    """
    t = target.astype(jnp.float32)
    e = topk_emb.astype(jnp.float32)
    dist = (jnp.sum(t * t, -1)[..., None] - 2.0 * jnp.einsum("bhwd,bkd->bhwk", t, e)
            + jnp.sum(e * e, -1)[:, None, None, :])                     # (B, h, w, K)
    logits = -dist / temperature
    k = logits.shape[-1]
    if neg_emb is not None:
        n = neg_emb.astype(jnp.float32)
        neg = -jnp.sum(jnp.square(t - n), -1, keepdims=True) / temperature      # (B, h, w, 1)
        neg = jnp.where(neg_valid[..., None], neg, -jnp.inf)
        logits = jnp.concatenate([logits, neg], axis=-1)
    logp = jax.nn.log_softmax(logits, axis=-1)[..., :k]
    return -jnp.mean(jnp.sum(topk_prob[:, None, None, :] * logp, axis=-1))


def usage_entropy_loss(target, codebook, temperature: float, row_chunk: int | None = None):
    """Codebook-usage regulariser: mean per-position entropy minus the entropy of the batch mean.

    target: (B, h, w, d) vectors a layer matches; codebook: (V, d).
    q = softmax_v(-||target - e_v||^2 / temperature) at every position (N = B*h*w of them);
    loss = mean_n H(q_n) - H(mean_n q_n), in nats. Low when each position is confidently near one
    word and the batch spreads over many words: it fights the few hub words every latent is
    nearest to.

    row_chunk < N: computed that many positions at a time, forward and backward, with a
    hand-written gradient that recomputes each (row_chunk, V) block instead of storing (N, V)
    ones; on a CPU the blocks stay in cache (`python -m eval.bench_spae` times both forms).
    row_chunk >= N: one (N, V) block, autodiff gradient. None: about 2^20 / V rows on a CPU when
    the table fits in 16 MB; otherwise one block (re-reading a large table per chunk costs more
    than it saves, and accelerators prefer one block).
    """
    t = target.reshape(-1, target.shape[-1]).astype(jnp.float32)     # (N, d)
    e = codebook.astype(jnp.float32)                                   # (V, d)
    n = t.shape[0]
    if row_chunk is None:
        row_chunk = entropy_row_chunk(n, *e.shape)
    if row_chunk >= n:
        return _usage_entropy_plain(t, e, temperature)
    return _usage_entropy(t, e, float(temperature), max(1, int(row_chunk)))


def subsample_positions(x, max_positions: int, key):
    """A spatially strided subset of a layer's positions, at a random offset.

    x: (B, h, w, d). Returns (B, h/s, w/s, d) = x[:, oy::s, ox::s], with s the smallest stride that
    leaves at most `max_positions` positions per image (s = 1, x itself, when h*w already fits; s
    must divide h and w) and (oy, ox) drawn uniformly from [0, s)^2 by `key`.
    Every position is equally likely to be kept, so a mean over the subset is an unbiased estimate
    of the mean over all positions; on a 16x16 layer with max_positions=64 it keeps a quarter.
    """
    _, h, w, _ = x.shape
    if max_positions < 1:
        raise ValueError(f"max_positions must be >= 1; got {max_positions}")
    s = 1
    while -(-h // s) * -(-w // s) > max_positions:
        s += 1
    if s == 1:
        return x
    if h % s or w % s:
        raise ValueError(f"a {h}x{w} grid does not split into stride-{s} blocks; choose max_positions "
                         f"so that the stride divides the grid (e.g. {(h // 2) * (w // 2)})")
    oy, ox = jax.random.randint(key, (2,), 0, s)
    return jnp.roll(x, (-oy, -ox), axis=(1, 2))[:, ::s, ::s]


def entropy_row_chunk(n: int, v: int, d: int) -> int:
    """usage_entropy_loss's default row block for N positions and a (V, d) float32 table."""
    small = v * d * 4 <= (16 << 20) and jax.default_backend() == "cpu"
    return min(n, max(8, (1 << 20) // v)) if small else n


def _usage_entropy_plain(t, e, temperature):  # (N, d), (V, d): one (N, V) block, autodiff gradient
    dist = jnp.sum(t * t, -1)[:, None] - 2.0 * t @ e.T + jnp.sum(e * e, -1)[None]   # (N, V)
    logq = jax.nn.log_softmax(-dist / temperature, axis=-1)
    q = jnp.exp(logq)
    per_position = -jnp.mean(jnp.sum(q * logq, -1))
    mean_q = jnp.mean(q, 0)
    batch = -jnp.sum(mean_q * jnp.log(jnp.maximum(mean_q, 1e-30)))
    return per_position - batch


def _entropy_logits(t, e, e_sq, temperature):  # (r, d), (V, d), (V,) -> (r, V) = -||t - e||^2 / T
    return (2.0 * t @ e.T - jnp.sum(t * t, -1, keepdims=True) - e_sq[None]) / temperature


def _row_blocks(t, rows):  # (N, d) -> (C, rows, d) zero-padded, (C, rows) 1 on real rows
    n = t.shape[0]
    c = -(-n // rows)
    pad = c * rows - n
    mask = jnp.pad(jnp.ones((n,), t.dtype), (0, pad)).reshape(c, rows)
    return jnp.pad(t, ((0, pad), (0, 0))).reshape(c, rows, t.shape[1]), mask


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _usage_entropy(t, e, temperature, rows):
    return _usage_entropy_fwd(t, e, temperature, rows)[0]


def _usage_entropy_fwd(t, e, temperature, rows):
    n = t.shape[0]
    e_sq = jnp.sum(e * e, -1)
    blocks, mask = _row_blocks(t, rows)

    def block(q_sum, xs):
        tb, mb = xs
        s = _entropy_logits(tb, e, e_sq, temperature)               # (rows, V)
        lse = jax.nn.logsumexp(s, -1)                                # (rows,)
        q = jnp.exp(s - lse[:, None])
        h = lse - jnp.sum(q * s, -1)                                 # per-position entropy
        return q_sum + mb @ q, (lse, h * mb)

    q_sum, (lse, h) = jax.lax.scan(block, jnp.zeros(e.shape[:1], jnp.float32), (blocks, mask))
    mean_q = q_sum / n
    log_mean_q = jnp.log(jnp.maximum(mean_q, 1e-30))
    loss = jnp.sum(h) / n + jnp.sum(mean_q * log_mean_q)
    return loss, (t, e, lse, log_mean_q)


def _usage_entropy_bwd(temperature, rows, res, ct):
    # With s the logits and a_nv = log mean_q_v - log q_nv:
    #   dloss/ds_nv = q_nv (a_nv - sum_u q_nu a_nu) / N;  ds_nv/dt_n = -2 (t_n - e_v) / T,
    #   ds_nv/de_v = 2 (t_n - e_v) / T.
    t, e, lse, log_mean_q = res
    n, d = t.shape
    e_sq = jnp.sum(e * e, -1)
    blocks, mask = _row_blocks(t, rows)

    def block(acc, xs):
        gt_sum, g_sum = acc
        tb, mb, lb = xs
        log_q = _entropy_logits(tb, e, e_sq, temperature) - lb[:, None]
        q = jnp.exp(log_q)
        a = log_mean_q[None] - log_q
        g = q * (a - jnp.sum(q * a, -1, keepdims=True)) * (mb * ct / n)[:, None]   # (rows, V)
        dt = (2.0 / temperature) * (g @ e - tb * jnp.sum(g, -1, keepdims=True))
        return (gt_sum + g.T @ tb, g_sum + jnp.sum(g, 0)), dt

    init = (jnp.zeros_like(e), jnp.zeros(e.shape[:1], jnp.float32))
    (gt_sum, g_sum), dt = jax.lax.scan(block, init, (blocks, mask, lse))
    de = (2.0 / temperature) * (gt_sum - e * g_sum[:, None])
    return dt.reshape(-1, d)[:n], de


_usage_entropy.defvjp(_usage_entropy_fwd, _usage_entropy_bwd)


def schedule_weight(step, weight: float, kind: str = "constant", warmup: int = 0, total: int = 1):
    """Loss weight at `step`: "constant", "warmup" (linear ramp over `warmup` steps) or
    "cosine" (ramp, then cosine decay to 0 at `total`)."""
    step = jnp.asarray(step, jnp.float32)
    ramp = jnp.minimum(1.0, step / max(warmup, 1)) if warmup else 1.0
    if kind == "constant":
        return weight * jnp.ones_like(step)
    if kind == "warmup":
        return weight * ramp
    if kind == "cosine":
        frac = jnp.clip((step - warmup) / max(total - warmup, 1), 0.0, 1.0)
        return weight * ramp * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
    raise ValueError(f"unknown schedule {kind!r}; use constant, warmup or cosine")
