"""In-context image generation with the frozen LLM through SPAE tokens (SPAE section 4).

    python -m eval.spae_generate [--tokenizer photos64] [--depth 4] [--shots 4] [--queries 16] \
        [--out docs/results/spae_generate]

Tasks, each on held-out images the tokenizer never trained on:
- denoise: pairs "input: <tokens of a noisy image> output: <tokens of the clean image>" in context,
  then a noisy query; the LLM writes the output tokens.
- inpaint: the same with a grey square over part of the image.
- emoji: conditional generation: pairs "emoji: <CLDR name> tokens: <tokens>" of test-concept
  emoji, then a new name; the LLM writes the pyramid, semantic layer first, then the lower ones.
Generation is greedy and constrained to the codebook's ids (`FrozenLLM.generate_ids(allowed_ids=)`),
exactly as many tokens as the pyramid has at --depth; the decoder draws them.

Measured against baselines on the same queries: the corrupted input itself, the decoder's drawing
of the corrupted input's tokens (what copying them gives), the LLM with no examples in context,
and the clean tokens (the tokenizer's ceiling). Denoise/inpaint: PSNR (dB) and backbone perceptual
distance to the clean image, and how many generated tokens equal the clean / the corrupted ones.
Emoji: how often LiT (`load_clip()`) ranks the query's own name first among all query names for
the generated picture (chance 1/queries). Writes OUT.md, OUT.json and OUT_<task>.png.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from backbones.cli_errors import add_debug_flag, cli_main

TASKS = ("denoise", "inpaint", "emoji")


def corrupt(images: np.ndarray, task: str, rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, H, W, 3) -> corrupted copies: Gaussian noise (sigma 48/255) or a grey square of half the side."""
    x = images.astype(np.float32)
    if task == "denoise":
        x = x + rng.normal(0.0, 48.0, x.shape)
    elif task == "inpaint":
        n, h, w = x.shape[:3]
        s = h // 2
        for i in range(n):
            y0, x0 = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
            x[i, y0:y0 + s, x0:x0 + s] = 128.0
    else:
        raise ValueError(f"unknown corruption {task!r}")
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def flat_ids(tok, pyr, depth: int) -> np.ndarray:
    """(N, T) LLM ids of the first `depth` layers, layer by layer, row-major within a layer."""
    return np.concatenate([np.asarray(l).reshape(len(l), -1) for l in pyr.llm_ids[:depth]], axis=1)


def unflatten(tok, ids: np.ndarray, depth: int, shape: tuple):
    """(N, T) LLM ids -> a Pyramid of `depth` layers (checked against the tokenizer's layer shapes)."""
    layers, start = [], 0
    for h, w in tok.layer_shapes()[:depth]:
        layers.append(ids[:, start:start + h * w].reshape(len(ids), h, w))
        start += h * w
    return tok.from_llm_ids(layers, shape=shape)


class Prompter:
    """Builds in-context prompts of token pyramids for one LLM: "<a> <ids>\\n<b> <ids>\\n\\n" per example."""

    def __init__(self, llm, a: str, b: str):
        self.llm, self.a, self.b = llm, llm.encode(f"{a}:"), llm.encode(f"\n{b}:")
        self.sep = llm.encode("\n\n")

    def example(self, first, second) -> list[int]:
        return self.a + list(map(int, first)) + self.b + list(map(int, second)) + self.sep

    def query(self, first) -> list[int]:
        return self.a + list(map(int, first)) + self.b


def generate(llm, prompts: list[list[int]], length: int, allowed, batch_size: int = 16) -> np.ndarray:
    """Greedy, codebook-constrained continuations of `length` tokens; all queries (up to batch_size)
    decode as one batch. Each query has its own randomly drawn examples, so there is no shared
    prefix to read once here (`generate_ids(prefix=)` is for prompts that share one)."""
    out = []
    for i in range(0, len(prompts), batch_size):
        got = llm.generate_ids(prompts[i:i + batch_size], length, allowed_ids=allowed, stop_at_eos=False)
        out += got
    return np.array(out, np.int64)


