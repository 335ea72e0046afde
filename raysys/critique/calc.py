"""Seed critiques on real GSM8K data without the authors' critique file.

MathCritique's seed data (``*_0_new.json``: GPT-4 critiques of wrong solutions and their
refinements) is not public here. A GSM8K gold solution carries its own per-step truth: each line
computes one value (``48/2 = <<48/2=24>>24``) and the last line is ``#### <answer>``. From it we
build what the synthetic task builds from its derivations, in the authors' critique format:

- :func:`slip_solution`: the gold solution with ONE slip, in the line that computes the final
  answer (its result off by 1-3, and ``####`` with it), so exactly one step is wrong and the
  final answer is wrong;
- :func:`calc_critique`: the critique a perfect critic writes for the gold solution (every step
  Correct, final Correct) or for its slipped copy (that step Wrong, with the right value);
- :func:`calc_seed_rows`: seed-SFT rows (direct answers, refinement examples) and critic-SFT
  rows from them, with our prompts (:func:`raysys.prompts.refine_prompt` /
  ``critique_prompt``), as :mod:`raysys.critique.imports` makes them from the authors' file.

A model's own wrong solution has no per-step truth here, so critic data has no ``sampled`` part.
Calculator annotations (``<<...>>``) are removed from every text a model sees.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from raysys.critique.format import render_critique
from raysys.prompts import build_prompt, critique_prompt, refine_prompt, refine_target, response_text

_CALC = re.compile(r"<<[^<>]*>>")
# the value a line computes: its last "= N" (a "$" before N and thousands commas allowed)
_RESULT = re.compile(r"=\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)")
_FINAL = re.compile(r"^\s*####\s*(.*?)\s*$")
SEED_SOURCES = ("corrupted", "correct")       # refinement examples
CRITIC_SOURCES = ("gold", "corrupted")        # critic examples


def strip_calc(text: str) -> str:
    """``text`` without GSM8K calculator annotations (``<<48/2=24>>``)."""
    return _CALC.sub("", text)


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def solution_lines(solution: str) -> tuple[list[str], str | None]:
    """The step lines of a gold solution (annotations removed, blank lines dropped) and the
    answer after ``####`` (None when it has none)."""
    lines, answer = [], None
    for line in strip_calc(solution).splitlines():
        m = _FINAL.match(line)
        if m:
            answer = m.group(1)
        elif line.strip():
            lines.append(line.strip())
    return lines, answer


def _render(lines: Sequence[str], answer: str) -> str:
    return "\n".join([*lines, f"#### {answer}"])


def slip_solution(solution: str, rng: random.Random) -> tuple[str, int, str, str] | None:
    """``(slipped solution, 0-based step, right value, wrong value)``, or None when no line
    computes the final answer (nothing to slip that changes it).

    The slip is in the LAST line whose computed value (its last ``= N``) equals the ``####``
    answer: that value becomes ``N ± 1..3`` (never negative, never N) in the line and after
    ``####``; every other line is the gold one.
    """
    lines, answer = solution_lines(solution)
    gold = _number(answer or "")
    if gold is None:
        return None
    for j in range(len(lines) - 1, -1, -1):
        found = list(_RESULT.finditer(lines[j]))
        if not found or _number(found[-1].group(1)) != gold:
            continue
        m = found[-1]
        delta = rng.randint(1, 3) * rng.choice((1, -1))
        if gold + delta < 0:
            delta = -delta
        wrong = gold + delta
        text = str(int(wrong)) if wrong == int(wrong) else f"{wrong:g}"
        line = lines[j][:m.start(1)] + text + lines[j][m.end(1):]
        out = [*lines[:j], line, *lines[j + 1:]]
        return _render(out, text), j, m.group(1).replace(",", ""), text
    return None


def calc_critique(solution: str, wrong_step: int | None = None, right: str | None = None,
                  wrong: str | None = None) -> str:
    """The authors'-format critique of ``solution`` (a gold solution, or one slipped by
    :func:`slip_solution` at ``wrong_step`` from ``right`` to ``wrong``): one block per step
    line, then the final verdict."""
    lines, answer = solution_lines(solution)
    steps = [(line, i != wrong_step) for i, line in enumerate(lines)]
    explanations = [None if i != wrong_step else f"The value here is {right}, not {wrong}."
                    for i in range(len(lines))]
    if wrong_step is None:
        final_why = f"The final answer {answer} is correct."
    else:
        final_why = f"The final answer should be {right}, not {wrong}."
    return render_critique(steps, wrong_step is None, explanations, "authors",
                           final_explanation=final_why)


def _count(mix: Mapping[str, int], allowed: tuple[str, ...]) -> dict[str, int]:
    # "sampled: 0" (the synthetic mixes' key) is allowed: there is nothing to sample from
    bad = [k for k in mix if k not in allowed and not (k == "sampled" and mix[k] == 0)]
    if bad or any(not isinstance(v, int) or v < 0 for v in mix.values()):
        raise ValueError(f"mix: expected counts >= 0 for {', '.join(allowed)} (calc seed "
                         f"critiques), got {dict(mix)}")
    return {k: mix.get(k, 0) for k in allowed}


def _slippable(problems: Sequence[Mapping[str, Any]], rng: random.Random
               ) -> list[tuple[Mapping[str, Any], tuple[str, int, str, str]]]:
    out = []
    for p in problems:
        slip = slip_solution(p.get("gold_solution") or "", rng)
        if slip is not None:
            out.append((p, slip))
    return out


