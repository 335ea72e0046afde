"""File I/O at the edges: JSONL reading with precise errors, atomic writes, stage directories.

A stage directory holds ``part-*.parquet`` files and, last, ``_MANIFEST.json`` (rows, schema,
per-part checksums). Each part is written atomically (temp file + rename), so a killed writer
leaves either a whole part or none; the stage is complete only when the manifest exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raysys.data.schema import SCHEMAS, conform

MANIFEST = "_MANIFEST.json"


class DataError(ValueError):
    """Bad input data; the message names the file (and line) and what was expected."""


# ------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, row)`` for each non-blank line; bad JSON names file:line."""
    p = Path(path)
    with p.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{p}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def read_json(path: str | Path, error: type[Exception] = DataError) -> Any:
    """Parse a whole JSON file; malformed JSON is raised as ``error`` naming file:line."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise error(f"{p}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None


def read_json_object(path: str | Path, error: type[Exception] = DataError) -> dict[str, Any]:
    """:func:`read_json` for a file holding one object, errors raised as ``error`` (e.g.
    ``ModelError`` for a model's config.json)."""
    p = Path(path)
    obj = read_json(p, error)
    if not isinstance(obj, dict):
        raise error(f"{p}: expected a JSON object, got {type(obj).__name__}")
    return obj


def read_records(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """Read JSONL, a JSON list, or parquet as ``(line_or_row_number, row)`` pairs.

    Raises :class:`DataError` for a missing file, malformed content, or an empty dataset.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if p.is_dir() or p.suffix == ".parquet":
        table = read_parquet_any(p)
        rows = list(enumerate(table.to_pylist(), start=1))
    elif p.suffix == ".json":
        data = read_json(p)
        if not isinstance(data, list):
            raise DataError(f"{p}: expected a JSON list of objects")
        rows = []
        for i, row in enumerate(data, start=1):
            if not isinstance(row, dict):
                raise DataError(f"{p}: item {i}: expected a JSON object, got {type(row).__name__}")
            rows.append((i, row))
    else:
        rows = list(iter_jsonl(p))
    if not rows:
        raise DataError(f"{p}: empty dataset (no rows)")
    return rows


def read_parquet_any(path: str | Path) -> pa.Table:
    """Read a parquet file, or every ``part-*.parquet`` of a stage directory."""
    p = Path(path)
    if p.is_dir():
        parts = sorted(p.glob("part-*.parquet"))
        if not parts:
            raise DataError(f"{p}: no part-*.parquet files")
        return pa.concat_tables([pq.read_table(x) for x in parts], promote_options="default")
    try:
        return pq.read_table(p)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{p}: not a readable parquet file ({e})") from None


# ------------------------------------------------------------------------------------------
# Atomic writing
# ------------------------------------------------------------------------------------------


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def atomic_write_parquet(path: str | Path, table: pa.Table) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------------
# Stage directories
# ------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_part(stage_dir: str | Path, name: str, table: pa.Table | list[dict], kind: str) -> Path:
    """Write one ``part-<name>.parquet`` atomically, conformed to the ``kind`` schema."""
    out = Path(stage_dir) / f"part-{name}.parquet"
    atomic_write_parquet(out, conform(table, kind))
    return out


def write_manifest(stage_dir: str | Path, kind: str, extra: dict[str, Any] | None = None) -> dict:
    """Seal a stage: checksum every part and write ``_MANIFEST.json`` last, atomically."""
    d = Path(stage_dir)
    parts = sorted(d.glob("part-*.parquet"))
    rows = 0
    entries = []
    for p in parts:
        n = pq.read_metadata(p).num_rows
        rows += n
        entries.append({"file": p.name, "rows": n, "sha256": _sha256(p)})
    manifest = {
        "kind": kind,
        "rows": rows,
        "schema": SCHEMAS[kind].to_string(show_schema_metadata=False),
        "parts": entries,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    atomic_write_json(d / MANIFEST, manifest)
    return manifest


def write_stage(stage_dir: str | Path, table: pa.Table | list[dict], kind: str,
                extra: dict[str, Any] | None = None) -> dict:
    """Write a whole stage table as one part plus its manifest (replacing old parts)."""
    d = Path(stage_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / MANIFEST).unlink(missing_ok=True)
    for old in d.glob("part-*.parquet"):
        old.unlink()
    write_part(d, "00000", table, kind)
    return write_manifest(d, kind, extra)


def read_manifest(stage_dir: str | Path) -> dict | None:
    p = Path(stage_dir) / MANIFEST
    if not p.is_file():
        return None
    return json.loads(p.read_text())


def is_complete(stage_dir: str | Path) -> bool:
    return read_manifest(stage_dir) is not None


def read_stage(stage_dir: str | Path, kind: str | None = None) -> pa.Table:
    """Read every part of a stage directory (complete or not) as one table."""
    d = Path(stage_dir)
    parts = sorted(d.glob("part-*.parquet"))
    if not parts:
        if kind is not None:
            return SCHEMAS[kind].empty_table()
        raise DataError(f"{d}: no part-*.parquet files")
    table = pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")
    return conform(table, kind) if kind is not None else table
