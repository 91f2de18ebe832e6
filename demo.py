"""`make demo`: the main job, end to end, on the data this machine has and the offline default models.

1. the frozen LLM (SmolLM2-135M from its PyPI package) answers a question;
2. the contrastive model (LiT, `load_clip()`) classifies Fashion-MNIST zero-shot;
3. SPAE (photos64) turns real photos into pyramids of the LLM's own words and back to pixels, with
   the bits per pixel of each depth beside JPEG and WebP files of the same bytes;
4. LENS describes real photos (ImageNet tags from the frozen EfficientNet-Lite backbone) and a
   synthetic scene (the repo's own contrastive model and captioner) in text, and the LLM answers;
   the captioner trained on real pictures names emoji drawn in a style it never saw;
5. a small head-to-head: 2-way 1-shot in-context classification with the image given to the
   frozen LLM as SPAE tokens, as LENS text, or as random tokens (the chance control), on the
   same episodes.

Steps 2 and 5 read Fashion-MNIST (Debian's dataset-fashion-mnist, or FASHION_MNIST_DIR):
without it they are skipped with one line saying how to get it. A step that fails prints one
line and the demo goes on. Pictures and tables go to out/demo/. `python demo.py --episodes N`
sets the size of step 5.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

OUT = os.path.join("out", "demo")


def step(title: str):
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)), flush=True)
    return time.perf_counter()


def fashion_mnist_or_none():
    """(x_test, y_test), or None with one line on how to get the data."""
    from visiondata import fashion_mnist
    from visiondata.errors import DataError

    try:
        return fashion_mnist.load("test")
    except DataError as e:
        print(f"note: Fashion-MNIST is not available, so steps 2 and 5 are skipped ({str(e).splitlines()[0]})")
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="the llmsight demo")
    ap.add_argument("--episodes", type=int, default=20, help="episodes of the small head-to-head")
    ap.add_argument("--debug", action="store_true", help="stop at the first failing step with its traceback")
    args = ap.parse_args(argv)
    os.makedirs(OUT, exist_ok=True)

    from backbones import load_llm

    page = []                                 # (title, printed text) per step, for out/demo/index.html
    with capture(page, "1. the frozen LLM"):
        llm = load_llm("smollm2-135m")
        state = {"llm": llm, "data": fashion_mnist_or_none(), "args": args}
        print(llm)
        q = "What is the capital of France?"
        print(f"Q: {q}\nA: {llm.generate(q, max_new_tokens=24)}")
    failed = []
    for title, fn, needs_data in STEPS:
        with capture(page, title):
            t = time.perf_counter()
            if needs_data and state["data"] is None:
                print("  skipped: needs Fashion-MNIST (see the note above)")
                continue
            try:
                fn(state)
            except Exception as e:  # one line per failing step; --debug shows the traceback
                if args.debug:
                    raise
                failed.append(title)
                print(f"  error: {type(e).__name__}: {e}".splitlines()[0])
            print(f"  ({time.perf_counter() - t:.1f}s)")
    print("\nThe full evaluation: python -m eval.headtohead --out runs/h2h (see README).")
    print(f"The demo's page: {write_page(page)}")
    if failed:
        print(f"{len(failed)} step(s) failed: {'; '.join(failed)} (python demo.py --debug shows why)")
    return 1 if failed else 0


class capture:
    """Print a step's title, then tee everything it prints to the terminal and to `page`."""

    def __init__(self, page: list, title: str):
        self.page, self.title = page, title

    def __enter__(self):
        import contextlib
        import io

        step(self.title)
        self.buf = io.StringIO()
        outer = sys.stdout

        class Tee:
            def write(_, text):
                outer.write(text)
                self.buf.write(text)

            def flush(_):
                outer.flush()

        self.redirect = contextlib.redirect_stdout(Tee())
        self.redirect.__enter__()
        return self

    def __exit__(self, *exc):
        self.redirect.__exit__(*exc)
        self.page.append((self.title, self.buf.getvalue()))
        return False


PICTURES = {"3.": ["spae_depth_grid.png"], "4.": ["lens.png"]}


