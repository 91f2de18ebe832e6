"""SPAE on real images: the ImageNet teacher on a closed case, bits-per-pixel accounting, codecs at an
equal rate, generation constrained to the codebook, the photo data mix, one step of spae_photos64."""

import math
import os

import numpy as np
import pytest

from eval import codecs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def vocab(smollm2):
    from spae.codebook import Vocabulary

    return Vocabulary.from_llm(smollm2, mode="words", min_len=3)


@pytest.fixture(scope="module")
def backbone():
    from backbones import load_vision

    return load_vision()


def test_imagenet_teacher_names_what_the_classifier_sees(vocab, backbone):
    """The coffee photo is espresso to the classifier (p = 0.95): 'coffee' (espresso's hypernym; the
    class name itself is not one word token) must lead its targets, above words of unrelated classes."""
    from spae import semantic
    from visiondata import photos

    x = photos.load(224)[[photos.NAMES.index("coffee"), photos.NAMES.index("motorcycle_left")]]
    ids, prob = semantic.imagenet_topk(backbone, x, vocab.words, k=16)
    words = [[vocab.words[i].lower() for i in row] for row in ids]
    assert words[0][0] in ("espresso", "coffee")
    assert "coffee" in words[0] and "motorcycle" not in words[0]
    assert "motorcycle" in words[1][:3] and "coffee" not in words[1]
    np.testing.assert_allclose(prob.sum(1), 1.0, rtol=1e-5)
    assert np.all(np.diff(prob, axis=1) <= 1e-7)            # sorted by relevance


def test_imagenet_word_matrix_weights():
    """Literal weights for the tabby class (281; lemmas "tabby", "tabby cat"; hypernyms domestic cat, cat,
    feline): its own lemma words weigh 1, whatever hypernym also holds them ("cat" is both); a hypernym
    word weighs its depth's weight over the number of classes it names: "domestic" names the 5
    domestic-cat classes (281-285), 0.5 / 5; "feline" 13 classes (those 5 and 8 big cats), 0.2 / 13."""
    from spae.semantic import imagenet_word_matrix

    words = ["tabby", "cat", "domestic", "feline", "motorcycle", "zebra", "animal"]
    for specificity, expected in ((True, {"tabby": 1.0, "cat": 1.0, "domestic": 0.1, "feline": 0.2 / 13}),
                                  (False, {"tabby": 1.0, "cat": 1.0, "domestic": 0.5, "feline": 0.2})):
        cols, m = imagenet_word_matrix(words, specificity=specificity)
        row = {words[v]: float(m[281, u]) for u, v in enumerate(cols)}
        for w, value in expected.items():
            assert row[w] == pytest.approx(value, rel=1e-6), (specificity, w)
        assert row.get("motorcycle", 0) == row.get("zebra", 0) == row.get("animal", 0) == 0
        assert int((m[:, list(cols).index(words.index("domestic"))] > 0).sum()) == 5


def test_teacher_names_the_tabby_not_the_animal(vocab, backbone):
    """Closed case: the scikit tabby photo's top target word is "tabby" or "cat", never a word shared by
    many classes such as "animal" or "feline"."""
    from spae import semantic
    from visiondata import photos

    x = photos.load(224)[[photos.NAMES.index("chelsea")]]
    ids, _ = semantic.imagenet_topk(backbone, x, vocab.words, k=8)
    words = [vocab.words[i].lower() for i in ids[0]]
    assert words[0] in ("tabby", "cat"), words
    assert words.index("cat") < min(words.index(w) if w in words else 99 for w in ("animal", "feline", "domestic"))


def test_bits_per_pixel_accounting():
    assert codecs.token_bits_per_pixel(85, 21163, 64 * 64) == pytest.approx(85 * math.log2(21163) / 4096)
    assert codecs.token_bits(1, 2) == 1.0 and codecs.token_bits(0, 5) == 0.0
    with pytest.raises(ValueError):
        codecs.token_bits_per_pixel(1, 2, 0)


