"""Synthetic scenes: determinism, splits, held-out composition, and QA checked against pixels."""

import hashlib
import re

import numpy as np
import pytest
from skimage.measure import label as connected_components

from visiondata import scenes

N = 300


@pytest.fixture(scope="module")
def train():
    return scenes.generate(N, size=64, seed=0, split="train")


@pytest.fixture(scope="module")
def test_split():
    return scenes.generate(N, size=64, seed=0, split="test")


@pytest.fixture(scope="module")
def heldout():
    return scenes.generate(N, size=64, seed=0, split="heldout")


def _hashes(s):
    return {hashlib.sha1(im.tobytes()).hexdigest() for im in s.images}


def test_contract_shapes(train):
    assert train.images.shape == (N, 64, 64, 3) and train.images.dtype == np.uint8
    assert train.labels.shape == (N,) and train.labels.dtype == np.int64
    assert len(train.captions) == len(train.qa) == len(train.graphs) == N
    assert len(train.class_names) == len(scenes.SHAPES) * len(scenes.COLORS) == 48
    assert len(scenes.SHAPES) >= 6 and len(scenes.COLORS) >= 8 and len(scenes.SIZES) == 2
    counts = np.bincount([len(g["objects"]) for g in train.graphs], minlength=5)
    assert counts[0] == 0 and all(counts[1:] > 0)  # 1-4 objects, all four counts occur


def test_same_seed_same_bytes_and_different_seeds_differ(train):
    again = scenes.generate(N, size=64, seed=0, split="train")
    assert again.images.tobytes() == train.images.tobytes()
    assert again.captions == train.captions and again.qa == train.qa and again.graphs == train.graphs
    other = scenes.generate(N, size=64, seed=1, split="train")
    assert len(_hashes(other) & _hashes(train)) == 0


def test_image_depends_only_on_seed_split_index(train):
    part = scenes.generate(10, size=64, seed=0, split="train", start=50)
    assert part.images.tobytes() == train.images[50:60].tobytes()
    assert part.qa == train.qa[50:60]
    # The same scene at another resolution.
    small = scenes.generate(10, size=32, seed=0, split="train", start=50)
    assert small.graphs == part.graphs and small.images.shape == (10, 32, 32, 3)
    big = scenes.generate(2, size=128, seed=0, split="train")
    assert big.images.shape == (2, 128, 128, 3)


def test_splits_are_disjoint(train, test_split, heldout):
    a, b, c = _hashes(train), _hashes(test_split), _hashes(heldout)
    assert len(a) == len(b) == len(c) == N
    assert not (a & b) and not (a & c) and not (b & c)


def test_heldout_pairs_never_in_train_or_test(train, test_split, heldout):
    held = set(scenes.HELDOUT)
    assert len(held) == 8 and {s for _, s in held} == set(scenes.SHAPES) and {c for c, _ in held} == set(scenes.COLORS)
    for s in (train, test_split):
        for g in s.graphs:
            assert not {(o["color"], o["shape"]) for o in g["objects"]} & held
        assert not set(s.labels.tolist()) & {scenes.class_index(*p) for p in held}
        # and no caption names a held-out pair
        for caps in s.captions:
            for c, sh in held:
                assert not any(f"{c} {sh}" in cap for cap in caps)
    for g in heldout.graphs:
        main = g["objects"][g["main"]]
        assert (main["color"], main["shape"]) in held
    assert set(heldout.labels.tolist()) == {scenes.class_index(*p) for p in held}


def test_captions_many_and_varied(train):
    for caps in train.captions:
        assert len(caps) >= 5 and len(set(caps)) == len(caps)
    # Different template families start differently.
    starts = {c.split()[0] for caps in train.captions for c in caps}
    assert len(starts) >= 5


# ------------------------------------------------------------------ pixel checks

def _palette_name(rgb) -> str:
    names = list(scenes.PALETTE)
    d = [np.abs(np.array(scenes.PALETTE[n]) - rgb).sum() for n in names]
    return names[int(np.argmin(d))]


def _objects_from_pixels(image, background_level):
    """Connected regions that differ from the plain background: (label map, count)."""
    fg = np.any(image != background_level, axis=-1)
    # 8-connectivity: a star tip's anti-aliased pixel may touch its star only diagonally.
    return connected_components(fg, connectivity=2, return_num=True)


