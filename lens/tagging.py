"""Tagger and attributer: contrastive-model relevance against a text vocabulary, top-k above a threshold.

    tagger = VocabScorer(clip, load_tags(), template="a photo of {}")
    tagger(images) -> list[list[(text, prob)]]        # per image, best first

Relevance is the cosine of the image embedding and each vocabulary text's embedding
(`clip.relevance`, whose text embeddings are computed once per vocabulary and cached).
Scores become a distribution over the vocabulary, softmax(scale * cosine) with the
contrastive model's own logit scale; entries are kept while in the top k and at or above
`threshold` (the best entry is always kept, so every image gets some text).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def clip_scale(clip, default: float = 100.0) -> float:
    """exp(logit_scale) of a CLIP-style model, or `default` if it has none."""
    try:
        return float(np.exp(np.asarray(clip.model.logit_scale[...])))
    except AttributeError:
        return default


def select_top(scores: np.ndarray, vocab: Sequence[str], k: int, threshold: float, scale: float
               ) -> list[list[tuple[str, float]]]:
    """scores (B, V) cosines -> per row the top-k (text, prob) with prob >= threshold (at least one)."""
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(vocab):
        raise ValueError(f"scores must be (B, {len(vocab)}), got {scores.shape}")
    logits = scale * scores
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    out = []
    for row in probs:
        order = np.argsort(-row, kind="stable")[:k]
        keep = [(vocab[i], float(row[i])) for j, i in enumerate(order) if j == 0 or row[i] >= threshold]
        out.append(keep)
    return out


class VocabScorer:
    """Scores images against a fixed text vocabulary with a contrastive model."""

    def __init__(self, clip, vocab: Sequence[str], template: str = "a photo of {}", top_k: int = 5,
                 threshold: float = 0.02, scale: float | None = None):
        if not vocab:
            raise ValueError("empty vocabulary")
        self.clip, self.vocab, self.template = clip, list(vocab), template
        self.top_k, self.threshold = int(top_k), float(threshold)
        self.scale = clip_scale(clip) if scale is None else float(scale)

    def scores(self, images) -> np.ndarray:
        """uint8 (B, H, W, 3) -> cosines (B, V)."""
        return np.asarray(self.clip.relevance(images, self.vocab, self.template))

    def __call__(self, images) -> list[list[tuple[str, float]]]:
        return select_top(self.scores(images), self.vocab, self.top_k, self.threshold, self.scale)
