"""Train the LiT contrastive model: a locked ImageNet image tower, a text tower learned here.

    python -m train.lit --config train/configs/contrastive_lit.py --workdir runs/lit

The image side is the frozen EfficientNet-Lite backbone (`backbones.load_vision`) and a trained
Linear on its pooled features; the features of every training image are computed once and cached
(WORKDIR/features). The text side is a small causal Transformer over the frozen LLM's token
embeddings. Batches mix emoji (Noto and Twemoji; Fluent is held out), Tux Paint stamps, Fashion-MNIST
prompts, synthetic scenes and the backbone classifier's rows named by ImageNet class names and their
WordNet hypernyms (`train/lit_data.py`), each class name in a source's fixed templates or, with
data.templates="many", in a random one of `train/lit_templates.py`'s training templates. Orbax
checkpoints make a re-run resume exactly; the end writes WORKDIR/export (`load_clip(WORKDIR/export)`).
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
from backbones.clip.config import CLIPConfig, TextConfig, VisionConfig
from backbones.clip.llm_text import llm_token_assets
from backbones.clip.losses import LOSSES
from backbones.clip.model import CLIP, FEATURE_STATS, l2_normalize
from backbones.clip.tokenizer import llm_tokenizer
from train import lit_data, lit_templates, trainlib

LIT_NOTE = ("LiT: the frozen ImageNet EfficientNet-Lite image tower with a trained head, and a text tower trained "
            "here on emoji, Tux Paint, Fashion-MNIST, scenes and ImageNet class names; not OpenAI CLIP")
TRAINED = nnx.All(nnx.Param, nnx.Not(nnx.Any(*(nnx.PathContains(n) for n in FEATURE_STATS))))


def model_config(cfg, vocab_size: int, token_dim: int, eos_id: int, image_size: int) -> CLIPConfig:
    m = cfg.model
    return CLIPConfig(
        vision=VisionConfig(image_size=image_size, backbone=m.backbone, feature_dim=m.feature_dim),
        text=TextConfig(vocab_size=vocab_size, context_length=cfg.data.context_length, width=m.text_width,
                        layers=m.text_layers, heads=m.text_heads, mlp_dim=m.mlp_ratio * m.text_width, act=m.act,
                        pool="eos", eos_id=eos_id, frozen_token_dim=token_dim),
        embed_dim=m.embed_dim, logit_scale_init=float(np.log(1 / 0.07)))


def make_optimizer(model: CLIP, cfg) -> nnx.Optimizer:
    o = cfg.optim
    warmup = min(o.warmup, cfg.train.steps // 2)
    sched = optax.warmup_cosine_decay_schedule(0.0, o.lr, warmup, max(cfg.train.steps, warmup + 1),
                                               o.lr * o.final_lr_frac)
    no_decay = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
    tx = optax.chain(optax.clip_by_global_norm(o.clip), optax.adamw(sched, weight_decay=o.weight_decay, mask=no_decay))
    return nnx.Optimizer(model, tx, wrt=TRAINED)


def make_train_step(loss_name: str):
    loss_of = LOSSES[loss_name]

    @nnx.jit(donate_argnums=(0, 1))
    def step(model: CLIP, optimizer: nnx.Optimizer, features, directions, tokens, keys):
        # features (Bf, F), directions (Bd, F), tokens (Bf + Bd, T), keys (Bf + Bd,)
        positives = keys[:, None] == keys[None, :]

        def loss_fn(m):
            img = jnp.concatenate([m.encode_image(features), m.encode_directions(directions)])   # (B, E)
            txt = m.encode_text(tokens)                                                          # (B, E)
            logits = jnp.exp(m.logit_scale[...]) * img @ txt.T
            return loss_of(logits, positives), logits

        (loss, logits), grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, TRAINED), has_aux=True)(model)
        optimizer.update(model, grads)
        acc = jnp.mean(jnp.take_along_axis(positives, jnp.argmax(logits, 1)[:, None], 1))
        return {"loss": loss, "i2t_acc": acc, "logit_scale": jnp.exp(model.logit_scale[...]),
                "grad_norm": optax.tree.norm(nnx.to_pure_dict(grads))}

    return step


def set_feature_stats(model: CLIP, sources: dict) -> None:
    """The head standardises features with the mean and spread of all training images' features."""
    feats = np.concatenate([s.features for s in sources.values() if not s.directions])
    model.vision.feature_mean[...] = jnp.asarray(feats.mean(0))
    model.vision.feature_scale[...] = jnp.asarray(feats.std(0) + 1e-3)


