"""Test-time critique -> refine rounds: the vote over rounds and the per-round accuracy/cost table.

Round 0 holds a question's initial answers, round ``r >= 1`` the answers of the ``r``-th
refinement. A round may be empty for a question (an oracle or critic gate left it alone, or
nothing was generated); every function here accepts that (the authors' vote raises IndexError
on an empty bucket). Votes group equivalent answers (:func:`raysys.grading.metrics.majority_vote`),
so ``0.5`` and ``1/2`` vote together, and ties go to the first-seen answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from raysys.grading import is_equiv, majority_vote, wilson_interval

Mode = Literal["last", "majority", "pass"]
MODES: tuple[str, ...] = ("last", "majority", "pass")


@dataclass(frozen=True)
class Vote:
    """The chosen answer (``""`` when none) and whether it matches gold (None without gold)."""

    answer: str
    correct: bool | None


def _correct(answer: str, gold: str | None) -> bool | None:
    if gold is None:
        return None
    return bool(answer.strip()) and is_equiv(answer, gold)


def vote_rounds(answers_per_round: Sequence[Sequence[str]], mode: str,
                gold: str | None = None) -> Vote:
    """One question's answer over its rounds.

    ``last``: the latest round with answers (its majority when it has several), so a question
    the gate stopped refining keeps its earlier answer; a refinement that was made but holds
    no answer is the answer ``""`` (wrong), not a skipped round. ``majority``: a vote over every
    answer of every round. ``pass``: correct when any answer is (the answer shown is the first
    correct one, else the majority; without gold it is the majority and ``correct`` is None).
    No answers at all -> ``Vote("", False)`` (``None`` without gold): counted wrong, not dropped.
    """
    if mode not in MODES:
        raise ValueError(f"vote mode: expected one of {', '.join(MODES)}, got {mode!r}")
    rounds = [[a for a in r if a is not None] for r in answers_per_round]
    everything = [a for r in rounds for a in r]
    if mode == "last":
        latest = next((r for r in reversed(rounds) if r), [])
        answer = majority_vote(latest) if latest else ""
        return Vote(answer, _correct(answer, gold))
    answer = majority_vote(everything) if everything else ""
    if mode == "pass" and gold is not None:
        hit = next((a for a in everything if _correct(a, gold)), None)
        return Vote(hit, True) if hit is not None else Vote(answer, False)
    return Vote(answer, _correct(answer, gold))


@dataclass(frozen=True)
class RoundCost:
    """What round ``r`` cost over all questions: tokens generated (critiques + refinements, or
    the initial answers for round 0) and wall time in seconds."""

    tokens: int
    wall_s: float


def round_table(answers: Mapping[str, Sequence[Sequence[str]]], golds: Mapping[str, str],
                costs: Sequence[RoundCost], modes: Sequence[str] = MODES) -> list[dict[str, float]]:
    """One row per round ``r``: accuracy of each mode using rounds ``0..r`` only, with a Wilson
    95% interval, and the cost of that round and up to it.

    ``answers`` maps problem_id to its answers per round (a question may have fewer rounds than
    others: the missing ones are empty). The denominator is every question in ``golds``
    (a question without answers counts as wrong); an answer for a question without gold raises.
    """
    extra = sorted(set(answers) - set(golds))
    if extra:
        raise ValueError(f"round_table: answers for problems without gold: {extra[:5]}")
    n_rounds = max([len(costs)] + [len(a) for a in answers.values()])
    if len(costs) != n_rounds:
        raise ValueError(f"round_table: {n_rounds} rounds of answers but {len(costs)} costs")
    table: list[dict[str, float]] = []
    tokens = 0
    wall = 0.0
    for r in range(n_rounds):
        tokens += costs[r].tokens
        wall += costs[r].wall_s
        row: dict[str, float] = {"round": r, "n": len(golds), "tokens": costs[r].tokens,
                                 "wall_s": costs[r].wall_s, "tokens_total": tokens,
                                 "wall_s_total": wall}
        for mode in modes:
            hits = sum(bool(vote_rounds(list(answers.get(pid, ()))[:r + 1], mode, gold).correct)
                       for pid, gold in golds.items())
            lo, hi = wilson_interval(hits, len(golds))
            row.update({mode: hits / len(golds) if golds else 0.0,
                        f"{mode}_lo": lo, f"{mode}_hi": hi})
        table.append(row)
    return table


def format_round_table(table: Sequence[Mapping[str, float]], modes: Sequence[str] = MODES) -> str:
    """The table as Markdown: accuracy in percent with its interval, tokens and seconds."""
    head = ["round"] + [f"{m} acc [95% CI]" for m in modes] + ["tokens", "tokens total",
                                                                 "wall s", "wall s total"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        cells = [str(int(row["round"]))]
        cells += [f"{100 * row[m]:.1f} [{100 * row[f'{m}_lo']:.1f}, {100 * row[f'{m}_hi']:.1f}]"
                  for m in modes]
        cells += [str(int(row["tokens"])), str(int(row["tokens_total"])),
                  f"{row['wall_s']:.1f}", f"{row['wall_s_total']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
