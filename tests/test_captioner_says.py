"""What the shipped captioners say, on pictures drawn the way their training data draws them, and what
`Captioner.save(dtype=...)` really writes.

Each caption must name the picture's concept (its words appear in the caption) for at least a floor
fraction, and a caption must not name another picture's concept: a captioner that writes one fixed
caption, or lists every concept, fails. The floors sit below the hit rates measured on these same
pictures when the tests were written (each is stated beside its floor).
"""
import functools

import jax
import numpy as np
import pytest
from flax import nnx

from backbones.weight_files import read_safetensors
from lens.caption import Captioner


@functools.lru_cache(maxsize=1)
def _decode():
    """SmolLM2's tokenizer alone, read from its GGUF metadata (2 s, against 11 s for the whole LLM)."""
    from backbones.llm.api import named_model_path
    from backbones.llm.gguf_file import read_gguf_fast
    from backbones.llm.tokenizer import tokenizer_from_gguf

    tok = tokenizer_from_gguf(read_gguf_fast(named_model_path("smollm2-135m"))[0])
    return lambda ids: tok.decode([int(i) for i in ids], skip_special_tokens=False)  # FrozenLLM.decode's


def _rates(names, captions):
    """(fraction of captions naming their own concept, fraction of (caption, other concept) pairs naming it)."""
    low = [c.lower() for c in captions]
    own = np.mean([n in c for n, c in zip(names, low)])
    other = np.mean([m in c for i, c in enumerate(low) for m in names if m != names[i]])
    return float(own), float(other)


@functools.lru_cache(maxsize=1)
def _scenes():
    """24 one-object scenes of the scenes captioner's own training stream (seed 0, split "train", 64 px):
    the concept is the object's "<colour> <shape>"."""
    from visiondata import scenes

    sc = scenes.generate(24, size=64, seed=0, split="train", max_objects=1)
    return sc.images, [sc.class_names[i] for i in sc.labels]


@functools.lru_cache(maxsize=1)
def _scenes_captioner():
    return Captioner.load(decode=_decode())  # the default, shipped lens/pretrained/captioner


def test_scenes_captioner_names_the_shape():
    images, names = _scenes()
    captions = _scenes_captioner().caption(images)
    own, other = _rates(names, captions)
    # Measured: 21 / 24 (0.875) name the object's colour and shape ("The only shape is a pink cross and it
    # is large."); the misses are the caption family that names the colour alone ("One shape on a light
    # gray background, colored cyan."). No caption names another picture's pair (0.0).
    assert own >= 0.75, list(zip(names, captions))
    assert other <= 0.02, list(zip(names, captions))


def test_float16_save_writes_float16_and_captions_the_same(tmp_path):
    cap = _scenes_captioner()
    cap.save(tmp_path / "f32")
    cap.save(tmp_path / "f16", dtype="float16")
    f32, f16 = (read_safetensors(tmp_path / d / "params.safetensors") for d in ("f32", "f16"))
    assert f32.keys() == f16.keys() and len(f16) > 10
    assert {str(a.dtype) for a in f32.values()} == {"float32"}
    assert {str(a.dtype) for a in f16.values()} == {"float16"}
    size = lambda d: (tmp_path / d / "params.safetensors").stat().st_size
    assert 0.45 < size("f16") / size("f32") < 0.55
    back = Captioner.load(tmp_path / "f16", decode=_decode())
    assert {str(x.dtype) for x in jax.tree.leaves(nnx.state(back.model, nnx.Param))} == {"float32"}
    images, _ = _scenes()
    same = sum(a == b for a, b in zip(back.caption(images), cap.caption(images)))
    assert same >= 22, same  # measured: 24 / 24 identical
    cap.save(tmp_path / "bf16", dtype="bfloat16")
    assert {str(a.dtype) for a in read_safetensors(tmp_path / "bf16" / "params.safetensors").values()} == {"bfloat16"}
    with pytest.raises(ValueError, match="dtype must be one of"):
        cap.save(tmp_path / "bad", dtype="int8")


def test_shipped_real_captioner_file_is_float16():
    from lens.caption import SHIPPED

    stored = read_safetensors(SHIPPED["real"] / "params.safetensors")
    assert {str(a.dtype) for a in stored.values()} == {"float16"}  # its README: stored in float16


@pytest.mark.tuxpaint
@pytest.mark.emoji
def test_real_captioner_names_training_stamps_and_emoji():
    """16 Tux Paint training stamps on white at 96 px and 16 Noto emoji of training concepts at 64 px, as
    train/configs/captioner_real.py renders them; the concept is the stamp's name / the emoji's name."""
    import re

    from train.captioner import frozen_backbone
    from visiondata import emoji, tuxpaint

    ts = tuxpaint.load(split="train", size=96, background="white")
    ti = list(range(0, len(ts), 27))[:16]
    es = emoji.load(style="google", split="train", size=64)
    ei = list(range(0, len(es.concepts), 87))[:16]
    names = [ts.names[i] for i in ti] + [re.sub(r"^(a|an|the) ", "", emoji.captions_for(es.concepts[i])[1]) for i in ei]
    images = list(ts.images[ti]) + list(es.images[ei])
    assert len(images) == 32
    # frozen_backbone: the EfficientNet-Lite0 that tests/test_lens_train.py also loads, built once per session
    cap = Captioner.load("real", decode=_decode(), vision=frozen_backbone("efficientnet-lite0"))
    captions = cap.caption(images)
    tux, _ = _rates(names[:16], captions[:16])
    emo, _ = _rates(names[16:], captions[16:])
    _, other = _rates(names, captions)
    # Measured: 16 / 16 stamps ("A classical guitar.", "hibiscus flower") and 16 / 16 emoji ("an emoji of a
    # goblin", "the flag of benin"); over all 426 training stamps 425 / 426, over 140 training emoji 139 / 140.
    assert tux >= 14 / 16, list(zip(names[:16], captions[:16]))
    assert emo >= 14 / 16, list(zip(names[16:], captions[16:]))
    assert other <= 0.02, list(zip(names, captions))
