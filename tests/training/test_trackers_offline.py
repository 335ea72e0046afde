"""W&B (offline) and MLflow (file store) trackers, no server: through the real training path
(Ray Train, tiny model) the losses they hold are the ones in rank 0's metrics.jsonl, and a run
never stays RUNNING after its worker crashed (an exception in a step, or a killed worker whose
run the next opening in the same work dir ends)."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raysys.config import from_dict
from raysys.training.config import TrainConfig
from raysys.training.kinds import KINDS, SFT, register_kind
from raysys.training.trackers import MLFLOW_DIR, MLFLOW_WORK_DIR_TAG, open_trackers

from conftest import sft_rows, write_jsonl

# What the trackers (and Ray's integrations) read or set in this process's environment.
TRACKER_ENV = ("WANDB_MODE", "MLFLOW_ALLOW_FILE_STORE", "MLFLOW_TRACKING_URI",
               "MLFLOW_EXPERIMENT_NAME", "WANDB_START_METHOD")


@pytest.fixture(autouse=True)
def tracker_env() -> Iterator[None]:
    """The trackers' defaults (offline, a file store under the work dir), and the environment
    as it was afterwards."""
    saved = {k: os.environ.pop(k, None) for k in TRACKER_ENV}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def mlflow_client(work_dir: Path) -> Any:
    """A client of the file store the MLflow tracker writes under ``work_dir`` by default."""
    mlflow = pytest.importorskip("mlflow")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    return mlflow.tracking.MlflowClient(tracking_uri=(work_dir / MLFLOW_DIR).resolve().as_uri())


def mlflow_runs(work_dir: Path) -> list[Any]:
    """Every MLflow run in the default file store under ``work_dir``, oldest first."""
    client = mlflow_client(work_dir)
    ids = [e.experiment_id for e in client.search_experiments()]
    return sorted(client.search_runs(ids), key=lambda r: r.info.start_time)


def mlflow_history(work_dir: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in mlflow_client(work_dir).get_metric_history(run_id, key)]


def wandb_records(path: Path) -> Iterator[Any]:
    """The records of a W&B offline run file (``run-<id>.wandb``): a 7-byte header (``:W&B``,
    magic, version), then LevelDB-log blocks of 32 KiB whose chunks (crc32 u32, length u16,
    type u8: 1 full, 2 first, 3 middle, 4 last) carry ``Record`` protos."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    i, block, buf = 7, 32768, b""
    while i + 7 <= len(data):
        left = block - i % block
        if left < 7:                      # a block's tail too short for a header: padding
            i += left
            continue
        _, n, kind = struct.unpack("<IHB", data[i:i + 7])
        buf += data[i + 7:i + 7 + n]
        i += 7 + n
        if kind in (1, 4):
            yield Record.FromString(buf)
            buf = b""


def wandb_history(work_dir: Path, key: str) -> tuple[list[tuple[int, float]], int | None]:
    """``(step, value)`` of ``key`` in the one offline W&B run under ``work_dir``, and its exit
    code (None when the run was never finished)."""
    (path,) = (work_dir / "wandb").glob("offline-run-*/run-*.wandb")
    history, exit_code = [], None
    for r in wandb_records(path):
        if r.HasField("history"):
            # a key is in ``key``, or split into ``nested_key`` (as W&B's service writes it)
            row = {it.key or ".".join(it.nested_key): json.loads(it.value_json)
                   for it in r.history.item}
            if key in row:
                history.append((row["_step"], row[key]))
        elif r.HasField("exit"):
            exit_code = r.exit.exit_code
    return history, exit_code


# ------------------------------------------------------------------------------------------
# Fast: the MLflow file store, no Ray
# ------------------------------------------------------------------------------------------


