"""Per-image distortion of uint8 image batches: PSNR, SSIM and the backbone perceptual distance.

    psnr_uint8(a, b)                    # (N,) dB, peak 255
    ssim_uint8(a, b)                    # (N,) scikit-image SSIM of (N, H, W, 3) pairs
    perceptual_uint8(backbone, a, b)    # (N,) `backbones.vision.perceptual` distance, 0 = equal

The one home of the metrics that `eval.spae_eval` (fmnist32, scenes64) and `eval.spae_photos`
(real images) both report, so that neither evaluator imports the other for them.
"""

from __future__ import annotations

import numpy as np


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB) of uint8 images, peak 255."""
    a = a.astype(np.float64).reshape(len(a), -1)
    b = b.astype(np.float64).reshape(len(b), -1)
    mse = np.mean((a - b) ** 2, axis=1)
    return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))


def ssim_uint8(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image SSIM of uint8 (N, H, W, 3) pairs (scikit-image, 7x7 windows, data range 255)."""
    from skimage.metrics import structural_similarity

    return np.array([structural_similarity(x, y, channel_axis=-1, data_range=255) for x, y in zip(a, b)])


def perceptual_uint8(backbone, a: np.ndarray, b: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Per-image backbone perceptual distance of uint8 (N, H, W, 3) pairs."""
    import jax.numpy as jnp

    fn = _perceptual_fn(backbone)
    out = []
    for i in range(0, len(a), batch_size):       # every chunk padded to batch_size: one compiled shape
        x, y = a[i:i + batch_size], b[i:i + batch_size]
        pad = ((0, batch_size - len(x)),) + ((0, 0),) * (x.ndim - 1)
        d = fn(jnp.asarray(np.pad(x, pad), jnp.float32) / 255.0, jnp.asarray(np.pad(y, pad), jnp.float32) / 255.0)
        out.append(np.asarray(d)[:len(x)])
    return np.concatenate(out)


_PERCEPTUAL: dict = {}


def _perceptual_fn(backbone):
    import jax

    from backbones.vision.perceptual import perceptual_distance

    if id(backbone) not in _PERCEPTUAL:
        _PERCEPTUAL.clear()
        _PERCEPTUAL[id(backbone)] = jax.jit(lambda x, y: perceptual_distance(backbone.model, x, y))
    return _PERCEPTUAL[id(backbone)]
