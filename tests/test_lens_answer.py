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
    got = dict(candidates(out, counts.get))
    assert got["hen"] == pytest.approx(math.log(0.5))
    assert got["bird"] == pytest.approx(math.log(0.9 / 59))           # subtree mass over the classes it names
    assert got["vertebrate"] == pytest.approx(math.log(0.95 / 400))
    floor = math.log(0.2)                                             # the weakest class
    assert got["brown"] == pytest.approx(floor) and got["yes"] == pytest.approx(floor)
    assert "hen" in got and set(CLOSED_ANSWERS) <= set(got)
    # without ImageNet tags every candidate stands on the same footing
    assert set(dict(candidates(out)).values()) == {0.0}


class ScriptedReader:
    """A reader whose log-probability of each candidate is given: rank_answers must add the prior."""

    def __init__(self, logp):
        self.logp = logp

    def score(self, prompt, conts):
        return [self.logp.get(c.strip(), -20.0) for c in conts]


def test_rank_adds_reader_and_vision():
    cands = [("hen", math.log(0.5)), ("bird", math.log(0.9 / 59)), ("red", math.log(0.2))]
    # the reader prefers "bird" by 2 nats; the prior prefers "hen" by log(0.5 * 59 / 0.9) = 3.49 nats
    assert rank_answers(ScriptedReader({"hen": -3.0, "bird": -1.0, "red": -9.0}), ["p"], [cands]) == ["hen"]
    # a question the reader answers with a colour: 7 nats of reader beat 0.92 of prior
    assert rank_answers(ScriptedReader({"hen": -8.0, "bird": -9.0, "red": -1.0}), ["p"], [cands]) == ["red"]
    with pytest.raises(ValueError, match="no candidate"):
        rank_answers(ScriptedReader({}), ["p"], [[]])


def test_in_context_examples_are_lens_prompts_with_answers():
    blocks = IN_CONTEXT.strip().split("\n\n")
    assert len(blocks) == 2
    for b in blocks:
        assert b.startswith("Tags:\n-") and "\nShort Answer: " in b
    assert build_prompt(["x"], [], [], "q?").startswith("Tags:\n-x")
