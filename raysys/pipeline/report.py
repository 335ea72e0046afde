"""Human-readable views of a run: ``raysys status`` text and ``report.md``.

Pure functions over ``state.json`` data and evaluation rows, so they test without a run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raysys.data.io import atomic_write_text

PHASES = ("sampling", "grading", "training", "data")


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.1f}s" if s < 120 else f"{s / 60:.1f}m"


def _fmt_metrics(metrics: dict[str, Any], limit: int = 4) -> str:
    items = []
    for k, v in metrics.items():
        if isinstance(v, (dict, list)):
            continue
        text = f"{v:.3g}" if isinstance(v, float) else str(v).replace("\n", " ")
        items.append(f"{k}={text[:40]}")
    return " ".join(items[:limit]) + (" …" if len(items) > limit else "")


def driver_alive(run: dict[str, Any]) -> bool | None:
    """Whether the driver of a run entry is still running: None when unknown (another host, an
    older state file without a pid)."""
    import os
    import socket

    if run.get("end") is not None:
        return False
    if not run.get("pid") or run.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(run["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stage_status(entry: dict[str, Any], live: bool | None) -> str:
    """A stage's status for people: ``running`` only while its driver lives (a killed run's
    stage is ``interrupted``: re-running resumes it)."""
    status = str(entry.get("status", "?"))
    return "interrupted" if status == "running" and live is False else status


def format_status(state: dict[str, Any]) -> str:
    """One line per stage, in run order: key, status (running / complete / failed /
    interrupted), rows, seconds, a few scalar metrics; then whether the run is live."""
    runs = state.get("runs", [])
    live = driver_alive(runs[-1]) if runs else False
    rows = [("stage", "status", "rows", "time", "metrics")]
    for key, e in state.get("stages", {}).items():
        rows.append((key, stage_status(e, live),
                     "-" if e.get("rows") is None else str(e["rows"]),
                     _fmt_seconds(e.get("seconds")), _fmt_metrics(e.get("metrics") or {})))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    where = {True: "live", False: "stopped", None: "state unknown (another host?)"}[live]
    if runs and runs[-1].get("end") is None and live is False:
        where = "interrupted (its driver is gone; run the same command again to resume)"
    lines.append(f"{len(runs)} invocation(s); last started {runs[-1]['start'] if runs else '-'}; "
                 f"{where}")
    return "\n".join(line.rstrip() for line in lines)


def phase_timings(state: dict[str, Any]) -> dict[str, float]:
    """Seconds per phase over all stages; ``orchestration`` = driver wall time not in a stage.

    A stage's sampling time includes grading unless its metrics split them (``grading_s``),
    in which case grading is moved to its own phase.
    """
    out = {p: 0.0 for p in PHASES}
    for e in state.get("stages", {}).values():
        secs = e.get("seconds")
        if secs is None:
            continue
        phase = e.get("phase") or "data"
        grading = float((e.get("metrics") or {}).get("grading_s") or 0.0)
        if phase == "sampling" and 0 < grading <= secs:
            out["grading"] += grading
            secs -= grading
        out[phase] = out.get(phase, 0.0) + secs
    wall = sum(r.get("seconds") or 0.0 for r in state.get("runs", []))
    out["orchestration"] = max(0.0, wall - sum(out.values()))
    out["total"] = wall
    return {k: round(v, 1) for k, v in out.items()}


def pct(v: float | None) -> str:
    """A share as a percentage with one decimal (``0.5 -> "50.0%"``), ``n/a`` for None."""
    return "n/a" if v is None else f"{100 * v:.1f}%"


def accuracy_table(evals: list[dict[str, Any]]) -> str:
    """Markdown table from rows ``{model, correct, n, [maj_k, maj_acc]}`` with Wilson 95% CIs."""
    from raysys.grading.metrics import wilson_interval

    has_maj = any(r.get("maj_acc") is not None for r in evals)
    head = "| model | greedy acc | 95% CI | n |" + (" maj@k |" if has_maj else "")
    sep = "|---|---|---|---|" + ("---|" if has_maj else "")
    lines = [head, sep]
    for r in evals:
        n, c = int(r["n"]), int(r["correct"])
        lo, hi = wilson_interval(c, n) if n else (0.0, 0.0)
        acc = c / n if n else 0.0
        line = f"| {r['model']} | {100 * acc:.1f}% | [{100 * lo:.1f}, {100 * hi:.1f}] | {n} |"
        if has_maj:
            maj = r.get("maj_acc")
            cell = "-" if maj is None else f"{100 * maj:.1f}% (k={r.get('maj_k')})"
            line += f" {cell} |"
        lines.append(line)
    return "\n".join(lines)


def phase_throughput(state: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per phase: seconds, share of the run's time (percent; shares sum to 100), and tokens/s
    and samples/s per wall second of that phase (startup included, so below engine speed).

    Sampling counts ``tokens_generated`` and ``samples`` (or ``rows_generated``) of its stages;
    training counts ``tokens_per_s * elapsed_s`` and ``samples_per_s * elapsed_s`` of each fit;
    grading (when split out) counts the graded samples. Other phases have no throughput.
    """
    times = phase_timings(state)
    tokens = {"sampling": 0.0, "training": 0.0}
    samples = {"sampling": 0.0, "training": 0.0, "grading": 0.0}
    for e in state.get("stages", {}).values():
        m, phase = e.get("metrics") or {}, e.get("phase") or "data"
        if e.get("seconds") is None:
            continue
        if phase == "sampling":
            tokens["sampling"] += float(m.get("tokens_generated") or 0)
            n = float(m.get("samples") or m.get("rows_generated") or 0)
            samples["sampling"] += n
            if m.get("grading_s"):
                samples["grading"] += n
        elif phase == "training":
            elapsed = float(m.get("elapsed_s") or 0)
            tokens["training"] += float(m.get("tokens_per_s") or 0) * elapsed
            samples["training"] += float(m.get("samples_per_s") or 0) * elapsed
    spent = sum(v for k, v in times.items() if k != "total")
    out: dict[str, dict[str, float | None]] = {}
    for phase, secs in times.items():
        if phase == "total":
            continue
        tok, smp = tokens.get(phase), samples.get(phase)
        out[phase] = {"seconds": secs, "share": 100 * secs / spent if spent else 0.0,
                      "tokens_per_s": tok / secs if tok and secs else None,
                      "samples_per_s": smp / secs if smp and secs else None}
    return out


