"""Real-image sets for training and testing an image tokenizer: crops of photos, stamps, emoji, your folder.

    x = training_images(size=64, n=20000, parts=("wallpapers", "tuxpaint", "emoji"), seed=0)   # uint8 (n, 64, 64, 3)
    test = test_images(size=64)          # {"photos": (21, ...), "wallpapers": (...), "tuxpaint": (...)}
    paths = folder_paths("~/pictures", split="train")   # a flat folder or ImageNet-style class folders

Parts (each used when installed; a missing one is named on stderr in one line):
- "wallpapers": random square crops (30-100% of the short side) of the Debian wallpapers'
  train split (`visiondata.wallpapers`);
- "tuxpaint": the Tux Paint photo cut-outs of the train split, on white and on photo crops;
- "emoji": the training styles (Noto, Twemoji) of the train concepts;
- "folder": random crops of the images of `folder` (its train split: 90% of files by a hash of
  the path).
The held-out sets never share a picture with training: the 21 scikit-image/-learn photos (never
trained on), the wallpapers' test split, the Tux Paint test photos, the folder's test split.
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Sequence

import numpy as np

from visiondata.errors import DataError, MissingDataError
from visiondata.images import IMAGE_EXTENSIONS

PARTS = ("wallpapers", "tuxpaint", "emoji", "folder")
FOLDER_TEST_FRACTION = 0.1


def random_square_crops(pictures: Sequence[np.ndarray], n: int, size: int, rng: np.random.Generator,
                        min_frac: float = 0.3) -> np.ndarray:
    """`n` random square crops (side min_frac..1 of the short side) of random pictures -> uint8 (n, size, size, 3)."""
    from PIL import Image

    pils = [Image.fromarray(p) for p in pictures]
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        pil = pils[int(rng.integers(len(pils)))]
        w, h = pil.size
        side = rng.uniform(min_frac, 1.0) * min(w, h)
        x0, y0 = rng.uniform(0, w - side), rng.uniform(0, h - side)
        out[i] = np.asarray(pil.resize((size, size), Image.BICUBIC, box=(x0, y0, x0 + side, y0 + side)))
    return out


def folder_paths(folder, split: str = "all") -> list[str]:
    """Image files under `folder` (flat or in class sub-folders), sorted; split by a hash of the relative path."""
    folder = os.path.expanduser(os.fspath(folder))
    if not os.path.isdir(folder):
        raise MissingDataError(f"image folder not found: {folder}")
    out = []
    for dirpath, dirnames, files in os.walk(folder):
        dirnames.sort()
        for f in sorted(files):
            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."):
                rel = os.path.relpath(os.path.join(dirpath, f), folder)
                h = int(hashlib.sha1(rel.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
                s = "test" if h < FOLDER_TEST_FRACTION else "train"
                if split in ("all", s):
                    out.append(os.path.join(folder, rel))
    if not out and split == "all":
        raise DataError(f"{folder} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return out


def _folder_pictures(folder, split: str, side: int) -> list[np.ndarray]:
    from visiondata.wallpapers import read_reduced

    return [read_reduced(p, side) for p in folder_paths(folder, split)]


def _note(part: str, err: Exception) -> None:
    print(f"photo_mix: skipping {part}: {str(err).splitlines()[0]}", file=sys.stderr)


def training_images(size: int = 64, n: int = 20000, parts: Sequence[str] = ("wallpapers", "tuxpaint", "emoji"),
                    folder=None, seed: int = 0, min_frac: float = 0.3) -> np.ndarray:
    """uint8 (N, size, size, 3), N <= n: the parts' training pictures, shuffled.

    Crop sources (wallpapers, folder) share what the fixed-size parts (stamps, emoji) leave of `n`;
    emoji are at most a quarter of `n`. Raises MissingDataError when no part is available."""
    from visiondata import emoji, tuxpaint, wallpapers

    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise ValueError(f"unknown photo_mix parts {bad}; choose from {', '.join(PARTS)}")
    if "folder" in parts and not folder:
        raise ValueError("part 'folder' needs folder=<path to your images>")
    rng = np.random.default_rng(seed)
    fixed, croppable = [], []
    if "tuxpaint" in parts:
        try:
            for bg in ("white", "photos"):
                fixed.append(tuxpaint.load("train", size=size, kind="photo", background=bg, seed=seed).images)
        except DataError as e:
            _note("tuxpaint", e)
    if "emoji" in parts:
        try:
            pics = np.concatenate([emoji.load(s, "train", size=size).images for s in emoji.TRAIN_STYLES])
            fixed.append(pics[rng.permutation(len(pics))[: n // 4]])
        except DataError as e:
            _note("emoji", e)
    side = max(4 * size, 256)
    if "wallpapers" in parts:
        try:
            croppable += wallpapers.load_reduced("train", side)
        except DataError as e:
            _note("wallpapers", e)
    if "folder" in parts:
        croppable += _folder_pictures(folder, "train", side)
    have = sum(len(f) for f in fixed)
    if croppable and have < n:
        fixed.append(random_square_crops(croppable, n - have, size, rng, min_frac))
    if not fixed:
        raise MissingDataError(f"none of the image sources {list(parts)} is installed; "
                               f"{wallpapers.HOW_TO_GET}, or give a folder of your own images")
    x = np.concatenate(fixed)
    return x[rng.permutation(len(x))[:n]]


def test_images(size: int = 64, parts: Sequence[str] = ("photos", "wallpapers", "tuxpaint"), folder=None,
                crops_per_wallpaper: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Held-out sets by source name -> uint8 (N, size, size, 3); sources that are not installed are left out.

    "photos": the 21 scikit photos, centre crops; "wallpapers": `crops_per_wallpaper` random crops of
    each test wallpaper (the centre crop first); "tuxpaint": the test photo stamps on white;
    "folder": centre crops of the folder's test split."""
    from visiondata import photos, tuxpaint, wallpapers
    from visiondata.images import center_crop_resize

    rng = np.random.default_rng(seed)
    out = {}
    for part in parts:
        try:
            if part == "photos":
                out[part] = photos.load(size)
            elif part == "wallpapers":
                pics = wallpapers.load_reduced("test", max(4 * size, 256))
                crops = [np.stack([center_crop_resize(p, size)] +
                                  list(random_square_crops([p], crops_per_wallpaper - 1, size, rng, 0.5)))
                         for p in pics]
                out[part] = np.concatenate(crops)
            elif part == "tuxpaint":
                out[part] = tuxpaint.load("test", size=size, kind="photo").images
            elif part == "folder":
                if not folder:
                    raise ValueError("part 'folder' needs folder=<path to your images>")
                out[part] = np.stack([center_crop_resize(p, size)
                                      for p in _folder_pictures(folder, "test", max(4 * size, 256))])
            else:
                raise ValueError(f"unknown test part {part!r}; choose from photos, wallpapers, tuxpaint, folder")
        except MissingDataError as e:
            _note(part, e)
    return out
