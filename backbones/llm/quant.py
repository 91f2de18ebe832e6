"""Weight storage formats for the frozen LLM's matrices: float32, bfloat16, or weight-only int8.

Decoding one token reads every matrix once, so on a CPU its speed is set by the bytes read. int8
stores each matrix as 8-bit codes in groups of GROUP values along the axis its product contracts,
each group with a float32 scale and offset (w = offset + scale * code, codes 0..255: 1.25 bytes per
weight), and dequantises one layer at a time inside the jitted step, so no float copy of the whole
model is ever made. Groups of 32 along the contracted axis are exactly the blocks of llama.cpp's
Q4_0/Q4_1/Q4_K/Q8_0 files. Each group takes the better of two grids, min..max in 255 steps or
symmetric steps of absmax/127, which represent Q4_1 blocks (levels m + k·d, k = 0..15, so the step
15·d/255 = d/17 hits every level) and Q8_0 blocks (k·d, max |k| = 127) exactly: the shipped GGUF's
weights come back unchanged up to float rounding. One scale per output channel instead (1.0 byte per weight) was
measured first and broke greedy decoding on 4 of 10 parity prompts (eval.llm_quality).
bfloat16 stores the matrices in bfloat16 and casts them per use the same way.

    w8 = quantize_int8(w, contract=(1,))     # w (L, D, F) -> Int8Weight(codes (L, D, F) uint8,
                                             #   scale and offset (L, D / 32, F) float32)
    y = project("BTD,DF->BTF", x, w8_layer)  # inside the layer scan
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

WEIGHT_FORMATS = ("fp32", "bf16", "int8")
GROUP = 32


class Int8Weight(NamedTuple):
    """Group-wise 8-bit weight. `scale`/`offset` have the codes' shape except along the grouped axis,
    whose length is divided by the group size (the one axis where the shapes differ, if any)."""
    codes: jax.Array    # uint8, the matrix's shape
    scale: jax.Array    # float32
    offset: jax.Array   # float32

    @property
    def shape(self):
        return self.codes.shape

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.codes.shape)) + 8 * int(np.prod(self.scale.shape))


def quantize_int8(w: np.ndarray, contract: Sequence[int], group: int = GROUP) -> Int8Weight:
    """8-bit codes in groups of `group` along the last of the `contract` axes (the whole axis when
    its length is not a multiple of `group`). Each group takes whichever of two grids reconstructs it
    better: min..max in 255 steps (exact for Q4_0/Q4_1 blocks), or symmetric steps of absmax / 127
    about zero, offset -128·scale (exact for Q8_0 blocks, whose absmax is 127 steps)."""
    w = np.asarray(w, np.float32)
    axis = max(a % w.ndim for a in contract)
    n = w.shape[axis]
    g = group if n % group == 0 else n
    split = w.reshape(w.shape[:axis] + (n // g, g) + w.shape[axis + 1:])   # (..., G, g, ...)
    lo = split.min(axis=axis + 1, keepdims=True)
    hi = split.max(axis=axis + 1, keepdims=True)
    peak = np.maximum(np.abs(lo), np.abs(hi))
    grids = [(np.where(hi > lo, (hi - lo) / 255.0, 1.0), lo),                      # asymmetric
             (np.where(peak > 0, peak / 127.0, 1.0), None)]                        # symmetric
    best = None
    for scale, off in grids:
        off = -128.0 * scale if off is None else off
        codes = np.clip(np.rint((split - off) / scale), 0, 255)
        err = np.abs(codes * scale + off - split).max(axis=axis + 1, keepdims=True)
        if best is None:
            best = [codes, scale, off, err]
        else:
            take = err < best[3]
            best = [np.where(take, codes, best[0]), np.where(take, scale, best[1]),
                    np.where(take, off, best[2]), np.minimum(err, best[3])]
    codes, scale, off, _ = best
    squeeze = lambda a: np.squeeze(a, axis=axis + 1).astype(np.float32)
    return Int8Weight(jnp.asarray(codes.astype(np.uint8).reshape(w.shape)), jnp.asarray(squeeze(scale)),
                      jnp.asarray(squeeze(off)))


def dequantize(w, dtype=jnp.float32) -> jax.Array:
    """A stored weight as a float array of its own shape (inside jit: one fused cast per use)."""
    if not isinstance(w, Int8Weight):
        return jnp.asarray(w).astype(dtype)
    shape, gshape = w.codes.shape, w.scale.shape
    diff = [a for a, (n, m) in enumerate(zip(shape, gshape)) if n != m]
    if not diff:
        return w.codes.astype(dtype) * w.scale.astype(dtype) + w.offset.astype(dtype)
    a = diff[0]
    G, g = gshape[a], shape[a] // gshape[a]
    codes = w.codes.reshape(shape[:a] + (G, g) + shape[a + 1:]).astype(dtype)
    expand = lambda t: jnp.expand_dims(t.astype(dtype), a + 1)
    return (codes * expand(w.scale) + expand(w.offset)).reshape(shape)


def is_lossless(stored, w: np.ndarray, rtol: float = 1e-5) -> bool:
    """Whether a stored weight reproduces the float matrix `w` within float rounding (relative to its peak)."""
    w = np.asarray(w, np.float32)
    return bool(np.abs(np.asarray(dequantize(stored)) - w).max() <= rtol * max(float(np.abs(w).max()), 1e-30))


def project(eq: str, x: jax.Array, w) -> jax.Array:
    """einsum(eq, x, w) with a stored weight (float, bfloat16 or int8) cast to x's dtype."""
    return jnp.einsum(eq, x, dequantize(w, x.dtype))


