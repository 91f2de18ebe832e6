"""eval.fewshot on real-image episodes: queries from another style (Noto supports, Fluent queries),
Tux Paint category episodes, and the LENS models chosen by dataset."""
import json

import numpy as np
import pytest

from eval import fewshot
from visiondata import episodes as episodes_mod


class _Recorder:
    """Codes each image as one id and remembers what it was given, per key."""

    name = "recorder"

    def __init__(self):
        self.images = {}

    def ids(self, images, keys):
        for k, im in zip(keys, images):
            assert int(k) not in self.images, f"image key {k} coded twice"
            self.images[int(k)] = np.array(im)
        return [[300 + int(k) % 50] for k in keys]


class _FakeLLM:
    def encode(self, text):
        return [ord(c) for c in text]

    def score_batch(self, prefix, queries, cands):
        return np.tile(-np.arange(len(cands), dtype=float), (len(queries), 1))


def _cross_episodes():
    """Support pool labels 0..2 (two each), query pool labels 0..1 (two each), 2-way 1-shot."""
    return episodes_mod.sample(np.repeat(np.arange(3), 2), ways=2, shots=1, queries=1, n_episodes=5, seed=0,
                               query_labels=np.repeat(np.arange(2), 2))


def test_run_gives_the_coder_query_images_under_offset_keys():
    eps = _cross_episodes()
    support_images = np.arange(6, dtype=np.uint8)[:, None, None] * np.ones((6, 2, 2), np.uint8)
    query_images = 100 + np.arange(4, dtype=np.uint8)[:, None, None] * np.ones((4, 2, 2), np.uint8)
    for e in eps:
        e.class_names = [f"c{int(c)}" for c in e.classes]
    coder = _Recorder()
    recs, summary = fewshot.run(_FakeLLM(), coder, eps, support_images, open_ended_eval=False, progress=False,
                                query_images=query_images)
    for e in eps:
        for s in e.support:
            assert (coder.images[int(s)] == support_images[s]).all()
        for q in e.query:
            assert (coder.images[int(q) + 6] == query_images[q]).all()
    # Records name each query by its index in the query images, as the episode file does.
    assert [r["query"] for r in recs] == [int(q) for e in eps for q in e.query]
    assert summary["queries"] == 10
    with pytest.raises(ValueError, match="out of range"):      # query index past the query images
        fewshot.run(_FakeLLM(), _Recorder(), eps, support_images, False, progress=False, query_images=query_images[:1])
    with pytest.raises(ValueError, match="shape"):
        fewshot.run(_FakeLLM(), _Recorder(), eps, support_images, False, progress=False,
                    query_images=np.zeros((4, 3, 3), np.uint8))


def test_stored_runs_match_on_datasets_and_lens_models(tmp_path):
    eps = _cross_episodes()
    for e in eps:
        e.class_names = [f"c{int(c)}" for c in e.classes]
    images = np.zeros((6, 2, 2), np.uint8)
    settings = {"method": "lens", "label": None, "layers": None, "tokenizer": None, "tokenizer_digest": None,
                "llm": "x", "seed": 0, "lens_captions": False, "lens_vision": "imagenet:efficientnet-lite0+clip:lit",
                "dataset": "emoji:google", "query_dataset": "emoji:fluent-flat", "split": "heldout"}
    out = str(tmp_path / "run")
    recs, summary = fewshot.run_resumable(out, settings, _FakeLLM(), _Recorder(), eps, images, False,
                                          progress=False, query_images=np.zeros((4, 2, 2), np.uint8))
    fewshot.write_results(out, recs, {**summary, **settings})
    assert len(fewshot.stored_episodes(out, settings, eps, False)) == 5
    for key, other in (("query_dataset", "emoji:fluent-modern"), ("query_dataset", None), ("split", "test"),
                       ("lens_vision", "clip:offline"), ("dataset", "emoji:twitter")):
        assert fewshot.stored_episodes(out, {**settings, key: other}, eps, False) == {}, key
    # A summary written before these fields existed: an offline-LENS run on one dataset; still reused.
    old = {k: v for k, v in settings.items() if k not in ("lens_vision", "query_dataset", "split", "dataset")}
    with open(f"{out}/summary.json", "w") as f:
        json.dump(old, f)
    new = {**settings, "lens_vision": "clip:offline", "query_dataset": None}
    assert len(fewshot.stored_episodes(out, new, eps, False)) == 5
    assert fewshot.stored_episodes(out, settings, eps, False) == {}    # not with the real-image models


def test_lens_models_follow_the_dataset(monkeypatch):
    import lens

    calls = []

    class FakeLens:
        photo_tagger = tagger = attributer = captioner = None

        @classmethod
        def load(cls, **kw):
            calls.append(kw)
            return cls()

    monkeypatch.setattr(lens, "Lens", FakeLens)
    assert fewshot.real_images("emoji:fluent-flat") and fewshot.real_images("tuxpaint:photo")
    assert not fewshot.real_images("fashion_mnist") and not fewshot.real_images("scenes:3")
    fewshot.make_coder("lens", _FakeLLM(), 2, None, 0, lens_real=True)
    fewshot.make_coder("lens", _FakeLLM(), 2, None, 0, lens_real=False)
    assert calls[0]["vision"] == "efficientnet-lite0" and "clip" not in calls[0]      # default (LiT) clip
    assert calls[0]["captioner"] == "none"
    assert calls[1]["clip"] == "offline" and "vision" not in calls[1]


