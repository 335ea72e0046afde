"""grade / grade_many on hand-written outputs and on the real GSM8K and MATH500 data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raysys.grading import grade, grade_many, hash_answer
from raysys.grading.grader import MIN_POOL_PAIRS


@pytest.mark.parametrize("text, gold, style, expected", [
    ("48/2 = 24, 48+24 = 72\n#### 72", "Natalia sold...\n#### 72", "default", ("72", True)),
    ("The answer is 1,000.", "1000", "default", ("1,000", True)),
    ("The answer is 999.", "#### 1,000", "default", ("999", False)),
    (r"So $\boxed{\frac{1}{2}}$.", r"Hence $\boxed{0.5}$.", "math", (r"\frac{1}{2}", True)),
    ("I don't know", "5", "critique", ("", False)),
    ("The answer is 5. Actually the answer is 6.", "5", "critique", ("5", True)),
    ("she has 3 and then 7 apples", "7", "llm2", ("7", True)),
    ("Reasoning\n####\n$18", "#### 18", "w2s", ("$18", True)),
    ("no answer", "", "default", ("", False)),
])
def test_grade(text: str, gold: str, style: str, expected: tuple[str, bool]) -> None:
    assert grade(text, gold, style) == expected


def test_grade_many_keeps_order_and_matches_grade() -> None:
    rows = [("#### 5", "5"), (r"\boxed{\sqrt{8}}", r"2\sqrt{2}"), ("#### 6", "5"),
            ("The answer is (1,2)", "(2,1)"), ("", "3")]
    expected = [grade(t, g) for t, g in rows]
    assert grade_many(rows) == expected
    assert [ok for _, ok in expected] == [True, True, False, False, False]


def test_grade_many_spreads_sympy_pairs_over_worker_processes() -> None:
    # n\sqrt{2} == \sqrt{2n^2}: every pair needs sympy, enough of them to use the pool
    rows = [(rf"\boxed{{\sqrt{{{n * n * 2}}}}}", rf"{n}\sqrt{{2}}") for n in range(1, 70)]
    rows += [(rf"\boxed{{\sqrt{{{n}}}}}", "1") for n in range(2, 10)]
    assert len(rows) >= MIN_POOL_PAIRS
    graded = grade_many(rows, processes=2)
    assert [ok for _, ok in graded] == [True] * 69 + [False] * 8
    assert graded[3] == (r"\sqrt{32}", True)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_math500_boxed_solution_equals_answer(shared_data_dir: Path) -> None:
    rows = _rows(shared_data_dir / "math500" / "test.jsonl")
    assert len(rows) == 500
    graded = grade_many([(r["solution"], r["answer"]) for r in rows], style="math")
    wrong = [(r["unique_id"], p, r["answer"]) for r, (p, ok) in zip(rows, graded) if not ok]
    assert wrong == []


def test_math500_answers_differ_from_other_answers(shared_data_dir: Path) -> None:
    # guard against a grader that says "equal" too easily: shift answers by one row
    rows = _rows(shared_data_dir / "math500" / "test.jsonl")[:120]
    pairs = [(rows[i]["answer"], rows[i - 1]["answer"]) for i in range(1, len(rows))]
    same = {pair for pair, (_, ok) in zip(pairs, grade_many(pairs, processes=1)) if ok}
    identical = {(a, b) for a, b in pairs if a == b}
    assert same == identical | {("x=5", "5")}   # rows 112/113 really share an answer


def test_gsm8k_answers_equal_their_reformatting(shared_data_dir: Path) -> None:
    rows = _rows(shared_data_dir / "gsm8k" / "test.jsonl")
    assert len(rows) == 1319
    bad = []
    for r in rows:
        raw = hash_answer(r["answer"])
        value = float(raw.replace(",", ""))
        pretty = f"{value:,.2f}" if "." in raw else f"{int(value):,}"
        for pred in (f"The answer is {pretty}.", f"#### {pretty}", rf"\boxed{{{pretty}}}"):
            if not grade(pred, r["answer"]) == (pretty, True):
                bad.append((pred, raw))
        if grade(f"#### {value + 1:g}", r["answer"])[1]:
            bad.append(("off by one", raw))
    assert bad == []


def test_w2s_weak_outputs_match_the_papers_grading(shared_data_dir: Path) -> None:
    # real Mistral-7B outputs graded by the weak-to-strong paper (exact string match of pred)
    path = shared_data_dir / "w2s" / "weak_outputs" / "gsm8k_train_2_mistral_7b_zero_shot.jsonl"
    def trailing_zero_case(r: dict) -> bool:   # e.g. pred "4.20", gold "4.2"
        try:
            return r["pred"] != r["gold"] and float(r["pred"]) == float(r["gold"])
        except ValueError:
            return False

    all_rows = _rows(path)
    rows = all_rows[:1000] + [r for r in all_rows[1000:] if trailing_zero_case(r)]
    graded = grade_many([(r["response"], r["gold"]) for r in rows], style="w2s", processes=1)
    # the paper also deletes commas and spaces from its pred (and a few unit words)
    squeezed = [p.replace(",", "").replace(" ", "") for p, _ in graded]
    assert sum(p != str(r["pred"]) for p, r in zip(squeezed, rows)) <= 2
    differ = [(r["pred"], r["gold"]) for r, (_, ok) in zip(rows, graded) if ok != bool(r["result"])]
    # the only disagreements: the paper's string match calls "4.20" vs "4.2" wrong
    assert len(differ) == sum(map(trailing_zero_case, rows)) > 0


def test_whole_call_budget() -> None:
    """Past ``budget_s`` grade_many stops with how far it got, however cheap each row's bound."""
    from raysys.grading.grader import BudgetExceeded

    rows = [(f"\\boxed{{x^2+{i}x+1}}", f"(x+{i})^2") for i in range(5)]      # each needs sympy
    with pytest.raises(BudgetExceeded, match=r"after the 1e-06 s budget with 0 of 5 rows decided") as e:
        grade_many(rows, processes=1, budget_s=1e-6)
    assert (e.value.done, e.value.total) == (0, 5)
    assert grade_many([("2", "2"), ("3", "2")], budget_s=60) == [("2", True), ("3", False)]
