"""Captioner model, KV-cache decoding, beam search and sampling, on tiny random configs.

Independent truths: the teacher-forced full forward (no cache) for the cache, brute-force
enumeration of all sequences for exact beam search, and overfitting two captions.
"""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lens import decoding
from lens.caption import Captioner
from lens.caption_vocab import BOS, EOS, PAD, UNK, CaptionVocab
from lens.captioner import CaptionerConfig, CaptionerModel, caption_loss

WORDS = "a red blue green circle square triangle left right of the above below".split()


class FakeTokenizer:
    """Word-level stand-in for the LLM tokenizer, with ids far from 0 like a real vocabulary."""

    def encode(self, text):
        return [40_000 + WORDS.index(w) for w in text.split()]

    def decode(self, ids):
        return " ".join(WORDS[i - 40_000] for i in ids)


TOK = FakeTokenizer()


def tiny(vocab_size, max_len=8, seed=0):
    cfg = CaptionerConfig(vocab_size=vocab_size, image_size=16, channels=(8, 16), width=32, heads=2,
                          encoder_layers=1, decoder_layers=2, max_len=max_len)
    return CaptionerModel(cfg, rngs=nnx.Rngs(seed))


def images(n, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, 16, 16, 3)).astype(np.uint8)


@nnx.jit
def _forward(model, images, tokens):
    return model(images, tokens)


def full_logits(model, img, seq):
    """Teacher-forced logits (T, V) for a prefix `seq`, padded to max_len (causal: padding is unseen)."""
    t = model.cfg.max_len
    toks = np.full((1, t), PAD, np.int32)
    toks[0, : len(seq)] = seq[:t]
    return np.array(_forward(model, jnp.asarray(img)[None], jnp.asarray(toks))[0])


def seq_logprob(model, img, seq):
    """Sum of log p(seq[t+1] | seq[:t+1]) by teacher forcing, up to and including EOS."""
    logp = np.asarray(jax.nn.log_softmax(full_logits(model, img, seq[:-1])))
    total = 0.0
    for t in range(len(seq) - 1):
        total += float(logp[t, seq[t + 1]])
        if seq[t + 1] == EOS:
            break
    return total


def test_shapes_and_full_size_config():
    m = tiny(20)
    x = jnp.asarray(images(3))
    assert m.encoder(x).shape == (3, 16, 32)  # (B, N=(16/4)**2, D)
    assert m(x, jnp.zeros((3, 5), jnp.int32)).shape == (3, 5, 20)
    cfg = CaptionerConfig(vocab_size=1200)
    abstract = nnx.eval_shape(lambda: CaptionerModel(cfg, rngs=nnx.Rngs(0)))
    out = nnx.eval_shape(lambda mm, a, t: mm(a, t), abstract, jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.uint8),
                         jax.ShapeDtypeStruct((2, cfg.max_len), jnp.int32))
    assert out.shape == (2, cfg.max_len, 1200)


def test_bad_image_shape_message():
    with pytest.raises(ValueError, match="resize"):
        tiny(20).encoder(jnp.zeros((1, 20, 20, 3), jnp.uint8))


def test_kv_cache_matches_full_forward():
    m = tiny(20, max_len=8)
    x = jnp.asarray(images(2))
    toks = jnp.asarray(np.random.RandomState(1).randint(4, 20, (2, 8)), jnp.int32)
    full = m(x, toks)  # (B, T, V)
    cross = m.cross_kv(m.encoder(x))
    cache = m.init_cache(2)
    for t in range(8):
        logits, cache = m.decode_step(toks[:, t], t, cache, cross)
        np.testing.assert_allclose(logits, full[:, t], atol=2e-5, rtol=1e-5)


def greedy_no_cache(model, img, max_len):
    seq = [BOS]
    for _ in range(max_len):
        logits = full_logits(model, img, seq)[len(seq) - 1]
        logits[[BOS, PAD, UNK]] = -np.inf
        seq.append(int(np.argmax(logits)))
        if seq[-1] == EOS:
            break
    return seq


