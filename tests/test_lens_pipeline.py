"""LENS end to end with real parts: the SmolLM2 tokenizer/LLM, the shipped captioner, real scenes.

Independent truth: the scene graphs (what is really in each image) and the documented prompt format.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from lens.caption_vocab import CaptionVocab
from lens.answer import IN_CONTEXT, candidates
from lens.prompt import build_prompt, clean_answer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def llm():
    from backbones import load_llm

    return load_llm("smollm2-135m")


@pytest.fixture(scope="module")
def scenes_test():
    from visiondata import scenes

    return scenes.generate(24, size=64, seed=1000, split="test")


@pytest.fixture(scope="module")
def captioner(llm):
    from lens.caption import Captioner

    return Captioner.load(decode=llm.decode)


class StubClip:
    """Relevance = 1 for vocabulary entries naming the main object's colour, else 0 (ground truth)."""

    image_size = 64

    def __init__(self, colours):
        self.colours = colours
        self.model = None

    def relevance(self, images, vocab, template):
        out = np.zeros((len(images), len(vocab)))
        for i, c in enumerate(self.colours[: len(images)]):
            out[i] = [1.0 if w.split(",")[0].split()[0] == c else 0.0 for w in vocab]
        return out


def test_real_tokenizer_round_trip(llm, scenes_test):
    caps = [c for cs in scenes_test.captions for c in cs]
    vocab = CaptionVocab.build(caps, llm.encode)
    rows = vocab.tokenize(caps, llm.encode, max_len=24)
    assert [vocab.detokenize(r, llm.decode) for r in rows] == caps
    # the compact ids map to real LLM tokens: decoding the LLM ids directly gives the caption
    assert llm.decode(vocab.to_llm(rows[0][1:])) == caps[0]


def caption_is_true(caption: str, graph: dict) -> bool:
    """Every colour, shape and object count the caption states is in the scene graph."""
    from visiondata import scenes

    words = caption.lower().replace(",", " ").replace(".", " ").split()
    objs = graph["objects"]
    colours, shapes = {o["color"] for o in objs}, {o["shape"] for o in objs}
    plural = {"crosses": "cross"} | {s + "s": s for s in scenes.SHAPES}
    for w in words:
        if w in scenes.COLORS and w not in colours:
            return False
        if plural.get(w, w) in scenes.SHAPES and plural.get(w, w) not in shapes:
            return False
    counts = ["one", "two", "three", "four"]
    for i, w in enumerate(words[:-1]):
        if w in counts and words[i + 1] in ("shape", "shapes"):
            return counts.index(w) + 1 == len(objs)
    return True


