"""Few-shot prompts for the head-to-head: ids land where they should, the LLM copies a planted label."""
import numpy as np
import pytest

from eval import fewshot
from visiondata import episodes as episodes_mod


def test_prompt_puts_image_ids_and_labels_in_order(smollm2):
    a, b, q = smollm2.encode(" red circle"), smollm2.encode(" blue square"), smollm2.encode(" red circle")
    prompt = fewshot.build_prompt(smollm2, [(a, "apple"), (b, "berry")], q)
    text = smollm2.decode(prompt)
    assert text == (fewshot.INSTRUCTION + "\nInput: red circle Output: apple\n"
                    "Input: blue square Output: berry\nInput: red circle Output:")
    # The image ids are spliced verbatim (no re-tokenisation): find them as contiguous runs.
    s = " ".join(map(str, prompt))
    assert " ".join(map(str, a)) in s and " ".join(map(str, b)) in s


def test_scorer_picks_a_planted_label(smollm2):
    # Each "image" spells its own label three times; the query's label is planted in its ids.
    names = ["apple", "berry", "cherry", "lemon", "melon"]
    for t in range(6):
        labels = list(np.random.default_rng(t).permutation(names)[:3])
        supports = [(smollm2.encode((" " + name) * 3), name) for name in labels]
        query = labels[t % 3]
        prompt = fewshot.build_prompt(smollm2, supports, smollm2.encode((" " + query) * 3))
        assert labels[fewshot.classify(smollm2, prompt, labels)] == query


def test_random_coder_is_stable_per_image_and_seed():
    coder = fewshot.RandomCoder(np.arange(100, 200), length=5, seed=1)
    imgs = np.zeros((3, 4, 4), np.uint8)
    a, b = coder.ids(imgs, [7, 8, 7]), coder.ids(imgs, [7, 8, 7])
    assert a == b and a[0] == a[2] and a[0] != a[1] and all(len(x) == 5 for x in a)
    assert all(100 <= t < 200 for x in a for t in x)
    assert fewshot.RandomCoder(np.arange(100, 200), 5, seed=2).ids(imgs, [7])[0] != a[0]


def test_every_method_reads_the_same_episodes(tmp_path):
    labels = np.repeat(np.arange(6), 5)
    eps = episodes_mod.sample(labels, ways=3, shots=2, queries=1, n_episodes=4, seed=0)
    path = tmp_path / "eps.csv"
    episodes_mod.write_csv(path, eps, dataset="fashion_mnist", split="test")
    seen = []

    class Recorder:
        name = "recorder"

        def ids(self, images, keys):
            seen.append(list(keys))
            return [[int(k) % 50 + 300] for k in keys]

    class FakeLLM:
        def encode(self, text):
            return [ord(c) for c in text]

        def score_batch(self, prefix, queries, cands):
            return np.tile(-np.arange(len(cands), dtype=float), (len(queries), 1))

    images = np.zeros((len(labels), 2, 2), np.uint8)
    read = episodes_mod.read_csv(path)
    recs, summary = fewshot.run(FakeLLM(), Recorder(), read, images, open_ended_eval=False, progress=False)
    recs2, _ = fewshot.run(FakeLLM(), Recorder(), episodes_mod.read_csv(path), images, open_ended_eval=False,
                           progress=False)
    assert recs == recs2 and seen[0] == seen[1]
    assert summary["episodes"] == 4 and summary["queries"] == 12
    # The fake scorer always picks the first class name of the episode.
    assert all(r["pred"] == episodes_mod.read_csv(path)[r["episode"]].class_names[0] for r in recs)


def test_mean_ci95_closed_form():
    m, h = fewshot.mean_ci95([0.0, 1.0, 1.0, 0.0])
    assert m == 0.5 and h == pytest.approx(1.96 * np.std([0, 1, 1, 0], ddof=1) / 2)


def test_report_table_and_plot(tmp_path):
    import json

    from eval import report

    runs = tmp_path / "runs"
    for name, method, layers, acc in [("a", "spae", 1, 0.6), ("b", "spae", 2, 0.7), ("c", "random", 2, 0.5),
                                      ("d", "lens", None, 0.8)]:
        (runs / name).mkdir(parents=True)
        (runs / name / "summary.json").write_text(json.dumps(
            {"method": method, "layers": layers, "accuracy": acc, "ci95": 0.05, "dataset": "fashion_mnist",
             "split": "test", "ways": 2, "shots": 1, "episodes": 10}))
    report.main(["--runs", str(runs), "--out", str(tmp_path / "rep")])
    text = (tmp_path / "rep" / "REPORT.md").read_text()
    assert "| spae (2 layers) | 70.0 ± 5.0 |" in text and "| lens | 80.0 ± 5.0 |" in text
    assert text.index("spae (1 layer)") < text.index("| lens") < text.index("| random")
    assert (tmp_path / "rep" / "layers.png").stat().st_size > 1000


