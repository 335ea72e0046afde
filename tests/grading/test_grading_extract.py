"""Final-answer extraction: boxes, #### markers, "The answer is", last numbers, cleaning."""

from __future__ import annotations

import pytest

from raysys.grading import extract_answer, gold_answer, hash_answer, last_boxed
from raysys.grading.extract import clean_answer, last_number


@pytest.mark.parametrize("text, expected", [
    (r"so \boxed{5}", "5"),
    (r"\boxed{1} then \boxed{2}", "2"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{x^{2}+\sqrt{y_{1}}}", r"x^{2}+\sqrt{y_{1}}"),
    (r"\fbox{7}", "7"),
    (r"\boxed{3} and later \fbox{4}", "4"),
    (r"$\boxed 5$", "5"),
    (r"\boxed {12}", "12"),
    (r"\boxed{1} \boxed{2", "1"),      # the unterminated last box is skipped
    ("no box here", None),
    (r"\boxed{}", ""),
    (r"\boxed{\{1,2\}}", r"\{1,2\}"),
])
def test_last_boxed(text: str, expected: str | None) -> None:
    assert last_boxed(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Step 1\nStep 2\n#### 1,000", "1,000"),
    ("#### 5\nwait\n#### 6\n", "6"),
    ("####   -3.5  ", "-3.5"),
    ("work\n####\n42\n", "42"),
    ("no marker", None),
    ("#### ", None),
    ("#### 18 dollars", "18 dollars"),
])
def test_hash_answer(text: str, expected: str | None) -> None:
    assert hash_answer(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("I have 3 apples and 12 pears", "12"),
    ("total 1,234.5 units", "1234.5"),
    ("it is -7", "-7"),
    ("10-3", "3"),                 # subtraction, not a negative number
    ("(2)-5", "5"),
    ("x = -5", "-5"),
    ("ratio 3/4", "3/4"),
    ("nothing", None),
    ("value .5", ".5"),
    ("she ends with \u22125 apples", "-5"),   # a Unicode minus sign is still a sign
    ("7\u22123", "3"),                         # ... and still subtraction after a digit
])
def test_last_number(text: str, expected: str | None) -> None:
    assert last_number(text) == expected


@pytest.mark.parametrize("raw, expected", [
    ("  42. ", "42"),
    ("$42$", "42"),
    (r"\(x+1\)", "x+1"),
    (r"$\boxed{7}$.", "7"),
    (r"\text{Evelyn}", "Evelyn"),
    (r"\text{(C)}", "(C)"),
    (": 5", "5"),
    ("3.14", "3.14"),
    (r"\text{a} + \text{b}", r"\text{a} + \text{b}"),   # not a whole-answer wrapper
])
def test_clean_answer(raw: str, expected: str) -> None:
    assert clean_answer(raw) == expected


MIXED = "She paid 3 dollars.\nThe answer is 12.\n#### 15"


@pytest.mark.parametrize("text, style, expected", [
    (MIXED, "default", "15"),
    ("So the answer is 12.", "default", "12"),
    (r"We get \boxed{\frac{3}{4}} in the end, after 9 steps", "default", r"\frac{3}{4}"),
    ("we get 3 then 8", "default", "8"),
    (r"\frac{\sqrt{3}}{3}", "default", r"\frac{\sqrt{3}}{3}"),   # a bare answer is kept whole
    ("x=5", "default", "x=5"),
    ("east", "default", "east"),
    ("5 dollars", "default", "5 dollars"),
    ("Answer: 42", "default", "42"),    # a label before the number is not a unit after it
    ("The cost is 5", "default", "5"),
    (r"\frac{1}{4}", "math", r"\frac{1}{4}"),
    (r"\frac{1}{4}", "llm2", "4"),
    ("no answer at all", "default", ""),
    ("The answer is $\\frac{1}{2}$.", "default", r"\frac{1}{2}"),
    ("The final answer is 2.5. Done", "default", "2.5"),
    (MIXED, "w2s", "15"),
    ("Reasoning...\nThe answer is: 72", "w2s", "72"),
    ("Reasoning 5 + 6 = 11", "w2s", ""),
    ("The answer is 3. But wait, the answer is 4.", "critique", "3"),
    ("Critique: correct.\nThe answer is: $\\boxed{9}$", "critique", "9"),
    ("no verdict 5", "critique", ""),
    (MIXED, "llm2", "15"),
    ("Natalia sold 48/2 = 24 clips, 48+24 = 72 in total.", "llm2", "72"),
    ("costs $1,200 in total", "llm2", "1200"),
    (r"\boxed{7} then 9", "math", "7"),
    ("The answer is x+1", "math", "x+1"),
    ("just 5 and 6", "math", "6"),
    (r"first \boxed{1}, final \boxed{(1,2)}", "math", "(1,2)"),
])
def test_extract_answer_styles(text: str, style: str, expected: str) -> None:
    assert extract_answer(text, style) == expected


def test_unknown_style_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown answer style 'gsm'.*default"):
        extract_answer("5", "gsm")


@pytest.mark.parametrize("gold, expected", [
    ("Natalia sold 24.\n#### 72", "72"),
    (r"Thus the area is $\boxed{12\pi}$.", r"12\pi"),
    ("  5 ", "5"),
    (r"\frac{1}{2}", r"\frac{1}{2}"),
])
def test_gold_answer(gold: str, expected: str) -> None:
    assert gold_answer(gold) == expected
