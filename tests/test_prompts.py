"""Prompt templates: exact strings, chat rendering through a real tokenizer, demos, stops."""

from __future__ import annotations

from pathlib import Path

import pytest

from raysys.config import ConfigError
from raysys.prompts import (build_prompt, critique_prompt, default_stop, refine_prompt,
                            refine_target, select_demos)

DEMOS = [("What is 2+3?", "2+3=5\n#### 5"), ("Ann has 4 pens and loses 1. How many?", "4-1=3\n#### 3")]


def test_zero_shot_exact() -> None:
    assert build_prompt("What is 1+1?") == "Question: What is 1+1?\nAnswer:"
    assert build_prompt("  What is 1+1? \n", "zero_shot") == "Question: What is 1+1?\nAnswer:"


def test_zero_shot_with_system() -> None:
    assert (build_prompt("Q?", system="Be brief.")
            == "Be brief.\n\nQuestion: Q?\nAnswer:")


def test_few_shot_exact() -> None:
    assert build_prompt("What is 7-2?", "few_shot", demos=DEMOS) == (
        "Question: What is 2+3?\nAnswer: 2+3=5\n#### 5\n\n"
        "Question: Ann has 4 pens and loses 1. How many?\nAnswer: 4-1=3\n#### 3\n\n"
        "Question: What is 7-2?\nAnswer:")


def test_few_shot_with_no_demos_is_zero_shot_but_none_is_an_error() -> None:
    assert build_prompt("Q?", "few_shot", demos=[]) == build_prompt("Q?", "zero_shot")
    with pytest.raises(ConfigError, match="few_shot.*demonstrations"):
        build_prompt("Q?", "few_shot")


def test_critique_answer_exact() -> None:
    assert build_prompt("What is 2+2?", "critique_answer") == (
        "Solve the following math problem step by step. End your solution with "
        '"The answer is X", where X is the final answer.\n\n'
        "Question: What is 2+2?\nAnswer:")


def test_unknown_template_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"prompt\.template: expected one of zero_shot, few_shot, "
                                          r"chat, critique_answer, got 'fancy'"):
        build_prompt("Q?", "fancy")


def test_chat_uses_tokenizer_template(tiny_model_dir: Path) -> None:
    from raysys.models.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    out = build_prompt("What is 2+3?", "chat", tokenizer=tok, system="You are a solver.",
                       demos=[("1+1?", "2")])
    assert out == ("<|bos|><|system|>\nYou are a solver.\n<|user|>\n1+1?\n"
                   "<|assistant|>\n2<|eos|>\n<|user|>\nWhat is 2+3?\n<|assistant|>\n")


def test_chat_without_template_is_a_clear_error(tiny_model_dir: Path) -> None:
    from raysys.models.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    tok.chat_template = None
    with pytest.raises(ConfigError, match="needs a chat template"):
        build_prompt("Q?", "chat", tokenizer=tok)
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        build_prompt("Q?", "chat")


def test_critique_and_refine_exact() -> None:
    assert critique_prompt("What is 2+2?", "2+2=5\nThe answer is 5") == (
        "Check the solution to the math question below one step at a time. For each step write "
        'three lines: "Step sentence:" and the step, "Correctness of the step:" and Correct or '
        'Wrong, "Explanation:" and why. Then write "Correctness of the final answer:" and Correct '
        'or Wrong, and a last "Explanation:".\n\n'
        "Question: What is 2+2?\n\nSolution:\n2+2=5\nThe answer is 5\n\nCritique:\n")
    assert refine_prompt("What is 2+2?", "2+2=5", "Step sentence: 2+2=5\n"
                         "Correctness of the step: Wrong") == (
        "Below are a math question, an earlier solution and a step-by-step critique of it. Taking "
        "the critique into account, write a new solution, step by step. "
        'End your solution with "The answer is X", where X is the final answer.\n\n'
        "Question: What is 2+2?\n\nPrevious solution:\n2+2=5\n\n"
        "Critique:\nStep sentence: 2+2=5\nCorrectness of the step: Wrong\n\nNew solution:\n")
    assert refine_target("  2+2=4\nThe answer is 4\n") == "2+2=4\nThe answer is 4"


def test_short_critique_and_refine_exact() -> None:
    # the synthetic task's tiny models: the actor's own Q/A format, then the check
    assert critique_prompt(" What is 2+3? ", "2+3=6\n#### 6\n", "short") == (
        "Question: What is 2+3?\nAnswer: 2+3=6\n#### 6\nCheck:\n")
    assert refine_prompt("What is 2+3?", "2+3=6\n#### 6", "1: 2+3=5 wrong\nFinal: wrong\n",
                         "short") == ("Question: What is 2+3?\nAnswer: 2+3=6\n#### 6\nCheck:\n"
                                      "1: 2+3=5 wrong\nFinal: wrong\nAnswer:")
    # a refinement ends like a zero-shot prompt, and its target follows after one space
    assert refine_prompt("Q?", "s", "c", "short").endswith(build_prompt("Q?")[-len("\nAnswer:"):])
    assert refine_target("2+3=5\n#### 5", "short") == " 2+3=5\n#### 5"
    with pytest.raises(ConfigError, match="prompt.variant: expected one of full, short, got 'tiny'"):
        critique_prompt("Q?", "s", "tiny")


def test_default_stops() -> None:
    assert default_stop("zero_shot") == ["\n\nQuestion", "Question:"]
    assert default_stop("few_shot") == ["\n\nQuestion", "Question:"]
    assert default_stop("chat") == []
    assert default_stop("critique") == ["\n\nQuestion", "\nQuestion:"]   # keeps the verdict line
    assert default_stop("refine") == ["\n\nQuestion", "Question:"]
    assert default_stop("critique_short") == ["\n\n", "Question:"]
    assert default_stop("refine_short") == ["\n\nQuestion", "Question:", "\nCheck:"]
    with pytest.raises(ConfigError, match="got 'nope'"):
        default_stop("nope")


def test_default_stop_list_is_a_copy() -> None:
    default_stop("zero_shot").append("X")
    assert "X" not in default_stop("zero_shot")


def test_select_demos_deterministic_and_distinct() -> None:
    rows = [{"q": i} for i in range(50)]
    a = select_demos(rows, 4, seed=3)
    assert a == select_demos(rows, 4, seed=3)
    assert a != select_demos(rows, 4, seed=4)
    assert len({r["q"] for r in a}) == 4
    assert select_demos(rows, 0, seed=3) == []


def test_select_demos_too_many() -> None:
    with pytest.raises(ConfigError, match="asked for 5 demonstrations but only 3"):
        select_demos([1, 2, 3], 5, seed=0)
