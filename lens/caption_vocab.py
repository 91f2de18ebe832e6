"""A compact output vocabulary for the captioner: a subset of the frozen LLM's token ids.

Captions are tokenised by the LLM's own tokenizer (`llm.encode`); the ids that occur in the
training captions become the decoder's classes, after four specials. Decoding maps back to
LLM ids and detokenises with `llm.decode`, so every caption is real LLM-tokenised text.
"""
from __future__ import annotations

import collections
from typing import Callable, Iterable, Sequence

import numpy as np

PAD, BOS, EOS, UNK = 0, 1, 2, 3
NUM_SPECIAL = 4
SPECIAL_NAMES = ("<pad>", "<bos>", "<eos>", "<unk>")

Encode = Callable[[str], list[int]]
Decode = Callable[[list[int]], str]


class CaptionVocab:
    """Compact id c >= 4 stands for LLM token `llm_ids[c - 4]`."""

    def __init__(self, llm_ids: Sequence[int]):
        self.llm_ids = np.asarray(llm_ids, np.int64)
        if len(set(self.llm_ids.tolist())) != len(self.llm_ids):
            raise ValueError("llm_ids must be unique")
        self._compact = {int(t): i + NUM_SPECIAL for i, t in enumerate(self.llm_ids)}

    def __len__(self) -> int:
        return NUM_SPECIAL + len(self.llm_ids)

    @classmethod
    def build(cls, captions: Iterable[str], encode: Encode, *, min_count: int = 1,
              max_size: int | None = None, skip_ids: Iterable[int] = ()) -> "CaptionVocab":
        """Ids seen at least `min_count` times in `captions`, most frequent first (ties by id)."""
        counts = collections.Counter()
        for text in captions:
            counts.update(encode(text))
        skip = set(skip_ids)
        ranked = sorted((t for t, c in counts.items() if c >= min_count and t not in skip),
                        key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[: max_size - NUM_SPECIAL]
        if not ranked:
            raise ValueError("no caption tokens: are the captions empty?")
        return cls(ranked)

    def from_llm(self, llm_ids: Iterable[int]) -> list[int]:
        return [self._compact.get(int(t), UNK) for t in llm_ids]

    def to_llm(self, compact: Iterable[int]) -> list[int]:
        """Compact ids after BOS up to EOS -> LLM ids (specials dropped)."""
        out = []
        for c in compact:
            c = int(c)
            if c == EOS:
                break
            if c >= NUM_SPECIAL:
                out.append(int(self.llm_ids[c - NUM_SPECIAL]))
        return out

    def tokenize(self, captions: Sequence[str], encode: Encode, max_len: int) -> np.ndarray:
        """Captions -> (N, max_len + 1) int32 rows `BOS t1 .. tn EOS PAD ..` (n <= max_len - 1).

        Inputs for teacher forcing are `rows[:, :-1]`, targets `rows[:, 1:]`.
        """
        rows = np.full((len(captions), max_len + 1), PAD, np.int32)
        for i, text in enumerate(captions):
            ids = self.from_llm(encode(text))[: max_len - 1]
            rows[i, : len(ids) + 2] = [BOS, *ids, EOS]
        return rows

    def detokenize(self, compact: Iterable[int], decode: Decode) -> str:
        seq = list(compact)
        if seq and int(seq[0]) == BOS:
            seq = seq[1:]
        return decode(self.to_llm(seq)).strip()

    def unk_rate(self, captions: Sequence[str], encode: Encode) -> float:
        ids = [c for text in captions for c in self.from_llm(encode(text))]
        return float(np.mean([c == UNK for c in ids])) if ids else 0.0
