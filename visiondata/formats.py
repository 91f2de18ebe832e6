"""Readers (and writers, for tests and exports) of the data formats users bring.

Class-folder trees (ImageNet style): root/<class_name>/<image file>; classes are the sorted
sub-directory names, as torchvision's ImageFolder numbers them.
    read_class_folders(root, size=None) -> LabeledImages
    write_class_folders(root, images, labels, class_names) -> list of paths

COCO caption JSON ({"images": [{"id", "file_name", ...}], "annotations": [{"image_id", "caption"}]}):
    read_coco_captions(json_path, image_dir=None, size=None) -> CaptionSet
    write_coco_captions(json_path, file_names, captions, image_dir=None, images=None)

VQAv2 question + annotation JSON ({"questions": [{"question_id", "image_id", "question"}]} and
{"annotations": [{"question_id", "image_id", "multiple_choice_answer", "answers": [{"answer"}], ...}]}):
    read_vqa(questions_path, annotations_path=None) -> list[VQAItem]
    write_vqa(questions_path, annotations_path, items)
    vqa_from_scenes(scene_set) -> list[VQAItem]    (the scenes' QA in VQAv2 form)

mini-ImageNet split CSV (header "filename,label", e.g. n0153282900000005.jpg,n01532829; the
images in one directory):
    read_miniimagenet_csv(csv_path, image_dir=None, size=None) -> LabeledImages
    write_miniimagenet_csv(csv_path, filenames, labels)
Few-shot *episode* CSVs (one row per support/query example) are `visiondata.episodes`.

With `size` given, images are centre-cropped and resized into one uint8 (N, size, size, 3)
array; otherwise they are a list of uint8 (H, W, 3) at native size. A missing file raises
`MissingDataError`, a malformed one `DataError` (visiondata.errors), naming the file and the
offending entry.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os

import numpy as np

from visiondata.errors import DataError, MissingDataError
from visiondata.images import IMAGE_EXTENSIONS, center_crop_resize, read_image, write_image


@dataclasses.dataclass
class LabeledImages:
    images: object            # uint8 (N, S, S, 3) when a size was given, else list of (H, W, 3); None if not loaded
    labels: np.ndarray        # int64 (N,)
    class_names: list
    paths: list


@dataclasses.dataclass
class CaptionSet:
    image_ids: list           # list[int]
    file_names: list          # list[str]
    captions: list            # list[list[str]], aligned with image_ids
    images: object = None     # as in LabeledImages, when image_dir was given


@dataclasses.dataclass
class VQAItem:
    question_id: int
    image_id: int
    question: str
    answers: list = dataclasses.field(default_factory=list)  # the annotators' answers (VQAv2: 10)
    answer: str | None = None                                 # multiple_choice_answer
    answer_type: str | None = None
    question_type: str | None = None


def _load_images(paths: list[str], size: int | None):
    if size is None:
        return [read_image(p) for p in paths]
    out = np.empty((len(paths), size, size, 3), np.uint8)
    for i, p in enumerate(paths):
        out[i] = center_crop_resize(read_image(p), size)
    return out


def _read_json(path, what: str):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingDataError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{what} {path} is not valid JSON ({e})") from e


def _field(entry, key: str, kind, path: str, where: str):
    if not isinstance(entry, dict) or key not in entry:
        raise DataError(f"{path}: {where} lacks the field {key!r}")
    value = entry[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise DataError(f"{path}: {where} field {key!r} should be {kind.__name__}; got {value!r}")
    return value


def _list_field(doc, key: str, path: str, what: str) -> list:
    if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
        raise DataError(f"{path}: a {what} needs a top-level list {key!r}")
    return doc[key]


# ---------------------------------------------------------------- class folders

def read_class_folders(root, size: int | None = None) -> LabeledImages:
    """Images under root/<class>/...; labels index the sorted class names."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise MissingDataError(f"class-folder root not found: {root}")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if not classes:
        raise DataError(f"{root} holds no class sub-directories; expected root/<class_name>/<image files>")
    paths, labels = [], []
    for k, c in enumerate(classes):
        for dirpath, dirnames, files in os.walk(os.path.join(root, c)):
            dirnames.sort()
            for f in sorted(files):
                if f.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(os.path.join(dirpath, f))
                    labels.append(k)
    if not paths:
        raise DataError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) under the class folders {classes}")
    return LabeledImages(_load_images(paths, size), np.array(labels, np.int64), classes, paths)


