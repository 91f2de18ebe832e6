"""Benchmark of the CLIP wrapper: text-encoding throughput over a large vocabulary (what SPAE's
semantic loss needs once per vocabulary), image-encoding throughput, and the cached reload.

    python -m eval.bench_clip                      # the offline model, 20,000 LLM vocabulary words
    python -m eval.bench_clip --clip DIR --words 40000
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from backbones.cli_errors import add_debug_flag, cli_main


@cli_main
def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", default=None)
    ap.add_argument("--words", type=int, default=20_000)
    ap.add_argument("--images", type=int, default=1024)
    add_debug_flag(ap)
    args = ap.parse_args(argv)

    from backbones import load_clip
    from backbones.clip.llm_text import llm_token_assets

    tok, _ = llm_token_assets()
    words = sorted({s.strip() for s in tok.get_vocab() if s.startswith("Ġ") and s[1:].isalpha()
                    for s in [s.replace("Ġ", " ")]})[: args.words]
    os.environ["LLMSIGHT_CACHE"] = tempfile.mkdtemp()  # a cold cache, not the user's
    clip = load_clip(args.clip)
    clip.encode_text(words[:600])  # compile the shapes
    t = time.perf_counter()
    clip.text_embeddings(words, "a photo of {}")
    cold = time.perf_counter() - t
    t = time.perf_counter()
    clip.text_embeddings(words, "a photo of {}")
    warm = time.perf_counter() - t
    images = np.random.default_rng(0).integers(0, 256, (args.images, 64, 64, 3), dtype=np.uint8)
    clip.encode_image(images[:256])
    t = time.perf_counter()
    clip.encode_image(images)
    img = time.perf_counter() - t
    res = {"model": args.clip or "offline", "words": len(words), "text_words_per_s": round(len(words) / cold, 1),
           "vocab_cold_s": round(cold, 2), "vocab_cached_s": round(warm, 3),
           "images_per_s_64px": round(args.images / img, 1)}
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
