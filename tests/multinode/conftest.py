"""Fixtures of the multi-node tests: one no-shared-storage cluster per module, and the
single-node quick demos they compare with (shared with tests/e2e, see reference.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from multinode.cluster import NoSharedFsCluster, mount_namespace_unsupported
from multinode.reference import QuickAll, quick_all_once


@pytest.fixture(scope="session")
def quick_all(tmp_path_factory: pytest.TempPathFactory) -> QuickAll:
    """The single-node `raysys demo --recipe all --quick` (one run per session)."""
    return quick_all_once(tmp_path_factory)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NoSharedFsCluster]:
    """A head and two worker nodes (training, roles) whose run storage is private; one per
    module: starting it costs ~1 min, stopping it ~30 s on a 2-core machine."""
    reason = mount_namespace_unsupported()
    if reason:
        pytest.skip(f"worker nodes with private storage need mount namespaces: {reason}")
    c = NoSharedFsCluster(tmp_path_factory.mktemp("multinode"))
    try:
        c.start()
        yield c
    finally:
        c.stop()