def write_class_folders(root, images, labels, class_names, ext: str = ".png") -> list[str]:
    """Write images to root/<class_name>/<index>.png; returns the paths."""
    paths = []
    for i, (im, y) in enumerate(zip(images, labels)):
        p = os.path.join(os.fspath(root), class_names[int(y)], f"{i:06d}{ext}")
        write_image(p, np.asarray(im))
        paths.append(p)
    return paths


# ---------------------------------------------------------------- COCO captions

def read_coco_captions(json_path, image_dir=None, size: int | None = None) -> CaptionSet:
    """COCO caption annotations; images (in `image_dir`) loaded when it is given."""
    json_path = os.fspath(json_path)
    doc = _read_json(json_path, "COCO caption JSON")
    images = _list_field(doc, "images", json_path, "COCO caption file")
    anns = _list_field(doc, "annotations", json_path, "COCO caption file")
    ids, names = [], []
    for k, im in enumerate(images):
        ids.append(_field(im, "id", int, json_path, f"images[{k}]"))
        names.append(_field(im, "file_name", str, json_path, f"images[{k}]"))
    pos = {i: k for k, i in enumerate(ids)}
    if len(pos) != len(ids):
        raise DataError(f"{json_path}: image ids are not unique")
    caps: list[list[str]] = [[] for _ in ids]
    for k, a in enumerate(anns):
        image_id = _field(a, "image_id", int, json_path, f"annotations[{k}]")
        cap = _field(a, "caption", str, json_path, f"annotations[{k}]")
        if image_id not in pos:
            raise DataError(f"{json_path}: annotations[{k}] refers to image_id {image_id}, which is not in 'images'")
        caps[pos[image_id]].append(cap.strip())
    loaded = None
    if image_dir is not None:
        loaded = _load_images([os.path.join(os.fspath(image_dir), n) for n in names], size)
    return CaptionSet(ids, names, caps, loaded)


def write_coco_captions(json_path, file_names, captions, image_ids=None, image_dir=None, images=None) -> None:
    """Write a COCO caption JSON (and the images into `image_dir` when both are given)."""
    image_ids = list(range(1, len(file_names) + 1)) if image_ids is None else [int(i) for i in image_ids]
    doc = {"images": [], "annotations": []}
    ann_id = 1
    for i, name, caps in zip(image_ids, file_names, captions):
        doc["images"].append({"id": i, "file_name": name})
        for c in caps:
            doc["annotations"].append({"id": ann_id, "image_id": i, "caption": c})
            ann_id += 1
    if image_dir is not None and images is not None:
        for name, im in zip(file_names, images):
            write_image(os.path.join(os.fspath(image_dir), name), np.asarray(im))
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(doc, f)


# ---------------------------------------------------------------- VQAv2

