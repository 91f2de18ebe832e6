"""Few-shot in-context classification with the frozen LLM: can it see through SPAE tokens or LENS text?

    python -m eval.fewshot --method spae --layers 2 --episodes EPISODES.csv --out DIR [--seed 0]
    python -m eval.fewshot --method lqae --tokenizer CKPT --episodes EPISODES.csv --out DIR
    python -m eval.fewshot --method lens --episodes EPISODES.csv --out DIR
    python -m eval.fewshot --method random --layers 2 --episodes EPISODES.csv --out DIR
    python -m eval.fewshot --method lens --calibrate both --episodes EPISODES.csv --out DIR

Episodes come from `python -m visiondata.episodes` so every method sees the same ones. Each image
becomes a list of LLM token ids (`ImageCoder`); the prompt is built by concatenating ids, never by
re-tokenising image tokens:

    <instruction>\n
    Input: <image ids> Output: <label>\n        (one line per support example, N*K lines)
    Input: <query ids> Output:

Prediction: closed-form, argmax of the label log-probs over the episode's N labels, after the
label-bias correction --calibrate (none, contextual, orders or both; `llmsight.fewshot`, where the
prompt is built too); open-ended, the greedy continuation (up to the line end) after the prompt in
the given order, uncorrected, compared with the true label. Writes DIR/results.jsonl
(one line per query) and DIR/summary.json (accuracy with a 95% confidence interval over episodes).

Cross-style episodes (support rows from one dataset, query rows from another of the same split,
e.g. supports drawn by Noto `emoji:google` and queries by Fluent `emoji:fluent-flat`; see
`visiondata.episodes`) load both datasets; the coder sees one image array, the query dataset's
images after the support dataset's, so a query image's key is its index plus the support
dataset's size while its record's `query` stays its index in the query dataset. summary.json
names both (`dataset`, `query_dataset`).

LENS describes Fashion-MNIST and scenes with the toy-domain contrastive model ("offline"), and
real images (emoji, Tux Paint) with the ImageNet tagger on EfficientNet-Lite0 plus the default
(LiT) contrastive model; summary.json's `lens_vision` says which.

Resumable: each finished episode is appended to DIR/results.partial.jsonl, and a rerun into the
same DIR with the same method settings reuses every stored episode whose queries match the
episode file (a killed run, or an episode file grown from 100 to 200 episodes: only the new
ones are scored).

On many processes (hosts; backbones/distributed.py) the episodes are dealt round-robin: each
process loads the models, codes only the images of its own episodes and scores them, and after
every round of one episode per process the records are gathered, so every process ends with all
of them, in episode order: the scores of the one-process run. Process 0 alone reads and writes DIR
and prints. Start the same command on every process:

    python -m eval.fewshot --method spae --episodes EPISODES.csv --out DIR \
        --coordinator HOST:PORT --num_processes 2 --process_id 0        # and --process_id 1
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from typing import Protocol, Sequence

import numpy as np

from backbones import distributed
from backbones.cli_errors import add_debug_flag, cli_main
# The prompt and the label-bias corrections live in the installed package, for `llmsight fewshot` too.
from llmsight.fewshot import CALIBRATIONS, INSTRUCTION, build_prefix, label_log_probs, query_part


class ImageCoder(Protocol):
    """Turns images into LLM token ids, one list per image."""

    name: str

    def ids(self, images: np.ndarray, keys: Sequence[int]) -> list[list[int]]:
        """images uint8 (B, H, W[, 3]); keys: a stable id per image (its dataset index)."""


@dataclasses.dataclass
class SpaeCoder:
    """The first `layers` layers of an SPAE pyramid, top layer first, row-major in each layer."""

    tokenizer: object
    layers: int
    name: str = "spae"

    def __post_init__(self):
        if not 1 <= self.layers <= self.tokenizer.num_layers:
            raise ValueError(f"--layers must be in 1..{self.tokenizer.num_layers} for {self.tokenizer!r}")

    def ids(self, images, keys):
        pyr = self.tokenizer.encode(images)
        flat = [np.asarray(layer).reshape(len(images), -1) for layer in pyr.llm_ids[:self.layers]]
        return [np.concatenate([f[i] for f in flat]).astype(int).tolist() for i in range(len(images))]

    @property
    def length(self) -> int:
        return sum(h * w for h, w in self.tokenizer.layer_shapes()[:self.layers])


@dataclasses.dataclass
class RandomCoder:
    """The chance control: random codebook tokens, as many as the SPAE layers would give.

    Tokens depend on (seed, image key) only, so an image reads the same in every episode.
    """

    vocab_ids: np.ndarray     # (V',) real LLM ids to draw from
    length: int
    seed: int = 0
    name: str = "random"

    def ids(self, images, keys):
        return [np.random.default_rng([self.seed, int(k)]).choice(self.vocab_ids, self.length).astype(int).tolist()
                for k in keys]


@dataclasses.dataclass
class TextCoder:
    """A text description per image (e.g. LENS tags and captions), tokenised by the LLM."""

    describe: object          # callable: images -> list[str]
    llm: object
    name: str = "lens"
    vision: str | None = None  # the models that describe, e.g. "imagenet:efficientnet-lite0+clip:lit"

    def ids(self, images, keys):
        return [self.llm.encode(text) for text in self.describe(images)]


def build_prompt(llm, supports: Sequence[tuple[list[int], str]], query: list[int],
                 instruction: str = INSTRUCTION) -> list[int]:
    """The whole prompt as ids: prefix (instruction + supports) then the query line."""
    return build_prefix(llm, supports, instruction) + query_part(llm, query)


def classify(llm, prompt: list[int], labels: Sequence[str]) -> int:
    """Index of the label with the highest summed log-probability after the prompt."""
    scores = llm.score(prompt, [llm.encode(" " + name) for name in labels])
    return int(np.argmax(scores))


def open_ended(llm, prompt: list[int], max_new_tokens: int = 8) -> str:
    new = llm.generate_ids([prompt], max_new_tokens)[0]
    return llm.decode(new, skip_special=True).split("\n")[0].strip()


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation 95% confidence interval."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return float(v.mean()) if len(v) else float("nan"), float("nan")
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(len(v)))


def run(llm, coder: ImageCoder, episodes, images: np.ndarray, open_ended_eval: bool = True,
        progress: bool = True, done: dict | None = None, on_episode=None, query_images: np.ndarray | None = None,
        calibrate: str = "none"):
    """Score every query of every episode; returns (per-query records, summary dict).

    calibrate: the label-bias correction of the closed-form prediction (`llmsight.fewshot.CALIBRATIONS`).

    done: {episode index: its records} from an earlier run (see `stored_episodes`); those episodes
    are not scored again. on_episode(records): called with each newly scored episode's records, in
    episode order. query_images: the images the episodes' query indices point into, when not `images`
    (queries from another dataset); the coder then gets them with keys offset by len(images).

    In a multi-process run every process calls it with the same arguments: process p scores the
    episodes p, p + P, ... of those left to score, and every process returns all the records.
    """
    from tqdm import tqdm

    if calibrate not in CALIBRATIONS:
        raise ValueError(f"unknown calibration {calibrate!r}; choose one of {', '.join(CALIBRATIONS)}")
    done = done or {}
    records = []
    offset = 0
    if query_images is not None:
        if query_images.shape[1:] != images.shape[1:] or query_images.dtype != images.dtype:
            raise ValueError(f"query images {query_images.dtype} {query_images.shape[1:]} differ in shape or type "
                             f"from the support images {images.dtype} {images.shape[1:]}")
        offset = len(images)
    n_query = len(images if query_images is None else query_images)
    for role, n in (("support", len(images)), ("query", n_query)):
        top = max((int(getattr(e, role).max()) for e in episodes if len(getattr(e, role))), default=-1)
        if top >= n:       # (a support index past the support images would silently pick a query image)
            raise ValueError(f"{role} index {top} is out of range for its {n} images")
    if query_images is not None:
        images = np.concatenate([images, query_images])
    rank, size = distributed.process_index(), distributed.process_count()
    todo = [i for i in range(len(episodes)) if i not in done]
    mine = [episodes[i] for i in todo[rank::size]]       # this process's episodes (all of them for one)
    needed = sorted({int(i) for e in mine for i in e.support} | {int(q) + offset for e in mine for q in e.query})
    codes = {}
    for start in range(0, len(needed), 256):
        keys = needed[start:start + 256]
        for k, ids in zip(keys, coder.ids(images[keys], keys)):
            codes[k] = ids
    scored = {}
    rounds = [todo[r:r + size] for r in range(0, len(todo), size)]    # one episode per process each
    for group in tqdm(rounds, desc=f"{coder.name} episodes", disable=not progress or rank != 0):
        recs = _score_episode(llm, episodes[group[rank]], group[rank], codes, offset, calibrate,
                              open_ended_eval) if rank < len(group) else None
        for e_idx, r in zip(group, distributed.allgather_json(recs) if size > 1 else [recs]):
            scored[e_idx] = r
            if on_episode is not None:
                on_episode(r)
    per_episode, per_episode_open = [], []
    for e_idx in range(len(episodes)):
        recs = done[e_idx] if e_idx in done else scored[e_idx]
        records.extend(recs)
        per_episode.append(np.mean([r["correct"] for r in recs]))
        if open_ended_eval:
            per_episode_open.append(np.mean([r["open_correct"] for r in recs]))
    acc, ci = mean_ci95(per_episode)
    summary = {"accuracy": acc, "ci95": ci, "calibrate": calibrate, "episodes": len(episodes),
               "queries": len(records), "mean_prompt_tokens": float(np.mean([r["prompt_tokens"] for r in records]))}
    if per_episode_open:
        summary["open_accuracy"], summary["open_ci95"] = mean_ci95(per_episode_open)
    return records, summary


def _score_episode(llm, ep, e_idx: int, codes: dict, offset: int, calibrate: str, open_ended_eval: bool) -> list:
    """The records of one episode's queries; `codes`: {image key: its ids} (query keys offset)."""
    names = list(ep.class_names)
    records = []
    label_of = {int(c): names[j] for j, c in enumerate(ep.classes)}
    supports = [(codes[int(i)], label_of[int(y)]) for i, y in zip(ep.support, ep.support_labels)]
    # Interleave classes (c1, c2, ..., c1, c2, ...) so the last support is not always one class.
    order = np.argsort(np.tile(np.arange(ep.shots), ep.ways), kind="stable")
    supports = [supports[j] for j in order]
    prefix = build_prefix(llm, supports)
    query_ids = [codes[int(q) + offset] for q in ep.query]
    scores = label_log_probs(llm, supports, query_ids, names, calibrate)                  # (Q, N)
    queries = [query_part(llm, ids) for ids in query_ids]
    for q, y, row, qids in zip(ep.query, ep.query_labels, scores, queries):
        pred = names[int(np.argmax(row))]
        rec = {"episode": e_idx, "query": int(q), "label": label_of[int(y)], "pred": pred,
               "correct": pred == label_of[int(y)], "prompt_tokens": len(prefix) + len(qids),
               "log_probs": [float(v) for v in row]}      # per label, in class_names order, as corrected
        if open_ended_eval:
            text = open_ended(llm, prefix + qids)
            rec["open_pred"] = text
            rec["open_correct"] = text.lower() == label_of[int(y)].lower()
        records.append(rec)
    return records


