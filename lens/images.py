"""Image input checks shared by the LENS modules: load files, fix channels, resize.

Every public entry point of `lens` takes uint8 RGB (B, H, W, 3). These helpers turn what
users actually have (paths, grayscale, RGBA, huge photos) into that, or fail with a
message that says what to do.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 50_000_000  # refuse images above this many pixels (decompression bombs)


class ImageError(ValueError):
    """An input image LENS cannot use; the message says why and what to do."""


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file -> uint8 (H, W, 3); grayscale and RGBA are converted, huge files refused."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageError(f"no such image file: {path!r}")
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(
                    f"{path!r} is {w}x{h} = {w * h:,} pixels, above the limit of {max_pixels:,}; "
                    "downscale it first (e.g. PIL's Image.thumbnail) or raise max_pixels")
            im.load()
            return to_rgb(np.asarray(_flatten_mode(im)), name=path)
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"cannot read {path!r} as an image ({type(e).__name__}: {e}); "
                         "is the file corrupt or not an image (PNG/JPEG/...)?") from e


def _flatten_mode(im: Image.Image) -> Image.Image:
    if im.mode in ("RGB", "L", "RGBA"):
        return im
    if im.mode in ("LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        return im.convert("RGBA")
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, np.float64)
        lo, hi = float(a.min()), float(a.max())
        return Image.fromarray(((a - lo) / max(hi - lo, 1e-12) * 255).round().astype(np.uint8))
    return im.convert("RGB")


def to_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> uint8 (H, W, 3). RGBA is composited on white."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ImageError(f"{name}: expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    if min(a.shape[:2]) < 1:
        raise ImageError(f"{name}: empty image of shape {a.shape}")
    a = _to_uint8(a, name)
    if a.shape[-1] == 4:
        alpha = a[..., 3:].astype(np.float32) / 255.0
        a = (a[..., :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return a


def _to_uint8(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise ImageError(f"{name}: float image holds NaN or inf")
        if a.min() < 0 or a.max() > 1:
            raise ImageError(f"{name}: float images must lie in [0, 1] (got [{a.min():.3g}, {a.max():.3g}]); "
                             "pass uint8 0..255 instead")
        return (a * 255).round().astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        if a.min() < 0 or a.max() > 255:
            raise ImageError(f"{name}: integer image values must lie in 0..255 (got {a.min()}..{a.max()})")
        return a.astype(np.uint8)
    raise ImageError(f"{name}: unsupported dtype {a.dtype}; pass uint8 RGB")


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (size, size, 3): centre-crop to a square, then area/bicubic resample."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    im = Image.fromarray(image[top: top + s, left: left + s])
    im = im.reduce(max(1, s // (2 * size))) if s > 2 * size else im  # fast box pre-shrink of big photos
    return np.asarray(im.resize((size, size), Image.Resampling.BICUBIC))


def rgb_images(images) -> list[np.ndarray]:
    """A batch (B, H, W[, C]) array, or a list of arrays/paths -> list of uint8 (H, W, 3) at native size."""
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if isinstance(images, np.ndarray) and images.ndim == 3 and images.shape[-1] in (3, 4) and images.shape[0] > 4:
        # (H, W, C) single image; a (B, H, W) grayscale batch with W in (3, 4) is not plausible
        images = [images]
    if isinstance(images, np.ndarray) and images.ndim in (3, 4):
        seq = list(images)
    elif isinstance(images, (list, tuple)):
        seq = list(images)
    elif isinstance(images, np.ndarray) and images.ndim == 2:
        seq = [images]
    else:
        raise ImageError(f"expected uint8 images (B, H, W, 3) or a list of images/paths, got {type(images).__name__}"
                         + (f" of shape {images.shape}" if hasattr(images, "shape") else ""))
    if not seq:
        raise ImageError("no images given")
    out = []
    for i, im in enumerate(seq):
        a = load_image(im) if isinstance(im, (str, os.PathLike)) else to_rgb(im, name=f"image {i}")
        if a.shape[0] * a.shape[1] > MAX_PIXELS:
            raise ImageError(f"image {i} has {a.shape[0] * a.shape[1]:,} pixels, above {MAX_PIXELS:,}; downscale it")
        out.append(a)
    return out


def prepare_images(images, size: int) -> np.ndarray:
    """A batch (B, H, W[, C]) array, or a list of arrays/paths -> uint8 (B, size, size, 3)."""
    return np.stack([resize(a, size) for a in rgb_images(images)])
