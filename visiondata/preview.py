"""Contact sheets: a PNG grid of samples with their captions / labels under each image.

    python -m visiondata.preview --dataset scenes|fashion_mnist|photos|emoji|tuxpaint --out sheet.png
        [--seed N] [--n 16] [--size 64] [--split train] [--background plain|photo|mixed|white|photos]
        [--cols 4] [--style google|twitter|fluent-flat|fluent-modern|fluent-high-contrast|all]
        [--kind all|photo|cartoon]

    from visiondata import preview
    preview.contact_sheet(images, texts, cols=4, footer=None) -> uint8 (H, W, 3)   # images uint8 (N, h, w, 3|none)

Scenes show their label, one caption and one question with its answer; Fashion-MNIST shows the
class name and the index in its split (a seeded random sample); photos show their names. Emoji
(a seeded sample of one style's split, or with --style all the same concepts in every style, one
row each) show caption, concept and style; Tux Paint stamps (--kind, and --background
plain|white for white, else photo crops) show caption and path. Sheets of emoji and stamps carry
the artwork's credit line as a footer (`footer_for`): Twemoji's CC-BY 4.0 requires it.
"""

from __future__ import annotations

import argparse
import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from backbones.cli_errors import add_debug_flag, cli_main

CELL = 192      # pixels per image in the sheet
LINE = 14       # text line height
CHARS = 30      # wrap width in characters


