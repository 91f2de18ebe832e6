"""BLIP image captioning (Li et al. 2022) in Flax NNX, loaded from a Hugging Face directory, behind the
`Captioner` methods that LENS calls.

    from lens.caption import Captioner
    cap = Captioner.load(BLIP_DIR)            # config.json says model_type "blip": a BlipCaptioner
    cap = BlipCaptioner.load(BLIP_DIR, prompt=None, max_length=30)   # no prompt prefix, longer captions
    cap.caption(images)          -> list[str]        # greedy, after the prompt "a picture of"
    cap.caption(images, beam=4)  -> list[str]        # beam search (lens.decoding, GNMT length penalty)
    cap.sample(images, n=5)      -> list[list[str]]  # top-k sampling
    cap.prepare(images)          -> {"pixels": (B, S, S, 3)}   # the processor's pixels, computed once

The model is transformers' `BlipForConditionalGeneration`: a ViT (pre-LayerNorm blocks, fused qkv, class
token, learned positions, a final LayerNorm) whose every output token the decoder attends to, and a BERT
decoder (post-LayerNorm blocks: causal self-attention, cross-attention to the image tokens, GELU MLP) with
BERT's prediction head (dense, GELU, LayerNorm, then the word embeddings transposed unless untied).

Greedy decoding is transformers' `generate` with its defaults: the prompt's tokens after BLIP's [DEC]
start token, one token at a time until [SEP], `max_length` tokens in all (prompt included; 20, or the
directory's generation_config.json). Captions are the generated words after the prompt, as BLIP's own
code returns them (`strip_prompt=False` keeps the prompt, as `processor.decode` of the ids does).

The directory: config.json, model.safetensors (or shards listed by model.safetensors.index.json),
tokenizer.json (or vocab.txt), preprocessor_config.json or processor_config.json (else BLIP's defaults:
384 px, CLIP's mean and std). Images are resized to the model's side (bicubic, no crop), scaled by 1/255
and normalised with that mean and std, as `BlipImageProcessor` does.

Shapes: B batch, S image side, P patch side, N image tokens (patches + class token), T text positions,
D text width, E image width, H heads, K head width, F MLP width, V vocabulary.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from backbones.weight_files import CheckpointError, read_safetensors
from lens import decoding
from lens.images import rgb_images

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # BLIP's processor defaults (OpenAI CLIP's)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_PROMPT = "a picture of"
DEFAULT_MAX_LENGTH = 20  # transformers' generation default: tokens in all, prompt included


def is_blip_dir(directory) -> bool:
    """Whether `directory` holds a Hugging Face BLIP checkpoint (config.json with model_type "blip")."""
    spec = Path(directory) / "config.json"
    if not spec.is_file():
        return False
    try:
        return json.loads(spec.read_text()).get("model_type") == "blip"
    except (ValueError, OSError):
        return False


@dataclasses.dataclass(frozen=True)
class BlipConfig:
    """transformers' BlipVisionConfig / BlipTextConfig fields (their defaults where config.json omits them)."""
    image_size: int = 384  # S
    patch_size: int = 16  # P
    vision_width: int = 768  # E
    vision_layers: int = 12
    vision_heads: int = 12
    vision_mlp: int = 3072
    vision_eps: float = 1e-5
    vocab_size: int = 30524  # V
    text_width: int = 768  # D
    text_layers: int = 12
    text_heads: int = 8
    text_mlp: int = 3072
    max_positions: int = 512
    text_eps: float = 1e-12
    bos_id: int = 30522  # [DEC], the decoder's start token
    sep_id: int = 102  # [SEP], the end of a caption
    pad_id: int = 0
    tie_embeddings: bool = True  # the prediction head reuses the word embeddings

    def __post_init__(self):
        for what, w, h in (("vision", self.vision_width, self.vision_heads), ("text", self.text_width, self.text_heads)):
            if w % h:
                raise ValueError(f"{what} width {w} must be divisible by its {h} heads")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be divisible by patch_size {self.patch_size}")

    @property
    def num_image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1

    @classmethod
    def from_hf(cls, d: dict) -> "BlipConfig":
        """A Hugging Face BLIP config.json (model_type "blip") -> BlipConfig; unsupported options raise."""
        if d.get("model_type") != "blip":
            raise ValueError(f"not a BLIP config (model_type {d.get('model_type')!r}, expected 'blip')")
        v, t = d.get("vision_config") or {}, d.get("text_config") or {}
        for where, c in (("vision_config", v), ("text_config", t)):
            if c.get("hidden_act", "gelu") != "gelu":
                raise ValueError(f"{where}.hidden_act {c['hidden_act']!r} is not supported (BLIP uses 'gelu')")
        f = cls()
        size = lambda x: x if isinstance(x, int) else (x[0] if x[0] == x[1] else None)
        image_size, patch_size = size(v.get("image_size", f.image_size)), size(v.get("patch_size", f.patch_size))
        if image_size is None or patch_size is None:
            raise ValueError("non-square BLIP images or patches are not supported")
        if "encoder_hidden_size" in t and t["encoder_hidden_size"] != v.get("hidden_size", f.vision_width):
            raise ValueError(f"text_config.encoder_hidden_size {t['encoder_hidden_size']} != vision hidden_size "
                             f"{v.get('hidden_size', f.vision_width)}")
        return cls(image_size=image_size, patch_size=patch_size,
                   vision_width=v.get("hidden_size", f.vision_width),
                   vision_layers=v.get("num_hidden_layers", f.vision_layers),
                   vision_heads=v.get("num_attention_heads", f.vision_heads),
                   vision_mlp=v.get("intermediate_size", f.vision_mlp),
                   vision_eps=v.get("layer_norm_eps", f.vision_eps),
                   vocab_size=t.get("vocab_size", f.vocab_size), text_width=t.get("hidden_size", f.text_width),
                   text_layers=t.get("num_hidden_layers", f.text_layers),
                   text_heads=t.get("num_attention_heads", f.text_heads),
                   text_mlp=t.get("intermediate_size", f.text_mlp),
                   max_positions=t.get("max_position_embeddings", f.max_positions),
                   text_eps=t.get("layer_norm_eps", f.text_eps), bos_id=t.get("bos_token_id", f.bos_id),
                   sep_id=t.get("sep_token_id", f.sep_id), pad_id=t.get("pad_token_id", f.pad_id),
                   tie_embeddings=bool(d.get("tie_word_embeddings", True) and t.get("tie_word_embeddings", True)))


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)  # transformers' "gelu" is the exact erf form


