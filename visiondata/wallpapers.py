"""Desktop wallpapers from two Debian packages: dozens of large nature photos and artworks.

    from visiondata import wallpapers
    wallpapers.available()                   # True when at least one package is installed
    wallpapers.entries(split="train")        # [(name, path)]: one file per wallpaper, its largest
    wallpapers.load_reduced(split, side=512) # list of uint8 (h, w, 3), short side <= `side`

`mate-backgrounds` (1.26, GPL-2+ and CC-BY-SA) puts about 30 images under
/usr/share/backgrounds/mate; `plasma-workspace-wallpapers` (5.27, LGPL/CC-BY-SA) puts 29
wallpapers under /usr/share/wallpapers, each in several resolutions (only the largest is used).
Install either as root (`apt-get install mate-backgrounds plasma-workspace-wallpapers`) or point
LLMSIGHT_WALLPAPERS at a folder of images. Splits are by whole wallpaper, from a hash of its
name: 80% "train", 20% "test", so no crop of a test picture is ever trained on.
"""

from __future__ import annotations

import functools
import hashlib
import os

import numpy as np

from visiondata.errors import MissingDataError
from visiondata.images import IMAGE_EXTENSIONS

ENV_VAR = "LLMSIGHT_WALLPAPERS"
DEFAULT_ROOTS = ("/usr/share/backgrounds/mate", "/usr/share/wallpapers")
SPLITS = ("train", "test", "all")
TEST_FRACTION = 0.2
HOW_TO_GET = ("install `mate-backgrounds` and `plasma-workspace-wallpapers` (apt-get, as root) or point "
              f"{ENV_VAR} at a folder of photos")


def roots() -> list[str]:
    env = os.environ.get(ENV_VAR)
    return [env] if env else [r for r in DEFAULT_ROOTS if os.path.isdir(r)]


def split_of(name: str) -> str:
    """'test' for a fixed 20% of wallpaper names (hash of the name), else 'train'."""
    h = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < TEST_FRACTION else "train"


def _wallpaper_name(root: str, path: str) -> str:
    """Plasma keeps one wallpaper per folder (<name>/contents/images/WxH.jpg): the folder names it.
    mate's files carry the size in the name (Elephants_3840x2160.jpg): drop it."""
    rel = os.path.relpath(path, root)
    parts = rel.split(os.sep)
    if "contents" in parts:
        return parts[0]
    stem = os.path.splitext(rel)[0]
    base = stem.rsplit("_", 1)
    if len(base) == 2 and "x" in base[1] and base[1].replace("x", "").isdigit():
        stem = base[0]
    return stem


@functools.lru_cache(maxsize=4)
def _scan(roots_: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    best: dict[str, tuple[int, str]] = {}
    for root in roots_:
        for dirpath, dirnames, files in os.walk(root):
            dirnames.sort()
            for f in sorted(files):
                if not f.lower().endswith(IMAGE_EXTENSIONS) or f.startswith("screenshot"):
                    continue
                path = os.path.join(dirpath, f)
                name = _wallpaper_name(root, path)
                size = os.path.getsize(path)
                if name not in best or size > best[name][0]:
                    best[name] = (size, path)
    return tuple(sorted((name, path) for name, (_, path) in best.items()))


def available() -> bool:
    return bool(_scan(tuple(roots())))


def entries(split: str = "all") -> list[tuple[str, str]]:
    """[(name, path)] of the wallpapers in `split`, sorted by name."""
    if split not in SPLITS:
        raise ValueError(f"unknown wallpaper split {split!r}; choose one of: {', '.join(SPLITS)}")
    found = _scan(tuple(roots()))
    if not found:
        raise MissingDataError(f"no wallpapers found in {', '.join(roots()) or ', '.join(DEFAULT_ROOTS)}; {HOW_TO_GET}")
    return [(n, p) for n, p in found if split == "all" or split_of(n) == split]


def read_reduced(path: str, side: int) -> np.ndarray:
    """uint8 (h, w, 3) with short side at most `side` (JPEGs are decoded at reduced scale: fast)."""
    from PIL import Image

    from visiondata.images import _to_rgb, read_image

    try:
        with Image.open(path) as img:
            img.draft("RGB", (side, side))          # JPEG: decode at 1/2, 1/4 or 1/8 scale
            img = _to_rgb(img)
            w, h = img.size
            scale = side / min(w, h)
            if scale < 1:
                img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
            return np.asarray(img, dtype=np.uint8).copy()
    except OSError:
        return read_image(path)     # raises the reader's one-line error naming the file


def load_reduced(split: str = "all", side: int = 512) -> list[np.ndarray]:
    """The wallpapers of `split` as uint8 (h, w, 3) arrays whose short side is at most `side`."""
    return [read_reduced(p, side) for _, p in entries(split)]
