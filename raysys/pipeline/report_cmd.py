"""Regenerate a finished run's ``report.md`` and figures from what it wrote: ``result.json``
(rows with per-problem outcomes, report sections, extras) and ``state.json`` (stage timings).

``raysys report RUN_DIR`` calls :func:`regenerate`; every piece below is a pure function of
those files' data so it tests on synthetic fixtures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raysys.data.io import DataError

RESULT_FILE = "result.json"        # written by raysys.recipes.steps.finish
FIGURES_DIR = "figures"
# Per-problem fields of a result row (for paired comparisons), not report columns.
OUTCOME_KEYS = ("outcomes", "maj_outcomes")
# Fields of a result row that are not report columns: outcomes, what the row is (its tags, for
# the figures) and whether it is the baseline the other rows are compared with.
NON_COLUMNS = (*OUTCOME_KEYS, "tags", "baseline")
# How a result reads when its recipe's layout is unknown: the first row is the baseline,
# a differences table, every figure panel its rows have data for.
DEFAULT_LAYOUT: dict[str, Any] = {"baseline": None, "differences": True, "panels": None}


@dataclass
class ReportFiles:
    """What :func:`regenerate` wrote."""

    report: Path
    figures: list[Path] = field(default_factory=list)


def load_result(run_dir: str | Path) -> dict[str, Any]:
    """A run's ``result.json``, checked (:func:`result_problem`): a report or comparison is
    never drawn from values that are not what ``raysys run`` writes."""
    from raysys.data.io import read_json

    p = Path(run_dir).expanduser() / RESULT_FILE
    if not p.is_file():
        raise DataError(f"{p}: not found (the run has not finished; `raysys run` on its config "
                        "resumes and finishes it)")
    fix = ("; it is written by `raysys run` when a run finishes: re-run the run's config "
           f"(`raysys run {p.parent / 'config.yaml'}`) to write it again")
    try:
        result = read_json(p, allow_nan=False)
    except DataError as e:
        raise DataError(f"{e}{fix}") from None
    wrong = result_problem(result)
    if wrong:
        raise DataError(f"{p}: {wrong}{fix}")
    return result


def _fraction(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1


def _outcome_map(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(x, bool) for x in v.values())


def result_problem(result: Any) -> str | None:
    """What is wrong with a ``result.json`` value, or None. ``method`` a plain name; ``title``
    text; ``evals`` a list of rows with a unique text ``model``, integers ``0 <= correct <= n``,
    ``maj_acc`` / ``pass_acc`` fractions in [0, 1], ``maj_k`` an integer >= 1, outcomes objects
    of problem id -> true/false with ``correct`` true ones at most; ``sections`` an object of
    texts; ``extra`` an object (its ``test_time`` round tables numeric). Pure."""
    if not isinstance(result, dict) or not isinstance(result.get("evals"), list):
        return "expected an object with an 'evals' list"
    method = result.get("method")
    if not isinstance(method, str) or not method:
        return "expected a 'method' (the recipe's name)"
    if result.get("title") is not None and not isinstance(result["title"], str):
        return f"title: expected text, got {result['title']!r}"[:200]
    seen: set[str] = set()
    for i, row in enumerate(result["evals"]):
        missing = [k for k in ("model", "correct", "n") if not isinstance(row, dict) or k not in row]
        if missing:
            return f"evals[{i}] lacks {missing}"
        name, c, n = row["model"], row["correct"], row["n"]
        if not isinstance(name, str) or not name:
            return f"evals[{i}].model: expected a row name (text), got {name!r}"
        if name in seen:
            return f"evals[{i}]: row '{name}' appears twice (its comparisons would be ambiguous)"
        seen.add(name)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (c, n)) or not 0 <= c <= n:
            return f"evals[{i}] ({name}): expected integers 0 <= correct <= n, got correct={c!r} n={n!r}"
        for key in ("maj_acc", "pass_acc"):
            if row.get(key) is not None and not _fraction(row[key]):
                return f"evals[{i}] ({name}).{key}: expected a fraction in [0, 1], got {row[key]!r}"
        if row.get("maj_k") is not None and not (isinstance(row["maj_k"], int)
                                                 and not isinstance(row["maj_k"], bool) and row["maj_k"] >= 1):
            return f"evals[{i}] ({name}).maj_k: expected an integer >= 1, got {row['maj_k']!r}"
        for key in OUTCOME_KEYS:
            if row.get(key) is not None and not _outcome_map(row[key]):
                return (f"evals[{i}] ({name}).{key}: expected an object of problem id -> "
                        "true/false")
        tags = row.get("tags")
        if tags is not None and not (isinstance(tags, dict) and all(
                v is None or isinstance(v, (str, bool)) or _finite(v) for v in tags.values())):
            return (f"evals[{i}] ({name}).tags: expected an object of name -> text, finite "
                    "number, true/false or null")
        if row.get("baseline") not in (None, True, False):
            return f"evals[{i}] ({name}).baseline: expected true/false, got {row['baseline']!r}"
    sections = result.get("sections")
    if sections is not None and not (isinstance(sections, dict)
                                     and all(isinstance(v, str) for v in sections.values())):
        return "sections: expected an object of heading -> text"
    if sum(bool(r.get("baseline")) for r in result["evals"]) > 1:
        return "evals: more than one row marked as the baseline"
    extra = result.get("extra")
    if extra is not None and not isinstance(extra, dict):
        return f"extra: expected an object, got {type(extra).__name__}"
    wrong = layout_problem(result.get("layout"))
    if wrong:
        return wrong
    from raysys.pipeline.figures import round_tables

    from raysys.pipeline.figures import TT_MODES

    try:
        tables = round_tables(result)
        for gate, table in tables.items():
            first = table[0] if table and isinstance(table[0], dict) else {}
            need = {"round", "tokens_total"} | {f"{m}{x}" for m in TT_MODES if m in first
                                                for x in ("", "_lo", "_hi")}
            for r in table:
                if not isinstance(r, dict) or not need <= set(r) or not all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                        for v in r.values()):
                    return (f"the test-time round table of '{gate}': expected rows of finite "
                            f"numbers with {', '.join(sorted(need))}")
    except (ValueError, TypeError, AttributeError) as e:
        return f"the test-time round tables: {' '.join(str(e).split())[:200]}"
    return None


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def layout_problem(layout: Any) -> str | None:
    """What is wrong with a result's ``layout`` (written from the recipe's record: ``baseline``
    a row name or null, ``differences`` true/false, ``panels`` a list of panel names or null),
    or None. Pure."""
    from raysys.pipeline.figures import PANELS

    if layout is None:
        return None
    if not isinstance(layout, dict):
        return f"layout: expected an object, got {type(layout).__name__}"
    if layout.get("baseline") is not None and not isinstance(layout["baseline"], str):
        return f"layout.baseline: expected a row name or null, got {layout['baseline']!r}"[:200]
    if not isinstance(layout.get("differences", True), bool):
        return f"layout.differences: expected true/false, got {layout['differences']!r}"[:200]
    panels = layout.get("panels")
    if panels is not None and not (isinstance(panels, list)
                                   and all(isinstance(p, str) and p in PANELS for p in panels)):
        return f"layout.panels: expected a list of {', '.join(PANELS)}, got {panels!r}"[:200]
    return None


def with_layout(result: Mapping[str, Any], layout: Mapping[str, Any] | None) -> dict[str, Any]:
    """``result`` read with a layout: its own (written by the recipe), else ``layout`` (the
    recipe's record, for results written before results carried one), else
    :data:`DEFAULT_LAYOUT`; the layout's baseline row is marked when no row is. Pure."""
    out = dict(result)
    merged = {**DEFAULT_LAYOUT, **(layout or {}), **(result.get("layout") or {})}
    out["layout"] = merged
    evals = list(out.get("evals") or [])
    if merged["baseline"] and not any(r.get("baseline") for r in evals):
        out["evals"] = [{**r, "baseline": True} if r["model"] == merged["baseline"] else r
                        for r in evals]
    return out


def baseline_row(method: str, evals: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The row marked ``baseline`` (the recipe's comparison row) when present, else the first
    row. ``method`` is not read (a result's rows say which is the baseline)."""
    for r in evals:
        if r.get("baseline"):
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
    # A recipe whose own sections hold its paired comparisons (LLM2) says so in its layout.
    own = not (result.get("layout") or DEFAULT_LAYOUT).get("differences", True)
    diffs = differences_table(evals, base) if base is not None and not own else ""
    rows = [{k: v for k, v in r.items() if k not in NON_COLUMNS} for r in evals]
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
                        "(the recipe's); it names the figure file")
    inputs = {RESULT_FILE: run_dir / RESULT_FILE, "state.json": run_dir / "state.json"}
    for key, out in report_outputs(run_dir, method, figures=figures).items():
        check_not_an_input(out, inputs, key)


def regenerate(run_dir: str | Path, *, figures: bool = True,
               layout: Mapping[str, Any] | None = None) -> ReportFiles:
    """Rewrite ``RUN_DIR/report.md`` and (unless ``figures=False``) ``RUN_DIR/figures/<method>.png``
    with its sidecar JSON, from ``result.json`` and ``state.json``. ``layout``: the recipe's
    (its record's), used where ``result.json`` carries none (:func:`with_layout`)."""
    from raysys.pipeline.report import write_report
    from raysys.pipeline.run_dir import load_state

    run_dir = Path(run_dir).expanduser()
    result = with_layout(load_result(run_dir), layout)
    state = load_state(run_dir, verify=False)      # the report is drawn from result.json
    check_report_outputs(run_dir, str(result["method"]), figures=figures and bool(result["evals"]))
    pngs: list[Path] = []
    if figures and result["evals"]:
        from raysys.pipeline.figures import write_method_figure

        pngs.append(write_method_figure(result, run_dir / FIGURES_DIR))
    text = render_run_report(result, state, [p.relative_to(run_dir).as_posix() for p in pngs])
    return ReportFiles(write_report(run_dir, text), pngs)
