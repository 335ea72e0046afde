"""raysys on a cluster whose nodes share no filesystem (tests/multinode/cluster.py).

Every test before this module ran all Ray nodes on one machine sharing one disk, so a path
written on one node and read on another always worked. Here the driver (on the head, the host's
mount namespace) and the two worker nodes each have their own run storage: training is forced
onto worker 0, role replicas (sampler, critic, decoder, explorer) run on worker 1, and models
and artifacts must travel through Ray. Each quick demo must finish with the tables of the
single-node quick demo (greedy decoding, fixed seeds), also after losing a node mid-run, and
as a `ray job submit` job.

One cluster for the module (~1 min to start, ~30 s to stop); the single-node reference runs
once per session (tests/multinode/reference.py, shared with tests/e2e), and is asked for only
after a multi-node run finished, so a broken run fails in minutes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from multinode.cluster import NoSharedFsCluster, run_job, tail
from multinode.reference import QuickAll, accuracy_rows

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
# Role actors' process titles start with "ray::" too; these are Ray's own per-node processes.
RAY_SYSTEM_TITLES = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _state(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"stages": {}}


def _explain(proc: subprocess.CompletedProcess | None, run_dir: Path,
             cluster: NoSharedFsCluster, output: str | None = None) -> str:
    """What a failed driver printed, its run's driver.log, and the cluster's logs."""
    out = output if output is not None else (proc.stdout[-2000:] + proc.stderr[-3000:] if proc else "")
    return (f"--- driver output ---\n{out}\n--- {run_dir}/logs/driver.log ---\n"
            f"{tail(run_dir / 'logs' / 'driver.log', 4000)}\n{cluster.diagnostics()}")


def _generation_nodes(run_dir: Path) -> dict[str, list[str]]:
    """Stage -> the node ids that served it, from each generation stage's manifest metrics."""
    out = {}
    for manifest in run_dir.rglob("_MANIFEST.json"):
        nodes = (json.loads(manifest.read_text()).get("metrics") or {}).get("nodes")
        if nodes:
            out[str(manifest.parent.relative_to(run_dir))] = nodes
    return out


def _assert_same_tables(run_dir: Path, request: pytest.FixtureRequest, recipe: str) -> None:
    """The run's accuracy rows equal the single-node quick demo's (fetched only now: the
    reference costs ~10 min when no e2e test ran it earlier in the session)."""
    reference: QuickAll = request.getfixturevalue("quick_all")
    assert accuracy_rows(run_dir) == accuracy_rows(reference.parent / recipe)


# ------------------------------------------------------------------------------------------
# The cluster itself
# ------------------------------------------------------------------------------------------


