"""Streaming average quantization (SAQ) of a latent grid into a frozen token codebook.

Pyramid layout. Layer l (1-based) with stride s_l sees the latent grid z (B, h, w, d)
subsampled by dilation: positions (i*s_l + s_l//2, j*s_l + s_l//2), a grid of
(h/s_l, w/s_l) tokens. Each token stands for the s_l x s_l block around it.

SAQ rule. With zhat_{l-1} the running average of the embeddings chosen at layers 1..l-1
(full resolution; each token repeated over its block), layer l picks, at each of its positions,

    k_l = argmin_k || e(k) - (l * z - (l - 1) * zhat_{l-1}) ||        (on layer l's grid)
    zhat_l = ((l - 1) * zhat_{l-1} + up(e(k_l))) / l                   (full resolution)

so zhat_l is the mean of the l embeddings chosen above each position, and any prefix of
layers is an average of real word embeddings.

Straight-through: the returned zhat_l carries the exact value of the average forward and
passes its gradient unchanged to z backward (`straight_through="identity"`), or through the
rotation and rescaling that carry z onto zhat_l (`"rotation"`: the rotation trick of Fifty et
al., 2024; value unchanged, gradient lambda * R^T g with R z / |z| = zhat_l / |zhat_l|).
Nearest-neighbour search is chunked over the vocabulary with matmul distances: memory
(tokens x chunk), never (tokens x vocab x d). On a CPU (`search_plan`) each chunk's best code is
found as a minimum and then the lowest index reaching it (two plain reductions, which XLA
vectorises) rather than by one argmin (a paired value-and-index reduction, which it does not), and
the chunk is sized so that a score block stays in cache: 1,024 tokens against 49,152 x 576 went
from 60-67% of the matmul peak (argmin, chunk 8,192) to 81-85% (three runs of `eval.bench_spae`,
each form against the same run's peak; the latest is docs/results/cpu/bench_spae.md). Elsewhere the argmin
and the configured chunk stay, as measured on an H200. reduction="fused" hands the whole search to
one Pallas kernel that never writes the scores out (`spae.fused_search`); it is opt-in until it has
been timed on a GPU.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from backbones.mesh import DATA, MODEL
from spae.fused_search import fused_best, fused_nearest_code

__all__ = [
    "saq_quantize", "saq_quantize_aux", "nearest_code", "chunk_best", "search_plan", "subsample", "upsample",
    "layer_shapes", "check_strides", "embed_pyramid", "lookup_codes", "vocab_shards", "sharded_nearest_code",
    "sharded_lookup",
]

DEFAULT_CHUNK = 8192


def check_strides(h: int, w: int, strides: Sequence[int]) -> None:
    if len(strides) == 0:
        raise ValueError("strides must name at least one pyramid layer, e.g. [4, 2, 1, 1]")
    for s in strides:
        if int(s) < 1 or h % int(s) or w % int(s):
            raise ValueError(f"stride {s} does not divide the latent grid {h}x{w}; "
                             f"strides {list(strides)} must all divide it")


def layer_shapes(h: int, w: int, strides: Sequence[int]) -> list[tuple[int, int]]:
    """Token grid (h_l, w_l) of each pyramid layer."""
    check_strides(h, w, strides)
    return [(h // s, w // s) for s in strides]


def subsample(x: jax.Array, s: int) -> jax.Array:
    """Dilation subsampling: (B, h, w, d) -> (B, h/s, w/s, d), the centre of each s x s block."""
    o = s // 2
    return x[:, o::s, o::s, :]


def upsample(x: jax.Array, s: int) -> jax.Array:
    """Nearest upsampling: (B, h/s, w/s, d) -> (B, h, w, d), each token over its s x s block."""
    if s == 1:
        return x
    return jnp.repeat(jnp.repeat(x, s, axis=1), s, axis=2)


def _best_by_argmin(s: jax.Array):
    """(N, c) scores -> (min (N,) float32, first index reaching it (N,) int32), one paired reduction."""
    idx = jnp.argmin(s, axis=1)
    return jnp.take_along_axis(s, idx[:, None], axis=1)[:, 0], idx.astype(jnp.int32)


def _best_by_min_then_index(s: jax.Array):
    """Same result in two single-value reductions: the minimum, then the lowest index holding it.

    A row with no finite score (NaN input) gets index c - 1 rather than an index out of range."""
    val = jnp.min(s, axis=1)
    c = s.shape[1]
    iota = jax.lax.broadcasted_iota(jnp.int32, s.shape, 1)
    idx = jnp.min(jnp.where(s <= val[:, None], iota, c), axis=1)
    return val, jnp.minimum(idx, c - 1)


REDUCTIONS = {"argmin": _best_by_argmin, "min_index": _best_by_min_then_index}
SEARCHES = ("auto", *REDUCTIONS, "fused")        # what nearest_code's `reduction` accepts

# On a CPU each (tokens x chunk) score block is sized to stay in cache: about 2M float32 (8 MB).
# Measured on the 2-core CPU (eval.bench_spae): 1,024 tokens search fastest with chunks of 2,048,
# 4,776 tokens (one batch of a 16x16-grid Fashion-MNIST tokenizer) with chunks of 512.
CPU_BLOCK = 1 << 21


def cpu_chunk(n: int, chunk_size: int) -> int:
    """Vocabulary chunk used on a CPU for n tokens: the power of two nearest CPU_BLOCK / n, within
    [256, chunk_size]."""
    target = CPU_BLOCK / max(n, 1)
    p = 1 << max(0, round(math.log2(target)))
    return max(1, min(chunk_size, max(256, p)))


def chunk_best(s: jax.Array, reduction: str = "min_index"):
    """Best code of each row of a score block: s (N, c) -> (value (N,), index (N,) int32); ties go to
    the lowest index. "min_index": the minimum, then the lowest index reaching it (two plain
    reductions, vectorised on a CPU); "argmin": one paired value-and-index reduction (one pass over
    the block, whose memory traffic is what costs on an accelerator)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {sorted(REDUCTIONS)}; got {reduction!r}")
    return REDUCTIONS[reduction](s)


