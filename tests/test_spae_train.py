"""SPAE trainer: exact kill-and-resume, export/reload, truncated pyramids, full-size config by
jax.eval_shape (the sharded step is in test_spae_train_sharded.py, its own file so pytest-xdist can
run it beside this one)."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from spae.training import FROZEN, StepFn, TrainState, _fresh_copy, resolve_config
from train import trainlib
from train import spae as spae_train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "train/configs/spae_tiny.py")

@pytest.fixture(scope="module")
def tiny_cfg():
    return resolve_config(trainlib.load_config(TINY))


@pytest.fixture(scope="module")
def runs(tiny_cfg, tmp_path_factory):
    """An uninterrupted tiny run, and one killed after 4 steps (last checkpoint: step 3) then resumed."""
    base = tmp_path_factory.mktemp("spae_runs")
    full, resumed = str(base / "full"), str(base / "resumed")
    spae_train.train(tiny_cfg, full, quiet=True)
    spae_train.train(tiny_cfg, resumed, stop_after=4, quiet=True)
    assert not os.path.exists(os.path.join(resumed, "export"))
    spae_train.train(tiny_cfg, resumed, quiet=True)
    return full, resumed


def _final_state(workdir, cfg):
    ts = TrainState(cfg, np.zeros((cfg.vocab.random_size, cfg.vocab.random_dim), np.float32), rngs=nnx.Rngs(1))
    _, _, abstract = nnx.split(ts, FROZEN, ...)
    step, state, extra = trainlib.Checkpointer(workdir).restore(abstract)
    return step, state, extra


@pytest.mark.fashion_mnist
def test_kill_and_resume_equals_uninterrupted(runs, tiny_cfg):
    full, resumed = runs
    s1, a, e1 = _final_state(full, tiny_cfg)
    s2, b, e2 = _final_state(resumed, tiny_cfg)
    assert s1 == s2 == tiny_cfg.train.steps
    assert e1["loader"] == e2["loader"]
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) > 10
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    log = [json.loads(l) for l in open(os.path.join(resumed, "metrics.jsonl"))]
    assert [r["step"] for r in log] == [2, 4, 4, 6]      # step 4 re-run after the resume


@pytest.mark.fashion_mnist
def test_export_reload_and_truncated_pyramids(runs, tiny_cfg):
    from spae import load_tokenizer
    from visiondata import fashion_mnist

    tok = load_tokenizer(os.path.join(runs[0], "export"))
    images = fashion_mnist.load("test")[0][:5]                         # (5, 28, 28) uint8
    pyr = tok.encode(images)
    assert [l.shape for l in pyr.llm_ids] == [(5, 1, 1), (5, 2, 2), (5, 4, 4), (5, 4, 4)]
    for k in range(1, len(pyr) + 1):
        out = tok.decode(pyr, layers=k)
        assert out.shape == images.shape and out.dtype == np.uint8
    # decoding from the LLM ids alone gives the same images as from the pyramid
    same = tok.decode(tok.from_llm_ids(tok.llm_ids(pyr), shape=images.shape), layers=3)
    np.testing.assert_array_equal(same, tok.decode(pyr, layers=3))
    text = tok.to_text(pyr)
    assert len(text) == 5 and [len(t) for t in text[0]] == [1, 4, 16, 16]
    with pytest.raises(ValueError, match="layers"):
        tok.decode(pyr, layers=5)


def test_full_size_config_by_eval_shape():
    """ImageNet 128 px, Gemma-3 vocabulary (262,144 x 640): shapes only, nothing allocated."""
    cfg = resolve_config(trainlib.load_config(os.path.join(ROOT, "train/configs/spae_imagenet128_gemma.py")))
    codebook = jax.ShapeDtypeStruct((262144, 640), np.float32)
    ts = nnx.eval_shape(lambda cb: TrainState(cfg, cb, rngs=nnx.Rngs(0)), codebook)
    graphdef, frozen, train = nnx.split(ts, FROZEN, ...)
    from spae.training import _train_step

    def step(train, frozen, batch):
        t = nnx.merge(graphdef, frozen, train)
        return _train_step(t, batch, cfg)

    b, k = 4, cfg.loss.semantic_k
    batch = dict(image=jax.ShapeDtypeStruct((b, 128, 128, 3), np.uint8),
                 sem_ids=jax.ShapeDtypeStruct((b, k), np.int32), sem_prob=jax.ShapeDtypeStruct((b, k), np.float32))
    metrics = jax.eval_shape(step, train, frozen, batch)
    assert metrics["loss"].shape == () and metrics["usage"].shape == (6,)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(ts.model, nnx.Param)))
    assert n_params > 10_000_000
    cb = [x for x in jax.tree.leaves(frozen) if x.shape == (262144, 640)]
    assert len(cb) == 1                                               # codebook: frozen, held once


@pytest.mark.fashion_mnist
def test_quantize_ramp_and_last_layer_commitment(tiny_cfg, tmp_path):
    """At step 0 of a quantize ramp the decoder sees the continuous z; commit_layers="last"
    charges only the full pyramid's commitment. Both checked against a direct computation."""
    from spae.losses import psnr

    cfg = resolve_config(trainlib.load_config(TINY))
    cfg.loss.update(quantize_ramp=10, commit_layers="last")
    vocab = spae_train.build_vocab(cfg)
    arrays = spae_train.build_arrays(cfg, vocab, str(tmp_path))
    batch = {k: v[:8] for k, v in arrays.items()}
    ts = TrainState(cfg, vocab.embeddings, rngs=nnx.Rngs(0))
    x = batch["image"].astype(np.float32) / 127.5 - 1.0
    z = ts.model.encode(x)
    ids, zhat, aux = ts.model.quantize(z)
    want_psnr = float(psnr(ts.model.decode(z), x))             # continuous input at step 0
    quantized_psnr = float(psnr(ts.model.decode(zhat[-1]), x))
    want_commit = cfg.loss.commit * float(aux["commit"][-1])
    mesh = trainlib.make_mesh(1)
    m = trainlib.to_host_scalars(StepFn(ts, cfg, mesh)(trainlib.shard_batch(batch, mesh)))
    n = len(cfg.model.strides)
    np.testing.assert_allclose(m[f"psnr_{n}"], want_psnr, rtol=1e-4)
    assert abs(want_psnr - quantized_psnr) > 1e-3                # the check can tell the two apart
    np.testing.assert_allclose(m["commit"], want_commit, rtol=1e-4)
    cfg.loss.commit_layers = "first"
    with pytest.raises(ValueError, match="commit_layers"):
        StepFn(TrainState(cfg, vocab.embeddings, rngs=nnx.Rngs(0)), cfg, mesh)(trainlib.shard_batch(batch, mesh))


