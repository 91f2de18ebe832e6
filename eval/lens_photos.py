"""LENS on real photographs: does the ImageNet tagger name what is in the picture, and does the LLM say it?

    python -m eval.lens_photos                                   # the 21 scikit-image / scikit-learn photos
    python -m eval.lens_photos --tuxpaint /usr/share/tuxpaint/stamps --out docs/results/lens_photos

Two sets of photos with known content:
- the 21 photographs shipped in scikit-image and scikit-learn, each with the nouns a person
  would use for it (`KNOWN_CONTENT`, written by looking at the photos);
- with `--tuxpaint DIR` (Debian's tuxpaint-stamps-default, GPL-2), every photo stamp (stamps
  outside the `cartoon` folders and outside `symbols`, which holds letters, signs and coins;
  RGBA cut-outs shown on white), with its one-line English caption ("A red kangaroo.") as the
  known content.

A tag *hits* when its head noun (the last word: "domestic cat" -> "cat") is one of the known
nouns (a plural 's' ignored). Reported, for each of two questions ("What is in this picture?",
and "What animal is this?" / "What object is this?" by the stamp's category): the top-5 tag hit
rate (any of the first five tags hits), the LLM answer hit rate (a known noun among the words of
LENS's short answer), and the answer hit rate among the photos whose tags hit (the answer says
what the tags saw).

    python -m eval.lens_photos --tuxpaint /usr/share/tuxpaint/stamps --split test     # the test photos
    python -m eval.lens_photos ... --modules all       # Lens.load(vision=...) defaults: + LiT, captioner
    python -m eval.lens_photos ... --answer generate --no-in-context                  # the old answers
"""
from __future__ import annotations

import argparse
import json
import os
import re

from PIL import Image
from tqdm import tqdm

from backbones.vision.api import MIN_SIDE
from eval.report import write_md_json
from backbones.cli_errors import add_debug_flag, cli_main

QUESTION = "What is in this picture?"
QUESTIONS = (QUESTION, "What animal/object is this?")   # the second by the photo's kind


def ask(question: str, path: str) -> str:
    """The question as asked of one photo: "animal/object" becomes "animal" for the animal stamps."""
    if "animal/object" not in question:
        return question
    return question.replace("animal/object", "animal" if f"{os.sep}animals{os.sep}" in path else "object")
# Nouns for what each photo shows (judged by eye); the ImageNet-1k classes that could name it are
# not consulted, so a photo of something ImageNet has no class for (an astronaut) can only be missed.
KNOWN_CONTENT = {
    "astronaut": "astronaut woman person spacesuit suit helmet flag shuttle",
    "brick": "brick wall",
    "camera": "man person photographer camera tripod coat",
    "cell": "cell microscope",
    "chelsea": "cat kitten tabby",
    "clock_motion": "clock",
    "coffee": "coffee espresso cup saucer spoon",
    "coins": "coin money",
    "grass": "grass lawn",
    "gravel": "gravel stone rock",
    "hubble_deep_field": "galaxy star space sky",
    "ihc": "tissue cell microscope",
    "moon": "moon crater surface",
    "motorcycle_left": "motorcycle motorbike bike moped",
    "motorcycle_right": "motorcycle motorbike bike moped",
    "page": "page text book paper",
    "retina": "retina eye",
    "rocket": "rocket launch pad tower",
    "text": "text handwriting writing paper",
    "china": "temple pagoda palace building tower roof",
    "flower": "flower dahlia blossom",
}
_STOP = {"a", "an", "the", "of", "and", "with", "in", "on", "some", "its", "from", "to", "for", "at", "by", "this",
         "that", "is", "are", "it", "one", "two", "three", "red", "green", "blue", "yellow", "black", "white",
         "brown", "orange", "pink", "purple", "gray", "grey", "big", "small", "little", "large", "old", "young"}


def nouns(text: str) -> set[str]:
    """Words of a caption or answer, lowercased, singular by a plain 's' strip, without stopwords/colours."""
    words = re.findall(r"[a-z]+", text.lower())
    return {w[:-1] if w.endswith("s") and len(w) > 3 and not w.endswith("ss") else w
            for w in words if w not in _STOP}


def head(tag: str) -> str:
    """The head noun of a tag: its last word, after dropping a disambiguation ("crane (wading bird)" -> crane)."""
    words = re.sub(r"\(.*?\)", "", tag).split() or tag.split()
    return next(iter(nouns(words[-1])), words[-1].lower())


def tuxpaint_photos(root: str, split: str | None = None) -> list[tuple[str, str]]:
    """(png path, English caption) of every stamp outside `cartoon` and `symbols` folders that has a caption
    (and at least MIN_SIDE pixels a side, which the backbone needs); with `split`, that split's stamps
    only (`visiondata.tuxpaint.split_of`: the split every trainer here uses)."""
    from visiondata.tuxpaint import split_of

    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        if {"cartoon", "symbols"} & set(os.path.relpath(d, root).split(os.sep)):
            continue
        for f in sorted(files):
            txt = os.path.join(d, f[:-4] + ".txt")
            if f.endswith(".png") and os.path.isfile(txt):
                with open(txt, encoding="utf-8", errors="replace") as fh:
                    caption = fh.readline().strip()
                path = os.path.join(d, f)
                with Image.open(path) as im:
                    big_enough = min(im.size) >= MIN_SIDE
                in_split = split is None or split_of(os.path.relpath(path, root).replace(os.sep, "/")) == split
                if caption and big_enough and in_split:
                    out.append((path, caption))
    return out


