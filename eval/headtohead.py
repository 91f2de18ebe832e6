"""The whole head-to-head in one command: episode files, every method on every setting, the report.

    python -m eval.headtohead --out runs/h2h --episodes 200 \
        --spae spae/pretrained/fmnist32 --spae-nosem runs/spae_fmnist32_nosem/export \
        --lqae runs/lqae_fmnist32/export [--scenes-spae DIR] [--scenes-lqae DIR] [--layers 2] [--sweep 1,2,3,4]

Episodes are sampled once per setting (seed 0) into OUT/episodes/*.csv and every method reads the
same file. Each run is `python -m eval.fewshot ...` (its exact command is stored in its
summary.json); runs whose summary.json covers every episode of the file are skipped, so a killed
run resumes where it stopped, and several drivers started side by side share the runs. Asking for
more episodes than a file holds extends it (sampling is sequential, so the first episodes stay
the same) and each run scores only the new episodes. At the end `python -m eval.report --runs OUT --out OUT/report` writes REPORT.md and the
layers plot. Methods whose checkpoint is not given are left out (and the report says nothing of them).
"""
from __future__ import annotations

import argparse
import json
import os
import re

import numpy as np

from backbones.cli_errors import add_debug_flag, cli_main

FMNIST_SETTINGS = [(2, 1), (5, 1), (5, 3), (5, 5)]     # (ways, shots), one query per class


def plan(args) -> list[tuple[str, list[str]]]:
    """(run directory, eval.fewshot / eval.fewshot_vqa argv) for every run of the head-to-head."""
    runs = []
    ep_dir = os.path.join(args.out, "episodes")
    settings = [("fashion_mnist", "test", w, s) for w, s in FMNIST_SETTINGS]
    if args.scenes_spae:
        settings.append(("scenes", "test", 5, 1))
    for dataset, split, ways, shots in settings:
        name = f"{dataset}_{ways}w{shots}s"
        eps = os.path.join(ep_dir, f"{name}.csv")
        spae_dir = args.scenes_spae if dataset == "scenes" else args.spae
        common = ["--episodes", eps] + ([] if args.open_ended else ["--no-open-ended"])
        methods = [("spae", ["--method", "spae", "--layers", str(args.layers)] + _tok(spae_dir)),
                   ("random", ["--method", "random", "--layers", str(args.layers)] + _tok(spae_dir)),
                   ("lens", ["--method", "lens"])]
        lqae_dir = args.scenes_lqae if dataset == "scenes" else args.lqae
        if lqae_dir:
            methods.append(("lqae", ["--method", "lqae", "--tokenizer", lqae_dir]))
        if dataset == "fashion_mnist" and shots == 1:
            for extra in args.spae_extra:
                name_, dir_ = extra.split("=", 1)
                methods.append((name_, ["--method", "spae", "--name", name_, "--layers", str(args.layers),
                                        "--tokenizer", dir_]))
        if args.spae_nosem and dataset == "fashion_mnist" and shots == 1:
            methods.append(("spae_nosem", ["--method", "spae", "--name", "spae_nosem", "--layers", str(args.layers),
                                           "--tokenizer", args.spae_nosem]))
        if (ways, shots) == (2, 1) and dataset == "fashion_mnist":
            for k in args.sweep:
                if k != args.layers:
                    methods.append((f"spae_L{k}", ["--method", "spae", "--layers", str(k)] + _tok(spae_dir)))
                    methods.append((f"random_L{k}", ["--method", "random", "--layers", str(k)] + _tok(spae_dir)))
                    if args.spae_nosem:
                        methods.append((f"spae_nosem_L{k}", ["--method", "spae", "--name", "spae_nosem", "--layers",
                                                             str(k), "--tokenizer", args.spae_nosem]))
        for mname, margs in methods:
            out = os.path.join(args.out, name, mname)
            runs.append((out, ["fewshot"] + margs + common + ["--out", out]))
    if args.scenes_spae:
        for split in ("test", "heldout"):
            for mname, margs in [("spae", ["--method", "spae", "--layers", str(args.layers), "--tokenizer",
                                           args.scenes_spae]),
                                 ("random", ["--method", "random", "--layers", str(args.layers), "--tokenizer",
                                             args.scenes_spae]),
                                 ("lens", ["--method", "lens"]), ("text_only", ["--method", "text_only"])]:
                out = os.path.join(args.out, f"scenes_vqa_{split}", mname)
                runs.append((out, ["fewshot_vqa"] + margs + ["--split", split, "--questions", str(args.vqa_questions),
                                                              "--shots", "2", "--out", out]))
    return runs


def _claim(out: str) -> bool:
    """Claim a run for this process (so several drivers can share the work); False if a live
    process holds it. A claim left by a killed process is taken over."""
    path = out + ".claim"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        try:
            os.kill(int(open(path).read().strip() or 0), 0)
            return False
        except (ValueError, ProcessLookupError, PermissionError):
            pass
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    return True


