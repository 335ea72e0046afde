"""Majority vote, maj@k, unbiased pass@k and Wilson intervals against hand-computed values."""

from __future__ import annotations

import math

import pytest

from raysys.grading.metrics import maj_at_k_correct, majority_vote, pass_at_k, wilson_interval


@pytest.mark.parametrize("answers, expected", [
    (["3", "4", "3"], "3"),
    (["4", "3", "3", "4"], "4"),                       # tie: the answer seen first
    (["1,000", "7", "1000", "7", "1000.0"], "1,000"),  # equivalent spellings pool their votes
    (["\\frac{1}{2}", "0.5", "2", "2"], "\\frac{1}{2}"),  # tie 2-2: first seen wins
    (["", "", "5"], "5"),                              # empty answers never win ...
    (["", ""], ""),                                    # ... unless all are empty
    (["(1,2)", "(2,1)", "(2,1)"], "(2,1)"),
    (["East", "east", "west"], "East"),
    (["\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}", "1"], "\\sqrt{2}/2"),  # grouped through sympy
    ([], ""),
])
def test_majority_vote(answers: list[str], expected: str) -> None:
    assert majority_vote(answers) == expected


def test_maj_at_k_uses_first_k_answers() -> None:
    answers = ["5", "6", "6", "5", "5"]
    assert not maj_at_k_correct(answers, "5", k=3)   # 6 wins among the first three
    assert maj_at_k_correct(answers, "5", k=5)
    assert maj_at_k_correct(answers, "5.0")
    assert not maj_at_k_correct(["", ""], "")


@pytest.mark.parametrize("n, c, k, expected", [
    (10, 0, 1, 0.0),
    (10, 10, 5, 1.0),
    (10, 3, 1, 0.3),
    (4, 1, 2, 0.5),               # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (5, 2, 2, 0.7),               # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (10, 2, 3, 1 - 56 / 120),     # 1 - C(8,3)/C(10,3)
    (3, 2, 2, 1.0),               # n - c < k: some draw always succeeds
    (100, 1, 100, 1.0),
])
def test_pass_at_k(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("n, c, k", [(5, 6, 1), (5, 2, 0), (5, 2, 6), (5, -1, 1)])
def test_pass_at_k_rejects_impossible_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError, match="pass_at_k"):
        pass_at_k(n, c, k)


def test_pass_at_k_matches_combinatorial_formula() -> None:
    for n, c, k in [(20, 7, 4), (50, 13, 10), (16, 1, 8)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("s, n, lo, hi", [
    (0, 10, 0.0, 0.27753),
    (5, 10, 0.23659, 0.76341),
    (10, 10, 0.72247, 1.0),
    (78, 500, 0.12683, 0.19042),   # LEARNING_SIGNAL.md: 15.6% [12.7, 19.0]
])
def test_wilson_interval(s: int, n: int, lo: float, hi: float) -> None:
    got = wilson_interval(s, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_interval_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match=r"need 0 <= successes <= n, got 3/2"):
        wilson_interval(3, 2)