def calc_seed_rows(problems: Sequence[Mapping[str, Any]], rng: random.Random, *, direct: int,
                   refine_mix: Mapping[str, int], critic_mix: Mapping[str, int],
                   variant: str = "full") -> tuple[list[dict], list[dict], list[dict]]:
    """``(direct rows, refinement rows, critic rows)`` (``sft`` schema) from ``problems``
    (``id``, ``question``, ``gold_solution`` with ``####``).

    Counts are capped by the problems available (each used at most once per kind, drawn
    without replacement): ``direct`` question -> gold solution (zero-shot prompt);
    ``refine_mix``: ``corrupted`` (slipped solution + its critique -> gold solution) and
    ``correct`` (gold solution + an all-correct critique -> the same solution);
    ``critic_mix``: ``gold`` and ``corrupted`` solutions -> their critique.
    """
    refine, critic = _count(refine_mix, SEED_SOURCES), _count(critic_mix, CRITIC_SOURCES)
    usable = [p for p in problems if solution_lines(p.get("gold_solution") or "")[1] is not None]
    slipped = _slippable(usable, rng)

    def pick(items: list, n: int) -> list:
        return rng.sample(items, min(n, len(items)))

    def gold_text(p: Mapping[str, Any]) -> str:
        return _render(*solution_lines(p["gold_solution"]))

    direct_rows = [{"prompt": build_prompt(p["question"], "zero_shot"),
                    "response": response_text(gold_text(p)), "source": f"direct:{p['id']}"}
                   for p in pick(usable, direct)]
    refine_rows = []
    for p, (text, j, right, wrong) in pick(slipped, refine["corrupted"]):
        crit = calc_critique(text, j, right, wrong)
        refine_rows.append({"prompt": refine_prompt(p["question"], text, crit, variant),
                            "response": refine_target(gold_text(p), variant),
                            "source": f"refine:corrupted:{p['id']}"})
    for p in pick(usable, refine["correct"]):
        crit = calc_critique(gold_text(p))
        refine_rows.append({"prompt": refine_prompt(p["question"], gold_text(p), crit, variant),
                            "response": refine_target(gold_text(p), variant),
                            "source": f"refine:correct:{p['id']}"})
    critic_rows = [{"prompt": critique_prompt(p["question"], gold_text(p), variant),
                    "response": calc_critique(gold_text(p)), "source": f"critic:gold:{p['id']}"}
                   for p in pick(usable, critic["gold"])]
    for p, (text, j, right, wrong) in pick(slipped, critic["corrupted"]):
        critic_rows.append({"prompt": critique_prompt(p["question"], text, variant),
                            "response": calc_critique(text, j, right, wrong),
                            "source": f"critic:corrupted:{p['id']}"})
    return direct_rows, refine_rows, critic_rows


def heldout_solutions(problems: Sequence[Mapping[str, Any]], n: int, rng: random.Random
                      ) -> list[dict[str, Any]]:
    """Solutions for judging a critic, with their truth: for each of the first ``n`` problems
    whose solution can be slipped, the gold solution (``sample_idx`` 0, ``wrong_step`` None)
    and its slipped copy (``sample_idx`` 1, ``wrong_step`` 1-based); ``steps`` = step lines."""
    out: list[dict[str, Any]] = []
    for p in problems:
        if len(out) >= 2 * n:
            break
        slip = slip_solution(p.get("gold_solution") or "", rng)
        if slip is None:
            continue
        gold = _render(*solution_lines(p["gold_solution"]))
        text, j, _, _ = slip
        steps = len(solution_lines(gold)[0])
        out += [{"problem_id": p["id"], "sample_idx": 0, "completion": gold, "wrong_step": None,
                 "steps": steps},
                {"problem_id": p["id"], "sample_idx": 1, "completion": text, "wrong_step": j + 1,
                 "steps": steps}]
    return out


def critic_scores(solutions: Sequence[Mapping[str, Any]], critiques: Sequence[Mapping[str, Any]]
                  ) -> dict[str, Any]:
    """How a critic's critiques (``problem_id``, ``sample_idx``, ``critique``) of
    :func:`heldout_solutions` match their truth: step verdicts, first wrong step, final verdict
    (and wrong-recall / precision), verdict counts, and ``final_ok``: per solution, whether its
    final verdict is right (``problem_id#sample_idx`` -> bool, for paired comparisons)."""
    from raysys.critique.format import parse_critique

    by_key = {(c["problem_id"], c["sample_idx"]): c for c in critiques}
    steps_ok = steps_n = first_ok = tp = fp = fn = 0
    counts = {"wrong": 0, "correct": 0, "unknown": 0}
    final_ok: dict[str, bool] = {}
    for s in solutions:
        parsed = parse_critique(by_key[(s["problem_id"], s["sample_idx"])]["critique"])
        counts[parsed.verdict] += 1
        for i in range(s["steps"]):
            steps_n += 1
            steps_ok += i < len(parsed.step_verdicts) and parsed.step_verdicts[i] == \
                (i + 1 != s["wrong_step"])
        first_ok += parsed.first_wrong_step == s["wrong_step"]
        is_wrong, said_wrong = s["wrong_step"] is not None, parsed.verdict == "wrong"
        final_ok[f"{s['problem_id']}#{s['sample_idx']}"] = \
            parsed.verdict == ("wrong" if is_wrong else "correct")
        tp += said_wrong and is_wrong
        fp += said_wrong and not is_wrong
        fn += is_wrong and not said_wrong
    n = len(solutions)
    return {"solutions": n, "step_verdict_acc": steps_ok / max(steps_n, 1),
            "first_error_acc": first_ok / max(n, 1),
            "final_verdict_acc": sum(final_ok.values()) / max(n, 1),
            "wrong_recall": tp / max(tp + fn, 1), "wrong_precision": tp / max(tp + fp, 1),
            **counts, "final_ok": final_ok}