def _norm(width: int, eps: float, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(width, epsilon=eps, use_fast_variance=False, rngs=rngs)


def _attend(q, k, v, mask=None):
    """q (B, T, H, K), k/v (B, N, H, K), mask broadcastable to (B, H, T, N) (True = keep) -> (B, T, H*K)."""
    logits = jnp.einsum("BTHK,BNHK->BHTN", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    out = jnp.einsum("BHTN,BNHK->BTHK", jax.nn.softmax(logits, axis=-1), v)
    return out.reshape(*out.shape[:2], -1)


# ----------------------------------------------------------------------------- vision: ViT
class VisionLayer(nnx.Module):
    def __init__(self, cfg: BlipConfig, *, rngs: nnx.Rngs):
        e = cfg.vision_width
        self.heads = cfg.vision_heads
        self.norm1 = _norm(e, cfg.vision_eps, rngs)
        self.qkv = nnx.Linear(e, 3 * e, rngs=rngs)
        self.proj = nnx.Linear(e, e, rngs=rngs)
        self.norm2 = _norm(e, cfg.vision_eps, rngs)
        self.fc1 = nnx.Linear(e, cfg.vision_mlp, rngs=rngs)
        self.fc2 = nnx.Linear(cfg.vision_mlp, e, rngs=rngs)

    def __call__(self, x):  # (B, N, E)
        b, n, e = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, e // self.heads)  # (B, N, 3, H, K)
        x = x + self.proj(_attend(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]))
        return x + self.fc2(_gelu(self.fc1(self.norm2(x))))


class VisionEncoder(nnx.Module):
    """Normalised pixels (B, S, S, 3) -> image tokens (B, N, E), the class token first."""

    def __init__(self, cfg: BlipConfig, *, rngs: nnx.Rngs):
        self.image_size, e = cfg.image_size, cfg.vision_width
        p = cfg.patch_size
        self.patch = nnx.Conv(3, e, (p, p), strides=(p, p), padding="VALID", rngs=rngs)
        self.cls = nnx.Param(jnp.zeros((e,)))
        self.pos = nnx.Param(jnp.zeros((cfg.num_image_tokens, e)))
        self.layers = nnx.List([VisionLayer(cfg, rngs=rngs) for _ in range(cfg.vision_layers)])
        self.norm = _norm(e, cfg.vision_eps, rngs)

    def __call__(self, pixels):
        if pixels.ndim != 4 or pixels.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"expected pixels (B, {self.image_size}, {self.image_size}, 3), got {pixels.shape}; "
                             "BlipCaptioner.prepare makes them from images")
        x = self.patch(pixels.astype(jnp.float32))  # (B, S/P, S/P, E)
        b, e = x.shape[0], x.shape[-1]
        x = jnp.concatenate([jnp.broadcast_to(self.cls[...], (b, 1, e)), x.reshape(b, -1, e)], axis=1)
        x = x + self.pos[...]  # (B, N, E)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


