"""Captioning BLEU-4 and CIDEr of the LENS captioner (pycocoevalcap's scorers, PTB tokenizer).

    python -m eval.captioning [--captioner DIR] [--split test] [--n 500] [--beam 4] [--out out/captioning]

Scores beam-search captions of synthetic scenes (`visiondata.scenes`, split test or heldout,
seed 1000 so the images differ from any training seed) against the scenes' 6 reference
captions each; or, with `--coco_json JSON --coco_image_dir DIR`, a COCO caption set.
Writes metrics.json and samples.png (images with their predicted and a reference caption).
SPICE is not computed: it needs a download.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def coco_scores(references: list[list[str]], predictions: list[str], tokenize: bool = True) -> dict:
    """{"bleu1".."bleu4", "cider"} of predictions against references (pycocoevalcap)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} reference lists but {len(predictions)} predictions")
    gts = {i: list(r) for i, r in enumerate(references)}
    res = {i: [p] for i, p in enumerate(predictions)}
    if tokenize:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        ptb = PTBTokenizer()
        gts = ptb.tokenize({i: [{"caption": c} for c in r] for i, r in gts.items()})
        res = ptb.tokenize({i: [{"caption": c} for c in r] for i, r in res.items()})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {**{f"bleu{i + 1}": float(b) for i, b in enumerate(bleu)}, "cider": float(cider)}


def sample_sheet(images, predictions, references, path: str, cols: int = 4, title: str = "") -> None:
    """A PNG grid: each image with its predicted caption (P) and first reference (R)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import textwrap

    n = len(images)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 3.4, rows * 3.6))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, img, p, r in zip(np.atleast_1d(axes).ravel(), images, predictions, references):
        ax.imshow(img, interpolation="nearest")
        ax.set_title("P: " + textwrap.fill(p, 34) + "\nR: " + textwrap.fill(r, 34), fontsize=7, loc="left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def load_eval_set(args, image_size: int):
    if args.coco_json:
        from visiondata.formats import read_coco_captions

        cs = read_coco_captions(args.coco_json, image_dir=args.coco_image_dir, size=image_size)
        keep = [i for i, c in enumerate(cs.captions) if c][: args.n]
        return np.asarray(cs.images)[keep], [cs.captions[i] for i in keep], "coco"
    from visiondata import scenes

    s = scenes.generate(args.n, size=image_size, seed=args.seed, split=args.split, background=args.background)
    return s.images, s.captions, f"scenes-{args.split}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--captioner", default=None, help="export dir (default: the shipped lens/pretrained/captioner)")
    p.add_argument("--split", default="test", choices=["test", "heldout", "train"])
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--background", default="plain")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--length_penalty", type=float, default=0.6)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--coco_json", default="")
    p.add_argument("--coco_image_dir", default="")
    p.add_argument("--out", default="out/captioning")
    args = p.parse_args(argv)

    from backbones import load_llm
    from lens.caption import Captioner

    t0 = time.time()
    llm = load_llm("smollm2-135m")
    cap = Captioner.load(args.captioner, decode=llm.decode)
    images, refs, name = load_eval_set(args, cap.cfg.image_size)
    preds = []
    for a in range(0, len(images), args.batch):
        preds += cap.caption(images[a:a + args.batch], beam=args.beam, length_penalty=args.length_penalty)
    scores = coco_scores(refs, preds)
    out = {"set": name, "n": len(preds), "beam": args.beam, "length_penalty": args.length_penalty,
           "captioner": args.captioner or "lens/pretrained/captioner", **scores,
           "wall_s": round(time.time() - t0, 1)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"metrics_{name}.json"), "w") as f:
        json.dump({**out, "examples": [{"pred": p_, "refs": r} for p_, r in zip(preds[:20], refs[:20])]}, f, indent=1)
    k = min(16, len(images))
    sample_sheet(images[:k], preds[:k], [r[0] for r in refs[:k]], os.path.join(args.out, f"samples_{name}.png"),
                 title=f"captioner on {name}: CIDEr {scores['cider']:.2f}, BLEU-4 {scores['bleu4']:.3f} (n={len(preds)})")
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
