"""Votes over critique -> refine rounds (empty buckets, ties, equivalence) and the round table."""

from __future__ import annotations

import pytest

from raysys.critique.test_time import RoundCost, Vote, format_round_table, round_table, vote_rounds


@pytest.mark.parametrize("mode", ["last", "majority", "pass"])
def test_empty_buckets_never_crash(mode: str) -> None:
    # the authors' majority_vote raises IndexError here
    assert vote_rounds([], mode, "5") == Vote("", False)
    assert vote_rounds([[], [], []], mode, "5") == Vote("", False)
    assert vote_rounds([[], []], mode) == Vote("", None)


def test_last_skips_rounds_that_were_not_run() -> None:
    # an oracle gate refined nothing after round 0: the initial answer stands
    assert vote_rounds([["5"], [], []], "last", "5") == Vote("5", True)
    assert vote_rounds([["4"], ["5"], []], "last", "5") == Vote("5", True)
    # a refinement that was made but has no answer is the answer "", not a skipped round
    assert vote_rounds([["5"], [""]], "last", "5") == Vote("", False)


def test_majority_tie_goes_to_first_seen() -> None:
    assert vote_rounds([["4"], ["5"]], "majority", "5") == Vote("4", False)
    assert vote_rounds([["5"], ["4"]], "majority", "5") == Vote("5", True)
    assert vote_rounds([["4", "5"], ["5"]], "majority", "5") == Vote("5", True)


def test_majority_groups_equivalent_answers() -> None:
    assert vote_rounds([["0.5", "3"], ["1/2"], ["3"], ["\\frac{1}{2}"]], "majority", "1/2") == \
        Vote("0.5", True)


def test_pass_any_round() -> None:
    assert vote_rounds([["4"], ["4"], ["5"]], "pass", "5") == Vote("5", True)
    assert vote_rounds([["4"], ["6"], ["4"]], "pass", "5") == Vote("4", False)
    assert vote_rounds([["4"], ["6"], ["4"]], "pass") == Vote("4", None)


def test_bad_mode() -> None:
    with pytest.raises(ValueError, match="expected one of last, majority, pass, got 'best'"):
        vote_rounds([["1"]], "best")


def test_round_table_hand_computed() -> None:
    answers = {
        "a": [["5"], ["6"], ["5"]],          # right, broken, fixed again
        "b": [["1"], ["2"]],                  # wrong, fixed; no round 2 (gate stopped)
        "c": [["9"], [], []],                 # wrong, never refined
        # "d" has no answers at all: counted wrong, not dropped
    }
    golds = {"a": "5", "b": "2", "c": "3", "d": "7"}
    costs = [RoundCost(100, 1.0), RoundCost(40, 0.5), RoundCost(30, 0.25)]
    table = round_table(answers, golds, costs)
    assert [(r["round"], r["last"], r["majority"], r["pass"]) for r in table] == [
        (0, 0.25, 0.25, 0.25),
        (1, 0.25, 0.25, 0.5),    # a: last 6 (wrong), majority 5 (first seen); b: last 2, maj 1
        (2, 0.5, 0.25, 0.5),     # a: last 5, majority 5; b: last 2, majority still 1
    ]
    assert [(r["tokens"], r["tokens_total"], r["wall_s_total"]) for r in table] == [
        (100, 100, 1.0), (40, 140, 1.5), (30, 170, 1.75)]
    assert all(r["n"] == 4 for r in table)
    assert table[0]["last_lo"] < 0.25 < table[0]["last_hi"]
    md = format_round_table(table)
    assert md.splitlines()[0].startswith("| round | last acc [95% CI] | majority acc")
    assert md.splitlines()[2].startswith("| 0 | 25.0 [")
    assert md.splitlines()[4].endswith("| 30 | 170 | 0.2 | 1.8 |")


def test_round_table_bad_input() -> None:
    with pytest.raises(ValueError, match="2 rounds of answers but 1 costs"):
        round_table({"a": [["1"], ["2"]]}, {"a": "1"}, [RoundCost(1, 0.1)])
    with pytest.raises(ValueError, match="without gold: \\['z'\\]"):
        round_table({"z": [["1"]]}, {"a": "1"}, [RoundCost(1, 0.1)])
