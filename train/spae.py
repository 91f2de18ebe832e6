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

On many hosts (one process each; see backbones/distributed.py), the same command on every host with
the coordinator's address and each process's id; a two-process trial run on one machine:

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m train.spae --config train/configs/spae_tiny.py \
        --workdir /tmp/spae_2p --coordinator 127.0.0.1:1234 --num_processes 2 --process_id 0   # and --process_id 1

Each process reads its own rows of every global batch (the one-process run's batch, row for row,
so the parameters are the one-process run's), all take part in saving and restoring the
checkpoints (Orbax, into the one --workdir every host sees), and process 0 alone writes
config.json, metrics.jsonl, the export and the caches, and prints.
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


def _say(text: str) -> None:
    """A progress line on stderr, from process 0 alone."""
    from backbones import distributed

    if distributed.is_primary():
        print(text, file=sys.stderr, flush=True)


def _save_cache(path: str, **arrays) -> None:
    """np.savez into `path` by process 0 alone, atomically (a process that looks meanwhile finds the
    old file or the whole new one, never a part)."""
    from backbones import distributed

    if not distributed.is_primary():
        return
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def semantic_targets(cfg, vocab, images, labels, class_names, workdir):
    """(sem_ids (N, K), sem_prob (N, K)) for the training images, cached in workdir."""
    from backbones import distributed
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

        _say(f"computing ImageNet relevance of {vocab.size} tokens for {len(images)} images ...")
        ids, prob = semantic.imagenet_topk(load_vision(), images, vocab.words, L.semantic_k)
        _save_cache(cache, key=np.asarray(key), ids=ids, prob=prob)
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
    text = semantic.token_text_embeddings(clip, [vocab.words[i] for i in rows],   # one writer of the cache
                                          cache_path=os.path.join(workdir, "text_emb.npz")
                                          if distributed.is_primary() else None)
    _say(f"computing CLIP relevance of {len(rows)} tokens for {len(images)} images ...")
    ids, prob = semantic.relevance_topk(clip, images, text, L.semantic_k, L.semantic_tau)
    ids = rows[ids].astype(np.int32)
    _save_cache(cache, key=np.asarray(key), ids=ids, prob=prob)
    return ids, prob


def semantic_path_arrays(cfg, vocab, workdir) -> dict:
    """Training arrays of a model with a semantic path, cached in workdir:
    image uint8 (N, S, S, C) as the model sees it; sem_feat (N, 2, F): the frozen backbone's features of
    that image and of its source at data.semantic_size (the tokenizer hands the backbone the images it
    is given, so both sizes occur); sem_rows (N, P): the ImageNet teacher's word per semantic position
    (`semantic_path.rank_targets`), from the source image's class probabilities."""
    import copy

    from spae import semantic
    from spae.data import load_split, to_model_images
    from spae.semantic_path import load_semantic_backbone, rank_targets

    m, L = cfg.model, cfg.loss
    if L.get("relevance", "imagenet") != "imagenet":
        raise ValueError("a semantic path trains on the ImageNet teacher: set loss.relevance='imagenet'")
    src_cfg = copy.deepcopy(cfg.data)
    src_cfg.image_size = int(cfg.data.get("semantic_size") or cfg.data.image_size)
    cache = os.path.join(workdir, "semantic_path_arrays.npz")
    key = json.dumps([cfg.data.to_dict(), m.semantic_backbone, m.semantic_layers, vocab.size,
                      vocab.llm_ids[:50].tolist(), L.get("semantic_specificity", True)], sort_keys=True)
    backbone = load_semantic_backbone(m.semantic_backbone)

    def head_input(arrays):   # the words head reads class logits: the classifier on the stored pooled features
        if m.get("semantic_head", "words") != "words":
            return arrays
        n, views, f = arrays["sem_feat"].shape
        logits = backbone.logits_from_embedding(arrays["sem_feat"].reshape(n * views, f))
        return {**arrays, "sem_feat": logits.reshape(n, views, -1).astype(np.float32)}

    if os.path.exists(cache):
        with np.load(cache) as f:
            if str(f["key"]) == key:
                return head_input({k: f[k] for k in ("image", "sem_feat", "sem_rows")})
    source, _, _ = load_split(src_cfg, "train")                         # (N, S', S', C)
    images = to_model_images(source, cfg.data.image_size, cfg.data.channels, cfg.data.get("prep", "resize"))
    if not hasattr(backbone, "probabilities_from_embedding"):
        raise ValueError(f"the ImageNet teacher needs an ImageNet classifier backbone; {m.semantic_backbone!r} is not one")
    _say(f"reading the frozen backbone {m.semantic_backbone} on {len(images)} images at "
         f"{cfg.data.image_size} and {src_cfg.image_size} px ...")
    small, large = backbone.embed(semantic._as_rgb(images)), backbone.embed(semantic._as_rgb(source))
    probs = backbone.probabilities_from_embedding(large)
    ids, prob = semantic.imagenet_topk_from_probabilities(probs, vocab.words, 16, L.get("semantic_specificity", True))
    grid = cfg.data.image_size // (int(m.get("patch", 1)) * 2 ** (len(m.ch_mult) - 1))
    positions = sum((grid // int(s)) ** 2 for s in m.strides[:m.semantic_layers])
    arrays = {"image": images, "sem_feat": np.stack([small, large], 1).astype(np.float32),
              "sem_rows": rank_targets(ids, prob, positions)}
    _save_cache(cache, key=np.asarray(key), **arrays)
    return head_input(arrays)


def build_arrays(cfg, vocab, workdir) -> dict:
    from spae.data import load_split

    if cfg.model.get("semantic_backbone", "none") != "none":
        return semantic_path_arrays(cfg, vocab, workdir)
    images, labels, class_names = load_split(cfg.data, "train")
    arrays = {"image": images}
    if cfg.loss.semantic > 0 and cfg.train.get("trainable", "all") == "all":   # a decoder-only run needs none
        arrays["sem_ids"], arrays["sem_prob"] = semantic_targets(cfg, vocab, images, labels, class_names, workdir)
    return arrays


def fit_head(ts, arrays: dict, cfg, workdir: str, quiet: bool = False) -> None:
    """Fit the semantic head alone on the backbone features against the starting code table
    (`semantic_path.fit_semantic_head`), its generator EMA too; writes workdir/semantic_head.json."""
    from spae.semantic_path import fit_semantic_head, head_accuracy

    steps = int(cfg.train.semantic_head_steps)
    codes = ts.model.codes()
    curve = fit_semantic_head(ts.model.semantic, codes, arrays["sem_feat"], arrays["sem_rows"], steps=steps,
                              temperature=cfg.loss.get("semantic_path_temp", 0.25), seed=cfg.seed, progress=not quiet)
    n = min(4000, len(arrays["sem_rows"]))
    acc = [head_accuracy(ts.model.semantic, codes, arrays["sem_feat"][:n, v], arrays["sem_rows"][:n]).tolist()
           for v in range(arrays["sem_feat"].shape[1])]
    from backbones import distributed

    if not distributed.is_primary():        # every process fits the same head; process 0 reports it
        return
    with open(os.path.join(workdir, "semantic_head.json"), "w") as f:
        json.dump({"steps": steps, "loss_every_100": curve, "train_accuracy_per_view_position": acc}, f, indent=1)
    print(f"semantic head: {steps} steps, loss {curve[0]:.3f} -> {curve[-1]:.3f}, training-image accuracy per view "
          f"(top word) {[round(a[0], 3) for a in acc]}", file=sys.stderr)


def export(state, vocab, cfg, directory: str) -> None:
    """Write the generator-EMA model as a small tokenizer checkpoint."""
    from spae.tokenizer import save_checkpoint
    from spae.training import ema_modules

    save_checkpoint(directory, ema_modules(state), vocab, cfg)


# The config fields that define the model (its arrays and what its tokens mean): a resume in a workdir
# whose config.json differs in one of them is refused; the others (train.*, optim.*, loss.*) may change.
MODEL_FIELDS = ("model", "vocab", "data.image_size", "data.channels", "lqae")


def batches(arrays: dict, cfg, mesh):
    """(loader, place): the training batches and how each goes onto the mesh. One process: an
    ArrayLoader of data.batch_size examples, `trainlib.shard_batch`. Several: the same loader over the
    example indices, each process reading its rows of every batch (`distributed.ProcessRows`), joined
    into one global batch (`distributed.global_batch`): the one-process batches, row for row, and the
    same loader state to checkpoint."""
    from backbones import distributed
    from train import trainlib
    from visiondata.pipeline import ArrayLoader

    size = cfg.data.batch_size
    if distributed.process_count() == 1:
        return (ArrayLoader(arrays, size, seed=cfg.seed, shuffle=True, drop_remainder=True),
                lambda batch: trainlib.shard_batch(batch, mesh))
    n = len(next(iter(arrays.values())))
    order = ArrayLoader({"index": np.arange(n)}, size, seed=cfg.seed, shuffle=True, drop_remainder=True)
    sharding = trainlib.data_sharding(mesh)
    if size % mesh.shape["data"]:
        raise ValueError(f"data.batch_size={size} must be a multiple of the {mesh.shape['data']} devices of the "
                         "'data' axis")
    return distributed.ProcessRows(arrays, order, sharding), lambda local: distributed.global_batch(local, sharding, size)


def train(cfg, workdir: str, stop_after: int | None = None, llm=None, quiet: bool = False) -> dict:
    """Run (or resume) training; returns the last logged metrics. In a multi-process run every
    process calls it (backbones/distributed.py); process 0 alone writes files and reports."""
    import jax
    from flax import nnx

    from backbones import distributed
    from spae.training import StepFn, TrainState
    from train import trainlib

    primary = distributed.is_primary()
    quiet = quiet or not primary
    os.makedirs(workdir, exist_ok=True)
    trainlib.check_resume_config(workdir, cfg, MODEL_FIELDS)   # before any work: refuse another model's workdir
    vocab = build_vocab(cfg, llm)
    arrays = build_arrays(cfg, vocab, workdir)
    mesh = trainlib.make_mesh(cfg.train.num_devices, model=cfg.train.get("model_shards", 1))
    loader, place = batches(arrays, cfg, mesh)
    ts = TrainState(cfg, vocab.embeddings, rngs=nnx.Rngs(cfg.seed), words=vocab.words)
    ckpt = trainlib.Checkpointer(workdir, max_to_keep=2)
    if ts.model.semantic is not None and cfg.train.get("semantic_head_steps", 0) and ckpt.latest_step() is None:
        fit_head(ts, arrays, cfg, workdir, quiet)          # before step 1; a resume restores the fitted head
    fn = StepFn(ts, cfg, mesh)
    del ts
    writer = trainlib.MetricsWriter(workdir)
    start = 0
    restored = ckpt.restore(fn.train)
    if restored is not None:
        start, train_state, extra = restored
        fn.set_train_state(train_state)
        loader.set_state(extra["loader"])
        if primary:
            print(f"resumed from step {start} in {workdir}", file=sys.stderr)
    trainlib.write_config(workdir, cfg)       # only now: a failed start leaves the old one beside its checkpoints

    total = cfg.train.steps
    last = {}
    t0, t_log = time.time(), time.time()
    bar = trainlib.progress(total=total, initial=start, desc="spae", disable=True if quiet else None)
    for step in range(start + 1, total + 1):
        batch = place(next(loader))
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
    if primary:       # the parameters are replicated: process 0 holds them all
        export(fn.state, vocab, cfg, os.path.join(workdir, "export"))
    distributed.barrier("spae export")
    last["wall_s"] = time.time() - t0
    return last


def main(argv=None):
    from backbones import distributed
    from spae.training import resolve_config
    from train import trainlib
    from train.configs.spae_base import base_config   # the fields any --config file may set

    args, cfg = trainlib.parse_train_args(__doc__, argv, base=base_config, add_flags=distributed.add_flags)
    with trainlib.user_errors():
        distributed.initialize_from_args(args)   # before any JAX work; nothing without the flags
        cfg = resolve_config(cfg)
        last = train(cfg, args.workdir, stop_after=args.stop_after)
    if distributed.is_primary():
        print(json.dumps(last))


if __name__ == "__main__":
    main()
