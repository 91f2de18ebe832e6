"""The captioner trainer: exact resume after an interruption, and a 4-device sharded run.

Tiny config on real synthetic scenes; a word-level stand-in tokenizer keeps it fast
(the real tokenizer's round trip is tested in test_lens_pipeline.py).
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from safetensors.numpy import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class WordTokenizer:
    """Any text -> ids 40000+ by first appearance of each whitespace word; decode joins words."""

    def __init__(self):
        self.ids, self.words = {}, []

    def encode(self, text):
        out = []
        for w in text.split():
            if w not in self.ids:
                self.ids[w] = 40_000 + len(self.words)
                self.words.append(w)
            out.append(self.ids[w])
        return out

    def decode(self, ids):
        return " ".join(self.words[i - 40_000] for i in ids)


def tiny_cfg(steps=4):
    from train.trainlib import load_config

    return load_config(os.path.join(ROOT, "train/configs/captioner_tiny.py"),
                       [f"train.steps={steps}", "train.log_every=1", "train.ckpt_every=2"])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    from train.captioner import train

    wd = str(tmp_path_factory.mktemp("straight"))
    last = train(tiny_cfg(), wd, tokenizer=WordTokenizer(), quiet=True)
    return wd, last


def params(workdir):
    return load_file(os.path.join(workdir, "export", "params.safetensors"))


def test_resume_is_exact(straight, tmp_path):
    from lens.caption import Captioner
    from train.captioner import train

    wd, last = straight
    tok = WordTokenizer()
    first = train(tiny_cfg(), str(tmp_path), stop_after=2, tokenizer=tok, quiet=True)
    assert first["step"] == 2 and not os.path.exists(tmp_path / "export")
    again = train(tiny_cfg(), str(tmp_path), tokenizer=tok, quiet=True)
    assert again["step"] == 4
    np.testing.assert_allclose(again["loss"], last["loss"], rtol=1e-6)
    a, b = params(wd), params(str(tmp_path))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7, err_msg=k)
    steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4]
    cap = Captioner.load(tmp_path / "export", decode=tok.decode)
    assert cap.cfg.image_size == 32 and len(cap.caption(np.zeros((1, 32, 32, 3), np.uint8))) == 1


def test_changed_vocabulary_is_refused(straight, tmp_path):
    from train.captioner import train

    wd, _ = straight
    with pytest.raises(RuntimeError, match="fresh --workdir"):
        # the same workdir with a different tokenizer mapping -> different vocabulary
        tok = WordTokenizer()
        tok.encode("zzz yyy xxx")
        train(tiny_cfg(), wd, tokenizer=tok, quiet=True)


@pytest.mark.slow   # multi-device equality of the shared step: test_multihost, test_spae_vocab_shard
def test_four_device_sharded_run_matches(straight, tmp_path):
    wd, _ = straight
    code = textwrap.dedent(f"""
        import jax, sys
        sys.path.insert(0, {ROOT!r}); sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
        assert len(jax.devices()) == 4
        from test_lens_train import WordTokenizer, tiny_cfg
        from train.captioner import train
        train(tiny_cfg(), {str(tmp_path)!r}, tokenizer=WordTokenizer(), quiet=True)
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = params(wd), params(str(tmp_path))
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=2e-4, atol=2e-5, err_msg=k)


# ----------------------------------------------------------------------------- features captioner on real pictures

def real_cfg(steps=4):
    """train/configs/captioner_real.py shrunk: Noto emoji only, a tiny decoder on the real backbone's features."""
    from train.trainlib import load_config

    return load_config(os.path.join(ROOT, "train/configs/captioner_real.py"),
                       ["data.parts=['emoji']", "data.emoji_styles=['google']", "data.batch_size=4",
                        "model.width=32", "model.heads=2", "model.decoder_layers=1", "model.feature_tokens=2",
                        f"train.steps={steps}", "train.log_every=1", "train.ckpt_every=2"])


@pytest.fixture()
def few_emoji(monkeypatch):
    """real_pairs cut to the first 12 Noto pictures of a split (real pixels and captions, fast features)."""
    import train.captioner as tc

    original = tc.real_pairs

    def first_twelve(part, d, split, seed=0):
        images, captions = original(part, d, split, seed)
        return [images[0][:12]], captions[:12]

    monkeypatch.setattr(tc, "real_pairs", first_twelve)


@pytest.mark.emoji
def test_features_captioner_resume_is_exact_and_reads_images(few_emoji, tmp_path):
    from lens.caption import Captioner
    from train.captioner import frozen_backbone, real_pairs, train

    tok = WordTokenizer()
    straight = train(real_cfg(), str(tmp_path / "a"), tokenizer=tok, quiet=False)   # prints val captions too
    train(real_cfg(), str(tmp_path / "b"), stop_after=2, tokenizer=tok, quiet=True)
    again = train(real_cfg(), str(tmp_path / "b"), tokenizer=tok, quiet=True)
    np.testing.assert_allclose(again["loss"], straight["loss"], rtol=1e-6)
    a, b = params(str(tmp_path / "a")), params(str(tmp_path / "b"))
    assert a.keys() == b.keys() and any("in_norm" in k for k in a)      # the feature encoder, not the CNN
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7, err_msg=k)
    assert sorted(os.listdir(tmp_path / "a" / "features"))                 # backbone features cached once

    cap = Captioner.load(tmp_path / "a" / "export", decode=tok.decode, vision=frozen_backbone("efficientnet-lite0"))
    assert cap.cfg.encoder == "features" and cap.cfg.backbone == "efficientnet-lite0"
    images, _ = real_pairs("emoji", real_cfg().data, "train")
    feats = cap.vision.embed(images[0][:3])
    by_pixels, by_features = cap.caption(images[0][:3]), cap.caption(features=feats)
    assert by_pixels == by_features and len(by_pixels) == 3
    assert cap.prepare(images[0][:3])["features"].shape == (3, 1280)
    with pytest.raises(ValueError, match=r"\(B, 1280\)"):
        cap.caption(features=feats[:, :10])
    with pytest.raises(ValueError, match="exactly one"):
        cap.caption()