def test_worker_nodes_share_no_run_storage(cluster: NoSharedFsCluster) -> None:
    """A file the driver writes under the private root is invisible to each worker node, a
    worker's is invisible to the driver and the other worker; the head shares the host's."""
    proc = subprocess.run([sys.executable, str(HERE / "fs_probe.py"), cluster.address,
                           str(cluster.root / "probe"), str(len(cluster.workers))],
                          env=cluster.driver_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{proc.stderr[-3000:]}\n{cluster.diagnostics()}"
    probe = json.loads(proc.stdout.strip().splitlines()[-1])
    labels = probe["labels"]
    assert set(labels) == {"head", "worker0", "worker1"}
    assert labels["worker0"] == cluster.node_id(0) and labels["worker1"] == cluster.node_id(1)
    assert probe["ran_on"] == labels                      # each look ran where it was pinned
    assert probe["driver_node"] == labels["head"]         # Ray attaches a driver to the head
    seen = probe["seen"]
    assert seen["head"] == ["driver.txt", "head.txt"]     # the host's mount namespace
    assert probe["host_sees"] == ["driver.txt", "head.txt"]
    assert seen["worker0"] == ["worker0.txt"]             # its own file, nobody else's
    assert seen["worker1"] == ["worker1.txt"]
    res = probe["resources"]
    assert (res["CPU"], res["raysys_train"], res["raysys_roles"]) == (8, 1, 1)
    # Where unpinned zero-CPU work (raysys's `fit` task) runs: the driver's node, the head.
    assert probe["zero_cpu_task_node"] == labels["head"]


# ------------------------------------------------------------------------------------------
# The quick demos: training on worker 0, roles on worker 1
# ------------------------------------------------------------------------------------------


@pytest.mark.timeout(3600)
# CI (45 minutes for everything) runs the llm2 demo: every artifact path (a model trained on
# worker 0 and served on worker 1, a verifier, guided decoding's decoder role, the explorer).
# w2s and critique passed here with identical tables (benchmarks/RESULTS.md) but cost 10-15
# minutes each on this cluster: `make test-extended`.
@pytest.mark.parametrize("recipe", ["llm2", pytest.param("w2s", marks=pytest.mark.extended),
                                    pytest.param("critique", marks=pytest.mark.extended)])
def test_quick_demo_without_a_shared_filesystem(cluster: NoSharedFsCluster, recipe: str,
                                                request: pytest.FixtureRequest) -> None:
    run_dir = cluster.root / f"demo-{recipe}"
    proc = cluster.run_raysys(cluster.demo_args(recipe, run_dir), timeout=1500)
    assert proc.returncode == 0, _explain(proc, run_dir, cluster)
    state = _state(run_dir)
    assert state["stages"] and all(e["status"] == "complete" for e in state["stages"].values())
    # every generation stage was served by the roles node only
    roles_node = cluster.node_id(1)
    served = _generation_nodes(run_dir)
    assert served and all(nodes == [roles_node] for nodes in served.values()), served
    _assert_same_tables(run_dir, request, recipe)


# ------------------------------------------------------------------------------------------
# A node lost mid-run
# ------------------------------------------------------------------------------------------


def _is_model_stage(key: str) -> bool:
    return key.startswith("models/")


def _role_call(title: str) -> bool:
    """A role actor in a call: Ray titles a worker process ``ray::<Actor>.<method>`` while it
    runs one (``ray::SamplerActor.call``), ``ray::<Actor>`` while it waits."""
    name = title.split()[0] if title else ""
    return name.startswith("ray::") and not name.startswith(RAY_SYSTEM_TITLES) and "." in name


# which -> (worker index, the running stage to kill it in, a process that shows the node is
# doing that stage's work)
KILL_WHEN = {
    "train": (0, _is_model_stage, lambda title: "RayTrainWorker" in title),
    "roles": (1, lambda key: not _is_model_stage(key), _role_call),
}


@pytest.mark.timeout(3600)
# The kill and job tests run in `make test-extended` until a run shows them passing within
# CI's budget.
@pytest.mark.parametrize("which", [pytest.param("train", marks=pytest.mark.extended),
                                   pytest.param("roles", marks=pytest.mark.extended)])
def test_lost_node_mid_stage_then_rerun(cluster: NoSharedFsCluster, which: str, tmp_path: Path,
                                        request: pytest.FixtureRequest) -> None:
    """Worker ``which`` dies (SIGKILL of every process it runs: raylet, object store, worker
    processes; its private storage goes with them) while it does a stage's work, and a fresh
    node takes its place at once. The run heals, or stops with one error line that says
    re-running resumes; then a re-run finishes with the single-node tables."""
    index, stage_kind, busy = KILL_WHEN[which]
    run_dir = cluster.root / f"kill-{which}"
    args = cluster.demo_args("llm2", run_dir)
    log = tmp_path / "driver.out"
    driver = cluster.popen_raysys(args, log)
    killed_in = None
    try:
        deadline = time.monotonic() + 900
        while killed_in is None:
            running = [k for k, e in _state(run_dir)["stages"].items()
                       if e.get("status") == "running" and stage_kind(k)]
            if running and any(busy(title) for _, title in cluster.processes(index)):
                cluster.kill_node(index)
                killed_in = running[0]
                break
            if driver.poll() is not None:
                pytest.fail(f"the run ended ({driver.returncode}) before worker {index} was "
                            f"busy:\n{_explain(None, run_dir, cluster, tail(log, 5000))}")
            if time.monotonic() > deadline:
                pytest.fail(f"worker {index} was never busy in a stage:\n"
                            f"{_explain(None, run_dir, cluster, tail(log, 5000))}")
            time.sleep(0.5)
        cluster.start_worker(index)           # a replacement node: new id, empty storage
        try:
            rc = driver.wait(timeout=1200)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the run neither healed nor stopped after losing worker {index} in "
                        f"{killed_in}:\n{_explain(None, run_dir, cluster, tail(log, 5000))}")
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=60)
        if not cluster.workers[index].alive:
            cluster.start_worker(index)       # the next test gets a whole cluster
    output = log.read_text(errors="replace")
    if rc != 0:
        # one line, no traceback, and it tells the user what to do
        lines = [ln for ln in output.splitlines() if ln.strip()]
        assert "Traceback" not in output, _explain(None, run_dir, cluster, output[-5000:])
        assert lines and lines[-1].startswith("error: "), _explain(None, run_dir, cluster, output[-5000:])
        assert "resum" in lines[-1].lower(), lines[-1]
        proc = cluster.run_raysys(args, timeout=1500)
        assert proc.returncode == 0, _explain(proc, run_dir, cluster)
    assert all(e["status"] == "complete" for e in _state(run_dir)["stages"].values())
    _assert_same_tables(run_dir, request, "llm2")


# ------------------------------------------------------------------------------------------
# ray job submit
# ------------------------------------------------------------------------------------------


@pytest.mark.extended
@pytest.mark.timeout(3600)
def test_llm2_quick_demo_as_a_ray_job(cluster: NoSharedFsCluster,
                                      request: pytest.FixtureRequest) -> None:
    """The job's driver runs on the head (Ray's default for an entrypoint without resources)
    and joins through RAY_ADDRESS, as on a real cluster; the run dir is the head's."""
    assert cluster.head is not None
    run_dir = cluster.root / "job-llm2"
    sets = [a for s in cluster.demo_sets("llm2", address=False) for a in ("--set", s)]
    job = run_job(cluster.head, ["python", "jobs/demo.py", "--recipe", "llm2", "--quick",
                                 "--run-dir", str(run_dir), *sets], timeout_s=1500)
    assert job.succeeded, f"{job.explain(cluster.head)}\n{_explain(None, run_dir, cluster, '')}"
    assert all(e["status"] == "complete" for e in _state(run_dir)["stages"].values())
    _assert_same_tables(run_dir, request, "llm2")
