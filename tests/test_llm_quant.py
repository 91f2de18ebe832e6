"""Compact weight storage for the frozen LLM (backbones/llm/quant.py) and load_llm(weights=)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from backbones.llm.quant import (Int8Weight, dequantize, is_lossless, project, quantize_int8, table_logits,
                                 table_rows)


def _q4_1_blocks(rng, shape, axis):
    """A float matrix made as llama.cpp's Q4_1 makes it: along `axis`, blocks of 32 values m + d*k,
    k in 0..15, with 0 and 15 in every block (Q4_1 sets d = (max - min) / 15)."""
    shape = list(shape)
    n = shape[axis]
    moved = np.moveaxis(np.zeros(shape), axis, -1)
    k = rng.integers(0, 16, moved.shape[:-1] + (n // 32, 32))
    k[..., 0], k[..., 1] = 0, 15
    d = rng.uniform(0.001, 0.05, k.shape[:-1] + (1,))
    m = rng.uniform(-0.4, 0.0, k.shape[:-1] + (1,))
    w = (m + d * k).reshape(moved.shape)
    return np.moveaxis(w, -1, axis).astype(np.float32)


def _q8_0_blocks(rng, shape):
    """Q8_0 along the last axis: k * d with k in -127..127 and max |k| = 127 in each block of 32."""
    k = rng.integers(-127, 128, tuple(shape[:-1]) + (shape[-1] // 32, 32))
    k[..., 0] = rng.choice([-127, 127], k.shape[:-1])
    d = rng.uniform(0.001, 0.02, k.shape[:-1] + (1,))
    return (k * d).reshape(shape).astype(np.float32)


def test_q4_1_and_q8_0_blocks_come_back_exactly():
    rng = np.random.default_rng(0)
    for w, contract, lead in [(_q4_1_blocks(rng, (3, 64, 40), 1), (0,), 1),     # (L, D, F), D contracted
                              (_q4_1_blocks(rng, (2, 4, 64, 48), 2), (0, 1), 1),  # (L, H, E, D), (H, E)
                              (_q8_0_blocks(rng, (50, 64)), (1,), 0)]:           # (V, D) table
        q = quantize_int8(w, contract, lead=lead)
        assert q.shape == w.shape and q.codes.dtype == jnp.uint8
        back = np.asarray(dequantize(q))
        # Exact up to float rounding of offset + scale * code: a few ulps of the block's values.
        assert np.abs(back - w).max() <= 4e-7 * np.abs(w).max(), np.abs(back - w).max()
        assert is_lossless(q, w)
    # A plain Gaussian matrix is not on any 8-bit grid: close, but not lossless.
    g = rng.normal(size=(64, 40)).astype(np.float32)
    q = quantize_int8(g, (0,))
    err = np.abs(np.asarray(dequantize(q)) - g).max()
    assert 1e-4 < err <= (g.max() - g.min()) / 255 and not is_lossless(q, g)


def test_groups_follow_the_contracted_axis():
    """Each 32-value block along the contracted axis has its own scale: scaling one block by 100 leaves
    the others' reconstruction as exact as before (a per-output-channel scale would not)."""
    rng = np.random.default_rng(1)
    w = _q4_1_blocks(rng, (96, 8), 0)                                   # (D, F), D contracted: 3 blocks
    w[32:64] *= 100.0
    q = quantize_int8(w, (0,))
    assert q.scale.shape == (8, 3) and q.perm == (1, 0) and q.codes.shape == (8, 96)
    assert np.abs(np.asarray(dequantize(q))[:32] - w[:32]).max() <= 1e-6 * np.abs(w[:32]).max()


@pytest.mark.parametrize("eq,shape,contract", [
    ("BTD,DHE->BTHE", (64, 3, 8), (0,)),          # wq
    ("BTHE,HED->BTD", (3, 32, 64), (0, 1)),       # wo
    ("BTF,FD->BTD", (96, 64), (0,)),              # w_down
    ("BTD,DV->BTV", (64, 50), (0,)),              # untied head
])
def test_project_equals_einsum_of_the_dequantised_weight(eq, shape, contract):
    rng = np.random.default_rng(2)
    w = rng.normal(size=shape).astype(np.float32)
    x_spec = eq.split(",")[0]
    sizes = dict(zip(eq.split(",")[1].split("->")[0], shape))
    x = jnp.asarray(rng.normal(size=[{"B": 2, "T": 3}.get(a) or sizes[a] for a in x_spec]).astype(np.float32))
    q = quantize_int8(w, contract)
    want = jnp.einsum(eq, x, dequantize(q))
    np.testing.assert_allclose(np.asarray(project(eq, x, q)), np.asarray(want), rtol=1e-5, atol=1e-5)
    # and against the float weight, within the 8-bit grid's error (a Gaussian matrix: ~0.5% here)
    ref = np.asarray(jnp.einsum(eq, x, w))
    assert np.abs(np.asarray(project(eq, x, q)) - ref).max() < 0.02 * np.abs(ref).max()


