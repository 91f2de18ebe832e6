"""LiT's prompt templates (train/lit_templates.py): disjoint train / held-out sets, the per-example template
draw of train.lit_data (seeded, resumable), the prompt-ensemble class embedding of eval.zeroshot and its
--templates rows, and the contrastive_lit_templates config. No data, no model: stand-ins only."""
import string

import numpy as np
import pytest

from train import lit_data, lit_templates
from train.lit_templates import HELDOUT_TEMPLATES, TRAIN_TEMPLATES

FMNIST_NAMES = [["t-shirt", "tee"], ["trouser", "pants", "jeans"], ["bag"]]
FIXED = ("a photo of a {}.", "{}", "a picture of a {}.")


def slots(template: str) -> list:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def test_the_sets_are_disjoint_and_every_template_has_one_slot():
    assert 16 <= len(TRAIN_TEMPLATES) <= 24 and 6 <= len(HELDOUT_TEMPLATES) <= 8
    for t in TRAIN_TEMPLATES + HELDOUT_TEMPLATES:
        assert slots(t) == [""], t                           # exactly one positional {} slot
        assert t.format("sneaker").count("sneaker") == 1
    assert len(set(TRAIN_TEMPLATES)) == len(TRAIN_TEMPLATES) and len(set(HELDOUT_TEMPLATES)) == len(HELDOUT_TEMPLATES)
    train = {lit_templates.normalise(t) for t in TRAIN_TEMPLATES}
    assert not train & {lit_templates.normalise(t) for t in HELDOUT_TEMPLATES}     # not even up to case or period
    # the issue's own prompt, and every "a photo of a/the {}" form, are held out
    assert HELDOUT_TEMPLATES[0] == "a photo of a {}" and lit_templates.TEMPLATE_SETS["photo"] == ("a photo of a {}",)
    assert not any(t.startswith(("a photo of a {}", "a photo of the {}")) for t in TRAIN_TEMPLATES)
    assert lit_templates.normalise("A  Photo of a {}. ") == "a photo of a {}"
    # both endings are trained on (the shipped LiT loses 11 points on "a photo of a {}" against "... {}.")
    assert sum(t.endswith(".") for t in TRAIN_TEMPLATES) >= 8 and sum(not t.endswith(".") for t in TRAIN_TEMPLATES) >= 8


def test_name_texts_keep_the_fixed_slots_and_fill_them_with_random_training_templates():
    fixed = lit_templates.name_texts(["tee", "top"], FIXED, "fixed")
    assert fixed == [t.format(n) for n in ("tee", "top") for t in FIXED]            # the shipped texts, in order
    many = lit_templates.name_texts(["tee", "top"], FIXED, "many")
    assert len(many) == len(fixed) and all(isinstance(c, tuple) for c in many)     # same slots, same name shares
    assert many[0] == tuple(t.format("tee") for t in TRAIN_TEMPLATES) and many[-1][0] == "top"
    assert lit_templates.name_texts(["", " "], FIXED, "many") == []                  # a blank name names nothing
    with pytest.raises(ValueError, match="data.templates='few'"):
        lit_templates.name_texts(["tee"], FIXED, "few")


def sources(mode: str) -> dict:
    rng = np.random.default_rng(0)
    y = rng.integers(0, len(FMNIST_NAMES), 40)
    per_class = [lit_templates.name_texts(ns, FIXED, mode) for ns in FMNIST_NAMES]
    fm = lit_data.PairSource("fmnist", rng.normal(size=(40, 6)).astype(np.float32), [per_class[c] for c in y],
                             [f"fmnist:{c}" for c in y])
    tux = lit_data.PairSource("tuxpaint", rng.normal(size=(3, 6)).astype(np.float32),
                              [[f"A {n}."] + lit_templates.name_texts([n], FIXED, mode) for n in ("cat", "dog", "van")],
                              ["tux:cat", "tux:dog", "tux:van"])
    return {"fmnist": fm, "tuxpaint": tux}


def draws(srcs, seed, steps, shares=None):
    shares = shares or {"fmnist": 48, "tuxpaint": 16}
    texts = lit_data.all_texts(srcs)
    index = {t: i for i, t in enumerate(texts)}
    return [[texts[i] for i in lit_data.draw_batch(srcs, shares, s, seed, index)["text_ids"]] for s in steps]


def test_the_template_draw_is_seeded_resumable_and_varied():
    srcs = sources("many")
    a = draws(srcs, seed=0, steps=[1, 2, 3, 4, 5])
    assert a == draws(srcs, seed=0, steps=[1, 2, 3, 4, 5])                 # same seed: same texts
    assert a[3:] == draws(srcs, seed=0, steps=[4, 5])                      # a resumed run draws what it would have
    assert a != draws(srcs, seed=1, steps=[1, 2, 3, 4, 5]) and a[0] != a[1]
    drawn = [t for batch in a for t in batch]
    names = [n for ns in FMNIST_NAMES for n in ns] + ["cat", "dog", "van"]
    used = {tpl for t in drawn for tpl in TRAIN_TEMPLATES for n in names if t == tpl.format(n)}
    assert len(used) >= 16                                                 # many templates, not one
    assert not {t for t in drawn} & {h.format(n) for h in HELDOUT_TEMPLATES for n in names}
    assert {"A cat.", "A dog.", "A van."} & set(drawn)                     # Tux Paint keeps its own captions
    # every training wording is a row of the token matrix
    assert len(lit_data.all_texts(srcs)) == 3 + len(TRAIN_TEMPLATES) * (len(names))


