"""Fréchet distance between two sets of embeddings, and FD-EffNet: on the frozen backbone's pooled features.

    fd = frechet_distance(feats_a, feats_b)            # (N, D), (M, D) -> float
    fd = fd_effnet(load_vision(), images_a, images_b)  # images: anything VisionBackbone.preprocess takes

FD = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), the distance between the Gaussians
fitted to the two sets (as FID does on Inception features). The matrix square root uses the
symmetric form (S_a^(1/2) S_b S_a^(1/2))^(1/2), which has the same trace and stays real.
Small sets give a biased estimate (it shrinks as N grows): compare figures at equal N only.
"""
from __future__ import annotations

import numpy as np


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) -> mean (D,) and covariance (D, D) in float64; N >= 2."""
    f = np.asarray(feats, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need embeddings (N, D) with N >= 2, got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError("embeddings hold NaN or inf")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_from_stats(mu_a, cov_a, mu_b, cov_b) -> float:
    root_a = _sqrtm_psd(cov_a)
    cross = _sqrtm_psd(root_a @ cov_b @ root_a)
    d = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(cross))
    return max(d, 0.0)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two embedding sets (N, D) and (M, D)."""
    a, b = np.asarray(feats_a), np.asarray(feats_b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding sets must be (N, D) and (M, D) with one D; got {a.shape}, {b.shape}")
    return frechet_from_stats(*gaussian_stats(a), *gaussian_stats(b))


def fd_effnet(backbone, images_a, images_b) -> float:
    """FD-EffNet: the Fréchet distance of two image sets on the backbone's pooled (B, 1280) embeddings."""
    return frechet_distance(backbone.embed(images_a), backbone.embed(images_b))