def test_beam_width_one_is_greedy():
    m = tiny(20, max_len=8, seed=3)
    cap = Captioner(m, CaptionVocab(range(100, 116)), TOK.decode)
    x = images(3, seed=2)
    seqs, _ = cap.beam_ids(x, beam=1, length_penalty=0.0)
    for img, s in zip(x, seqs):
        g = greedy_no_cache(m, img, 8)
        assert s[: len(g)].tolist() == g
        assert (s[len(g):] == PAD).all()


def test_beam_search_is_exact_when_wide_enough():
    # 3 word tokens + EOS choices, 3 steps: 4**3 = 64 prefixes, so beam 64 keeps every hypothesis.
    v = 7
    m = tiny(v, max_len=3, seed=5)
    cap = Captioner(m, CaptionVocab([100, 101, 102]), TOK.decode)
    img = images(1, seed=4)
    seqs, scores = cap.beam_ids(img, beam=64, length_penalty=0.0)
    best, best_lp = None, -np.inf
    for n in range(0, 4):
        for words in itertools.product([4, 5, 6], repeat=n):
            seq = [BOS, *words] + ([EOS] if n < 3 else [])
            # unfinished length-3 sequences score their 3 tokens (beam search stops at max_len)
            lp = seq_logprob(m, img[0], seq + [PAD] * (4 - len(seq)))
            if lp > best_lp:
                best, best_lp = seq, lp
    assert seqs[0][: len(best)].tolist() == best
    np.testing.assert_allclose(scores[0], best_lp, rtol=1e-4, atol=1e-4)


def test_beam_scores_are_sequence_logprobs():
    m = tiny(20, max_len=8, seed=6)
    cap = Captioner(m, CaptionVocab(range(100, 116)), TOK.decode)
    x = images(2, seed=7)
    seqs, scores = cap.beam_ids(x, beam=4, length_penalty=0.0)
    for img, s, sc in zip(x, seqs, scores):
        np.testing.assert_allclose(sc, seq_logprob(m, img, s.tolist()), rtol=1e-4, atol=1e-4)


def test_top_k_sampling():
    m = tiny(20, max_len=6, seed=8)
    cap = Captioner(m, CaptionVocab(range(100, 116)), TOK.decode)
    x = jnp.asarray(images(1, seed=9))
    # top_k=1 is greedy
    s1 = np.asarray(cap._sample(cap._state, x, 3, 1, 1.0, jax.random.key(0)))
    g, _ = cap.beam_ids(np.asarray(x), beam=1, length_penalty=0.0)
    assert (s1 == g[0]).all()
    # top_k=3: every sampled token is among the 3 most likely allowed tokens at its prefix
    s3 = np.asarray(cap._sample(cap._state, x, 16, 3, 1.0, jax.random.key(1)))
    assert len({tuple(r) for r in s3}) > 1  # actually random
    for row in s3:
        logits = full_logits(m, x[0], row[:-1].tolist())
        logits[:, [BOS, PAD, UNK]] = -np.inf
        for t in range(6):
            assert row[t + 1] in np.argsort(logits[t])[-3:]
            if row[t + 1] == EOS:
                assert (row[t + 2:] == PAD).all()
                break


def test_vocab_roundtrip_and_unk():
    caps = ["a red circle", "a blue square left of the triangle"]
    vocab = CaptionVocab.build(caps, TOK.encode)
    assert len(vocab) == 4 + len(set(" ".join(caps).split()))
    rows = vocab.tokenize(caps + ["a green circle"], TOK.encode, max_len=10)
    assert rows.shape == (3, 11) and (rows[:, 0] == BOS).all()
    assert vocab.detokenize(rows[0], TOK.decode) == "a red circle"
    assert vocab.detokenize(rows[1], TOK.decode) == caps[1]
    assert rows[2].tolist()[:5] == [BOS, vocab.from_llm(TOK.encode("a"))[0], UNK, vocab.from_llm(TOK.encode("circle"))[0], EOS]
    assert vocab.tokenize(["a red circle"], TOK.encode, max_len=3)[0].tolist() == [BOS, *vocab.from_llm(TOK.encode("a red")), EOS]


