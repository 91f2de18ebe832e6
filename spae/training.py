"""SPAE training logic, importable (the entry point `python -m train.spae` is thin).

    ts = TrainState(cfg, vocab.embeddings, rngs=nnx.Rngs(cfg.seed))
    trainer = StepFn(ts, cfg, mesh)          # jit over a (data, model) mesh, donated state
    metrics = trainer(batch)                 # one optimisation step, on sharded inputs

Config fields used here (see train/configs/spae_*.py): model.*, loss.*, optim.*, train.ema_decay, lqae,
train.init_from (a tokenizer checkpoint to start from) and train.trainable ("all", or "decoder": the
encoder, hence every token, stays fixed and only the pixel losses train the decoder).
"""

from __future__ import annotations

import collections
import copy
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from spae import configdict
from spae.codebook import FrozenCodebook, shard_codebooks, unpad_codebooks
from spae.losses import (Discriminator, foreground_weight, gan_discriminator_loss, gan_generator_loss,
                         l1_loss, l2_loss, lecam_loss, perceptual_loss, psnr, schedule_weight,
                         perceptual_net, semantic_loss, subsample_positions, usage_entropy_loss)
from spae.model import SPAE, ModelConfig
from spae.quantizer import lookup_codes

__all__ = ["resolve_config", "TrainState", "StepFn", "FROZEN", "TRAINABLE", "Stat", "ema_modules", "ema_decay_at"]


class Stat(nnx.Variable):
    """Non-trainable training statistics (step counter, LeCam EMAs)."""


# Everything that must never be optimised nor donated: the codebook and the fixed perceptual net.
FROZEN = nnx.Any(FrozenCodebook, nnx.PathContains("percept"))

# train.trainable -> the model parameters the optimiser moves. "decoder": the encoder and the
# learned projection (so every token of every image) stay as they are; only the pixels improve.
TRAINABLE = {"all": nnx.Param, "decoder": nnx.All(nnx.Param, nnx.PathContains("decoder"))}


def resolve_config(cfg):
    """Apply switches: `lqae=True` -> a single stride-1 layer and no semantic loss (LQAE-like)."""
    cfg = copy.deepcopy(cfg)
    if cfg.get("lqae", False):
        cfg.model.strides = [1]
        cfg.loss.semantic = 0.0
        cfg.loss.decode_layers = [1]
    num_layers = len(cfg.model.strides)
    layers = list(cfg.loss.get("decode_layers") or range(1, num_layers + 1))
    if num_layers not in layers or not all(1 <= k <= num_layers for k in layers):
        raise ValueError(f"loss.decode_layers {layers} must lie in 1..{num_layers} and include {num_layers}")
    cfg.loss.decode_layers = layers
    trainable = cfg.train.get("trainable", "all")
    if trainable not in TRAINABLE:
        raise ValueError(f"train.trainable must be one of {sorted(TRAINABLE)}; got {trainable!r}")
    if trainable == "decoder":
        if not cfg.train.get("init_from"):
            raise ValueError("train.trainable='decoder' trains a decoder under a fixed encoder: give the "
                             "trained tokenizer to start from with train.init_from=<checkpoint dir>")
        if cfg.loss.get("quantize_ramp", 0) or cfg.loss.get("gan", 0):
            raise ValueError("train.trainable='decoder' decodes the fixed pyramid only: set loss.quantize_ramp=0 "
                             "and loss.gan=0")
    if cfg.model.get("semantic_backbone", "none") != "none" and cfg.loss.semantic:
        raise ValueError("a semantic path (model.semantic_backbone) trains its words with loss.semantic_path; "
                         "set loss.semantic=0 (the encoder's top-K relevance loss is for models without one)")
    bad = [l for l in cfg.loss.get("semantic_layers", []) if not 1 <= l <= num_layers]
    if cfg.loss.semantic and bad:
        raise ValueError(f"loss.semantic_layers {bad} outside 1..{num_layers}")
    return cfg


def model_config(cfg) -> ModelConfig:
    return ModelConfig.from_dict(dict(image_size=cfg.data.image_size, channels=cfg.data.channels,
                                      **cfg.model))


def make_optimizer(o, steps: int) -> optax.GradientTransformation:
    lr = optax.warmup_cosine_decay_schedule(o.lr / max(o.warmup, 1), o.lr, max(o.warmup, 1), max(steps, o.warmup + 1),
                                            end_value=o.lr * o.get("final_lr_frac", 0.1))
    return optax.chain(optax.clip_by_global_norm(o.clip_norm),
                       optax.adamw(lr, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay))


