"""ImageNet-1k class names, lemmas, definitions and WordNet hypernyms, from the tables shipped beside this module.

    from backbones.vision import imagenet
    imagenet.class_names()[281]          # 'tabby'
    imagenet.hypernym_chain(281)         # ['domestic cat', 'cat', 'feline', 'carnivore', ..., 'entity']
    imagenet.tag_hypernyms(281)          # ['domestic cat', 'cat', 'feline']

The tables in ``backbones/vision/imagenet/`` are built by ``python -m backbones.vision.imagenet_build``
(timm's ImageNet info files + WordNet 3.0; see the README there). Stdlib only; everything is read once.
"""
from __future__ import annotations

import functools
import operator
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "imagenet"
_REBUILD = "python -m backbones.vision.imagenet_build --timm-info TIMM_DIR --wordnet /usr/share/wordnet"

# Hypernym names too generic for a tagger to print. Picked from the ancestors shared by the most classes
# (entity 1000, physical entity 997, object 958, whole 949, artifact 522, living thing / organism 410,
# instrumentality 358) and WordNet's other upper-level nodes met on the classes' chains (depth <= 5).
ABSTRACT = frozenset({
    "entity", "physical entity", "abstraction", "object", "whole", "living thing", "organism", "artifact",
    "instrumentality", "matter", "substance", "solid", "material", "part", "piece", "natural object",
    "causal agent", "agent", "attribute", "relation", "communication", "shape", "location", "point",
    "commodity", "consumer goods", "article",
})


def _read(name: str) -> list[list[str]]:
    """Rows of a shipped tab-separated table (header dropped); FileNotFoundError says how to rebuild it."""
    path = DATA_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"ImageNet table {path} is missing; rebuild it with: {_REBUILD}")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in (lines[1:] if name.endswith(".tsv") else lines) if line]


@functools.lru_cache(maxsize=None)
def _classes() -> tuple[tuple[str, ...], ...]:
    """1000 rows (synset, name, lemmas, definition) in class-index order."""
    rows = _read("classes.tsv")
    if [int(r[0]) for r in rows] != list(range(len(rows))):
        raise ValueError(f"{DATA_DIR / 'classes.tsv'}: indices are not 0..{len(rows) - 1}")
    return tuple(tuple(r[1:]) for r in rows)


@functools.lru_cache(maxsize=None)
def _index() -> dict[str, int]:
    """{synset id: class index}."""
    return {row[0]: i for i, row in enumerate(_classes())}


@functools.lru_cache(maxsize=None)
def _hypernyms() -> dict[str, tuple[str, tuple[str, ...], int]]:
    """{synset id: (name, parent ids with the primary one first, depth from 'entity')}."""
    return {s: (n, tuple(p.split(",")) if p else (), int(d)) for s, n, p, d in _read("hypernyms.tsv")}


def synset_ids() -> list[str]:
    """The 1000 WordNet ids ('n01440764', ...) in class-index order."""
    return [row[0] for row in _classes()]


def class_names() -> list[str]:
    """1000 unique readable names in class-index order (first lemma; 'crane (wading bird)' where shared)."""
    return [row[1] for row in _classes()]


def lemmas() -> list[list[str]]:
    """Per class, all its lemmas (as in timm), e.g. ['tench', 'Tinca tinca']."""
    return [row[2].split(", ") for row in _classes()]


def definitions() -> list[str]:
    """Per class, its WordNet gloss."""
    return [row[3] for row in _classes()]


@functools.lru_cache(maxsize=None)
def _mini() -> tuple[str, ...]:
    return tuple(r[0] for r in _read("mini_imagenet.txt"))


def mini_imagenet_ids() -> list[str]:
    """The 100 mini-ImageNet synset ids (all among the 1000)."""
    return list(_mini())


def _synset(index_or_synset: int | str) -> str:
    """A class index (0..999) or a synset id of the hypernym table -> synset id; ValueError otherwise."""
    if isinstance(index_or_synset, str):
        if index_or_synset not in _hypernyms():
            raise ValueError(f"unknown synset id {index_or_synset!r} (not an ImageNet-1k class or a hypernym of one)")
        return index_or_synset
    if isinstance(index_or_synset, bool):
        raise ValueError(f"expected a class index or synset id, got {index_or_synset!r}")
    try:
        i = operator.index(index_or_synset)  # int or numpy integer
    except TypeError:
        raise ValueError(f"expected a class index or synset id, got {index_or_synset!r}") from None
    if not 0 <= i < len(_classes()):
        raise ValueError(f"class index {i} out of range 0..{len(_classes()) - 1}")
    return _classes()[i][0]


def synset_name(synset: str) -> str:
    """A WordNet synset id of the tables (a class or one of its hypernyms) -> its first lemma."""
    if synset not in _hypernyms():
        raise ValueError(f"unknown synset id {synset!r} (not an ImageNet-1k class nor one of their hypernyms)")
    return _hypernyms()[synset][0]


def hypernym_ids(index_or_synset: int | str, max_depth: int | None = None) -> list[str]:
    """Synset ids going up the primary hypernyms (first parent), nearest first, the class itself excluded."""
    hyp, s, out = _hypernyms(), _synset(index_or_synset), []
    while hyp[s][1] and (max_depth is None or len(out) < max_depth):
        s = hyp[s][1][0]
        out.append(s)
    return out


def hypernym_chain(index_or_synset: int | str, max_depth: int | None = None) -> list[str]:
    """Names going up the primary hypernyms (first parent), nearest first, the class itself excluded.

    ``hypernym_chain(281)`` -> ['domestic cat', 'cat', 'feline', ..., 'entity']; at most ``max_depth`` names."""
    return [synset_name(s) for s in hypernym_ids(index_or_synset, max_depth)]


def ancestors(index_or_synset: int | str) -> set[str]:
    """Synset ids of every hypernym over all parents (the whole DAG upward), the class itself excluded."""
    hyp, out = _hypernyms(), set()
    stack = list(hyp[_synset(index_or_synset)][1])
    while stack:
        s = stack.pop()
        if s not in out:
            out.add(s)
            stack.extend(hyp[s][1])
    return out


def tag_hypernym_ids(index: int | str, k: int = 3) -> list[str]:
    """Up to ``k`` nearest primary-chain synset ids whose names are not in ``ABSTRACT`` nor the class's own
    name or lemmas."""
    s = _synset(index)
    own = {_hypernyms()[s][0].lower()}
    if s in _index():
        _, name, lems, _ = _classes()[_index()[s]]
        own |= {n.lower() for n in [name, *lems.split(", ")]}
    keep = [h for h in hypernym_ids(s) if synset_name(h) not in ABSTRACT and synset_name(h).lower() not in own]
    return keep[:k]


def tag_hypernyms(index: int | str, k: int = 3) -> list[str]:
    """The names of `tag_hypernym_ids`: e.g. tabby -> ['domestic cat', 'cat', 'feline']."""
    return [synset_name(h) for h in tag_hypernym_ids(index, k)]
