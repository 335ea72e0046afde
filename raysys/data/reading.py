"""Reading input files with precise errors: JSONL, JSON, text and parquet, each bounded.

Every failure a user's file can cause (not UTF-8, binary, malformed JSON, ``NaN``, a line or a
nesting depth past its bound, an empty dataset, an unreadable parquet) is one ``DataError``
naming file:line and what was expected, never a traceback, a hang or the memory filled.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raysys.errors import DataError

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
