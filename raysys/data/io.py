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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raysys.data.schema import SCHEMAS, conform

MANIFEST = "_MANIFEST.json"


from raysys.errors import DataError  # noqa: E402,F401 - defined with every user error


# ------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------


# Bounds on what one JSON document (a JSONL line, a .json file) may make the reader build. Each
# violation is one DataError naming file:line and the bound, instead of a hang, the memory filled
# or a RecursionError traceback:
# - a JSONL line (one row) is at most 32 MiB: a problem, a sample or an SFT/DPO row is KB (a
#   long critique transcript tens of KB); the line is read whole before it is parsed;
MAX_JSONL_LINE_BYTES = 32 * 1024 * 1024
# - a .json file (LLaMA-Factory datasets, a JSON list) is parsed whole, at ~10x its size in
#   memory: 1 GiB is past any such dataset; larger data belongs in JSONL or parquet, read row by row;
MAX_JSON_FILE_BYTES = 1024 * 1024 * 1024
# - values nest at most 64 deep: rows are ~5 levels (messages, meta); Python's JSON parser and
#   every walker after it recurse, so 100,000 levels end in a RecursionError;
MAX_JSON_DEPTH = 64
# - an integer has at most 4,300 digits (Python's own limit for reading one; its error message
#   tells a user to call sys.set_int_max_str_digits); a float must be finite: `1e400` parses to
#   inf, which no answer or score should be.
MAX_JSON_INT_DIGITS = 4300


def _refuse_constant(name: str) -> Any:
    """``json`` hook for ``NaN`` / ``Infinity``: not JSON, and in a data file they would become
    answers or scores that compare unequal to themselves."""
    raise ValueError(f"{name} is not valid JSON (quote it if it is meant as text)")


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise ValueError(f"a number of {len(text.lstrip('-')):,} digits (at most "
                         f"{MAX_JSON_INT_DIGITS:,}; quote it if it is meant as text)")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:40]}{'...' if len(text) > 40 else ''} is beyond the "
                         "range of a float (quote it if it is meant as text)")
    return value


def json_depth(obj: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep ``obj`` nests (a scalar 0, ``[]`` 1), counted iteratively and only up to
    ``limit + 1`` (enough to tell it is too deep). Pure."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            if depth > limit:
                return depth
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def parse_json_bounded(text: str | bytes, *, allow_nan: bool = False) -> Any:
    """``json.loads`` within :data:`MAX_JSON_DEPTH` and :data:`MAX_JSON_INT_DIGITS` (and, unless
    ``allow_nan``, refusing ``NaN`` / ``Infinity`` and floats that overflow). Raises
    ``json.JSONDecodeError`` for malformed JSON and ``ValueError`` with a one-line reason for
    a bound."""
    kwargs: dict[str, Any] = {"parse_int": _parse_int}
    if not allow_nan:
        kwargs.update(parse_constant=_refuse_constant, parse_float=_parse_float)
    try:
        obj = json.loads(text, **kwargs)
    except RecursionError:
        obj = None
        depth = MAX_JSON_DEPTH + 1
    else:
        depth = json_depth(obj)
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"values nested more than {MAX_JSON_DEPTH} levels deep (at most "
                         f"{MAX_JSON_DEPTH}; rows are a few levels)")
    return obj


