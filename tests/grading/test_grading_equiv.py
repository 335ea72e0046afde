"""Answer equivalence: hand-written pairs per rule, pairs that must differ, and time bounds."""

from __future__ import annotations

import threading
import time

import pytest

from raysys.grading import is_equiv
from raysys.grading.equiv import _to_sympy, fast_equiv, risky, split_top, structure
from raysys.grading.normalize import normalize, parse_number
from fractions import Fraction

EQUAL = [
    # numbers: commas, thin spaces, \, and {,} thousands, trailing zeros, signs
    ("1,000", "1000"), ("1{,}000", "1000"), ("1\\,000", "1000"), ("1\u2009000", "1000"),
    ("10,\\!080", "10080"), ("11,\\! 111,\\! 111,\\! 100", "11111111100"),
    ("5.0", "5"), ("5.", "5"), ("005", "5"), ("-3", "-3.00"), ("+4", "4"), (".5", "0.5"),
    ("\u22127", "-7"), ("1,234.50", "1234.5"),
    # percent: MATH convention drops the sign; 50% also equals 0.5
    ("50\\%", "50"), ("50%", "50"), ("50%", "0.5"), ("0.5", "50\\%"), ("12.5\\%", "12.5"),
    # currency and units
    ("$5", "5"), ("\\$5", "5"), ("\\$18.90", "18.9"), ("\\$32,\\!348", "32348"),
    ("5 dollars", "5"), ("5 \\text{ cm}", "5"), ("15\\mbox{ cm}^2", "15"),
    ("864 \\mbox{ inches}^2", "864"), ("5.4 \\text{ cents}", "5.4"), ("18 apples", "18"),
    ("106^\\circ", "106"), ("90^{\\circ}", "90"), ("30\u00b0", "30"), ("45 degrees", "45"),
    ("\\frac{270}7\\text{ degrees}", "\\frac{270}{7}"),
    # fractions
    ("\\frac12", "0.5"), ("\\frac{1}{2}", "1/2"), ("\\tfrac{1}{2}", "\\frac{1}{2}"),
    ("\\dfrac{1}{2}", "0.5"), ("\\frac 34", "0.75"), ("\\frac9{19}", "9/19"),
    ("-\\frac{3}{8}", "-0.375"), ("\\frac{-3}{8}", "-3/8"), ("\\frac{6}{4}", "\\frac{3}{2}"),
    ("137 \\frac{1}{2}", "137.5"), ("1\\frac{4}{5}", "\\frac{9}{5}"), ("\\frac{2}{1005}", "2/1005"),
    # expressions through sympy
    ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}"), ("2\\sqrt{5}", "\\sqrt{20}"),
    ("11\\sqrt2", "11\\sqrt{2}"), ("x^2+2x+1", "(x+1)^2"), ("12\\pi", "12 \\pi"),
    ("\\frac{\\pi}{2}", "\\pi/2"), ("2^{10}", "1024"), ("\\sqrt{4}", "2"),
    ("-2 + 7i", "7i - 2"), ("\\frac{11+9a}{20}", "\\frac{11}{20}+\\frac{9a}{20}"),
    ("(a+5)(b+2)", "(b+2)(a+5)"), ("6r^2-4r-24", "2(3r^2-2r-12)"),
    # equations and assignments
    ("x = 3", "3"), ("x=5", "5"), ("k = \\frac{1}{2}", "0.5"), ("y = 2x + 3", "2x+3"),
    ("x \\in [-2,7]", "[-2,7]"), ("5x - 7y + 11z + 4 = 0", "5x-7y+11z+4=0"),
    ("y = -2x", "y=-2x"),
    # tuples / ordered pairs / intervals (brackets and order matter)
    ("(1,2)", "(1, 2)"), ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
    ("(1,-16,-4,43)", "(1, -16, -4, 43)"), ("(0.5, 2)", "(\\frac{1}{2},2)"),
    ("[1,2)", "[1, 2)"), ("(-\\infty, 0]", "(-\\infty,0]"),
    ("(-\\infty, 2) \\cup (3, \\infty)", "(3,\\infty)\\cup(-\\infty,2)"),
    ("\\left(\\frac{3}{5},\\frac{8}{3}\\right]", "(0.6, 8/3]"),
    # sets and solution lists (order does not matter)
    ("\\{1,2\\}", "\\{2,1\\}"), ("\\{1\\pm\\sqrt{5},-2\\}", "\\{-2, 1+\\sqrt{5}, 1-\\sqrt{5}\\}"),
    ("3, 5, 7", "7,5,3"), ("-2,1", "1, -2"), ("1 \\pm \\sqrt{19}", "1+\\sqrt{19}, 1-\\sqrt{19}"),
    ("1 \\text{ and } 2", "1,2"),
    # matrices
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
    ("\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}", "\\begin{bmatrix}-1&0\\\\0&-1\\end{bmatrix}"),
    ("\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}", "\\begin{pmatrix} 0.2 \\\\ -3.6 \\end{pmatrix}"),
    # plain text
    ("\\text{Evelyn}", "evelyn"), ("East", "\\text{east}"), ("\\text{(C)}", "C"), ("(B)", "b"),
    ("  ellipse ", "\\text{ellipse}"), ("even", "\\textbf{Even}"),
    # wrappers
    ("$\\frac{1}{2}$", "\\frac{1}{2}"), ("\\boxed{5}", "5"), ("5.", "5"), ("{5}", "5"),
    ("\\left[ \\frac{\\pi^2}{8}, \\frac{5 \\pi^2}{4} \\right]", "[\\frac{\\pi^2}{8},\\frac{5\\pi^2}{4}]"),
]

