"""Train the repo's own contrastive image-text model on the offline data (CLIP or SigLIP loss).

    nice -n 10 python -m train.contrastive --config train/configs/contrastive_offline.py --workdir runs/contrastive

Each step mixes synthetic scenes (one of their 6 captions, drawn per step) and Fashion-MNIST
images (a class prompt from one of 8 templates). Pairs that share a caption text or a class are
all positives of each other (see `backbones.clip.losses`). Orbax checkpoints in WORKDIR/checkpoints
(re-running the command resumes exactly: model, optimizer and data order), metrics in
WORKDIR/metrics.jsonl, and at the end an exported model in WORKDIR/export (`load_clip(WORKDIR/export)`)
with its evaluation in WORKDIR/export/eval.json.
"""
from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from backbones.clip import loaders
from backbones.clip.api import ClipModel
from backbones.clip.config import CLIPConfig, TextConfig, VisionConfig
from backbones.clip.evaluate import FMNIST_TEMPLATES, evaluate_offline
from backbones.clip.llm_text import llm_token_assets
from backbones.clip.losses import LOSSES
from backbones.clip.model import CLIP
from backbones.clip.tokenizer import llm_tokenizer
from train import trainlib
from visiondata import fashion_mnist, pipeline, scenes


OFFLINE_NOTE = ("the repo's offline stand-in for CLIP: a small contrastive model trained on this repo's synthetic "
                "scenes and Fashion-MNIST prompts only; not a general image-text model")


def model_config(cfg, vocab_size: int, token_dim: int, eos_id: int) -> CLIPConfig:
    m, d = cfg.model, cfg.data
    return CLIPConfig(
        vision=VisionConfig(image_size=d.image_size, patch_size=m.patch_size, width=m.vision_width,
                            layers=m.vision_layers, heads=m.vision_heads, mlp_dim=m.mlp_ratio * m.vision_width,
                            act=m.act),
        text=TextConfig(vocab_size=vocab_size, context_length=d.context_length, width=m.text_width,
                        layers=m.text_layers, heads=m.text_heads, mlp_dim=m.mlp_ratio * m.text_width, act=m.act,
                        pool="eos", eos_id=eos_id, frozen_token_dim=token_dim),
        embed_dim=m.embed_dim,
        logit_scale_init=float(np.log(10.0)) if cfg.loss == "siglip" else float(np.log(1 / 0.07)),
        logit_bias_init=-10.0 if cfg.loss == "siglip" else None,
        image_mean=(0.5, 0.5, 0.5), image_std=(0.25, 0.25, 0.25))


def fashion_mnist_names(mode: str) -> list[list[str]]:
    """Per Fashion-MNIST class, the names its training prompts use: "class" (the class name only) or
    "aliases" (the class name or an everyday name, `fashion_mnist.CLASS_ALIASES`, drawn per image)."""
    if mode == "class":
        return [[c] for c in fashion_mnist.CLASS_NAMES]
    if mode == "aliases":
        return [list(fashion_mnist.CLASS_ALIASES[c]) for c in fashion_mnist.CLASS_NAMES]
    raise ValueError(f"data.fmnist_names must be 'class' or 'aliases'; got {mode!r}")


