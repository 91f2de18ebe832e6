"""Evaluate a trained SPAE tokenizer: PSNR per pyramid depth, codebook usage, semantic hit rate.

    python -m eval.spae_eval [--checkpoint DIR] [--num 2000] [--out eval_out/spae_fmnist32]

Default checkpoint: the repo's shipped one (spae/pretrained/fmnist32). Writes <out>.md (a
markdown table) and <out>.json. A tokenizer trained on real images (data "photos") is measured
on the held-out photos instead (`eval.spae_photos`): bits per pixel, PSNR, SSIM, perceptual
distance and FD-EffNet per depth beside JPEG and WebP at the same bytes, and <out>_depths.png. The semantic hit rate is how often the top layer's token
(layer 1; and any token of layers 1-2) is a word naming the image's class or a synonym
(spae.semantic.SYNONYMS).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from backbones.cli_errors import add_debug_flag, cli_main
from eval.spae_metrics import psnr_uint8


def flat_fill(images: np.ndarray) -> np.ndarray:
    """Each image filled with its per-channel median colour: what a model that draws only the
    background can reach (a PSNR reference for scenes of small objects on a plain ground)."""
    x = images if images.ndim == 4 else images[..., None]
    med = np.median(x.reshape(len(x), -1, x.shape[-1]), axis=1)[:, None, None, :]
    return np.broadcast_to(np.round(med), x.shape).astype(np.uint8).reshape(images.shape)


def object_error_ratio(decoded: np.ndarray, images: np.ndarray, threshold: int = 12) -> np.ndarray:
    """Per image: mean |decoded - image| on its object pixels over the flat fill's error there.

    Object pixels are those more than `threshold` (of 255) from the image's median colour in
    some channel. (N,) float64, NaN for an image with no object pixel. Below 1 the decoder
    draws the objects better than a model that paints only the background; a plain PSNR can
    miss this, since small objects on a plain ground carry little of it."""
    x = (images if images.ndim == 4 else images[..., None]).astype(np.float64)
    y = (decoded if decoded.ndim == 4 else decoded[..., None]).astype(np.float64)
    bg = flat_fill(images).reshape(x.shape).astype(np.float64)
    obj = np.any(np.abs(x - bg) > threshold, axis=-1)                  # (N, H, W)
    n = obj.sum(axis=(1, 2))
    err_model = (np.abs(y - x).mean(-1) * obj).sum(axis=(1, 2))
    err_fill = (np.abs(bg - x).mean(-1) * obj).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, err_model / err_fill, np.nan)


def usage_stats(codes: np.ndarray, vocab_size: int) -> dict:
    counts = np.bincount(codes.reshape(-1), minlength=vocab_size)
    p = counts[counts > 0] / counts.sum()
    return {"distinct": int((counts > 0).sum()), "fraction": float((counts > 0).mean()),
            "perplexity": float(np.exp(-(p * np.log(p)).sum()))}


def names_class(codes: np.ndarray, labels, class_names, words) -> float:
    """Fraction of images (rows of codes (N, T), codebook rows) with a token naming their class
    or a synonym (spae.semantic.SYNONYMS)."""
    from spae.semantic import class_word_rows

    rows = [set(class_word_rows(c, words, name_only=False)) for c in class_names]
    return float(np.mean([any(int(t) in rows[int(y)] for t in codes[i]) for i, y in enumerate(labels)]))


def hit_rates(tok, pyr, labels, class_names) -> dict:
    top = pyr.codes[0].reshape(len(labels), -1)                         # (N, 1)
    two = np.concatenate([c.reshape(len(labels), -1) for c in pyr.codes[:2]], 1)
    return {"top_layer": names_class(top, labels, class_names, tok.vocab.words),
            "layers_1_2": names_class(two, labels, class_names, tok.vocab.words)}


def teacher_hit_rate(targets_path: str, data_cfg: dict, words) -> dict:
    """How often the semantic loss's own target names the class: the top-1 (and any of the top-K)
    relevance word of each training image, from a trainer's WORKDIR/semantic_targets.npz. The
    top-layer hit rate of a tokenizer trained toward these targets is bounded by it in practice."""
    from spae.data import load_split
    from train.trainlib import Config

    with np.load(targets_path) as f:
        ids = f["ids"]                                                  # (N_train, K) codebook rows
    if data_cfg["name"] == "scenes" and not data_cfg.get("num_train"):
        # Scenes are rendered on demand and an export's config does not keep how many trained it:
        # the targets' rows are the first training scenes.
        data_cfg = {**data_cfg, "num_train": len(ids)}
    _, labels, class_names = load_split(Config(data_cfg), "train")
    if len(labels) != len(ids):
        raise ValueError(f"{targets_path} has targets for {len(ids)} images; the config's training split has "
                         f"{len(labels)}: pass the semantic_targets.npz of the run that trained this checkpoint")
    return {"top1": names_class(ids[:, :1], labels, class_names, words),
            "topk": names_class(ids, labels, class_names, words), "k": int(ids.shape[1])}


def latent_stats(tok, images, batch_size: int = 256) -> dict:
    """How much of the encoder output z the quantized pyramid keeps.

    quantization_error, per depth l: E||zhat_l - z||^2 / E||z||^2 over all latent positions, zhat_l
    the SAQ running average after l layers (0: z kept exactly; 1: as far off as zero).
    spread_error, per depth l: E||zhat_l - z||^2 / E||z - E z||^2, the same error against z's
    spread around its mean latent (1: no closer than that one constant vector). A latent with a
    large common offset scores a small quantization_error while losing all its variation; this
    one says how much of what differs between positions and images the pyramid keeps.
    continuous_psnr: PSNR (dB) of the decoder applied to z itself, skipping quantization (the
    ceiling of an autoencoder control trained that way; an SPAE decoder never sees z in training).
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from spae.data import from_model_images, to_model_images

    cfg = tok.model.cfg
    graphdef, state = nnx.split(tok.model)

    @jax.jit
    def stats(state, x):   # uint8 (B, S, S, C) -> (L,) error sums, ||z||^2 sum, (d,) z sum, uint8 decode(z)
        m = nnx.merge(graphdef, state)
        z = m.encode(x.astype(jnp.float32) / 127.5 - 1.0)
        _, zhat, _ = m.quantize(z)
        y = jnp.clip(jnp.round((m.decode(z) + 1.0) * 127.5), 0, 255).astype(jnp.uint8)
        return (jnp.stack([jnp.sum((zh - z) ** 2) for zh in zhat]), jnp.sum(z ** 2),
                jnp.sum(z, axis=(0, 1, 2)), y)

    images = np.asarray(images)
    x = to_model_images(images, cfg.image_size, cfg.channels, tok.prep)
    err, norm, total, count, decoded = np.zeros(tok.num_layers), 0.0, 0.0, 0, []
    for i in range(0, len(x), batch_size):
        e, n, zs, y = stats(state, jnp.asarray(x[i:i + batch_size]))
        err, norm = err + np.asarray(e, np.float64), norm + float(n)
        total = total + np.asarray(zs, np.float64)
        count += y.shape[0] * cfg.grid * cfg.grid                          # latent positions seen
        decoded.append(np.asarray(y))
    spread = norm - count * float(np.sum((total / count) ** 2))           # sum ||z - mean z||^2
    rec = from_model_images(np.concatenate(decoded), images.shape, tok.prep)
    return {"quantization_error": [float(v / norm) for v in err],
            "spread_error": [float(v / spread) for v in err],
            "continuous_psnr": float(psnr_uint8(rec, images).mean())}


