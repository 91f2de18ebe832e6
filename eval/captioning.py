"""Captioning BLEU-4 and CIDEr of the LENS captioner (pycocoevalcap's scorers, PTB tokenizer).

    python -m eval.captioning [--captioner DIR|scenes|real] [--split test] [--n 500] [--beam 4] [--out out/captioning]
    python -m eval.captioning --captioner real --dataset fluent-flat,fluent-flat:heldout,fluent-modern,tuxpaint \
        --baselines --table docs/results/captioning_real.md

Scores beam-search captions of synthetic scenes (`visiondata.scenes`, split test or heldout,
seed 1000 so the images differ from any training seed) against the scenes' 6 reference
captions each; with `--coco_json JSON --coco_image_dir DIR`, a COCO caption set; with
`--dataset`, real pictures no captioner trained on: Fluent emoji (`fluent-flat`, `fluent-modern`:
the training concepts drawn in the held-out style; `:heldout`: concepts never seen in any style;
references: every caption phrase of the concept) and the Tux Paint test stamps (`tuxpaint[:white|photos]`;
references: the stamp's caption and its name). `--baselines` scores, on the same pictures, the
caption of the nearest training picture by the default contrastive model's image tower (the pairs of
train/configs/captioner_real.py) and the shipped scenes captioner.
Writes metrics_SET.json and samples_SET.png (images with their predicted and a reference caption).
SPICE is not computed: it needs a download.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from backbones.cli_errors import add_debug_flag, cli_main


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


REAL_SETS = ("fluent-flat", "fluent-modern", "tuxpaint")


def real_eval_set(name: str, n: int):
    """"fluent-flat[:train|heldout]" or "tuxpaint[:white|photos]" -> (uint8 images at native size, reference
    lists, set name, credit line for a picture grid)."""
    from visiondata import emoji, tuxpaint

    base, _, option = name.partition(":")
    if base in ("fluent-flat", "fluent-modern"):
        split = option or "train"
        if split not in ("train", "heldout"):
            raise ValueError(f"{name!r}: the Fluent split is 'train' (training concepts, new style) or 'heldout'")
        es = emoji.load(style=base, split=split)
        return es.images[:n], [emoji.captions_for(c) for c in es.concepts][:n], f"{base}-{split}", \
            emoji.attribution([base])
    if base == "tuxpaint":
        ts = tuxpaint.load(split="test", size=96, background=option or "white", seed=0)
        return ts.images[:n], [tuxpaint.captions_of(c, nm) for c, nm in zip(ts.captions, ts.names)][:n], \
            f"tuxpaint-test-{option or 'white'}", "Tux Paint stamps (GPL-2)"
    raise ValueError(f"unknown --dataset {name!r}; choose from {', '.join(REAL_SETS)} (with :heldout, :white or :photos)")


class NearestCaption:
    """The caption of the nearest training picture by the default contrastive model's image tower: the
    baseline a captioner must beat (it can only repeat captions it has seen)."""

    def __init__(self, clip, features: np.ndarray, captions: list[list[str]]):
        """clip: a LiT model (encode_features); features (M, F): the training pictures' backbone features."""
        self.clip = clip
        self.pool = clip.encode_features(features)            # (M, D) unit rows
        self.captions = [c[0] for c in captions]

    @classmethod
    def from_training_pairs(cls, cache_dir: str, backbone=None) -> "NearestCaption":
        """Over the pairs of train/configs/captioner_real.py (features cached under cache_dir/features);
        `backbone`: an already loaded EfficientNet-Lite0 to reuse (default: the contrastive model's)."""
        from backbones import load_clip
        from train.captioner import real_features
        from train.configs.captioner_real import get_config

        clip = load_clip()
        feats, caps = real_features(get_config(), "train", cache_dir, backbone=backbone or clip.vision_backbone)
        return cls(clip, feats, caps)

    def __call__(self, features: np.ndarray) -> list[str]:
        """Backbone features (B, F) -> the nearest training picture's first caption, per row."""
        sims = self.clip.encode_features(features) @ self.pool.T   # (B, M)
        return [self.captions[j] for j in np.argmax(sims, axis=1)]


def caption_all(cap, images, args, features=None) -> list[str]:
    preds = []
    for a in range(0, len(images), args.batch):
        kw = {"features": features[a:a + args.batch]} if features is not None else {"images": images[a:a + args.batch]}
        preds += cap.caption(**kw, beam=args.beam, length_penalty=args.length_penalty)
    return preds


def table(rows: list[dict]) -> str:
    lines = ["| set | n | method | BLEU-1 | BLEU-4 | CIDEr |", "|---|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['set']} | {r['n']} | {r['method']} | {r['bleu1']:.3f} | {r['bleu4']:.3f} | {r['cider']:.3f} |")
    return "\n".join(lines)