def table_rows(table, ids: jax.Array, dtype) -> jax.Array:
    """Rows of a (V, D) embedding table at integer ids (any shape) -> (*ids.shape, D)."""
    if isinstance(table, Int8Weight):
        rows = Int8Weight(*(jnp.take(t, ids.reshape(-1), axis=0) for t in table))   # (N, D), (N, D / g)
        return dequantize(rows, dtype).reshape(ids.shape + table.codes.shape[1:])
    return jnp.take(table, ids, axis=0).astype(dtype)


def table_logits(h: jax.Array, table, chunk: int = 2048) -> jax.Array:
    """(B, T, D) against a (V, D) table -> (B, T, V) float32, contracting the table's own minor axis.

    A compact table is cast `chunk` rows at a time (a map over row blocks), so the float copy of
    each block stays in cache instead of a whole (V, D) float table being written per call."""
    h = h.astype(jnp.float32)
    if not isinstance(table, Int8Weight) and table.dtype == jnp.float32:
        return jnp.einsum("BTD,VD->BTV", h, table)
    V = table.shape[0]
    if V % chunk:
        chunk = V
    blocks = jax.tree.map(lambda t: t.reshape((V // chunk, chunk) + t.shape[1:]), table)

    def one(block):                                                          # (chunk, D) -> (B, T, chunk)
        return jnp.einsum("BTD,VD->BTV", h, dequantize(block, jnp.float32))

    out = jax.lax.map(one, blocks)                                           # (V / chunk, B, T, chunk)
    return jnp.moveaxis(out, 0, 2).reshape(h.shape[:2] + (V,))


def store(w: np.ndarray, fmt: str, contract: Sequence[int]):
    """A float matrix in the storage format `fmt` ('fp32' | 'bf16' | 'int8')."""
    if fmt == "int8":
        return quantize_int8(w, contract)
    if fmt == "bf16":
        return jnp.asarray(w, jnp.bfloat16)
    if fmt == "fp32":
        return jnp.asarray(w, jnp.float32)
    raise ValueError(f"weights must be one of {WEIGHT_FORMATS}, got {fmt!r}")