UNEQUAL = [
    ("(1,2)", "(2,1)"), ("[1,2)", "[1,2]"), ("(1,2)", "[1,2]"), ("(1,2]", "(1,2)"),
    ("1/2", "2"), ("x=3", "4"), ("\\frac{1}{2}", "\\frac{2}{1}"), ("0.5", "5"),
    ("1000", "100"), ("1,000", "1"), ("-3", "3"), ("5", ""), ("", "5"), ("0", ""),
    ("50%", "5"), ("0.333", "\\frac{1}{3}"), ("\\{1,2\\}", "\\{1,3\\}"), ("\\{1,2\\}", "\\{1\\}"),
    ("(1,2,3)", "(1,2)"), ("3,5", "3,5,7"), ("x^2+1", "(x+1)^2"), ("\\sqrt{2}", "2"),
    ("2\\sqrt{3}", "3\\sqrt{2}"), ("\\pi", "3.14"), ("east", "west"), ("(A)", "(B)"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}2\\\\1\\end{pmatrix}"),
    ("\\begin{pmatrix}1 & 2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("(-\\infty, 2)", "(-\\infty, 2]"), ("(1,2)", "\\{1,2\\}"), ("1 - 12i", "1 + 12i"),
    ("y = 2x + 3", "y = 3x + 2"), ("5x - 7y + 11z + 4 = 0", "5x-7y+11z-4=0"), ("Evelyn", "Navin"),
    ("3R^2", "3"), ("2k+2", "2k"), ("-\\frac{\\pi}{6}", "\\frac{\\pi}{6}"), ("12", "12\\pi"),
    ("\\frac{1}{0}", "1"), ("1/0", "0"), ("", ""), ("$ $", "$"),
]


@pytest.mark.parametrize("pred, gold", EQUAL)
def test_equal_pairs(pred: str, gold: str) -> None:
    assert is_equiv(pred, gold)
    assert is_equiv(gold, pred)   # symmetric


@pytest.mark.parametrize("pred, gold", UNEQUAL)
def test_unequal_pairs(pred: str, gold: str) -> None:
    assert not is_equiv(pred, gold)
    assert not is_equiv(gold, pred)


@pytest.mark.parametrize("pred, gold, expected", [
    ("1,000", "1000", True), ("50\\%", "0.5", True), ("\\frac{3}{4}", "0.75", True),
    ("7", "8", False), ("(1,2)", "(2,1)", False), ("\\{3,4\\}", "\\{4,3\\}", True),
    ("east", "x", False), ("", "", False),
])
def test_fast_path_decides_without_sympy(pred: str, gold: str, expected: bool) -> None:
    before = _to_sympy.cache_info()
    assert fast_equiv(pred, gold) is expected
    after = _to_sympy.cache_info()
    assert (after.hits, after.misses) == (before.hits, before.misses)


@pytest.mark.parametrize("pred", [
    "1 aa " * 190,                   # prose: compared as a string, never parsed
    "1 aa " * 4000 + "!",            # past normalize's length cap
    "1" * 20000,                     # more digits than int() accepts
])
def test_long_inputs_are_decided_without_sympy(pred: str) -> None:
    assert fast_equiv(pred, "5") is False


def test_fast_path_defers_symbolic_pairs() -> None:
    assert fast_equiv("\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}") is None


@pytest.mark.parametrize("key, expected", [
    ("1,000.5", Fraction(2001, 2)), ("-3/4", Fraction(-3, 4)), ("\\frac{-3}{-4}", Fraction(3, 4)),
    ("2\\frac{1}{2}", Fraction(5, 2)), ("x", None), ("1,2", None), ("\\frac{1}{0}", None),
    (".25", Fraction(1, 4)),
])
def test_parse_number(key: str, expected: Fraction | None) -> None:
    assert parse_number(key) == expected


@pytest.mark.parametrize("raw, key, pct", [
    ("50\\%", "50", True), ("\\$1{,}000", "1,000", False), ("\\cot x", "\\cot x", False),
    ("\\left( 1, 2 \\right)", "(1,2)", False), ("\\text{East}", "east", False),
])
def test_normalize(raw: str, key: str, pct: bool) -> None:
    assert normalize(raw) == (key, pct)


@pytest.mark.parametrize("key, expected", [
    ("(1,2)", ("seq", "()", ["1", "2"])), ("[1,2)", ("seq", "[)", ["1", "2"])),
    ("\\{1,(2,3)\\}", ("set", "", ["1", "(2,3)"])), ("1\\pm2", ("set", "", ["1+2", "1-2"])),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", ("matrix", "2x2", ["1", "2", "3", "4"])),
    ("(5)", None), ("x+1", None), ("1,000", None),
])
def test_structure(key: str, expected: tuple | None) -> None:
    assert structure(key) == expected


def test_split_top_respects_nesting() -> None:
    assert split_top("(1,2),\\{3,4\\},[5,6)") == ["(1,2)", "\\{3,4\\}", "[5,6)"]


@pytest.mark.parametrize("latex, expected", [
    ("2^{2^{2^{100}}}", True), ("10^{12345}", True), ("1000!", True), ("1" * 50, True),
    ("9^{9^{9}}", True),
    ("x^{2}+1", False), ("5!", False), ("\\frac{1}{2}", False),
])
def test_risky_inputs_are_isolated(latex: str, expected: bool) -> None:
    assert risky(latex) is expected


def test_slow_sympy_in_main_thread_is_cut_by_the_alarm() -> None:
    # expanding two 600th powers takes several seconds of pure-Python sympy work
    start = time.monotonic()
    assert not is_equiv("(x+1)^{600}", "(x+2)^{600}", timeout_s=0.3)
    assert time.monotonic() - start < 3.0


def test_bounded_in_a_worker_thread() -> None:
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(
        is_equiv("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}", timeout_s=30)))
    thread.start()
    thread.join(120)
    assert results == [True]


def test_uninterruptible_input_runs_in_killable_worker() -> None:
    # 9^(9^9) has 370 million digits; the worker is killed after the bound
    from raysys.grading.bounded import SYMPY_WORKERS

    assert SYMPY_WORKERS.equal("1", "1", 120)   # start the worker outside the timed region
    start = time.monotonic()
    assert not is_equiv("9^{9^{9}}", "1", timeout_s=1.0)
    assert time.monotonic() - start < 5.0


def test_callers_alarm_is_restored_after_a_sympy_call() -> None:
    import signal

    def callers_handler(signum: int, frame: object) -> None:
        raise AssertionError("the caller's alarm fired during the test")

    old = signal.signal(signal.SIGALRM, callers_handler)
    signal.setitimer(signal.ITIMER_REAL, 100.0)
    try:
        assert is_equiv("2\\sqrt{2}", "\\sqrt{8}")
        assert signal.getsignal(signal.SIGALRM) is callers_handler
        assert 90.0 < signal.getitimer(signal.ITIMER_REAL)[0] <= 100.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
