"""Few-shot N-way K-shot episodes, sampled once and saved as CSV so every method is scored on
the same episodes.

    from visiondata import episodes, fashion_mnist
    _, labels = fashion_mnist.load("test")
    eps = episodes.sample(labels, ways=5, shots=1, queries=1, n_episodes=100, seed=0)
    episodes.write_csv("episodes.csv", eps, dataset="fashion_mnist", split="test")
    eps = episodes.read_csv("episodes.csv")

An `Episode` holds `classes` (N distinct dataset labels), `support` / `query` (indices into the
dataset split, grouped by class in `classes` order: K then M per class) and their labels.
In each episode the classes are distinct, supports and queries are disjoint, and every class
has exactly `shots` supports and `queries` queries. `queries` is per class.

CSV, one row per example:
    episode,role,dataset,split,index,label,class_name
    0,support,fashion_mnist,test,4123,7,sneaker
`index` points into the dataset split as loaded by this package: `fashion_mnist.load(split)`,
or, for dataset "scenes", image `index` of `scenes.generate(..., seed=0, split=split)`
(dataset "scenes:<seed>" for another seed; an image does not depend on n or size).
`load_dataset(ep.dataset, ep.split)` returns (images, labels, class_names) indexed that way.

Emoji (`visiondata.emoji`): dataset "emoji:<style>" (or "emoji:<style>:skin" with skin-tone
variants), `index` into `emoji.load(style, split, skin_tones=...)`, `label` the concept's row in
`emoji.concept_table()`, `class_name` its name. Support and query may come from different
styles: `sample(support_labels, ..., query_labels=...)` draws queries from the second pool, and
the query rows of the CSV name their own dataset (`Episode.query_dataset`), e.g. supports drawn
by Noto and queries by Fluent (the held-out style), on concepts both draw.

Tux Paint (`visiondata.tuxpaint`): dataset "tuxpaint" (every stamp outside "symbols"),
"tuxpaint:<kind>" (kind photo or cartoon, or all) or "tuxpaint:<kind>:<background>" (white, the
default, or photos), `index` into `tuxpaint.load(split, kind=..., background=...)` (splits train,
test, all), `label` the stamp's top category's position in `tuxpaint_categories()` (the sorted top
folders of the installed stamps, the same list for every split and kind), `class_name` that
category ("animals", "food", ...).

Command line:
    python -m visiondata.episodes --dataset fashion_mnist --ways 5 --shots 1 --queries 1 \
        --episodes 100 --seed 0 --out episodes.csv [--split test]
    python -m visiondata.episodes --dataset scenes --split test --num-scenes 2000 ... --out e.csv
    python -m visiondata.episodes --dataset emoji --support-style google --query-style fluent-flat \
        --split heldout --ways 5 --shots 1 --queries 1 --episodes 100 --out e.csv [--skin-tones]
    python -m visiondata.episodes --dataset tuxpaint --split test --ways 5 --shots 1 --episodes 50 --out e.csv
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os

import numpy as np

from backbones.cli_errors import add_debug_flag, cli_main
from visiondata.errors import DataError, MissingDataError

CSV_FIELDS = ["episode", "role", "dataset", "split", "index", "label", "class_name"]


@dataclasses.dataclass
class Episode:
    classes: np.ndarray          # int64 (N,) distinct labels, in support/query order
    support: np.ndarray          # int64 (N*K,) dataset indices, class-major
    support_labels: np.ndarray   # int64 (N*K,)
    query: np.ndarray            # int64 (N*M,) dataset indices, class-major
    query_labels: np.ndarray     # int64 (N*M,)
    dataset: str | None = None
    split: str | None = None
    class_names: list | None = None  # names of `classes`, when known
    query_dataset: str | None = None  # where the queries come from, when not `dataset` (another style)

    @property
    def ways(self) -> int:
        return len(self.classes)

    @property
    def shots(self) -> int:
        return len(self.support) // max(1, len(self.classes))

    @property
    def queries(self) -> int:
        return len(self.query) // max(1, len(self.classes))


def _labels_1d(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array; got {labels.dtype} {labels.shape}")
    return labels


def sample(labels, ways: int, shots: int, queries: int, n_episodes: int, seed: int = 0,
           query_labels=None) -> list[Episode]:
    """`n_episodes` N-way K-shot episodes with M queries per class from int labels (N_data,).

    With `query_labels` (N_query,), the queries are indices into that second pool (another
    style of the same classes) and the classes are those with `shots` supports in `labels` and
    `queries` queries in `query_labels`."""
    labels = _labels_1d(labels)
    if min(ways, shots, queries) < 1 or n_episodes < 0:
        raise ValueError(f"need ways, shots, queries >= 1 and n_episodes >= 0; got {ways}, {shots}, {queries}, {n_episodes}")
    need = shots + queries
    pools = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
    if query_labels is None:
        eligible = np.array(sorted(c for c, idx in pools.items() if len(idx) >= need), np.int64)
        lack = f"at least shots+queries={need} examples"
    else:
        query_labels = _labels_1d(query_labels)
        qpools = {int(c): np.flatnonzero(query_labels == c) for c in np.unique(query_labels)}
        eligible = np.array(sorted(c for c, idx in pools.items()
                                   if len(idx) >= shots and len(qpools.get(c, ())) >= queries), np.int64)
        lack = f"{shots} support and {queries} query examples"
    if len(eligible) < ways:
        raise ValueError(f"only {len(eligible)} classes have {lack}; {ways}-way episodes need {ways}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_episodes):
        classes = rng.choice(eligible, size=ways, replace=False)
        sup, qry = [], []
        for c in classes:
            if query_labels is not None:
                sup.append(rng.choice(pools[int(c)], size=shots, replace=False))
                qry.append(rng.choice(qpools[int(c)], size=queries, replace=False))
                continue
            picked = rng.choice(pools[int(c)], size=need, replace=False)
            sup.append(picked[:shots])
            qry.append(picked[shots:])
        out.append(Episode(
            classes=classes.astype(np.int64),
            support=np.concatenate(sup).astype(np.int64), support_labels=np.repeat(classes, shots).astype(np.int64),
            query=np.concatenate(qry).astype(np.int64), query_labels=np.repeat(classes, queries).astype(np.int64),
        ))
    return out


def _scene_seed(dataset: str) -> int:
    if dataset == "scenes":
        return 0
    try:
        return int(dataset.split(":", 1)[1])
    except (IndexError, ValueError) as e:
        raise ValueError(f"scene dataset names are 'scenes' or 'scenes:<seed>'; got {dataset!r}") from e


def _emoji_args(dataset: str) -> tuple[str, bool]:
    """"emoji:<style>[:skin]" -> (style, skin_tones)."""
    from visiondata import emoji

    parts = dataset.split(":")
    if len(parts) not in (2, 3) or parts[1] not in emoji.STYLES or parts[2:] not in ([], ["skin"]):
        raise ValueError(f"emoji dataset names are 'emoji:<style>' or 'emoji:<style>:skin' with style one of "
                         f"{', '.join(emoji.STYLES)}; got {dataset!r}")
    return parts[1], len(parts) == 3


def _emoji_labels(concepts: list[str]) -> np.ndarray:
    """Concept keys -> int64 rows of `emoji.concept_table()`."""
    from visiondata import emoji

    row = {r["concept"]: i for i, r in enumerate(emoji.concept_table())}
    return np.array([row[c] for c in concepts], np.int64)


def _tuxpaint_args(dataset: str) -> tuple[str, str]:
    """"tuxpaint[:<kind>[:<background>]]" -> (kind, background)."""
    from visiondata import tuxpaint

    parts = dataset.split(":")
    kind = parts[1] if len(parts) > 1 else "all"
    background = parts[2] if len(parts) > 2 else "white"
    if parts[0] != "tuxpaint" or len(parts) > 3 or kind not in tuxpaint.KINDS or background not in tuxpaint.BACKGROUNDS:
        raise ValueError(f"Tux Paint dataset names are 'tuxpaint', 'tuxpaint:<kind>' or 'tuxpaint:<kind>:<background>' "
                         f"with kind one of {', '.join(tuxpaint.KINDS)} and background one of "
                         f"{', '.join(tuxpaint.BACKGROUNDS)}; got {dataset!r}")
    return kind, background


def tuxpaint_categories() -> list[str]:
    """The Tux Paint class names: the sorted top folders of the installed stamps, "symbols" left out
    (as `tuxpaint.load` leaves it out); a label is a position in this list."""
    from visiondata import tuxpaint

    return sorted({s["category"] for s in tuxpaint.stamps() if s["category"] != "symbols"})


def _tuxpaint_stamps(dataset: str, split: str) -> list[dict]:
    """The index rows (no pixels) of `tuxpaint.load(split, kind=...)`, in its order."""
    from visiondata import tuxpaint

    kind, _ = _tuxpaint_args(dataset)
    if split not in tuxpaint.SPLITS:
        raise ValueError(f"unknown Tux Paint split {split!r}; choose one of: {', '.join(tuxpaint.SPLITS)}")
    return [s for s in tuxpaint.stamps() if (split == "all" or s["split"] == split)
            and (kind == "all" or s["kind"] == kind) and s["category"] != "symbols"]


def _category_labels(categories: list[str]) -> np.ndarray:
    row = {c: i for i, c in enumerate(tuxpaint_categories())}
    return np.array([row[c] for c in categories], np.int64)


def _is_tuxpaint(dataset: str) -> bool:
    return dataset == "tuxpaint" or dataset.startswith("tuxpaint:")


def known_class_names(dataset: str) -> list[str] | None:
    if _is_tuxpaint(dataset):
        _tuxpaint_args(dataset)
        return tuxpaint_categories()
    if dataset.startswith("emoji:"):
        from visiondata import emoji

        return [r["name"] for r in emoji.concept_table()]
    if dataset == "fashion_mnist":
        from visiondata import fashion_mnist

        return list(fashion_mnist.CLASS_NAMES)
    if dataset.startswith("scenes"):
        from visiondata import scenes

        return list(scenes.CLASS_NAMES)
    return None


def write_csv(path, episodes: list[Episode], dataset: str, split: str, class_names=None,
              query_dataset: str | None = None) -> None:
    """Write episodes, one row per example (see the module docstring); query rows name
    `query_dataset` (or the episode's) when the queries come from another dataset or style."""
    names = class_names if class_names is not None else known_class_names(dataset)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_FIELDS)
        for e_i, ep in enumerate(episodes):
            qds = query_dataset or ep.query_dataset or dataset
            for role, ds, idx, lab in (("support", dataset, ep.support, ep.support_labels),
                                       ("query", qds, ep.query, ep.query_labels)):
                for i, y in zip(idx, lab):
                    w.writerow([e_i, role, ds, split, int(i), int(y), names[int(y)] if names else ""])


