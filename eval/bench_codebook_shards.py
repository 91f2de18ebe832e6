"""Time the nearest-code search with the codebook split over 1, 2, 4 vocabulary shards.

    python -m eval.bench_codebook_shards [--tokens 1024] [--vocab 49152 262144] [--dim 64 64]
                                         [--shards 1 2 4] [--repeats 5] [--out eval_out/bench_codebook_shards]

One jitted search of N latents against a random V x D table (the cost does not depend on the
values): 1 shard is `spae.quantizer.nearest_code` on one device; M shards is
`sharded_nearest_code` on a model=M mesh (`backbones.mesh`), the table placed row-sharded, each
shard searching V/M rows and two pmin reductions over "model" picking the winner. Every shard count
runs in a fresh subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=M (the flag is
read once, when jax is imported). Printed: best-of-`repeats` milliseconds and the ratio to 1 shard.

On a CPU the simulated devices share this machine's cores (2 here): M shards do the same total work
on the same cores, so the ratio measures the overhead of splitting (per-shard dispatch, the two
reductions, smaller blocks), not a speedup. On M real accelerators each shard has its own chip and
its own memory for a V/M slice of the table, which is what the split is for.
Not a test: the numbers depend on the machine and its load; the JSON records the device.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from backbones.cli_errors import add_debug_flag, cli_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def time_search(tokens: int, vocab: int, dim: int, shards: int, repeats: int) -> dict:
    """In this process (which must see `shards` devices): best-of-`repeats` seconds of one search."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P

    from backbones.mesh import make_mesh
    from spae.quantizer import nearest_code, sharded_nearest_code

    rng = np.random.default_rng(0)
    x = rng.normal(size=(tokens, dim)).astype(np.float32)
    cb = rng.normal(size=(vocab, dim)).astype(np.float32)
    if shards == 1:
        fn = jax.jit(nearest_code)
        x, cb = jax.device_put(x), jax.device_put(cb)
    else:
        mesh = make_mesh(data=1, model=shards)
        fn = jax.jit(lambda x, cb: sharded_nearest_code(x, cb, mesh))
        x = jax.device_put(x, NamedSharding(mesh, P()))
        pad = -vocab % shards                       # the search pads the same way; placed here once
        cb = jax.device_put(np.pad(cb, ((0, pad), (0, 0))) if pad else cb, NamedSharding(mesh, P("model", None)))
    ids = jax.block_until_ready(fn(x, cb))         # compile + warm up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(x, cb))
        best = min(best, time.perf_counter() - t)
    dev = jax.devices()[0]
    return {"tokens": tokens, "vocab": vocab, "dim": dim, "shards": shards, "seconds": best,
            "device": f"{dev.platform}:{dev.device_kind} x{len(jax.devices())}",
            "ids_checksum": int(np.asarray(ids, np.int64).sum())}


def run_one(tokens: int, vocab: int, dim: int, shards: int, repeats: int) -> dict:
    """time_search in a fresh subprocess that sees `shards` simulated CPU devices."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={shards}")
    cmd = [sys.executable, "-m", "eval.bench_codebook_shards", "--worker", "--tokens", str(tokens),
           "--vocab", str(vocab), "--dim", str(dim), "--shards", str(shards), "--repeats", str(repeats)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the {shards}-shard run failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| tokens | V x D | shards | search ms | / 1 shard |", "|---:|---|---:|---:|---:|"]
    one = {(r["vocab"], r["dim"]): r["seconds"] for r in rows if r["shards"] == 1}
    for r in rows:
        base = one.get((r["vocab"], r["dim"]))
        ratio = f"{r['seconds'] / base:.2f}" if base else "-"
        lines.append(f"| {r['tokens']} | {r['vocab']:,} x {r['dim']} | {r['shards']} | "
                     f"{1e3 * r['seconds']:.1f} | {ratio} |")
    return "\n".join(lines) + "\n"


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--vocab", type=int, nargs="+", default=[49152, 262144])
    p.add_argument("--dim", type=int, nargs="+", default=[64, 64], help="one per --vocab")
    p.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None, help="also write OUT.md and OUT.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)   # one timing, in this process
    add_debug_flag(p)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(time_search(args.tokens, args.vocab[0], args.dim[0], args.shards[0], args.repeats)))
        return None
    if len(args.dim) != len(args.vocab):
        raise ValueError(f"give one --dim per --vocab; got {len(args.vocab)} vocabularies and {len(args.dim)} widths")
    if any(m < 1 for m in args.shards):
        raise ValueError(f"--shards must be positive; got {args.shards}")
    rows = []
    for v, d in zip(args.vocab, args.dim):
        for m in args.shards:
            rows.append(run_one(args.tokens, v, d, m, args.repeats))
            print(f"{v} x {d}, {m} shard(s): {1e3 * rows[-1]['seconds']:.1f} ms", file=sys.stderr, flush=True)
    for v, d in zip(args.vocab, args.dim):
        sums = {r["ids_checksum"] for r in rows if (r["vocab"], r["dim"]) == (v, d)}
        if len(sums) != 1:
            raise RuntimeError(f"{v} x {d}: the shard counts found different ids (checksums {sorted(sums)})")
    md = table(rows)
    print(md, end="")
    if args.out:
        from eval.report import write_md_json

        write_md_json(args.out, md, {"rows": rows})
    return md


if __name__ == "__main__":
    main()
