"""The shipped offline contrastive model (backbones/clip/offline/) on real data: it loads with no
argument, is labelled as the stand-in, classifies real Fashion-MNIST test images by prompts, and ranks
colour words for synthetic scenes it never saw."""
import numpy as np
import pytest

from backbones.clip.api import OFFLINE_DIR


@pytest.fixture(scope="module")
def clip():
    import os

    if not os.path.exists(os.path.join(OFFLINE_DIR, "model.safetensors")):
        pytest.fail("the offline CLIP checkpoint is not shipped in backbones/clip/offline/")
    pytest.importorskip("backbones.llm.api")
    from backbones import load_clip

    return load_clip()


def test_labelled_as_offline_stand_in(clip):
    assert "stand-in" in clip.info.get("note", "")
    assert clip.image_size == 32


def test_fashion_mnist_prompt_classification(clip):
    from backbones.clip.evaluate import zero_shot_accuracy
    from visiondata import fashion_mnist

    x, y = fashion_mnist.load("test")
    acc = zero_shot_accuracy(clip, x[:1000], y[:1000], fashion_mnist.CLASS_NAMES)
    assert acc >= 0.80, acc  # the full test set gives the README figure (>= 85%)


def test_scene_colour_relevance(clip):
    """Single-object scenes at 64 px (resized inside): the main object's colour is the most relevant colour word."""
    from visiondata import scenes

    s = scenes.generate(60, size=64, seed=123, split="test")
    single = [i for i, g in enumerate(s.graphs) if len(g["objects"]) == 1][:20]
    colours = scenes.COLORS
    r = clip.relevance(s.images[single], [f"{c} shape" for c in colours], template="a {}")
    truth = [colours.index(s.graphs[i]["objects"][0]["color"]) for i in single]
    assert np.mean(np.argmax(r, 1) == truth) >= 0.7