def _one_step(tmp_path, train=None, **loss):
    """One tiny-config step with `loss` (and `train`) overrides: (logged metrics, the model before
    the step, the batch's images in [-1, 1], the config, the train state after the step)."""
    cfg = trainlib.load_config(TINY)
    cfg.loss.update(**loss)
    cfg.train.update(**(train or {}))
    cfg = resolve_config(cfg)
    vocab = spae_train.build_vocab(cfg)
    arrays = spae_train.build_arrays(cfg, vocab, str(tmp_path))
    batch = {k: v[:8] for k, v in arrays.items()}
    ts = TrainState(cfg, vocab.embeddings, rngs=nnx.Rngs(0))
    before = _fresh_copy(ts.model)                                 # own buffers: the step donates the state
    x = batch["image"].astype(np.float32) / 127.5 - 1.0
    mesh = trainlib.make_mesh(1)
    fn = StepFn(ts, cfg, mesh)
    m = trainlib.to_host_scalars(fn(trainlib.shard_batch(batch, mesh)))
    return m, before, x, cfg, fn.state


def _entropy_step(tmp_path, **loss):
    """One tiny-config step with `loss` overrides: (logged metrics, the layers' targets before the
    step, the code table, the config)."""
    m, model, x, cfg, _ = _one_step(tmp_path, **loss)
    _, _, aux = model.quantize(model.encode(x))
    return m, aux["targets"], model.codes(), cfg


@pytest.mark.fashion_mnist
def test_usage_entropy_term_in_the_step(tmp_path):
    """loss.entropy adds weight * mean over the chosen layers of usage_entropy_loss on their targets."""
    from spae.losses import usage_entropy_loss

    m, targets, cb, _ = _entropy_step(tmp_path, entropy=0.3, entropy_temp=2.0, entropy_layers=(1, 3))
    want = np.mean([float(usage_entropy_loss(targets[l - 1], cb, 2.0)) for l in (1, 3)])
    np.testing.assert_allclose(m["entropy"], 0.3 * want, rtol=1e-4)


@pytest.mark.slow   # the usage-entropy term itself: test_usage_entropy_term_in_the_step
@pytest.mark.fashion_mnist
def test_usage_entropy_on_a_subset_of_positions(tmp_path):
    """loss.entropy_positions: each layer's targets are subsampled by spae.losses.subsample_positions
    with the key fold_in(key(seed), step), split per layer; layers that fit are used whole."""
    from spae.losses import subsample_positions, usage_entropy_loss

    # tiny config: 4x4 grid, layers 1x1, 2x2, 4x4, 4x4; at most 4 positions -> the 4x4 ones at stride 2
    m, targets, cb, cfg = _entropy_step(tmp_path, entropy=1.0, entropy_layers=(2, 3, 4), entropy_positions=4)
    keys = jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), 0), 4)
    subsets = {l: subsample_positions(targets[l - 1], 4, keys[l - 1]) for l in (2, 3, 4)}
    assert subsets[2] is targets[1] and subsets[4].shape[1:3] == (2, 2)
    want = np.mean([float(usage_entropy_loss(subsets[l], cb, 1.0)) for l in (2, 3, 4)])
    whole = np.mean([float(usage_entropy_loss(targets[l - 1], cb, 1.0)) for l in (2, 3, 4)])
    assert abs(want - whole) > 1e-4                              # the check can tell the two apart
    np.testing.assert_allclose(m["entropy"], want, rtol=1e-4)