def _fresh_copy(module):
    """A clone with its own buffers (so donation never sees one buffer twice)."""
    copy_ = nnx.clone(module)
    nnx.update(copy_, jax.tree.map(lambda a: jnp.array(a, copy=True), nnx.state(copy_)))
    return copy_


def init_weights(model: SPAE, directory: str) -> None:
    """Start `model` from a tokenizer checkpoint's weights; its model config must be the same, except
    that the decoder may be grown (a larger model.decoder_growth: the new blocks start as the identity)
    and the pyramid may have layers appended (model.strides extending the checkpoint's)."""
    import dataclasses

    from spae.tokenizer import checkpoint_model_config, load_weights

    theirs = dataclasses.asdict(checkpoint_model_config(directory))
    ours = dataclasses.asdict(model.cfg)
    ignore = {"chunk_size", "dtype"}        # how the search and convolutions run, not what they learned
    if ours["decoder_growth"] >= theirs["decoder_growth"]:
        ignore.add("decoder_growth")
    if tuple(ours["strides"][:len(theirs["strides"])]) == tuple(theirs["strides"]):
        ignore.add("strides")   # layers appended to the pyramid: SAQ keeps every earlier layer's tokens
    adds_semantic_path = theirs["semantic_backbone"] == "none" and ours["semantic_backbone"] != "none"
    if adds_semantic_path:      # a semantic path put on a trained pixel model: its head starts fresh
        ignore |= {"semantic_backbone", "semantic_layers", "semantic_head", "semantic_features", "semantic_hidden"}
    diff = {k: (theirs.get(k), v) for k, v in ours.items() if k not in ignore and theirs.get(k) != v}
    if diff:
        raise ValueError(f"train.init_from={directory} was trained with another model config; differing "
                         f"fields (checkpoint, this config): {diff}")
    load_weights(model, directory, keep_missing=("decoder/grown/",) + (("semantic/",) if adds_semantic_path else ()))


class TrainState(nnx.Module):
    """Model, optimizer(s), generator EMA, discriminator, fixed perceptual network, counters."""

    def __init__(self, cfg, codebook: np.ndarray, *, rngs: nnx.Rngs, words=None):
        mc = model_config(cfg)
        steps = cfg.train.steps
        self.model = SPAE(codebook, mc, rngs=rngs, words=words)
        if cfg.train.get("init_from"):
            init_weights(self.model, cfg.train.init_from)
        wrt = TRAINABLE[cfg.train.get("trainable", "all")]
        self.opt = nnx.Optimizer(self.model, make_optimizer(cfg.optim, steps), wrt=wrt)
        self.ema_encoder = _fresh_copy(self.model.encoder)
        self.ema_decoder = _fresh_copy(self.model.decoder)
        self.step = Stat(jnp.array(0, jnp.int32))
        L = cfg.loss
        if L.gan > 0:
            disc = Discriminator(mc.image_size, mc.channels, L.disc_ch, rngs=rngs)
            dcfg = copy.deepcopy(cfg.optim)
            dcfg.lr = cfg.optim.get("disc_lr", cfg.optim.lr)
            self.disc = nnx.data(disc)
            self.dopt = nnx.data(nnx.Optimizer(disc, make_optimizer(dcfg, steps), wrt=nnx.Param))
        else:
            self.disc = self.dopt = nnx.data(None)
        self.lecam_real = Stat(jnp.array(0.0, jnp.float32))
        self.lecam_fake = Stat(jnp.array(0.0, jnp.float32))
        self.percept = nnx.data(perceptual_net(L.get("perceptual_net", "random"), mc.channels)
                                if L.perceptual > 0 else None)


def ema_modules(ts: TrainState):
    """The generator-EMA copy of the model (shares the frozen codebook) for evaluation/export."""
    model = nnx.clone(ts.model)
    nnx.update(model.encoder, nnx.state(ts.ema_encoder))
    nnx.update(model.decoder, nnx.state(ts.ema_decoder))
    return model


def semantic_path_targets(model: SPAE, batch: dict) -> list:
    """The semantic head on every view's backbone features: batch["sem_feat"] (B, V, F) -> per
    semantic layer (B, V, h_l, w_l, d); [] for a model without a semantic path."""
    if model.semantic is None:
        return []
    feats = batch["sem_feat"]
    b, views, f = feats.shape
    return [t.reshape((b, views) + t.shape[1:]) for t in model.semantic_targets(feats.reshape(b * views, f))]


