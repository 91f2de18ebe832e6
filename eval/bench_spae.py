"""Benchmark SPAE: quantizer GFLOP/s at 49k and 262k vocabularies and train-step MFU, each
against a matmul peak measured in the same run on the same device.

    python -m eval.bench_spae [--tokens 1024] [--vocab 49152 262144] [--dim 576 640] [--chunk 8192 ...]
                              [--reduction auto argmin fused] [--fused-plan 128x128x64,w8,s3 ...]
                              [--entropy 32 576]
                              [--config train/configs/spae_fmnist32.py] [--dtype float32|bfloat16]
                              [--out eval_out/bench_spae]

Codebooks here are random tables of the real sizes (49,152 x 576 as SmolLM2, 262,144 x 640 as
Gemma 3): the search cost does not depend on the values. The train step uses the config's model
with a random codebook of the config's vocabulary size (21,163 x 576 for the word-filtered SmolLM2).
MFU = matmul + convolution FLOPs counted from the step's jaxpr (eval.flops; XLA's cost analysis misses
convolutions on GPU and counts a scan body once) / step time / measured matmul peak.
`--timings DEVICE.json` recounts the FLOPs of an accelerator run here, keeping its times.
Not a test: numbers depend on the machine and its load; the JSON records the device.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from eval.report import write_md_json
from backbones.cli_errors import add_debug_flag, cli_main


def _time(fn, *args, repeats: int = 5) -> float:
    jax.block_until_ready(fn(*args))            # compile + warm up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best


def matmul_peak(n: int, dtype) -> float:
    """Best-of-5 GFLOP/s of an n x n x n matmul."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    f = jax.jit(lambda a, b: a @ b)
    return 2 * n ** 3 / _time(f, a, b) / 1e9


def quantizer_gflops(tokens: int, vocab: int, dim: int, chunk: int | None, dtype, reduction: str = "auto",
                     plan=None) -> float:
    """GFLOP/s of nearest_code's search; reduction "fused" with a spae.fused_search.FusedPlan (or its
    default) times the fused kernel, for which chunk is unused."""
    from spae.fused_search import FusedPlan, fused_nearest_code
    from spae.quantizer import nearest_code

    x = jax.random.normal(jax.random.key(2), (tokens, dim), dtype)
    cb = jax.random.normal(jax.random.key(3), (vocab, dim), dtype)
    if reduction == "fused":
        f = jax.jit(lambda x, cb: fused_nearest_code(x, cb, plan=plan or FusedPlan()))
    else:
        f = jax.jit(lambda x, cb: nearest_code(x, cb, chunk_size=chunk, reduction=reduction))
    return 2 * tokens * vocab * dim / _time(f, x, cb) / 1e9


def table_shape(cfg) -> tuple[int, int]:
    """(V, d) of the config's codebook: the word-filtered SmolLM2 table, Gemma 3's, or the random one."""
    if cfg.vocab.source != "llm":
        return cfg.vocab.random_size, cfg.vocab.random_dim
    return (21163, 576) if cfg.vocab.llm == "smollm2-135m" else (262144, 640)


