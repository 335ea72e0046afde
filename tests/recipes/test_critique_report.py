"""The critique report's loop section: accuracy per iteration and branch, critique minus plain
as a paired bootstrap, and the caveat that its CI leaves out training noise."""

from __future__ import annotations

from raysys.recipes.critique import _loop_section, critic_table
from raysys.recipes.steps import EvalRow

IDS = [f"p{i}" for i in range(10)]


def _row(name: str, right: set[int]) -> EvalRow:
    return EvalRow(name, len(right), len(IDS), outcomes={p: i in right for i, p in enumerate(IDS)})


def _iter(branch: str, t: int) -> dict:
    return {"branch": branch, "iteration": t, "sft_rows": 20, "refine_kept": 3, "diversity": 0.5}


def test_critique_minus_plain_comes_with_the_training_noise_caveat() -> None:
    # seed actor right on p0-p4; critique iter 1 right on all, plain on p0-p7
    evals = {"iter0": _row("iter0", set(range(5))), "critique_iter1": _row("c1", set(range(10))),
             "plain_iter1": _row("p1", set(range(8)))}
    text = _loop_section(evals, [_iter("critique", 1), _iter("plain", 1)], ["critique", "plain"])
    assert "| 1 | critique | 100.0% | 100.0% of 5 | 20 | 3 | 0.500 |" in text
    assert "| 1 | plain | 80.0% | 60.0% of 5 |" in text
    assert "- iteration 1: +20.0 [" in text and "(2/0)" in text
    assert "not training noise" in text
    one = _loop_section(evals, [_iter("critique", 1)], ["critique"])
    assert "critique minus plain" not in one and "not training noise" not in one


def test_kept_refinements_right_by_luck_are_counted_per_iteration() -> None:
    from raysys.recipes.critique_steps import working_stats

    gold = "3+7=10\n10-9=1\n#### 1"
    problems = {"q": {"gold_solution": gold}}
    samples = [{"problem_id": "q", "completion": gold, "correct": True},
               {"problem_id": "q", "completion": "3+6=9\n9-8=1\n#### 1", "correct": True},
               {"problem_id": "q", "completion": "3+7=10\n#### 10", "correct": False}]
    kept = [{"problem_id": "q", "refined": "2-4=2\n2-1=1\n#### 1"},        # right by luck
            {"problem_id": "q", "refined": gold}]
    assert working_stats(samples, kept, problems) == {"correct_samples_steps_right": 1,
                                                      "refine_kept_steps_right": 1}
    assert working_stats(samples, kept, {"q": {"gold_solution": None}}) == {}   # no step truth

    evals = {"iter0": _row("iter0", set(range(5))), "critique_iter1": _row("c1", set(range(6))),
             "plain_iter1": _row("p1", set(range(6)))}
    crit = {**_iter("critique", 1), "correct_samples": 40, "correct_samples_steps_right": 38,
            "refine_kept_steps_right": 1}
    text = _loop_section(evals, [crit, _iter("plain", 1)], ["critique", "plain"])
    assert ("- iteration 1: 1 of 3 kept refinements have every step right (the iteration's "
            "correct samples: 38 of 40)") in text
    assert "every step right" not in _loop_section(evals, [_iter("critique", 1)], ["critique"])
    assert "`loop.critiques: gold`" in _loop_section(evals, [crit], ["critique"], "gold")
    assert "kept on its final answer (and the shortcut barrier)" in text
    assert "`loop.keep: working`" in _loop_section(evals, [crit], ["critique"], keep="working")
    assert "loop.critiques" not in text


def test_critic_table_reads_as_percentages_with_what_each_measures() -> None:
    scores = {"solutions": 400, "step_verdict_acc": 0.601, "first_error_acc": 0.29,
              "final_verdict_acc": 0.5275, "wrong_recall": 0.459, "wrong_precision": 0.777,
              "critiques": 400, "wrong": 166, "correct": 197, "unknown": 37, "empty": 0}
    text = critic_table(scores)
    assert text.startswith("400 held-out solutions:")
    rows = dict((c.strip() for c in ln.strip("|").split(" | ")) for ln in text.splitlines()[4:])
    assert rows == {"step verdicts that match the per-step ground truth": "60.1%",
                    "solutions whose first wrong step it names exactly (none when right)": "29.0%",
                    "final verdicts (correct / wrong) that are right": "52.8%",
                    "wrong solutions it calls wrong (recall)": "45.9%",
                    "solutions it calls wrong that are wrong (precision)": "77.7%",
                    "verdicts given (unknown: none parsable)": "wrong 166, correct 197, unknown 37"}
    assert "empty critiques | 3 |" in critic_table({**scores, "empty": 3})
