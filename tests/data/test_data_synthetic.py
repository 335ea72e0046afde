"""The synthetic arithmetic task: determinism, correct arithmetic, knobs, seed separation."""

from __future__ import annotations

import random
import re

import pytest

from raysys.data.synthetic import apply_op, corpus_text, make_problems, make_steps, render_solution

LINE = re.compile(r"^(\d+)([+\-*])(\d+)=(\d+)$")


def _check_problem(p: dict, *, min_steps: int, max_steps: int, max_operand: int, ops: str) -> None:
    *lines, last = p["solution"].split("\n")
    assert last == f"#### {p['answer']}"
    assert min_steps <= len(lines) <= max_steps
    assert len(p["steps"]) == len(lines)
    prev = None
    for line, step in zip(lines, p["steps"]):
        m = LINE.match(line)
        assert m, f"bad step line {line!r}"
        a, op, b, r = int(m[1]), m[2], int(m[3]), int(m[4])
        # the arithmetic is computed here independently of the generator
        assert r == {"+": a + b, "-": a - b, "*": a * b}[op]
        assert r >= 0
        assert op in ops
        assert 1 <= b <= max_operand
        assert step == [a, op, b, r]
        if prev is None:
            assert 1 <= a <= max_operand
            assert f" {a} " in p["question"]
        else:
            assert a == prev
        assert str(b) in p["question"]
        prev = r
    assert p["answer"] == str(prev)


@pytest.mark.parametrize("knobs", [
    {},
    {"min_steps": 1, "max_steps": 5, "max_operand": 9, "ops": "+-*"},
    {"min_steps": 4, "max_steps": 4, "max_operand": 50, "ops": "+-"},
])
def test_every_solution_is_correct_arithmetic(knobs: dict) -> None:
    full = {"min_steps": 2, "max_steps": 3, "max_operand": 20, "ops": "+-", **knobs}
    problems = make_problems(300, seed=5, **knobs)
    assert len(problems) == 300
    for p in problems:
        _check_problem(p, **full)
    lengths = {len(p["steps"]) for p in problems}
    assert lengths == set(range(full["min_steps"], full["max_steps"] + 1))
    used_ops = {s[1] for p in problems for s in p["steps"]}
    assert used_ops == set(full["ops"])


def test_deterministic_and_prefix_stable() -> None:
    a = make_problems(40, seed=3)
    assert a == make_problems(40, seed=3)
    assert make_problems(10, seed=3) == a[:10]
    assert [p["id"] for p in a[:2]] == ["synthetic-3-0", "synthetic-3-1"]


def test_different_seeds_give_mostly_different_problems() -> None:
    q0 = {p["question"] for p in make_problems(300, seed=0)}
    q1 = {p["question"] for p in make_problems(300, seed=1)}
    assert len(q0) >= 295   # few duplicates within a seed either
    assert len(q0 & q1) <= 3


def test_make_steps_never_goes_negative_with_small_values() -> None:
    # max_operand 2 forces frequent subtraction down to 0; "-" must then be skipped
    rng = random.Random(0)
    for _ in range(200):
        steps = make_steps(rng, 6, 2, "+-")
        values = [steps[0][0]] + [s[3] for s in steps]
        assert min(values) >= 0
        for a, op, b, r in steps:
            if a == 0:
                assert op == "+"


def test_render_solution_and_apply_op_hand_computed() -> None:
    assert render_solution([[23, "+", 15, 38], [38, "-", 9, 29]]) == "23+15=38\n38-9=29\n#### 29"
    assert apply_op(7, "*", 6) == 42
    assert apply_op(7, "-", 7) == 0
    with pytest.raises(ValueError, match="unknown op '/'"):
        apply_op(1, "/", 1)


@pytest.mark.parametrize("bad, message", [
    ({"min_steps": 0}, r"^steps: expected 1 <= min_steps <= max_steps, got 0\.\.3"),
    ({"min_steps": 3, "max_steps": 2}, r"^steps: .*got 3\.\.2"),
    ({"max_operand": 1}, r"^max_operand: expected >= 2, got 1"),
    ({"ops": "+/"}, r"^ops: .*got '\+/'"),
    ({"ops": "-"}, r"^ops: .*got '-'"),
])
def test_bad_knobs_are_rejected(bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_problems(1, **bad)


def test_corpus_text_holds_questions_and_solutions() -> None:
    text = corpus_text(5, seed=2)
    blocks = text.split("\n\n")
    assert len(blocks) == 5
    for block, p in zip(blocks, make_problems(5, seed=2)):
        assert block == f"{p['question']}\n{p['solution']}"
    assert corpus_text(5, seed=2) == text
    assert corpus_text(5, seed=2, ops="+-*") != text