def saq_times(config: str, overrides=(), reductions=("auto", "argmin")) -> dict:
    """Forward time of the whole SAQ pyramid on one batch of the config's latent shape (random z and a
    random table of its vocabulary size and search width), for each per-chunk reduction."""
    from spae.quantizer import saq_quantize_aux
    from spae.training import model_config, resolve_config
    from train import trainlib

    cfg = resolve_config(trainlib.load_config(config, list(overrides)))
    mc = model_config(cfg)
    vocab, dim = table_shape(cfg)
    dim = mc.code_dim or dim
    z = 0.3 * jax.random.normal(jax.random.key(6), (cfg.data.batch_size, mc.grid, mc.grid, dim))
    cb = 0.3 * jax.random.normal(jax.random.key(7), (vocab, dim))
    row = {"config": os.path.basename(config), "latent": list(z.shape), "vocab": vocab,
           "tokens": int(sum(z.shape[0] * (mc.grid // s) ** 2 for s in mc.strides))}
    for red in reductions:
        f = jax.jit(lambda z, cb: saq_quantize_aux(z, cb, mc.strides, chunk_size=mc.chunk_size, reduction=red)[0])
        row[f"{red}_s"] = _time(f, z, cb)
    return row


def entropy_times(n: int, vocab: int, dim: int) -> dict:
    """Value-and-gradient time of spae.losses.usage_entropy_loss on N positions: one (N, V) block
    with autodiff (row_chunk=N) against its default (row-chunked on a CPU for a small table)."""
    from spae.losses import entropy_row_chunk, usage_entropy_loss

    t = 0.3 * jax.random.normal(jax.random.key(4), (n, dim))
    cb = 0.3 * jax.random.normal(jax.random.key(5), (vocab, dim))
    grad = lambda f: jax.jit(jax.value_and_grad(f, argnums=(0, 1)))
    plain = _time(grad(lambda t, cb: usage_entropy_loss(t[:, None, None], cb, 1.0, row_chunk=n)), t, cb)
    default = _time(grad(lambda t, cb: usage_entropy_loss(t[:, None, None], cb, 1.0)), t, cb)
    return {"positions": n, "vocab": vocab, "dim": dim, "rows": entropy_row_chunk(n, vocab, dim),
            "plain_s": plain, "default_s": default}


def step_mfu(config: str, peak: float, overrides=(), steps: int = 3, step_s: float | None = None,
             platform: str | None = None) -> dict:
    """Train-step row: FLOPs counted from the step's jaxpr (eval.flops) and, unless `step_s` is
    given (a timing measured elsewhere), the step timed here from one compiled executable."""
    from flax import nnx

    from eval.flops import jaxpr_flops
    from spae.training import StepFn, TrainState, model_config, resolve_config
    from train import trainlib
    from train.spae import build_vocab

    cfg = trainlib.load_config(config, list(overrides))
    semantic_path = cfg.model.get("semantic_backbone", "none") != "none"
    if cfg.vocab.source == "llm" and not semantic_path:   # a random table of the real filtered size: same cost
        size, dim = table_shape(cfg)
        cfg.vocab.update(source="random", random_size=size, random_dim=dim)
    if not semantic_path:       # a semantic path's head names the real vocabulary's words: that one is loaded
        cfg.loss.relevance = "random"
    cfg = resolve_config(cfg)
    vocab = build_vocab(cfg)
    mesh = trainlib.make_mesh(cfg.train.num_devices)
    fn = StepFn(TrainState(cfg, vocab.embeddings, rngs=nnx.Rngs(0), words=vocab.words), cfg, mesh)
    b, s, c = cfg.data.batch_size, cfg.data.image_size, cfg.data.channels
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (b, s, s, c), dtype=np.uint8)}
    if cfg.loss.semantic > 0:
        from spae.semantic import random_topk

        batch["sem_ids"], batch["sem_prob"] = random_topk(b, vocab.size, cfg.loss.semantic_k)
    if semantic_path:           # the backbone's head input of both views and a teacher word per top position
        grid = model_config(cfg).grid
        positions = sum((grid // int(st)) ** 2 for st in cfg.model.strides[:cfg.model.semantic_layers])
        batch["sem_feat"] = rng.normal(size=(b, 2, cfg.model.semantic_features)).astype(np.float32)
        batch["sem_rows"] = rng.integers(0, vocab.size, (b, positions)).astype(np.int32)
    batch = trainlib.shard_batch(batch, mesh)
    flops = jaxpr_flops(fn.make_jaxpr(batch).jaxpr, platform or jax.devices()[0].platform)
    row = {"config": os.path.basename(config), "overrides": list(overrides), "batch": b, "image": s,
           "vocab": vocab.size, "gflop_per_step": flops / 1e9}
    if step_s is None:
        compiled = fn.lower(batch).compile()         # compiled once: timed as is
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        row["xla_gflop_per_step"] = float(cost.get("flops", 0.0)) / 1e9   # for comparison only

        def run():
            fn.train, metrics = compiled(fn.train, fn.frozen, batch)
            return metrics

        jax.block_until_ready(run())
        t = time.perf_counter()
        for _ in range(steps):
            m = run()
        jax.block_until_ready(m)
        step_s = (time.perf_counter() - t) / steps
    row.update(step_s=step_s, achieved_gflops=flops / step_s / 1e9, mfu=flops / step_s / 1e9 / peak)
    return row


def write_report(res: dict, out: str) -> str:
    """Write OUT.md / OUT.json from what has been measured so far; returns the markdown."""
    peak, dtype = res["matmul_peak_gflops"], res["dtype"]
    lines = [f"Device {res['device']} (jax {res['jax']}), {dtype}; matmul peak {peak:.1f} GFLOP/s "
             f"({res['matmul_n']}^3).", "",
             "| quantizer | per-chunk reduction | tokens | vocab x d | GFLOP/s | % of peak |",
             "|---|---|---|---|---|---|"]
    for q in res["quantizer"]:
        search = "SAQ search, fused kernel" if q["chunk"] is None else f"SAQ search (chunk_size {q['chunk']})"
        if "error" in q:
            lines.append(f"| {search} | {q['reduction']} | {q['tokens']} | {q['vocab']} x {q['dim']} | "
                         f"failed: {q['error'][:120]} ||")
            continue
        lines.append(f"| {search} | {q.get('reduction', 'argmin')} | {q['tokens']} | "
                     f"{q['vocab']} x {q['dim']} | {q['gflops']:.1f} | {100 * q['frac_peak']:.0f}% |")
    if res.get("entropy"):
        lines += ["", "Usage-entropy term (loss.entropy), value and gradient: spae.losses.usage_entropy_loss "
                  "as one (N, V) block with autodiff (plain) against its default row block (fewer rows than "
                  "positions: blocks with a hand-written gradient; on a CPU for a table of at most 16 MB).", "",
                  "| positions | vocab x d | default row block | plain s | default s | speed-up |",
                  "|---|---|---|---|---|---|"]
        for e in res["entropy"]:
            lines.append(f"| {e['positions']} | {e['vocab']} x {e['dim']} | {e['rows']} | {e['plain_s']:.3f} | "
                         f"{e['default_s']:.3f} | {e['plain_s'] / e['default_s']:.2f}x |")
    if res.get("saq"):
        lines += ["", "Whole SAQ pyramid, forward, one batch of the config's latent (random z and table of its "
                  "vocabulary and search width), per-chunk reduction auto against argmin:", "",
                  "| config | latent | tokens | vocab | auto s | argmin s | speed-up |", "|---|---|---|---|---|---|---|"]
        for q in res["saq"]:
            lines.append(f"| {q['config']} | {'x'.join(map(str, q['latent']))} | {q['tokens']} | {q['vocab']} | "
                         f"{q['auto_s']:.4f} | {q['argmin_s']:.4f} | {q['argmin_s'] / q['auto_s']:.2f}x |")
    if res["steps"]:
        lines += ["", "Step FLOPs: matmuls and convolutions counted from the step's jaxpr (eval.flops); "
                  "MFU = those FLOPs / step time / matmul peak."]
        if "timings_from" in res:
            lines += [f"Times, peak and quantizer rows measured on the device above ({res['timings_from']}); "
                      f"FLOPs counted from the same program on {jax.devices()[0].platform}."]
        lines += ["", "| train step | batch | image | vocab | s/step | GFLOP/step | MFU |", "|---|---|---|---|---|---|---|"]
        for s in res["steps"]:
            if "error" in s:
                lines.append(f"| {s['config']} | failed: {s['error'][:120]} |||||")
                continue
            lines.append(f"| {s['config']} | {s['batch']} | {s['image']} | {s['vocab']} | {s['step_s']:.3f} | "
                         f"{s['gflop_per_step']:.1f} | {100 * s['mfu']:.0f}% |")
    md = "\n".join(lines) + "\n"
    write_md_json(out, md, res)
    return md


@cli_main
def main(argv=None):
    from spae.quantizer import SEARCHES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--vocab", type=int, nargs="+", default=[49152, 262144])
    p.add_argument("--dim", type=int, nargs="+", default=[576, 640])
    p.add_argument("--chunk", type=int, nargs="+", default=[8192], help="vocabulary chunk sizes to sweep")
    p.add_argument("--reduction", nargs="+", default=["auto", "argmin"], choices=SEARCHES,
                   help="per-chunk best-code reductions to time (spae.quantizer.chunk_best; auto: the "
                        "platform's default, min_index on a CPU, argmin elsewhere), or fused: the Pallas "
                        "kernel of spae.fused_search, once per --fused-plan (a GPU kernel; interpreted, "
                        "and slow, elsewhere)")
    p.add_argument("--fused-plan", nargs="+", default=["128x128x64,w8,s3"],
                   help="tile plans of the fused kernel: block_n x block_v x block_d, warps, stages "
                        "(spae.fused_search.FusedPlan.parse)")
    p.add_argument("--matmul", type=int, default=2048)
    p.add_argument("--entropy", type=int, nargs="*", default=[32, 576], metavar="D",
                   help="code widths of the usage-entropy rows (21,163 words, 680 positions: the "
                        "fmnist32 pyramid of batch 8); none to skip")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--set", action="append", default=[], help="override for the --config runs")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", default="eval_out/bench_spae")
    p.add_argument("--timings", help="a bench JSON measured elsewhere (an accelerator): keep its peak, "
                   "quantizer rows and step times, and count the step FLOPs here (no timing is run)")
    add_debug_flag(p)
    args = p.parse_args(argv)
    if args.timings:
        with open(args.timings) as f:
            timed = json.load(f)
        res = {k: timed[k] for k in ("device", "dtype", "jax", "matmul_n", "matmul_peak_gflops", "quantizer")}
        res.update(steps=[], timings_from=args.timings)
        peak = res["matmul_peak_gflops"]
        step_times = {row["config"]: row["step_s"] for row in timed["steps"] if "step_s" in row}
        missing = [os.path.basename(c) for c in args.config if os.path.basename(c) not in step_times]
        if missing:
            raise ValueError(f"{args.timings} has no step time for {missing}; it has {sorted(step_times)}: "
                             "pass only those --config files, or time the others there first")
    else:
        from spae.fused_search import FusedPlan
        from spae.quantizer import search_plan

        plans = [FusedPlan.parse(t) for t in args.fused_plan]
        dtype = jnp.dtype(args.dtype)
        dev = jax.devices()[0]
        res = {"device": f"{dev.platform}:{dev.device_kind} x{len(jax.devices())}", "dtype": args.dtype,
               "jax": jax.__version__, "matmul_n": args.matmul, "quantizer": [], "steps": []}
        res["matmul_peak_gflops"] = peak = matmul_peak(args.matmul, dtype)
        print(f"matmul peak {peak:.1f} GFLOP/s", flush=True)
        for v, d in zip(args.vocab, args.dim):
            runs = [(chunk, red, None) for chunk in args.chunk for red in args.reduction if red != "fused"]
            runs += [(None, "fused", plan) for plan in plans if "fused" in args.reduction]
            for chunk, red, plan in runs:
                if red == "fused":
                    label = f"fused {plan.label()}"
                else:
                    c, form = search_plan(args.tokens, v, chunk, red, dev.platform)
                    label = f"auto: {form}, chunk {c}" if red == "auto" else red
                row = {"tokens": args.tokens, "vocab": v, "dim": d, "chunk": chunk, "reduction": label}
                try:
                    g = quantizer_gflops(args.tokens, v, d, chunk, dtype, red, plan)
                    row.update(gflops=g, frac_peak=g / peak)
                except Exception as e:             # e.g. a tile plan the GPU compiler refuses: keep the rest
                    if red != "fused":
                        raise
                    row["error"] = f"{type(e).__name__}: {e}"[:300]
                res["quantizer"].append(row)
                print(f"quantizer {v} x {d} chunk {chunk} {label}: "
                      f"{row.get('error') or format(row['gflops'], '.1f') + ' GFLOP/s'}", flush=True)
                write_report(res, args.out)
        res["entropy"] = []
        for d in args.entropy:
            res["entropy"].append(entropy_times(680, 21163, d))
            print(f"entropy {res['entropy'][-1]}", flush=True)
            write_report(res, args.out)
    if not args.timings:
        res["saq"] = []
        for c in args.config:
            res["saq"].append(saq_times(c, args.set))
            print(f"saq {res['saq'][-1]}", flush=True)
            write_report(res, args.out)
    for c in args.config:
        step_s = step_times[os.path.basename(c)] if args.timings else None
        try:
            platform = res["device"].split(":")[0]          # the timed device's platform ("cpu", "gpu", ...)
            res["steps"].append(step_mfu(c, peak, args.set, args.steps, step_s, platform))
        except Exception as e:                     # e.g. out of memory: keep the other rows
            res["steps"].append({"config": os.path.basename(c), "error": f"{type(e).__name__}: {e}"[:300]})
        print(f"step {res['steps'][-1]}", flush=True)
        write_report(res, args.out)
    print(write_report(res, args.out))


if __name__ == "__main__":
    main()
