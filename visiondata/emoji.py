"""Emoji: the same concepts drawn in three artistic styles, with names, categories and captions.

    from visiondata import emoji
    ds = emoji.load(style="google", split="train", size=64, skin_tones=False)
    ds.images         # uint8 (N, size, size, 3), composited on white
    ds.alpha          # uint8 (N, size, size)
    ds.concepts       # list[str] concept key: unified code of the base emoji, e.g. "1F600"
    ds.names          # list[str] CLDR name, lowercase, e.g. "grinning face"
    ds.captions       # list[str] e.g. "an emoji of a grinning face"
    ds.categories, ds.subcategories   # e.g. "Smileys & Emotion", "face-smiling"
    ds.variants       # list[str] "" for the default picture, else its skin-tone code(s), e.g. "1F3FB"
    emoji.captions_for("1F600")       # several phrasings: name, short names, category
    emoji.concept_table()             # list of dicts: concept, name, short_names, category, ... styles
    emoji.attribution(["twitter"])    # the credit line every picture grid of these styles must carry

Styles (`STYLES`): "google" (Noto, Apache-2.0), "twitter" (Twemoji graphics, CC-BY 4.0: credit
them, see `attribution`), and the Fluent icons "fluent-flat", "fluent-modern",
"fluent-high-contrast" (MIT). Concepts are the emoji that both Noto and Twemoji draw (the five
skin-tone/hair components left out); a Fluent icon belongs to a concept when its file name, with a
"-default" suffix dropped, is the concept's CLDR slug (`unicode-emoji-json`), so Fluent covers
only part of the concepts. Every picture is 64x64 in the cache; other sizes are resized from it.

Splits are by concept, from a hash of the concept key (no random state): "heldout" is 20% of
concepts, never in training in any style; "test" is 10% of the remaining concepts, also kept out
of training; "train" is the rest; "all" is everything. The same concept is in the same split in
every style. Fluent is the held-out STYLE: its pictures are loadable in every split (e.g. Fluent
"train" = Fluent pictures of concepts seen in training, to test style transfer), but no model in
this repo trains on any Fluent picture; training uses "google" and "twitter" only (`TRAIN_STYLES`).

The data comes from npm packages that `python -m visiondata.emoji_setup` fetches once into
`$LLMSIGHT_CACHE/emoji` (default `~/.cache/llmsight/emoji`); without it, `load` raises
`MissingDataError` naming that command. Facts and licenses: visiondata/DATA_EMOJI.md.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re

import numpy as np

from visiondata.errors import DataError, MissingDataError

STYLES = ("google", "twitter", "fluent-flat", "fluent-modern", "fluent-high-contrast")
TRAIN_STYLES = ("google", "twitter")   # the only styles anything may train on
SPLITS = ("train", "test", "heldout", "all")
HELDOUT_FRACTION = 0.2                  # of all concepts
TEST_FRACTION = 0.1                     # of the concepts that are not held out
NATIVE_SIZE = 64
ATTRIBUTION = {
    "google": "Noto Emoji by Google, Apache-2.0",
    "twitter": "Twemoji graphics Copyright Twitter, Inc and other contributors, licensed CC-BY 4.0 "
               "(creativecommons.org/licenses/by/4.0)",
    "fluent": "Fluent Emoji by Microsoft, MIT",
}
# Fluent file-name suffixes -> the skin-tone code that emoji.json uses ("" = the default yellow).
_FLUENT_TONES = {"default": "", "light": "1F3FB", "medium-light": "1F3FC", "medium": "1F3FD",
                 "medium-dark": "1F3FE", "dark": "1F3FF"}


@dataclasses.dataclass
class EmojiSet:
    images: np.ndarray        # uint8 (N, size, size, 3), composited on white
    alpha: np.ndarray         # uint8 (N, size, size), 255 = opaque
    concepts: list[str]       # (N,) concept key, the unified code of the base emoji, e.g. "1F600"
    names: list[str]          # (N,) CLDR name, lowercase, e.g. "grinning face"
    captions: list[str]       # (N,) e.g. "an emoji of a grinning face"
    categories: list[str]     # (N,) e.g. "Smileys & Emotion"
    subcategories: list[str]  # (N,) e.g. "face-smiling"
    style: str
    variants: list[str]       # (N,) "" for the default picture, else skin-tone code(s), e.g. "1F3FB"

    def __len__(self) -> int:
        return len(self.concepts)


def cache_dir() -> str:
    from visiondata.emoji_setup import cache_dir as _dir

    return _dir()


def _missing(root: str) -> MissingDataError:
    from visiondata.emoji_setup import SETUP_COMMAND

    return MissingDataError(
        f"emoji data not found in {root}: run `{SETUP_COMMAND}` once (it fetches the npm packages "
        "emoji-datasource-google, emoji-datasource-twitter, fluentui-emoji and unicode-emoji-json with "
        "npm, checks their SHA-256 and unpacks them there; `make setup` runs it)"
    )


def split_of(concept: str) -> str:
    """'heldout', 'test' or 'train' for a concept key, from a hash of the key alone."""
    u = int.from_bytes(hashlib.sha256(f"llmsight-emoji:{concept}".encode()).digest()[:8], "big") / 2.0**64
    if u < HELDOUT_FRACTION:
        return "heldout"
    return "test" if u < HELDOUT_FRACTION + TEST_FRACTION * (1 - HELDOUT_FRACTION) else "train"


def slug_key(slug: str) -> str:
    """Join key of a CLDR slug or Fluent file name: lowercase letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", slug.lower())


