"""Weak-to-strong data steps: precomputed weak outputs as labels, ICL demonstrations, the
report's data section. Stages of the run dir built from the steps in :mod:`raysys.recipes.steps`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from raysys.data.io import read_stage, write_stage
from raysys.errors import StageError
from raysys.pipeline.report import pct
from raysys.pipeline.stats import TRAINING_NOISE
from raysys.prompts import response_text
from raysys.recipes.steps import EvalRow, StepContext, stage_metrics  # noqa: F401 (w2s.stage_metrics)
from raysys.recipes.w2s_pairs import Labeled


def labels(samples: pa.Table) -> dict[str, Labeled]:
    """First sample per problem as a :class:`Labeled` answer."""
    out: dict[str, Labeled] = {}
    for r in samples.to_pylist():
        if r["sample_idx"] == 0:
            out[r["problem_id"]] = Labeled(response_text(r["completion"]), r["pred"] or "")
    return out


def weak_output_target(row: dict[str, Any], lineno: int, path: str, ids: list[str],
                       questions: list[str]) -> str | None:
    """The train_2 problem id a precomputed weak output answers.

    String ids name the problem; integer ids (the paper's files) are row numbers of the split,
    checked against the question in the row's prompt so a misaligned file fails loudly.
    """
    from raysys.data.io import DataError

    rid = row["id"]
    if isinstance(rid, str) and not rid.isdigit():
        return rid if rid in set(ids) else None
    k = int(rid)
    if k >= len(ids):
        return None                      # beyond data.train_2.limit
    if "prompt" in row and questions[k].strip() not in row["prompt"]:
        raise DataError(f"{path}:{lineno}: id {rid} is row {k} of data.train_2, but its prompt "
                        f"does not contain that row's question")
    return ids[k]


def weak_outputs_stage(ctx: StepContext, path: str, train_2: pa.Table) -> pa.Table:
    """Step 2 from a file: precomputed weak outputs (id, prompt, response, ...) as samples."""
    from raysys.data.io import DataError, read_records
    from raysys.grading import extract_answer, is_equiv

    def build(out: Path) -> dict[str, Any]:
        ids = train_2.column("id").to_pylist()
        questions = train_2.column("question").to_pylist()
        gold = dict(zip(ids, train_2.column("gold_answer").to_pylist()))
        rows: dict[str, dict[str, Any]] = {}
        for lineno, r in read_records(path):
            for field in ("id", "response"):
                if field not in r:
                    raise DataError(f"{path}:{lineno}: missing field '{field}'")
            pid = weak_output_target(r, lineno, path, ids, questions)
            if pid is None or pid in rows:
                continue
            pred = extract_answer(r["response"], ctx.grade_style)
            g = gold[pid]
            rows[pid] = {"problem_id": pid, "sample_idx": 0, "prompt": r.get("prompt", ""),
                         "completion": r["response"], "pred": pred, "model": "weak_outputs",
                         "correct": bool(pred) and g is not None and is_equiv(pred, g), "iteration": 0}
        if not rows:
            raise DataError(f"{path}: no row answers a problem of data.train_2")
        acc = sum(r["correct"] for r in rows.values()) / len(rows)
        write_stage(out, list(rows.values()), "samples",
                    extra={"metrics": {"accuracy": acc, "source": "file", "missing": len(ids) - len(rows)}})
        return {}
    res = ctx.rd.stage("weak_labels", kind="samples", phase="data", fn=build)
    return read_stage(res.path, "samples")


def icl_demos(ctx: StepContext, pool_rows: list[tuple[str, str, str]], k: int, seed: int,
              source: str) -> list[tuple[str, str, str]]:
    """``k`` (question, answer, problem_id) demonstrations drawn (seeded) from ``pool_rows``."""
    from raysys.prompts import select_demos

    if len(pool_rows) < k:
        raise StageError(f"icl.k: {k} demonstrations asked, only {len(pool_rows)} {source} answers "
                         "with a final answer exist")
    return [tuple(d) for d in select_demos(pool_rows, k, seed)]


def weak_demo_pool(train_2: pa.Table, weak_labels: pa.Table) -> list[tuple[str, str, str]]:
    """Weak outputs with a final answer, as (question, answer, problem_id)."""
    by_id = {p["id"]: p for p in train_2.to_pylist()}
    return [(by_id[r["problem_id"]]["question"], r["completion"].strip(), r["problem_id"])
            for r in weak_labels.to_pylist()
            if r["sample_idx"] == 0 and (r["pred"] or "").strip() and r["problem_id"] in by_id]


def gold_demo_pool(train_1: pa.Table) -> list[tuple[str, str, str]]:
    """Gold solutions of the labelled train_1 (never train_2), as (question, answer, id)."""
    return [(p["question"], (p["gold_solution"] or "").strip(), p["id"]) for p in train_1.to_pylist()
            if p.get("gold_solution")]


def data_section(state: dict[str, Any]) -> str:
    """What the data stages measured on train_2, one readable row each: how right the weak and
    ICL answers are, what the stage-I agreement filter kept, what stage II's pairs hold. From a
    run's state (``RunDir.state``, the contents of ``state.json``), in its stage order."""
    order = ("weak_labels", "strong_icl", "stage1_hybrid", "stage2_pairs")   # the recipe's order
    rows = []
    for key, e in state["stages"].items():
        prefix, _, name = key.rpartition("/")
        text = _data_line(name, e.get("metrics") or {}) if name in order else None
        if text:
            rows.append(((prefix, order.index(name)), f"| {key} | {text} |"))
    lines = ["| stage | measured on train_2 |", "|---|---|"] + [r for _, r in sorted(rows)]
    return "\n".join(lines)


def _data_line(name: str, m: dict[str, Any]) -> str | None:
    """One data stage's row text (None: it recorded no metrics). The three stage-I sets share
    one filter and its metrics, so only the ``hybrid`` one gets a row."""
    if not m:
        return None
    if name == "weak_labels":
        return f"weak model's answers: {pct(m.get('accuracy'))} right ({m.get('graded_problems', '?')} questions)"
    if name == "strong_icl":
        return (f"strong model's few-shot (ICL) answers: {pct(m.get('accuracy'))} right "
                f"({m.get('graded_problems', '?')} questions)")
    if name == "stage1_hybrid":
        return (f"agreement filter kept {m.get('kept', '?')} of {m.get('questions', '?')} questions "
                f"({pct(m.get('kept_frac'))}); the agreed answer is right on {pct(m.get('icl_acc'))} "
                f"of them (ICL answers on all questions: {pct(m.get('icl_label_acc'))}, weak: "
                f"{pct(m.get('weak_label_acc'))})")
    if name == "stage2_pairs":
        branches = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in
                             sorted((m.get("branches") or {}).items(), key=lambda kv: (-kv[1], kv[0])))
        return (f"{m.get('pairs', '?')} pairs, chosen answer right in {pct(m.get('chosen_acc'))}"
                + (f"; questions by pair rule: {branches}" if branches else ""))
    return None


