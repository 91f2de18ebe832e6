"""Train the LENS captioner (image encoder + cross-attention decoder over LLM tokens).

    nice -n 10 python -m train.captioner --config train/configs/captioner.py --workdir runs/captioner \
        [--set train.steps=2000 --set data.batch_size=32]

Data: synthetic scenes (`visiondata.scenes`, 6 captions per image), a COCO caption JSON
(`--set data.source=coco --set data.coco_json=... --set data.coco_image_dir=...`), or real
pictures (`data.source=real`, `train/configs/captioner_real.py`): emoji in the Noto and Twemoji
styles, Tux Paint stamps and scenes, read through a frozen backbone whose pooled features are
computed once and cached in WORKDIR/features (`model.encoder=features`).
Sharded jit over a 1-D "data" mesh (every visible device), Orbax checkpoints every
train.ckpt_every steps; rerunning the same command resumes exactly (model, optimizer and
data-iterator position). At the end writes --workdir/export, which `Captioner.load(dir)`
and `Lens.load(captioner=dir)` read.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time

import numpy as np


def real_pairs(part: str, d, split: str, seed: int = 0) -> tuple[list[np.ndarray], list[list[str]]]:
    """One source of real pictures -> (per style/background, uint8 images (N, S, S, 3)), captions (N lists).

    emoji: every caption phrase of the concept (`visiondata.emoji.captions_for`); Tux Paint: the
    stamp's own caption and its name; scenes: their six captions. Split "train" trains, emoji "test"
    concepts (never trained on) are the validation set; Fluent, the held-out emoji concepts and the
    Tux Paint test stamps are kept for `eval.captioning`.
    """
    if part == "emoji":
        from visiondata import emoji

        sets = [emoji.load(style=s, split=split, size=d.emoji_size) for s in d.emoji_styles]
        return [s.images for s in sets], [emoji.captions_for(c) for s in sets for c in s.concepts]
    if part == "tuxpaint":
        from visiondata import tuxpaint

        sets = [tuxpaint.load(split=split, size=d.tuxpaint_size, background=b, seed=seed) for b in d.tuxpaint_backgrounds]
        return [s.images for s in sets], [tuxpaint.captions_of(c, n) for s in sets for c, n in zip(s.captions, s.names)]
    if part == "scenes":
        from visiondata import scenes

        sc = scenes.generate(d.num_train if split == "train" else d.num_val, size=d.image_size, seed=seed,
                             split="train" if split == "train" else "test", background=d.background)
        return [sc.images], [list(c) for c in sc.captions]
    raise ValueError(f"unknown real-caption part {part!r}; choose from emoji, tuxpaint, scenes")


@functools.lru_cache(maxsize=2)
def frozen_backbone(name: str):
    """The frozen image backbone, loaded and compiled once per process (resumed runs, tests, notebooks)."""
    from backbones import load_vision

    return load_vision(name)


def real_features(cfg, split: str, workdir: str, backbone=None) -> tuple[np.ndarray, list[list[str]]]:
    """The parts of cfg.data.parts of one split -> (backbone features (N, F) float32, captions)."""
    from train.lit_data import cached_features

    backbone = backbone or frozen_backbone(cfg.model.backbone)
    feats, caps = [], []
    for part in cfg.data.parts:
        if split != "train" and part != "emoji":
            continue  # validation: unseen emoji concepts only (the Tux Paint test stamps are for eval)
        images, captions = real_pairs(part, cfg.data, split, cfg.seed)
        feats += [cached_features(backbone, x, workdir, f"{part}-{split}-{i}") for i, x in enumerate(images)]
        caps += captions
    return np.concatenate(feats), caps


def load_data(cfg, workdir: str = ""):
    """-> (train_inputs, train_captions, val_inputs, val_captions); inputs uint8 images (N, S, S, 3), or
    frozen-backbone features (N, F) for data.source=real."""
    d = cfg.data
    if d.source == "real":
        if cfg.model.encoder != "features":
            raise ValueError("data.source=real trains on backbone features: set model.encoder=features "
                             "(train/configs/captioner_real.py)")
        tr, tr_caps = real_features(cfg, "train", workdir)
        va, va_caps = real_features(cfg, "test", workdir)
        return tr, tr_caps, va, va_caps
    if d.source == "scenes":
        from visiondata import scenes

        tr = scenes.generate(d.num_train, size=d.image_size, seed=cfg.seed, split="train", background=d.background)
        va = scenes.generate(d.num_val, size=d.image_size, seed=cfg.seed, split="test", background=d.background)
        return tr.images, tr.captions, va.images, va.captions
    if d.source == "coco":
        from visiondata.formats import read_coco_captions

        if not d.coco_json or not d.coco_image_dir:
            raise ValueError("data.source=coco needs --set data.coco_json=PATH --set data.coco_image_dir=DIR")
        cs = read_coco_captions(d.coco_json, image_dir=d.coco_image_dir, size=d.image_size)
        keep = [i for i, c in enumerate(cs.captions) if c]
        images, caps = np.asarray(cs.images)[keep], [cs.captions[i] for i in keep]
        order = np.random.default_rng(cfg.seed).permutation(len(caps))
        nval = max(1, int(round(d.coco_val_frac * len(caps))))
        va, tr = order[:nval], order[nval:]
        return images[tr], [caps[i] for i in tr], images[va], [caps[i] for i in va]
    raise ValueError(f"data.source must be 'scenes', 'coco' or 'real', got {d.source!r}")


def load_tokenizer(cfg, tokenizer=None):
    """The frozen LLM's tokenizer (anything with encode(str) -> ids and decode(ids) -> str)."""
    if tokenizer is not None:
        return tokenizer
    from backbones import load_llm

    return load_llm(cfg.vocab.llm)


