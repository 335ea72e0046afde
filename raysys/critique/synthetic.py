"""Gold critiques on the synthetic task, so a tiny critic and a refining actor can be trained.

The synthetic task's gold solution is one ``a<op>b=r`` line per step (its per-step ground
truth) and ``#### <answer>``. A candidate solution is checked line by line:

- step ``k`` is right when it parses as ``a op b = c``, uses the gold operation and operand of
  step ``k`` (``+``/``*`` operands in either order), starts from the previous line's result
  (the question's first number for step 1), and ``a op b`` really is ``c``;
- a step after an earlier error is judged on its own inputs ("the error carries forward"):
  ``10-9=1`` after a wrong ``23+15=10`` is a right step. So a solution with one slip has
  exactly one wrong step. (The authors' seed critiques also mark such later steps wrong; the
  first wrong step, the one that matters to the refiner, is the same under both readings.);
- a line past the gold step count is wrong (extra), and a solution that stops early while all
  its lines are right gets one more step, the first missing one, marked wrong;
- the final verdict is the final answer (``####`` or "The answer is") against the gold answer.

``corrupt_solution`` makes a gold solution wrong in exactly one step (a wrong result, or a
wrong operand computed correctly), and the later steps are recomputed from the wrong value,
as models carry their slips forward: exactly one wrong step and always a wrong final answer.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from raysys.critique.format import render_critique
from raysys.data.synthetic import apply_op, render_solution
from raysys.grading import extract_answer, is_equiv
from raysys.prompts import critique_prompt, refine_prompt, refine_target

_LINE = re.compile(r"^\s*(-?\d+)\s*([-+*x\u00d7])\s*(-?\d+)\s*=\s*(-?\d+)\s*\.?\s*$")
_ANSWER_LINE = re.compile(r"####|[Tt]he (?:final )?answer is")
CRITIC_SOURCES = ("gold", "corrupted", "sampled")
REFINE_SOURCES = ("corrupted", "sampled", "correct")


@dataclass(frozen=True)
class StepCheck:
    """A candidate solution checked against the gold steps.

    ``lines`` are the judged step texts (a missing step is ``""``), ``recomputed`` the right
    line for each (``""`` for an extra line), ``first_wrong_step`` is 1-based.
    """

    lines: list[str]
    verdicts: list[bool]
    recomputed: list[str]
    explanations: list[str]
    first_wrong_step: int | None
    final_correct: bool


def parse_step(line: str) -> tuple[int, str, int, int] | None:
    """``(a, op, b, c)`` from a line ``a op b = c`` (``x``/``×`` read as ``*``), else None."""
    m = _LINE.match(line)
    if not m:
        return None
    op = "*" if m.group(2) in ("x", "\u00d7") else m.group(2)
    return int(m.group(1)), op, int(m.group(3)), int(m.group(4))


def gold_steps(gold_solution: str) -> list[tuple[int, str, int, int]]:
    """The per-step ground truth of a synthetic gold solution (its lines before ``####``)."""
    steps = [parse_step(line) for line in step_lines(gold_solution)]
    if not steps or any(s is None for s in steps):
        raise ValueError("gold solution: expected synthetic-task lines 'a<op>b=c' before "
                         f"'#### answer', got {gold_solution[:80]!r}")
    return steps  # type: ignore[return-value]


def step_lines(solution: str) -> list[str]:
    """The non-blank lines of ``solution`` before its answer line (``####``/"The answer is")."""
    out = []
    for line in solution.strip().split("\n"):
        if _ANSWER_LINE.search(line):
            break
        if line.strip():
            out.append(line.strip())
    return out


def _judge(parsed: tuple[int, str, int, int] | None, start: int, gold: tuple[int, str, int, int]
           ) -> tuple[bool, str]:
    """Whether one parsed line is the gold step ``gold`` applied to ``start``, and why."""
    _, op, b, _ = gold
    want = f"{start}{op}{b}={apply_op(start, op, b)}"
    if parsed is None:
        return False, f"This is not a calculation of the form a{op}b=c; the step is {want}."
    a2, op2, b2, c2 = parsed
    operands_ok = op2 == op and ((a2, b2) == (start, b) or (op in "+*" and (b2, a2) == (start, b)))
    if not operands_ok:
        return False, f"The step should compute {start}{op}{b}, not {a2}{op2}{b2}; it is {want}."
    if apply_op(a2, op2, b2) != c2:
        return False, f"{a2}{op2}{b2} is {apply_op(a2, op2, b2)}, not {c2}."
    return True, f"{a2}{op2}{b2} is {c2}."


def check_solution(gold_solution: str, candidate: str) -> StepCheck:
    """Judge each step of ``candidate`` against the gold steps (rules: module docstring)."""
    truth = gold_steps(gold_solution)
    lines = step_lines(candidate)
    verdicts, recomputed, explanations = [], [], []
    value = truth[0][0]
    for k, line in enumerate(lines):
        parsed = parse_step(line)
        if k >= len(truth):
            verdicts.append(False)
            recomputed.append("")
            explanations.append(f"The problem takes {len(truth)} steps; this step is extra.")
            continue
        ok, why = _judge(parsed, value, truth[k])
        _, op, b, _ = truth[k]
        verdicts.append(ok)
        recomputed.append(f"{value}{op}{b}={apply_op(value, op, b)}")
        if ok and value != truth[k][0]:
            why += " Right given the previous step, but the earlier error carries forward."
        explanations.append(why)
        # the next step starts from this line's result when it has one, else from the truth
        value = parsed[3] if parsed is not None else truth[k][3]
    if len(lines) < len(truth) and all(verdicts):
        _, op, b, _ = truth[len(lines)]
        want = f"{value}{op}{b}={apply_op(value, op, b)}"
        lines.append("")
        verdicts.append(False)
        recomputed.append(want)
        explanations.append(f"The solution stops too early; the next step is {want}.")
    pred = extract_answer(candidate, "w2s")
    final_ok = bool(pred) and is_equiv(pred, str(truth[-1][3]))
    first = next((k for k, v in enumerate(verdicts, start=1) if not v), None)
    return StepCheck(lines, verdicts, recomputed, explanations, first, final_ok)


def steps_right(gold_solution: str | None, candidate: str) -> bool | None:
    """Whether ``candidate`` follows the gold derivation step by step to the right answer;
    ``None`` when ``gold_solution`` is not a synthetic-task solution (no per-step truth).

    A right final answer reached through wrong steps (a misread operand, a slip that the next
    slip cancels) is ``False``: what final-answer grading cannot see.
    """
    if not gold_solution:
        return None
    try:
        check = check_solution(gold_solution, candidate)
    except ValueError:
        return None
    return check.first_wrong_step is None and check.final_correct


def gold_critique(question: str, gold_solution: str, candidate_solution: str,
                  style: str = "compact") -> str:
    """The critique a perfect critic writes for ``candidate_solution``.

    ``question`` is not needed to judge (the gold solution holds every step's truth); it is
    taken so a gold critic and a model critic are called alike. ``compact`` lines show the
    recomputed (right) step, ``authors`` blocks the candidate's own line and an explanation.
    """
    del question
    check = check_solution(gold_solution, candidate_solution)
    answer = str(gold_steps(gold_solution)[-1][3])
    if check.final_correct:
        final_why = f"The final answer {answer} is correct."
    else:
        pred = extract_answer(candidate_solution, "w2s") or "missing"
        final_why = f"The final answer should be {answer}, not {pred}."
    if style == "compact":
        # "9-2=8 -> 9-2=7 wrong": the solution's own line copied first (copying a line in order
        # is easy for a tiny model), then the step recomputed from its operands, so judging is a
        # comparison of two adjacent results. A tiny critic asked only to recompute, then judge,
        # calls nearly everything correct (LEARNING_SIGNAL.md); one asked to write the claimed
        # result after its own copies its own result instead.
        steps = [(f"{line.strip() or '?'} -> {rec}" if rec else "", ok)
                 for rec, line, ok in zip(check.recomputed, check.lines, check.verdicts)]
        return render_critique(steps, check.final_correct, style="compact")
    steps = [(line or "(missing step)", ok) for line, ok in zip(check.lines, check.verdicts)]
    return render_critique(steps, check.final_correct, check.explanations, style,
                           final_explanation=final_why)


def corrupt_solution(problem: Mapping[str, Any], rng: random.Random, *,
                     step: int | None = None) -> str:
    """``problem``'s gold solution with exactly one wrong step (0-based ``step``, else random).

    The slip is a wrong result (off by 1-3) or a wrong operand computed correctly; later steps
    follow from the wrong value, so the final answer is always wrong. A slip that would make a
    later value negative (or leave the answer unchanged) is replaced by one that raises it.
    """
    truth = [tuple(s) for s in problem["steps"]]
    j = rng.randrange(len(truth)) if step is None else step
    if not 0 <= j < len(truth):
        raise ValueError(f"step: expected 0..{len(truth) - 1}, got {step}")
    kind = rng.choice(("result", "operand"))
    delta = rng.randint(1, 3) * rng.choice((1, -1))
    for attempt in (kind, "result"):
        steps = _with_slip(truth, j, attempt, delta)
        if steps is not None:
            return render_solution(steps)
        delta = abs(delta)   # raising a result always works: every later value goes up
    raise AssertionError("unreachable: a raised result is always a valid slip")


def _with_slip(truth: list[tuple], j: int, kind: str, delta: int) -> list[list[Any]] | None:
    """The steps with the slip at ``j`` and later steps recomputed; None if the slip is invalid."""
    a, op, b, c = truth[j]
    if kind == "operand":
        b = b + delta
        c = apply_op(a, op, b)
        if b < 1:
            return None
    else:
        c = c + delta
    steps = [list(s) for s in truth[:j]] + [[a, op, b, c]]
    for _, op2, b2, _ in truth[j + 1:]:
        steps.append([c, op2, b2, apply_op(c, op2, b2)])
        c = steps[-1][3]
    if any(s[3] < 0 for s in steps) or steps[-1][3] == truth[-1][3] or steps[j] == list(truth[j]):
        return None
    return steps


def _draw(items: Sequence[Any], n: int, rng: random.Random) -> list[Any]:
    """``n`` items: a shuffled pass over ``items``, reshuffled for each further pass."""
    out: list[Any] = []
    while items and len(out) < n:
        order = list(items)
        rng.shuffle(order)
        out.extend(order[:n - len(out)])
    return out


def _mix(mix: Mapping[str, int], allowed: tuple[str, ...]) -> dict[str, int]:
    bad = [k for k in mix if k not in allowed]
    if bad or any(not isinstance(v, int) or v < 0 for v in mix.values()):
        raise ValueError(f"mix: expected counts >= 0 for {', '.join(allowed)}, got {dict(mix)}")
    return {k: mix.get(k, 0) for k in allowed}


def _sampled(problems: Sequence[Mapping[str, Any]], samples: Sequence[Mapping[str, Any]]
             ) -> list[tuple[Mapping[str, Any], str, StepCheck]]:
    """``(problem, completion, check)`` for each sample of a known problem, in input order."""
    by_id = {p["id"]: p for p in problems}
    out = []
    for s in samples:
        p = by_id.get(s["problem_id"])
        if p is not None:   # samples of other problems (e.g. held out) are not ours to use
            text = (s.get("completion") or "").strip()
            out.append((p, text, check_solution(p["solution"], text)))
    return out


def critic_sft_rows(problems: Sequence[Mapping[str, Any]], samples: Sequence[Mapping[str, Any]],
                    rng: random.Random, mix: Mapping[str, int], *, style: str = "compact",
                    variant: str = "short") -> list[dict[str, str]]:
    """SFT rows (prompt, response, source) teaching a critic: question + solution -> critique.

    ``mix`` counts rows per source: ``gold`` (gold solutions, all correct), ``corrupted``
    (one-slip corruptions) and ``sampled`` (``samples`` rows with ``problem_id``/``completion``,
    each used at most once, so fewer rows when fewer samples exist; samples of problems not in
    ``problems`` are ignored). Every response is :func:`gold_critique` of its solution.
    """
    counts = _mix(mix, CRITIC_SOURCES)
    rows = []

    def add(source: str, p: Mapping[str, Any], solution: str) -> None:
        rows.append({"prompt": critique_prompt(p["question"], solution, variant),
                     "response": gold_critique(p["question"], p["solution"], solution, style),
                     "source": f"critic:{source}:{p['id']}"})

    for p in _draw(problems, counts["gold"], rng):
        add("gold", p, p["solution"])
    for p in _draw(problems, counts["corrupted"], rng):
        add("corrupted", p, corrupt_solution(p, rng))
    pool = _sampled(problems, samples)
    for p, text, _ in rng.sample(pool, min(counts["sampled"], len(pool))):
        add("sampled", p, text)
    return rows


def refinement_sft_rows(problems: Sequence[Mapping[str, Any]],
                        samples: Sequence[Mapping[str, Any]], rng: random.Random,
                        mix: Mapping[str, int], *, style: str = "compact",
                        variant: str = "short") -> list[dict[str, str]]:
    """SFT rows teaching the actor to refine: question + solution + gold critique -> target.

    ``corrupted`` and ``sampled`` (samples whose final answer is wrong, each used once) have the
    gold solution as target; ``correct`` rows show a gold solution with its all-correct
    critique and that same solution as target, so a "Final: correct" critique teaches the
    actor to keep a right answer (LEARNING_SIGNAL.md: about a third of the data).
    """
    counts = _mix(mix, REFINE_SOURCES)
    rows = []

    def add(source: str, p: Mapping[str, Any], solution: str, target: str) -> None:
        crit = gold_critique(p["question"], p["solution"], solution, style)
        rows.append({"prompt": refine_prompt(p["question"], solution, crit, variant),
                     "response": refine_target(target, variant),
                     "source": f"refine:{source}:{p['id']}"})

    for p in _draw(problems, counts["corrupted"], rng):
        add("corrupted", p, corrupt_solution(p, rng), p["solution"])
    wrong = [(p, text) for p, text, check in _sampled(problems, samples) if not check.final_correct]
    for p, text in rng.sample(wrong, min(counts["sampled"], len(wrong))):
        add("sampled", p, text, p["solution"])
    for p in _draw(problems, counts["correct"], rng):
        add("correct", p, p["solution"], p["solution"])
    return rows
