"""``raysys data prepare`` and ``raysys data show``."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from raysys.cli import cli
from raysys.config import ConfigError
from raysys.data.io import DataError, is_complete, read_manifest, read_stage
from raysys.data.schema import PROBLEMS

GSM_ROWS = [{"question": f"Q{i}?", "answer": f"{i}+1={i + 1}\n#### {i + 1}"} for i in range(5)]


def _run(*args: str) -> object:
    return CliRunner().invoke(cli, ["data", *args], catch_exceptions=True)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prepare_parquet_with_limit(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "test.jsonl", GSM_ROWS)
    out = tmp_path / "problems.parquet"
    result = _run("prepare", "gsm8k", "--input", str(src), "--out", str(out), "--limit", "3")
    assert result.exit_code == 0, result.output
    assert "wrote 3 problems" in result.output
    table = pq.read_table(out)
    assert table.schema == PROBLEMS
    assert table.column("gold_answer").to_pylist() == ["1", "2", "3"]


def test_prepare_generic_with_field_mapping_to_stage_dir(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "mine.jsonl", [{"problem": "P1", "final": "1"}, {"problem": "P2", "final": "2"}])
    out = tmp_path / "stage"
    result = _run("prepare", "jsonl", "--input", str(src), "--out", str(out),
                  "--field", "question=problem", "--field", "gold_answer=final", "--option", "source=mine")
    assert result.exit_code == 0, result.output
    assert is_complete(out) and read_manifest(out)["rows"] == 2
    table = read_stage(out, "problems")
    assert table.column("question").to_pylist() == ["P1", "P2"]
    assert table.column("source").to_pylist() == ["mine", "mine"]


def test_prepare_synthetic_options_to_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "syn.jsonl"
    result = _run("prepare", "synthetic", "--out", str(out), "--option", "n=4", "--option", "seed=9",
                  "--option", "ops=+-*")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"synthetic-9-{i}" for i in range(4)]


def test_prepare_bad_input_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps(GSM_ROWS[0]) + "\n{oops\n")
    out = tmp_path / "out.parquet"
    result = _run("prepare", "gsm8k", "--input", str(src), "--out", str(out))
    assert isinstance(result.exception, DataError)
    assert "bad.jsonl:2: malformed JSON" in str(result.exception)
    assert list(tmp_path.iterdir()) == [src]


@pytest.mark.parametrize("args, error, message", [
    (["prepare", "gsm9k", "--input", "x", "--out", "o.parquet"], ConfigError, "unknown dataset 'gsm9k'"),
    (["prepare", "jsonl", "--input", "IN", "--out", "o.parquet", "--field", "question"], ConfigError,
     "--field 'question': expected KEY=VALUE"),
    (["prepare", "gsm8k", "--out", "o.parquet"], ConfigError, "data.path: required for dataset 'gsm8k'"),
])
def test_prepare_config_errors(tmp_path: Path, args: list[str], error: type, message: str) -> None:
    src = _jsonl(tmp_path / "in.jsonl", GSM_ROWS)
    result = _run(*[str(src) if a == "IN" else a for a in args])
    assert isinstance(result.exception, error), result.output
    assert message in str(result.exception)


def test_show_parquet_stage_and_jsonl(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "test.jsonl", GSM_ROWS)
    _run("prepare", "gsm8k", "--input", str(src), "--out", str(tmp_path / "p.parquet"))
    _run("prepare", "gsm8k", "--input", str(src), "--out", str(tmp_path / "stage"))
    for target, extra in [("p.parquet", None), ("stage", "stage: problems (complete, manifest rows 5)"),
                          ("test.jsonl", None)]:
        result = _run("show", str(tmp_path / target))
        assert result.exit_code == 0, result.output
        assert f"{tmp_path / target}: 5 rows" in result.output
        assert "[2] " in result.output and "[3] " not in result.output
        if extra:
            assert extra in result.output
    parquet_out = _run("show", str(tmp_path / "p.parquet")).output
    assert "  id: string not null" in parquet_out and "  gold_answer: string" in parquet_out
    assert "  answer: string" in _run("show", str(src)).output


def test_show_incomplete_stage_and_missing_file(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "test.jsonl", GSM_ROWS)
    _run("prepare", "gsm8k", "--input", str(src), "--out", str(tmp_path / "stage"))
    (tmp_path / "stage/_MANIFEST.json").unlink()
    assert "stage: incomplete (no _MANIFEST.json)" in _run("show", str(tmp_path / "stage")).output
    result = _run("show", str(tmp_path / "nope.parquet"))
    assert isinstance(result.exception, DataError) and "file not found" in str(result.exception)


def test_show_row_count_option(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "test.jsonl", GSM_ROWS)
    assert "[0] " not in _run("show", str(src), "--rows", "0").output
    result = _run("show", str(src), "--rows", "-1")   # would silently print all but the last
    assert result.exit_code == 2 and "--rows" in result.output
