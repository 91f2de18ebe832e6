"""SPAE on held-out real images: rate-distortion against JPEG and WebP, and what the top words name.

Called by `python -m eval.spae_eval --checkpoint DIR` for a tokenizer trained on data "photos":

    res = rate_distortion(tok, images, backbone)        # one row per pyramid depth, codecs at its bytes
    sem = semantic_hits(tok, images, backbone)         # top-layer words vs the classifier's top-5 names
    grid = depth_picture(tok, images[:6], res)         # rows: photos; columns: input, depths, JPEG, WebP

Rates: a depth of T tokens costs T * log2(V) bits (`eval.codecs`); JPEG and WebP (Pillow) get, per
image, their best whole file of at most that many bytes. Distortion: PSNR and SSIM (scikit-image)
against the input; the backbone perceptual distance (`backbones.vision.perceptual`, 0 = equal); and
FD-EffNet, the Fréchet distance of the set's pooled backbone features (only indicative on a few
hundred images: the Gaussians are fitted in 1,280 dimensions).
"""

from __future__ import annotations

import numpy as np

from eval.codecs import CODECS, codec_batch, token_bits
from eval.spae_metrics import perceptual_uint8, psnr_uint8, ssim_uint8


def distortion(backbone, images: np.ndarray, decoded: np.ndarray, fd: bool = True) -> dict:
    from eval.frechet import frechet_distance

    out = {"psnr": float(psnr_uint8(decoded, images).mean()), "ssim": float(ssim_uint8(images, decoded).mean()),
           "perceptual": float(perceptual_uint8(backbone, images, decoded).mean())}
    if fd:
        out["fd_effnet"] = float(frechet_distance(backbone.embed(images), backbone.embed(decoded)))
    return out


def rate_distortion(tok, images: np.ndarray, backbone, codecs=tuple(CODECS), fd: bool = True) -> dict:
    """uint8 (N, H, W, 3) held-out images -> {"rows": per depth {tokens, bits, bpp, bytes, spae: {...},
    JPEG: {..., bytes, fits}, WebP: {...}}}."""
    pyr = tok.encode(images)
    n, h, w = images.shape[:3]
    rows = []
    for k in range(1, len(pyr) + 1):
        tokens = int(sum(np.prod(c.shape[1:]) for c in pyr.codes[:k]))
        bits = token_bits(tokens, tok.vocab.size)
        row = {"depth": k, "tokens": tokens, "bits": bits, "bpp": bits / (h * w), "bytes": bits / 8,
               "spae": distortion(backbone, images, tok.decode(pyr, layers=k), fd)}
        for codec in codecs:
            dec, size, fits = codec_batch(images, codec, bits / 8)
            entry = {"fits": int(fits.sum()), "smallest_file": int(size.min())}
            if fits.any():
                entry.update(distortion(backbone, images[fits], dec[fits], fd and fits.sum() > 1))
                entry["mean_bytes"] = float(size[fits].mean())
                # SPAE on the same images, for a like-for-like comparison where only some files fit
                if not fits.all():
                    entry["spae_same_images"] = distortion(backbone, images[fits],
                                                           tok.decode(pyr.truncate(k), layers=k)[fits], False)
            row[codec] = entry
        rows.append(row)
    return {"num_images": int(n), "pixels": int(h * w), "vocab_size": int(tok.vocab.size), "rows": rows}


def imagenet_name_rows(cols: np.ndarray, m: np.ndarray, class_ids) -> set[int]:
    """Codebook rows of the words naming any of the classes or their nearest informative hypernyms,
    from `spae.semantic.imagenet_word_matrix(words)` = (cols, m)."""
    return {int(cols[u]) for c in class_ids for u in np.flatnonzero(m[c] > 0)}


