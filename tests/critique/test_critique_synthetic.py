"""Gold critiques, one-slip corruptions and SFT rows on the synthetic task."""

from __future__ import annotations

import random

import pytest

from raysys.critique.format import parse_critique
from raysys.critique.synthetic import (check_solution, corrupt_solution, critic_sft_rows, steps_right,
                                       gold_critique, gold_steps, parse_step, refinement_sft_rows)
from raysys.data.synthetic import make_problems
from raysys.prompts import critique_prompt, refine_prompt

GOLD = "23+15=38\n38-9=29\n29+4=33\n#### 33"
Q = "Ava has 23 beads. Then she buys 15 more beads. Then she loses 9 beads. Then she finds 4 more beads."


def test_parse_step() -> None:
    assert parse_step("23+15=38") == (23, "+", 15, 38)
    assert parse_step(" 4 x 5 = 20.") == (4, "*", 5, 20)
    assert parse_step("8-10=-2") == (8, "-", 10, -2)
    assert parse_step("So she has 38.") is None


def test_gold_steps_rejects_non_synthetic_gold() -> None:
    assert gold_steps(GOLD) == [(23, "+", 15, 38), (38, "-", 9, 29), (29, "+", 4, 33)]
    with pytest.raises(ValueError, match="synthetic-task lines"):
        gold_steps("She has 10 apples.\n#### 10")


@pytest.mark.parametrize("candidate, verdicts, first, final", [
    (GOLD, [True, True, True], None, True),
    ("15+23=38\n38-9=29\n4+29=33\n#### 33", [True, True, True], None, True),    # + commutes
    ("23+15=38\n38-9=28\n28+4=32\n#### 32", [True, False, True], 2, False),     # slip carried
    ("23+15=38\n38-8=30\n30+4=34\n#### 34", [True, False, True], 2, False),     # wrong operand
    ("23+15=38\n9-38=29\n29+4=33\n#### 33", [True, False, True], 2, True),      # - does not commute
    ("23+15=38\nso 29 left\n29+4=33\n#### 33", [True, False, True], 2, True),   # not a calculation
    ("23+15=38\n38-9=29\n#### 29", [True, True, False], 3, False),              # stops early
    (GOLD.replace("#### 33", "29+4=33\n33+1=34\n#### 34"), [True] * 3 + [False, False], 4, False),
    ("23+15=38\n38-9=29\n29+4=33\n#### 34", [True, True, True], None, False),   # answer typo
    ("23+15=38\n38-9=29\n29+4=33", [True, True, True], None, False),            # no answer line
    ("", [False], 1, False),
])
def test_check_solution(candidate: str, verdicts: list[bool], first: int | None, final: bool) -> None:
    check = check_solution(GOLD, candidate)
    assert check.verdicts == verdicts
    assert check.first_wrong_step == first
    assert check.final_correct is final


@pytest.mark.parametrize("candidate, right", [
    (GOLD, True),
    (" 23+15=38\n 38-9=29\n 29+4=33\n#### 33", True),            # a leading space per line
    ("15+23=38\n38-9=29\n29+4=33\n#### 33", True),                # + commutes
    ("23+15=38\n38-9=28\n28+5=33\n#### 33", False),               # two slips cancel: lucky
    ("20+9=29\n29+4=33\n#### 33", False),                          # misread, right answer
    ("23+15=38\n38-9=29\n29+4=33\n#### 34", False),               # right steps, wrong answer
])
def test_steps_right_sees_what_the_final_answer_hides(candidate: str, right: bool) -> None:
    assert steps_right(GOLD, candidate) is right


def test_steps_right_without_per_step_truth_is_none() -> None:
    assert steps_right(None, GOLD) is None
    assert steps_right("Natalia sold 48/2 = 24 clips.\n#### 72", "#### 72") is None    # GSM8K-style


def test_check_solution_recomputes_the_right_line() -> None:
    check = check_solution(GOLD, "23+15=38\n38-8=30\n30+4=34\n#### 34")
    # the wrong step gets the gold line; later steps the line right for their own inputs
    assert check.recomputed == ["23+15=38", "38-9=29", "30+4=34"]
    assert "not 38-8" in check.explanations[1]


def test_gold_critique_compact_exact() -> None:
    cand = "23+15=38\n38-9=28\n28+4=32\n#### 32"
    # the solution's line, then the step recomputed ("->"), then the judgement
    assert gold_critique(Q, GOLD, cand, "compact") == \
        "1: 23+15=38 -> 23+15=38 correct\n2: 38-9=28 -> 38-9=29 wrong\nFinal: wrong"
    assert gold_critique(Q, GOLD, GOLD, "compact") == (
        "1: 23+15=38 -> 23+15=38 correct\n2: 38-9=29 -> 38-9=29 correct\n"
        "3: 29+4=33 -> 29+4=33 correct\nFinal: correct")
    assert gold_critique(Q, GOLD, "23+15=38\n#### 38", "compact") == (   # a missing step: "?"
        "1: 23+15=38 -> 23+15=38 correct\n2: ? -> 38-9=29 wrong\nFinal: wrong")