def direction_section(evals: list[EvalRow], stage1: dict[str, Any] | None,
                      stage2: dict[str, Any] | None) -> str:
    """The paper's two claims (stage I above strong ICL, stage II above stage I) as measured,
    each "shown" only when its paired 95% CI excludes 0, and the measurements that explain
    them: whether few-shot prompting elicits anything beyond the strong model's zero-shot
    answers (the paper's premise), how good the stage-I labels are, what stage II learned from.
    ``stage1`` / ``stage2``: the metrics of the chosen stage-I set and of the stage-II pairs."""
    by = {r.model: r for r in evals}
    lines = ["| the paper's claim | difference, points [95% CI] (gained/lost) | shown? |", "|---|---|---|"]
    for a, b, claim in (("stage1", "strong_icl", "stage I above strong ICL"),
                        ("stage2", "stage1", "stage II above stage I")):
        if a in by and b in by:
            d = by[a].minus(by[b])
            verdict = "yes" if d.lo > 0 else ("no: the CI includes 0" if d.hi >= 0 else "no: reversed")
            lines.append(f"| {claim} | {d.cell()} | {verdict} |")
    why = []
    if "strong_zero_shot" in by and "strong_icl" in by:
        z, icl = by["strong_zero_shot"], by["strong_icl"]
        d = icl.minus(z)
        premise = ("few-shot prompting elicits what zero-shot answers lack: the paper's premise holds"
                   if d.lo > 0 else "few-shot prompting elicits nothing beyond zero-shot answers: the "
                   "paper's premise (latent ability that prompting only partly elicits) does not hold")
        why.append(f"- Strong model zero-shot {100 * z.accuracy:.1f}%, few-shot (strong ICL) "
                   f"{100 * icl.accuracy:.1f}%, {d.cell()}: {premise}.")
    if stage1 and stage1.get("kept") is not None:
        acc = stage1.get("icl_acc")
        label = f", {100 * acc:.1f}% of them correct" if acc is not None else ""
        icl = stage1.get("icl_label_acc")
        icl_txt = (f" (the strong model's own ICL answers on train_2: {100 * icl:.1f}%)"
                   if icl is not None else "")
        why.append(f"- Stage I learned from the {stage1['kept']} of {stage1.get('questions', '?')} "
                   f"questions where weak and ICL answers agree{label}{icl_txt}.")
    if stage2 and stage2.get("pairs") is not None:
        chosen = stage2.get("chosen_acc")
        tail = f", chosen answers {100 * chosen:.1f}% correct" if chosen is not None else ""
        why.append(f"- Stage II learned from {stage2['pairs']} pairs{tail}.")
    if len(lines) > 2:
        why.append(f"- {TRAINING_NOISE}")
    return "\n".join(lines + ([""] + why if why else []))
