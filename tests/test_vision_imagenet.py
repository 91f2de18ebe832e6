"""ImageNet-1k class tables (backbones/vision/imagenet/) and their loader; fast, no network, no torch."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from backbones.vision import imagenet, imagenet_build

NAMES = imagenet.class_names()
IDX = {n: i for i, n in enumerate(NAMES)}


def test_classes():
    ids = imagenet.synset_ids()
    assert len(NAMES) == len(ids) == len(set(ids)) == 1000
    assert len({n.lower() for n in NAMES}) == 1000
    assert (ids[0], NAMES[0], ids[-1], NAMES[-1]) == ("n01440764", "tench", "n15075141", "toilet tissue")
    assert imagenet.lemmas()[0] == ["tench", "Tinca tinca"]
    assert len(imagenet.definitions()) == 1000 and all(imagenet.definitions())
    assert {"crane (wading bird)", "crane (lifting device)"} <= set(NAMES)


def test_hypernyms():
    chain = imagenet.hypernym_chain(IDX["tabby"])
    assert chain == imagenet.hypernym_chain("n02123045")
    assert chain[0] == "domestic cat" and chain[-1] == "entity" and "tabby" not in chain
    pos = [chain.index(n) for n in ("cat", "feline", "carnivore", "mammal", "animal")]
    assert pos == sorted(pos)
    assert imagenet.hypernym_chain(IDX["tabby"], max_depth=2) == ["domestic cat", "cat"]
    assert "cat" in imagenet.hypernym_chain(IDX["Egyptian cat"]) and "cat" in imagenet.hypernym_chain(IDX["tiger cat"])
    assert "n07881800" in imagenet.ancestors(IDX["espresso"])  # beverage
    assert imagenet._hypernyms()["n07881800"][0] == "beverage"
    tabby = imagenet.ancestors(np.int64(IDX["tabby"]))
    assert "n00001740" in tabby and "n02123045" not in tabby  # entity; not itself
    assert imagenet.ABSTRACT <= {v[0] for v in imagenet._hypernyms().values()}  # no typos


def test_tags():
    assert imagenet.tag_hypernyms(IDX["tabby"]) == ["domestic cat", "cat", "feline"]
    assert imagenet.tag_hypernyms(IDX["espresso"], k=2) == ["coffee", "beverage"]
    for i in range(1000):
        tags = imagenet.tag_hypernyms(i, k=5)
        assert 1 <= len(tags) <= 5 and not set(tags) & imagenet.ABSTRACT and NAMES[i] not in tags


def test_mini_imagenet():
    mini = imagenet.mini_imagenet_ids()
    assert len(mini) == len(set(mini)) == 100 and set(mini) <= set(imagenet.synset_ids())


@pytest.mark.parametrize("bad", [-1, 1000, "n99999999", "tabby", 2.0, True])
def test_bad_input(bad):
    with pytest.raises(ValueError):
        imagenet.hypernym_chain(bad)


def test_missing_tables(tmp_path, monkeypatch):
    monkeypatch.setattr(imagenet, "DATA_DIR", tmp_path)
    imagenet._classes.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="imagenet_build"):
            imagenet.class_names()
    finally:
        imagenet._classes.cache_clear()


def _fake_inputs(root: Path) -> tuple[Path, Path]:
    """A 1000-class timm info folder and a WordNet data.noun with two 'crane's under different parents."""
    info, wn = root / "timm" / "data" / "_info", root / "wordnet"
    info.mkdir(parents=True)
    wn.mkdir()
    ids = [f"n{10 + i:08d}" for i in range(1000)]
    lem = ["crane" if i < 2 else f"thing {i}, alias {i}" for i in range(1000)]
    (info / "imagenet_synsets.txt").write_text("\n".join(ids) + "\n")
    (info / "imagenet_synset_to_lemma.txt").write_text("".join(f"{s}\t{n}\n" for s, n in zip(ids, lem)))
    (info / "imagenet_synset_to_definition.txt").write_text("".join(f"{s}\tdef {s}\n" for s in ids))
    (info / "mini_imagenet_synsets.txt").write_text("\n".join(ids[::10]) + "\n")
    lines = ["  1 WordNet license text  ", "00000001 03 n 01 entity 0 000 | root",
             "00000002 03 n 02 wading_bird 0 wader 0 001 @ 00000001 n 0000 | a bird",
             "00000003 03 n 01 lifting_device(a) 0 001 @i 00000001 n 0000 | a machine"]
    for i, s in enumerate(ids):
        words = "01 crane 0" if i < 2 else f"02 thing_{i} 0 alias_{i} 0"
        lines.append(f"{s[1:]} 05 n {words} 002 @ 0000000{2 + (i % 2)} n 0000 ~ 00000001 n 0000 | def {s}")
    (wn / "data.noun").write_text("\n".join(lines) + "\n")
    return info.parent.parent, wn


def test_build_small(tmp_path, monkeypatch):
    timm_dir, wn = _fake_inputs(tmp_path)
    out = tmp_path / "out"
    renamed = imagenet_build.build(timm_dir, wn, out)
    assert renamed == {"n00000010": "crane (wading bird)", "n00000011": "crane (lifting device)"}
    first = {f: (out / f).read_bytes() for f in imagenet_build.TABLES}
    imagenet_build.build(timm_dir / "data" / "_info", wn, out)  # the info folder itself works too
    assert first == {f: (out / f).read_bytes() for f in imagenet_build.TABLES}
    assert "WordNet license text" in (out / "WORDNET_LICENSE").read_text()
    monkeypatch.setattr(imagenet, "DATA_DIR", out)
    for f in (imagenet._classes, imagenet._index, imagenet._hypernyms, imagenet._mini):
        f.cache_clear()
    try:
        assert imagenet.class_names()[:3] == ["crane (wading bird)", "crane (lifting device)", "thing 2"]
        assert imagenet.hypernym_chain(1) == ["lifting device", "entity"]  # marker '(a)' dropped
        assert imagenet.tag_hypernyms(2) == ["wading bird"]
        assert imagenet._hypernyms()["n00000002"] == ("wading bird", ("n00000001",), 1)
        assert len(imagenet.mini_imagenet_ids()) == 100
    finally:
        for f in (imagenet._classes, imagenet._index, imagenet._hypernyms, imagenet._mini):
            f.cache_clear()


def test_rebuild_matches_shipped(tmp_path):
    """Rebuild from the installed timm and /usr/share/wordnet; the tables must equal the shipped ones."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("timm is not installed (its data/_info files are the class-table source)")
    if not Path("/usr/share/wordnet/data.noun").is_file():
        pytest.skip("WordNet 3.0 is not in /usr/share/wordnet (apt-get install wordnet-base)")
    imagenet_build.build(list(spec.submodule_search_locations)[0], "/usr/share/wordnet", tmp_path)
    for f in imagenet_build.TABLES:
        assert (tmp_path / f).read_bytes() == (imagenet.DATA_DIR / f).read_bytes(), f