def write_page(page: list) -> str:
    """out/demo/index.html: one static page with each step's text and pictures (no server needed)."""
    import html

    parts = ["<!doctype html><meta charset='utf-8'><title>llmsight demo</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}pre{background:#f4f4f4;"
             "padding:.8em;white-space:pre-wrap}img{max-width:100%;image-rendering:pixelated}</style>",
             "<h1>llmsight demo</h1><p>Written by <code>make demo</code> (<code>python demo.py</code>).</p>"]
    for title, text in page:
        parts.append(f"<h2>{html.escape(title)}</h2><pre>{html.escape(text.strip())}</pre>")
        for name in PICTURES.get(title.split()[0], []):
            if os.path.exists(os.path.join(OUT, name)) and "skipped" not in text:
                parts.append(f"<p><img src='{name}' alt='{html.escape(name)}'></p>")
    path = os.path.join(OUT, "index.html")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")
    return path


def step_contrastive(state) -> None:
    from backbones import load_clip
    from backbones.clip.evaluate import zero_shot_accuracy
    from visiondata import fashion_mnist

    x_test, y_test = state["data"]
    clip = state["clip"] = load_clip()
    acc = zero_shot_accuracy(clip, x_test[:1000], y_test[:1000], list(fashion_mnist.CLASS_NAMES))
    print(f"Fashion-MNIST zero-shot accuracy on 1,000 test images: {100 * acc:.1f}%")


def step_spae(state) -> None:
    from backbones import load_vision
    from eval.spae_photos import depth_picture, rate_distortion
    from PIL import Image
    from spae import load_tokenizer
    from visiondata import photos

    tok = state["tokenizer"] = load_tokenizer(llm=state["llm"])      # photos64: real images at 64 px
    print(tok)
    x = photos.load(64)                    # the 21 scikit photos: never seen in training
    pyr = tok.encode(x[:4])
    for name, layers in zip(photos.NAMES[:4], tok.to_text(pyr)):
        print(f"  {name:>10}: layer 1 {layers[0]}  layer 2 {layers[1]}")
    res = rate_distortion(tok, x, load_vision(), fd=False)
    print("  depth  tokens  bits/pixel  SPAE PSNR   JPEG at the same bytes   WebP at the same bytes")
    for r in res["rows"][2:]:
        codec = [f"{r[c]['psnr']:5.1f} dB ({r[c]['fits']}/21 fit)" if r[c]["fits"] else "no file that small"
                 for c in ("JPEG", "WebP")]
        print(f"  {r['depth']:>5}  {r['tokens']:>6}  {r['bpp']:>10.2f}  {r['spae']['psnr']:6.1f} dB   "
              f"{codec[0]:<24} {codec[1]}")
    Image.fromarray(depth_picture(tok, x[:6], res)).save(os.path.join(OUT, "spae_depth_grid.png"))
    print(f"  reconstructions by depth, JPEG and WebP at the full pyramid's bytes -> {OUT}/spae_depth_grid.png")


def step_lens(state) -> None:
    from PIL import Image

    from lens import Lens
    from visiondata import photos, preview, scenes

    llm = state["llm"]
    photo_lens = Lens.load(llm=llm, clip=None, captioner="none", vision="efficientnet-lite0")
    names = ["chelsea", "coffee", "camera", "motorcycle_right"]
    paths = [photos.paths()[photos.NAMES.index(n)] for n in names]
    question = "What is in this picture?"
    images, texts = [], []
    for name, path, out in zip(names, paths, photo_lens(paths, [question] * len(paths))):
        print(f"  photo {name}: tags ({out['sources']['tags'][0]}) {out['tags'][:6]}\n"
              f"         Q: {question}  A: {out['answer']}")
        images.append(photos.load(size=128)[photos.NAMES.index(name)])
        texts.append(", ".join(out["tags"][:3]) + f" -> {out['answer']}")
    caption_fluent_emoji(llm, photo_lens.photo_tagger.backbone)
    toy_lens = state["lens"] = Lens.load(llm=llm, clip=state.get("clip", "default"))
    scene = scenes.generate(1, size=64, seed=7, split="test")
    (q, truth) = scene.qa[0][0]
    out = toy_lens(scene.images, [q])[0]
    print(f"  scene (toy models, trained on scenes): tags {out['tags']}\n         captions {out['captions'][:2]}\n"
          f"         Q: {q}  A: {out['answer']}  (truth: {truth})")
    images.append(np.asarray(Image.fromarray(scene.images[0]).resize((128, 128), Image.NEAREST)))
    texts.append("; ".join(out["captions"][:1] + out["tags"][:2]))
    Image.fromarray(preview.contact_sheet(np.stack(images), texts, cols=len(images))).save(os.path.join(OUT, "lens.png"))
    print(f"  LENS text beside the images -> {OUT}/lens.png")