def _cross_style_csv(tmp_path):
    path = tmp_path / "eps.csv"
    episodes_mod.main(["--dataset", "emoji", "--support-style", "google", "--query-style", "fluent-flat",
                       "--split", "heldout", "--ways", "2", "--shots", "1", "--episodes", "2", "--out", str(path)])
    return path


@pytest.mark.emoji
def test_cross_style_emoji_episodes_run_with_random_tokens(tmp_path, smollm2):
    path = _cross_style_csv(tmp_path)
    out = tmp_path / "random"
    argv = ["--method", "random", "--layers", "2", "--episodes", str(path), "--out", str(out), "--no-open-ended"]
    summary = fewshot.main(argv, llm=smollm2)
    assert summary["dataset"] == "emoji:google" and summary["query_dataset"] == "emoji:fluent-flat"
    assert summary["split"] == "heldout" and summary["episodes"] == 2 and summary["queries"] == 4
    assert json.loads((out / "summary.json").read_text())["query_dataset"] == "emoji:fluent-flat"
    eps = episodes_mod.read_csv(path)
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["query"] for r in recs] == [int(q) for e in eps for q in e.query]
    assert fewshot.main(argv, llm=smollm2)["reused_episodes"] == 2


@pytest.mark.emoji
def test_cross_style_queries_are_the_fluent_pictures(tmp_path, monkeypatch):
    path = _cross_style_csv(tmp_path)
    coder = _Recorder()
    monkeypatch.setattr(fewshot, "make_coder", lambda *a, **k: coder)
    fewshot.main(["--method", "random", "--episodes", str(path), "--out", str(tmp_path / "o"), "--no-open-ended"],
                 llm=_FakeLLM())
    google, _, _ = episodes_mod.load_dataset("emoji:google", "heldout")
    fluent, _, _ = episodes_mod.load_dataset("emoji:fluent-flat", "heldout")
    for e in episodes_mod.read_csv(path):
        assert e.query_dataset == "emoji:fluent-flat"
        for s in e.support:
            assert (coder.images[int(s)] == google[s]).all()
        for q in e.query:
            assert (coder.images[len(google) + int(q)] == fluent[q]).all()
            assert not any((coder.images[len(google) + int(q)] == google[s]).all() for s in e.support)


@pytest.mark.tuxpaint
def test_tuxpaint_category_episodes_round_trip(tmp_path):
    from visiondata import tuxpaint

    path = tmp_path / "tux.csv"
    episodes_mod.main(["--dataset", "tuxpaint", "--split", "test", "--ways", "5", "--shots", "1", "--episodes", "20",
                       "--out", str(path)])
    eps = episodes_mod.read_csv(path)
    images, labels, names = episodes_mod.load_dataset("tuxpaint", "test")
    ts = tuxpaint.load("test")
    assert names == episodes_mod.tuxpaint_categories() and "animals" in names and "symbols" not in names
    assert np.array_equal(labels, episodes_mod.dataset_labels("tuxpaint", "test")) and (images == ts.images).all()
    assert len(eps) == 20
    for e in eps:
        assert e.dataset == "tuxpaint" and e.split == "test" and e.query_dataset is None and e.ways == 5
        assert np.array_equal(labels[e.support], e.support_labels) and np.array_equal(labels[e.query], e.query_labels)
        assert e.class_names == [names[c] for c in e.classes]
        assert [ts.categories[i] for i in e.query] == [names[y] for y in e.query_labels]
    photo = episodes_mod.dataset_labels("tuxpaint:photo", "test")
    assert len(photo) == sum(k == "photo" for k in ts.kinds) and set(photo) <= set(labels)
    with pytest.raises(ValueError, match="Tux Paint dataset names"):
        episodes_mod.load_dataset("tuxpaint:drawings", "test")


@pytest.fixture(scope="module")
def support_photo_episodes():
    """The photos of a cat and a coffee cup and two 2-way 1-shot episodes, one per support order, whose
    queries are the support photos themselves: the true label of a query is its own support's."""
    from visiondata import photos
    from visiondata.episodes import Episode

    cat, cup = photos.NAMES.index("chelsea"), photos.NAMES.index("coffee")
    label_names = {cat: "cat", cup: "coffee"}
    eps = []
    for pair in (np.array([cat, cup]), np.array([cup, cat])):
        eps.append(Episode(classes=pair, support=pair, support_labels=pair, query=pair, query_labels=pair,
                           class_names=[label_names[int(i)] for i in pair]))
    return photos.load(size=128), eps


@pytest.mark.parametrize("method", ["spae", "lens"])
def test_a_query_that_is_a_support_gets_its_label_in_both_orders(method, support_photo_episodes, smollm2):
    images, eps = support_photo_episodes
    coder = fewshot.make_coder(method, smollm2, 2, None, 0, lens_real=True)
    recs, summary = fewshot.run(smollm2, coder, eps, images, open_ended_eval=False, progress=False, calibrate="both")
    wrong = [(r["episode"], r["label"], r["pred"]) for r in recs if not r["correct"]]
    assert summary["calibrate"] == "both" and summary["queries"] == 4 and wrong == []