def test_a_training_thread_that_raises_ends_its_mlflow_run_failed(tmp_path: Path) -> None:
    """Ray Train runs the loop in a thread and kills the worker after it raised (no atexit
    handler runs): the run is FAILED as soon as that thread is gone, with what it logged."""
    pytest.importorskip("mlflow")
    cfg = from_dict(TrainConfig, {"trackers": ["mlflow"], "name": "crash"})
    opened: list[Any] = []

    def loop() -> None:
        t = open_trackers(cfg, tmp_path, rank=0)
        opened.append(t)
        t.log(1, {"step": 1, "loss": 2.5})
        (run,) = mlflow_runs(tmp_path)
        assert run.info.status == "RUNNING"
        raise RuntimeError("a step failed")

    def thread_runner() -> None:
        """As Ray Train's ThreadRunner: the loop's exception is kept, the thread ends."""
        with pytest.raises(RuntimeError, match="a step failed"):
            loop()

    worker = threading.Thread(target=thread_runner)
    worker.start()
    worker.join()
    assert opened
    for _ in range(200):                  # the watcher ends it right after the thread
        (run,) = mlflow_runs(tmp_path)
        if run.info.status != "RUNNING":
            break
        threading.Event().wait(0.05)
    assert run.info.status == "FAILED"
    assert mlflow_history(tmp_path, run.info.run_id, "loss") == [(1, 2.5)]
    assert run.data.tags[MLFLOW_WORK_DIR_TAG] == str(tmp_path.resolve())


