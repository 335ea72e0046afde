"""The JSON readers' bounds (raysys.data.reading, re-exported by raysys.data.io): line length,
nesting, digits, float range."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raysys.data import reading  # the bounds live (and are read) there; io re-exports them
from raysys.data.io import DataError, iter_jsonl, json_depth, parse_json_bounded, read_json


def test_json_depth_counts_containers_iteratively() -> None:
    assert json_depth(1) == 0 and json_depth([]) == 1 and json_depth({"a": [{"b": []}]}) == 4
    deep: list = []
    for _ in range(10_000):       # deeper than Python's recursion limit
        deep = [deep]
    assert json_depth(deep, limit=64) == 65


def test_parse_json_bounded() -> None:
    assert parse_json_bounded('{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}
    with pytest.raises(ValueError, match=r"nested more than 64 levels"):
        parse_json_bounded("[" * 65 + "]" * 65)
    with pytest.raises(ValueError, match=r"nested more than 64 levels"):
        parse_json_bounded("[" * 100_000 + "]" * 100_000)          # RecursionError inside json
    with pytest.raises(ValueError, match=r"the number 1e400 is beyond the range of a float"):
        parse_json_bounded('{"x": 1e400}')
    with pytest.raises(ValueError, match=r"a number of 4,301 digits"):
        parse_json_bounded("-" + "1" * 4301)
    with pytest.raises(ValueError, match=r"NaN is not valid JSON"):
        parse_json_bounded("NaN")
    assert parse_json_bounded("NaN", allow_nan=True) != parse_json_bounded("NaN", allow_nan=True)


def test_jsonl_line_length_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reading, "MAX_JSONL_LINE_BYTES", 64)
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"a": "x" * 20}) + "\n\n" + json.dumps({"a": "x" * 80}) + "\n")
    rows = iter_jsonl(f)
    assert next(rows) == (1, {"a": "x" * 20})
    with pytest.raises(DataError, match=r"d\.jsonl:3: a line longer than 64 bytes"):
        next(rows)


def test_json_file_size_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reading, "MAX_JSON_FILE_BYTES", 10)
    f = tmp_path / "d.json"
    f.write_text('[{"a": 12345}]')
    with pytest.raises(DataError, match=r"d\.json: 14 bytes; a JSON file is parsed whole and may be "
                                        r"at most 10 bytes"):
        read_json(f)
