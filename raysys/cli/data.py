"""``raysys data prepare`` (a source -> a problems table) and ``raysys data show`` (inspect a file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def _pairs(items: tuple[str, ...], option: str) -> dict[str, Any]:
    """``("a=b", ...)`` -> ``{"a": "b"}``; values of ``--option`` are parsed as YAML scalars."""
    import yaml

    from raysys.config import ConfigError
    from raysys.config_yaml import load_yaml_text

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{option} {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        if not key.strip():
            raise ConfigError(f"{option} {item!r}: empty key; expected KEY=VALUE")
        if not value.strip():
            raise ConfigError(f"{option} {key.strip()}=: no value (leave the {option} out for the "
                              f"default{'' if option == '--field' else ', or write null'})")
        if option == "--option":
            try:
                out[key.strip()] = load_yaml_text(value, f"--option {key.strip()}") \
                    if value.strip() else ""
            except yaml.YAMLError:
                out[key.strip()] = value
        else:
            out[key.strip()] = value.strip()
    return out


@click.group()
def data() -> None:
    """Prepare and inspect datasets."""


@data.command("prepare")
@click.argument("name")
@click.option("--input", "input_path", metavar="PATH",
              help="Local JSONL/JSON/parquet file or dir, or hf://owner/name[/file].")
@click.option("--out", "out_path", required=True, type=click.Path(),
              help="Output: a .parquet or .jsonl file, or a stage directory.")
@click.option("--limit", type=int, default=None, help="Keep at most N problems.")
@click.option("--field", "fields", multiple=True, metavar="OURS=THEIRS",
              help="Generic loader: map our column to the file's field (repeatable).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Loader option, e.g. seed=1 or split=test (repeatable).")
def prepare(name: str, input_path: str | None, out_path: str, limit: int | None,
            fields: tuple[str, ...], options: tuple[str, ...]) -> None:
    """Load dataset NAME (gsm8k, math, math500, w2s, olympiad, jsonl, synthetic) as problems."""
    from raysys.config import DatasetSpec, from_dict
    from raysys.data.io import (atomic_write_jsonl, atomic_write_parquet, check_not_an_input,
                                replace_dir_atomic, write_stage)
    from raysys.data.sources import check_name, load_problems

    # before the spec's own checks, which would complain about the path first
    check_name(name, how=f"raysys data prepare jsonl --input {name}, or another format's name",
               label="NAME")
    if input_path is not None and "://" not in input_path:     # hf:// is fetched, never written
        # --out equal to --input overwrote the raw file; a stage dir around it deleted it
        check_not_an_input(out_path, {"--input": input_path}, "--out")
    check_prepare_out(out_path)
    raw: dict[str, Any] = {"name": name, "fields": _pairs(fields, "--field"),
                           "options": _pairs(options, "--option")}
    if input_path is not None:
        raw["path"] = input_path
    if limit is not None:
        raw["limit"] = limit
    spec = from_dict(DatasetSpec, raw, "data")
    table = load_problems(spec, key="data")
    out = Path(out_path).expanduser()          # written where check_prepare_out checked it
    if out.suffix == ".parquet":
        atomic_write_parquet(out, table)
    elif out.suffix == ".jsonl":
        atomic_write_jsonl(out, table.to_pylist())
    else:
        # built beside --out and renamed into place: a failure keeps the old stage whole
        replace_dir_atomic(lambda tmp: write_stage(tmp, table, "problems", extra={
            "dataset": name, "input": input_path}), out)
    click.echo(f"wrote {table.num_rows} problems ({name}) to {out}")


OUT_FILE_SUFFIXES = (".parquet", ".jsonl")
STAGE_MARKERS = ("_MANIFEST.json", "part-*.parquet")


def check_prepare_out(out_path: str) -> None:
    """``--out`` of ``data prepare`` before any loading: a ``.parquet`` / ``.jsonl`` file that
    can be written, or a stage directory (no suffix, or an existing stage dir); another suffix
    (``x.csv``) would silently become a directory, and an unrelated non-empty directory would
    get its ``part-*.parquet`` files replaced."""
    from raysys.data.io import DataError, check_output_dir, check_output_file

    out = Path(out_path)
    if out.suffix in OUT_FILE_SUFFIXES:
        check_output_file(out, "--out")
    elif out.suffix and not out.is_dir():
        raise DataError(f"--out: {out_path}: expected a {' or '.join(OUT_FILE_SUFFIXES)} file, "
                        "or a stage directory (a path without a suffix)")
    else:
        check_output_dir(out, "--out", STAGE_MARKERS)


def _short(value: Any, width: int) -> Any:
    if isinstance(value, str) and len(value) > width:
        return value[:width] + f"... [{len(value)} chars]"
    return value


def _load_for_show(path: Path) -> tuple[Any, list[dict[str, Any]], str]:
    """(schema or field list, rows, description line) for a parquet file, stage dir or JSONL."""
    import pyarrow as pa

    from raysys.data.io import read_manifest, read_parquet_any, read_records

    if path.is_dir() or path.suffix == ".parquet":
        table = read_parquet_any(path)
        note = ""
        if path.is_dir():
            manifest = read_manifest(path)
            note = (f"stage: {manifest.get('kind')} (complete, manifest rows {manifest.get('rows')})"
                    if manifest else "stage: incomplete (no _MANIFEST.json)")
        return table.schema, table.to_pylist(), note
    rows = [r for _, r in read_records(path)]
    try:
        schema: Any = pa.Table.from_pylist(rows).schema
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Rows whose fields change type from row to row: list the field names instead.
        schema = sorted({k for r in rows for k in r})
    return schema, rows, ""


@data.command("show")
@click.argument("path", type=click.Path())
@click.option("--rows", "n_rows", type=click.IntRange(min=0), default=3, show_default=True,
              help="Rows to print.")
@click.option("--width", type=click.IntRange(min=1), default=200, show_default=True,
              help="Truncate strings to this.")
def show(path: str, n_rows: int, width: int) -> None:
    """Row count, schema and the first rows of a parquet file, stage directory or JSONL file."""
    from raysys.data.io import DataError

    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{path}: file not found")
    schema, rows, note = _load_for_show(p)
    click.echo(f"{p}: {len(rows)} rows")
    if note:
        click.echo(note)
    click.echo("schema:")
    if isinstance(schema, list):
        for name in schema:
            click.echo(f"  {name}")
    else:
        for f in schema:
            click.echo(f"  {f.name}: {f.type}{'' if f.nullable else ' not null'}")
    for i, row in enumerate(rows[:n_rows]):
        shown = {k: _short(v, width) for k, v in row.items()}
        click.echo(f"[{i}] " + json.dumps(shown, ensure_ascii=False, default=str))
