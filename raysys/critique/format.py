"""Critique text: render per-step verdicts, and parse free critic text back into verdicts.

Two styles:

``authors`` -- the labels of the MathCritique data, one block per solution step, blocks
separated by a blank line, then the final verdict::

    Step sentence: 23+15=38
    Correctness of the step: Correct
    Explanation: 23+15 is 38.

    Correctness of the final answer: Wrong
    Explanation: ...

``compact`` -- compute-then-judge for tiny models: one line per step up to the first wrong one,
each the step as it should be (recomputed by the critic) and then the judgement, then the
final verdict. Writing the recomputed step *before* the judgement matters: a tiny critic that
judges first copies the solution's result and calls everything correct
(LEARNING_SIGNAL.md, "Critique-in-the-loop on tiny models")::

    1: 23+15=38 correct
    2: 38-9=29 wrong
    Final: wrong

:func:`parse_critique` reads both (and the variants in the authors' data: ``Incorrect``,
bold labels, any case, trailing spaces, blank lines between labels) and never raises: text
without a final verdict gets verdict ``unknown``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

STYLES: tuple[str, ...] = ("authors", "compact")
Verdict = Literal["correct", "wrong", "unknown"]

STEP_LABEL = "Step sentence:"
STEP_VERDICT_LABEL = "Correctness of the step:"
EXPLANATION_LABEL = "Explanation:"
FINAL_LABEL = "Correctness of the final answer:"
COMPACT_FINAL = "Final:"
# Step numbers beyond this are not steps ("2023: ... correct"): they would blow up the list.
MAX_STEPS = 100

# The judgement words, longest first so "incorrect" never reads as "correct".
_WORD = r"(incorrect|wrong|correct)"
_B = r"[*_\s]*"          # bold / italic markers and spaces around labels and values
_AUTHORS_STEP = re.compile(rf"correctness{_B}of{_B}the{_B}step{_B}:{_B}([A-Za-z]*)", re.I)
_AUTHORS_FINAL = re.compile(rf"correctness{_B}of{_B}the{_B}final{_B}answer{_B}:{_B}([A-Za-z]*)",
                            re.I)
_COMPACT_STEP = re.compile(rf"^{_B}(?:step{_B})?(\d+){_B}[:.)]\s*(.*?)\b{_WORD}\b", re.I | re.M)
_COMPACT_FINAL = re.compile(rf"^{_B}final(?:{_B}answer)?{_B}:{_B}{_WORD}\b", re.I | re.M)
# The earlier draft of our prompt asked for "Verdict: correct|incorrect"; still accepted.
_VERDICT_LINE = re.compile(rf"verdict{_B}:{_B}{_WORD}\b", re.I)
# A real instruct model that ignores the labels states its verdict in a sentence ("The answer
# is incorrect. The correct answer is 72.", "The solution is not correct."): the answer or
# solution "is" (optionally "not") a judgement word, with nothing in between, so "The correct
# answer is 72" is not a verdict. Read only when no label or compact line is present.
_SENTENCE = re.compile(rf"\b(?:final{_B})?(?:answer|solution){_B}(?:is|was){_B}(not{_B})?"
                       rf"(incorrect|wrong|correct|right)\b", re.I)


@dataclass(frozen=True)
class ParsedCritique:
    """What a critique says: per-step verdicts (True correct, False wrong, None unreadable),
    the 1-based first wrong step, the overall verdict and how many step verdicts were read."""

    step_verdicts: list[bool | None] = field(default_factory=list)
    first_wrong_step: int | None = None
    verdict: Verdict = "unknown"
    n_steps_parsed: int = 0


def _judgement(word: str) -> bool | None:
    w = word.lower()
    if w == "correct":
        return True
    if w in ("wrong", "incorrect"):
        return False
    return None


def _verdict(word: str) -> Verdict:
    j = _judgement(word)
    return "unknown" if j is None else ("correct" if j else "wrong")


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"critique style: expected one of {', '.join(STYLES)}, got {style!r}")


def render_critique(steps: Sequence[tuple[str, bool]], final_correct: bool,
                    explanations: Sequence[str | None] | None = None, style: str = "authors", *,
                    final_explanation: str | None = None) -> str:
    """The critique text for ``steps`` (``(text, correct)`` pairs) and the final verdict.

    ``authors``: ``text`` is the step sentence of the solution; each block has an
    ``Explanation:`` line when ``explanations[i]`` is given (``final_explanation`` likewise).
    ``compact``: ``text`` is the step recomputed by the critic (may be empty); lines stop at the
    first wrong step, explanations are not written.
    """
    _check_style(style)
    if explanations is not None and len(explanations) != len(steps):
        raise ValueError(f"explanations: expected {len(steps)} (one per step), "
                         f"got {len(explanations)}")
    final = "correct" if final_correct else "wrong"
    if style == "compact":
        lines = []
        for k, (text, ok) in enumerate(steps, start=1):
            body = f"{text.strip()} " if text.strip() else ""
            lines.append(f"{k}: {body}{'correct' if ok else 'wrong'}")
            if not ok:
                break
        return "\n".join(lines + [f"{COMPACT_FINAL} {final}"])
    blocks = []
    for i, (text, ok) in enumerate(steps):
        block = [f"{STEP_LABEL} {text.strip()}",
                 f"{STEP_VERDICT_LABEL} {'Correct' if ok else 'Wrong'}"]
        if explanations is not None and explanations[i]:
            block.append(f"{EXPLANATION_LABEL} {explanations[i].strip()}")
        blocks.append("\n".join(block))
    last = [f"{FINAL_LABEL} {final.capitalize()}"]
    if final_explanation:
        last.append(f"{EXPLANATION_LABEL} {final_explanation.strip()}")
    blocks.append("\n".join(last))
    return "\n\n".join(blocks)


def _first_wrong(verdicts: Sequence[bool | None]) -> int | None:
    return next((k for k, v in enumerate(verdicts, start=1) if v is False), None)


def _parse_authors(text: str) -> ParsedCritique:
    steps = [_judgement(m.group(1)) for m in _AUTHORS_STEP.finditer(text)]
    finals = _AUTHORS_FINAL.findall(text)
    verdict = _verdict(finals[-1]) if finals else _fallback_verdict(text)
    return ParsedCritique(steps, _first_wrong(steps), verdict, len(steps))


def _parse_compact(text: str) -> ParsedCritique:
    by_step: dict[int, bool | None] = {}
    for m in _COMPACT_STEP.finditer(text):
        k = int(m.group(1))
        if 1 <= k <= MAX_STEPS:
            by_step.setdefault(k, _judgement(m.group(3)))   # a repeated number keeps its first
    n = max(by_step, default=0)
    steps = [by_step.get(k) for k in range(1, n + 1)]        # a skipped number reads as None
    finals = _COMPACT_FINAL.findall(text)
    verdict = _verdict(finals[-1]) if finals else _fallback_verdict(text)
    return ParsedCritique(steps, _first_wrong(steps), verdict, len(by_step))


def _fallback_verdict(text: str) -> Verdict:
    found = _VERDICT_LINE.findall(text)
    if found:
        return _verdict(found[-1])
    sentences = _SENTENCE.findall(text)
    if not sentences:
        return "unknown"
    negated, word = sentences[-1]
    right = word.lower() in ("correct", "right")
    return "correct" if right != bool(negated) else "wrong"


def parse_critique(text: str | None) -> ParsedCritique:
    """Per-step verdicts, first wrong step and overall verdict of a critique, in either style.

    The authors' labels win when present; otherwise compact ``k: ... correct|wrong`` lines are
    read. The verdict comes only from the LAST final-verdict line (``Correctness of the final
    answer:``, ``Final:``, or ``Verdict:``), else from the last sentence that judges the answer
    or solution ("The answer is incorrect.", "the solution is not correct": what an instruct
    model writes when it ignores the labels): a critique cut off before any of them is
    ``unknown`` even when a step is marked wrong, so a truncated critique is visible in the
    stage metrics rather than guessed. Never raises; ``None``/empty/garbage -> ``ParsedCritique()`` (``unknown``).
    """
    if not isinstance(text, str) or not text.strip():
        return ParsedCritique()
    if _AUTHORS_STEP.search(text) or _AUTHORS_FINAL.search(text):
        return _parse_authors(text)
    return _parse_compact(text)


def steps_json(parsed: ParsedCritique) -> str:
    """The ``critiques.steps`` column: the per-step verdicts as a JSON list (true/false/null)."""
    return json.dumps(parsed.step_verdicts)