def test_vqa_prompt_and_items(smollm2):
    from eval import fewshot_vqa
    from visiondata import scenes

    s = scenes.generate(12, size=32, seed=0, split="test")
    items = fewshot_vqa.sample_items(s, n_questions=5, shots=2, seed=0)
    assert items == fewshot_vqa.sample_items(s, n_questions=5, shots=2, seed=0)
    for img, qa, demos in items:
        assert img not in [d for d, _ in demos] and 0 <= qa < len(s.qa[img])
    img_ids = smollm2.encode(" red circle")
    prompt = fewshot_vqa.build_prompt(smollm2, [(img_ids, "What color is it?", "red")], img_ids, "What shape is it?")
    assert smollm2.decode(prompt) == (fewshot_vqa.INSTRUCTION + "\nImage: red circle\nQuestion: What color is it?\n"
                                      "Answer: red\n\nImage: red circle\nQuestion: What shape is it?\nAnswer:")


class _CountingCoder:
    name = "counting"

    def __init__(self):
        self.seen = []

    def ids(self, images, keys):
        self.seen.extend(int(k) for k in keys)
        return [[int(k) % 50 + 300] for k in keys]


class _FakeLLM:
    """Scores candidate j of a query with ids q as -(j + q[0]) % 3: deterministic, not constant."""

    def encode(self, text):
        return [ord(c) for c in text]

    def score_batch(self, prefix, queries, cands):
        return np.array([[-((j + q[-1]) % 3) for j in range(len(cands))] for q in queries], float)


def test_resume_scores_only_new_or_unfinished_episodes(tmp_path):
    labels = np.repeat(np.arange(6), 6)
    images = np.zeros((len(labels), 2, 2), np.uint8)
    first4 = episodes_mod.sample(labels, ways=3, shots=2, queries=1, n_episodes=4, seed=0)
    all9 = episodes_mod.sample(labels, ways=3, shots=2, queries=1, n_episodes=9, seed=0)
    for a, b in zip(first4, all9):            # sampling is sequential: a longer file extends a shorter one
        assert np.array_equal(a.support, b.support) and np.array_equal(a.query, b.query)
    for eps in (first4, all9):
        for e in eps:
            e.class_names = [f"c{int(c)}" for c in e.classes]
    settings = {"method": "spae", "label": None, "layers": 2, "tokenizer": "ck", "tokenizer_digest": "a1",
                "llm": "x", "seed": 0, "lens_captions": None}
    fresh, fresh_summary = fewshot.run(_FakeLLM(), _CountingCoder(), all9, images, open_ended_eval=False,
                                       progress=False)

    out = str(tmp_path / "run")
    recs, summary = fewshot.run_resumable(out, settings, _FakeLLM(), _CountingCoder(), first4, images,
                                          open_ended_eval=False, progress=False)
    fewshot.write_results(out, recs, {**summary, **settings})
    coder = _CountingCoder()
    recs, summary = fewshot.run_resumable(out, settings, _FakeLLM(), coder, all9, images, False, progress=False)
    assert summary["reused_episodes"] == 4 and recs == fresh and summary["accuracy"] == fresh_summary["accuracy"]
    new_images = {int(i) for e in all9[4:] for i in np.concatenate([e.support, e.query])}
    assert set(coder.seen) == new_images      # the reused episodes' images were not coded again
    fewshot.write_results(out, recs, {**summary, **settings})

    # Different settings reuse nothing; a stored record that disagrees with its episode is rescored.
    assert fewshot.stored_episodes(out, {**settings, "layers": 3}, all9, False) == {}
    assert fewshot.stored_episodes(out, {**settings, "tokenizer_digest": "b2"}, all9, False) == {}   # retrained
    assert len(fewshot.stored_episodes(out, settings, all9, True)) == 0       # no open-ended answers stored
    lines = open(f"{out}/results.jsonl").read().splitlines()
    import json
    bad = json.loads(lines[0])
    bad["label"] = "not-a-class"
    open(f"{out}/results.jsonl", "w").write("\n".join([json.dumps(bad)] + lines[1:]) + "\n")
    assert sorted(fewshot.stored_episodes(out, settings, all9, False)) == list(range(1, 9))


