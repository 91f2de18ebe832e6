"""In-context VQA on synthetic scenes with the frozen LLM: the image as SPAE tokens, LENS text, random
tokens, or nothing at all (the LLM without vision).

    python -m eval.fewshot_vqa --method spae --tokenizer CKPT --layers 2 --split test --questions 300 \
        --shots 2 --out DIR [--seed 0]

Each query is (scene image, question); `--shots` other scenes with one of their own QA pairs come
first as worked examples:

    <instruction>\n
    Image: <image ids>\nQuestion: <q>\nAnswer: <a>\n\n      (per worked example)
    Image: <query ids>\nQuestion: <q>\nAnswer:

LENS text here holds tags, attributes and captions (the LENS VQA setup).
Closed-form prediction: argmax of `llm.score` over every answer of that question type seen in the
split (colours, shapes, digits, yes/no, left/right, small/large); open-ended: the greedy answer.
Accuracy is averaged over questions; the 95% CI comes from `eval.fewshot.mean_ci95`. Writes
DIR/results.jsonl and DIR/summary.json like `eval.fewshot`.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict

import numpy as np

from eval.fewshot import make_coder, mean_ci95, write_results
from backbones.cli_errors import add_debug_flag, cli_main

INSTRUCTION = "Answer each question about the image with one word."


class NoImage:
    """The LLM without vision: the image contributes no tokens."""

    name = "text_only"

    def ids(self, images, keys):
        return [[] for _ in keys]


def sample_items(scene_set, n_questions: int, shots: int, seed: int):
    """n queries (image, qa index), each with `shots` worked examples from other images."""
    rng = np.random.default_rng(seed)
    n = len(scene_set)
    items = []
    for img in rng.choice(n, size=n_questions, replace=n_questions > n):
        qa = int(rng.integers(len(scene_set.qa[img])))
        others = rng.choice(np.delete(np.arange(n), img), size=shots, replace=False)
        demos = [(int(o), int(rng.integers(len(scene_set.qa[o])))) for o in others]
        items.append((int(img), qa, demos))
    return items


def build_prompt(llm, demos, query_ids, question) -> list[int]:
    out = llm.encode(INSTRUCTION + "\n")
    for ids, q, a in demos:
        out += llm.encode("Image:") + list(ids) + llm.encode(f"\nQuestion: {q}\nAnswer: {a}\n\n")
    return out + llm.encode("Image:") + list(query_ids) + llm.encode(f"\nQuestion: {question}\nAnswer:")


def run(llm, coder, scene_set, items, open_ended_eval=True, progress=True):
    from tqdm import tqdm

    from eval.fewshot import open_ended

    answers_by_type = defaultdict(set)
    for qas, types in zip(scene_set.qa, scene_set.qa_types):
        for (_, a), t in zip(qas, types):
            answers_by_type[t].add(a)
    answers_by_type = {t: sorted(v) for t, v in answers_by_type.items()}
    needed = sorted({i for img, _, demos in items for i in [img] + [d for d, _ in demos]})
    codes = {}
    for start in range(0, len(needed), 256):
        keys = needed[start:start + 256]
        codes.update(zip(keys, coder.ids(scene_set.images[keys], keys)))
    records = []
    for img, qa, demos in tqdm(items, desc=f"{coder.name} VQA", disable=not progress):
        q, a = scene_set.qa[img][qa]
        qtype = scene_set.qa_types[img][qa]
        demo_triples = [(codes[d], *scene_set.qa[d][j]) for d, j in demos]
        prompt = build_prompt(llm, demo_triples, codes[img], q)
        cands = answers_by_type[qtype]
        scores = llm.score(prompt, [llm.encode(" " + c) for c in cands])
        pred = cands[int(np.argmax(scores))]
        rec = {"image": img, "question": q, "answer": a, "type": qtype, "pred": pred, "correct": pred == a,
               "prompt_tokens": len(prompt)}
        if open_ended_eval:
            text = open_ended(llm, prompt, max_new_tokens=4)
            rec["open_pred"] = text
            rec["open_correct"] = text.lower().strip(" .") == a.lower()
        records.append(rec)
    acc, ci = mean_ci95([r["correct"] for r in records])
    summary = {"task": "vqa", "accuracy": acc, "ci95": ci, "questions": len(records), "episodes": len(records),
               "mean_prompt_tokens": float(np.mean([r["prompt_tokens"] for r in records])),
               "by_type": {t: float(np.mean([r["correct"] for r in records if r["type"] == t]))
                           for t in sorted({r["type"] for r in records})}}
    if open_ended_eval:
        summary["open_accuracy"], summary["open_ci95"] = mean_ci95([r["open_correct"] for r in records])
    return records, summary


@cli_main
def main(argv=None, llm=None) -> dict:
    """Run from the command line; `llm` lets a driver reuse one loaded model across runs."""
    ap = argparse.ArgumentParser(prog="python -m eval.fewshot_vqa", description=__doc__.split("\n")[0])
    ap.add_argument("--method", required=True, choices=["spae", "lqae", "lens", "random", "text_only"])
    ap.add_argument("--split", default="test", choices=["test", "heldout"])
    ap.add_argument("--num-scenes", type=int, default=500, help="scene pool to draw queries and examples from")
    ap.add_argument("--size", type=int, default=64, help="scene image size")
    ap.add_argument("--questions", type=int, default=300)
    ap.add_argument("--shots", type=int, default=2, help="worked examples before each query")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--tokenizer", default=None, help="SPAE checkpoint dir (a scenes-trained one for scenes)")
    ap.add_argument("--llm", default="smollm2-135m")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", default=None, help="row name in reports (default: the method)")
    ap.add_argument("--no-open-ended", action="store_true")
    add_debug_flag(ap)
    args = ap.parse_args(argv)
    command = "python -m eval.fewshot_vqa " + " ".join(sys.argv[1:] if argv is None else argv)

    from backbones import load_llm
    from visiondata import scenes

    scene_set = scenes.generate(args.num_scenes, size=args.size, seed=args.seed, split=args.split)
    llm = llm or load_llm(args.llm)
    coder = NoImage() if args.method == "text_only" else make_coder(args.method, llm, args.layers, args.tokenizer,
                                                                    args.seed, lens_captions=True)
    items = sample_items(scene_set, args.questions, args.shots, args.seed)
    t = time.perf_counter()
    records, summary = run(llm, coder, scene_set, items, open_ended_eval=not args.no_open_ended)
    summary.update({"method": args.method, "label": args.name,
                    "layers": args.layers if args.method in ("spae", "random") else None,
                    "dataset": "scenes", "split": args.split, "shots": args.shots, "tokenizer": args.tokenizer,
                    "llm": args.llm, "seed": args.seed, "seconds": round(time.perf_counter() - t, 1),
                    "command": command})
    write_results(args.out, records, summary)
    print(f"{args.method}: VQA accuracy {summary['accuracy']:.3f} ± {summary['ci95']:.3f} on {len(records)} "
          f"questions (scenes/{args.split}, {args.shots}-shot) -> {args.out}")
    return summary


if __name__ == "__main__":
    main()
