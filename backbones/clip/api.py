"""The public CLIP wrapper: ``load_clip`` and :class:`ClipModel` (encode images / texts, relevance).

    from backbones import load_clip
    clip = load_clip()                   # the default: LiT on the frozen ImageNet backbone (backbones/clip/lit/)
    clip = load_clip("offline")          # the older stand-in trained on scenes and Fashion-MNIST only
    clip = load_clip("/path/hf-clip-dir")  # Hugging Face CLIPModel dir (config.json + model.safetensors|.bin)
    clip = load_clip("/path/ViT-B-32.safetensors", config="ViT-B/32")  # OpenAI / open_clip state dict
    clip.encode_image(images)            # uint8 (B, H, W, 3) | (B, H, W) | (B, H, W, 1) -> (B, D), unit norm
    clip.encode_text(["a photo of a dog"])  # -> (B, D), unit norm
    clip.relevance(images, ["dog", "cat"])  # (B, V) cosine of image and "a photo of {word}"

Images of any size and grayscale are accepted: grayscale is repeated to RGB, a non-square image is
center-cropped to a square, and the square is resized (bilinear, antialiased) to the model's input
size, then normalised with the model's pixel mean / std. Vocabulary embeddings used by
``relevance`` / ``text_embeddings`` are computed once and cached on disk under
``$LLMSIGHT_CACHE/clip-text`` (default ``~/.cache/llmsight/clip-text``), keyed by a fingerprint
of the model (config, tokenizer and weights), a hash of the code that computes text embeddings
(``text_code_version``) and a hash of the template and the vocabulary.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from backbones.clip import loaders
from backbones.clip.cache import cache_dir
from backbones.clip.config import CONFIGS, CLIPConfig, get_config, ALIASES
from backbones.clip.model import CLIP
from backbones.clip.tokenizer import BPETokenizer, tokenizer_from_spec

_HERE = os.path.dirname(os.path.abspath(__file__))
OFFLINE_DIR = os.path.join(_HERE, "offline")
OFFLINE_NAMES = ("offline", "llmsight-offline")
DEFAULT_MODEL = "lit"
# The files whose code turns a string into a text embedding: the text tower and its layers, the
# config that builds it, the tokenizers, and this wrapper's tokenize / encode_text. Their bytes are
# part of the text cache's key, so an edit to any of them never reads embeddings the old code made.
TEXT_CODE_FILES = ("model.py", "config.py", "tokenizer.py", "api.py")
_text_code_version: str | None = None


def text_code_version(paths: Sequence[str] | None = None) -> str:
    """sha256 of the text-encoding source files (TEXT_CODE_FILES under backbones/clip, or `paths`).
    The default is read once per process, the first time it is asked for."""
    global _text_code_version
    if paths is None and _text_code_version is not None:
        return _text_code_version
    h = hashlib.sha256()
    for path in paths or [os.path.join(_HERE, f) for f in TEXT_CODE_FILES]:
        with open(path, "rb") as f:
            h.update(os.path.basename(path).encode() + b"\x00" + f.read() + b"\x00")
    if paths is None:
        _text_code_version = h.hexdigest()
    return h.hexdigest()


# Shipped models by name -> (directory, the command that trained it).
OFFLINE_MODELS = {
    "lit": (os.path.join(_HERE, "lit"), "python -m train.lit --config train/configs/contrastive_lit.py"),
    **{n: (OFFLINE_DIR, "python -m train.contrastive --config train/configs/contrastive_offline.py")
       for n in OFFLINE_NAMES},
    "offline-aliases": (os.path.join(_HERE, "offline_aliases"), "python -m train.contrastive --config "
                        "train/configs/contrastive_offline.py --set data.fmnist_names=aliases"),
}


def _bucket(n: int, step: int = 8) -> int:
    return max(step, -(-n // step) * step)


class ClipModel:
    """A CLIP model with its tokenizer and preprocessing; all outputs are NumPy float32."""

    def __init__(self, model: CLIP, tokenizer, info: dict | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.config: CLIPConfig = model.config
        self.info = dict(info or {})
        # Words of the texts the model was trained on (our own checkpoints; None for CLIP proper).
        self.known_words: frozenset[str] | None = self.info.pop("known_words", None)
        self.image_size = self.config.vision.image_size
        self.embed_dim = self.config.embed_dim
        self._mean = np.asarray(self.config.image_mean, np.float32)
        self._std = np.asarray(self.config.image_std, np.float32)
        self._fingerprint: str | None = None
        graphdef, state = nnx.split(model)

        self.backbone_name = self.config.vision.backbone   # LiT: a frozen ImageNet backbone feeds the head
        self._backbone = None

        @jax.jit
        def _image(state, pixels):  # (B, s, s, 3) float in [0, 1], any s; LiT: backbone features (B, F)
            m = nnx.merge(graphdef, state)
            if self.backbone_name:
                return m.encode_image(pixels)
            S = self.image_size
            if pixels.shape[1] != S:
                pixels = jax.image.resize(pixels, (pixels.shape[0], S, S, 3), "linear", antialias=True)
            return m.encode_image((pixels - self._mean) / self._std)

        @jax.jit
        def _text(state, ids):  # (B, T) int32
            return nnx.merge(graphdef, state).encode_text(ids)

        self._state, self._image_fn, self._text_fn = state, _image, _text

    # ------------------------------------------------------------------ images
    def preprocess(self, images) -> np.ndarray:
        """uint8 (B, H, W[, 1|3]) -> float32 (B, s, s, 3) in [0, 1], center-cropped square (s = min(H, W))."""
        x = np.asarray(images)
        if x.dtype != np.uint8:
            raise TypeError(f"encode_image wants uint8 images (B, H, W, 3) in 0..255, got dtype {x.dtype}; "
                            "convert with (x * 255).round().astype(np.uint8) if yours are floats in [0, 1]")
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise ValueError(f"expected images (B, H, W, 3), (B, H, W, 1) or (B, H, W); got shape {x.shape}")
        if x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        H, W = x.shape[1:3]
        s = min(H, W)
        top, left = (H - s) // 2, (W - s) // 2
        return x[:, top:top + s, left:left + s].astype(np.float32) / 255.0

    @property
    def vision_backbone(self):
        """LiT models: the frozen image backbone (loaded on first use); None for a ViT image tower."""
        if self.backbone_name and self._backbone is None:
            from backbones import load_vision

            self._backbone = load_vision(self.backbone_name)
        return self._backbone

    def image_features(self, images) -> np.ndarray:
        """LiT models: uint8 images (B, H, W[, 1|3]) -> the frozen backbone's pooled features (B, F)."""
        x = np.asarray(images)
        if x.dtype != np.uint8:
            raise TypeError(f"encode_image wants uint8 images (B, H, W, 3) in 0..255, got dtype {x.dtype}")
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise ValueError(f"expected images (B, H, W, 3), (B, H, W, 1) or (B, H, W); got shape {x.shape}")
        if len(x) == 0:
            return np.zeros((0, self.config.vision.feature_dim), np.float32)
        return self.vision_backbone.embed(np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x)

    def encode_features(self, feats, batch_size: int = 4096) -> np.ndarray:
        """LiT models: backbone features (B, F) -> L2-normalised embeddings (B, D)."""
        f = np.asarray(feats, np.float32)
        return np.concatenate([np.asarray(self._image_fn(self._state, f[i:i + batch_size]))
                               for i in range(0, len(f), batch_size)] or [np.zeros((0, self.embed_dim), np.float32)])

    def encode_image(self, images, batch_size: int = 256) -> np.ndarray:
        """uint8 images (B, H, W, 3) (or grayscale) -> L2-normalised embeddings (B, D)."""
        if self.backbone_name:
            return self.encode_features(self.image_features(images))
        x = self.preprocess(images)
        out = []
        for i in range(0, len(x), batch_size):
            chunk = x[i:i + batch_size]
            n = len(chunk)
            if n < batch_size and len(x) > batch_size:  # pad the last chunk: one compiled shape
                chunk = np.concatenate([chunk, np.zeros((batch_size - n,) + chunk.shape[1:], chunk.dtype)])
            out.append(np.asarray(self._image_fn(self._state, chunk))[:n])
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)

    # ------------------------------------------------------------------ texts
    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        return self.tokenizer(texts)

    def encode_text(self, texts: Sequence[str], batch_size: int = 512) -> np.ndarray:
        """Strings -> L2-normalised embeddings (B, D). Batched by length (few compiled shapes)."""
        ids = self.tokenizer(texts)                                  # (B, T) int32
        lengths = np.argmax(ids == self.tokenizer.eos_id, axis=1) + 1  # through the end token
        order = np.argsort(lengths, kind="stable")
        out = np.zeros((len(ids), self.embed_dim), np.float32)
        for i in range(0, len(ids), batch_size):
            idx = order[i:i + batch_size]
            T = min(_bucket(int(lengths[idx].max())), ids.shape[1])
            chunk = ids[idx, :T]
            n = len(chunk)
            if n < batch_size and len(ids) > batch_size:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, 0)])
            out[idx] = np.asarray(self._text_fn(self._state, chunk))[:n]
        return out

    # ------------------------------------------------------------------ vocabulary relevance
    @property
    def fingerprint(self) -> str:
        """sha256 of the config, the tokenizer spec and every weight (computed once)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(json.dumps(self.config.to_dict(), sort_keys=True).encode())
            h.update(json.dumps(getattr(self.tokenizer, "spec", lambda: {})(), sort_keys=True).encode())
            for k, v in sorted(loaders.param_dict(self.model).items()):
                h.update(k.encode())
                h.update(np.ascontiguousarray(np.asarray(v, np.float32)).tobytes())
            if self.config.text.frozen_token_dim:
                h.update(np.ascontiguousarray(np.asarray(self.model.text.token_table[...])).tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def text_cache_path(self, vocab: Sequence[str], template: str = "{}") -> str:
        """Where text_embeddings caches this vocabulary: keyed by the model's weights, config and tokenizer
        (fingerprint), the text-encoding code (text_code_version), the template and the words."""
        h = hashlib.sha256(template.encode() + b"\x00" + "\x00".join(vocab).encode()).hexdigest()[:20]
        return os.path.join(cache_dir("clip-text"), f"{self.fingerprint[:20]}-{text_code_version()[:12]}-{h}.npy")

    def text_embeddings(self, vocab: Sequence[str], template: str = "{}", cache: bool = True,
                        batch_size: int = 512) -> np.ndarray:
        """Embeddings (V, D) of ``template.format(word)`` for each word; cached on disk when ``cache``."""
        vocab = list(vocab)
        if "{}" not in template:
            raise ValueError(f"template must contain '{{}}' where the word goes, got {template!r}")
        texts = [template.format(w) for w in vocab]
        if not cache:
            return self.encode_text(texts, batch_size)
        path = self.text_cache_path(vocab, template)
        if os.path.exists(path):
            try:
                emb = np.load(path)
                if emb.shape == (len(vocab), self.embed_dim):
                    return emb
            except (ValueError, OSError):
                pass  # damaged cache file: recompute it
        emb = self.encode_text(texts, batch_size)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            np.save(f, emb)
        os.replace(tmp, path)
        return emb

    def relevance(self, images, vocab: Sequence[str], template: str = "a photo of {}") -> np.ndarray:
        """Cosine similarity (B, V) of each image with ``template.format(word)`` for each vocabulary word."""
        return self.encode_image(images) @ self.text_embeddings(vocab, template).T

    def __repr__(self):
        v, t = self.config.vision, self.config.text
        if v.backbone:
            return (f"ClipModel({self.info.get('name') or self.info.get('path')}, LiT on frozen {v.backbone} "
                    f"({v.feature_dim} features), text x{t.layers}x{t.width}, embed {self.embed_dim})")
        return (f"ClipModel({self.info.get('name') or self.info.get('path')}, image {v.image_size}px/{v.patch_size} "
                f"x{v.layers}x{v.width}, text x{t.layers}x{t.width}, embed {self.embed_dim})")


def _tokenizer_for_dir(path: str, context_length: int):
    if os.path.exists(os.path.join(path, "tokenizer.json")):
        return BPETokenizer.from_file(os.path.join(path, "tokenizer.json"), context_length=context_length)
    if os.path.exists(os.path.join(path, "vocab.json")) and os.path.exists(os.path.join(path, "merges.txt")):
        return BPETokenizer.from_vocab_merges(os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt"),
                                              context_length=context_length)
    return BPETokenizer.from_open_clip_vocab(context_length=context_length)


def load_clip(name_or_path: str | None = None, *, config: str | CLIPConfig | None = None, act: str = "quick_gelu",
              tokenizer=None, llm=None) -> ClipModel:
    """Load a CLIP model.

    ``name_or_path``: ``None`` / ``"lit"`` (the default: LiT on the frozen EfficientNet-Lite0, trained on emoji,
    Tux Paint, Fashion-MNIST, scenes and ImageNet names), ``"offline"`` (the older stand-in), ``"offline-aliases"`` (the
    same, trained with everyday class names too: the Fashion-MNIST SPAE's teacher), a directory of ours
    (``config.json`` with ``"format": "llmsight-clip"``), a Hugging Face ``CLIPModel`` directory, or an
    OpenAI / open_clip state-dict file (.safetensors / .npz / .bin / .pt). For state dicts, ``config``
    (a named architecture such as ``"ViT-B/32"`` or a :class:`CLIPConfig`) fixes the architecture, else
    it is read from the shapes with ``act``. ``tokenizer``: override the text tokenizer. ``llm``: a
    loaded LLM whose embeddings feed a text tower built on them (else they are read from its GGUF).
    """
    if name_or_path is None or name_or_path in OFFLINE_MODELS:
        directory, how = OFFLINE_MODELS[name_or_path or DEFAULT_MODEL]
        if not os.path.exists(os.path.join(directory, "model.safetensors")):
            raise FileNotFoundError(
                f"the shipped contrastive checkpoint is missing from {directory}; retrain it with "
                f"`{how} --workdir DIR` and copy DIR/export/* there")
        name_or_path = directory
    if name_or_path in CONFIGS or name_or_path in ALIASES:
        raise FileNotFoundError(
            f"{name_or_path!r} is an architecture, and no weights for it ship offline; download the checkpoint "
            "elsewhere and pass its path (a Hugging Face CLIP directory or an OpenAI/open_clip state-dict file), "
            f"e.g. load_clip(path, config={name_or_path!r})")
    path = str(name_or_path)
    if os.path.isdir(path):
        if loaders.is_own_dir(path):
            with open(os.path.join(path, "config.json")) as f:
                spec = json.load(f)["tokenizer"]
            table, llm_tok = None, None
            if spec["type"] == "llm":
                from backbones.clip.llm_text import llm_token_assets

                llm_tok, table = llm_token_assets(llm, spec["name"])
            model, info = loaders.load_own(path, token_table=table)
            tok = tokenizer or tokenizer_from_spec(spec, path, llm_tok)
        else:
            model, info = loaders.load_hf_dir(path)
            tok = tokenizer or _tokenizer_for_dir(path, model.config.text.context_length)
    elif os.path.isfile(path):
        cfg = get_config(config) if isinstance(config, str) else config
        model, info = loaders.load_openai_state_dict(path, cfg, act=act)
        tok = tokenizer or BPETokenizer.from_open_clip_vocab(context_length=model.config.text.context_length)
    else:
        raise FileNotFoundError(f"{path!r} is neither 'offline', a checkpoint directory nor a state-dict file "
                                f"(named architectures without weights: {sorted(CONFIGS)})")
    if tok.vocab_size > model.config.text.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size} ids but the text tower only {model.config.text.vocab_size}")
    return ClipModel(model, tok, info)
