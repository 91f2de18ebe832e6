"""Zero-shot Fashion-MNIST classification through the frozen LLM reading LENS text.

    python -m eval.lens_zeroshot [--n 300] [--captions] [--out out/lens_zeroshot]

Each test image (the first --n of the test split, 28x28 grayscale, upsampled by the modules'
own preprocessing) becomes LENS text (tags and attributes from the contrastive model;
captions only with --captions, since the shipped captioner knows scenes, not clothes). The
LLM scores every class name as the continuation of the LENS prompt with the question
"What type of clothing is this?" (`llm.score`, summed log-prob); the best one is the
prediction. Reported beside: the LLM without vision (same question, no image text: it
always picks the same class) and the contrastive model alone (argmax of its relevance to
"a photo of a {class}"), which is the ceiling the LLM route can pass on through tags.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from backbones.cli_errors import add_debug_flag, cli_main

QUESTION = "What type of clothing is this?"


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--captions", action="store_true", help="include the scenes captioner's captions")
    p.add_argument("--clip", default="offline", help="contrastive model (default: the offline stand-in the README figures used; default: load_clip())")
    p.add_argument("--out", default="out/lens_zeroshot")
    add_debug_flag(p)
    args = p.parse_args(argv)

    from lens.pipeline import Lens
    from lens.prompt import build_prompt
    from visiondata import fashion_mnist

    t0 = time.time()
    images, labels = fashion_mnist.load("test")
    images, labels = images[: args.n], labels[: args.n]
    names = list(fashion_mnist.CLASS_NAMES)
    lens = Lens.load(clip=args.clip, captioner=None if args.captions else "none")
    if lens.tagger is None:
        raise ValueError("no contrastive model: zero-shot classification needs tags (train or pass --clip)")
    cands = [" " + c for c in names]
    outs = []
    for a in range(0, len(images), 50):
        outs += lens(images[a:a + 50], None)
    lens_scores = np.array([lens.llm.score(build_prompt(o["tags"], o["attributes"], o["captions"], QUESTION), cands)
                            for o in outs])
    base_scores = np.array(lens.llm.score(f"Question:{QUESTION}\nShort Answer:", cands))
    clip_rel = lens.tagger.clip.relevance(images, names, "a photo of a {}")
    res = {
        "n": len(labels), "captions": args.captions,
        "lens_llm_acc": float(np.mean(lens_scores.argmax(1) == labels)),
        "llm_only_acc": float(np.mean(base_scores.argmax() == labels)),
        "llm_only_prediction": names[int(base_scores.argmax())],
        "contrastive_only_acc": float(np.mean(np.asarray(clip_rel).argmax(1) == labels)),
        "chance": 0.1,
        "wall_s": round(time.time() - t0, 1),
        "example_prompt": build_prompt(outs[0]["tags"], outs[0]["attributes"], outs[0]["captions"], QUESTION),
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "fashion_mnist.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: v for k, v in res.items() if k != "example_prompt"}))


if __name__ == "__main__":
    main()