def test_gold_critique_authors_exact() -> None:
    text = gold_critique(Q, GOLD, "23+15=38\n38-9=28\n28+4=32\n#### 32", "authors")
    assert text == (
        "Step sentence: 23+15=38\nCorrectness of the step: Correct\nExplanation: 23+15 is 38.\n\n"
        "Step sentence: 38-9=28\nCorrectness of the step: Wrong\nExplanation: 38-9 is 29, not 28.\n\n"
        "Step sentence: 28+4=32\nCorrectness of the step: Correct\nExplanation: 28+4 is 32. Right "
        "given the previous step, but the earlier error carries forward.\n\n"
        "Correctness of the final answer: Wrong\nExplanation: The final answer should be 33, not 32.")


def test_corruption_has_exactly_one_wrong_step_and_a_wrong_answer() -> None:
    rng = random.Random(0)
    problems = make_problems(60, 3, ops="+-*")
    hit_steps = set()
    for p in problems:
        for _ in range(3):
            bad = corrupt_solution(p, rng)
            check = check_solution(p["solution"], bad)
            assert check.verdicts.count(False) == 1, (p["solution"], bad)
            assert check.final_correct is False
            assert all(v >= 0 for *_, v in gold_steps(bad + "\n"))     # never negative
            hit_steps.add(check.first_wrong_step)
            # the parsed gold critique agrees with the checker in both styles
            for style in ("compact", "authors"):
                parsed = parse_critique(gold_critique(p["question"], p["solution"], bad, style))
                assert parsed.first_wrong_step == check.first_wrong_step
                assert parsed.verdict == "wrong"
    assert hit_steps == {1, 2, 3}


def test_corruption_is_deterministic_and_respects_step() -> None:
    p = make_problems(1, 0)[0]
    assert corrupt_solution(p, random.Random(5)) == corrupt_solution(p, random.Random(5))
    for j in range(len(p["steps"])):
        assert check_solution(p["solution"], corrupt_solution(p, random.Random(1), step=j)
                              ).first_wrong_step == j + 1
    with pytest.raises(ValueError, match="step: expected 0.."):
        corrupt_solution(p, random.Random(1), step=9)


def _samples(problems: list[dict]) -> list[dict]:
    # sample 0 right, sample 1 with the final answer off by one
    out = []
    for p in problems:
        out.append({"problem_id": p["id"], "sample_idx": 0, "completion": p["solution"] + "\n"})
        wrong = p["solution"].rsplit("#### ", 1)[0] + f"#### {int(p['answer']) + 1}"
        out.append({"problem_id": p["id"], "sample_idx": 1, "completion": wrong})
    out.append({"problem_id": "other-problem", "sample_idx": 0, "completion": "1+1=2\n#### 2"})
    return out


def test_critic_sft_rows_mix_and_content() -> None:
    problems = make_problems(5, 1)
    rows = critic_sft_rows(problems, _samples(problems), random.Random(0),
                           {"gold": 7, "corrupted": 4, "sampled": 100})
    kinds = [r["source"].split(":")[1] for r in rows]
    assert kinds.count("gold") == 7 and kinds.count("corrupted") == 4
    assert kinds.count("sampled") == 10         # capped at the 10 samples of known problems
    by_id = {p["id"]: p for p in problems}
    for r in rows:
        p = by_id[r["source"].split(":", 2)[2]]
        solution = r["prompt"].split("Answer: ", 1)[1].rsplit("\nCheck:\n", 1)[0]
        assert r["prompt"] == critique_prompt(p["question"], solution, "short")
        assert r["response"] == gold_critique(p["question"], p["solution"], solution, "compact")
    gold_rows = [r for r in rows if ":gold:" in r["source"]]
    assert all(r["response"].endswith("Final: correct") for r in gold_rows)
    assert rows == critic_sft_rows(problems, _samples(problems), random.Random(0),
                                   {"gold": 7, "corrupted": 4, "sampled": 100})
    with pytest.raises(ValueError, match="mix: expected counts"):
        critic_sft_rows(problems, [], random.Random(0), {"golden": 1})


def test_refinement_sft_rows_targets() -> None:
    problems = make_problems(4, 2)
    rows = refinement_sft_rows(problems, _samples(problems), random.Random(0),
                               {"corrupted": 3, "sampled": 2, "correct": 2})
    assert [r["source"].split(":")[1] for r in rows] == ["corrupted"] * 3 + ["sampled"] * 2 + ["correct"] * 2
    by_id = {p["id"]: p for p in problems}
    for r in rows:
        p = by_id[r["source"].split(":", 2)[2]]
        assert r["response"] == " " + p["solution"]      # always the gold solution
        assert r["prompt"].endswith("\nAnswer:")
        if ":correct:" in r["source"]:
            crit = gold_critique(p["question"], p["solution"], p["solution"])
            assert r["prompt"] == refine_prompt(p["question"], p["solution"], crit, "short")
            assert "Final: correct" in r["prompt"]
        else:
            assert "Final: wrong" in r["prompt"]


def test_stop_strings_never_cut_a_training_response() -> None:
    # the authors' stop strings truncate text; ours must not cut what the models are taught
    from raysys.prompts import default_stop

    problems = make_problems(20, 4)
    critic = critic_sft_rows(problems, [], random.Random(0), {"gold": 20, "corrupted": 20})
    critic_full = critic_sft_rows(problems, [], random.Random(0), {"corrupted": 20},
                                  style="authors", variant="full")
    refine = refinement_sft_rows(problems, [], random.Random(0), {"corrupted": 20, "correct": 5})
    for rows, stops in ((critic, default_stop("critique_short")),
                        (critic_full, default_stop("critique")),
                        (refine, default_stop("refine_short"))):
        for r in rows:
            assert not any(s in r["response"] for s in stops), r["response"]
