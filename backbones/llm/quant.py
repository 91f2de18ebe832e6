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

    w8 = quantize_int8(w, contract=(0,), lead=1)   # w (L, D, F) -> Int8Weight(codes (L, F, D) uint8,
                                                   #   scale, offset (L, F, D / 32) float32, perm (1, 0))
    y = project("BTD,DF->BTF", x, w8_layer)        # inside the layer scan: einsum "BTD,FD->BTF"
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

WEIGHT_FORMATS = ("fp32", "bf16", "int8")
GROUP = 32


@functools.partial(jax.tree_util.register_dataclass, data_fields=["codes", "scale", "offset"],
                   meta_fields=["perm"])
@dataclasses.dataclass(frozen=True)
class Int8Weight:
    """Group-wise 8-bit weight, stored with its kept (output) axes first and its contracted axes last,
    so every group of GROUP values is contiguous: measured 2.2x faster to cast and multiply on this
    CPU than groups strided along a leading axis (and 1.5x faster than reading float32 weights).

    `perm` orders the matrix's trailing len(perm) axes into the stored layout; leading axes (the
    layer axis L of a stacked weight) stay in front, so a layer scan's slices keep the same `perm`."""
    codes: jax.Array    # uint8 (*lead, *kept, *contracted) in stored order
    scale: jax.Array    # float32 (*lead, *kept, *contracted[:-1], contracted[-1] / g)
    offset: jax.Array   # float32, as scale
    perm: tuple

    @property
    def shape(self) -> tuple:
        """The matrix's own shape (not the stored layout's)."""
        lead = self.codes.ndim - len(self.perm)
        stored = self.codes.shape[lead:]
        return self.codes.shape[:lead] + tuple(stored[self.perm.index(i)] for i in range(len(self.perm)))

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.codes.shape)) + 8 * int(np.prod(self.scale.shape))


