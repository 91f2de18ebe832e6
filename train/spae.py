"""Train SPAE.

    python -m train.spae --config train/configs/spae_fmnist32.py --workdir runs/spae_fmnist32 \
        [--set train.steps=500 --set loss.semantic=0]

A second stage trains the decoder alone under a trained tokenizer's fixed encoder, so every
token stays as it was and only the pictures change (train/configs/spae_fmnist32_fine8_dec.py):

    python -m train.spae --config train/configs/spae_fmnist32.py --workdir runs/dec \
        --set train.init_from=spae/pretrained/fmnist32 --set train.trainable=decoder --set loss.random_prefix=True

Resumes exactly from the latest checkpoint in --workdir (model, optimizers, EMA, discriminator,
data-iterator position); a damaged latest checkpoint is moved to checkpoints/damaged/ and the run
resumes from the one before. A resume with another model (a changed model.*, vocab.*,
data.image_size, data.channels or lqae field) is refused; training fields may change. --debug shows
tracebacks. At the end writes --workdir/export, a small checkpoint that
`spae.load_tokenizer(<workdir>/export)` reads.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def build_vocab(cfg, llm=None):
    from spae.codebook import Vocabulary

    v = cfg.vocab
    if v.source == "random":
        return Vocabulary.random(v.random_size, v.random_dim, seed=cfg.seed)
    if v.source != "llm":
        raise ValueError(f"vocab.source must be llm or random; got {v.source!r}")
    if llm is None:
        from backbones import load_llm

        llm = load_llm(v.llm)
    return Vocabulary.from_llm(llm, mode=v.mode, min_len=v.min_len, max_size=v.max_size)


def semantic_targets(cfg, vocab, images, labels, class_names, workdir):
    """(sem_ids (N, K), sem_prob (N, K)) for the training images, cached in workdir."""
    from spae import semantic

    L = cfg.loss
    if L.relevance == "random":
        return semantic.random_topk(len(images), vocab.size, L.semantic_k, seed=cfg.seed)
    if L.relevance == "labels":
        return semantic.label_topk(labels, class_names, vocab.embeddings, vocab.words, L.semantic_k, L.semantic_tau)
    if L.relevance not in ("clip", "imagenet"):
        raise ValueError(f"loss.relevance must be one of {', '.join(semantic.TEACHERS)}; got {L.relevance!r}")
    cache = os.path.join(workdir, "semantic_targets.npz")
    words_mode = L.get("relevance_words", "all")
    if words_mode not in ("all", "known"):
        raise ValueError(f"loss.relevance_words must be all or known; got {words_mode!r}")
    key = json.dumps([len(images), vocab.llm_ids[:50].tolist(), vocab.size, L.semantic_k, L.semantic_tau,
                      str(L.clip), cfg.data.to_dict(), words_mode, L.relevance], sort_keys=True)
    if os.path.exists(cache):
        with np.load(cache) as f:
            if str(f["key"]) == key:
                return f["ids"], f["prob"]
    if L.relevance == "imagenet":
        from backbones import load_vision

        print(f"computing ImageNet relevance of {vocab.size} tokens for {len(images)} images ...", file=sys.stderr)
        ids, prob = semantic.imagenet_topk(load_vision(), images, vocab.words, L.semantic_k)
        np.savez(cache, key=np.asarray(key), ids=ids, prob=prob)
        return ids, prob
    from backbones import load_clip

    clip = load_clip(L.clip)
    rows = np.arange(vocab.size)
    if words_mode == "known":              # only words the contrastive model's text tower was trained on
        if clip.known_words is None:
            raise ValueError("loss.relevance_words='known' needs a contrastive model that lists its training words "
                             "(words.txt in its directory, written by train.contrastive); use 'all' for CLIP proper")
        rows = np.array([i for i, w in enumerate(vocab.words) if w.lower() in clip.known_words])
        if len(rows) == 0:
            raise ValueError("no codebook word is among the contrastive model's training words")
    text = semantic.token_text_embeddings(clip, [vocab.words[i] for i in rows],
                                          cache_path=os.path.join(workdir, "text_emb.npz"))
    print(f"computing CLIP relevance of {len(rows)} tokens for {len(images)} images ...", file=sys.stderr)
    ids, prob = semantic.relevance_topk(clip, images, text, L.semantic_k, L.semantic_tau)
    ids = rows[ids].astype(np.int32)
    np.savez(cache, key=np.asarray(key), ids=ids, prob=prob)
    return ids, prob


def build_arrays(cfg, vocab, workdir) -> dict:
    from spae.data import load_split

    images, labels, class_names = load_split(cfg.data, "train")
    arrays = {"image": images}
    if cfg.loss.semantic > 0 and cfg.train.get("trainable", "all") == "all":   # a decoder-only run needs none
        arrays["sem_ids"], arrays["sem_prob"] = semantic_targets(cfg, vocab, images, labels, class_names, workdir)
    return arrays


def export(state, vocab, cfg, directory: str) -> None:
    """Write the generator-EMA model as a small tokenizer checkpoint."""
    from spae.tokenizer import save_checkpoint
    from spae.training import ema_modules

    save_checkpoint(directory, ema_modules(state), vocab, cfg)


# The config fields that define the model (its arrays and what its tokens mean): a resume in a workdir
# whose config.json differs in one of them is refused; the others (train.*, optim.*, loss.*) may change.
MODEL_FIELDS = ("model", "vocab", "data.image_size", "data.channels", "lqae")


def train(cfg, workdir: str, stop_after: int | None = None, llm=None, quiet: bool = False) -> dict:
    """Run (or resume) training; returns the last logged metrics."""
    import jax
    from flax import nnx

    from spae.training import StepFn, TrainState
    from train import trainlib
    from visiondata.pipeline import ArrayLoader

    os.makedirs(workdir, exist_ok=True)
    trainlib.check_resume_config(workdir, cfg, MODEL_FIELDS)   # before any work: refuse another model's workdir
    vocab = build_vocab(cfg, llm)
    arrays = build_arrays(cfg, vocab, workdir)
    mesh = trainlib.make_mesh(cfg.train.num_devices)
    loader = ArrayLoader(arrays, cfg.data.batch_size, seed=cfg.seed, shuffle=True, drop_remainder=True)
    ts = TrainState(cfg, vocab.embeddings, rngs=nnx.Rngs(cfg.seed))
    fn = StepFn(ts, cfg, mesh)
    del ts
    ckpt = trainlib.Checkpointer(workdir, max_to_keep=2)
    writer = trainlib.MetricsWriter(workdir)
    start = 0
    restored = ckpt.restore(fn.train)
    if restored is not None:
        start, train_state, extra = restored
        fn.set_train_state(train_state)
        loader.set_state(extra["loader"])
        print(f"resumed from step {start} in {workdir}", file=sys.stderr)
    trainlib.write_config(workdir, cfg)       # only now: a failed start leaves the old one beside its checkpoints

    total = cfg.train.steps
    last = {}
    t0, t_log = time.time(), time.time()
    bar = trainlib.progress(total=total, initial=start, desc="spae", disable=True if quiet else None)
    for step in range(start + 1, total + 1):
        batch = trainlib.shard_batch(next(loader), mesh)
        metrics = fn(batch)
        trainlib.check_finite(step, {"loss": metrics["loss"]})
        bar.update(1)
        if step % cfg.train.log_every == 0 or step == total:
            m = trainlib.to_host_scalars(metrics)
            m.update({f"usage_{i + 1}": int(u) for i, u in enumerate(np.asarray(metrics["usage"]))})
            m["sec_per_step"] = (time.time() - t_log) / cfg.train.log_every
            t_log = time.time()
            trainlib.check_finite(step, m)
            writer.write(step, m)
            bar.set_postfix(loss=f"{m['loss']:.4f}", psnr=f"{m.get(f'psnr_{len(cfg.model.strides)}', 0):.2f}")
            last = {"step": step, **m}
        if step % cfg.train.ckpt_every == 0 or step == total:
            ckpt.save(step, fn.train, extra={"loader": loader.get_state(), "step": step})
        if stop_after is not None and step - start >= stop_after:
            bar.close()
            ckpt.close()
            return last  # simulated interruption: no export
    bar.close()
    ckpt.close()
    jax.block_until_ready(fn.train)
    export(fn.state, vocab, cfg, os.path.join(workdir, "export"))
    last["wall_s"] = time.time() - t0
    return last


def main(argv=None):
    from spae.training import resolve_config
    from train import trainlib
    from train.configs.spae_base import base_config   # the fields any --config file may set

    args, cfg = trainlib.parse_train_args(__doc__, argv, base=base_config)
    with trainlib.user_errors():
        cfg = resolve_config(cfg)
        last = train(cfg, args.workdir, stop_after=args.stop_after)
    print(json.dumps(last))


if __name__ == "__main__":
    main()
