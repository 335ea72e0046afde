"""Optional experiment trackers for a training run: TensorBoard, Weights & Biases, MLflow.

Rank 0 of the Ray Train worker group opens them once and logs the same step metrics it writes
to ``metrics.jsonl`` (every ``log_every`` steps). W&B and MLflow go through Ray's own
integrations (``ray.air.integrations.wandb.setup_wandb`` / ``ray.air.integrations.mlflow.
setup_mlflow``, which know the Ray Train context). Ray Train's V2 API has no TensorBoard
integration (``TBXLoggerCallback`` is a Ray Tune driver callback that only sees reported
results, and this loop reports only at checkpoints), so TensorBoard event files are written
with ``tensorboardX.SummaryWriter``, the writer Ray's own TensorBoard logger uses and a
dependency of ``ray[train]``.

Everything is offline unless the user says otherwise: W&B runs in ``offline`` mode unless
``WANDB_MODE`` is set, MLflow logs to a local ``file:`` store under the run's work dir unless
``MLFLOW_TRACKING_URI`` is set, and TensorBoard writes ``<work_dir>/tensorboard``.

A run never stays "running" after its worker is gone: when the training thread that opened the
trackers ends without closing them (an exception in a step), a watcher thread ends them as
failed (MLflow status ``FAILED``, W&B exit code 1) before Ray Train kills the worker; and a
worker killed outright (no Python runs) leaves an MLflow run that the next opening in the same
work dir (Ray Train's restart, or a rerun) marks ``FAILED``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from raysys.config import ConfigError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from raysys.training.config import TrainConfig

# Tracker name -> (module to import, pip package that provides it).
TRACKER_PACKAGES: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboardX", "tensorboardX"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
}
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlruns"
DEFAULT_PROJECT = "raysys"          # W&B project / MLflow experiment unless set by env
# The MLflow tag naming the work dir a run trains in: a RUNNING run with this work dir found when
# the next one opens there belonged to a worker that was killed (one rank 0 per work dir).
MLFLOW_WORK_DIR_TAG = "raysys.work_dir"


def check_tracker_names(names: list[str], key: str = "trackers") -> None:
    """Every name is a known tracker, listed once (the config layer's check, one rule)."""
    from raysys.training.config import check_tracker_names as check

    check(names, key)


def check_trackers_installed(names: list[str], key: str = "trackers") -> None:
    """Every tracker's package is importable here (checked on the driver before Ray starts, so
    a missing package is one clear error instead of a failed worker group)."""
    check_tracker_names(names, key)
    for i, name in enumerate(names):
        module, package = TRACKER_PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"{key}[{i}]: tracker {name!r} needs the {package!r} package, "
                              f"which is not installed (pip install {package}), or remove it")


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numeric metrics of a step as floats: ``step`` is the x axis, not a metric;
    None (e.g. ``grad_norm`` where DeepSpeed does not compute it), flags and NaN are left out."""
    out = {}
    for k, v in metrics.items():
        if k == "step" or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(v):
            out[k] = float(v)
    return out


class _Sink(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...
    def close(self) -> None: ...
    def fail(self) -> None: ...


class _TensorBoard:
    """Event files under ``log_dir``; on resume, ``purge_step`` makes TensorBoard drop the
    earlier process's events past the checkpoint (as ``metrics.jsonl`` is truncated)."""

    def __init__(self, log_dir: Path, start_step: int) -> None:
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=str(log_dir),
                                    purge_step=start_step + 1 if start_step else None)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()         # a worker killed mid-run keeps what it logged

    def close(self) -> None:
        self.writer.close()

    def fail(self) -> None:
        self.writer.close()         # event files have no run status


class _Wandb:
    """A W&B run from Ray's ``setup_wandb`` (offline unless ``WANDB_MODE`` is set); its id is
    stable per work dir, so a resumed run continues the same W&B run."""

    def __init__(self, cfg: TrainConfig, work_dir: Path) -> None:
        from ray.air.integrations.wandb import setup_wandb

        from raysys.config import to_dict

        run_id = f"{cfg.name}-{hashlib.sha1(str(work_dir).encode()).hexdigest()[:8]}"
        # In the environment, not only as wandb.init's mode: Ray's setup_wandb asks for an API
        # key unless WANDB_MODE says offline, even when mode="offline" is passed.
        os.environ.setdefault("WANDB_MODE", "offline")
        self.run = setup_wandb(
            config=to_dict(cfg), rank_zero_only=True,
            project=os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT), name=cfg.name, id=run_id,
            mode=os.environ["WANDB_MODE"], dir=str(work_dir))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()

    def fail(self) -> None:
        self.run.finish(exit_code=1)


