"""Regenerate a finished run's ``report.md`` and figures from what it wrote: ``result.json``
(rows with per-problem outcomes, report sections, extras) and ``state.json`` (stage timings).

``raysys report RUN_DIR`` calls :func:`regenerate`; every piece below is a pure function of
those files' data so it tests on synthetic fixtures.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raysys.data.io import DataError

RESULT_FILE = "result.json"        # written by raysys.recipes.steps.finish
FIGURES_DIR = "figures"
# The row every other row is compared with (paired bootstrap), per method; else the first row.
BASELINES = {"w2s": "strong_icl", "llm2": "plain", "critique": "actor_iter0"}
# Per-problem fields of a result row (for paired comparisons), not report columns.
OUTCOME_KEYS = ("outcomes", "maj_outcomes")


@dataclass
class ReportFiles:
    """What :func:`regenerate` wrote."""

    report: Path
    figures: list[Path] = field(default_factory=list)


def load_result(run_dir: str | Path) -> dict[str, Any]:
    """A run's ``result.json``, checked: ``method``, and ``evals`` rows with model/correct/n."""
    p = Path(run_dir) / RESULT_FILE
    if not p.is_file():
        raise DataError(f"{p}: not found (the run has not finished; `raysys run` on its config "
                        "resumes and finishes it)")
    try:
        result = json.loads(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise DataError(f"{p}: not UTF-8 text (expected the JSON that `raysys run` writes)") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{p}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(result, dict) or not isinstance(result.get("evals"), list):
        raise DataError(f"{p}: expected an object with an 'evals' list")
    if not result.get("method"):
        raise DataError(f"{p}: expected a 'method' (w2s, llm2 or critique)")
    for i, row in enumerate(result["evals"]):
        missing = [k for k in ("model", "correct", "n") if not isinstance(row, dict) or k not in row]
        if missing:
            raise DataError(f"{p}: evals[{i}] lacks {missing}")
        c, n = row["correct"], row["n"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (c, n)) or not 0 <= c <= n:
            raise DataError(f"{p}: evals[{i}] ({row['model']}): expected integers 0 <= correct <= n, "
                            f"got correct={c!r} n={n!r}")
    return result


def baseline_row(method: str, evals: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The method's comparison row (:data:`BASELINES`) when present, else the first row."""
    want = BASELINES.get(method)
    for r in evals:
        if r["model"] == want:
            return r
    return evals[0] if evals else None


def differences_table(evals: Sequence[Mapping[str, Any]], base: Mapping[str, Any]) -> str:
    """Markdown: each row minus ``base`` in greedy accuracy on the problems both were graded on
    (paired bootstrap, 95% CI, gained/lost). Rows without per-problem outcomes are left out;
    empty text when no row has them."""
    from raysys.pipeline.stats import paired_bootstrap

    ref = base.get("outcomes") or {}
    lines = []
    for r in evals:
        outs = r.get("outcomes") or {}
        common = sorted(set(ref) & set(outs))
        if r is base or not common:
            continue
        d = paired_bootstrap([bool(ref[p]) for p in common], [bool(outs[p]) for p in common])
        lines.append(f"| {r['model']} − {base['model']} | {d.cell()} | {d.n} |")
    if not lines:
        return ""
    return "\n".join([f"Paired differences against {base['model']} (greedy, paired bootstrap):", "",
                      "| comparison | difference, points [95% CI] (gained/lost) | problems |",
                      "|---|---|---|", *lines])


def render_run_report(result: Mapping[str, Any], state: Mapping[str, Any],
                      figures: Sequence[str] = ()) -> str:
    """The ``report.md`` text of a run from its result and state; ``figures`` relative paths."""
    from raysys.pipeline.report import render_report

    evals = list(result.get("evals") or [])
    base = baseline_row(str(result.get("method")), evals)
    # A recipe that wrote its own paired-bootstrap section (LLM2) already has these comparisons.
    own = any("paired bootstrap" in head for head in (result.get("sections") or {}))
    diffs = differences_table(evals, base) if base is not None and not own else ""
    rows = [{k: v for k, v in r.items() if k not in OUTCOME_KEYS} for r in evals]
    return render_report(str(result.get("title") or result.get("method")), rows, dict(state),
                         dict(result.get("sections") or {}), figures=list(figures),
                         differences=diffs or None)


def report_outputs(run_dir: Path, method: str, *, figures: bool = True) -> dict[str, Path]:
    """What :func:`regenerate` writes, by name: report.md and the method's figure and sidecar."""
    outs = {"report.md": run_dir / "report.md"}
    if figures:
        for suffix in (".png", ".json"):
            outs[f"{FIGURES_DIR}/{method}{suffix}"] = run_dir / FIGURES_DIR / f"{method}{suffix}"
    return outs


def check_report_outputs(run_dir: Path, method: str, *, figures: bool = True) -> None:
    """Before anything is written: ``method`` (from result.json, used as a file name) is a
    plain name, and no output resolves to result.json or state.json (a ``figures`` symlink to
    the run dir with method ``result`` would rewrite result.json in place with the sidecar,
    a ``report.md`` symlink to it would be replaced)."""
    from raysys.data.io import check_not_an_input

    if method in (".", "..") or any(c in method for c in "/\\\0"):
        raise DataError(f"{run_dir / RESULT_FILE}: method {method!r}: expected a plain name "
                        "(w2s, llm2 or critique); it names the figure file")
    inputs = {RESULT_FILE: run_dir / RESULT_FILE, "state.json": run_dir / "state.json"}
    for key, out in report_outputs(run_dir, method, figures=figures).items():
        check_not_an_input(out, inputs, key)


def regenerate(run_dir: str | Path, *, figures: bool = True) -> ReportFiles:
    """Rewrite ``RUN_DIR/report.md`` and (unless ``figures=False``) ``RUN_DIR/figures/<method>.png``
    with its sidecar JSON, from ``result.json`` and ``state.json``."""
    from raysys.pipeline.report import write_report
    from raysys.pipeline.run_dir import load_state

    run_dir = Path(run_dir)
    result = load_result(run_dir)
    state = load_state(run_dir)
    check_report_outputs(run_dir, str(result["method"]), figures=figures and bool(result["evals"]))
    pngs: list[Path] = []
    if figures and result["evals"]:
        from raysys.pipeline.figures import write_method_figure

        pngs.append(write_method_figure(result, run_dir / FIGURES_DIR))
    text = render_run_report(result, state, [p.relative_to(run_dir).as_posix() for p in pngs])
    return ReportFiles(write_report(run_dir, text), pngs)