def build_vocab(cfg, captions, tok, workdir):
    """Compact vocabulary from the training captions; pinned in workdir/vocab.json for resumes."""
    from lens.caption_vocab import CaptionVocab

    path = os.path.join(workdir, "vocab.json")
    vocab = CaptionVocab.build((c for caps in captions for c in caps), tok.encode,
                               min_count=cfg.vocab.min_count, max_size=cfg.vocab.max_size)
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)["llm_ids"]
        if saved != vocab.llm_ids.tolist():
            raise RuntimeError(f"{path} differs from the vocabulary of these captions: the data or tokenizer "
                               "changed since this workdir was made; use a fresh --workdir")
    else:
        with open(path, "w") as f:
            json.dump({"llm_ids": vocab.llm_ids.tolist()}, f)
    return vocab


def model_config(cfg, vocab_size: int):
    from lens.captioner import CaptionerConfig

    m = cfg.model
    return CaptionerConfig(vocab_size=vocab_size, image_size=cfg.data.image_size, channels=tuple(m.channels),
                           width=m.width, heads=m.heads, encoder_layers=m.encoder_layers,
                           decoder_layers=m.decoder_layers, mlp_ratio=m.mlp_ratio, max_len=m.max_len,
                           encoder=m.encoder, backbone=m.backbone if m.encoder == "features" else "",
                           feature_dim=m.feature_dim if m.encoder == "features" else 0,
                           feature_tokens=m.feature_tokens)


# Config fields that define the model: a resume whose config differs in one is refused.
MODEL_FIELDS = ("model", "vocab", "data.image_size", "data.source")