def fluent_join(stem: str, keys: dict) -> tuple | None:
    """(concept, variant) of a Fluent file stem ("thumbs-up-medium-dark"), given {slug_key: concept};
    the variant is "" for the default picture, else its skin-tone code ("1F3FE")."""
    if slug_key(stem) in keys:
        return keys[slug_key(stem)], ""
    for suffix in sorted(_FLUENT_TONES, key=len, reverse=True):
        if stem.endswith("-" + suffix) and slug_key(stem[: -len(suffix) - 1]) in keys:
            return keys[slug_key(stem[: -len(suffix) - 1])], _FLUENT_TONES[suffix]
    return None


# --- captions -------------------------------------------------------------------------------------

def _bare(name: str, subcategory: str = "") -> str:
    """The name as a noun phrase: "flag japan" (a country flag) -> "flag of japan"."""
    if subcategory in ("country-flag", "subdivision-flag") and name.startswith("flag "):
        return "flag of " + name[5:]
    return name


def _with_article(phrase: str) -> str:
    """"grinning face" -> "a grinning face", "open hands" -> "open hands", "flag of japan" -> "the flag of japan"."""
    if phrase.startswith("flag of "):
        return "the " + phrase
    head = re.split(r" with | of | in | on |, ", phrase)[0].split() or [phrase]
    last, first = head[-1], head[0]
    if first in ("people", "men", "women") or (last.endswith("s") and not last.endswith(("ss", "us", "is"))):
        return phrase
    an = first[0] in "aeiou" and not first.startswith(("one", "uni", "use", "eu"))
    return ("an " if an else "a ") + phrase


def make_captions(name: str, unicode_name: str, short_names: list[str], category: str, subcategory: str) -> list[str]:
    """Several captions of one emoji, the plainest first (no duplicates)."""
    bare = _bare(name, subcategory)
    phrase = _with_article(bare)
    out = [f"an emoji of {phrase}", phrase, f"{bare} emoji", f"a picture of {phrase}"]
    if unicode_name and unicode_name != name:
        out.append(f"an emoji of {_with_article(_bare(unicode_name, subcategory))}")
    out += [f"the :{s}: emoji" for s in short_names]
    out.append(f"an emoji from {category.lower()} ({subcategory.replace('-', ' ')}): {bare}")
    return list(dict.fromkeys(out))