def semantic_hits(tok, images: np.ndarray, backbone, top: int = 5) -> dict:
    """How often the top layer's word (and any word of layers 1-2) names one of the classifier's
    top-`top` classes or their hypernyms on these images; against the same rate of the single
    most frequent top-layer word given to every image (what a constant token scores)."""
    pyr = tok.encode(images)
    classes = np.argsort(-backbone.probabilities(images), axis=1)[:, :top]          # (N, top)
    from spae.semantic import imagenet_word_matrix

    cols, m = imagenet_word_matrix(tok.vocab.words)                               # built once per call
    names = [imagenet_name_rows(cols, m, cl) for cl in classes]
    l1 = pyr.codes[0].reshape(len(images), -1)
    l12 = np.concatenate([c.reshape(len(images), -1) for c in pyr.codes[:2]], 1)
    hit1 = [any(int(t) in s for t in row) for row, s in zip(l1, names)]
    hit12 = [any(int(t) in s for t in row) for row, s in zip(l12, names)]
    values, counts = np.unique(l1, return_counts=True)
    common = int(values[np.argmax(counts)])
    return {"images": int(len(images)), "top_layer": float(np.mean(hit1)), "layers_1_2": float(np.mean(hit12)),
            "constant_word": tok.vocab.words[common], "constant_word_hit": float(np.mean([common in s for s in names])),
            "distinct_top_words": int(len(values))}


def emoji_hits(tok, style: str = "google", split: str = "test") -> dict:
    """How often the top layer's word (any word of layers 1-2) is a word of the emoji's CLDR name."""
    import re

    from visiondata import emoji

    s = emoji.load(style, split, size=tok.model.cfg.image_size)
    index = {w.lower(): i for i, w in enumerate(tok.vocab.words)}
    names = [{index[w] for w in re.split(r"[^a-z]+", n.lower()) if len(w) >= 3 and w in index} for n in s.names]
    pyr = tok.encode(s.images)
    l1 = pyr.codes[0].reshape(len(s.images), -1)
    l12 = np.concatenate([c.reshape(len(s.images), -1) for c in pyr.codes[:2]], 1)
    return {"images": len(s.images), "style": style, "split": split,
            "top_layer": float(np.mean([any(int(t) in n for t in r) for r, n in zip(l1, names)])),
            "layers_1_2": float(np.mean([any(int(t) in n for t in r) for r, n in zip(l12, names)]))}


