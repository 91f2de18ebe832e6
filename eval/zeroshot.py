"""Zero-shot classification and retrieval of a contrastive model on every offline dataset, beside baselines.

    python -m eval.zeroshot --models lit offline imagenet-names chance --json docs/results/zeroshot.json

Datasets (`--datasets`, default all):
- `fmnist`: Fashion-MNIST test, the 10 class names.
- `emoji-heldout`: Noto emoji of the 20% of concepts no model trains on, among those concepts' names.
- `emoji-fluent-flat`, `emoji-fluent-modern`: the held-out Fluent style, every joined concept, among all
  their names (concepts, not drawings: no Fluent image is ever trained on).
- `tuxpaint-names`, `tuxpaint-categories`: Tux Paint test stamps on white, among all test captions'
  names, and among the category folders' names.
- `scenes`: synthetic scenes test, retrieval over all captions.

For each: top-1 and top-5 accuracy with a prompt ensemble (each class's text embedding is the
normalised mean over templates), and image->text R@1/5/10 (a hit when a retrieved class is the
image's own). Models (`--models`): `lit` (the default `load_clip()`), `offline` (the previous
stand-in trained on scenes and Fashion-MNIST), any checkpoint directory, and two baselines:
`chance` (expected accuracy k/N) and `imagenet-names` (no text tower: a name scores the summed
ImageNet probability of the classes whose names or WordNet hypernyms contain its head noun).
"""
from __future__ import annotations

import argparse
import json
import os
import re
from typing import Sequence

import numpy as np

from backbones.cli_errors import add_debug_flag, cli_main

EMOJI_TEMPLATES = ("an emoji of {}.", "{}", "an icon of {}.", "a cartoon of {}.")
PHOTO_TEMPLATES = ("a photo of a {}.", "{}", "a picture of a {}.")
DATASETS = ("fmnist", "emoji-heldout", "emoji-fluent-flat", "emoji-fluent-modern", "tuxpaint-names",
            "tuxpaint-categories", "scenes")


def load_dataset(name: str, limit: int | None):
    """-> (images uint8 (N, H, W[, 3]), labels (N,), class names, templates)."""
    if name == "fmnist":
        from backbones.clip.evaluate import FMNIST_TEMPLATES
        from visiondata import fashion_mnist

        x, y = fashion_mnist.load("test")
        return x[:limit], y[:limit], list(fashion_mnist.CLASS_NAMES), FMNIST_TEMPLATES
    if name.startswith("emoji-"):
        from visiondata import emoji

        style, split = ("google", "heldout") if name == "emoji-heldout" else (name[len("emoji-"):], "all")
        ds = emoji.load(style=style, split=split, size=64)
        classes = sorted(set(ds.names))
        y = np.array([classes.index(n) for n in ds.names])
        return ds.images[:limit], y[:limit], classes, EMOJI_TEMPLATES
    if name.startswith("tuxpaint-"):
        from visiondata import tuxpaint

        ts = tuxpaint.load(split="test", size=96, background="white")
        labels = ts.names if name == "tuxpaint-names" else ts.categories
        classes = sorted(set(labels))
        y = np.array([classes.index(n) for n in labels])
        return ts.images[:limit], y[:limit], classes, PHOTO_TEMPLATES
    raise ValueError(f"unknown dataset {name!r}; choose from {DATASETS}")


