"""The public wrapper: load_clip, preprocessing of any image size / grayscale, batched text encoding,
the on-disk vocabulary cache and relevance. A tiny random model (byte tokenizer) keeps it fast."""
import dataclasses
import os

import numpy as np
import pytest

from backbones import load_clip
from backbones.clip import loaders
from backbones.clip.config import get_config
from backbones.clip.model import init_clip
from backbones.clip.tokenizer import ByteTokenizer


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    cfg = get_config("tiny")
    cfg = cfg.replace(text=dataclasses.replace(cfg.text, vocab_size=259, context_length=24, eos_id=2))
    d = str(tmp_path_factory.mktemp("tinyclip"))
    loaders.save_own(init_clip(cfg, seed=3), d, ByteTokenizer(24).spec())
    return load_clip(d)


def test_images_of_any_size_and_grayscale(tiny_clip):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    e = tiny_clip.encode_image(x)
    assert e.shape == (5, tiny_clip.embed_dim) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    gray = rng.integers(0, 256, (2, 28, 28), dtype=np.uint8)
    np.testing.assert_allclose(tiny_clip.encode_image(gray), tiny_clip.encode_image(np.repeat(gray[..., None], 3, -1)),
                               atol=1e-6)
    np.testing.assert_allclose(tiny_clip.encode_image(gray[..., None]), tiny_clip.encode_image(gray), atol=1e-6)
    # A flat colour stays flat under any resize; a non-square image is center-cropped.
    flat = lambda s: np.full((1, s, s, 3), (200, 30, 90), np.uint8)
    np.testing.assert_allclose(tiny_clip.encode_image(flat(97)), tiny_clip.encode_image(flat(32)), atol=1e-5)
    wide = np.zeros((5, 32, 48, 3), np.uint8)
    wide[:, :, 8:40] = x
    np.testing.assert_allclose(tiny_clip.encode_image(wide), e, atol=1e-6)
    # Batching does not change results.
    np.testing.assert_allclose(tiny_clip.encode_image(x, batch_size=2), e, atol=1e-6)


def test_bad_images_say_what_to_do(tiny_clip):
    with pytest.raises(TypeError, match="uint8"):
        tiny_clip.encode_image(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        tiny_clip.encode_image(np.zeros((1, 32, 32, 4), np.uint8))


def test_text_batches_by_length_equal_full_context(tiny_clip):
    texts = ["a", "a red circle", "x" * 40, "two small blue squares above a star", "", "café"]
    full = np.asarray(tiny_clip.model.encode_text(tiny_clip.tokenize(texts)))
    np.testing.assert_allclose(tiny_clip.encode_text(texts), full, atol=1e-5)
    np.testing.assert_allclose(tiny_clip.encode_text(texts, batch_size=2), full, atol=1e-5)


def test_relevance_and_disk_cache(tiny_clip, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMSIGHT_CACHE", str(tmp_path))
    images = np.random.default_rng(1).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    vocab = ["dog", "cat", "red", "circle", "boot"]
    r = tiny_clip.relevance(images, vocab)
    want = tiny_clip.encode_image(images) @ tiny_clip.encode_text([f"a photo of {w}" for w in vocab]).T
    np.testing.assert_allclose(r, want, atol=1e-5)
    files = os.listdir(tmp_path / "clip-text")
    assert len(files) == 1 and files[0].startswith(tiny_clip.fingerprint[:20])

    def no_encoding(*a, **k):
        raise AssertionError("should have come from the cache")

    monkeypatch.setattr(tiny_clip, "encode_text", no_encoding)
    np.testing.assert_allclose(tiny_clip.relevance(images, vocab), r, atol=1e-6)
    with pytest.raises(AssertionError, match="cache"):  # another vocabulary is another key
        tiny_clip.relevance(images, vocab[:-1])
    with pytest.raises(ValueError, match="template"):
        tiny_clip.text_embeddings(vocab, template="no slot")


def test_text_cache_misses_after_a_change_of_weights_or_code(tiny_clip, tmp_path, monkeypatch):
    """A cached vocabulary is not reused by a model with other weights, nor after an edit to the code
    that encodes text (the key holds text_code_version); a stale file would hide a regression."""
    import inspect
    import shutil

    from backbones.clip import api, model, tokenizer

    monkeypatch.setenv("LLMSIGHT_CACHE", str(tmp_path / "cache"))
    vocab = ["dog", "cat", "red"]
    old = tiny_clip.text_embeddings(vocab)
    # Same config and tokenizer, other weights: another key, its own embeddings, not the stale ones.
    d = str(tmp_path / "other")
    loaders.save_own(init_clip(tiny_clip.config, seed=4), d, ByteTokenizer(24).spec())
    other = load_clip(d)
    assert other.text_cache_path(vocab) != tiny_clip.text_cache_path(vocab)
    new = other.text_embeddings(vocab)
    np.testing.assert_allclose(new, other.encode_text(vocab), atol=1e-6)
    assert np.abs(new - old).max() > 1e-3
    assert len(os.listdir(tmp_path / "cache" / "clip-text")) == 2
    # Another code version (as after an edit of the text tower): the stale entry is not read.
    stale = tiny_clip.text_cache_path(vocab)
    assert os.path.exists(stale)
    monkeypatch.setattr(api, "text_code_version", lambda: "edited" * 4)
    assert tiny_clip.text_cache_path(vocab) != stale
    monkeypatch.setattr(tiny_clip, "encode_text", lambda texts, batch_size=512: np.zeros((len(texts), 4)))
    np.testing.assert_array_equal(tiny_clip.text_embeddings(vocab), 0)          # recomputed, not the file
    monkeypatch.undo()
    # The code version covers the code that encodes text, and any edit of those files changes it.
    files = {os.path.join(os.path.dirname(api.__file__), f) for f in api.TEXT_CODE_FILES}
    for obj in (model.TextTower, model.Encoder, model.Block, model.Attention, model.MLP, model.CLIP.encode_text,
                tokenizer.ByteTokenizer, tokenizer.llm_tokenizer, api.ClipModel.encode_text, api._bucket):
        assert inspect.getsourcefile(obj) in files, obj
    copies = []
    for f in sorted(files):
        copies.append(str(tmp_path / os.path.basename(f)))
        shutil.copy(f, copies[-1])
    ordered = [str(tmp_path / f) for f in api.TEXT_CODE_FILES]
    assert api.text_code_version(ordered) == api.text_code_version()
    with open(tmp_path / "model.py", "a") as f:
        f.write("\n# an edit\n")
    assert api.text_code_version(ordered) != api.text_code_version()


def test_architecture_names_without_weights_explain():
    with pytest.raises(FileNotFoundError, match="no weights for it ship offline"):
        load_clip("ViT-B/32")
    with pytest.raises(FileNotFoundError, match="neither"):
        load_clip("/nonexistent/clip")
