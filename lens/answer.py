"""Short answers that use what the vision modules saw.

    answers = rank_answers(llm, prompts, candidate_lists)          # the default of `Lens`
    prompt = IN_CONTEXT + build_prompt(tags, attributes, captions, question)

A small frozen reader handed LENS's prompt tends to write a preamble ("the answer is:") or to
pick the wrong word from the evidence. Two things fix that here:

- `IN_CONTEXT`: two fixed solved examples before every prompt, each answering in a few words
  taken from its evidence, so the reader sees the format it must continue;
- `rank_answers`: the answer is chosen among candidates taken from the evidence (`candidates`:
  the tags, attributes, the captions' noun phrases, and yes / no / the digits). The reader says
  what kind of answer the question wants (a name, an attribute, yes/no, a number: the kind of the
  candidate it finds likeliest after the prompt); the vision module says which one (an ImageNet
  class by the classifier's probability, a hypernym by its subtree's divided by the classes it
  covers). The reader cannot write a preamble, and its taste for frequent words ("dog" at -3.2
  nats against "briard" at -7.9 after the same prompt) cannot override what the classifier saw.

`Lens(answer="generate")` keeps free greedy generation (with the in-context examples).
"""
from __future__ import annotations

import math
import re
from typing import Callable, Sequence

from lens.prompt import build_prompt

# Two solved examples in LENS's own format (made-up evidence; neither is an ImageNet photo of ours).
_EXAMPLES = [
    (["golden retriever", "Labrador retriever", "dog", "canine"], ["furry", "friendly"],
     ["A dog lying on the grass."], "What is in this picture?", "golden retriever"),
    (["sports car", "convertible", "car", "motor vehicle"], ["red", "shiny"],
     ["A red car parked on a street."], "What color is the car?", "red"),
]
IN_CONTEXT = "".join(build_prompt(t, a, c, q) + f" {ans}\n\n" for t, a, c, q, ans in _EXAMPLES)
CLOSED_ANSWERS = ("yes", "no") + tuple(str(i) for i in range(10))
KINDS = ("tag", "attribute", "caption", "yes/no", "number")
_ARTICLE = re.compile(r"^(a|an|the|some|two|three|several)\s+", re.I)


def noun_phrase(caption: str) -> str:
    """A caption's subject: "A red kangaroo on the grass." -> "red kangaroo" (up to the first preposition)."""
    text = caption.strip().rstrip(".!").lower()
    text = re.split(r"\s+(?:on|in|with|at|of|by|from|near|under|over|and|is|are|sitting|standing|lying)\s+",
                    text, maxsplit=1)[0]
    return _ARTICLE.sub("", text).strip()


def candidates(out: dict, classes_named: Callable[[str], int | None] = lambda tag: None) -> list[tuple[str, float, str]]:
    """(answer, vision log-prior, kind) for one LENS output (a dict with tags, tag_scores, attributes,
    captions); kind is one of KINDS.

    `classes_named(tag)` (`ImageNetTagger.classes_named`) says how many ImageNet classes a tag names: a
    class keeps log(its probability), a hypernym log(its subtree's probability / the subtree's classes),
    so "bird" (mass over 59 classes) ranks far below the one class seen, "hen", as the teacher's
    specificity weighting does. Every other candidate (contrastive tags, attributes, caption phrases,
    closed answers) gets the weakest class's log-probability, or log 1 = 0 with no ImageNet tag."""
    scores = out.get("tag_scores") or [None] * len(out["tags"])
    named = {t: (s, classes_named(t)) for t, s in zip(out["tags"], scores)}
    priors = {t: math.log(s / n) for t, (s, n) in named.items() if n and s is not None and s > 0}
    floor = min((math.log(s) for t, (s, n) in named.items() if n == 1 and s), default=0.0)
    seen: dict[str, tuple[str, float, str]] = {}
    for text, prior, kind in ([(t, priors.get(t, floor), "tag") for t in out["tags"]]
                              + [(a, floor, "attribute") for a in out.get("attributes", [])]
                              + [(noun_phrase(c), floor, "caption") for c in out.get("captions", [])]
                              + [(c, floor, "yes/no" if c in ("yes", "no") else "number") for c in CLOSED_ANSWERS]):
        text = text.strip()
        if text and text.lower() not in seen:
            seen[text.lower()] = (text.lower(), prior, kind)
    return list(seen.values())


def rank_answers(llm, prompts: Sequence[str], candidate_lists: Sequence[Sequence[tuple[str, float, str]]]) -> list[str]:
    """For each prompt: the reader picks the kind of answer the question asks for (the kind of its
    likeliest candidate, log p_reader(" " + answer | prompt)); within that kind the vision log-prior
    picks the answer, and the reader breaks ties (attributes, caption phrases and closed answers
    share one prior, so there the reader alone decides)."""
    out = []
    for prompt, cands in zip(prompts, candidate_lists):
        if not cands:
            raise ValueError("no candidate answers: the image's description is empty")
        reader = llm.score(prompt, [" " + text for text, _, _ in cands])
        kind = cands[max(range(len(cands)), key=lambda i: reader[i])][2]
        best = max((i for i in range(len(cands)) if cands[i][2] == kind), key=lambda i: (cands[i][1], reader[i]))
        out.append(cands[best][0])
    return out
