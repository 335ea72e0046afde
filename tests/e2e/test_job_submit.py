"""`ray job submit` of the quick demo to a local head started with token authentication on.

The head is started with `ray start --head --block` in its own process group so that stopping
it tears down exactly the cluster this test started (a plain `ray stop` would kill every Ray
instance on the machine, including other tests'). Starting it, and submitting a job, are helpers
shared with the multi-node tests (tests/multinode/cluster.py).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from multinode.cluster import RayHead, ray_cli, run_job, start_head

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def token_auth_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    """A local Ray head with token auth, dashboard on 127.0.0.1; yields a :class:`RayHead`.
    One for the module: starting and stopping a head costs ~40 s."""
    head = start_head(tmp_path_factory.mktemp("ray_head"), num_cpus=2,
                      object_store_memory=400_000_000)
    try:
        yield head
    finally:
        head.stop()


def test_submitting_without_the_token_is_refused(token_auth_head: RayHead) -> None:
    env = token_auth_head.env
    no_token = {k: v for k, v in env.items() if k not in ("RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")}
    no_token["HOME"] = tempfile.mkdtemp()           # no ~/.ray/auth_token to fall back on
    r = ray_cli(no_token, "job", "list", "--address", token_auth_head.url)
    assert r.returncode != 0
    assert ray_cli(env, "job", "list", "--address", token_auth_head.url).returncode == 0


def test_quick_demo_runs_as_a_ray_job(token_auth_head: RayHead, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # the shortest quick demo (rft, ~1.5 min on an idle 2-core box; w2s's took 4.4 min in a CI
    # run): every recipe's quick demo runs in tests/e2e/test_new_recipes.py, this checks the job
    job = run_job(token_auth_head, ["python", "jobs/demo.py", "--recipe", "rft", "--quick",
                                    "--run-dir", str(run_dir)], timeout_s=900)
    assert job.succeeded, job.explain(token_auth_head)
    state = json.loads((run_dir / "state.json").read_text())
    assert state["stages"] and all(s["status"] == "complete" for s in state["stages"].values())
    report = (run_dir / "report.md").read_text()
    assert report.startswith("# Rejection-sampling fine-tuning") and "rft_iter1" in report
    # The config keeps role groups alive through training (split) on 8 logical CPUs; this head
    # has 2, so the live sampler group (2 CPUs) made room for each training stage instead of
    # leaving it to wait for CPUs it held.
    driver_log = (run_dir / "logs" / "driver.log").read_text()
    assert "cluster.placement split: a training stage needs 1 CPU, 1 CPU short" in driver_log