def load_test_set(data_name: str, num: int, size: int = 64):
    """Test images; scenes are rendered at `size` (the model's resolution)."""
    if data_name == "fashion_mnist":
        from visiondata import fashion_mnist

        x, y = fashion_mnist.load("test")
        return x[:num], y[:num], list(fashion_mnist.CLASS_NAMES)
    if data_name == "scenes":
        from visiondata import scenes

        s = scenes.generate(num, size=size, seed=1, split="test")
        return s.images, s.labels, list(s.class_names)
    raise ValueError(f"no test set for data {data_name!r}")


def evaluate(tok, images, labels, class_names) -> dict:
    t0 = time.time()
    pyr = tok.encode(images)
    res = {"num_images": int(len(images)), "layers": [], "vocab_size": tok.vocab.size}
    for k in range(1, len(pyr) + 1):
        rec = tok.decode(pyr, layers=k)
        shape = pyr.codes[k - 1].shape[1:]
        res["layers"].append({"depth": k, "tokens": int(sum(np.prod(c.shape[1:]) for c in pyr.codes[:k])),
                              "grid": f"{shape[0]}x{shape[1]}",
                              "psnr": float(psnr_uint8(rec, images).mean()),
                              "usage": usage_stats(pyr.codes[k - 1], tok.vocab.size)})
    latent = latent_stats(tok, images)
    for layer, q, r in zip(res["layers"], latent["quantization_error"], latent["spread_error"]):
        layer["quantization_error"], layer["spread_error"] = q, r
    res["continuous_psnr"] = latent["continuous_psnr"]
    res["flat_fill_psnr"] = float(psnr_uint8(flat_fill(images), images).mean())
    ratio = object_error_ratio(rec, images)                             # full depth
    ratio = ratio[np.isfinite(ratio)]
    res["object_pixels"] = {"images": int(len(ratio)), "median_ratio": float(np.median(ratio)),
                            "share_below_0.75": float(np.mean(ratio < 0.75))}
    res["hit_rate"] = hit_rates(tok, pyr, labels, class_names)
    words = [tok.vocab.words[int(c)] for c in pyr.codes[0].reshape(-1)]
    by_class = {}
    for w, y in zip(words, labels):
        by_class.setdefault(class_names[int(y)], {}).setdefault(w, 0)
        by_class[class_names[int(y)]][w] += 1
    res["top_words_by_class"] = {c: sorted(d.items(), key=lambda kv: -kv[1])[:3] for c, d in by_class.items()}
    res["wall_s"] = time.time() - t0
    return res


