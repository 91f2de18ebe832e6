"""`make demo`: the main job on built-in data with the offline default LLM.

Loads the frozen LLM (SmolLM2-135M from its PyPI package), says what it loaded, and has it
answer a few questions. Later stages (SPAE tokens, LENS text, the head-to-head) join here as
they land.
"""
from __future__ import annotations

import time


def main() -> None:
    from backbones import load_llm

    t = time.perf_counter()
    llm = load_llm("smollm2-135m")
    print(f"loaded {llm} in {time.perf_counter() - t:.1f}s")
    for question in ["What is the capital of France?", "Name three colours of the rainbow."]:
        t = time.perf_counter()
        answer = llm.generate(question, max_new_tokens=40)
        print(f"\nQ: {question}\nA: {answer}   ({time.perf_counter() - t:.1f}s)")
    prompt = "The capital of France is"
    scores = llm.score(prompt, [" Paris", " London", " Rome"])
    print(f"\nscore({prompt!r}): " + ", ".join(f"{c.strip()}={s:.2f}" for c, s in zip([" Paris", " London", " Rome"], scores)))


if __name__ == "__main__":
    main()