def semantic_path_loss(model: SPAE, sem_targets: list, rows, temperature: float):
    """Mean cross-entropy of every view's every semantic position against its teacher row (B, P)."""
    from spae.semantic_path import flatten_positions, vocabulary_ce

    t = flatten_positions(sem_targets)                                                  # (B, V, P, d)
    r = jnp.broadcast_to(rows[:, None, :], t.shape[:3])
    return vocabulary_ce(t.reshape(-1, t.shape[-1]), model.codes(), r.reshape(-1), temperature)


RANDOM_PREFIX_STREAM = 1_000_003    # fold_in tag of the random-prefix depths, apart from the entropy keys


def _train_step(ts: TrainState, batch: dict, cfg, mesh=None) -> dict:
    """One optimisation step on `ts`, in place; mesh: the step's (data, model) mesh, whose "model"
    axis (when larger than 1) splits the codebook search and row lookups over the vocabulary."""
    L = cfg.loss
    x = batch["image"].astype(jnp.float32) / 127.5 - 1.0        # (B, H, W, C)
    b = x.shape[0]
    step = ts.step[...]
    layers = L.decode_layers
    n_layers = len(cfg.model.strides)
    w_sem = schedule_weight(step, L.semantic, L.get("semantic_schedule", "constant"),
                            L.get("semantic_warmup", 0), cfg.train.steps)
    w_gan = jnp.where(step >= L.get("gan_start", 0), L.gan, 0.0)
    ramp = int(L.get("quantize_ramp", 0))
    fg = float(L.get("foreground", 0.0))
    pix_w = foreground_weight(x, fg) if fg > 0 else None         # (B, H, W, 1) or None
    trainable = cfg.train.get("trainable", "all")
    decoder_only, wrt = trainable == "decoder", TRAINABLE[trainable]
    step_key = jax.random.fold_in(jax.random.key(cfg.seed), step)

    def g_loss_fn(model, disc, percept):
        z = model.encode(x)                                        # (B, h, w, d)
        sem_targets = semantic_path_targets(model, batch)          # per view, per semantic layer
        ids, zhat, aux = model.quantize_with_targets(z, [t[:, 0] for t in sem_targets], mesh)
        if ramp > 0:   # decoder input slides from the continuous z to the quantized zhat
            r = jnp.minimum(step.astype(jnp.float32) / ramp, 1.0)
            zhat = [zh + (1.0 - r) * (z - zh) for zh in zhat]
        inputs = [zhat[k - 1] for k in layers]
        if L.get("random_prefix", False) and n_layers > 1:
            # one more prefix per image, its depth drawn uniformly from 1..L-1
            depth = jax.random.randint(jax.random.fold_in(step_key, RANDOM_PREFIX_STREAM), (b,), 1, n_layers)
            inputs.append(jnp.stack(zhat[:-1])[depth - 1, jnp.arange(b)])   # (B, h, w, d)
        ys = model.decode(jnp.concatenate(inputs, 0))
        ys = ys.reshape((len(inputs), b) + ys.shape[1:])           # (P, B, H, W, C)
        terms, out = {}, {}
        recon = 0.0
        for p, k in enumerate(layers + ["random"] * (len(inputs) - len(layers))):
            wk = 1.0 if k == n_layers else L.prefix_weight
            rk = L.l2 * l2_loss(ys[p], x, pix_w) + L.l1 * l1_loss(ys[p], x, pix_w)
            recon = recon + wk * rk
            out[f"psnr_{k}"] = psnr(ys[p], x)
        full = ys[layers.index(n_layers)]
        terms["recon"] = recon
        if decoder_only:     # the word losses have no gradient that reaches the decoder
            out.update(terms)
            out["usage"] = aux["usage"]
            return recon, (out, full)
        # "all": every running average zhat_l pulls z (zhat_1 is one token for the whole image);
        # "last": only the full pyramid's zhat_L does.
        commit_layers = L.get("commit_layers", "all")
        if commit_layers not in ("all", "last"):
            raise ValueError(f"loss.commit_layers must be 'all' or 'last'; got {commit_layers!r}")
        pick = (lambda a: a[-1]) if commit_layers == "last" else jnp.mean
        terms["commit"] = L.commit * pick(aux["commit"])
        if model.encoder.code_proj is not None:        # moves the learned projection of the table
            terms["codebook"] = L.get("codebook", 1.0) * pick(aux["codebook"])
        if sem_targets:      # the semantic head: each position's teacher word, from the whole table
            terms["semantic_path"] = L.get("semantic_path", 1.0) * semantic_path_loss(
                model, sem_targets, batch["sem_rows"], L.get("semantic_path_temp", 0.25))
            out["semantic_path_ce"] = terms["semantic_path"] / max(L.get("semantic_path", 1.0), 1e-12)
        if L.get("entropy", 0.0) > 0:                   # codebook-usage regulariser on the chosen layers
            cb = model.codes()
            first = model.cfg.semantic_layers + 1        # the semantic layers' words come from their teacher
            ent_layers = L.get("entropy_layers") or range(first, n_layers + 1)
            targets = {l: aux["targets"][l - 1] for l in ent_layers}
            cap = L.get("entropy_positions")   # None: every position; else a strided subset per layer
            if cap is not None:
                keys = jax.random.split(step_key, n_layers)
                targets = {l: subsample_positions(t, int(cap), keys[l - 1]) for l, t in targets.items()}
            ent = sum(usage_entropy_loss(t, cb, L.get("entropy_temp", 1.0)) for t in targets.values())
            out["entropy_raw"] = ent / len(ent_layers)
            terms["entropy"] = L.entropy * out["entropy_raw"]
        if percept is not None:
            terms["perceptual"] = L.perceptual * perceptual_loss(percept, full, x)
        if disc is not None:
            terms["gan_g"] = w_gan * gan_generator_loss(disc(full))
        if L.semantic > 0:
            cb = model.codes()                                             # (V, d_latent)
            emb = lookup_codes(cb, batch["sem_ids"], mesh)                 # (B, K, d)
            sem = 0.0
            for l in L.semantic_layers:
                neg = valid = None
                if L.get("semantic_negatives", False):                    # the chosen token, if off-list
                    chosen = ids[l - 1]                                     # (B, h_l, w_l)
                    neg = lookup_codes(cb, chosen, mesh)
                    valid = ~jnp.any(chosen[..., None] == batch["sem_ids"][:, None, None, :], -1)
                sem = sem + semantic_loss(aux["targets"][l - 1], emb, batch["sem_prob"],
                                          L.semantic_temp, neg, valid)
            sem = sem / len(L.semantic_layers)
            out["semantic_ce"] = sem
            terms["semantic"] = w_sem * sem
        loss = sum(terms.values())
        out.update(terms)
        out["usage"] = aux["usage"]
        return loss, (out, full)

    grad_fn = nnx.value_and_grad(g_loss_fn, argnums=nnx.DiffState(0, wrt), has_aux=True)
    (loss, (metrics, full)), grads = grad_fn(ts.model, ts.disc, ts.percept)
    metrics["loss"] = loss
    metrics["grad_norm"] = optax.global_norm(grads)
    ts.opt.update(ts.model, grads)
    metrics["param_norm"] = optax.global_norm(nnx.state(ts.model, nnx.Param))

    if ts.disc is not None:
        real, fake = x, jax.lax.stop_gradient(full)

        def d_loss_fn(disc):
            lr, lf = disc(real), disc(fake)
            d = gan_discriminator_loss(lr, lf)
            reg = L.lecam * lecam_loss(lr, lf, ts.lecam_real[...], ts.lecam_fake[...])
            return d + reg, (lr, lf, d, reg)

        (dl, (lr_, lf_, d, reg)), dgrads = nnx.value_and_grad(d_loss_fn, has_aux=True)(ts.disc)
        ts.dopt.update(ts.disc, dgrads)
        decay = L.get("lecam_decay", 0.99)
        ts.lecam_real[...] = decay * ts.lecam_real[...] + (1 - decay) * jnp.mean(lr_)
        ts.lecam_fake[...] = decay * ts.lecam_fake[...] + (1 - decay) * jnp.mean(lf_)
        metrics.update(d_loss=d, lecam=reg, d_real=jnp.mean(lr_), d_fake=jnp.mean(lf_))

    decay = ema_decay_at(step, cfg.train.ema_decay)
    pairs = ((ts.ema_decoder, ts.model.decoder),) if decoder_only else \
        ((ts.ema_encoder, ts.model.encoder), (ts.ema_decoder, ts.model.decoder))
    for ema, live in pairs:       # a fixed encoder's EMA is left bit-identical to it
        new = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p,
                           nnx.state(ema, nnx.Param), nnx.state(live, nnx.Param))
        nnx.update(ema, new)
    ts.step[...] = step + 1
    if not decoder_only:     # the decoder-only stage has no semantic term to weigh
        metrics["w_semantic"] = w_sem
    return metrics


