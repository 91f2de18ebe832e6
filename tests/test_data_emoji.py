"""visiondata.emoji and its setup: captions, joins, splits, the setup step on tiny fake packages,
and (marked `emoji`) the real cache checked against the packages' own metadata."""

import collections
import hashlib
import io
import json
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from visiondata import emoji, emoji_setup, episodes, preview
from visiondata.errors import MissingDataError

# SHA-256 of files inside the real tarballs (read from them when the setup step was written).
GRINNING_PNG_SHA256 = {
    "google": "cc36efa9c55ca6da8938bb35755a5473e24cd906271033f7527173ab1a69c155",
    "twitter": "50e4ca63df31b9a0427ee28602501a992c594120f6ed8914c32e51b0c32ce1ce",
}
FLUENT_SVG_COUNTS = {"flat": 3145, "modern": 3145, "high-contrast": 1595}


# --- without the data ---------------------------------------------------------------------------------

def test_bad_style_or_split_lists_the_choices():
    with pytest.raises(ValueError, match="google, twitter, fluent-flat, fluent-modern, fluent-high-contrast"):
        emoji.load(style="apple")
    with pytest.raises(ValueError, match="train, test, heldout, all"):
        emoji.load(split="validation")
    with pytest.raises(ValueError, match="size"):
        emoji.load(size=0)


