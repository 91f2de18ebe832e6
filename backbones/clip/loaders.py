"""Load CLIP weights into the NNX model: Hugging Face ``CLIPModel`` dirs, OpenAI / open_clip state dicts,
and the repo's own checkpoints. Every tensor's name and shape is checked; nothing is guessed silently.

Our parameter names are the dotted paths of the NNX state, e.g.
``vision.encoder.layers.3.self_attn.q_proj.kernel`` (Linear kernels are (in, out), the
transpose of PyTorch's (out, in) weights; conv kernels are (P, P, C, D)).
"""
from __future__ import annotations

import json
import os
import re
import zipfile

import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from backbones.clip.config import OPENAI_MEAN, OPENAI_STD, CLIPConfig, TextConfig, VisionConfig
from backbones.clip.model import CLIP, abstract_clip

OWN_FORMAT = "llmsight-clip"


# ----------------------------------------------------------------------------- our names

def param_dict(model: CLIP) -> dict[str, np.ndarray]:
    """``{dotted name: array}`` of the model's parameters (arrays or ShapeDtypeStructs)."""
    from flax import traverse_util

    pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return {".".join(map(str, path)): v for path, v in traverse_util.flatten_dict(pure).items()}


def expected_shapes(cfg: CLIPConfig) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in param_dict(abstract_clip(cfg)).items()}


def build_from_params(cfg: CLIPConfig, params: dict[str, np.ndarray], source: str = "checkpoint",
                      token_table: np.ndarray | None = None) -> CLIP:
    """A CLIP of architecture ``cfg`` holding ``params``; raises on any missing, extra or misshapen tensor.

    ``token_table``: the frozen (V, d) token table of a text tower with ``frozen_token_dim`` (the LLM's embeddings).
    """
    want = expected_shapes(cfg)
    missing = sorted(set(want) - set(params))
    extra = sorted(set(params) - set(want))
    wrong = sorted(f"{k}: got {tuple(np.shape(params[k]))}, expected {want[k]}"
                   for k in set(want) & set(params) if tuple(np.shape(params[k])) != want[k])
    if missing or extra or wrong:
        msg = [f"{source} does not match the CLIP architecture:"]
        for title, items in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)):
            if items:
                msg.append(f"  {title} ({len(items)}): " + "; ".join(items[:8]) + (" ..." if len(items) > 8 else ""))
        raise ValueError("\n".join(msg))
    from flax import traverse_util

    model = abstract_clip(cfg)
    graphdef, state = nnx.split(model)
    pure = traverse_util.unflatten_dict(
        {tuple(int(p) if p.isdigit() else p for p in k.split(".")): jnp.asarray(np.asarray(v, np.float32))
         for k, v in params.items()})
    if cfg.text.frozen_token_dim:
        want_table = (cfg.text.vocab_size, cfg.text.frozen_token_dim)
        if token_table is None or tuple(token_table.shape) != want_table:
            raise ValueError(f"{source}: the text tower needs its frozen token table {want_table} (the LLM's "
                             f"embeddings), got {None if token_table is None else token_table.shape}")
        pure["text"]["token_table"] = jnp.asarray(token_table, jnp.float32)
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


# ----------------------------------------------------------------------------- Hugging Face

def _hf_block(prefix_in: str, prefix_out: str, sd: dict, out: dict, used: set):
    """One encoder layer of HF names -> ours (same structure; Linear weights transposed)."""
    for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2"):
        out[f"{prefix_out}.{name}.kernel"] = _take(sd, f"{prefix_in}.{name}.weight", used).T
        out[f"{prefix_out}.{name}.bias"] = _take(sd, f"{prefix_in}.{name}.bias", used)
    for name in ("layer_norm1", "layer_norm2"):
        _ln(sd, f"{prefix_in}.{name}", f"{prefix_out}.{name}", out, used)


def _take(sd, key, used):
    if key not in sd:
        raise KeyError(f"checkpoint lacks tensor {key!r}")
    used.add(key)
    return np.asarray(sd[key])


def _ln(sd, src, dst, out, used):
    out[f"{dst}.scale"] = _take(sd, f"{src}.weight", used)
    out[f"{dst}.bias"] = _take(sd, f"{src}.bias", used)


def _count_layers(sd, pattern: str) -> int:
    ids = {int(m.group(1)) for k in sd for m in [re.match(pattern, k)] if m}
    return max(ids) + 1 if ids else 0


# Buffers some checkpoints carry that are not weights.
_IGNORED = re.compile(r"(.*position_ids$|.*attn_mask$|^input_resolution$|^context_length$|^vocab_size$)")


