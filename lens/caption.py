"""`Captioner`: the trained captioner model + its vocabulary + jitted decoding + save/load.

    cap = Captioner.load()                       # the shipped checkpoint, lens/pretrained/captioner
    cap = Captioner.load("real")                 # real pictures: on frozen EfficientNet-Lite features
    cap.caption(images)            -> list[str]  # beam search, one global caption per image
    cap.sample(images, n=5)        -> list[list[str]]  # top-k sampling, N "intensive" captions
    cap.caption(features=feats)    -> list[str]  # a features captioner, from precomputed backbone features

Detokenising needs the tokenizer of the LLM whose ids the captioner writes (`cap.llm_name`, its
metadata's `llm`: SmolLM2 for the shipped ones): pass `decode=llm.decode` of that LLM (or any
ids -> str); by default that tokenizer alone is read (`load_llm_tokenizer`) on first use.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx
from safetensors.numpy import save_file

from backbones.weight_files import read_safetensors

from lens import decoding
from lens.blip import BlipCaptioner, is_blip_dir
from lens.caption_vocab import BOS, EOS, PAD, UNK, CaptionVocab
from lens.captioner import CaptionerConfig, CaptionerModel
from lens.images import prepare_images, rgb_images

DEFAULT_DIR = Path(__file__).parent / "pretrained" / "captioner"
SHIPPED = {"scenes": DEFAULT_DIR, "real": Path(__file__).parent / "pretrained" / "captioner_real"}
SAVE_DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))


def _flat_params(model: nnx.Module) -> dict[str, np.ndarray]:
    state = nnx.state(model, nnx.Param)
    leaves, _ = jax.tree_util.tree_flatten_with_path(state)
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves}


DEFAULT_LLM = "smollm2-135m"     # the LLM of a captioner whose metadata names none


def _default_decode(llm_name: str = DEFAULT_LLM) -> Callable[[list[int]], str]:
    """FrozenLLM.decode of `llm_name`, from its tokenizer alone (the weights are not read)."""
    from backbones.llm.api import load_llm_tokenizer

    tokenizer = load_llm_tokenizer(llm_name)
    return lambda ids: tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)


class Captioner:
    def __init__(self, model: CaptionerModel, vocab: CaptionVocab, decode: Callable[[list[int]], str] | None = None,
                 meta: dict | None = None, vision=None):
        """`vision`: a loaded frozen backbone to reuse when it is the one a features captioner reads
        (cfg.backbone); otherwise, and by default, load_vision(cfg.backbone) on first use."""
        if model.cfg.vocab_size != len(vocab):
            raise ValueError(f"model vocab_size {model.cfg.vocab_size} != vocabulary size {len(vocab)}")
        self.model, self.vocab, self.meta = model, vocab, dict(meta or {})
        self._decode = decode
        same = vision is not None and getattr(getattr(vision, "config", None), "name", None) == model.cfg.backbone
        self._vision = vision if same and model.cfg.encoder == "features" else None
        self._graphdef, self._state = nnx.split(model)

    @property
    def cfg(self) -> CaptionerConfig:
        return self.model.cfg

    @property
    def llm_name(self) -> str:
        """The LLM whose token ids this captioner writes (its metadata's `llm`)."""
        return self.meta.get("llm") or DEFAULT_LLM

    @property
    def decode_fn(self) -> Callable[[list[int]], str]:
        if self._decode is None:
            self._decode = _default_decode(self.llm_name)
        return self._decode

    @property
    def vision(self):
        """A features captioner's frozen image backbone (loaded on first use); None for a CNN captioner."""
        if self.cfg.encoder != "features":
            return None
        if self._vision is None:
            from backbones import load_vision

            self._vision = load_vision(self.cfg.backbone)
        return self._vision

    def inputs(self, images=None, features=None) -> np.ndarray:
        """What the model reads: pixels (B, S, S, 3) resized for a CNN captioner, backbone features (B, F)
        for a features one (from `images`, or `features` given precomputed)."""
        if (images is None) == (features is None):
            raise ValueError("pass images or features (exactly one)")
        if features is not None:
            if self.cfg.encoder != "features":
                raise ValueError("this captioner reads pixels, not backbone features: pass images")
            f = np.asarray(features, np.float32)
            if f.ndim != 2 or f.shape[1] != self.cfg.feature_dim:
                raise ValueError(f"features must be (B, {self.cfg.feature_dim}) from {self.cfg.backbone}, got {f.shape}")
            return f
        if self.cfg.encoder == "features":
            return self.vision.embed(rgb_images(images))  # (B, F), each image at its own size
        return prepare_images(images, self.cfg.image_size)

    def prepare(self, images) -> dict:
        """Images -> the keyword `caption`/`sample` take, computed once: {"images": (B, S, S, 3)} for a
        CNN captioner, {"features": (B, F)} for a features one."""
        key = "features" if self.cfg.encoder == "features" else "images"
        return {key: self.inputs(images)}

    @property
    def label(self) -> str:
        """Where captions come from, for LENS's prompt sources."""
        return f"captioner on {self.cfg.backbone}" if self.cfg.encoder == "features" else "toy captioner"

    def refresh(self):
        """Call after the model's parameters changed (e.g. during training)."""
        self._graphdef, self._state = nnx.split(self.model)

    # -- jitted decoding -----------------------------------------------------------------
    @functools.partial(jax.jit, static_argnums=(0, 3, 4))
    def _beam(self, state, inputs, beam: int, length_penalty: float):
        model = nnx.merge(self._graphdef, state)
        b = inputs.shape[0]
        cross = [(jnp.repeat(k, beam, 0), jnp.repeat(v, beam, 0)) for k, v in model.cross_kv(model.encoder(inputs))]
        step = lambda tok, pos, cache: model.decode_step(tok, pos, cache, cross)
        return decoding.beam_search(step, model.init_cache(b * beam), b, beam, self.cfg.max_len, bos=BOS, eos=EOS,
                                    pad=PAD, forbid=(UNK,), length_penalty=length_penalty)

    @functools.partial(jax.jit, static_argnums=(0, 3, 4, 5))
    def _sample(self, state, inputs, n: int, top_k: int, temperature: float, key):
        model = nnx.merge(self._graphdef, state)
        b = inputs.shape[0]
        cross = [(jnp.repeat(k, n, 0), jnp.repeat(v, n, 0)) for k, v in model.cross_kv(model.encoder(inputs))]
        step = lambda tok, pos, cache: model.decode_step(tok, pos, cache, cross)
        return decoding.sample(step, model.init_cache(b * n), b * n, self.cfg.max_len, key, bos=BOS, eos=EOS,
                               pad=PAD, top_k=top_k, temperature=temperature, forbid=(UNK,))

    def __hash__(self):
        return id(self)

    def beam_ids(self, images=None, beam: int = 4, length_penalty: float = 0.6, *, features=None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """-> (compact sequences (B, max_len + 1), normalised scores (B,))."""
        x = self.inputs(images, features)
        seqs, scores = self._beam(self._state, jnp.asarray(x), int(beam), float(length_penalty))
        return np.asarray(seqs), np.asarray(scores)

    def caption(self, images=None, beam: int = 4, length_penalty: float = 0.6, *, features=None) -> list[str]:
        """One global caption per image by beam search (images, or a features captioner's features)."""
        seqs, _ = self.beam_ids(images, beam, length_penalty, features=features)
        return [self.vocab.detokenize(s, self.decode_fn) for s in seqs]

    def sample(self, images=None, n: int = 5, top_k: int = 10, temperature: float = 1.0, seed: int = 0,
               unique: bool = True, *, features=None) -> list[list[str]]:
        """N "intensive" captions per image by top-k sampling (duplicates dropped if `unique`)."""
        x = self.inputs(images, features)
        seqs = np.asarray(self._sample(self._state, jnp.asarray(x), int(n), int(top_k), float(temperature),
                                       jax.random.key(seed)))
        texts = [self.vocab.detokenize(s, self.decode_fn) for s in seqs]
        out = [texts[i * n:(i + 1) * n] for i in range(len(x))]
        return [list(dict.fromkeys(t)) for t in out] if unique else out

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: str | os.PathLike, dtype: str | None = None):
        """Write captioner.json and params.safetensors; `dtype="float16"` (or "bfloat16") halves the file
        (loading casts back to float32). Other dtypes are refused: an integer cast would wreck the weights."""
        if dtype is not None:
            try:
                dtype = np.dtype(ml_dtypes.bfloat16 if str(dtype) == "bfloat16" else dtype)
            except TypeError:
                dtype = str(dtype)
            if dtype not in SAVE_DTYPES:
                raise ValueError(f"dtype must be one of {[str(t) for t in SAVE_DTYPES]} (or None: float32), got {dtype}")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        params = _flat_params(self.model)
        if dtype is not None:
            params = {k: v.astype(dtype) for k, v in params.items()}
        save_file(params, str(d / "params.safetensors"))
        meta = {"config": self.cfg.to_dict(), "llm_ids": self.vocab.llm_ids.tolist(), "meta": self.meta}
        (d / "captioner.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, directory: str | os.PathLike | None = None, decode: Callable[[list[int]], str] | None = None,
             vision=None, reader=None) -> "Captioner":
        """A directory written by `train.captioner` (its export/), or a shipped name: "scenes" (the default,
        synthetic scenes from pixels) or "real" (emoji, Tux Paint stamps and scenes, on frozen
        EfficientNet-Lite features). A folder of that name in the working directory wins over the name.
        A Hugging Face BLIP directory (config.json with model_type "blip") gives a `lens.blip.BlipCaptioner`,
        with its own tokenizer and image encoder (`decode`, `vision` and `reader` are not used).
        `reader`: a loaded LLM whose decode is reused when it is the LLM whose ids this captioner writes
        (same name as `llm_name`); otherwise that LLM's tokenizer alone is read on first use."""
        shipped = isinstance(directory, str) and directory in SHIPPED and not os.path.isdir(directory)
        d = SHIPPED[directory] if shipped else Path(directory) if directory is not None else DEFAULT_DIR
        if is_blip_dir(d):
            return BlipCaptioner.load(d)
        spec, weights = d / "captioner.json", d / "params.safetensors"
        if not spec.is_file() or not weights.is_file():
            raise FileNotFoundError(
                f"no captioner checkpoint in {d} (need captioner.json and params.safetensors); train one with "
                "`python -m train.captioner --config train/configs/captioner.py --workdir DIR` and pass "
                "DIR/export, or use the shipped default (no argument)")
        meta = json.loads(spec.read_text())
        cfg = CaptionerConfig.from_dict(meta["config"])
        model = nnx.eval_shape(lambda: CaptionerModel(cfg, rngs=nnx.Rngs(0)))
        stored = read_safetensors(weights)  # CheckpointError naming the file if truncated or non-finite
        state = nnx.state(model, nnx.Param)
        leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
        names = [jax.tree_util.keystr(p) for p, _ in leaves]
        missing, extra = set(names) - set(stored), set(stored) - set(names)
        if missing or extra:
            raise ValueError(f"{weights}: parameters do not match the config (missing {sorted(missing)[:5]}, "
                             f"unexpected {sorted(extra)[:5]})")
        for (p, leaf), name in zip(leaves, names):
            if tuple(leaf.shape) != stored[name].shape:
                raise ValueError(f"{weights}: {name} has shape {stored[name].shape}, config expects {leaf.shape}")
        values = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(stored[n], leaf.dtype)
                                                        for (_, leaf), n in zip(leaves, names)])
        nnx.update(model, values)
        cap = cls(model, CaptionVocab(meta["llm_ids"]), decode, meta.get("meta"), vision=vision)
        if decode is None and reader is not None and getattr(reader, "name", None) == cap.llm_name:
            cap._decode = reader.decode
        return cap
