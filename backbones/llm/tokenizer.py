"""Text <-> token ids for the frozen LLM, rebuilt from GGUF metadata or read from tokenizer.json,
plus the chat template (rendered with Jinja's sandbox, as the checkpoint defines it)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

# GGUF token types (llama.cpp): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
_CONTROL, _USER_DEFINED = 3, 4

# Pre-tokenisation of llama.cpp's `tokenizer.ggml.pre` names for byte-level BPE vocabularies.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _byte_level_pre_tokenizer(pre: str):
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("smollm", "starcoder", "refact", "codeshell"):
        # Digits one by one, then GPT-2's split and byte mapping.
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre in ("gpt-2", "gpt2", "default", "olmo", "phi-2", "jais"):
        return byte_level
    if pre in ("llama-bpe", "llama3", "smaug-bpe"):
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    raise ValueError(f"GGUF pre-tokenizer {pre!r} is not supported; supported: smollm, gpt-2, llama-bpe")


def tokenizer_from_gguf(meta: Mapping[str, Any]) -> Tokenizer:
    """Rebuild a `tokenizers.Tokenizer` from a GGUF's `tokenizer.ggml.*` fields: byte-level BPE
    ('gpt2'), or SentencePiece-style BPE with byte fallback ('llama' with Gemma's vocabulary)."""
    kind = meta.get("tokenizer.ggml.model")
    if kind == "llama" and "tokenizer.ggml.merges" not in meta:
        return _sentencepiece_bpe_from_gguf(meta)
    if kind != "gpt2":
        raise ValueError(f"GGUF tokenizer model {kind!r} is not supported (byte-level BPE 'gpt2' and "
                         "SentencePiece 'llama' without merges, as Gemma's, are)")
    tokens: Sequence[str] = meta["tokenizer.ggml.tokens"]
    types: Sequence[int] = meta.get("tokenizer.ggml.token_type", [1] * len(tokens))
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = _byte_level_pre_tokenizer(meta.get("tokenizer.ggml.pre", "default"))
    tok.decoder = decoders.ByteLevel()
    return _add_marked_tokens(tok, tokens, types)


def _add_marked_tokens(tok: Tokenizer, tokens: Sequence[str], types: Sequence[int]) -> Tokenizer:
    """Control tokens become special added tokens, user-defined ones plain added tokens (both always
    matched whole in the text)."""
    special = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == _CONTROL]
    user = [AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types) if ty == _USER_DEFINED]
    tok.add_special_tokens(special)
    if user:
        tok.add_tokens(user)
    return tok


_SPACE = "\u2581"   # SentencePiece's visible space


def _sentencepiece_bpe_from_gguf(meta: Mapping[str, Any]) -> Tokenizer:
    """SentencePiece BPE (Gemma): spaces become U+2581, no prefix space, bytes as <0xNN> fallback tokens.

    Gemma's GGUF stores no merges, only the vocabulary in priority order (its scores do not follow
    that order). A token t at index i is the merge of every split t = a + b whose halves are both
    tokens; merges are ranked by i, and for one token by the longer left half first (other
    SentencePiece vocabularies are ranked by score instead). Tokens made of
    two or more spaces are stored with real spaces and are respelled with U+2581.
    """
    raw: Sequence[str] = meta["tokenizer.ggml.tokens"]
    types: Sequence[int] = meta.get("tokenizer.ggml.token_type", [1] * len(raw))
    tokens = [_SPACE * len(t) if " " in t and not t.strip() else t for t in raw]
    vocab = {t: i for i, t in enumerate(tokens)}
    if str(meta.get("general.architecture", "")).startswith("gemma"):
        order = tokens                       # vocabulary order is merge priority
    else:                                    # classic SentencePiece: higher score merges first
        scores = meta["tokenizer.ggml.scores"]
        order = [tokens[i] for i in sorted(range(len(tokens)), key=lambda i: -scores[i])]
    merges = []
    for t in order:
        for cut in range(len(t) - 1, 0, -1):
            left, right = t[:cut], t[cut:]
            if left in vocab and right in vocab:
                merges.append((left, right))
    unk = meta.get("tokenizer.ggml.unknown_token_id")
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=tokens[unk] if unk is not None else None,
                               fuse_unk=True, byte_fallback=True))
    if meta.get("tokenizer.ggml.add_space_prefix", False):
        tok.normalizer = normalizers.Sequence([normalizers.Prepend(_SPACE), normalizers.Replace(" ", _SPACE)])
    else:
        tok.normalizer = normalizers.Replace(" ", _SPACE)
    tok.decoder = decoders.Sequence([decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    return _add_marked_tokens(tok, tokens, types)


def tokenizer_from_file(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    return Tokenizer.from_file(str(path))


class ChatTemplate:
    """Renders a list of {"role", "content"} messages with the checkpoint's Jinja chat template."""

    CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
              " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
              "{{ '<|im_start|>assistant\n' }}{% endif %}")

    # Gemma's turns (its GGUF carries no template): a system message opens the first user turn.
    GEMMA = ("{{ bos_token }}{% set ns = namespace(system='') %}{% for message in messages %}"
             "{% if message['role'] == 'system' %}{% set ns.system = message['content'] | trim + '\n\n' %}"
             "{% else %}{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role'])"
             " + '\n' + ns.system + message['content'] | trim + '<end_of_turn>\n' }}"
             "{% set ns.system = '' %}{% endif %}{% endfor %}"
             "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}")

    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = ""):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        self.source = source or self.CHATML
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = self._raise
        self._template = env.from_string(self.source)
        self.bos_token, self.eos_token = bos_token, eos_token

    @staticmethod
    def _raise(message: str):
        raise ValueError(f"chat template: {message}")

    def render(self, messages: Sequence[Mapping[str, str]] | str, add_generation_prompt: bool = True) -> str:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return self._template.render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                     bos_token=self.bos_token, eos_token=self.eos_token)


def read_hf_tokenizer_config(directory: Path) -> dict:
    path = directory / "tokenizer_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


class TokenText:
    """encode / decode (and prompts as ids) through `self.tokenizer` (a `tokenizers.Tokenizer`), ids checked against
    `self.config.vocab_size`: the text side that the decoder LLM (FrozenLLM) and the T5 reader share."""

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens added."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}")
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.config.vocab_size]
        if bad:
            raise ValueError(f"token ids out of range [0, {self.config.vocab_size}): {bad[:5]}")
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special)

    def _as_ids(self, prompt: str | Sequence[int]) -> list[int]:
        """A prompt as token ids: a str is encoded, ids are checked against the vocabulary."""
        if isinstance(prompt, str):
            return self.encode(prompt)
        ids = [int(i) for i in prompt]
        if any(not 0 <= i < self.config.vocab_size for i in ids):
            raise ValueError(f"token ids must lie in [0, {self.config.vocab_size})")
        return ids
