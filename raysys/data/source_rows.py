"""Row converters of the file-backed dataset sources: one function per format (GSM8K, MATH,
MATH500, the weak-to-strong splits, OlympicArena, generic JSONL) turning a raw record into a
``problems`` row, each error naming the file and line."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raysys.config import ConfigError, DatasetSpec
from raysys.data.io import DataError
from raysys.grading.extract import hash_answer, last_boxed

GENERIC_COLUMNS = ("id", "question", "gold_answer", "gold_solution", "source", "meta")


@dataclass(frozen=True)
class RowContext:
    """Where a row came from, for ids and error messages."""

    file: Path
    split: str
    spec: DatasetSpec

    def where(self, lineno: int) -> str:
        return f"{self.file}:{lineno}"


RowFn = Callable[[int, int, dict[str, Any], RowContext], dict[str, Any] | None]


# ------------------------------------------------------------------------------------------
# Small pure helpers
# ------------------------------------------------------------------------------------------


def strip_calculator_annotations(text: str) -> str:
    """Remove GSM8K's ``<<48/2=24>>`` calculator annotations."""
    return re.sub(r"<<[^<>]*>>", "", text)


def gsm8k_gold(solution: str) -> str | None:
    """The ``#### n`` answer of a GSM8K solution with thousands separators removed."""
    raw = hash_answer(solution)
    return raw.replace(",", "").strip() if raw else None


def olympiad_gold(answer: Any) -> str | None:
    """OlympicArena's ``answer`` (a list of strings, a string, or null) as one string."""
    if answer is None:
        return None
    if isinstance(answer, (list, tuple)):
        parts = [str(a) for a in answer if a is not None and str(a) != ""]
        if any(isinstance(a, float) and not math.isfinite(a) for a in answer):
            raise DataError(f"'answer' is {answer!r}; expected finite numbers or text")
        return ", ".join(parts) if parts else None
    if isinstance(answer, float) and not math.isfinite(answer):
        raise DataError(f"'answer' is {answer!r}; expected a finite number or text")
    return str(answer)


def _require(row: dict[str, Any], field: str, ctx: RowContext, lineno: int,
             numeric_ok: bool = False) -> str:
    """``row[field]`` as text; a number is accepted (as its string) only when ``numeric_ok``."""
    value = row.get(field)
    if value is None:
        raise DataError(f"{ctx.where(lineno)}: missing field '{field}' "
                        f"(dataset '{ctx.spec.name}' needs it)")
    if isinstance(value, str):
        return value
    if numeric_ok and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _number_text(value, field, ctx.where(lineno))
    raise DataError(f"{ctx.where(lineno)}: field '{field}' must be a string"
                    f"{' or number' if numeric_ok else ''}, got {type(value).__name__}")


def _number_text(value: int | float, field: str, where: str) -> str:
    """A numeric field as text; NaN / inf (a parquet float, a JSON ``Infinity``) is refused:
    as a gold answer it would grade "inf" outputs correct, or nothing at all."""
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(f"{where}: field '{field}' is {value}; expected a finite number or text")
    return str(value)


def _meta(**kw: Any) -> str:
    return json.dumps({k: v for k, v in kw.items() if v is not None}, ensure_ascii=False,
                      sort_keys=True, default=str)


# ------------------------------------------------------------------------------------------
# Per-source row converters: (index, lineno, row, ctx) -> problem row (None = filtered out)
# ------------------------------------------------------------------------------------------


def _gsm8k_row(i: int, lineno: int, row: dict[str, Any], ctx: RowContext) -> dict[str, Any]:
    question = _require(row, "question", ctx, lineno)
    answer = _require(row, "answer", ctx, lineno, numeric_ok=True)
    gold = gsm8k_gold(answer)
    if not gold:
        raise DataError(f"{ctx.where(lineno)}: field 'answer' has no '#### <number>' line")
    solution = strip_calculator_annotations(answer) if ctx.spec.options.get("strip_calc") else answer
    pid = row.get("id")
    return {
        "id": str(pid) if pid is not None else f"gsm8k-{ctx.split}-{i}",
        "question": question, "gold_answer": gold, "gold_solution": solution,
        "meta": _meta(split=ctx.split),
    }


def _math_row(i: int, lineno: int, row: dict[str, Any], ctx: RowContext) -> dict[str, Any]:
    question = _require(row, "problem", ctx, lineno)
    solution = _require(row, "solution", ctx, lineno, numeric_ok=True)
    gold = last_boxed(solution)
    if gold is None:
        raise DataError(f"{ctx.where(lineno)}: field 'solution' has no \\boxed{{...}} answer")
    uid = row.get("unique_id")
    # Two MATH train solutions end in an empty `\boxed{}` (an upstream defect): keep the
    # problem without a gold answer, so it is sampled but never graded.
    return {
        "id": str(uid) if uid else f"math-{ctx.split}-{i}",
        "question": question, "gold_answer": gold.strip() or None, "gold_solution": solution,
        "meta": _meta(level=row.get("level"), type=row.get("type"), unique_id=uid),
    }


