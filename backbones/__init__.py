"""Frozen models shared by both routes: the Llama-family LLM, the ImageNet image backbone and the
contrastive image-text model.

    from backbones import load_llm, load_vision, load_clip
"""
from __future__ import annotations


def load_llm(name_or_path: str = "smollm2-135m", **kwargs):
    """Load the frozen LLM by name (``"smollm2-135m"``, ``"gemma3-270m"``) or path (.gguf / HF dir)."""
    from backbones.llm.api import load_llm as _load

    return _load(name_or_path, **kwargs)


def load_clip(name_or_path: str | None = None, **kwargs):
    """Load a contrastive image-text model; no argument gives the repo's default offline model."""
    from backbones.clip.api import load_clip as _load

    return _load(name_or_path, **kwargs)


def load_vision(name_or_path: str = "efficientnet-lite0", **kwargs):
    """Load the frozen ImageNet backbone by name (``"efficientnet-lite0"``, ``-lite1``, ``-lite2``) or .pth path."""
    from backbones.vision.api import load_vision as _load

    return _load(name_or_path, **kwargs)


__all__ = ["load_llm", "load_vision", "load_clip"]