class TrainData:
    """Pre-tokenised texts and the images; batches are drawn by two resumable ArrayLoaders."""

    def __init__(self, cfg, tokenizer):
        d = cfg.data
        s = scenes.generate(d.num_scenes, size=d.image_size, seed=cfg.seed, split="train")
        self.scene_images = s.images                                                 # (N, S, S, 3)
        texts = sorted({c for cs in s.captions for c in cs})
        index = {t: i for i, t in enumerate(texts)}
        self.scene_caption_ids = np.array([[index[c] for c in cs] for cs in s.captions], np.int64)  # (N, 6)
        self.scene_tokens = tokenizer(texts, d.context_length)                       # (U, T)
        x, y = fashion_mnist.load("train")
        if d.get("fmnist_limit"):
            x, y = x[: d.fmnist_limit], y[: d.fmnist_limit]
        self.fm_images, self.fm_labels = fashion_mnist.to_rgb(x, d.image_size), y  # (60000, S, S, 3)
        names = fashion_mnist_names(d.get("fmnist_names", "class"))                # per class: (A,) names
        self.num_names = np.array([len(n) for n in names])                           # (10,)
        width = int(self.num_names.max())
        prompts = [t.format(n[a % len(n)]) for n in names for a in range(width) for t in FMNIST_TEMPLATES]
        self.texts = texts + sorted(set(prompts))                                    # every training text
        # (10, A, templates, T); a class with fewer names repeats them (never drawn: a < num_names).
        self.fm_tokens = tokenizer(prompts, d.context_length).reshape(10, width, len(FMNIST_TEMPLATES), -1)
        self.scene_loader = pipeline.ArrayLoader({"i": np.arange(len(self.scene_images))}, d.scene_batch,
                                                 seed=cfg.seed)
        self.fm_loader = pipeline.ArrayLoader({"i": np.arange(len(y))}, d.fmnist_batch, seed=cfg.seed + 1)
        self.seed = cfg.seed
        self.num_scene_texts = len(texts)

    def batch(self, step: int) -> dict:
        rng = np.random.default_rng([self.seed, step])
        si = next(self.scene_loader)["i"]
        fi = next(self.fm_loader)["i"]
        cap = self.scene_caption_ids[si, rng.integers(0, 6, len(si))]                # (Bs,) caption text ids
        lab = self.fm_labels[fi]
        tmpl = rng.integers(0, len(FMNIST_TEMPLATES), len(fi))
        name = np.zeros(len(fi), np.int64)
        if self.num_names.max() > 1:                # drawn after the template: class-name runs are unchanged
            name = (rng.random(len(fi)) * self.num_names[lab]).astype(np.int64)
        return {
            "images": np.concatenate([self.scene_images[si], self.fm_images[fi]]),   # (B, S, S, 3) uint8
            "tokens": np.concatenate([self.scene_tokens[cap], self.fm_tokens[lab, name, tmpl]]),  # (B, T)
            # Equal keys = mutual positives: a scene caption's text id, or the class (offset past them).
            "keys": np.concatenate([cap, self.num_scene_texts + lab]).astype(np.int32),
        }

    def state(self) -> dict:
        return {"scenes": self.scene_loader.get_state(), "fmnist": self.fm_loader.get_state()}

    def set_state(self, st: dict):
        self.scene_loader.set_state(st["scenes"])
        self.fm_loader.set_state(st["fmnist"])


def make_optimizer(model: CLIP, cfg) -> nnx.Optimizer:
    o = cfg.optim
    warmup = min(o.warmup, cfg.train.steps // 2)
    sched = optax.warmup_cosine_decay_schedule(0.0, o.lr, warmup, max(cfg.train.steps, warmup + 1), o.lr * o.final_lr_frac)
    no_decay = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
    tx = optax.chain(optax.clip_by_global_norm(o.clip),
                     optax.adamw(sched, weight_decay=o.weight_decay, mask=no_decay))
    if cfg.model.lock_text:
        wrt = nnx.All(nnx.Param, nnx.Not(nnx.PathContains("text")))
    else:
        wrt = nnx.Param
    return nnx.Optimizer(model, tx, wrt=wrt)


def make_train_step(loss_name: str, mean, std, lock_text: bool):
    loss_fn_ = LOSSES[loss_name]
    wrt = nnx.All(nnx.Param, nnx.Not(nnx.PathContains("text"))) if lock_text else nnx.Param

    @nnx.jit(donate_argnums=(0, 1))
    def step(model: CLIP, optimizer: nnx.Optimizer, images, tokens, keys):
        pixels = (images.astype(jnp.float32) / 255.0 - mean) / std

        def loss_fn(m):
            logits, aux = m(pixels, tokens)
            positives = keys[:, None] == keys[None, :]
            return loss_fn_(logits, positives), (logits, aux)

        (loss, (logits, aux)), grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt), has_aux=True)(model)
        optimizer.update(model, grads)
        positives = keys[:, None] == keys[None, :]
        acc = jnp.mean(jnp.take_along_axis(positives, jnp.argmax(logits, 1)[:, None], 1))
        return {"loss": loss, "i2t_acc": acc, "logit_scale": jnp.exp(model.logit_scale[...]),
                "grad_norm": optax.tree.norm(nnx.to_pure_dict(grads))}

    return step