def _math500_row(i: int, lineno: int, row: dict[str, Any], ctx: RowContext) -> dict[str, Any]:
    question = _require(row, "problem", ctx, lineno)
    answer = _require(row, "answer", ctx, lineno, numeric_ok=True)
    uid = row.get("unique_id")
    return {
        "id": str(uid) if uid else f"math500-{ctx.split}-{i}",
        "question": question, "gold_answer": answer, "gold_solution": row.get("solution"),
        "meta": _meta(subject=row.get("subject"), level=row.get("level"), unique_id=uid),
    }


def _w2s_row(i: int, lineno: int, row: dict[str, Any], ctx: RowContext) -> dict[str, Any]:
    if "solution" in row:
        # processed test split: the answer is already extracted
        question = _require(row, "question", ctx, lineno)
        answer = _require(row, "answer", ctx, lineno, numeric_ok=True).replace(",", "")
        return {
            "id": f"w2s-{ctx.split}-{i}", "question": question, "gold_answer": answer,
            "gold_solution": row["solution"],
            "meta": _meta(split=ctx.split, origin=row.get("source"), tag=row.get("tag") or None),
        }
    out = _gsm8k_row(i, lineno, row, ctx)
    if row.get("id") is None:
        out["id"] = f"w2s-{ctx.split}-{i}"
    return out


def _olympiad_row(i: int, lineno: int, row: dict[str, Any], ctx: RowContext) -> dict[str, Any] | None:
    opts = ctx.spec.options
    if opts.get("language") and row.get("language") != opts["language"]:
        return None
    if row.get("answer_type") in set(opts.get("exclude_answer_types") or ()):
        return None
    question = _require(row, "problem", ctx, lineno)
    pid = row.get("id")
    answer = row.get("answer")
    try:
        gold = olympiad_gold(answer)
    except DataError as e:
        raise DataError(f"{ctx.where(lineno)}: field {e}") from None
    return {
        "id": str(pid) if pid is not None else f"olympiad-{ctx.split}-{i}",
        "question": question, "gold_answer": gold,
        "gold_solution": row.get("solution") or None,
        "meta": _meta(answer_type=row.get("answer_type"), unit=row.get("unit"),
                      subject=row.get("subject"), language=row.get("language"),
                      modality=row.get("modality"),
                      answers=list(answer) if isinstance(answer, (list, tuple)) else None),
    }


def _check_generic_spec(spec: DatasetSpec, key: str) -> None:
    """``spec.fields`` name columns the generic loader can fill; ``gold_from_solution`` is known."""
    for ours in spec.fields:
        if ours not in GENERIC_COLUMNS:
            raise ConfigError(f"{key}.fields.{ours}: unknown column (known: {', '.join(GENERIC_COLUMNS)})")
    style = spec.options.get("gold_from_solution")
    if style not in (None, "hash", "boxed"):
        raise ConfigError(f"{key}.options.gold_from_solution: expected 'hash' or 'boxed', got {style!r}")


def _generic_row(i: int, lineno: int, row: dict[str, Any], ctx: RowContext) -> dict[str, Any]:
    mapping = ctx.spec.fields
    out: dict[str, Any] = {}
    for ours in GENERIC_COLUMNS:
        theirs = mapping.get(ours, ours)
        value = row.get(theirs)
        # Mapped fields (and `question`) must be present; unmapped ones are taken when present.
        if value is None and (ours in mapping or ours == "question"):
            raise DataError(f"{ctx.where(lineno)}: missing field '{theirs}' (mapped to column '{ours}')")
        if value is not None:
            out[ours] = value if isinstance(value, str) else _as_text(value, theirs, ctx.where(lineno))
    style = ctx.spec.options.get("gold_from_solution")
    if out.get("gold_answer") is None and out.get("gold_solution") and style:
        sol = out["gold_solution"]
        out["gold_answer"] = gsm8k_gold(sol) if style == "hash" else last_boxed(sol)
    out.setdefault("id", f"{ctx.split}-{i}")
    if "meta" not in out:
        # keep the fields we did not map, so nothing in the source row is lost
        used = {mapping.get(c, c) for c in GENERIC_COLUMNS}
        rest = {k: v for k, v in row.items() if k not in used}
        out["meta"] = json.dumps(rest, ensure_ascii=False, sort_keys=True, default=str)
    return out


def _as_text(value: Any, field: str = "", where: str = "") -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return _number_text(value, field, where)
    return str(value)


@dataclass(frozen=True)
class FileSource:
    """A file-backed source: its row converter and the option keys it accepts."""

    row_fn: RowFn
    options: frozenset[str] = frozenset()


FILE_SOURCES: dict[str, FileSource] = {
    "gsm8k": FileSource(_gsm8k_row, frozenset({"split", "strip_calc"})),
    "math": FileSource(_math_row, frozenset({"split"})),
    "math500": FileSource(_math500_row, frozenset({"split"})),
    "w2s": FileSource(_w2s_row, frozenset({"split", "strip_calc"})),
    "olympiad": FileSource(_olympiad_row, frozenset({"split", "language", "exclude_answer_types"})),
    "jsonl": FileSource(_generic_row, frozenset({"split", "source", "gold_from_solution"})),
}