def test_photos64_rate_stays_under_one_bit_per_pixel():
    """The shipped default's full pyramid (from its config's strides) costs at most 1 bpp at 64 x 64."""
    from train import trainlib

    cfg = trainlib.load_config(os.path.join(ROOT, "train/configs/spae_photos64.py"))
    grid = cfg.data.image_size // 2 ** (len(cfg.model.ch_mult) - 1)
    tokens = sum((grid // s) ** 2 for s in cfg.model.strides)
    assert tokens == 277
    assert codecs.token_bits_per_pixel(tokens, 21163, 64 * 64) <= 1.0


@pytest.mark.parametrize("codec", list(codecs.CODECS))
def test_codec_at_bytes_is_the_best_file_that_fits(codec):
    from visiondata import photos

    im = photos.load(64)[photos.NAMES.index("chelsea")]
    budget = 600
    e = codecs.codec_at_bytes(im, codec, budget)
    assert e is not None and e.num_bytes <= budget
    hi = codecs.CODECS[codec][2]
    if e.quality < hi:                       # the next quality up no longer fits
        assert codecs.encode(im, codec, e.quality + 1).num_bytes > budget
    assert e.decoded.shape == im.shape and e.decoded.dtype == np.uint8
    smallest = codecs.encode(im, codec, codecs.CODECS[codec][1]).num_bytes
    assert codecs.codec_at_bytes(im, codec, smallest - 1) is None
    dec, size, fits = codecs.codec_batch(np.stack([im, im]), codec, smallest - 1)
    assert not fits.any() and np.all(size == smallest)


def test_generation_is_constrained_to_allowed_ids(smollm2, vocab):
    prompt = smollm2.encode("The capital of France is")
    allowed = vocab.llm_ids[1000:1050]
    free = smollm2.generate_ids([prompt], 6, stop_at_eos=False)[0]
    got = smollm2.generate_ids([prompt, prompt[:3]], 6, stop_at_eos=False, allowed_ids=allowed)
    assert all(len(g) == 6 and set(g) <= set(int(a) for a in allowed) for g in got)
    assert not set(free) <= set(int(a) for a in allowed)    # without the constraint it writes other tokens
    one = smollm2.generate_ids([prompt], 3, stop_at_eos=False, allowed_ids=[int(allowed[7])])[0]
    assert one == [int(allowed[7])] * 3
    with pytest.raises(ValueError, match="allowed_ids"):
        smollm2.generate_ids([prompt], 2, allowed_ids=[-1])


def test_generation_prompt_round_trip():
    """Flattened pyramid ids go back to the same pyramid (layer order, row-major)."""
    from eval.spae_generate import flat_ids, unflatten
    from spae import load_tokenizer
    from visiondata import photos

    tok = load_tokenizer("scenes64")
    x = photos.load(64)[:3]
    pyr = tok.encode(x)
    ids = flat_ids(tok, pyr, 3)
    assert ids.shape == (3, 1 + 4 + 16)
    back = unflatten(tok, ids, 3, x.shape)
    for a, b in zip(back.codes, pyr.codes[:3]):
        np.testing.assert_array_equal(a, b)


def test_folder_split_is_by_file_and_stable(tmp_path):
    from visiondata import photo_mix, photos
    from visiondata.images import write_image

    for i, im in enumerate(photos.load(32)):
        write_image(str(tmp_path / ("a" if i % 2 else "b") / f"{i}.png"), im)
    train, test = photo_mix.folder_paths(tmp_path, "train"), photo_mix.folder_paths(tmp_path, "test")
    assert len(train) + len(test) == 21 and not set(train) & set(test)
    assert photo_mix.folder_paths(tmp_path, "train") == train
    x = photo_mix.training_images(size=16, n=10, parts=("folder",), folder=tmp_path, seed=1)
    assert x.shape == (10, 16, 16, 3) and x.dtype == np.uint8
    with pytest.raises(ValueError, match="folder"):
        photo_mix.training_images(size=16, n=4, parts=("folder",))


def test_wallpaper_names_and_split():
    from visiondata import wallpapers

    assert wallpapers._wallpaper_name("/r", "/r/Autumn/contents/images/1920x1080.jpg") == "Autumn"
    assert wallpapers._wallpaper_name("/r", "/r/abstract/Elephants_3840x2160.jpg") == "abstract/Elephants"
    splits = [wallpapers.split_of(f"w{i}") for i in range(400)]
    assert 0.12 < splits.count("test") / 400 < 0.28


@pytest.mark.slow        # the same step with the semantic path on top: tests/test_spae_semantic_path.py
def test_photos64_config_trains_one_step(tmp_path, smollm2):
    """One real step of the shipped config (ImageNet teacher, backbone perceptual loss, 7-layer pyramid)
    on four photos from a user folder."""
    from train import spae as spae_train
    from train import trainlib
    from spae.training import resolve_config
    from visiondata import photos
    from visiondata.images import write_image

    folder = tmp_path / "pics"
    for i in (0, 4, 6, 19):
        write_image(str(folder / f"{i}.png"), photos.load(64)[i])
    cfg = resolve_config(trainlib.load_config(os.path.join(ROOT, "train/configs/spae_photos64.py"),
                                              [f"data.folder={folder}", "data.parts=('folder',)", "data.num_train=4",
                                               "data.batch_size=2", "train.steps=1"]))
    last = spae_train.train(cfg, str(tmp_path / "run"), llm=smollm2, quiet=True)
    assert np.isfinite(last["loss"]) and last["perceptual"] > 0 and last["semantic_ce"] > 0
    with np.load(tmp_path / "run" / "semantic_targets.npz") as f:
        assert f["ids"].shape == (4, cfg.loss.semantic_k)
