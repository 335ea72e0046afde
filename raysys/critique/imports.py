"""Import of the MathCritique seed critique files (``selfimprove/meta-llama/*_0_new.json``).

Each file is a JSON array of alpaca records ``{instruction, input, output}``. One record holds a
whole critique-and-refine exchange::

    instruction = question + " " + format request + "\\n\\nAssistant:" + wrong solution
                  + "\\n<|end_of_text|>\\nHuman: " + refinement request + "\\n\\n"
                  + critique + "\\n"
    input       = ""
    output      = refined solution

(the ``default`` template wraps it in ``Human: ... Assistant:``). We split it into our tables:
``problems`` (the question), ``samples`` (the wrong solution as sample 0), ``critiques``
(critique, parsed verdicts, the refinement), ``sft`` (refinement examples) and ``critic_sft``
(question + solution -> critique, for critic training).

Bad input: a record without one of the three fields, a non-string field, or an instruction
without the separators above raises :class:`DataError` naming ``file: item N`` and the field.
An empty critique (record skipped) and a refinement with no answer (no refinement example;
the critique is kept) are counted in ``stats`` and listed in ``issues``: never dropped silently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from raysys.critique.format import parse_critique, steps_json
from raysys.data.io import DataError, read_records
from raysys.grading import extract_answer
from raysys.grading.extract import clean_answer, last_boxed
from raysys.prompts import critique_prompt, refine_prompt, refine_target

ASSISTANT_SEP = "\n\nAssistant:"
TURN_SEP = "\n<|end_of_text|>\nHuman: "
PREFIX = "Let's break it down step by step:"
_FORMAT_REQUEST = re.compile(r"\s*Please also give your final number in the format of .*$", re.S)
FIELDS = ("instruction", "input", "output")


@dataclass
class CritiqueImport:
    """Rows for each table, counts per outcome and one line per record not fully imported."""

    problems: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    critiques: list[dict[str, Any]] = field(default_factory=list)
    sft: list[dict[str, Any]] = field(default_factory=list)
    critic_sft: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    issues: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Exchange:
    """One record split into its parts."""

    question: str
    format_request: str
    solution: str          # the wrong solution as written (with the forced prefix)
    request: str           # the refinement request
    critique: str
    refined: str
    instruction: str       # instruction (+ "\n" + input) verbatim


def strip_prefix(text: str) -> str:
    """``text`` without the authors' forced opening "Let's break it down step by step:"."""
    t = text.strip()
    return t[len(PREFIX):].strip() if t.startswith(PREFIX) else t


def refined_answer(text: str) -> str:
    """The answer of a refinement: after the first "The answer is" (the authors' rule), else
    the last box, else ``####``; ``""`` when it states none (no last-number guess)."""
    return (extract_answer(text, "critique") or clean_answer(last_boxed(text) or "")
            or extract_answer(text, "w2s"))


def split_record(record: dict[str, Any], where: str) -> Exchange:
    """Split one alpaca record; DataError naming ``where`` and the field when it cannot be."""
    for name in FIELDS:
        if name not in record:
            raise DataError(f"{where}: missing field '{name}' (expected {', '.join(FIELDS)})")
        if not isinstance(record[name], str):
            raise DataError(f"{where}: field '{name}' must be a string, "
                            f"got {type(record[name]).__name__}")
    instruction = record["instruction"]
    if record["input"].strip():
        instruction += "\n" + record["input"]    # LLaMA-Factory joins them with one newline
    head, sep, rest = instruction.partition(ASSISTANT_SEP)
    if not sep:
        raise DataError(f"{where}: field 'instruction': expected '\\n\\nAssistant:' after the "
                        "question (MathCritique *_0_new.json layout)")
    solution, sep, tail = rest.partition(TURN_SEP)
    if not sep:
        raise DataError(f"{where}: field 'instruction': expected '\\n<|end_of_text|>\\nHuman: ' "
                        "after the solution (MathCritique *_0_new.json layout)")
    request, _, critique = tail.partition("\n\n")
    m = _FORMAT_REQUEST.search(head)
    question = head[:m.start()] if m else head
    return Exchange(question.strip(), m.group(0).strip() if m else "", solution.strip(),
                    request.strip(), critique.strip(), record["output"].strip(), instruction)


