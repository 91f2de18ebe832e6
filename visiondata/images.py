"""Reading, writing and resizing images as uint8 RGB arrays.

    read_image(path) -> uint8 (H, W, 3)      grayscale, palette and RGBA files become RGB
    write_image(path, image)                  uint8 (H, W, 3) or (H, W) -> PNG/JPEG by suffix
    center_crop_resize(image, size) -> uint8 (size, size, 3)

A missing file raises `MissingDataError`; an unreadable or corrupt one raises `DataError`
(see `visiondata.errors`), each with the file's path in the message.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from visiondata.errors import DataError, MissingDataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparent pixels over white, as image viewers show them.
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        hi = a.max() if a.size and a.max() > 0 else 1.0
        return Image.fromarray(np.round(a / hi * 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def read_image(path) -> np.ndarray:
    """Read an image file as uint8 (H, W, 3) RGB."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingDataError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so truncated files fail here
            out = np.asarray(_to_rgb(img), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read image {path}: the file is corrupt or not an image ({e})") from e
    return out.copy()  # (H, W, 3)


def write_image(path, image: np.ndarray) -> None:
    """Write uint8 (H, W, 3) or (H, W) to `path`; the format follows the suffix."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise ValueError(f"write_image wants uint8 (H, W, 3) or (H, W); got {image.dtype} {image.shape}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(image).save(path)


def center_crop_resize(image: np.ndarray, size: int, resample=Image.BICUBIC) -> np.ndarray:
    """Crop the largest centred square and resize it to (size, size); uint8 (H, W, 3) in and out."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"center_crop_resize wants uint8 (H, W, 3); got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = image[y0:y0 + side, x0:x0 + side]
    if side == size:
        return np.ascontiguousarray(crop)
    return np.asarray(Image.fromarray(crop).resize((size, size), resample), dtype=np.uint8)
