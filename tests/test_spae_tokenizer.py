"""The shipped Fashion-MNIST tokenizer (spae/pretrained/fmnist32) on real Fashion-MNIST test images, offline."""

import os

import numpy as np
import pytest

from eval.spae_metrics import psnr_uint8
from spae.tokenizer import DEFAULT_CHECKPOINT

PRETRAINED = os.path.dirname(DEFAULT_CHECKPOINT)     # the shipped checkpoints, one folder each


@pytest.fixture(scope="module")
def llm():
    from backbones import load_llm

    return load_llm("smollm2-135m")


@pytest.fixture(scope="module")
def tok(llm):
    from spae import load_tokenizer

    return load_tokenizer("fmnist32", llm=llm)


@pytest.fixture(scope="module")
def images():
    from visiondata import fashion_mnist

    x, y = fashion_mnist.load("test")
    return x[:64], y[:64]


@pytest.fixture(scope="module")
def shipped(llm, images):
    """name -> (that shipped checkpoint's tokenizer, its pyramid of `images`), each built once."""
    from spae import load_tokenizer

    cache = {}

    def get(name):
        if name not in cache:
            t = load_tokenizer(os.path.join(PRETRAINED, name), llm=llm)
            cache[name] = (t, t.encode(images[0]))
        return cache[name]

    return get


@pytest.mark.fashion_mnist
def test_encode_gives_real_llm_ids_and_words(tok, llm, images):
    x, _ = images
    pyr = tok.encode(x)
    assert [l.shape for l in tok.llm_ids(pyr)] == [(64,) + s for s in tok.layer_shapes()]
    text = tok.to_text(pyr)
    for i in range(3):
        for layer_ids, layer_words in zip(pyr.llm_ids, text[i]):
            ids = layer_ids[i].reshape(-1).tolist()
            assert [llm.decode([t]).strip() for t in ids] == layer_words     # the LLM reads the same words
    assert all(w.isalpha() for layer in text[0] for w in layer)


@pytest.mark.fashion_mnist
def test_decode_by_depth_psnr_rises(tok, images):
    x, _ = images
    pyr = tok.encode(x)
    psnr = [float(psnr_uint8(tok.decode(pyr, layers=k), x).mean()) for k in range(1, len(pyr) + 1)]
    assert all(tok.decode(pyr, layers=k).shape == x.shape for k in (1, len(pyr)))
    assert psnr[-1] > psnr[0] + 2.0, psnr               # more layers, better pictures
    assert psnr[-1] > 14.0, psnr                        # shipped model: 16.2 dB on 2000 test images


@pytest.mark.fashion_mnist
def test_llm_ids_roundtrip_and_errors(tok, images, llm):
    x, _ = images
    pyr = tok.encode(x[:4])
    again = tok.decode(tok.llm_ids(pyr))                # from the ids alone (model-size output)
    assert again.shape == (4, 32, 32)
    special = llm.tokenizer.token_to_id("<|im_start|>")
    bad = [np.full_like(l, special) for l in tok.llm_ids(pyr)]
    with pytest.raises(ValueError, match="not in this tokenizer's codebook"):
        tok.decode(bad)
    with pytest.raises(TypeError, match="uint8"):
        tok.encode(x.astype(np.float32))


@pytest.mark.fashion_mnist
def test_top_layer_names_the_class(tok, images, llm):
    """Top-layer word names the class (or a synonym), out of a 21k-word codebook (chance ~0.1%).

    Default (relevance of the offline-aliases contrastive model, semantic weight 8): 61.0% on 2000
    test images (60.9% on these 64), must clear 40%; the plain offline model's targets gave 36.4%."""
    from eval.spae_eval import hit_rates
    from visiondata import fashion_mnist

    x, y = images
    assert hit_rates(tok, tok.encode(x), y, fashion_mnist.CLASS_NAMES)["top_layer"] > 0.4


