"""eval.spae_naming: the matching rule against WordNet facts and hand-counted cases, the chance
controls against a hand calculation and a simulation, bad input as one error line, and one run on a
few real held-out images with the shipped default tokenizer."""

import json
import os

import numpy as np
import pytest

from eval import spae_naming
from eval.spae_naming import Codebook, name_targets, naming_figures


def kind(name: str, word: str):
    return name_targets(name).kind_of(word)


def test_a_name_matches_its_own_words_in_any_case_and_number():
    assert kind("red kangaroo", "kangaroo") == "name"
    assert kind("red kangaroo", " Kangaroos") == "name"        # leading space of a word token, case, plural
    assert kind("bunch of cherries", "cherry") == "name"       # -ies plural on the name's side
    assert kind("two wild boars", "boar") == "name"
    assert kind("man white hair", "men") == "name"             # irregular plural


def test_a_wordnet_synonym_matches():
    # WordNet 3.0 n02395406: hog, pig, grunter, squealer, Sus scrofa
    assert kind("pig", "hog") == "synonym"
    assert kind("tamworth pig", "squealer") == "synonym"
    assert kind("pig", "sus") is None and kind("pig", "scrofa") is None     # the Latin name counts not at all


def test_a_near_hypernym_matches_and_a_far_one_does_not():
    # WordNet 3.0: lion -> big cat -> feline -> carnivore -> placental; heron -> wading bird -> aquatic bird
    assert spae_naming.HYPERNYM_DEPTH == 2
    assert kind("lion", "feline") == "hypernym"
    assert kind("lion", "cat") == "hypernym"                   # the head of "big cat"
    assert kind("lion", "big") is None                         # a compound's modifier is not its name
    assert kind("lion", "carnivore") is None                   # third hypernym: beyond the depth
    assert kind("great blue heron", "bird") == "hypernym"      # the run's ending "heron" is the lemma
    # "teddy bear" is a lemma itself (teddy -> plaything), so bear's hypernyms are not borrowed
    assert kind("teddy bear", "plaything") == "hypernym"
    assert kind("teddy bear", "carnivore") is None


def test_non_matches():
    assert kind("lion", "zebra") is None
    assert kind("lion", "lie") is None and kind("lion", "lions") == "name"
    assert kind("red kangaroo", "red") is None                 # colours, sizes, numbers do not name
    assert kind("face with tears of joy", "with") is None
    assert kind("face with tears of joy", "the") is None
    assert name_targets("bunch of cherries").first_hit(["the", "bunch", "apple"]) is None


def test_a_hit_is_credited_to_the_closest_kind():
    assert name_targets("lion").first_hit(["feline", "Lion"]) == "name"
    assert name_targets("pig").first_hit(["swine", "hog"]) == "synonym"
    assert name_targets("pig").first_hit(["swine", "mud"]) == "hypernym"


CODEBOOK = ["lion", "feline", "hog", "kangaroo", "clock", "the", "pick", "zebra"]
NAMES = ["lion", "tiger", "pig", "red kangaroo", "frog"]
WORDS = [[["pick"], ["the", "lion"]],      # layer 2 names it
         [["feline"], ["the", "clock"]],   # top layer, by a hypernym (tiger -> big cat, feline)
         [["pick"], ["hog", "the"]],       # a synonym
         [["pick"], ["clock", "the"]],     # missed
         [["clock"], ["the", "the"]]]      # missed; no codebook word names a frog
# Codebook words naming each image, counted by hand: lion: lion, feline; tiger: feline; pig: hog;
# red kangaroo: kangaroo; frog: none.
NAMING_ROWS = [2, 1, 1, 1, 0]


def test_naming_figures_and_controls_on_a_hand_made_set():
    figures, hits = naming_figures(WORDS, [name_targets(n) for n in NAMES], Codebook(CODEBOOK))
    assert hits == ["name", "hypernym", "synonym", None, None]
    assert figures["naming_rate"] == pytest.approx(3 / 5)
    assert figures["top_layer_rate"] == pytest.approx(1 / 5)
    assert figures["hits_by_kind"] == {"name": 1, "synonym": 1, "hypernym": 1}
    assert figures["nameable"] == 4
    assert figures["distinct_top_words"] == 3                                  # pick, feline, clock
    # The constant word is the most frequent top word, "pick": it names none of them.
    assert (figures["constant_word"], figures["constant_rate"]) == ("pick", 0.0)
    # "feline" given to every image would name the lion and the tiger: the best constant, 2 of 5.
    assert (figures["best_single_word"], figures["best_single_word_rate"]) == ("feline", pytest.approx(2 / 5))
    v, n = len(CODEBOOK), 3
    assert figures["random_rate"] == pytest.approx(np.mean([1 - (1 - m / v) ** n for m in NAMING_ROWS]))
    assert figures["random_distinct_top_words"] == pytest.approx(v * (1 - (1 - 1 / v) ** 5))


