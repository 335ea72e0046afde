"""A training stage whose workers no alive node can hold fails with one StageError (Ray Train
would retry its placement group forever), after one warning naming what is missing."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from raysys.errors import StageError


def test_total_per_node_is_the_alive_nodes_totals(ray_local) -> None:
    from raysys.distributed.roles import total_per_node

    (node,) = total_per_node()
    assert node["CPU"] == 2.0             # the fixture's local instance


def test_infeasible_workers_fail_the_stage_after_the_bound(ray_local, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    import ray

    from raysys.training.trainer import _wait_with_progress

    @ray.remote(num_cpus=0)
    def forever() -> None:
        time.sleep(600)

    ref = forever.remote()
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="raysys.training.trainer"), \
            pytest.raises(StageError, match=r"training 'sft': no alive node could hold a "
                                            r"worker's \{'CPU': 1.0, 'raysys_train': 1.0\}"):
        _wait_with_progress(ref, "sft", tmp_path / "metrics.jsonl", 10, every_s=600, poll_s=0.2,
                            bundles=[{"CPU": 1.0, "raysys_train": 1.0}], infeasible_s=1.0)
    assert time.monotonic() - t0 < 30
    assert [r.message for r in caplog.records if "no alive node can hold" in r.message]


def test_feasible_workers_are_waited_for(ray_local, tmp_path: Path) -> None:
    import ray

    from raysys.training.trainer import _wait_with_progress

    @ray.remote(num_cpus=0)
    def soon() -> int:
        time.sleep(2)
        return 7

    assert _wait_with_progress(soon.remote(), "sft", tmp_path / "m.jsonl", 10, every_s=600,
                               poll_s=0.2, bundles=[{"CPU": 1.0}], infeasible_s=0.5) == 7
