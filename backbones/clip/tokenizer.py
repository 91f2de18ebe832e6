"""Text tokenizers for the CLIP text tower; each maps ``list[str]`` to int32 ids ``(B, context_length)``.

- :class:`BPETokenizer`: the CLIP byte-level BPE (lower-cased, ``</w>`` word ends), from a
  Hugging Face ``tokenizer.json``, from ``vocab.json`` + ``merges.txt``, or from the
  ``bpe_simple_vocab_16e6.txt.gz`` file that the PyPI package ``open-clip-torch`` ships
  (install it with ``pip install --no-deps open-clip-torch``; its torch code is never imported).
- :class:`ByteTokenizer`: UTF-8 bytes; no vocabulary file, handles any string. The repo's
  offline contrastive model uses it.
- :class:`LLMTokenizer`: the frozen LLM's own tokenizer (LiT-style text towers built from its embeddings).

Every tokenizer writes ``[bos] + tokens + [eos]``, truncated to ``context_length`` (the end
token is kept), then pads with ``pad_id``.
"""
from __future__ import annotations

import functools
import gzip
import json
import os
import unicodedata
from typing import Sequence

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

CLIP_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("expected a list of strings, got one string; wrap it: [text]")
    texts = list(texts)
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"expected a list of strings, found items of type {sorted(set(bad))}")
    return texts


class _Base:
    context_length: int
    bos_id: int
    eos_id: int
    pad_id: int

    def encode_tokens(self, texts: list[str]) -> list[list[int]]:
        raise NotImplementedError

    def __call__(self, texts: Sequence[str], context_length: int | None = None) -> np.ndarray:
        """Ids (B, T) int32 with T = context_length; over-long texts are cut, keeping the end token."""
        texts = _check_texts(texts)
        T = context_length or self.context_length
        out = np.full((len(texts), T), self.pad_id, np.int32)
        for i, toks in enumerate(self.encode_tokens(texts)):
            row = [self.bos_id] + toks[: T - 2] + [self.eos_id]
            out[i, : len(row)] = row
        return out

    def lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Number of ids each text needs, with bos/eos (to bucket batches by length)."""
        return np.array([len(t) + 2 for t in self.encode_tokens(_check_texts(texts))], np.int64)


@functools.lru_cache(maxsize=None)
def bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character table of byte-level BPE (GPT-2 / CLIP), in its canonical order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clip_vocab_from_merges(merges: list[tuple[str, str]]) -> dict[str, int]:
    """The CLIP vocabulary implied by its merge list: bytes, bytes + '</w>', merges, then bos/eos."""
    base = list(bytes_to_unicode().values())
    vocab = base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + [BOS, EOS]
    return {tok: i for i, tok in enumerate(vocab)}


def build_clip_bpe(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` that splits text the way CLIP does (no special tokens added)."""
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, continuing_subword_prefix="",
                               end_of_word_suffix="</w>", fuse_unk=False, unk_token=EOS))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def open_clip_vocab_file() -> str:
    """Path of ``bpe_simple_vocab_16e6.txt.gz`` from the installed ``open-clip-torch`` (found without importing it)."""
    from importlib import metadata

    try:
        dist = metadata.distribution("open-clip-torch")
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(
            "the CLIP BPE vocabulary file is not installed; install it with "
            "`pip install --no-deps open-clip-torch` (only its vocabulary file is used), or pass a "
            "tokenizer.json / vocab.json + merges.txt") from None
    for f in dist.files or ():
        if str(f).endswith("bpe_simple_vocab_16e6.txt.gz"):
            return str(dist.locate_file(f))
    raise FileNotFoundError("open-clip-torch is installed but ships no bpe_simple_vocab_16e6.txt.gz")


class BPETokenizer(_Base):
    """The CLIP BPE tokenizer (49,408 ids for the OpenAI vocabulary; pad id 0 as OpenAI pads)."""

    def __init__(self, tokenizer: Tokenizer, context_length: int = 77, pad_id: int = 0):
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.bos_id = tokenizer.token_to_id(BOS)
        self.eos_id = tokenizer.token_to_id(EOS)
        if self.bos_id is None or self.eos_id is None:
            raise ValueError(f"tokenizer has no {BOS} / {EOS} tokens: not a CLIP tokenizer")
        self.pad_id = pad_id
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def from_file(cls, path: str, **kw) -> "BPETokenizer":
        """From a Hugging Face ``tokenizer.json`` (its post-processor is bypassed; bos/eos are added here)."""
        return cls(Tokenizer.from_file(str(path)), **kw)

    @classmethod
    def from_vocab_merges(cls, vocab_json: str, merges_txt: str, **kw) -> "BPETokenizer":
        with open(vocab_json, encoding="utf-8") as f:
            vocab = json.load(f)
        with open(merges_txt, encoding="utf-8") as f:
            lines = [l for l in f.read().split("\n") if l and not l.startswith("#version")]
        return cls(build_clip_bpe(vocab, [tuple(l.split()) for l in lines]), **kw)

    @classmethod
    def from_open_clip_vocab(cls, path: str | None = None, **kw) -> "BPETokenizer":
        """From ``bpe_simple_vocab_16e6.txt.gz`` (default: the copy installed by ``open-clip-torch``)."""
        path = path or open_clip_vocab_file()
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(l.split()) for l in lines[1: 49152 - 256 - 2 + 1]]  # the 48,894 merges CLIP uses
        return cls(build_clip_bpe(clip_vocab_from_merges(merges), merges), **kw)

    def encode_tokens(self, texts):
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids if int(i) not in (self.pad_id, self.bos_id, self.eos_id)]
        return self.tokenizer.decode(ids).replace("</w>", " ").strip()

    def spec(self) -> dict:
        return {"type": "clip_bpe", "context_length": self.context_length, "pad_id": self.pad_id}