def _resolve(phrase: str, objs) -> int:
    """Index of the one object a referring phrase like 'the small red star on the left' names."""
    words = phrase.replace("the ", "", 1).split()
    desc = {}
    for w in words:
        if w in scenes.COLORS:
            desc["color"] = w
        elif w in scenes.SHAPES:
            desc["shape"] = w
        elif w in scenes.SIZES:
            desc["size"] = w
        elif w in ("left", "right"):
            desc["hpos"] = w
        elif w in ("top", "bottom"):
            desc["vpos"] = w
    hits = [i for i, o in enumerate(objs) if all(o[k] == v for k, v in desc.items())]
    assert len(hits) == 1, f"{phrase!r} names {len(hits)} objects"
    return hits[0]


def _centre_pixel(image, obj):
    S = image.shape[0]
    return image[int(obj["y"] * S), int(obj["x"] * S)]


def test_colour_answers_match_pixels(train):
    checked = 0
    for im, g, qa in zip(train.images, train.graphs, train.qa):
        for q, a in qa:
            m = re.fullmatch(r"What color is (.+)\?", q)
            if not m:
                continue
            obj = g["objects"][_resolve(m.group(1), g["objects"])]
            px = _centre_pixel(im, obj)
            assert tuple(px) == scenes.PALETTE[a], (q, a, px)  # exact colour inside the shape
            assert _palette_name(px) == a
            checked += 1
    assert checked > N  # about two per image


def test_label_is_colour_and_shape_of_largest_object(train):
    for im, g, y in zip(train.images, train.graphs, train.labels):
        bg = g["background"]["level"]
        lab, n = _objects_from_pixels(im, bg)
        areas = np.bincount(lab.ravel())[1:]
        biggest = np.argmax(areas) + 1
        if n > 1:
            assert np.sum(areas == areas.max()) == 1 and areas.max() > 1.4 * np.sort(areas)[-2]
        # the most common colour inside the biggest region is the label's colour
        px = im[lab == biggest]
        values, counts = np.unique(px, axis=0, return_counts=True)
        colour = _palette_name(values[np.argmax(counts)])
        assert train.class_names[y].split()[0] == colour


def test_counts_match_pixels(train):
    for im, g, qa in zip(train.images, train.graphs, train.qa):
        lab, n = _objects_from_pixels(im, g["background"]["level"])
        for q, a in qa:
            if q == "How many shapes are there?":
                assert int(a) == n
            m = re.fullmatch(r"How many (\w+) shapes are there\?", q)
            if m:
                exact = np.all(im == np.array(scenes.PALETTE[m.group(1)], np.uint8), axis=-1)
                regions = set(np.unique(lab[exact]).tolist()) - {0}
                assert int(a) == len(regions), (q, a, len(regions))


def test_relations_and_sides_match_pixels(train):
    checked = 0
    for im, g, qa in zip(train.images, train.graphs, train.qa):
        lab, _ = _objects_from_pixels(im, g["background"]["level"])
        S = im.shape[0]

        def centroid(obj):
            k = lab[int(obj["y"] * S), int(obj["x"] * S)]
            assert k > 0
            ys, xs = np.nonzero(lab == k)
            return xs.mean() / S, ys.mean() / S

        for q, a in qa:
            m = re.fullmatch(r"Is (the \w+ \w+) (to the left of|to the right of|above|below) (the \w+ \w+)\?", q)
            if m:
                ax, ay = centroid(g["objects"][_resolve(m.group(1), g["objects"])])
                bx, by = centroid(g["objects"][_resolve(m.group(3), g["objects"])])
                truth = {"to the left of": ax < bx, "to the right of": ax > bx, "above": ay < by, "below": ay > by}
                assert a == ("yes" if truth[m.group(2)] else "no"), q
                checked += 1
            m = re.fullmatch(r"Is (the \w+ \w+) on the left or the right\?", q)
            if m:
                x, _ = centroid(g["objects"][_resolve(m.group(1), g["objects"])])
                assert a == ("left" if x < 0.5 else "right")
    assert checked > N // 2


