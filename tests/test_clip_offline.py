"""The shipped offline contrastive models (backbones/clip/offline/, and offline_aliases/ trained with
everyday class names too) on real data: they load by name, are labelled as the stand-in, classify real
Fashion-MNIST test images by prompts, and rank colour words for synthetic scenes they never saw."""
import numpy as np
import pytest

from backbones.clip.api import OFFLINE_MODELS


@pytest.fixture(scope="module", params=["offline", "offline-aliases"])
def clip(request):
    import os

    directory = OFFLINE_MODELS[request.param][0]
    if not os.path.exists(os.path.join(directory, "model.safetensors")):
        pytest.fail(f"the offline CLIP checkpoint is not shipped in {directory}")
    pytest.importorskip("backbones.llm.api")
    from backbones import load_clip

    return load_clip(request.param)


def test_labelled_as_offline_stand_in(clip):
    assert "stand-in" in clip.info.get("note", "")
    assert clip.image_size == 32


@pytest.mark.fashion_mnist
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


@pytest.mark.fashion_mnist
def test_everyday_names_only_in_the_aliases_model(clip):
    """Trousers, sneakers and sandals have no whole-word SmolLM2 token for their class name; the
    aliases model, trained on prompts that also say "pants", "trainers", "heels", ranks those words
    (or "shoe" for sneakers) first for real test images of those classes (among the 10 everyday names); the plain model never
    saw them."""
    from visiondata import fashion_mnist

    everyday = ["pants", "trainers", "heels", "dress", "jacket", "bag", "boots", "shirt", "purse", "shoe"]
    if clip.info["path"] == OFFLINE_MODELS["offline"][0]:
        assert not set(everyday[:3]) & clip.known_words
        return
    assert set(everyday) <= clip.known_words
    x, y = fashion_mnist.load("test")
    r = clip.relevance(x[:1000], everyday)                                  # (1000, 10)
    for cls, words in (("trouser", ["pants"]), ("sneaker", ["trainers", "shoe"]), ("sandal", ["heels"])):
        top = np.argmax(r[y[:1000] == fashion_mnist.CLASS_NAMES.index(cls)], 1)
        assert np.mean(np.isin(top, [everyday.index(w) for w in words])) > 0.6, cls
