"""Collect few-shot / VQA summaries into one markdown table and a plot.

    python -m eval.report --runs runs/h2h --out runs/h2h/report

Reads every `summary.json` under --runs (written by `python -m eval.fewshot` and
`python -m eval.fewshot_vqa`), writes REPORT.md (method × setting, mean ± 95% CI over episodes)
and layers.png (accuracy against the number of SPAE layers per image, beside the other methods).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
from collections import defaultdict

from backbones.cli_errors import add_debug_flag, cli_main

METHOD_ORDER = ["spae", "spae_labels", "spae_nosem", "lqae", "lens", "lens_captions", "random", "text_only"]


def write_md_json(out: str, md: str, res) -> str:
    """Write a result table to OUT.md and its data to OUT.json (folders made as needed); returns md."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".md", "w") as f:
        f.write(md)
    with open(out + ".json", "w") as f:
        json.dump(res, f, indent=1)
    return md


def load_summaries(root: str) -> list[dict]:
    out = []
    for path in sorted(glob.glob(os.path.join(root, "**", "summary.json"), recursive=True)):
        with open(path) as f:
            s = json.load(f)
        s["_dir"] = os.path.dirname(path)
        out.append(s)
    if not out:
        raise FileNotFoundError(f"no summary.json under {root}; pass --runs the --out folder of "
                                "eval.fewshot / eval.headtohead runs")
    return out


def setting_of(s: dict) -> str:
    if s.get("task") == "vqa":
        return f"{s['dataset']}/{s['split']} VQA {s.get('shots', 0)}-shot"
    source = s["dataset"] + (f"->{s['query_dataset']}" if s.get("query_dataset") else "")
    return f"{source} {s['ways']}-way {s['shots']}-shot"


def row_of(s: dict) -> str:
    name = s.get("label") or s["method"]
    if s["method"] in ("spae", "random") and s.get("layers"):
        name += f" ({s['layers']} layer{'s' if s['layers'] > 1 else ''})"
    return name


def _row_key(row: str):
    base = row.split(" ")[0]
    return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), row)


def markdown_table(summaries: list[dict], key: str = "accuracy") -> str:
    cells: dict = defaultdict(dict)
    settings = []
    for s in summaries:
        if key not in s:
            continue
        st = setting_of(s)
        if st not in settings:
            settings.append(st)
        cells[row_of(s)][st] = f"{100 * s[key]:.1f} ± {100 * s[key.replace('accuracy', 'ci95')]:.1f}"
    lines = ["| method | " + " | ".join(settings) + " |", "|---" * (len(settings) + 1) + "|"]
    for row in sorted(cells, key=_row_key):
        lines.append(f"| {row} | " + " | ".join(cells[row].get(st, "–") for st in settings) + " |")
    return "\n".join(lines)


def layers_plot(summaries: list[dict], path: str) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted({setting_of(s) for s in summaries if s["method"] == "spae" and s.get("layers")
                       and not s.get("task")})
    if not settings:
        return False
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.4), squeeze=False)
    for ax, st in zip(axes[0], settings):
        for method, style in (("spae", "o-"), ("random", "s--"), ("spae_nosem", "^-")):
            pts = sorted((s["layers"], s["accuracy"], s["ci95"]) for s in summaries
                         if (s.get("label") or s["method"]) == method and setting_of(s) == st and s.get("layers"))
            if pts:
                x, y, e = zip(*pts)
                ax.errorbar(x, [100 * v for v in y], yerr=[100 * v for v in e], fmt=style, capsize=3, label=method)
        for s in summaries:
            if setting_of(s) == st and (s.get("label") or s["method"]) in ("lens", "lqae"):
                ax.axhline(100 * s["accuracy"], ls=":", color="C3" if s["method"] == "lens" else "C4",
                           label=s["method"])
        ways = next((s.get("ways") for s in summaries if setting_of(s) == st), None)
        if ways:
            ax.axhline(100 / ways, color="gray", lw=0.8, label="chance")
        ax.set_title(st, fontsize=9)
        ax.set_xlabel("SPAE layers per image")
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


@cli_main
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m eval.report", description=__doc__.split("\n")[0])
    ap.add_argument("--runs", required=True, help="directory searched for summary.json files")
    ap.add_argument("--out", required=True, help="output directory for REPORT.md and layers.png")
    add_debug_flag(ap)
    args = ap.parse_args(argv)
    summaries = load_summaries(args.runs)
    os.makedirs(args.out, exist_ok=True)
    parts = ["## Closed-form accuracy (%, argmax of llm.score over the labels; mean ± 95% CI over episodes)",
             "", markdown_table(summaries, "accuracy"), ""]
    if any("open_accuracy" in s for s in summaries):
        parts += ["## Open-ended accuracy (%, greedy answer equals the label)", "",
                  markdown_table(summaries, "open_accuracy"), ""]
    if layers_plot(summaries, os.path.join(args.out, "layers.png")):
        parts += ["![accuracy vs SPAE layers](layers.png)", ""]
    parts += ["Runs:", ""] + [f"- `{os.path.relpath(s['_dir'])}`: {s.get('command', '')}" for s in summaries]
    with open(os.path.join(args.out, "REPORT.md"), "w") as f:
        f.write("\n".join(parts) + "\n")
    print("\n".join(parts[:3]))
    print(f"wrote {os.path.join(args.out, 'REPORT.md')}")


if __name__ == "__main__":
    main()
