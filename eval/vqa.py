"""VQA accuracy of the frozen LLM over LENS text, beside an "LLM without vision" baseline.

    python -m eval.vqa [--n 300] [--splits test heldout] [--shots 0] [--out out/vqa]

For each split of synthetic scenes (seed 1000: images no trainer saw) one question per image
is drawn (rng seeded by --seed), so --n images give --n questions of mixed types (colour,
shape, size, count, exist, relation, side, verify). LENS: the image's tags, attributes and
captions in LENS's prompt, greedy answer of at most 8 tokens. Baseline: the same question
with no image text ("Question:{q}\\nShort Answer:"). With --shots k, k solved examples from
the scenes train split (their own LENS text, question and gold answer) precede every prompt,
for both LENS and the baseline (the baseline's examples carry no image text).

--mode score: instead of generating, the LLM picks the answer with the highest summed
log-prob (`llm.score`) among the answers of the question's type in the scenes' QA (colour:
the 8 colours, shape: 6, size: small/large, count: digits, exist/verify/relation: yes/no,
side: left/right), i.e. closed-vocabulary VQA; the baseline gets the same candidates. --calibrate (score mode) ranks by
log p(answer | LENS prompt) - log p(answer | question alone): what the image text adds over the
LLM's prior (the baseline is left uncalibrated: calibrating it against itself is void).

Scoring: exact match after normalising (lowercase, punctuation and articles dropped, number
words to digits); an answer whose first word is the gold answer also counts.

VQAv2 / OK-VQA files (the benchmark's own JSON format and accuracy, `eval.vqa_metric`):

    python -m eval.vqa --questions Q.json --annotations A.json --images DIR [--limit N] [--out D]
    python -m eval.vqa --questions Q.json --annotations A.json --results R.json     # score saved answers

LENS (`--vision efficientnet-lite0` by default: the real-photo modules) answers every question about
its image (DIR/*{image_id:012d}.jpg, as COCO names them, or DIR/{image_id}.jpg / .png); the answers
go to OUT/vqa_results.json in the benchmark's results format, and the accuracy, overall and per
answer and question type, to OUT/vqa_scores.json.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import time

import numpy as np

from backbones.cli_errors import add_debug_flag, cli_main

NUMBERS = {"zero": "0", "none": "0", "no shapes": "0", "one": "1", "two": "2", "three": "3", "four": "4",
           "five": "5", "six": "6"}


def normalize(ans: str) -> str:
    a = re.sub(r"[^a-z0-9\- ]", " ", ans.lower())
    words = [w for w in a.split() if w not in ("a", "an", "the")]
    a = " ".join(words)
    return NUMBERS.get(a, a)


def is_correct(pred: str, gold: str) -> bool:
    p, g = normalize(pred), normalize(gold)
    if p == g:
        return True
    first = p.split()[0] if p else ""
    return NUMBERS.get(first, first) == g


def pick_questions(scene_set, seed: int):
    """One (question, answer, type) per image, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    out = []
    for qa, types in zip(scene_set.qa, scene_set.qa_types):
        j = int(rng.integers(len(qa)))
        out.append((qa[j][0], qa[j][1], types[j]))
    return out


def describe_all(lens, images, batch: int = 50) -> list[dict]:
    outs = []
    for a in range(0, len(images), batch):
        outs += lens(images[a:a + batch], None)
    return outs


def answer_all(llm, prompts, max_new_tokens: int = 8, batch: int = 16) -> list[str]:
    from lens.prompt import clean_answer

    out = []
    for a in range(0, len(prompts), batch):
        out += [clean_answer(t) for t in llm.generate(prompts[a:a + batch], max_new_tokens=max_new_tokens,
                                                     chat=False, temperature=0.0)]
    return out


def answer_vocabulary(seed: int = 0, n: int = 500) -> dict[str, list[str]]:
    """Question type -> every answer of that type in the QA of n train scenes (e.g. size: large, small)."""
    from visiondata import scenes

    s = scenes.generate(n, size=16, seed=seed, split="train")
    by_type: dict[str, set] = collections.defaultdict(set)
    for qa, types in zip(s.qa, s.qa_types):
        for (_, a), t in zip(qa, types):
            by_type[t].add(a)
    return {t: sorted(v) for t, v in sorted(by_type.items())}


def choose_all(llm, prompts, candidates: list[list[str]], priors: list[str] | None = None) -> list[str]:
    """The candidate with the highest summed log-prob after each prompt (llm.score); with `priors`
    (one prompt each), the highest log p(c | prompt) - log p(c | prior prompt) instead (calibrated:
    the answer the image text makes more likely than the question alone does)."""
    out = []
    for i, p in enumerate(prompts):
        cands = [" " + c for c in candidates[i]]
        s = np.asarray(llm.score(p, cands))
        if priors is not None:
            s = s - np.asarray(llm.score(priors[i], cands))
        out.append(candidates[i][int(np.argmax(s))])
    return out


