"""Checkpoint readers for the Llama decoder: GGUF files and Hugging Face safetensors directories.

Both produce the same thing: a LlamaConfig and a dict of stacked float32 arrays whose names and
shapes match `Llama`'s parameters. Every tensor is checked by name and shape; unexpected tensors
are an error, so a wrong checkpoint never loads silently. Every tensor must also be finite once
dequantised: a damaged file (random bytes in a scale field decode to inf or NaN) fails at load,
naming the file and the tensor, instead of giving NaN logits later.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from backbones.llm.config import LlamaConfig
from backbones.weight_files import CheckpointError, check_finite, read_safetensors  # noqa: F401 (re-exported)

# Names of one layer's tensors in Hugging Face layout ((out, in) matrices, like torch.nn.Linear).
_HF_LAYER = {
    "attn_norm": "model.layers.{i}.input_layernorm.weight",
    "q": "model.layers.{i}.self_attn.q_proj.weight",
    "k": "model.layers.{i}.self_attn.k_proj.weight",
    "v": "model.layers.{i}.self_attn.v_proj.weight",
    "o": "model.layers.{i}.self_attn.o_proj.weight",
    "ffn_norm": "model.layers.{i}.post_attention_layernorm.weight",
    "gate": "model.layers.{i}.mlp.gate_proj.weight",
    "up": "model.layers.{i}.mlp.up_proj.weight",
    "down": "model.layers.{i}.mlp.down_proj.weight",
}
_GGUF_LAYER = {
    "attn_norm": "blk.{i}.attn_norm.weight",
    "q": "blk.{i}.attn_q.weight",
    "k": "blk.{i}.attn_k.weight",
    "v": "blk.{i}.attn_v.weight",
    "o": "blk.{i}.attn_output.weight",
    "ffn_norm": "blk.{i}.ffn_norm.weight",
    "gate": "blk.{i}.ffn_gate.weight",
    "up": "blk.{i}.ffn_up.weight",
    "down": "blk.{i}.ffn_down.weight",
}


def _expect(name: str, arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if tuple(arr.shape) != tuple(shape):
        raise CheckpointError(f"tensor {name!r} has shape {tuple(arr.shape)}, expected {tuple(shape)}")
    return arr


def stack_hf_layout(cfg: LlamaConfig, get: Callable[[str], np.ndarray], layer_names: Mapping[str, str],
                    embed: str, final_norm: str, head: str | None) -> dict[str, np.ndarray]:
    """Assemble `Llama` parameters from per-layer tensors in HF layout; `get(name)` returns float32."""
    L, D, H, K, E, F, V = (cfg.n_layers, cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim,
                           cfg.hidden_dim, cfg.vocab_size)

    def layers(kind, shape, to_model):
        return np.stack([to_model(_expect(layer_names[kind].format(i=i), get(layer_names[kind].format(i=i)), shape))
                         for i in range(L)])

    out = {
        "embed": _expect(embed, get(embed), (V, D)),
        "final_norm": _expect(final_norm, get(final_norm), (D,)),
        "attn_norm": layers("attn_norm", (D,), lambda w: w),
        "ffn_norm": layers("ffn_norm", (D,), lambda w: w),
        "wq": layers("q", (H * E, D), lambda w: w.T.reshape(D, H, E)),
        "wk": layers("k", (K * E, D), lambda w: w.T.reshape(D, K, E)),
        "wv": layers("v", (K * E, D), lambda w: w.T.reshape(D, K, E)),
        "wo": layers("o", (D, H * E), lambda w: w.T.reshape(H, E, D)),
        "w_gate": layers("gate", (F, D), lambda w: w.T),
        "w_up": layers("up", (F, D), lambda w: w.T),
        "w_down": layers("down", (D, F), lambda w: w.T),
    }
    if head is not None:
        out["head"] = _expect(head, get(head), (V, D)).T
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def _unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row order (pairs interleaved per head) to HF's half-split order."""
    out_dim, in_dim = w.shape
    return w.reshape(n_heads, out_dim // n_heads // 2, 2, in_dim).swapaxes(1, 2).reshape(out_dim, in_dim)


# --------------------------------------------------------------------------------------- GGUF


def read_gguf(path: str | Path):
    """(metadata dict, {tensor name: reader tensor}) through the `gguf` package's own reader.

    The loaders use `gguf_file.read_gguf_fast` (same result, much faster on large vocabularies);
    this one stays as the independent reference that the fast reader is tested against.
    """
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # the gguf package raises several types for a damaged file
        raise CheckpointError(f"{path} is not a readable GGUF file ({type(e).__name__}: {e})") from e
    meta = {}
    for key, field in reader.fields.items():
        try:
            meta[key] = field.contents()
        except Exception:  # fields of exotic types that no loader here needs
            continue
    return meta, {t.name: t for t in reader.tensors}


def dequantize(tensor) -> np.ndarray:
    """A GGUF tensor as float32 with numpy (row-major) shape: (rows, cols) = reversed GGUF dims.

    Non-finite values (a damaged file) are a CheckpointError naming the file and the tensor."""
    from gguf import GGMLQuantizationType, quants

    shape = tuple(int(d) for d in reversed(tensor.shape))
    with np.errstate(invalid="ignore", over="ignore"):     # damaged scales: reported below, not warned
        if tensor.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16):
            arr = np.asarray(tensor.data)
            if tensor.tensor_type == GGMLQuantizationType.BF16:
                arr = quants.dequantize(arr, tensor.tensor_type)
            arr = arr.astype(np.float32).reshape(shape)
        else:
            arr = quants.dequantize(np.asarray(tensor.data), tensor.tensor_type).astype(np.float32).reshape(shape)
    return check_finite(arr, tensor.name, getattr(tensor, "source", ""), " after dequantising")


