"""Dataset loaders -> problems table: tiny fixtures, bad input, and (when present) the real files."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysys.config import ConfigError, DatasetSpec
from raysys.data.io import DataError
from raysys.data.schema import PROBLEMS
from raysys.data.sources import (
    KNOWN_SOURCES, bundled_path, gsm8k_gold, load_problems, olympiad_gold, strip_calculator_annotations,
)
from raysys.data.synthetic import make_problems

FIXTURES = Path(__file__).parent / "fixtures"


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _load(name: str, path: Path | str | None = None, **kw) -> list[dict]:
    spec = DatasetSpec(name=name, path=None if path is None else str(path), **kw)
    table = load_problems(spec)
    assert table.schema == PROBLEMS
    return table.to_pylist()


# ------------------------------------------------------------------------------------------
# Pure helpers
# ------------------------------------------------------------------------------------------


def test_gold_helpers_hand_computed() -> None:
    assert gsm8k_gold("so 1,000+234=1,234\n#### 1,234") == "1234"
    assert gsm8k_gold("no marker") is None
    assert olympiad_gold(["2", "3"]) == "2, 3"
    assert olympiad_gold("B") == "B"
    assert olympiad_gold(None) is None and olympiad_gold([]) is None
    assert strip_calculator_annotations("48/2 = <<48/2=24>>24 clips") == "48/2 = 24 clips"


# ------------------------------------------------------------------------------------------
# Loaders on tiny fixtures
# ------------------------------------------------------------------------------------------


def test_gsm8k_fixture(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "test.jsonl", [
        {"question": "Q1?", "answer": "It costs 1,000+234=<<1000+234=1234>>1,234\n#### 1,234"},
        {"question": "Q2?", "answer": "2+2=4\n#### 4", "id": "given-7"},
        {"question": "Q3?", "answer": "#### 5"},
    ])
    rows = _load("gsm8k", path)
    assert [r["id"] for r in rows] == ["gsm8k-test-0", "given-7", "gsm8k-test-2"]
    assert [r["gold_answer"] for r in rows] == ["1234", "4", "5"]
    assert rows[0]["gold_solution"].startswith("It costs 1,000+234=<<1000+234=1234>>")
    assert {r["source"] for r in rows} == {"gsm8k"}
    assert len(_load("gsm8k", path, limit=2)) == 2
    stripped = _load("gsm8k", path, options={"strip_calc": True})
    assert stripped[0]["gold_solution"] == "It costs 1,000+234=1,234\n#### 1,234"


def test_gsm8k_row_without_answer_marker(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "t.jsonl", [{"question": "Q", "answer": "#### 1"},
                                         {"question": "Q", "answer": "no marker here"}])
    with pytest.raises(DataError, match=r"t\.jsonl:2: field 'answer' has no '####"):
        _load("gsm8k", path)


def test_math_fixture_nested_and_fbox(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "train.jsonl", [
        {"problem": "P1", "solution": "So $\\boxed{1}$ then $\\boxed{\\frac{1}{\\sqrt{2}}}$.",
         "level": "Level 2", "type": "Algebra", "unique_id": "train/algebra/9.json"},
        {"problem": "P2", "solution": "Hence \\fbox{42}.", "level": "Level 1", "type": "Geometry"},
        {"problem": "P3", "solution": "The answer is $\\boxed{}$.", "level": "Level 5", "type": "Algebra"},
    ])
    rows = _load("math", path)
    assert [r["gold_answer"] for r in rows] == ["\\frac{1}{\\sqrt{2}}", "42", None]
    assert [r["id"] for r in rows] == ["train/algebra/9.json", "math-train-1", "math-train-2"]
    assert json.loads(rows[0]["meta"]) == {"level": "Level 2", "type": "Algebra",
                                           "unique_id": "train/algebra/9.json"}


def test_math_solution_without_box_is_an_error(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "m.jsonl", [{"problem": "P", "solution": "no box"}])
    with pytest.raises(DataError, match=r"m\.jsonl:1: field 'solution' has no \\boxed"):
        _load("math", path)


def test_math500_fixture(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "test.jsonl", [
        {"problem": "P", "solution": "S \\boxed{3}", "answer": "3", "subject": "Algebra", "level": 1,
         "unique_id": "test/algebra/1.json"}])
    (row,) = _load("math500", path)
    assert row["gold_answer"] == "3" and row["id"] == "test/algebra/1.json"
    assert json.loads(row["meta"]) == {"subject": "Algebra", "level": 1, "unique_id": "test/algebra/1.json"}


def test_w2s_train_and_test_forms(tmp_path: Path) -> None:
    train = _jsonl(tmp_path / "train_1.jsonl", [
        {"id": "gsm8k_2", "question": "Q", "answer": "a\n#### 5"},
        {"id": "aug_9", "question": "Q2", "answer": "b\n#### 1,200"}])
    test = _jsonl(tmp_path / "test.jsonl", [
        {"source": "GSM8K", "question": "Q", "solution": "s\n#### 18", "answer": "18", "tag": {}}])
    rows = _load("w2s", train)
    assert [(r["id"], r["gold_answer"]) for r in rows] == [("gsm8k_2", "5"), ("aug_9", "1200")]
    (t,) = _load("w2s", test)
    assert (t["id"], t["gold_answer"], t["gold_solution"]) == ("w2s-test-0", "18", "s\n#### 18")
    assert json.loads(t["meta"]) == {"origin": "GSM8K", "split": "test"}


def test_olympiad_fixture_schema() -> None:
    path = FIXTURES / "olympiad_sample.jsonl"
    rows = _load("olympiad", path)
    assert [r["id"] for r in rows] == ["Math_1", "Math_2", "Physics_3", "Math_4", "CS_5", "Math_6"]
    golds = {r["id"]: r["gold_answer"] for r in rows}
    assert golds == {"Math_1": "28", "Math_2": "2, 3", "Physics_3": "2", "Math_4": "55",
                     "CS_5": None, "Math_6": "B"}
    meta = {r["id"]: json.loads(r["meta"]) for r in rows}
    assert meta["Physics_3"]["unit"] == ["s"] and meta["Physics_3"]["subject"] == "Physics"
    assert meta["Math_2"]["answers"] == ["2", "3"] and meta["Math_2"]["answer_type"] == "MPV"
    assert rows[0]["gold_solution"].endswith("$\\boxed{28}$.")
    # the weak-to-strong paper's selection: English only, no code / open-ended answers
    picked = _load("olympiad", path, options={"language": "EN", "exclude_answer_types": ["CODE", "OT"]})
    assert [r["id"] for r in picked] == ["Math_1", "Math_2", "Physics_3", "Math_6"]
    assert [r["id"] for r in _load("olympiad", path, limit=2, options={"language": "ZH"})] == ["Math_4"]


def test_generic_jsonl_mapping(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "mine.jsonl", [
        {"problem": "What is 2+2?", "final": 4, "level": 1},
        {"problem": "What is 3+3?", "final": "6", "level": 2}])
    rows = _load("jsonl", path, fields={"question": "problem", "gold_answer": "final"})
    assert [(r["id"], r["question"], r["gold_answer"]) for r in rows] == [
        ("mine-0", "What is 2+2?", "4"), ("mine-1", "What is 3+3?", "6")]
    assert rows[0]["source"] == "jsonl" and json.loads(rows[1]["meta"]) == {"level": 2}
    named = _load("jsonl", path, fields={"question": "problem"}, options={"source": "mine"})
    assert named[0]["source"] == "mine" and named[0]["gold_answer"] is None


def test_generic_jsonl_gold_from_solution(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "s.jsonl", [{"q": "Q", "sol": "x is \\boxed{7}"}])
    (row,) = _load("jsonl", path, fields={"question": "q", "gold_solution": "sol"},
                   options={"gold_from_solution": "boxed"})
    assert row["gold_answer"] == "7"


def test_generic_jsonl_missing_mapped_field_names_field_and_line(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "g.jsonl", [{"problem": "a", "final": "1"}, {"problem": "b"}])
    with pytest.raises(DataError,
                       match=r"g\.jsonl:2: missing field 'final' \(mapped to column 'gold_answer'\)"):
        _load("jsonl", path, fields={"question": "problem", "gold_answer": "final"})


@pytest.mark.parametrize("fields, options, message", [
    ({"question": "problem", "answer": "x"}, {}, r"data\.fields\.answer: unknown column"),
    ({"question": "problem"}, {"gold_from_solution": "last"},
     r"data\.options\.gold_from_solution: expected 'hash' or 'boxed'"),
])
def test_generic_jsonl_bad_mapping_or_option(tmp_path: Path, fields: dict, options: dict,
                                             message: str) -> None:
    path = _jsonl(tmp_path / "g.jsonl", [{"problem": "a"}])
    with pytest.raises(ConfigError, match=message):
        _load("jsonl", path, fields=fields, options=options)


def test_parquet_and_json_list_inputs(tmp_path: Path) -> None:
    rows = [{"question": "Q1", "answer": "#### 1"}, {"question": "Q2", "answer": "#### 2"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train-00000-of-00001.parquet")
    (tmp_path / "list.json").write_text(json.dumps(rows))
    from_parquet = _load("gsm8k", tmp_path / "train-00000-of-00001.parquet")
    assert [(r["id"], r["gold_answer"]) for r in from_parquet] == [("gsm8k-train-0", "1"),
                                                                   ("gsm8k-train-1", "2")]
    assert [r["gold_answer"] for r in _load("gsm8k", tmp_path / "list.json")] == ["1", "2"]


def test_directory_path_picks_the_split(tmp_path: Path) -> None:
    _jsonl(tmp_path / "train.jsonl", [{"question": "train Q", "answer": "#### 1"}])
    _jsonl(tmp_path / "test.jsonl", [{"question": "test Q", "answer": "#### 2"}])
    (row,) = _load("gsm8k", tmp_path, options={"split": "test"})
    assert row["question"] == "test Q" and row["id"] == "gsm8k-test-0"
    with pytest.raises(DataError, match=r"expected one data file.*found: test\.jsonl, train\.jsonl"):
        _load("gsm8k", tmp_path)


def test_synthetic_loader() -> None:
    rows = _load("synthetic", options={"n": 6, "seed": 4, "ops": "+-*"})
    expected = make_problems(6, seed=4, ops="+-*")
    assert [r["question"] for r in rows] == [p["question"] for p in expected]
    assert [r["gold_answer"] for r in rows] == [p["answer"] for p in expected]
    assert [json.loads(r["meta"])["steps"] for r in rows] == [p["steps"] for p in expected]
    assert len(_load("synthetic", limit=3)) == 3
    assert len(_load("synthetic", limit=2, options={"n": 5})) == 2


@pytest.mark.parametrize("options, message", [
    ({}, r"data\.options\.n: required"),
    ({"n": 3, "colour": "red"}, r"data\.options\.colour: unknown option for dataset 'synthetic'"),
    ({"n": 3, "max_operand": 1}, r"data\.options\.max_operand: expected an integer from 2"),
    ({"n": 10**12}, r"data\.options\.n: expected an integer from 1 to 10,000,000, got 1000000000000"),
    ({"n": 3, "ops": 5}, r"data\.options\.ops: expected a string of"),
    ({"n": 3, "ops": "-"}, r"data\.options\.ops: expected '\+', '-', '\*' characters including"),
    ({"n": 3, "min_steps": 5}, r"data\.options\.steps: expected 1 <= min_steps <= max_steps, got 5\.\.3"),
    ({"n": 3, "max_steps": 33}, r"data\.options\.max_steps: expected an integer from 1 to 32"),
    ({"n": 3, "seed": -1}, r"data\.options\.seed: expected an integer from 0"),
    ({"n": True}, r"data\.options\.n: expected an integer"),
])
def test_synthetic_bad_options(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_problems(DatasetSpec(name="synthetic", options=options))


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------


def test_malformed_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "Q", "answer": "#### 1"}\n{"question": "Q", "answer": \n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: malformed JSON"):
        _load("gsm8k", path)


def test_missing_field_names_field_and_line(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "m.jsonl", [{"question": "Q", "answer": "#### 1"}, {"question": "Q2"}])
    with pytest.raises(DataError, match=r"m\.jsonl:2: missing field 'answer'"):
        _load("gsm8k", path)


def test_wrong_field_type_names_field_and_line(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "t.jsonl", [{"question": "Q", "answer": "#### 1"},
                                         {"question": ["Q"], "answer": "#### 2"}])
    with pytest.raises(DataError, match=r"t\.jsonl:2: field 'question' must be a string, got list"):
        _load("gsm8k", path)
    # a numeric answer is fine where the source's answer is a bare value
    path = _jsonl(tmp_path / "m.jsonl", [{"problem": "P", "answer": 12, "solution": "s"}])
    assert _load("math500", path)[0]["gold_answer"] == "12"


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(DataError, match=r"empty\.jsonl: empty dataset"):
        _load("gsm8k", path)


def test_unknown_dataset_lists_known_names(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "x.jsonl", [{"question": "Q"}])
    with pytest.raises(ConfigError, match=r"data\.name: unknown dataset 'gsm9k'") as err:
        load_problems(DatasetSpec(name="gsm9k", path=str(path)))
    for name in KNOWN_SOURCES:
        assert name in str(err.value)


def test_unknown_option_for_file_source(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "x.jsonl", [{"question": "Q", "answer": "#### 1"}])
    with pytest.raises(ConfigError, match=r"data\.options\.seed: unknown option for dataset 'gsm8k'"):
        _load("gsm8k", path, options={"seed": 1})


def test_hf_path_offline_fails_with_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = DatasetSpec(name="gsm8k", path="hf://nobody-here/no-such-dataset/test.jsonl")
    with pytest.raises(DataError, match=r"hf://nobody-here/no-such-dataset/test\.jsonl: dataset "
                                        r"'nobody-here/no-such-dataset' is unavailable: offline"):
        load_problems(spec)


def test_bad_hf_path_form() -> None:
    with pytest.raises(ConfigError, match=r"data\.path: expected hf://owner/name"):
        load_problems(DatasetSpec(name="gsm8k", path="hf://justone"))


# ------------------------------------------------------------------------------------------
# Bundled sample and real data
# ------------------------------------------------------------------------------------------


def test_bundled_sample_and_license() -> None:
    rows = _load("gsm8k", bundled_path("gsm8k_sample.jsonl"))
    assert len(rows) == 32 and all(r["gold_answer"] for r in rows)
    assert "MIT License" in bundled_path("gsm8k_sample.LICENSE").read_text()
    with pytest.raises(DataError,
                       match=r"bundled data 'nope\.jsonl' not found \(available: .*gsm8k_sample\.jsonl"):
        bundled_path("nope.jsonl")


def test_bundled_sample_is_the_head_of_gsm8k_test(shared_data_dir: Path) -> None:
    real = (shared_data_dir / "gsm8k/test.jsonl").read_text().splitlines()[:32]
    assert bundled_path("gsm8k_sample.jsonl").read_text().splitlines() == real


@pytest.mark.parametrize("name, rel, rows", [
    ("gsm8k", "gsm8k/train.jsonl", 7473), ("gsm8k", "gsm8k/test.jsonl", 1319),
    ("math", "math/train.jsonl", 7500), ("math", "math/test.jsonl", 5000),
    ("math500", "math500/test.jsonl", 500),
    ("w2s", "w2s/gsm8k/train_1.jsonl", 7000), ("w2s", "w2s/gsm8k/train_2.jsonl", 7000),
    ("w2s", "w2s/gsm8k/test.jsonl", 1319),
])
def test_real_files(shared_data_dir: Path, name: str, rel: str, rows: int) -> None:
    table = load_problems(DatasetSpec(name=name, path=str(shared_data_dir / rel)))
    assert table.num_rows == rows
    ids = table.column("id").to_pylist()
    golds = table.column("gold_answer").to_pylist()
    if rel == "math/train.jsonl":
        # two upstream solutions end in an empty \boxed{}: kept, without a gold answer
        missing = sorted(i for i, g in zip(ids, golds) if g is None)
        assert missing == ["train/number_theory/7115.json", "train/number_theory/7117.json"]
    else:
        assert all(g and g.strip() for g in golds)
    if name in ("gsm8k", "w2s"):
        assert all("," not in g for g in golds)
    assert len(set(ids)) == rows


@pytest.mark.parametrize("name, options, fields, message", [
    ("gsm8k", {"strip_calc": "yes please"}, {}, r"data\.options\.strip_calc: expected true or false"),
    ("olympiad", {"exclude_answer_types": "CODE"}, {}, r"exclude_answer_types: expected a list"),
    ("olympiad", {"language": ""}, {}, r"data\.options\.language: expected a language code"),
    ("jsonl", {"gold_from_solution": "last"}, {}, r"gold_from_solution: expected 'hash' or 'boxed'"),
    ("jsonl", {}, {"question": ""}, r"data\.fields\.question: expected the file's field name"),
    ("math", {"source": "x"}, {}, r"data\.options\.source: unknown option for dataset 'math'"),
    ("gsm8k", {}, {"question": "q"}, r"data\.fields: only dataset 'jsonl' maps fields"),
])
def test_options_checked_before_the_data_is_read(tmp_path: Path, name: str, options: dict,
                                                fields: dict, message: str) -> None:
    """Options and fields are the data layer's check (the config layer reads the spec's types
    only): ``check_config_data`` (config show, the run preflight) and ``load_problems`` (eval,
    sample, data prepare) refuse them before reading a byte of the file, so a bad option is
    one line before Ray starts, not a failed stage inside a run."""
    from raysys.config import from_dict
    from raysys.data.sources import check_config_data

    f = tmp_path / "t.jsonl"
    f.write_bytes(bytes(range(256)))            # not data: an option error must come first
    spec = from_dict(DatasetSpec, {"name": name, "path": str(f), "options": options,
                                   "fields": fields}, "data")
    with pytest.raises(ConfigError, match=message):
        check_config_data(spec, "data")
    with pytest.raises(ConfigError, match=message):
        load_problems(spec, "data")