def train(cfg, workdir: str, stop_after: int | None = None, tokenizer=None, quiet: bool = False) -> dict:
    """Run (or resume) training; returns the last logged metrics (+ wall time)."""
    import jax
    from flax import nnx

    from lens.caption import Captioner
    from lens.captioner import count_params, init_model
    from lens.training import TrainStep, caption_arrays, optimizer_from
    from train import trainlib
    from visiondata.pipeline import ArrayLoader

    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    trainlib.check_resume_config(workdir, cfg, MODEL_FIELDS)
    tok = load_tokenizer(cfg, tokenizer)
    tr_images, tr_caps, va_images, va_caps = load_data(cfg, workdir)
    vocab = build_vocab(cfg, tr_caps, tok, workdir)
    mcfg = model_config(cfg, len(vocab))
    arrays = caption_arrays(tr_images, tr_caps, vocab, tok.encode, mcfg.max_len)
    val = caption_arrays(va_images, va_caps, vocab, tok.encode, mcfg.max_len)
    unk = vocab.unk_rate([c for caps in tr_caps[:2000] for c in caps], tok.encode)
    if not quiet:
        print(f"captioner: {len(tr_images)} train / {len(va_images)} val images, vocab {len(vocab)} "
              f"(unk rate {unk:.4f}), {arrays['tokens'].shape[1]} captions per image", file=sys.stderr)

    mesh = trainlib.make_mesh(cfg.train.num_devices)
    n_dev = mesh.shape["data"]
    if cfg.data.batch_size % n_dev:
        raise ValueError(f"data.batch_size {cfg.data.batch_size} must be a multiple of the {n_dev} devices")
    loader = ArrayLoader(arrays, cfg.data.batch_size, seed=cfg.seed, shuffle=True, drop_remainder=True)
    model = init_model(mcfg, cfg.seed)
    if not quiet:
        print(f"captioner: {count_params(model):,} parameters on {n_dev} device(s)", file=sys.stderr)
    step_fn = TrainStep(model, optimizer_from(cfg.optim, cfg.train.steps), mesh, seed=cfg.seed,
                        label_smoothing=cfg.optim.label_smoothing,
                        cache_key=(mcfg, json.dumps(cfg.optim.to_dict(), sort_keys=True), cfg.train.steps))
    del model
    nval = (len(va_images) // n_dev) * n_dev
    val_batch = trainlib.shard_batch({k: v[:nval] for k, v in val.items()}, mesh) if nval else None

    ckpt = trainlib.Checkpointer(workdir, max_to_keep=2)
    writer = trainlib.MetricsWriter(workdir)
    start = 0
    restored = ckpt.restore(step_fn.state)
    if restored is not None:
        start, step_fn.state, extra = restored
        loader.set_state(extra["loader"])
        if not quiet:
            print(f"captioner: resumed from step {start} in {workdir}", file=sys.stderr)
    trainlib.write_config(workdir, cfg)

    total, last = cfg.train.steps, {}
    bar = trainlib.progress(total=total, initial=start, desc="captioner", disable=True if quiet else None)
    t_log = time.time()
    for step in range(start + 1, total + 1):
        metrics = step_fn(trainlib.shard_batch(next(loader), mesh))
        bar.update(1)
        if step % cfg.train.log_every == 0 or step == total:
            m = trainlib.to_host_scalars(metrics)
            trainlib.check_finite(step, m)
            m["sec_per_step"] = (time.time() - t_log) / cfg.train.log_every
            t_log = time.time()
            if val_batch is not None:
                m.update({f"val_{k}": v for k, v in trainlib.to_host_scalars(step_fn.evaluate(val_batch)).items()})
            writer.write(step, m)
            bar.set_postfix(loss=f"{m['loss']:.3f}", val=f"{m.get('val_loss', float('nan')):.3f}")
            last = {"step": step, **m}
        if step % cfg.train.ckpt_every == 0 or step == total:
            ckpt.save(step, step_fn.state, extra={"loader": loader.get_state(), "step": step})
        if stop_after is not None and step - start >= stop_after:
            bar.close()
            ckpt.close()
            return last  # simulated interruption: no export
    bar.close()
    ckpt.close()
    jax.block_until_ready(step_fn.state)
    cap = Captioner(step_fn.model(), vocab, tok.decode,
                    meta={"trained_steps": total, "data": cfg.data.to_dict(), "seed": cfg.seed,
                          "llm": cfg.vocab.llm, "final": {k: v for k, v in last.items() if k != "step"}})
    export_dir = os.path.join(workdir, "export")
    cap.save(export_dir)
    if not quiet and len(va_images):
        preds = cap.caption(**{"features" if mcfg.encoder == "features" else "images": va_images[:4]})
        for img_caps, pred in zip(va_caps[:4], preds):
            print(f"  pred: {pred!r}\n  ref:  {img_caps[0]!r}", file=sys.stderr)
    last["wall_s"] = time.time() - t0
    last["export"] = export_dir
    return last


def main(argv=None):
    from train import trainlib

    from train.configs.captioner import get_config as base_config

    args, cfg = trainlib.parse_train_args(__doc__, argv, base=base_config)
    with trainlib.user_errors():
        last = train(cfg, args.workdir, stop_after=args.stop_after)
    print(json.dumps(last))


if __name__ == "__main__":
    main()
