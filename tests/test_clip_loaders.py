"""Parity of our CLIP loaders with the PyTorch reference (transformers' CLIPModel), on random weights
of a small config: Hugging Face dirs (safetensors and pytorch_model.bin) and OpenAI-layout state dicts."""
import dataclasses
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from backbones.clip import loaders  # noqa: E402
from backbones.clip.config import get_config  # noqa: E402

VOCAB, CTX = 120, 16


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A random small transformers CLIPModel (non-zero biases/LN params), saved both ways, and its outputs."""
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=CTX, bos_token_id=VOCAB - 2,
                         eos_token_id=VOCAB - 1, pad_token_id=0, hidden_act="quick_gelu"),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                           image_size=40, patch_size=8, hidden_act="gelu"),
        projection_dim=24)
    model = transformers.CLIPModel(cfg).eval()
    with torch.no_grad():  # random init leaves LayerNorms at 1/0 and biases at 0: perturb everything
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    d = tmp_path_factory.mktemp("hfclip")
    model.save_pretrained(d / "st", safe_serialization=True)
    os.makedirs(d / "bin")
    torch.save(model.state_dict(), d / "bin" / "pytorch_model.bin")
    (d / "bin" / "config.json").write_text((d / "st" / "config.json").read_text())

    rng = np.random.default_rng(0)
    pixels = rng.normal(size=(3, 3, 40, 40)).astype(np.float32)          # (B, C, H, W) as torch wants
    ids = np.zeros((4, CTX), np.int64)
    for i, n in enumerate([3, 7, 14, 1]):
        ids[i, 0] = VOCAB - 2
        ids[i, 1:n + 1] = rng.integers(1, VOCAB - 2, n)
        ids[i, n + 1] = VOCAB - 1
    with torch.no_grad():
        img = model.get_image_features(pixel_values=torch.from_numpy(pixels))
        txt = model.get_text_features(input_ids=torch.from_numpy(ids))
        img = getattr(img, "pooler_output", img)
        txt = getattr(txt, "pooler_output", txt)
    return dict(model=model, dir=d, pixels=pixels.transpose(0, 2, 3, 1), ids=ids,
                img=img.numpy(), txt=txt.numpy(), scale=float(model.logit_scale.detach()))


def _check(ours, ref):
    img = np.asarray(ours.encode_image(ref["pixels"], normalize=False))
    txt = np.asarray(ours.encode_text(ref["ids"], normalize=False))
    np.testing.assert_allclose(img, ref["img"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(txt, ref["txt"], atol=1e-4, rtol=0)
    assert abs(float(ours.logit_scale[...]) - ref["scale"]) < 1e-6


def test_hf_safetensors_parity(reference):
    model, info = loaders.load_hf_dir(str(reference["dir"] / "st"))
    assert model.config.vision.act == "gelu" and model.config.text.pool == "eos"
    _check(model, reference)


def test_hf_pytorch_bin_parity_without_torch_in_the_library(reference):
    model, _ = loaders.load_hf_dir(str(reference["dir"] / "bin"))
    _check(model, reference)


def _openai_layout(sd: dict) -> dict:
    """Independent re-statement of OpenAI's CLIP state-dict layout, built from the HF tensors."""
    g = lambda k: sd[k].numpy()
    out = {}

    def blocks(src, dst, n):
        for i in range(n):
            s, o = f"{src}.encoder.layers.{i}", f"{dst}.resblocks.{i}"
            out[f"{o}.attn.in_proj_weight"] = np.concatenate([g(f"{s}.self_attn.{x}_proj.weight") for x in "qkv"])
            out[f"{o}.attn.in_proj_bias"] = np.concatenate([g(f"{s}.self_attn.{x}_proj.bias") for x in "qkv"])
            for a, b in (("attn.out_proj", "self_attn.out_proj"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2"),
                         ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2")):
                out[f"{o}.{a}.weight"], out[f"{o}.{a}.bias"] = g(f"{s}.{b}.weight"), g(f"{s}.{b}.bias")

    v = "vision_model"
    out["visual.conv1.weight"] = g(f"{v}.embeddings.patch_embedding.weight")
    out["visual.class_embedding"] = g(f"{v}.embeddings.class_embedding")
    out["visual.positional_embedding"] = g(f"{v}.embeddings.position_embedding.weight")
    for a, b in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        out[f"visual.{a}.weight"], out[f"visual.{a}.bias"] = g(f"{v}.{b}.weight"), g(f"{v}.{b}.bias")
    blocks(v, "visual.transformer", 3)
    out["visual.proj"] = g("visual_projection.weight").T
    out["token_embedding.weight"] = g("text_model.embeddings.token_embedding.weight")
    out["positional_embedding"] = g("text_model.embeddings.position_embedding.weight")
    blocks("text_model", "transformer", 2)
    out["ln_final.weight"], out["ln_final.bias"] = g("text_model.final_layer_norm.weight"), g("text_model.final_layer_norm.bias")
    out["text_projection"] = g("text_projection.weight").T
    out["logit_scale"] = g("logit_scale")
    return {k: np.ascontiguousarray(x) for k, x in out.items()}


@pytest.mark.parametrize("ext", ["safetensors", "npz"])
def test_openai_layout_parity(reference, tmp_path, ext):
    sd = _openai_layout(reference["model"].state_dict())
    path = str(tmp_path / f"clip.{ext}")
    if ext == "npz":
        np.savez(path, **sd)
    else:
        from safetensors.numpy import save_file

        save_file(sd, path)
    # OpenAI pools at the largest token id; our ids end with the largest id (VOCAB - 1), as CLIP's do.
    # The shapes give everything but heads and activations, which OpenAI fixes by convention.
    cfg = loaders.openai_config(sd, act="gelu", head_width=16)
    cfg = cfg.replace(text=dataclasses.replace(cfg.text, act="quick_gelu", heads=4))
    model, _ = loaders.load_openai_state_dict(path, config=cfg)
    assert model.config.text.pool == "argmax"
    _check(model, reference)


def test_wrong_shapes_and_names_are_reported(reference, tmp_path):
    sd = _openai_layout(reference["model"].state_dict())
    cfg = loaders.openai_config(sd, head_width=16)
    cfg = cfg.replace(text=dataclasses.replace(cfg.text, heads=4))
    bad = dict(sd)
    bad["visual.proj"] = bad["visual.proj"][:, :5]
    with pytest.raises(ValueError, match="wrong shape"):
        loaders.build_from_params(cfg, loaders.openai_to_params(bad, cfg))
    bad = dict(sd)
    bad["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="not used"):
        loaders.openai_to_params(bad, cfg)
    bad = dict(sd)
    del bad["ln_final.bias"]
    with pytest.raises(KeyError, match="ln_final.bias"):
        loaders.openai_to_params(bad, cfg)
    (tmp_path / "x.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        loaders.read_tensors(str(tmp_path / "x.safetensors"))


def test_named_config_matches_openai_shapes():
    """ViT-B/32's named config gives the parameter shapes of OpenAI's release (151,277,313 parameters)."""
    shapes = loaders.expected_shapes(get_config("ViT-B/32"))
    assert sum(int(np.prod(s)) for s in shapes.values()) == 151_277_313
    assert shapes["vision.patch_embedding.kernel"] == (32, 32, 3, 768)
    assert shapes["text.token_embedding.embedding"] == (49408, 512)
    assert shapes["vision.position_embedding"] == (50, 768)
