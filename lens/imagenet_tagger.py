"""Tags for real photographs from the frozen ImageNet classifier: its top classes and their WordNet hypernyms.

    tagger = ImageNetTagger(load_vision("efficientnet-lite0"))
    tagger(images) -> per image [(tag, probability), ...]     # e.g. tabby 0.47, tiger cat 0.31, cat 0.93, ...

A class is kept while in the top `top_k` and at or above `threshold` (the best is always kept).
Each kept class brings up to `hypernyms` of its nearest informative WordNet ancestors
(`backbones.vision.imagenet.tag_hypernym_ids`: 'domestic cat', 'cat', 'feline' for a tabby),
scored by the classifier's probability of the whole subtree: the summed probability of every
one of the 1,000 classes below that ancestor. A hypernym is kept at or above `threshold` too.
Classes come first (most specific), then hypernyms nearest first, as the prompt reads best.
"""
from __future__ import annotations

import numpy as np

from backbones.vision import imagenet


class ImageNetTagger:
    source = "imagenet"

    def __init__(self, backbone, top_k: int = 3, threshold: float = 0.05, hypernyms: int = 3):
        self.backbone, self.top_k, self.threshold, self.hypernyms = backbone, int(top_k), float(threshold), int(hypernyms)
        self.labels = backbone.labels
        self._below: dict[str, np.ndarray] = {}   # hypernym synset -> bool (1000,) classes under it
        self._classes_named = {name: 1 for name in self.labels}   # tag -> how many classes it names

    @property
    def name(self) -> str:
        return f"{self.source}:{self.backbone.config.name}"

    def _subtree(self, synset: str) -> np.ndarray:
        if synset not in self._below:
            self._below[synset] = np.array([synset in imagenet.ancestors(i) for i in range(len(self.labels))])
        return self._below[synset]

    def tags_from_probabilities(self, probs: np.ndarray) -> list[list[tuple[str, float]]]:
        """(B, 1000) class probabilities -> per image [(tag, probability)], classes then hypernyms."""
        out = []
        for row in np.asarray(probs, np.float64):
            order = np.argsort(-row, kind="stable")[: self.top_k]
            classes = [int(i) for j, i in enumerate(order) if j == 0 or row[i] >= self.threshold]
            tags = {self.labels[i]: float(row[i]) for i in classes}
            hyps: dict[str, float] = {}
            for i in classes:
                for s in imagenet.tag_hypernym_ids(i, self.hypernyms):
                    name = imagenet.synset_name(s)
                    p = float(row[self._subtree(s)].sum())
                    if name not in tags and p >= self.threshold:
                        hyps[name] = max(p, hyps.get(name, 0.0))
                        self._classes_named.setdefault(name, int(self._subtree(s).sum()))
            out.append(list(tags.items()) + list(hyps.items()))
        return out

    def classes_named(self, tag: str) -> int | None:
        """How many of the 1,000 classes a tag it gave names: 1 for a class, the subtree's size for a
        hypernym ('cat': 13), None for a tag it never gave. A tag's probability over this count is the
        probability of the answer being that specific (`lens.answer.candidates`)."""
        return self._classes_named.get(tag)

    def __call__(self, images) -> list[list[tuple[str, float]]]:
        """Images (a list of paths / PIL images / uint8 arrays, or a uint8 (B, H, W, 3) batch) -> tags."""
        return self.tags_from_probabilities(self.backbone.probabilities(images))
