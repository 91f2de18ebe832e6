"""The NNX CLIP model: full-size configs by jax.eval_shape (no memory), tiny config for properties."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from backbones.clip.config import get_config
from backbones.clip.loaders import param_dict
from backbones.clip.model import abstract_clip, init_clip

# Parameter counts of the published OpenAI CLIP models (ViT towers + text tower + projections + scale).
PUBLISHED = {"ViT-B/32": 151_277_313, "ViT-B/16": 149_620_737, "ViT-L/14": 427_616_513}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_full_size_configs_by_eval_shape(name):
    cfg = get_config(name)
    model = abstract_clip(cfg)
    n = sum(int(np.prod(v.shape)) for v in param_dict(model).values())
    assert n == PUBLISHED[name]
    S, T = cfg.vision.image_size, cfg.text.context_length
    img = nnx.eval_shape(lambda m: m.encode_image(jnp.zeros((2, S, S, 3))), model)
    txt = nnx.eval_shape(lambda m: m.encode_text(jnp.zeros((5, T), jnp.int32)), model)
    assert img.shape == (2, cfg.embed_dim) and txt.shape == (5, cfg.embed_dim)


@pytest.fixture(scope="module")
def tiny():
    return init_clip(get_config("tiny"), seed=0)


def test_embeddings_are_unit_norm_and_logits_scaled(tiny):
    rng = np.random.default_rng(0)
    px = jnp.asarray(rng.normal(size=(3, 32, 32, 3)), jnp.float32)
    ids = jnp.asarray([[1, 5, 7, 511, 0, 0], [1, 9, 511, 0, 0, 0]])
    logits, aux = nnx.jit(lambda m, p, i: m(p, i))(tiny, px, ids)
    np.testing.assert_allclose(np.linalg.norm(aux["image"], axis=-1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(aux["text"], axis=-1), 1, atol=1e-5)
    np.testing.assert_allclose(logits, np.exp(float(tiny.logit_scale[...])) * aux["image"] @ aux["text"].T, rtol=1e-5)


def test_text_is_causal_and_pooled_at_the_end_token(tiny):
    """Tokens after the end token cannot change the embedding; tokens before it do."""
    a = jnp.asarray([[1, 5, 7, 511, 0, 0, 0, 0]])
    b = jnp.asarray([[1, 5, 7, 511, 9, 9, 33, 4]])
    c = jnp.asarray([[1, 5, 8, 511, 0, 0, 0, 0]])
    encode = nnx.jit(lambda m, x: m.encode_text(x))
    ea, eb, ec = (np.asarray(encode(tiny, x)) for x in (a, b, c))
    np.testing.assert_allclose(ea, eb, atol=1e-6)
    assert np.abs(ea - ec).max() > 1e-3


def test_gradients_reach_every_parameter(tiny):
    px = jnp.asarray(np.random.default_rng(1).normal(size=(2, 32, 32, 3)), jnp.float32)
    ids = jnp.asarray([[1, 5, 511, 0], [1, 6, 511, 0]])

    def loss(m):
        logits, _ = m(px, ids)
        return -jnp.mean(jnp.diag(jax.nn.log_softmax(logits)))

    grads = nnx.jit(nnx.grad(loss))(tiny)
    leaves = jax.tree.leaves(nnx.to_pure_dict(grads))
    assert all(np.isfinite(g).all() for g in leaves)
    assert sum(float(jnp.abs(g).sum() > 0) for g in leaves) >= len(leaves) - 1  # unused token rows aside


def test_bad_inputs_say_what_is_wrong(tiny):
    with pytest.raises(ValueError, match=r"expected pixels \(B, 32, 32, 3\)"):
        tiny.encode_image(jnp.zeros((1, 28, 28, 3)))
    with pytest.raises(ValueError, match="T<=16"):
        tiny.encode_text(jnp.zeros((1, 40), jnp.int32))
    with pytest.raises(KeyError, match="unknown CLIP architecture"):
        get_config("ViT-Q/99")
