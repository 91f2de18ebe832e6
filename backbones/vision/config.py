"""EfficientNet-Lite architectures: the block table of the Lite family and its width/depth scaling.

Lite models differ from EfficientNet-B*: ReLU6 instead of swish, no squeeze-excitation, and
a stem (32 channels) and head (1,280) that are not scaled; the first and last block groups
keep their repeat counts. Scaling of the others follows the TensorFlow reference: channels
times `width` rounded to a multiple of 8 (never more than 10% down), repeats ceil(depth * r).
"""
from __future__ import annotations

import dataclasses
import math

# (repeats, kernel, stride, expand ratio, in channels, out channels) of the seven block groups
# of EfficientNet-Lite0 (the Lite builder's 'r1_k3_s11_e1_i32_o16', ...).
_BASE_GROUPS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# name -> (width multiplier, depth multiplier, input resolution)
_VARIANTS = {
    "efficientnet-lite0": (1.0, 1.0, 224),
    "efficientnet-lite1": (1.0, 1.1, 240),
    "efficientnet-lite2": (1.1, 1.2, 260),
}
NAMES = tuple(_VARIANTS)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual (MBConv) block."""
    in_ch: int
    out_ch: int
    expand: int      # hidden width = in_ch * expand; 1 means no expansion conv
    kernel: int      # depthwise kernel size
    stride: int

    @property
    def hidden(self) -> int:
        return self.in_ch * self.expand

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_ch == self.out_ch


@dataclasses.dataclass(frozen=True)
class EfficientNetLiteConfig:
    name: str
    image_size: int                 # training/eval resolution S (input is S x S x 3)
    blocks: tuple[BlockSpec, ...]
    stem: int = 32                  # stem conv channels (3x3, stride 2)
    head: int = 1280                # head 1x1 conv channels = pooled embedding width
    num_classes: int = 1000
    bn_eps: float = 1e-3            # BatchNorm epsilon of the checkpoints (folded at load)

    @property
    def strides(self) -> tuple[int, ...]:
        """Total stride after each block (the stem has stride 2)."""
        out, s = [], 2
        for b in self.blocks:
            s *= b.stride
            out.append(s)
        return tuple(out)


def round_channels(c: int, width: float, divisor: int = 8) -> int:
    if width == 1.0:
        return c
    scaled = c * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(new + divisor) if new < 0.9 * scaled else int(new)


def get_config(name: str) -> EfficientNetLiteConfig:
    """``"efficientnet-lite0"`` (also ``lite0``, ``-lite1``, ``-lite2``) -> its config."""
    key = name if name.startswith("efficientnet-") else f"efficientnet-{name}"
    if key not in _VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; known: {', '.join(NAMES)}")
    width, depth, size = _VARIANTS[key]
    blocks = []
    for g, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(_BASE_GROUPS):
        fixed = g in (0, len(_BASE_GROUPS) - 1)        # first and last groups are not deepened
        c_in = 32 if g == 0 else round_channels(c_in, width)
        c_out = round_channels(c_out, width)
        n = repeats if fixed else int(math.ceil(depth * repeats))
        for i in range(n):
            blocks.append(BlockSpec(c_in if i == 0 else c_out, c_out, expand, kernel, stride if i == 0 else 1))
    return EfficientNetLiteConfig(key, size, tuple(blocks))


def tiny_config(image_size: int = 32, num_classes: int = 10) -> EfficientNetLiteConfig:
    """A small random-weight architecture with every block kind, for shape and gradient tests."""
    blocks = (BlockSpec(8, 8, 1, 3, 1), BlockSpec(8, 12, 3, 3, 2), BlockSpec(12, 12, 3, 5, 1),
              BlockSpec(12, 16, 3, 5, 2), BlockSpec(16, 16, 2, 3, 2), BlockSpec(16, 24, 2, 3, 2))
    return EfficientNetLiteConfig("tiny", image_size, blocks, stem=8, head=32, num_classes=num_classes)
