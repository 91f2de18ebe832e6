"""Architecture configs of the CLIP model and the named variants.

Named architectures (``ViT-B-32``, ``ViT-B-16``, ``ViT-L-14``) follow the published
OpenAI CLIP models; ``tiny`` and ``small`` are for tests and the offline model.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal

Act = Literal["quick_gelu", "gelu"]

# Pixel statistics the OpenAI CLIP models were trained with (RGB, images in [0, 1]).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    image_size: int = 224      # input side in pixels (square)
    patch_size: int = 32       # side of one patch; image_size must be a multiple
    width: int = 768           # token width
    layers: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    act: Act = "quick_gelu"
    ln_eps: float = 1e-5
    # LiT (locked image tower): the image side is a frozen ImageNet backbone (`backbones.load_vision`
    # name, e.g. "efficientnet-lite0") whose pooled features (width feature_dim) go through a trained
    # Linear; the ViT fields above are then unused and image_size is the backbone's input size.
    backbone: str | None = None
    feature_dim: int = 1280

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


@dataclasses.dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 49408
    context_length: int = 77
    width: int = 512
    layers: int = 12
    heads: int = 8
    mlp_dim: int = 2048
    act: Act = "quick_gelu"
    ln_eps: float = 1e-5
    # Which position's feature is the text embedding: "eos" = first position holding eos_id
    # (Hugging Face, eos_token_id != 2); "argmax" = position of the largest token id (OpenAI:
    # the end-of-text token has the largest id of the CLIP vocabulary).
    pool: Literal["eos", "argmax"] = "argmax"
    eos_id: int = 49407
    # Token embeddings taken from a frozen table (the LLM's, width token_dim) and projected to
    # `width` by a trained Linear; the table is not a Param, is never trained, and is not saved:
    # it is filled from the LLM at load time (LiT-style text input built from the frozen LLM).
    frozen_token_dim: int | None = None


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    vision: VisionConfig = VisionConfig()
    text: TextConfig = TextConfig()
    embed_dim: int = 512
    logit_scale_init: float = math.log(1 / 0.07)
    logit_bias_init: float | None = None   # set for the SigLIP loss (learned bias)
    image_mean: tuple[float, ...] = OPENAI_MEAN
    image_std: tuple[float, ...] = OPENAI_STD

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CLIPConfig":
        d = dict(d)
        vision = VisionConfig(**d.pop("vision"))
        text = TextConfig(**d.pop("text"))
        for k in ("image_mean", "image_std"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(vision=vision, text=text, **d)

    def replace(self, **kw) -> "CLIPConfig":
        return dataclasses.replace(self, **kw)


def _vit(image_size, patch, width, layers, heads, text_width, text_heads, embed_dim, text_layers=12):
    return CLIPConfig(
        vision=VisionConfig(image_size=image_size, patch_size=patch, width=width, layers=layers,
                            heads=heads, mlp_dim=4 * width),
        text=TextConfig(width=text_width, heads=text_heads, mlp_dim=4 * text_width, layers=text_layers),
        embed_dim=embed_dim,
    )


CONFIGS: dict[str, CLIPConfig] = {
    "ViT-B-32": _vit(224, 32, 768, 12, 12, 512, 8, 512),
    "ViT-B-16": _vit(224, 16, 768, 12, 12, 512, 8, 512),
    "ViT-L-14": _vit(224, 14, 1024, 24, 16, 768, 12, 768),
    # Small CLIP-vocabulary variants (random weights; shape/gradient tests, quick experiments).
    "small": CLIPConfig(
        vision=VisionConfig(image_size=64, patch_size=8, width=256, layers=4, heads=4, mlp_dim=1024),
        text=TextConfig(width=256, layers=4, heads=4, mlp_dim=1024),
        embed_dim=256),
    "tiny": CLIPConfig(
        vision=VisionConfig(image_size=32, patch_size=8, width=64, layers=2, heads=4, mlp_dim=128),
        text=TextConfig(vocab_size=512, context_length=16, width=64, layers=2, heads=4, mlp_dim=128,
                        pool="eos", eos_id=511),
        embed_dim=32),
}
# Aliases in the spelling of the OpenAI release ("ViT-B/32").
ALIASES = {"/".join(k.rsplit("-", 1)): k for k in CONFIGS if k.startswith("ViT")}


def get_config(name: str) -> CLIPConfig:
    """Architecture of a named variant (``ViT-B-32``, ``ViT-B/32``, ``ViT-B-16``, ``ViT-L-14``, ``small``, ``tiny``)."""
    key = ALIASES.get(name, name)
    if key not in CONFIGS:
        raise KeyError(f"unknown CLIP architecture {name!r}; known: {sorted(CONFIGS)}")
    return CONFIGS[key]
