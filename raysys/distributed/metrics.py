"""Evaluation metrics over a ``samples`` table: accuracy, maj@k, pass@k. Pure functions."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from raysys.grading.metrics import majority_vote, pass_at_k
from raysys.pipeline.report import pct


def default_k_list(n: int) -> list[int]:
    """1, the powers of two below ``n``, and ``n`` itself: ``8 -> [1, 2, 4, 8]``."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def _per_problem(samples: pa.Table) -> dict[str, list[dict[str, Any]]]:
    """Rows grouped by problem (first-seen order), each group sorted by ``sample_idx``."""
    groups: dict[str, list[dict[str, Any]]] = {}
    cols = samples.select(["problem_id", "sample_idx", "pred", "correct"]).to_pylist()
    for row in cols:
        groups.setdefault(row["problem_id"], []).append(row)
    for rows in groups.values():
        rows.sort(key=lambda r: r["sample_idx"])
    return groups


def majority_correct(rows: list[dict[str, Any]]) -> bool:
    """Whether the majority answer of ``rows`` is correct.

    The vote groups equivalent answers (:func:`raysys.grading.metrics.majority_vote`, the one
    maj@k of the tree); each row's ``correct`` was graded against the gold answer, so the
    winning group is correct when a row voting for it (an answer equivalent to the winner) was.
    """
    from raysys.grading import is_equiv

    winner = majority_vote([r["pred"] or "" for r in rows])
    if not winner.strip():
        return False
    return any(bool(r["correct"]) for r in rows
               if (r["pred"] or "") == winner or is_equiv(r["pred"] or "", winner))


def maj_outcomes(samples: pa.Table, k: int) -> dict[str, bool]:
    """problem_id -> whether the maj@k vote of a graded ``samples`` table is correct (problems
    with an ungraded sample left out): paired comparisons of maj@k."""
    return {pid: majority_correct(rows[:k]) for pid, rows in _per_problem(samples).items()
            if all(r["correct"] is not None for r in rows)}


def summarize_samples(samples: pa.Table, k_list: list[int] | tuple[int, ...] = ()) -> dict[str, Any]:
    """Metrics of a graded ``samples`` table (problems without a gold answer are left out).

    ``accuracy``: the first sample (``sample_idx == 0``; greedy when temperature is 0).
    ``maj@k``: majority vote over the first ``k`` samples. ``pass@k``: the unbiased estimator
    over all ``n`` samples of a problem (``1 - C(n-c, k) / C(n, k)``). Raises ``ValueError``
    when some ``k`` exceeds the samples a problem has.
    """
    groups = _per_problem(samples)
    graded = {pid: rows for pid, rows in groups.items()
              if all(r["correct"] is not None for r in rows)}
    n_min = min((len(rows) for rows in groups.values()), default=0)
    n_max = max((len(rows) for rows in groups.values()), default=0)
    out: dict[str, Any] = {"problems": len(groups), "graded_problems": len(graded),
                           "samples": samples.num_rows, "n": n_min}
    if n_min != n_max:
        out["n_max"] = n_max
    for k in k_list:
        if k < 1 or k > n_min:
            raise ValueError(f"k={k}: expected 1 <= k <= n={n_min} (samples per problem)")
    if not graded:
        out["accuracy"] = None
        return out
    m = len(graded)
    out["accuracy"] = sum(bool(rows[0]["correct"]) for rows in graded.values()) / m
    out["correct_first"] = sum(bool(rows[0]["correct"]) for rows in graded.values())
    for k in k_list:
        out[f"maj@{k}"] = sum(majority_correct(rows[:k]) for rows in graded.values()) / m
        out[f"pass@{k}"] = sum(pass_at_k(len(rows), sum(bool(r["correct"]) for r in rows), k)
                               for rows in graded.values()) / m
    return out


def metrics_markdown(metrics: dict[str, Any], title: str = "Evaluation") -> str:
    """A short markdown table of the headline numbers (percentages) and timings."""
    lines = [f"# {title}", "", "| metric | value |", "|---|---|"]
    lines.append(f"| problems | {metrics.get('problems', 0)} |")
    lines.append(f"| samples per problem | {metrics.get('n', 0)} |")
    lines.append(f"| accuracy (first sample) | {pct(metrics.get('accuracy'))} |")
    for key in sorted((k for k in metrics if k.startswith(("maj@", "pass@"))),
                      key=lambda k: (k.split("@")[0], int(k.split("@")[1]))):
        lines.append(f"| {key} | {pct(metrics[key])} |")
    if "tokens_generated" in metrics:
        lines.append(f"| tokens generated | {metrics['tokens_generated']} |")
        lines.append(f"| tokens/s (wall, incl. engine start) | {metrics.get('tokens_per_s', 0)} |")
        if "tokens_per_engine_s" in metrics:
            lines.append(f"| tokens/s (engine time, summed over replicas) | {metrics['tokens_per_engine_s']} |")
    for phase, secs in (metrics.get("wall_s") or {}).items():
        lines.append(f"| wall time: {phase} | {secs:.2f} s |")
    return "\n".join(lines) + "\n"
