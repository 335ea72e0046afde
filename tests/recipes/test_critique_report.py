"""The critique report's loop section: accuracy per iteration and branch, critique minus plain
as a paired bootstrap, and the caveat that its CI leaves out training noise."""

from __future__ import annotations

from raysys.recipes.critique import _loop_section
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
