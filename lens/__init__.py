"""LENS: describe images in text (tags, attributes, captions) and let a frozen LLM reason over it.

    from lens import Lens
    lens = Lens.load()
    out = lens(images, questions)      # per image: tags, attributes, captions, prompt, answer

Modules: `captioner` (model), `decoding` (beam search, top-k sampling), `caption` (Captioner:
model + vocabulary + save/load), `tagging` (tagger/attributer), `prompt`, `pipeline` (Lens),
`images` (input checks), `build_vocab` (the vocabulary data files).
"""
from __future__ import annotations


def __getattr__(name):
    if name == "Lens":
        from lens.pipeline import Lens

        return Lens
    if name == "Captioner":
        from lens.caption import Captioner

        return Captioner
    raise AttributeError(f"module 'lens' has no attribute {name!r}")


__all__ = ["Lens", "Captioner"]