def few_shot_prefix(lens, k: int, seed: int, with_vision: bool) -> str:
    if k <= 0:
        return ""
    from lens.prompt import build_prompt
    from visiondata import scenes

    s = scenes.generate(k, size=64, seed=seed, split="train")
    qs = pick_questions(s, seed)
    outs = describe_all(lens, s.images) if with_vision else [None] * k
    parts = []
    for o, (q, a, _) in zip(outs, qs):
        p = build_prompt(o["tags"], o["attributes"], o["captions"], q) if with_vision else f"Question:{q}\nShort Answer:"
        parts.append(f"{p} {a}\n\n")
    return "".join(parts)


def evaluate_split(lens, split: str, n: int, seed: int, shots: int, mode: str = "generate",
                   candidates: dict[str, list[str]] | None = None, calibrate: bool = False) -> dict:
    from lens.prompt import build_prompt
    from visiondata import scenes

    s = scenes.generate(n, size=64, seed=seed, split=split)
    qs = pick_questions(s, seed)
    outs = describe_all(lens, s.images)
    pre_v = few_shot_prefix(lens, shots, seed + 1, True)
    pre_b = few_shot_prefix(lens, shots, seed + 1, False)
    lens_prompts = [pre_v + build_prompt(o["tags"], o["attributes"], o["captions"], q) for o, (q, _, _) in zip(outs, qs)]
    base_prompts = [pre_b + f"Question:{q}\nShort Answer:" for q, _, _ in qs]
    if mode == "score":
        per_q = [candidates[t] for _, _, t in qs]
        lens_ans = choose_all(lens.llm, lens_prompts, per_q, base_prompts if calibrate else None)
        base_ans = choose_all(lens.llm, base_prompts, per_q)
    else:
        lens_ans = answer_all(lens.llm, lens_prompts)
        base_ans = answer_all(lens.llm, base_prompts)
    by_type = collections.defaultdict(lambda: [0, 0, 0])
    rows = []
    for (q, gold, t), la, ba, o in zip(qs, lens_ans, base_ans, outs):
        lc, bc = is_correct(la, gold), is_correct(ba, gold)
        by_type[t][0] += 1
        by_type[t][1] += lc
        by_type[t][2] += bc
        rows.append({"question": q, "gold": gold, "type": t, "lens": la, "baseline": ba, "lens_ok": lc,
                     "baseline_ok": bc, "captions": o["captions"][:2], "tags": o["tags"][:3]})
    n_q = len(rows)
    return {
        "split": split, "questions": n_q, "shots": shots, "mode": mode, "calibrate": calibrate,
        "lens_acc": sum(r["lens_ok"] for r in rows) / n_q,
        "baseline_acc": sum(r["baseline_ok"] for r in rows) / n_q,
        "by_type": {t: {"n": v[0], "lens_acc": v[1] / v[0], "baseline_acc": v[2] / v[0]} for t, v in sorted(by_type.items())},
        "examples": rows[:30],
        "example_prompt": lens_prompts[0],
    }


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=300, help="images (= questions) per split")
    p.add_argument("--splits", nargs="+", default=["test", "heldout"])
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--shots", type=int, default=0)
    p.add_argument("--mode", default="generate", choices=["generate", "score"],
                   help="generate: greedy short answer; score: pick the answer vocabulary entry with the "
                        "highest llm.score (closed-vocabulary VQA)")
    p.add_argument("--calibrate", action="store_true",
                   help="score mode: LENS picks by log p(c | LENS prompt) - log p(c | question only)")
    p.add_argument("--captioner", default=None)
    p.add_argument("--clip", default="offline", help="'none': captions only; 'default': load_clip() (LiT); the README figures used offline")
    p.add_argument("--out", default="out/vqa")
    official = p.add_argument_group("VQAv2 / OK-VQA files")
    official.add_argument("--questions", help="questions JSON ({'questions': [...]}, VQAv2 format)")
    official.add_argument("--annotations", help="annotations JSON ({'annotations': [...]}, VQAv2 format)")
    official.add_argument("--images", help="directory of the questions' images")
    official.add_argument("--results", help="score this results JSON ([{question_id, answer}]) instead of running LENS")
    official.add_argument("--limit", type=int, default=None, help="the first N questions only")
    official.add_argument("--vision", default="efficientnet-lite0", help="LENS's ImageNet backbone ('none': without)")
    official.add_argument("--llm", default="smollm2-135m")
    official.add_argument("--batch", type=int, default=16)
    add_debug_flag(p)
    args = p.parse_args(argv)
    if args.questions or args.annotations or args.results or args.images:
        return official_main(args)

    from lens.pipeline import Lens

    t0 = time.time()
    lens = Lens.load(clip=None if args.clip == "none" else args.clip, captioner=args.captioner)
    results = {"clip": args.clip if lens.tagger else "none", "splits": {}}
    cands = answer_vocabulary() if args.mode == "score" else None
    results["answer_vocabulary"] = cands
    for split in args.splits:
        r = evaluate_split(lens, split, args.n, args.seed, args.shots, args.mode, cands, args.calibrate)
        results["splits"][split] = r
        print(f"{split}: LENS {r['lens_acc']:.3f}  LLM-only {r['baseline_acc']:.3f}  ({r['questions']} questions, "
              f"{args.shots}-shot, {args.mode})", file=sys.stderr)
        for t, v in r["by_type"].items():
            print(f"   {t:9s} n={v['n']:3d}  LENS {v['lens_acc']:.2f}  LLM-only {v['baseline_acc']:.2f}", file=sys.stderr)
    results["wall_s"] = round(time.time() - t0, 1)
    os.makedirs(args.out, exist_ok=True)
    name = f"vqa_{args.mode}{'_calibrated' if args.calibrate else ''}_{args.shots}shot.json"
    with open(os.path.join(args.out, name), "w") as f:
        json.dump(results, f, indent=1)
    print(json.dumps({s: {k: r[k] for k in ("questions", "lens_acc", "baseline_acc")} for s, r in results["splits"].items()}
                     | {"shots": args.shots, "mode": args.mode, "wall_s": results["wall_s"]}))


