"""The frozen codebook: the LLM's token embeddings, filtered to a word-like sub-vocabulary.

    vocab = Vocabulary.from_llm(llm, mode="words", min_len=3)      # or from_tables(...)
    vocab.embeddings  (V', d) float32   rows of llm.embeddings
    vocab.llm_ids     (V',)   int64     real LLM ids (row i of the codebook is LLM id llm_ids[i])
    vocab.words       list[str]         readable strings ("dress")

The codebook is held in `FrozenCodebook`, an nnx.Variable that is not an nnx.Param, so an
`nnx.Optimizer(model, tx, wrt=nnx.Param)` never sees it.

On a (data, model) mesh (`backbones.mesh`) the table is not copied to every device: `shard_codebooks`
splits its rows over the "model" axis (zero rows appended up to a multiple of that axis) and
`unpad_codebooks`, inside the jitted function, gives the model back its V rows; the search then
runs shard by shard (`spae.quantizer.sharded_nearest_code`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from typing import Iterable, Sequence

import numpy as np
from flax import nnx

__all__ = ["FrozenCodebook", "Vocabulary", "select_word_tokens", "clean_token", "default_blocklist",
           "normalize_codebook", "CODEBOOK_NORMS", "shard_codebooks", "unpad_codebooks"]

# Byte-level BPE marks a leading space with "Ġ" and newlines with "Ċ"; SentencePiece uses "▁".
_SPACE_MARKS = ("Ġ", "▁", " ")


class FrozenCodebook(nnx.Variable):
    """A (V, d) table that is part of the model's state but never optimised."""


def _is_var(x) -> bool:
    return isinstance(x, nnx.Variable)


def shard_codebooks(state, mesh):
    """Place an nnx state on `mesh`: every FrozenCodebook table (V, d) row-split over the "model" axis,
    every other array copied to each device. -> (placed state, rows), rows being the tables' V in
    tree order (`unpad_codebooks`' argument).

    A V that the "model" axis does not divide gets zero rows appended up to the next multiple (an
    array must split evenly over a mesh axis); `unpad_codebooks` cuts them off again inside the
    jitted function, and the search gives the rows it pads there a +inf score. With "model" of size 1
    nothing is appended and the table is copied like the rest."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P

    from backbones.mesh import MODEL

    m = int(dict(mesh.shape).get(MODEL, 1))
    rows = []

    def place(x):
        if not isinstance(x, FrozenCodebook):
            return jax.device_put(x, NamedSharding(mesh, P())) if _is_var(x) else x
        table = x.get_value()
        v = int(table.shape[0])
        rows.append(v)
        pad = -v % m
        if pad:
            table = jnp.pad(jnp.asarray(table), ((0, pad),) + ((0, 0),) * (table.ndim - 1))
        spec = P(MODEL if m > 1 else None)
        return x.replace(jax.device_put(table, NamedSharding(mesh, spec)))

    placed = jax.tree.map(place, state, is_leaf=_is_var)
    return placed, tuple(rows)


def unpad_codebooks(state, rows):
    """The inverse of `shard_codebooks`' padding: each FrozenCodebook table cut back to its rows (in
    tree order). Inside a jitted function the cut keeps the tables' row sharding."""
    import jax

    rows = iter(rows)

    def cut(x):
        if not isinstance(x, FrozenCodebook):
            return x
        v = next(rows)
        table = x.get_value()
        return x if table.shape[0] == v else x.replace(table[:v])

    return jax.tree.map(cut, state, is_leaf=_is_var)


CODEBOOK_NORMS = ("none", "sphere", "center_sphere")


def normalize_codebook(embeddings, mode: str = "none"):
    """The (V, d) table SAQ searches in, row i still standing for vocabulary row i.

    none:          the LLM's embeddings as they are.
    sphere:        every row rescaled to the table's mean row norm (a sphere of that radius).
    center_sphere: the vocabulary mean subtracted first, then onto the sphere.
    LLM input embeddings are anisotropic (for SmolLM2's word rows the mean vector has norm 2.3
    against a mean row norm of 3.2), so under plain L2 a few rows near the centre are the
    nearest neighbour of most points. On a sphere L2 nearest equals cosine nearest and, once
    centred, the rows spread out (4,000 Gaussian probes: 707 distinct nearest words before,
    3,630 after). The radius keeps distances on the scale of the raw table, so loss weights
    (commitment, semantic temperature) carry over. Only the geometry of the search changes:
    the ids, and so the LLM ids the tokens map to, are the same rows.
    """
    import jax.numpy as jnp

    if mode not in CODEBOOK_NORMS:
        raise ValueError(f"unknown codebook_norm {mode!r}; use one of {CODEBOOK_NORMS}")
    e = jnp.asarray(embeddings, jnp.float32)
    if mode == "none":
        return e
    if mode == "center_sphere":
        e = e - e.mean(axis=0, keepdims=True)
    norms = jnp.linalg.norm(e, axis=1, keepdims=True)
    return e * (norms.mean() / jnp.maximum(norms, 1e-6))


def clean_token(token: str) -> str:
    """Readable form of a vocabulary string: drop a leading space marker."""
    for mark in _SPACE_MARKS:
        if token.startswith(mark):
            return token[len(mark):]
    return token


