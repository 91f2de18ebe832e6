"""SPAE with the real SmolLM2 codebook: word filter and id map, gradients reach the encoder,
the codebook is bit-identical after training steps and absent from the optimizer state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from spae.codebook import FrozenCodebook, Vocabulary, select_word_tokens
from spae.training import StepFn, TrainState, resolve_config
from train import trainlib


@pytest.fixture(scope="module")
def llm():
    from backbones import load_llm

    return load_llm("smollm2-135m")


@pytest.fixture(scope="module")
def vocab(llm):
    return Vocabulary.from_llm(llm, mode="words", min_len=3)


def test_word_vocabulary_maps_back_to_llm_ids(llm, vocab):
    strings = llm.token_strings
    assert 15000 < vocab.size < 30000 and vocab.dim == 576
    for row in [0, 1, vocab.size // 2, vocab.size - 1]:
        lid = int(vocab.llm_ids[row])
        assert strings[lid] == " " + vocab.words[row]                       # a space-led whole word
        np.testing.assert_array_equal(vocab.embeddings[row], llm.embeddings[lid])
        assert llm.decode([lid]).strip() == vocab.words[row]
    assert all(w.isalpha() and w.islower() and len(w) >= 3 for w in vocab.words)
    assert len(set(vocab.words)) == vocab.size
    special = [i for i, s in enumerate(strings) if s.startswith("<") and s.endswith(">")]
    assert not set(special) & set(vocab.llm_ids.tolist())
    for w in ["dress", "coat", "bag", "boot", "shirt", "red", "circle"]:
        assert w in vocab.words


def test_select_word_tokens_modes():
    toks = ["<|endoftext|>", "Ġthe", "the", "ĠThe", "Ġa", "Ġdog", "Ġdog", "12", "Ġcat!", "<0x0A>", "Ġbird"]
    assert select_word_tokens(toks, "words", min_len=3).tolist() == [1, 5, 10]
    assert select_word_tokens(toks, "alpha", min_len=3).tolist() == [1, 5, 10]        # "the"/"The" deduped
    assert select_word_tokens(toks, "alpha", min_len=3, dedupe=False).tolist() == [1, 2, 3, 5, 6, 10]
    assert select_word_tokens(toks, "words", min_len=3, max_size=2).tolist() == [1, 5]
    with pytest.raises(ValueError, match="mode"):
        select_word_tokens(toks, "nope")
    assert select_word_tokens(toks, "words", min_len=3, blocklist=["dog"]).tolist() == [1, 10]


def test_default_vocabulary_leaves_out_blocklisted_words(llm, vocab):
    """SmolLM2 has blocklisted words as whole-word tokens; none reaches the default codebook."""
    from spae.codebook import clean_token, default_blocklist

    blocked = default_blocklist()
    assert len(blocked) > 50 and "dress" not in blocked
    assert not blocked & set(vocab.words)
    every = select_word_tokens(llm.token_strings, "words", min_len=3, blocklist=())
    dropped = {clean_token(llm.token_strings[i]) for i in every} - set(vocab.words)
    assert dropped and dropped <= blocked             # exactly blocklisted words were removed


@pytest.fixture(scope="module")
def real_cfg():
    cfg = trainlib.load_config("train/configs/spae_tiny.py")
    cfg.vocab.source = "llm"
    cfg.loss.update(gan=0.0, perceptual=0.0, semantic=0.1, relevance="random")
    cfg.model.update(chunk_size=4096)
    return resolve_config(cfg)


@pytest.mark.slow   # the frozen table: test_codebook_bit_identical_after_steps; the encoder trains: test_spae_train
@pytest.mark.fashion_mnist
def test_gradients_reach_encoder_and_not_codebook(vocab, real_cfg):
    ts = TrainState(real_cfg, vocab.embeddings, rngs=nnx.Rngs(0))
    from visiondata import fashion_mnist
    from spae.data import to_model_images

    x = to_model_images(fashion_mnist.load("test")[0][:4], 16, 1)
    x = jnp.asarray(x, jnp.float32) / 127.5 - 1

    def loss(model):
        y, ids, zhat, aux = model(x)
        return jnp.mean((y - x) ** 2) + jnp.mean(aux["commit"])

    grads = nnx.grad(loss)(ts.model)
    enc = jax.tree.leaves(grads["encoder"])
    assert enc and all(np.isfinite(np.asarray(g)).all() for g in enc)
    assert sum(float(jnp.sum(jnp.abs(g))) for g in enc) > 0
    assert "codebook" not in grads                                  # frozen: no gradient slot
    opt_leaves = jax.tree.leaves(nnx.state(ts.opt))
    assert not any(l.shape == vocab.embeddings.shape for l in opt_leaves)   # not in Adam state


@pytest.mark.fashion_mnist
def test_codebook_bit_identical_after_steps(vocab, real_cfg, tmp_path):
    from train.spae import build_arrays

    ts = TrainState(real_cfg, vocab.embeddings, rngs=nnx.Rngs(0))
    assert isinstance(ts.model.codebook, FrozenCodebook) and not isinstance(ts.model.codebook, nnx.Param)
    before_enc = [np.asarray(a).copy() for a in jax.tree.leaves(nnx.state(ts.model.encoder, nnx.Param))]
    mesh = trainlib.make_mesh(1)
    fn = StepFn(ts, real_cfg, mesh)
    arrays = build_arrays(real_cfg, vocab, str(tmp_path))   # caches semantic_targets.npz there
    for i in range(3):
        m = fn(trainlib.shard_batch({k: v[8 * i:8 * i + 8] for k, v in arrays.items()}, mesh))
    assert np.isfinite(float(m["loss"]))
    state = fn.state
    np.testing.assert_array_equal(np.asarray(state.model.codebook[...]), vocab.embeddings)
    after_enc = [np.asarray(a) for a in jax.tree.leaves(nnx.state(state.model.encoder, nnx.Param))]
    assert any(not np.array_equal(a, b) for a, b in zip(before_enc, after_enc))   # the encoder trained


def test_sphere_codebooks_search_by_cosine_and_spread_the_nearest_words(vocab):
    """center_sphere: every row on one sphere, L2 nearest == cosine nearest of the centred rows
    (NumPy, float64), and on probes drawn like the embeddings more distinct words are nearest."""
    from spae.codebook import normalize_codebook
    from spae.quantizer import saq_quantize

    e = vocab.embeddings.astype(np.float64)
    np.testing.assert_array_equal(np.asarray(normalize_codebook(vocab.embeddings, "none")), vocab.embeddings)
    sph = np.asarray(normalize_codebook(vocab.embeddings, "center_sphere"), np.float64)
    centred = e - e.mean(0)
    radius = np.linalg.norm(centred, axis=1).mean()
    np.testing.assert_allclose(np.linalg.norm(sph, axis=1), radius, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(normalize_codebook(vocab.embeddings, "sphere")), axis=1),
                               np.linalg.norm(e, axis=1).mean(), rtol=1e-5)

    rng = np.random.default_rng(0)
    probes = e.mean(0) + rng.normal(size=(1, 40, 40, e.shape[1])) * e.std(0)    # (1, 40, 40, d)
    ids_raw = np.asarray(saq_quantize(jnp.asarray(probes, jnp.float32), jnp.asarray(vocab.embeddings), [1])[0][0])
    centred_probes = probes - e.mean(0)
    ids_sph = np.asarray(saq_quantize(jnp.asarray(centred_probes, jnp.float32), jnp.asarray(sph, jnp.float32), [1])[0][0])
    unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    cosine = (centred_probes.reshape(-1, e.shape[1]) @ unit.T).argmax(1)
    assert (ids_sph.reshape(-1) == cosine).mean() > 0.99          # float32 ties aside
    assert len(np.unique(ids_sph)) > 2 * len(np.unique(ids_raw))
    with pytest.raises(ValueError, match="codebook_norm"):
        normalize_codebook(vocab.embeddings, "cosine")


@pytest.mark.slow   # the frozen table: test_codebook_bit_identical_after_steps
def test_code_projection_starts_as_scaled_pca_and_trains_while_the_table_stays_frozen():
    """code_dim > 0: the search table is a learned map of the frozen rows, initialised to their
    top principal coordinates (checked against NumPy's SVD, up to each axis's sign) with the
    centred table's mean squared norm; gradients reach it and never the table."""
    from spae.model import SPAE, ModelConfig

    rng = np.random.default_rng(0)
    table = (rng.normal(size=(300, 24)) * np.linspace(3, 0.1, 24) + 2.0).astype(np.float32)   # anisotropic
    model = SPAE(table, ModelConfig(image_size=16, channels=1, ch=8, strides=(4, 2, 1), code_dim=6),
                 rngs=nnx.Rngs(0))
    codes = np.asarray(model.codes(), np.float64)                                   # (300, 6)
    centred = table.astype(np.float64) - table.mean(0)
    u, sv, vt = np.linalg.svd(centred, full_matrices=False)
    pca = centred @ vt[:6].T
    scale = np.sqrt((sv ** 2).sum() / (sv[:6] ** 2).sum())
    for j in range(6):
        sign = np.sign(codes[:, j] @ pca[:, j])
        np.testing.assert_allclose(codes[:, j], sign * scale * pca[:, j], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose((codes ** 2).sum(1).mean(), (centred ** 2).sum(1).mean(), rtol=1e-3)

    x = jnp.asarray(rng.uniform(-1, 1, size=(2, 16, 16, 1)), jnp.float32)

    def loss(m, codebook_weight):
        y, ids, zhat, aux = m(x)
        return jnp.mean((y - x) ** 2) + jnp.mean(aux["commit"]) + codebook_weight * jnp.mean(aux["codebook"])

    def proj_grad(weight):
        grads = nnx.grad(loss)(model, weight)
        assert "codebook" not in grads
        return np.asarray(grads["encoder"]["code_proj"]["linear"]["kernel"][...])

    np.testing.assert_array_equal(proj_grad(0.0), 0.0)     # straight-through: recon/commit never move it
    g = proj_grad(1.0)                                       # the codebook loss does
    assert np.isfinite(g).all() and np.abs(g).sum() > 0
    np.testing.assert_array_equal(np.asarray(model.codebook[...]), table)
    with pytest.raises(ValueError, match="code_dim"):
        SPAE(table, ModelConfig(image_size=16, channels=1, ch=8, strides=(4, 2, 1), code_dim=99), rngs=nnx.Rngs(0))


def test_patch_folds_pixel_blocks_into_channels_and_back():
    """model.patch = p: the encoder sees each p x p block's pixels as p*p*C channels (pixel (i, j) of the
    block at channel (i*p + j)*C + c) and the decoder's last conv writes them back, so the latent grid
    is S / (p 2^(len(ch_mult)-1)) and decode(encode(x)) has x's shape."""
    import jax.numpy as jnp
    from flax import nnx

    from spae.model import SPAE, ModelConfig, depth_to_space, space_to_depth

    x = jnp.arange(2 * 8 * 8 * 3, dtype=jnp.float32).reshape(2, 8, 8, 3)
    folded = space_to_depth(x, 4)
    assert folded.shape == (2, 2, 2, 48)
    np.testing.assert_array_equal(folded[1, 1, 0, (2 * 4 + 3) * 3 + 1], x[1, 4 + 2, 0 + 3, 1])
    np.testing.assert_array_equal(depth_to_space(folded, 4), x)
    cfg = ModelConfig(image_size=16, channels=3, ch=16, ch_mult=(1, 2), patch=2, strides=(4, 2, 1), code_dim=8)
    assert cfg.factor == 4 and cfg.grid == 4
    table = np.random.default_rng(0).normal(size=(64, 24)).astype(np.float32)
    model = SPAE(table, cfg, rngs=nnx.Rngs(0))
    y, ids, _, _ = model(jnp.zeros((2, 16, 16, 3)))
    assert y.shape == (2, 16, 16, 3) and [i.shape for i in ids] == [(2, 1, 1), (2, 2, 2), (2, 4, 4)]
    with pytest.raises(ValueError, match="patch"):
        SPAE(table, ModelConfig(image_size=16, channels=3, patch=0, code_dim=8), rngs=nnx.Rngs(0))