def depth_picture(tok, images: np.ndarray, res: dict, scale: int = 2, codecs=tuple(CODECS)) -> np.ndarray:
    """uint8 picture: rows of images; columns input | depth 1..L | each codec at full depth's bytes.
    Under each reconstruction: its bits per pixel and PSNR (dB) for that image."""
    from PIL import Image, ImageDraw

    pyr = tok.encode(images)
    full = res["rows"][-1]
    cols = [("input", images, None)]
    for row in res["rows"]:
        cols.append((f"{row['tokens']} tok {row['bpp']:.2f} bpp", tok.decode(pyr, layers=row["depth"]), None))
    for codec in codecs:
        dec, size, fits = codec_batch(images, codec, full["bytes"])
        cols.append((codec, dec, (size, fits)))
    n, h, w = images.shape[:3]
    H, W, top, label = h * scale, w * scale, 14, 12
    canvas = Image.new("RGB", (len(cols) * (W + 4), top + n * (H + label + 4)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, (title, ims, extra) in enumerate(cols):
        x0 = c * (W + 4)
        draw.text((x0 + 1, 1), title[:22], fill="black")
        for r in range(n):
            y0 = top + r * (H + label + 4)
            canvas.paste(Image.fromarray(ims[r]).resize((W, H), Image.NEAREST), (x0, y0))
            if c == 0:
                continue
            p = float(psnr_uint8(ims[r:r + 1], images[r:r + 1])[0])
            if extra is None:
                text = f"{p:.1f} dB"
            else:
                size, fits = extra
                bpp = 8 * size[r] / (h * w)
                text = f"{bpp:.2f}bpp {p:.1f}dB" + ("" if fits[r] else " >")
            draw.text((x0 + 1, y0 + H), text, fill="black" if extra is None or extra[1][r] else "red")
    return np.asarray(canvas)


def to_markdown(res: dict, title: str) -> str:
    codecs = [c for c in CODECS if c in res["rows"][0]]
    lines = [f"### {title}", "",
             f"{res['num_images']} held-out images of {res['pixels']} pixels; codebook {res['vocab_size']} words "
             f"({np.log2(res['vocab_size']):.2f} bits per token). Codecs: the best whole file of at most the "
             "pyramid's bytes, per image; 'fits' counts the images that have one.", "",
             "| depth | tokens | bpp | bytes | SPAE PSNR | SSIM | perceptual | FD-EffNet | " +
             " | ".join(f"{c} fits | {c} bytes | {c} PSNR | {c} SSIM | {c} perceptual" for c in codecs) + " |",
             "|---" * (8 + 5 * len(codecs)) + "|"]
    for r in res["rows"]:
        s = r["spae"]
        cells = [str(r["depth"]), str(r["tokens"]), f"{r['bpp']:.3f}", f"{r['bytes']:.0f}", f"{s['psnr']:.2f}",
                 f"{s['ssim']:.3f}", f"{s['perceptual']:.3f}", f"{s.get('fd_effnet', float('nan')):.1f}"]
        for c in codecs:
            e = r[c]
            if e["fits"]:
                cells += [f"{e['fits']}/{res['num_images']}", f"{e['mean_bytes']:.0f}", f"{e['psnr']:.2f}",
                          f"{e['ssim']:.3f}", f"{e['perceptual']:.3f}"]
            else:
                cells += [f"0 (smallest {e['smallest_file']} B)", "-", "-", "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    partial = [(r["depth"], c, r[c]) for r in res["rows"] for c in codecs if "spae_same_images" in r[c]]
    if partial:
        lines += ["", "Where only some images have a codec file at that rate, SPAE on those same images: " + "; ".join(
            f"depth {d} vs {c} ({e['fits']} images): SPAE {e['spae_same_images']['psnr']:.2f} dB, "
            f"{e['spae_same_images']['perceptual']:.3f} perceptual" for d, c, e in partial) + "."]
    return "\n".join(lines) + "\n"


# The held-out scikit photos of the picture and of the printed pyramids: people, an animal, objects, a scene.
PICTURE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_right", "flower")


def evaluate(tok, out: str, num_pictures: int = len(PICTURE_PHOTOS)) -> str:
    """Everything above on the held-out sets of `visiondata.photo_mix`; writes OUT.md, OUT.json and
    OUT_depths.png; returns the markdown."""
    from backbones import load_vision
    from eval.report import write_md_json
    from visiondata import photo_mix
    from visiondata.images import write_image

    size = tok.model.cfg.image_size
    sets = photo_mix.test_images(size)
    images = np.concatenate(list(sets.values()))
    backbone = load_vision()
    res = rate_distortion(tok, images, backbone)
    res["sets"] = {k: len(v) for k, v in sets.items()}
    res["semantic"] = {k: semantic_hits(tok, v, backbone) for k, v in sets.items()}
    try:
        res["semantic"]["emoji (Noto test concepts)"] = emoji_hits(tok)
    except OSError as e:     # the emoji cache is made by setup; say so rather than fail the table
        print(f"skipping emoji hit rate: {str(e).splitlines()[0]}")
    names = list(PICTURE_PHOTOS[:num_pictures])
    pics = sets["photos"][[_photo_names().index(n) for n in names]]
    pyr = tok.encode(pics)
    res["pyramids"] = {name: [" ".join(layer) for layer in layers[:3]] for name, layers in zip(names, tok.to_text(pyr))}
    md = to_markdown(res, f"SPAE on held-out real images ({', '.join(f'{k} {v}' for k, v in res['sets'].items())})")
    md += "\n| set | images | top-layer word names a top-5 class or hypernym | any word of layers 1-2 | " \
          "one constant word | distinct top words |\n|---|---|---|---|---|---|\n"
    for k, h in res["semantic"].items():
        const = f"{100 * h['constant_word_hit']:.1f}% ({h['constant_word']})" if "constant_word" in h else "-"
        md += (f"| {k} | {h['images']} | {100 * h['top_layer']:.1f}% | {100 * h['layers_1_2']:.1f}% | {const} | "
               f"{h.get('distinct_top_words', '-')} |\n")
    md += "\nFor emoji the hit is a word of the emoji's own name.\n\nToken pyramids (layers 1-3) of the pictured photos:\n\n"
    md += "\n".join(f"- {name}: " + " / ".join(layers) for name, layers in res["pyramids"].items()) + "\n"
    write_md_json(out, md, res)
    write_image(out + "_depths.png", depth_picture(tok, pics, res))
    return md


def _photo_names() -> list[str]:
    from visiondata import photos

    return list(photos.NAMES)