def to_markdown(res: dict, title: str) -> str:
    lines = [f"### {title}", "",
             f"{res['num_images']} test images; codebook {res['vocab_size']} word tokens of the frozen LLM.", "",
             "| depth | tokens | layer grid | PSNR (dB) | layer codes used | layer perplexity | latent error "
             "| error / spread |",
             "|---|---|---|---|---|---|---|---|"]
    for l in res["layers"]:
        q, r = (f"{l[k]:.3f}" if k in l else "-" for k in ("quantization_error", "spread_error"))
        lines.append(f"| {l['depth']} | {l['tokens']} | {l['grid']} | {l['psnr']:.2f} | "
                     f"{l['usage']['distinct']} ({100 * l['usage']['fraction']:.1f}%) | {l['usage']['perplexity']:.1f} "
                     f"| {q} | {r} |")
    h = res["hit_rate"]
    if "quantization_error" in res["layers"][0]:
        lines += ["", "Latent error: ||zhat - z||^2 / ||z||^2 between the encoder output z and its quantized "
                  "running average after that many layers (0 keeps z exactly). Error / spread: the same "
                  "error over ||z - mean z||^2, z's variation around its mean latent (1: the pyramid keeps "
                  "no more of it than that one constant vector would). The decoder applied to z "
                  f"itself, skipping quantization, scores {res['continuous_psnr']:.2f} dB."]
    if "flat_fill_psnr" in res:
        lines += ["", f"Reference: each image filled with its median colour scores {res['flat_fill_psnr']:.2f} dB."]
    if "object_pixels" in res:
        o = res["object_pixels"]
        lines += ["", f"Object pixels (off the median colour), full depth: the decoder's error there is "
                  f"{o['median_ratio']:.2f}x the flat fill's (median over {o['images']} images); under 0.75x in "
                  f"{100 * o['share_below_0.75']:.1f}% of images."]
    lines += ["", f"Semantic hit rate (token names the class or a synonym): top layer "
              f"{100 * h['top_layer']:.1f}%, any token of layers 1-2 {100 * h['layers_1_2']:.1f}%.", "",
              *([f"Semantic targets of the training images (relevance teacher): top-1 word names the class for "
                 f"{100 * res['teacher_hit_rate']['top1']:.1f}%, any of the top {res['teacher_hit_rate']['k']} for "
                 f"{100 * res['teacher_hit_rate']['topk']:.1f}%.", ""] if "teacher_hit_rate" in res else []),
              "Most frequent top-layer word per class: " + "; ".join(
                  f"{c}: " + ", ".join(f"{w} ({n})" for w, n in ws) for c, ws in res["top_words_by_class"].items())]
    return "\n".join(lines) + "\n"


@cli_main
def main(argv=None):
    from spae import load_tokenizer
    from spae.tokenizer import DEFAULT_CHECKPOINT

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--out", default="eval_out/spae_eval")
    p.add_argument("--targets", default=None,
                   help="WORKDIR/semantic_targets.npz of the training run: also report how often the "
                        "semantic targets themselves name the class")
    add_debug_flag(p)
    args = p.parse_args(argv)
    ckpt = args.checkpoint or DEFAULT_CHECKPOINT
    tok = load_tokenizer(ckpt)
    with open(os.path.join(ckpt, "config.json")) as f:
        meta = json.load(f)
    ckpt = os.path.relpath(ckpt)
    if meta["data"]["name"] == "photos":       # real images: rates against JPEG/WebP, ImageNet-name hits
        from eval import spae_photos

        print(spae_photos.evaluate(tok, args.out))
        return
    images, labels, class_names = load_test_set(meta["data"]["name"], args.num, meta["data"]["image_size"])
    res = evaluate(tok, images, labels, class_names)
    res["checkpoint"] = ckpt
    if args.targets:
        res["teacher_hit_rate"] = teacher_hit_rate(args.targets, meta["data"], tok.vocab.words)
    md = to_markdown(res, f"SPAE {meta['data']['name']} {meta['data']['image_size']} px ({ckpt})")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".md", "w") as f:
        f.write(md)
    with open(args.out + ".json", "w") as f:
        json.dump(res, f, indent=1)
    print(md)


if __name__ == "__main__":
    main()