def test_int8_weights_slice_per_layer_inside_a_scan():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(4, 64, 16)).astype(np.float32)                 # (L, D, F)
    q = quantize_int8(w, (0,), lead=1)
    x = jnp.asarray(rng.normal(size=(1, 1, 64)).astype(np.float32))
    ys = jax.lax.scan(lambda c, wl: (c, project("BTD,DF->BTF", c, wl)), x, q)[1]     # (L, 1, 1, F)
    want = jnp.einsum("BTD,LDF->LBTF", x, dequantize(q))
    np.testing.assert_allclose(np.asarray(ys), np.asarray(want), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("V,chunk", [(64, 16), (50, 16)])              # 50: not a multiple, one block
def test_table_rows_and_logits_match_the_float_table(V, chunk):
    rng = np.random.default_rng(4)
    table = _q8_0_blocks(rng, (V, 64))
    q = quantize_int8(table, (1,))
    ids = jnp.asarray([[3, 0, V - 1]])
    np.testing.assert_allclose(np.asarray(table_rows(q, ids, jnp.float32)), table[np.asarray(ids)], atol=1e-6)
    h = jnp.asarray(rng.normal(size=(2, 3, 64)).astype(np.float32))
    want = np.einsum("btd,vd->btv", np.asarray(h), table)
    np.testing.assert_allclose(np.asarray(table_logits(h, q, chunk=chunk)), want, rtol=1e-5, atol=1e-5)
    assert isinstance(q, Int8Weight)


def test_smollm2_int8_is_the_same_model(smollm2):
    """The shipped GGUF is Q4_1 (layers) and Q8_0 (table): int8 storage reproduces it, so load_llm's
    CPU default picks it, and it keeps the parity prompts' behaviour (eval.llm_quality's bar)."""
    from backbones import load_llm
    from eval.llm_quality import PARITY_PROMPTS, compare

    assert smollm2.weights == "int8"                      # the default (weights=None) on CPU
    fp32 = load_llm("smollm2-135m", weights="fp32")
    assert fp32.weights == "fp32" and isinstance(smollm2.model.wq.get_value(), Int8Weight)
    np.testing.assert_array_equal(smollm2.embeddings, fp32.embeddings)   # the codebook stays float32
    ids = smollm2.encode(PARITY_PROMPTS[0])
    a, b = fp32.logits(ids), smollm2.logits(ids)
    assert np.abs(a - b).max() <= 1e-4 * (a.max() - a.min())
    result = compare(fp32, smollm2, prompts=PARITY_PROMPTS[:4], tokens=16)
    assert result["continuations"] == 4 and result["top1"] >= 0.99, result


def test_weights_argument_checks(tmp_path):
    from backbones import load_llm

    with pytest.raises(ValueError, match="weights must be one of"):
        load_llm("smollm2-135m", weights="int4")
    with pytest.raises(ValueError, match="use weights='bf16'"):
        load_llm("smollm2-135m", dtype="bfloat16", weights="fp32")


def test_decode_step_never_copies_the_output_table(smollm2):
    """The 3x regression: with a bias after the tied head, XLA copied the transposed (V, D) table on
    every decode step. The compiled step must hold no (D, V)-shaped array at all."""
    from backbones import load_llm
    from backbones.llm.model import KVCache

    c = smollm2.config
    for llm in (smollm2, load_llm("smollm2-135m", weights="fp32")):
        cache = KVCache.zeros(c, 1, 64)
        args = (llm._state, jnp.zeros((1,), jnp.int32), jnp.zeros((1,), jnp.int32), cache, jnp.int32(3),
                jax.random.key(0), 0.0, None, None, jnp.zeros((c.vocab_size,), jnp.float32))
        hlo = type(llm)._decode_step.lower(llm, *args).compile().as_text()
        assert f"[{c.dim},{c.vocab_size}]" not in hlo