def _blank_episodes(classes: int, per_class: int, n_episodes: int, seed: int):
    """Blank 2 x 2 images of `classes` classes and 2-way 1-shot episodes over them, classes named c<i>."""
    labels = np.repeat(np.arange(classes), per_class)
    eps = episodes_mod.sample(labels, ways=2, shots=1, queries=1, n_episodes=n_episodes, seed=seed)
    for e in eps:
        e.class_names = [f"c{int(c)}" for c in e.classes]
    return np.zeros((len(labels), 2, 2), np.uint8), eps


def test_killed_run_resumes_from_its_partial_file(tmp_path):
    images, eps = _blank_episodes(classes=5, per_class=4, n_episodes=6, seed=3)
    settings = {"method": "random", "label": None, "layers": 1, "tokenizer": None, "llm": "x", "seed": 0,
                "lens_captions": None}
    out = str(tmp_path / "run")

    class Killed(Exception):
        pass

    class DyingLLM(_FakeLLM):
        calls = 0

        def score_batch(self, *a):
            DyingLLM.calls += 1
            if DyingLLM.calls == 4:
                raise Killed
            return super().score_batch(*a)

    with pytest.raises(Killed):
        fewshot.run_resumable(out, settings, DyingLLM(), _CountingCoder(), eps, images, False, progress=False)
    assert sorted(fewshot.stored_episodes(out, settings, eps, False)) == [0, 1, 2]
    recs, summary = fewshot.run_resumable(out, settings, _FakeLLM(), _CountingCoder(), eps, images, False,
                                          progress=False)
    fresh, _ = fewshot.run(_FakeLLM(), _CountingCoder(), eps, images, open_ended_eval=False, progress=False)
    assert summary["reused_episodes"] == 3 and recs == fresh


