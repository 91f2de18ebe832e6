"""CLIP in JAX: the NNX model, loaders for real checkpoints, tokenizers, and the public wrapper.

    from backbones import load_clip
    clip = load_clip()                      # the repo's offline stand-in model
    clip = load_clip("/path/to/hf-clip-dir")  # or an OpenAI/open_clip state dict, or our checkpoint dir
"""
from backbones.clip.config import CLIPConfig, TextConfig, VisionConfig, get_config
from backbones.clip.model import CLIP, abstract_clip, init_clip

__all__ = ["CLIP", "CLIPConfig", "TextConfig", "VisionConfig", "abstract_clip", "get_config", "init_clip"]