def caption_fluent_emoji(llm, backbone) -> None:
    """The captioner trained on real pictures, on emoji drawn in the Fluent style it never saw."""
    from lens.caption import Captioner
    from visiondata import emoji
    from visiondata.errors import DataError

    try:
        fluent = emoji.load(style="fluent-flat", split="train")
    except DataError as e:
        print(f"  (Fluent emoji not set up, so no captions of them: {str(e).splitlines()[0]})")
        return
    cap = Captioner.load("real", decode=llm.decode, vision=backbone)
    pick = sorted(np.random.default_rng(0).choice(len(fluent.names), 3, replace=False))  # not hand-picked
    for i, text in zip(pick, cap.caption(fluent.images[pick])):
        print(f"  Fluent emoji '{fluent.names[i]}' (a style no model trained on): captioner says {text!r}")


def step_headtohead(state) -> None:
    from eval import fewshot
    from lens import Lens
    from visiondata import episodes, fashion_mnist

    from spae import load_tokenizer

    llm, n = state["llm"], state["args"].episodes
    tok = load_tokenizer("fmnist32", llm=llm)       # the Fashion-MNIST tokenizer
    lens = state.get("lens") or Lens.load(llm=llm)
    x_test, y_test = state["data"]
    eps = episodes.sample(y_test, ways=2, shots=1, queries=1, n_episodes=n, seed=0)
    for e in eps:
        e.class_names = [fashion_mnist.CLASS_NAMES[c] for c in e.classes]
    spae = fewshot.SpaeCoder(tok, layers=2)
    coders = [spae, fewshot.RandomCoder(np.asarray(tok.vocab.llm_ids), spae.length, seed=0),
              # tags and attributes, as eval.fewshot's lens method (captions are for VQA)
              fewshot.TextCoder(lambda ims: [Lens.text({**o, "captions": []}) for o in lens.describe_images(ims)], llm)]
    rows, choices = [], []
    for coder in coders:
        records, s = fewshot.run(llm, coder, eps, x_test, open_ended_eval=False, progress=False)
        rows.append(f"| {coder.name} | {100 * s['accuracy']:.1f} ± {100 * s['ci95']:.1f} | {s['mean_prompt_tokens']:.0f} |")
        first = [r for r in records if r["episode"] == 0]
        choices.append(f"{coder.name}: " + ", ".join(f"a {r['label']} -> the LLM chose {r['pred']}" for r in first))
    e0 = eps[0]
    print(f"  episode 1: one support image each of {' and '.join(e0.class_names)}, then each query:")
    for line in choices:
        print("    " + line)
    table = "\n".join(["| image as | accuracy (%) | prompt tokens |", "|---|---|---|"] + rows)
    print(table)
    with open(os.path.join(OUT, "headtohead.md"), "w") as f:
        f.write(f"Fashion-MNIST 2-way 1-shot, {n} episodes (seed 0), closed-form scoring\n\n{table}\n")
    print(f"  -> {OUT}/headtohead.md")


# (title, function, needs Fashion-MNIST)
STEPS = [
    ("2. contrastive model (LiT on the frozen ImageNet backbone; load_clip())", step_contrastive, True),
    ("3. SPAE: real photos -> pyramids of LLM words -> images, beside JPEG and WebP", step_spae, False),
    ("4. LENS: photos and a scene -> text -> the LLM answers", step_lens, False),
    ("5. head to head: Fashion-MNIST 2-way 1-shot", step_headtohead, True),
]


if __name__ == "__main__":
    sys.exit(main())
