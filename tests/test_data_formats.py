"""User formats round trip through fixtures built here; bad files give one clear error."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from visiondata import formats, photos, scenes
from visiondata.errors import DataError, MissingDataError
from visiondata.images import center_crop_resize, read_image, write_image


@pytest.fixture(scope="module")
def scene_set():
    return scenes.generate(12, size=32, seed=5, split="test")


# ------------------------------------------------------------------ images

def test_read_image_converts_modes(tmp_path):
    gray = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    Image.fromarray(gray).save(tmp_path / "g.png")
    rgb = read_image(tmp_path / "g.png")
    assert rgb.shape == (8, 8, 3) and all(np.array_equal(rgb[..., c], gray) for c in range(3))
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (4, 4, 3)
    assert tuple(out[0, 0]) == (200, 0, 0) and tuple(out[3, 3]) == (255, 255, 255)
    pal = Image.fromarray(np.full((5, 5, 3), (10, 20, 30), np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.save(tmp_path / "p.gif")
    assert tuple(read_image(tmp_path / "p.gif")[2, 2]) == (10, 20, 30)


def test_read_image_missing_and_corrupt(tmp_path):
    with pytest.raises(MissingDataError, match="not found") as e:
        read_image(tmp_path / "nope.png")
    assert isinstance(e.value, FileNotFoundError)
    write_image(tmp_path / "ok.png", np.full((16, 16, 3), 7, np.uint8))
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.jpg").write_bytes(b"this is not a jpeg")
    for name in ("cut.png", "junk.jpg"):
        with pytest.raises(DataError, match=name):
            read_image(tmp_path / name)


def test_center_crop_resize_takes_the_centre():
    im = np.zeros((40, 60, 3), np.uint8)
    im[:, 10:50] = 255  # the central 40x40 square is white, the sides black
    out = center_crop_resize(im, 20)
    assert out.shape == (20, 20, 3) and out.min() == 255


def test_photos_are_real_and_center_cropped():
    x = photos.load(64)
    assert x.shape == (len(photos.NAMES), 64, 64, 3) == (21, 64, 64, 3) and x.dtype == np.uint8
    assert all(im.std() > 5 for im in x)  # textured photographs, not flat images
    full = read_image(photos.paths()[photos.NAMES.index("astronaut")])
    np.testing.assert_array_equal(x[photos.NAMES.index("astronaut")], center_crop_resize(full, 64))
    crops = photos.random_crops(5, size=32, seed=1)
    assert crops.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(crops, photos.random_crops(5, size=32, seed=1))


# ------------------------------------------------------------------ class folders

def test_class_folders_round_trip(tmp_path, scene_set):
    names = scene_set.class_names
    formats.write_class_folders(tmp_path, scene_set.images, scene_set.labels, names)
    got = formats.read_class_folders(tmp_path)
    present = sorted({names[y] for y in scene_set.labels})
    assert got.class_names == present
    # PNG is lossless: every image comes back exactly, under its class.
    want = {(present.index(names[y]), im.tobytes()) for im, y in zip(scene_set.images, scene_set.labels)}
    assert {(int(y), im.tobytes()) for im, y in zip(got.images, got.labels)} == want
    sized = formats.read_class_folders(tmp_path, size=16)
    assert sized.images.shape == (12, 16, 16, 3)


def test_class_folders_errors(tmp_path):
    with pytest.raises(MissingDataError):
        formats.read_class_folders(tmp_path / "absent")
    with pytest.raises(DataError, match="no class sub-directories"):
        formats.read_class_folders(tmp_path)
    (tmp_path / "cat").mkdir()
    with pytest.raises(DataError, match="no image files"):
        formats.read_class_folders(tmp_path)
    (tmp_path / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match="broken.png"):
        formats.read_class_folders(tmp_path)


# ------------------------------------------------------------------ COCO captions

def test_coco_captions_round_trip(tmp_path, scene_set):
    names = [f"{i:012d}.png" for i in range(len(scene_set))]
    formats.write_coco_captions(tmp_path / "captions.json", names, scene_set.captions, image_ids=range(100, 112),
                                image_dir=tmp_path / "img", images=scene_set.images)
    got = formats.read_coco_captions(tmp_path / "captions.json", image_dir=tmp_path / "img")
    assert got.image_ids == list(range(100, 112)) and got.file_names == names
    assert got.captions == scene_set.captions
    np.testing.assert_array_equal(np.stack(got.images), scene_set.images)
    assert formats.read_coco_captions(tmp_path / "captions.json").images is None


def test_coco_errors(tmp_path):
    p = tmp_path / "c.json"
    with pytest.raises(MissingDataError):
        formats.read_coco_captions(p)
    p.write_text('{"images": [')
    with pytest.raises(DataError, match="not valid JSON"):
        formats.read_coco_captions(p)
    p.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}],
                             "annotations": [{"image_id": 2, "caption": "x"}]}))
    with pytest.raises(DataError, match="image_id 2"):
        formats.read_coco_captions(p)
    p.write_text(json.dumps({"images": [{"id": 1}], "annotations": []}))
    with pytest.raises(DataError, match="file_name"):
        formats.read_coco_captions(p)
    p.write_text(json.dumps({"images": [{"id": 1, "file_name": "gone.png"}], "annotations": []}))
    with pytest.raises(MissingDataError, match="gone.png"):
        formats.read_coco_captions(p, image_dir=tmp_path)


# ------------------------------------------------------------------ VQAv2

def test_vqa_round_trip(tmp_path, scene_set):
    items = formats.vqa_from_scenes(scene_set)
    assert len(items) == sum(len(q) for q in scene_set.qa)
    assert {it.answer_type for it in items} == {"yes/no", "number", "other"}
    formats.write_vqa(tmp_path / "q.json", tmp_path / "a.json", items)
    got = formats.read_vqa(tmp_path / "q.json", tmp_path / "a.json")
    assert got == items
    only_q = formats.read_vqa(tmp_path / "q.json")
    assert [it.question for it in only_q] == [it.question for it in items] and only_q[0].answers == []


def test_vqa_errors(tmp_path):
    q = tmp_path / "q.json"
    a = tmp_path / "a.json"
    q.write_text(json.dumps({"questions": [{"question_id": 1, "image_id": 3, "question": "What?"}]}))
    a.write_text(json.dumps({"annotations": []}))
    with pytest.raises(DataError, match="no annotation for question_id 1"):
        formats.read_vqa(q, a)
    a.write_text(json.dumps({"annotations": [{"question_id": 1, "image_id": 3, "answers": [{"answer": 5}],
                                              "multiple_choice_answer": "5"}]}))
    with pytest.raises(DataError, match="should be str"):
        formats.read_vqa(q, a)
    q.write_text(json.dumps({"qs": []}))
    with pytest.raises(DataError, match="'questions'"):
        formats.read_vqa(q)


# ------------------------------------------------------------------ mini-ImageNet CSV

def test_miniimagenet_csv_round_trip(tmp_path, scene_set):
    wnids = [f"n{1000 + int(y):08d}" for y in scene_set.labels]
    files = [f"{w}{i:08d}.png" for i, w in enumerate(wnids)]
    for f, im in zip(files, scene_set.images):
        write_image(tmp_path / "images" / f, im)
    formats.write_miniimagenet_csv(tmp_path / "test.csv", files, wnids)
    got = formats.read_miniimagenet_csv(tmp_path / "test.csv", image_dir=tmp_path / "images")
    assert got.class_names == sorted(set(wnids))
    assert [got.class_names[y] for y in got.labels] == wnids
    np.testing.assert_array_equal(got.images, scene_set.images)
    assert [os.path.basename(p) for p in got.paths] == files


def test_miniimagenet_errors(tmp_path):
    p = tmp_path / "train.csv"
    with pytest.raises(MissingDataError):
        formats.read_miniimagenet_csv(p)
    p.write_text("image,class\na.jpg,n01\n")
    with pytest.raises(DataError, match="filename,label"):
        formats.read_miniimagenet_csv(p)
    p.write_text("filename,label\na.jpg\n")
    with pytest.raises(DataError, match="line 2"):
        formats.read_miniimagenet_csv(p)
    p.write_bytes(b"filename,label\n\xff\xfe\x00bad")
    with pytest.raises(DataError, match="not a text CSV"):
        formats.read_miniimagenet_csv(p)
