"""The fused Pallas nearest-code kernel (run by Pallas's interpreter on this CPU) against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spae.fused_search import FusedPlan, fused_layout, fused_nearest_code
from spae.quantizer import nearest_code, saq_quantize_aux

# Small tiles so that a few hundred codes already need several tiles per span, several spans and
# several matmul slices per tile.
SMALL = FusedPlan(block_n=16, block_v=32, block_d=16, min_programs=8)
# float32 products in full (on a GPU the default would be TF32, which can swap near ties).
EXACT = jax.lax.Precision.HIGHEST


def brute_nearest(x, cb):
    """float64 NumPy: index of the nearest row of cb for each row of x (first on ties)."""
    x, cb = np.asarray(x, np.float64), np.asarray(cb, np.float64)
    return np.argmin(((x[:, None, :] - cb[None]) ** 2).sum(-1), axis=1)


@pytest.mark.parametrize("n,v,d,plan", [
    (37, 301, 24, SMALL),                      # nothing divides: tokens, codes and width all padded
    (64, 256, 32, SMALL),                      # everything divides
    (5, 17, 8, FusedPlan()),                   # smaller than every default tile
    (200, 1000, 70, FusedPlan(min_programs=4)),
])
def test_fused_search_equals_brute_force(n, v, d, plan):
    rng = np.random.default_rng(n + v + d)
    x = rng.normal(size=(n, d)).astype(np.float32)
    cb = rng.normal(size=(v, d)).astype(np.float32)
    got = np.asarray(jax.jit(lambda x, cb: fused_nearest_code(x, cb, plan=plan, precision=EXACT))(x, cb))
    assert got.dtype == np.int32 and got.shape == (n,)
    np.testing.assert_array_equal(got, brute_nearest(x, cb))


def test_layout_of_the_small_plan_has_spans_tiles_and_slices():
    """The parametrized case above really exercises every fold of the kernel."""
    lay = fused_layout(37, 301, 24, SMALL)
    assert lay["spans"] > 1 and lay["tiles_per_span"] > 1 and lay["d_pad"] // lay["bd"] > 1
    assert lay["v_pad"] >= 301 and lay["n_pad"] >= 37 and lay["d_pad"] >= 24


def test_ties_go_to_the_lowest_index_across_tiles_and_spans():
    rng = np.random.default_rng(1)
    cb = rng.normal(size=(300, 16)).astype(np.float32)
    lay = fused_layout(40, 300, 16, SMALL)
    span = lay["tiles_per_span"] * lay["bv"]
    cb[5 + lay["bv"]] = cb[5]                  # same code again in the next tile of span 0
    cb[5 + span] = cb[5]                       # and in span 1
    cb[40 + 2 * span] = cb[40 + span]          # a pair in spans 1 and 2
    x = rng.normal(size=(40, 16)).astype(np.float32)
    x[:3] = cb[5]
    x[3:6] = cb[40 + span]
    got = np.asarray(fused_nearest_code(x, cb, plan=SMALL, precision=EXACT))
    assert (got[:3] == 5).all() and (got[3:6] == 40 + span).all()
    np.testing.assert_array_equal(got, brute_nearest(x, cb))


def test_bfloat16_picks_a_nearest_code_of_the_rounded_inputs():
    """bf16 tokens and words, float32 accumulation: each pick is the true nearest of the rounded
    values, or scores within float32 rounding of it."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(96, 48)), jnp.bfloat16)
    cb = jnp.asarray(rng.normal(size=(500, 48)), jnp.bfloat16)
    got = np.asarray(fused_nearest_code(x, cb, plan=SMALL))
    xf, cf = np.asarray(x, np.float64), np.asarray(cb, np.float64)
    dist = ((xf[:, None] - cf[None]) ** 2).sum(-1)
    best = dist.min(axis=1)
    assert np.all(dist[np.arange(96), got] <= best + 1e-4 * np.abs(best).max())
    assert np.mean(got == dist.argmin(axis=1)) > 0.95


def test_nearest_code_and_saq_take_the_fused_search():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(2, 8, 8, 16)).astype(np.float32)
    cb = rng.normal(size=(300, 16)).astype(np.float32)
    x = z.reshape(-1, 16)
    np.testing.assert_array_equal(np.asarray(nearest_code(x, cb, precision=EXACT, reduction="fused")), brute_nearest(x, cb))
    ids_f, zhat_f, _ = saq_quantize_aux(z, cb, [4, 2, 1, 1], precision=EXACT, reduction="fused")
    ids_a, zhat_a, _ = saq_quantize_aux(z, cb, [4, 2, 1, 1], precision=EXACT, reduction="argmin")
    for a, b in zip(ids_f, ids_a):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(np.asarray(zhat_f[-1]), np.asarray(zhat_a[-1]), rtol=0, atol=0)


def test_kernel_lowers_to_triton_for_a_gpu():
    """Lowered for CUDA on this CPU, the search of 16,384 bf16 tokens over 49,152 x 576 words is one
    Triton kernel launch over (token blocks x vocabulary spans) plus XLA glue, with no (tokens x
    vocab) array anywhere in the program."""
    f = jax.jit(lambda x, cb: nearest_code(x, cb, reduction="fused"))
    args = (jax.ShapeDtypeStruct((16384, 576), jnp.bfloat16), jax.ShapeDtypeStruct((49152, 576), jnp.bfloat16))
    text = f.trace(*args).lower(lowering_platforms=("cuda",)).as_text()
    lay = fused_layout(16384, 49152, 576, FusedPlan())
    calls = [l for l in text.splitlines() if "stablehlo.custom_call" in l]
    assert len(calls) == 1 and "triton" in calls[0]
    assert f"grid_x = {lay['n_blocks']} " in calls[0] and f"grid_y = {lay['spans']} " in calls[0]
    assert "16384x49152" not in text and "49152x16384" not in text


def test_plan_checks_and_parses():
    assert FusedPlan.parse("64x256x32,w4,s2") == FusedPlan(64, 256, 32, num_warps=4, num_stages=2)
    assert FusedPlan.parse(FusedPlan().label()) == FusedPlan()
    with pytest.raises(ValueError, match="power of two"):
        FusedPlan(block_v=96)
    with pytest.raises(ValueError, match="should read like"):
        FusedPlan.parse("128x128")
    with pytest.raises(ValueError, match=r"x \(N, d\)"):
        fused_nearest_code(jnp.zeros((4, 8)), jnp.zeros((10, 9)))
    assert fused_nearest_code(jnp.zeros((0, 8)), jnp.zeros((10, 8))).shape == (0,)
