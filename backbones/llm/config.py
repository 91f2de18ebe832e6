"""Configuration of a Llama-family decoder, read from GGUF metadata or a Hugging Face config.json.

One decoder covers Llama (1, 2, 3.x), Mistral and Qwen 2 / 2.5 checkpoints: they differ in the RoPE
frequencies (Llama 3.x's "llama3" scaling, `RopeScaling`), in biases on the query/key/value
projections (Qwen 2) and in a sliding attention window (Mistral). A config.json asking for anything
else (another RoPE type, an output-projection bias, another activation) is refused by name.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

ROPE_TYPES = ("default", "linear", "llama3")   # RoPE variants of config.json that the decoders implement


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Scaled RoPE frequencies of a long-context checkpoint; hashable, as the config is a static jit argument.

    linear: every inverse frequency divided by `factor` (positions / factor).
    llama3: wavelengths longer than original_max_position / low_freq_factor are divided by `factor`,
    those shorter than original_max_position / high_freq_factor are kept, and the band between is
    interpolated linearly in original_max_position / wavelength (Llama 3.1's long-context recipe)."""
    kind: str                            # "linear" or "llama3"
    factor: float
    low_freq_factor: float = 1.0         # llama3 only
    high_freq_factor: float = 4.0        # llama3 only
    original_max_position: int = 8192    # llama3 only: the pre-training context

    def __post_init__(self):
        if self.kind not in ("linear", "llama3"):
            raise ValueError(f"RoPE scaling kind {self.kind!r} is not implemented; supported: linear, llama3")
        if self.factor <= 0:
            raise ValueError(f"RoPE scaling factor must be > 0, got {self.factor}")
        if self.kind == "llama3" and not self.high_freq_factor > self.low_freq_factor > 0:
            raise ValueError(f"llama3 RoPE scaling needs high_freq_factor > low_freq_factor > 0, got "
                             f"{self.high_freq_factor} and {self.low_freq_factor}")


def hf_rope(cfg: Mapping[str, Any], default_theta: float,
            layer_type: str | None = None) -> tuple[float, RopeScaling | None]:
    """(RoPE base, scaling or None) from a config.json in either layout.

    transformers >= 5 writes `rope_parameters` ({"rope_type", "rope_theta", "factor", ...}; per layer
    type for Gemma 3: {"full_attention": {...}, "sliding_attention": {...}}); older files give
    `rope_scaling` ({"rope_type" or "type", "factor", ...}) and `rope_theta` beside it. A RoPE type
    other than ROPE_TYPES is a ValueError naming it, never a silently plain RoPE."""
    params = cfg.get("rope_parameters")
    if isinstance(params, Mapping) and layer_type is not None and isinstance(params.get(layer_type), Mapping):
        params = params[layer_type]
    elif isinstance(params, Mapping) and any(isinstance(v, Mapping) for v in params.values()):
        raise ValueError(f"config.json rope_parameters are given per layer type ({sorted(params)}), "
                         f"but not for {layer_type!r}")
    if not params:
        params = cfg.get("rope_scaling") or {}
    if not isinstance(params, Mapping):
        raise ValueError(f"config.json rope parameters must be an object, got {params!r}")
    theta = params.get("rope_theta") or cfg.get("rope_theta") or default_theta
    kind = params.get("rope_type") or params.get("type") or "default"
    if kind not in ROPE_TYPES:
        raise ValueError(f"RoPE type {kind!r} in config.json is not supported; supported: {', '.join(ROPE_TYPES)}")
    if float(params.get("partial_rotary_factor") or 1.0) != 1.0:
        raise ValueError("partial_rotary_factor != 1 (RoPE on part of each head) is not supported")
    if kind == "default":
        return float(theta), None
    if kind == "linear":
        return float(theta), RopeScaling("linear", float(params["factor"]))
    original = params.get("original_max_position_embeddings") or cfg.get("max_position_embeddings")
    return float(theta), RopeScaling("llama3", float(params["factor"]), float(params["low_freq_factor"]),
                                     float(params["high_freq_factor"]), int(original))


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
    rope_scaling: RopeScaling | None = None   # None: plain RoPE with rope_base
    qkv_bias: bool = False          # biases on the query/key/value projections (Qwen 2)
    sliding_window: int | None = None   # a query at slot i sees keys i - window < j <= i (Mistral)

    def __post_init__(self):
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ValueError(f"sliding_window must be >= 1 or None, got {self.sliding_window}")

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
        """A config.json of a Llama, Mistral or Qwen 2 checkpoint (either RoPE layout: `hf_rope`)."""
        model_type = cfg.get("model_type")
        archs = cfg.get("architectures") or []
        if model_type not in ("llama", "mistral", "qwen2", None) and not any("Llama" in a for a in archs):
            raise ValueError(f"config.json model_type {model_type!r} is not a Llama-family decoder "
                             "(supported: llama, mistral, qwen2; gemma2 / gemma3 load through backbones.llm.gemma3)")
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"config.json hidden_act {act!r} is not supported (the decoder's FFN is SwiGLU: silu)")
        if cfg.get("mlp_bias"):
            raise ValueError("config.json mlp_bias=true (biases in the FFN) is not supported")
        if model_type != "qwen2" and cfg.get("attention_bias"):
            raise ValueError("config.json attention_bias=true (biases on q, k, v and o) is not supported: the "
                             "decoder has query/key/value biases (Qwen 2) but none on the output projection")
        window = None
        if model_type == "qwen2":       # Qwen 2's window applies from layer max_window_layers on, when enabled
            if cfg.get("use_sliding_window"):
                raise ValueError("config.json use_sliding_window=true (Qwen 2's per-layer window) is not supported")
        elif cfg.get("sliding_window") is not None:
            window = int(cfg["sliding_window"])
        base, scaling = hf_rope(cfg, default_theta=10000.0)
        dim = int(cfg["hidden_size"])
        n_heads = int(cfg["num_attention_heads"])
        max_pos = int(cfg.get("max_position_embeddings") or 2048)
        return cls(
            vocab_size=int(cfg["vocab_size"]),
            dim=dim,
            n_layers=int(cfg["num_hidden_layers"]),
            n_heads=n_heads,
            n_kv_heads=int(cfg.get("num_key_value_heads") or n_heads),
            head_dim=int(cfg.get("head_dim") or dim // n_heads),
            hidden_dim=int(cfg["intermediate_size"]),
            rope_base=base,
            norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            max_seq_len=max_pos,
            rope_scaling=scaling,
            qkv_bias=model_type == "qwen2",
            sliding_window=window,
        )

def smollm2_135m() -> LlamaConfig:
    """SmolLM2-135M: V=49152, D=576, 30 layers, 9 query / 3 KV heads, RoPE base 1e5, tied head."""
    return LlamaConfig(vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3, head_dim=64,
                       hidden_dim=1536, rope_base=1e5, norm_eps=1e-5, tie_embeddings=True, max_seq_len=8192)


def tiny(vocab_size: int = 256) -> LlamaConfig:
    """A tiny random config for shape and gradient tests."""
    return LlamaConfig(vocab_size=vocab_size, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                       hidden_dim=64, rope_base=10000.0, norm_eps=1e-5, tie_embeddings=True, max_seq_len=256)