def test_overfits_two_captions_and_save_load(tmp_path):
    caps = ["a red circle above the blue square", "a green triangle left of the red circle"]
    vocab = CaptionVocab.build(caps, TOK.encode)
    m = tiny(len(vocab), max_len=10, seed=0)
    x = np.zeros((2, 16, 16, 3), np.uint8)
    x[0, ..., 0] = 220  # a red image and a blue one
    x[1, ..., 2] = 220
    rows = jnp.asarray(vocab.tokenize(caps, TOK.encode, 10))
    opt = nnx.Optimizer(m, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(m, opt):
        (loss, _), g = nnx.value_and_grad(lambda mm: caption_loss(mm, jnp.asarray(x), rows), has_aux=True)(m)
        opt.update(m, g)
        return loss

    for _ in range(150):
        loss = step(m, opt)
    assert float(loss) < 0.05
    cap = Captioner(m, vocab, TOK.decode)
    assert cap.caption(x, beam=3) == caps
    assert [s[0] for s in cap.sample(x, n=2, top_k=1)] == caps
    cap.save(tmp_path / "cap")
    again = Captioner.load(tmp_path / "cap", decode=TOK.decode)
    assert again.caption(x, beam=3) == caps
    with pytest.raises(FileNotFoundError, match="train.captioner"):
        Captioner.load(tmp_path / "nothing")


# ----------------------------------------------------------------------------- captioning real pictures

def test_feature_encoder_shapes_and_messages():
    cfg = CaptionerConfig(vocab_size=10, encoder="features", backbone="efficientnet-lite0", feature_dim=12,
                          feature_tokens=3, width=16, heads=2, decoder_layers=1)
    assert cfg.num_image_tokens == 3
    model = CaptionerModel(cfg, rngs=nnx.Rngs(0))
    logits = model(jnp.ones((2, 12)), jnp.zeros((2, 5), jnp.int32))
    assert logits.shape == (2, 5, 10)
    with pytest.raises(ValueError, match=r"\(B, 12\)"):
        model(jnp.ones((2, 8, 8, 3)), jnp.zeros((2, 5), jnp.int32))
    with pytest.raises(ValueError, match="feature_dim"):
        CaptionerConfig(vocab_size=10, encoder="features", backbone="efficientnet-lite0")
    with pytest.raises(ValueError, match="'cnn' or 'features'"):
        CaptionerConfig(vocab_size=10, encoder="vit")


def test_float16_save_loads_back_as_float32(tmp_path):
    cfg = CaptionerConfig(vocab_size=6, encoder="features", backbone="efficientnet-lite0", feature_dim=8,
                          feature_tokens=2, width=16, heads=2, decoder_layers=1, max_len=6)
    cap = Captioner(CaptionerModel(cfg, rngs=nnx.Rngs(1)), CaptionVocab([11, 12]), decode=str)
    cap.save(tmp_path, dtype="float16")
    back = Captioner.load(tmp_path, decode=str)
    a, b = nnx.state(cap.model, nnx.Param), nnx.state(back.model, nnx.Param)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert y.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-3, atol=1e-4)


@pytest.mark.emoji
def test_nearest_caption_baseline_closed_case():
    """A training picture is its own nearest neighbour, so the baseline returns its caption exactly."""
    from backbones import load_clip
    from eval.captioning import NearestCaption
    from visiondata import emoji

    es = emoji.load(style="google", split="train")
    pick = [0, 40, 300, 900]
    clip = load_clip()
    feats = clip.image_features(es.images[pick])
    caps = [emoji.captions_for(es.concepts[i]) for i in pick]
    nearest = NearestCaption(clip, feats, caps)
    assert nearest(feats[::-1]) == [c[0] for c in caps[::-1]]
