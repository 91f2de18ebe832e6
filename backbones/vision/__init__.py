"""A frozen ImageNet image backbone in NNX (EfficientNet-Lite 0/1/2), its weights and ImageNet class tables.

    from backbones import load_vision
    m = load_vision("efficientnet-lite0")
    m.classify(["photo.jpg"], k=5)
"""
from backbones.vision.config import EfficientNetLiteConfig, get_config, tiny_config
from backbones.vision.model import EfficientNetLite

__all__ = ["EfficientNetLite", "EfficientNetLiteConfig", "get_config", "tiny_config"]
