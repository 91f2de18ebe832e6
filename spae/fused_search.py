"""Nearest-code search as one fused GPU kernel (Pallas, Triton backend): scores never leave the chip.

`spae.quantizer.nearest_code` computes scores 0.5*||e||^2 - x.e as an XLA matmul per vocabulary
chunk and then reduces them. On a GPU the matmul writes a (tokens x chunk) float32 block to memory
and a second kernel reads it back; at 576-d words that traffic is about a third of the search's
time, which kept it at 59-67% of the matmul peak on an H200. Here each program owns `block_n`
tokens and a span of the vocabulary, computes a (block_n x block_v) score tile in registers
(matmul over `block_d`-wide slices of d, float32 accumulation), folds it into a running best code
and writes only (value, index) per token. A last XLA step picks, per token, the best of the spans.

Ties go to the lowest index, as in `nearest_code`: within a tile the lowest index reaching the
minimum, across tiles of a span a strictly smaller score, across spans the first minimal span.

Off a GPU the same kernel runs under Pallas's interpreter (correct, slow), which is how the tests
check it on a CPU. Its speed on an accelerator is measured by `eval/device_check.sh`.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

__all__ = ["FusedPlan", "fused_nearest_code", "fused_best", "fused_layout"]


@dataclasses.dataclass(frozen=True)
class FusedPlan:
    """Tile sizes and launch settings of the fused search.

    block_n: tokens per program; block_v: codes per score tile; block_d: width of each matmul slice
    (all powers of two, as Triton wants; each is shrunk to the problem when the problem is smaller).
    min_programs: the vocabulary is split into spans until there are at least this many programs,
    so a small batch of tokens still fills the GPU. num_warps, num_stages: Triton's launch settings.
    """
    block_n: int = 128
    block_v: int = 128
    block_d: int = 64
    min_programs: int = 512
    num_warps: int = 8
    num_stages: int = 3

    def __post_init__(self):
        for name in ("block_n", "block_v", "block_d"):
            b = getattr(self, name)
            if b < 16 or b & (b - 1):
                raise ValueError(f"FusedPlan.{name} must be a power of two of at least 16; got {b}")
        if self.min_programs < 1 or self.num_warps < 1 or self.num_stages < 1:
            raise ValueError(f"FusedPlan needs positive min_programs, num_warps and num_stages; got {self}")

    @classmethod
    def parse(cls, text: str) -> "FusedPlan":
        """'128x128x64' (block_n x block_v x block_d), optionally ',w8,s3' for warps and stages."""
        parts = text.split(",")
        try:
            bn, bv, bd = (int(t) for t in parts[0].split("x"))
            extra = {"w": "num_warps", "s": "num_stages"}
            kw = {extra[p[0]]: int(p[1:]) for p in parts[1:]}
        except (ValueError, KeyError):
            raise ValueError(f"fused plan {text!r} should read like '128x128x64' or '128x256x64,w8,s3'") from None
        return cls(block_n=bn, block_v=bv, block_d=bd, **kw)

    def label(self) -> str:
        return f"{self.block_n}x{self.block_v}x{self.block_d},w{self.num_warps},s{self.num_stages}"


def _pow2_at_most(n: int, cap: int) -> int:
    """The power of two covering n (at least 16), but no more than cap."""
    return min(cap, max(16, 1 << max(0, math.ceil(math.log2(max(n, 1))))))


def fused_layout(n: int, v: int, d: int, plan: FusedPlan) -> dict:
    """Padded sizes and grid for n tokens, v codes of width d: block sizes, spans, padded n/v/d."""
    bn = _pow2_at_most(n, plan.block_n)
    bv = _pow2_at_most(v, plan.block_v)
    # The widest slice, within [16, block_d], padding d at most 1/16 beyond the least padding:
    # 576 -> 64 x 9, 1000 -> 64 x 16, 70 -> 16 x 5.
    widths = [1 << k for k in range(4, int(math.log2(plan.block_d)) + 1)]
    least = min(-(-d // b) * b for b in widths)
    bd = max(b for b in widths if -(-d // b) * b <= least * 17 / 16)
    n_blocks = -(-n // bn)
    v_tiles = -(-v // bv)
    spans = max(1, min(v_tiles, -(-plan.min_programs // n_blocks)))
    tiles_per_span = -(-v_tiles // spans)
    return {"bn": bn, "bv": bv, "bd": bd, "n_blocks": n_blocks, "spans": spans,
            "tiles_per_span": tiles_per_span, "n_pad": n_blocks * bn,
            "v_pad": spans * tiles_per_span * bv, "d_pad": -(-d // bd) * bd}


def _kernel(x_ref, cb_ref, hn_ref, val_ref, idx_ref, *, bv: int, bd: int, tiles: int, slices: int,
            precision):
    """One program: x_ref (bn, d_pad) tokens, cb_ref (span, d_pad) and hn_ref (span,) one span of
    the vocabulary -> val_ref, idx_ref (bn,): best score and its index within the whole vocabulary."""
    bn = x_ref.shape[0]

    def tile(j, best):
        best_val, best_idx = best
        start = pl.multiple_of(j * bv, bv)

        def slice_dot(k, acc):                       # acc (bn, bv) float32
            off = pl.multiple_of(k * bd, bd)
            xs = x_ref[:, pl.ds(off, bd)]            # (bn, bd)
            cs = cb_ref[pl.ds(start, bv), pl.ds(off, bd)]  # (bv, bd)
            return acc + jax.lax.dot_general(xs, cs, (((1,), (1,)), ((), ())), precision=precision,
                                             preferred_element_type=jnp.float32)

        dots = jax.lax.fori_loop(0, slices, slice_dot, jnp.zeros((bn, bv), jnp.float32))
        scores = hn_ref[pl.ds(start, bv)][None, :] - dots        # (bn, bv)
        val = jnp.min(scores, axis=1)
        iota = jax.lax.broadcasted_iota(jnp.int32, (bn, bv), 1)
        idx = jnp.min(jnp.where(scores <= val[:, None], iota, bv - 1), axis=1) + start
        better = val < best_val                      # strict: the earlier tile wins ties
        return jnp.where(better, val, best_val), jnp.where(better, idx, best_idx)

    init = (jnp.full((bn,), jnp.inf, jnp.float32), jnp.zeros((bn,), jnp.int32))
    best_val, best_idx = jax.lax.fori_loop(0, tiles, tile, init)
    val_ref[...] = best_val
    idx_ref[...] = best_idx + pl.program_id(1) * (tiles * bv)


def _fused(x, codebook, half_norm, plan: FusedPlan, precision, interpret: bool):
    """(best score (N,) float32, its row (N,) int32); half_norm (V,) or None (computed here)."""
    n, d = x.shape
    v = codebook.shape[0]
    lay = fused_layout(n, v, d, plan)
    bn, spans, span = lay["bn"], lay["spans"], lay["tiles_per_span"] * lay["bv"]
    if half_norm is None:
        half_norm = 0.5 * jnp.sum(jnp.square(codebook.astype(jnp.float32)), axis=1)    # (V,)
    x = jnp.pad(x, ((0, lay["n_pad"] - n), (0, lay["d_pad"] - d)))                      # zero columns add nothing
    cb = jnp.pad(codebook, ((0, lay["v_pad"] - v), (0, lay["d_pad"] - d)))
    hn = jnp.pad(half_norm, (0, lay["v_pad"] - v), constant_values=jnp.inf)            # padded codes never win
    kernel = functools.partial(_kernel, bv=lay["bv"], bd=lay["bd"], tiles=lay["tiles_per_span"],
                               slices=lay["d_pad"] // lay["bd"], precision=precision)
    per_span = jax.ShapeDtypeStruct((spans, lay["n_pad"]), jnp.float32)
    vals, idx = pl.pallas_call(
        kernel,
        grid=(lay["n_blocks"], spans),
        in_specs=[pl.BlockSpec((bn, lay["d_pad"]), lambda i, s: (i, 0)),
                  pl.BlockSpec((span, lay["d_pad"]), lambda i, s: (s, 0)),
                  pl.BlockSpec((span,), lambda i, s: (s,))],
        out_specs=[pl.BlockSpec((None, bn), lambda i, s: (s, i))] * 2,
        out_shape=[per_span, per_span.update(dtype=jnp.int32)],
        compiler_params=None if interpret else pl_triton.CompilerParams(
            num_warps=plan.num_warps, num_stages=plan.num_stages),
        interpret=interpret,
        name="spae_fused_nearest_code",
    )(x, cb, hn)                                     # (spans, n_pad) each
    best_span = jnp.argmin(vals, axis=0)[None]       # first minimal span: the lower indices
    return (jnp.take_along_axis(vals, best_span, axis=0)[0, :n],
            jnp.take_along_axis(idx, best_span, axis=0)[0, :n])


def fused_nearest_code(x: jax.Array, codebook: jax.Array, *, plan: FusedPlan = FusedPlan(),
                       precision=None, interpret: bool | None = None) -> jax.Array:
    """x (N, d), codebook (V, d) of x's dtype -> (N,) int32 index of each row's nearest code.

    interpret None: the Triton kernel when lowered for a CUDA GPU, Pallas's interpreter elsewhere;
    True / False force one. Same result as `spae.quantizer.nearest_code` (up to float rounding)."""
    return fused_best(x, codebook, plan=plan, precision=precision, interpret=interpret)[1]


def fused_best(x: jax.Array, codebook: jax.Array, half_norm: jax.Array | None = None, *,
               plan: FusedPlan = FusedPlan(), precision=None, interpret: bool | None = None):
    """x (N, d), codebook (V, d) -> (best score (N,) float32, its row (N,) int32), the score being
    0.5*||e||^2 - x.e. half_norm (V,): the rows' 0.5*||e||^2 if already known (+inf keeps a padding
    row from ever winning); None computes it. A vocabulary shard's search (`spae.quantizer`) needs
    the score too, to compare its best with the other shards'."""
    if x.ndim != 2 or codebook.ndim != 2 or x.shape[1] != codebook.shape[1]:
        raise ValueError(f"fused_nearest_code wants x (N, d) and codebook (V, d); got {x.shape} and {codebook.shape}")
    if x.shape[0] == 0:
        return jnp.zeros((0,), jnp.float32), jnp.zeros((0,), jnp.int32)
    codebook = codebook.astype(x.dtype)
    if interpret is not None:
        return _fused(x, codebook, half_norm, plan, precision, interpret)
    return jax.lax.platform_dependent(
        x, codebook, half_norm,
        cuda=lambda x, cb, hn: _fused(x, cb, hn, plan, precision, False),
        default=lambda x, cb, hn: _fused(x, cb, hn, plan, precision, True))