def test_missing_cache_names_the_setup_command(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMSIGHT_CACHE", str(tmp_path))
    with pytest.raises(MissingDataError, match="python -m visiondata.emoji_setup"):
        emoji.load("google", "train")


def test_splits_are_a_deterministic_function_of_the_concept_key():
    keys = [f"{i:05X}" for i in range(20000)]
    counts = collections.Counter(emoji.split_of(k) for k in keys)
    assert abs(counts["heldout"] / 20000 - 0.20) < 0.01
    assert abs(counts["test"] / 20000 - 0.08) < 0.01
    assert [emoji.split_of(k) for k in keys[:50]] == [emoji.split_of(k) for k in keys[:50]]
    # Pinned: changing the hash scheme would silently move concepts between train and heldout.
    assert [emoji.split_of(c) for c in ("1F600", "1F1EF-1F1F5", "2764-FE0F")] == ["train", "heldout", "test"]


def test_fluent_file_names_join_to_concepts_with_their_skin_tones():
    keys = {emoji.slug_key(s): c for s, c in [("angry_face_with_horns", "1F47F"), ("thumbs_up", "1F44D"),
                                               ("one_o_clock", "1F550")]}
    assert emoji.fluent_join("angry-face-with-horns", keys) == ("1F47F", "")
    assert emoji.fluent_join("one-oclock", keys) == ("1F550", "")
    assert emoji.fluent_join("thumbs-up-default", keys) == ("1F44D", "")
    assert emoji.fluent_join("thumbs-up-light", keys) == ("1F44D", "1F3FB")
    assert emoji.fluent_join("thumbs-up-medium-light", keys) == ("1F44D", "1F3FC")
    assert emoji.fluent_join("thumbs-up-medium-dark", keys) == ("1F44D", "1F3FE")
    assert emoji.fluent_join("hugging-face", keys) is None


def test_captions():
    caps = emoji.make_captions("grinning face", "grinning face", ["grinning"], "Smileys & Emotion", "face-smiling")
    assert caps[0] == "an emoji of a grinning face"
    assert "the :grinning: emoji" in caps and len(caps) == len(set(caps))
    hands = emoji.make_captions("open hands", "open hands sign", [], "People & Body", "hands")
    assert hands[0] == "an emoji of open hands"
    assert emoji.make_captions("flag japan", "", ["jp"], "Flags", "country-flag")[0] == "an emoji of the flag of japan"
    assert emoji.make_captions("angry face with horns", "imp", [], "Smileys & Emotion", "face-negative")[:2] == [
        "an emoji of an angry face with horns", "an angry face with horns"]


def test_attribution_names_twemoji_only_when_shown():
    assert "CC-BY 4.0" in emoji.attribution(["twitter"]) and "Twitter" in emoji.attribution("twitter")
    assert "CC-BY" not in emoji.attribution(["google", "fluent-flat"])
    assert "CC-BY 4.0" in preview.footer_for("emoji", "all")
    tall = preview.contact_sheet(np.zeros((2, 8, 8, 3), np.uint8), ["a", "b"], cols=2, footer="credit line")
    assert tall.shape[0] > preview.contact_sheet(np.zeros((2, 8, 8, 3), np.uint8), ["a", "b"], cols=2).shape[0]


def test_rasterise_fits_and_centres_the_drawing():
    svg = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 16"><rect width="32" height="16" fill="#f00"/></svg>'
    rgba = emoji_setup.rasterise(svg, 64)
    assert rgba.shape == (64, 64, 4) and rgba.dtype == np.uint8
    assert rgba[:15, :, 3].max() == 0 and rgba[49:, :, 3].max() == 0       # letterboxed top and bottom
    assert (rgba[20:44, :, 3] == 255).all() and (rgba[32, 32, :3] == (255, 0, 0)).all()


def test_setup_without_npm_warns_and_exits_0(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMSIGHT_CACHE", str(tmp_path))
    monkeypatch.setattr(emoji_setup.shutil, "which", lambda name: None)
    assert emoji_setup.main([]) == 0
    out = capsys.readouterr().out
    assert "warning" in out and "npm is not installed" in out and "python -m visiondata.emoji_setup" in out
    assert not emoji_setup.is_ready()


# --- the setup step end to end, on tiny packages made here ---------------------------------------------

def _tgz(files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo("package/" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _png(color) -> bytes:
    buf = io.BytesIO()
    im = np.zeros((64, 64, 4), np.uint8)
    im[16:48, 16:48] = (*color, 255)
    Image.fromarray(im).save(buf, "png")
    return buf.getvalue()


def _fake_packages() -> dict[str, bytes]:
    entry = {"unified": "1F600", "name": "GRINNING FACE", "short_names": ["grinning"], "category": "Smileys & Emotion",
             "subcategory": "face-smiling", "sort_order": 1, "image": "1f600.png", "has_img_google": True,
             "has_img_twitter": True, "skin_variations": {}}
    component = {**entry, "unified": "1F3FB", "name": "EMOJI MODIFIER FITZPATRICK TYPE-1-2", "category": "Component",
                 "image": "1f3fb.png", "short_names": ["skin-tone-2"], "sort_order": 2}
    meta = json.dumps([entry, component]).encode()
    svg = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
           b'<circle cx="16" cy="16" r="15" fill="#fc0"/></svg>')
    cldr = json.dumps({"\U0001F600": {"name": "grinning face", "slug": "grinning_face", "group": "Smileys & Emotion"}})
    return {
        "emoji-datasource-google": _tgz({"emoji.json": meta, "LICENSE": b"MIT", "img/google/sheets/x.png": b"x",
                                         "img/google/64/1f600.png": _png((255, 0, 0)),
                                         "img/google/64/1f3fb.png": _png((9, 9, 9))}),
        "emoji-datasource-twitter": _tgz({"emoji.json": meta, "img/twitter/64/1f600.png": _png((0, 0, 255)),
                                          "img/twitter/64/1f3fb.png": _png((9, 9, 9))}),
        "fluentui-emoji": _tgz({f"icons/{s}/{n}.svg": svg for s in emoji_setup.FLUENT_STYLES
                                for n in ("grinning-face", "no-such-emoji")}),
        "unicode-emoji-json": _tgz({"data-by-emoji.json": cldr.encode()}),
    }


def test_setup_fetches_checks_unpacks_and_loads(tmp_path, monkeypatch, capsys):
    fakes = _fake_packages()
    counts = {"emoji-datasource-google": 2, "emoji-datasource-twitter": 2, "fluentui-emoji": 6, "unicode-emoji-json": 1}
    monkeypatch.setattr(emoji_setup, "PACKAGES", {
        name: ("1.0.0", hashlib.sha256(data).hexdigest(), counts[name]) for name, data in fakes.items()})
    calls = []

    def fake_pack(name, version, dest):
        calls.append(name)
        path = os.path.join(dest, f"{name}-{version}.tgz")
        with open(path, "wb") as f:
            f.write(fakes[name])
        return path

    monkeypatch.setattr(emoji_setup, "npm_pack", fake_pack)
    monkeypatch.setenv("LLMSIGHT_CACHE", str(tmp_path))
    assert emoji_setup.main([]) == 0 and emoji_setup.is_ready()
    root = tmp_path / "emoji"
    assert sorted(os.listdir(root / "fluent" / "flat" / "64")) == ["grinning-face.png", "no-such-emoji.png"]
    assert not (root / "downloads").exists() and not (root / "google" / "sheets").exists()
    assert emoji_setup.main([]) == 0 and len(calls) == 4          # idempotent: nothing fetched again
    assert "already set up" in capsys.readouterr().out

    table = emoji.concept_table()
    assert [(r["concept"], r["name"], r["styles"]) for r in table] == [("1F600", "grinning face", list(emoji.STYLES))]
    for style, rgb in (("google", (255, 0, 0)), ("twitter", (0, 0, 255))):
        ds = emoji.load(style, "all")
        assert ds.images.shape == (1, 64, 64, 3) and ds.concepts == ["1F600"] and ds.style == style
        assert tuple(ds.images[0, 32, 32]) == rgb and tuple(ds.images[0, 0, 0]) == (255, 255, 255)
        assert ds.alpha[0, 32, 32] == 255 and ds.alpha[0, 0, 0] == 0
    fl = emoji.load("fluent-modern", "all", size=32)
    assert fl.images.shape == (1, 32, 32, 3) and fl.captions == ["an emoji of a grinning face"]
    assert len(emoji.load("google", "heldout")) == 0 and len(emoji.load("google", "train")) == 1


def test_setup_refuses_a_tarball_with_the_wrong_hash(tmp_path, monkeypatch, capsys):
    def fake_pack(name, version, dest):
        path = os.path.join(dest, f"{name}-{version}.tgz")
        with open(path, "wb") as f:
            f.write(b"not the real package")
        return path

    monkeypatch.setattr(emoji_setup, "npm_pack", fake_pack)
    monkeypatch.setenv("LLMSIGHT_CACHE", str(tmp_path))
    assert emoji_setup.main([]) == 1
    assert "differs from the recorded" in capsys.readouterr().err
    assert not emoji_setup.is_ready() and not (tmp_path / "emoji" / "google").exists()


def test_cross_style_episodes_sample_queries_from_the_second_pool():
    support = np.array([0, 1, 2, 3, 3, 4])
    query = np.array([3, 2, 1, 0, 9])
    eps = episodes.sample(support, ways=3, shots=1, queries=1, n_episodes=20, seed=0, query_labels=query)
    for e in eps:
        assert (support[e.support] == e.support_labels).all() and (query[e.query] == e.query_labels).all()
        assert set(e.classes) <= {0, 1, 2, 3}
    with pytest.raises(ValueError, match="only 4 classes"):
        episodes.sample(support, ways=5, shots=1, queries=1, n_episodes=1, query_labels=query)


# --- the real cache -------------------------------------------------------------------------------------


def _emoji_json():
    with open(os.path.join(emoji.resolve_root(), "google", "emoji.json")) as f:
        return json.load(f)


@pytest.mark.emoji
def test_concept_counts_match_the_packages_metadata():
    entries = [e for e in _emoji_json() if e["category"] != "Component"]
    for style in ("google", "twitter"):
        drawn = [e for e in entries if e["has_img_google"] and e["has_img_twitter"]]
        assert len(emoji.load(style, "all", size=8)) == len(drawn) == 1906
        tones = sum(1 for e in drawn for v in e.get("skin_variations", {}).values() if v[f"has_img_{style}"])
        assert len(emoji.load(style, "all", size=8, skin_tones=True)) == len(drawn) + tones == 3781
    for name, n in FLUENT_SVG_COUNTS.items():  # one rasterised PNG per SVG of the tarball
        assert len(os.listdir(os.path.join(emoji.resolve_root(), "fluent", name, "64"))) == n
        assert len(emoji.load(f"fluent-{name}", "all", size=8)) == 1561
    table = emoji.concept_table()
    assert len(table) == 1906 and sum("fluent-flat" in r["styles"] for r in table) == 1561


@pytest.mark.emoji
@pytest.mark.parametrize("style", ["google", "twitter"])
def test_grinning_face_is_the_packages_png(style):
    path = os.path.join(emoji.resolve_root(), style, "64", "1f600.png")
    with open(path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == GRINNING_PNG_SHA256[style]
    ds = emoji.load(style, "all")
    i = ds.concepts.index("1F600")
    rgba = np.asarray(Image.open(path).convert("RGBA"))
    np.testing.assert_array_equal(ds.alpha[i], rgba[..., 3])
    np.testing.assert_array_equal(ds.images[i], emoji.on_white(rgba))
    assert (ds.names[i], ds.captions[i], ds.categories[i], ds.subcategories[i]) == (
        "grinning face", "an emoji of a grinning face", "Smileys & Emotion", "face-smiling")
    assert "the :grinning: emoji" in emoji.captions_for("1F600")


@pytest.mark.emoji
def test_fluent_icon_is_drawn_and_joins_to_its_concept():
    ds = emoji.load("fluent-flat", "all")
    i = ds.concepts.index("1F47F")
    assert ds.names[i] == "angry face with horns"
    assert (ds.alpha[i] > 0).mean() > 0.5
    assert (ds.images[i] < 240).any(axis=-1).mean() > 0.5          # mostly non-white
    assert ds.images[i][..., 2].mean() > ds.images[i][..., 1].mean()  # purple: more blue than green


@pytest.mark.emoji
def test_splits_are_disjoint_across_styles_and_complete():
    by = {(s, sp): set(emoji.load(s, sp, size=4).concepts) for s in emoji.STYLES for sp in emoji.SPLITS}
    train = by["google", "train"] | by["twitter", "train"]
    for s in emoji.STYLES:
        assert not train & (by[s, "heldout"] | by[s, "test"])
        assert by[s, "train"] | by[s, "test"] | by[s, "heldout"] == by[s, "all"]
        assert by[s, "heldout"] <= by["google", "heldout"] and by[s, "test"] <= by["google", "test"]
    assert by["google", "all"] == by["twitter", "all"] and len(by["google", "heldout"]) == 368
    assert len(by["google", "train"]) == 1391 and len(by["google", "test"]) == 147
    assert emoji.load("twitter", "test", size=4).concepts == emoji.load("twitter", "test", size=4).concepts


@pytest.mark.emoji
def test_sizes_and_skin_tones():
    ds = emoji.load("twitter", "test", size=32, skin_tones=True)
    assert ds.images.shape == (len(ds), 32, 32, 3) and ds.alpha.shape == (len(ds), 32, 32)
    assert set(ds.variants) - {""} and all(c for c in ds.concepts)
    assert len(set(zip(ds.concepts, ds.variants))) == len(ds)


@pytest.mark.emoji
def test_cross_style_episode_command(tmp_path):
    out = tmp_path / "e.csv"
    episodes.main(["--dataset", "emoji", "--support-style", "google", "--query-style", "fluent-flat",
                   "--split", "heldout", "--ways", "5", "--shots", "1", "--episodes", "10", "--out", str(out)])
    eps = episodes.read_csv(out)
    assert len(eps) == 10 and eps[0].dataset == "emoji:google" and eps[0].query_dataset == "emoji:fluent-flat"
    _, s_labels, names = episodes.load_dataset("emoji:google", "heldout", size=8)
    _, q_labels, _ = episodes.load_dataset("emoji:fluent-flat", "heldout", size=8)
    for e in eps:
        assert (s_labels[e.support] == e.support_labels).all() and (q_labels[e.query] == e.query_labels).all()
        assert e.class_names == [names[c] for c in e.classes]


@pytest.mark.emoji
def test_preview_of_all_styles_carries_the_twemoji_credit():
    images, texts = preview.samples("emoji", n=10, split="heldout", style="all")
    assert images.shape == (10, 64, 64, 3) and texts[0].endswith("\ngoogle") and texts[1].endswith("\ntwitter")
    assert texts[0].split("\n")[0] == texts[4].split("\n")[0]  # one concept per row of five styles
