"""One recipe run several times (other seeds, same test problems): each run's paired difference
and their mean with an interval that covers training noise too (``raysys compare``).

A single run's report CIs cover only the draw of test problems (:data:`stats.TRAINING_NOISE`);
reruns of the same config with other training seeds show how much a retrained model moves a
difference. Everything here reads ``result.json`` data (rows with per-problem outcomes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from raysys.data.io import DataError
from raysys.pipeline.stats import paired_bootstrap, replicated_diff

Result = Mapping[str, Any]


def default_pairs(result: Result) -> list[tuple[str, str]]:
    """(baseline, row) for every row with per-problem outcomes: the comparisons a run's own
    report makes (baseline: the row ``result.json`` marks, else the recipe record's), and the same on maj@k votes
    where the baseline and the row kept them."""
    from raysys.pipeline.report_cmd import baseline_row

    evals = [r for r in result["evals"] if r.get("outcomes")]
    base = baseline_row(str(result["method"]), evals)
    if base is None:
        return []
    pairs = [(base["model"], r["model"]) for r in evals if r is not base]
    if base.get("maj_outcomes"):
        pairs += [(base["model"] + MAJ_SUFFIX, r["model"] + MAJ_SUFFIX) for r in evals
                  if r is not base and r.get("maj_outcomes")]
    return pairs


MAJ_SUFFIX = "@maj"      # ROW@maj: the row's maj@k votes instead of its greedy answers


def check_distinct_runs(run_dirs: Sequence[str]) -> None:
    """Each run dir counts once: not the same directory twice (as given, through ``..``, ``~``
    or a symlink) and not a copy of another (the same ``state.json`` invocation history, which
    a rerun never shares). A run counted twice would shrink the interval as if it replicated.
    ``DataError`` naming both."""
    import os
    from pathlib import Path

    from raysys.pipeline.run_dir import STATE, _read_state

    seen: dict[tuple, str] = {}
    history: dict[str, str] = {}
    for d in run_dirs:
        p = Path(d).expanduser()
        try:
            st = os.stat(p)
            ident: tuple = (st.st_dev, st.st_ino)
        except OSError:
            ident = (str(p.resolve()),)
        if ident in seen:
            raise DataError(f"{d}: the same run dir as {seen[ident]} (given twice"
                            f"{'' if d == seen[ident] else ', under another name'}); each run "
                            "counts once")
        seen[ident] = d
        state = p / STATE
        runs = _read_state(state).get("runs") if state.is_file() else None
        if runs:
            key = repr(runs)
            if key in history:
                raise DataError(f"{d}: a copy of {history[key]} (its {STATE} records the same "
                                "invocations); each run counts once: compare reruns, not copies")
            history[key] = d


def _outcomes(name: str, result: Result, row_name: str) -> Mapping[str, Any]:
    """Per-problem outcomes of ``row_name`` (greedy; ``ROW@maj``: maj@k votes) in run ``name``."""
    maj = row_name.endswith(MAJ_SUFFIX)
    model = row_name[: -len(MAJ_SUFFIX)] if maj else row_name
    key = "maj_outcomes" if maj else "outcomes"
    for row in result["evals"]:
        if row["model"] == model:
            if not row.get(key):
                what = "maj@k outcomes (a run from before they were kept, or no maj_k)" if maj \
                    else "per-problem outcomes"
                raise DataError(f"{name}: row '{model}' has no {what} to pair")
            outcomes = row[key]
            if not isinstance(outcomes, Mapping) or not all(
                    isinstance(v, bool) for v in outcomes.values()):
                raise DataError(f"{name}: row '{model}' {key}: expected an object of problem id "
                                "-> true/false")
            return outcomes
    known = ", ".join(r["model"] for r in result["evals"])
    raise DataError(f"{name}: no row '{model}' (rows: {known})")


def paired_outcomes(runs: Sequence[tuple[str, Result]], a: str, b: str
                    ) -> tuple[list[str], list[tuple[list[bool], list[bool]]]]:
    """The problems every run graded both ``a`` and ``b`` on (sorted ids), and per run the
    outcomes of ``a`` and ``b`` on them. Runs are ``(name, result)``; a missing row is a
    DataError naming the run."""
    outs = [(_outcomes(name, r, a), _outcomes(name, r, b)) for name, r in runs]
    common = set.intersection(*(set(oa) & set(ob) for oa, ob in outs))
    if not common:
        raise DataError(f"{a} vs {b}: no problem was graded by every run (do the runs share "
                        "their test set?)")
    ids = sorted(common)
    return ids, [([bool(oa[p]) for p in ids], [bool(ob[p]) for p in ids]) for oa, ob in outs]


def replicates_table(runs: Sequence[tuple[str, Result]],
                     pairs: Sequence[tuple[str, str]] | None = None) -> str:
    """Markdown: per comparison ``b − a``, each run's paired difference and CI, then the mean
    over runs with its training-and-problems interval. ``pairs`` defaults to the first run's
    report comparisons. Needs 2+ runs of one method."""
    if len(runs) < 2:
        raise DataError(f"{len(runs)} run(s): comparing replicates needs at least 2 run dirs")
    methods = {str(r.get("method")) for _, r in runs}
    if len(methods) != 1:
        raise DataError("the runs are of different methods ("
                        + ", ".join(f"{name}: {r.get('method')}" for name, r in runs) + ")")
    pairs = list(pairs) if pairs else default_pairs(runs[0][1])
    if not pairs:
        raise DataError(f"{runs[0][0]}: no two rows with per-problem outcomes to compare")
    lines = ["| comparison | run | difference, points [95% CI] | problems |", "|---|---|---|---|"]
    for a, b in pairs:
        ids, outcomes = paired_outcomes(runs, a, b)
        for (name, _), (oa, ob) in zip(runs, outcomes):
            lines.append(f"| {b} − {a} | {name} | {paired_bootstrap(oa, ob).cell()} | {len(ids)} |")
        rep = replicated_diff(outcomes)
        shown = "shown" if rep.significant and rep.diff > 0 else (
            "reversed" if rep.significant else "not shown")
        lines.append(f"| **{b} − {a}** | **mean of {len(runs)}** | **{rep.cell()}** "
                     f"(t, {rep.df} df; {shown}) | {len(ids)} |")
    return "\n".join([
        f"Replicates of {methods.pop()}: each run's paired bootstrap covers its test problems; "
        "the mean's interval covers training noise (how the runs differ) and the problems.", "",
        *lines])
