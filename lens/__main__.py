"""Command line: describe an image with LENS, and optionally answer a question about it.

    python -m lens describe PHOTO [--question "What is in this picture?"]     # real photos: ImageNet tags
    python -m lens describe SCENE.png --all-modules --question "What color is the circle?"

By default the ImageNet backbone (EfficientNet-Lite0) tags the image with its top classes and
their WordNet hypernyms. `--all-modules` adds the contrastive model's tags and attributes over
LENS's vocabularies (`--clip`, default load_clip(): LiT on the same backbone) and the captioner
trained on emoji, Tux Paint stamps and synthetic scenes over the same backbone (not on camera
photos: there its captions are unreliable); each line of output names the model that said it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

EXAMPLE = """example:
  python -m lens describe photo.jpg --question "What is in this picture?"
  python -m lens describe scene.png --vision none --all-modules --question "What color is the circle?"
"""


def format_output(path: str, out: dict) -> str:
    lines = [f"image: {path}"]
    by_source: dict[str, list[str]] = {}
    for tag, src in zip(out["tags"], out["sources"]["tags"]):
        by_source.setdefault(src, []).append(tag)
    for src, tags in by_source.items():
        lines.append(f"tags ({src}):")
        lines += [f"  - {t}" for t in tags]
    for key in ("attributes", "captions"):
        if out["sources"][key] is not None:
            lines.append(f"{key} ({out['sources'][key]}):")
            lines += [f"  - {v}" for v in out[key]] or ["  (none)"]
    if out.get("answer") is not None:
        lines.append(f"question: {out['question']}")
        lines.append(f"answer ({out['llm']}): {out['answer']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lens", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("describe", help="tags (and attributes, captions, an answer) for one image file",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("image")
    d.add_argument("--question", default=None)
    d.add_argument("--vision", default="efficientnet-lite0",
                   help="ImageNet backbone for real-photo tags: efficientnet-lite0/1/2, a .pth path, or 'none'")
    d.add_argument("--all-modules", action="store_true",
                   help="also run the contrastive tagger/attributer and the captioner (with --vision: the one "
                        "trained on emoji, Tux Paint and scenes over the backbone; with --vision none: the scenes one)")
    d.add_argument("--captioner", default=None, help="with --all-modules: captioner export dir or shipped name (real, scenes)")
    d.add_argument("--clip", default=None,
                   help="with --all-modules: contrastive model ('default', the default: LiT; 'offline'; a path); "
                        "'none' skips it")
    d.add_argument("--llm", default="smollm2-135m")
    d.add_argument("--num_captions", type=int, default=None, help="with --all-modules: captions per image (default 5)")
    d.add_argument("--show_prompt", action="store_true")
    d.add_argument("--json", action="store_true", help="print the output dict as JSON")
    d.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = p.parse_args(argv)
    try:
        return describe(args)
    except (ValueError, OSError, ImportError) as e:
        if args.debug or os.environ.get("LLMSIGHT_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


# Shipped names the flags take besides paths.
SHIPPED_CAPTIONERS = ("real", "scenes", "none")


def check_module_flags(args) -> None:
    """A flag is never silently ignored: one the chosen modules do not read, or a path that does not
    exist, is a ValueError (one `error:` line) before any model loads."""
    unused = [f"--{name}" for name in ("captioner", "clip", "num_captions") if getattr(args, name) is not None]
    if unused and not args.all_modules:
        raise ValueError(f"{', '.join(unused)} only matter with --all-modules (the captioner and the contrastive "
                         "model run only then); add --all-modules or drop the flag")
    if args.num_captions is not None and args.num_captions < 0:
        raise ValueError(f"--num_captions must be >= 0, got {args.num_captions}")
    if args.captioner is not None and args.captioner not in SHIPPED_CAPTIONERS and not os.path.isdir(args.captioner):
        raise ValueError(f"--captioner {args.captioner}: no such directory (a captioner export dir written by "
                         f"train.captioner, or one of {', '.join(SHIPPED_CAPTIONERS)})")
    if args.clip is not None:
        from backbones.clip.api import OFFLINE_MODELS

        names = ("default", "none", *OFFLINE_MODELS)
        if args.clip not in names and not os.path.exists(args.clip):
            raise ValueError(f"--clip {args.clip}: no such path (a contrastive model directory, or one of "
                             f"{', '.join(names)})")


def describe(args) -> int:
    from lens.images import load_image

    if args.question is not None and not args.question.strip():
        raise ValueError("--question is empty; ask something, or leave --question out for a description")
    vision = None if args.vision == "none" else args.vision
    if vision is None and not args.all_modules:
        raise ValueError("--vision none without --all-modules leaves nothing to look at the image; drop one of them")
    check_module_flags(args)
    image = load_image(args.image)
    if vision is not None:
        from backbones.vision.api import to_pil

        to_pil(image, name=args.image)   # too small / too large for the backbone: say so before loading models
    from lens.pipeline import Lens

    clip = None if not args.all_modules or args.clip == "none" else (args.clip or "default")
    captioner = args.captioner if args.all_modules else "none"
    lens = Lens.load(llm=args.llm, clip=clip, captioner=captioner, vision=vision,
                     num_captions=5 if args.num_captions is None else args.num_captions)
    out = lens(image[None], None if args.question is None else [args.question])[0]
    out["question"], out["llm"] = args.question, args.llm
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(format_output(args.image, out))
        if args.show_prompt:
            print("prompt:\n" + out["prompt"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
