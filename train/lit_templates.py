"""The prompt templates of the LiT text tower: a set to train on and a disjoint set held out for evaluation.

    from train.lit_templates import TRAIN_TEMPLATES, HELDOUT_TEMPLATES, TEMPLATE_SETS, templated
    templated("sneaker")        # one training-text choice: "sneaker" in every training template (a tuple)

Why: the shipped LiT (train/configs/contrastive_lit.py) names each class in a few fixed templates per
source. On the Fashion-MNIST test split (eval.zeroshot, this module's sets) it gets 84.3% with its own
eight templates and 72.8% with a user's "a photo of a {}" (issue 42 says 72.9%); "a photo of a {}."
gets 84.3%, so that fall is mostly the missing final period, and the bare "{}" gets 54.9%. Its
ensembles of this module's training and held-out sets both get ~84% (84.2 / 84.4%): an ensemble
hides the fragility, single prompts show it (each training template alone: mean 78.8%, worst 54.9%,
the period-less ones 55-82%; each held-out one: mean 81.7%, worst 72.8%;
docs/results/zeroshot_templates_shipped_lit.md). With `data.templates="many"` (train/configs/contrastive_lit_templates.py)
every source that names a class in fixed templates draws, per example, one of the TRAIN_TEMPLATES at
random instead (`train.lit_data.draw_batch`, seeded by (seed, step), so a resumed run draws the same
texts). `python -m eval.zeroshot --templates train heldout photo` scores each class by the normalised
mean text embedding over a set (a prompt ensemble) and each template of the set alone.

TRAIN_TEMPLATES: 24 varied wordings (bare name, "picture"/"image"/"drawing"/"close-up"/"product"
framings, "this is", sizes, grayscale and low-resolution forms), every other one without a final
period, so that the text tower sees both endings. HELDOUT_TEMPLATES: 8 wordings no training text
uses, first the issue's exact "a photo of a {}" (no period, as eval/lens_zeroshot.py writes it);
every "a photo of a/the {}" form is held out with it, so that figure measures wording the model has
not been trained on (training templates may still hold the word "photo": "a close-up photo of the
{}"). Each template has exactly one "{}" slot; no held-out template equals a training one up to
case, spaces and the final period (tests/test_lit_templates.py). The class name goes in as given (no
article agreement: "a picture of a ankle boot", as the fixed templates of train.lit_data and
backbones.clip.evaluate always did).
"""
from __future__ import annotations

import re

TRAIN_TEMPLATES = (
    "{}",
    "a {}.",
    "the {}",
    "a picture of a {}.",
    "a picture of the {}",
    "an image of a {}.",
    "an image showing a {}",
    "a close-up of a {}.",
    "a close-up photo of the {}",
    "a drawing of a {}.",
    "a sketch of the {}",
    "an illustration of a {}.",
    "a rendering of a {}",
    "an icon of a {}.",
    "a grayscale image of a {}",
    "a low resolution picture of a {}.",
    "a product shot of a {}",
    "this is a {}.",
    "this is a picture of a {}",
    "here is a {}.",
    "a {} in the picture",
    "a small {}.",
    "a large {}",
    "a good picture of a {}.",
)

HELDOUT_TEMPLATES = (
    "a photo of a {}",                      # the issue's own prompt (72.9% on Fashion-MNIST, shipped LiT)
    "a photo of a {}.",
    "a photo of the {}.",
    "a blurry photo of a {}.",
    "a cropped photo of a {}.",
    "a black and white photo of the {}.",
    "there is a {} in this image.",
    "an example of a {}.",
)

# The single user prompt of the 72.9% figure, as its own "ensemble" of one.
PHOTO_TEMPLATES = ("a photo of a {}",)

TEMPLATE_SETS = {"train": TRAIN_TEMPLATES, "heldout": HELDOUT_TEMPLATES, "photo": PHOTO_TEMPLATES}
MODES = ("fixed", "many")                    # cfg.data.templates


def normalise(template: str) -> str:
    """A template's wording up to case, runs of spaces and a final period (for the disjointness check)."""
    return re.sub(r"\s+", " ", template.lower()).strip().rstrip(".").strip()


def templated(name: str, templates=TRAIN_TEMPLATES) -> tuple[str, ...]:
    """`name` in each template: one choice of a PairSource item whose wording draw_batch draws uniformly
    (a tuple among an item's texts is one choice; a str is itself)."""
    return tuple(t.format(name) for t in templates)


def name_texts(names, fixed_templates, mode: str) -> list:
    """The texts of an item named by `names` (one class's name and aliases, lemmas, ...), for
    cfg.data.templates = `mode`:
    - "fixed": every name in every fixed template (the shipped behaviour, in its order);
    - "many": the same slots, each holding its name in a random training template (`templated`), so the
      shares of the names, and of an item's other texts beside them, stay what they were. A blank name
      is left out (one Tux Paint stamp's name is "", which "fixed" writes as "", "a photo of a ." ...)."""
    if mode == "fixed":
        return [t.format(n) for n in names for t in fixed_templates]
    if mode == "many":
        return [c for n in names if n.strip() for c in [templated(n)] * len(fixed_templates)]
    raise ValueError(f"data.templates={mode!r}: choose from {MODES}")


def describe(mode: str) -> dict:
    """What an export records about its training templates."""
    if mode == "many":
        return {"mode": mode, "train": list(TRAIN_TEMPLATES), "heldout": list(HELDOUT_TEMPLATES)}
    return {"mode": mode}
