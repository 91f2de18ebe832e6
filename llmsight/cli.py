"""`llmsight`: the project's command line, for a user's own images.

    llmsight describe photo.jpg --question "What is in this picture?"     # LENS: tags (+ answer) from the frozen LLM
    llmsight tokenize photo.jpg --depth 2 --json > tokens.json             # SPAE: the image as LLM words, per layer
    llmsight reconstruct photo.jpg --out rec.png --depth 4                 # SPAE: encode, decode, report bpp and PSNR
    llmsight decode tokens.json --out img.png                              # SPAE: LLM token ids back to pixels
    llmsight fewshot --support cat.jpg=cat --support mug.jpg=mug query.jpg # the LLM labels query.jpg in context

Every command takes --help (with an example) and --debug (show the traceback of an error);
bad input ends with one line `error: ...` and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np


def _examples(*lines: str) -> str:
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


def _read_image(path: str) -> np.ndarray:
    from lens.images import load_image

    return load_image(path)   # uint8 (H, W, 3); a clear ImageError for missing/corrupt/huge files


def _tokenizer(name):
    from spae import load_tokenizer

    return load_tokenizer(name)


def _depth(tok, depth):
    k = tok.num_layers if depth is None else int(depth)
    if not 1 <= k <= tok.num_layers:
        raise ValueError(f"--depth must be in 1..{tok.num_layers} for this tokenizer, got {depth}")
    return k


def rate(tok, depth: int) -> dict:
    """Tokens, bits and bits per pixel of the first `depth` layers (tokens x log2(codebook) / model pixels)."""
    tokens = sum(h * w for h, w in tok.layer_shapes()[:depth])
    bits = tokens * math.log2(tok.vocab.size)
    s = tok.model.cfg.image_size
    return {"tokens": tokens, "bits": round(bits, 1), "bpp": round(bits / (s * s), 4), "pixels": s * s}


def cmd_describe(args) -> int:
    from lens.__main__ import describe

    return describe(args)


def cmd_tokenize(args) -> int:
    tok = _tokenizer(args.tokenizer)
    k = _depth(tok, args.depth)
    image = _read_image(args.image)
    pyr = tok.encode(image[None])
    words = tok.to_text(pyr)[0][:k]
    layers = [{"shape": list(np.asarray(ids).shape[1:]), "ids": np.asarray(ids)[0].ravel().tolist(), "words": w}
              for ids, w in zip(pyr.llm_ids[:k], words)]
    out = {"tokenizer": tok.name, "image": args.image, "layers": layers, **rate(tok, k)}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.image}: {out['tokens']} tokens from {tok.name} ({out['bits']} bits, {out['bpp']} bits/pixel "
              f"at {tok.model.cfg.image_size}x{tok.model.cfg.image_size})")
        for i, layer in enumerate(layers):
            print(f"layer {i + 1} {tuple(layer['shape'])}: {' '.join(layer['words'])}")
    return 0


def cmd_reconstruct(args) -> int:
    from spae.data import to_model_images
    from visiondata.images import write_image

    tok = _tokenizer(args.tokenizer)
    k = _depth(tok, args.depth)
    image = _read_image(args.image)
    cfg = tok.model.cfg
    x = to_model_images(image[None], cfg.image_size, cfg.channels, "resize")       # what the tokenizer sees
    rec = tok.decode(tok.encode(x), layers=k)
    mse = float(np.mean((rec.astype(np.float64) - x.reshape(rec.shape)) ** 2))
    psnr = 10 * math.log10(255 ** 2 / max(mse, 1e-12))
    write_image(args.out, rec[0][..., 0] if rec.shape[-1] == 1 else rec[0])
    r = rate(tok, k)
    print(f"{args.out}: depth {k}/{tok.num_layers} of {tok.name}, {r['tokens']} tokens, {r['bpp']} bits/pixel, "
          f"PSNR {psnr:.2f} dB against the {cfg.image_size}x{cfg.image_size} input")
    return 0


def cmd_decode(args) -> int:
    from visiondata.images import write_image

    try:
        text = sys.stdin.read() if args.tokens == "-" else open(args.tokens, encoding="utf-8").read()
        spec = json.loads(text)
        layers = [np.asarray(l["ids"], np.int64).reshape([1] + list(l["shape"])) for l in spec["layers"]]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{args.tokens}: not a token file from `llmsight tokenize --json` ({e})") from e
    tok = _tokenizer(args.tokenizer or spec.get("tokenizer"))
    want = tok.layer_shapes()
    if not 1 <= len(layers) <= len(want):
        raise ValueError(f"{args.tokens} has {len(layers)} layers; {tok.name} decodes 1..{len(want)}")
    for i, (l, w) in enumerate(zip(layers, want)):
        if tuple(l.shape[1:]) != tuple(w):
            raise ValueError(f"{args.tokens}: layer {i + 1} is {tuple(l.shape[1:])}, {tok.name} expects {tuple(w)}")
    rec = tok.decode(tok.from_llm_ids(layers), layers=len(layers))
    write_image(args.out, rec[0])
    print(f"{args.out}: {len(layers)} layers of {tok.name} decoded")
    return 0


def _image_ids(args, llm, images: list[np.ndarray]) -> list[list[int]]:
    """Each image as LLM token ids: its first --layers SPAE layers, or its LENS text (tags and attributes)."""
    if args.method == "spae":
        from spae import load_tokenizer

        tok = load_tokenizer(args.tokenizer, llm=llm)
        if not 1 <= args.layers <= tok.num_layers:
            raise ValueError(f"--layers must be in 1..{tok.num_layers} for {tok.name}, got {args.layers}")
        out = []
        for im in images:
            layers = tok.llm_ids(tok.encode(im[None]))[:args.layers]
            out.append([int(t) for l in layers for t in np.asarray(l).reshape(-1)])
        return out
    from lens import Lens

    lens = Lens.load(llm=llm, captioner="none", vision="efficientnet-lite0")
    return [llm.encode(Lens.text({**o, "captions": []})) for o in lens.describe_images(images)]


def cmd_fewshot(args) -> int:
    from backbones import load_llm
    from llmsight.fewshot import label_log_probs

    supports = []
    for item in args.support:
        path, sep, label = item.rpartition("=")
        if not sep or not path or not label.strip():
            raise ValueError(f"--support {item!r}: write it as IMAGE=LABEL, e.g. cat.jpg=cat")
        supports.append((path, label.strip()))
    labels = sorted({l for _, l in supports})
    if len(labels) < 2:
        raise ValueError(f"give supports of at least two labels (got {labels}); the LLM chooses among them")
    llm = load_llm(args.llm)
    images = [_read_image(p) for p, _ in supports] + [_read_image(q) for q in args.queries]
    ids = _image_ids(args, llm, images)
    # The prompt of eval.fewshot, the supports in the order given: llmsight.fewshot builds and scores it.
    support_ids = [(image_ids, label) for image_ids, (_, label) in zip(ids, supports)]
    scores = label_log_probs(llm, support_ids, ids[len(supports):], labels, args.calibrate)     # (Q, N)
    note = "" if args.calibrate == "none" else f", calibrated: {args.calibrate}"
    for query, row in zip(args.queries, scores):
        best = labels[int(np.argmax(row))]
        print(f"{query}: {best}   (" + ", ".join(f"{l} {s:.2f}" for l, s in zip(labels, row)) +
              f" log-prob over the labels{note})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmsight", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    raw = argparse.RawDescriptionHelpFormatter

    d = sub.add_parser("describe", help="LENS: tags (and an answer) for one image", formatter_class=raw,
                       epilog=_examples('llmsight describe photo.jpg --question "What is in this picture?"'))
    d.add_argument("image")
    d.add_argument("--question", default=None)
    d.add_argument("--vision", default="efficientnet-lite0", help="ImageNet backbone, a .pth path, or 'none'")
    d.add_argument("--all-modules", action="store_true", help="also the contrastive tagger/attributer and captioner")
    d.add_argument("--clip", default=None, help="with --all-modules: contrastive model name or path (default LiT)")
    d.add_argument("--captioner", default=None, help="with --all-modules: captioner export dir or shipped name (default real; scenes)")
    d.add_argument("--llm", default="smollm2-135m")
    d.add_argument("--num_captions", type=int, default=None, help="with --all-modules: captions per image (default 5)")
    d.add_argument("--show_prompt", action="store_true")
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_describe)

    t = sub.add_parser("tokenize", help="SPAE: the image as the LLM's words, layer by layer", formatter_class=raw,
                       epilog=_examples("llmsight tokenize photo.jpg --depth 2", "llmsight tokenize photo.jpg --json > tokens.json"))
    t.add_argument("image")
    t.add_argument("--depth", type=int, default=None, help="layers to keep (default: all)")
    t.add_argument("--tokenizer", default=None, help="shipped name (photos64-words, the default; photos64; fmnist32; scenes64) or checkpoint dir")
    t.add_argument("--json", action="store_true", help="ids, shapes and words per layer as JSON (input of decode)")
    t.set_defaults(fn=cmd_tokenize)

    r = sub.add_parser("reconstruct", help="SPAE: encode and decode an image; bits per pixel and PSNR",
                       formatter_class=raw, epilog=_examples("llmsight reconstruct photo.jpg --out rec.png --depth 3"))
    r.add_argument("image")
    r.add_argument("--out", required=True)
    r.add_argument("--depth", type=int, default=None)
    r.add_argument("--tokenizer", default=None)
    r.set_defaults(fn=cmd_reconstruct)

    c = sub.add_parser("decode", help="SPAE: token ids (from tokenize --json) back to pixels", formatter_class=raw,
                       epilog=_examples("llmsight tokenize photo.jpg --json > t.json && llmsight decode t.json --out img.png"))
    c.add_argument("tokens", help="JSON file from `llmsight tokenize --json`, or - for standard input")
    c.add_argument("--out", required=True)
    c.add_argument("--tokenizer", default=None, help="default: the one named in the token file")
    c.set_defaults(fn=cmd_decode)
    from llmsight.fewshot import CALIBRATIONS

    f = sub.add_parser("fewshot", help="in-context classification: labelled examples, then the LLM labels queries",
                       formatter_class=raw,
                       epilog=_examples("llmsight fewshot --support cat.jpg=cat --support mug.jpg=mug query1.jpg query2.jpg",
                                        "llmsight fewshot --method lens --support a.png=apple --support b.png=boat q.png",
                                        "llmsight fewshot --calibrate both --support cat.jpg=cat --support mug.jpg=mug q.jpg"))
    f.add_argument("queries", nargs="+", help="images to label")
    f.add_argument("--support", action="append", required=True, metavar="IMAGE=LABEL",
                   help="a labelled example (repeat; at least two labels)")
    f.add_argument("--method", choices=["spae", "lens"], default="spae", help="how the LLM sees each image")
    f.add_argument("--layers", type=int, default=2, help="spae: pyramid layers per image (default 2: 5 words)")
    f.add_argument("--tokenizer", default=None, help="spae: shipped name or checkpoint dir (default photos64-words)")
    f.add_argument("--llm", default="smollm2-135m")
    f.add_argument("--calibrate", choices=CALIBRATIONS, default="none",
                   help="correct the LLM's label bias: contextual (divide by the label probabilities after "
                        "content-free queries), orders (average over support orders, each label last once), "
                        "both, or none (default)")
    f.set_defaults(fn=cmd_fewshot)
    for sp in (d, t, r, c, f):
        sp.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, OSError, KeyError, ImportError) as e:
        if args.debug or os.environ.get("LLMSIGHT_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
