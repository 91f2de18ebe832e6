"""Synthetic captioned scenes with question-answer pairs, deterministic from a seed.

    from visiondata import scenes
    s = scenes.generate(1000, size=64, seed=0, split="train")
    s.images      # uint8 (N, S, S, 3)
    s.captions    # list[list[str]], 6 per image, one per template family
    s.qa          # list[list[(question, answer)]], one-word answers
    s.qa_types    # list[list[str]]: color, shape, size, count, exist, relation, side, verify
    s.labels      # int64 (N,): colour-shape class of the main object, index into s.class_names
    s.class_names # the 48 "<color> <shape>" names (same list for every split)
    s.graphs      # list[dict]: the scene graph of each image (see below)

Scenes. 1-4 objects, each a shape (6: circle, square, triangle, diamond, star, cross) with a
colour (8: red, green, blue, yellow, purple, orange, cyan, pink) and a size (small or large),
at a random position; objects never overlap (a clear gap separates them) and, within an
image, have distinct colour-shape pairs, so "the red circle" names one object. The background
is a plain dark or light gray (`background="plain"`, the default), a random crop of one of the
real photos in `visiondata.photos` (`"photo"`), or either at random (`"mixed"`). Images are
32, 64, 128 px or any size >= 16: the graph is in size-free units, so one seed gives the same
scene at every size.

Labels (rule). The *main* object is object 0 of the graph. A one-object scene's object may be
small or large; in a scene with several objects the main object is the only large one and the
others are small. `labels` is the main object's colour-shape class,
`class_names.index(f"{color} {shape}")` = color_index * 6 + shape_index, so the largest object
in the image decides the class (48 classes).

Splits. "train" and "test" draw from different random streams and use the 40 colour-shape
pairs outside `HELDOUT`, for every object. "heldout" scenes have a main object whose pair is
in `HELDOUT` (8 pairs, one per colour, each shape at least once); their other objects use
training pairs. Held-out pairs therefore never appear in "train" or "test" images, and the
"heldout" split tests composition of known colours and shapes. Image i of a (seed, split)
depends on nothing else (not on n, start or size), so generate(n, start=k) gives images
k..k+n-1 and chunks can be made in parallel.

Graph of one image (positions and radii are fractions of the image side; y grows downwards):
    {"split", "seed", "index", "main": 0,
     "background": {"kind": "plain", "tone": "dark"|"light", "level": int}
                   | {"kind": "photo", "photo": name, "box": [y0, x0, side]},
     "objects": [{"shape", "color", "size", "x", "y", "r", "hpos", "vpos"}, ...]}
`r` is the shape's scale (a circle's radius); every shape lies within 1.25 r of (x, y).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from visiondata import render, scene_text

SHAPES = list(render.SHAPES)
COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink"]
PALETTE = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 230), "yellow": (245, 215, 40),
    "purple": (145, 60, 200), "orange": (245, 135, 30), "cyan": (40, 205, 215), "pink": (245, 125, 190),
}
SIZES = {"small": 0.10, "large": 0.17}  # r as a fraction of the image side
CLASS_NAMES = [f"{c} {s}" for c in COLORS for s in SHAPES]
# One held-out shape per colour; every shape is held out at least once.
HELDOUT = [("red", "triangle"), ("green", "star"), ("blue", "cross"), ("yellow", "circle"),
           ("purple", "square"), ("orange", "diamond"), ("cyan", "star"), ("pink", "triangle")]
TRAIN_PAIRS = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in HELDOUT]
SPLITS = {"train": 0, "test": 1, "heldout": 2}
BACKGROUNDS = ("plain", "photo", "mixed")
MARGIN = 0.02  # gap between an object's bounding circle and the image border
GAP = 0.06     # gap between two objects' bounding circles
DARK_LEVELS, LIGHT_LEVELS = (25, 95), (165, 230)


def class_index(color: str, shape: str) -> int:
    return COLORS.index(color) * len(SHAPES) + SHAPES.index(shape)


@dataclasses.dataclass
class SceneSet:
    images: np.ndarray            # uint8 (N, S, S, 3)
    captions: list                # list[list[str]]
    qa: list                      # list[list[tuple[str, str]]]
    qa_types: list                # list[list[str]]
    labels: np.ndarray            # int64 (N,)
    graphs: list                  # list[dict]
    class_names: list = dataclasses.field(default_factory=lambda: list(CLASS_NAMES))
    split: str = "train"
    seed: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index) -> "SceneSet":
        """A SceneSet of the given indices (int array, list or slice)."""
        idx = np.arange(len(self))[index]
        return SceneSet(
            images=self.images[idx], captions=[self.captions[i] for i in idx], qa=[self.qa[i] for i in idx],
            qa_types=[self.qa_types[i] for i in idx], labels=self.labels[idx],
            graphs=[self.graphs[i] for i in idx], class_names=self.class_names, split=self.split, seed=self.seed,
        )


def _third(t: float, names: tuple[str, str, str]) -> str:
    return names[0] if t < 1 / 3 else names[2] if t > 2 / 3 else names[1]


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), SPLITS[split], int(index)])


def _place(rng: np.random.Generator, radii: list[float]) -> list[tuple[float, float]] | None:
    """Non-overlapping centres for bounding circles of radius render.BOUND * r."""
    placed: list[tuple[float, float, float]] = []
    for r in radii:
        rb = render.BOUND * r
        lo, hi = rb + MARGIN, 1 - rb - MARGIN
        for _ in range(100):
            x, y = rng.uniform(lo, hi, size=2)
            if all((x - px) ** 2 + (y - py) ** 2 > (rb + pr + GAP) ** 2 for px, py, pr in placed):
                placed.append((float(x), float(y), rb))
                break
        else:
            return None
    return [(x, y) for x, y, _ in placed]


def sample_graph(seed: int, split: str, index: int, background: str = "plain",
                 min_objects: int = 1, max_objects: int = 4) -> dict:
    """The scene graph of image `index` of (seed, split); no pixels are drawn."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}; got {split!r}")
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}; got {background!r}")
    if not 1 <= min_objects <= max_objects <= 4:
        raise ValueError(f"need 1 <= min_objects <= max_objects <= 4; got {min_objects}, {max_objects}")
    return _sample_graph(_rng(seed, split, index), seed, split, index, background, min_objects, max_objects)


