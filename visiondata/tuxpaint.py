"""Tux Paint stamps: 785 captioned cut-outs (photos and cartoons) in a category tree, GPL-2.

    from visiondata import tuxpaint
    ts = tuxpaint.load(split="train", size=64, kind="all", include_symbols=False, background="white", seed=0)
    ts.images       # uint8 (N, size, size, 3): the cut-out fitted and centred on white or on a photo crop
    ts.captions     # list[str] the stamp's English caption, e.g. "A red kangaroo."
    ts.names        # list[str] its first phrase without article or period, lowercase: "red kangaroo"
    ts.categories   # list[str] top folder, e.g. "animals"
    ts.paths        # list[str] path relative to the stamps folder, e.g. "animals/marsupials/kangaroo.png"
    ts.kinds        # list[str] "cartoon" (under a cartoon/ folder) or "photo" (the rest, mostly photo cut-outs)

Read from, in order: the `root` argument, $TUXPAINT_STAMPS_DIR, or /usr/share/tuxpaint/stamps
(Debian/Ubuntu: `apt-get install tuxpaint-stamps-default`, as root). Each stamp is `x.png` with
`x.txt` whose first line is its English caption (the other lines are translations); PNGs without a
caption (mirrored copies) and SVG-only stamps are skipped. The "symbols" tree (letters, digits,
coins, chess pieces, ...) is left out unless `include_symbols`; its stamps outside cartoon/ count
as "photo" although most are drawings.

Each stamp is cropped to its opaque pixels, fitted (aspect kept) inside the square with a margin of
size/16 and centred. background="photos" puts it on a random square crop of the repo's real
photos (`visiondata.photos`), chosen from `seed` and the stamp's path, so the same stamp gets the
same background in every split. Splits are by stamp, from a hash of its relative path: 80% "train",
20% "test"; "all" is both.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re

import numpy as np

from visiondata.errors import DataError, MissingDataError

DEFAULT_ROOT = "/usr/share/tuxpaint/stamps"
ENV_VAR = "TUXPAINT_STAMPS_DIR"
SPLITS = ("train", "test", "all")
KINDS = ("all", "photo", "cartoon")
BACKGROUNDS = ("white", "photos")
TRAIN_FRACTION = 0.8
_HOW_TO_GET = (
    "Install it with `apt-get install tuxpaint-stamps-default` (as root; files go to "
    f"{DEFAULT_ROOT}), or point {ENV_VAR} (or root=...) at a copy of that stamps folder "
    "(e.g. one unpacked with `apt-get download tuxpaint-stamps-default` and `dpkg-deb -x`)."
)


@dataclasses.dataclass
class StampSet:
    images: np.ndarray      # uint8 (N, size, size, 3)
    captions: list[str]     # (N,) e.g. "A red kangaroo."
    names: list[str]        # (N,) e.g. "red kangaroo"
    categories: list[str]   # (N,) top folder, e.g. "animals"
    paths: list[str]        # (N,) relative path of the PNG
    kinds: list[str]        # (N,) "photo" | "cartoon"

    def __len__(self) -> int:
        return len(self.paths)


def resolve_root(root=None) -> str:
    """The stamps folder: `root`, else $TUXPAINT_STAMPS_DIR, else the Debian location."""
    if root is None:
        root = os.environ.get(ENV_VAR) or DEFAULT_ROOT
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise MissingDataError(f"Tux Paint stamps folder not found: {root}. {_HOW_TO_GET}")
    return root


def caption_name(caption: str) -> str:
    """"A red kangaroo." -> "red kangaroo": the first phrase, without article, quotes or end mark, lowercase."""
    text = caption.strip().strip("\"“”'‘’").strip()
    text = re.split(r"[.!?,;:(—–]| - ", text, maxsplit=1)[0]
    text = re.sub(r"^(a|an|the)\s+", "", text.strip(), flags=re.IGNORECASE)
    return text.strip().strip("\"“”'‘’").strip().lower()


def captions_of(caption: str, name: str) -> list[str]:
    """A stamp's captions for training and scoring a captioner: its own line ("A red kangaroo.") and its
    name ("red kangaroo")."""
    return list(dict.fromkeys([caption, name]))


def split_of(path: str) -> str:
    """'train' or 'test' for a stamp's relative path, from a hash of the path alone."""
    u = int.from_bytes(hashlib.sha256(f"llmsight-tuxpaint:{path}".encode()).digest()[:8], "big") / 2.0**64
    return "train" if u < TRAIN_FRACTION else "test"


