"""The contrastive losses against closed forms, and the offline trainer end to end on a tiny budget:
train, stop and resume from the Orbax checkpoint to the same parameters and metrics as an uninterrupted
run, export, load with load_clip."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from backbones.clip.losses import clip_loss, siglip_loss


def test_clip_loss_with_one_positive_is_symmetric_cross_entropy():
    logits = jax.random.normal(jax.random.key(0), (6, 6)) * 3
    labels = jnp.arange(6)
    want = 0.5 * (optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
                  + optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean())
    np.testing.assert_allclose(clip_loss(logits, jnp.eye(6, dtype=bool)), want, rtol=1e-6)


def _grouped_clip_loss_numpy(logits, keys):
    """Multi-positive CLIP loss written out pair by pair: image i's target is spread evenly over the
    texts with its key, text j's over the images with its key; the two directions are averaged."""
    logits = np.asarray(logits, np.float64)
    n = len(keys)

    def side(m):
        total = 0.0
        for i in range(n):
            logz = np.log(np.sum(np.exp(m[i] - m[i].max()))) + m[i].max()
            same = [j for j in range(n) if keys[j] == keys[i]]
            total += -sum(m[i, j] - logz for j in same) / len(same)
        return total / n

    return 0.5 * (side(logits) + side(logits.T))


def test_clip_loss_duplicates_are_not_negatives():
    """Texts with the same key are positives of each other's images, not negatives: the loss equals an
    independent pair-by-pair NumPy version, and differs from the diagonal-only loss on the same batch."""
    keys = ["red circle", "blue square", "red circle", "coat", "blue square", "red circle"]
    pos = jnp.asarray([[a == b for b in keys] for a in keys])
    logits = jax.random.normal(jax.random.key(1), (6, 6)) * 3
    want = _grouped_clip_loss_numpy(logits, keys)
    diagonal_only = _grouped_clip_loss_numpy(logits, list(range(6)))
    assert abs(want - diagonal_only) > 0.5                # the batch tells the two losses apart
    np.testing.assert_allclose(clip_loss(logits, pos), want, rtol=1e-5)
    # Two identical texts scored equally high reach the minimum (log 2 per row of the pair), not more.
    pos = jnp.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], bool)
    logits = jnp.where(pos, 50.0, -50.0)
    np.testing.assert_allclose(clip_loss(logits, pos), (2 * np.log(2) / 3 * 2) / 2, rtol=1e-5)


def test_siglip_loss_closed_form():
    logits = jnp.array([[2.0, -1.0], [0.5, 3.0]])
    pos = jnp.eye(2, dtype=bool)
    z = np.array([[1, -1], [-1, 1]])
    want = -np.sum(np.log(1 / (1 + np.exp(-z * np.asarray(logits))))) / 2
    np.testing.assert_allclose(siglip_loss(logits, pos), want, rtol=1e-6)


TINY = ["data.num_scenes=64", "data.scene_batch=8", "data.fmnist_batch=8", "data.fmnist_limit=256",
        "model.vision_layers=1", "model.text_layers=1", "model.vision_width=32", "model.text_width=32",
        "model.embed_dim=16", "train.log_every=1", "train.ckpt_every=2", "train.eval_every=1000"]


def _metrics(workdir) -> list[dict]:
    """metrics.jsonl without the wall time (the one field a resume may change)."""
    return [{k: v for k, v in json.loads(line).items() if k != "wall_s"} for line in open(f"{workdir}/metrics.jsonl")]


@pytest.mark.slow   # the trainers' shared exact resume: test_clip_lit, test_spae_train, test_lens_train
@pytest.mark.fashion_mnist
def test_train_resume_export(tmp_path, capsys, loss="siglip"):
    """Four steps straight, and two steps, a stop (checkpoint at step 2), then a resume for the last two:
    bit-identical exported parameters and bit-identical per-step metrics (same process, same compiled
    step, same batches: nothing is allowed to differ)."""
    pytest.importorskip("backbones.llm.api")
    from backbones import load_clip
    from backbones.clip.loaders import read_tensors
    from train import contrastive

    cfg = "train/configs/contrastive_offline.py"
    sets = [f"--set={o}" for o in TINY + ["train.steps=4", f"loss={loss}"]]
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    contrastive.main(["--config", cfg, "--workdir", straight, *sets])
    assert contrastive.main(["--config", cfg, "--workdir", resumed, "--stop_after", "2", *sets]) is None
    capsys.readouterr()
    contrastive.main(["--config", cfg, "--workdir", resumed, *sets])
    assert "resumed from step 2" in capsys.readouterr().out
    a, b = _metrics(straight), _metrics(resumed)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) for r in a) and a[3]["loss"] != a[0]["loss"]   # it trained
    assert a == b                                        # every logged metric of every step, exactly
    pa, pb = read_tensors(f"{straight}/export/model.safetensors"), read_tensors(f"{resumed}/export/model.safetensors")
    assert pa.keys() == pb.keys() and len(pa) > 10
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)
    clip = load_clip(f"{resumed}/export")
    e = clip.encode_image(np.zeros((2, 28, 28), np.uint8))
    assert e.shape == (2, 16)
    assert clip.relevance(np.zeros((1, 32, 32, 3), np.uint8), ["red", "circle"]).shape == (1, 2)
    # the export lists the words of its training texts (scene captions and class prompts)
    assert {"circle", "coat", "photo"} <= clip.known_words and "zebra" not in clip.known_words


@pytest.mark.fashion_mnist
@pytest.mark.parametrize("mode", ["class", "aliases"])
def test_fashion_mnist_prompts_name_the_class(mode, tmp_path):
    """Every Fashion-MNIST text in a batch is a template around one of its own class's names; with
    aliases every everyday name of every class is drawn, and the export's word list has them."""
    pytest.importorskip("backbones.llm.api")
    from backbones.clip import loaders
    from backbones.clip.evaluate import FMNIST_TEMPLATES
    from backbones.clip.llm_text import llm_token_assets
    from backbones.clip.tokenizer import llm_tokenizer
    from train import contrastive
    from train.trainlib import load_config
    from visiondata import fashion_mnist

    cfg = load_config("train/configs/contrastive_offline.py", TINY + [f"data.fmnist_names={mode}"])
    tok = llm_tokenizer(llm_token_assets(name=cfg.model.llm)[0], cfg.data.context_length, cfg.model.llm)
    data = contrastive.TrainData(cfg, tok)
    names = contrastive.fashion_mnist_names(mode)
    by_row = {tuple(r): n for ns in names for n in ns for r in tok([t.format(n) for t in FMNIST_TEMPLATES],
                                                                     cfg.data.context_length)}
    seen = set()
    for step in range(1, 41):
        b = data.batch(step)
        fm = slice(cfg.data.scene_batch, None)
        labels = b["keys"][fm] - data.num_scene_texts
        for row, lab in zip(b["tokens"][fm], labels):
            assert by_row.get(tuple(row)) in names[lab]         # a template around one of its class's names
            seen.add(by_row[tuple(row)])
    assert seen == {n for ns in names for n in ns}
    loaders.save_known_words(str(tmp_path), data.texts)        # what the export writes
    words = loaders.read_known_words(str(tmp_path))
    if mode == "aliases":
        assert {"pants", "sweater", "shoe", "handbag"} <= words
        assert names[fashion_mnist.CLASS_NAMES.index("trouser")][0] == "trouser"
    else:
        assert "pants" not in words and names == [[c] for c in fashion_mnist.CLASS_NAMES]
    with pytest.raises(ValueError, match="fmnist_names"):
        contrastive.fashion_mnist_names("synonyms")
