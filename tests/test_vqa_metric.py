"""The VQAv2 accuracy (`eval.vqa_metric`) on hand-computed cases, and `python -m eval.vqa`'s
benchmark-file mode on a fixture in the benchmark's JSON format."""
import json
import os
import subprocess
import sys

import pytest

from eval.vqa_metric import normalize_answer, score_results, vqa_accuracy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("m, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_accuracy_of_m_matching_humans_out_of_ten(m, expected):
    # Leaving out one of the m matching answers leaves m - 1 (m of the 10 subsets); leaving out
    # another leaves m (10 - m subsets): (m min((m-1)/3, 1) + (10-m) min(m/3, 1)) / 10, by hand:
    # m=1: 9/3/10 = 0.3; m=2: (2/3 + 16/3)/10 = 0.6; m=3: (2 + 7)/10 = 0.9; m=4: 1.
    humans = ["yes"] * m + ["no"] * (10 - m)
    assert vqa_accuracy("yes", humans) == pytest.approx(expected)


@pytest.mark.parametrize("raw, norm", [
    ("Two dogs.", "2 dogs"),                 # number word, trailing period dropped
    ("The Dont!", "don't"),                  # article, contraction restored, "!" next to nothing -> space
    ("3.5", "3.5"),                          # a decimal point stays
    ("1,000", "1000"),                       # digit-comma-digit: every mark is removed
    ("red, white", "red white"),             # ", " : the comma is removed
    ("black/white", "black white"),          # a mark between words becomes a space
    ("  an apple\n", "apple"),
    ("couldnt've", "couldn't've"),
    ("ten", "10"),
    ("none", "0"),
])
def test_normalisation(raw, norm):
    assert normalize_answer(raw) == norm


def test_prediction_is_normalised_and_humans_get_punctuation_when_not_unanimous():
    humans = ["two"] + ["2"] * 2 + ["2."] * 1 + ["three"] * 6
    # "Two" -> "2". Humans (not unanimous) lose the period: "2" x 3 (the "two" is not mapped for
    # humans: the reference maps number words of the prediction only). m = 3 -> 0.9.
    assert vqa_accuracy("Two", humans) == pytest.approx(0.9)
    # unanimous humans are taken as written: "2." never equals the normalised "2"
    assert vqa_accuracy("2", ["2."] * 10) == 0.0


FIXTURE_Q = [{"question_id": 1, "image_id": 7, "question": "How many dogs?"},
             {"question_id": 2, "image_id": 7, "question": "Is it sunny?"},
             {"question_id": 3, "image_id": 9, "question": "What color is the car?"}]
FIXTURE_A = [
    {"question_id": 1, "answer_type": "number", "question_type": "how many",
     "answers": [{"answer": a} for a in ["2"] * 2 + ["3"] * 8]},
    {"question_id": 2, "answer_type": "yes/no", "question_type": "is it",
     "answers": [{"answer": "yes"}] * 10},
    {"question_id": 3, "answer_type": "other", "question_type": "what color is the",
     "answers": [{"answer": a} for a in ["red"] * 1 + ["dark red"] * 9]},
]
FIXTURE_R = [{"question_id": 1, "answer": "two"}, {"question_id": 2, "answer": "Yes"},
             {"question_id": 3, "answer": "red"}]
# by hand: q1 "two" -> "2", m = 2 -> 60; q2 "yes", m = 10 -> 100; q3 "red", m = 1 -> 30.
FIXTURE_SCORES = {"overall": (60 + 100 + 30) / 3, "number": 60.0, "yes/no": 100.0, "other": 30.0}


def test_score_results_fixture():
    s = score_results(FIXTURE_Q, FIXTURE_A, FIXTURE_R)
    assert s["n"] == 3
    assert s["overall"] == pytest.approx(FIXTURE_SCORES["overall"])
    for t in ("number", "yes/no", "other"):
        assert s["per_answer_type"][t] == pytest.approx(FIXTURE_SCORES[t])
    assert s["per_question_type"]["how many"] == pytest.approx(60.0)
    assert s["per_question"] == pytest.approx({1: 60.0, 2: 100.0, 3: 30.0})


def test_missing_result_is_an_error_not_a_zero():
    with pytest.raises(ValueError, match="no result.*question_id 3"):
        score_results(FIXTURE_Q, FIXTURE_A, FIXTURE_R[:2])


def _write(tmp_path, name, obj):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return str(path)


def _run(*args):
    return subprocess.run([sys.executable, "-m", "eval.vqa", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": ROOT})


def test_cli_scores_saved_results_in_the_benchmark_format(tmp_path):
    q = _write(tmp_path, "q.json", {"questions": FIXTURE_Q})
    a = _write(tmp_path, "a.json", {"annotations": FIXTURE_A})
    r = _write(tmp_path, "r.json", FIXTURE_R)
    out = tmp_path / "out"
    p = _run("--questions", q, "--annotations", a, "--results", r, "--out", str(out))
    assert p.returncode == 0, p.stderr
    printed = json.loads(p.stdout.strip().splitlines()[-1])
    assert printed["overall"] == pytest.approx(FIXTURE_SCORES["overall"])
    saved = json.loads((out / "vqa_scores.json").read_text())
    assert saved["per_answer_type"]["other"] == pytest.approx(30.0)


def test_cli_bad_inputs_get_one_error_line(tmp_path):
    q = _write(tmp_path, "q.json", {"questions": FIXTURE_Q})
    p = _run("--questions", q, "--annotations", str(tmp_path / "missing.json"), "--results", q)
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith("error: annotations file")
    p = _run("--questions", q, "--annotations", q, "--images", str(tmp_path / "nowhere"))
    assert p.returncode == 2 and "is not a directory" in p.stderr
