"""Dataset sources -> the ``problems`` table (id, source, question, gold_answer, gold_solution, meta).

``load_problems(spec)`` dispatches on ``spec.name``; each loader turns one source's rows into
problem rows. Files are JSONL, a JSON list or parquet (``raysys.data.io.read_records``); a
``path`` of ``hf://owner/name[/file]`` is fetched with ``huggingface_hub.snapshot_download`` first.

Gold answers: GSM8K-style sources take the text after ``####`` (commas removed); MATH takes the
last ``\\boxed{}``/``\\fbox{}`` of the solution. Both use :mod:`raysys.grading.extract`, the same
extraction that grades model output.

Fields read per source:

- ``gsm8k``: question, answer (worked solution ending ``#### n``); optional id.
- ``math``: problem, solution; meta: level, type, unique_id.
- ``math500``: problem, solution, answer; meta: subject, level, unique_id.
- ``w2s``: train_1/train_2 rows id, question, answer (``#### n``); test rows source, question,
  solution, answer, tag.
- ``olympiad`` (OlympicArena's published rows): id, problem, answer (list or string; a list is
  joined with ", "), solution; meta: answer_type, unit, subject, language, modality, answer list.
  Options ``language`` (e.g. ``EN``) and ``exclude_answer_types`` (e.g. ``[CODE, OT]``) filter rows.
- ``jsonl``: any file with ``spec.fields`` mapping our column -> their field (default: same
  name); options ``source`` (source column) and ``gold_from_solution`` (``hash``/``boxed``).
- ``synthetic``: :func:`raysys.data.synthetic.make_problems`; options n, seed, min_steps,
  max_steps, max_operand, ops.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from raysys.config import ConfigError, DatasetSpec
from raysys.data.io import DataError, read_records
from raysys.data.schema import conform
from raysys.data.synthetic import make_problems
from raysys.grading.extract import hash_answer, last_boxed

DATA_SUFFIXES = (".jsonl", ".json", ".parquet")
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
SYNTHETIC_OPTIONS = frozenset({"n", "seed", "min_steps", "max_steps", "max_operand", "ops"})
KNOWN_SOURCES: tuple[str, ...] = tuple(sorted([*FILE_SOURCES, "synthetic"]))


# ------------------------------------------------------------------------------------------
# Paths: local files, directories, hf:// and bundled samples
# ------------------------------------------------------------------------------------------


def bundled_path(name: str) -> Path:
    """Path of a file shipped in ``raysys/data/bundled`` (e.g. ``gsm8k_sample.jsonl``)."""
    root = importlib.resources.files("raysys.data") / "bundled"
    target = root / name
    if not target.is_file():
        have = sorted(p.name for p in root.iterdir() if p.is_file()) if root.is_dir() else []
        raise DataError(f"bundled data '{name}' not found (available: {', '.join(have) or 'none'})")
    return Path(str(target))


def _hf_download(path: str, key: str) -> Path:
    """``hf://owner/name[/file]`` -> a local file or snapshot directory."""
    parts = path[len("hf://"):].strip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise ConfigError(f"{key}.path: expected hf://owner/name[/file], got {path!r}")
    repo_id, file = "/".join(parts[:2]), "/".join(parts[2:]) or None
    try:
        import huggingface_hub
        from huggingface_hub import constants as hf_constants
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        raise DataError(f"{path}: huggingface_hub is not installed; download the file and "
                        "pass a local path") from None
    # HF_HUB_OFFLINE is read once at import; re-check so a late setting is honoured too.
    offline = hf_constants.HF_HUB_OFFLINE or \
        os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    try:
        local = huggingface_hub.snapshot_download(
            repo_id, repo_type="dataset", allow_patterns=[file] if file else None,
            local_files_only=offline)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, OSError) as e:
        why = "offline (HF_HUB_OFFLINE is set) and not in the local cache" if offline else \
            f"cannot download it ({type(e).__name__})"
        raise DataError(f"{path}: dataset '{repo_id}' is unavailable: {why}; download it "
                        "elsewhere and set the path to the local file") from None
    out = Path(str(local)) / file if file else Path(str(local))
    if not out.exists():
        raise DataError(f"{path}: '{file}' not found in dataset '{repo_id}'")
    return out


def _pick_file(directory: Path, split: str | None) -> Path:
    """The one data file in ``directory`` (optionally the one whose name contains ``split``)."""
    if any(directory.glob("part-*.parquet")):
        return directory   # a stage directory: read_records reads all its parts
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(directory).parts))
    if split:
        files = [p for p in files if split in p.stem]
    if len(files) == 1:
        return files[0]
    names = ", ".join(str(p.relative_to(directory)) for p in files[:10]) or "none"
    raise DataError(f"{directory}: expected one data file ({'/'.join(DATA_SUFFIXES)})"
                    f"{f' matching split {split!r}' if split else ''}, found: {names}; "
                    "point the path at one file or set options.split")