class ByteTokenizer(_Base):
    """Lower-cased, whitespace-normalised UTF-8 bytes: ids 3..258; pad 0, bos 1, eos 2."""

    vocab_size = 259
    pad_id, bos_id, eos_id = 0, 1, 2

    def __init__(self, context_length: int = 64, lowercase: bool = True):
        self.context_length = context_length
        self.lowercase = lowercase

    def normalize(self, text: str) -> str:
        text = " ".join(unicodedata.normalize("NFC", text).split())
        return text.lower() if self.lowercase else text

    def encode_tokens(self, texts):
        return [[b + 3 for b in self.normalize(t).encode("utf-8")] for t in texts]

    def decode(self, ids) -> str:
        return bytes(int(i) - 3 for i in ids if int(i) >= 3).decode("utf-8", errors="replace")

    def spec(self) -> dict:
        return {"type": "bytes", "context_length": self.context_length, "lowercase": self.lowercase}


class LLMTokenizer(_Base):
    """The frozen LLM's tokenizer (the ids ``llm.encode`` gives), lower-cased; bos/eos/pad are its special ids.

    For SmolLM2: bos = ``<|im_start|>`` (1), eos = ``<|im_end|>`` (2), pad = ``<|endoftext|>`` (0).
    """

    def __init__(self, tokenizer: Tokenizer, bos_id: int, eos_id: int, pad_id: int,
                 context_length: int = 40, llm_name: str = "smollm2-135m"):
        self.tokenizer, self.bos_id, self.eos_id, self.pad_id = tokenizer, bos_id, eos_id, pad_id
        self.vocab_size, self.context_length, self.llm_name = tokenizer.get_vocab_size(), context_length, llm_name

    def encode_tokens(self, texts):
        texts = [" ".join(t.lower().split()) for t in texts]
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids if int(i) not in (self.pad_id, self.bos_id, self.eos_id)])

    def spec(self) -> dict:
        return {"type": "llm", "name": self.llm_name, "context_length": self.context_length}


def llm_tokenizer(tokenizer: Tokenizer, context_length: int = 40, name: str = "smollm2-135m") -> LLMTokenizer:
    """Wrap an LLM's ``tokenizers.Tokenizer`` with its special ids (ChatML names, else common fallbacks)."""
    vocab = tokenizer.get_vocab()
    pick = lambda names, default: next((vocab[t] for t in names if t in vocab), default)
    bos = pick(("<|im_start|>", "<s>", "<bos>"), 1)
    eos = pick(("<|im_end|>", "</s>", "<eos>"), 2)
    pad = pick(("<|endoftext|>", "<pad>", "<|padding|>"), 0)
    return LLMTokenizer(tokenizer, bos, eos, pad, context_length, name)


def tokenizer_from_spec(spec: dict, directory: str | None = None, llm_tokenizer_obj: Tokenizer | None = None):
    """Rebuild a tokenizer from the ``spec()`` stored in a checkpoint's config."""
    kind = spec["type"]
    if kind == "bytes":
        return ByteTokenizer(spec["context_length"], spec.get("lowercase", True))
    if kind == "clip_bpe":
        path = os.path.join(directory or "", "tokenizer.json")
        if directory and os.path.exists(path):
            return BPETokenizer.from_file(path, context_length=spec["context_length"], pad_id=spec["pad_id"])
        return BPETokenizer.from_open_clip_vocab(context_length=spec["context_length"], pad_id=spec["pad_id"])
    if kind == "llm":
        if llm_tokenizer_obj is None:
            raise ValueError("an LLM-tokenizer checkpoint needs the LLM's tokenizer (see backbones.clip.llm_text)")
        return llm_tokenizer(llm_tokenizer_obj, spec["context_length"], spec["name"])
    raise ValueError(f"unknown tokenizer type {kind!r}")
