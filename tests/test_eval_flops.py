"""Jaxpr FLOP counting (used for MFU) against closed forms and XLA's CPU cost analysis."""
import jax
import jax.numpy as jnp
import pytest

from eval.flops import count_flops


def _xla_cpu_flops(fun, *args) -> float:
    cost = jax.jit(fun).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def _conv(x, w, stride=1, groups=1, padding="SAME"):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, feature_group_count=groups,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_matmul_and_batched_einsum_closed_form():
    a, b = jnp.ones((3, 5)), jnp.ones((5, 7))
    assert count_flops(lambda a, b: a @ b, a, b) == 2 * 3 * 5 * 7
    x, y = jnp.ones((4, 3, 5)), jnp.ones((4, 5, 6))
    assert count_flops(lambda x, y: jnp.einsum("bij,bjk->bik", x, y), x, y) == 2 * 4 * 3 * 5 * 6


@pytest.mark.parametrize("stride,groups", [(1, 1), (2, 1), (1, 2)])
def test_conv_closed_form_and_xla_cost_analysis(stride, groups):
    x = jnp.ones((2, 8, 8, 4))
    w = jnp.ones((3, 3, 4 // groups, 6))
    f = lambda x, w: _conv(x, w, stride, groups)
    ho = 8 // stride
    closed = 2 * 2 * ho * ho * 6 * 3 * 3 * (4 // groups)
    assert count_flops(f, x, w) == closed
    # XLA skips the products with SAME padding's zeros; without padding the two counts agree.
    valid = lambda x, w: _conv(x, w, stride, groups, "VALID")
    assert count_flops(valid, x, w) == pytest.approx(_xla_cpu_flops(valid, x, w), rel=0.01)


@pytest.mark.parametrize("groups", [1, 2])
def test_conv_gradient_is_three_forward_passes(groups):
    x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4 // groups, 6))
    conv = lambda x, w: _conv(x, w, groups=groups)
    fwd = count_flops(conv, x, w)
    both = count_flops(jax.grad(lambda x, w: conv(x, w).sum(), argnums=(0, 1)), x, w)
    assert both == pytest.approx(3 * fwd)          # forward + input gradient + weight gradient


def test_scan_counts_every_iteration_and_cond_its_largest_branch():
    a = jnp.ones((16, 16))
    scan = lambda a: jax.lax.scan(lambda c, _: (c @ a, None), a, None, length=5)[0]
    assert count_flops(scan, a) == 5 * 2 * 16 ** 3
    assert _xla_cpu_flops(scan, a) < count_flops(scan, a)   # what XLA's analysis misses
    cond = lambda p, a: jax.lax.cond(p, lambda a: a @ a @ a, lambda a: a @ a, a)
    assert count_flops(cond, True, a) == 2 * 2 * 16 ** 3


def test_platform_dependent_counts_the_branch_that_platform_runs():
    a = jnp.ones((16, 16))
    f = lambda a: jax.lax.platform_dependent(a, cpu=lambda a: a @ a, default=lambda a: a @ a @ a)
    assert count_flops(f, a, platform="cpu") == 2 * 16 ** 3
    assert count_flops(f, a, platform="cuda") == 2 * 2 * 16 ** 3
    assert count_flops(f, a) == 2 * 2 * 16 ** 3                      # no platform: the largest


def test_while_loop_is_refused():
    with pytest.raises(ValueError, match="while"):
        count_flops(lambda a: jax.lax.while_loop(lambda c: c.sum() < 1e9, lambda c: c @ c, a), jnp.ones((2, 2)))
