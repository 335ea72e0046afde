"""Pure data builders of the weak-to-strong recipe (Yang et al. 2024, "Weak-to-Strong Reasoning").

Stage I keeps a training question iff the weak model's answer is non-empty and equivalent to
the strong model's in-context-learning answer, and trains on the weak and/or ICL responses.
Stage II samples the stage-I model n times and builds preference pairs from the agreement
between its majority answer and the weak answer. Gold answers are used only to *report* the
accuracy of the built data, never to select it.

Everything here is a pure function of its inputs (plus an explicit ``random.Random``), so every
branch has a unit test; the recipe does the I/O.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Equiv = Callable[[str, str], bool]
Variant = Literal["hybrid", "weak", "icl"]


def _default_equiv() -> Equiv:
    from raysys.grading import is_equiv

    return is_equiv


@dataclass(frozen=True)
class Labeled:
    """One model answer to a question: the full response and its extracted final answer."""

    response: str
    pred: str


# ------------------------------------------------------------------------------------------
# Stage I
# ------------------------------------------------------------------------------------------


def agrees(weak_pred: str, icl_pred: str, equiv: Equiv) -> bool:
    """The stage-I filter: a non-empty weak answer equivalent to the ICL answer."""
    return bool(weak_pred.strip()) and bool(icl_pred.strip()) and equiv(weak_pred, icl_pred)


def build_stage1(questions: Sequence[dict[str, Any]], weak: dict[str, Labeled],
                 icl: dict[str, Labeled], prompt_of: Callable[[str], str], *,
                 equiv: Equiv | None = None) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Build the stage-I SFT sets from weak and ICL answers to the same questions.

    ``questions``: rows with ``id``, ``question`` and optionally ``gold_answer``.
    Returns ``({"hybrid": rows, "weak": rows, "icl": rows}, stats)``; rows follow the ``sft``
    schema (prompt, response, source). ``hybrid`` holds both responses of each kept question
    (2 rows per question). Stats: questions, kept, and each variant's accuracy against gold
    (``None`` when no gold is known).
    """
    eq = equiv or _default_equiv()
    sets: dict[str, list[dict[str, Any]]] = {"hybrid": [], "weak": [], "icl": []}
    correct = {"weak": 0, "icl": 0}
    graded = 0
    kept = 0
    for q in questions:
        w, s = weak.get(q["id"]), icl.get(q["id"])
        if w is None or s is None or not agrees(w.pred, s.pred, eq):
            continue
        kept += 1
        prompt = prompt_of(q["question"])
        weak_row = {"prompt": prompt, "response": w.response, "source": f"weak:{q['id']}"}
        icl_row = {"prompt": prompt, "response": s.response, "source": f"icl:{q['id']}"}
        sets["weak"].append(weak_row)
        sets["icl"].append(icl_row)
        sets["hybrid"] += [weak_row, icl_row]
        gold = q.get("gold_answer")
        if gold:
            graded += 1
            correct["weak"] += eq(w.pred, gold)
            correct["icl"] += eq(s.pred, gold)
    stats: dict[str, Any] = {"questions": len(questions), "kept": kept,
                             "kept_frac": kept / len(questions) if questions else 0.0}
    for v in ("weak", "icl"):
        stats[f"{v}_acc"] = correct[v] / graded if graded else None
    stats["hybrid_acc"] = ((correct["weak"] + correct["icl"]) / (2 * graded)) if graded else None
    return sets, stats


def labels_accuracy(questions: Sequence[dict[str, Any]], labels: dict[str, Labeled],
                    equiv: Equiv | None = None) -> float | None:
    """Share of questions (with gold) whose label equals gold: how good the weak labels are."""
    eq = equiv or _default_equiv()
    graded = [(labels[q["id"]].pred, q["gold_answer"]) for q in questions
              if q.get("gold_answer") and q["id"] in labels]
    if not graded:
        return None
    return sum(bool(p.strip()) and eq(p, g) for p, g in graded) / len(graded)


# ------------------------------------------------------------------------------------------
# Stage II
# ------------------------------------------------------------------------------------------


def _same(a: str, b: str, eq: Equiv) -> bool:
    """Equivalence that never equates an empty answer with a non-empty one."""
    ea, eb = not a.strip(), not b.strip()
    if ea or eb:
        return ea and eb
    return a == b or eq(a, b)


