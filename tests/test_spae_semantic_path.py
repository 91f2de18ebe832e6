"""The semantic path: SAQ with given top-layer targets against a NumPy reference, the head's training
targets and loss, the frozen backbone it reads (and never trains), one training step of the shipped
config and its exact resume."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _saq_reference(z, codebook, strides, given):
    """SAQ in NumPy, by brute force: layers 1..len(given) match the given targets, the rest the residual."""
    b, h, w, d = z.shape
    zhat = np.zeros_like(z)
    ids = []
    for l, s in enumerate(strides, start=1):
        o = s // 2
        if l <= len(given):
            t = given[l - 1]
        else:
            t = l * z[:, o::s, o::s] - (l - 1) * zhat[:, o::s, o::s]
        dist = ((t[..., None, :] - codebook) ** 2).sum(-1)                  # (B, h_l, w_l, V)
        k = dist.argmin(-1)
        e = np.repeat(np.repeat(codebook[k], s, 1), s, 2)
        zhat = ((l - 1) * zhat + e) / l
        ids.append(k)
    return ids, zhat


def test_saq_with_given_top_targets_matches_reference_and_stops_their_gradient():
    from spae.quantizer import saq_quantize_aux

    rng = np.random.default_rng(0)
    codebook = rng.normal(size=(50, 4)).astype(np.float32)
    z = rng.normal(size=(2, 4, 4, 4)).astype(np.float32)
    strides = (4, 2, 1, 1)
    given = [codebook[[3, 7]][:, None, None, :] + 0.01, rng.normal(size=(2, 2, 2, 4)).astype(np.float32)]
    ids, zhat, aux = saq_quantize_aux(jnp.asarray(z), jnp.asarray(codebook), strides,
                                      layer_targets=[jnp.asarray(g) for g in given])
    ref_ids, ref_zhat = _saq_reference(z, codebook, strides, given)
    for a, r in zip(ids, ref_ids):
        np.testing.assert_array_equal(np.asarray(a), r)
    np.testing.assert_array_equal(np.asarray(ids[0])[:, 0, 0], [3, 7])      # the given top words
    np.testing.assert_allclose(np.asarray(zhat[-1]), ref_zhat, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(aux["commit"][:2]), 0.0)
    assert float(aux["commit"][2]) > 0

    def top_two(zz):
        _, zh, _ = saq_quantize_aux(zz, jnp.asarray(codebook), strides, layer_targets=[jnp.asarray(g) for g in given])
        return jnp.sum(zh[0] ** 2) + jnp.sum(zh[1] ** 2)

    np.testing.assert_array_equal(np.asarray(jax.grad(top_two)(jnp.asarray(z))), 0.0)
    with pytest.raises(ValueError, match="expected"):
        saq_quantize_aux(jnp.asarray(z), jnp.asarray(codebook), strides, layer_targets=[jnp.zeros((2, 2, 2, 4))])


def test_rank_targets_and_vocabulary_ce():
    from spae.semantic_path import rank_targets, vocabulary_ce

    ids = np.array([[5, 9, 2, 7, 1, 4], [8, 3, 0, 0, 0, 0]])
    prob = np.array([[.5, .2, .1, .1, .06, .04], [.7, .3, 0, 0, 0, 0]])
    np.testing.assert_array_equal(rank_targets(ids, prob, 5), [[5, 9, 2, 7, 1], [8, 3, 8, 8, 8]])
    rng = np.random.default_rng(1)
    t, c = rng.normal(size=(3, 4)), rng.normal(size=(6, 4))
    rows = np.array([0, 5, 2])
    logits = -((t[:, None] - c[None]) ** 2).sum(-1) / 0.5
    ref = -np.mean([logits[i, r] - np.log(np.exp(logits[i]).sum()) for i, r in enumerate(rows)])
    got = vocabulary_ce(jnp.asarray(t, jnp.float32), jnp.asarray(c, jnp.float32), jnp.asarray(rows), 0.5)
    assert float(got) == pytest.approx(ref, rel=1e-5)


def test_semantic_head_fits_its_rows():
    """On separable features the fitted head's nearest codes are the rows it was taught."""
    from spae.semantic_path import SemanticHead, fit_semantic_head, head_accuracy

    rng = np.random.default_rng(0)
    codes = jnp.asarray(rng.normal(size=(40, 8)), jnp.float32)
    classes = rng.integers(0, 40, 256)
    centres = rng.normal(size=(40, 16)) * 3
    feats = (centres[classes] + rng.normal(size=(256, 16)) * 0.1).astype(np.float32)
    rows = np.stack([classes, (classes + 1) % 40], 1)                      # two positions
    head = SemanticHead(16, [(1, 1), (1, 1)], 8, 64, rngs=nnx.Rngs(0))
    before = head_accuracy(head, codes, feats, rows)
    fit_semantic_head(head, codes, feats[:, None], rows, steps=300, batch_size=64, lr=3e-3, progress=False)
    after = head_accuracy(head, codes, feats, rows)
    assert before.max() < 0.2 and after.min() > 0.9


class _CountingBackbone:
    """The real frozen backbone, counting the images it reads."""

    def __init__(self, backbone):
        self.backbone, self.seen = backbone, 0

    def class_logits(self, images):
        self.seen += len(images)
        return self.backbone.class_logits(images)


