"""visiondata.tuxpaint on a tiny stamps tree made here, and (marked `tuxpaint`) on the real Debian package."""

import numpy as np
import pytest
from PIL import Image

from visiondata import preview, tuxpaint
from visiondata.errors import MissingDataError


def _stamp(root, rel, caption, size=(40, 30), rgba=True, color=(200, 30, 30)):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    im = np.zeros((h, w, 4), np.uint8)
    im[h // 4: h - h // 4, w // 4: w - w // 4] = (*color, 255)   # opaque middle, transparent border
    Image.fromarray(im if rgba else im[..., :3]).save(path)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption + "\nfr.utf8=Une traduction.\n", encoding="utf-8")


@pytest.fixture()
def stamps_dir(tmp_path):
    root = tmp_path / "stamps"
    _stamp(root, "animals/marsupials/kangaroo.png", "A red kangaroo.")
    _stamp(root, "animals/marsupials/cartoon/kangaroo-silo.png", "A kangaroo.", color=(0, 0, 0))
    _stamp(root, "animals/birds/emu.png", "An emu, from Australia!", size=(900, 1200))
    _stamp(root, "food/fruit/cartoon/apple.png", "“An apple”", size=(27, 15))   # tiny
    _stamp(root, "vehicles/car.png", "A car.", rgba=False)
    _stamp(root, "vehicles/car_mirror.png", None)                                  # no caption: skipped
    _stamp(root, "symbols/shapes/star.png", "A star.")
    (root / "town").mkdir()
    (root / "town/house.svg").write_text("<svg/>")                                # SVG only: skipped
    (root / "town/house.txt").write_text("A house.\n")
    return root


def test_caption_names():
    assert tuxpaint.caption_name("A red kangaroo.") == "red kangaroo"
    assert tuxpaint.caption_name("An emu, from Australia!") == "emu"
    assert tuxpaint.caption_name("“An apple”") == "apple"
    assert tuxpaint.caption_name("Jupiter—the largest planet in our solar system!") == "jupiter"
    assert tuxpaint.caption_name("A US 25 cent piece ($.25) called a quarter.") == "us 25 cent piece"
    assert tuxpaint.caption_name("The Eiffel tower in Paris.") == "eiffel tower in paris"
    assert tuxpaint.caption_name("Dead end ahead!") == "dead end ahead"


def test_loads_the_fixture_tree(stamps_dir):
    ts = tuxpaint.load("all", size=32, root=stamps_dir)
    assert ts.paths == ["animals/birds/emu.png", "animals/marsupials/cartoon/kangaroo-silo.png",
                        "animals/marsupials/kangaroo.png", "food/fruit/cartoon/apple.png", "vehicles/car.png"]
    assert ts.images.shape == (5, 32, 32, 3) and ts.images.dtype == np.uint8
    assert ts.captions[2] == "A red kangaroo." and ts.names[2] == "red kangaroo"
    assert ts.categories == ["animals", "animals", "animals", "food", "vehicles"]
    assert ts.kinds == ["photo", "cartoon", "photo", "cartoon", "photo"]
    assert (ts.images[:, 0, 0] == 255).all()                      # white around every cut-out
    assert tuple(ts.images[2, 16, 16]) == (200, 30, 30)           # the stamp, centred
    assert tuple(ts.images[3, 16, 16]) == (200, 30, 30)           # the tiny one, scaled up
    # Cropped to its opaque pixels and fitted with a margin of size/16: the car fills 28 of 32 pixels.
    assert (ts.images[4, 16] != 255).any(axis=-1).sum() == 28
    assert len(tuxpaint.load("all", kind="cartoon", root=stamps_dir)) == 2
    assert len(tuxpaint.load("all", kind="photo", root=stamps_dir)) == 3
    with_symbols = tuxpaint.load("all", include_symbols=True, root=stamps_dir)
    assert "symbols/shapes/star.png" in with_symbols.paths and len(with_symbols) == 6


def test_splits_partition_the_stamps_by_path(stamps_dir):
    train = tuxpaint.load("train", size=16, include_symbols=True, root=stamps_dir).paths
    test = tuxpaint.load("test", size=16, include_symbols=True, root=stamps_dir).paths
    assert not set(train) & set(test)
    assert sorted(train + test) == tuxpaint.load("all", size=16, include_symbols=True, root=stamps_dir).paths
    assert all(tuxpaint.split_of(p) == "train" for p in train) and all(tuxpaint.split_of(p) == "test" for p in test)
    assert tuxpaint.split_of("animals/marsupials/kangaroo.png") == "train"   # pinned


def test_photo_backgrounds_are_fixed_by_seed_and_path(stamps_dir):
    a = tuxpaint.load("all", size=32, background="photos", seed=1, root=stamps_dir)
    b = tuxpaint.load("all", size=32, background="photos", seed=1, root=stamps_dir)
    c = tuxpaint.load("all", size=32, background="photos", seed=2, root=stamps_dir)
    np.testing.assert_array_equal(a.images, b.images)
    assert (a.images != c.images).any()
    assert (a.images[:, 0, 0] != 255).any()                     # corners show the photo now
    assert tuple(a.images[2, 16, 16]) == (200, 30, 30)           # the stamp stays on top
    k = a.paths.index("animals/marsupials/kangaroo.png")
    train = tuxpaint.load("train", size=32, background="photos", seed=1, root=stamps_dir)
    np.testing.assert_array_equal(train.images[train.paths.index(a.paths[k])], a.images[k])


def test_bad_arguments_list_the_choices(stamps_dir):
    with pytest.raises(ValueError, match="train, test, all"):
        tuxpaint.load("validation", root=stamps_dir)
    with pytest.raises(ValueError, match="all, photo, cartoon"):
        tuxpaint.load(kind="drawing", root=stamps_dir)
    with pytest.raises(ValueError, match="white, photos"):
        tuxpaint.load(background="black", root=stamps_dir)


def test_missing_folder_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("TUXPAINT_STAMPS_DIR", str(tmp_path / "nope"))
    with pytest.raises(MissingDataError, match="apt-get install tuxpaint-stamps-default") as e:
        tuxpaint.load()
    assert "TUXPAINT_STAMPS_DIR" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingDataError, match="no captioned stamps"):
        tuxpaint.load(root=tmp_path / "empty")


def test_preview_sheet_with_credit(stamps_dir, monkeypatch):
    monkeypatch.setenv("TUXPAINT_STAMPS_DIR", str(stamps_dir))
    images, texts = preview.samples("tuxpaint", n=3, split="all", background="white")
    assert images.shape == (3, 64, 64, 3) and all("\n" in t for t in texts)
    assert "GPL-2" in preview.footer_for("tuxpaint")


@pytest.mark.tuxpaint
def test_real_stamps_counts_and_the_kangaroo():
    index = tuxpaint.stamps()
    assert len(index) == 785
    kinds = [(s["kind"], s["category"] == "symbols") for s in index]
    assert kinds.count(("photo", False)) == 430 and kinds.count(("cartoon", False)) == 108
    assert kinds.count(("photo", True)) == 247
    ts = tuxpaint.load("all", size=32)
    assert len(ts) == 538 and ts.images.shape == (538, 32, 32, 3)
    k = ts.paths.index("animals/marsupials/kangaroo.png")
    assert (ts.captions[k], ts.names[k], ts.categories[k], ts.kinds[k]) == (
        "A red kangaroo.", "red kangaroo", "animals", "photo")
    assert (ts.images[k] < 200).any(axis=-1).mean() > 0.1      # a real picture, not a blank square
    assert len(tuxpaint.load("train", size=8)) + len(tuxpaint.load("test", size=8)) == 538