class _Mlflow:
    """An MLflow run from Ray's ``setup_mlflow``: a local ``file:`` store under the work dir
    unless ``MLFLOW_TRACKING_URI`` is set; the config is logged as the run's params and the work
    dir as the :data:`MLFLOW_WORK_DIR_TAG` tag."""

    def __init__(self, cfg: TrainConfig, work_dir: Path) -> None:
        from ray.air.integrations.mlflow import setup_mlflow

        from raysys.config import to_dict

        uri = mlflow_uri(work_dir)
        tag = str(work_dir.resolve())
        self.mlflow = setup_mlflow(
            config=to_dict(cfg), tracking_uri=uri, rank_zero_only=True,
            experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_PROJECT),
            run_name=cfg.name, create_experiment_if_not_exists=True,
            tags={MLFLOW_WORK_DIR_TAG: tag})
        run = self.mlflow.active_run()
        self.run_id = run.info.run_id
        self.client = self.mlflow.tracking.MlflowClient(tracking_uri=uri)
        try:
            fail_stale_runs(self.client, run.info.experiment_id, tag, self.run_id)
        except Exception as e:  # noqa: BLE001 - old runs' status is not worth this run
            log.warning("mlflow: could not mark earlier runs of %s failed: %s", tag, e)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.mlflow.log_metrics(metrics, step=step)

    def close(self) -> None:
        self.mlflow.end_run()

    def fail(self) -> None:
        # the client, not the fluent API: the active run belongs to the training thread
        self.client.set_terminated(self.run_id, "FAILED")


def mlflow_uri(work_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI``, else a ``file:`` store under ``work_dir``. For a file store,
    ``MLFLOW_ALLOW_FILE_STORE`` defaults to true here: MLflow 3 refuses its file store
    ("maintenance mode") without it, and it is the serverless offline default (a user's
    "false" wins)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or (work_dir / MLFLOW_DIR).resolve().as_uri()
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def fail_abandoned_runs(cfg: TrainConfig, work_dir: Path) -> list[str]:
    """Driver side, after a failed fit: mark ``FAILED`` the MLflow runs that workers killed
    outright (no Python ran, so no watcher) left RUNNING in ``work_dir``; return their ids.
    A no-op unless ``cfg.trackers`` names mlflow and its experiment exists."""
    if "mlflow" not in cfg.trackers:
        return []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri(Path(work_dir)))
    experiment = client.get_experiment_by_name(
        os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_PROJECT))
    if experiment is None:
        return []
    return fail_stale_runs(client, experiment.experiment_id, str(Path(work_dir).resolve()), "")


def fail_stale_runs(client: Any, experiment_id: str, work_dir: str, current: str) -> list[str]:
    """Mark ``FAILED`` every RUNNING MLflow run of ``experiment_id`` tagged with ``work_dir``
    other than ``current`` (a worker killed before it could end its run); return their ids."""
    stale = [r.info.run_id for r in client.search_runs([experiment_id],
                                                       filter_string="attributes.status = 'RUNNING'")
             if r.data.tags.get(MLFLOW_WORK_DIR_TAG) == work_dir and r.info.run_id != current]
    for run_id in stale:
        client.set_terminated(run_id, "FAILED")
    return stale


@dataclass
class Trackers:
    """The open trackers of one worker (none on ranks other than 0, or when none are set)."""

    sinks: list[_Sink] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Log a step's finite numeric metrics (see :func:`scalar_metrics`) to every tracker."""
        if self.sinks:
            values = scalar_metrics(metrics)
            for sink in self.sinks:
                sink.log(step, values)

    def _take(self) -> list[_Sink]:
        with self._lock:
            sinks, self.sinks = self.sinks, []
        return sinks

    def close(self) -> None:
        """Flush and close every tracker, the run finished (idempotent)."""
        for sink in self._take():
            sink.close()

    def fail(self) -> None:
        """End every tracker still open as failed (idempotent; a no-op after :meth:`close`).
        MLflow first: one file write, done before W&B's finish waits for its service, in case
        the process is killed meanwhile. One tracker's error does not keep the others open."""
        for sink in sorted(self._take(), key=lambda s: not isinstance(s, _Mlflow)):
            try:
                sink.fail()
            except Exception as e:  # noqa: BLE001 - the run already failed; say, go on
                log.warning("%s: could not end the run as failed: %s", type(sink).__name__, e)


def fail_when_thread_ends(trackers: Trackers, thread: threading.Thread) -> threading.Thread:
    """Start a daemon thread that waits for ``thread`` (Ray Train's training thread) to end and
    then ends ``trackers`` as failed unless they were closed: an exception in a step ends the
    thread without a close, and Ray Train then kills the worker (no atexit handler runs)."""
    def watch() -> None:
        thread.join()
        trackers.fail()

    watcher = threading.Thread(target=watch, daemon=True, name="raysys-trackers-watch")
    watcher.start()
    return watcher


def open_trackers(cfg: TrainConfig, work_dir: Path, rank: int, start_step: int = 0) -> Trackers:
    """Open ``cfg.trackers`` on rank 0 (other ranks get no trackers, so nothing is logged
    twice); ``start_step`` is the step a resumed run restarts from (0 on a fresh run)."""
    if rank != 0 or not cfg.trackers:
        return Trackers()
    work_dir = Path(work_dir)
    sinks: list[_Sink] = []
    try:
        for name in cfg.trackers:
            if name == "tensorboard":
                sinks.append(_TensorBoard(work_dir / TENSORBOARD_DIR, start_step))
            elif name == "wandb":
                sinks.append(_Wandb(cfg, work_dir))
            elif name == "mlflow":
                sinks.append(_Mlflow(cfg, work_dir))
    except BaseException:
        Trackers(sinks).fail()          # the ones already open do not stay "running"
        raise
    trackers = Trackers(sinks)
    if sinks and threading.current_thread() is not threading.main_thread():
        # Ray Train runs the loop in a thread of its own (a main-thread caller closes its own)
        fail_when_thread_ends(trackers, threading.current_thread())
    return trackers