def class_embeddings(clip, classes: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    emb = clip.encode_text([t.format(c) for c in classes for t in templates])
    emb = emb.reshape(len(classes), len(templates), -1).mean(1)
    return emb / np.linalg.norm(emb, axis=-1, keepdims=True)


def scores_clip(clip, images, classes, templates) -> np.ndarray:
    """(N, C) cosine of each image with each class's prompt-ensemble embedding."""
    return clip.encode_image(images) @ class_embeddings(clip, classes, templates).T


def _head(name: str) -> str:
    words = re.findall(r"[a-z]+", name.lower())
    return words[-1] if words else name.lower()


def scores_imagenet_names(backbone, images, classes) -> np.ndarray:
    """(N, C): a class name's score is the summed probability of the ImageNet classes whose lemmas or WordNet
    hypernym names end in the name's head noun."""
    from backbones.vision import imagenet

    words = []
    for c in range(1000):
        names = imagenet.lemmas()[c] + imagenet.hypernym_chain(c)
        words.append({_head(n) for n in names})
    match = np.array([[_head(name) in words[c] for c in range(1000)] for name in classes], np.float32)  # (C, 1000)
    x = np.asarray(images)
    if x.ndim == 3:
        x = np.repeat(x[..., None], 3, -1)
    return backbone.probabilities(x) @ match.T


def metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    order = np.argsort(-scores, axis=1, kind="stable")
    rank = np.argmax(order == labels[:, None], axis=1)                  # 0 = best
    return {"n": int(len(labels)), "classes": int(scores.shape[1]), "top1": float(np.mean(rank < 1)),
            "top5": float(np.mean(rank < 5)), "r@10": float(np.mean(rank < 10))}


def evaluate(model_name: str, dataset: str, limit: int | None = None) -> dict:
    if dataset == "scenes":
        return scenes_row(model_name, limit)
    x, y, classes, templates = load_dataset(dataset, limit)
    if model_name == "chance":
        n = len(classes)
        return {"n": int(len(y)), "classes": n, "top1": 1 / n, "top5": min(5, n) / n, "r@10": min(10, n) / n}
    if model_name == "imagenet-names":
        from backbones import load_vision

        return metrics(scores_imagenet_names(load_vision(), x, classes), y)
    return metrics(scores_clip(_clip(model_name), x, classes, templates), y)


def scenes_row(model_name: str, limit: int | None) -> dict:
    if model_name in ("chance", "imagenet-names"):
        return {}
    from backbones.clip.evaluate import retrieval
    from visiondata import scenes

    clip = _clip(model_name)
    s = scenes.generate(limit or 500, size=64, seed=0, split="test")
    return retrieval(clip, s.images, s.captions)


_CLIPS: dict = {}


def _clip(name: str):
    if name not in _CLIPS:
        from backbones import load_clip

        _CLIPS[name] = load_clip(None if name == "lit" else name)
    return _CLIPS[name]


def write_table(rows: list[dict], out: str) -> str:
    lines = ["| dataset | model | images | classes | top-1 | top-5 | R@10 |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "top1" in r:
            lines.append(f"| {r['dataset']} | {r['model']} | {r['n']} | {r['classes']} | {100 * r['top1']:.1f}% | "
                         f"{100 * r['top5']:.1f}% | {100 * r['r@10']:.1f}% |")
        elif "i2t_r1" in r:
            lines.append(f"| {r['dataset']} (i2t R@1 / R@5) | {r['model']} | {r['images']} | {r['captions']} captions "
                         f"| {100 * r['i2t_r1']:.1f}% | {100 * r['i2t_r5']:.1f}% | |")
    md = "\n".join(lines) + "\n\nWritten by `python -m eval.zeroshot`.\n"
    if out:
        with open(os.path.splitext(out)[0] + ".md", "w") as f:
            f.write(md)
    return md


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["lit", "offline", "imagenet-names", "chance"])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--limit", type=int, default=None, help="at most this many images per dataset")
    p.add_argument("--json", default=None, help="write rows here (and a .md table beside it)")
    add_debug_flag(p)
    args = p.parse_args(argv)
    from visiondata.errors import DataError

    rows = []
    for dataset in args.datasets:
        for model in args.models:
            try:
                row = evaluate(model, dataset, args.limit)
            except DataError as e:
                print(f"skipped {dataset}: {str(e).splitlines()[0]}")
                break
            if row:
                rows.append({"dataset": dataset, "model": model, **row})
                print(json.dumps(rows[-1]), flush=True)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    print(write_table(rows, args.json))
    return rows


if __name__ == "__main__":
    main()