# ----------------------------------------------------------------------------- text: BERT decoder
class BertAttention(nnx.Module):
    """BERT attention with its output block: LayerNorm(x + dense(attention))."""

    def __init__(self, width: int, source_width: int, heads: int, eps: float, *, rngs: nnx.Rngs):
        self.heads = heads
        self.q = nnx.Linear(width, width, rngs=rngs)
        self.k = nnx.Linear(source_width, width, rngs=rngs)
        self.v = nnx.Linear(source_width, width, rngs=rngs)
        self.out = nnx.Linear(width, width, rngs=rngs)
        self.norm = _norm(width, eps, rngs)

    def _split(self, x):  # (B, T, D) -> (B, T, H, K)
        return x.reshape(*x.shape[:-1], self.heads, -1)

    def kv(self, src):  # (B, N, D or E) -> two (B, N, H, K)
        return self._split(self.k(src)), self._split(self.v(src))

    def __call__(self, x, k, v, mask=None):  # x (B, T, D)
        return self.norm(x + self.out(_attend(self._split(self.q(x)), k, v, mask)))


class TextLayer(nnx.Module):
    def __init__(self, cfg: BlipConfig, *, rngs: nnx.Rngs):
        d = cfg.text_width
        self.self_attn = BertAttention(d, d, cfg.text_heads, cfg.text_eps, rngs=rngs)
        self.cross_attn = BertAttention(d, cfg.vision_width, cfg.text_heads, cfg.text_eps, rngs=rngs)
        self.ff_in = nnx.Linear(d, cfg.text_mlp, rngs=rngs)
        self.ff_out = nnx.Linear(cfg.text_mlp, d, rngs=rngs)
        self.ff_norm = _norm(d, cfg.text_eps, rngs)

    def __call__(self, x, self_k, self_v, self_mask, cross_k, cross_v):
        """x (B, T, D); self_k/v (B, T', H, K) incl. x's own positions; cross_k/v (B, N, H, K)."""
        x = self.self_attn(x, self_k, self_v, self_mask)
        x = self.cross_attn(x, cross_k, cross_v)
        return self.ff_norm(x + self.ff_out(_gelu(self.ff_in(x))))