def export(model: CLIP, tokenizer, workdir: str, cfg, notes: dict, texts: list[str]) -> str:
    out = os.path.join(workdir, "export")
    loaders.save_own(model, out, tokenizer.spec(), extra={"note": OFFLINE_NOTE, "trained_by": "train.contrastive",
                                                          "train_config": cfg.to_dict(), **notes})
    loaders.save_known_words(out, texts)
    return out


# Config fields that define the model: a resume whose config differs in one is refused.
MODEL_FIELDS = ("model", "data.image_size", "data.context_length", "loss")


def main(argv=None):
    from train.configs.contrastive_offline import get_config as base_config   # the fields any --config file may set

    args, cfg = trainlib.parse_train_args(__doc__, argv, base=base_config)
    with trainlib.user_errors():
        return run(cfg, args.workdir, args.stop_after)


def run(cfg, workdir: str, stop_after: int | None = None):
    """Train (or resume) in `workdir`; -> the export folder (None when stopped by `stop_after`)."""
    os.makedirs(workdir, exist_ok=True)
    trainlib.check_resume_config(workdir, cfg, MODEL_FIELDS)

    hf_tok, table = llm_token_assets(name=cfg.model.llm)
    tokenizer = llm_tokenizer(hf_tok, cfg.data.context_length, cfg.model.llm)
    mcfg = model_config(cfg, table.shape[0], table.shape[1], tokenizer.eos_id)
    model = CLIP(mcfg, rngs=nnx.Rngs(cfg.seed))
    model.text.token_table[...] = jnp.asarray(table)
    optimizer = make_optimizer(model, cfg)
    data = TrainData(cfg, tokenizer)
    mesh = trainlib.make_mesh(cfg.train.num_devices)

    ckpt = trainlib.Checkpointer(workdir)
    start, extra = trainlib.restore_model_state(ckpt, model, optimizer)
    if start:
        data.set_state(extra["data"])
    trainlib.write_config(workdir, cfg)

    mean, std = np.asarray(mcfg.image_mean, np.float32), np.asarray(mcfg.image_std, np.float32)
    step_fn = make_train_step(cfg.loss, mean, std, cfg.model.lock_text)
    writer = trainlib.MetricsWriter(workdir)
    t0, bar = time.time(), trainlib.progress(total=cfg.train.steps, initial=start, desc="contrastive")
    clip = lambda: ClipModel(model, tokenizer, {"name": "training"})
    for step in range(start + 1, cfg.train.steps + 1):
        b = trainlib.shard_batch(data.batch(step), mesh)
        metrics = step_fn(model, optimizer, b["images"], b["tokens"], b["keys"])
        bar.update(1)
        if step % cfg.train.log_every == 0 or step == cfg.train.steps:
            trainlib.log_metrics(step, metrics, writer, bar, t0)
        if step % cfg.train.ckpt_every == 0 or step == cfg.train.steps:
            ckpt.save(step, trainlib.model_state(model, optimizer), extra={"data": data.state()})
        if step % cfg.train.eval_every == 0 and step != cfg.train.steps:
            ev = evaluate_offline(clip(), num_scenes=cfg.train.eval_scenes, fmnist_limit=cfg.train.eval_fmnist)
            writer.write(step, {f"eval/{k}": v for k, v in ev.items()})
            print(f"eval @ {step}: " + json.dumps({k: round(v, 4) for k, v in ev.items()}), flush=True)
        if stop_after is not None and step - start >= stop_after:
            bar.close()
            ckpt.close()
            return None                    # simulated interruption: no export
    bar.close()
    ckpt.close()
    train_wall = time.time() - t0
    out = export(model, tokenizer, workdir, cfg, {"train_wall_s_this_run": round(train_wall, 1)},
                 data.texts)
    print(f"exported to {out}; training wall time this run {train_wall / 60:.1f} min")
    return out


if __name__ == "__main__":
    main()