# Config fields that define the model: a resume whose config differs in one is refused.
MODEL_FIELDS = ("model", "data.context_length", "loss")


def main(argv=None):
    from train.configs.contrastive_lit import get_config as base_config   # the fields any --config file may set

    args, cfg = trainlib.parse_train_args(__doc__, argv, base=base_config)
    with trainlib.user_errors():
        return run(cfg, args)


def run(cfg, args):
    """Train (or resume) in args.workdir (args: parse_train_args's); -> the export folder, or None when
    stopped by args.stop_after."""
    os.makedirs(args.workdir, exist_ok=True)
    trainlib.check_resume_config(args.workdir, cfg, MODEL_FIELDS)
    from backbones import load_vision

    backbone = load_vision(cfg.model.backbone)
    hf_tok, table = llm_token_assets(name=cfg.model.llm)
    tokenizer = llm_tokenizer(hf_tok, cfg.data.context_length, cfg.model.llm)
    mcfg = model_config(cfg, table.shape[0], table.shape[1], tokenizer.eos_id, backbone.image_size)
    model = CLIP(mcfg, rngs=nnx.Rngs(cfg.seed))
    model.text.token_table[...] = jnp.asarray(table)

    sources = lit_data.build_sources(cfg, backbone, args.workdir)
    print("sources:", lit_data.describe(sources), flush=True)
    texts = lit_data.all_texts(sources)
    text_index = {t: i for i, t in enumerate(texts)}
    tokens = tokenizer(texts, cfg.data.context_length)                          # (U, T) int32
    set_feature_stats(model, sources)
    optimizer = make_optimizer(model, cfg)

    ckpt = trainlib.Checkpointer(args.workdir)
    start, _ = trainlib.restore_model_state(ckpt, model, optimizer)
    trainlib.write_config(args.workdir, cfg)

    step_fn = make_train_step(cfg.loss)
    writer = trainlib.MetricsWriter(args.workdir)
    t0, bar = time.time(), trainlib.progress(total=cfg.train.steps, initial=start, desc="lit")
    shares = {k: v for k, v in cfg.data.batch.items() if v > 0}
    for step in range(start + 1, cfg.train.steps + 1):
        b = lit_data.draw_batch(sources, shares, step, cfg.seed, text_index)
        metrics = step_fn(model, optimizer, b["features"], b["directions"], tokens[b["text_ids"]], b["keys"])
        bar.update(1)
        if step % cfg.train.log_every == 0 or step == cfg.train.steps:
            trainlib.log_metrics(step, metrics, writer, bar, t0)
        if step % cfg.train.ckpt_every == 0 or step == cfg.train.steps:
            ckpt.save(step, trainlib.model_state(model, optimizer), extra={})
        if args.stop_after is not None and step - start >= args.stop_after:
            ckpt.close()
            return None
    bar.close()
    ckpt.close()
    out = os.path.join(args.workdir, "export")
    loaders.save_own(model, out, tokenizer.spec(), extra={
        "note": LIT_NOTE, "trained_by": "train.lit", "train_config": cfg.to_dict(),
        "train_wall_s_this_run": round(time.time() - t0, 1), "sources": json.loads(lit_data.describe(sources)),
        "templates": lit_templates.describe(cfg.data.get("templates", "fixed"))})
    loaders.save_known_words(out, texts)
    print(f"exported to {out}")
    return out


if __name__ == "__main__":
    main()
