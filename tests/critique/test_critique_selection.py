"""Shortcut barrier, refinement selection (per-question cap, determinism), SFT assembly flags."""

from __future__ import annotations

import random

import pytest

from raysys.critique.selection import (assemble_sft, count_numbers, direct_sft_rows,
                                       feedback_sft_rows, is_shortcut, select_refinements,
                                       unworked)
from raysys.data.io import DataError


def test_count_numbers() -> None:
    assert count_numbers("12+3=15\n#### 15") == 4
    assert count_numbers("1,234.5 and x2") == 4      # runs of digits, as the authors count
    assert count_numbers("no digits") == 0


@pytest.mark.parametrize("new, original, gold, shortcut", [
    # n(orig) = 6, n(gold) = 8: bound min(6, 8) - 2 = 4
    ("1 2 3", "1 2 3 4 5 6", "1 2 3 4 5 6 7 8", True),
    ("1 2 3 4", "1 2 3 4 5 6", "1 2 3 4 5 6 7 8", False),
    # gold shorter than the original lowers the bound: min(6, 3) - 2 = 1
    ("7", "1 2 3 4 5 6", "1 2 3", False),
    ("no number", "1 2 3 4 5 6", "1 2 3", True),
    # without gold the bound is n(orig) - 2 = 4
    ("1 2 3", "1 2 3 4 5 6", None, True),
    ("1 2 3", "1 2 3 4 5 6", "  ", True),
    ("1 2 3 4", "1 2 3 4 5 6", None, False),
    # short originals: a negative bound never rejects
    ("", "1", None, False),
])
def test_shortcut_barrier(new: str, original: str, gold: str | None, shortcut: bool) -> None:
    assert is_shortcut(new, original, gold) is shortcut


def _row(pid: str, s: int, refined: str, correct: bool = True, r: int = 0) -> dict:
    return {"problem_id": pid, "sample_idx": s, "refine_idx": r, "refined": refined,
            "refined_correct": correct, "original": "1+2=3\n3+4=7\n#### 7",
            "gold_solution": "1+2=3\n3+5=8\n#### 8", "critique": "c"}


ROWS = [
    _row("q1", 0, "1+2=3\n3+5=8\n#### 8", r=1),
    _row("q1", 0, "1+2=3\n3+5=8\n#### 8 (again)", r=0),
    _row("q1", 1, "1+2=3\n3+5=8\n#### 8", r=0),          # same text as one kept: duplicate
    _row("q1", 2, "#### 8"),                              # shortcut
    _row("q2", 0, "1+2=3\n3+5=9\n#### 9", correct=False),
    _row("q2", 1, "2+2=4\n4+4=8\n#### 8"),
    _row("q3", 0, "5+5=10\n10-2=8\n#### 8", correct=None),  # ungraded counts as not correct
]


def test_select_refinements_cap_and_reasons() -> None:
    sel = select_refinements(ROWS, reserved_new_data=1)
    # q1: the first in (sample_idx, refine_idx) order is refine_idx 0 of sample 0
    assert [(r["problem_id"], r["refined"]) for r in sel.kept] == [
        ("q1", "1+2=3\n3+5=8\n#### 8 (again)"), ("q2", "2+2=4\n4+4=8\n#### 8")]
    assert sel.stats == {"total": 7, "incorrect": 2, "shortcut": 1, "duplicate": 0,
                         "over_cap": 2, "kept": 2}
    sel2 = select_refinements(ROWS, reserved_new_data=2)
    assert [r["problem_id"] for r in sel2.kept] == ["q1", "q1", "q2"]
    assert sel2.stats["duplicate"] == 1 and sel2.stats["over_cap"] == 0
    assert select_refinements(ROWS, 0).stats["over_cap"] == 4


OLIVE = "Olive has 3 toy cars. Then she finds 7 more toy cars. Then she uses 9 toy cars."


@pytest.mark.parametrize("new, question, bad", [
    ("3+7=10\n10-9=1\n#### 1", OLIVE, False),                   # the gold working
    ("2-4=2\n2-1=1\n#### 1", OLIVE, True),                      # 2-4 is not 2
    ("7-2=5\n5+9=13\n13-2=11\n#### 11", "Kara has 6, loses 6, wins 1, finds 10.", True),  # 7, 2
    ("7+3=10\n10-9=1\n#### 1", OLIVE, False),                   # grounded and true: passes
    ("3*3=9\n9+7=16\n#### 16", OLIVE, False),                   # a wrong plan is not caught
    ("1,200+300=1,500\n#### 1500", "It costs 1,200 and then 300 more.", False),
    ("She sold 48/2 = <<48/2=24>>24.\n#### 24", "She sold 48 clips, half as many in May.", True),
    ("#### 1", OLIVE, False),                                    # no working: the barrier's job
])
def test_unworked(new: str, question: str, bad: bool) -> None:
    assert unworked(new, question) is bad