def test_shipped_captioner_states_only_true_facts(captioner, scenes_test):
    preds = captioner.caption(scenes_test.images)
    true = [caption_is_true(p, g) for p, g in zip(preds, scenes_test.graphs)]
    assert np.mean(true) >= 0.85, [p for p, t in zip(preds, true) if not t]
    assert all(any(c in p.lower() for c in ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink"))
               for p in preds)
    # the checker is not vacuous: another scene's caption is usually false here
    shifted = [caption_is_true(p, g) for p, g in zip(preds[1:], scenes_test.graphs[:-1])]
    assert np.mean(shifted) < 0.5
    samples = captioner.sample(scenes_test.images[:4], n=5, top_k=10)
    assert all(1 <= len(s) <= 5 and all(isinstance(t, str) and t for t in s) for s in samples)


def test_captions_decode_with_the_captioners_own_tokenizer_whatever_the_reader(scenes_test):
    """The shipped captioner writes SmolLM2 ids (its metadata: llm smollm2-135m). A reader of another LLM
    (stand-ins here, named as Gemma 3 or unnamed, with their own decode) must not detokenise them: the
    captions are the same text as with a SmolLM2 reader, whose decode is the one used then."""
    from backbones.llm.api import load_llm_tokenizer
    from lens.pipeline import Lens

    smol = load_llm_tokenizer("smollm2-135m")      # the tokenizer alone, not the weights

    class Reader:
        def __init__(self, name, decode):
            self.name, self._decode, self.calls = name, decode, 0

        def decode(self, ids):
            self.calls += 1
            return self._decode(ids)

    smollm2 = Reader("smollm2-135m", lambda ids: smol.decode([int(i) for i in ids], skip_special_tokens=False))
    others = [Reader("gemma3-270m", lambda ids: "<gemma:" + ",".join(map(str, ids)) + ">"),
              Reader(None, lambda ids: "wrong tokenizer")]
    seqs = None
    captions = {}
    for reader in [smollm2, *others]:
        cap = Lens.load(llm=reader, clip=None, captioner="scenes").captioner
        assert cap.llm_name == "smollm2-135m"
        if seqs is None:   # the ids once (each captioner compiles its own search); caption() detokenises so
            seqs, _ = cap.beam_ids(scenes_test.images[:3], beam=1)
        captions[reader.name] = [cap.vocab.detokenize(s, cap.decode_fn) for s in seqs]
    assert smollm2.calls == len(seqs) and all(r.calls == 0 for r in others)
    assert all(captions[r.name] == captions["smollm2-135m"] for r in others), captions
    assert all(any(c in p for c in ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink"))
               for p in captions["smollm2-135m"]), captions


def test_pipeline_with_stub_tagger(llm, captioner, scenes_test):
    from lens.pipeline import Lens
    from lens.tagging import VocabScorer

    colours = [g["objects"][g["main"]]["color"] for g in scenes_test.graphs[:3]]
    clip = StubClip(colours)
    tagger = VocabScorer(clip, ["red circle", "blue star", "green cross", "red", "blue", "green", "yellow",
                                "purple", "orange", "cyan", "pink"], top_k=2, threshold=0.0, scale=50.0)
    attributer = VocabScorer(clip, [f"{c}, bright colour" for c in colours] + ["gray, dull"], top_k=1, scale=50.0)
    lens = Lens(llm, captioner, tagger, attributer, num_captions=3)
    q = [f"What color is the {g['objects'][g['main']]['shape']}?" for g in scenes_test.graphs[:3]]
    outs = lens(scenes_test.images[:3], q)
    for o, c, question in zip(outs, colours, q):
        assert set(o) == {"tags", "tag_scores", "attributes", "captions", "sources", "prompt", "answer"}
        assert o["sources"] == {"tags": ["clip:StubClip"] * len(o["tags"]), "attributes": "clip:StubClip",
                                "captions": "toy captioner"}
        assert o["tags"][0].split()[0] == c and o["attributes"] == [f"{c}, bright colour"]
        assert 1 <= len(o["captions"]) <= 3
        # the fixed solved examples, then this image's LENS prompt
        assert o["prompt"] == IN_CONTEXT + build_prompt(o["tags"], o["attributes"], o["captions"], question)
        assert o["prompt"].startswith("Tags:\n-") and o["prompt"].endswith("\nShort Answer:")
        assert len(o["tag_scores"]) == len(o["tags"])
        assert o["answer"] in [text for text, _, _ in candidates(o)]
    # answer="rank": the candidate of the evidence that the reader scores best (no ImageNet tags:
    # every prior is equal, so the reader alone decides)
    cands = [text for text, _, _ in candidates(outs[0])]
    reader = llm.score(outs[0]["prompt"], [" " + t for t in cands])
    assert outs[0]["answer"] == cands[int(np.argmax(reader))]
    # answer="generate": the LLM's greedy short continuation of exactly that prompt
    lens.answer_mode = "generate"
    answer = lens.answer([outs[0]["prompt"]], outs[:1])[0]
    raw = llm.generate(outs[0]["prompt"], max_new_tokens=lens.answer_tokens, chat=False, temperature=0.0)
    assert answer == clean_answer(raw)
    lens.answer_mode = "rank"
    desc = lens(scenes_test.images[:1], None)[0]
    assert desc["answer"] is None and "Question:" not in desc["prompt"]
    assert Lens.text(desc).startswith("Tags: ")
    scores = lens.classify(scenes_test.images[:2], ["circle", "square", "triangle", "diamond", "star", "cross"])
    assert scores.shape == (2, 6) and np.isfinite(scores).all()
    with pytest.raises(ValueError, match="questions"):
        lens(scenes_test.images[:2], ["one question"])


def test_cli_rejects_bad_images(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    r = subprocess.run([sys.executable, "-m", "lens", "describe", str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "corrupt" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "lens", "describe", str(tmp_path / "nope.jpg")], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 2 and "no such image" in r.stderr
