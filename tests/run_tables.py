"""Reading a finished run dir in tests: its sealed stages' rows and its report's sections.
Shared by the in-process recipe tests and the end-to-end ones (``tests/`` is on the import path
through its conftest)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq


def stage_tables(run_dir: Path) -> dict[str, list[str]]:
    """Every sealed data stage's rows (order-insensitive, as JSON strings), by stage key."""
    out = {}
    for manifest in sorted(run_dir.glob("iter_*/*/_MANIFEST.json")):
        rows = [r for part in sorted(manifest.parent.glob("*.parquet"))
                for r in pq.read_table(part).to_pylist()]
        out[str(manifest.parent.relative_to(run_dir))] = sorted(
            json.dumps(r, sort_keys=True, default=str) for r in rows)
    return out


def report_section(report: str, head: str) -> str:
    """The text of the report's ``## head`` section, up to the next section."""
    return report.split(f"## {head}", 1)[1].split("\n## ", 1)[0]


def assert_streamed_iteration_equal(barrier_dir: Path, streamed_dir: Path,
                                    streamed: tuple[str, ...]) -> dict[str, list[str]]:
    """A critique iteration streamed (``loop.stream``) wrote what the barrier one did: every
    ``streamed`` stage marked so, the same samples and critiques, the same refinements per
    (problem, sample, refinement, critique). Returns the streamed run's tables."""
    ref, got = stage_tables(barrier_dir), stage_tables(streamed_dir)
    for name in streamed:
        manifest = json.loads((streamed_dir / "iter_1" / name / "_MANIFEST.json").read_text())
        assert manifest["metrics"]["streamed"] is True, name
    assert got["iter_1/critique_samples"] == ref["iter_1/critique_samples"]
    assert got["iter_1/critiques"] == ref["iter_1/critiques"]

    def answered(rows: list[str]) -> list[tuple]:
        return sorted((r["problem_id"], r["sample_idx"], r["refine_idx"], r["critique"])
                      for r in map(json.loads, rows))
    assert answered(got["iter_1/refinements"]) == answered(ref["iter_1/refinements"])
    return got
