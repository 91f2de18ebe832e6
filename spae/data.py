"""Image preparation for SPAE and the training/eval sets its configs name.

    x = to_model_images(images, size=32, channels=1, mode="pad")    # uint8 (N, S, S, C)
    y = from_model_images(x, like=images, mode="pad")               # back to the input's size
    images, labels, class_names = load_split(cfg.data, "train")
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["to_model_images", "from_model_images", "load_split"]


def _check_uint8(images):
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8 (values 0..255); got {images.dtype}. "
                        "Convert with (x * 255).round().astype(np.uint8) if they are floats in [0, 1].")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (B, H, W) or (B, H, W, 1|3); got {images.shape}")
    return images


def _resize(images: np.ndarray, h: int, w: int) -> np.ndarray:
    if images.shape[1:3] == (h, w):
        return images
    out = [np.asarray(Image.fromarray(im.squeeze(-1) if im.shape[-1] == 1 else im).resize((w, h), Image.BICUBIC))
           for im in images]
    out = np.stack(out)
    return out[..., None] if out.ndim == 3 else out


def to_model_images(images, size: int, channels: int, mode: str = "resize") -> np.ndarray:
    """uint8 (B, H, W[, C]) -> uint8 (B, size, size, channels).

    mode "pad": centre-pad with zeros when the image is smaller than `size` (28 -> 32 for
    Fashion-MNIST), otherwise resize; "resize": bicubic resize.
    """
    x = _check_uint8(images)
    if x.shape[-1] != channels:
        x = x.mean(-1, keepdims=True).round().astype(np.uint8) if channels == 1 else np.repeat(x, 3, -1)
    h, w = x.shape[1:3]
    if mode == "pad" and h <= size and w <= size:
        top, left = (size - h) // 2, (size - w) // 2
        return np.pad(x, ((0, 0), (top, size - h - top), (left, size - w - left), (0, 0)))
    return _resize(x, size, size)


def from_model_images(x: np.ndarray, like_shape: tuple, mode: str = "resize") -> np.ndarray:
    """uint8 (B, S, S, C) -> uint8 of `like_shape` ((B, H, W) or (B, H, W, C'))."""
    h, w = like_shape[1:3]
    size = x.shape[1]
    if mode == "pad" and h <= size and w <= size:
        top, left = (size - h) // 2, (size - w) // 2
        x = x[:, top:top + h, left:left + w]
    else:
        x = _resize(x, h, w)
    want_c = 1 if len(like_shape) == 3 else like_shape[3]
    if x.shape[-1] != want_c:
        x = np.repeat(x, 3, -1) if want_c == 3 else x.mean(-1, keepdims=True).round().astype(np.uint8)
    return x[..., 0] if len(like_shape) == 3 else x


def load_split(data_cfg, split: str):
    """-> (images uint8 (N, S, S, C) ready for the model, labels (N,), class_names)."""
    name = data_cfg.name
    if name == "fashion_mnist":
        from visiondata import fashion_mnist

        images, labels = fashion_mnist.load(split)
        class_names = list(fashion_mnist.CLASS_NAMES)
    elif name == "scenes":
        from visiondata import scenes

        n = data_cfg.num_train if split == "train" else data_cfg.get("num_test", 1000)
        s = scenes.generate(n, size=data_cfg.image_size, seed=data_cfg.get("seed", 0), split=split)
        images, labels, class_names = s.images, s.labels, list(s.class_names)
    elif name == "photos":
        from visiondata import photo_mix

        size = data_cfg.image_size
        if split == "train":
            images = photo_mix.training_images(size, n=data_cfg.get("num_train") or 20000,
                                               parts=tuple(data_cfg.get("parts") or photo_mix.PARTS[:3]),
                                               folder=data_cfg.get("folder"), seed=data_cfg.get("seed", 0),
                                               min_frac=data_cfg.get("crop_min", 0.3))
        else:
            test = photo_mix.test_images(size, folder=data_cfg.get("folder"),
                                         parts=("photos", "wallpapers", "tuxpaint") +
                                         (("folder",) if data_cfg.get("folder") else ()))
            images = np.concatenate(list(test.values()))
        labels, class_names = np.zeros(len(images), np.int64), ["photo"]
    else:
        raise ValueError(f"unknown data.name {name!r}; use fashion_mnist, scenes or photos")
    limit = data_cfg.get("num_train") if split == "train" else data_cfg.get("num_test")
    if limit:
        images, labels = images[:limit], labels[:limit]
    x = to_model_images(images, data_cfg.image_size, data_cfg.channels, data_cfg.get("prep", "resize"))
    return x, np.asarray(labels), class_names