def load_gguf_llama(path: str | Path) -> tuple[LlamaConfig, dict[str, np.ndarray], dict]:
    """Read a Llama-architecture GGUF: (config, parameters, metadata)."""
    from backbones.llm.gguf_file import read_gguf_fast

    meta, tensors = read_gguf_fast(path)
    cfg = LlamaConfig.from_gguf_metadata(meta)
    cfg = cfg.replace(tie_embeddings="output.weight" not in tensors)
    used: set[str] = set()

    def get(name: str) -> np.ndarray:
        if name not in tensors:
            raise CheckpointError(f"{path}: tensor {name!r} is missing")
        used.add(name)
        w = dequantize(tensors[name])
        if ".attn_q." in name:
            w = _unpermute_rope_rows(w, cfg.n_heads)
        elif ".attn_k." in name:
            w = _unpermute_rope_rows(w, cfg.n_kv_heads)
        return w

    params = stack_hf_layout(cfg, get, _GGUF_LAYER, "token_embd.weight", "output_norm.weight",
                             None if cfg.tie_embeddings else "output.weight")
    extra = sorted(set(tensors) - used - {"rope_freqs.weight"})
    if extra:
        raise CheckpointError(f"{path}: unexpected tensors {extra[:5]}{'...' if len(extra) > 5 else ''}")
    return cfg, params, meta


# ------------------------------------------------------------------------------ HF safetensors


def load_hf_llama(directory: str | Path) -> tuple[LlamaConfig, dict[str, np.ndarray]]:
    """Read a Hugging Face Llama-family checkpoint directory (config.json + *.safetensors).

    Each file is checked by `read_safetensors` (truncation, tensor sizes, finite values: CheckpointError
    naming the file and the tensor); BF16 files are read too."""
    directory = Path(directory)
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{directory} has no config.json; pass a Hugging Face checkpoint directory")
    cfg = LlamaConfig.from_hf_config(json.loads(cfg_path.read_text()))
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"{directory} has no *.safetensors files (PyTorch .bin checkpoints: re-save them with "
            "safe_serialization=True)")
    tensors: dict[str, np.ndarray] = {}
    for f in files:
        for k, v in read_safetensors(f).items():
            tensors[k] = v
    used: set[str] = set()

    def get(name: str) -> np.ndarray:
        if name not in tensors:
            raise CheckpointError(f"{directory}: tensor {name!r} is missing")
        used.add(name)
        return np.asarray(tensors[name], dtype=np.float32)

    head = None if cfg.tie_embeddings else "lm_head.weight"
    params = stack_hf_layout(cfg, get, _HF_LAYER, "model.embed_tokens.weight", "model.norm.weight", head)
    extra = sorted(k for k in set(tensors) - used if not k.endswith("rotary_emb.inv_freq")
                   and not (cfg.tie_embeddings and k == "lm_head.weight"))
    if extra:
        raise CheckpointError(f"{directory}: unexpected tensors {extra[:5]}")
    return cfg, params
