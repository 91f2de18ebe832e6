"""Benchmark: frozen-LLM greedy decode speed, ours (JAX, KV cache) beside Hugging Face transformers'
PyTorch model loaded from the same GGUF, on the same machine in the same run.

    python -m eval.bench_llm [--new-tokens 64] [--batch 1]

Prints tokens/s for both and their ratio. transformers/torch are the test extra's reference packages.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from backbones.cli_errors import add_debug_flag, cli_main

PROMPT = "Write a short paragraph about the history of the bicycle."


def bench_ours(llm, prompts, new_tokens):
    ids = [llm.encode(llm.chat_prompt(p)) for p in prompts]
    llm.generate_ids(ids, new_tokens, stop_at_eos=False)          # compile
    t = time.perf_counter()
    out = llm.generate_ids(ids, new_tokens, stop_at_eos=False)
    dt = time.perf_counter() - t
    return sum(len(o) for o in out) / dt


def bench_reference(prompts, new_tokens):
    import torch
    import transformers

    from backbones.llm.api import named_model_path

    path = named_model_path("smollm2-135m")
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                              dtype=torch.float32).eval()
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)  # warm up
        t = time.perf_counter()
        out = model.generate(**enc, **kw)
        dt = time.perf_counter() - t
    return (out.shape[1] - enc["input_ids"].shape[1]) * len(prompts) / dt


@cli_main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    add_debug_flag(ap)
    args = ap.parse_args(argv)
    from backbones import load_llm

    prompts = [PROMPT] * args.batch
    llm = load_llm("smollm2-135m")
    ours = bench_ours(llm, prompts, args.new_tokens)
    print(f"ours (JAX, KV cache, fp32)     : {ours:7.1f} tokens/s  (batch {args.batch}, {args.new_tokens} new tokens)")
    try:
        ref = bench_reference(prompts, args.new_tokens)
    except ImportError as e:
        print(f"reference skipped: {e} (install the test extra: pip install -e '.[test]')")
        return
    print(f"transformers (PyTorch, fp32)   : {ref:7.1f} tokens/s")
    print(f"ratio ours / reference         : {ours / ref:7.2f}x")


if __name__ == "__main__":
    main()