def import_critique_file(path: str | Path, *, prompt: Literal["ours", "authors"] = "ours",
                         source: str | None = None) -> CritiqueImport:
    """Read one ``*_0_new.json`` file into table rows (see the module docstring).

    ``prompt="ours"`` renders the ``sft``/``critic_sft`` prompts with our templates
    (:func:`raysys.prompts.refine_prompt` / ``critique_prompt``) on the prefix-stripped
    solution; ``"authors"`` keeps the record's instruction verbatim as the ``sft`` prompt.
    Problem ids are ``<file stem>-<item>`` (1-based), stable across runs.
    """
    if prompt not in ("ours", "authors"):
        raise ValueError(f"prompt: expected 'ours' or 'authors', got {prompt!r}")
    p = Path(path)
    src = source or f"mathcritique:{p.stem}"
    out = CritiqueImport(stats=dict.fromkeys(
        ("records", "imported", "empty_critique", "no_answer", "unparsed_critique",
         "verdict_correct", "verdict_wrong", "verdict_unknown"), 0))
    for item, record in read_records(p):
        where = f"{p}: item {item}"
        out.stats["records"] += 1
        ex = split_record(record, where)
        if not ex.critique:
            out.stats["empty_critique"] += 1
            out.issues.append(f"{where}: empty critique (record skipped)")
            continue
        _add(out, ex, f"{p.stem}-{item}", src, prompt, where)
    return out


def _add(out: CritiqueImport, ex: Exchange, pid: str, src: str, prompt: str, where: str) -> None:
    """Append one exchange's rows to ``out``."""
    parsed = parse_critique(ex.critique)
    out.stats[f"verdict_{parsed.verdict}"] += 1
    if parsed.verdict == "unknown" and parsed.n_steps_parsed == 0:
        out.stats["unparsed_critique"] += 1
        out.issues.append(f"{where}: critique has no step or final verdict the parser reads "
                          "(kept, verdict unknown)")
    pred = refined_answer(ex.refined)
    solution = strip_prefix(ex.solution)
    out.problems.append({"id": pid, "source": src, "question": ex.question, "gold_answer": None,
                         "gold_solution": None,
                         "meta": json.dumps({"format_request": ex.format_request})})
    first_turn = f"{ex.question} {ex.format_request}".strip() + ASSISTANT_SEP
    out.samples.append({"problem_id": pid, "sample_idx": 0, "prompt": first_turn,
                        "completion": ex.solution, "pred": extract_answer(ex.solution, "critique"),
                        "correct": None, "model": src})
    out.critiques.append({"problem_id": pid, "sample_idx": 0, "critique": ex.critique,
                          "verdict": parsed.verdict, "refined": ex.refined, "refined_pred": pred,
                          "refined_correct": None, "steps": steps_json(parsed),
                          "first_wrong_step": parsed.first_wrong_step})
    out.critic_sft.append({"prompt": critique_prompt(ex.question, solution),
                           "response": ex.critique, "source": f"{src}:critic:{pid}"})
    if not pred:
        out.stats["no_answer"] += 1
        out.issues.append(f"{where}: refined solution states no answer "
                          "(critique kept, no refinement example)")
    else:
        if prompt == "authors":
            p_text, response = ex.instruction, ex.refined
        else:
            p_text = refine_prompt(ex.question, solution, ex.critique)
            response = refine_target(strip_prefix(ex.refined))
        out.sft.append({"prompt": p_text, "response": response, "source": f"{src}:refine:{pid}"})
    out.stats["imported"] += 1
