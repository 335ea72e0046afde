"""The single-node quick demos that end-to-end and multi-node tests compare with, run once.

`raysys demo --recipe all --quick` (the three quick recipes one after another, the strong/actor
tiny model pre-trained once for two of them) on a private local Ray instance. Both
``tests/e2e/conftest.py`` and ``tests/multinode/conftest.py`` define a session fixture
``quick_all`` that returns :func:`quick_all_once`; a fixture is visible only below its conftest,
so the run itself is cached here, once per process: a session running both suites (CI's
``make test-slow``) pays for it once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from multinode.cluster import local_env, run_raysys


class QuickAll(NamedTuple):
    """The parent run dir (one run dir per recipe under it) and what the command printed."""

    parent: Path
    stdout: str
    stderr: str


_quick_all: QuickAll | None = None


def quick_all_once(tmp_path_factory: pytest.TempPathFactory) -> QuickAll:
    """One quick demo of every recipe, run as a user runs it (no console settings changed)."""
    global _quick_all
    if _quick_all is None:
        parent = tmp_path_factory.mktemp("demo_all") / "runs"
        proc = run_raysys(["demo", "--recipe", "all", "--quick", "--run-dir", str(parent)],
                          local_env(), timeout=1800)
        assert proc.returncode == 0, proc.stderr[-3000:]
        _quick_all = QuickAll(parent, proc.stdout, proc.stderr)
    return _quick_all


# A report row's table columns in result.json (its per-problem outcomes are left out).
TABLE_COLUMNS = ("model", "correct", "n", "maj_k", "maj_acc", "pass_acc")


def accuracy_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The run's accuracy table as ``result.json`` keeps it: one dict per row, in order."""
    evals = json.loads((run_dir / "result.json").read_text())["evals"]
    return [{k: row.get(k) for k in TABLE_COLUMNS} for row in evals]