def write_results(out: str, records: list[dict], summary: dict) -> None:
    """OUT/results.jsonl (one record per query) and OUT/summary.json; the partial file goes."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.jsonl"), "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    for name in (PARTIAL, "run.json"):
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))


PARTIAL = "results.partial.jsonl"
# Summary fields that must agree for an earlier run's records to be reused.
RUN_KEYS = ("method", "label", "layers", "tokenizer", "tokenizer_digest", "llm", "seed", "lens_captions",
            "calibrate")
# A run setting that stored runs (or settings) may lack, read as the value every run without it had.
RUN_DEFAULTS = {"calibrate": "none"}
# Fields recorded since cross-style episodes and real-image LENS: a stored run without one of them is
# read as `_legacy_value` says (what every run of that time had, or _ANY where it was not written down).
DATA_KEYS = ("dataset", "query_dataset", "split", "lens_vision")
_ANY = object()


def _legacy_value(meta: dict, key: str):
    if key in meta:
        return meta[key]
    if key == "lens_vision":            # LENS ran on the toy-domain contrastive model only
        return "clip:offline" if meta.get("method") == "lens" else None
    return None if key == "query_dataset" else _ANY


def _same_run(meta: dict, settings: dict) -> bool:
    if any(meta.get(k, RUN_DEFAULTS.get(k)) != settings.get(k, RUN_DEFAULTS.get(k)) for k in RUN_KEYS):
        return False
    for k in DATA_KEYS:
        if k in settings and (v := _legacy_value(meta, k)) is not _ANY and v != settings[k]:
            return False
    return True


def checkpoint_digest(directory: str | None) -> str:
    """SHA-256 (first 16 hex digits) of an SPAE checkpoint's params and vocabulary, so records
    from a checkpoint retrained in the same directory are never reused."""
    from spae.tokenizer import resolve_checkpoint

    directory = resolve_checkpoint(directory)           # None: the default; a shipped name: its folder
    h = hashlib.sha256()
    for name in ("params.safetensors", "vocab.json"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:16]


def stored_episodes(out: str, settings: dict, episodes, open_ended_eval: bool) -> dict:
    """{episode index: records} from OUT's earlier results that can stand for this run.

    Reused only when OUT/summary.json (or, for a run killed before its summary, OUT/run.json)
    holds the same `settings` (RUN_KEYS, and the DATA_KEYS that `settings` has), and per episode
    only when its stored queries and labels are exactly this episode's, with open-ended answers
    present if they are asked for.
    """
    meta = None
    for name in ("summary.json", "run.json"):
        path = os.path.join(out, name)
        if os.path.exists(path):
            with open(path) as f:
                meta = json.load(f)
            break
    if meta is None or not _same_run(meta, settings):
        return {}
    by_episode: dict[int, list[dict]] = {}
    for name in ("results.jsonl", PARTIAL):
        path = os.path.join(out, name)
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    if line.strip():
                        r = json.loads(line)
                        by_episode.setdefault(int(r["episode"]), {})[int(r["query"])] = r
    done = {}
    for e_idx, recs in by_episode.items():
        if e_idx >= len(episodes):
            continue
        ep = episodes[e_idx]
        label_of = {int(c): n for c, n in zip(ep.classes, ep.class_names)}
        want = [(int(q), label_of[int(y)]) for q, y in zip(ep.query, ep.query_labels)]
        got = [recs.get(q) for q, _ in want]
        if all(r is not None and r["label"] == lab and (not open_ended_eval or "open_correct" in r)
               for r, (_, lab) in zip(got, want)):
            done[e_idx] = got
    return done


def run_resumable(out: str, settings: dict, llm, coder: ImageCoder, episodes, images: np.ndarray,
                  open_ended_eval: bool, progress: bool = True, query_images: np.ndarray | None = None):
    """`run`, reusing OUT's stored episodes (`stored_episodes`) and appending each new one to
    OUT/results.partial.jsonl as it finishes; the correction is settings["calibrate"] (default
    "none"). Returns (records, summary); writes no summary. In a multi-process run process 0 alone
    reads and writes OUT: it tells the others which episodes are stored, and appends theirs too."""
    import contextlib

    primary = distributed.is_primary()
    done = stored_episodes(out, settings, episodes, open_ended_eval) if primary else {}
    if distributed.process_count() > 1:       # process 0's stored records, for every process
        done = {int(k): v for k, v in distributed.allgather_json({str(k): v for k, v in done.items()})[0].items()}
    if done and progress and primary:
        print(f"reusing {len(done)} of {len(episodes)} episodes stored in {out}")
    if primary:
        os.makedirs(out, exist_ok=True)
        if not os.path.exists(os.path.join(out, "summary.json")):
            with open(os.path.join(out, "run.json"), "w") as f:
                json.dump(settings, f, indent=1)
    with open(os.path.join(out, PARTIAL), "a") if primary else contextlib.nullcontext() as partial:
        def save_episode(recs):
            partial.write("".join(json.dumps(r) + "\n" for r in recs))
            partial.flush()

        records, summary = run(llm, coder, episodes, images, open_ended_eval=open_ended_eval,
                               progress=progress, done=done, on_episode=save_episode if primary else None,
                               query_images=query_images,
                               calibrate=settings.get("calibrate", RUN_DEFAULTS["calibrate"]))
    summary["reused_episodes"] = len(done)
    return records, summary


REAL_IMAGE_DATASETS = ("emoji:", "tuxpaint")


def real_images(dataset: str) -> bool:
    """Emoji and Tux Paint are real pictures (LENS describes them with the real-image models)."""
    return dataset.startswith(REAL_IMAGE_DATASETS)


def make_coder(method: str, llm, layers: int, tokenizer_dir: str | None, seed: int, lens_captions: bool = False,
               lens_real: bool = False):
    """The ImageCoder of a method. lens_real: LENS with the ImageNet tagger (EfficientNet-Lite0) and the
    default (LiT) contrastive model, for real images; else with the toy-domain "offline" model."""
    if method in ("spae", "lqae", "random"):
        from spae import load_tokenizer

        if method == "lqae" and not tokenizer_dir:
            raise ValueError("--method lqae needs --tokenizer DIR (an SPAE checkpoint trained with the lqae config)")
        tok = load_tokenizer(tokenizer_dir, llm=llm)
        if method == "lqae":                     # one layer over the whole grid: use all of it
            return SpaeCoder(tok, tok.num_layers, name="lqae")
        spae = SpaeCoder(tok, layers)
        return spae if method == "spae" else RandomCoder(np.asarray(tok.vocab.llm_ids), spae.length, seed)
    if method == "lens":
        from lens import Lens

        # Classification uses LENS's tag and attribute modules (its object-recognition setup);
        # captions (its VQA setup) are opt-in: they cost ~60 prompt tokens per image.
        caption = {} if lens_captions else {"captioner": "none"}
        if lens_real:
            lens = Lens.load(llm=llm, vision="efficientnet-lite0", **caption)
        else:
            lens = Lens.load(llm=llm, clip="offline", **caption)
        return TextCoder(lambda images: [Lens.text(o) for o in lens.describe_images(images)], llm,
                         name="lens" if not lens_captions else "lens_captions", vision=lens_vision_name(lens))
    raise ValueError(f"unknown --method {method!r}; choose spae, lqae, lens or random")


def lens_vision_name(lens) -> str:
    """The vision models of a Lens, e.g. "clip:offline" or "imagenet:efficientnet-lite0+clip:lit", with
    "+captioner on efficientnet-lite0" when it captions."""
    from lens.pipeline import clip_label

    parts = [lens.photo_tagger.name] if lens.photo_tagger is not None else []
    scorer = lens.tagger or lens.attributer
    parts += [clip_label(scorer.clip)] if scorer is not None else []
    parts += [lens.captioner.label] if lens.captioner is not None else []
    return "+".join(parts) or "none"


@cli_main
def main(argv=None, llm=None) -> dict:
    """Run from the command line; `llm` lets a driver reuse one loaded model across runs."""
    ap = argparse.ArgumentParser(prog="python -m eval.fewshot", description=__doc__.split("\n")[0])
    ap.add_argument("--method", required=True, choices=["spae", "lqae", "lens", "random"])
    ap.add_argument("--episodes", required=True, help="episode CSV from python -m visiondata.episodes")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--layers", type=int, default=2, help="SPAE layers per image (spae; random matches its length)")
    ap.add_argument("--tokenizer", default=None, help="SPAE checkpoint dir (default: the shipped one)")
    ap.add_argument("--llm", default="smollm2-135m")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random control's tokens")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N episodes")
    ap.add_argument("--no-open-ended", action="store_true", help="skip greedy open-ended answers (faster)")
    ap.add_argument("--calibrate", choices=CALIBRATIONS, default="none",
                    help="label-bias correction of the closed-form answer: contextual (content-free queries), "
                         "orders (average over support orders), both, or none (default)")
    ap.add_argument("--lens-captions", action="store_true",
                    help="lens: add captions to tags and attributes (the LENS VQA setup; longer prompts)")
    ap.add_argument("--name", default=None, help="row name in reports (default: the method, e.g. spae_nosem)")
    add_debug_flag(ap)
    distributed.add_flags(ap)
    args = ap.parse_args(argv)
    distributed.initialize_from_args(args)          # before any JAX work; nothing without the flags
    if args.lens_captions and not args.name:
        args.name = "lens_captions"
    command = "python -m eval.fewshot " + " ".join(sys.argv[1:] if argv is None else argv)

    from backbones import load_llm
    from visiondata import episodes as episodes_mod

    eps = episodes_mod.read_csv(args.episodes)[:args.limit]
    if not eps:
        raise ValueError(f"{args.episodes} holds no episodes; write some with python -m visiondata.episodes")
    ds = {(e.dataset, e.query_dataset or e.dataset, e.split) for e in eps}
    if len(ds) != 1:
        raise ValueError(f"{args.episodes} mixes datasets/splits {sorted(ds)} (support dataset, query dataset, split); "
                         "use one file per dataset and split")
    dataset, query_dataset, split = ds.pop()
    query_dataset = None if query_dataset == dataset else query_dataset
    kw = {"num_scenes": episodes_mod.needed_scenes(eps)} if dataset.startswith("scenes") else {}
    images, _, _ = episodes_mod.load_dataset(dataset, split, **kw)
    query_images = None
    if query_dataset is not None:
        kw = {"num_scenes": episodes_mod.needed_scenes(eps)} if query_dataset.startswith("scenes") else {}
        query_images, _, _ = episodes_mod.load_dataset(query_dataset, split, **kw)
        if query_images.shape[1:] != images.shape[1:]:
            raise ValueError(f"{query_dataset} images are {query_images.shape[1:]}, {dataset} images "
                             f"{images.shape[1:]}: support and query images must have one shape")
    lens_real = real_images(dataset) or real_images(query_dataset or "")
    llm = llm or load_llm(args.llm)
    is_lens = args.method == "lens"
    settings = {"method": args.method, "label": args.name, "layers": None if is_lens else args.layers,
                "tokenizer": args.tokenizer, "tokenizer_digest": None if is_lens else checkpoint_digest(args.tokenizer),
                "lens_captions": args.lens_captions if is_lens else None, "llm": args.llm, "seed": args.seed,
                "calibrate": args.calibrate, "dataset": dataset, "query_dataset": query_dataset, "split": split}
    open_ended_eval = not args.no_open_ended
    coder = make_coder(args.method, llm, args.layers, args.tokenizer, args.seed, args.lens_captions, lens_real)
    # The models LENS loaded, e.g. "imagenet:efficientnet-lite0+clip:lit" (real images) or "clip:offline".
    settings["lens_vision"] = coder.vision if is_lens else None
    t = time.perf_counter()
    records, summary = run_resumable(args.out, settings, llm, coder, eps, images, open_ended_eval,
                                     query_images=query_images)
    e0 = eps[0]
    summary.update(settings)
    summary.update({"ways": e0.ways, "shots": e0.shots,
                    "episodes_file": os.path.abspath(args.episodes),
                    "seconds": round(time.perf_counter() - t, 1), "command": command,
                    "processes": distributed.process_count()})
    if not distributed.is_primary():
        return summary
    write_results(args.out, records, summary)
    line = f"{args.method} (calibrate {args.calibrate}): accuracy {summary['accuracy']:.3f} ± {summary['ci95']:.3f}"
    if "open_accuracy" in summary:
        line += f", open-ended {summary['open_accuracy']:.3f} ± {summary['open_ci95']:.3f}"
    source = dataset + (f" -> queries from {query_dataset}" if query_dataset else "")
    print(f"{line} over {summary['episodes']} episodes ({source}/{split} {e0.ways}-way {e0.shots}-shot) -> {args.out}")
    return summary


if __name__ == "__main__":
    main()
