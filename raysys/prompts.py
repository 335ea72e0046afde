"""Prompt templates: weak-to-strong zero/few-shot, chat, MathCritique answer/critique/refine.

Every template is a pure function of its inputs, so the same problem always yields the same
prompt string (stage outputs and resume depend on that). The stop strings that end a
completion belong with the template that framed it: :func:`default_stop`.
"""

from __future__ import annotations

import random
import re
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

CRITIQUE_INSTRUCTION = (
    "Below is a math question and a step-by-step solution. Check each step in turn: say "
    "whether it is correct and explain any error. Finish with \"Verdict: correct\" or "
    "\"Verdict: incorrect\"."
)

REFINE_INSTRUCTION = (
    "Below is a math question, a previous solution and a critique of that solution. Using the "
    "critique, write a corrected solution step by step. "
    'End your solution with "The answer is X", where X is the final answer.'
)

# A completion in Q/A format runs on into a made-up next question; cut it there. The
# "\n\nQuestion" form ends earlier, so the blank line before the next block is dropped too.
_QA_STOP: tuple[str, ...] = ("\n\nQuestion", "Question:")
_STOPS: dict[str, tuple[str, ...]] = {
    "zero_shot": _QA_STOP,
    "few_shot": _QA_STOP,
    "chat": (),                      # chat models end their turn with EOS
    "critique_answer": _QA_STOP,
    # Not the verdict line itself: a stop string is cut from the text, and we need the verdict.
    "critique": ("\n\nQuestion",),
    "refine": _QA_STOP,
}

_VERDICT = re.compile(r"verdict\s*:\s*\**\s*(correct|incorrect)", re.IGNORECASE)


def _qa_block(question: str, answer: str | None = None) -> str:
    block = QA_FORMAT.format(question=question.strip())
    return block if answer is None else f"{block} {answer.strip()}"


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


def critique_prompt(question: str, solution: str) -> str:
    """Ask a critic to check ``solution`` step by step and end with a verdict line."""
    return (f"{CRITIQUE_INSTRUCTION}\n\nQuestion: {question.strip()}\n\n"
            f"Solution:\n{solution.strip()}\n\nCritique:")


def refine_prompt(question: str, solution: str, critique: str) -> str:
    """Ask for a corrected solution given the previous one and its critique."""
    return (f"{REFINE_INSTRUCTION}\n\nQuestion: {question.strip()}\n\n"
            f"Previous solution:\n{solution.strip()}\n\nCritique:\n{critique.strip()}\n\n"
            "Refined solution:")


def parse_verdict(critique: str) -> str | None:
    """``"correct"``/``"incorrect"`` from the last ``Verdict:`` line of a critique, else None."""
    found = _VERDICT.findall(critique)
    return found[-1].lower() if found else None


def default_stop(template: str) -> list[str]:
    """Stop strings that end a completion framed by ``template`` (or 'critique'/'refine')."""
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
