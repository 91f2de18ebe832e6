"""Build the LENS tag and attribute vocabularies (data files in lens/vocab/).

    python -m lens.build_vocab [--out lens/vocab] [--max_new_tokens 48] [--skip_attributes]

tags.txt        one tag a line: the datasets' concepts (scene colours, shapes, sizes and
                colour-shape classes; Fashion-MNIST classes) plus common object words.
attributes.json {"prompt", "llm", "generation", "descriptors": {class: [descriptor, ...]}}:
                for each class the frozen LLM answers "What does a {class} look like?"
                (greedy, chat template) and the answer is split into short descriptors,
                the way LENS generated its attribute descriptors with an LLM.
The attributer scores "{class}, {descriptor}" strings with the contrastive model.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from backbones.cli_errors import add_debug_flag, cli_main

VOCAB_DIR = Path(__file__).parent / "vocab"
PROMPT = "What does a {} look like? Answer with a short list of visual features."

# Common, picturable object and scene words (hand-written for this repo).
COMMON_WORDS = """
person man woman child baby boy girl face hand people crowd
dog cat horse cow sheep bird duck chicken fish butterfly bee insect elephant zebra giraffe bear lion tiger monkey rabbit
car truck bus bicycle motorcycle train airplane boat ship rocket helicopter wheel road street traffic light sign
house building bridge tower church door window wall roof fence stairs room kitchen bathroom bedroom office
tree flower grass plant leaf forest mountain hill river lake sea beach sand rock stone sky cloud sun moon snow water field
table chair sofa bed desk lamp clock mirror shelf book cup mug glass bottle plate bowl spoon fork knife
coffee tea cake bread pizza fruit apple banana orange vegetable food
phone computer laptop keyboard screen television camera telescope
ball toy kite umbrella bag backpack suitcase hat helmet glasses watch
shirt dress coat jacket trousers shoe boot sneaker sandal sock scarf
paper letter text number pattern texture stripes dots grid shadow
metal wood fabric plastic glass brick concrete
astronaut scientist coin coins microscope cell chessboard chess horse statue painting portrait photograph drawing
circle square triangle rectangle diamond star cross line curve shape
""".split()


def scene_concepts() -> list[str]:
    from visiondata import scenes

    words = list(scenes.COLORS) + list(scenes.SHAPES) + list(scenes.SIZES)
    words += list(scenes.CLASS_NAMES)  # "red circle", ...
    words += [f"{s} {c} {sh}" for s in scenes.SIZES for c in scenes.COLORS for sh in scenes.SHAPES]
    words += ["gray background", "dark background", "light background", "shapes", "several shapes", "one shape"]
    return words


def fashion_concepts() -> list[str]:
    from visiondata import fashion_mnist

    return [c.lower() for c in fashion_mnist.CLASS_NAMES]


def tag_vocabulary() -> list[str]:
    """Dataset concepts first, then common words; unique, order kept."""
    return list(dict.fromkeys(w.strip().lower() for w in scene_concepts() + fashion_concepts() + COMMON_WORDS
                              if w.strip()))


def attribute_classes() -> list[str]:
    """Classes to describe: scene shapes, Fashion-MNIST classes and a set of common objects."""
    from visiondata import scenes

    common = ["dog", "cat", "horse", "bird", "car", "bus", "bicycle", "airplane", "boat", "rocket", "house", "tree",
              "flower", "mountain", "beach", "person", "astronaut", "cup", "coffee", "clock", "book", "chair",
              "table", "camera", "coin", "chessboard", "cake", "apple", "building", "street"]
    return list(dict.fromkeys(list(scenes.SHAPES) + fashion_concepts() + common))


_LEAD = re.compile(r"^(?:[-*•\d.)\s]+)")
_FILLER = re.compile(r"^(?:a|an|the|it|they|its|it's|it is|it has|which|that|with|has|have|is|are|typically|usually"
                     r"|often|generally)\s+", re.I)


_STOP = {"this", "that", "these", "those", "other", "some", "many", "more", "most", "also", "very", "such",
         "which", "there", "their", "where", "when", "while", "from", "into", "onto", "with", "without"}


def parse_descriptors(text: str, cls: str, max_items: int = 6) -> list[str]:
    """An LLM answer -> short lowercase descriptor phrases (2-8 words, no duplicates, not just the class)."""
    parts = re.split(r"[\n;,.:!?]|\band\b|\bor\b", text)
    out = []
    for p in parts:
        p = _LEAD.sub("", p.strip()).strip().lower()
        p = re.sub(r"\*+", "", p)
        for _ in range(3):
            p = _FILLER.sub("", p)
        p = re.sub(r"\s+", " ", p).strip(" -\"'")
        if p.startswith(cls + " "):  # "dress is a versatile" restates the class
            p = p[len(cls) + 1:]
            for _ in range(3):
                p = _FILLER.sub("", p)
        words = p.split()
        if not 1 <= len(words) <= 8 or p == cls or not re.search(r"[a-z]", p):
            continue
        if len(words) == 1 and (len(p) < 4 or p in _STOP) or words[-1] in _STOP | {"a", "an", "the", "of"}:
            continue
        if any(w in ("i", "you", "sorry", "answer", "question", "features", "feature", "list") for w in words):
            continue
        if p not in out:
            out.append(p)
        if len(out) >= max_items:
            break
    return out


def generate_attributes(classes: list[str], llm, max_new_tokens: int = 48, batch: int = 8) -> dict:
    prompts = [PROMPT.format(c) for c in classes]
    answers = []
    for a in range(0, len(prompts), batch):
        answers += llm.generate(prompts[a:a + batch], max_new_tokens=max_new_tokens, chat=True, temperature=0.0)
        print(f"  described {min(a + batch, len(prompts))}/{len(prompts)} classes", file=sys.stderr)
    descriptors = {c: parse_descriptors(t, c) for c, t in zip(classes, answers)}
    return {"prompt": PROMPT, "llm": getattr(llm, "name", "llm"),
            "generation": {"max_new_tokens": max_new_tokens, "temperature": 0.0, "chat": True},
            "descriptors": descriptors, "raw": dict(zip(classes, answers))}


def load_tags(directory: str | os.PathLike | None = None) -> list[str]:
    path = Path(directory or VOCAB_DIR) / "tags.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing; build it with `python -m lens.build_vocab`")
    return [w for w in path.read_text().splitlines() if w.strip()]


def load_attributes(directory: str | os.PathLike | None = None) -> list[str]:
    """Attribute strings "{class}, {descriptor}" from attributes.json."""
    path = Path(directory or VOCAB_DIR) / "attributes.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing; build it with `python -m lens.build_vocab`")
    doc = json.loads(path.read_text())
    return [f"{c}, {d}" for c, ds in doc["descriptors"].items() for d in ds]


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(VOCAB_DIR))
    p.add_argument("--llm", default="smollm2-135m")
    p.add_argument("--max_new_tokens", type=int, default=48)
    p.add_argument("--skip_attributes", action="store_true", help="only rewrite tags.txt")
    p.add_argument("--reparse", action="store_true",
                   help="re-split the LLM answers stored in attributes.json (no generation)")
    add_debug_flag(p)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tags = tag_vocabulary()
    (out / "tags.txt").write_text("\n".join(tags) + "\n")
    print(f"wrote {len(tags)} tags to {out / 'tags.txt'}", file=sys.stderr)
    if args.skip_attributes:
        return
    if args.reparse:
        doc = json.loads((out / "attributes.json").read_text())
        doc["descriptors"] = {c: parse_descriptors(t, c) for c, t in doc["raw"].items()}
        (out / "attributes.json").write_text(json.dumps(doc, indent=1) + "\n")
        print(f"re-parsed {sum(map(len, doc['descriptors'].values()))} descriptors", file=sys.stderr)
        return
    from backbones import load_llm

    t0 = time.time()
    llm = load_llm(args.llm)
    doc = generate_attributes(attribute_classes(), llm, args.max_new_tokens)
    doc["llm"] = args.llm
    (out / "attributes.json").write_text(json.dumps(doc, indent=1) + "\n")
    n = sum(len(v) for v in doc["descriptors"].values())
    print(f"wrote {n} descriptors of {len(doc['descriptors'])} classes to {out / 'attributes.json'} "
          f"in {time.time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
