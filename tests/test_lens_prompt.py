"""LENS prompt format, answer cleaning, compact descriptions, and tag selection."""
import numpy as np
import pytest

from lens.build_vocab import parse_descriptors, tag_vocabulary
from lens.prompt import build_prompt, clean_answer, describe
from lens.tagging import select_top


def test_prompt_matches_lens_format():
    p = build_prompt(["red circle", "circle"], ["circle, round"], ["A red circle.", "A lone red circle."],
                     "What color is the circle?")
    assert p == ("Tags:\n-red circle\n-circle\nAttributes:\n-circle, round\nCaptions:\n-A red circle.\n"
                 "-A lone red circle.\nQuestion:What color is the circle?\nShort Answer:")
    assert build_prompt(["a"], [], ["b"]) == "Tags:\n-a\nAttributes:\nCaptions:\n-b"


def test_clean_answer_and_describe():
    assert clean_answer(" Red.\nQuestion: more") == "red"
    assert clean_answer('"yes" Question:x') == "yes"
    assert clean_answer("-Green\n-Red") == "green"
    out = {"tags": ["red circle", "circle"], "attributes": ["circle, round"], "captions": ["A red circle.", "One shape."]}
    assert describe(out) == "Tags: red circle, circle. Attributes: circle, round. Captions: A red circle | One shape."


def test_select_top_k_and_threshold():
    vocab = ["a", "b", "c", "d"]
    scores = np.array([[0.30, 0.29, 0.10, 0.0], [0.1, 0.1, 0.1, 0.5]])
    out = select_top(scores, vocab, k=3, threshold=0.05, scale=100.0)
    # row 0: softmax(100 * s) gives a 0.73, b 0.27, c ~1.5e-9 -> c is under the threshold
    assert [t for t, _ in out[0]] == ["a", "b"]
    np.testing.assert_allclose(out[0][0][1], 1 / (1 + np.exp(-1) + np.exp(-20) + np.exp(-30)), rtol=1e-6)
    assert [t for t, _ in out[1]] == ["d"]  # the best is always kept
    assert len(select_top(scores, vocab, k=2, threshold=0.0, scale=1.0)[1]) == 2
    with pytest.raises(ValueError, match="scores must be"):
        select_top(scores[:, :3], vocab, 2, 0.0, 1.0)


def test_parse_descriptors():
    text = "A zebra has:\n1. Black and white stripes\n2. A long mane, hooves.\n- It is a horse-like animal"
    d = parse_descriptors(text, "zebra")
    assert "black" in d and "white stripes" in d and "long mane" in d and "horse-like animal" in d
    assert all(1 <= len(x.split()) <= 8 for x in d)


def test_tag_vocabulary_has_dataset_concepts():
    tags = tag_vocabulary()
    assert len(tags) == len(set(tags)) > 300
    for w in ["red circle", "large blue star", "cross", "ankle boot", "t-shirt", "dog", "astronaut"]:
        assert w in tags
