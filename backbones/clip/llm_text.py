"""The frozen LLM's token table and tokenizer, for CLIP text towers built on them (LiT-style input).

Reading the table from the GGUF means dequantising 49,152 x 576 values (seconds on a small
CPU), so the float32 table is cached once on disk, keyed by the GGUF file's name, size and
modification time. An already loaded LLM (``backbones.load_llm``) can be passed instead.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from backbones.clip.cache import cache_dir


def _from_gguf(name: str):
    from tokenizers import Tokenizer

    from backbones.llm.api import named_model_path

    path = str(named_model_path(name)) if not os.path.exists(name) else name
    st = os.stat(path)
    key = hashlib.sha256(f"{os.path.basename(path)}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]
    table_path = os.path.join(cache_dir("llm-token-table"), f"{key}.npy")
    tok_path = os.path.join(cache_dir("llm-token-table"), f"{key}.tokenizer.json")
    if not (os.path.exists(table_path) and os.path.exists(tok_path)):
        from backbones.llm.tokenizer import tokenizer_from_gguf
        from backbones.llm.weights import dequantize, read_gguf

        meta, tensors = read_gguf(path)
        _atomic_write(tok_path, lambda f: f.write(tokenizer_from_gguf(meta).to_str().encode()))
        table = dequantize(tensors["token_embd.weight"])   # (V, d) float32
        _atomic_write(table_path, lambda f: np.save(f, table))
    return Tokenizer.from_file(tok_path), np.load(table_path)


def _atomic_write(path: str, write):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def llm_token_assets(llm=None, name: str = "smollm2-135m"):
    """-> (``tokenizers.Tokenizer``, token table float32 (V, d)) of the frozen LLM.

    ``llm``: a loaded ``FrozenLLM`` (its ``tokenizer`` and ``embeddings`` are used); else ``name``
    (a named LLM or a .gguf path) is read directly, without building the LLM.
    """
    if llm is not None:
        return llm.tokenizer, np.asarray(llm.embeddings, np.float32)
    return _from_gguf(name)
