"""One `raysys demo --recipe all --quick` run shared by the end-to-end modules: the three quick
recipes one after another, the strong/actor tiny model pre-trained once for two of them."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def quick_all(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(parent run dir, the command's stdout) of one quick demo of every recipe."""
    from test_w2s_resume import _run

    parent = tmp_path_factory.mktemp("demo_all") / "runs"
    proc = _run(["demo", "--recipe", "all", "--quick", "--run-dir", str(parent)], timeout=1800)
    return parent, proc.stdout
