"""Evaluate a contrastive model on the offline data: Fashion-MNIST zero-shot accuracy (10 class
prompts x 8 templates) and synthetic-scene retrieval (test split, and held-out compositions).

    python -m eval.contrastive                                 # the shipped offline model
    python -m eval.contrastive --clip runs/contrastive/export --out runs/contrastive/eval.json
    python -m eval.contrastive --clip /path/hf-clip-dir --num_scenes 1000

Prints one JSON object; `--out` also writes it. Protocol: see `backbones.clip.evaluate`.
"""
from __future__ import annotations

import argparse
import json
import time

from backbones.cli_errors import add_debug_flag, cli_main


@cli_main
def main(argv=None):
    ap = argparse.ArgumentParser(description="zero-shot evaluation of a CLIP-like model on the offline data")
    ap.add_argument("--clip", default="offline", help="load_clip argument (default: the older offline stand-in, whose figures the README quotes)")
    ap.add_argument("--num_scenes", type=int, default=1000, help="images per scenes split (6 captions each)")
    ap.add_argument("--fmnist_limit", type=int, default=None, help="first N Fashion-MNIST test images (default all)")
    ap.add_argument("--seed", type=int, default=0, help="scenes seed of the evaluation images")
    ap.add_argument("--out", default=None, help="write the JSON here too")
    add_debug_flag(ap)
    args = ap.parse_args(argv)

    from backbones import load_clip
    from backbones.clip.evaluate import evaluate_offline

    t0 = time.time()
    clip = load_clip(args.clip)
    res = evaluate_offline(clip, num_scenes=args.num_scenes, fmnist_limit=args.fmnist_limit, scene_seed=args.seed)
    res = {"model": args.clip or "offline", **res, "eval_wall_s": round(time.time() - t0, 1)}
    print(json.dumps(res, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