def search_plan(n: int, v: int, chunk_size: int | None, reduction: str, platform: str) -> tuple[int, str]:
    """(vocabulary chunk, per-chunk reduction) that nearest_code uses for n tokens and V codes on a
    platform ("cpu", "gpu", "tpu"). reduction "auto": min_index with a cache-sized chunk on a CPU,
    argmin with `chunk_size` elsewhere; chunk_size None: one block of the whole vocabulary."""
    c = v if chunk_size is None else max(1, min(int(chunk_size), v))
    if reduction != "auto":
        return c, reduction
    if platform == "cpu":
        return (c if chunk_size is None else cpu_chunk(n, c)), "min_index"
    return c, "argmin"


def nearest_code(x: jax.Array, codebook: jax.Array, chunk_size: int | None = DEFAULT_CHUNK,
                 precision=None, reduction: str = "auto", mesh=None) -> jax.Array:
    """Index of the nearest codebook row (Euclidean) for each row of x.

    x: (N, d); codebook: (V, d) -> (N,) int32. Ties go to the lowest index.
    Scores 0.5*||e||^2 - x.e (same argmin as ||e - x||^2), computed chunk by chunk over the
    vocabulary with a running minimum, so memory is O(N * chunk_size). reduction: "auto" (the
    platform's plan, `search_plan`, chosen when the computation is lowered for its device),
    "argmin" or "min_index" (`chunk_best`; with `chunk_size` as given), or "fused" (one Pallas
    kernel that never writes the scores out, `spae.fused_search`; chunk_size unused; a GPU kernel,
    run by Pallas's interpreter elsewhere). mesh: a (data, model) mesh whose "model" axis has more
    than one device splits the search over the vocabulary (`sharded_nearest_code`, same ids).
    """
    if vocab_shards(mesh) > 1:
        return sharded_nearest_code(x, codebook, mesh, chunk_size, precision, reduction)
    if x.ndim != 2 or codebook.ndim != 2 or x.shape[1] != codebook.shape[1]:
        raise ValueError(f"nearest_code wants x (N, d) and codebook (V, d); got {x.shape} and {codebook.shape}")
    if reduction not in SEARCHES:
        raise ValueError(f"reduction must be one of {list(SEARCHES)}; got {reduction!r}")
    x = jax.lax.stop_gradient(x)
    codebook = jax.lax.stop_gradient(codebook).astype(x.dtype)
    n, v = x.shape[0], codebook.shape[0]
    if reduction == "fused":
        return fused_nearest_code(x, codebook, precision=precision)
    if reduction != "auto":
        return _search(x, codebook, *search_plan(n, v, chunk_size, reduction, ""), precision)

    def plan(platform):
        return lambda x, cb: _search(x, cb, *search_plan(n, v, chunk_size, "auto", platform), precision)

    return jax.lax.platform_dependent(x, codebook, cpu=plan("cpu"), default=plan("gpu"))


