"""``raysys grade``: output rows, accuracy line, and bad input reported with file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from raysys.cli.grade import grade
from raysys.data.io import DataError


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_grade_writes_rows_and_prints_accuracy(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.jsonl", [
        json.dumps({"id": 1, "pred": "so 3+4 = 7\n#### 7", "gold": "#### 7"}),
        json.dumps({"id": 2, "pred": r"The answer is $\frac{1}{2}$.", "gold": "0.5"}),
        "",
        json.dumps({"id": 3, "pred": "The answer is 10.", "gold": "#### 1,000"}),
    ])
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(grade, [str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "accuracy: 2/3 = 66.67%" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["pred_answer"], r["correct"]) for r in rows] == [
        (1, "7", True), (2, r"\frac{1}{2}", True), (3, "10", False)]
    assert rows[0]["gold"] == "#### 7"   # input fields are kept


def test_grade_style_option(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.jsonl", [json.dumps({"pred": "The answer is 3. The answer is 4.",
                                                     "gold": "3"})])
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(grade, [str(src), "--out", str(out), "--style", "critique"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["correct"] is True


def test_malformed_line_names_file_and_line_and_writes_nothing(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.jsonl", [json.dumps({"pred": "1", "gold": "1"}), "{not json"])
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(grade, [str(src), "--out", str(out)])
    assert isinstance(result.exception, DataError)
    assert f"{src}:2: malformed JSON" in str(result.exception)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [src]   # no temp files left either


@pytest.mark.parametrize("row, message", [
    ({"pred": "1"}, "missing field 'gold'"),
    ({"gold": "1"}, "missing field 'pred'"),
    ({"pred": ["1"], "gold": "1"}, "field 'pred' must be a string or number, got list"),
])
def test_missing_or_wrong_field_names_field_and_line(tmp_path: Path, row: dict, message: str) -> None:
    src = _write(tmp_path / "in.jsonl", [json.dumps({"pred": "1", "gold": "1"}), json.dumps(row)])
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(grade, [str(src), "--out", str(out)])
    assert isinstance(result.exception, DataError)
    assert str(result.exception).startswith(f"{src}:2: {message}")
    assert not out.exists()


def test_main_entry_prints_one_line_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    src = _write(tmp_path / "in.jsonl", ["[1, 2]"])
    proc = subprocess.run([sys.executable, "-c", "from raysys.cli import main; main()", "grade",
                           str(src), "--out", str(tmp_path / "o.jsonl")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {src}:1: expected a JSON object, got list"
