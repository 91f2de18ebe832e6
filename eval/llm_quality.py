"""Does a compact weight format keep the frozen LLM's behaviour? Measured against its fp32 weights.

    python -m eval.llm_quality [--llm smollm2-135m] [--weights int8,bf16] [--tokens 32]

On the repo's ten parity prompts (PARITY_PROMPTS: prose, code, a chat turn, French with an emoji,
numbers, a list, a question, ...), for each format:
- greedy continuations: how many of the ten equal fp32's for the first --tokens tokens;
- next-token top-1 agreement: the share of positions (every prompt position, teacher-forced) where
  the format's argmax equals fp32's;
- the largest logit difference, as a share of fp32's logit range.
The issue's bar (and `QUALITY_BAR`): >= 9 of 10 continuations and >= 99% top-1 agreement.
"""
from __future__ import annotations

import argparse

import numpy as np

from backbones.cli_errors import add_debug_flag, cli_main

PARITY_PROMPTS = [
    "The quick brown fox jumps over the lazy dog. In 1969, astronauts",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n",
    "Les élèves ont étudié 12345 étoiles 🙂 naïvement.",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "A recipe for pancakes needs flour, eggs, milk and",
    "1, 2, 3, 5, 8, 13, 21,",
    "<|im_start|>user\nWrite a short paragraph about the history of the bicycle.<|im_end|>\n<|im_start|>assistant\n",
    "Photosynthesis is the process by which plants",
    "Shopping list:\n- apples\n- bread\n-",
]
QUALITY_BAR = {"continuations": 9, "top1": 0.99}


def compare(reference, candidate, prompts=PARITY_PROMPTS, tokens: int = 32) -> dict:
    """Greedy continuations and teacher-forced next-token argmax of `candidate` against `reference`."""
    ids = [reference.encode(p) for p in prompts]
    ref_gen = reference.generate_ids(ids, tokens, stop_at_eos=False)
    cand_gen = candidate.generate_ids(ids, tokens, stop_at_eos=False)
    same = [r == c for r, c in zip(ref_gen, cand_gen)]
    agree, total, worst = 0, 0, 0.0
    for p, g in zip(ids, ref_gen):
        seq = p + g                                      # the reference's own continuation, teacher-forced
        a, b = reference.logits(seq), candidate.logits(seq)
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += len(seq)
        worst = max(worst, float(np.abs(a - b).max() / (a.max() - a.min())))
    first_diff = [next((i for i, (x, y) in enumerate(zip(r, c)) if x != y), tokens) for r, c in zip(ref_gen, cand_gen)]
    return {"continuations": int(sum(same)), "prompts": len(prompts), "top1": agree / total,
            "positions": total, "max_logit_diff": worst, "first_difference": first_diff}


def holds(result: dict) -> bool:
    return result["continuations"] >= QUALITY_BAR["continuations"] and result["top1"] >= QUALITY_BAR["top1"]


@cli_main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llm", default="smollm2-135m")
    ap.add_argument("--weights", default="int8,bf16", help="comma-separated formats to compare with fp32")
    ap.add_argument("--tokens", type=int, default=32)
    add_debug_flag(ap)
    args = ap.parse_args(argv)
    from backbones import load_llm

    ref = load_llm(args.llm, weights="fp32")
    print(f"| weights | greedy {args.tokens} tokens = fp32 | top-1 agreement | max logit diff / range | holds |")
    print("|---|---|---|---|---|")
    for fmt in [w for w in args.weights.split(",") if w]:
        r = compare(ref, load_llm(args.llm, weights=fmt), tokens=args.tokens)
        print(f"| {fmt} | {r['continuations']}/{r['prompts']} | {100 * r['top1']:.2f}% ({r['positions']} positions) "
              f"| {r['max_logit_diff']:.4f} | {'yes' if holds(r) else 'no'} |")
        print(f"  first differing token per prompt: {r['first_difference']}")


if __name__ == "__main__":
    main()
