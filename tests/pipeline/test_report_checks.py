"""``result.json`` checks behind ``raysys report`` / ``raysys compare`` (report_cmd.result_problem)."""

from __future__ import annotations

from typing import Any

import pytest

from raysys.pipeline.report_cmd import result_problem

ROW = {"model": "a", "correct": 1, "n": 2, "outcomes": {"p0": True, "p1": False}}


def _result(**kw: Any) -> dict:
    return {"method": "llm2", "evals": [ROW], **kw}


@pytest.mark.parametrize("result, message", [
    ([], "expected an object with an 'evals' list"),
    ({"method": "", "evals": []}, "expected a 'method'"),
    (_result(title=3), "title: expected text"),
    ({"method": "x", "evals": [{**ROW, "model": None}]}, r"evals[0].model: expected a row name"),
    ({"method": "x", "evals": [ROW, ROW]}, "evals[1]: row 'a' appears twice"),
    ({"method": "x", "evals": [{**ROW, "correct": 3}]}, "expected integers 0 <= correct <= n"),
    ({"method": "x", "evals": [{**ROW, "pass_acc": -0.1}]}, "pass_acc: expected a fraction in [0, 1]"),
    ({"method": "x", "evals": [{**ROW, "maj_k": 0}]}, "maj_k: expected an integer >= 1"),
    ({"method": "x", "evals": [{**ROW, "maj_outcomes": {"p0": 1}}]}, "maj_outcomes: expected an object"),
    (_result(sections=["a"]), "sections: expected an object of heading -> text"),
    (_result(extra=[]), "extra: expected an object"),
    (_result(extra={"test_time": {"g": [{"round": 1, "tokens_total": "many"}]}}),
     "round table of 'g': expected rows of finite numbers"),
    ({"method": "x", "evals": [{**ROW, "tags": {"beta": float("nan")}}]},
     "(a).tags: expected an object of name -> text, finite number"),
    ({"method": "x", "evals": [{**ROW, "tags": ["beta"]}]}, "(a).tags: expected an object"),
    ({"method": "x", "evals": [{**ROW, "baseline": True}, {**ROW, "model": "b", "baseline": True}]},
     "more than one row marked as the baseline"),
    ({"method": "x", "evals": [{**ROW, "baseline": "yes"}]}, "(a).baseline: expected true/false"),
    (_result(layout={"panels": ["beta", "pie"]}), "layout.panels: expected a list of beta, k"),
    (_result(layout={"differences": "no"}), "layout.differences: expected true/false"),
    (_result(layout=[]), "layout: expected an object"),
])
def test_result_problems(result: Any, message: str) -> None:
    assert message in (result_problem(result) or "")


def test_a_finished_runs_result_passes() -> None:
    assert result_problem(_result(title="t", sections={"Notes": "text"}, extra={},
                                  evals=[{**ROW, "maj_k": 4, "maj_acc": 0.5, "maj_outcomes": {}}])) is None