def test_fixed_templates_draw_the_shipped_batches():
    """templates="fixed" takes exactly the draws of the code before templates (one integer per text)."""
    srcs = sources("fixed")
    texts = lit_data.all_texts(srcs)
    index = {t: i for i, t in enumerate(texts)}
    shares = {"fmnist": 48, "tuxpaint": 16}
    for step in (1, 7):
        rng = np.random.default_rng([0, step])
        old = []
        for name in sorted(srcs):
            src = srcs[name]
            idx = rng.integers(0, len(src), shares[name])
            old += [index[src.texts[i][rng.integers(0, len(src.texts[i]))]] for i in idx]
        np.testing.assert_array_equal(lit_data.draw_batch(srcs, shares, step, 0, index)["text_ids"], old)


class StandIn:
    """A tiny 'text tower': a fixed random projection of the text's letter counts, L2-normalised; images
    are given embeddings."""

    def __init__(self, dim=5, images=None):
        self.w = np.random.default_rng(0).normal(size=(26, dim))
        self.images = images

    def encode_text(self, texts):
        counts = np.array([[t.lower().count(c) for c in string.ascii_lowercase] for t in texts], float)
        e = counts @ self.w
        return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)

    def encode_image(self, images):
        return self.images[: len(images)]


def test_the_ensemble_embedding_is_the_normalised_mean_over_the_templates():
    from eval.zeroshot import class_embeddings, template_set

    clip, classes = StandIn(), ["sneaker", "bag", "ankle boot"]
    for choice in ("train", "heldout", "photo"):
        templates = template_set(choice, FIXED)
        got = class_embeddings(clip, classes, templates)
        for c, name in enumerate(classes):
            mean = np.mean([clip.encode_text([t.format(name)])[0] for t in templates], axis=0)
            np.testing.assert_allclose(got[c], mean / np.linalg.norm(mean), rtol=1e-5, atol=1e-6)
    assert template_set("fixed", FIXED) == FIXED and template_set("photo", FIXED) == ("a photo of a {}",)


def test_zeroshot_reports_train_and_heldout_rows_and_their_gap(monkeypatch, tmp_path):
    import json

    from eval import zeroshot

    classes = ["t-shirt", "trouser", "bag"]
    clip = StandIn(images=None)
    labels = np.array([0, 1, 2, 1, 0, 2])
    txt = zeroshot.class_embeddings(clip, classes, TRAIN_TEMPLATES)
    clip.images = txt[labels] + 0.01                                   # images that sit on their class's text
    monkeypatch.setattr(zeroshot, "load_dataset", lambda name, limit: (np.zeros((6, 2, 2)), labels, classes, FIXED))
    monkeypatch.setitem(zeroshot._CLIPS, "stand-in", clip)
    monkeypatch.setattr(zeroshot, "_IMAGE_EMB", {})
    out = tmp_path / "z.json"
    rows = zeroshot.main(["--models", "stand-in", "chance", "--datasets", "fmnist",
                          "--templates", "train", "heldout", "photo", "--json", str(out)])
    assert [(r["model"], r["templates"]) for r in rows] == [
        ("stand-in", "train"), ("stand-in", "heldout"), ("stand-in", "photo"), ("chance", None)]
    assert rows[0]["top1"] == 1.0 and json.loads(out.read_text()) == rows
    gap = zeroshot.template_gaps(rows)
    assert len(gap) == 1 and gap[0]["gap_points"] == pytest.approx(100 * (rows[1]["top1"] - 1.0), abs=0.01)
    # each template of a set alone, scored as an ensemble of one (the photo row is its single template)
    assert set(rows[1]["single_top1"]) == set(HELDOUT_TEMPLATES) and "single_top1" not in rows[2]
    assert rows[1]["single_top1"]["a photo of a {}"] == rows[2]["top1"]
    assert rows[1]["single_mean"] == pytest.approx(np.mean(list(rows[1]["single_top1"].values())))
    assert rows[1]["single_top1"][rows[1]["single_worst"]] == min(rows[1]["single_top1"].values())
    assert gap[0]["single_gap_points"] == pytest.approx(100 * (rows[1]["single_mean"] - rows[0]["single_mean"]),
                                                        abs=0.01)
    md = (tmp_path / "z.md").read_text()
    assert "| fmnist | stand-in | heldout |" in md and "Held-out minus training templates" in md
    assert "Each template of a set alone" in md


def test_the_templates_config_loads_and_resolves():
    from train import trainlib
    from train.configs.contrastive_lit import get_config as lit_config

    cfg = trainlib.load_config("train/configs/contrastive_lit_templates.py", base=lit_config)
    shipped = lit_config()
    assert cfg.data.templates == "many" and shipped.data.templates == "fixed"
    cfg.data.templates = "fixed"
    assert cfg.to_dict() == shipped.to_dict()                         # nothing else differs from the shipped LiT
    assert lit_templates.describe("many")["heldout"] == list(HELDOUT_TEMPLATES)
    bad = trainlib.load_config("train/configs/contrastive_lit_templates.py", ["data.templates=few"], base=lit_config)
    bad.data.batch.update({k: 0 for k in bad.data.batch})
    with pytest.raises(ValueError, match="data.templates='few'"):
        lit_data.build_sources(bad, None, "unused")
    with pytest.raises(trainlib.ConfigError, match="templates"):
        trainlib.load_config("train/configs/contrastive_lit_templates.py", ["data.templatez=many"], base=lit_config)