def test_checkpoint_digest_follows_the_weights(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, payload in ((a, b"weights-1"), (b, b"weights-1")):
        d.mkdir()
        (d / "params.safetensors").write_bytes(payload)
        (d / "vocab.json").write_text("[]")
    assert fewshot.checkpoint_digest(str(a)) == fewshot.checkpoint_digest(str(b))
    (b / "params.safetensors").write_bytes(b"weights-2")
    assert fewshot.checkpoint_digest(str(a)) != fewshot.checkpoint_digest(str(b))


class _BiasedLLM:
    """score_batch returns fixed label log-probs: `content_free` rows for the content-free query
    lines, `query` for any other line, plus `recency` for the label of the prefix's last support.
    Records the prefix of each call."""

    def __init__(self, query, content_free=(), recency=0.0):
        self.query, self.content_free, self.recency, self.prefixes = query, list(content_free), recency, []

    def encode(self, text):
        return [ord(c) for c in text]

    def score_batch(self, prefix, queries, cands):
        from llmsight.fewshot import content_free_queries, query_part

        self.prefixes.append(list(prefix))
        free = [query_part(self, q) for q in content_free_queries(self)]
        text = "".join(map(chr, prefix))
        last = text.rsplit("Output: ", 1)[1].strip()
        bonus = np.array([self.recency * (("".join(map(chr, c)).strip()) == last) for c in cands])
        return np.array([(self.content_free[free.index(q)] if q in free else self.query) + bonus for q in queries])


def test_contextual_calibration_divides_by_the_content_free_distribution():
    from llmsight.fewshot import CONTENT_FREE_INPUTS, label_log_probs

    # Raw: "cat" wins 0.6 : 0.4 (summed log-probs, unnormalised: each row is off by a constant).
    # After the supports the content-free inputs give cat 0.9, 0.7, 0.8: mean 0.8 : 0.2 (probabilities
    # averaged, not log-probs). Calibrated: 0.6/0.8 : 0.4/0.2 = 0.75 : 2, so "dog" wins, 3 : 8.
    assert len(CONTENT_FREE_INPUTS) == 3
    free = [np.log([0.9, 0.1]) - 1.0, np.log([0.7, 0.3]) - 5.0, np.log([0.8, 0.2])]
    llm = _BiasedLLM(np.log([0.6, 0.4]) - 3.0, free)
    supports = [([1], "dog"), ([2], "cat")]
    raw = label_log_probs(llm, supports, [[7], [8]], ["cat", "dog"], "none")
    np.testing.assert_allclose(raw, np.log([[0.6, 0.4]] * 2))
    calibrated = label_log_probs(llm, supports, [[7], [8]], ["cat", "dog"], "contextual")
    np.testing.assert_allclose(calibrated, np.log([[3 / 11, 8 / 11]] * 2))
    assert len(llm.prefixes) == 2 and llm.prefixes[0] == llm.prefixes[1]     # one call each, the given order
    with pytest.raises(ValueError, match="unknown calibration"):
        label_log_probs(llm, supports, [[7]], ["cat", "dog"], "platt")


def test_order_averaging_cancels_a_recency_bonus():
    from llmsight.fewshot import label_log_probs, support_orders

    assert support_orders(["cat", "dog"]) == [[0, 1], [1, 0]]
    assert support_orders(list("abcabc")) == [[0, 1, 2, 3, 4, 5], [5, 0, 1, 2, 3, 4], [4, 5, 0, 1, 2, 3]]
    assert support_orders(["x", "x", "y", "y"]) == [[0, 1, 2, 3], [2, 3, 0, 1]]    # each label last once
    # The query says dog 0.6 : cat 0.4; whichever label ends the prompt gains log 4 (its odds x4).
    llm = _BiasedLLM(np.log([0.4, 0.6]), recency=np.log(4.0))
    supports = [([1], "dog"), ([2], "cat")]
    raw = label_log_probs(llm, supports, [[7]], ["cat", "dog"], "none")
    np.testing.assert_allclose(raw, np.log([[1.6 / 2.2, 0.6 / 2.2]]))            # cat, by recency
    averaged = label_log_probs(llm, supports, [[7]], ["cat", "dog"], "orders")
    # The mean of log(1.6/2.2, 0.6/2.2) and log(0.4/2.8, 2.4/2.8), renormalised: 0.8 : 1.2.
    np.testing.assert_allclose(averaged, np.log([[0.4, 0.6]]))
    ends = ["".join(map(chr, p)).rsplit("Output: ", 1)[1].strip() for p in llm.prefixes[1:]]
    assert ends == ["cat", "dog"]                                                 # the given order, then reversed
    assert label_log_probs(llm, supports[::-1], [[7]], ["cat", "dog"], "orders") == pytest.approx(averaged)


def test_both_corrections_calibrate_each_order_then_average():
    from llmsight.fewshot import corrected_log_probs

    query = np.log([[[0.5, 0.5]], [[0.2, 0.8]]])                   # (O=2, Q=1, N=2)
    free = np.log([[[0.25, 0.75], [0.25, 0.75]], [[0.5, 0.5], [0.5, 0.5]]])   # (O, C=2, N)
    # Order 0: 0.5/0.25 : 0.5/0.75 = 3 : 1; order 1 is unbiased: 0.2 : 0.8 = 1 : 4.
    # Geometric mean of (3/4, 1/4) and (1/5, 4/5): sqrt(3/20) : sqrt(4/20) = sqrt(3) : 2.
    want = np.log(np.array([[np.sqrt(3), 2.0]]) / (np.sqrt(3) + 2))
    np.testing.assert_allclose(corrected_log_probs(query, free), want)
    np.testing.assert_allclose(corrected_log_probs(query[:1]), np.log([[0.5, 0.5]]))


def test_calibration_setting_is_part_of_a_stored_run(tmp_path):
    import json

    images, eps = _blank_episodes(classes=4, per_class=3, n_episodes=3, seed=0)
    settings = {"method": "random", "label": None, "layers": 1, "tokenizer": None, "tokenizer_digest": None,
                "llm": "x", "seed": 0, "lens_captions": None, "calibrate": "contextual"}
    out = str(tmp_path / "run")
    llm = _BiasedLLM(np.log([0.6, 0.4]), [np.log([0.8, 0.2])] * 3)
    recs, summary = fewshot.run_resumable(out, settings, llm, _CountingCoder(), eps, images, False, progress=False)
    assert summary["calibrate"] == "contextual"
    assert all(r["pred"] == eps[r["episode"]].class_names[1] for r in recs)      # the calibrated winner
    fewshot.write_results(out, recs, {**summary, **settings})
    assert len(fewshot.stored_episodes(out, settings, eps, False)) == 3
    for other in ("none", "orders", "both"):
        assert fewshot.stored_episodes(out, {**settings, "calibrate": other}, eps, False) == {}, other
    # A run stored before the setting existed was uncorrected: it stands for "none" (or no setting).
    old = {k: v for k, v in settings.items() if k != "calibrate"}
    with open(f"{out}/summary.json", "w") as f:
        json.dump(old, f)
    assert len(fewshot.stored_episodes(out, {**settings, "calibrate": "none"}, eps, False)) == 3
    assert len(fewshot.stored_episodes(out, old, eps, False)) == 3
    assert fewshot.stored_episodes(out, settings, eps, False) == {}
    with pytest.raises(ValueError, match="unknown calibration"):
        fewshot.run(llm, _CountingCoder(), eps, images, open_ended_eval=False, progress=False, calibrate="yes")
