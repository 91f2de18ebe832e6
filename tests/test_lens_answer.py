"""`lens.answer`: candidate answers from the evidence and their vision priors, against hand-computed values."""
import math

import pytest

from lens.answer import CLOSED_ANSWERS, IN_CONTEXT, candidates, noun_phrase, rank_answers
from lens.prompt import build_prompt


def test_noun_phrase_is_the_captions_subject():
    assert noun_phrase("A red kangaroo on the grass.") == "red kangaroo"
    assert noun_phrase("The sports car is parked") == "sports car"
    assert noun_phrase("two dogs") == "dogs"


def test_priors_class_hypernym_and_floor():
    out = {"tags": ["hen", "cock", "bird", "vertebrate"], "tag_scores": [0.5, 0.2, 0.9, 0.95],
           "attributes": ["brown"], "captions": ["A hen in a yard."]}
    counts = {"hen": 1, "cock": 1, "bird": 59, "vertebrate": 400}
    got = {t: (p, k) for t, p, k in candidates(out, counts.get)}
    assert got["hen"] == (pytest.approx(math.log(0.5)), "tag")
    assert got["bird"][0] == pytest.approx(math.log(0.9 / 59))        # subtree mass over the classes it names
    assert got["vertebrate"][0] == pytest.approx(math.log(0.95 / 400))
    floor = math.log(0.2)                                             # the weakest class
    assert got["brown"] == (pytest.approx(floor), "attribute") and got["yes"] == (pytest.approx(floor), "yes/no")
    assert got["3"][1] == "number" and set(CLOSED_ANSWERS) <= set(got)
    assert "hen" in got and "caption" not in {k for t, (p, k) in got.items() if t == "hen"}
    # without ImageNet tags every candidate stands on the same footing
    assert {p for _, p, _ in candidates(out)} == {0.0}


class ScriptedReader:
    """A reader whose log-probability of each candidate is given."""

    def __init__(self, logp):
        self.logp = logp

    def score(self, prompt, conts):
        return [self.logp.get(c.strip(), -20.0) for c in conts]


CANDS = [("briard", math.log(0.087), "tag"), ("dog", math.log(0.52 / 118), "tag"),
         ("brown", math.log(0.087), "attribute"), ("furry", math.log(0.087), "attribute"),
         ("yes", math.log(0.087), "yes/no")]


def test_reader_picks_the_kind_vision_picks_the_name():
    # the reader likes "dog" best (a frequent word): the kind is a name, and the classifier's class wins
    assert rank_answers(ScriptedReader({"briard": -7.9, "dog": -3.2, "brown": -6.0}), ["p"], [CANDS]) == ["briard"]
    # a colour question: the reader's best is an attribute, and among attributes (one prior) the reader decides
    assert rank_answers(ScriptedReader({"briard": -7.0, "dog": -6.0, "brown": -1.0, "furry": -4.0}),
                        ["p"], [CANDS]) == ["brown"]
    assert rank_answers(ScriptedReader({"dog": -6.0, "yes": -0.5}), ["p"], [CANDS]) == ["yes"]
    with pytest.raises(ValueError, match="no candidate"):
        rank_answers(ScriptedReader({}), ["p"], [[]])


def test_in_context_examples_are_lens_prompts_with_answers():
    blocks = IN_CONTEXT.strip().split("\n\n")
    assert len(blocks) == 2
    for b in blocks:
        assert b.startswith("Tags:\n-") and "\nShort Answer: " in b
    assert build_prompt(["x"], [], [], "q?").startswith("Tags:\n-x")
