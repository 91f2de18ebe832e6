"""Semantic targets: CLIP relevance of every vocabulary token to each image, kept as top-K.

    text = token_text_embeddings(clip, vocab.words, cache_path=...)   # (V, D), cached on disk
    ids, prob = relevance_topk(clip, images, text, k=32, tau=0.01)    # (N, K) rows, (N, K) probs

r(x, k) = cos(CLIP_img(x), CLIP_txt(template.format(word_k))); the target distribution over an
image's top-K tokens is softmax(r / tau). Computed once per training set, before training,
so the train step only gathers K embeddings per image.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Sequence

import numpy as np

__all__ = ["token_text_embeddings", "relevance_topk", "random_topk", "imagenet_word_matrix", "imagenet_topk",
           "imagenet_topk_from_probabilities",
           "DEFAULT_TEMPLATE", "TEACHERS"]

TEACHERS = ("clip", "imagenet", "labels", "random")   # loss.relevance: where the semantic targets come from

DEFAULT_TEMPLATE = "a photo of {}"


def _as_rgb(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return images


def token_text_embeddings(clip, words: Sequence[str], template: str = DEFAULT_TEMPLATE,
                          cache_path: str | None = None, batch_size: int = 512) -> np.ndarray:
    """(V, D) L2-normalised CLIP text embeddings of template.format(word), cached in cache_path."""
    key = hashlib.sha1(json.dumps([template, list(words), repr(getattr(clip, "name", ""))]).encode()).hexdigest()
    if cache_path and os.path.exists(cache_path):
        with np.load(cache_path) as f:
            if str(f["key"]) == key:
                return f["emb"]
    out = []
    for i in range(0, len(words), batch_size):
        out.append(np.asarray(clip.encode_text([template.format(w) for w in words[i:i + batch_size]]), np.float32))
    emb = np.concatenate(out)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12
    if cache_path:
        os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
        np.savez(cache_path, key=np.asarray(key), emb=emb)
    return emb


def relevance_topk(clip, images: np.ndarray, text_emb: np.ndarray, k: int, tau: float,
                   batch_size: int = 256, progress: bool = True):
    """Top-K vocabulary rows by CLIP relevance and their softmax(r/tau) target, per image.

    images uint8 (N, H, W[, C]); text_emb (V, D) -> (ids int32 (N, K), prob float32 (N, K)).
    """
    k = min(int(k), len(text_emb))
    images = _as_rgb(images)
    all_ids, all_prob = [], []
    from tqdm import tqdm

    for i in tqdm(range(0, len(images), batch_size), desc="CLIP relevance", unit="batch",
                  disable=not progress or len(images) <= batch_size):
        img = np.asarray(clip.encode_image(images[i:i + batch_size]), np.float32)   # (b, D)
        img /= np.linalg.norm(img, axis=1, keepdims=True) + 1e-12
        rel = img @ text_emb.T                                                      # (b, V)
        top = np.argpartition(-rel, k - 1, axis=1)[:, :k]
        r = np.take_along_axis(rel, top, axis=1)
        order = np.argsort(-r, axis=1)
        top, r = np.take_along_axis(top, order, 1), np.take_along_axis(r, order, 1)
        p = np.exp((r - r[:, :1]) / tau)
        all_ids.append(top.astype(np.int32))
        all_prob.append((p / p.sum(1, keepdims=True)).astype(np.float32))
    return np.concatenate(all_ids), np.concatenate(all_prob)


# Weight of a class's own name words, then of its nearest informative hypernyms' words (nearest first).
IMAGENET_WEIGHTS = (1.0, 0.5, 0.3, 0.2)
_STOP = frozenset({"the", "and", "for", "with", "from", "other", "its"})


def _name_words(name: str) -> list[str]:
    import re

    return [w for w in re.split(r"[^a-z]+", name.lower()) if len(w) >= 3 and w not in _STOP]


def imagenet_word_matrix(words: Sequence[str], weights: Sequence[float] = IMAGENET_WEIGHTS,
                         specificity: bool = True):
    """Which vocabulary words name each ImageNet class: (cols int32 (U,), M float32 (1000, U)).

    M[c, u] is the largest weight with which word words[cols[u]] names class c: weights[0] for a
    word of the class's lemmas ("tiger cat" -> tiger, cat), weights[j] for a word of its j-th
    nearest informative hypernym (`imagenet.tag_hypernyms`: domestic cat, cat, feline).

    specificity: a hypernym word is weighed by how specific it is, weights[j] / n(word), where
    n(word) is the number of classes the word names through any lemma or hypernym. Without it a word
    shared by many classes ("instrument", "device", "tool") gathers p(c | x) from all of them and
    outranks the class's own name; with it a lemma word always leads its class (weights[0] = 1 is
    never divided), and a hypernym word leads only where the classifier spreads its mass over many
    of the classes it names (tabby, tiger cat, Persian cat ... -> "cat").
    """
    from backbones.vision import imagenet

    index: dict[str, int] = {}
    for i, w in enumerate(words):
        index.setdefault(w.strip().lower(), i)
    own: dict[tuple[int, int], float] = {}       # (class, row) -> weight as one of the class's lemma words
    hyper: dict[tuple[int, int], float] = {}     # (class, row) -> best hypernym weight
    for c, lems in enumerate(imagenet.lemmas()):
        for name in lems:
            for w in _name_words(name):
                if w in index:
                    own[(c, index[w])] = weights[0]
        for j, h in enumerate(imagenet.tag_hypernyms(c, len(weights) - 1)):
            for w in _name_words(h):
                if w in index:
                    key = (c, index[w])
                    hyper[key] = max(hyper.get(key, 0.0), weights[j + 1])
    classes_named: dict[int, int] = {}
    for _, v in set(own) | set(hyper):
        classes_named[v] = classes_named.get(v, 0) + 1
    entries = dict(own)
    for (c, v), wt in hyper.items():
        if (c, v) not in own:                    # a lemma word keeps its full weight
            entries[(c, v)] = wt / classes_named[v] if specificity else wt
    cols = np.array(sorted({v for _, v in entries}), np.int32)
    pos = {v: u for u, v in enumerate(cols)}
    m = np.zeros((len(imagenet.lemmas()), len(cols)), np.float32)
    for (c, v), wt in entries.items():
        m[c, pos[v]] = wt
    return cols, m


def imagenet_topk(vision, images: np.ndarray, words: Sequence[str], k: int, batch_size: int = 256,
                  progress: bool = True, specificity: bool = True):
    """Top-K vocabulary rows by the ImageNet classifier: r(x, v) = sum_c p(c | x) M[c, v].

    The class probabilities spread onto the words of the class names and their hypernyms
    (`imagenet_word_matrix`); the target is r normalised over the top K (rows with r = 0 get 0).
    images uint8 (N, H, W[, C]) -> (ids int32 (N, K), prob float32 (N, K))."""
    from tqdm import tqdm

    images = _as_rgb(images)
    probs = [vision.probabilities(images[i:i + batch_size])
             for i in tqdm(range(0, len(images), batch_size), desc="ImageNet relevance", unit="batch",
                           disable=not progress or len(images) <= batch_size)]
    return imagenet_topk_from_probabilities(np.concatenate(probs), words, k, specificity)


def imagenet_topk_from_probabilities(probs: np.ndarray, words: Sequence[str], k: int, specificity: bool = True):
    """`imagenet_topk` from class probabilities already computed: probs (N, 1000) -> (ids (N, K), prob (N, K))."""
    cols, m = imagenet_word_matrix(words, specificity=specificity)
    k = min(int(k), len(cols))
    r = np.asarray(probs, np.float32) @ m                                            # (N, U)
    top = np.argsort(-r, axis=1, kind="stable")[:, :k]
    rt = np.take_along_axis(r, top, axis=1)
    return cols[top].astype(np.int32), (rt / np.maximum(rt.sum(1, keepdims=True), 1e-12)).astype(np.float32)


def random_topk(n: int, vocab_size: int, k: int, seed: int = 0):
    """Random top-K targets for shape/gradient tests only (no semantic meaning)."""
    rng = np.random.default_rng(seed)
    k = min(k, vocab_size)
    ids = np.stack([rng.choice(vocab_size, k, replace=False) for _ in range(n)]).astype(np.int32)
    p = rng.random((n, k)).astype(np.float32)
    return ids, p / p.sum(1, keepdims=True)


# Words that name each class (the class name's own words first), for the semantic hit rate and
# the label stand-in relevance. Keys are lower-case class names of visiondata's datasets.
SYNONYMS = {
    "t-shirt": ["shirt", "tshirt", "tee", "top", "tops", "shirts"],
    "trouser": ["trousers", "trouser", "pants", "jeans", "slacks", "leggings"],
    "pullover": ["pullover", "sweater", "jumper", "sweatshirt", "hoodie", "cardigan", "knit"],
    "dress": ["dress", "dresses", "gown", "skirt", "frock"],
    "coat": ["coat", "coats", "jacket", "jackets", "parka", "overcoat"],
    "sandal": ["sandal", "sandals", "slipper", "slippers", "heels", "flip"],
    "shirt": ["shirt", "shirts", "blouse", "tunic"],
    "sneaker": ["sneaker", "sneakers", "shoe", "shoes", "trainers", "trainer", "footwear"],
    "bag": ["bag", "bags", "handbag", "purse", "backpack", "tote", "luggage"],
    "ankle boot": ["boot", "boots", "ankle", "booties"],
}


def class_words(class_name: str) -> list[str]:
    """Words naming a class: its synonym list if known, else the words of its name."""
    import re

    key = class_name.lower()
    if key in SYNONYMS:
        return list(SYNONYMS[key])
    return [p for p in re.split(r"[^a-z]+", key) if p]


def class_word_rows(class_name: str, words: Sequence[str], name_only: bool = True) -> list[int]:
    """Codebook rows of the words of a class ("red circle" -> rows of "red", "circle").

    name_only: for a class with a synonym list, only its first word present in the vocabulary
    (for the stand-in relevance); False: every synonym (for the hit rate)."""
    index = {w.lower(): i for i, w in enumerate(words)}
    rows = [index[p] for p in class_words(class_name) if p in index]
    if name_only and class_name.lower() in SYNONYMS:
        rows = rows[:1]
    return rows


def label_topk(labels: np.ndarray, class_names: Sequence[str], vocab_emb: np.ndarray,
               words: Sequence[str], k: int, tau: float):
    """Stand-in relevance from class labels (when no contrastive model is available).

    r(x, k) = cos(e_k, mean of the unit embeddings of the words of x's class name), in the frozen
    LLM's embedding space. It uses the labels, so it is a supervised stand-in for CLIP relevance.
    -> (ids int32 (N, K), prob float32 (N, K)).
    """
    unit = vocab_emb / (np.linalg.norm(vocab_emb, axis=1, keepdims=True) + 1e-12)
    k = min(int(k), len(unit))
    per_class_ids, per_class_prob = [], []
    for name in class_names:
        rows = class_word_rows(name, words)
        if not rows:
            raise ValueError(f"no word of class name {name!r} is in the codebook vocabulary")
        c = unit[rows].mean(0)
        rel = unit @ (c / np.linalg.norm(c))                        # (V,)
        top = np.argsort(-rel)[:k]
        p = np.exp((rel[top] - rel[top[0]]) / tau)
        per_class_ids.append(top.astype(np.int32))
        per_class_prob.append((p / p.sum()).astype(np.float32))
    labels = np.asarray(labels)
    return np.stack(per_class_ids)[labels], np.stack(per_class_prob)[labels]