# Numbers of images of dataset splits whose size is fixed (the CSV's `index` must be below it).
KNOWN_SIZES = {("fashion_mnist", "train"): 60000, ("fashion_mnist", "test"): 10000}


def _size_of(sizes: dict, dataset: str, split: str) -> int | None:
    """The number of images of `dataset`/`split` when known: sizes[(dataset, split)] or sizes[dataset]."""
    n = sizes.get((dataset, split), sizes.get(dataset))
    return None if n is None else int(n)


def read_csv(path, sizes: dict | None = None) -> list[Episode]:
    """Read episodes written by `write_csv`; `DataError` naming the file and line for a malformed file.

    Checked on every row: integer episode/index/label, a known role, an index >= 0 and, where the
    split's size is known, below it; within an episode: one split, one dataset per role, one
    class name per label, no image twice (nor both support and query), and every query's class
    among the episode's support classes. sizes: the number of images of a dataset split, keyed by
    (dataset, split) or by dataset name; the fixed-size splits of KNOWN_SIZES are always checked
    (scenes are generated to any size; emoji splits depend on the local cache: pass their sizes).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingDataError(f"episode CSV not found: {path}")
    sizes = {**KNOWN_SIZES, **(sizes or {})}
    rows: dict[int, dict] = {}
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in CSV_FIELDS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: episode CSV lacks columns {missing}; expected header {','.join(CSV_FIELDS)}")
            for line, r in enumerate(reader, start=2):
                where = f"{path}, line {line}"
                if None in r.values() or None in r:
                    raise DataError(f"{where}: expected {len(CSV_FIELDS)} fields ({','.join(CSV_FIELDS)}); "
                                    "the row has fewer or more")
                try:
                    e, idx, lab = int(r["episode"]), int(r["index"]), int(r["label"])
                except (TypeError, ValueError) as ex:
                    raise DataError(f"{where}: episode, index and label must be integers ({ex})") from ex
                role, ds, split = r["role"], r["dataset"], r["split"]
                if role not in ("support", "query"):
                    raise DataError(f"{where}: role must be 'support' or 'query'; got {role!r}")
                if idx < 0:
                    raise DataError(f"{where}: image index {idx} is negative; indices count from 0 "
                                    f"into {ds}/{split}")
                n = _size_of(sizes, ds, split)
                if n is not None and idx >= n:
                    raise DataError(f"{where}: image index {idx} is out of range for {ds}/{split}, "
                                    f"which has {n} images (0..{n - 1})")
                ep = rows.setdefault(e, {"support": [], "query": [], "split": split, "names": {}, "lines": {},
                                         "first": line})
                if split != ep["split"]:
                    raise DataError(f"{where}: episode {e} mixes splits ({ep['split']!r} on line {ep['first']}, "
                                    f"{split!r} here)")
                ds_key = role + "_dataset"
                if ds != ep.setdefault(ds_key, ds):
                    raise DataError(f"{where}: episode {e} mixes datasets in its {role} rows "
                                    f"({ep[ds_key]!r}, then {ds!r} here)")
                name = ep["names"].setdefault(lab, r["class_name"])
                if name != r["class_name"]:
                    raise DataError(f"{where}: episode {e} names label {lab} {r['class_name']!r} here but "
                                    f"{name!r} on line {ep['lines'][lab]}")
                ep["lines"].setdefault(lab, line)
                seen = ep.setdefault(role + "_lines", {})
                if idx in seen:
                    raise DataError(f"{where}: image {idx} is already a {role} of episode {e} (line {seen[idx]})")
                seen[idx] = line
                ep[role].append((idx, lab, line))
    except UnicodeDecodeError as ex:
        raise DataError(f"{path}: not a text CSV file ({ex})") from ex
    out = []
    for e in sorted(rows):
        r = rows[e]
        sd, qd = r.get("support_dataset"), r.get("query_dataset")
        support_classes = {lab for _, lab, _ in r["support"]}
        support_images = {idx for idx, _, _ in r["support"]}
        for idx, lab, line in r["query"]:
            if lab not in support_classes:
                have = sorted(support_classes)
                raise DataError(f"{path}, line {line}: query of class {lab} in episode {e}, which has no support "
                                f"of that class (support classes: {have if have else 'none'})")
            if (qd is None or qd == sd) and idx in support_images:
                raise DataError(f"{path}, line {line}: image {idx} is both a support and a query of episode {e}")
        classes = list(dict.fromkeys(lab for _, lab, _ in r["support"] + r["query"]))
        out.append(Episode(
            classes=np.array(classes, np.int64),
            support=np.array([i for i, _, _ in r["support"]], np.int64),
            support_labels=np.array([y for _, y, _ in r["support"]], np.int64),
            query=np.array([i for i, _, _ in r["query"]], np.int64),
            query_labels=np.array([y for _, y, _ in r["query"]], np.int64),
            dataset=sd or qd, split=r["split"], class_names=[r["names"][c] for c in classes],
            query_dataset=qd if sd and qd and qd != sd else None,
        ))
    return out


def load_dataset(dataset: str, split: str, num_scenes: int = 2000, size: int = 64):
    """(images, labels, class_names) of a dataset split, indexed as the CSV's `index` column.

    fashion_mnist: uint8 (N, 28, 28) grayscale; scenes: uint8 (num_scenes, size, size, 3) (any
    num_scenes above the episodes' largest index gives the same images; see `needed_scenes`);
    emoji:<style>[:skin]: uint8 (N, size, size, 3) on white, labels = concept-table rows;
    tuxpaint[:<kind>[:<background>]]: uint8 (N, size, size, 3), labels = top-category positions in
    `tuxpaint_categories()`, class names = those categories.
    """
    if _is_tuxpaint(dataset):
        from visiondata import tuxpaint

        kind, background = _tuxpaint_args(dataset)
        ts = tuxpaint.load(split, size, kind=kind, background=background)
        return ts.images, _category_labels(ts.categories), tuxpaint_categories()
    if dataset.startswith("emoji:"):
        from visiondata import emoji

        style, skin = _emoji_args(dataset)
        ds = emoji.load(style, split, size, skin_tones=skin)
        return ds.images, _emoji_labels(ds.concepts), known_class_names(dataset)
    if dataset == "fashion_mnist":
        from visiondata import fashion_mnist

        images, labels = fashion_mnist.load(split)
        return images, labels, list(fashion_mnist.CLASS_NAMES)
    if dataset.startswith("scenes"):
        from visiondata import scenes

        s = scenes.generate(num_scenes, size=size, seed=_scene_seed(dataset), split=split)
        return s.images, s.labels, list(s.class_names)
    raise ValueError(f"unknown dataset {dataset!r}; expected fashion_mnist, scenes, scenes:<seed>, emoji:<style> "
                     "or tuxpaint[:<kind>]")


def needed_scenes(episodes: list[Episode]) -> int:
    """How many scenes to generate so that every index in `episodes` exists."""
    return 1 + max(int(max(e.support.max(), e.query.max())) for e in episodes)


def dataset_labels(dataset: str, split: str, num_scenes: int = 2000) -> np.ndarray:
    """Labels of a dataset split as the CSV's `index` refers to them: int64 (N,)."""
    if _is_tuxpaint(dataset):
        return _category_labels([s["category"] for s in _tuxpaint_stamps(dataset, split)])
    if dataset.startswith("emoji:"):
        from visiondata import emoji

        style, skin = _emoji_args(dataset)
        return _emoji_labels(emoji.load(style, split, size=8, skin_tones=skin).concepts)
    if dataset == "fashion_mnist":
        from visiondata import fashion_mnist

        return fashion_mnist.load(split)[1]
    if dataset.startswith("scenes"):
        from visiondata import scenes

        return scenes.labels(num_scenes, seed=_scene_seed(dataset), split=split)
    raise ValueError(f"unknown dataset {dataset!r}; expected fashion_mnist, scenes, scenes:<seed>, emoji:<style> "
                     "or tuxpaint[:<kind>]")


@cli_main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m visiondata.episodes", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True,
                   help="fashion_mnist | scenes | scenes:<seed> | emoji | tuxpaint | tuxpaint:<kind>[:<background>] "
                        "(kind all|photo|cartoon; background white|photos)")
    p.add_argument("--split", default="test",
                   help="fashion_mnist, tuxpaint: train|test; scenes, emoji: train|test|heldout")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=1, help="queries per class")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-scenes", type=int, default=2000, help="scenes only: size of the pool to sample from")
    p.add_argument("--support-style", default="google", help="emoji only: style of the supports")
    p.add_argument("--query-style", default=None, help="emoji only: style of the queries (default: the support style)")
    p.add_argument("--skin-tones", action="store_true", help="emoji only: include skin-tone variants")
    p.add_argument("--out", required=True)
    add_debug_flag(p)
    a = p.parse_args(argv)
    dataset, query_dataset, query_labels = a.dataset, None, None
    if a.dataset == "emoji":
        skin = ":skin" if a.skin_tones else ""
        dataset = f"emoji:{a.support_style}{skin}"
        if a.query_style and a.query_style != a.support_style:
            query_dataset = f"emoji:{a.query_style}{skin}"
            query_labels = dataset_labels(query_dataset, a.split)
    labels = dataset_labels(dataset, a.split, a.num_scenes)
    eps = sample(labels, a.ways, a.shots, a.queries, a.episodes, a.seed, query_labels=query_labels)
    write_csv(a.out, eps, dataset, a.split, query_dataset=query_dataset)
    source = dataset + (f" -> queries from {query_dataset}" if query_dataset else "")
    print(f"wrote {len(eps)} episodes ({a.ways}-way {a.shots}-shot, {a.queries} queries/class) "
          f"from {source}/{a.split} to {a.out}")


if __name__ == "__main__":
    main()
