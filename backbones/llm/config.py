"""Configuration of a Llama-family decoder, read from GGUF metadata or a Hugging Face config.json."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int          # V
    dim: int                 # D, residual width
    n_layers: int            # L
    n_heads: int             # H, query heads
    n_kv_heads: int          # K, key/value heads (H % K == 0: grouped-query attention)
    head_dim: int            # Dh
    hidden_dim: int          # F, SwiGLU width
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True   # output head shares the token-embedding table
    max_seq_len: int = 8192
    softmax_plus_one: bool = False  # "quiet attention": softmax denominator 1 + sum(exp)

    def __post_init__(self):
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")

    def replace(self, **changes: Any) -> "LlamaConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_gguf_metadata(cls, meta: Mapping[str, Any]) -> "LlamaConfig":
        arch = meta["general.architecture"]
        if arch != "llama":
            raise ValueError(
                f"GGUF architecture {arch!r} is not supported by the Llama decoder; "
                "supported: 'llama' (SmolLM2, Llama, Mistral-style checkpoints)."
            )

        def get(key, default=None):
            full = f"{arch}.{key}"
            if full in meta:
                return meta[full]
            if default is None:
                raise KeyError(f"GGUF metadata lacks {full!r}")
            return default

        dim = int(get("embedding_length"))
        n_heads = int(get("attention.head_count"))
        head_dim = int(meta.get(f"{arch}.attention.key_length", dim // n_heads))
        return cls(
            vocab_size=int(meta.get(f"{arch}.vocab_size", len(meta.get("tokenizer.ggml.tokens", [])))),
            dim=dim,
            n_layers=int(get("block_count")),
            n_heads=n_heads,
            n_kv_heads=int(get("attention.head_count_kv", n_heads)),
            head_dim=head_dim,
            hidden_dim=int(get("feed_forward_length")),
            rope_base=float(get("rope.freq_base", 10000.0)),
            norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
            tie_embeddings=True,  # the loader sets False when output.weight is present
            max_seq_len=int(get("context_length", 2048)),
        )

    @classmethod
    def from_hf_config(cls, cfg: Mapping[str, Any]) -> "LlamaConfig":
        archs = cfg.get("architectures") or []
        if cfg.get("model_type") not in ("llama", "mistral", "qwen2", None) and not any("Llama" in a for a in archs):
            raise ValueError(f"config.json model_type {cfg.get('model_type')!r} is not a Llama-family decoder")
        if cfg.get("rope_scaling"):
            raise ValueError("rope_scaling is not supported yet; use a checkpoint without it")
        dim = int(cfg["hidden_size"])
        n_heads = int(cfg["num_attention_heads"])
        return cls(
            vocab_size=int(cfg["vocab_size"]),
            dim=dim,
            n_layers=int(cfg["num_hidden_layers"]),
            n_heads=n_heads,
            n_kv_heads=int(cfg.get("num_key_value_heads") or n_heads),
            head_dim=int(cfg.get("head_dim") or dim // n_heads),
            hidden_dim=int(cfg["intermediate_size"]),
            rope_base=float(cfg.get("rope_theta", 10000.0)),
            norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            max_seq_len=int(cfg.get("max_position_embeddings", 2048)),
        )


def smollm2_135m() -> LlamaConfig:
    """SmolLM2-135M: V=49152, D=576, 30 layers, 9 query / 3 KV heads, RoPE base 1e5, tied head."""
    return LlamaConfig(vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3, head_dim=64,
                       hidden_dim=1536, rope_base=1e5, norm_eps=1e-5, tie_embeddings=True, max_seq_len=8192)


def tiny(vocab_size: int = 256) -> LlamaConfig:
    """A tiny random config for shape and gradient tests."""
    return LlamaConfig(vocab_size=vocab_size, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                       hidden_dim=64, rope_base=10000.0, norm_eps=1e-5, tie_embeddings=True, max_seq_len=256)