def _read_json_list(path: str, key: str, what: str) -> list:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise SystemExit(f"error: {what} file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {what} file {path} is not JSON ({e})") from None
    items = data.get(key) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise SystemExit(f"error: {what} file {path} has no {key!r} list (VQAv2 format)")
    return items


def image_path(images_dir: str, image_id: int) -> str:
    """The file of a VQAv2 image id: COCO's *_{id:012d}.jpg, else {id}.jpg / {id}.png."""
    import glob

    hits = sorted(glob.glob(os.path.join(glob.escape(images_dir), f"*{int(image_id):012d}.jpg")))
    for name in [f"{image_id}.jpg", f"{image_id}.png", f"{int(image_id):012d}.jpg"]:
        if os.path.isfile(os.path.join(images_dir, name)):
            hits.append(os.path.join(images_dir, name))
    if not hits:
        raise SystemExit(f"error: no image for image_id {image_id} in {images_dir} "
                         f"(looked for *{int(image_id):012d}.jpg, {image_id}.jpg, {image_id}.png)")
    return hits[0]


def lens_answers(questions: list, images_dir: str, llm: str, vision: str, batch: int) -> list[dict]:
    """LENS's answer to every question, as the benchmark's results list."""
    from lens.images import load_image
    from lens.pipeline import Lens
    from tqdm.auto import tqdm

    lens = Lens.load(llm=llm, vision=None if vision == "none" else vision)
    out = []
    for a in tqdm(range(0, len(questions), batch), desc="LENS answers", unit="batch", disable=None):
        chunk = questions[a:a + batch]
        images = [load_image(image_path(images_dir, q["image_id"])) for q in chunk]
        for q, o in zip(chunk, lens(images, [q["question"] for q in chunk])):
            out.append({"question_id": int(q["question_id"]), "answer": o["answer"] or ""})
    return out


def official_main(args) -> dict:
    from eval.vqa_metric import score_results

    if not (args.questions and args.annotations):
        raise SystemExit("error: VQAv2 scoring needs both --questions and --annotations")
    if not args.results and not args.images:
        raise SystemExit("error: give --images DIR (LENS answers the questions) or --results R.json (saved answers)")
    if args.images and not os.path.isdir(args.images):
        raise SystemExit(f"error: --images {args.images} is not a directory")
    questions = _read_json_list(args.questions, "questions", "questions")
    annotations = _read_json_list(args.annotations, "annotations", "annotations")
    if args.limit is not None:
        questions = questions[:args.limit]
    t0 = time.time()
    if args.results:
        results = _read_json_list(args.results, "results", "results")
    else:
        results = lens_answers(questions, args.images, args.llm, args.vision, args.batch)
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "vqa_results.json"), "w") as f:
            json.dump(results, f)
    try:
        scores = score_results(questions, annotations, results)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    scores["wall_s"] = round(time.time() - t0, 1)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "vqa_scores.json"), "w") as f:
        json.dump(scores, f, indent=1)
    print(f"VQA accuracy {scores['overall']:.2f} over {scores['n']} questions", file=sys.stderr)
    for t, v in scores["per_answer_type"].items():
        print(f"   {t:10s} {v:6.2f}", file=sys.stderr)
    print(json.dumps({k: scores[k] for k in ("n", "overall", "per_answer_type", "wall_s")}))
    return scores


if __name__ == "__main__":
    main()
