"""Pictures of a trained SPAE tokenizer.

    python -m eval.spae_pictures [--checkpoint DIR] [--out docs/spae]

Writes <out>_depth_grid.png (rows: test images; columns: the input, then its reconstruction
from the first 1, 2, ..., L pyramid layers) and <out>_pyramid.png (one image and the words of
its token pyramid, layer by layer, laid out on each layer's grid).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image

from backbones.cli_errors import add_debug_flag, cli_main


def _tile(img: np.ndarray, scale: int) -> np.ndarray:
    img = img if img.ndim == 3 else img[..., None]
    img = np.repeat(img, 3, -1) if img.shape[-1] == 1 else img
    return np.kron(img, np.ones((scale, scale, 1), np.uint8))


def depth_grid(tok, images: np.ndarray, scale: int = 3, pad: int = 2) -> np.ndarray:
    """uint8 (rows*(H*scale+pad), (L+1)*(W*scale+pad), 3): input | depth 1 | ... | depth L."""
    pyr = tok.encode(images)
    cols = [images] + [tok.decode(pyr, layers=k) for k in range(1, len(pyr) + 1)]
    h, w = images.shape[1] * scale, images.shape[2] * scale
    out = np.full((len(images) * (h + pad), len(cols) * (w + pad), 3), 255, np.uint8)
    for c, col in enumerate(cols):
        for r, img in enumerate(col):
            out[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = _tile(img, scale)
    return out


def pyramid_figure(tok, image: np.ndarray, path: str, title: str = "") -> None:
    """Save a figure: the image, its full-depth reconstruction and the words of each layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pyr = tok.encode(image[None])
    words = tok.to_text(pyr)[0]
    shapes = [c.shape[1:] for c in pyr.codes]
    n = len(pyr)
    widths = [1.2, 1.2] + [max(1.2, 0.75 * s[1]) for s in shapes]
    fig, axes = plt.subplots(1, n + 2, figsize=(sum(widths) + 1, 3.2), gridspec_kw={"width_ratios": widths})
    show = lambda ax, im: ax.imshow(im if im.ndim == 3 else im, cmap="gray", vmin=0, vmax=255)
    show(axes[0], image)
    axes[0].set_title("input", fontsize=9)
    show(axes[1], tok.decode(pyr)[0])
    axes[1].set_title(f"decoded ({n} layers)", fontsize=9)
    for ax in axes[:2]:
        ax.axis("off")
    for l, (ax, ws, (h, w)) in enumerate(zip(axes[2:], words, shapes), start=1):
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_xticks([])
        ax.set_yticks([])
        size = 12 if w == 1 else 9 if w <= 2 else 6 if w <= 4 else 4
        for i in range(h):
            for j in range(w):
                ax.text(j + 0.5, i + 0.5, ws[i * w + j], ha="center", va="center", fontsize=size)
        for t in range(1, w):
            ax.axvline(t, color="0.85", lw=0.5)
        for t in range(1, h):
            ax.axhline(t, color="0.85", lw=0.5)
        ax.set_title(f"layer {l}: {h}x{w}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


@cli_main
def main(argv=None):
    from eval.spae_eval import load_test_set
    from spae import load_tokenizer
    from spae.tokenizer import DEFAULT_CHECKPOINT
    import json

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--out", default="eval_out/spae")
    p.add_argument("--rows", type=int, default=8)
    add_debug_flag(p)
    args = p.parse_args(argv)
    ckpt = args.checkpoint or DEFAULT_CHECKPOINT
    tok = load_tokenizer(ckpt)
    with open(os.path.join(ckpt, "config.json")) as f:
        meta = json.load(f)
    images, labels, names = load_test_set(meta["data"]["name"], 200)
    # one image per class first, then the rest
    order = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)][:args.rows]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    Image.fromarray(depth_grid(tok, images[order])).save(args.out + "_depth_grid.png")
    i = order[0]
    pyramid_figure(tok, images[i], args.out + "_pyramid.png", title=f"class: {names[int(labels[i])]}")
    print(f"wrote {args.out}_depth_grid.png and {args.out}_pyramid.png")


if __name__ == "__main__":
    main()