def _sample_graph(rng, seed, split, index, background, min_objects, max_objects) -> dict:
    n = int(rng.integers(min_objects, max_objects + 1))
    main_pool = HELDOUT if split == "heldout" else TRAIN_PAIRS
    main = main_pool[int(rng.integers(len(main_pool)))]
    pairs = [main]
    while len(pairs) < n:
        p = TRAIN_PAIRS[int(rng.integers(len(TRAIN_PAIRS)))]
        if p not in pairs:
            pairs.append(p)
    sizes = [("large" if rng.random() < 0.5 else "small")] if n == 1 else ["large"] + ["small"] * (n - 1)
    radii = [SIZES[s] for s in sizes]
    centres = None
    while centres is None:  # always succeeds within a few tries for <= 4 objects
        centres = _place(rng, radii)
    objects = []
    for (color, shape), size, r, (x, y) in zip(pairs, sizes, radii, centres):
        objects.append({
            "shape": shape, "color": color, "size": size, "x": x, "y": y, "r": r,
            "hpos": _third(x, ("left", "center", "right")), "vpos": _third(y, ("top", "middle", "bottom")),
        })
    kind = background if background != "mixed" else ("photo" if rng.random() < 0.5 else "plain")
    if kind == "plain":
        tone = "dark" if rng.random() < 0.5 else "light"
        lo, hi = DARK_LEVELS if tone == "dark" else LIGHT_LEVELS
        bg = {"kind": "plain", "tone": tone, "level": int(rng.integers(lo, hi + 1))}
    else:
        from visiondata import photos

        k = int(rng.integers(len(photos.NAMES)))
        bg = {"kind": "photo", "photo": photos.NAMES[k], "box": list(photos.sample_crop_box(rng, k))}
    return {"split": split, "seed": int(seed), "index": int(index), "main": 0, "background": bg, "objects": objects}


def render_graphs(graphs: list[dict], size: int = 64) -> np.ndarray:
    """Draw scene graphs: uint8 (N, size, size, 3)."""
    canvases = np.empty((len(graphs), size, size, 3), np.float32)
    objs = []
    for n, g in enumerate(graphs):
        bg = g["background"]
        if bg["kind"] == "plain":
            canvases[n] = bg["level"]
        else:
            from visiondata import photos

            canvases[n] = photos.render_crop(photos.NAMES.index(bg["photo"]), tuple(bg["box"]), size)
        for o in g["objects"]:
            objs.append((n, o["shape"], o["x"] * size, o["y"] * size, o["r"] * size, PALETTE[o["color"]]))
    render.draw_many(canvases, objs)
    return np.clip(np.rint(canvases), 0, 255).astype(np.uint8)


def labels_of(graphs: list[dict]) -> np.ndarray:
    """int64 (N,): class of each graph's main object."""
    return np.array([class_index(g["objects"][g["main"]]["color"], g["objects"][g["main"]]["shape"])
                     for g in graphs], np.int64)


def generate(n: int, size: int = 64, seed: int = 0, split: str = "train", background: str = "plain",
             start: int = 0, min_objects: int = 1, max_objects: int = 4, chunk: int = 512) -> SceneSet:
    """Images start..start+n-1 of (seed, split), with captions, QA, labels and graphs."""
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an int >= 16 (32, 64, 128 are typical); got {size!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    sample_graph(seed, split, start, background, min_objects, max_objects)  # check the arguments once
    graphs, captions, qa, qa_types = [], [], [], []
    for i in range(start, start + n):
        rng = _rng(seed, split, i)  # one stream per image: its graph, then its text
        g = _sample_graph(rng, seed, split, i, background, min_objects, max_objects)
        graphs.append(g)
        captions.append(scene_text.captions(g, rng))
        triples = scene_text.questions(g, rng, COLORS, SHAPES)
        qa.append([(q, a) for q, a, _ in triples])
        qa_types.append([t for _, _, t in triples])
    images = np.empty((n, size, size, 3), np.uint8)
    for a in range(0, n, chunk):
        images[a:a + chunk] = render_graphs(graphs[a:a + chunk], size)
    return SceneSet(images=images, captions=captions, qa=qa, qa_types=qa_types, labels=labels_of(graphs),
                    graphs=graphs, split=split, seed=int(seed))


def labels(n: int, seed: int = 0, split: str = "train", start: int = 0, **kw) -> np.ndarray:
    """Labels of images start..start+n-1 without rendering: int64 (n,)."""
    return labels_of([sample_graph(seed, split, start + i, **kw) for i in range(n)])
