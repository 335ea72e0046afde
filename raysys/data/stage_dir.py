"""Stage directories: ``part-*.parquet`` files and, last, ``_MANIFEST.json`` (rows, schema,
per-part checksums).

Each part is written atomically (temp file + rename), so a killed writer leaves either a whole
part or none; the stage is complete only when the manifest exists, and a complete stage's parts
are verified against it before they are trusted.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raysys.data.atomic import atomic_write_json, atomic_write_parquet
from raysys.data.reading import read_json
from raysys.data.schema import SCHEMAS, conform
from raysys.errors import DataError

MANIFEST = "_MANIFEST.json"


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
    """The stage's ``_MANIFEST.json`` (None when absent: the stage is incomplete).

    A manifest is written atomically, so an unreadable one was damaged outside raysys; the
    ``DataError`` says what is wrong and how to recover (delete it: the stage re-runs and
    resumes from its parts).
    """
    p = Path(stage_dir) / MANIFEST
    if not p.exists():
        return None
    fix = f"; delete {p} to re-run the stage (it resumes from its parts)"
    try:
        manifest = read_json(p)
    except DataError as e:
        raise DataError(f"{e}{fix}") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{p}: corrupt manifest (expected a JSON object, got "
                        f"{type(manifest).__name__}){fix}")
    rows = manifest.get("rows")
    if not isinstance(manifest.get("kind"), str) or not isinstance(rows, int) or isinstance(rows, bool) \
            or rows < 0 or not isinstance(manifest.get("parts", []), list):
        raise DataError(f"{p}: corrupt manifest (expected 'kind' (text), 'rows' (int >= 0) and "
                        f"'parts' (list)){fix}")
    return manifest


def verify_stage(stage_dir: str | Path, manifest: dict | None = None) -> None:
    """A complete stage's data is what its manifest recorded: every listed part present with
    its checksum, no unlisted ``part-*.parquet`` beside them (read_stage would mix its rows in),
    and the rows adding up. ``DataError`` naming the part and what is wrong; deleting the stage
    dir (the recovery) makes a re-run rebuild it. Reads every part once (sha256)."""
    d = Path(stage_dir)
    if manifest is None:
        manifest = read_manifest(d)
        if manifest is None:
            raise DataError(f"{d}: no {MANIFEST} (the stage is not complete)")
    listed: dict[str, dict] = {}
    for i, entry in enumerate(manifest.get("parts", [])):
        name = entry.get("file") if isinstance(entry, dict) else None
        if not (isinstance(name, str) and name.startswith("part-") and name.endswith(".parquet")
                and "/" not in name and "\\" not in name) \
                or not isinstance(entry.get("rows"), int) or not isinstance(entry.get("sha256"), str):
            raise DataError(f"{d / MANIFEST}: parts[{i}]: expected {{file: part-*.parquet, rows, "
                            f"sha256}}, got {entry!r}"[:300])
        listed[name] = entry
    for name, entry in listed.items():
        f = d / name
        if not f.is_file():
            raise DataError(f"{d}: {name} is gone (the manifest lists it)")
        if _sha256(f) != entry["sha256"]:
            raise DataError(f"{d}: {name} does not match its checksum in {MANIFEST} (changed or "
                            "damaged after the stage completed)")
    extra = sorted(p.name for p in d.glob("part-*.parquet") if p.name not in listed)
    if extra:
        raise DataError(f"{d}: {', '.join(extra[:3])} not in {MANIFEST} (a part added after the "
                        "stage completed; its rows would be read with the stage's)")
    total = sum(e["rows"] for e in listed.values())
    if listed and total != manifest["rows"]:
        raise DataError(f"{d / MANIFEST}: its parts hold {total} rows, it says {manifest['rows']}")


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