def majority(preds: Sequence[str], equiv: Equiv | None = None) -> tuple[str, float, list[int]]:
    """Majority answer (``raysys.grading.metrics.majority_vote``), its share (the paper's
    confidence) and the indices of the samples voting for it."""
    from raysys.grading.metrics import majority_vote

    if not preds:
        return "", 0.0, []
    eq = equiv or _default_equiv()
    maj = majority_vote(list(preds))
    voters = [i for i, p in enumerate(preds) if _same(p, maj, eq)]
    return maj, len(voters) / len(preds), voters


@dataclass(frozen=True)
class PairRule:
    """Stage-II thresholds (the paper's defaults) and how many pairs one question may yield."""

    min_confidence: float = 0.6      # below: skip the question
    high_confidence: float = 0.8     # disagreeing with the weak answer needs at least this
    max_pairs: int = 1               # MATH-like data: up to 3 rejected (or chosen) responses


def build_pairs_for_question(prompt: str, weak: Labeled, samples: Sequence[Labeled],
                             rng: random.Random, rule: PairRule = PairRule(), *,
                             equiv: Equiv | None = None) -> tuple[list[dict[str, Any]], str]:
    """Preference pairs for one question, and the branch taken (for stats and tests).

    Branches (in order): ``no_samples``; ``low_confidence`` (majority share < min);
    ``empty_majority``; ``weak_agrees`` -> chosen = the weak response, rejected = random
    non-majority samples (``no_negative`` when none); ``strong_overrules`` (share >= high)
    -> chosen = random majority samples, rejected = the weak response; else ``uncertain``.
    """
    eq = equiv or _default_equiv()
    if not samples:
        return [], "no_samples"
    maj, conf, voters = majority([s.pred for s in samples], eq)
    if conf < rule.min_confidence:
        return [], "low_confidence"
    if not maj.strip():
        return [], "empty_majority"
    meta = {"majority": maj, "confidence": conf, "weak_pred": weak.pred}
    if weak.pred.strip() and eq(weak.pred, maj):
        others = [i for i in range(len(samples)) if i not in set(voters)]
        if not others:
            return [], "no_negative"
        picks = rng.sample(others, min(rule.max_pairs, len(others)))
        return [{"prompt": prompt, "chosen": weak.response, "rejected": samples[i].response,
                 "meta": json.dumps({**meta, "branch": "weak_agrees", "sample_idx": i})}
                for i in picks], "weak_agrees"
    if conf >= rule.high_confidence:
        picks = rng.sample(list(voters), min(rule.max_pairs, len(voters)))
        return [{"prompt": prompt, "chosen": samples[i].response, "rejected": weak.response,
                 "meta": json.dumps({**meta, "branch": "strong_overrules", "sample_idx": i})}
                for i in picks], "strong_overrules"
    return [], "uncertain"


def build_stage2(questions: Sequence[dict[str, Any]], weak: dict[str, Labeled],
                 samples: dict[str, list[Labeled]], prompt_of: Callable[[str], str], *,
                 rule: PairRule = PairRule(), seed: int = 0,
                 equiv: Equiv | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Stage-II pairs over all questions (``pairs`` schema rows) and branch counts.

    One ``random.Random(seed)`` is consumed in question order, so the output depends only on
    the inputs and the seed. ``chosen_acc`` reports how often chosen is correct (gold known).
    """
    eq = equiv or _default_equiv()
    rng = random.Random(seed)
    pairs: list[dict[str, Any]] = []
    branches: dict[str, int] = {}
    chosen_correct = graded = 0
    for q in questions:
        if q["id"] not in weak:
            continue
        got, branch = build_pairs_for_question(prompt_of(q["question"]), weak[q["id"]],
                                               samples.get(q["id"], []), rng, rule, equiv=eq)
        branches[branch] = branches.get(branch, 0) + 1
        gold = q.get("gold_answer")
        for p in got:
            if gold:
                graded += 1
                chosen_pred = (weak[q["id"]].pred if json.loads(p["meta"])["branch"] == "weak_agrees"
                               else json.loads(p["meta"])["majority"])
                chosen_correct += eq(chosen_pred, gold)
        pairs += got
    stats = {"pairs": len(pairs), "branches": branches,
             "chosen_acc": chosen_correct / graded if graded else None}
    return pairs, stats
