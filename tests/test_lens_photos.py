"""LENS on real photos: the ImageNet tagger (classes + WordNet hypernyms), the pipeline and `describe`."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backbones.vision import imagenet
from lens.answer import IN_CONTEXT
from lens.imagenet_tagger import ImageNetTagger
from visiondata import photos

ROOT = Path(__file__).resolve().parents[1]


def photo(name: str) -> str:
    return photos.paths()[photos.NAMES.index(name)]


class FakeBackbone:
    """Only what the tagger reads: labels and a config name."""
    labels = imagenet.class_names()

    class config:
        name = "fake"


def test_hypernym_scores_are_subtree_probabilities():
    names = imagenet.class_names()
    tabby, tiger, egyptian = (names.index(n) for n in ("tabby", "tiger cat", "Egyptian cat"))
    probs = np.full(1000, 0.05 / 997)
    probs[[tabby, tiger, egyptian]] = [0.5, 0.3, 0.15]
    tagger = ImageNetTagger(FakeBackbone(), top_k=3, threshold=0.05, hypernyms=3)
    tags = dict(tagger.tags_from_probabilities(probs[None])[0])
    assert list(tags)[:3] == ["tabby", "tiger cat", "Egyptian cat"]
    assert list(tags)[3:] == ["domestic cat", "cat", "feline"]
    for name in ("domestic cat", "cat", "feline"):   # every class under the ancestor, counted independently
        synset = next(s for s in imagenet.hypernym_ids(tabby) if imagenet.synset_name(s) == name)
        below = [i for i in range(1000) if synset in imagenet.ancestors(i)]
        assert tags[name] == pytest.approx(probs[below].sum())
    assert tags["domestic cat"] <= tags["cat"] <= tags["feline"] <= 1.0
    # a flat distribution keeps only the best class: nothing reaches the threshold
    flat = tagger.tags_from_probabilities(np.full((1, 1000), 1e-3))[0]
    assert len(flat) == 1


@pytest.fixture(scope="module")
def photo_lens(smollm2):
    from backbones import load_vision
    from lens.pipeline import Lens

    return Lens(smollm2, photo_tagger=ImageNetTagger(load_vision("efficientnet-lite0")))


def test_describe_names_what_is_in_real_photos(photo_lens):
    outs = photo_lens([photo("chelsea"), photo("coffee")], ["What is in this picture?"] * 2)
    cat, coffee = outs
    assert {"cat", "feline", "domestic cat"} <= set(cat["tags"])
    assert cat["tags"][0] in ("tiger cat", "tabby", "Egyptian cat")
    assert coffee["tags"][0] == "espresso" and "coffee" in coffee["tags"]
    assert set(cat["sources"]["tags"]) == {"imagenet:efficientnet-lite0"}
    assert cat["sources"]["captions"] is None and cat["attributes"] == cat["captions"] == []
    assert cat["prompt"].startswith(IN_CONTEXT + "Tags:\n-" + cat["tags"][0])
    assert "cat" in cat["answer"] and "espresso" in coffee["answer"]
    # the answer is one of the candidates the evidence gave, never a preamble
    assert cat["answer"] in [t.lower() for t in cat["tags"]]


def test_all_modules_run_beside_and_say_which_is_which(smollm2):
    from lens.pipeline import Lens

    lens = Lens.load(llm=smollm2, vision="efficientnet-lite0", num_captions=1)
    out = lens([photo("chelsea")])[0]
    sources = out["sources"]["tags"]
    assert sources[0] == "imagenet:efficientnet-lite0" and "clip:lit" in sources
    assert sources.index("clip:lit") > sources.count("imagenet:efficientnet-lite0") - 1
    # with `vision`, captions come from the captioner trained on real pictures over the same backbone
    assert out["sources"]["captions"] == "captioner on efficientnet-lite0" and len(out["captions"]) == 1
    assert lens.captioner.vision is lens.photo_tagger.backbone      # one compiled backbone, not two


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lens", "describe", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_cli_bad_inputs_get_one_line(tmp_path):
    Image.new("RGB", (1, 1), (255, 0, 0)).save(tmp_path / "dot.png")
    r = run_cli(str(tmp_path / "dot.png"))
    assert r.returncode == 2 and "at least 8 pixels" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(photo("coffee"), "--question", "  ")
    assert r.returncode == 2 and "--question is empty" in r.stderr
    r = run_cli(photo("coffee"), "--vision", "none")
    assert r.returncode == 2 and "nothing to look at" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flags, says", [
    (["--captioner", "/missing/dir"], "only matter with --all-modules"),
    (["--num_captions", "3"], "only matter with --all-modules"),
    (["--all-modules", "--captioner", "/missing/dir"], "--captioner /missing/dir: no such directory"),
    (["--all-modules", "--clip", "/missing/clip"], "--clip /missing/clip: no such path"),
])
def test_cli_flags_are_never_silently_ignored(flags, says, capsys):
    # in-process: the check runs before any model loads, so a slip would show as a loaded model
    from lens.__main__ import main

    assert main(["describe", photo("coffee"), "--question", "What is this?", *flags]) == 2
    out = capsys.readouterr()
    assert out.out == "" and says in out.err and len(out.err.strip().splitlines()) == 1


def test_llmsight_describe_shares_the_flag_check():
    r = subprocess.run([sys.executable, "-m", "llmsight.cli", "describe", photo("coffee"), "--captioner", "/missing/dir"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and r.stdout == "" and "only matter with --all-modules" in r.stderr


def test_eval_head_nouns():
    from eval.lens_photos import head, nouns

    assert [head(t) for t in ("crane (wading bird)", "domestic cat", "cat", "motor scooter")] == \
        ["crane", "cat", "cat", "scooter"]
    assert nouns("A red kangaroo.") == {"kangaroo"} and nouns("Two cats on a mat") == {"cat", "mat"}