@functools.cache
def default_blocklist() -> frozenset[str]:
    """The words of spae/blocklist.txt (slurs, sexual and vulgar terms), lower case."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "blocklist.txt")
    with open(path, encoding="utf-8") as f:
        return frozenset(w.strip().lower() for w in f if w.strip() and not w.startswith("#"))


def select_word_tokens(token_strings: Sequence[str], mode: str = "words", min_len: int = 3,
                       max_size: int | None = None, dedupe: bool = True,
                       blocklist: Iterable[str] | None = None) -> np.ndarray:
    """LLM ids of the word-like tokens, in id order.

    mode "words": a space-marked, lower-case alphabetic word ("Ġdress") of >= min_len letters;
    mode "alpha": any alphabetic token, with or without the space mark;
    mode "all":   every token that is not special (<...>) nor a raw byte (<0x..>).
    dedupe keeps the lowest id among tokens with the same readable lower-case form.
    max_size keeps the first max_size selected ids (low ids are the earliest BPE merges,
    i.e. the most frequent words).
    blocklist: readable lower-case forms never selected (None: `default_blocklist()`; () keeps all).
    """
    blocked = default_blocklist() if blocklist is None else frozenset(w.lower() for w in blocklist)
    patterns = {
        "words": re.compile(r"(?:Ġ|▁| )[a-z]{%d,}" % min_len),
        "alpha": re.compile(r"(?:Ġ|▁| )?[A-Za-z]{%d,}" % min_len),
        "all": None,
    }
    if mode not in patterns:
        raise ValueError(f"unknown vocabulary mode {mode!r}; use one of {sorted(patterns)}")
    pattern = patterns[mode]
    keep, seen = [], set()
    for i, tok in enumerate(token_strings):
        if pattern is None:
            if (tok.startswith("<") and tok.endswith(">")) or not tok.strip():
                continue
        elif not pattern.fullmatch(tok):
            continue
        key = clean_token(tok).lower()
        if key in blocked or (dedupe and key in seen):
            continue
        seen.add(key)
        keep.append(i)
        if max_size is not None and len(keep) >= max_size:
            break
    if not keep:
        raise ValueError(f"no token of the vocabulary matches mode {mode!r} (min_len={min_len})")
    return np.asarray(keep, np.int64)


@dataclasses.dataclass
class Vocabulary:
    """A filtered sub-vocabulary of a frozen LLM and its embedding rows."""

    embeddings: np.ndarray          # (V', d) float32
    llm_ids: np.ndarray             # (V',) int64
    words: list[str]                # (V',) readable strings

    def __post_init__(self):
        self.embeddings = np.asarray(self.embeddings, np.float32)
        self.llm_ids = np.asarray(self.llm_ids, np.int64)
        if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.llm_ids) != len(self.words):
            raise ValueError(f"vocabulary tables disagree: embeddings {self.embeddings.shape}, "
                             f"{len(self.llm_ids)} ids, {len(self.words)} words")

    @property
    def size(self) -> int:
        return len(self.llm_ids)

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    @classmethod
    def from_tables(cls, embeddings: np.ndarray, token_strings: Sequence[str], mode: str = "words",
                    min_len: int = 3, max_size: int | None = None,
                    blocklist: Iterable[str] | None = None) -> "Vocabulary":
        embeddings = np.asarray(embeddings, np.float32)
        if embeddings.shape[0] != len(token_strings):
            raise ValueError(f"{embeddings.shape[0]} embedding rows but {len(token_strings)} token strings")
        ids = select_word_tokens(token_strings, mode, min_len, max_size, blocklist=blocklist)
        return cls(embeddings[ids], ids, [clean_token(token_strings[i]) for i in ids])

    @classmethod
    def from_llm(cls, llm, mode: str = "words", min_len: int = 3, max_size: int | None = None,
                 blocklist: Iterable[str] | None = None) -> "Vocabulary":
        """From a loaded frozen LLM (`backbones.load_llm(...)`): its embeddings and token strings."""
        return cls.from_tables(llm.embeddings, llm.token_strings, mode, min_len, max_size, blocklist)

    @classmethod
    def random(cls, size: int, dim: int, seed: int = 0) -> "Vocabulary":
        """A random stand-in codebook for shape/gradient tests only."""
        rng = np.random.default_rng(seed)
        emb = rng.normal(size=(size, dim)).astype(np.float32)
        return cls(emb, np.arange(size), [f"tok{i}" for i in range(size)])

    def to_llm_ids(self, codes: np.ndarray) -> np.ndarray:
        """Codebook rows -> real LLM ids (same shape)."""
        return self.llm_ids[np.asarray(codes)]

    def to_words(self, codes: np.ndarray) -> list:
        return [self.words[int(c)] for c in np.asarray(codes).reshape(-1)]

    def save(self, path: str) -> None:
        """Write ids and words as JSON (the embeddings come back from the LLM)."""
        with open(path, "w") as f:
            json.dump({"llm_ids": self.llm_ids.tolist(), "words": self.words}, f)

    @classmethod
    def load(cls, path: str, embeddings: np.ndarray) -> "Vocabulary":
        """Rebuild from saved ids/words and the full LLM embedding table (V, d)."""
        with open(path) as f:
            d = json.load(f)
        ids = np.asarray(d["llm_ids"], np.int64)
        embeddings = np.asarray(embeddings, np.float32)
        if ids.max() >= len(embeddings):
            raise ValueError(f"vocabulary file {path} names LLM id {ids.max()} but the LLM has "
                             f"{len(embeddings)} tokens: it was made for another LLM")
        return cls(embeddings[ids], ids, list(d["words"]))
