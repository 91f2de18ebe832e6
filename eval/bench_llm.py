"""Benchmark: frozen-LLM greedy decode speed, ours (JAX, KV cache) beside Hugging Face transformers
(PyTorch, fp32) and llama.cpp (llama-cpp-python, the GGUF's own Q4_1/Q8_0 kernels), all on the same
GGUF file, on the same machine, in one run.

    python -m eval.bench_llm [--weights fp32,int8] [--batches 1,16] [--new-tokens 64] [--repeats 3]

For each of our weight formats and batch sizes it times `generate_ids` with and without `allowed_ids`
(half the vocabulary allowed, as SPAE's in-context generation does with its codebook). Every figure
is decode alone, timed from the first new token (after the prompt's prefill) to the last: ours by
`FrozenLLM.last_decode`, transformers by a logits processor that stamps each step, llama.cpp by its
token loop. Each
is the best of --repeats runs, interleaved, because this machine is shared and its speed drifts.
It prints tokens/s, the weight bytes each decode step reads (and so the memory bandwidth it reaches),
and the ratios the README quotes: ours / transformers, ours / llama.cpp at batch 1, batch-16
throughput / batch 1, and the cost of allowed_ids. Writes --out .md/.json.

transformers/torch are the test extra; llama-cpp-python is the optional `bench` extra
(`pip install -e '.[bench]'`, which compiles llama.cpp). Either missing is reported and skipped.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from backbones.cli_errors import add_debug_flag, cli_main

PROMPT = "Write a short paragraph about the history of the bicycle."


class Ours:
    def __init__(self, weights: str):
        from backbones import load_llm

        self.llm = load_llm("smollm2-135m", weights=weights)
        V = self.llm.config.vocab_size
        self.allowed = np.arange(0, V, 2)

    def prompt_ids(self, batch: int):
        return [self.llm.encode(self.llm.chat_prompt(PROMPT))] * batch

    def run(self, batch: int, new_tokens: int, allowed: bool) -> float:
        """Decode tokens/s, timed inside generate_ids from the first token to the last (FrozenLLM.last_decode)."""
        self.llm.generate_ids(self.prompt_ids(batch), new_tokens, stop_at_eos=False,
                              allowed_ids=self.allowed if allowed else None)
        d = self.llm.last_decode
        return d["steps"] * d["batch"] / d["seconds"]

    def warm(self, batch: int, new_tokens: int):
        for allowed in (False, True):
            self.llm.generate_ids(self.prompt_ids(batch), new_tokens, stop_at_eos=False,
                                  allowed_ids=self.allowed if allowed else None)

    def weight_bytes(self) -> int:
        """Bytes of matrices one decode step reads: every layer matrix and the output head."""
        import jax

        from backbones.llm.quant import Int8Weight

        m = self.llm.model
        total = 0
        for name, var in vars(m).items():
            if name == "embed" and m.tied_head is not None:
                continue                    # the lookup reads one row; the head copy is counted instead
            value = getattr(var, "get_value", lambda: None)()
            if isinstance(value, Int8Weight):
                total += value.nbytes
            elif value is not None:
                total += sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(value))
        return total


class Transformers:
    def __init__(self):
        import torch
        import transformers

        from backbones.llm.api import named_model_path

        path = named_model_path("smollm2-135m")
        self.torch = torch
        self.tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                                       dtype=torch.float32).eval()
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token

    def run(self, batch: int, new_tokens: int) -> float:
        text = self.tok.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False,
                                            add_generation_prompt=True)
        enc = self.tok([text] * batch, return_tensors="pt", padding=True, add_special_tokens=False)

        times = []

        def stamp(input_ids, scores):          # a logits processor: called once per new token
            times.append(time.perf_counter())
            return scores

        with self.torch.no_grad():
            self.model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                pad_token_id=self.tok.pad_token_id, logits_processor=[stamp])
        end = time.perf_counter()
        return (len(times) - 1) * batch / (end - times[0])     # from the first token (after prefill) on


class LlamaCpp:
    def __init__(self, threads: int):
        from llama_cpp import Llama

        from backbones.llm.api import named_model_path

        self.model = Llama(model_path=str(named_model_path("smollm2-135m")), n_threads=threads, n_ctx=512,
                           verbose=False)
        text = f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n"
        self.prompt = self.model.tokenize(text.encode(), add_bos=False, special=True)

    def run(self, new_tokens: int) -> float:
        m = self.model
        m.reset()
        m.eval(self.prompt)                                      # prefill, not timed
        m.eval([m.sample(temp=0.0)])
        t = time.perf_counter()
        for _ in range(new_tokens - 1):
            m.eval([m.sample(temp=0.0)])
        return (new_tokens - 1) / (time.perf_counter() - t)


def to_markdown(rows: list[dict], ratios: list[tuple[str, float]], command: str) -> str:
    lines = ["| decoder | weights | batch | allowed_ids | decode tokens/s | weights read per step | bandwidth |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        mb = f"{r['weight_bytes'] / 1e6:.0f} MB" if r.get("weight_bytes") else "-"
        bw = (f"{r['weight_bytes'] * r['tokens_per_s'] / r['batch'] / 1e9:.1f} GB/s"
              if r.get("weight_bytes") else "-")
        lines.append(f"| {r['decoder']} | {r['weights']} | {r['batch']} | {r['allowed']} | "
                     f"{r['tokens_per_s']:.1f} | {mb} | {bw} |")
    lines += ["", "| ratio | value |", "|---|---|"] + [f"| {k} | {v:.2f}x |" for k, v in ratios]
    lines += ["", f"Command: `{command}` (greedy, one run on this machine; best of the repeats)."]
    return "\n".join(lines)


@cli_main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default="fp32,int8", help="our storage formats to time (fp32, bf16, int8)")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads (this machine: 2 cores)")
    ap.add_argument("--out", default="docs/results/bench_llm")
    add_debug_flag(ap)
    args = ap.parse_args(argv)
    from eval.report import write_md_json

    formats = [w for w in args.weights.split(",") if w]
    batches = [int(b) for b in args.batches.split(",") if b]
    n = args.new_tokens
    ours = {w: Ours(w) for w in formats}
    for o in ours.values():
        for b in batches:
            o.warm(b, n)
    refs = {}
    try:
        refs["transformers"] = Transformers()
        refs["transformers"].run(1, 4)                                  # warm up
    except ImportError as e:
        print(f"transformers skipped: {e} (install the test extra: pip install -e '.[test]')")
    try:
        refs["llama.cpp"] = LlamaCpp(args.threads)
        refs["llama.cpp"].run(4)
    except ImportError as e:
        print(f"llama.cpp skipped: {e} (install the bench extra: pip install -e '.[bench]')")

    best: dict[tuple, float] = {}
    for _ in range(args.repeats):                      # interleaved, so a slow minute hits every row alike
        for w, o in ours.items():
            for b in batches:
                for allowed in (False, True):
                    key = ("ours", w, b, allowed)
                    best[key] = max(best.get(key, 0.0), o.run(b, n, allowed))
        if "transformers" in refs:
            for b in batches:
                key = ("transformers", "fp32", b, False)
                best[key] = max(best.get(key, 0.0), refs["transformers"].run(b, n))
        if "llama.cpp" in refs:
            key = ("llama.cpp", "gguf (Q4_1/Q8_0)", 1, False)
            best[key] = max(best.get(key, 0.0), refs["llama.cpp"].run(n))

    rows = [{"decoder": d, "weights": w, "batch": b, "allowed": "yes" if a else "no", "tokens_per_s": v,
             "weight_bytes": ours[w].weight_bytes() if d == "ours" else None}
            for (d, w, b, a), v in best.items()]
    fastest = max(formats, key=lambda w: best[("ours", w, 1, False)])
    b1 = best[("ours", fastest, 1, False)]
    ratios = []
    if ("transformers", "fp32", 1, False) in best:
        ratios.append((f"ours ({fastest}) / transformers, batch 1", b1 / best[("transformers", "fp32", 1, False)]))
    if ("llama.cpp", "gguf (Q4_1/Q8_0)", 1, False) in best:
        ratios.append((f"ours ({fastest}) / llama.cpp, batch 1", b1 / best[("llama.cpp", "gguf (Q4_1/Q8_0)", 1, False)]))
    for b in batches:
        if b != 1 and 1 in batches:
            ratios.append((f"ours ({fastest}) batch {b} / batch 1 throughput", best[("ours", fastest, b, False)] / b1))
    for w in formats:
        for b in batches:
            ratios.append((f"ours ({w}, batch {b}) with allowed_ids / without",
                           best[("ours", w, b, True)] / best[("ours", w, b, False)]))
    command = ("python -m eval.bench_llm" + (f" --weights {args.weights}" if args.weights != "fp32,int8" else "")
               + (f" --batches {args.batches}" if args.batches != "1,16" else "")
               + (f" --new-tokens {n}" if n != 64 else ""))
    md = to_markdown(rows, ratios, command)
    print(md)
    write_md_json(args.out, md, {"rows": rows, "ratios": dict(ratios), "new_tokens": n, "repeats": args.repeats})
    print(f"wrote {args.out}.md")


if __name__ == "__main__":
    main()
