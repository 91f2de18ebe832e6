"""Few-shot episodes: distinct classes, disjoint supports/queries, balance, CSV round trip, CLI."""

import os
import subprocess
import sys

import numpy as np
import pytest

from visiondata import episodes, fashion_mnist, scenes
from visiondata.errors import DataError, MissingDataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _labels():
    return np.random.default_rng(0).integers(0, 12, size=600)


def _check(eps, labels, ways, shots, queries):
    for ep in eps:
        assert len(ep.classes) == ways and len(set(ep.classes.tolist())) == ways
        assert len(ep.support) == ways * shots and len(ep.query) == ways * queries
        assert not set(ep.support.tolist()) & set(ep.query.tolist())
        assert len(set(ep.support.tolist())) == len(ep.support) and len(set(ep.query.tolist())) == len(ep.query)
        np.testing.assert_array_equal(labels[ep.support], ep.support_labels)
        np.testing.assert_array_equal(labels[ep.query], ep.query_labels)
        for c in ep.classes:
            assert (ep.support_labels == c).sum() == shots and (ep.query_labels == c).sum() == queries
        assert set(ep.support_labels.tolist()) == set(ep.classes.tolist())


@pytest.mark.parametrize("ways,shots,queries", [(5, 1, 1), (5, 5, 3), (2, 3, 15), (12, 1, 1)])
def test_episode_properties(ways, shots, queries):
    labels = _labels()
    eps = episodes.sample(labels, ways, shots, queries, n_episodes=50, seed=1)
    assert len(eps) == 50
    _check(eps, labels, ways, shots, queries)


def test_seeded_and_varied():
    a = episodes.sample(_labels(), 5, 1, 1, 20, seed=0)
    b = episodes.sample(_labels(), 5, 1, 1, 20, seed=0)
    c = episodes.sample(_labels(), 5, 1, 1, 20, seed=1)
    assert all(np.array_equal(x.support, y.support) and np.array_equal(x.query, y.query) for x, y in zip(a, b))
    assert any(not np.array_equal(x.support, y.support) for x, y in zip(a, c))
    assert len({tuple(sorted(e.classes.tolist())) for e in a}) > 10  # class sets vary over episodes


def test_too_few_classes():
    labels = np.array([0, 0, 1, 1, 2])
    with pytest.raises(ValueError, match="only 2 classes"):
        episodes.sample(labels, ways=3, shots=1, queries=1, n_episodes=1)


def test_csv_round_trip(tmp_path):
    labels = _labels()
    names = [f"class{k}" for k in range(12)]
    eps = episodes.sample(labels, 5, 2, 3, 10, seed=0)
    episodes.write_csv(tmp_path / "e.csv", eps, dataset="mine", split="val", class_names=names)
    got = episodes.read_csv(tmp_path / "e.csv")
    assert len(got) == 10
    for a, b in zip(eps, got):
        for f in ("classes", "support", "support_labels", "query", "query_labels"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        assert b.dataset == "mine" and b.split == "val" and b.class_names == [names[c] for c in a.classes]
        assert (b.ways, b.shots, b.queries) == (5, 2, 3)
    header = (tmp_path / "e.csv").read_text().splitlines()[0]
    assert header == "episode,role,dataset,split,index,label,class_name"


def test_csv_errors(tmp_path):
    with pytest.raises(MissingDataError):
        episodes.read_csv(tmp_path / "none.csv")
    p = tmp_path / "bad.csv"
    p.write_text("episode,role,index\n0,support,1\n")
    with pytest.raises(DataError, match="lacks columns"):
        episodes.read_csv(p)
    p.write_text("episode,role,dataset,split,index,label,class_name\n0,train,d,s,1,2,x\n")
    with pytest.raises(DataError, match="line 2: role"):
        episodes.read_csv(p)
    p.write_text("episode,role,dataset,split,index,label,class_name\n0,query,d,s,one,2,x\n")
    with pytest.raises(DataError, match="integers"):
        episodes.read_csv(p)


def test_scene_episodes_follow_scene_labels():
    eps = episodes.sample(episodes.dataset_labels("scenes", "heldout", num_scenes=200), 5, 1, 1, 10, seed=0)
    s = scenes.generate(200, size=32, seed=0, split="heldout")
    _check(eps, s.labels, 5, 1, 1)
    held = {scenes.class_index(*p) for p in scenes.HELDOUT}
    assert all(set(e.classes.tolist()) <= held for e in eps)


@pytest.mark.fashion_mnist
def test_contract_command(tmp_path):
    out = tmp_path / "episodes.csv"
    cmd = [sys.executable, "-m", "visiondata.episodes", "--dataset", "fashion_mnist", "--ways", "5", "--shots", "1",
           "--queries", "1", "--episodes", "100", "--seed", "0", "--out", str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    eps = episodes.read_csv(out)
    assert len(eps) == 100 and eps[0].dataset == "fashion_mnist" and eps[0].split == "test"
    _, labels = fashion_mnist.load("test")
    _check(eps, labels, 5, 1, 1)
    assert eps[0].class_names == [fashion_mnist.CLASS_NAMES[c] for c in eps[0].classes]


def test_load_dataset_matches_csv_indices(tmp_path):
    eps = episodes.sample(episodes.dataset_labels("scenes:3", "test", num_scenes=150), 4, 2, 2, 5, seed=2)
    episodes.write_csv(tmp_path / "s.csv", eps, dataset="scenes:3", split="test")
    got = episodes.read_csv(tmp_path / "s.csv")
    images, labels, names = episodes.load_dataset(got[0].dataset, got[0].split,
                                                  num_scenes=episodes.needed_scenes(got), size=32)
    for ep in got:
        np.testing.assert_array_equal(labels[ep.query], ep.query_labels)
        assert [names[c] for c in ep.classes] == ep.class_names
    ref = scenes.generate(episodes.needed_scenes(got), size=32, seed=3, split="test")
    np.testing.assert_array_equal(images, ref.images)
