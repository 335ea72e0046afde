"""Which refinements to keep, and which rows make up each iteration's SFT set.

Pure functions over lists of row dicts: the recipe reads its stage tables, calls these, and
writes the result as the next stage. Nothing here remembers an earlier call, so an iteration
can only use the data handed to it (the authors' scripts reuse a stale ``solution`` variable
across iterations; see METHODS.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from raysys.data.io import DataError

_NUMBER_RUN = re.compile(r"\d+")
SHORTCUT_SLACK = 2


def count_numbers(text: str) -> int:
    """How many runs of digits ``text`` has (``"12+3=15"`` -> 3): the authors' measure of how
    much working a solution shows."""
    return len(_NUMBER_RUN.findall(text))


def is_shortcut(new: str, original: str, gold_solution: str | None = None,
                slack: int = SHORTCUT_SLACK) -> bool:
    """The shortcut barrier: a refinement that shows much less working than both the gold
    solution and the solution it refines jumped to the answer (METHODS.md).

    Rejects when ``n(new) < min(n(gold), n(original)) - slack`` with ``n`` = :func:`count_numbers`.
    Without a gold solution (``None`` or blank) the bound is ``n(original) - slack``: the minimum
    over what is known. That is at least as strict as with a gold solution, since a gold
    solution can only lower the minimum.
    """
    bounds = [count_numbers(original)]
    if gold_solution is not None and gold_solution.strip():
        bounds.append(count_numbers(gold_solution))
    return count_numbers(new) < min(bounds) - slack


_NUMBER = r"-?\d+(?:\.\d+)?"
_EQUATION = re.compile(rf"({_NUMBER})\s*([-+*/x\u00d7])\s*({_NUMBER})\s*=\s*({_NUMBER})")


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def unworked(new: str, question: str) -> bool:
    """A stricter keep rule than the authors' (``loop.keep: working``): ``new`` shows working
    that cannot be right. True when one of its equations ``a op b = c`` does not evaluate, or
    uses an operand that is neither a number of ``question`` nor the result of an earlier
    equation. A refinement that reaches the right answer through such working is right by luck.

    A heuristic for arithmetic word problems: an implicit constant (``2`` for "twice") counts as
    ungrounded, so on GSM8K it rejects some sound solutions too.
    """
    known = {_num(n) for n in re.findall(_NUMBER, question.replace(",", ""))}
    for a, op, b, c in _EQUATION.findall(new.replace(",", "")):
        x, y, z = _num(a), _num(b), _num(c)
        value = {"+": x + y, "-": x - y, "/": x / y if y else None}.get(op, x * y)
        if value is None or abs(value - z) > 1e-6 * max(1.0, abs(z)):
            return True
        if x not in known or y not in known:
            return True
        known.add(z)
    return False


@dataclass
class Selection:
    """Kept refinement rows and why the others were not kept (counts per reason)."""

    kept: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)


_NEEDED = ("problem_id", "sample_idx", "refined", "refined_correct", "original")


def select_refinements(rows: Sequence[Mapping[str, Any]], reserved_new_data: int,
                       slack: int = SHORTCUT_SLACK,
                       questions: Mapping[str, str] | None = None) -> Selection:
    """At most ``reserved_new_data`` correct, non-shortcut refinements per question; with
    ``questions`` (problem_id -> text) also none that is :func:`unworked` (``unworked``).

    Each row needs ``problem_id``, ``sample_idx``, ``refined``, ``refined_correct`` and
    ``original`` (the refined solution); ``gold_solution`` and ``refine_idx`` (which refinement
    of that sample) are optional. Within a question, candidates are taken in
    ``(sample_idx, refine_idx)`` order, so the result does not depend on how rows were sharded
    or ordered (the authors' cap is per GPU shard, a bug). A text identical to one already kept
    for the question is skipped (``duplicate``): it would add no new example. Stats:
    ``total, incorrect, shortcut, duplicate, over_cap, kept``.
    """
    if reserved_new_data < 0:
        raise ValueError(f"reserved_new_data: expected >= 0, got {reserved_new_data}")
    for i, r in enumerate(rows):
        missing = [f for f in _NEEDED if f not in r]
        if missing:
            raise DataError(f"refinement row {i}: missing field(s) {', '.join(missing)}")
    stats = dict.fromkeys(("total", "incorrect", "shortcut", "duplicate", "over_cap", "kept"), 0)
    if questions is not None:
        stats["unworked"] = 0
    stats["total"] = len(rows)
    order = sorted(range(len(rows)), key=lambda i: (str(rows[i]["problem_id"]),
                                                    int(rows[i]["sample_idx"]),
                                                    int(rows[i].get("refine_idx") or 0), i))
    kept: list[dict[str, Any]] = []
    seen: dict[str, set[str]] = {}
    for i in order:
        r = rows[i]
        texts = seen.setdefault(str(r["problem_id"]), set())
        refined = (r["refined"] or "").strip()
        if r["refined_correct"] is not True:
            stats["incorrect"] += 1
        elif is_shortcut(refined, r["original"] or "", r.get("gold_solution"), slack):
            stats["shortcut"] += 1
        elif questions is not None and unworked(refined, questions[str(r["problem_id"])]):
            stats["unworked"] += 1
        elif refined in texts:
            stats["duplicate"] += 1
        elif len(texts) >= reserved_new_data:
            stats["over_cap"] += 1
        else:
            texts.add(refined)
            kept.append(dict(r))
    stats["kept"] = len(kept)
    return Selection(kept, stats)


def direct_sft_rows(kept: Sequence[Mapping[str, Any]], questions: Mapping[str, str],
                    prompt: Callable[[str], str], target: Callable[[str], str] = str.strip,
                    source: str = "refined") -> list[dict[str, str]]:
    """Kept refinements as plain question -> solution examples (the authors train refinements
    as direct answers). ``questions`` maps problem_id to question text."""
    return [{"prompt": prompt(questions[r["problem_id"]]), "response": target(r["refined"]),
             "source": f"{source}:{r['problem_id']}"} for r in kept]


def feedback_sft_rows(kept: Sequence[Mapping[str, Any]], questions: Mapping[str, str],
                      prompt: Callable[[str, str, str], str],
                      target: Callable[[str], str] = str.strip) -> list[dict[str, str]]:
    """Kept refinements as critique-conditioned examples (question + original + critique ->
    refinement), the ``use_selfimprove_feedback`` data. Rows need a ``critique`` field."""
    return [{"prompt": prompt(questions[r["problem_id"]], r["original"], r["critique"]),
             "response": target(r["refined"]), "source": f"feedback:{r['problem_id']}"}
            for r in kept]


def _at(data: Mapping[int, list[dict[str, Any]]], i: int, name: str) -> list[dict[str, Any]]:
    if i not in data:
        raise DataError(f"assemble_sft: {name} has no rows for iteration {i} "
                        f"(has {sorted(data)}); every iteration's data must be passed in")
    return [dict(r) for r in data[i]]


def assemble_sft(iteration: int, *, use_original: bool, use_previous: bool, use_critic: bool,
                 use_selfimprove_feedback: bool, use_seed_feedback: bool = True,
                 seed: Sequence[Mapping[str, Any]] = (),
                 seed_feedback: Sequence[Mapping[str, Any]] = (),
                 correct: Mapping[int, list[dict[str, Any]]] | None = None,
                 refined: Mapping[int, list[dict[str, Any]]] | None = None,
                 feedback: Mapping[int, list[dict[str, Any]]] | None = None
                 ) -> list[dict[str, Any]]:
    """The SFT rows of ``iteration`` (METHODS.md, "SFT assembly and training").

    - ``seed`` (the authors' ``_0_origin``) when ``use_original`` or at iteration 0, with
      ``seed_feedback`` (``_0_new``, the seed critique data) when ``use_seed_feedback``
      (the authors' USE_GPT4_FEEDBACK);
    - for ``t >= 1``: the iterations ``1..t`` when ``use_previous``, else ``t`` alone, each
      adding ``correct[i]`` (correct samples), ``refined[i]`` when ``use_critic`` (kept
      refinements as direct answers) and ``feedback[i]`` when ``use_selfimprove_feedback``.

    Every needed iteration must be in the mappings (a missing one raises ``DataError`` rather
    than silently training on less). Rows are copied, never shared with the inputs.
    """
    if iteration < 0:
        raise ValueError(f"iteration: expected >= 0, got {iteration}")
    rows: list[dict[str, Any]] = []
    if use_original or iteration == 0:
        rows += [dict(r) for r in seed]
        if use_seed_feedback:
            rows += [dict(r) for r in seed_feedback]
    if iteration == 0:
        return rows
    for i in (range(1, iteration + 1) if use_previous else [iteration]):
        rows += _at(correct or {}, i, "correct")
        if use_critic:
            rows += _at(refined or {}, i, "refined")
        if use_selfimprove_feedback:
            rows += _at(feedback or {}, i, "feedback")
    return rows
