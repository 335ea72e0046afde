"""Stage tables and stage directories: schemas are enforced, writes are atomic, manifests last."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from raysys.data import io
from raysys.data.schema import SCHEMAS, SchemaError, conform


def test_conform_fills_nullable_and_rejects_missing_required() -> None:
    t = conform([{"prompt": "p", "response": "r"}], "sft")
    assert t.schema == SCHEMAS["sft"] and t.column("source").to_pylist() == [None]
    with pytest.raises(SchemaError, match="missing required column 'response'"):
        conform([{"prompt": "p"}], "sft")
    with pytest.raises(SchemaError, match="pairs: missing required column 'chosen'"):
        conform(pa.table({"prompt": ["p"], "rejected": ["r"]}), "pairs")


def test_conform_casts_and_reports_type_errors() -> None:
    t = conform(pa.table({"problem_id": ["a"], "sample_idx": pa.array([1], pa.int64()),
                          "prompt": ["p"], "completion": ["c"]}), "samples")
    assert t.schema.field("sample_idx").type == pa.int32()
    with pytest.raises(SchemaError, match="samples.sample_idx"):
        conform([{"problem_id": "a", "sample_idx": "one", "prompt": "p", "completion": "c"}], "samples")


def test_iter_jsonl_names_file_and_line(tmp_path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2\n')
    with pytest.raises(io.DataError, match=r"d.jsonl:3: malformed JSON"):
        list(io.iter_jsonl(p))
    p.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(io.DataError, match=r"d.jsonl:2: expected a JSON object, got list"):
        io.read_records(p)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(io.DataError, match="empty dataset"):
        io.read_records(tmp_path / "empty.jsonl")
    with pytest.raises(io.DataError, match="file not found"):
        io.read_records(tmp_path / "missing.jsonl")


def test_stage_dir_is_complete_only_with_manifest(tmp_path) -> None:
    d = tmp_path / "stage"
    io.write_part(d, "00000", [{"prompt": "a", "response": "b"}], "sft")
    io.write_part(d, "00001", [{"prompt": "c", "response": "d"}, {"prompt": "e", "response": "f"}], "sft")
    assert not io.is_complete(d)
    assert io.read_stage(d, "sft").num_rows == 3
    m = io.write_manifest(d, "sft", {"wall_s": 1.5})
    assert io.is_complete(d) and m["rows"] == 3 and [p["rows"] for p in m["parts"]] == [1, 2]
    on_disk = json.loads((d / io.MANIFEST).read_text())
    assert on_disk["wall_s"] == 1.5 and len(on_disk["parts"][0]["sha256"]) == 64
    assert not list(d.glob(".*.tmp"))   # no temp files left behind


def test_failed_write_leaves_nothing(tmp_path) -> None:
    d = tmp_path / "stage"
    with pytest.raises(SchemaError):
        io.write_part(d, "00000", [{"prompt": "a"}], "sft")
    assert not d.exists() or not any(d.iterdir())
    target = tmp_path / "x.json"
    with pytest.raises(TypeError):
        io.atomic_write_bytes(target, 123)  # type: ignore[arg-type]  # fails after the temp file exists
    assert not target.exists() and not list(tmp_path.glob(".x.json.*"))


def test_write_stage_replaces_previous_parts(tmp_path) -> None:
    d = tmp_path / "s"
    io.write_part(d, "00007", [{"prompt": "old", "response": "x"}], "sft")
    io.write_stage(d, [{"prompt": "new", "response": "y"}], "sft")
    assert io.read_stage(d, "sft").column("prompt").to_pylist() == ["new"]
    assert io.read_stage(tmp_path / "none", "pairs").num_rows == 0
