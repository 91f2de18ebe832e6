"""`Lens`: vision modules describe an image in text; the frozen LLM reasons over that text.

    from lens import Lens
    lens = Lens.load()                                 # offline defaults: SmolLM2, repo CLIP, scenes captioner
    lens = Lens.load(vision="efficientnet-lite0")      # real pictures: ImageNet tags, LiT, the real captioner
    lens = Lens.load(vision="efficientnet-lite0", clip=None, captioner="none")   # ImageNet tags alone
    out = lens(images, ["What color is the circle?"])  # images uint8 (B, H, W, 3)
    out[0] -> {"tags": [...], "tag_scores": [...], "attributes": [...], "captions": [...], "prompt": str,
               "answer": str | None,
               "sources": {"tags": [model per tag], "attributes": model or None, "captions": model or None}}

Answers (`lens.answer`): two fixed solved examples precede the question, and the answer is the
candidate from the evidence (tags, attributes, caption phrases, yes/no, digits) with the best
reader log-probability times vision probability; `Lens(..., answer="generate")` writes freely.

Vision modules: the ImageNet tagger (`lens.imagenet_tagger`, the frozen real-photo backbone), a
contrastive model scoring tag and attribute vocabularies (`load_clip()`: LiT on that backbone,
or the older stand-in "offline"), and a captioner: with `vision`, the one trained on real pictures
(emoji, Tux Paint stamps, scenes) over the same frozen backbone's features; without, the one trained
on the synthetic scenes from pixels (on a photo it describes shapes that are not there). Every output
names the model that said it.
    lens.classify(images, ["t-shirt", "trouser", ...]) -> (B, C) summed log-probs of each label
"""
from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np

from lens.images import prepare_images, rgb_images
from lens.answer import IN_CONTEXT, candidates, rank_answers
from lens.prompt import build_prompt, clean_answer, describe


def clip_label(clip) -> str:
    """A contrastive model's name for output sources: "clip:lit", "clip:offline", or its directory's name."""
    info = getattr(clip, "info", {}) or {}
    where = info.get("path") or info.get("name") or type(clip).__name__
    return "clip:" + os.path.basename(os.path.normpath(str(where)))