def _search(x: jax.Array, codebook: jax.Array, c: int, reduction: str, precision) -> jax.Array:
    """nearest_code with a fixed vocabulary chunk c and per-chunk reduction."""
    half_norm = 0.5 * jnp.sum(jnp.square(codebook.astype(jnp.float32)), axis=1)  # (V,)
    return _search_best(x, codebook, half_norm, c, reduction, precision)[1]


def _search_best(x: jax.Array, codebook: jax.Array, half_norm: jax.Array, c: int, reduction: str, precision):
    """Best score (N,) float32 and its row (N,) int32 of x (N, d) against codebook (V, d), whose
    halved squared row norms are half_norm (V,) (+inf marks a row that must never win)."""
    v, d = codebook.shape
    n_chunks = math.ceil(v / c)
    pad = n_chunks * c - v
    if pad:
        codebook = jnp.pad(codebook, ((0, pad), (0, 0)))
        half_norm = jnp.pad(half_norm, (0, pad), constant_values=jnp.inf)
    cb = codebook.reshape(n_chunks, c, d)          # (C, c, d)
    hn = half_norm.reshape(n_chunks, c)            # (C, c)

    def score(cb_c, hn_c):                          # -> (N, c)
        dots = jnp.einsum("nd,kd->nk", x, cb_c, precision=precision,
                          preferred_element_type=jnp.float32)
        return hn_c[None, :] - dots

    if n_chunks == 1:
        return chunk_best(score(cb[0], hn[0]), reduction)

    def body(carry, inputs):
        best_val, best_idx = carry
        cb_c, hn_c, offset = inputs
        val, idx = chunk_best(score(cb_c, hn_c), reduction)
        better = val < best_val                      # strict: earlier chunk wins ties
        return (jnp.where(better, val, best_val),
                jnp.where(better, idx + offset, best_idx)), None

    n = x.shape[0]
    init = (jnp.full((n,), jnp.inf, jnp.float32), jnp.zeros((n,), jnp.int32))
    offsets = jnp.arange(n_chunks, dtype=jnp.int32) * c
    (best_val, best_idx), _ = jax.lax.scan(body, init, (cb, hn, offsets))
    return best_val, best_idx


# ----------------------------------------------------------------------------- vocabulary shards
#
# Real LLM tables (128,256 x 4,096 for Llama-3-8B, 262,144 x 3,840 for Gemma-3-12B) are too large to
# copy onto every device. With a mesh whose MODEL axis has m devices the codebook's rows are split in
# m contiguous blocks of ceil(V / m) rows (the last block padded when m does not divide V), each
# device searches its block, and two minimum-reductions over MODEL pick the winner: the least score,
# then the lowest global row among the shards reaching it -- the lowest-index rule of the unsharded
# search, so the ids are the same. The table is never gathered: what crosses devices is one score and
# one id per token, and the winning rows themselves (`sharded_lookup`: each shard adds the rows it
# owns, the others add zeros).


def vocab_shards(mesh) -> int:
    """How many vocabulary shards a mesh asks for: the size of its MODEL axis (1 without one)."""
    return 1 if mesh is None else int(dict(mesh.shape).get(MODEL, 1))


