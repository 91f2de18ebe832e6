"""Text API of a trained SPAE: images <-> pyramids of real LLM token ids.

    tok = load_tokenizer()                    # the default, photos64-words: real images at 64 px (offline)
    pyr = tok.encode(images)                  # uint8 (B, H, W) or (B, H, W, 3) -> Pyramid
    pyr.llm_ids                               # list over layers of (B, h_l, w_l) real LLM ids
    tok.to_text(pyr)                          # per image, per layer, list of token strings
    tok.decode(pyr, layers=k)                 # uint8 images of the input's size, from the first k layers
    tok.llm_ids(pyr)                          # the real LLM ids (same as pyr.llm_ids)
    tok.from_text(tok.to_text(pyr))           # the inverse of to_text: words -> Pyramid (decode works)
    tok.from_llm_ids(pyr.llm_ids)             # real LLM ids -> Pyramid
    tok = load_tokenizer(mesh=make_mesh(model=4))   # codebook rows split over 4 devices (backbones.mesh)

Bad input is one ValueError / TypeError that says what is wrong and where: an empty batch,
non-uint8 pixels, an unknown word (its layer and position), a layer of the wrong shape (its
number, the expected and the given shape). Layers are numbered from 0, the top (fewest tokens).

A checkpoint directory holds config.json, vocab.json (LLM ids and words of the codebook rows)
and params.safetensors (generator-EMA encoder/decoder). The codebook itself is rebuilt from the
frozen LLM's embedding table (or codebook.npy for the random test codebook).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spae.codebook import Vocabulary, shard_codebooks, unpad_codebooks
from spae.data import from_model_images, to_model_images
from spae.model import SPAE, ModelConfig

__all__ = ["Pyramid", "Tokenizer", "load_tokenizer", "load_weights", "checkpoint_model_config", "save_checkpoint",
           "DEFAULT_CHECKPOINT"]

PRETRAINED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")
DEFAULT_NAME = "photos64-words"     # spae/pretrained/registry.json names the same default
DEFAULT_CHECKPOINT = os.path.join(PRETRAINED, DEFAULT_NAME)


@dataclasses.dataclass
class Pyramid:
    """Tokens of a batch of images, top (fewest tokens) layer first."""

    codes: list            # per layer (B, h_l, w_l) int32 rows of the codebook
    llm_ids: list          # per layer (B, h_l, w_l) int64 real LLM token ids
    shape: tuple           # the input images' shape, so decode returns the same size

    def __len__(self):
        return len(self.codes)

    def __getitem__(self, layer):
        return self.llm_ids[layer]

    def __iter__(self):
        return iter(self.llm_ids)

    def truncate(self, layers: int) -> "Pyramid":
        return Pyramid(self.codes[:layers], self.llm_ids[:layers], self.shape)


def _flat_params(module) -> dict:
    flat = {}
    for path, var in nnx.state(module, nnx.Param).flat_state():
        flat["/".join(str(p) for p in path)] = np.asarray(var.get_value() if hasattr(var, "get_value") else var.value)
    return flat


def load_weights(model: SPAE, directory: str, keep_missing: Sequence[str] = ()) -> None:
    """Set `model`'s encoder/decoder parameters, in place, from a checkpoint's params.safetensors.

    The model must be built with the checkpoint's model config (same layers, same shapes); any
    mismatch is one error naming the differing parameters. The frozen codebook is not touched.
    Parameters whose name starts with one of `keep_missing` may be absent from the checkpoint and
    keep their initial values (the identity blocks of a grown decoder, `decoder/grown/`).
    """
    from backbones.weight_files import read_safetensors

    path = os.path.join(directory, "params.safetensors")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no params.safetensors in {directory}: not an SPAE tokenizer checkpoint "
                                "(train.spae writes one to <workdir>/export)")
    params = read_safetensors(path)     # CheckpointError naming the file if truncated, mis-sized or non-finite
    expected = {"/".join(str(p) for p in path_): var.get_value()   # arrays, or ShapeDtypeStructs (eval_shape)
                for path_, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    new = {k for k in set(expected) - set(params) if k.startswith(tuple(keep_missing))}
    expected = {k: v for k, v in expected.items() if k not in new}
    if set(params) != set(expected):
        missing, extra = set(expected) - set(params), set(params) - set(expected)
        raise ValueError(f"checkpoint {directory} does not match the model: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(extra)[:5]}")
    bad = [f"{k}: checkpoint {params[k].shape} != model {expected[k].shape}"
           for k in expected if params[k].shape != expected[k].shape]
    if bad:
        raise ValueError(f"checkpoint {directory} does not match the model's shapes: " + "; ".join(bad[:5]))
    state = nnx.state(model, nnx.Param)
    for path_, var in state.flat_state():
        name = "/".join(str(p) for p in path_)
        if name in new:
            continue
        value = jnp.asarray(params[name])
        var.set_value(value) if hasattr(var, "set_value") else setattr(var, "value", value)
    nnx.update(model, state)


def checkpoint_model_config(directory: str) -> ModelConfig:
    """The ModelConfig a tokenizer checkpoint was trained with (its config.json)."""
    return ModelConfig.from_dict(_read_meta(directory)["model"])


def _read_meta(directory: str) -> dict:
    cfg_path = os.path.join(directory, "config.json")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(
            f"no SPAE tokenizer checkpoint at {directory} (config.json missing). Train one with "
            "`python -m train.spae --config train/configs/spae_fmnist32.py --workdir DIR` and load DIR/export.")
    with open(cfg_path) as f:
        return json.load(f)


def save_checkpoint(directory: str, model: SPAE, vocab: Vocabulary, cfg) -> None:
    """Write a tokenizer checkpoint (no optimizer state; the codebook comes from the LLM)."""
    from safetensors.numpy import save_file

    os.makedirs(directory, exist_ok=True)
    meta = {
        "model": dataclasses.asdict(model.cfg),
        "data": {k: cfg.data[k] for k in ("name", "image_size", "channels", "prep")},
        "vocab": dict(cfg.vocab.to_dict()),
        "lqae": bool(cfg.get("lqae", False)),
        "format": 1,
    }
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(meta, f, indent=1, default=list)
    if hasattr(cfg, "to_dict"):          # the whole training config: what reproduces this checkpoint
        with open(os.path.join(directory, "train_config.json"), "w") as f:
            json.dump(cfg.to_dict(), f, indent=1, default=list)
    vocab.save(os.path.join(directory, "vocab.json"))
    if cfg.vocab.source == "random":
        np.save(os.path.join(directory, "codebook.npy"), vocab.embeddings)
    save_file(_flat_params(model), os.path.join(directory, "params.safetensors"))


class Tokenizer:
    """A trained SPAE with a text interface (see module docstring).

    mesh: a (data, model) mesh (`backbones.mesh.make_mesh`) to run encode and decode on: the frozen
    codebook's rows split over "model" (never copied whole to one device; the nearest-word search
    runs shard by shard and gives the ids of the unsharded search), each batch split over "data"
    where that axis divides it, the encoder and decoder copied to every device. None: one device."""

    def __init__(self, model: SPAE, vocab: Vocabulary, prep: str = "resize", name: str = "",
                 semantic_backbone=None, mesh=None):
        self.model = model
        self.mesh = mesh
        self._backbone = semantic_backbone       # loaded on the first encode that needs it (decoding never does)
        self.vocab = vocab
        self.prep = prep
        self.name = name
        self._llm_to_code = {int(i): c for c, i in enumerate(vocab.llm_ids)}
        self._word_to_code = {}                  # word -> its lowest codebook row
        for c, w in enumerate(vocab.words):
            self._word_to_code.setdefault(w, c)
        graphdef, state = nnx.split(model)
        rows = ()
        if mesh is not None:            # codebook rows over "model" (padded to a multiple), the rest copied
            state, rows = shard_codebooks(state, mesh)

        def merged(state):
            return nnx.merge(graphdef, unpad_codebooks(state, rows) if rows else state)

        @jax.jit
        def _encode(state, x, feats):    # uint8 (B, S, S, C), backbone features (B, F) or None -> list of (B, h_l, w_l)
            m = merged(state)
            ids, _, _ = m.quantize(m.encode(x.astype(jnp.float32) / 127.5 - 1.0), feats, mesh)
            return ids

        @jax.jit
        def _decode(state, ids):         # list of (B, h_l, w_l) -> uint8 (B, S, S, C)
            m = merged(state)
            y = m.decode_ids(ids, mesh=mesh)
            return jnp.clip(jnp.round((y + 1.0) * 127.5), 0, 255).astype(jnp.uint8)

        self._state, self._encode, self._decode = state, _encode, _decode

    @property
    def num_layers(self) -> int:
        return self.model.num_layers

    def _put(self, a):
        """A batch-major array onto the device(s): split over the mesh's "data" axis where it divides
        the batch, else copied to every device; one device without a mesh."""
        if a is None:
            return None
        if self.mesh is None:
            return jnp.asarray(a)
        from jax.sharding import NamedSharding, PartitionSpec as P

        from backbones.mesh import DATA

        n = int(dict(self.mesh.shape).get(DATA, 1))
        return jax.device_put(np.asarray(a), NamedSharding(self.mesh, P(DATA) if len(a) % n == 0 else P()))

    @property
    def semantic_backbone(self):
        """The frozen backbone the top layers read (None without a semantic path); loaded on first use."""
        cfg = self.model.cfg
        if not cfg.has_semantic_path:
            return None
        if self._backbone is None:
            from spae.semantic_path import load_semantic_backbone

            self._backbone = load_semantic_backbone(cfg.semantic_backbone)
        return self._backbone

    def semantic_features(self, images: np.ndarray) -> np.ndarray | None:
        """The frozen backbone's features (B, F) of the images as given (any size), or None."""
        backbone = self.semantic_backbone
        if backbone is None:
            return None
        from spae.semantic_path import backbone_features, check_backbone

        from spae.semantic import _as_rgb

        cfg = self.model.cfg
        return check_backbone(backbone_features(backbone, list(_as_rgb(images)), cfg.semantic_head), len(images),
                              cfg.semantic_features, cfg.semantic_backbone)

    @property
    def strides(self) -> tuple:
        return tuple(self.model.cfg.strides)

    def layer_shapes(self) -> list:
        g = self.model.cfg.grid
        return [(g // s, g // s) for s in self.strides]

    def encode(self, images, batch_size: int = 256) -> Pyramid:
        """uint8 (B, H, W) or (B, H, W, 3) -> Pyramid of codebook rows and real LLM ids.

        `images` may also be a list of image file paths (read with visiondata.images.read_image;
        all must have one size) or a list of uint8 arrays of one shape.
        """
        images = _as_image_batch(images)
        cfg = self.model.cfg
        x = to_model_images(images, cfg.image_size, cfg.channels, self.prep)
        feats = self.semantic_features(images)
        parts = [self._encode(self._state, self._put(x[i:i + batch_size]),
                              None if feats is None else self._put(feats[i:i + batch_size]))
                 for i in range(0, len(x), batch_size)]
        codes = [np.concatenate([np.asarray(p[l]) for p in parts]) for l in range(self.num_layers)]
        return Pyramid(codes, [self.vocab.to_llm_ids(c) for c in codes], tuple(images.shape))

    def _check_layers(self, layers: Sequence[np.ndarray], what: str) -> int:
        """Each layer's shape against layer_shapes(), one batch size for all; returns the batch size."""
        shapes = self.layer_shapes()
        if not 1 <= len(layers) <= len(shapes):
            raise ValueError(f"{what}: got {len(layers)} layers; this tokenizer has {len(shapes)} "
                             f"(shapes {shapes}), give 1..{len(shapes)} of them, top layer first")
        batch = None
        for l, (layer, (h, w)) in enumerate(zip(layers, shapes)):
            given = tuple(np.shape(layer))
            if len(given) != 3 or given[1:] != (h, w):
                raise ValueError(f"{what}: layer {l} has shape {given}, expected (B, {h}, {w}) "
                                 f"(layer shapes of this tokenizer: {shapes})")
            if batch is None:
                batch = given[0]
            elif given[0] != batch:
                raise ValueError(f"{what}: layer {l} holds {given[0]} images but layer 0 holds {batch}; "
                                 "all layers must have the same batch size")
        if batch == 0:
            raise ValueError(f"{what}: no images (batch size 0)")
        return batch

    def _model_shape(self, batch: int, shape: tuple | None, what: str) -> tuple:
        s, c = self.model.cfg.image_size, self.model.cfg.channels
        if shape is None:
            return (batch, s, s) if c == 1 else (batch, s, s, 3)
        shape = tuple(int(d) for d in shape)
        if len(shape) not in (3, 4) or shape[0] != batch or (len(shape) == 4 and shape[3] not in (1, 3)):
            raise ValueError(f"{what}: shape must be (B, H, W) or (B, H, W, 1|3) with B = {batch}, "
                             f"the layers' batch size; got {shape}")
        return shape

    def from_llm_ids(self, llm_ids: Sequence[np.ndarray], shape: tuple | None = None) -> Pyramid:
        """A Pyramid from real LLM ids (e.g. written by the LLM): per layer (B, h_l, w_l), top layer
        first, the first k layers of layer_shapes(). Ids outside the codebook and wrong shapes raise."""
        layers = [np.asarray(layer) for layer in llm_ids]
        batch = self._check_layers(layers, "from_llm_ids")
        codes = []
        for l, layer in enumerate(layers):
            try:
                codes.append(np.vectorize(self._llm_to_code.__getitem__, otypes=[np.int32])(layer))
            except KeyError as e:
                raise ValueError(f"from_llm_ids: layer {l}: LLM id {e.args[0]} is not in this tokenizer's codebook "
                                 f"({self.vocab.size} word tokens)") from None
        return Pyramid(codes, [l.astype(np.int64) for l in layers], self._model_shape(batch, shape, "from_llm_ids"))

    def from_text(self, words, shape: tuple | None = None) -> Pyramid:
        """The inverse of `to_text`: token strings -> Pyramid (whose `decode` works).

        words: for one image, a list of layers, each a list of token strings in row-major order
        (exactly `to_text(pyr)[i]`); for a batch, a list of those. The first k layers may be given
        (a prefix). One image gives a Pyramid of batch size 1. Surrounding whitespace of a word is ignored; the match is
        otherwise exact. Where several codebook rows read as the same string, the lowest row is
        taken (the shipped vocabularies have none: select_word_tokens keeps one id per word).
        """
        if isinstance(words, str) or not isinstance(words, Sequence) or len(words) == 0:
            raise ValueError("from_text: no images (give per image a list of layers, each a list of words)")
        single = _is_layer(words[0])
        images = [words] if single else list(words)
        shapes = self.layer_shapes()
        n_layers = None
        codes = []
        for i, image in enumerate(images):
            where = "from_text" if single else f"from_text, image {i}"
            if isinstance(image, str) or not isinstance(image, Sequence) or not all(_is_layer(x) for x in image):
                raise ValueError(f"{where}: expected a list of layers, each a list of words; got {_brief(image)}")
            if n_layers is None:
                n_layers = len(image)
                if not 1 <= n_layers <= len(shapes):
                    raise ValueError(f"{where}: got {n_layers} layers; this tokenizer has {len(shapes)} "
                                     f"(shapes {shapes}), give 1..{len(shapes)} of them, top layer first")
                codes = [np.empty((len(images),) + hw, np.int32) for hw in shapes[:n_layers]]
            elif len(image) != n_layers:
                raise ValueError(f"{where}: has {len(image)} layers but image 0 has {n_layers}; "
                                 "every image needs the same number of layers")
            for l, layer in enumerate(image):
                toks = list(layer)
                h, w = shapes[l]
                if len(toks) != h * w:
                    raise ValueError(f"{where}: layer {l} ({h}x{w}) has {len(toks)} words, expected {h * w} "
                                     "in row-major order")
                flat = codes[l][i].reshape(-1)
                for p, tok in enumerate(toks):
                    row = self._word_to_code.get(tok.strip()) if isinstance(tok, str) else None
                    if row is None:
                        raise ValueError(f"{where}: unknown word {tok!r} in layer {l} ({h}x{w}) at position {p} "
                                         f"(row {p // w}, column {p % w}); not one of this tokenizer's "
                                         f"{self.vocab.size} words")
                    flat[p] = row
        llm = [self.vocab.to_llm_ids(c) for c in codes]
        return Pyramid(codes, llm, self._model_shape(len(images), shape, "from_text"))

    def decode(self, pyr, layers: int | None = None, batch_size: int = 256) -> np.ndarray:
        """Pyramid (or list of LLM-id layers) -> uint8 images of the input's size from the first k layers."""
        if not isinstance(pyr, Pyramid):
            pyr = self.from_llm_ids(pyr)
        self._check_layers(pyr.codes, "decode")
        k = len(pyr) if layers is None else int(layers)
        if not 1 <= k <= len(pyr):
            raise ValueError(f"layers must be in 1..{len(pyr)}; got {layers}")
        codes = pyr.codes[:k]
        n = len(codes[0])
        out = np.concatenate([np.asarray(self._decode(self._state, [self._put(c[i:i + batch_size]) for c in codes]))
                              for i in range(0, n, batch_size)])
        return from_model_images(out, pyr.shape, self.prep)

    def llm_ids(self, pyr: Pyramid) -> list:
        return list(pyr.llm_ids)

    def to_text(self, pyr: Pyramid) -> list:
        """Per image, per layer, the token strings in row-major order."""
        n = len(pyr.codes[0])
        return [[self.vocab.to_words(layer[i]) for layer in pyr.codes] for i in range(n)]

    def __repr__(self):
        return (f"Tokenizer({self.name!r}, layers={self.layer_shapes()}, vocab={self.vocab.size}, "
                f"image={self.model.cfg.image_size}px x{self.model.cfg.channels})")


def _is_layer(x) -> bool:
    """A layer of words: a list/tuple of strings (maybe empty)."""
    return isinstance(x, Sequence) and not isinstance(x, str) and (len(x) == 0 or isinstance(x[0], str))


def _brief(x) -> str:
    r = repr(x)
    return r if len(r) <= 60 else r[:57] + "..."


def _as_image_batch(images) -> np.ndarray:
    """`encode`'s input as one array: an array, a list of arrays of one shape, or a list of file paths."""
    if isinstance(images, (str, os.PathLike)):
        raise TypeError(f"encode takes a batch of images; for one file pass a list: [{os.fspath(images)!r}]")
    if not isinstance(images, np.ndarray):
        if not isinstance(images, (list, tuple)) and not hasattr(images, "__array__") and hasattr(images, "__iter__"):
            images = list(images)
        if isinstance(images, (list, tuple)):
            if len(images) == 0:
                raise ValueError("encode: no images (empty batch)")
            names = [f"image {i}" for i in range(len(images))]
            if all(isinstance(p, (str, os.PathLike)) for p in images):
                from visiondata.images import read_image

                names = [os.fspath(p) for p in images]
                images = [read_image(p) for p in images]     # clear errors for missing / corrupt files
            shapes = [np.shape(im) for im in images]
            i = next((i for i, sh in enumerate(shapes) if sh != shapes[0]), None)
            if i is not None:
                raise ValueError(f"encode: images differ in shape ({names[0]} is {shapes[0]}, {names[i]} is "
                                 f"{shapes[i]}); resize them to one size or encode them one at a time")
        images = np.asarray(images)
    if images.ndim == 0 or len(images) == 0:
        raise ValueError(f"encode: no images (got an array of shape {images.shape})")
    if images.dtype != np.uint8:
        raise TypeError(f"encode: images must be uint8 (values 0..255); got {images.dtype}. "
                        "Convert with (x * 255).round().astype(np.uint8) if they are floats in [0, 1].")
    return images


def registry() -> dict:
    """spae/pretrained/registry.json: name -> what it is, its training data, teacher, command, figures."""
    with open(os.path.join(PRETRAINED, "registry.json")) as f:
        return json.load(f)["tokenizers"]


def shipped_names() -> list[str]:
    """Names of the tokenizers shipped in spae/pretrained (load_tokenizer(NAME))."""
    return sorted(registry())


def resolve_checkpoint(name_or_dir: str | None) -> str:
    """None -> the default; a shipped name -> its folder; else a checkpoint directory, which must exist."""
    if name_or_dir is None:
        return DEFAULT_CHECKPOINT
    if os.path.isdir(name_or_dir):
        return name_or_dir
    if os.sep not in name_or_dir and os.path.isdir(os.path.join(PRETRAINED, name_or_dir)):
        return os.path.join(PRETRAINED, name_or_dir)
    raise FileNotFoundError(f"no tokenizer named or at {name_or_dir!r}; shipped names: {', '.join(shipped_names())}, "
                            "or give a checkpoint directory written by train.spae")


def _abstract_spae(vocab: Vocabulary, mc: ModelConfig) -> SPAE:
    """The SPAE of `mc` built by nnx.eval_shape (no random init, no per-op compiles), its state that is not
    a Param (absent from params.safetensors) computed as SPAE.__init__ computes it; load_weights sets the rest."""
    from spae.codebook import normalize_codebook
    from spae.semantic_path import WordHead, word_head_for

    model = nnx.eval_shape(lambda: SPAE(vocab.embeddings, mc, rngs=nnx.Rngs(0), words=vocab.words))
    model.codebook.set_value(normalize_codebook(jnp.asarray(vocab.embeddings, jnp.float32), mc.codebook_norm))
    if isinstance(model.semantic, WordHead):       # the rows SPAE.__init__'s word_head_for gives
        model.semantic.rows.set_value(word_head_for(vocab.words, model.semantic.shapes).rows[...])
    return model


def load_tokenizer(checkpoint_dir: str | None = None, llm=None, semantic_backbone=None, mesh=None) -> Tokenizer:
    """Load a tokenizer by shipped name ("photos64", "fmnist32", "scenes64") or checkpoint directory
    (default: "photos64-words", real images at 64 x 64, top words from a frozen ImageNet backbone).

    llm: an already loaded frozen LLM to take the embedding table from (else loaded by name).
    semantic_backbone: for a tokenizer with a semantic path, the frozen backbone its top layers read,
    already loaded (an object with `.embed(images) -> (B, F)`, as `load_vision` returns); by default
    the one its config.json names is loaded on the first encode (decoding needs none).
    mesh: a (data, model) mesh to encode and decode on, the codebook split by rows over "model"
    (`Tokenizer`); None: one device.
    """
    directory = resolve_checkpoint(checkpoint_dir)
    meta = _read_meta(directory)
    v = meta["vocab"]
    vocab_path = os.path.join(directory, "vocab.json")
    if v["source"] == "random":
        table = np.load(os.path.join(directory, "codebook.npy"))
        with open(vocab_path) as f:
            ids = json.load(f)["llm_ids"]
        full = np.zeros((max(ids) + 1, table.shape[1]), np.float32)
        full[ids] = table
        vocab = Vocabulary.load(vocab_path, full)
    else:
        if llm is None:
            from backbones import load_llm

            llm = load_llm(v["llm"])
        vocab = Vocabulary.load(vocab_path, llm.embeddings)
    mc = ModelConfig.from_dict(meta["model"])
    model = _abstract_spae(vocab, mc)
    load_weights(model, directory)
    unset = [path_ for path_, var in nnx.to_flat_state(nnx.state(model))
             if isinstance(var.get_value(), jax.ShapeDtypeStruct)]
    if unset:
        raise ValueError(f"checkpoint {directory}: model state not set on load: {unset[:5]}")
    return Tokenizer(model, vocab, prep=meta["data"].get("prep", "resize"), name=os.path.basename(directory.rstrip("/")),
                     semantic_backbone=semantic_backbone, mesh=mesh)