def test_select_refinements_can_reject_unworked_refinements() -> None:
    questions = {"q1": "1 and 2, then 5 more", "q2": "3 apples, then 4 more", "q3": "5 5 2"}
    sel = select_refinements(ROWS, reserved_new_data=1, questions=questions)
    # q1's refinements are grounded and true; q2's "2+2=4 / 4+4=8" uses a 2 its question lacks
    assert [r["problem_id"] for r in sel.kept] == ["q1"]
    assert sel.stats["unworked"] == 1 and sel.stats["kept"] == 1
    assert "unworked" not in select_refinements(ROWS, reserved_new_data=1).stats


def test_select_refinements_independent_of_order_and_sharding() -> None:
    expected = select_refinements(ROWS, 1).kept
    for seed in range(5):
        rows = list(ROWS)
        random.Random(seed).shuffle(rows)
        assert select_refinements(rows, 1).kept == expected
    # the authors cap per GPU shard: two shards would each keep one for q1; we keep one overall
    shard_a, shard_b = ROWS[:2], ROWS[2:]
    assert sum(r["problem_id"] == "q1" for r in select_refinements(shard_a + shard_b, 1).kept) == 1


def test_select_refinements_does_not_alias_inputs() -> None:
    kept = select_refinements(ROWS, 1).kept
    kept[0]["refined"] = "changed"
    assert ROWS[1]["refined"] == "1+2=3\n3+5=8\n#### 8 (again)"


def test_select_refinements_bad_rows() -> None:
    with pytest.raises(DataError, match="refinement row 0: missing field\\(s\\) original"):
        select_refinements([{"problem_id": "q", "sample_idx": 0, "refined": "x",
                             "refined_correct": True}], 1)
    with pytest.raises(ValueError, match="reserved_new_data: expected >= 0"):
        select_refinements(ROWS, -1)


def test_direct_and_feedback_rows() -> None:
    kept = select_refinements(ROWS, 1).kept
    qs = {"q1": "Q1?", "q2": "Q2?"}
    direct = direct_sft_rows(kept, qs, lambda q: f"Question: {q}\nAnswer:", lambda s: " " + s)
    assert direct[1] == {"prompt": "Question: Q2?\nAnswer:", "response": " 2+2=4\n4+4=8\n#### 8",
                         "source": "refined:q2"}
    fb = feedback_sft_rows(kept, qs, lambda q, s, c: f"{q}|{s}|{c}")
    assert fb[0]["prompt"] == "Q1?|1+2=3\n3+4=7\n#### 7|c"


def _data() -> dict:
    row = lambda tag: [{"prompt": tag, "response": tag}]   # noqa: E731
    return dict(seed=row("seed"), seed_feedback=row("seed_new"),
                correct={i: row(f"correct{i}") for i in (1, 2, 3)},
                refined={i: row(f"refined{i}") for i in (1, 2, 3)},
                feedback={i: row(f"feedback{i}") for i in (1, 2, 3)})


def _tags(t: int, **flags: bool) -> list[str]:
    base = dict(use_original=False, use_previous=False, use_critic=False,
                use_selfimprove_feedback=False)
    base.update(flags)
    return [r["prompt"] for r in assemble_sft(t, **base, **_data())]


def test_assemble_iteration_zero_is_seed_only() -> None:
    assert _tags(0) == ["seed", "seed_new"]
    assert _tags(0, use_previous=True, use_critic=True) == ["seed", "seed_new"]
    assert _tags(0, use_seed_feedback=False) == ["seed"]


def test_assemble_flags_follow_methods_md() -> None:
    # the script's values: USE_ORIGINAL 1, USE_PREVIOUS 0, USE_CRITIC 1, USE_SELFIMPROVE_FEEDBACK 0
    assert _tags(2, use_original=True, use_critic=True) == ["seed", "seed_new", "correct2", "refined2"]
    # plain self-improvement: correct samples only
    assert _tags(2) == ["correct2"]
    # previous iterations 1..t
    assert _tags(3, use_previous=True, use_critic=True) == [
        "correct1", "refined1", "correct2", "refined2", "correct3", "refined3"]
    assert _tags(2, use_previous=True) == ["correct1", "correct2"]
    # the README example: USE_CRITIC 0, USE_SELFIMPROVE_FEEDBACK 1
    assert _tags(1, use_original=True, use_selfimprove_feedback=True) == [
        "seed", "seed_new", "correct1", "feedback1"]


def test_assemble_missing_iteration_raises_instead_of_reusing_stale_data() -> None:
    data = _data()
    del data["refined"][2]
    with pytest.raises(DataError, match="refined has no rows for iteration 2"):
        assemble_sft(2, use_original=False, use_previous=False, use_critic=True,
                     use_selfimprove_feedback=False, **data)
    with pytest.raises(DataError, match="correct has no rows for iteration 1"):
        assemble_sft(1, use_original=False, use_previous=False, use_critic=False,
                     use_selfimprove_feedback=False)


def test_assemble_is_pure() -> None:
    data = _data()
    args = dict(use_original=True, use_previous=True, use_critic=True, use_selfimprove_feedback=True)
    first = assemble_sft(2, **args, **data)
    first[0]["prompt"] = "mutated"
    assert assemble_sft(2, **args, **data)[0]["prompt"] == "seed"
    assert data["seed"][0]["prompt"] == "seed"