def _shard_rows(v: int, m: int) -> int:
    """Rows per shard when V rows split over m shards (the last shard padded)."""
    return -(-v // m)


def _token_spec(mesh, n: int):
    """Tokens split over DATA where the mesh has that axis and it divides them, else copied."""
    d = int(dict(mesh.shape).get(DATA, 1))
    return P(DATA) if d > 1 and n % d == 0 else P()


def _padded(codebook: jax.Array, m: int) -> jax.Array:
    """codebook (V, d) with zero rows appended up to a multiple of m rows."""
    pad = _shard_rows(codebook.shape[0], m) * m - codebook.shape[0]
    return jnp.pad(codebook, ((0, pad), (0, 0))) if pad else codebook


def sharded_nearest_code(x: jax.Array, codebook: jax.Array, mesh, chunk_size: int | None = DEFAULT_CHUNK,
                         precision=None, reduction: str = "auto") -> jax.Array:
    """`nearest_code` with the codebook's rows split over the mesh's MODEL axis: the same ids.

    x: (N, d); codebook: (V, d), ideally already placed row-sharded over MODEL (`spae.codebook.
    shard_codebooks`), else XLA moves each device's block to it. A V that MODEL does not divide gets
    zero rows appended whose half-norms are +inf, so their score is +inf and no real row loses to
    one. Each shard runs the unsharded search on its block (same chunking, same reductions) and
    returns its best score and global row; pmin over MODEL of the scores, then pmin of the rows among
    the shards reaching that score, is the first minimal row overall. reduction "fused" runs the
    Pallas kernel per shard. x is split over DATA when the mesh has that axis and it divides N."""
    if x.ndim != 2 or codebook.ndim != 2 or x.shape[1] != codebook.shape[1]:
        raise ValueError(f"nearest_code wants x (N, d) and codebook (V, d); got {x.shape} and {codebook.shape}")
    if reduction not in SEARCHES:
        raise ValueError(f"reduction must be one of {list(SEARCHES)}; got {reduction!r}")
    m = vocab_shards(mesh)
    x = jax.lax.stop_gradient(x)
    codebook = jax.lax.stop_gradient(codebook).astype(x.dtype)
    n, v = x.shape[0], codebook.shape[0]
    vs = _shard_rows(v, m)
    spec = _token_spec(mesh, n)

    def shard(x_s, cb_s):                              # (n', d), (vs, d) -> (n',) global rows
        lo = jax.lax.axis_index(MODEL) * vs
        rows = lo + jnp.arange(vs, dtype=jnp.int32)
        hn = 0.5 * jnp.sum(jnp.square(cb_s.astype(jnp.float32)), axis=1)
        hn = jnp.where(rows < v, hn, jnp.inf)          # padding rows never win
        if reduction == "fused":
            val, idx = fused_best(x_s, cb_s, hn, precision=precision)
        elif reduction != "auto":
            val, idx = _search_best(x_s, cb_s, hn, *search_plan(x_s.shape[0], vs, chunk_size, reduction, ""),
                                    precision)
        else:
            def plan(platform):
                c, r = search_plan(x_s.shape[0], vs, chunk_size, "auto", platform)
                return lambda x_, cb_, hn_: _search_best(x_, cb_, hn_, c, r, precision)

            val, idx = jax.lax.platform_dependent(x_s, cb_s, hn, cpu=plan("cpu"), default=plan("gpu"))
        best = jax.lax.pmin(val, MODEL)
        cand = jnp.where(val == best, idx + lo, m * vs)     # only the shards holding the minimum bid
        return jnp.minimum(jax.lax.pmin(cand, MODEL), v - 1)   # a token with no finite score: the last row

    # check_vma=False: the per-shard search's scan starts from constants that do not vary over the
    # mesh; this function has no gradient to check (its inputs are stop_gradient'ed).
    search = jax.shard_map(shard, mesh=mesh, in_specs=(spec, P(MODEL, None)), out_specs=spec, check_vma=False)
    return search(x, _padded(codebook, m))


def sharded_lookup(codebook: jax.Array, ids: jax.Array, mesh) -> jax.Array:
    """jnp.take(codebook, ids, axis=0) with the codebook's rows split over MODEL: codebook (V, d),
    ids (...) int -> (..., d), without gathering the table. Each shard takes the rows it owns (zero
    elsewhere) and a psum over MODEL adds the shards, so every row is one shard's row plus zeros:
    the same values as the unsharded take. Differentiable in codebook (each shard's rows receive
    their scatter-added gradient), so the codebook loss still reaches a learned projection."""
    m = vocab_shards(mesh)
    v, d = codebook.shape
    vs = _shard_rows(v, m)
    flat = ids.reshape(-1)
    spec = _token_spec(mesh, flat.shape[0])

    def shard(cb_s, k):                                # (vs, d), (n',) -> (n', d)
        lo = jax.lax.axis_index(MODEL) * vs
        mine = (k >= lo) & (k < lo + vs)
        rows = jnp.take(cb_s, jnp.clip(k - lo, 0, vs - 1), axis=0)
        return jax.lax.psum(jnp.where(mine[:, None], rows, jnp.zeros_like(rows)), MODEL)

    take = jax.shard_map(shard, mesh=mesh, in_specs=(P(MODEL, None), spec), out_specs=P(*spec, None))
    return take(_padded(codebook, m), flat).reshape(ids.shape + (d,))


def lookup_codes(codebook: jax.Array, ids: jax.Array, mesh=None) -> jax.Array:
    """Rows of codebook (V, d) at ids (...) -> (..., d); vocabulary-sharded under a mesh whose MODEL
    axis has more than one device (`sharded_lookup`), else jnp.take."""
    if vocab_shards(mesh) > 1:
        return sharded_lookup(codebook, ids, mesh)
    return jnp.take(codebook, ids, axis=0)


@jax.custom_vjp
def _straight_through(z, q):
    """Value q, gradient passed to z unchanged (and none to q)."""
    return q


def _st_fwd(z, q):
    return q, None


def _st_bwd(_, g):
    return g, jnp.zeros_like(g)


_straight_through.defvjp(_st_fwd, _st_bwd)


def _rotation_through(z, q, eps: float = 1e-6):
    """Value q (up to rounding), gradient to z through the fixed map z -> lambda * R z.

    z, q: (..., d). Per vector, with u = z/|z|, v = q/|q| and w = (u + v)/|u + v|:
    R = I - 2 w w^T + 2 v u^T rotates u onto v, and lambda = |q| / |z| rescales; both are
    held constant (stop_gradient), so the gradient reaching z is lambda * R^T g.
    """
    sg = jax.lax.stop_gradient
    zn = jnp.linalg.norm(sg(z), axis=-1, keepdims=True) + eps
    qn = jnp.linalg.norm(sg(q), axis=-1, keepdims=True)
    u, v = sg(z) / zn, sg(q) / jnp.maximum(qn, eps)
    w = u + v
    w = w / (jnp.linalg.norm(w, axis=-1, keepdims=True) + eps)
    rz = (z - 2.0 * w * jnp.sum(w * z, -1, keepdims=True) + 2.0 * v * jnp.sum(u * z, -1, keepdims=True))
    return (qn / zn) * rz


STRAIGHT_THROUGH = {"identity": _straight_through, "rotation": _rotation_through}


def saq_quantize_aux(z: jax.Array, codebook: jax.Array, strides: Sequence[int], *,
                     chunk_size: int | None = DEFAULT_CHUNK, precision=None,
                     straight_through: str = "identity", reduction: str = "auto",
                     layer_targets: Sequence[jax.Array] = (), mesh=None):
    """SAQ with auxiliary outputs.

    z: (B, h, w, d) float; codebook: (V, d); strides: one int per layer, each dividing h and w.
    layer_targets: for the first S layers, the vector each position matches, given from outside
    (B, h_l, w_l, d) per layer (a semantic path's prediction) instead of l*z - (l-1)*zhat_{l-1}. Those
    layers' running averages carry no gradient and their commitment and codebook losses are 0; the
    later layers quantize the residual of z as usual, so zhat_L still approaches z.
    straight_through: "identity" or "rotation" (how zhat's gradient reaches z; module docstring).
    reduction: the nearest-code search's per-chunk reduction (`nearest_code`; "auto" by default).
    mesh: a (data, model) mesh; a MODEL axis of more than one device splits the codebook's rows over
    it for the search and the lookup of the chosen rows (`sharded_nearest_code`, `sharded_lookup`):
    the same ids and values, the same gradients.
    Returns (ids, zhat, aux):
      ids:  list of (B, h_l, w_l) int32, one per layer
      zhat: list of (B, h, w, d) running averages (straight-through to z)
      aux:  dict with
        "targets":    list of (B, h_l, w_l, d), the vector layer l matched (l*z - (l-1)*zhat_{l-1}),
                      differentiable in z (used by the semantic loss)
        "commit":     (L,) per-layer commitment loss mean ||z - sg(zhat_l)||^2 (per element)
        "codebook":   (L,) per-layer codebook loss mean ||sg(z) - zhat_l||^2: its gradient reaches
                      the codebook argument only (zero for the frozen table, which is not a Param;
                      it trains a learned projection of it)
        "usage":      (L,) number of distinct codes used by each layer in this batch
    """
    if z.ndim != 4:
        raise ValueError(f"saq_quantize wants z of shape (B, h, w, d); got {z.shape}")
    if codebook.ndim != 2 or codebook.shape[1] != z.shape[-1]:
        raise ValueError(f"codebook must be (V, d={z.shape[-1]}); got {codebook.shape}")
    b, h, w, d = z.shape
    check_strides(h, w, strides)
    if straight_through not in STRAIGHT_THROUGH:
        raise ValueError(f"straight_through must be one of {sorted(STRAIGHT_THROUGH)}; got {straight_through!r}")
    through = STRAIGHT_THROUGH[straight_through]
    search = jax.lax.stop_gradient(codebook)
    v = codebook.shape[0]

    ids, zhats, targets, commits, code_losses, usages = [], [], [], [], [], []
    if len(layer_targets) >= len(strides):
        raise ValueError(f"{len(layer_targets)} given layer targets leave none of the {len(strides)} layers "
                         "to quantize the latent")
    zhat_prev = jnp.zeros_like(z)                      # (B, h, w, d)
    for l, s in enumerate(strides, start=1):
        s = int(s)
        given = l <= len(layer_targets)
        if given:
            target = layer_targets[l - 1].astype(z.dtype)
            want = (b, h // s, w // s, d)
            if target.shape != want:
                raise ValueError(f"layer {l} target has shape {target.shape}, expected {want}")
        else:
            target = l * subsample(z, s) - (l - 1) * subsample(jax.lax.stop_gradient(zhat_prev), s)
        hl, wl = target.shape[1:3]
        k = nearest_code(jax.lax.stop_gradient(target).reshape(-1, d), search, chunk_size, precision, reduction,
                         mesh)
        k = k.reshape(b, hl, wl)                        # (B, h_l, w_l)
        e = lookup_codes(codebook, k, mesh).astype(z.dtype)  # (B, h_l, w_l, d)
        zhat_l = ((l - 1) * zhat_prev + upsample(e, s)) / l
        ids.append(k)
        targets.append(target)
        if given:
            zhat_l = jax.lax.stop_gradient(zhat_l)
            zhats.append(zhat_l)
            commits.append(jnp.zeros((), jnp.float32))
            code_losses.append(jnp.zeros((), jnp.float32))
        else:
            zhats.append(through(z, zhat_l))
            commits.append(jnp.mean(jnp.square(z - jax.lax.stop_gradient(zhat_l))))
            code_losses.append(jnp.mean(jnp.square(jax.lax.stop_gradient(z) - zhat_l)))
        usages.append(jnp.sum(jnp.zeros((v,), jnp.int32).at[k.reshape(-1)].set(1)))
        zhat_prev = zhat_l
    aux = {"targets": targets, "commit": jnp.stack(commits), "codebook": jnp.stack(code_losses),
           "usage": jnp.stack(usages)}
    return ids, zhats, aux


def saq_quantize(z: jax.Array, codebook: jax.Array, strides: Sequence[int], *,
                 chunk_size: int | None = DEFAULT_CHUNK, precision=None):
    """ids, zhat = saq_quantize(z (B,h,w,d), codebook (V,d), strides e.g. [16,8,4,2,1,1]).

    ids: list of (B, h_l, w_l) int32 arrays, one per layer; zhat: list of (B, h, w, d)
    running averages (straight-through gradients to z). See the module docstring.
    """
    ids, zhat, _ = saq_quantize_aux(z, codebook, strides, chunk_size=chunk_size, precision=precision)
    return ids, zhat


def embed_pyramid(ids: Sequence[jax.Array], codebook: jax.Array, strides: Sequence[int],
                  layers: int | None = None, mesh=None) -> jax.Array:
    """Running average (B, h, w, d) of the first `layers` layers of a pyramid of ids (rows looked up
    vocabulary-sharded under a mesh with a MODEL axis, `lookup_codes`)."""
    layers = len(ids) if layers is None else int(layers)
    if not 1 <= layers <= len(ids):
        raise ValueError(f"layers must be in 1..{len(ids)}; got {layers}")
    zhat = None
    for l, (k, s) in enumerate(zip(ids[:layers], strides[:layers]), start=1):
        e = upsample(lookup_codes(codebook, k, mesh), int(s))  # same recursion as saq_quantize
        zhat = e if zhat is None else ((l - 1) * zhat + e) / l
    return zhat
