"""EfficientNet-Lite in Flax NNX (NHWC), inference form: every BatchNorm is folded into its conv.

Axis letters in comments: B batch, H/W height/width, C channels, N classes. Convolutions pad
like TensorFlow's "SAME": output size ceil(n / stride), with the odd pixel of padding at the
bottom/right (asymmetric at stride 2), which is what the checkpoints were trained with.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from backbones.vision.config import BlockSpec, EfficientNetLiteConfig


def same_padding(n: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) of one spatial axis of size n."""
    out = -(-n // stride)
    total = max((out - 1) * stride + kernel - n, 0)
    return total // 2, total - total // 2


class Conv(nnx.Module):
    """k x k convolution with TF-SAME padding and a bias (the folded BatchNorm); groups=C is depthwise."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, *, rngs: nnx.Rngs):
        self.kernel_size, self.stride, self.groups = kernel, stride, groups
        fan_in = kernel * kernel * c_in // groups
        init = nnx.initializers.normal((2.0 / fan_in) ** 0.5)
        self.kernel = nnx.Param(init(rngs.params(), (kernel, kernel, c_in // groups, c_out)))  # HWIO
        self.bias = nnx.Param(jnp.zeros((c_out,)))

    def __call__(self, x: jax.Array) -> jax.Array:  # (B, H, W, C_in) -> (B, H', W', C_out)
        k, s = self.kernel_size, self.stride
        w = self.kernel[...].astype(x.dtype)
        if k == 1 and s == 1 and self.groups == 1:
            y = jnp.einsum("BHWC,CD->BHWD", x, w[0, 0])          # pointwise: a plain matmul
        elif self.groups > 1 and self.groups == x.shape[-1] == w.shape[-1]:
            y = depthwise(x, w[:, :, 0, :], s)
        else:
            pads = [same_padding(x.shape[1], k, s), same_padding(x.shape[2], k, s)]
            y = jax.lax.conv_general_dilated(x, w, (s, s), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                             feature_group_count=self.groups)
        return y + self.bias[...].astype(x.dtype)


def depthwise(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    """Depthwise k x k conv with TF-SAME padding as a sum of k*k shifted, strided slices times per-channel
    weights. x (B, H, W, C), w (k, k, C) -> (B, ceil(H/s), ceil(W/s), C). Same result as a grouped
    convolution; XLA fuses the slices into one elementwise loop, 10-30x faster than its grouped conv on CPU."""
    k, (_, h, w_, _) = w.shape[0], x.shape
    ph, pw = same_padding(h, k, stride), same_padding(w_, k, stride)
    xp = jnp.pad(x, ((0, 0), ph, pw, (0, 0)))
    ho, wo = -(-h // stride), -(-w_ // stride)
    out = None
    for i in range(k):
        for j in range(k):
            tap = xp[:, i: i + (ho - 1) * stride + 1: stride, j: j + (wo - 1) * stride + 1: stride, :] * w[i, j]
            out = tap if out is None else out + tap
    return out


class MBConv(nnx.Module):
    """Inverted residual: 1x1 expand (ReLU6) -> k x k depthwise (ReLU6) -> 1x1 project, + skip."""

    def __init__(self, spec: BlockSpec, *, rngs: nnx.Rngs):
        self.spec = spec
        self.expand = Conv(spec.in_ch, spec.hidden, 1, rngs=rngs) if spec.expand != 1 else None
        self.depthwise = Conv(spec.hidden, spec.hidden, spec.kernel, spec.stride, groups=spec.hidden, rngs=rngs)
        self.project = Conv(spec.hidden, spec.out_ch, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.relu6(self.expand(x)) if self.expand is not None else x
        h = self.project(jax.nn.relu6(self.depthwise(h)))
        return h + x if self.spec.residual else h


class EfficientNetLite(nnx.Module):
    """(B, S, S, 3) normalised pixels -> logits (B, N); `features` gives the stage outputs too."""

    def __init__(self, cfg: EfficientNetLiteConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.stem = Conv(3, cfg.stem, 3, 2, rngs=rngs)
        self.blocks = nnx.List([MBConv(b, rngs=rngs) for b in cfg.blocks])
        self.head = Conv(cfg.blocks[-1].out_ch, cfg.head, 1, rngs=rngs)
        self.fc = nnx.Linear(cfg.head, cfg.num_classes, rngs=rngs)

    def features(self, x: jax.Array) -> dict[str, jax.Array]:
        """x (B, S, S, 3) -> {"stride2": (B, S/2, S/2, C), ..., "stride32": (B, S/32, S/32, C),
        "pooled": (B, head)}; each stride's entry is the last block output at that resolution."""
        out = {}
        h = jax.nn.relu6(self.stem(x))
        out["stride2"] = h
        for block, stride in zip(self.blocks, self.cfg.strides):
            h = block(h)
            out[f"stride{stride}"] = h
        h = jax.nn.relu6(self.head(h))                                  # (B, h, w, head)
        out["pooled"] = jnp.mean(h.astype(jnp.float32), axis=(1, 2))    # (B, head)
        return out

    def classify_pooled(self, pooled: jax.Array) -> jax.Array:
        """(B, head) pooled embedding -> (B, N) float32 logits."""
        w, b = self.fc.kernel[...].astype(jnp.float32), self.fc.bias[...].astype(jnp.float32)
        return pooled.astype(jnp.float32) @ w + b

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.classify_pooled(self.features(x)["pooled"])
