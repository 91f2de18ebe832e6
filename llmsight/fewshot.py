"""In-context classification with the frozen LLM: the prompt, and corrections for its label bias.

Shared by `python -m eval.fewshot` (episode files) and `llmsight fewshot` (a user's own images).
Every image is a list of LLM token ids (SPAE tokens, or LENS text); the prompt is built from ids:

    <instruction>\n
    Input: <image ids> Output: <label>\n        (one line per support example)
    Input: <query ids> Output:

and the prediction is the label with the highest summed log-probability after it.

A small LLM (SmolLM2-135M) leans toward some labels whatever the input, and toward the label of the
last support example (recency). `label_log_probs(..., calibrate=...)` corrects for it:

- "none": the label log-probs after the prompt, normalised over the labels.
- "contextual" (Zhao et al., 2021, "Calibrate before use"): the label distribution after the same
  supports with content-free queries (`CONTENT_FREE_INPUTS`: "N/A", "[MASK]", nothing), averaged
  over them, measures the bias; the query's label probabilities are divided by it (its log-probs
  minus the content-free ones), then normalised again.
- "orders": the supports in one order per label, each a cyclic shift of the given order that ends
  with that label's last support (the given order first; two supports: given and reversed), so
  every label is last once; the normalised label log-probs are averaged over the orders.
- "both": contextual calibration within each order, then the average over the orders.

Cost: one `llm.score_batch` call (three forward passes, all queries as one batch) per order; the
content-free queries join the queries' batch.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

INSTRUCTION = "Each input is an image written as words. Answer with the label of the image."
CALIBRATIONS = ("none", "contextual", "orders", "both")
CONTENT_FREE_INPUTS = ("N/A", "[MASK]", "")


def build_prefix(llm, supports: Sequence[tuple[list[int], str]], instruction: str = INSTRUCTION) -> list[int]:
    """Instruction line, then one `Input: <ids> Output: <label>` line per support example."""
    out = llm.encode(instruction + "\n")
    for ids, label in supports:
        out += llm.encode("Input:") + list(ids) + llm.encode(f" Output: {label}\n")
    return out


def query_part(llm, query: list[int]) -> list[int]:
    """The query line `Input: <ids> Output:`, the label to follow."""
    return llm.encode("Input:") + list(query) + llm.encode(" Output:")


def content_free_queries(llm) -> list[list[int]]:
    """The ids of each content-free input (`CONTENT_FREE_INPUTS`), for the query line's slot."""
    return [llm.encode(" " + text) if text else [] for text in CONTENT_FREE_INPUTS]


def support_orders(labels: Sequence[str]) -> list[list[int]]:
    """One order of the supports per distinct label: the cyclic shift of the given order that ends
    with that label's last support; the given order first, then by the position of that support.

    support_orders(["cat", "dog"]) == [[0, 1], [1, 0]]
    support_orders(["a", "b", "c", "a", "b", "c"]) == [[0, 1, 2, 3, 4, 5], [5, 0, 1, 2, 3, 4], [4, 5, 0, 1, 2, 3]]
    """
    n = len(labels)
    last = {label: i for i, label in enumerate(labels)}
    ends = sorted(last.values(), reverse=True)          # the given order (ends at n - 1) first
    return [[(end + 1 + j) % n for j in range(n)] for end in ends]


def normalise_over_labels(scores: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis: summed label log-probs -> log-probs of a distribution over the labels."""
    scores = np.asarray(scores, np.float64)
    top = scores.max(axis=-1, keepdims=True)
    return scores - top - np.log(np.exp(scores - top).sum(axis=-1, keepdims=True))


def corrected_log_probs(query_scores: np.ndarray, content_free_scores: np.ndarray | None = None) -> np.ndarray:
    """(Q, N) label log-probs (normalised over the N labels) from the scores under O support orders.

    query_scores: (O, Q, N) summed log-probs of each label after each order's prompt and each query.
    content_free_scores: (O, C, N) the same after each order's supports and C content-free queries,
    or None for no contextual calibration. With them, each order's query distribution is divided by
    that order's mean content-free distribution (probabilities averaged over the C inputs). The
    orders' normalised log-probs are then averaged and normalised again.
    """
    logp = normalise_over_labels(query_scores)                                      # (O, Q, N)
    if content_free_scores is not None:
        bias = np.exp(normalise_over_labels(content_free_scores)).mean(axis=1)      # (O, N)
        logp = normalise_over_labels(logp - np.log(bias)[:, None, :])
    return normalise_over_labels(logp.mean(axis=0))


def label_log_probs(llm, supports: Sequence[tuple[list[int], str]], queries: Sequence[list[int]],
                    labels: Sequence[str], calibrate: str = "none") -> np.ndarray:
    """(Q, N) log-probs of `labels` for each query (image ids), normalised over the labels, after
    the label-bias correction `calibrate` (one of `CALIBRATIONS`); argmax is the prediction.

    supports: (image ids, label) in prompt order. llm: a `FrozenLLM` (encode, score_batch).
    """
    if calibrate not in CALIBRATIONS:
        raise ValueError(f"unknown calibration {calibrate!r}; choose one of {', '.join(CALIBRATIONS)}")
    if not queries:
        return np.zeros((0, len(labels)))
    contextual = calibrate in ("contextual", "both")
    orders = support_orders([label for _, label in supports]) if calibrate in ("orders", "both") \
        else [list(range(len(supports)))]
    lines = [query_part(llm, q) for q in queries]
    if contextual:
        lines += [query_part(llm, q) for q in content_free_queries(llm)]
    label_ids = [llm.encode(" " + label) for label in labels]
    scores = np.stack([llm.score_batch(build_prefix(llm, [supports[i] for i in order]), lines, label_ids)
                       for order in orders])                                        # (O, Q [+ C], N)
    Q = len(queries)
    return corrected_log_probs(scores[:, :Q], scores[:, Q:] if contextual else None)
