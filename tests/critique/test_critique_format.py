"""Critique rendering (both styles, exact text) and parsing (both styles, variants, garbage)."""

from __future__ import annotations

import json

import pytest

from raysys.critique.format import ParsedCritique, parse_critique, render_critique, steps_json

STEPS = [("23+15=38", True), ("38-9=28", False), ("28+1=29", True)]


def test_render_authors_exact() -> None:
    text = render_critique(STEPS, False, ["23+15 is 38.", "38-9 is 29, not 28.", None],
                           final_explanation="The answer should be 30.")
    assert text == (
        "Step sentence: 23+15=38\nCorrectness of the step: Correct\nExplanation: 23+15 is 38.\n\n"
        "Step sentence: 38-9=28\nCorrectness of the step: Wrong\n"
        "Explanation: 38-9 is 29, not 28.\n\n"
        "Step sentence: 28+1=29\nCorrectness of the step: Correct\n\n"
        "Correctness of the final answer: Wrong\nExplanation: The answer should be 30.")


def test_render_compact_stops_at_first_wrong_step() -> None:
    steps = [("23+15=38", True), ("38-9=29", False), ("29+1=30", False)]
    assert render_critique(steps, False, style="compact") == (
        "1: 23+15=38 correct\n2: 38-9=29 wrong\nFinal: wrong")
    assert render_critique([("5+1=6", True)], True, style="compact") == "1: 5+1=6 correct\nFinal: correct"
    assert render_critique([("", False)], False, style="compact") == "1: wrong\nFinal: wrong"


def test_render_bad_arguments() -> None:
    with pytest.raises(ValueError, match="style: expected one of authors, compact, got 'x'"):
        render_critique(STEPS, True, style="x")
    with pytest.raises(ValueError, match="expected 3 \\(one per step\\), got 1"):
        render_critique(STEPS, True, ["only one"])


@pytest.mark.parametrize("style", ["authors", "compact"])
def test_parse_round_trips_render(style: str) -> None:
    parsed = parse_critique(render_critique(STEPS, False, style=style))
    expected_steps = [True, False, True] if style == "authors" else [True, False]
    assert parsed == ParsedCritique(expected_steps, 2, "wrong", len(expected_steps))


def test_parse_authors_variants_from_the_seed_data() -> None:
    # trailing spaces, blank lines between labels, "Incorrect", and a step for the answer line
    text = ("Step sentence: Half of 10 is 5  \nCorrectness of the step: Correct  \n"
            "Explanation: fine.\n\nStep sentence: 10+2=12\n\nCorrectness of the step: Incorrect\n\n"
            "Explanation: should be 5+2.\n\nStep sentence: The answer is 12.\n"
            "Correctness of the step: Wrong\n\nCorrectness of the final answer: Wrong  \n"
            "Explanation: 7.\n")
    assert parse_critique(text) == ParsedCritique([True, False, False], 2, "wrong", 3)


def test_parse_authors_bold_and_case() -> None:
    text = ("**Step sentence:** a\n**Correctness of the step:** **Correct**\n\n"
            "**Step sentence:** b\n**correctness of the step: WRONG**\n\n"
            "**Correctness of the Final Answer:** *incorrect*")
    assert parse_critique(text) == ParsedCritique([True, False], 2, "wrong", 2)


def test_parse_authors_unknown_step_word_and_last_final_wins() -> None:
    text = ("Correctness of the step: Partially\nCorrectness of the step: Correct\n"
            "Correctness of the final answer: Wrong\n... on reflection\n"
            "Correctness of the final answer: Correct")
    assert parse_critique(text) == ParsedCritique([None, True], None, "correct", 2)


def test_parse_authors_truncated_before_final_is_unknown() -> None:
    text = "Step sentence: 2+2=5\nCorrectness of the step: Wrong\nExplanation: 2+2 is 4."
    assert parse_critique(text) == ParsedCritique([False], 1, "unknown", 1)


def test_parse_compact_both_orders_and_variants() -> None:
    # compute-then-judge, and the verdict-first form "k: wrong, <right step>"
    assert parse_critique("1: 23+15=38 correct\n2: wrong, 38-9=29\nFinal: wrong") == \
        ParsedCritique([True, False], 2, "wrong", 2)
    assert parse_critique("Step 1. 5+1=6 Correct\n**Final:** CORRECT") == \
        ParsedCritique([True], None, "correct", 1)
    assert parse_critique("1: 5+1=6 incorrect\nFinal answer: incorrect") == \
        ParsedCritique([False], 1, "wrong", 1)


def test_parse_compact_gaps_and_repeats() -> None:
    text = "1: a correct\n3: c wrong\n1: a wrong\nFinal: wrong"
    # step 2 missing reads as None; a repeated step number keeps its first verdict
    assert parse_critique(text) == ParsedCritique([True, None, False], 3, "wrong", 2)


def test_parse_compact_ignores_absurd_step_numbers() -> None:
    assert parse_critique("2023: the year was correct\nFinal: correct") == \
        ParsedCritique([], None, "correct", 0)


def test_parse_old_verdict_line() -> None:
    assert parse_critique("Step 2 is off.\nVerdict: incorrect").verdict == "wrong"


@pytest.mark.parametrize("text, verdict", [
    # SmolLM2-135M-Instruct's own critiques of GSM8K solutions (greedy, our critique prompt):
    # it ignores the labels and judges in a sentence
    ("The answer is incorrect. The correct answer is 72.", "wrong"),
    ("The answer is incorrect. The correct answer is 12.\n\nThe answer is incorrect.", "wrong"),
    ("The correct answer is 48.", "unknown"),     # a number, not a judgement of the solution
    ('The answer to the question "How many flowers does Mark have" is 18.', "unknown"),
    ("Each step checks out, so the final answer is correct.", "correct"),
    ("The solution is not correct: 8 + 5 is 13.", "wrong"),
    ("The answer is right.", "correct"),
    ("The answer is **incorrect**.", "wrong"),
    # the last judging sentence wins, as the last final-verdict line does
    ("At first the answer is correct... no: the answer is wrong.", "wrong"),
    # a label still wins over any sentence
    ("The answer is correct.\nVerdict: incorrect", "wrong"),
])
def test_parse_verdict_sentences_of_an_instruct_model(text: str, verdict: str) -> None:
    assert parse_critique(text).verdict == verdict


@pytest.mark.parametrize("text", ["", "   \n", None, "lorem ipsum dolor", "Final: maybe",
                                  "Correctness of the final answer:", "\x00\x01###",
                                  "1: 23+15=38\n2: 38-9=29"])
def test_parse_garbage_is_unknown_never_raises(text: str | None) -> None:
    parsed = parse_critique(text)
    assert parsed.verdict == "unknown"
    assert parsed.first_wrong_step is None


def test_steps_json() -> None:
    assert json.loads(steps_json(ParsedCritique([True, None, False], 3, "wrong", 2))) == \
        [True, None, False]