def test_random_control_equals_drawing_random_codebook_words():
    """The expected rate against 20,000 draws of three random codebook words per image."""
    targets = [name_targets(n) for n in NAMES]
    figures, _ = naming_figures(WORDS, targets, Codebook(CODEBOOK))
    rng = np.random.default_rng(0)
    draws = rng.integers(len(CODEBOOK), size=(20000, len(NAMES), 3))
    simulated = np.mean([[t.first_hit([CODEBOOK[r] for r in rows]) is not None for t, rows in zip(targets, d)]
                         for d in draws])
    assert figures["random_rate"] == pytest.approx(simulated, abs=0.01)
    assert figures["random_rate"] > 0.2          # not trivially zero on this small codebook


@pytest.mark.parametrize("argv, message", [
    (["--layers", "0"], "error: --layers must be at least 1; got 0"),
    (["--limit", "-2"], "error: --limit must be at least 1; got -2"),
    (["--sets", "tuxpaint,nope"], "error: unknown --sets nope; choose from tuxpaint, emoji-google,"),
    (["--tokenizer", "{tmp}/no_such_checkpoint"], "error: no tokenizer named or at"),
    (["--out", "{tmp}/a_file"], "error: --out {tmp}/a_file is a file"),
])
def test_bad_input_is_one_error_line(argv, message, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    argv = [a.format(tmp=tmp_path) for a in argv]
    with pytest.raises(SystemExit) as e:
        spae_naming.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message.format(tmp=tmp_path)), err


@pytest.fixture(scope="module")
def default_tokenizer(smollm2):
    from spae import load_tokenizer
    from spae.tokenizer import DEFAULT_NAME

    return load_tokenizer(DEFAULT_NAME, llm=smollm2)


@pytest.mark.tuxpaint
@pytest.mark.emoji
def test_a_run_on_a_few_real_held_out_images(default_tokenizer, tmp_path):
    tok = default_tokenizer
    sets, skipped = spae_naming.load_sets(["tuxpaint", "emoji-google", "photos"], tok.model.cfg.image_size, limit=2)
    assert [s.key for s in sets] == ["tuxpaint", "emoji-google", "photos"] and not skipped
    res = spae_naming.evaluate(tok, sets, layers=2, batch_size=4)     # batches of 4 and 2 (padded to 4)
    md = spae_naming.write_report(res, str(tmp_path), "python -m eval.spae_naming --limit 2")
    with open(tmp_path / "naming.json") as f:
        saved = json.load(f)
    assert saved["command"] == "python -m eval.spae_naming --limit 2"
    assert open(tmp_path / "naming.md").read() == md and "--limit 2" in md

    # Each image's words are the tokenizer's own for that image, layers 1-2 only, in order across the
    # sets: encoded here as images 0-3 and 2-5 (no padding, the same compiled batch shape).
    images = np.concatenate([s.images for s in sets])
    text = tok.to_text(tok.encode(images[:4])) + tok.to_text(tok.encode(images[2:]))[2:]
    start = 0
    for s in sets:
        expected = [image[:2] for image in text[start:start + len(s.images)]]
        start += len(s.images)
        if s.names is None:
            assert s.title not in saved["images"]
        else:
            rows = saved["images"][s.title]
            assert [r["name"] for r in rows] == s.names
            assert [r["words"] for r in rows] == expected
            hit = [name_targets(n).first_hit([w for layer in ws for w in layer]) for n, ws in zip(s.names, expected)]
            assert [r["hit"] for r in rows] == hit
            assert saved["naming"][s.title]["naming_rate"] == pytest.approx(np.mean([h is not None for h in hit]))
        assert saved["distinct"][s.title]["distinct_top_words"] == len({w for image in expected for w in image[0]})
    assert saved["distinct"][spae_naming.ALL_HELD_OUT]["images"] == 6
    assert spae_naming.ALL_NAMED in saved["naming"] and os.path.getsize(tmp_path / "naming.md") > 0