def restoration(tok, llm, images: np.ndarray, task: str, depth: int, shots: int, queries: int, seed: int,
                backbone) -> tuple[dict, np.ndarray]:
    """Denoise or inpaint `queries` images in context; examples are the other images. -> (result, picture)."""
    from eval.spae_eval import psnr_uint8
    from eval.spae_photos import perceptual_uint8

    rng = np.random.default_rng(seed)
    bad = corrupt(images, task, rng)
    clean_pyr, bad_pyr = tok.encode(images), tok.encode(bad)
    clean_ids, bad_ids = flat_ids(tok, clean_pyr, depth), flat_ids(tok, bad_pyr, depth)
    allowed = np.unique(tok.vocab.llm_ids)
    p = Prompter(llm, "input", "output")
    q_idx = np.arange(min(queries, len(images) - shots))
    with_ctx, no_ctx = [], []
    for q in q_idx:
        others = rng.choice(np.setdiff1d(np.arange(len(images)), [q]), shots, replace=False)
        ctx = sum((p.example(bad_ids[j], clean_ids[j]) for j in others), [])
        with_ctx.append(ctx + p.query(bad_ids[q]))
        no_ctx.append(p.query(bad_ids[q]))
    T, shape = clean_ids.shape[1], images[q_idx].shape
    gen = {"llm in context": generate(llm, with_ctx, T, allowed), "llm, no context": generate(llm, no_ctx, T, allowed)}
    ref = images[q_idx]
    pictures = {"corrupted input": bad[q_idx],
                "decoded corrupted tokens": tok.decode(bad_pyr, layers=depth)[q_idx],
                **{k: tok.decode(unflatten(tok, v, depth, shape)) for k, v in gen.items()},
                "clean tokens (ceiling)": tok.decode(clean_pyr, layers=depth)[q_idx]}
    res = {"task": task, "queries": int(len(q_idx)), "shots": shots, "depth": depth, "tokens": int(T), "rows": {}}
    for name, pic in pictures.items():
        row = {"psnr": float(psnr_uint8(pic, ref).mean()), "perceptual": float(perceptual_uint8(backbone, ref, pic).mean())}
        if name in gen:
            row["tokens_equal_clean"] = float((gen[name] == clean_ids[q_idx]).mean())
            row["tokens_equal_corrupted"] = float((gen[name] == bad_ids[q_idx]).mean())
        res["rows"][name] = row
    return res, _grid([ref] + list(pictures.values()), ["clean"] + list(pictures))


def conditional(tok, llm, depth: int, shots: int, queries: int, seed: int) -> tuple[dict, np.ndarray]:
    """Emoji from their names in context; LiT judges whether each picture shows its own name."""
    from backbones import load_clip
    from visiondata import emoji

    rng = np.random.default_rng(seed)
    s = emoji.load("google", "test", size=tok.model.cfg.image_size)
    order = rng.permutation(len(s.images))
    q_idx, pool = order[:queries], order[queries:]
    pyr = tok.encode(s.images)
    ids = flat_ids(tok, pyr, depth)
    allowed = np.unique(tok.vocab.llm_ids)
    p = Prompter(llm, "emoji", "tokens")
    with_ctx, no_ctx = [], []
    for q in q_idx:
        others = rng.choice(pool, shots, replace=False)
        ctx = sum((p.example(llm.encode(" " + s.names[j]), ids[j]) for j in others), [])
        with_ctx.append(ctx + p.query(llm.encode(" " + s.names[q])))
        no_ctx.append(p.query(llm.encode(" " + s.names[q])))
    T, shape = ids.shape[1], s.images[q_idx].shape
    gen = {"llm in context": generate(llm, with_ctx, T, allowed), "llm, no context": generate(llm, no_ctx, T, allowed)}
    pictures = {**{k: tok.decode(unflatten(tok, v, depth, shape)) for k, v in gen.items()},
                "another emoji's tokens (chance)": tok.decode(pyr, layers=depth)[np.roll(q_idx, 1)],
                "own tokens (ceiling)": tok.decode(pyr, layers=depth)[q_idx]}
    clip = load_clip()
    text = np.asarray(clip.encode_text([f"an emoji of {s.names[q]}" for q in q_idx]))          # (Q, D)
    res = {"task": "emoji", "queries": int(len(q_idx)), "shots": shots, "depth": depth, "tokens": int(T),
           "names": [s.names[q] for q in q_idx], "rows": {}}
    for name, pic in pictures.items():
        sim = np.asarray(clip.encode_image(pic)) @ text.T                                      # (Q, Q)
        res["rows"][name] = {"own_name_first": float(np.mean(np.argmax(sim, 1) == np.arange(len(q_idx))))}
    return res, _grid([s.images[q_idx]] + list(pictures.values()), ["original"] + list(pictures))


