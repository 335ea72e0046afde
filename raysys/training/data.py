"""Training rows from disk: parquet file, stage dir, LLaMA-Factory JSON, or JSONL.

Every row is checked on the driver before any worker starts, so a pairs file missing
``chosen`` fails once, naming ``file:line`` and what a row of that kind needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raysys.data.io import DataError, read_records
from raysys.data.schema import RENDERS

# The fields a row of each table kind must carry (a training kind declares its table kind).
REQUIRED = {
    "sft": ("prompt", "response"),
    "pairs": ("prompt", "chosen", "rejected"),
    "token_pairs": ("messages", "samples"),
}


def _from_llama_factory(row: dict[str, Any], table_kind: str, where: str) -> dict[str, Any]:
    """Map a LLaMA-Factory alpaca row (instruction/input/output) onto our columns."""
    if "instruction" not in row or table_kind == "token_pairs":
        return row
    from raysys.data import formats

    cols = dict(formats._ALPACA_DEFAULTS)
    return formats._alpaca_record(row, cols, table_kind == "pairs", where)


def _check_row(row: dict[str, Any], table_kind: str, where: str) -> dict[str, Any]:
    need = REQUIRED[table_kind]
    missing = [f for f in need if f not in row or row[f] is None]
    if missing:
        raise DataError(f"{where}: missing field '{missing[0]}' "
                        f"({table_kind} rows need {', '.join(need)})")
    for f in need:
        if table_kind == "token_pairs":
            continue
        if not isinstance(row[f], str):
            raise DataError(f"{where}: field '{f}' must be a string, got {type(row[f]).__name__}")
    if table_kind == "token_pairs":
        msgs = row["messages"]
        if isinstance(msgs, str):
            try:
                msgs = json.loads(msgs)
            except json.JSONDecodeError:
                raise DataError(f"{where}: 'messages' is not a JSON list of {{role, content}}") from None
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and "content" in m for m in msgs):
            raise DataError(f"{where}: 'messages' must be a list of {{role, content}} objects")
        samples = row["samples"]
        if not isinstance(samples, list) or not all(
                isinstance(s, (list, tuple)) and len(s) == 3 for s in samples):
            raise DataError(f"{where}: 'samples' must be a list of [position, gt_token, neg_token]")
        render = row.get("render")
        if render is not None and render not in RENDERS:
            raise DataError(f"{where}: 'render' must be 'chat' or 'text', got {render!r}")
        return {"messages": msgs, "samples": [list(map(int, s)) for s in samples],
                "render": render}
    out = {f: row[f] for f in need}
    meta = row.get("meta")
    if meta:
        try:
            out["meta"] = json.loads(meta) if isinstance(meta, str) else dict(meta)
        except (json.JSONDecodeError, TypeError, ValueError):
            raise DataError(f"{where}: 'meta' must be a JSON object") from None
    return out


def load_rows(path: str | Path, kind: str) -> list[dict[str, Any]]:
    """Read and validate the rows of training kind ``kind`` (any registered kind).

    Raises :class:`DataError` naming the file and line for a missing file, malformed JSON,
    a missing field, or an empty dataset.
    """
    from raysys.training.kinds import get_kind

    table_kind = get_kind(kind).table_kind
    p = Path(path).expanduser()
    if p.is_dir() and (p / "dataset_info.json").is_file():
        return _from_llama_factory_dir(p, table_kind)
    records = read_records(p)
    sep = ":" if p.suffix == ".jsonl" else ": row "
    return [_check_row(_from_llama_factory(row, table_kind, f"{p}{sep}{n}"), table_kind,
                       f"{p}{sep}{n}") for n, row in records]


def _from_llama_factory_dir(root: Path, table_kind: str) -> list[dict[str, Any]]:
    """Rows of a LLaMA-Factory dataset dir; it must hold exactly one dataset of our kind."""
    from raysys.data.formats import import_llamafactory, table_kind as kind_of

    tables = {n: t for n, t in import_llamafactory(root).items() if kind_of(t) == table_kind}
    if len(tables) != 1:
        raise DataError(f"{root / 'dataset_info.json'}: expected exactly one {table_kind} dataset, "
                        f"found {len(tables)} ({', '.join(tables) or 'none'})")
    (table,) = tables.values()
    rows = table.to_pylist()
    if not rows:
        raise DataError(f"{root}: empty dataset (no rows)")
    return [_check_row(r, table_kind, f"{root}: row {i}") for i, r in enumerate(rows, start=1)]


def tokenize_rows(kind: str, rows: list[dict[str, Any]], tokenizer: Any, max_len: int,
                  overflow: str, source: str | Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Tokenize validated rows with the collators' tokenizer for ``kind``.

    Raises :class:`DataError` naming ``source`` when no example survives ``max_len``.
    """
    from raysys.training.kinds import get_kind

    examples, stats = get_kind(kind).tokenize(rows, tokenizer, max_len, overflow)
    if not examples:
        raise DataError(f"{source}: empty dataset after tokenization ({stats['dropped']} of "
                        f"{len(rows)} rows dropped by max_len={max_len}, overflow={overflow})")
    return examples, stats
