"""SAQ quantizer vs an independent brute-force NumPy implementation of the rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spae.quantizer import embed_pyramid, nearest_code, saq_quantize, saq_quantize_aux


def brute_force_saq(z, codebook, strides):
    """Direct NumPy float64 transcription of the SAQ rule, position by position."""
    z = np.asarray(z, np.float64)
    cb = np.asarray(codebook, np.float64)
    b, h, w, d = z.shape
    zhat = np.zeros_like(z)
    all_ids, all_zhat = [], []
    for l, s in enumerate(strides, start=1):
        ids = np.zeros((b, h // s, w // s), np.int64)
        new = zhat * (l - 1)
        for bi in range(b):
            for i in range(h // s):
                for j in range(w // s):
                    p, q = i * s + s // 2, j * s + s // 2           # centre of the block
                    target = l * z[bi, p, q] - (l - 1) * zhat[bi, p, q]
                    dist = np.sum((cb - target) ** 2, axis=1)         # (V,)
                    k = int(np.argmin(dist))
                    ids[bi, i, j] = k
                    new[bi, i * s:(i + 1) * s, j * s:(j + 1) * s] += cb[k]
        zhat = new / l
        all_ids.append(ids)
        all_zhat.append(zhat)
    return all_ids, all_zhat


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2, 8, 8, 16)).astype(np.float32)
    codebook = rng.normal(size=(300, 16)).astype(np.float32)
    return z, codebook


STRIDES = [8, 4, 2, 1, 1]


def test_ids_match_brute_force(data):
    z, codebook = data
    ids, zhat = jax.jit(lambda z, c: saq_quantize(z, c, STRIDES, chunk_size=64))(z, codebook)
    ref_ids, ref_zhat = brute_force_saq(z, codebook, STRIDES)
    assert [i.shape for i in ids] == [(2, 1, 1), (2, 2, 2), (2, 4, 4), (2, 8, 8), (2, 8, 8)]
    for l, (a, r) in enumerate(zip(ids, ref_ids)):
        np.testing.assert_array_equal(np.asarray(a), r, err_msg=f"layer {l}")
    for a, r in zip(zhat, ref_zhat):
        assert a.shape == z.shape
        np.testing.assert_allclose(np.asarray(a), r, atol=1e-5)


def test_zhat_is_mean_of_chosen_embeddings(data):
    z, codebook = data
    ids, zhat = saq_quantize(z, codebook, STRIDES)
    # At position (p, q), layer l's token is the one of the block containing it.
    for l in range(1, len(STRIDES) + 1):
        chosen = [np.asarray(codebook)[np.asarray(ids[m])].repeat(s, 1).repeat(s, 2)
                  for m, s in enumerate(STRIDES[:l])]                 # each (B, h, w, d)
        np.testing.assert_allclose(np.asarray(zhat[l - 1]), np.mean(chosen, axis=0), atol=1e-5)
        np.testing.assert_allclose(np.asarray(embed_pyramid(ids, codebook, STRIDES, layers=l)),
                                   np.asarray(zhat[l - 1]), atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 7, 64, 299, 300, 1000])
def test_chunked_equals_unchunked(data, chunk):
    z, codebook = data
    x = z.reshape(-1, 16)
    full = nearest_code(x, codebook, chunk_size=None)
    np.testing.assert_array_equal(np.asarray(nearest_code(x, codebook, chunk_size=chunk)), np.asarray(full))
    ref = np.argmin(((x[:, None, :].astype(np.float64) - codebook[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(np.asarray(full), ref)


def test_ties_go_to_lowest_index_across_chunks():
    codebook = np.zeros((10, 4), np.float32)
    codebook[3] = codebook[8] = [1, 0, 0, 0]
    x = np.array([[1, 0, 0, 0]], np.float32)
    for chunk in [None, 2, 4, 5]:
        assert int(nearest_code(x, codebook, chunk_size=chunk)[0]) == 3


def test_both_chunk_reductions_pick_the_first_minimum():
    """The CPU form (minimum, then lowest index reaching it) and the argmin form agree with NumPy on
    scores with planted ties; nearest_code gives the same ids with either form and with the
    platform's plan (a cache-sized chunk on this CPU)."""
    from spae.quantizer import _best_by_argmin, _best_by_min_then_index

    rng = np.random.default_rng(3)
    s = rng.integers(0, 6, (64, 37)).astype(np.float32)          # small integers: many ties per row
    s[5] = np.inf                                                 # a row of padded codes only
    ref_idx = np.argmin(s, axis=1)
    for f in (_best_by_argmin, _best_by_min_then_index):
        val, idx = f(jnp.asarray(s))
        np.testing.assert_array_equal(np.asarray(idx), ref_idx)
        np.testing.assert_array_equal(np.asarray(val), s.min(axis=1))
        assert np.asarray(idx).dtype == np.int32
    x, cb = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(300, 8)).astype(np.float32)
    cb[200] = cb[17]                                              # duplicate rows in two chunks
    x[:5] = cb[17]
    picks = [np.asarray(nearest_code(x, cb, chunk_size=c, reduction=r))
             for c, r in ((64, "auto"), (64, "argmin"), (64, "min_index"), (None, "auto"), (7, "min_index"))]
    np.testing.assert_array_equal(picks[0], picks[1])
    for p in picks[2:]:
        np.testing.assert_array_equal(picks[0], p)
    assert (picks[0][:5] == 17).all()
    with pytest.raises(ValueError, match="reduction"):
        nearest_code(x, cb, reduction="max")
    _, idx = _best_by_min_then_index(jnp.full((2, 9), jnp.nan))
    np.testing.assert_array_equal(np.asarray(idx), [8, 8])        # no finite score: still a valid index