def test_a_closed_run_is_finished_and_the_watcher_leaves_it(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    cfg = from_dict(TrainConfig, {"trackers": ["mlflow"], "name": "ok"})

    def loop() -> None:
        t = open_trackers(cfg, tmp_path, rank=0)
        t.log(2, {"step": 2, "loss": 0.75, "grad_norm": None})
        t.close()

    worker = threading.Thread(target=loop)
    worker.start()
    worker.join()
    threading.Event().wait(0.5)           # time for a (wrong) watcher to act
    (run,) = mlflow_runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert mlflow_history(tmp_path, run.info.run_id, "loss") == [(2, 0.75)]
    assert run.data.params["name"] == "ok"


def test_a_run_a_killed_worker_left_running_is_failed_by_the_next_open(tmp_path: Path) -> None:
    """A SIGKILLed worker runs no Python: its run (RUNNING, tagged with the work dir) stays so
    until the next worker of the same work dir (Ray Train's restart, a rerun) opens MLflow
    there. Runs of other work dirs are not touched."""
    pytest.importorskip("mlflow")
    client = mlflow_client(tmp_path)
    experiment = client.create_experiment("raysys")
    killed = client.create_run(experiment, tags={MLFLOW_WORK_DIR_TAG: str(tmp_path.resolve())})
    client.log_metric(killed.info.run_id, "loss", 3.0, step=1)
    other = client.create_run(experiment,
                              tags={MLFLOW_WORK_DIR_TAG: str(tmp_path.resolve() / "elsewhere")})

    cfg = from_dict(TrainConfig, {"trackers": ["mlflow"], "name": "again"})
    trackers = open_trackers(cfg, tmp_path, rank=0)
    trackers.log(1, {"step": 1, "loss": 2.0})
    trackers.close()
    status = {r.info.run_id: r.info.status for r in mlflow_runs(tmp_path)}
    assert status.pop(killed.info.run_id) == "FAILED"
    assert status.pop(other.info.run_id) == "RUNNING"
    assert list(status.values()) == ["FINISHED"]


def test_the_driver_fails_the_runs_a_killed_worker_group_left_running(tmp_path: Path) -> None:
    """After a failed fit with no restart left, nothing will open MLflow in the work dir again:
    the driver's ``fail_abandoned_runs`` ends what killed workers left RUNNING."""
    pytest.importorskip("mlflow")
    from raysys.training.trackers import fail_abandoned_runs

    cfg = from_dict(TrainConfig, {"trackers": ["mlflow"], "name": "gone"})
    assert fail_abandoned_runs(cfg, tmp_path) == []             # no experiment yet
    client = mlflow_client(tmp_path)
    experiment = client.create_experiment("raysys")
    tag = {MLFLOW_WORK_DIR_TAG: str(tmp_path.resolve())}
    killed = client.create_run(experiment, tags=tag).info.run_id
    done = client.create_run(experiment, tags=tag).info.run_id
    client.set_terminated(done, "FINISHED")
    assert fail_abandoned_runs(from_dict(TrainConfig, {"trackers": ["tensorboard"]}),
                               tmp_path) == []                  # no mlflow: not looked at
    assert fail_abandoned_runs(cfg, tmp_path) == [killed]
    assert [client.get_run(r).info.status for r in (killed, done)] == ["FAILED", "FINISHED"]


# ------------------------------------------------------------------------------------------
# Slow: the real training path (Ray Train workers, DeepSpeed, the tiny model)
# ------------------------------------------------------------------------------------------

_CALLS = [0]


def _loss_failing_at_step_2(model: Any, batch: dict[str, Any], cfg: Any,
                            global_units: float) -> Any:
    """SFT's loss, but the second call (step 2 at grad_accum 1) raises: a crash in a worker
    after its trackers opened and logged step 1."""
    _CALLS[0] += 1
    if _CALLS[0] >= 2:
        raise RuntimeError("injected failure in step 2")
    return SFT.loss(model, batch, cfg, global_units)


CRASH_SFT = dataclasses.replace(SFT, name="crash_sft", loss=_loss_failing_at_step_2)


def _cfg(tmp_path: Path, model: Path, name: str, trackers: list[str], **kw: Any) -> TrainConfig:
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(24))
    return from_dict(TrainConfig, {"kind": "sft", "model": str(model), "data": str(data),
                                   "out": str(tmp_path / name), "name": name, "max_steps": 3,
                                   "micro_batch_size": 4, "log_every": 1, "lr": 1e-3,
                                   "zero_stage": 0, "trackers": trackers, **kw})


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wandb_and_mlflow_hold_the_losses_of_metrics_jsonl(ray_local: Any, tiny_model_dir: Path,
                                                           tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    from raysys.training.trainer import train

    res = train(_cfg(tmp_path, tiny_model_dir, "both", ["wandb", "mlflow"]),
                run_dir=tmp_path / "rt")
    lines = [json.loads(ln) for ln in res.metrics_path.read_text().splitlines()]
    assert res.completed and [m["step"] for m in lines] == [1, 2, 3]
    expected = [(m["step"], m["loss"]) for m in lines]
    assert all(loss > 0 for _, loss in expected)

    history, exit_code = wandb_history(res.work_dir, "loss")
    assert history == expected and exit_code == 0
    assert wandb_history(res.work_dir, "lr")[0] == [(m["step"], m["lr"]) for m in lines]

    (run,) = mlflow_runs(res.work_dir)
    assert run.info.status == "FINISHED" and run.info.run_name == "both"
    assert mlflow_history(res.work_dir, run.info.run_id, "loss") == expected
    assert run.data.params["lr"] == "0.001" and run.data.params["max_steps"] == "3"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_worker_that_crashes_leaves_no_mlflow_run_running(ray_local: Any, tiny_model_dir: Path,
                                                            tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from ray import cloudpickle

    from raysys.errors import StageError
    from raysys.training.trainer import train

    # The kind's loss lives in this test module, which Ray workers cannot import.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    register_kind(CRASH_SFT)
    try:
        cfg = _cfg(tmp_path, tiny_model_dir, "crash", ["mlflow"], kind="crash_sft")
        with pytest.raises(StageError, match="training 'crash' failed.*injected failure in step 2"):
            train(cfg, run_dir=tmp_path / "rt")
    finally:
        KINDS.pop("crash_sft", None)
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    work_dir = tmp_path / "rt" / "crash-files"
    lines = [json.loads(ln) for ln in (work_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1]
    (run,) = mlflow_runs(work_dir)
    assert run.info.status == "FAILED"
    assert mlflow_history(work_dir, run.info.run_id, "loss") == [(1, lines[0]["loss"])]
    assert not (tmp_path / "crash").exists()