@functools.lru_cache(maxsize=4)
def _index(root: str) -> tuple[dict, ...]:
    """Every captioned PNG stamp under root, sorted by path: dicts of path, caption, name, category, kind, split."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        rel_dir = os.path.relpath(d, root)
        parts = [] if rel_dir == "." else rel_dir.split(os.sep)
        for f in sorted(files):
            txt = os.path.join(d, f[:-4] + ".txt")
            if not parts or not f.lower().endswith(".png") or not os.path.isfile(txt):
                continue
            with open(txt, encoding="utf-8", errors="replace") as fh:
                caption = fh.readline().strip().lstrip("\ufeff")
            if not caption:
                continue
            rel = "/".join(parts + [f])
            out.append({"path": rel, "caption": caption, "name": caption_name(caption), "category": parts[0],
                        "kind": "cartoon" if "cartoon" in parts else "photo", "split": split_of(rel)})
    if not out:
        raise MissingDataError(f"no captioned stamps (x.png with x.txt) under {root}. {_HOW_TO_GET}")
    return tuple(sorted(out, key=lambda s: s["path"]))


def stamps(root=None) -> list[dict]:
    """The index without pixels: one dict per stamp (path, caption, name, category, kind, split)."""
    return [dict(s) for s in _index(resolve_root(root))]


def _fit(path: str, size: int) -> np.ndarray:
    """A stamp file -> uint8 (size, size, 4) RGBA: cropped to its opaque pixels, fitted and centred."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            rgba = im.convert("RGBA")
    except OSError as e:
        raise DataError(f"cannot read stamp {path}: corrupt or not an image ({e})") from e
    box = rgba.getchannel("A").getbbox()
    if box:
        rgba = rgba.crop(box)
    inner = max(1, size - 2 * max(1, round(size / 16)))
    scale = inner / max(rgba.size)
    w, h = max(1, round(rgba.width * scale)), max(1, round(rgba.height * scale))
    rgba = rgba.resize((w, h), Image.LANCZOS)  # Pillow resamples RGBA with premultiplied alpha
    canvas = Image.new("RGBA", (size, size), (255, 255, 255, 0))
    canvas.paste(rgba, ((size - w) // 2, (size - h) // 2))
    return np.asarray(canvas)


@functools.lru_cache(maxsize=2)
def _pixels(root: str, size: int) -> np.ndarray:
    """uint8 (N_all, size, size, 4) for every stamp of `_index(root)`, in its order."""
    out = np.stack([_fit(os.path.join(root, *s["path"].split("/")), size) for s in _index(root)])
    out.setflags(write=False)
    return out


def _composite(rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    """uint8 (..., 4) over uint8 (..., 3) -> uint8 (..., 3)."""
    rgb, a, bg = rgba[..., :3].astype(np.uint32), rgba[..., 3:].astype(np.uint32), background.astype(np.uint32)
    return ((rgb * a + bg * (255 - a) + 127) // 255).astype(np.uint8)


def photo_background(path: str, size: int, seed: int = 0) -> np.ndarray:
    """The photo crop behind stamp `path` for this seed: uint8 (size, size, 3)."""
    from visiondata import photos

    h = int.from_bytes(hashlib.sha256(path.encode()).digest()[:4], "big")
    return photos.random_crops(1, size=size, seed=[int(seed), h])[0]


def load(split: str = "train", size: int = 64, kind: str = "all", include_symbols: bool = False,
         background: str = "white", seed: int = 0, root=None) -> StampSet:
    """Stamps of one split and kind, sorted by path, each fitted into (size, size) on white or a photo crop."""
    for arg, value, choices in (("split", split, SPLITS), ("kind", kind, KINDS),
                                ("background", background, BACKGROUNDS)):
        if value not in choices:
            raise ValueError(f"unknown Tux Paint {arg} {value!r}; choose one of: {', '.join(choices)}")
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive int; got {size!r}")
    root = resolve_root(root)
    index = _index(root)
    keep = [i for i, s in enumerate(index)
            if (split == "all" or s["split"] == split) and (kind == "all" or s["kind"] == kind)
            and (include_symbols or s["category"] != "symbols")]
    rgba = _pixels(root, int(size))[keep]
    if background == "white":
        bg = np.full(rgba.shape[:-1] + (3,), 255, np.uint8)
    else:
        bg = np.stack([photo_background(index[i]["path"], int(size), seed) for i in keep]) if keep \
            else np.zeros((0, size, size, 3), np.uint8)
    sel = [index[i] for i in keep]
    return StampSet(
        images=_composite(rgba, bg), captions=[s["caption"] for s in sel], names=[s["name"] for s in sel],
        categories=[s["category"] for s in sel], paths=[s["path"] for s in sel], kinds=[s["kind"] for s in sel],
    )