def _font():
    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def contact_sheet(images: np.ndarray, texts: list[str], cols: int = 4, cell: int = CELL,
                  text_lines: int = 5, footer: str | None = None) -> np.ndarray:
    """Grid of images (nearest-neighbour upscaled to `cell`) with wrapped text below each, and an
    optional footer line (credits) under the grid."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(f"contact_sheet wants uint8 (N, H, W) or (N, H, W, 3); got {images.dtype} {images.shape}")
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if len(texts) != len(images):
        raise ValueError(f"{len(images)} images but {len(texts)} texts")
    n = len(images)
    rows = max(1, -(-n // cols))
    pad = 6
    cell_h = cell + pad + text_lines * LINE + pad
    width = cols * (cell + pad) + pad
    foot = textwrap.wrap(footer, max(20, width // 7)) if footer else []
    sheet = Image.new("RGB", (width, rows * cell_h + pad + len(foot) * LINE + (pad if foot else 0)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = _font()
    for i, (im, text) in enumerate(zip(images, texts)):
        r, c = divmod(i, cols)
        x, y = pad + c * (cell + pad), pad + r * cell_h
        sheet.paste(Image.fromarray(im).resize((cell, cell), Image.NEAREST), (x, y))
        lines = []
        for para in str(text).split("\n"):
            lines.extend(textwrap.wrap(para, CHARS) or [""])
        for k, line in enumerate(lines[:text_lines]):
            draw.text((x, y + cell + pad // 2 + k * LINE), line, fill=(0, 0, 0), font=font)
    for k, line in enumerate(foot):
        draw.text((pad, rows * cell_h + pad + k * LINE), line, fill=(60, 60, 60), font=font)
    return np.asarray(sheet)


def footer_for(dataset: str, style: str = "google") -> str | None:
    """The credit line a sheet of `dataset` must carry (None where none is needed)."""
    if dataset == "emoji":
        from visiondata import emoji

        return "Emoji: " + emoji.attribution(emoji.STYLES if style == "all" else [style])
    if dataset == "tuxpaint":
        return "Stamps: Tux Paint (tuxpaint-stamps-default), GPL-2"
    return None


def samples(dataset: str, n: int = 16, seed: int = 0, size: int = 64, split: str = "train",
            background: str = "mixed", style: str = "google", kind: str = "all") -> tuple[np.ndarray, list[str]]:
    """(images, texts) to show for a dataset (`style`: emoji only; `kind`: tuxpaint only)."""
    if dataset == "scenes":
        from visiondata import scenes

        s = scenes.generate(n, size=size, seed=seed, split=split, background=background)
        texts = []
        for i in range(n):
            q, a = s.qa[i][int(np.random.default_rng([seed, i]).integers(len(s.qa[i])))]
            texts.append(f"[{s.class_names[s.labels[i]]}]\n{s.captions[i][0]}\nQ: {q} A: {a}")
        return s.images, texts
    if dataset == "fashion_mnist":
        from visiondata import fashion_mnist

        split = split if split in ("train", "test") else "test"
        x, y = fashion_mnist.load(split)
        idx = np.sort(np.random.default_rng(seed).choice(len(x), size=n, replace=False))
        return x[idx], [f"{fashion_mnist.CLASS_NAMES[y[i]]}\n{split} #{i}" for i in idx]
    if dataset == "photos":
        from visiondata import photos

        x = photos.load(size)
        return x[:n], photos.NAMES[:n]
    if dataset == "emoji":
        from visiondata import emoji

        rng = np.random.default_rng(seed)
        if style != "all":
            ds = emoji.load(style, split, size)
            idx = np.sort(rng.choice(len(ds), size=min(n, len(ds)), replace=False))
            return ds.images[idx], [f"{ds.captions[i]}\n{ds.concepts[i]} {style}" for i in idx]
        sets = [emoji.load(s, split, size) for s in emoji.STYLES]
        common = sorted(set.intersection(*(set(d.concepts) for d in sets)), key=sets[0].concepts.index)
        picked = sorted(rng.choice(len(common), size=min(max(1, n // len(sets)), len(common)), replace=False))
        images, texts = [], []
        for j in picked:
            for d in sets:
                i = d.concepts.index(common[j])
                images.append(d.images[i])
                texts.append(f"{d.names[i]}\n{d.style}")
        return np.stack(images), texts
    if dataset == "tuxpaint":
        from visiondata import tuxpaint

        bg = "white" if background in ("plain", "white") else "photos"
        ts = tuxpaint.load(split, size, kind=kind, background=bg, seed=seed)
        idx = np.sort(np.random.default_rng(seed).choice(len(ts), size=min(n, len(ts)), replace=False))
        return ts.images[idx], [f"{ts.captions[i]}\n{ts.paths[i]}" for i in idx]
    raise ValueError(f"unknown dataset {dataset!r}; expected scenes, fashion_mnist, photos, emoji or tuxpaint")


@cli_main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m visiondata.preview", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, choices=["scenes", "fashion_mnist", "photos", "emoji", "tuxpaint"])
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--size", type=int, default=64, help="scenes and photos: image size")
    p.add_argument("--split", default="train")
    p.add_argument("--background", default="mixed", choices=["plain", "photo", "mixed", "white", "photos"],
                   help="scenes: plain|photo|mixed; tuxpaint: plain|white for white, else photo crops")
    p.add_argument("--cols", type=int, default=4)
    p.add_argument("--style", default="google", help="emoji only: a style of visiondata.emoji.STYLES, or 'all'")
    p.add_argument("--kind", default="all", choices=["all", "photo", "cartoon"], help="tuxpaint only")
    add_debug_flag(p)
    a = p.parse_args(argv)
    images, texts = samples(a.dataset, a.n, a.seed, a.size, a.split, a.background, a.style, a.kind)
    cols = 5 if a.dataset == "emoji" and a.style == "all" else a.cols
    lines = {"scenes": 8, "emoji": 3, "tuxpaint": 4}.get(a.dataset, 2)
    sheet = contact_sheet(images, texts, cols=cols, text_lines=lines, footer=footer_for(a.dataset, a.style))
    Image.fromarray(sheet).save(a.out)
    print(f"wrote {a.out}: {len(texts)} {a.dataset} samples, {sheet.shape[1]}x{sheet.shape[0]} px")


if __name__ == "__main__":
    main()