def _check_all_used(sd: dict, used: set, source: str):
    left = sorted(k for k in sd if k not in used and not _IGNORED.match(k))
    if left:
        raise ValueError(f"{source}: {len(left)} tensors were not used (wrong architecture?): {left[:8]}")


def hf_to_params(sd: dict, cfg: CLIPConfig) -> dict[str, np.ndarray]:
    """Rename a Hugging Face ``CLIPModel`` state dict to our parameter names."""
    used: set = set()
    out: dict[str, np.ndarray] = {}
    v, t = "vision_model", "text_model"
    out["vision.patch_embedding.kernel"] = _take(sd, f"{v}.embeddings.patch_embedding.weight", used).transpose(2, 3, 1, 0)
    out["vision.class_embedding"] = _take(sd, f"{v}.embeddings.class_embedding", used)
    out["vision.position_embedding"] = _take(sd, f"{v}.embeddings.position_embedding.weight", used)
    _ln(sd, f"{v}.pre_layrnorm", "vision.pre_layernorm", out, used)
    _ln(sd, f"{v}.post_layernorm", "vision.post_layernorm", out, used)
    for i in range(cfg.vision.layers):
        _hf_block(f"{v}.encoder.layers.{i}", f"vision.encoder.layers.{i}", sd, out, used)
    out["vision.projection.kernel"] = _take(sd, "visual_projection.weight", used).T
    out["text.token_embedding.embedding"] = _take(sd, f"{t}.embeddings.token_embedding.weight", used)
    out["text.position_embedding"] = _take(sd, f"{t}.embeddings.position_embedding.weight", used)
    for i in range(cfg.text.layers):
        _hf_block(f"{t}.encoder.layers.{i}", f"text.encoder.layers.{i}", sd, out, used)
    _ln(sd, f"{t}.final_layer_norm", "text.final_layer_norm", out, used)
    out["text.projection.kernel"] = _take(sd, "text_projection.weight", used).T
    out["logit_scale"] = _take(sd, "logit_scale", used).reshape(())
    _check_all_used(sd, used, "Hugging Face CLIP checkpoint")
    return out


def hf_config(config_json: dict, preprocessor: dict | None = None) -> CLIPConfig:
    """Our config from a Hugging Face ``CLIPConfig`` dict (its defaults fill missing fields)."""
    if config_json.get("model_type") not in (None, "clip"):
        raise ValueError(f"config.json is for model_type {config_json.get('model_type')!r}, not 'clip'")
    tc, vc = config_json.get("text_config") or {}, config_json.get("vision_config") or {}
    eos = tc.get("eos_token_id", 49407)
    text = TextConfig(
        vocab_size=tc.get("vocab_size", 49408), context_length=tc.get("max_position_embeddings", 77),
        width=tc.get("hidden_size", 512), layers=tc.get("num_hidden_layers", 12),
        heads=tc.get("num_attention_heads", 8), mlp_dim=tc.get("intermediate_size", 2048),
        act=tc.get("hidden_act", "quick_gelu"), ln_eps=tc.get("layer_norm_eps", 1e-5),
        # Hugging Face's rule: the legacy eos_token_id == 2 means "pool at the largest id".
        pool="argmax" if eos == 2 else "eos", eos_id=eos)
    vision = VisionConfig(
        image_size=vc.get("image_size", 224), patch_size=vc.get("patch_size", 32), width=vc.get("hidden_size", 768),
        layers=vc.get("num_hidden_layers", 12), heads=vc.get("num_attention_heads", 12),
        mlp_dim=vc.get("intermediate_size", 3072), act=vc.get("hidden_act", "quick_gelu"),
        ln_eps=vc.get("layer_norm_eps", 1e-5))
    pre = preprocessor or {}
    return CLIPConfig(vision=vision, text=text, embed_dim=config_json.get("projection_dim", 512),
                      logit_scale_init=config_json.get("logit_scale_init_value", 2.6592),
                      image_mean=tuple(pre.get("image_mean", OPENAI_MEAN)),
                      image_std=tuple(pre.get("image_std", OPENAI_STD)))


