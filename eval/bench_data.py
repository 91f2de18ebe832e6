"""Benchmark: how fast the data package makes and serves data on this machine.

    python -m eval.bench_data [--n 2000] [--repeats 3]

Prints a markdown table: synthetic-scene generation (images/s, with captions and QA) at 32, 64
and 128 px on plain and photo backgrounds, the share of time spent drawing pixels vs sampling
graphs vs writing text, the ArrayLoader's batches/s, and Fashion-MNIST's first load time.
Each figure is the best of --repeats runs (wall clock, one process).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from backbones.cli_errors import add_debug_flag, cli_main


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


@cli_main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="images per scene measurement")
    p.add_argument("--repeats", type=int, default=3)
    add_debug_flag(p)
    a = p.parse_args(argv)

    from visiondata import fashion_mnist, photos, scene_text, scenes
    from visiondata.pipeline import ArrayLoader

    photos.load(64)  # read the photo files once, outside the timings
    rows = []
    for size in (32, 64, 128):
        for bg in ("plain", "photo"):
            dt = best_of(lambda: scenes.generate(a.n, size=size, seed=0, background=bg), a.repeats)
            rows.append((f"scenes.generate, {size}px, {bg} background", f"{a.n / dt:,.0f} images/s"))

    graphs = []
    dt_graph = best_of(lambda: graphs.__setitem__(slice(None), [scenes.sample_graph(0, "train", i) for i in range(a.n)]),
                       a.repeats)
    dt_draw = best_of(lambda: scenes.render_graphs(graphs, 64), a.repeats)

    def text():
        rng = np.random.default_rng(0)
        for g in graphs:
            scene_text.captions(g, rng)
            scene_text.questions(g, rng, scenes.COLORS, scenes.SHAPES)

    dt_text = best_of(text, a.repeats)
    rows.append(("  of which: scene graphs (64px, plain)", f"{a.n / dt_graph:,.0f} graphs/s"))
    rows.append(("  of which: drawing pixels", f"{a.n / dt_draw:,.0f} images/s"))
    rows.append(("  of which: captions + QA", f"{a.n / dt_text:,.0f} images/s"))

    x = np.zeros((10_000, 64, 64, 3), np.uint8)
    y = np.zeros(10_000, np.int64)
    loader = ArrayLoader({"image": x, "label": y}, batch_size=128, seed=0)
    steps = 500
    dt = best_of(lambda: [next(loader) for _ in range(steps)], a.repeats)
    rows.append(("ArrayLoader, 128 x 64x64x3 uint8 per batch", f"{steps / dt:,.0f} batches/s"))

    try:
        fashion_mnist._load_cached.cache_clear()
        t = time.perf_counter()
        fashion_mnist.load("train")
        rows.append(("fashion_mnist.load('train'), first call", f"{time.perf_counter() - t:.2f} s"))
    except Exception as e:  # data not installed: say so, keep the other figures
        rows.append(("fashion_mnist.load('train')", f"unavailable ({type(e).__name__})"))

    print(f"| measurement (n={a.n}, best of {a.repeats}) | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
