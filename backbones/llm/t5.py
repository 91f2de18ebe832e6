"""T5 / Flan-T5 encoder-decoder in Flax NNX, and `T5Reader`: the frozen reader behind the
`FrozenLLM` interface (backbones/llm/api.py), loaded from a Hugging Face directory.

    llm = load_llm("path/to/flan-t5-base")            # config.json model_type "t5" -> T5Reader
    llm.encode(text) -> list[int];  llm.decode(ids) -> str
    llm.score(prompt, candidates) -> list[float]      # log p(candidate + </s> | prompt), summed
    llm.generate(prompt | prompts, max_new_tokens=...) -> str | list[str]   # greedy; `chat` ignored
    llm.logits(prompt, target=()) -> (len(target) + 1, V) decoder logits
    llm.encoder_output(prompt) -> (T, D) encoder states;  llm.embeddings (V, D);  llm.token_strings

The prompt is the encoder's input (its ids then </s>, as the T5 tokenizer's post-processor writes
them); the decoder starts from `decoder_start_token_id` (the pad token) and its targets are the
candidate / the generated text. T5 has no chat template: `generate(chat=True)` reads the prompt
as it is (Flan-T5 was tuned on plain instructions).

The model (T5 v1.0 and v1.1 / Flan-T5): relative position buckets (bidirectional in the encoder,
causal in the decoder, one bias table per stack, read by every layer), T5's LayerNorm (a scale,
no mean subtraction, no bias), attention without the 1/sqrt(E) scaling, a ReLU FFN (original T5,
`feed_forward_proj` "relu") or a gated one ("gated-gelu": gelu_new(x W0) * (x W1)), and the output
head: untied `lm_head` (Flan-T5, `tie_word_embeddings` false) or the shared table with the decoder
output scaled by d_model**-0.5 (original T5). Layer weights are stacked on a leading layer axis
and scanned. Greedy generation caches the decoder's keys/values and the cross-attention's
keys/values of the encoder output, in one jitted while loop.

Axis letters: B batch, T query time, S key time, D width, H heads, E head dim, F FFN width,
V vocabulary, L layers, N relative-position buckets.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tokenizers import Tokenizer

from backbones.llm.model import KVCache, attention_weights, rms_norm, scan_layers
from backbones.llm.tokenizer import TokenText
from backbones.weight_files import CheckpointError

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),           # HF's tanh approximation
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu": functools.partial(jax.nn.gelu, approximate=False),              # HF's "gelu" is the exact one
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class T5Config:
    vocab_size: int
    d_model: int                 # D
    d_kv: int                    # E, per head
    d_ff: int                    # F
    n_layers: int                # encoder layers
    n_decoder_layers: int
    n_heads: int                 # H
    num_buckets: int = 32        # N relative-position buckets
    max_distance: int = 128      # distances beyond it share the last bucket
    eps: float = 1e-6
    act: str = "relu"            # an ACTIVATIONS name
    gated: bool = False          # FFN act(x W0) * (x W1) (T5 v1.1, Flan-T5) instead of act(x W)
    tied_head: bool = True       # logits from the shared table (no lm_head tensor in the checkpoint)
    scale_output: bool = True    # decoder output * d_model**-0.5 before the head (original T5)
    pad_id: int = 0
    eos_id: int = 1
    decoder_start_id: int = 0

    @classmethod
    def from_hf_config(cls, c: dict, has_lm_head: bool) -> "T5Config":
        """From a T5 config.json. `has_lm_head`: the checkpoint holds its own `lm_head.weight`.

        The output scaling follows the config: `scale_decoder_outputs` where transformers 5 wrote
        it, else `tie_word_embeddings` (absent: true), as the v1.0 / v1.1 configs say it."""
        ff = str(c.get("feed_forward_proj", "relu"))
        parts = ff.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            raise ValueError(f"feed_forward_proj {ff!r} is not 'ACT' or 'gated-ACT'")
        act = "gelu_new" if ff == "gated-gelu" else parts[-1]
        if act not in ACTIVATIONS:
            raise ValueError(f"feed_forward_proj {ff!r}: activation {act!r} is not supported ({sorted(ACTIVATIONS)})")
        tie = c.get("tie_word_embeddings", True) is not False
        scale = bool(c["scale_decoder_outputs"]) if "scale_decoder_outputs" in c else tie
        if not tie and not has_lm_head:
            raise ValueError("config.json says tie_word_embeddings false, but the checkpoint has no lm_head.weight")
        eos = c.get("eos_token_id", 1)
        eos = eos[0] if isinstance(eos, list) else eos
        pad = c.get("pad_token_id", 0)
        pad = 0 if pad is None else int(pad)
        start = c.get("decoder_start_token_id")
        try:
            return cls(vocab_size=int(c["vocab_size"]), d_model=int(c["d_model"]), d_kv=int(c["d_kv"]),
                       d_ff=int(c["d_ff"]), n_layers=int(c["num_layers"]),
                       n_decoder_layers=int(c.get("num_decoder_layers") or c["num_layers"]),
                       n_heads=int(c["num_heads"]), num_buckets=int(c.get("relative_attention_num_buckets", 32)),
                       max_distance=int(c.get("relative_attention_max_distance", 128)),
                       eps=float(c.get("layer_norm_epsilon", 1e-6)), act=act, gated=parts[0] == "gated",
                       tied_head=not has_lm_head, scale_output=scale, pad_id=pad,
                       eos_id=int(1 if eos is None else eos), decoder_start_id=pad if start is None else int(start))
        except KeyError as e:
            raise ValueError(f"config.json lacks {e.args[0]!r}, which a T5 config has") from None


def relative_buckets(rel: np.ndarray, bidirectional: bool, num_buckets: int, max_distance: int) -> np.ndarray:
    """T5's bucket of each relative position (key position - query position), on the host.

    Half the buckets (per direction, when bidirectional) are exact distances, the rest logarithmic
    bins up to max_distance; the float32 arithmetic is the reference's (Mesh TensorFlow's, as
    transformers computes it), so bin edges fall where the checkpoint was trained."""
    rel = np.asarray(rel, np.int64)
    out = np.zeros_like(rel)
    n = num_buckets
    if bidirectional:
        n //= 2
        out = out + (rel > 0) * n
        rel = np.abs(rel)
    else:
        rel = -np.minimum(rel, 0)
    exact = n // 2
    ratio = np.log(np.maximum(rel, 1).astype(np.float32) / np.float32(exact))
    large = exact + (ratio / np.float32(math.log(max_distance / exact)) * np.float32(n - exact)).astype(np.int64)
    large = np.minimum(large, n - 1)
    return out + np.where(rel < exact, rel, large)


def _attend(q, k, v, mask, bias=None):
    """q (B,T,H,E), k/v (B,S,H,E), mask (B,T,S) bool, bias (1,H,T,S) -> (B,T,H,E). No 1/sqrt(E)."""
    scores = jnp.einsum("BTHE,BSHE->BHTS", q, k).astype(jnp.float32)
    if bias is not None:
        scores = scores + bias
    w = attention_weights(scores, mask[:, None], False).astype(v.dtype)
    return jnp.einsum("BHTS,BSHE->BTHE", w, v)


class T5Stack(nnx.Module):
    """One stack's weights, stacked over its L layers: the encoder, or (cross=True) the decoder."""

    def __init__(self, cfg: T5Config, n_layers: int, cross: bool, *, rngs: nnx.Rngs, dtype=jnp.float32):
        L, D, H, E, F = n_layers, cfg.d_model, cfg.n_heads, cfg.d_kv, cfg.d_ff
        init = nnx.initializers.normal(0.05)

        def param(*shape):
            return nnx.Param(init(rngs.params(), shape, dtype))

        def ones(*shape):
            return nnx.Param(jnp.ones(shape, dtype))

        self.rel_bias = param(cfg.num_buckets, H)          # (N, H), layer 0's, shared by all layers
        self.attn_norm = ones(L, D)
        self.wq, self.wk, self.wv = param(L, D, H, E), param(L, D, H, E), param(L, D, H, E)
        self.wo = param(L, H, E, D)
        if cross:
            self.cross_norm = ones(L, D)
            self.cq, self.ck, self.cv = param(L, D, H, E), param(L, D, H, E), param(L, D, H, E)
            self.co = param(L, H, E, D)
        else:
            self.cross_norm = self.cq = self.ck = self.cv = self.co = None
        self.ffn_norm = ones(L, D)
        self.wi = param(L, D, F)                           # wi, or wi_0 (the activated half) when gated
        self.wi_lin = param(L, D, F) if cfg.gated else None   # wi_1, the linear half
        self.wff = param(L, F, D)                          # wo of the FFN
        self.final_norm = ones(D)

    def layer_params(self) -> dict:
        names = ("attn_norm", "wq", "wk", "wv", "wo", "cross_norm", "cq", "ck", "cv", "co", "ffn_norm", "wi",
                 "wi_lin", "wff")
        return {n: getattr(self, n).get_value() for n in names if getattr(self, n) is not None}