# --- metadata -------------------------------------------------------------------------------------

def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise MissingDataError(f"{path} is missing: rerun `python -m visiondata.emoji_setup --force`") from e
    except ValueError as e:
        raise DataError(f"{path} is not valid JSON ({e}): rerun `python -m visiondata.emoji_setup --force`") from e


@functools.lru_cache(maxsize=2)
def _table(root: str) -> tuple[dict, ...]:
    """One dict per concept (emoji.json's sort order), with `files`: {style: [(variant, file path)]}."""
    entries = _read_json(os.path.join(root, "google", "emoji.json"))
    cldr = _read_json(os.path.join(root, "cldr", "data-by-emoji.json"))
    rows = []
    for e in sorted(entries, key=lambda e: e["sort_order"]):
        if not (e["has_img_google"] and e["has_img_twitter"]) or e["category"] == "Component":
            continue
        char = "".join(chr(int(h, 16)) for h in e["unified"].split("-"))
        c = cldr.get(char) or cldr.get(char.replace("\ufe0f", "")) or {}
        name = (c.get("name") or e["name"]).lower()
        files = {}
        for style in TRAIN_STYLES:
            d = os.path.join(root, style, str(NATIVE_SIZE))
            files[style] = [("", os.path.join(d, e["image"]))] + [
                (tone, os.path.join(d, v["image"])) for tone, v in sorted(e.get("skin_variations", {}).items())
                if v.get(f"has_img_{style}")]
        rows.append({
            "concept": e["unified"], "char": char, "name": name, "unicode_name": (e["name"] or "").lower(),
            "short_names": list(e["short_names"]), "category": e["category"], "subcategory": e["subcategory"],
            "slug": c.get("slug", ""), "split": split_of(e["unified"]), "files": files,
        })
    keys = {slug_key(r["slug"]): i for i, r in enumerate(rows) if r["slug"]}
    for fl in STYLES[2:]:
        d = os.path.join(root, "fluent", fl.removeprefix("fluent-"), str(NATIVE_SIZE))
        found: dict[int, dict[str, str]] = {}
        for f in sorted(os.listdir(d), key=lambda f: (f.endswith("-default.png"), f)):  # exact names first
            joined = fluent_join(f[:-4], keys) if f.endswith(".png") else None
            if joined is not None:
                found.setdefault(joined[0], {}).setdefault(joined[1], os.path.join(d, f))
        for i, tones in found.items():
            if "" in tones:  # a concept counts for a style only where its default picture exists
                rows[i]["files"][fl] = [("", tones.pop(""))] + sorted(tones.items())
    return tuple(rows)


def resolve_root() -> str:
    """The emoji cache folder; `MissingDataError` naming the setup command when it is not set up."""
    from visiondata.emoji_setup import is_ready

    root = cache_dir()
    if not is_ready(root):
        raise _missing(root)
    return root


def concept_table() -> list[dict]:
    """One dict per concept: concept, char, name, unicode_name, short_names, category, subcategory,
    slug (CLDR), split, styles (the styles that draw it)."""
    return [{**{k: v for k, v in r.items() if k != "files"}, "short_names": list(r["short_names"]),
             "styles": [s for s in STYLES if s in r["files"]]} for r in _table(resolve_root())]


def captions_for(concept: str) -> list[str]:
    """Several captions of a concept key (e.g. "1F600"), from its CLDR and Unicode names, short names
    and category; the first is the one `load` returns."""
    captions = _captions(resolve_root())
    if concept not in captions:
        raise KeyError(f"unknown emoji concept {concept!r}; keys are unified codes such as '1F600' (see concept_table())")
    return list(captions[concept])


@functools.lru_cache(maxsize=2)
def _captions(root: str) -> dict[str, tuple[str, ...]]:
    return {r["concept"]: tuple(make_captions(r["name"], r["unicode_name"], r["short_names"], r["category"],
                                              r["subcategory"])) for r in _table(root)}


