"""Seed critiques from GSM8K worked solutions (raysys.critique.calc): hand-checked values."""

from __future__ import annotations

import random

import pytest

from raysys.critique import parse_critique
from raysys.critique.calc import (calc_critique, calc_seed_rows, slip_solution, solution_lines,
                                  strip_calc)

NATALIA = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
           "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")
WENG = ("Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n"
        "Working 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10")


def test_lines_without_annotations() -> None:
    assert strip_calc(NATALIA).splitlines()[0] == "Natalia sold 48/2 = 24 clips in May."
    assert solution_lines(NATALIA) == (["Natalia sold 48/2 = 24 clips in May.",
                                        "Natalia sold 48+24 = 72 clips altogether in April and May."],
                                       "72")
    assert solution_lines("no answer line") == (["no answer line"], None)


def test_slip_changes_the_line_computing_the_answer_and_the_answer() -> None:
    rng = random.Random(0)
    text, step, right, wrong = slip_solution(NATALIA, rng)
    check = random.Random(0)
    delta = check.randint(1, 3) * check.choice((1, -1))       # the same draws, by hand
    assert (step, right, wrong) == (1, "72", str(72 + delta))
    assert text == ("Natalia sold 48/2 = 24 clips in May.\n"
                    f"Natalia sold 48+24 = {72 + delta} clips altogether in April and May.\n"
                    f"#### {72 + delta}")
    # "$10" counts as the line's value; a negative answer is never made
    text, step, right, wrong = slip_solution(WENG, random.Random(3))
    assert step == 1 and right == "10" and text.endswith(f"= ${wrong}.\n#### {wrong}")
    assert slip_solution("She has 3 apples.\n#### 5", random.Random(0)) is None
    _, _, _, wrong = slip_solution("1 - 1 = 0 left.\n#### 0", random.Random(1))
    assert int(wrong) > 0


def test_critiques_parse_back_to_their_truth() -> None:
    gold = strip_calc(NATALIA)
    assert calc_critique(gold) == (
        "Step sentence: Natalia sold 48/2 = 24 clips in May.\nCorrectness of the step: Correct\n\n"
        "Step sentence: Natalia sold 48+24 = 72 clips altogether in April and May.\n"
        "Correctness of the step: Correct\n\n"
        "Correctness of the final answer: Correct\nExplanation: The final answer 72 is correct.")
    text, step, right, wrong = slip_solution(NATALIA, random.Random(0))
    crit = calc_critique(text, step, right, wrong)
    assert f"Explanation: The value here is 72, not {wrong}." in crit
    parsed = parse_critique(crit)
    assert (parsed.step_verdicts, parsed.first_wrong_step, parsed.verdict) == ([True, False], 2, "wrong")


def test_seed_rows_counts_and_prompts() -> None:
    problems = [{"id": "a", "question": "Q1?", "gold_solution": NATALIA},
                {"id": "b", "question": "Q2?", "gold_solution": WENG},
                {"id": "c", "question": "Q3?", "gold_solution": "She has 3 apples.\n#### 5"}]
    direct, refine, critic = calc_seed_rows(problems, random.Random(0), direct=5,
                                            refine_mix={"corrupted": 5, "correct": 1, "sampled": 0},
                                            critic_mix={"gold": 2, "corrupted": 1})
    assert len(direct) == 3                       # capped by the problems
    assert sum(r["source"].startswith("refine:corrupted") for r in refine) == 2   # c has no slip
    assert sum(r["source"].startswith("refine:correct") for r in refine) == 1
    assert len(critic) == 3
    assert all("<<" not in r["prompt"] + r["response"] for r in direct + refine + critic)
    d = next(r for r in direct if r["source"] == "direct:a")
    assert d == {"prompt": "Question: Q1?\nAnswer:", "source": "direct:a",
                 "response": " " + strip_calc(NATALIA)}
    r = next(r for r in refine if r["source"] == "refine:corrupted:a")
    assert r["response"] == strip_calc(NATALIA) and "Correctness of the final answer: Wrong" in r["prompt"]
    with pytest.raises(ValueError, match="sampled"):
        calc_seed_rows(problems, random.Random(0), direct=0, refine_mix={},
                       critic_mix={"sampled": 3})


def test_heldout_solutions_and_critic_scores_by_hand() -> None:
    from raysys.critique.calc import critic_scores, heldout_solutions

    problems = [{"id": "a", "question": "Q1?", "gold_solution": NATALIA},
                {"id": "c", "question": "Q3?", "gold_solution": "She has 3 apples.\n#### 5"},
                {"id": "b", "question": "Q2?", "gold_solution": WENG}]
    sols = heldout_solutions(problems, 5, random.Random(0))
    assert [(s["problem_id"], s["sample_idx"], s["wrong_step"], s["steps"]) for s in sols] == [
        ("a", 0, None, 2), ("a", 1, 2, 2), ("b", 0, None, 2), ("b", 1, 2, 2)]   # c: nothing to slip
    assert len(heldout_solutions(problems, 1, random.Random(0))) == 2
    perfect = [{"problem_id": s["problem_id"], "sample_idx": s["sample_idx"],
                "critique": calc_critique(s["completion"], None if s["wrong_step"] is None
                                          else s["wrong_step"] - 1, "x", "y")} for s in sols]
    # a critic that calls everything wrong in a sentence, and one that writes nothing
    says_wrong = [{**c, "critique": "The answer is incorrect."} for c in perfect]
    empty = [{**c, "critique": ""} for c in perfect]
    s = critic_scores(sols, perfect)
    assert (s["step_verdict_acc"], s["first_error_acc"], s["final_verdict_acc"],
            s["wrong_recall"], s["wrong_precision"]) == (1.0, 1.0, 1.0, 1.0, 1.0)
    assert (s["wrong"], s["correct"], s["unknown"]) == (2, 2, 0)
    w = critic_scores(sols, says_wrong)
    # 2 of 4 final verdicts right (the slipped ones); no step verdicts; first error named for
    # the gold solutions only (None == None)
    assert (w["final_verdict_acc"], w["wrong_recall"], w["wrong_precision"]) == (0.5, 1.0, 0.5)
    assert (w["step_verdict_acc"], w["first_error_acc"]) == (0.0, 0.5)
    assert w["final_ok"] == {"a#0": False, "a#1": True, "b#0": False, "b#1": True}
    e = critic_scores(sols, empty)
    assert (e["final_verdict_acc"], e["unknown"], e["wrong_recall"]) == (0.0, 4, 0.0)