def evaluate(lens, items: list[tuple[str, str, str]], question: str = QUESTION, batch: int = 16) -> list[dict]:
    """items (name, image path, known content text) -> per item tags, answer and hits. The images are
    described once per batch and every question is answered from the same description."""
    rows = []
    for a in tqdm(range(0, len(items), batch), desc="photos", unit="batch"):
        chunk = items[a:a + batch]
        outs = lens([p for _, p, _ in chunk], [ask(question, p) for _, p, _ in chunk])
        for (name, path, known), o in zip(chunk, outs):
            truth = nouns(known)
            top5 = o["tags"][:5]
            rows.append({"name": name, "known": known, "question": ask(question, path), "tags": top5,
                         "answer": o["answer"], "tag_hit": any(head(t) in truth for t in top5),
                         "answer_hit": bool(nouns(o["answer"] or "") & truth)})
    return rows


def summary(rows: list[dict]) -> dict:
    n = len(rows)
    seen = [r for r in rows if r["tag_hit"]]
    return {"images": n, "top5_tag_hit": sum(r["tag_hit"] for r in rows) / max(n, 1),
            "llm_answer_hit": sum(r["answer_hit"] for r in rows) / max(n, 1),
            "tag_hit_images": len(seen),
            "answer_hit_given_tag_hit": sum(r["answer_hit"] for r in seen) / max(len(seen), 1)}


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vision", default="efficientnet-lite0")
    p.add_argument("--llm", default="smollm2-135m")
    p.add_argument("--tuxpaint", default=None, help="Tux Paint stamps folder (e.g. /usr/share/tuxpaint/stamps)")
    p.add_argument("--limit", type=int, default=None, help="at most this many Tux Paint photos")
    p.add_argument("--split", default=None, choices=["train", "test"],
                   help="Tux Paint: that split's photos only (default: all)")
    p.add_argument("--modules", default="imagenet", choices=["imagenet", "all"],
                   help="imagenet: the ImageNet tagger alone (llmsight describe's default); all: Lens.load(vision=...)'s "
                        "defaults (+ LiT tags and attributes, the real captioner)")
    p.add_argument("--answer", default="rank", choices=["rank", "generate"], help="Lens's answer mode")
    p.add_argument("--no-in-context", dest="in_context", action="store_false",
                   help="no fixed solved examples before the question")
    p.add_argument("--out", default="eval_out/lens_photos")
    add_debug_flag(p)
    args = p.parse_args(argv)

    from lens.pipeline import Lens
    from visiondata import photos

    extra = {} if args.modules == "all" else {"clip": None, "captioner": "none"}
    lens = Lens.load(llm=args.llm, vision=args.vision, answer=args.answer, in_context=args.in_context, **extra)
    sets = {"scikit photos": [(n, path, KNOWN_CONTENT[n]) for n, path in zip(photos.NAMES, photos.paths())]}
    if args.tuxpaint:
        stamps = tuxpaint_photos(args.tuxpaint, args.split)[: args.limit]
        if not stamps:
            raise FileNotFoundError(f"no captioned photo stamps under {args.tuxpaint}; pass the Tux Paint "
                                    "stamps folder (e.g. /usr/share/tuxpaint/stamps)")
        sets["Tux Paint photo stamps"] = [(os.path.relpath(path, args.tuxpaint), path, cap) for path, cap in stamps]
    if args.split:
        sets.pop("scikit photos")      # a split of Tux Paint alone
    res = {"vision": args.vision, "llm": args.llm, "modules": args.modules, "answer": args.answer,
           "in_context": args.in_context, "split": args.split, "questions": list(QUESTIONS), "sets": {}}
    for name, items in sets.items():
        for question in QUESTIONS:
            rows = evaluate(lens, items, question)
            res["sets"][f"{name} | {question}"] = {**summary(rows), "rows": rows}
    write_report(res, args.out)
    return res


def write_report(res: dict, out: str) -> None:
    how = f"answer={res['answer']}, in-context examples {'on' if res['in_context'] else 'off'}, modules {res['modules']}"
    lines = [f"LENS on real photos: tags from {res['vision']}, answers from {res['llm']} ({how})",
             "", "| set | question | images | top-5 tag hit | LLM answer hit | answer hit where the tags hit |",
             "|---|---|---|---|---|---|"]
    for key, s in res["sets"].items():
        name, question = key.split(" | ")
        lines.append(f"| {name} | {question} | {s['images']} | {100 * s['top5_tag_hit']:.0f}% | "
                     f"{100 * s['llm_answer_hit']:.0f}% | {100 * s['answer_hit_given_tag_hit']:.0f}% "
                     f"({s['tag_hit_images']}) |")
    first = next(iter(res["sets"]))
    lines += ["", f"Per photo ({first}): known content | top-5 tags | LLM answer", ""]
    for r in res["sets"][first]["rows"][:40]:
        mark = ("tag hit" if r["tag_hit"] else "tag miss") + (", answer hit" if r["answer_hit"] else "")
        lines.append(f"- **{r['name']}** ({r['known']}): {', '.join(r['tags'])} -> \"{r['answer']}\" [{mark}]")
    flags = (" --tuxpaint DIR" if any(k.startswith("Tux") for k in res["sets"]) else "") + \
        (f" --split {res['split']}" if res["split"] else "") + (f" --modules {res['modules']}") + \
        (f" --answer {res['answer']}") + ("" if res["in_context"] else " --no-in-context")
    lines += ["", f"Written by `python -m eval.lens_photos{flags}`."]
    md = "\n".join(lines) + "\n"
    write_md_json(out, md, res)
    print(md)


if __name__ == "__main__":
    main()