def test_search_plan_sizes_cpu_chunks_to_the_cache():
    from spae.quantizer import search_plan

    assert search_plan(1024, 49152, 8192, "auto", "cpu") == (2048, "min_index")
    assert search_plan(4776, 21163, 8192, "auto", "cpu") == (512, "min_index")
    assert search_plan(8, 21163, 8192, "auto", "cpu") == (8192, "min_index")       # never above chunk_size
    assert search_plan(10 ** 6, 21163, 8192, "auto", "cpu") == (256, "min_index")  # nor below 256
    assert search_plan(1024, 49152, None, "auto", "cpu") == (49152, "min_index")   # None: one block
    assert search_plan(1024, 49152, 8192, "auto", "gpu") == (8192, "argmin")
    assert search_plan(1024, 49152, 8192, "argmin", "cpu") == (8192, "argmin")


def test_no_vocab_sized_3d_tensor_in_search():
    """The compiled search never holds a (tokens x vocab x d) tensor."""
    x = jnp.zeros((256, 32))
    cb = jnp.zeros((4096, 32))
    hlo = jax.jit(lambda a, b: nearest_code(a, b, chunk_size=512)).lower(x, cb).as_text()
    assert "256x4096x32" not in hlo and "256x512x32" not in hlo


def test_straight_through_gradient_and_commit(data):
    z, codebook = data

    def loss(z):
        _, zhat, aux = saq_quantize_aux(z, codebook, STRIDES)
        return sum(jnp.sum(q * 1.0) for q in zhat) + 0.0 * aux["commit"].sum()

    g = jax.grad(loss)(jnp.asarray(z))
    np.testing.assert_allclose(np.asarray(g), len(STRIDES), rtol=1e-6)  # identity per layer
    commit_grad = jax.grad(lambda z: saq_quantize_aux(z, codebook, STRIDES)[2]["commit"].sum())(jnp.asarray(z))
    _, zhat = saq_quantize(z, codebook, STRIDES)
    expect = sum(2 * (z - np.asarray(q)) / z.size for q in zhat)
    np.testing.assert_allclose(np.asarray(commit_grad), expect, atol=1e-6)
    cb_grad = jax.grad(lambda c: sum(jnp.sum(q) for q in saq_quantize(z, c, STRIDES)[1]))(jnp.asarray(codebook))
    assert not np.any(np.asarray(cb_grad))


def test_rotation_straight_through_keeps_the_value_and_rotates_the_gradient(data):
    """Forward: the same ids and zhat as the identity estimator. Backward: per position, the
    gradient lambda * R^T g with R an explicit NumPy rotation taking z/|z| onto zhat/|zhat|."""
    z, codebook = data
    rng = np.random.default_rng(1)
    ids_i, zhat_i, _ = saq_quantize_aux(z, codebook, STRIDES)
    ids_r, zhat_r, _ = saq_quantize_aux(z, codebook, STRIDES, straight_through="rotation")
    for a, b in zip(ids_i, ids_r):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(zhat_i, zhat_r):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5)
    layer = len(STRIDES) - 1
    g = rng.normal(size=z.shape).astype(np.float32)
    got = jax.grad(lambda zz: jnp.sum(saq_quantize_aux(zz, codebook, STRIDES, straight_through="rotation")[1][layer]
                                      * g))(jnp.asarray(z))
    q = np.asarray(zhat_i[layer], np.float64).reshape(-1, z.shape[-1])
    zz, gg = np.asarray(z, np.float64).reshape(q.shape), np.asarray(g, np.float64).reshape(q.shape)
    want = []
    for zi, qi, gi in zip(zz, q, gg):
        u, v = zi / np.linalg.norm(zi), qi / np.linalg.norm(qi)
        w = (u + v) / np.linalg.norm(u + v)
        rot = np.eye(len(u)) - 2 * np.outer(w, w) + 2 * np.outer(v, u)
        np.testing.assert_allclose(rot @ u, v, atol=1e-9)                      # R carries z's direction onto zhat's
        want.append(np.linalg.norm(qi) / np.linalg.norm(zi) * rot.T @ gi)
    np.testing.assert_allclose(np.asarray(got).reshape(q.shape), np.array(want), rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="straight_through"):
        saq_quantize_aux(z, codebook, STRIDES, straight_through="gumbel")


def test_usage_counts_distinct_codes(data):
    z, codebook = data
    ids, _, aux = saq_quantize_aux(z, codebook, STRIDES)
    assert [int(u) for u in aux["usage"]] == [len(np.unique(np.asarray(i))) for i in ids]


def test_bad_inputs_raise_clear_errors(data):
    z, codebook = data
    with pytest.raises(ValueError, match="divide"):
        saq_quantize(z, codebook, [3, 1])
    with pytest.raises(ValueError, match="codebook"):
        saq_quantize(z, codebook[:, :8], [1])
    with pytest.raises(ValueError, match=r"\(B, h, w, d\)"):
        saq_quantize(z[0], codebook, [1])
