"""The generation specs of critique-in-the-loop: critique rows and refinement rows.

Both stages are the generic generation stage (:mod:`raysys.distributed.generation`) with
``critiques`` rows out; a critique is keyed by the solution it judges (``problem_id#sample_idx``),
a refinement by that key and its ``refine_idx``. Row builders are module functions (picklable)
and parse/grade where the text is made, so an unparsable critique or a refinement without an
answer is a counted row (verdict ``unknown``, ``refined_pred`` empty), never a crash.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from raysys.critique.format import parse_critique, steps_json
from raysys.distributed.generation import GenerationSpec
from raysys.engines.base import Completion


def solution_key(problem_id: str, sample_idx: int) -> str:
    """The key of one solution (the input key of its critique)."""
    return f"{problem_id}#{sample_idx}"


def _critique_key(row: dict[str, Any]) -> tuple[str, int]:
    return solution_key(row["problem_id"], row["sample_idx"]), 0


def _refine_key(row: dict[str, Any]) -> tuple[str, int]:
    return solution_key(row["problem_id"], row["sample_idx"]), int(row["refine_idx"])


def critique_rows(work: list[dict[str, Any]], completions: list[list[Completion]], *,
                  round_: int | None) -> list[dict[str, Any]]:
    """One ``critiques`` row per critique, parsed: verdict, per-step verdicts, first wrong step."""
    out = []
    for w, comps in zip(work, completions):
        item = w["item"]
        for c in comps:
            parsed = parse_critique(c.text)
            out.append({"problem_id": item["problem_id"], "sample_idx": item["sample_idx"],
                        "critique": c.text, "verdict": parsed.verdict, "steps": steps_json(parsed),
                        "first_wrong_step": parsed.first_wrong_step, "round": round_,
                        "num_tokens": len(c.token_ids)})
    return out


def refine_rows(work: list[dict[str, Any]], completions: list[list[Completion]], *,
                grade_style: str, round_: int | None) -> list[dict[str, Any]]:
    """One ``critiques`` row per refinement (the critique copied), graded against gold."""
    from raysys.grading import extract_answer, grade

    out = []
    for w, comps in zip(work, completions):
        item = w["item"]
        for idx, c in zip(w["idxs"], comps):
            gold = item.get("gold_answer")
            if gold:
                pred, correct = grade(c.text, gold, grade_style)
            else:
                pred, correct = extract_answer(c.text, grade_style), None
            out.append({"problem_id": item["problem_id"], "sample_idx": item["sample_idx"],
                        "critique": item["critique"], "verdict": item.get("verdict"),
                        "steps": item.get("steps"), "first_wrong_step": item.get("first_wrong_step"),
                        "refined": c.text, "refined_pred": pred, "refined_correct": correct,
                        "refine_idx": int(idx), "round": round_, "num_tokens": len(c.token_ids)})
    return out


def critique_spec(round_: int | None = None) -> GenerationSpec:
    """Critiques of solutions (input rows: problem_id, sample_idx)."""
    return GenerationSpec("critiques", partial(critique_rows, round_=round_), key=_critique_key)


def refine_spec(grade_style: str, round_: int | None = None) -> GenerationSpec:
    """Refinements of (solution, critique) rows (input rows also carry critique, gold_answer)."""
    return GenerationSpec("critiques", partial(refine_rows, grade_style=grade_style, round_=round_),
                          key=_refine_key)


def critique_stats(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Counts of verdicts (``unknown`` = no parsable verdict) over critique rows."""
    out = {"critiques": len(rows), "wrong": 0, "correct": 0, "unknown": 0, "empty": 0}
    for r in rows:
        out[r.get("verdict") or "unknown"] = out.get(r.get("verdict") or "unknown", 0) + 1
        out["empty"] += not (r.get("critique") or "").strip()
    return out


def refine_stats(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Counts over refinement rows: correct, wrong, and without any answer."""
    return {"refinements": len(rows),
            "correct": sum(r.get("refined_correct") is True for r in rows),
            "no_answer": sum(not (r.get("refined_pred") or "").strip() for r in rows)}
