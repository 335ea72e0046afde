"""Import of the MathCritique ``*_0_new.json`` layout: the hand-written fixture and bad records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raysys.critique.imports import import_critique_file, refined_answer, split_record
from raysys.data.io import DataError
from raysys.data.schema import conform
from raysys.prompts import critique_prompt, refine_prompt

FIXTURE = Path(__file__).parent / "fixtures" / "tiny-gsm8k-sftdata_0_new.json"


def test_import_fixture_rows_and_stats() -> None:
    got = import_critique_file(FIXTURE)
    assert got.stats == {"records": 3, "imported": 3, "empty_critique": 0, "no_answer": 1,
                         "unparsed_critique": 0, "verdict_correct": 1, "verdict_wrong": 2,
                         "verdict_unknown": 0}
    assert got.issues == [f"{FIXTURE}: item 2: refined solution states no answer "
                          "(critique kept, no refinement example)"]
    ids = [p["id"] for p in got.problems]
    assert ids == ["tiny-gsm8k-sftdata_0_new-1", "tiny-gsm8k-sftdata_0_new-2",
                   "tiny-gsm8k-sftdata_0_new-3"]
    assert got.problems[0]["question"] == ("Ann has 10 apples and eats 2 of them. She then buys 5 "
                                           "more. How many apples does she have?")
    assert got.problems[2]["question"] == "What is the value of $2^3$?"
    assert json.loads(got.problems[2]["meta"])["format_request"].endswith(
        "'The answer is $\\boxed{[your answer]}$.'")
    # critiques: verdicts, per-step verdicts (blank lines, "Incorrect", bold, case), answers
    c = got.critiques
    assert [r["verdict"] for r in c] == ["wrong", "wrong", "correct"]
    assert [json.loads(r["steps"]) for r in c] == [[True, False], [False, True], [True]]
    assert [r["first_wrong_step"] for r in c] == [2, 1, None]
    assert [r["refined_pred"] for r in c] == ["13", "", "8"]
    assert c[0]["critique"].startswith("Step sentence: She eats 2") and c[0]["critique"].endswith("13.")
    # the wrong solution is sample 0, as written
    assert got.samples[0]["completion"].startswith("Let's break it down step by step:\n\nShe eats 2")
    assert got.samples[0]["pred"] == "12"
    # every table conforms to its schema
    conform(got.problems, "problems")
    conform(got.samples, "samples")
    conform(got.critiques, "critiques")
    conform(got.sft + got.critic_sft, "sft")


def test_import_fixture_sft_rows_ours_and_authors() -> None:
    ours = import_critique_file(FIXTURE)
    assert len(ours.sft) == 2 and len(ours.critic_sft) == 3     # item 2 has no refinement row
    solution = "She eats 2, so 10 - 2 = <<10-2=8>>8 apples.\nShe buys 5, so 8 + 5 = <<8+5=12>>12 apples.\nThe answer is 12."
    question = ours.problems[0]["question"]
    critique = ours.critiques[0]["critique"]
    assert ours.sft[0] == {
        "prompt": refine_prompt(question, solution, critique),
        "response": "Ann eats 2 apples: 10 - 2 = <<10-2=8>>8.\nShe buys 5 more: 8 + 5 = <<8+5=13>>13.\nThe answer is 13.",
        "source": "mathcritique:tiny-gsm8k-sftdata_0_new:refine:tiny-gsm8k-sftdata_0_new-1"}
    assert ours.critic_sft[0]["prompt"] == critique_prompt(question, solution)
    assert ours.critic_sft[0]["response"] == critique
    authors = import_critique_file(FIXTURE, prompt="authors", source="seed")
    raw = json.loads(FIXTURE.read_text())
    assert authors.sft[0]["prompt"] == raw[0]["instruction"]
    assert authors.sft[0]["response"] == raw[0]["output"]
    assert authors.sft[1]["source"] == "seed:refine:tiny-gsm8k-sftdata_0_new-3"


def _write(tmp_path: Path, records: list) -> Path:
    path = tmp_path / "bad_0_new.json"
    path.write_text(json.dumps(records))
    return path


def _good() -> dict:
    return dict(json.loads(FIXTURE.read_text())[0])


@pytest.mark.parametrize("field", ["instruction", "input", "output"])
def test_missing_field_names_file_item_and_field(tmp_path: Path, field: str) -> None:
    bad = _good()
    del bad[field]
    path = _write(tmp_path, [_good(), bad])
    with pytest.raises(DataError, match=f"bad_0_new.json: item 2: missing field '{field}'"):
        import_critique_file(path)


def test_non_string_field_and_wrong_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="item 1: field 'output' must be a string, got list"):
        import_critique_file(_write(tmp_path, [dict(_good(), output=["a", "b"])]))
    no_turn = dict(_good(), instruction="Q?\n\nAssistant: 1+1=3")
    with pytest.raises(DataError, match="item 1: field 'instruction': expected .*Human"):
        import_critique_file(_write(tmp_path, [no_turn]))
    with pytest.raises(DataError, match="item 1: field 'instruction': expected .*Assistant"):
        import_critique_file(_write(tmp_path, [dict(_good(), instruction="just a question")]))
    with pytest.raises(DataError, match="empty dataset"):
        import_critique_file(_write(tmp_path, []))


def test_empty_and_unparsable_critiques_are_counted_and_reported(tmp_path: Path) -> None:
    good = _good()
    head, _, _ = good["instruction"].partition("\n\nStep sentence:")
    empty = dict(good, instruction=head + "\n\n   \n")
    garbage = dict(good, instruction=head + "\n\nLooks fine to me.\n")
    got = import_critique_file(_write(tmp_path, [empty, garbage, good]))
    assert got.stats["records"] == 3 and got.stats["imported"] == 2
    assert got.stats["empty_critique"] == 1 and got.stats["unparsed_critique"] == 1
    assert got.stats["verdict_unknown"] == 1
    assert [i.split(": ", 2)[1:] for i in got.issues] == [
        ["item 1", "empty critique (record skipped)"],
        ["item 2", "critique has no step or final verdict the parser reads (kept, verdict unknown)"]]
    assert [r["verdict"] for r in got.critiques] == ["unknown", "wrong"]


def test_split_record_with_input_field() -> None:
    rec = dict(_good(), input="(extra)")
    ex = split_record(rec, "x: item 1")
    assert ex.critique.endswith("(extra)")   # LLaMA-Factory appends input after a newline


def test_refined_answer_rules() -> None:
    assert refined_answer("so 5. The answer is 7. Later the answer is 9.") == "7"
    assert refined_answer("Thus $\\boxed{220}$.") == "220"
    assert refined_answer("2+2=4\n#### 4") == "4"
    assert refined_answer("There are 12 eggs in a box.") == ""
