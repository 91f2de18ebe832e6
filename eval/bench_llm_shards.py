"""Benchmark: frozen-LLM scoring throughput against the number of 'data' shards.

    python -m eval.bench_llm_shards [--shards 1,2,4] [--queries 8] [--repeats 5] [--out runs/bench_llm_shards]

One few-shot-like `score_batch` call, as eval.fewshot makes them: a shared prefix (an instruction
and 8 labelled support examples, 157 tokens) read once, --queries query texts (~13 tokens each)
extending it as one batch, and 4 one-token label candidates scored after every query: 292 tokens a
call with 8 queries. SmolLM2-135M in fp32 is loaded with
`load_llm(mesh=make_mesh(data=n, model=1))` for each n of --shards, each in a fresh subprocess with
n simulated CPU devices (XLA fixes the device count when it starts); the queries and candidate
rows split over 'data', the prefix (one row) runs whole on every device. The n=1 process also
times the model without a mesh, the path every other caller takes.

Tokens/s counts the real (unpadded) tokens one call reads: the prefix, each query, and every
candidate after every query. Each figure is the best of --repeats calls after one untimed call that
compiles. Ratios are to 1 shard.

On a machine with few cores the simulated devices share them, and XLA's CPU backend already spreads
one device's work over the cores, so no speed-up is possible here; the figure falls below 1x
because the one-row prefix (over half of the tokens) cannot split over 'data' and is computed whole
by every shard, n times the work on the same cores, plus the copies between devices. Measured on
the 2-core machine (loaded by other jobs): 1.00x, 0.53x, 0.41x for 1, 2, 4 shards; the plain
no-mesh model 1.05-1.26x across runs, noise of the shared machine (the same call timed alternately
in one quiet process: 1.23 s plain, 1.03 s on a 1-device mesh, best of 8). The bench shows that the data axis is used and what it costs; a speed-up needs
devices with their own compute (GPUs, TPU cores, hosts), and a long shared prefix gains from the
'model' axis, not from 'data'.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from backbones.cli_errors import add_debug_flag, cli_main

INSTRUCTION = "Label the sentiment of each review as positive, negative, neutral or mixed.\n\n"
SUPPORT = [("The food was wonderful and the staff were kind.", "positive"),
           ("Cold soup, rude waiter, never again.", "negative"),
           ("It was a restaurant. We ate there.", "neutral"),
           ("Great view, but the prices were absurd.", "mixed"),
           ("I loved every minute of the concert.", "positive"),
           ("The battery died after two days.", "negative"),
           ("The package arrived on Tuesday.", "neutral"),
           ("Comfortable shoes that fell apart within a month.", "mixed")]
QUERIES = ["The hotel room was spotless and quiet.", "My order was wrong twice.", "The bus leaves at nine.",
           "Tasty pizza, slow delivery.", "Best book I read this year.", "The screen cracked on day one.",
           "The meeting is in room four.", "Friendly host, noisy street.", "An absolute joy to use.",
           "Customer service hung up on me.", "The store opens at ten.", "Lovely garden, broken fountain.",
           "Five stars, would buy again.", "The app crashes constantly.", "It is a blue car.",
           "Cheap, but it works."]
LABELS = [" positive", " negative", " neutral", " mixed"]


def episode(llm, queries: int):
    """(prefix ids, query ids, candidate ids, real tokens per call) of one few-shot call."""
    prefix = llm.encode(INSTRUCTION + "".join(f"Review: {t}\nSentiment: {y}\n\n" for t, y in SUPPORT))
    qs = [llm.encode(f"Review: {QUERIES[i % len(QUERIES)]}\nSentiment:") for i in range(queries)]
    cands = [llm.encode(c) for c in LABELS]
    tokens = len(prefix) + sum(len(q) for q in qs) + len(qs) * sum(len(c) for c in cands)
    return prefix, qs, cands, tokens


def time_calls(llms: list, args, repeats: int) -> list[float]:
    """Best seconds per call of each model, their calls interleaved (this machine's speed drifts)."""
    prefix, qs, cands, _ = args
    for llm in llms:
        llm.score_batch(prefix, qs, cands)                   # compiles
    best = [float("inf")] * len(llms)
    for _ in range(repeats):
        for i, llm in enumerate(llms):
            t = time.perf_counter()
            llm.score_batch(prefix, qs, cands)
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def worker(n: int, queries: int, repeats: int) -> dict:
    """In a process started with n simulated devices: seconds per call with and without a mesh."""
    import jax
    import numpy as np

    from backbones import load_llm
    from backbones.mesh import make_mesh

    assert len(jax.devices()) == n, jax.devices()
    llm = load_llm("smollm2-135m", weights="fp32", mesh=make_mesh(data=n, model=1))
    args = episode(llm, queries)
    out = {"shards": n, "tokens": args[3], "prefix_tokens": len(args[0])}
    if n == 1:
        plain = load_llm("smollm2-135m", weights="fp32")
        out["mesh_s"], out["plain_s"] = time_calls([llm, plain], args, repeats)
        a, b = plain.score_batch(*args[:3]), llm.score_batch(*args[:3])
        out["max_diff"] = float(np.abs(a - b).max())
    else:
        out["mesh_s"], = time_calls([llm], args, repeats)
    return out


def run_worker(n: int, queries: int, repeats: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-m", "eval.bench_llm_shards", "--worker", str(n), "--queries",
                           str(queries), "--repeats", str(repeats)], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"the {n}-shard run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def to_markdown(rows: list[dict], command: str, tokens: int, prefix: int) -> str:
    base = next(r for r in rows if r["shards"] == 1 and r["mesh"] == "data=1")["tokens_per_s"]
    lines = ["| data shards | mesh | score_batch s | tokens/s | ratio to 1 shard |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['shards']} | {r['mesh']} | {r['seconds']:.3f} | {r['tokens_per_s']:.0f} | "
                     f"{r['tokens_per_s'] / base:.2f}x |")
    lines += ["", f"Each call reads {tokens} tokens, {prefix} of them the one-row prefix that every shard "
                  "computes whole.",
              "", f"Command: `{command}` (one run; best of the repeats; the simulated CPU devices share this "
                  f"machine's {os.cpu_count()} cores, so no speed-up is possible here)."]
    return "\n".join(lines)


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", default="1,2,4", help="numbers of data shards (each must divide --queries)")
    p.add_argument("--queries", type=int, default=8, help="queries per call")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    add_debug_flag(p)
    args = p.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.queries, args.repeats)))
        return
    shards = [int(s) for s in args.shards.split(",") if s.strip()]
    if 1 not in shards or any(n < 1 or args.queries % n for n in shards):
        raise ValueError(f"--shards {args.shards}: include 1, and each must divide --queries={args.queries}")
    rows = []
    for n in shards:
        r = run_worker(n, args.queries, args.repeats)
        tokens, prefix = r["tokens"], r["prefix_tokens"]
        if n == 1:
            rows.append(dict(shards=1, mesh="none", seconds=r["plain_s"], tokens_per_s=r["tokens"] / r["plain_s"]))
            print(f"1 shard: sharded and plain scores differ by at most {r['max_diff']:.2e}", file=sys.stderr)
        rows.append(dict(shards=n, mesh=f"data={n}", seconds=r["mesh_s"], tokens_per_s=r["tokens"] / r["mesh_s"]))
    rows.sort(key=lambda r: (r["shards"], r["mesh"] != "none"))
    command = "python -m eval.bench_llm_shards" + (f" --shards {args.shards}" if args.shards != "1,2,4" else "") + \
        (f" --queries {args.queries}" if args.queries != 8 else "")
    md = to_markdown(rows, command, tokens, prefix)
    print(md)
    if args.out:
        from eval.report import write_md_json

        write_md_json(args.out, md, {"rows": rows, "queries": args.queries, "repeats": args.repeats})
        print(f"wrote {args.out}.md")


if __name__ == "__main__":
    main()