def resolve_path(spec: DatasetSpec, key: str = "data") -> Path:
    """The local data file (or stage dir) for ``spec.path``."""
    if spec.path is None:
        raise ConfigError(f"{key}.path: required for dataset '{spec.name}'")
    p = _hf_download(spec.path, key) if spec.path.startswith("hf://") else Path(spec.path).expanduser()
    if not p.exists():
        raise DataError(f"{p}: file not found")
    split = spec.options.get("split")
    return _pick_file(p, str(split) if split else None) if p.is_dir() else p


def _split_name(path: Path, spec: DatasetSpec) -> str:
    """``options.split``, else the file name: ``test.jsonl`` and ``test-00000-of-00001.parquet``
    (the hub's shard naming) both give ``test``."""
    if spec.options.get("split"):
        return str(spec.options["split"])
    stem = path.stem if path.is_file() else path.name
    return re.sub(r"-\d+-of-\d+$", "", stem)


# ------------------------------------------------------------------------------------------
# Entry points
# ------------------------------------------------------------------------------------------


def _check_options(spec: DatasetSpec, allowed: frozenset[str], key: str) -> None:
    for k in spec.options:
        if k not in allowed:
            raise ConfigError(f"{key}.options.{k}: unknown option for dataset '{spec.name}' "
                              f"(known: {', '.join(sorted(allowed)) or 'none'})")


def load_records_as_problems(spec: DatasetSpec, key: str = "data") -> list[dict[str, Any]]:
    """Problem rows (dicts) of a file-backed ``spec``; ``spec.limit`` caps the kept rows."""
    src = FILE_SOURCES[spec.name]
    path = resolve_path(spec, key)
    ctx = RowContext(file=path, split=_split_name(path, spec), spec=spec)
    source = spec.options.get("source") if spec.name == "jsonl" else None
    out: list[dict[str, Any]] = []
    for i, (lineno, row) in enumerate(read_records(path)):
        if spec.limit is not None and len(out) >= spec.limit:
            break
        prob = src.row_fn(i, lineno, row, ctx)
        if prob is None:
            continue
        prob.setdefault("source", source or spec.name)
        out.append(prob)
    if not out:
        raise DataError(f"{path}: no rows left after filtering (options: {spec.options})")
    return out


def synthetic_problems(spec: DatasetSpec, key: str = "data") -> list[dict[str, Any]]:
    """Problem rows of the synthetic task; ``options.n`` or ``limit`` sets the count."""
    opts = dict(spec.options)
    n = opts.pop("n", None)
    if n is None:
        n = spec.limit
    if n is None:
        raise ConfigError(f"{key}.options.n: required for dataset 'synthetic' (or set {key}.limit)")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"{key}.options.n: expected a positive int, got {n!r}")
    if spec.limit is not None:
        n = min(n, spec.limit)
    seed = opts.pop("seed", 0)
    try:
        problems = make_problems(n, seed, **opts)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{key}.options: {e}") from None
    return [{
        "id": p["id"], "source": "synthetic", "question": p["question"],
        "gold_answer": p["answer"], "gold_solution": p["solution"],
        "meta": json.dumps({"steps": p["steps"], "seed": seed}),
    } for p in problems]


def check_name(name: str, key: str = "data") -> None:
    """Raise ``ConfigError`` listing the known datasets when ``name`` is not one of them."""
    if name not in KNOWN_SOURCES:
        if looks_like_path(name):
            raise ConfigError(f"{key}.name: '{name}' looks like a file path, not a dataset name; "
                              f"expected NAME:PATH, e.g. jsonl:{name} or gsm8k:{name} "
                              f"(names: {', '.join(KNOWN_SOURCES)})")
        raise ConfigError(f"{key}.name: unknown dataset '{name}' (known: {', '.join(KNOWN_SOURCES)})")


def looks_like_path(name: str) -> bool:
    """True for a dataset "name" that is really a path (``--data test.jsonl`` without ``NAME:``)."""
    return "/" in name or "\\" in name or Path(name).suffix in DATA_SUFFIXES or Path(name).exists()


def load_problems(spec: DatasetSpec, key: str = "data") -> pa.Table:
    """Load ``spec`` as a ``problems`` table; ``key`` is the spec's config path for errors.

    Raises ``ConfigError`` for an unknown dataset name or option and ``DataError`` (naming
    file:line) for bad rows; nothing is written.
    """
    check_name(spec.name, key)
    if spec.name == "synthetic":
        _check_options(spec, SYNTHETIC_OPTIONS, key)
        return conform(synthetic_problems(spec, key), "problems")
    _check_options(spec, FILE_SOURCES[spec.name].options, key)
    if spec.name == "jsonl":
        _check_generic_spec(spec, key)
    return conform(load_records_as_problems(spec, key), "problems")
