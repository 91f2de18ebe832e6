"""The LiT contrastive model: the feature head's algebra, a tiny train run with exact resume, the zero-shot metrics."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from backbones.clip.config import CLIPConfig, TextConfig, VisionConfig
from backbones.clip.model import CLIP
from eval.zeroshot import metrics

TINY = ["--set", "data.batch.emoji=0", "--set", "data.batch.tuxpaint=0", "--set", "data.batch.fmnist=0",
        "--set", "data.batch.scenes=8", "--set", "data.batch.imagenet=8", "--set", "data.scenes.limit=32",
        "--set", "data.scenes.size=32", "--set", "model.text_width=32", "--set", "model.text_layers=1",
        "--set", "model.text_heads=2", "--set", "model.embed_dim=16", "--set", "data.context_length=24",
        "--set", "train.steps=4", "--set", "train.log_every=1", "--set", "train.ckpt_every=2"]


def lit_model(seed=0) -> CLIP:
    cfg = CLIPConfig(vision=VisionConfig(image_size=224, backbone="efficientnet-lite0", feature_dim=12),
                     text=TextConfig(vocab_size=50, context_length=8, width=16, layers=1, heads=2, mlp_dim=32,
                                     pool="eos", eos_id=49),
                     embed_dim=8)
    m = CLIP(cfg, rngs=nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    m.vision.feature_mean[...] = jnp.asarray(rng.normal(size=12), jnp.float32)
    m.vision.feature_scale[...] = jnp.asarray(rng.uniform(0.5, 2, 12), jnp.float32)
    return m


def test_directions_are_the_heads_linear_part_in_feature_space():
    """head(f + w * scale^2) - head(f) == directions(w): a classifier row moves the embedding as it moves logits."""
    m = lit_model()
    rng = np.random.default_rng(1)
    f, w = jnp.asarray(rng.normal(size=(3, 12)), jnp.float32), jnp.asarray(rng.normal(size=(3, 12)), jnp.float32)
    scale = m.vision.feature_scale[...]
    np.testing.assert_allclose(m.vision(f + w * scale ** 2) - m.vision(f), m.vision.directions(w), atol=1e-5)
    emb = m.encode_directions(w)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(B, 12\)"):
        m.vision(jnp.zeros((2, 13)))


def test_topk_metrics_on_a_known_score_matrix():
    scores = np.array([[0.9, 0.1, 0.0, 0.2, 0.3, 0.4, 0.5],    # label 0: rank 0
                       [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3],    # label 5: rank 5 (top-5 miss)
                       [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]])   # label 2: rank 4
    m = metrics(scores, np.array([0, 5, 2]))
    assert m == {"n": 3, "classes": 7, "top1": pytest.approx(1 / 3), "top5": pytest.approx(2 / 3), "r@10": 1.0}


def _params(workdir) -> dict:
    from backbones.clip.loaders import read_tensors

    return read_tensors(f"{workdir}/export/model.safetensors")


def test_tiny_lit_run_trains_resumes_exactly_and_loads(tmp_path):
    from backbones import load_clip
    from train import lit

    cfg = "train/configs/contrastive_lit.py"
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    lit.main(["--config", cfg, "--workdir", str(straight), *TINY])
    assert lit.main(["--config", cfg, "--workdir", str(resumed), "--stop_after", "2", *TINY]) is None
    lit.main(["--config", cfg, "--workdir", str(resumed), *TINY])
    a, b = _params(straight), _params(resumed)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    steps = [json.loads(line) for line in open(straight / "metrics.jsonl")]
    assert [s["step"] for s in steps] == [1, 2, 3, 4] and all(np.isfinite(s["loss"]) for s in steps)
    # every logged metric of every step, exactly, but the wall time (the resumed log holds steps 1-2, then 3-4)
    logged = [[{k: v for k, v in json.loads(line).items() if k != "wall_s"} for line in open(d / "metrics.jsonl")]
              for d in (straight, resumed)]
    assert logged[0] == logged[1] and steps[3]["loss"] != steps[0]["loss"]
    clip = load_clip(str(straight / "export"))
    assert clip.backbone_name == "efficientnet-lite0" and clip.embed_dim == 16
    from visiondata import photos

    emb = clip.encode_image(photos.load(64)[:2])
    assert emb.shape == (2, 16) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    # the head standardises with the training features' statistics, which the optimizer never touched
    head = clip.model.vision
    assert float(jnp.abs(head.feature_mean[...]).sum()) > 0 and float(jnp.min(head.feature_scale[...])) > 0


@pytest.mark.emoji
def test_default_model_is_lit_and_names_held_out_concepts():
    """The shipped default on the 368 held-out emoji concepts (never trained in any style): top-5 42% when
    shipped (eval.zeroshot); the offline stand-in scores 2%, chance 1.4%."""
    from backbones import load_clip
    from eval.zeroshot import evaluate

    clip = load_clip()
    assert clip.backbone_name == "efficientnet-lite0" and "LiT" in clip.info["note"]
    row = evaluate("lit", "emoji-heldout")
    assert row["classes"] == 368 and row["top5"] >= 0.35, row


@pytest.mark.tuxpaint
def test_tuxpaint_category_source_groups_stamps_by_their_folder(tmp_path):
    """The opt-in `tuxpaint_categories` source: same pictures as `tuxpaint`, texts and positive groups by
    category, checked against the loader's own categories."""
    import types

    from train.configs.contrastive_lit import get_config
    from train.lit_data import TUXPAINT_TEMPLATES, tuxpaint_source
    from visiondata import tuxpaint

    class RowIndex:                       # stands in for the backbone: feature = the picture's index
        config = types.SimpleNamespace(name="row-index")

        def embed(self, images):
            return np.arange(len(images), dtype=np.float32)[:, None]

    cfg = get_config().data.tuxpaint
    cfg.update(backgrounds=("white",))
    by_name = tuxpaint_source(cfg, RowIndex(), str(tmp_path))
    by_cat = tuxpaint_source(cfg, RowIndex(), str(tmp_path), by="category")
    cats = tuxpaint.load(split="train", size=cfg.size, background="white").categories
    assert by_cat.name == "tuxpaint_categories" and len(by_cat) == len(by_name) == len(cats)
    np.testing.assert_array_equal(by_cat.features, by_name.features)
    assert by_cat.groups == [f"tuxcat:{c}" for c in cats]
    assert by_cat.texts[0] == [t.format(cats[0]) for t in TUXPAINT_TEMPLATES]
    assert len(set(by_cat.groups)) == len(set(cats)) < len(set(by_name.groups))
    assert get_config().data.batch.tuxpaint_categories == 0          # the shipped model trains without it