def _grid(columns: list[np.ndarray], titles: list[str], scale: int = 2, rows: int = 8) -> np.ndarray:
    from PIL import Image, ImageDraw

    n = min(rows, len(columns[0]))
    h, w = columns[0].shape[1:3]
    H, W = h * scale, w * scale
    canvas = Image.new("RGB", (len(columns) * (W + 4), 26 + n * (H + 4)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, (col, title) in enumerate(zip(columns, titles)):
        words = title.split()
        draw.text((c * (W + 4), 1), " ".join(words[:2])[:21], fill="black")
        draw.text((c * (W + 4), 12), " ".join(words[2:])[:21], fill="black")
        for r in range(n):
            canvas.paste(Image.fromarray(col[r]).resize((W, H), Image.NEAREST), (c * (W + 4), 26 + r * (H + 4)))
    return np.asarray(canvas)


def to_markdown(results: list[dict], title: str) -> str:
    lines = [f"### {title}", ""]
    for r in results:
        lines += [f"**{r['task']}**: {r['queries']} queries, {r['shots']} examples in context, depth {r['depth']} "
                  f"({r['tokens']} tokens written per picture).", ""]
        if r["task"] == "emoji":
            lines += ["| picture | LiT ranks its own name first |", "|---|---|"]
            lines += [f"| {k} | {100 * v['own_name_first']:.1f}% |" for k, v in r["rows"].items()]
        else:
            lines += ["| picture | PSNR to clean (dB) | perceptual | tokens = clean | tokens = corrupted |",
                      "|---|---|---|---|---|"]
            for k, v in r["rows"].items():
                eq = (f"{100 * v['tokens_equal_clean']:.1f}% | {100 * v['tokens_equal_corrupted']:.1f}%"
                      if "tokens_equal_clean" in v else "- | -")
                lines.append(f"| {k} | {v['psnr']:.2f} | {v['perceptual']:.3f} | {eq} |")
        lines.append("")
    return "\n".join(lines)


@cli_main
def main(argv=None):
    from backbones import load_llm, load_vision
    from eval.report import write_md_json
    from spae import load_tokenizer
    from spae.tokenizer import _read_meta, resolve_checkpoint
    from visiondata import photo_mix
    from visiondata.images import write_image

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", default="photos64", help="shipped name or checkpoint directory")
    ap.add_argument("--depth", type=int, default=4, help="pyramid layers the LLM writes (default 4: 85 tokens)")
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--queries", type=int, default=16)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/results/spae_generate")
    add_debug_flag(ap)
    args = ap.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    if bad := [t for t in tasks if t not in TASKS]:
        ap.error(f"unknown task(s) {bad}; choose from {', '.join(TASKS)}")
    t0 = time.time()
    meta = _read_meta(resolve_checkpoint(args.tokenizer))
    llm = load_llm(meta["vocab"]["llm"])
    tok = load_tokenizer(args.tokenizer, llm=llm)
    if not 1 <= args.depth <= tok.num_layers:
        ap.error(f"--depth must be in 1..{tok.num_layers} for {args.tokenizer}")
    backbone = load_vision()
    size = tok.model.cfg.image_size
    held = photo_mix.test_images(size, parts=("photos", "wallpapers"))
    images = np.concatenate(list(held.values()))
    results = []
    for task in tasks:
        if task == "emoji":
            res, pic = conditional(tok, llm, args.depth, args.shots, args.queries, args.seed)
        else:
            res, pic = restoration(tok, llm, images, task, args.depth, args.shots, args.queries, args.seed, backbone)
        results.append(res)
        write_image(f"{args.out}_{task}.png", pic)
        print(to_markdown([res], task))
    md = to_markdown(results, f"In-context generation with {llm.name} through SPAE tokens ({args.tokenizer})")
    md += (f"\nCommand: `python -m eval.spae_generate --tokenizer {args.tokenizer} --depth {args.depth} "
           f"--shots {args.shots} --queries {args.queries} --seed {args.seed}`; {time.time() - t0:.0f} s on this machine.\n")
    write_md_json(args.out, md, {"tokenizer": args.tokenizer, "results": results})
    print(f"wrote {args.out}.md")


if __name__ == "__main__":
    main()