class Lens:
    ANSWER_MODES = ("rank", "generate")

    def __init__(self, llm, captioner=None, tagger=None, attributer=None, *, photo_tagger=None,
                 num_captions: int = 5, beam: int = 4, sample_top_k: int = 10, answer_tokens: int = 8,
                 chat: bool = False, seed: int = 0, answer: str = "rank", in_context: bool = True):
        """answer: "rank" (the default) picks among the evidence's candidate answers by reader x vision
        (`lens.answer`); "generate" writes a free greedy answer. in_context: two fixed solved examples
        precede every question (`lens.answer.IN_CONTEXT`)."""
        if answer not in self.ANSWER_MODES:
            raise ValueError(f"answer must be one of {self.ANSWER_MODES}, got {answer!r}")
        self.llm, self.captioner, self.tagger, self.attributer = llm, captioner, tagger, attributer
        self.photo_tagger = photo_tagger
        self.answer_mode, self.in_context = answer, bool(in_context)
        self.num_captions, self.beam, self.sample_top_k = num_captions, beam, sample_top_k
        self.answer_tokens, self.chat, self.seed = answer_tokens, chat, seed

    @classmethod
    def load(cls, llm="smollm2-135m", clip="default", captioner=None, vocab_dir=None, *, vision=None,
             top_k_tags: int = 5, top_k_attributes: int = 3, tag_threshold: float = 0.02,
             attribute_threshold: float = 0.02, **kwargs) -> "Lens":
        """Everything offline by default. `llm`/`clip` take names, paths or loaded models; `captioner` a
        directory written by `train.captioner` or a Hugging Face BLIP one, a shipped name ("scenes", "real") or a
        loaded `Captioner` or `lens.blip.BlipCaptioner` ("none":
        no captions; default: "real" with `vision`, else "scenes"); clip=None skips tags and attributes.
        `vision` (a name such as "efficientnet-lite0", a .pth path or a loaded backbone) adds the ImageNet
        tagger for real photos."""
        from lens.build_vocab import load_attributes, load_tags
        from lens.caption import Captioner
        from lens.tagging import VocabScorer

        if isinstance(llm, str):
            from backbones import load_llm

            llm = load_llm(llm)
        if isinstance(vision, str):
            from backbones import load_vision

            vision = load_vision(vision)
        if captioner == "none":
            captioner = None
        elif captioner is None or isinstance(captioner, (str, os.PathLike)):  # else a loaded captioner
            name = captioner or ("real" if vision is not None else "scenes")
            # shares the tagger's backbone; the reader's decode only where the captioner's ids are its ids
            captioner = Captioner.load(name, vision=vision, reader=llm)
        tagger = attributer = None
        if clip is not None:
            if isinstance(clip, str):
                from backbones import load_clip

                try:
                    clip = load_clip(None if clip == "default" else clip)
                except (FileNotFoundError, ImportError, OSError) as e:
                    if clip != "default":
                        raise
                    warnings.warn(f"no contrastive model available ({e}); LENS runs without tags and attributes")
                    clip = None
            if clip is not None:
                tagger = VocabScorer(clip, load_tags(vocab_dir), "a photo of {}", top_k_tags, tag_threshold)
                attributer = VocabScorer(clip, load_attributes(vocab_dir), "a photo of {}", top_k_attributes,
                                         attribute_threshold)
        photo_tagger = None
        if vision is not None:
            from lens.imagenet_tagger import ImageNetTagger

            photo_tagger = ImageNetTagger(vision)
        return cls(llm, captioner, tagger, attributer, photo_tagger=photo_tagger, **kwargs)

    # -- vision to text --------------------------------------------------------------------
    def describe_images(self, images) -> list[dict]:
        """uint8 (B, H, W, 3) (or a list of arrays / paths) -> per image {"tags", "attributes", "captions",
        "sources"}; ImageNet tags (real photos) come before the toy-domain contrastive model's."""
        scorer = self.tagger or self.attributer
        if scorer is None and self.captioner is None and self.photo_tagger is None:
            raise ValueError("this Lens has no vision module (ImageNet tagger, contrastive model or captioner)")
        originals = rgb_images(images)
        b = len(originals)
        tags, sources = [[] for _ in range(b)], [[] for _ in range(b)]
        scores = [[] for _ in range(b)]
        if self.photo_tagger is not None:
            for i, row in enumerate(self.photo_tagger(originals)):
                tags[i] += [t for t, _ in row]
                scores[i] += [float(p) for _, p in row]
                sources[i] += [self.photo_tagger.name] * len(row)
        clip_in = prepare_images(originals, getattr(scorer.clip, "image_size", 224)) if scorer else None
        clip_name = clip_label(scorer.clip) if scorer else None
        if self.tagger is not None:
            for i, row in enumerate(self.tagger(clip_in)):
                tags[i] += [t for t, _ in row]
                scores[i] += [float(p) for _, p in row]
                sources[i] += [clip_name] * len(row)
        attrs = [[t for t, _ in row] for row in self.attributer(clip_in)] if self.attributer else [[] for _ in range(b)]
        caps = [[] for _ in range(b)]
        if self.captioner is not None:
            x = self.captioner.prepare(originals)  # {"images": resized} or {"features": frozen-backbone features}
            best = self.captioner.caption(**x, beam=self.beam)
            extra = self.captioner.sample(**x, n=self.num_captions, top_k=self.sample_top_k, seed=self.seed) \
                if self.num_captions > 0 else [[] for _ in range(b)]
            caps = [list(dict.fromkeys([g] + e))[: max(1, self.num_captions)] for g, e in zip(best, extra)]
        where = {"attributes": clip_name if self.attributer else None,
                 "captions": self.captioner.label if self.captioner else None}
        return [{"tags": t, "tag_scores": p, "attributes": a, "captions": c, "sources": {"tags": s, **where}}
                for t, p, a, c, s in zip(tags, scores, attrs, caps, sources)]

    # -- reasoning ----------------------------------------------------------------------------
    def answer(self, prompts: Sequence[str], outs: Sequence[dict] | None = None) -> list[str]:
        """Short answers to LENS prompts: ranked among each output's candidates (answer="rank"; needs
        `outs`, the descriptions the prompts were built from), or greedy continuations ("generate")."""
        if self.answer_mode == "rank" and outs is not None:
            named = self.photo_tagger.classes_named if self.photo_tagger is not None else (lambda tag: None)
            return rank_answers(self.llm, prompts, [candidates(o, named) for o in outs])
        raw = self.llm.generate(list(prompts), max_new_tokens=self.answer_tokens, chat=self.chat, temperature=0.0)
        return [clean_answer(r) for r in raw]

    def __call__(self, images, questions: Sequence[str] | None = None) -> list[dict]:
        outs = self.describe_images(images)
        if questions is not None:
            if isinstance(questions, str):
                questions = [questions]
            if len(questions) != len(outs):
                raise ValueError(f"{len(outs)} images but {len(questions)} questions (give one per image, or None)")
        for i, o in enumerate(outs):
            q = None if questions is None else questions[i]
            o["prompt"] = build_prompt(o["tags"], o["attributes"], o["captions"], q)
            if q is not None and self.in_context:
                o["prompt"] = IN_CONTEXT + o["prompt"]
            o["answer"] = None
        if questions is not None:
            for o, a in zip(outs, self.answer([o["prompt"] for o in outs], outs)):
                o["answer"] = a
        return outs

    def classify(self, images, labels: Sequence[str], question: str = "What is in the image?") -> np.ndarray:
        """(B, C) summed log-probs of " {label}" after each image's LENS prompt (argmax = prediction)."""
        outs = self(images, None)
        scores = []
        for o in outs:
            prompt = build_prompt(o["tags"], o["attributes"], o["captions"], question)
            scores.append(self.llm.score(prompt, [" " + lab for lab in labels]))
        return np.asarray(scores, np.float32)

    @staticmethod
    def text(out: dict, **kw) -> str:
        """A compact one-line description of one image's output, for prompts built elsewhere."""
        return describe(out, **kw)
