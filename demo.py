"""`make demo`: the main job, end to end, on built-in data with the offline default models.

1. the frozen LLM (SmolLM2-135M from its PyPI package) answers a question;
2. the offline contrastive model classifies Fashion-MNIST zero-shot;
3. SPAE turns Fashion-MNIST images into pyramids of the LLM's own words and back to pixels;
4. LENS describes a synthetic scene and a real photo in text and the LLM answers a question;
5. a small head-to-head: 2-way 1-shot in-context classification with the image given to the
   frozen LLM as SPAE tokens, as LENS text, or as random tokens (the chance control), on the
   same episodes.

Pictures and tables go to out/demo/. `python demo.py --episodes N` sets the size of step 5.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

OUT = os.path.join("out", "demo")


def step(title: str):
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)), flush=True)
    return time.perf_counter()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="the llmsight demo")
    ap.add_argument("--episodes", type=int, default=20, help="episodes of the small head-to-head")
    args = ap.parse_args(argv)
    os.makedirs(OUT, exist_ok=True)

    from backbones import load_clip, load_llm
    from visiondata import fashion_mnist, photos, preview, scenes

    t = step("1. the frozen LLM")
    llm = load_llm("smollm2-135m")
    print(llm)
    q = "What is the capital of France?"
    print(f"Q: {q}\nA: {llm.generate(q, max_new_tokens=24)}   ({time.perf_counter() - t:.1f}s)")

    t = step("2. contrastive model (the repo's offline stand-in for CLIP)")
    from backbones.clip.evaluate import zero_shot_accuracy

    clip = load_clip()
    x_test, y_test = fashion_mnist.load("test")
    acc = zero_shot_accuracy(clip, x_test[:1000], y_test[:1000], list(fashion_mnist.CLASS_NAMES))
    print(f"Fashion-MNIST zero-shot accuracy on 1,000 test images: {100 * acc:.1f}%   ({time.perf_counter() - t:.1f}s)")

    t = step("3. SPAE: images -> pyramids of LLM words -> images")
    from eval.spae_eval import psnr_uint8
    from eval.spae_pictures import depth_grid
    from PIL import Image
    from spae import load_tokenizer

    tok = load_tokenizer(llm=llm)
    print(tok)
    pyr = tok.encode(x_test[:4])
    for i, layers in enumerate(tok.to_text(pyr)):
        name = fashion_mnist.CLASS_NAMES[y_test[i]]
        print(f"  {name:>12}: layer 1 {layers[0]}  layer 2 {layers[1]}")
    pyr = tok.encode(x_test[:500])
    psnr = [float(psnr_uint8(tok.decode(pyr, layers=k), x_test[:500]).mean()) for k in range(1, tok.num_layers + 1)]
    print("  PSNR by pyramid depth (500 test images): " + ", ".join(f"{k + 1}: {p:.1f} dB" for k, p in enumerate(psnr)))
    Image.fromarray(depth_grid(tok, x_test[:6])).save(os.path.join(OUT, "spae_depth_grid.png"))
    print(f"  reconstructions by depth -> {OUT}/spae_depth_grid.png   ({time.perf_counter() - t:.1f}s)")

    t = step("4. LENS: images -> text -> the LLM answers")
    from lens import Lens

    lens = Lens.load(llm=llm, clip=clip)
    scene = scenes.generate(1, size=64, seed=7, split="test")
    photo = photos.load(size=64)[:1]
    question, truth = scene.qa[0][0]
    images, texts = [], []
    for img, qq, what in [(scene.images, question, "scene"), (photo, "What is in the image?", "photo")]:
        out = lens(img, [qq])[0]
        print(f"  {what}: tags {out['tags']}\n         captions {out['captions'][:2]}\n         Q: {qq}  A: {out['answer']}"
              + (f"  (truth: {truth})" if what == "scene" else ""))
        images.append(img[0])
        texts.append("; ".join(out["captions"][:1] + out["tags"][:3]))
    Image.fromarray(preview.contact_sheet(np.stack(images), texts, cols=2)).save(os.path.join(OUT, "lens.png"))
    print(f"  LENS text beside the images -> {OUT}/lens.png")
    print(f"  ({time.perf_counter() - t:.1f}s)")

    t = step(f"5. head to head: Fashion-MNIST 2-way 1-shot, {args.episodes} episodes")
    from eval import fewshot
    from visiondata import episodes

    eps = episodes.sample(y_test, ways=2, shots=1, queries=1, n_episodes=args.episodes, seed=0)
    for e in eps:
        e.class_names = [fashion_mnist.CLASS_NAMES[c] for c in e.classes]
    spae = fewshot.SpaeCoder(tok, layers=2)
    coders = [spae, fewshot.RandomCoder(np.asarray(tok.vocab.llm_ids), spae.length, seed=0),
              # tags and attributes, as eval.fewshot's lens method (captions are for VQA)
              fewshot.TextCoder(lambda ims: [Lens.text({**o, "captions": []}) for o in lens.describe_images(ims)], llm)]
    rows = []
    for coder in coders:
        _, s = fewshot.run(llm, coder, eps, x_test, open_ended_eval=False, progress=False)
        rows.append(f"| {coder.name} | {100 * s['accuracy']:.1f} ± {100 * s['ci95']:.1f} | {s['mean_prompt_tokens']:.0f} |")
    table = "\n".join(["| image as | accuracy (%) | prompt tokens |", "|---|---|---|"] + rows)
    print(table)
    with open(os.path.join(OUT, "headtohead.md"), "w") as f:
        f.write(f"Fashion-MNIST 2-way 1-shot, {args.episodes} episodes (seed 0), closed-form scoring\n\n{table}\n")
    print(f"  -> {OUT}/headtohead.md   ({time.perf_counter() - t:.1f}s)")
    print("\nThe full evaluation: python -m eval.headtohead --out runs/h2h (see README).")


if __name__ == "__main__":
    main()
