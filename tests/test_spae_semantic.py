"""SPAE semantic targets: CLIP relevance top-K (against a direct computation), restriction to the
contrastive model's training words, and that the targets name real Fashion-MNIST classes."""

import os

import numpy as np
import pytest

from spae import semantic
from spae.codebook import Vocabulary
from train import trainlib
from train import spae as spae_train

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train/configs/spae_fmnist32.py")
WORDS = ["coat", "dress", "bag", "boot", "shirt", "pants", "zebra", "piano", "volcano", "circle", "red"]


@pytest.fixture(scope="module")
def clip():
    """The config's relevance teacher (the offline model trained with everyday class names too)."""
    from backbones import load_clip

    return load_clip(trainlib.load_config(CONFIG).loss.clip)


@pytest.fixture(scope="module")
def fmnist():
    from visiondata import fashion_mnist

    x, y = fashion_mnist.load("test")
    return x[:300], y[:300], list(fashion_mnist.CLASS_NAMES)


@pytest.mark.fashion_mnist
def test_relevance_topk_equals_a_direct_computation(clip, fmnist):
    images = fmnist[0][:20]
    text = semantic.token_text_embeddings(clip, WORDS)
    ids, prob = semantic.relevance_topk(clip, images, text, k=4, tau=0.05, batch_size=8)
    img = clip.encode_image(np.repeat(images[..., None], 3, -1)).astype(np.float64)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt = clip.encode_text([semantic.DEFAULT_TEMPLATE.format(w) for w in WORDS]).astype(np.float64)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    rel = img @ txt.T                                                        # (20, 10)
    want = np.argsort(-rel, axis=1)[:, :4]
    np.testing.assert_array_equal(ids, want)
    r = np.take_along_axis(rel, want, 1)
    p = np.exp((r - r[:, :1]) / 0.05)
    np.testing.assert_allclose(prob, p / p.sum(1, keepdims=True), atol=1e-4)
    assert np.all(np.diff(prob, axis=1) <= 1e-7)                            # sorted, most relevant first


def test_offline_model_lists_its_training_words(clip):
    known = clip.known_words
    assert known is not None and {"coat", "dress", "bag", "circle", "red", "triangle"} <= known
    assert not {"zebra", "piano", "volcano"} & known


def _targets(clip, fmnist, words_mode, tmp_path, words=WORDS):
    cfg = trainlib.load_config(CONFIG,
                               ["loss.relevance=clip", "loss.semantic_tau=0.01", f"loss.relevance_words={words_mode}",
                                "loss.semantic_k=3"])
    rng = np.random.default_rng(0)
    vocab = Vocabulary(rng.normal(size=(len(words), 8)).astype(np.float32), np.arange(len(words)), list(words))
    x, y, names = fmnist
    return spae_train.semantic_targets(cfg, vocab, x, y, names, str(tmp_path))


@pytest.mark.fashion_mnist
def test_known_words_restrict_the_targets_and_they_name_the_class(clip, fmnist, tmp_path):
    ids, prob = _targets(clip, fmnist, "known", tmp_path / "known")
    chosen = {WORDS[i] for i in np.unique(ids)}
    assert chosen <= clip.known_words and not chosen & {"zebra", "piano", "volcano"}
    # Behaviour on real images: the top target names coats, dresses, bags and trousers (the last by
    # its everyday name) far above chance (1 in 8 known words).
    _, y, names = fmnist
    for cls, word in (("coat", "coat"), ("dress", "dress"), ("bag", "bag"), ("trouser", "pants")):
        rows = ids[y == names.index(cls), 0]
        assert np.mean([WORDS[i] == word for i in rows]) > 0.6, cls
    ids_all, _ = _targets(clip, fmnist, "all", tmp_path / "all")
    assert {WORDS[i] for i in np.unique(ids_all)} - clip.known_words       # unknown words do appear


@pytest.mark.fashion_mnist
def test_known_words_need_a_model_that_lists_them(clip, fmnist, tmp_path, monkeypatch):
    monkeypatch.setattr(clip, "known_words", None)
    import backbones

    monkeypatch.setattr(backbones, "load_clip", lambda *a, **k: clip)
    with pytest.raises(ValueError, match="training words"):
        _targets(clip, fmnist, "known", tmp_path)
