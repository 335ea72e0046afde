"""One `raysys demo --recipe all --quick` run shared by the end-to-end modules: the three quick
recipes one after another, the strong/actor tiny model pre-trained once for two of them.

The run lives in ``tests/multinode/reference.py``, so that the multi-node tests (which compare
their tables with it) and these share one run per session.
"""

from __future__ import annotations

import pytest

from multinode.reference import QuickAll, quick_all_once

__all__ = ["QuickAll", "quick_all"]


@pytest.fixture(scope="session")
def quick_all(tmp_path_factory: pytest.TempPathFactory) -> QuickAll:
    """One quick demo of every recipe, run as a user runs it (no console settings changed)."""
    return quick_all_once(tmp_path_factory)
