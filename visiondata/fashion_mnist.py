"""Fashion-MNIST: 70,000 real 28x28 grayscale photos of clothing in 10 classes.

    from visiondata import fashion_mnist
    images, labels = fashion_mnist.load("train")   # uint8 (60000, 28, 28), int64 (60000,)
    images, labels = fashion_mnist.load("test")    # uint8 (10000, 28, 28), int64 (10000,)
    fashion_mnist.CLASS_NAMES[labels[0]]           # e.g. "ankle boot"
    fashion_mnist.to_rgb(images, size=32)          # uint8 (N, 32, 32, 3) for RGB models

The four idx files (`train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
`t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`; gzipped or not) are read from, in order:
the `root` argument, the `FASHION_MNIST_DIR` environment variable, or
`/usr/share/datasets/fashion-mnist` (Debian/Ubuntu: `apt-get install dataset-fashion-mnist`).
Nothing is downloaded. A missing directory or file raises `MissingDataError`; a corrupt one
raises `DataError`, each saying what to do.
"""

from __future__ import annotations

import functools
import gzip
import os
import zlib

import numpy as np

from visiondata.errors import DataError, MissingDataError

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "FASHION_MNIST_DIR"
CLASS_NAMES = [
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]
# Everyday names of each class (the class name first), for training text that says "pants" as well
# as "trouser". A name that belongs to another class too ("shirt" for a t-shirt) is left out.
CLASS_ALIASES = {
    "t-shirt": ["t-shirt", "tee", "top"],
    "trouser": ["trouser", "trousers", "pants", "jeans"],
    "pullover": ["pullover", "sweater", "jumper", "knit sweater"],
    "dress": ["dress", "gown"],
    "coat": ["coat", "jacket"],
    "sandal": ["sandal", "sandals", "heels", "flip flop"],
    "shirt": ["shirt", "blouse"],
    "sneaker": ["sneaker", "sneakers", "shoe", "trainers"],
    "bag": ["bag", "handbag", "purse"],
    "ankle boot": ["ankle boot", "boot", "boots"],
}
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_HOW_TO_GET = (
    "Install it with `apt-get install dataset-fashion-mnist` (files go to "
    f"{DEFAULT_ROOT}), or put the four idx files (e.g. train-images-idx3-ubyte.gz) in a directory "
    f"and pass it as root=... or set {ENV_VAR}=<dir>."
)
_IDX_DTYPES = {0x08: np.uint8}


def resolve_root(root=None) -> str:
    """The directory to read from: `root`, else $FASHION_MNIST_DIR, else the Debian location."""
    if root is None:
        root = os.environ.get(ENV_VAR) or DEFAULT_ROOT
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise MissingDataError(f"Fashion-MNIST directory not found: {root}. {_HOW_TO_GET}")
    return root


def _find(root: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    raise MissingDataError(f"Fashion-MNIST file {stem}.gz not found in {root}. {_HOW_TO_GET}")


def read_idx(path: str) -> np.ndarray:
    """Read an idx file (optionally gzipped) into a numpy array; `DataError` if malformed."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path}: corrupt or truncated gzip file ({e}). {_HOW_TO_GET}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an idx file of unsigned bytes (bad magic number). {_HOW_TO_GET}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: idx header is truncated. {_HOW_TO_GET}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape)) if shape else 0
    if len(raw) - header != count:
        raise DataError(
            f"{path}: header says shape {shape} ({count} bytes) but the file holds "
            f"{len(raw) - header} bytes of data (truncated or corrupt). {_HOW_TO_GET}"
        )
    return np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=header).reshape(shape)


@functools.lru_cache(maxsize=4)
def _load_cached(split: str, root: str, stamp: tuple) -> tuple[np.ndarray, np.ndarray]:
    img_stem, lbl_stem = _FILES[split]
    images = read_idx(_find(root, img_stem))
    labels = read_idx(_find(root, lbl_stem))
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"Fashion-MNIST {split} images have shape {images.shape}; expected (N, 28, 28)")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"Fashion-MNIST {split}: {images.shape[0]} images but labels of shape {labels.shape}"
        )
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise DataError(f"Fashion-MNIST {split}: label {labels.max()} out of range 0..9")
    images.setflags(write=False)
    labels = labels.astype(np.int64)
    labels.setflags(write=False)
    return images, labels


def load(split: str = "train", root=None) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 (N, 28, 28), labels int64 (N,)) for split "train" (60k) or "test" (10k)."""
    if split not in _FILES:
        raise ValueError(f"Fashion-MNIST split must be 'train' or 'test'; got {split!r}")
    root = resolve_root(root)
    stems = [_find(root, s) for s in _FILES[split]]
    stamp = tuple((p, os.path.getmtime(p), os.path.getsize(p)) for p in stems)
    images, labels = _load_cached(split, root, stamp)
    return images.copy(), labels.copy()


def to_rgb(images: np.ndarray, size: int | None = None) -> np.ndarray:
    """uint8 (N, 28, 28) -> uint8 (N, size, size, 3) (grayscale repeated; bilinear resize if size given)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"to_rgb wants uint8 (N, H, W); got {images.dtype} {images.shape}")
    if size is not None and size != images.shape[1]:
        from PIL import Image

        images = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images])
    return np.repeat(images[..., None], 3, axis=-1)
