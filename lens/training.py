"""Captioner training pieces a trainer or notebook can import: data arrays, optimizer, sharded step.

    arrays = caption_arrays(images, captions, vocab, encode, max_len)   # {"image", "tokens"}
    arrays = caption_arrays(features, captions, vocab, encode, max_len) # a features captioner: float (N, F)
    step = TrainStep(model, optimizer_from(cfg.optim, steps), mesh)
    metrics = step(shard_batch(batch, mesh))                              # sharded jit, donated state

Each image carries C captions (tokens (N, C, T + 1)); every step picks one per example at
random (a stream keyed by the step number, so a resumed run picks the same ones).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lens.caption_vocab import CaptionVocab, Encode
from lens.captioner import CaptionerModel, caption_loss


def caption_arrays(images: np.ndarray, captions: list[list[str]], vocab: CaptionVocab, encode: Encode,
                   max_len: int, per_image: int | None = None) -> dict[str, np.ndarray]:
    """-> {"image": uint8 (N, S, S, 3) or float32 backbone features (N, F), "tokens": int32 (N, C, max_len + 1)}.

    C = `per_image` or the largest caption count; images with fewer captions repeat theirs.
    """
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} caption lists")
    empty = [i for i, c in enumerate(captions) if not c]
    if empty:
        raise ValueError(f"images {empty[:5]} have no captions")
    c = per_image or max((len(x) for x in captions), default=1)
    flat = [caps[j % len(caps)] for caps in captions for j in range(c)]
    tokens = vocab.tokenize(flat, encode, max_len).reshape(len(images), c, max_len + 1)
    images = np.asarray(images)
    inputs = images.astype(np.float32) if np.issubdtype(images.dtype, np.floating) else images.astype(np.uint8)
    return {"image": inputs, "tokens": tokens}


def optimizer_from(optim, total_steps: int) -> optax.GradientTransformation:
    """AdamW with linear warmup and cosine decay, global-norm clipping."""
    sched = optax.warmup_cosine_decay_schedule(0.0, optim.lr, optim.warmup, max(total_steps, optim.warmup + 1),
                                               end_value=optim.lr * optim.final_lr_frac)
    return optax.chain(optax.clip_by_global_norm(optim.clip), optax.adamw(sched, weight_decay=optim.weight_decay))


_CACHE: dict = {}


def _compiled(graphdef, mesh: Mesh, seed: int, label_smoothing: float):
    """Jitted (update, evaluate) for one (model, optimizer) structure."""
    repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    key = jax.random.key(seed)

    def pick(tokens, step):  # tokens (B, C, T + 1) -> rows (B, T + 1)
        b, c = tokens.shape[:2]
        idx = jax.random.randint(jax.random.fold_in(key, step), (b,), 0, c)
        return tokens[jnp.arange(b), idx]

    def update(state, batch):
        model, opt = nnx.merge(graphdef, state)
        rows = pick(batch["tokens"], opt.step[...])
        grad_fn = nnx.value_and_grad(lambda m: caption_loss(m, batch["image"], rows, label_smoothing), has_aux=True)
        (_, aux), grads = grad_fn(model)
        opt.update(model, grads)
        aux = dict(aux, grad_norm=optax.tree.norm(grads), param_norm=optax.tree.norm(nnx.state(model, nnx.Param)))
        return nnx.state((model, opt)), aux

    def evaluate(state, batch):
        model, _ = nnx.merge(graphdef, state)
        tokens = batch["tokens"]  # every caption of every image
        b, c, t = tokens.shape
        return caption_loss(model, jnp.repeat(batch["image"], c, axis=0), tokens.reshape(b * c, t))[1]

    return (jax.jit(update, in_shardings=(repl, data), out_shardings=(repl, repl), donate_argnums=(0,)),
            jax.jit(evaluate, in_shardings=(repl, data), out_shardings=repl))


class TrainStep:
    """Owns the (model, optimizer) state as a pytree; `__call__(batch)` runs one sharded update."""

    def __init__(self, model: CaptionerModel, tx: optax.GradientTransformation, mesh: Mesh, seed: int = 0,
                 label_smoothing: float = 0.0, cache_key=None):
        """`cache_key`: a hashable description of (model config, optimizer config); steps built with an
        equal key reuse one compilation (a resumed run in the same process: tests, notebooks)."""
        opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
        self.graphdef, state = nnx.split((model, opt))
        self.state = jax.device_put(state, NamedSharding(mesh, P()))
        key = None if cache_key is None else (cache_key, mesh, int(seed), float(label_smoothing))
        if key is not None and key in _CACHE:
            self.graphdef, (self._step, self._eval) = _CACHE[key]
        else:
            self._step, self._eval = _compiled(self.graphdef, mesh, int(seed), float(label_smoothing))
            if key is not None:
                _CACHE[key] = self.graphdef, (self._step, self._eval)

    def __call__(self, batch: dict) -> dict:
        self.state, metrics = self._step(self.state, batch)
        return metrics

    def evaluate(self, batch: dict) -> dict:
        return self._eval(self.state, batch)

    def model(self) -> CaptionerModel:
        model, _ = nnx.merge(self.graphdef, self.state)
        return model
