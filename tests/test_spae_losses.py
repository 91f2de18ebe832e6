"""SPAE losses against closed forms / NumPy transcriptions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from spae import losses


def test_semantic_loss_matches_numpy():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(2, 3, 3, 8)).astype(np.float32)
    e = rng.normal(size=(2, 5, 8)).astype(np.float32)
    q = rng.random((2, 5)).astype(np.float32)
    q /= q.sum(1, keepdims=True)
    T = 2.0
    got = float(losses.semantic_loss(t, e, q, T))
    ce = []
    for b in range(2):
        for i in range(3):
            for j in range(3):
                d = ((t[b, i, j][None] - e[b]) ** 2).sum(-1)
                logits = -d / T
                logp = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
                ce.append(-(q[b] * logp).sum())
    np.testing.assert_allclose(got, np.mean(ce), rtol=1e-5)


def test_semantic_loss_minimal_at_target_token():
    e = np.eye(4, dtype=np.float32)[None] * 3          # (1, 4, 4): four well separated tokens
    q = np.array([[1.0, 0, 0, 0]], np.float32)
    at = losses.semantic_loss(e[:, :1][:, None], e, q, 1.0)        # target sits on token 0
    off = losses.semantic_loss(e[:, 1:2][:, None], e, q, 1.0)      # target sits on token 1
    assert float(at) < 1e-3 < float(off)


def test_psnr_closed_form():
    x = jnp.zeros((2, 4, 4, 1))
    y = jnp.full((2, 4, 4, 1), 0.2)      # error 0.1 on the [0, 1] scale -> 20 dB
    np.testing.assert_allclose(float(losses.psnr(x, y)), 20.0, rtol=1e-5)


def test_gan_and_lecam_closed_forms():
    r, f = jnp.array([2.0, -1.0]), jnp.array([0.5, 1.0])
    sp = lambda v: np.log1p(np.exp(v))
    np.testing.assert_allclose(float(losses.gan_generator_loss(f)), np.mean(sp(-np.array([0.5, 1.0]))), rtol=1e-6)
    np.testing.assert_allclose(float(losses.gan_discriminator_loss(r, f)),
                               np.mean(sp(-np.array([2.0, -1.0]))) + np.mean(sp(np.array([0.5, 1.0]))), rtol=1e-6)
    # relu(real - ema_fake)^2 + relu(ema_real - fake)^2 with ema_real=0.3, ema_fake=0.2
    want = np.mean(np.maximum(np.array([2.0, -1.0]) - 0.2, 0) ** 2) + np.mean(np.maximum(0.3 - np.array([0.5, 1.0]), 0) ** 2)
    np.testing.assert_allclose(float(losses.lecam_loss(r, f, 0.3, 0.2)), want, rtol=1e-6)


def test_schedule_weight():
    w = lambda s, kind: float(losses.schedule_weight(s, 2.0, kind, warmup=10, total=110))
    assert w(5, "constant") == 2.0
    assert w(5, "warmup") == pytest.approx(1.0) and w(50, "warmup") == pytest.approx(2.0)
    assert w(10, "cosine") == pytest.approx(2.0) and w(60, "cosine") == pytest.approx(1.0) and w(110, "cosine") == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        losses.schedule_weight(0, 1.0, "nope")


def test_discriminator_and_perceptual_shapes():
    d = losses.Discriminator(16, 3, ch=8, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (3, 16, 16, 3))
    assert d(x).shape == (3,)
    feats = losses.FixedFeatures(3, widths=(8, 16))
    assert float(losses.perceptual_loss(feats, x, x)) == 0.0
    assert float(losses.perceptual_loss(feats, x, -x)) > 0.0
    # fixed: the same seed gives the same network
    f2 = losses.FixedFeatures(3, widths=(8, 16))
    np.testing.assert_array_equal(np.asarray(feats(x)[0]), np.asarray(f2(x)[0]))


def test_semantic_loss_negative_slot():
    e = np.eye(4, dtype=np.float32)[None] * 3                       # (1, 4, 4)
    q = np.array([[0.5, 0.5]], np.float32)
    t = e[:, 2:3][:, None]                                           # sits on token 2 (off-list)
    base = losses.semantic_loss(t, e[:, :2], q, 1.0)
    neg = e[:, 2][:, None, None]                                     # (1, 1, 1, 4)
    with_neg = losses.semantic_loss(t, e[:, :2], q, 1.0, neg, np.array([[[True]]]))
    masked = losses.semantic_loss(t, e[:, :2], q, 1.0, neg, np.array([[[False]]]))
    assert float(with_neg) > float(base) + 1.0                       # the off-list winner is penalised
    np.testing.assert_allclose(float(masked), float(base), rtol=1e-6)


def test_foreground_weight_marks_the_object_and_weights_the_loss():
    """A red square on a grey background: weight 1 + alpha on the square, 1 elsewhere; the
    weighted L2 equals the hand-computed weighted mean."""
    from spae.losses import foreground_weight, l2_loss

    x = np.full((2, 8, 8, 3), -0.2, np.float32)
    x[0, 2:5, 3:6] = [1.0, -1.0, -1.0]                   # 9 object pixels
    x[1, 0, 0] = [-0.15, -0.2, -0.2]                      # within the 0.1 tolerance: background
    w = np.asarray(foreground_weight(jnp.asarray(x), 4.0))
    want = np.ones((2, 8, 8, 1), np.float32)
    want[0, 2:5, 3:6] = 5.0
    np.testing.assert_array_equal(w, want)
    y = np.zeros_like(x)
    manual = np.mean(((x - y) ** 2) * want)
    np.testing.assert_allclose(float(l2_loss(jnp.asarray(x), jnp.asarray(y), jnp.asarray(w))), manual, rtol=1e-5)
    np.testing.assert_allclose(float(l2_loss(jnp.asarray(x), jnp.asarray(y))), np.mean((x - y) ** 2), rtol=1e-6)


def test_usage_entropy_loss_matches_numpy_and_closed_forms():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(2, 3, 3, 5)).astype(np.float32)
    cb = rng.normal(size=(11, 5)).astype(np.float32)
    with jax.default_matmul_precision("float32"):   # on GPU the default is TF32 (off by 1.5e-4 here)
        got = float(losses.usage_entropy_loss(jnp.asarray(t), jnp.asarray(cb), 0.7))
    d = ((t.reshape(-1, 1, 5) - cb[None]) ** 2).sum(-1)                 # (18, 11), direct differences
    q = np.exp(-d / 0.7 - (-d / 0.7).max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    h = lambda p: -(p * np.log(p)).sum(-1)
    assert got == pytest.approx(h(q).mean() - h(q.mean(0)), abs=1e-5)
    # Sharp assignments: every position on its own word -> -log N; every position on one word -> 0.
    eye = np.eye(6, dtype=np.float32) * 10.0
    spread = eye.reshape(1, 2, 3, 6)
    assert float(losses.usage_entropy_loss(jnp.asarray(spread), jnp.asarray(eye), 0.01)) == pytest.approx(-np.log(6), abs=1e-4)
    same = np.broadcast_to(eye[2], (1, 2, 3, 6))
    assert float(losses.usage_entropy_loss(jnp.asarray(same), jnp.asarray(eye), 0.01)) == pytest.approx(0.0, abs=1e-4)
    # Descending it alone spreads a crowd of targets over more words.
    words = np.eye(6, dtype=np.float32)
    crowd = (words[0] + rng.normal(scale=0.3, size=(6, 6))).astype(np.float32).reshape(1, 2, 3, 6)
    grad = jax.jit(jax.grad(lambda x: losses.usage_entropy_loss(x, jnp.asarray(words), 1.0)))
    x = jnp.asarray(crowd)
    for _ in range(100):
        x = x - 0.5 * grad(x)
    nearest = lambda x: len(set(np.argmin(((np.asarray(x).reshape(-1, 1, 6) - words[None]) ** 2).sum(-1), 1)))
    assert nearest(crowd) <= 2 and nearest(x) >= 5


def test_subsample_positions_keeps_a_strided_grid_at_a_random_offset():
    x = jnp.arange(2 * 8 * 8 * 3, dtype=jnp.float32).reshape(2, 8, 8, 3)
    assert losses.subsample_positions(x, 64, jax.random.key(0)) is x           # already fits
    seen = set()
    for i in range(40):
        got = np.asarray(losses.subsample_positions(x, 16, jax.random.key(i)))
        assert got.shape == (2, 4, 4, 3)                                        # stride 2
        oy, ox = divmod(int(got[0, 0, 0, 0]) // 3, 8)                           # where the subset starts
        want = np.asarray(x)[:, oy::2, ox::2]
        np.testing.assert_array_equal(got, want)
        seen.add((oy, ox))
    assert seen == {(0, 0), (0, 1), (1, 0), (1, 1)}                             # every offset is drawn
    assert losses.subsample_positions(x, 4, jax.random.key(0)).shape == (2, 2, 2, 3)     # stride 4
    with pytest.raises(ValueError, match="stride"):
        losses.subsample_positions(x, 9, jax.random.key(0))                     # stride 3 on 8x8
    with pytest.raises(ValueError, match="max_positions"):
        losses.subsample_positions(x, 0, jax.random.key(0))


def test_usage_entropy_loss_chunked_gradient_matches_autodiff():
    """The hand-written, row-chunked gradient equals autodiff of the plain (N, V) formula, for a
    chunk that does not divide N, one chunk per row and one chunk for all."""
    def plain(t, cb, temperature):
        t = t.reshape(-1, t.shape[-1])
        d = jnp.sum((t[:, None, :] - cb[None]) ** 2, -1)
        logq = jax.nn.log_softmax(-d / temperature, -1)
        q = jnp.exp(logq)
        mean_q = q.mean(0)
        return -jnp.mean(jnp.sum(q * logq, -1)) + jnp.sum(mean_q * jnp.log(mean_q))

    rng = np.random.default_rng(1)
    t = jnp.asarray(rng.normal(size=(2, 3, 4, 6)).astype(np.float32))      # N = 24 positions
    cb = jnp.asarray(rng.normal(size=(13, 6)).astype(np.float32))
    with jax.default_matmul_precision("float32"):
        want_val, want = jax.value_and_grad(plain, argnums=(0, 1))(t, cb, 0.8)
        for rows in (5, 1, 24, None):
            f = lambda t, cb: losses.usage_entropy_loss(t, cb, 0.8, row_chunk=rows)
            val, got = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(t, cb)
            assert float(val) == pytest.approx(float(want_val), abs=1e-5)
            np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want[0]), atol=1e-5, rtol=1e-4)
            np.testing.assert_allclose(np.asarray(got[1]), np.asarray(want[1]), atol=1e-5, rtol=1e-4)