def quantize_int8(w: np.ndarray, contract: Sequence[int], group: int = GROUP, lead: int = 0) -> Int8Weight:
    """8-bit codes in groups of `group` along the last of the `contract` axes (the whole axis when
    its length is not a multiple of `group`); `contract` counts from the first axis after `lead`
    leading (layer) axes. Each group takes whichever of two grids reconstructs it better: min..max in
    255 steps (exact for Q4_0/Q4_1 blocks), or symmetric steps of absmax / 127 about zero, offset
    -128·scale (exact for Q8_0 blocks, whose absmax is 127 steps)."""
    w = np.asarray(w, np.float32)
    n_own = w.ndim - lead
    contract = sorted(a % n_own for a in contract)
    perm = tuple([a for a in range(n_own) if a not in contract] + contract)
    w = np.transpose(w, tuple(range(lead)) + tuple(lead + a for a in perm))      # contracted axes last
    n = w.shape[-1]
    g = group if n % group == 0 else n
    split = w.reshape(w.shape[:-1] + (n // g, g))                                 # (..., G, g)
    lo, hi = split.min(-1, keepdims=True), split.max(-1, keepdims=True)
    peak = np.maximum(np.abs(lo), np.abs(hi))
    best = None
    grids = [(np.where(hi > lo, (hi - lo) / 255.0, 1.0), lo),       # asymmetric: min..max
             (np.where(peak > 0, peak / 127.0, 1.0), None)]        # symmetric about zero
    for scale, off in grids:
        off = -128.0 * scale if off is None else off
        codes = np.clip(np.rint((split - off) / scale), 0, 255)
        err = np.abs(codes * scale + off - split).max(-1, keepdims=True)
        if best is None:
            best = [codes, scale, off, err]
        else:
            take = err < best[3]
            best = [np.where(take, codes, best[0]), np.where(take, scale, best[1]),
                    np.where(take, off, best[2]), np.minimum(err, best[3])]
    codes, scale, off, _ = best
    return Int8Weight(jnp.asarray(codes.astype(np.uint8).reshape(w.shape)),
                      jnp.asarray(scale[..., 0].astype(np.float32)), jnp.asarray(off[..., 0].astype(np.float32)),
                      perm)


def _stored_float(w: Int8Weight, dtype) -> jax.Array:
    """The float matrix in its stored layout: offset + scale * codes, group by group."""
    shape, G = w.codes.shape, w.scale.shape[-1]
    codes = w.codes.reshape(shape[:-1] + (G, shape[-1] // G)).astype(dtype)
    return (codes * w.scale[..., None].astype(dtype) + w.offset[..., None].astype(dtype)).reshape(shape)


def dequantize(w, dtype=jnp.float32) -> jax.Array:
    """A stored weight as a float array of the matrix's own shape and axis order."""
    if not isinstance(w, Int8Weight):
        return jnp.asarray(w).astype(dtype)
    lead = w.codes.ndim - len(w.perm)
    inverse = tuple(range(lead)) + tuple(lead + w.perm.index(i) for i in range(len(w.perm)))
    return jnp.transpose(_stored_float(w, dtype), inverse)


def is_lossless(stored, w: np.ndarray, rtol: float = 1e-5) -> bool:
    """Whether a stored weight reproduces the float matrix `w` within float rounding (relative to its peak)."""
    w = np.asarray(w, np.float32)
    return bool(np.abs(np.asarray(dequantize(stored)) - w).max() <= rtol * max(float(np.abs(w).max()), 1e-30))


def project(eq: str, x: jax.Array, w) -> jax.Array:
    """einsum(eq, x, w) with a stored weight (float, bfloat16 or int8) cast to x's dtype; an int8
    weight is read in its stored axis order (the einsum's weight letters permuted to match)."""
    if not isinstance(w, Int8Weight):
        return jnp.einsum(eq, x, w.astype(x.dtype))
    x_spec, rest = eq.split(",")
    w_spec, out = rest.split("->")
    if len(w_spec) != len(w.perm) or w.codes.ndim != len(w.perm):
        raise ValueError(f"{eq}: weight of {w.codes.ndim} stored axes for {len(w.perm)} matrix axes")
    stored_spec = "".join(w_spec[i] for i in w.perm)
    kept = "".join(a for a in stored_spec if a in out)
    contracted = stored_spec[len(kept):]
    batch = x_spec[:len(x_spec) - len(contracted)]
    wf = _stored_float(w, x.dtype)
    if x_spec == batch + contracted and out == batch + kept:
        # As one (N, C) x (K, C) product: XLA then reads the cast (K, C) block row by row; left as a
        # many-axis einsum it was seen to transpose the dequantised block first (1.8x slower).
        C = int(np.prod(wf.shape[len(kept):]))
        y = jnp.einsum("NC,KC->NK", x.reshape(-1, C), wf.reshape(-1, C))
        return y.reshape(x.shape[:len(batch)] + wf.shape[:len(kept)])
    return jnp.einsum(f"{x_spec},{stored_spec}->{out}", x, wf)


def table_rows(table, ids: jax.Array, dtype) -> jax.Array:
    """Rows of a (V, D) embedding table at integer ids (any shape) -> (*ids.shape, D)."""
    if isinstance(table, Int8Weight):
        flat = ids.reshape(-1)
        rows = Int8Weight(*(jnp.take(t, flat, axis=0) for t in (table.codes, table.scale, table.offset)),
                          table.perm)                                          # (N, D), (N, D / g)
        return _stored_float(rows, dtype).reshape(ids.shape + table.codes.shape[1:])
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
    blocks = jax.tree.map(lambda t: t.reshape((V // chunk, chunk) + t.shape[1:]), table)   # (V / chunk, chunk, ...)

    def one(block):                                                          # (chunk, D) -> (B, T, chunk)
        return jnp.einsum("BTD,VD->BTV", h, dequantize(block, jnp.float32))   # table perm is (0, 1)

    out = jax.lax.map(one, blocks)                                           # (V / chunk, B, T, chunk)
    return jnp.moveaxis(out, 0, 2).reshape(h.shape[:2] + (V,))


def store(w: np.ndarray, fmt: str, contract: Sequence[int], lead: int = 0):
    """A float matrix in the storage format `fmt` ('fp32' | 'bf16' | 'int8'); `lead` leading axes
    (a stacked weight's layer axis) are not part of the matrix."""
    if fmt == "int8":
        return quantize_int8(w, contract, lead=lead)
    if fmt == "bf16":
        return jnp.asarray(w, jnp.bfloat16)
    if fmt == "fp32":
        return jnp.asarray(w, jnp.float32)
    raise ValueError(f"weights must be one of {WEIGHT_FORMATS}, got {fmt!r}")
