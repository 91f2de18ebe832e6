"""Command line: describe an image with LENS, and optionally answer a question about it.

    python -m lens describe IMAGE [--question "What color is the circle?"] [--captioner DIR] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys


def format_output(path: str, out: dict) -> str:
    lines = [f"image: {path}"]
    for key in ("tags", "attributes", "captions"):
        lines.append(f"{key}:")
        lines += [f"  - {v}" for v in out[key]] or ["  (none)"]
    if out.get("answer") is not None:
        lines.append(f"question: {out['question']}")
        lines.append(f"answer: {out['answer']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lens", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("describe", help="tags, attributes, captions (and an answer) for one image file")
    d.add_argument("image")
    d.add_argument("--question", default=None)
    d.add_argument("--captioner", default=None, help="captioner export dir (default: the shipped one)")
    d.add_argument("--clip", default="default", help="contrastive model name/path; 'none' skips tags/attributes")
    d.add_argument("--llm", default="smollm2-135m")
    d.add_argument("--num_captions", type=int, default=5)
    d.add_argument("--show_prompt", action="store_true")
    d.add_argument("--json", action="store_true", help="print the output dict as JSON")
    args = p.parse_args(argv)

    from lens.images import ImageError, load_image

    try:
        image = load_image(args.image)
    except ImageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from lens.pipeline import Lens

    lens = Lens.load(llm=args.llm, clip=None if args.clip == "none" else args.clip, captioner=args.captioner,
                     num_captions=args.num_captions)
    out = lens(image[None], None if args.question is None else [args.question])[0]
    out["question"] = args.question
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(format_output(args.image, out))
        if args.show_prompt:
            print("prompt:\n" + out["prompt"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