@pytest.fixture(scope="module")
def words_run(tmp_path_factory, smollm2):
    """The shipped photos64-words config, 2 steps on four photos, uninterrupted and killed after 1 + resumed."""
    from spae.training import resolve_config
    from train import spae as spae_train
    from train import trainlib
    from visiondata import photos
    from visiondata.images import write_image

    base = tmp_path_factory.mktemp("words")
    folder = base / "pics"
    for i in (0, 4, 6, 19):
        write_image(str(folder / f"{i}.png"), photos.load(96)[i])
    cfg = resolve_config(trainlib.load_config(
        os.path.join(ROOT, "train/configs/spae_photos64_words.py"),
        [f"data.folder={folder}", "data.parts=('folder',)", "data.num_train=4", "data.batch_size=2",
         "data.semantic_size=96", "train.steps=2", "train.ckpt_every=1", "train.log_every=1",
         "train.semantic_head_steps=3", "loss.semantic_path=1.0"]))
    full, resumed = str(base / "full"), str(base / "resumed")
    last = spae_train.train(cfg, full, llm=smollm2, quiet=True)
    spae_train.train(cfg, resumed, llm=smollm2, stop_after=1, quiet=True)
    spae_train.train(cfg, resumed, llm=smollm2, quiet=True)
    return cfg, full, resumed, last


def test_words_config_trains_and_resumes_exactly(words_run, smollm2):
    from spae.codebook import Vocabulary
    from spae.training import FROZEN, TrainState
    from train import trainlib

    cfg, full, resumed, last = words_run
    assert np.isfinite(last["loss"]) and last["semantic_path"] > 0 and last["perceptual"] > 0
    with np.load(os.path.join(full, "semantic_path_arrays.npz")) as f:
        assert f["sem_feat"].shape == (4, 2, 1280) and f["sem_rows"].shape == (4, 5)
    vocab = Vocabulary.from_llm(smollm2, mode="words", min_len=3)
    ts = TrainState(cfg, vocab.embeddings, rngs=nnx.Rngs(1), words=vocab.words)
    _, _, abstract = nnx.split(ts, FROZEN, ...)
    states = [trainlib.Checkpointer(d).restore(abstract) for d in (full, resumed)]
    assert states[0][0] == states[1][0] == 2
    la, lb = jax.tree.leaves(states[0][1]), jax.tree.leaves(states[1][1])
    assert len(la) == len(lb) > 10
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_semantic_path_reads_the_frozen_backbone_which_never_trains(words_run, smollm2):
    from backbones import load_vision
    from spae import load_tokenizer
    from spae.training import TrainState
    from visiondata import photos

    cfg, full, _, _ = words_run
    backbone = load_vision()
    before = jax.tree.map(np.array, nnx.state(backbone.model))
    spy = _CountingBackbone(backbone)
    tok = load_tokenizer(os.path.join(full, "export"), llm=smollm2, semantic_backbone=spy)
    x = photos.load(96)[[0, 4, 6]]
    pyr = tok.encode(x)
    assert spy.seen == 3
    # the top layers are exactly the head on the backbone's features of the images as given
    targets = tok.model.semantic_targets(jnp.asarray(backbone.class_logits(list(x))))
    from spae.quantizer import nearest_code

    want = nearest_code(targets[0].reshape(-1, targets[0].shape[-1]), tok.model.codes())
    np.testing.assert_array_equal(pyr.codes[0].reshape(-1), np.asarray(want))
    tok.decode(pyr)                                    # decoding reads no backbone
    assert spy.seen == 3
    # other features -> other top words: the words come from the backbone, not the pixel CNN
    feats = np.asarray(backbone.class_logits(list(x)))
    shuffled = tok.model.semantic_targets(jnp.asarray(feats[::-1]))
    np.testing.assert_allclose(np.asarray(shuffled[0])[::-1], np.asarray(targets[0]), rtol=1e-5, atol=1e-6)
    # the optimised model holds no backbone parameter (the perceptual loss's copy is FROZEN), and the
    # backbone is bit-identical after training
    from spae.training import FROZEN

    ts = TrainState(cfg, tok.vocab.embeddings, rngs=nnx.Rngs(0), words=tok.vocab.words)
    names = {"/".join(map(str, p)) for p, _ in nnx.state(ts.model, nnx.Param).flat_state()}
    assert any(n.startswith("semantic/") for n in names)
    assert not any("stem" in n for n in names)
    _, train_part = nnx.split(ts, FROZEN, ...)[1:]
    assert not any("stem" in "/".join(map(str, p)) for p, _ in train_part.flat_state())
    after = nnx.state(backbone.model)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_missing_or_wrong_backbone_is_a_clear_error(words_run, smollm2):
    from spae import load_tokenizer
    from visiondata import photos

    _, full, _, _ = words_run

    class Wrong:
        def class_logits(self, images):
            return np.zeros((len(images), 512), np.float32)

    tok = load_tokenizer(os.path.join(full, "export"), llm=smollm2, semantic_backbone=Wrong())
    with pytest.raises(ValueError, match="needs the backbone its config.json names"):
        tok.encode(photos.load(96)[:2])
    from spae.semantic_path import load_semantic_backbone

    with pytest.raises(ValueError, match="cannot be loaded"):
        load_semantic_backbone("/no/such/backbone.pth")