@pytest.mark.fashion_mnist
def test_random_prefix_decodes_one_drawn_depth_per_image(tmp_path):
    """loss.random_prefix: besides decode_layers, each image is decoded from the prefix of a depth
    drawn from 1..L-1 with fold_in(fold_in(key(seed), step), RANDOM_PREFIX_STREAM). The same step checks the
    generator EMA's warm-up: decay min(decay, (1 + t) / (10 + t)), so after the first step the EMA is
    0.1 x the initial weights + 0.9 x the live ones (a plain 0.99 EMA would still be 99% initial)."""
    from spae.losses import psnr
    from spae.training import RANDOM_PREFIX_STREAM

    m, model, x, cfg, after = _one_step(tmp_path, random_prefix=True, decode_layers=[4])
    n, b = len(cfg.model.strides), x.shape[0]
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed), 0), RANDOM_PREFIX_STREAM)
    depth = np.asarray(jax.random.randint(key, (b,), 1, n))
    assert len(set(depth.tolist())) > 1 and depth.max() < n
    _, zhat, _ = model.quantize(model.encode(x))
    picked = np.stack([np.asarray(zhat[d - 1][i]) for i, d in enumerate(depth)])
    want = float(psnr(model.decode(picked), x))
    full = float(psnr(model.decode(zhat[-1]), x))
    assert abs(want - full) > 1e-3                               # the check can tell the two apart
    np.testing.assert_allclose(m["psnr_random"], want, rtol=1e-4)
    np.testing.assert_allclose(m[f"psnr_{n}"], full, rtol=1e-4)
    assert "psnr_1" not in m

    from spae.training import ema_decay_at

    np.testing.assert_allclose([float(ema_decay_at(t, 0.999)) for t in (0, 10, 20000)], [0.1, 11 / 20, 0.999],
                               rtol=1e-6)
    init = np.asarray(model.decoder.conv_out.kernel[...])
    live, ema = (np.asarray(d.conv_out.kernel[...]) for d in (after.model.decoder, after.ema_decoder))
    assert np.abs(live - init).max() > 1e-6
    np.testing.assert_allclose(ema, 0.1 * init + 0.9 * live, rtol=1e-5, atol=1e-7)


@pytest.mark.fashion_mnist
def test_decoder_stage_keeps_every_token(runs, tiny_cfg, tmp_path):
    """train.trainable='decoder' from a trained checkpoint: the exported encoder (hence every token
    of every image) is bit-identical to the one it started from; the decoder has moved."""
    from safetensors.numpy import load_file

    from spae import load_tokenizer
    from visiondata import fashion_mnist

    start = os.path.join(runs[0], "export")
    cfg = trainlib.load_config(TINY)
    cfg.train.update(init_from=start, trainable="decoder", steps=4)
    cfg.loss.update(random_prefix=True, quantize_ramp=0, gan=0.0)
    out = str(tmp_path / "dec")
    last = spae_train.train(resolve_config(cfg), out, quiet=True)
    assert "semantic" not in last and "commit" not in last and "w_semantic" not in last and last["recon"] > 0
    a, b = load_file(os.path.join(start, "params.safetensors")), load_file(os.path.join(out, "export", "params.safetensors"))
    assert set(a) == set(b)
    enc = [k for k in a if k.startswith("encoder/")]
    dec = [k for k in a if k.startswith("decoder/")]
    assert enc and dec and len(enc) + len(dec) == len(a)
    for k in enc:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert any(not np.array_equal(a[k], b[k]) for k in dec)
    images = fashion_mnist.load("test")[0][:16]
    p0, p1 = load_tokenizer(start).encode(images), load_tokenizer(os.path.join(out, "export")).encode(images)
    for l0, l1 in zip(p0.llm_ids, p1.llm_ids):
        np.testing.assert_array_equal(l0, l1)


@pytest.mark.fashion_mnist
def test_decoder_stage_errors(runs, tmp_path):
    cfg = trainlib.load_config(TINY)
    cfg.train.update(trainable="decoder")
    with pytest.raises(ValueError, match="init_from"):
        resolve_config(cfg)
    cfg.train.update(trainable="encoder", init_from=os.path.join(runs[0], "export"))
    with pytest.raises(ValueError, match="trainable"):
        resolve_config(cfg)
    cfg.train.update(trainable="decoder")
    cfg.loss.update(quantize_ramp=0, gan=0.0)
    cfg.model.update(ch=cfg.model.ch * 2)
    with pytest.raises(ValueError, match="'ch'"):
        TrainState(resolve_config(cfg), np.zeros((cfg.vocab.random_size, cfg.vocab.random_dim), np.float32),
                   rngs=nnx.Rngs(0))
    cfg.train.update(init_from=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="config.json"):
        TrainState(resolve_config(cfg), np.zeros((cfg.vocab.random_size, cfg.vocab.random_dim), np.float32),
                   rngs=nnx.Rngs(0))

