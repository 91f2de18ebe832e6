"""The image–text pairs the LiT model trains on, as frozen-backbone features and caption lists.

    sources = build_sources(cfg, backbone, workdir)     # {name: PairSource}
    batch = draw_batch(sources, cfg.data.batch, step, seed)

Each source holds one row of pooled backbone features per image (computed once and cached in
WORKDIR/features/), the texts that describe it, and a positive group per image: two items of
one group are positives of each other (one emoji concept in two styles; one Fashion-MNIST class;
one Tux Paint caption). Scene captions are their own groups (the text drawn decides). The
`imagenet` source has no images: its rows are the backbone classifier's weight vectors, the
directions in feature space that name ImageNet classes and (averaged over their subtrees) WordNet
hypernyms; the model maps them with `CLIP.encode_directions`. Batches are drawn from
(seed, step) alone, so a resumed run draws the same batches.

Class names go into text through templates (`train/lit_templates.py`, cfg.data.templates): "fixed"
(the shipped model) writes each name in each of a source's few fixed templates (IMAGENET_TEMPLATES,
TUXPAINT_TEMPLATES, backbones.clip.evaluate.FMNIST_TEMPLATES); "many" puts each name, per drawn
example, in one of the 24 training templates drawn at random, and adds the emoji's CLDR name so
templated as one more choice beside their own captions. Scene captions are sentences and stay as
they are.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np

from train import lit_templates

IMAGENET_TEMPLATES = ("a photo of a {}.", "{}", "a picture of a {}.", "an image of a {}.")
TUXPAINT_TEMPLATES = ("{}", "a photo of a {}.", "a picture of a {}.")


@dataclasses.dataclass
class PairSource:
    name: str
    features: np.ndarray              # (N, F) float32 backbone features, or (N, F) classifier directions
    texts: list[list]                 # per item, the texts that describe it: each a str, or a tuple of
                                      # wordings of which one is drawn (a name in random templates)
    groups: list[str] | None          # per item, its positive group; None: group by the drawn text
    directions: bool = False          # rows are classifier directions (encode_directions), not features

    def __len__(self):
        return len(self.features)


def cached_features(backbone, images: np.ndarray, workdir: str, key: str) -> np.ndarray:
    """Pooled features (N, F) of uint8 images (N, H, W, 3), cached on disk under a hash of the pixels."""
    h = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()[:16]
    path = os.path.join(workdir, "features", f"{key}-{backbone.config.name}-{h}.npy")
    if os.path.exists(path):
        return np.load(path)
    from tqdm.auto import tqdm

    chunks = [backbone.embed(images[i:i + 256]) for i in tqdm(range(0, len(images), 256), desc=f"features {key}",
                                                            unit="x256")]
    feats = np.concatenate(chunks).astype(np.float32)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.save(f, feats)
    os.replace(tmp, path)
    return feats


def emoji_source(cfg, backbone, workdir, templates: str = "fixed") -> PairSource:
    """Emoji train concepts with their captions; templates="many" adds the CLDR name in random training
    templates as one more choice."""
    from visiondata import emoji

    feats, texts, groups = [], [], []
    for style in cfg.styles:
        ds = emoji.load(style=style, split="train", size=cfg.size)
        feats.append(cached_features(backbone, ds.images, workdir, f"emoji-{style}"))
        texts += [emoji.captions_for(c) + ([lit_templates.templated(n)] if templates == "many" else [])
                  for c, n in zip(ds.concepts, ds.names)]
        groups += [f"emoji:{c}" for c in ds.concepts]
    return PairSource("emoji", np.concatenate(feats), texts, groups)


def tuxpaint_source(cfg, backbone, workdir, by: str = "name", templates: str = "fixed") -> PairSource:
    """Tux Paint training stamps named by their caption and name (`by="name"`: one group per stamp name),
    or by their category folder (`by="category"`: "animals", "town", ...; one group per category);
    names in TUXPAINT_TEMPLATES or random training templates (`templates`, lit_templates.name_texts)."""
    from visiondata import tuxpaint

    feats, texts, groups = [], [], []
    for background in cfg.backgrounds:
        ts = tuxpaint.load(split="train", size=cfg.size, background=background, seed=0)
        feats.append(cached_features(backbone, ts.images, workdir, f"tuxpaint-{background}"))
        if by == "category":
            texts += [lit_templates.name_texts([c], TUXPAINT_TEMPLATES, templates) for c in ts.categories]
            groups += [f"tuxcat:{c}" for c in ts.categories]
        else:
            texts += [[cap] + lit_templates.name_texts([n], TUXPAINT_TEMPLATES, templates)
                      for cap, n in zip(ts.captions, ts.names)]
            groups += [f"tux:{n}" for n in ts.names]
    return PairSource("tuxpaint" if by == "name" else "tuxpaint_categories", np.concatenate(feats), texts, groups)


def fmnist_source(cfg, backbone, workdir, templates: str = "fixed") -> PairSource:
    from backbones.clip.evaluate import FMNIST_TEMPLATES
    from visiondata import fashion_mnist

    x, y = fashion_mnist.load("train")
    x, y = x[: cfg.limit], y[: cfg.limit]
    names = [list(fashion_mnist.CLASS_ALIASES[c]) if cfg.aliases else [c] for c in fashion_mnist.CLASS_NAMES]
    feats = cached_features(backbone, fashion_mnist.to_rgb(x, cfg.size), workdir, "fmnist")
    per_class = [lit_templates.name_texts(ns, FMNIST_TEMPLATES, templates) for ns in names]
    return PairSource("fmnist", feats, [per_class[c] for c in y], [f"fmnist:{c}" for c in y])


def scenes_source(cfg, backbone, workdir, seed: int) -> PairSource:
    from visiondata import scenes

    s = scenes.generate(cfg.limit, size=cfg.size, seed=seed, split="train")
    return PairSource("scenes", cached_features(backbone, s.images, workdir, "scenes"), [list(c) for c in s.captions],
                      None)


def imagenet_source(backbone, min_classes: int = 2, templates: str = "fixed") -> PairSource:
    """Classifier rows w_c (named by each class's lemmas) and, per WordNet hypernym with at least
    `min_classes` classes below it, the normalised mean of their unit rows (named by the hypernym)."""
    from backbones.vision import imagenet

    w = np.asarray(backbone.model.fc.kernel[...], np.float32).T                  # (1000, F)
    unit = w / np.linalg.norm(w, axis=1, keepdims=True)
    rows, texts, groups = list(w), [], []
    for c, lemmas in enumerate(imagenet.lemmas()):
        names = list(dict.fromkeys([imagenet.class_names()[c]] + lemmas))
        texts.append(lit_templates.name_texts(names, IMAGENET_TEMPLATES, templates))
        groups.append(f"in:{imagenet.synset_ids()[c]}")
    below: dict[str, list[int]] = {}
    for c in range(len(w)):
        for s in imagenet.ancestors(c):
            below.setdefault(s, []).append(c)
    for s, members in sorted(below.items()):
        name = imagenet.synset_name(s)
        if len(members) < min_classes or name in imagenet.ABSTRACT:
            continue
        m = unit[members].mean(0)
        rows.append(m / np.linalg.norm(m) * np.linalg.norm(w, axis=1).mean())
        texts.append(lit_templates.name_texts([name], IMAGENET_TEMPLATES, templates))
        groups.append(f"in:{s}")
    return PairSource("imagenet", np.stack(rows).astype(np.float32), texts, groups, directions=True)


def build_sources(cfg, backbone, workdir: str) -> dict[str, PairSource]:
    """The sources named in cfg.data.batch with a positive batch share."""
    d, out = cfg.data, {}
    tm = d.get("templates", "fixed")
    if tm not in lit_templates.MODES:
        raise ValueError(f"data.templates={tm!r}: choose from {lit_templates.MODES}")
    builders = {
        "emoji": lambda: emoji_source(d.emoji, backbone, workdir, templates=tm),
        "tuxpaint": lambda: tuxpaint_source(d.tuxpaint, backbone, workdir, templates=tm),
        "tuxpaint_categories": lambda: tuxpaint_source(d.tuxpaint, backbone, workdir, by="category", templates=tm),
        "fmnist": lambda: fmnist_source(d.fmnist, backbone, workdir, templates=tm),
        "scenes": lambda: scenes_source(d.scenes, backbone, workdir, cfg.seed),
        "imagenet": lambda: imagenet_source(backbone, templates=tm),
    }
    for name, share in d.batch.items():
        if name not in builders:
            raise ValueError(f"unknown LiT data source {name!r}; known: {sorted(builders)}")
        if share > 0:
            out[name] = builders[name]()
    return out


def all_texts(sources: dict[str, PairSource]) -> list[str]:
    """Every training text once (every wording of a tuple choice too), sorted: the token matrix rows."""
    return sorted({w for s in sources.values() for ts in s.texts for t in ts
                   for w in (t if isinstance(t, tuple) else (t,))})


def pick_text(options: list, rng: np.random.Generator) -> str:
    """One text of an item: a choice drawn uniformly from `options`; a tuple choice (a name in every
    training template) then draws its wording uniformly. Options of plain strings take one draw, as
    the shipped model's batches did."""
    o = options[rng.integers(0, len(options))]
    return o[rng.integers(0, len(o))] if isinstance(o, tuple) else o


def draw_batch(sources: dict[str, PairSource], shares: dict, step: int, seed: int, text_index: dict) -> dict:
    """One batch from (seed, step): features (Bf, F), directions (Bd, F), text ids (Bf + Bd,), group keys."""
    rng = np.random.default_rng([seed, step])
    feats, dirs, text_ids, groups_f, groups_d = [], [], [], [], []
    for name in sorted(sources):
        src, n = sources[name], shares[name]
        idx = rng.integers(0, len(src), n)
        picks = [pick_text(src.texts[i], rng) for i in idx]
        groups = [src.groups[i] if src.groups else f"text:{t}" for i, t in zip(idx, picks)]
        (dirs if src.directions else feats).append(src.features[idx])
        (groups_d if src.directions else groups_f).extend(groups)
        text_ids.append((src.directions, [text_index[t] for t in picks]))
    ids = [i for d, ids in text_ids if not d for i in ids] + [i for d, ids in text_ids if d for i in ids]
    groups = groups_f + groups_d
    uniq = {g: k for k, g in enumerate(dict.fromkeys(groups))}
    F = next(iter(sources.values())).features.shape[1]
    return {"features": np.concatenate(feats) if feats else np.zeros((0, F), np.float32),
            "directions": np.concatenate(dirs) if dirs else np.zeros((0, F), np.float32),
            "text_ids": np.asarray(ids, np.int32),
            "keys": np.asarray([uniq[g] for g in groups], np.int32)}


def describe(sources: dict[str, PairSource]) -> str:
    return json.dumps({k: {"items": len(s), "groups": len(set(s.groups)) if s.groups else None}
                       for k, s in sources.items()})