def test_existence_and_yes_no_balance(train):
    answers = [a for qa in train.qa for q, a in qa if a in ("yes", "no")]
    yes = answers.count("yes") / len(answers)
    assert 0.35 < yes < 0.65
    for im, g, qa in zip(train.images, train.graphs, train.qa):
        present = {(o["color"], o["shape"]) for o in g["objects"]}
        for q, a in qa:
            m = re.fullmatch(r"Is there an? (\w+) (\w+)\?", q)
            if m:
                assert a == ("yes" if (m.group(1), m.group(2)) in present else "no")
                if a == "yes":  # the colour is in the image
                    assert np.any(np.all(im == np.array(scenes.PALETTE[m.group(1)], np.uint8), axis=-1))


def test_answers_are_one_word_and_types_cover_issue(train):
    types = set()
    for qa, ts in zip(train.qa, train.qa_types):
        assert len(qa) == len(ts)
        for (q, a), t in zip(qa, ts):
            assert q.endswith("?") and len(a.split()) == 1
        types.update(ts)
    assert {"color", "shape", "count", "exist", "relation", "verify"} <= types


def test_sizes_match_pixel_areas(train):
    for im, g in zip(train.images[:100], train.graphs[:100]):
        lab, _ = _objects_from_pixels(im, g["background"]["level"])
        S = im.shape[0]
        area = {o["size"]: [] for o in g["objects"]}
        for o in g["objects"]:
            area[o["size"]].append(np.sum(lab == lab[int(o["y"] * S), int(o["x"] * S)]))
        if "small" in area and "large" in area:
            assert min(area["large"]) > max(area["small"])


def test_photo_backgrounds():
    s = scenes.generate(8, size=64, seed=3, background="photo")
    assert all(g["background"]["kind"] == "photo" for g in s.graphs)
    # backgrounds vary (not a flat colour) and objects keep their exact colour at the centre
    assert all(im.reshape(-1, 3).std(0).max() > 5 for im in s.images)
    for im, g in zip(s.images, s.graphs):
        for o in g["objects"]:
            assert tuple(_centre_pixel(im, o)) == scenes.PALETTE[o["color"]]
    mixed = scenes.generate(40, size=32, seed=3, background="mixed")
    assert {g["background"]["kind"] for g in mixed.graphs} == {"plain", "photo"}


def test_labels_without_rendering(train):
    np.testing.assert_array_equal(scenes.labels(N, seed=0, split="train"), train.labels)


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        scenes.generate(2, split="validation")
    with pytest.raises(ValueError, match="size"):
        scenes.generate(2, size=8)
    with pytest.raises(ValueError, match="background"):
        scenes.generate(2, background="sky")


# ------------------------------------------------------------------ renderer against closed forms

AREAS = {  # area of each shape in its unit frame (r = 1), from its definition in visiondata.render
    "circle": np.pi,
    "square": 1.7 ** 2,
    "triangle": 3 * np.sqrt(3) / 4 * 1.2 ** 2,          # equilateral, circumradius 1.2
    "diamond": 2 * 1.2 ** 2,                            # |u| + |v| <= 1.2
    "cross": 2 * (2.2 * 0.72) - 0.72 ** 2,              # two 2.2 x 0.72 bars
    "star": 5 * 1.15 * 0.48 * np.sin(np.pi / 5),        # 10 triangles centre-tip-notch
}


@pytest.mark.parametrize("shape", scenes.SHAPES)
def test_rendered_area_and_extent_match_geometry(shape):
    from visiondata import render

    r, cx, cy = 60.0, 100.3, 99.7
    a = render.coverage(shape, 200, cx, cy, r)
    assert abs(a.sum() / r ** 2 / AREAS[shape] - 1) < 2e-3
    ys, xs = np.nonzero(a > 0)
    assert np.hypot(xs + 0.5 - cx, ys + 0.5 - cy).max() <= render.BOUND * r + 1  # placement bound holds
    # draw() puts the exact colour where coverage is 1 and leaves the rest of the canvas alone
    canvas = np.zeros((200, 200, 3), np.float32)
    render.draw(canvas, shape, cx, cy, r, (10, 20, 30))
    assert np.all(canvas[a == 1] == (10, 20, 30)) and np.all(canvas[a == 0] == 0)


@pytest.mark.parametrize("size", [32, 128])
def test_other_sizes_keep_exact_colours_and_counts(size):
    s = scenes.generate(100, size=size, seed=0)
    for im, g in zip(s.images, s.graphs):
        for o in g["objects"]:
            assert tuple(_centre_pixel(im, o)) == scenes.PALETTE[o["color"]]
        assert _objects_from_pixels(im, g["background"]["level"])[1] == len(g["objects"])