@pytest.mark.fashion_mnist
def test_latent_stats_match_a_numpy_rebuild_of_the_pyramid(tok, images):
    """eval.spae_eval's quantization and spread errors against z and zhat rebuilt in NumPy from the token ids."""
    from eval.spae_eval import latent_stats
    from spae.data import to_model_images

    x, _ = images
    stats = latent_stats(tok, x, batch_size=24)            # batches of unequal size on purpose
    got = stats["quantization_error"]
    xm = to_model_images(x, tok.model.cfg.image_size, tok.model.cfg.channels, tok.prep)
    z = np.asarray(tok.model.encode(xm.astype(np.float32) / 127.5 - 1.0), np.float64)   # (B, g, g, d)
    table = np.asarray(tok.model.codes(), np.float64)
    pyr, running = tok.encode(x), np.zeros_like(z)
    for depth, (codes, s) in enumerate(zip(pyr.codes, tok.strides), start=1):
        running += np.repeat(np.repeat(table[codes], s, axis=1), s, axis=2)
        err = np.sum((running / depth - z) ** 2)
        assert got[depth - 1] == pytest.approx(err / np.sum(z ** 2), rel=1e-4)
        spread = np.sum((z - z.mean(axis=(0, 1, 2))) ** 2)              # around the mean latent
        assert stats["spread_error"][depth - 1] == pytest.approx(err / spread, rel=1e-4)
    assert 0 < got[-1] < got[0] < 2
    y = tok.model.decode(z.astype(np.float32))
    rec = np.clip(np.round((np.asarray(y) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    from spae.data import from_model_images
    assert stats["continuous_psnr"] == pytest.approx(psnr_uint8(from_model_images(rec, x.shape, tok.prep), x).mean(),
                                                     abs=1e-3)


@pytest.mark.fashion_mnist
def test_teacher_hit_rate_on_planted_targets(tok, tmp_path):
    """Targets that put a class word first score 1.0 at top-1; moved to the last slot, 0 at top-1, 1.0 in top-K."""
    from eval.spae_eval import teacher_hit_rate
    from spae.semantic import class_word_rows
    from visiondata import fashion_mnist

    _, y = fashion_mnist.load("train")
    words = tok.vocab.words
    first = np.array([class_word_rows(c, words, name_only=False)[0] for c in fashion_mnist.CLASS_NAMES])
    filler = words.index("the") if "the" in words else 0
    ids = np.full((len(y), 4), filler, np.int32)
    ids[:, 0] = first[y]
    path = tmp_path / "semantic_targets.npz"
    np.savez(path, ids=ids, prob=np.full(ids.shape, 0.25, np.float32))
    data = {"name": "fashion_mnist", "image_size": 32, "channels": 1, "prep": "pad"}
    assert teacher_hit_rate(str(path), data, words) == {"top1": 1.0, "topk": 1.0, "k": 4}
    np.savez(path, ids=ids[:, ::-1], prob=np.full(ids.shape, 0.25, np.float32))
    assert teacher_hit_rate(str(path), data, words) == {"top1": 0.0, "topk": 1.0, "k": 4}
    np.savez(path, ids=ids[:10], prob=np.full((10, 4), 0.25, np.float32))
    with pytest.raises(ValueError, match="targets for 10 images"):
        teacher_hit_rate(str(path), data, words)


def test_teacher_hit_rate_of_a_scenes_export(tok, tmp_path):
    """An exported scenes config does not say how many scenes trained it: the targets' rows do."""
    from eval.spae_eval import teacher_hit_rate
    from spae.semantic import class_word_rows
    from visiondata import scenes

    words = tok.vocab.words
    y = scenes.labels(30, seed=0, split="train")
    colour = [class_word_rows(scenes.CLASS_NAMES[c], words)[0] for c in y]      # "red circle" -> "red"
    wrong = [class_word_rows(scenes.CLASS_NAMES[(c + len(scenes.SHAPES)) % len(scenes.CLASS_NAMES)], words)[0]
             for c in y]                                                         # the next colour, same shape
    ids = np.array([colour, wrong], np.int32).T                                  # (30, 2)
    ids[::3] = ids[::3, ::-1]                                                    # a third with the wrong word first
    path = tmp_path / "semantic_targets.npz"
    np.savez(path, ids=ids, prob=np.full(ids.shape, 0.5, np.float32))
    data = {"name": "scenes", "image_size": 32, "channels": 3, "prep": "resize"}   # as in an export
    assert teacher_hit_rate(str(path), data, words) == {"top1": pytest.approx(20 / 30), "topk": 1.0, "k": 2}


@pytest.mark.slow   # a decoder grown for a finer layer: a research path, not the shipped tokenizers
@pytest.mark.fashion_mnist
def test_grown_decoder_starts_as_the_trained_decoder_it_grew_from(shipped, images, tmp_path):
    """model.decoder_growth above the checkpoint's: train.init_from loads every trained weight, the
    new residual blocks start as the identity (the grown model draws the shipped tokenizer's real
    test reconstructions bit for bit), they are trainable, and shrinking a decoder is refused; so is
    any change of the pyramid other than appending layers."""
    import dataclasses
    import json

    import jax.numpy as jnp
    from flax import nnx
    from safetensors.numpy import save_file

    from spae.data import to_model_images
    from spae.model import SPAE, ResBlock
    from spae.tokenizer import _flat_params
    from spae.training import init_weights

    name = os.path.join(PRETRAINED, "fmnist32")
    tok, pyr = shipped("fmnist32")
    table = np.asarray(tok.vocab.embeddings)
    grown_cfg = dataclasses.replace(tok.model.cfg, decoder_growth=2)
    grown = SPAE(table, grown_cfg, rngs=nnx.Rngs(1))
    init_weights(grown, name)
    assert sum(len(blocks) for blocks in grown.decoder.grown) == 2 * len(grown_cfg.ch_mult)

    x = jnp.asarray(to_model_images(images[0][:8], 32, 1, "pad"), jnp.float32) / 127.5 - 1.0   # (8, 32, 32, 1)
    ids = [jnp.asarray(c[:8]) for c in pyr.codes]
    top = tok.num_layers
    zhat = {k: tok.model.embed(ids, k) for k in (2, top)}                                  # (8, h, w, d)
    for z in zhat.values():
        np.testing.assert_array_equal(np.asarray(grown.decode(z)), np.asarray(tok.model.decode(z)))

    grads = nnx.grad(lambda d: jnp.mean((d(zhat[top]) - x) ** 2))(grown.decoder)
    g = np.asarray(grads["grown"][1][0]["conv2"]["kernel"][...])     # the zeroed last conv at 32x32
    assert np.isfinite(g).all() and np.abs(g).sum() > 0

    # A checkpoint of the grown model loads into one grown as far, and not into a smaller one.
    with open(os.path.join(name, "config.json")) as f:
        meta = json.load(f)
    meta["model"]["decoder_growth"] = 2
    (tmp_path / "config.json").write_text(json.dumps(meta))
    save_file(_flat_params(grown), str(tmp_path / "params.safetensors"))
    again = SPAE(table, grown_cfg, rngs=nnx.Rngs(3))
    init_weights(again, str(tmp_path))
    np.testing.assert_array_equal(np.asarray(again.decode(zhat[top])), np.asarray(grown.decode(zhat[top])))
    smaller = SPAE(table, dataclasses.replace(grown_cfg, decoder_growth=1), rngs=nnx.Rngs(2))
    with pytest.raises(ValueError, match="decoder_growth"):
        init_weights(smaller, str(tmp_path))
    with pytest.raises(ValueError, match="identity"):
        ResBlock(8, 16, dtype=jnp.float32, rngs=nnx.Rngs(0), identity=True)
    # Layers may be appended to the pyramid, not changed.
    strides = tuple(grown_cfg.strides)
    init_weights(SPAE(table, dataclasses.replace(grown_cfg, strides=strides + (1, 1)), rngs=nnx.Rngs(4)), name)
    with pytest.raises(ValueError, match="strides"):
        init_weights(SPAE(table, dataclasses.replace(grown_cfg, strides=strides[:-1] + (2,)), rngs=nnx.Rngs(5)), name)