def read_vqa(questions_path, annotations_path=None) -> list[VQAItem]:
    """VQAv2 questions, joined by question_id with their annotations when given."""
    questions_path = os.fspath(questions_path)
    qs = _list_field(_read_json(questions_path, "VQA question JSON"), "questions", questions_path, "VQA question file")
    items = []
    for k, q in enumerate(qs):
        items.append(VQAItem(
            question_id=_field(q, "question_id", int, questions_path, f"questions[{k}]"),
            image_id=_field(q, "image_id", int, questions_path, f"questions[{k}]"),
            question=_field(q, "question", str, questions_path, f"questions[{k}]"),
        ))
    if annotations_path is None:
        return items
    annotations_path = os.fspath(annotations_path)
    anns = _list_field(_read_json(annotations_path, "VQA annotation JSON"), "annotations", annotations_path,
                       "VQA annotation file")
    by_id = {}
    for k, a in enumerate(anns):
        where = f"annotations[{k}]"
        qid = _field(a, "question_id", int, annotations_path, where)
        answers = _field(a, "answers", list, annotations_path, where)
        by_id[qid] = (
            [_field(x, "answer", str, annotations_path, f"{where}.answers[{j}]") for j, x in enumerate(answers)],
            _field(a, "multiple_choice_answer", str, annotations_path, where),
            a.get("answer_type"), a.get("question_type"),
        )
    for it in items:
        if it.question_id not in by_id:
            raise DataError(f"{annotations_path}: no annotation for question_id {it.question_id} of {questions_path}")
        it.answers, it.answer, it.answer_type, it.question_type = by_id[it.question_id]
    return items


def write_vqa(questions_path, annotations_path, items: list[VQAItem]) -> None:
    """Write VQAv2-style question and annotation files (answers repeated as the annotators' list)."""
    qs = {"questions": [{"question_id": it.question_id, "image_id": it.image_id, "question": it.question}
                        for it in items]}
    anns = {"annotations": [{
        "question_id": it.question_id, "image_id": it.image_id,
        "multiple_choice_answer": it.answer if it.answer is not None else (it.answers[0] if it.answers else ""),
        "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(it.answers)],
        "answer_type": it.answer_type, "question_type": it.question_type,
    } for it in items]}
    for path, doc in ((questions_path, qs), (annotations_path, anns)):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f)


def vqa_from_scenes(scene_set) -> list[VQAItem]:
    """The QA pairs of a `scenes.SceneSet` as VQAItems (image_id = position in the set).

    answer_type follows VQAv2: "yes/no", "number" or "other"; question_type is the scene qtype.
    """
    items = []
    for i, (pairs, types) in enumerate(zip(scene_set.qa, scene_set.qa_types)):
        for j, ((q, a), t) in enumerate(zip(pairs, types)):
            kind = "yes/no" if a in ("yes", "no") else "number" if a.isdigit() else "other"
            items.append(VQAItem(question_id=i * 1000 + j, image_id=i, question=q, answers=[a] * 10, answer=a,
                                 answer_type=kind, question_type=t))
    return items


# ---------------------------------------------------------------- mini-ImageNet CSV

def read_miniimagenet_csv(csv_path, image_dir=None, size: int | None = None) -> LabeledImages:
    """A mini-ImageNet split CSV ("filename,label"); class names are the sorted label strings."""
    csv_path = os.fspath(csv_path)
    if not os.path.isfile(csv_path):
        raise MissingDataError(f"mini-ImageNet CSV not found: {csv_path}")
    files, wnids = [], []
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or [h.strip() for h in header[:2]] != ["filename", "label"]:
                raise DataError(f"{csv_path}: expected the header 'filename,label'; got {header}")
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) < 2 or not row[0].strip() or not row[1].strip():
                    raise DataError(f"{csv_path}, line {line}: expected 'filename,label'; got {row}")
                files.append(row[0].strip())
                wnids.append(row[1].strip())
    except UnicodeDecodeError as e:
        raise DataError(f"{csv_path}: not a text CSV file ({e})") from e
    classes = sorted(set(wnids))
    index = {c: k for k, c in enumerate(classes)}
    labels = np.array([index[w] for w in wnids], np.int64)
    base = os.fspath(image_dir) if image_dir is not None else os.path.dirname(csv_path)
    paths = [os.path.join(base, f) for f in files]
    images = _load_images(paths, size) if image_dir is not None else None
    return LabeledImages(images, labels, classes, paths)


def write_miniimagenet_csv(csv_path, filenames, labels) -> None:
    """Write a "filename,label" CSV (labels are class strings such as WordNet ids)."""
    os.makedirs(os.path.dirname(os.path.abspath(csv_path)), exist_ok=True)
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["filename", "label"])
        for name, lab in zip(filenames, labels):
            w.writerow([name, lab])
