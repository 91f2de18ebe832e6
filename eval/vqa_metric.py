"""The VQAv2 accuracy (OK-VQA uses the same one), written from the benchmark's published rules.

    from eval.vqa_metric import normalize_answer, vqa_accuracy, score_results
    vqa_accuracy("two", ["2"] * 3 + ["3"] * 7)            # 0.9: three humans said "2"
    score_results(questions, annotations, results)        # overall, per answer type, per question type

An answer scores min(#humans who gave it / 3, 1), averaged over the 10 ways of leaving one of the
ten human answers out. Before matching, the predicted answer is normalised (punctuation, number
words to digits, articles dropped, contractions restored: `normalize_answer`), and the human answers
get the punctuation step whenever they are not unanimous, as the reference evaluation does.

Per-type figures average the same per-question accuracy as the overall one (the challenge server's
rule; one older release of the reference script averaged only the last leave-one-out value there).
"""
from __future__ import annotations

import collections
import re
from typing import Iterable, Mapping, Sequence

NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})
# Marks removed (next to a space, or anywhere when the text has a digit-comma-digit) or else turned
# into a space. The period is handled apart: dropped unless it sits before a digit (decimals stay).
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
               ",", "?", "!")
_THOUSANDS = re.compile(r"(\d)(,)(\d)")
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")    # the reference's pattern, its odd lookbehind included

# The contracted words the reference restores, written with their apostrophes. A word typed without
# one of them (exactly one left out: "dont", "couldnt've", "couldn'tve") maps to the full form.
_CONTRACTED = """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't
he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've might've mustn't
must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't shouldn't've
somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's something'd
something'd've something'll that's there'd there'd've there're there's they'd they'd've they'll they're
they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's where'd where's
where've who'd who'd've who'll who's who've why'll why're why's won't would've wouldn't wouldn't've
y'all y'all'll y'all'd've you'd you'd've you'll you're you've
""".split()


def _contractions() -> dict[str, str]:
    table = {}
    for full in _CONTRACTED:
        cuts = [i for i, ch in enumerate(full) if ch == "'"]
        for i in cuts:
            table[full[:i] + full[i + 1:]] = full
    table["somebody'd"] = "somebodyd"   # the reference table's one entry that runs the other way
    return table


CONTRACTIONS = _contractions()


def strip_punctuation(text: str) -> str:
    out = text
    thousands = _THOUSANDS.search(text) is not None
    for mark in PUNCTUATION:
        if thousands or mark + " " in text or " " + mark in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out)


def digits_articles_contractions(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def normalize_answer(answer: str) -> str:
    """A predicted answer as the reference compares it: "Two dogs." -> "2 dogs"; "The Dont!" -> "don't"."""
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    return digits_articles_contractions(strip_punctuation(text))


def vqa_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """min(#matching humans / 3, 1) averaged over the len(human_answers) leave-one-out subsets (10 in VQAv2)."""
    if not human_answers:
        raise ValueError("a question needs at least one human answer")
    pred = normalize_answer(prediction)
    humans = [a.replace("\n", " ").replace("\t", " ").strip() for a in human_answers]
    if len(set(humans)) > 1:
        humans = [strip_punctuation(a) for a in humans]
    matches = sum(h == pred for h in humans)
    total = 0.0
    for h in humans:                      # leave this one out: the others that match
        total += min(1.0, (matches - (h == pred)) / 3.0)
    return total / len(humans)


def score_results(questions: Iterable[Mapping], annotations: Iterable[Mapping],
                  results: Iterable[Mapping]) -> dict:
    """VQAv2-format inputs -> {"overall", "per_answer_type", "per_question_type", "per_question", "n"}.

    questions: [{"question_id", "image_id", "question"}]; annotations: [{"question_id", "answers":
    [{"answer"}...], "answer_type", "question_type"}]; results: [{"question_id", "answer"}]. Every
    question needs an annotation and a result (a missing one is an error, not a zero). Figures are
    percentages, as the benchmark reports them."""
    anns = {int(a["question_id"]): a for a in annotations}
    preds = {int(r["question_id"]): str(r["answer"]) for r in results}
    qids = [int(q["question_id"]) for q in questions]
    missing_ann = [q for q in qids if q not in anns]
    missing_res = [q for q in qids if q not in preds]
    if missing_ann:
        raise ValueError(f"{len(missing_ann)} questions have no annotation, e.g. question_id {missing_ann[0]}")
    if missing_res:
        raise ValueError(f"{len(missing_res)} questions have no result, e.g. question_id {missing_res[0]}")
    if not qids:
        raise ValueError("no questions to score")
    per_q = {}
    by_answer, by_question = collections.defaultdict(list), collections.defaultdict(list)
    for q in qids:
        ann = anns[q]
        acc = vqa_accuracy(preds[q], [a["answer"] for a in ann["answers"]])
        per_q[q] = 100.0 * acc
        by_answer[ann.get("answer_type", "unknown")].append(100.0 * acc)
        by_question[ann.get("question_type", "unknown")].append(100.0 * acc)

    def mean(v):
        return sum(v) / len(v)

    return {"n": len(qids), "overall": mean(list(per_q.values())),
            "per_answer_type": {t: mean(v) for t, v in sorted(by_answer.items())},
            "per_question_type": {t: mean(v) for t, v in sorted(by_question.items())},
            "per_question": per_q}
