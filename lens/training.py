"""Captioner training pieces a trainer or notebook can import: data arrays, optimizer, sharded step.

    arrays = caption_arrays(images, captions, vocab, encode, max_len)   # {"image", "tokens"}
    step = TrainStep(model, optimizer_from(cfg.optim, steps), mesh)
    metrics = step(shard_batch(batch, mesh))                              # sharded jit, donated state

Each image carries C captions (tokens (N, C, T + 1)); every step picks one per example at
random (a stream keyed by the step number, so a resumed run picks the same ones).
"""
from __future__ import annotations

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
    """-> {"image": uint8 (N, S, S, 3), "tokens": int32 (N, C, max_len + 1)}.

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
    return {"image": np.asarray(images, np.uint8), "tokens": tokens}


def optimizer_from(optim, total_steps: int) -> optax.GradientTransformation:
    """AdamW with linear warmup and cosine decay, global-norm clipping."""
    sched = optax.warmup_cosine_decay_schedule(0.0, optim.lr, optim.warmup, max(total_steps, optim.warmup + 1),
                                               end_value=optim.lr * optim.final_lr_frac)
    return optax.chain(optax.clip_by_global_norm(optim.clip), optax.adamw(sched, weight_decay=optim.weight_decay))


class TrainStep:
    """Owns the (model, optimizer) state as a pytree; `__call__(batch)` runs one sharded update."""

    def __init__(self, model: CaptionerModel, tx: optax.GradientTransformation, mesh: Mesh, seed: int = 0,
                 label_smoothing: float = 0.0):
        opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
        self.graphdef, self.state = nnx.split((model, opt))
        repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
        self.state = jax.device_put(self.state, repl)
        self.key = jax.random.key(seed)
        self.label_smoothing = label_smoothing
        self._step = jax.jit(self._update, in_shardings=(repl, data), out_shardings=(repl, repl),
                             donate_argnums=(0,))
        self._eval = jax.jit(self._loss, in_shardings=(repl, data), out_shardings=repl)

    def _pick(self, tokens, step):  # tokens (B, C, T + 1) -> rows (B, T + 1)
        b, c = tokens.shape[:2]
        idx = jax.random.randint(jax.random.fold_in(self.key, step), (b,), 0, c)
        return tokens[jnp.arange(b), idx]

    def _update(self, state, batch):
        model, opt = nnx.merge(self.graphdef, state)
        rows = self._pick(batch["tokens"], opt.step[...])
        grad_fn = nnx.value_and_grad(lambda m: caption_loss(m, batch["image"], rows, self.label_smoothing),
                                     has_aux=True)
        (_, aux), grads = grad_fn(model)
        opt.update(model, grads)
        aux = dict(aux, grad_norm=optax.global_norm(grads),
                   param_norm=optax.global_norm(nnx.state(model, nnx.Param)))
        return nnx.state((model, opt)), aux

    def _loss(self, state, batch):
        model, _ = nnx.merge(self.graphdef, state)
        tokens = batch["tokens"]  # every caption of every image
        b, c, t = tokens.shape
        images = jnp.repeat(batch["image"], c, axis=0)
        return caption_loss(model, images, tokens.reshape(b * c, t))[1]

    def __call__(self, batch: dict) -> dict:
        self.state, metrics = self._step(self.state, batch)
        return metrics

    def evaluate(self, batch: dict) -> dict:
        return self._eval(self.state, batch)

    def model(self) -> CaptionerModel:
        model, _ = nnx.merge(self.graphdef, self.state)
        return model