def _json_line(p: Path, lineno: int, raw: bytes) -> Any:
    """Decode and parse one JSONL line; every failure is a ``DataError`` naming file:line."""
    if b"\0" in raw:     # valid UTF-8 but never text: say "binary", not "malformed JSON"
        raise DataError(f"{p}:{lineno}: binary data (NUL byte at column {raw.index(0) + 1}); "
                        "expected UTF-8 JSON lines")
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        what = "binary data" if b"\0" in raw else "not UTF-8 text"
        raise DataError(f"{p}:{lineno}: {what} (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                        "expected UTF-8 JSON lines") from None
    try:
        return parse_json_bounded(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{p}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
    except ValueError as e:   # NaN / Infinity, a bound
        raise DataError(f"{p}:{lineno}: {e}") from None


def _lines(f: Any, p: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of a binary file, each line read only up to
    :data:`MAX_JSONL_LINE_BYTES` (a longer one is a ``DataError``, not a line held in memory)."""
    lineno = 0
    while True:
        raw = f.readline(MAX_JSONL_LINE_BYTES + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > MAX_JSONL_LINE_BYTES:
            raise DataError(f"{p}:{lineno}: a line longer than {MAX_JSONL_LINE_BYTES:,} bytes (a "
                            "row is at most that; split the long field or use parquet)")
        yield lineno, raw


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, row)`` for each non-blank line; bad JSON, bytes that are not UTF-8,
    ``NaN``/``Infinity`` literals and rows past the bounds above (line length, nesting, digits)
    raise ``DataError`` naming file:line."""
    p = Path(path).expanduser()
    with p.open("rb") as f:
        for lineno, raw in _lines(f, p):
            if not raw.strip():
                continue
            row = _json_line(p, lineno, raw)
            if not isinstance(row, dict):
                raise DataError(f"{p}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def read_text(path: str | Path, error: type[Exception] = DataError, expected: str = "UTF-8 text") -> str:
    """A whole file as UTF-8 text; a binary or non-UTF-8 file is raised as ``error`` naming
    file:line (and a directory or unreadable file likewise, not as an OSError)."""
    p = Path(path).expanduser()
    try:
        raw = p.read_bytes()
    except IsADirectoryError:
        raise error(f"{p}: is a directory; expected {expected}") from None
    except OSError as e:
        raise error(f"{p}: cannot read it ({e.strerror})") from None
    bad = raw.find(b"\0")
    if bad < 0:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            bad = e.start
    line = raw.count(b"\n", 0, bad) + 1
    what = "a binary file" if b"\0" in raw[:8192] else "not UTF-8 text"
    raise error(f"{p}:{line}: {what} (byte 0x{raw[bad]:02x} at offset {bad}); "
                f"expected {expected}")


def read_json(path: str | Path, error: type[Exception] = DataError, *,
              allow_nan: bool = True) -> Any:
    """Parse a whole JSON file; malformed JSON or non-UTF-8 bytes are raised as ``error``
    naming file:line. ``allow_nan=False`` also refuses ``NaN`` / ``Infinity`` (data files)."""
    p = Path(path).expanduser()
    try:
        size = p.stat().st_size
    except OSError:
        size = 0                    # read_text names a missing or unreadable file
    if size > MAX_JSON_FILE_BYTES:
        raise error(f"{p}: {size:,} bytes; a JSON file is parsed whole and may be at most "
                    f"{MAX_JSON_FILE_BYTES:,} bytes (write larger data as JSONL or parquet)")
    text = read_text(p, error, "a UTF-8 JSON file")
    try:
        return parse_json_bounded(text, allow_nan=allow_nan)
    except json.JSONDecodeError as e:
        raise error(f"{p}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
    except ValueError as e:
        raise error(f"{p}: {e}") from None


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
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if p.is_dir() or p.suffix == ".parquet":
        table = read_parquet_any(p)
        rows = list(enumerate(table.to_pylist(), start=1))
    elif p.suffix == ".json":
        data = read_json(p, allow_nan=False)
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


def _read_parquet_file(p: Path) -> pa.Table:
    try:
        return pq.read_table(p)
    except (pa.ArrowException, OSError) as e:
        why = " ".join(str(e).split())[:200]
        raise DataError(f"{p}: not a readable parquet file ({why})") from None


def read_parquet_any(path: str | Path) -> pa.Table:
    """Read a parquet file, or every ``part-*.parquet`` of a stage directory."""
    p = Path(path).expanduser()
    if p.is_dir():
        parts = sorted(p.glob("part-*.parquet"))
        if not parts:
            raise DataError(f"{p}: no part-*.parquet files")
        tables = [_read_parquet_file(x) for x in parts]
        try:
            return pa.concat_tables(tables, promote_options="default")
        except pa.ArrowException as e:
            raise DataError(f"{p}: its parts have incompatible schemas ({e})") from None
    return _read_parquet_file(p)


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


# ------------------------------------------------------------------------------------------
# Output paths: checked before any work, so a bad --out costs nothing and leaves nothing
# ------------------------------------------------------------------------------------------


def _check_parents(p: Path, key: str) -> None:
    """Every existing ancestor of ``p`` must be a directory we can write into."""
    for parent in reversed(p.parents):
        if parent.exists() and not parent.is_dir():
            raise DataError(f"{key}: cannot create {p}: {parent} is a file, not a directory")
    existing = next(a for a in p.parents if a.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"{key}: cannot create {p}: {existing} is not writable")


def check_output_file(path: str | Path, key: str, suffixes: tuple[str, ...] = ()) -> Path:
    """Refuse, before any work, an output *file* path that cannot be written: under a regular
    file, an existing directory, a read-only existing file, or a suffix not in ``suffixes``."""
    p = Path(path).expanduser().absolute()
    if suffixes and p.suffix not in suffixes:
        raise DataError(f"{key}: {path}: expected a {' or '.join(suffixes)} file")
    if p.is_dir():
        raise DataError(f"{key}: {path} is a directory; expected a file path")
    _check_parents(p, key)
    if p.exists() and not os.access(p, os.W_OK):
        raise DataError(f"{key}: {path} is not writable")
    return p


def check_output_dir(path: str | Path, key: str, markers: tuple[str, ...] = ()) -> Path:
    """Refuse, before any work, an output *directory* that cannot be written or that is not
    ours: an existing file, a path under a regular file, or (with ``markers``) a non-empty
    directory holding none of ``markers`` (glob patterns, e.g. ``_MANIFEST.json``), whose files raysys would
    mix with (or replace) unrelated ones."""
    p = Path(path).expanduser().absolute()
    if p.exists() and not p.is_dir():
        raise DataError(f"{key}: {path} is a file; expected a directory")
    _check_parents(p, key)
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise DataError(f"{key}: {path} is not writable")
        if markers and any(p.iterdir()) and not any(any(p.glob(m)) for m in markers):
            raise DataError(f"{key}: {path} is a non-empty directory that is not a raysys output "
                            f"(no {' or '.join(markers)}); use a new or empty directory")
    return p


# ------------------------------------------------------------------------------------------
# An output is never one of the inputs: checked on resolved paths before any work
# ------------------------------------------------------------------------------------------


def _resolved(path: str | Path) -> Path:
    """``path`` with ``~`` expanded, made absolute and every symlink of its existing part
    followed (``..`` after a symlink means the symlink target's parent, as the kernel does)."""
    return Path(path).expanduser().resolve()


def _identity(p: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing path, else None: the same object under two names (a
    hard link, a bind mount, another letter case on a case-insensitive file system)."""
    try:
        st = p.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _encloses(outer: Path, inner: Path) -> bool:
    """``inner`` lies strictly below ``outer``: by name, or because an existing ancestor of
    ``inner`` is the very directory ``outer`` is (compared by device and inode)."""
    if outer in inner.parents:
        return True
    outer_id = _identity(outer)
    return outer_id is not None and outer.is_dir() and \
        any(_identity(a) == outer_id for a in inner.parents)


def alias_relation(out: str | Path, inp: str | Path) -> str | None:
    """How output ``out`` aliases input ``inp``: ``"same"``, ``"inside"`` (out lies in the
    input dir), ``"contains"`` (out is a dir above the input: replacing it deletes the input),
    or None. Pure apart from ``stat``: nothing is created."""
    o, i = _resolved(out), _resolved(inp)
    o_id, i_id = _identity(o), _identity(i)
    if o == i or (o_id is not None and o_id == i_id):
        return "same"
    if _encloses(i, o):
        return "inside"
    if _encloses(o, i):
        return "contains"
    return None


def check_not_an_input(out: str | Path | None, inputs: Mapping[str, str | Path | None], out_key: str,
                       *, error: type[Exception] = DataError) -> None:
    """Refuse, before any work, an output path that is, contains or lies inside one of
    ``inputs`` (key -> path; None entries are skipped), compared on resolved paths with
    ``~``, ``..`` and symlinks followed, so a symlink to the input or a not-yet-existing
    output below a symlinked directory is caught too. A writer that replaces its output
    (model dirs, stage dirs, files renamed into place) would otherwise delete the input, and
    one that writes into its output would change it. Raises ``error`` naming both keys and
    paths. Inputs that are not local paths (``hf://``, hub ids) must be left out by the
    caller."""
    def is_path(p: Any) -> bool:     # a wrong type is the config loader's error to report
        return isinstance(p, (str, os.PathLike)) and str(p) != ""

    if not is_path(out):
        return
    o = _resolved(out)
    for in_key, inp in inputs.items():
        if not is_path(inp):
            continue
        relation = alias_relation(out, inp)
        if relation is None:
            continue
        i = _resolved(inp)
        shown = str(out) if str(out) == str(o) else f"{out} ({o})"
        if relation == "same":
            what = "directory" if i.is_dir() else "file" if i.exists() else "path"
            rel, why = f"is the same {what} as", "writing it would overwrite the input"
        elif relation == "inside":
            rel, why = "lies inside", "writing into it would change the input"
        else:
            rel, why = "is a directory that contains", "replacing it would delete the input"
        raise error(f"{out_key}: {shown} {rel} {in_key} ({i}); an output may never be, contain "
                    f"or lie inside an input ({why}): choose another {out_key}")


def replace_dir_atomic(build: Any, out: str | Path) -> Path:
    """``build(tmp)`` writes a whole directory at ``tmp`` (a fresh dir beside ``out``); only
    then is it renamed to ``out``. An existing ``out`` is renamed aside first and deleted only
    once the new one is in place (put back if the swap fails), so a failed or killed writer
    never leaves ``out`` half-deleted or half-written. Returns the absolute ``out``."""
    import shutil

    final = Path(out).expanduser().absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    old: Path | None = None
    try:
        build(tmp)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            final.rename(old / final.name)
        tmp.rename(final)
    except BaseException:
        if old is not None and (old / final.name).exists() and not final.exists():
            (old / final.name).rename(final)        # put the previous dir back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return final


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
