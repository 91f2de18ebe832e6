"""LENS prompts: the image's text in LENS's format, and a compact description for other prompts.

    build_prompt(tags, attributes, captions, question)
    -> "Tags:\\n-red circle\\n-circle\\nAttributes:\\n-...\\nCaptions:\\n-...\\nQuestion:{q}\\nShort Answer:"

`describe` gives one line per image for few-shot prompts built elsewhere
("Tags: red circle, circle. Attributes: ... Captions: A large red circle. | ...").
"""
from __future__ import annotations

from typing import Sequence


def _section(name: str, items: Sequence[str]) -> str:
    return f"{name}:\n" + "".join(f"-{s}\n" for s in items)


def build_prompt(tags: Sequence[str], attributes: Sequence[str], captions: Sequence[str],
                 question: str | None = None) -> str:
    """LENS's prompt. Without a question it stops after the captions (a pure description)."""
    text = _section("Tags", tags) + _section("Attributes", attributes) + _section("Captions", captions)
    if question is None:
        return text.rstrip("\n")
    return text + f"Question:{question.strip()}\nShort Answer:"


def describe(out: dict, max_tags: int = 5, max_attributes: int = 3, max_captions: int = 3) -> str:
    """One image's LENS output (a dict with tags/attributes/captions) -> a compact one-line description."""
    parts = []
    if out.get("tags"):
        parts.append("Tags: " + ", ".join(out["tags"][:max_tags]) + ".")
    if out.get("attributes"):
        parts.append("Attributes: " + "; ".join(out["attributes"][:max_attributes]) + ".")
    if out.get("captions"):
        caps = [c.rstrip(".") for c in out["captions"][:max_captions]]
        parts.append("Captions: " + " | ".join(caps) + ".")
    return " ".join(parts)


def clean_answer(text: str) -> str:
    """The LLM's continuation -> a short answer: first line, no list dash, trailing period or quotes, lowercase."""
    line = text.strip().split("\n")[0].strip().lstrip("-*• ").strip()
    for stop in ("Question:", "Short Answer:", "Tags:", "Captions:"):
        line = line.split(stop)[0]
    return line.strip().strip("\"'").rstrip(".").strip().lower()
