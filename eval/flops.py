"""Model FLOPs of a JAX function, counted from its jaxpr: matmuls and convolutions only.

    from eval.flops import count_flops
    flops = count_flops(step_fn, *args)        # traced, never run or compiled

Why not XLA's cost analysis: on GPU it leaves out convolutions (they become cuDNN custom calls)
and, on every backend, counts a scan or while body once, not once per iteration. The train step
has both (the chunked vocabulary search is a scan). Counting the jaxpr gives the same figure on
every device: 2 x (multiply-adds) of each dot_general and conv_general_dilated, scan bodies times
their length, the largest branch of a cond. Elementwise work is not counted, as is usual for MFU.
A `jax.lax.platform_dependent` choice (the SAQ search plans its chunks per platform) is a cond
whose branches name their platforms: given `platform`, the branch that platform runs is counted.
"""

from __future__ import annotations

import math

import jax
from jax.extend import core


def _dot_flops(eqn) -> float:
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    out = eqn.outvars[0].aval.shape
    return 2.0 * math.prod(out) * math.prod(lhs[d] for d in lhs_contract)


def _conv_flops(eqn) -> float:
    # Each output element is a dot over (input features / groups) x kernel window: the rhs holds
    # exactly that many values per output feature. Holds for the convolutions of the backward pass
    # too, grouped ones included (a weight gradient's rhs is the output gradient, and each kernel
    # element sums over batch x positions of it).
    rhs = eqn.invars[1].aval.shape
    out = eqn.outvars[0].aval.shape
    rhs_out_dim = eqn.params["dimension_numbers"].rhs_spec[0]
    return 2.0 * math.prod(out) * math.prod(rhs) / rhs[rhs_out_dim]


def _platform_branch(eqn, platform: str | None):
    """Index of the branch a platform_dependent cond runs on `platform`, or None (not one / unknown)."""
    names = eqn.params.get("branches_platforms")
    if platform is None or names is None:
        return None
    default = None
    for i, plats in enumerate(names):
        if plats is None:
            default = i
        elif platform in plats:
            return i
    return default


def jaxpr_flops(jaxpr: core.Jaxpr, platform: str | None = None) -> float:
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "cond":
            branches = eqn.params["branches"]
            pick = _platform_branch(eqn, platform)
            total += (jaxpr_flops(branches[pick].jaxpr, platform) if pick is not None
                      else max(jaxpr_flops(b.jaxpr, platform) for b in branches))
        elif name == "while":
            raise ValueError("count_flops: a while loop has no static trip count; use lax.scan")
        else:
            inner = sum(jaxpr_flops(j, platform) for j in core.jaxprs_in_params(eqn.params))
            total += inner * (eqn.params["length"] if name == "scan" else 1)
    return total


def count_flops(fun, *args, platform: str | None = None, **kwargs) -> float:
    """Matmul + convolution FLOPs of one call of `fun(*args, **kwargs)` (traced, not run); platform
    ("cpu", "cuda", "tpu", ...) picks platform_dependent branches, None counts the largest."""
    return jaxpr_flops(jax.make_jaxpr(fun)(*args, **kwargs).jaxpr, platform)