class T5(nnx.Module):
    """T5ForConditionalGeneration's computation: `encode`, `cross_kv`, `decode` (see the module doc)."""

    def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.cfg, self.dtype = cfg, dtype
        self.embed = nnx.Param(nnx.initializers.normal(1.0)(rngs.params(), (cfg.vocab_size, cfg.d_model), dtype))
        self.encoder = T5Stack(cfg, cfg.n_layers, False, rngs=rngs, dtype=dtype)
        self.decoder = T5Stack(cfg, cfg.n_decoder_layers, True, rngs=rngs, dtype=dtype)
        self.head = None if cfg.tied_head else nnx.Param(
            nnx.initializers.normal(0.05)(rngs.params(), (cfg.d_model, cfg.vocab_size), dtype))   # (D, V)

    def _ffn(self, x, p):
        cfg = self.cfg
        h = rms_norm(x, p["ffn_norm"], cfg.eps)
        a = ACTIVATIONS[cfg.act](jnp.einsum("BTD,DF->BTF", h, p["wi"]))
        if "wi_lin" in p:
            a = a * jnp.einsum("BTD,DF->BTF", h, p["wi_lin"])
        return x + jnp.einsum("BTF,FD->BTD", a.astype(x.dtype), p["wff"]).astype(x.dtype)

    def encode(self, tokens: jax.Array, valid: jax.Array) -> jax.Array:
        """tokens (B, T) int, valid (B, T) bool (False for padding) -> (B, T, D) encoder output."""
        cfg = self.cfg
        T = tokens.shape[1]
        x = self.embed[...][tokens].astype(self.dtype)                                 # (B, T, D)
        pos = np.arange(T)
        buckets = relative_buckets(pos[None, :] - pos[:, None], True, cfg.num_buckets, cfg.max_distance)
        bias = jnp.transpose(self.encoder.rel_bias[...][buckets].astype(jnp.float32), (2, 0, 1))[None]  # (1,H,T,T)
        mask = jnp.broadcast_to(valid[:, None, :], (tokens.shape[0], T, T))

        def block(x, p):
            h = rms_norm(x, p["attn_norm"], cfg.eps)
            q, k, v = (jnp.einsum("BTD,DHE->BTHE", h, p[w]) for w in ("wq", "wk", "wv"))
            x = x + jnp.einsum("BTHE,HED->BTD", _attend(q, k, v, mask, bias), p["wo"]).astype(x.dtype)
            return self._ffn(x, p), None

        x, _ = jax.lax.scan(block, x, self.encoder.layer_params())
        return rms_norm(x, self.encoder.final_norm[...], cfg.eps)

    def cross_kv(self, enc: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(B, S, D) encoder output -> every decoder layer's cross-attention keys and values (L, B, S, H, E)."""
        st = self.decoder
        k = jnp.einsum("BSD,LDHE->LBSHE", enc, st.ck[...])
        v = jnp.einsum("BSD,LDHE->LBSHE", enc, st.cv[...])
        return k, v

    def decode(self, tokens: jax.Array, cross_k: jax.Array, cross_v: jax.Array, enc_valid: jax.Array,
               cache: KVCache | None = None, slot: jax.Array | int = 0) -> tuple[jax.Array, KVCache | None]:
        """Decoder tokens (B, T) at positions [slot, slot + T) -> ((B, T, V) float32 logits, cache).

        cross_k/v (L, B, S_enc, H, E) from `cross_kv`; enc_valid (B, S_enc) bool. Without a cache,
        causal attention within `tokens` (slot 0); with one (S slots), this step's keys are written
        at [slot, slot + T) and each query attends to the slots up to its own."""
        cfg = self.cfg
        B, T = tokens.shape
        S = T if cache is None else cache.k.shape[2]
        x = self.embed[...][tokens].astype(self.dtype)                                 # (B, T, D)
        # Causal buckets depend on the distance q - k >= 0 alone: a host table, indexed on device.
        table = jnp.asarray(relative_buckets(-np.arange(S + T), False, cfg.num_buckets, cfg.max_distance), jnp.int32)
        dist = (slot + jnp.arange(T))[:, None] - jnp.arange(S)[None, :]                # (T, S)
        bias = jnp.transpose(self.decoder.rel_bias[...][table[jnp.maximum(dist, 0)]].astype(jnp.float32),
                             (2, 0, 1))[None]                                          # (1, H, T, S)
        mask = jnp.broadcast_to((dist >= 0)[None], (B, T, S))
        cross_mask = jnp.broadcast_to(enc_valid[:, None, :], (B, T, enc_valid.shape[1]))

        def block(x, xs, k_past, v_past):
            p, ck, cv = xs
            h = rms_norm(x, p["attn_norm"], cfg.eps)
            q, k, v = (jnp.einsum("BTD,DHE->BTHE", h, p[w]) for w in ("wq", "wk", "wv"))
            if k_past is None:
                k_all, v_all = k, v
            else:
                k_all = jax.lax.dynamic_update_slice(k_past, k.astype(k_past.dtype), (0, slot, 0, 0))
                v_all = jax.lax.dynamic_update_slice(v_past, v.astype(v_past.dtype), (0, slot, 0, 0))
            x = x + jnp.einsum("BTHE,HED->BTD", _attend(q, k_all, v_all, mask, bias), p["wo"]).astype(x.dtype)
            h = rms_norm(x, p["cross_norm"], cfg.eps)
            q = jnp.einsum("BTD,DHE->BTHE", h, p["cq"])
            x = x + jnp.einsum("BTHE,HED->BTD", _attend(q, ck, cv, cross_mask), p["co"]).astype(x.dtype)
            return self._ffn(x, p), k, v

        params = self.decoder.layer_params()
        x, cache = scan_layers(block, x, (params, cross_k, cross_v), cache, slot,
                               None if cache is None else cache.valid)
        h = rms_norm(x, self.decoder.final_norm[...], cfg.eps).astype(jnp.float32)
        if cfg.scale_output:
            h = h * cfg.d_model ** -0.5
        if self.head is not None:
            logits = jnp.einsum("BTD,DV->BTV", h, self.head[...].astype(jnp.float32))
        else:
            logits = jnp.einsum("BTD,VD->BTV", h, self.embed[...].astype(jnp.float32))
        return logits, cache


def _bucket(n: int, step: int) -> int:
    """n rounded up to a multiple of `step` (few distinct shapes for jit)."""
    return max(step, -(-n // step) * step)


class T5Reader(TokenText):  # encode: ids without the </s> that encoder inputs and targets end with
    """A frozen T5 / Flan-T5 with its tokenizer, behind FrozenLLM's methods (see the module doc)."""

    def __init__(self, model: T5, tokenizer: Tokenizer, *, name: str = "t5", weights: str = "fp32"):
        self.model, self.tokenizer, self.name, self.weights = model, tokenizer, name, weights
        self.config: T5Config = model.cfg
        self.pad_id, self.eos_id = self.config.pad_id, self.config.eos_id
        self.eos_ids = (self.eos_id,)
        self.bos_id, self.add_bos, self.mesh = None, False, None
        self.chat_template = None              # T5 has none: generate(chat=...) reads prompts as they are
        self._graphdef, self._state = nnx.split(model)
        vocab = tokenizer.get_vocab_size(with_added_tokens=True)
        if vocab > self.config.vocab_size:
            raise ValueError(f"tokenizer has {vocab} tokens but the model only {self.config.vocab_size}")

    # ------------------------------------------------------------------------------- text (encode, decode: TokenText)
    @functools.cached_property
    def token_strings(self) -> list[str]:
        return [self.tokenizer.decode([i], skip_special_tokens=False) for i in range(self.config.vocab_size)]

    @functools.cached_property
    def embeddings(self) -> np.ndarray:
        """The shared (encoder and decoder) input embedding table, (V, D) float32, read-only."""
        arr = np.asarray(self.model.embed[...], dtype=np.float32)
        arr.setflags(write=False)
        return arr

    def chat_prompt(self, message) -> str:
        """T5 has no chat template: a message is its own prompt (a list of messages: their contents)."""
        return message if isinstance(message, str) else "\n".join(m["content"] for m in message)

    def _with_eos(self, ids: list[int]) -> list[int]:
        return ids if ids and ids[-1] == self.eos_id else ids + [self.eos_id]

    def _encoder_batch(self, prompts: Sequence[str | Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Prompts -> right-padded (B, T) encoder ids (each ending in </s>) and their valid mask."""
        ids = [self._as_ids(p) for p in prompts]
        if any(not i for i in ids):
            raise ValueError("a prompt encodes to no tokens")
        ids = [self._with_eos(i) for i in ids]
        T = _bucket(max(len(i) for i in ids), 32)
        tokens = np.full((len(ids), T), self.pad_id, np.int32)
        for b, i in enumerate(ids):
            tokens[b, :len(i)] = i
        return tokens, np.arange(T)[None] < np.array([len(i) for i in ids])[:, None]

    # ---------------------------------------------------------------------------- forward
    @functools.partial(jax.jit, static_argnums=(0,))
    def _forward(self, state, enc_tokens, enc_valid, dec_tokens):
        model = nnx.merge(self._graphdef, state)
        enc = model.encode(enc_tokens, enc_valid)
        ck, cv = model.cross_kv(enc)
        return enc, model.decode(dec_tokens, ck, cv, enc_valid)[0]

    def _run(self, prompt, target: Sequence[int]):
        tokens, valid = self._encoder_batch([prompt])
        dec = [self.config.decoder_start_id] + [int(t) for t in target]
        dec_tokens = np.full((1, _bucket(len(dec), 8)), self.pad_id, np.int32)
        dec_tokens[0, :len(dec)] = dec
        enc, logits = self._forward(self._state, tokens, valid, dec_tokens)
        return np.asarray(enc[0, :int(valid.sum())], np.float32), np.asarray(logits[0, :len(dec)], np.float32)

    def encoder_output(self, prompt: str | Sequence[int]) -> np.ndarray:
        """(T, D) float32 encoder output for the prompt's ids and </s>."""
        return self._run(prompt, [])[0]

    def logits(self, prompt: str | Sequence[int], target: str | Sequence[int] = ()) -> np.ndarray:
        """(len(target) + 1, V) float32 decoder logits with `prompt` as the encoder input: row j
        predicts target[j] after the start token and target[:j]; the last row, the next token."""
        return self._run(prompt, self._as_ids(target))[1]

    @functools.partial(jax.jit, static_argnums=(0,))
    def _score(self, state, enc_tokens, enc_valid, dec_tokens, targets, tvalid):
        """One (1, T) prompt, (N, C) decoder inputs -> (N,) summed log p(targets) where tvalid."""
        model = nnx.merge(self._graphdef, state)
        n = dec_tokens.shape[0]
        ck, cv = model.cross_kv(model.encode(enc_tokens, enc_valid))                  # (L, 1, S, H, E)
        ck, cv = (jnp.broadcast_to(a, (a.shape[0], n) + a.shape[2:]) for a in (ck, cv))
        logits, _ = model.decode(dec_tokens, ck, cv, jnp.broadcast_to(enc_valid, (n, enc_valid.shape[1])))
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), targets[..., None], axis=-1)[..., 0]
        return jnp.where(tvalid, logp, 0.0).sum(-1)

    def score(self, prompt: str | Sequence[int], candidates: Sequence[str | Sequence[int]],
              normalize: bool = False, eos: bool = True) -> list[float]:
        """Summed log p(candidate | prompt) of each candidate: the prompt (then </s>) is the encoder
        input, the candidate the decoder's target after the start token.

        Strings are tokenised alone (T5's tokenizer drops leading spaces: " cat" and "cat" are one
        target); id lists are taken as they are. eos=True (the default) ends each target with </s>,
        as transformers' labels do, so a candidate is scored as the whole answer (not as the start of
        a longer one). normalize=True divides by the number of target tokens."""
        if not candidates:
            raise ValueError("score needs at least one candidate")
        targets = []
        for cand in candidates:
            ids = self._as_ids(cand)
            if not ids:
                raise ValueError(f"candidate {cand!r} encodes to no tokens")
            targets.append(self._with_eos(ids) if eos else ids)
        tokens, valid = self._encoder_batch([prompt])
        N, C = len(targets), _bucket(max(len(t) for t in targets), 8)
        dec = np.full((_bucket(N, 8), C), self.pad_id, np.int32)
        tgt = np.full_like(dec, self.pad_id)
        tvalid = np.zeros(dec.shape, bool)
        for b, t in enumerate(targets):
            dec[b, 0] = self.config.decoder_start_id
            dec[b, 1:len(t)] = t[:-1]
            tgt[b, :len(t)] = t
            tvalid[b, :len(t)] = True
        out = np.asarray(self._score(self._state, tokens, valid, dec, tgt, tvalid))[:N]
        if normalize:
            out = out / np.array([len(t) for t in targets])
        return [float(x) for x in out]

    # ------------------------------------------------------------------------- generation
    @functools.partial(jax.jit, static_argnums=(0, 4, 5))
    def _greedy(self, state, enc_tokens, enc_valid, steps, stop_at_eos, limit):
        """Greedy decoding of `limit` <= steps tokens per row in one while loop -> (B, steps) ids
        (pad after a row's </s>, as transformers writes them)."""
        model = nnx.merge(self._graphdef, state)
        cfg = model.cfg
        B = enc_tokens.shape[0]
        ck, cv = model.cross_kv(model.encode(enc_tokens, enc_valid))
        shape = (cfg.n_decoder_layers, B, steps, cfg.n_heads, cfg.d_kv)
        cache = KVCache(jnp.zeros(shape, model.dtype), jnp.zeros(shape, model.dtype), jnp.ones((B, steps), bool))

        def cond(c):
            i, _, _, _, done = c
            return (i < limit) & ~done.all() if stop_at_eos else i < limit

        def body(c):
            i, token, cache, out, done = c
            logits, cache = model.decode(token[:, None], ck, cv, enc_valid, cache, i)
            nxt = jnp.argmax(logits[:, 0], axis=-1).astype(jnp.int32)
            if stop_at_eos:
                nxt = jnp.where(done, cfg.pad_id, nxt)
            return i + 1, nxt, cache, out.at[:, i].set(nxt), done | (nxt == cfg.eos_id)

        start = jnp.full((B,), cfg.decoder_start_id, jnp.int32)
        init = (jnp.int32(0), start, cache, jnp.full((B, steps), cfg.pad_id, jnp.int32), jnp.zeros(B, bool))
        return jax.lax.while_loop(cond, body, init)[3]

    def generate_ids(self, prompts: Sequence[str | Sequence[int]], max_new_tokens: int,
                     stop_at_eos: bool = True) -> list[list[int]]:
        """Greedy ids after each prompt, up to max_new_tokens or </s> (not included)."""
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        tokens, valid = self._encoder_batch(prompts)
        out = np.asarray(self._greedy(self._state, tokens, valid, _bucket(max_new_tokens, 32), bool(stop_at_eos),
                                      jnp.int32(max_new_tokens)))[:, :max_new_tokens]
        results = []
        for row in out.tolist():
            if stop_at_eos and self.eos_id in row:
                row = row[:row.index(self.eos_id)]
            results.append(row)
        return results

    def generate(self, prompt: str | Sequence[str], max_new_tokens: int = 64, chat: bool = True,
                 temperature: float = 0.0, stop_at_eos: bool = True, **unused) -> str | list[str]:
        """Greedy continuation of one prompt (str) or a batch (list[str]). `chat` is ignored: T5 has no
        chat template. Only temperature 0 (greedy) is offered; top_k / top_p / seed are accepted and
        unused (FrozenLLM's signature)."""
        if temperature and temperature > 0:
            raise ValueError("the T5 reader generates greedily only (temperature=0)")
        single = isinstance(prompt, str)
        prompts = [prompt] if single else list(prompt)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise TypeError("generate takes a str or a non-empty list of str")
        outs = self.generate_ids(prompts, max_new_tokens, stop_at_eos=stop_at_eos)
        texts = [self.decode(o, skip_special=True) for o in outs]
        return texts[0] if single else texts

    def __repr__(self) -> str:
        c = self.config
        ffn = f"gated-{c.act}" if c.gated else c.act
        return (f"T5Reader({self.name}: V={c.vocab_size}, D={c.d_model}, L={c.n_layers}+{c.n_decoder_layers}, "
                f"heads={c.n_heads}, ffn={ffn}, head={'tied' if c.tied_head else 'untied'}, "
                f"dtype={jnp.dtype(self.model.dtype).name}, weights={self.weights})")


# ----------------------------------------------------------------------------------- loading

# Tensors a T5 checkpoint may hold that the model does not read: the stacks' copies of the shared
# table, and a cross-attention bias that transformers itself ignores on load.
_IGNORED = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
            "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight")


def _stack_params(ckpt, cfg: T5Config, prefix: str, n_layers: int, cross: bool) -> dict:
    """{T5Stack attribute: LazyParam} for the encoder (prefix "encoder") or the decoder."""
    D, H, E, F = cfg.d_model, cfg.n_heads, cfg.d_kv, cfg.d_ff
    attn = "layer.0.SelfAttention"
    ffn = f"layer.{2 if cross else 1}"

    def layer(suffix, shape, to_model=None, model_shape=None):
        return ckpt.stacked(f"{prefix}.block.{{i}}.{suffix}", n_layers, shape, to_model, model_shape=model_shape)

    def qkv(name):           # (H*E, D) torch Linear -> (D, H, E)
        return layer(name, (H * E, D), lambda w: w.reshape(H, E, D).transpose(2, 0, 1), (D, H, E))

    def out(name):           # (D, H*E) -> (H, E, D)
        return layer(name, (D, H * E), lambda w: w.reshape(D, H, E).transpose(1, 2, 0), (H, E, D))

    p = {
        "rel_bias": ckpt.single(f"{prefix}.block.0.{attn}.relative_attention_bias.weight", (cfg.num_buckets, H)),
        "attn_norm": layer("layer.0.layer_norm.weight", (D,)),
        "wq": qkv(f"{attn}.q.weight"), "wk": qkv(f"{attn}.k.weight"), "wv": qkv(f"{attn}.v.weight"),
        "wo": out(f"{attn}.o.weight"),
        "ffn_norm": layer(f"{ffn}.layer_norm.weight", (D,)),
        "wff": layer(f"{ffn}.DenseReluDense.wo.weight", (D, F), lambda w: w.T, (F, D)),
    }
    if cfg.gated:
        p["wi"] = layer(f"{ffn}.DenseReluDense.wi_0.weight", (F, D), lambda w: w.T, (D, F))
        p["wi_lin"] = layer(f"{ffn}.DenseReluDense.wi_1.weight", (F, D), lambda w: w.T, (D, F))
    else:
        p["wi"] = layer(f"{ffn}.DenseReluDense.wi.weight", (F, D), lambda w: w.T, (D, F))
    if cross:
        cross_attn = "layer.1.EncDecAttention"
        p.update(cross_norm=layer("layer.1.layer_norm.weight", (D,)), cq=qkv(f"{cross_attn}.q.weight"),
                 ck=qkv(f"{cross_attn}.k.weight"), cv=qkv(f"{cross_attn}.v.weight"), co=out(f"{cross_attn}.o.weight"))
    p["final_norm"] = ckpt.single(f"{prefix}.final_layer_norm.weight", (D,))
    return p


def load_t5(directory: str | Path, *, dtype: str = "float32", weights: str | None = None, mesh=None,
            softmax_plus_one: bool = False) -> T5Reader:
    """A T5 / Flan-T5 Hugging Face directory -> T5Reader (what `load_llm(directory)` returns for it).

    The directory holds config.json (model_type "t5"), model.safetensors or shards listed by
    model.safetensors.index.json (read by weights.HFCheckpoint: every tensor checked by name and
    shape, nothing unexpected, every value finite) and tokenizer.json. dtype 'float32' or
    'bfloat16' (compute); weights 'fp32' / 'bf16' storage (None or 'int8-lossless', load_llm's
    CPU default: the compute dtype's own format; int8 and a mesh are not offered for T5).
    A missing or damaged directory is a CheckpointError (a ValueError) saying what is wrong."""
    from backbones.llm.weights import HFCheckpoint

    jdtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}.get(str(dtype))
    if jdtype is None:
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    if weights not in (None, "int8-lossless", "fp32", "bf16"):
        raise ValueError(f"the T5 reader stores its weights as 'fp32' or 'bf16', not {weights!r}")
    if weights == "fp32" and jdtype == jnp.bfloat16:
        raise ValueError("weights='fp32' with dtype='bfloat16' would store bfloat16: use weights='bf16'")
    if mesh is not None:
        raise ValueError("the T5 reader does not shard over a mesh (yet): load it without mesh=")
    if softmax_plus_one:
        raise ValueError("softmax_plus_one is for the decoder-only LLMs; the T5 reader keeps its softmax")
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a directory: pass a T5 / Flan-T5 Hugging Face checkpoint "
                              "directory (config.json, model.safetensors, tokenizer.json)")
    for need in ("config.json", "tokenizer.json"):
        if not (directory / need).is_file():
            raise CheckpointError(f"{directory} has no {need}: a T5 checkpoint directory needs config.json, "
                                  "model.safetensors (or shards with model.safetensors.index.json) and tokenizer.json")
    try:
        ckpt = HFCheckpoint(directory)
    except FileNotFoundError as e:         # no safetensors: a damaged directory, reported as one
        raise CheckpointError(str(e)) from None
    if ckpt.config.get("model_type") != "t5":
        raise CheckpointError(f"{directory / 'config.json'} has model_type {ckpt.config.get('model_type')!r}, not 't5'")
    try:
        cfg = T5Config.from_hf_config(ckpt.config, has_lm_head=ckpt.has("lm_head.weight"))
    except ValueError as e:
        raise CheckpointError(f"{directory / 'config.json'}: {e}") from None
    V, D = cfg.vocab_size, cfg.d_model
    params = {"embed": ckpt.single("shared.weight", (V, D)),
              "encoder": _stack_params(ckpt, cfg, "encoder", cfg.n_layers, cross=False),
              "decoder": _stack_params(ckpt, cfg, "decoder", cfg.n_decoder_layers, cross=True)}
    if not cfg.tied_head:
        params["head"] = ckpt.single("lm_head.weight", (V, D), lambda w: w.T, model_shape=(D, V))
    ckpt.refuse_unused(lambda k: k in _IGNORED)
    try:
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    except Exception as e:                 # the tokenizers library raises its own types for a bad file
        raise CheckpointError(f"{directory / 'tokenizer.json'} is not a readable tokenizer ({e})") from None
    store = jnp.bfloat16 if weights == "bf16" else jdtype
    model = nnx.eval_shape(lambda: T5(cfg, rngs=nnx.Rngs(0), dtype=jdtype))
    for name, lazy in params.items():
        owner, items = (model, {name: lazy}) if not isinstance(lazy, dict) else (getattr(model, name), lazy)
        for attr, arr in items.items():
            var = getattr(owner, attr)
            if tuple(var.shape) != tuple(arr.shape):
                raise CheckpointError(f"{directory}: {name}.{attr} has shape {arr.shape}, the model {var.shape}")
            var.set_value(jnp.asarray(np.asarray(arr), dtype=store))
    fmt = "bf16" if store == jnp.bfloat16 else "fp32"
    return T5Reader(model, tokenizer, name=str(directory), weights=fmt)