def read_tensors(path: str) -> dict[str, np.ndarray]:
    """Tensors of a ``.safetensors``, ``.npz`` or torch zip (``.bin``/``.pt``/``.pth``) file, without torch.

    A damaged file (empty, truncated, a tensor of the wrong byte size or holding inf/NaN) is a
    CheckpointError (a ValueError) naming the file, and the tensor where there is one."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint file at {path}")
    if path.endswith(".safetensors"):
        from backbones.weight_files import read_safetensors

        # checked: truncation, tensor sizes, finite values (CheckpointError naming the file and tensor)
        return {k: v.astype(np.float32) if v.dtype == ml_dtypes.bfloat16 else v
                for k, v in read_safetensors(path).items()}
    if path.endswith(".npz"):
        from backbones.weight_files import CheckpointError, check_finite_tensors, check_not_empty

        check_not_empty(path, "npz")
        try:
            with np.load(path) as z:
                out = dict(z)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise CheckpointError(f"{path}: cannot read this .npz file ({type(e).__name__}: {e}); "
                                  "the file is truncated or corrupt") from e
        check_finite_tensors(out, path)
        return out
    if path.endswith((".bin", ".pt", ".pth")):
        from backbones.torch_pickle import load_torch_state_dict

        return load_torch_state_dict(path)
    raise ValueError(f"{path}: unknown checkpoint format (expected .safetensors, .npz, .bin, .pt or .pth)")


def load_hf_dir(path: str) -> tuple[CLIP, dict]:
    """A Hugging Face ``CLIPModel`` directory -> (model, info). Reads model.safetensors or pytorch_model.bin."""
    cfg_path = os.path.join(path, "config.json")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{path} has no config.json; not a Hugging Face model directory")
    with open(cfg_path) as f:
        cfg_json = json.load(f)
    pre_path = os.path.join(path, "preprocessor_config.json")
    pre = json.load(open(pre_path)) if os.path.exists(pre_path) else None
    cfg = hf_config(cfg_json, pre)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if os.path.exists(os.path.join(path, name)):
            sd = read_tensors(os.path.join(path, name))
            break
    else:
        raise FileNotFoundError(f"{path} holds neither model.safetensors nor pytorch_model.bin "
                                "(sharded checkpoints: merge them first)")
    model = build_from_params(cfg, hf_to_params(sd, cfg), f"Hugging Face checkpoint {path}")
    return model, {"format": "hf", "path": path}


# ----------------------------------------------------------------------------- OpenAI / open_clip

def _openai_block(src: str, dst: str, sd: dict, out: dict, used: set):
    w = _take(sd, f"{src}.attn.in_proj_weight", used)    # (3D, D) rows: q, k, v
    b = _take(sd, f"{src}.attn.in_proj_bias", used)
    for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
        n = w.shape[0] // 3
        out[f"{dst}.self_attn.{name}.kernel"] = w[j * n:(j + 1) * n].T
        out[f"{dst}.self_attn.{name}.bias"] = b[j * n:(j + 1) * n]
    for ours, theirs in (("self_attn.out_proj", "attn.out_proj"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
        out[f"{dst}.{ours}.kernel"] = _take(sd, f"{src}.{theirs}.weight", used).T
        out[f"{dst}.{ours}.bias"] = _take(sd, f"{src}.{theirs}.bias", used)
    _ln(sd, f"{src}.ln_1", f"{dst}.layer_norm1", out, used)
    _ln(sd, f"{src}.ln_2", f"{dst}.layer_norm2", out, used)


def openai_config(sd: dict, act: str = "quick_gelu", head_width: int = 64) -> CLIPConfig:
    """Architecture implied by an OpenAI-layout state dict (heads = width / head_width, as OpenAI's models have)."""
    if "visual.conv1.weight" not in sd:
        raise ValueError("not an OpenAI/open_clip ViT CLIP state dict (no visual.conv1.weight; ResNet towers "
                         "are not supported)")
    D, _, P, _ = sd["visual.conv1.weight"].shape
    grid = int(round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5))
    Dt = sd["ln_final.weight"].shape[0]
    vision = VisionConfig(image_size=grid * P, patch_size=P, width=D,
                          layers=_count_layers(sd, r"visual\.transformer\.resblocks\.(\d+)\."),
                          heads=max(D // head_width, 1), mlp_dim=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                          act=act)
    text = TextConfig(vocab_size=sd["token_embedding.weight"].shape[0], context_length=sd["positional_embedding"].shape[0],
                      width=Dt, layers=_count_layers(sd, r"transformer\.resblocks\.(\d+)\."),
                      heads=max(Dt // head_width, 1), mlp_dim=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                      act=act, pool="argmax", eos_id=sd["token_embedding.weight"].shape[0] - 1)
    return CLIPConfig(vision=vision, text=text, embed_dim=sd["text_projection"].shape[1],
                      logit_bias_init=0.0 if "logit_bias" in sd else None)


def openai_to_params(sd: dict, cfg: CLIPConfig) -> dict[str, np.ndarray]:
    """Rename an OpenAI / open_clip state dict (fused in_proj, ``x @ proj`` projections) to our names."""
    used: set = set()
    out: dict[str, np.ndarray] = {}
    out["vision.patch_embedding.kernel"] = _take(sd, "visual.conv1.weight", used).transpose(2, 3, 1, 0)
    out["vision.class_embedding"] = _take(sd, "visual.class_embedding", used)
    out["vision.position_embedding"] = _take(sd, "visual.positional_embedding", used)
    _ln(sd, "visual.ln_pre", "vision.pre_layernorm", out, used)
    _ln(sd, "visual.ln_post", "vision.post_layernorm", out, used)
    for i in range(cfg.vision.layers):
        _openai_block(f"visual.transformer.resblocks.{i}", f"vision.encoder.layers.{i}", sd, out, used)
    out["vision.projection.kernel"] = _take(sd, "visual.proj", used)
    out["text.token_embedding.embedding"] = _take(sd, "token_embedding.weight", used)
    out["text.position_embedding"] = _take(sd, "positional_embedding", used)
    for i in range(cfg.text.layers):
        _openai_block(f"transformer.resblocks.{i}", f"text.encoder.layers.{i}", sd, out, used)
    _ln(sd, "ln_final", "text.final_layer_norm", out, used)
    out["text.projection.kernel"] = _take(sd, "text_projection", used)
    out["logit_scale"] = _take(sd, "logit_scale", used).reshape(())
    if "logit_bias" in sd:
        out["logit_bias"] = _take(sd, "logit_bias", used).reshape(())
    _check_all_used(sd, used, "OpenAI/open_clip state dict")
    return out


def load_openai_state_dict(path: str, config: CLIPConfig | None = None, act: str = "quick_gelu") -> tuple[CLIP, dict]:
    """An OpenAI / open_clip state dict file (.safetensors / .npz / torch zip) -> (model, info).

    ``config`` fixes the architecture (e.g. ``get_config("ViT-B-32")``); without it the shapes decide,
    with OpenAI's conventions (64-wide heads, ``act`` = QuickGELU; open_clip's LAION models use "gelu").
    """
    sd = read_tensors(path)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    cfg = config or openai_config(sd, act=act)
    model = build_from_params(cfg, openai_to_params(sd, cfg), f"OpenAI-layout state dict {path}")
    return model, {"format": "openai", "path": path}


# ----------------------------------------------------------------------------- the repo's own format

def save_own(model: CLIP, directory: str, tokenizer_spec: dict, extra: dict | None = None,
             dtype=np.float32) -> None:
    """Write ``config.json`` (architecture, tokenizer, notes) + ``model.safetensors`` (our names)."""
    from safetensors.numpy import save_file

    os.makedirs(directory, exist_ok=True)
    params = {k: np.asarray(v, dtype if np.asarray(v).ndim > 1 else np.float32) for k, v in param_dict(model).items()}
    save_file(params, os.path.join(directory, "model.safetensors"))
    meta = {"format": OWN_FORMAT, "config": model.config.to_dict(), "tokenizer": tokenizer_spec, **(extra or {})}
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(meta, f, indent=1)


KNOWN_WORDS_FILE = "words.txt"


def save_known_words(directory: str, texts) -> None:
    """words.txt: the lower-case words of every text a model of ours was trained on, one per line.

    A text tower trained on a small corpus (the offline stand-in) embeds other words arbitrarily;
    users of relevance over a whole vocabulary (SPAE's semantic targets) can restrict it to these."""
    words = sorted({w for t in texts for w in re.findall(r"[a-z]+", t.lower())})
    with open(os.path.join(directory, KNOWN_WORDS_FILE), "w") as f:
        f.write("\n".join(words) + "\n")


def read_known_words(directory: str) -> frozenset[str] | None:
    path = os.path.join(directory, KNOWN_WORDS_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return frozenset(w.strip() for w in f if w.strip())


def is_own_dir(path: str) -> bool:
    p = os.path.join(path, "config.json")
    if not os.path.exists(p):
        return False
    with open(p) as f:
        return json.load(f).get("format") == OWN_FORMAT


def load_own(directory: str, token_table: np.ndarray | None = None) -> tuple[CLIP, dict]:
    with open(os.path.join(directory, "config.json")) as f:
        meta = json.load(f)
    cfg = CLIPConfig.from_dict(meta["config"])
    sd = read_tensors(os.path.join(directory, "model.safetensors"))
    model = build_from_params(cfg, sd, f"checkpoint {directory}", token_table=token_table)
    return model, {"path": directory, "known_words": read_known_words(directory), **meta}