def _tok(directory):
    return ["--tokenizer", directory] if directory else []


def make_episodes(args) -> None:
    from visiondata import episodes

    ep_dir = os.path.join(args.out, "episodes")
    os.makedirs(ep_dir, exist_ok=True)
    settings = [("fashion_mnist", w, s) for w, s in FMNIST_SETTINGS] + ([("scenes", 5, 1)] if args.scenes_spae else [])
    for dataset, ways, shots in settings:
        path = os.path.join(ep_dir, f"{dataset}_{ways}w{shots}s.csv")
        n = args.episodes if shots == 1 else args.episodes_multishot
        old = episodes.read_csv(path) if os.path.exists(path) else []
        if len(old) >= n:
            continue
        tmp = path + ".new.csv"
        episodes.main(["--dataset", dataset, "--split", "test", "--ways", str(ways), "--shots", str(shots),
                       "--queries", "1", "--episodes", str(n), "--seed", "0", "--out", tmp])
        if any(not same_episode(a, b) for a, b in zip(old, episodes.read_csv(tmp))):
            os.remove(tmp)
            raise ValueError(f"{path}: {n} freshly sampled episodes do not start with the file's {len(old)}; "
                             "give a fresh --out to start over")
        os.replace(tmp, path)


def same_episode(a, b) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k))
               for k in ("classes", "support", "support_labels", "query", "query_labels"))


def is_done(out: str, argv_: list[str]) -> bool:
    """A run is done when its summary exists and, for few-shot runs, covers its whole episode file."""
    path = os.path.join(out, "summary.json")
    if not os.path.exists(path):
        return False
    if argv_[0] != "fewshot":
        return True
    from visiondata import episodes

    with open(path) as f:
        have = json.load(f)["episodes"]
    return have >= len(episodes.read_csv(argv_[argv_.index("--episodes") + 1]))


@cli_main
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m eval.headtohead", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--episodes", type=int, default=200, help="episodes per 1-shot setting")
    ap.add_argument("--episodes-multishot", type=int, default=200, help="episodes per 3- and 5-shot setting")
    ap.add_argument("--spae", default=None, help="SPAE checkpoint (default: the shipped Fashion-MNIST one)")
    ap.add_argument("--spae-nosem", default=None, help="SPAE trained without the semantic loss (ablation)")
    ap.add_argument("--spae-extra", action="append", default=[], metavar="NAME=DIR",
                    help="another SPAE checkpoint as its own row in the 1-shot Fashion-MNIST settings (repeatable)")
    ap.add_argument("--lqae", default=None, help="single-layer, no-semantic checkpoint (lqae config)")
    ap.add_argument("--scenes-spae", default=None, help="SPAE trained on scenes: adds scenes N-way and VQA")
    ap.add_argument("--scenes-lqae", default=None, help="single-layer, no-semantic checkpoint trained on scenes")
    ap.add_argument("--layers", type=int, default=2, help="SPAE layers per image in the main table")
    ap.add_argument("--sweep", default="1,2,3,4", help="layer counts for the plot (Fashion-MNIST 2-way 1-shot)")
    ap.add_argument("--vqa-questions", type=int, default=200)
    ap.add_argument("--open-ended", action="store_true", help="also score greedy open-ended answers (4x slower)")
    ap.add_argument("--only", default=None, help="run only the runs whose directory matches this regex")
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    add_debug_flag(ap)
    args = ap.parse_args(argv)
    args.sweep = [int(k) for k in args.sweep.split(",") if k]
    for extra in args.spae_extra:
        if "=" not in extra:
            ap.error(f"--spae-extra takes NAME=DIR, got {extra!r}")

    # Main comparisons first, then the layer sweep, then the multi-shot settings: a run cut short
    # by time still has the most important rows.
    runs = sorted(plan(args), key=lambda r: (("_L" in os.path.basename(r[0])) + 2 * ("w1s" not in r[0])))
    if args.only:
        runs = [r for r in runs if re.search(args.only, r[0])]
    if args.dry_run:
        for _, argv_ in runs:
            print("python -m eval." + " ".join(argv_))
        return
    make_episodes(args)
    from backbones import load_llm
    from eval import fewshot, fewshot_vqa, report

    llm = load_llm("smollm2-135m")
    for i, (out, argv_) in enumerate(runs):
        if is_done(out, argv_):
            print(f"[{i + 1}/{len(runs)}] done already: {out}")
            continue
        if not _claim(out):
            print(f"[{i + 1}/{len(runs)}] running in another process: {out}")
            continue
        print(f"[{i + 1}/{len(runs)}] python -m eval." + " ".join(argv_), flush=True)
        try:
            (fewshot if argv_[0] == "fewshot" else fewshot_vqa).main(argv_[1:], llm=llm)
        finally:
            os.remove(out + ".claim")
    if args.only:
        return
    report.main(["--runs", args.out, "--out", os.path.join(args.out, "report")])


if __name__ == "__main__":
    main()