def attribution(styles) -> str:
    """The credit line for a picture grid that shows `styles` (Twemoji's is required by CC-BY 4.0)."""
    styles = [styles] if isinstance(styles, str) else list(styles)
    keys = dict.fromkeys("fluent" if s.startswith("fluent") else s for s in styles)
    return "; ".join(ATTRIBUTION[k] for k in keys if k in ATTRIBUTION)


# --- pixels ---------------------------------------------------------------------------------------

def _read_rgba(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGBA"), dtype=np.uint8)
    except FileNotFoundError as e:
        raise MissingDataError(f"{path} is missing: rerun `python -m visiondata.emoji_setup --force`") from e
    except OSError as e:
        raise DataError(f"cannot read {path} ({e}): rerun `python -m visiondata.emoji_setup --force`") from e
    if a.shape != (NATIVE_SIZE, NATIVE_SIZE, 4):
        raise DataError(f"{path} is {a.shape[1]}x{a.shape[0]}; expected {NATIVE_SIZE}x{NATIVE_SIZE}")
    return a


@functools.lru_cache(maxsize=10)
def _pixels(root: str, style: str, skin_tones: bool) -> tuple[np.ndarray, tuple[int, ...], tuple[str, ...]]:
    """Every picture of a style: (uint8 (M, 64, 64, 4) RGBA, row index into _table per picture, variants)."""
    rows, idx, variants, paths = _table(root), [], [], []
    for i, r in enumerate(rows):
        for variant, path in r["files"].get(style, [])[: None if skin_tones else 1]:
            idx.append(i)
            variants.append(variant)
            paths.append(path)
    rgba = np.stack([_read_rgba(p) for p in paths]) if paths else np.zeros((0, 64, 64, 4), np.uint8)
    rgba.setflags(write=False)
    return rgba, tuple(idx), tuple(variants)


def resize_rgba(rgba: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, h, w, 4) -> (N, size, size, 4), resampled with premultiplied alpha (Lanczos)."""
    from PIL import Image

    if rgba.shape[1:3] == (size, size):
        return rgba.copy()
    out = np.empty((len(rgba), size, size, 4), np.uint8)
    for i, im in enumerate(rgba):
        out[i] = np.asarray(Image.fromarray(im, "RGBA").resize((size, size), Image.LANCZOS))
    return out


def on_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 (..., 4) RGBA -> uint8 (..., 3) composited over white."""
    rgb, a = rgba[..., :3].astype(np.uint32), rgba[..., 3:].astype(np.uint32)
    return ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def load(style: str = "google", split: str = "train", size: int = NATIVE_SIZE, skin_tones: bool = False) -> EmojiSet:
    """The pictures of one style in one concept split, in concept-table order (base picture first,
    then its skin tones when `skin_tones`). Fluent styles are for evaluation only (module docstring)."""
    if style not in STYLES:
        raise ValueError(f"unknown emoji style {style!r}; choose one of: {', '.join(STYLES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown emoji split {split!r}; choose one of: {', '.join(SPLITS)}")
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive int; got {size!r}")
    root = resolve_root()
    rows = _table(root)
    rgba, idx, variants = _pixels(root, style, bool(skin_tones))
    keep = [k for k, i in enumerate(idx) if split == "all" or rows[i]["split"] == split]
    rgba = resize_rgba(rgba[keep], int(size))
    sel = [rows[idx[k]] for k in keep]
    return EmojiSet(
        images=on_white(rgba), alpha=np.ascontiguousarray(rgba[..., 3]),
        concepts=[r["concept"] for r in sel], names=[r["name"] for r in sel],
        captions=[_captions(root)[r["concept"]][0] for r in sel],
        categories=[r["category"] for r in sel], subcategories=[r["subcategory"] for r in sel],
        style=style, variants=[variants[k] for k in keep],
    )