def compute_shares(state: dict[str, Any]) -> dict[str, float]:
    """Where the run's wall time went by what the machine did, in seconds and percent of it.

    ``generation``: engine time of sampling stages (``engine_s``); ``training_steps``: the
    trainers' step loops (``elapsed_s``); ``startup``: the rest of those stages (sampler-group
    start, weight loads and batching around the engine; Ray Train start, DeepSpeed init and the
    model save around the steps); ``idle``: wall time with no model computing (start-up,
    grading outside the engine, data stages, orchestration).
    """
    gen = steps = startup = 0.0
    for e in state.get("stages", {}).values():
        secs, m, phase = e.get("seconds"), e.get("metrics") or {}, e.get("phase")
        if secs is None:
            continue
        if phase == "sampling" and m.get("engine_s") is not None:
            work = min(float(m["engine_s"]), secs)
            gen += work
            startup += secs - work - float(m.get("grading_s") or 0.0)
        elif phase == "training" and m.get("elapsed_s") is not None:
            work = min(float(m["elapsed_s"]), secs)
            steps += work
            startup += secs - work
    # a run whose killed invocations left no wall time still spent its stages' seconds
    stage_sum = sum(e.get("seconds") or 0.0 for e in state.get("stages", {}).values())
    wall = max(float(phase_timings(state).get("total") or 0.0), stage_sum)
    out = {"generation_s": gen, "training_steps_s": steps, "startup_s": max(startup, 0.0),
           "wall_s": wall}
    for k in ("generation", "training_steps", "startup"):
        out[f"{k}_share"] = 100 * out[f"{k}_s"] / wall if wall else 0.0
    out["idle_share"] = 100 - out["generation_share"] - out["training_steps_share"] if wall else 0.0
    return {k: round(v, 1) for k, v in out.items()}


def shares_line(state: dict[str, Any]) -> str:
    """One sentence of :func:`compute_shares` for the report."""
    c = compute_shares(state)
    return (f"Model compute: generation {c['generation_s']:.1f} s ({c['generation_share']:.1f}%), "
            f"training steps {c['training_steps_s']:.1f} s ({c['training_steps_share']:.1f}%); "
            f"start-up of sampler groups and trainers {c['startup_s']:.1f} s "
            f"({c['startup_share']:.1f}%); idle (no model computing) {c['idle_share']:.1f}%.")


def phase_table(state: dict[str, Any]) -> str:
    """Markdown table: seconds, share and throughput per phase, then the total."""
    def rate(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    lines = ["| phase | seconds | share | tokens/s | samples/s |", "|---|---|---|---|---|"]
    for phase, r in phase_throughput(state).items():
        if phase == "grading" and not r["seconds"]:
            continue
        lines.append(f"| {phase} | {r['seconds']:.1f} | {r['share']:.1f}% | "
                     f"{rate(r['tokens_per_s'])} | {rate(r['samples_per_s'])} |")
    lines.append(f"| total | {phase_timings(state).get('total', 0.0):.1f} | 100% | | |")
    return "\n".join(lines)


def render_report(title: str, evals: list[dict[str, Any]], state: dict[str, Any],
                  sections: dict[str, str] | None = None, *, figures: list[str] | None = None,
                  differences: str | None = None) -> str:
    """The ``report.md`` text: accuracy table, paired differences (when given), figures (paths
    relative to the run dir), extra sections, timings and throughput per phase."""
    parts = [f"# {title}", "", "## Test accuracy", "", accuracy_table(evals), ""]
    if differences:
        parts += [differences, ""]
    for fig in figures or []:
        parts += [f"![{Path(fig).stem}]({fig})", ""]
    for head, body in (sections or {}).items():
        parts += [f"## {head}", "", body, ""]
    parts += ["## Timings", "", phase_table(state), "", shares_line(state), ""]
    if not phase_timings(state).get("grading"):
        parts.append("Grading runs inside the sampler actors; its time is part of sampling.")
    parts += ["Throughput is per wall second of the phase (actor and trainer start-up included).",
              "", "Per-stage details: `state.json`; one line per stage: `metrics.jsonl`.", ""]
    return "\n".join(parts)


def write_report(run_dir: str | Path, text: str) -> Path:
    out = Path(run_dir) / "report.md"
    atomic_write_text(out, text)
    return out


def read_metrics_lines(run_dir: str | Path) -> list[dict[str, Any]]:
    p = Path(run_dir) / "metrics.jsonl"
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
