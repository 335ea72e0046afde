"""Prompt templates: weak-to-strong zero/few-shot, chat, MathCritique answer/critique/refine.

Every template is a pure function of its inputs, so the same problem always yields the same
prompt string (stage outputs and resume depend on that). The stop strings that end a
completion belong with the template that framed it: :func:`default_stop`. Critiques are
parsed by :func:`raysys.critique.format.parse_critique`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from raysys.config import ConfigError

TEMPLATES: tuple[str, ...] = ("zero_shot", "few_shot", "chat", "critique_answer")

# The weak-to-strong format: one "Question/Answer" block per problem.
QA_FORMAT = "Question: {question}\nAnswer:"

CRITIQUE_ANSWER_INSTRUCTION = (
    "Solve the following math problem step by step. "
    'End your solution with "The answer is X", where X is the final answer.'
)

# Our own wording; the critique labels are the authors' (raysys.critique.format parses them).
CRITIQUE_INSTRUCTION = (
    "Check the solution to the math question below one step at a time. For each step write "
    'three lines: "Step sentence:" and the step, "Correctness of the step:" and Correct or '
    'Wrong, "Explanation:" and why. Then write "Correctness of the final answer:" and Correct '
    'or Wrong, and a last "Explanation:".'
)

REFINE_INSTRUCTION = (
    "Below are a math question, an earlier solution and a step-by-step critique of it. Taking "
    "the critique into account, write a new solution, step by step. "
    'End your solution with "The answer is X", where X is the final answer.'
)

PROMPT_VARIANTS: tuple[str, ...] = ("full", "short")

# A completion in Q/A format runs on into a made-up next question; cut it there. The
# "\n\nQuestion" form ends earlier, so the blank line before the next block is dropped too.
_QA_STOP: tuple[str, ...] = ("\n\nQuestion", "Question:")
_STOPS: dict[str, tuple[str, ...]] = {
    "zero_shot": _QA_STOP,
    "few_shot": _QA_STOP,
    "chat": (),                      # chat models end their turn with EOS
    "critique_answer": _QA_STOP,
    # Never the verdict line itself: a stop string is cut from the text, and we need the
    # verdict. A critique has blank lines between its blocks, so only a new question stops it.
    "critique": ("\n\nQuestion", "\nQuestion:"),
    "refine": _QA_STOP,
    # The short critique has no blank line inside; one means the critic ran on.
    "critique_short": ("\n\n", "Question:"),
    "refine_short": _QA_STOP + ("\nCheck:",),
}

def _qa_block(question: str, answer: str | None = None) -> str:
    block = QA_FORMAT.format(question=question.strip())
    return block if answer is None else f"{block} {answer.strip()}"


def response_text(text: str) -> str:
    """A response as it follows a Q/A prompt's ``Answer:``: after one space, as in the few-shot
    demo blocks (SFT targets and text-rendered token pairs)."""
    return " " + text.strip()


def _with_system(system: str | None, body: str) -> str:
    return body if not system else f"{system.strip()}\n\n{body}"


def build_prompt(question: str, template: str = "zero_shot", *,
                 demos: Sequence[tuple[str, str]] | None = None, tokenizer: Any = None,
                 system: str | None = None) -> str:
    """The prompt for one question.

    ``zero_shot``: ``Question: {q}\\nAnswer:``. ``few_shot``: each ``(question, answer)`` demo in
    the same format, blocks separated by a blank line, then the question. ``chat``: the
    tokenizer's chat template (demos become earlier user/assistant turns) with the generation
    prompt appended. ``critique_answer``: a step-by-step instruction ending in "The answer is X",
    then the question in Q/A format. ``system`` is a leading paragraph (a system turn in chat).
    """
    if template == "zero_shot":
        return _with_system(system, _qa_block(question))
    if template == "few_shot":
        if demos is None:
            raise ConfigError("prompt.demos: template 'few_shot' needs demonstrations (got none)")
        blocks = [_qa_block(q, a) for q, a in demos] + [_qa_block(question)]
        return _with_system(system, "\n\n".join(blocks))
    if template == "chat":
        return _chat_prompt(question, demos or (), tokenizer, system)
    if template == "critique_answer":
        instruction = system.strip() if system else CRITIQUE_ANSWER_INSTRUCTION
        return f"{instruction}\n\n{_qa_block(question)}"
    raise ConfigError(f"prompt.template: expected one of {', '.join(TEMPLATES)}, got {template!r}")


def _chat_prompt(question: str, demos: Sequence[tuple[str, str]], tokenizer: Any,
                 system: str | None) -> str:
    if tokenizer is None:
        raise ConfigError("prompt.template: 'chat' needs a tokenizer with a chat template")
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
        raise ConfigError(f"prompt.template: 'chat' needs a chat template, but tokenizer "
                          f"{name!r} has none (use zero_shot or few_shot)")
    messages: list[dict[str, str]] = []
    if system:
        messages.append({"role": "system", "content": system})
    for q, a in demos:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    messages.append({"role": "user", "content": question})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _check_variant(variant: str) -> None:
    if variant not in PROMPT_VARIANTS:
        raise ConfigError(f"prompt.variant: expected one of {', '.join(PROMPT_VARIANTS)}, "
                          f"got {variant!r}")


def critique_prompt(question: str, solution: str, variant: str = "full") -> str:
    """Ask a critic to check ``solution`` step by step (question + solution -> critique).

    ``full``: our instruction, the question and the solution; the critique starts on the line
    after ``Critique:``. ``short`` (the synthetic task's tiny critics): the solution in the
    actor's own ``Question/Answer`` format, then ``Check:``; stop strings:
    :func:`default_stop` ``("critique")`` / ``("critique_short")``.
    """
    _check_variant(variant)
    if variant == "short":
        return f"{_qa_block(question, solution)}\nCheck:\n"
    return (f"{CRITIQUE_INSTRUCTION}\n\nQuestion: {question.strip()}\n\n"
            f"Solution:\n{solution.strip()}\n\nCritique:\n")


def refine_prompt(question: str, solution: str, critique: str, variant: str = "full") -> str:
    """Ask for a new solution given an earlier one and its critique.

    ``full`` ends with ``New solution:`` and a newline; ``short`` is the short critique prompt
    with the critique filled in, then ``Answer:`` exactly as a zero-shot prompt ends, so a tiny
    actor answers a refinement in the format it answers a question. Targets:
    :func:`refine_target`.
    """
    _check_variant(variant)
    if variant == "short":
        return f"{critique_prompt(question, solution, 'short')}{critique.strip()}\nAnswer:"
    return (f"{REFINE_INSTRUCTION}\n\nQuestion: {question.strip()}\n\n"
            f"Previous solution:\n{solution.strip()}\n\nCritique:\n{critique.strip()}\n\n"
            "New solution:\n")


def refine_target(solution: str, variant: str = "full") -> str:
    """The SFT response for a refinement prompt: after ``Answer:`` one space (as the Q/A
    demos and the weak-to-strong recipe write it), after ``New solution:\\n`` nothing."""
    _check_variant(variant)
    return (" " if variant == "short" else "") + solution.strip()


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Prompt ids as at inference: with the tokenizer's special tokens (BOS), except when the
    text already starts with the BOS token (a rendered chat template carries its own), so a
    chat prompt never gets a second BOS."""
    bos = getattr(tokenizer, "bos_token", None)
    add = not (bos and prompt.startswith(bos))
    return list(tokenizer(prompt, add_special_tokens=add)["input_ids"])


def default_stop(template: str) -> list[str]:
    """Stop strings that end a completion framed by ``template`` (or 'critique', 'refine',
    'critique_short', 'refine_short')."""
    if template not in _STOPS:
        raise ConfigError(f"prompt.template: expected one of {', '.join(_STOPS)}, got {template!r}")
    return list(_STOPS[template])


def select_demos(rows: Sequence[Any], k: int, seed: int) -> list[Any]:
    """``k`` rows chosen without replacement, the same for the same ``(rows, k, seed)``.

    Uses a private ``random.Random(seed)`` so the choice never depends on global RNG state.
    """
    if k < 0:
        raise ConfigError(f"prompt.num_demos: expected >= 0, got {k}")
    if k > len(rows):
        raise ConfigError(f"prompt.num_demos: asked for {k} demonstrations but only "
                          f"{len(rows)} rows are available")
    picked = random.Random(seed).sample(range(len(rows)), k)
    return [rows[i] for i in picked]