class TextDecoder(nnx.Module):
    def __init__(self, cfg: BlipConfig, *, rngs: nnx.Rngs):
        d = cfg.text_width
        self.cfg = cfg
        self.word = nnx.Embed(cfg.vocab_size, d, rngs=rngs)
        self.pos = nnx.Embed(cfg.max_positions, d, rngs=rngs)
        self.emb_norm = _norm(d, cfg.text_eps, rngs)
        self.layers = nnx.List([TextLayer(cfg, rngs=rngs) for _ in range(cfg.text_layers)])
        self.head_dense = nnx.Linear(d, d, rngs=rngs)
        self.head_norm = _norm(d, cfg.text_eps, rngs)
        self.head_bias = nnx.Param(jnp.zeros((cfg.vocab_size,)))
        self.head_kernel = None if cfg.tie_embeddings else nnx.Param(jnp.zeros((cfg.vocab_size, d)))

    def logits(self, x):  # (B, T, D) -> (B, T, V)
        h = self.head_norm(_gelu(self.head_dense(x)))
        table = self.word.embedding[...] if self.head_kernel is None else self.head_kernel[...]  # (V, D)
        return jnp.einsum("BTD,VD->BTV", h, table) + self.head_bias[...]

    def __call__(self, tokens, memory):
        """Teacher forcing: tokens (B, T) from [DEC], image tokens (B, N, E) -> logits (B, T, V)."""
        t = tokens.shape[1]
        if t > self.cfg.max_positions:
            raise ValueError(f"{t} positions exceed max_position_embeddings {self.cfg.max_positions}")
        x = self.emb_norm(self.word(tokens) + self.pos.embedding[:t])  # (B, T, D)
        causal = jnp.tril(jnp.ones((t, t), bool))
        for layer in self.layers:
            k, v = layer.self_attn.kv(x)
            ck, cv = layer.cross_attn.kv(memory)
            x = layer(x, k, v, causal, ck, cv)
        return self.logits(x)

    # -- incremental decoding --------------------------------------------------------------
    def cross_kv(self, memory):
        """Image tokens (B, N, E) -> per layer (k, v), each (B, N, H, K); computed once per image."""
        return [layer.cross_attn.kv(memory) for layer in self.layers]

    def init_cache(self, batch: int, length: int):
        """Empty self-attention cache: per layer (k, v), each (B, length, H, K)."""
        shape = (batch, length, self.cfg.text_heads, self.cfg.text_width // self.cfg.text_heads)
        return [(jnp.zeros(shape), jnp.zeros(shape)) for _ in self.layers]

    def decode_step(self, token, pos, cache, cross):
        """token (B,) at position pos (scalar) -> logits (B, V) and the cache with pos filled."""
        x = self.word(token[:, None]) + jax.lax.dynamic_slice_in_dim(self.pos.embedding[...], pos, 1)[None]
        x = self.emb_norm(x)  # (B, 1, D)
        length = cache[0][0].shape[1]
        visible = (jnp.arange(length) <= pos)[None, None, None, :]  # (1, 1, 1, T)
        new_cache = []
        for layer, (k_all, v_all), (ck, cv) in zip(self.layers, cache, cross):
            k, v = layer.self_attn.kv(x)  # (B, 1, H, K)
            k_all = jax.lax.dynamic_update_slice_in_dim(k_all, k, pos, axis=1)
            v_all = jax.lax.dynamic_update_slice_in_dim(v_all, v, pos, axis=1)
            x = layer(x, k_all, v_all, visible, ck, cv)
            new_cache.append((k_all, v_all))
        return self.logits(x)[:, 0], new_cache


class BlipModel(nnx.Module):
    """transformers' BlipForConditionalGeneration: `vision(pixels)` -> image tokens; `text(tokens, memory)`."""

    def __init__(self, cfg: BlipConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.vision = VisionEncoder(cfg, rngs=rngs)
        self.text = TextDecoder(cfg, rngs=rngs)

    def __call__(self, pixels, tokens):  # (B, S, S, 3), (B, T) -> (B, T, V)
        return self.text(tokens, self.vision(pixels))


# ----------------------------------------------------------------------------- weights
_IGNORED = ("position_ids",)  # buffers some exported checkpoints carry


def _read_weights(d: Path) -> tuple[dict[str, np.ndarray], str]:
    single, index = d / "model.safetensors", d / "model.safetensors.index.json"
    if single.is_file():
        return read_safetensors(single), str(single)
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        out = {}
        for s in shards:
            if not (d / s).is_file():
                raise CheckpointError(f"{index} names the shard {s}, which {d} lacks")
            out.update(read_safetensors(d / s))
        return out, str(index)
    raise FileNotFoundError(f"{d} has no model.safetensors (or model.safetensors.index.json); a BLIP directory "
                            "written by transformers' save_pretrained has one (.bin checkpoints are not read)")


def load_weights(model: BlipModel, stored: dict[str, np.ndarray], source: str = "") -> None:
    """Put transformers' BlipForConditionalGeneration tensors into `model` (in place). Every tensor the model
    needs is asserted by name and shape; a tensor of the file that nothing reads is an error too."""
    cfg, used = model.cfg, set()

    def get(name):
        if name not in stored:
            raise CheckpointError(f"{source}: tensor {name!r} is missing")
        used.add(name)
        return np.asarray(stored[name], np.float32)

    def put(param, name, fn=lambda a: a):
        a = fn(get(name))
        if tuple(a.shape) != tuple(param.shape):
            raise CheckpointError(f"{source}: tensor {name!r} gives shape {tuple(a.shape)}, the config expects "
                                  f"{tuple(param.shape)}")
        param.set_value(jnp.asarray(a))

    def linear(mod, name):  # torch (out, in) -> (in, out)
        put(mod.kernel, name + ".weight", lambda a: a.T)
        put(mod.bias, name + ".bias")

    def norm(mod, name):
        put(mod.scale, name + ".weight")
        put(mod.bias, name + ".bias")

    v, e = model.vision, "vision_model.embeddings."
    put(v.patch.kernel, e + "patch_embedding.weight", lambda a: a.transpose(2, 3, 1, 0))  # (E,3,P,P) -> (P,P,3,E)
    put(v.patch.bias, e + "patch_embedding.bias")
    put(v.cls, e + "class_embedding", lambda a: a.reshape(-1))
    put(v.pos, e + "position_embedding", lambda a: a.reshape(a.shape[-2:]))
    for i, layer in enumerate(v.layers):
        p = f"vision_model.encoder.layers.{i}."
        norm(layer.norm1, p + "layer_norm1")
        linear(layer.qkv, p + "self_attn.qkv")
        linear(layer.proj, p + "self_attn.projection")
        norm(layer.norm2, p + "layer_norm2")
        linear(layer.fc1, p + "mlp.fc1")
        linear(layer.fc2, p + "mlp.fc2")
    norm(v.norm, "vision_model.post_layernorm")

    t, b = model.text, "text_decoder.bert."
    put(t.word.embedding, b + "embeddings.word_embeddings.weight")
    put(t.pos.embedding, b + "embeddings.position_embeddings.weight")
    norm(t.emb_norm, b + "embeddings.LayerNorm")
    for i, layer in enumerate(t.layers):
        p = f"{b}encoder.layer.{i}."
        for attn, kind in ((layer.self_attn, "attention"), (layer.cross_attn, "crossattention")):
            for lin, n in ((attn.q, "query"), (attn.k, "key"), (attn.v, "value")):
                linear(lin, f"{p}{kind}.self.{n}")
            linear(attn.out, f"{p}{kind}.output.dense")
            norm(attn.norm, f"{p}{kind}.output.LayerNorm")
        linear(layer.ff_in, p + "intermediate.dense")
        linear(layer.ff_out, p + "output.dense")
        norm(layer.ff_norm, p + "output.LayerNorm")
    h = "text_decoder.cls.predictions."
    linear(t.head_dense, h + "transform.dense")
    norm(t.head_norm, h + "transform.LayerNorm")
    # transformers ties decoder.bias to predictions.bias, and (tie_word_embeddings) decoder.weight to the
    # word embeddings; files written with ties omit the tied copies, older ones store them.
    put(t.head_bias, h + "bias" if h + "bias" in stored else h + "decoder.bias")
    if t.head_kernel is not None:
        put(t.head_kernel, h + "decoder.weight")
    tied_copies = {h + "decoder.bias"} | ({h + "decoder.weight"} if t.head_kernel is None else set())
    used |= tied_copies & set(stored)
    extra = sorted(n for n in set(stored) - used if not n.endswith(_IGNORED))
    if extra:
        raise CheckpointError(f"{source}: {len(extra)} tensors that a BlipForConditionalGeneration captioner does "
                              f"not use, e.g. {extra[:5]} (a BLIP retrieval or VQA checkpoint?)")


# ----------------------------------------------------------------------------- text and pixels
def _load_tokenizer(d: Path):
    from tokenizers import Tokenizer

    if (d / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(d / "tokenizer.json"))
    if (d / "vocab.txt").is_file():
        from tokenizers.implementations import BertWordPieceTokenizer

        tcfg = _json(d / "tokenizer_config.json")
        return BertWordPieceTokenizer(str(d / "vocab.txt"), lowercase=tcfg.get("do_lower_case", True))._tokenizer
    raise FileNotFoundError(f"{d} has no tokenizer.json or vocab.txt (BLIP's BERT tokenizer files)")


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def image_processing(d: Path, image_size: int) -> dict:
    """The processor's settings: preprocessor_config.json, processor_config.json's "image_processor", or
    BLIP's defaults; the side is the model's."""
    p = _json(d / "preprocessor_config.json") or _json(d / "processor_config.json").get("image_processor", {})
    size = p.get("size", image_size)
    side = size if isinstance(size, int) else (size.get("height"), size.get("width"))
    if side not in (image_size, (image_size, image_size)):
        raise ValueError(f"{d}: the processor's size {size} differs from the model's image_size {image_size}")
    return {"mean": np.asarray(p.get("image_mean", CLIP_MEAN), np.float32),
            "std": np.asarray(p.get("image_std", CLIP_STD), np.float32),
            "resample": int(p.get("resample", Image.Resampling.BICUBIC)),
            "scale": float(p.get("rescale_factor", 1 / 255)) if p.get("do_rescale", True) else 1.0,
            "normalize": bool(p.get("do_normalize", True)), "resize": bool(p.get("do_resize", True))}


def preprocess(images, side: int, proc: dict) -> np.ndarray:
    """uint8 images (any sizes, or paths) -> float32 (B, S, S, 3) as BlipImageProcessor computes them."""
    out = []
    for a in rgb_images(images):
        if proc["resize"] and a.shape[:2] != (side, side):
            a = np.asarray(Image.fromarray(a).resize((side, side), proc["resample"]))
        x = (a.astype(np.float64) * proc["scale"]).astype(np.float32)
        out.append((x - proc["mean"]) / proc["std"] if proc["normalize"] else x)
    return np.stack(out)


# ----------------------------------------------------------------------------- the captioner
class BlipCaptioner:
    """A BLIP checkpoint behind `Captioner`'s methods (`prepare`, `caption`, `sample`, `label`)."""

    def __init__(self, model: BlipModel, tokenizer, processing: dict, *, prompt: str | None = DEFAULT_PROMPT,
                 max_length: int = DEFAULT_MAX_LENGTH, strip_prompt: bool = True, name: str = "blip"):
        self.model, self.tokenizer, self.processing = model, tokenizer, processing
        self.prompt, self.strip_prompt, self.name = prompt, strip_prompt, name
        cfg = model.cfg
        words = tokenizer.encode(prompt, add_special_tokens=False).ids if prompt else []
        self.prompt_ids = (cfg.bos_id, *words)  # what transformers' generate starts from, [DEC] first
        if not len(self.prompt_ids) < max_length <= cfg.max_positions:
            raise ValueError(f"max_length {max_length} must exceed the prompt's {len(self.prompt_ids)} tokens and "
                             f"fit max_position_embeddings {cfg.max_positions}")
        self.max_length = int(max_length)
        self._graphdef, self._state = nnx.split(model)

    @property
    def cfg(self) -> BlipConfig:
        return self.model.cfg

    @property
    def label(self) -> str:
        """Where captions come from, for LENS's prompt sources."""
        return f"BLIP ({self.name})"

    @classmethod
    def load(cls, directory: str | os.PathLike, *, prompt: str | None = DEFAULT_PROMPT,
             max_length: int | None = None, strip_prompt: bool = True) -> "BlipCaptioner":
        """A Hugging Face BLIP captioning directory; max_length None: generation_config.json's, else 20."""
        d = Path(directory)
        spec = _json(d / "config.json")
        if not spec:
            raise FileNotFoundError(f"{d} has no config.json (a BLIP directory written by save_pretrained)")
        cfg = BlipConfig.from_hf(spec)
        stored, source = _read_weights(d)
        model = nnx.eval_shape(lambda: BlipModel(cfg, rngs=nnx.Rngs(0)))
        load_weights(model, stored, source)
        if max_length is None:
            gen = _json(d / "generation_config.json")
            max_length = gen.get("max_length") or DEFAULT_MAX_LENGTH
        return cls(model, _load_tokenizer(d), image_processing(d, cfg.image_size), prompt=prompt,
                   max_length=max_length, strip_prompt=strip_prompt, name=d.resolve().name)

    def __hash__(self):
        return id(self)

    # -- inputs ----------------------------------------------------------------------------
    def inputs(self, images=None, pixels=None) -> np.ndarray:
        if (images is None) == (pixels is None):
            raise ValueError("pass images or pixels (exactly one)")
        if pixels is not None:
            return np.asarray(pixels, np.float32)
        return preprocess(images, self.cfg.image_size, self.processing)

    def prepare(self, images) -> dict:
        """Images -> the keyword `caption`/`sample` take, computed once: {"pixels": (B, S, S, 3)}."""
        return {"pixels": self.inputs(images)}

    # -- jitted parts ----------------------------------------------------------------------
    @functools.partial(jax.jit, static_argnums=0)
    def _encode(self, state, pixels):
        return nnx.merge(self._graphdef, state).vision(pixels)

    @functools.partial(jax.jit, static_argnums=0)
    def _logits(self, state, pixels, tokens):
        return nnx.merge(self._graphdef, state)(pixels, tokens)

    @functools.partial(jax.jit, static_argnums=0)
    def _greedy(self, state, pixels):
        """transformers' greedy `generate`: -> ids (B, max_length), the prompt first, PAD after [SEP]."""
        model = nnx.merge(self._graphdef, state)
        cfg, text, length = self.cfg, model.text, self.max_length
        prefix = jnp.asarray(self.prompt_ids, jnp.int32)
        n, b = len(self.prompt_ids), pixels.shape[0]
        cross = text.cross_kv(model.vision(pixels))
        seqs = jnp.full((b, length), cfg.pad_id, jnp.int32).at[:, :n].set(prefix)

        def body(carry):
            t, seqs, done, cache = carry
            logits, cache = text.decode_step(seqs[:, t], t, cache, cross)
            forced = t + 1 < n  # still inside the prompt
            tok = jnp.where(forced, prefix[jnp.minimum(t + 1, n - 1)], jnp.argmax(logits, -1).astype(jnp.int32))
            tok = jnp.where(done, cfg.pad_id, tok)
            return t + 1, seqs.at[:, t + 1].set(tok), done | (~forced & (tok == cfg.sep_id)), cache

        carry = (jnp.int32(0), seqs, jnp.zeros((b,), bool), text.init_cache(b, length))
        _, seqs, _, _ = jax.lax.while_loop(lambda c: (c[0] < length - 1) & ~jnp.all(c[2]), body, carry)
        return seqs

    def _prefilled(self, model, pixels, rows: int):
        """Cache and cross keys/values after the prompt but its last token, tiled to `rows` per image."""
        text, n = model.text, len(self.prompt_ids)
        b = pixels.shape[0]
        cross = text.cross_kv(model.vision(pixels))
        cache = text.init_cache(b, self.max_length)
        prefix = jnp.asarray(self.prompt_ids, jnp.int32)
        fill = lambda t, c: text.decode_step(jnp.full((b,), prefix[t]), t, c, cross)[1]
        cache = jax.lax.fori_loop(0, n - 1, fill, cache)
        tile = lambda x: jnp.repeat(x, rows, 0)
        cache, cross = jax.tree.map(tile, cache), jax.tree.map(tile, cross)
        last = self.prompt_ids[-1]
        # lens.decoding starts every row from a BOS token at its step 0: feed the prompt's last token there
        step = lambda tok, t, c: text.decode_step(jnp.where(t == 0, last, tok), t + n - 1, c, cross)
        return step, cache

    @functools.partial(jax.jit, static_argnums=(0, 3, 4))
    def _beam(self, state, pixels, beam: int, length_penalty: float):
        model = nnx.merge(self._graphdef, state)
        step, cache = self._prefilled(model, pixels, beam)
        cfg = self.cfg
        seqs, _ = decoding.beam_search(step, cache, pixels.shape[0], beam, self.max_length - len(self.prompt_ids),
                                       bos=cfg.bos_id, eos=cfg.sep_id, pad=cfg.pad_id, length_penalty=length_penalty)
        return seqs[:, 1:]  # the generated tokens

    @functools.partial(jax.jit, static_argnums=(0, 3, 4, 5))
    def _sample(self, state, pixels, n: int, top_k: int, temperature: float, key):
        model = nnx.merge(self._graphdef, state)
        step, cache = self._prefilled(model, pixels, n)
        cfg = self.cfg
        seqs = decoding.sample(step, cache, pixels.shape[0] * n, self.max_length - len(self.prompt_ids), key,
                               bos=cfg.bos_id, eos=cfg.sep_id, pad=cfg.pad_id, top_k=top_k, temperature=temperature)
        return seqs[:, 1:]

    # -- public ----------------------------------------------------------------------------
    def image_tokens(self, images=None, *, pixels=None) -> np.ndarray:
        """The vision encoder's output (B, N, E), transformers' `image_embeds`."""
        return np.asarray(self._encode(self._state, jnp.asarray(self.inputs(images, pixels))))

    def logits(self, tokens, images=None, *, pixels=None) -> np.ndarray:
        """Teacher-forced decoder logits (B, T, V) for tokens (B, T) that start with [DEC]."""
        x = jnp.asarray(self.inputs(images, pixels))
        return np.asarray(self._logits(self._state, x, jnp.asarray(tokens, jnp.int32)))

    def greedy_ids(self, images=None, *, pixels=None) -> np.ndarray:
        """(B, max_length) ids as transformers' `generate` returns them (the prompt first), PAD-filled."""
        return np.asarray(self._greedy(self._state, jnp.asarray(self.inputs(images, pixels))))

    def detokenize(self, generated) -> str:
        """Generated ids (after the prompt) -> text, stopping at [SEP]; the prompt first if not strip_prompt."""
        ids = [int(i) for i in generated]
        if self.cfg.sep_id in ids:
            ids = ids[: ids.index(self.cfg.sep_id)]
        if not self.strip_prompt:
            ids = list(self.prompt_ids) + ids
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def caption(self, images=None, beam: int = 1, length_penalty: float = 0.6, *, pixels=None) -> list[str]:
        """One caption per image: greedy (beam=1, transformers' default) or beam search."""
        x = jnp.asarray(self.inputs(images, pixels))
        if int(beam) == 1:
            gen = np.asarray(self._greedy(self._state, x))[:, len(self.prompt_ids):]
        else:
            gen = np.asarray(self._beam(self._state, x, int(beam), float(length_penalty)))
        return [self.detokenize(g) for g in gen]

    def sample(self, images=None, n: int = 5, top_k: int = 10, temperature: float = 1.0, seed: int = 0,
               unique: bool = True, *, pixels=None) -> list[list[str]]:
        """N captions per image by top-k sampling (duplicates dropped if `unique`)."""
        x = jnp.asarray(self.inputs(images, pixels))
        seqs = np.asarray(self._sample(self._state, x, int(n), int(top_k), float(temperature), jax.random.key(seed)))
        texts = [self.detokenize(s) for s in seqs]
        out = [texts[i * n:(i + 1) * n] for i in range(len(x))]
        return [list(dict.fromkeys(t)) for t in out] if unique else out
