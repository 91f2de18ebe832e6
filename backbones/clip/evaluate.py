"""Zero-shot evaluations of a CLIP model on the offline data (used by ``eval.contrastive`` and the trainer).

- Fashion-MNIST prompt classification: each class's text embedding is the normalised mean of its
  prompts over ``FMNIST_TEMPLATES``; an image takes the class of highest cosine.
- Synthetic-scene retrieval: the pool is every caption of every image of the split. Image->caption
  R@1 counts a hit when the top caption's *text* is one of the image's own captions (identical
  strings, e.g. "A lone red circle.", belong to several images); caption->image R@1 counts a hit
  when the top image has that caption.
"""
from __future__ import annotations

import numpy as np

FMNIST_TEMPLATES = (
    "a photo of a {}.", "a picture of a {}.", "a grayscale photo of a {}.", "an image of a {}.",
    "a close-up photo of the {}.", "a low resolution photo of a {}.", "this is a {}.", "a product photo of a {}.",
)


def class_text_embeddings(clip, class_names, templates=FMNIST_TEMPLATES) -> np.ndarray:
    """(C, D): per class, the normalised mean of its prompts' embeddings."""
    emb = clip.encode_text([t.format(c) for c in class_names for t in templates])
    emb = emb.reshape(len(class_names), len(templates), -1).mean(1)
    return emb / np.linalg.norm(emb, axis=-1, keepdims=True)


def zero_shot_accuracy(clip, images, labels, class_names, templates=FMNIST_TEMPLATES) -> float:
    pred = np.argmax(clip.encode_image(images) @ class_text_embeddings(clip, class_names, templates).T, axis=1)
    return float(np.mean(pred == np.asarray(labels)))


def retrieval(clip, images, captions: list[list[str]]) -> dict[str, float]:
    """Image->caption and caption->image R@1 / R@5 over all captions of the set."""
    pool = [c for cs in captions for c in cs]
    owner = np.repeat(np.arange(len(captions)), [len(cs) for cs in captions])   # (M,)
    img = clip.encode_image(images)                                            # (N, D)
    uniq, inverse = np.unique(pool, return_inverse=True)                       # embed each text once
    txt = clip.encode_text(list(uniq))[inverse]                                # (M, D)
    sim = img @ txt.T                                                          # (N, M)
    own_sets = [set(cs) for cs in captions]
    top = np.argsort(-sim, axis=1)[:, :5]
    i2t1 = np.mean([pool[t[0]] in own_sets[i] for i, t in enumerate(top)])
    i2t5 = np.mean([any(pool[j] in own_sets[i] for j in t) for i, t in enumerate(top)])
    top_img = np.argsort(-sim.T, axis=1)[:, :5]                                # (M, 5)
    t2i1 = np.mean([pool[m] in own_sets[top_img[m, 0]] for m in range(len(pool))])
    t2i5 = np.mean([any(pool[m] in own_sets[j] for j in top_img[m]) for m in range(len(pool))])
    return {"i2t_r1": float(i2t1), "i2t_r5": float(i2t5), "t2i_r1": float(t2i1), "t2i_r5": float(t2i5),
            "images": len(captions), "captions": len(pool)}


def evaluate_offline(clip, num_scenes: int = 1000, fmnist_limit: int | None = None, scene_seed: int = 0) -> dict:
    """The figures the README reports: Fashion-MNIST test accuracy; scenes test and held-out retrieval."""
    from visiondata import fashion_mnist, scenes

    x, y = fashion_mnist.load("test")
    if fmnist_limit:
        x, y = x[:fmnist_limit], y[:fmnist_limit]
    out = {"fmnist_test_acc": zero_shot_accuracy(clip, x, y, fashion_mnist.CLASS_NAMES), "fmnist_images": len(y)}
    size = clip.image_size
    for split in ("test", "heldout"):
        s = scenes.generate(num_scenes, size=size, seed=scene_seed, split=split)
        out.update({f"scenes_{split}_{k}": v for k, v in retrieval(clip, s.images, s.captions).items()})
    return out