def ema_decay_at(step, decay: float):
    """The generator EMA's decay at (0-based) step t: min(decay, (1 + t) / (10 + t)). Without the warm-up
    a 0.999 EMA still holds 0.999^800 = 45% of the random initial weights at step 800 (an export of that
    step drew 12-17 dB where the live model drew 22), and 1% at step 4,500."""
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def _compiled_step(graphdef, cfg_json: str, mesh, rows: tuple, frozen_shardings):
    """The jitted train step of one (model structure, config, mesh); StepFn caches it.

    `frozen` arrives as `shard_codebooks` placed it (codebook rows split over "model", padded to a
    multiple of it; `rows` the true row counts) and is cut back to its rows before the model sees it."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    from backbones.mesh import DATA

    cfg = configdict.Config(json.loads(cfg_json))
    repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA))

    def spae_train_step(train, frozen, batch):
        ts = nnx.merge(graphdef, unpad_codebooks(frozen, rows), train)
        metrics = _train_step(ts, batch, cfg, mesh)
        _, _, new_train = nnx.split(ts, FROZEN, ...)
        return new_train, metrics

    return jax.jit(spae_train_step, in_shardings=(repl, frozen_shardings, data), out_shardings=(repl, repl),
                   donate_argnums=0)


# Compiled steps of the last few (config, mesh, state structure and shapes), with the graphdef each
# closes over. Not keyed by the graphdef itself: two TrainStates of one config have unequal graphdefs
# (the optimizer holds its optax transformation, new closures each build), which cost every in-process
# train() a new compilation.
_STEP_CACHE: collections.OrderedDict = collections.OrderedDict()
_STEP_CACHE_SIZE = 8


def _step_key(cfg_json: str, mesh, frozen, train, rows: tuple) -> tuple:
    def avals(tree):
        return tuple((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(tree))

    return (cfg_json, mesh, jax.tree.structure(frozen), jax.tree.structure(train), avals(frozen), avals(train),
            rows)


def _cached_step(graphdef, cfg_json: str, mesh, frozen, train, rows: tuple = ()):
    """(graphdef, jitted step): the cached pair when a step of the same config, mesh, state structure
    and shapes was built before in this process (its graphdef describes the same modules), else new.
    frozen: as placed by `shard_codebooks` (its shardings are the step's); rows: its tables' V."""
    key = _step_key(cfg_json, mesh, frozen, train, rows)
    if key in _STEP_CACHE:
        _STEP_CACHE.move_to_end(key)
    else:
        shardings = jax.tree.map(lambda a: a.sharding, frozen)
        _STEP_CACHE[key] = graphdef, _compiled_step(graphdef, cfg_json, mesh, rows, shardings)
        while len(_STEP_CACHE) > _STEP_CACHE_SIZE:
            _STEP_CACHE.popitem(last=False)
    return _STEP_CACHE[key]


class StepFn:
    """Compiled train step over a (data, model) mesh (`train.trainlib.make_mesh`): batch split over
    "data"; the frozen codebook's rows split over "model" (the search runs shard by shard,
    `spae.quantizer.sharded_nearest_code`); the rest of the state (small) replicated and donated.

    Holds the state split as (graphdef, frozen, train): `frozen` (codebook, fixed perceptual
    net) is passed but never donated nor optimised; `train` is what checkpoints save. With a
    "model" axis that does not divide the vocabulary, `frozen`'s codebook carries zero rows up to
    the next multiple (`spae.codebook.shard_codebooks`); the step cuts them off, `state` too.
    """

    def __init__(self, ts: TrainState, cfg, mesh):
        from jax.sharding import NamedSharding, PartitionSpec as P

        self.cfg = cfg
        self.mesh = mesh
        self.graphdef, frozen, train = nnx.split(ts, FROZEN, ...)
        self.frozen, self._rows = shard_codebooks(frozen, mesh)
        self.train = jax.device_put(train, NamedSharding(mesh, P()))
        self.graphdef, self._step = _cached_step(self.graphdef, json.dumps(cfg.to_dict(), sort_keys=True, default=list),
                                                 mesh, self.frozen, train, self._rows)

    def __call__(self, batch: dict) -> dict:
        self.train, metrics = self._step(self.train, self.frozen, batch)
        return metrics

    def lower(self, batch_spec: dict):
        return self._step.lower(self.train, self.frozen, batch_spec)

    def make_jaxpr(self, batch_spec: dict):
        """The step traced (not compiled) as a ClosedJaxpr, e.g. to count its FLOPs."""
        return jax.make_jaxpr(self._step)(self.train, self.frozen, batch_spec)

    @property
    def state(self) -> TrainState:
        """A TrainState view of the current arrays (for evaluation / export)."""
        return nnx.merge(self.graphdef, unpad_codebooks(self.frozen, self._rows), self.train)

    def set_train_state(self, train) -> None:
        from jax.sharding import NamedSharding, PartitionSpec as P

        self.train = jax.device_put(train, NamedSharding(self.mesh, P()))
