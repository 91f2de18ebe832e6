"""Real photographs shipped inside the scikit-image and scikit-learn packages (21 images).

    from visiondata import photos
    photos.load(size=64)        # uint8 (21, 64, 64, 3): centre crop of each photo, resized
    photos.NAMES                # the 21 names, in the same order
    photos.load_full()          # list of uint8 (H, W, 3) at native resolution
    photos.random_crops(n, size=64, seed=0)   # uint8 (n, size, size, 3) random square crops

They have no labels: they are for demos, scene backgrounds and out-of-distribution
reconstruction. Grayscale photos (camera, moon, coins, ...) are returned as RGB with equal
channels. The files are read from the installed packages; nothing is downloaded.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np

from visiondata.errors import MissingDataError
from visiondata.images import center_crop_resize, read_image

# (package, file) for every real photograph the two packages ship (synthetic test patterns,
# logos and silhouettes are left out).
_SOURCES = [
    ("skimage", "astronaut.png"), ("skimage", "brick.png"), ("skimage", "camera.png"),
    ("skimage", "cell.png"), ("skimage", "chelsea.png"), ("skimage", "clock_motion.png"),
    ("skimage", "coffee.png"), ("skimage", "coins.png"), ("skimage", "grass.png"),
    ("skimage", "gravel.png"), ("skimage", "hubble_deep_field.jpg"), ("skimage", "ihc.png"),
    ("skimage", "moon.png"), ("skimage", "motorcycle_left.png"), ("skimage", "motorcycle_right.png"),
    ("skimage", "page.png"), ("skimage", "retina.jpg"), ("skimage", "rocket.jpg"),
    ("skimage", "text.png"), ("sklearn", "china.jpg"), ("sklearn", "flower.jpg"),
]
NAMES = [os.path.splitext(f)[0] for _, f in _SOURCES]
_SUBDIR = {"skimage": ("data",), "sklearn": ("datasets", "images")}


def _package_dir(pkg: str) -> str:
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataError(f"package {pkg} is not installed; install scikit-image and scikit-learn")
    return os.path.join(list(spec.submodule_search_locations)[0], *_SUBDIR[pkg])


def paths() -> list[str]:
    """File paths of the photos, in `NAMES` order."""
    return [os.path.join(_package_dir(pkg), f) for pkg, f in _SOURCES]


@functools.lru_cache(maxsize=1)
def _full() -> tuple[np.ndarray, ...]:
    out = []
    for p in paths():
        im = read_image(p)
        im.setflags(write=False)
        out.append(im)
    return tuple(out)


def load_full() -> list[np.ndarray]:
    """The photos at native resolution: list of uint8 (H, W, 3)."""
    return [im.copy() for im in _full()]


@functools.lru_cache(maxsize=8)
def _load_cached(size: int) -> np.ndarray:
    out = np.stack([center_crop_resize(im, size) for im in _full()])
    out.setflags(write=False)
    return out


def load(size: int = 64) -> np.ndarray:
    """Centre crop of every photo resized to (size, size): uint8 (21, size, size, 3)."""
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int; got {size!r}")
    return _load_cached(int(size)).copy()


@functools.lru_cache(maxsize=4)
def _reduced(max_side: int) -> tuple:
    """The photos as PIL images whose short side is at most `max_side` (cheaper resizing)."""
    from PIL import Image

    out = []
    for im in _full():
        h, w = im.shape[:2]
        pil = Image.fromarray(im)
        scale = max_side / min(h, w)
        if scale < 1:
            pil = pil.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
        out.append(pil)
    return tuple(out)


def sample_crop_box(rng: np.random.Generator, photo_index: int, min_frac: float = 0.3) -> tuple[float, float, float]:
    """A random square crop of photo `photo_index`, as fractions (y0, x0, side) of its short side."""
    side = rng.uniform(min_frac, 1.0)
    h, w = _full()[photo_index].shape[:2]
    s = min(h, w)
    y0 = rng.uniform(0, (h - side * s) / s)
    x0 = rng.uniform(0, (w - side * s) / s)
    return float(y0), float(x0), float(side)


def render_crop(photo_index: int, box: tuple[float, float, float], size: int) -> np.ndarray:
    """The crop `box` (fractions of the short side) of a photo resized to uint8 (size, size, 3).

    The crop is taken from a copy of the photo whose short side is about twice `size`, so the
    result is the same picture at every size, only sharper at larger ones."""
    from PIL import Image

    pil = _reduced(max(64, 2 * int(size)))[photo_index]
    s = min(pil.size)
    y0, x0, side = (float(t) * s for t in box)
    side = min(side, s)
    x0, y0 = min(x0, pil.size[0] - side), min(y0, pil.size[1] - side)
    return np.asarray(pil.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side)), dtype=np.uint8)


def random_crops(n: int, size: int = 64, seed: int = 0, min_frac: float = 0.3) -> np.ndarray:
    """`n` random square crops (side 30-100% of the short side) of random photos: uint8 (n, size, size, 3)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        k = int(rng.integers(len(NAMES)))
        out[i] = render_crop(k, sample_crop_box(rng, k, min_frac), size)
    return out
