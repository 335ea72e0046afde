"""One `raysys demo --recipe all --quick` run shared by the end-to-end modules: the three quick
recipes one after another, the strong/actor tiny model pre-trained once for two of them."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest


class QuickAll(NamedTuple):
    """The parent run dir (one run dir per recipe under it) and what the command printed."""

    parent: Path
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def quick_all(tmp_path_factory: pytest.TempPathFactory) -> QuickAll:
    """One quick demo of every recipe, run as a user runs it (no console settings changed)."""
    from test_w2s_resume import _run

    parent = tmp_path_factory.mktemp("demo_all") / "runs"
    proc = _run(["demo", "--recipe", "all", "--quick", "--run-dir", str(parent)], timeout=1800)
    return QuickAll(parent, proc.stdout, proc.stderr)