def evaluate_real(args, cap, llm) -> list[dict]:
    """Every --dataset set: the captioner, and with --baselines the nearest-neighbour caption and the
    shipped scenes captioner; -> one row per (set, method)."""
    from lens.caption import Captioner

    vision = cap.vision
    if vision is None:
        from backbones import load_vision

        vision = load_vision("efficientnet-lite0")
    nearest = NearestCaption.from_training_pairs(args.features_cache or args.out, vision) if args.baselines else None
    previous = Captioner.load("scenes", decode=llm.decode) if args.baselines else None
    rows = []
    for name in args.dataset.split(","):
        images, refs, set_name, credit = real_eval_set(name.strip(), args.n)
        feats = vision.embed(images)                                      # (B, F), once per set
        methods = {"captioner": caption_all(cap, images, args, feats if cap.cfg.encoder == "features" else None)}
        if args.baselines:
            methods["nearest training caption"] = nearest(feats)
            methods["scenes captioner (previous)"] = caption_all(previous, images, args)
        for method, preds in methods.items():
            rows.append({"set": set_name, "n": len(preds), "method": method, **coco_scores(refs, preds),
                         "examples": [{"pred": p_, "refs": r} for p_, r in zip(preds[:12], refs[:12])]})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "examples"}), file=sys.stderr)
        k = min(16, len(images))
        sc = rows[-len(methods)]
        sample_sheet(images[:k], methods["captioner"][:k], [r[0] for r in refs[:k]],
                     os.path.join(args.out, f"samples_{set_name}.png"),
                     title=f"captioner on {set_name}: CIDEr {sc['cider']:.2f}, BLEU-4 {sc['bleu4']:.3f} "
                           f"(n={sc['n']}). {credit}")
    return rows


def write_table(args, rows: list[dict]) -> None:
    cmd = "python -m eval.captioning " + " ".join(
        x for x in [f"--captioner {args.captioner}" if args.captioner else "", f"--dataset {args.dataset}",
                    "--baselines" if args.baselines else "", f"--beam {args.beam}", f"--n {args.n}"] if x)
    text = (f"# Captioning real pictures no captioner trained on\n\nWritten by `{cmd}` "
            f"(pycocoevalcap BLEU and CIDEr, PTB tokenizer; beam {args.beam}, length penalty {args.length_penalty}).\n\n"
            + table(rows) + "\n\nExamples (captioner, first 4 per set):\n\n"
            + "\n".join(f"- {r['set']}: " + "; ".join(f"*{e['pred']}* (ref: {e['refs'][0]})" for e in r["examples"][:4])
                        for r in rows if r["method"] == "captioner") + "\n")
    os.makedirs(os.path.dirname(os.path.abspath(args.table)), exist_ok=True)
    with open(args.table, "w") as f:
        f.write(text)


def load_eval_set(args, image_size: int):
    if args.coco_json:
        from visiondata.formats import read_coco_captions

        cs = read_coco_captions(args.coco_json, image_dir=args.coco_image_dir, size=image_size)
        keep = [i for i, c in enumerate(cs.captions) if c][: args.n]
        return np.asarray(cs.images)[keep], [cs.captions[i] for i in keep], "coco"
    from visiondata import scenes

    s = scenes.generate(args.n, size=image_size, seed=args.seed, split=args.split, background=args.background)
    return s.images, s.captions, f"scenes-{args.split}"


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--captioner", default=None,
                   help="export dir, or a shipped one: scenes (the default) or real")
    p.add_argument("--dataset", default="", help="comma-separated real sets: fluent-flat[:heldout], "
                   "fluent-modern[:heldout], tuxpaint[:white|photos] (default: synthetic scenes)")
    p.add_argument("--baselines", action="store_true",
                   help="with --dataset: also the nearest training caption and the shipped scenes captioner")
    p.add_argument("--features_cache", default="", help="with --baselines: a folder whose features/ caches the "
                   "training pictures' backbone features (e.g. the captioner's workdir; default --out)")
    p.add_argument("--table", default="", help="with --dataset: write the result table (Markdown) here")
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
    add_debug_flag(p)
    args = p.parse_args(argv)
    if args.baselines and not args.dataset:
        raise ValueError("--baselines compares on real pictures: add --dataset (e.g. fluent-flat,tuxpaint)")

    from backbones import load_llm
    from lens.caption import Captioner

    t0 = time.time()
    llm = load_llm("smollm2-135m")
    cap = Captioner.load(args.captioner, decode=llm.decode)
    if args.dataset:
        os.makedirs(args.out, exist_ok=True)
        rows = evaluate_real(args, cap, llm)
        summary = {"captioner": args.captioner or "scenes", "beam": args.beam, "length_penalty": args.length_penalty,
                   "rows": rows, "wall_s": round(time.time() - t0, 1)}
        with open(os.path.join(args.out, "metrics_real.json"), "w") as f:
            json.dump(summary, f, indent=1)
        if args.table:
            write_table(args, rows)
        print(table(rows))
        return
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
    main()
