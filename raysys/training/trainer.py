"""The Ray Train wrapper: validate inputs on the driver (:func:`prepare`, shared with the
in-process trainer), run the per-worker loop, return the trained model's path and final metrics.

Everything that can be checked before starting workers is (config values, LoRA targets, every
data row), so bad input costs one clear error instead of a worker-group stack trace.
Re-running with the same ``run_dir`` and ``name`` resumes from the latest checkpoint (Ray
Train restores its checkpoint manager from storage); a finished run is not retrained.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from raysys.config import to_dict
from raysys.training.config import TrainConfig

log = logging.getLogger(__name__)

# the driver's progress lines while workers train (importable from here, as before)
from raysys.training.progress import _wait_with_progress, last_metrics, train_progress_line  # noqa: E402,F401

EXTENSIONS_CACHE = "~/.cache/torch_extensions"


def default_extensions_dir(prefix: str = sys.prefix) -> Path:
    """Where DeepSpeed's CPU comm op is compiled and kept when ``TORCH_EXTENSIONS_DIR`` is unset:
    one dir per Python environment (``prefix``) under ``~/.cache/torch_extensions``.

    The op's ``build.ninja`` names the environment's torch and DeepSpeed paths, so two
    environments (two checkouts, each with its .venv) sharing one dir rebuilt the op (~35 s)
    every time the other one had run.
    """
    tag = hashlib.sha1(str(prefix).encode()).hexdigest()[:12]
    return Path(EXTENSIONS_CACHE).expanduser() / f"raysys-{tag}"


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    out: Path                               # the model / adapter / verifier dir (if completed)
    completed: bool                         # False when halted by ``stop_after_steps``
    metrics: dict[str, Any] = field(default_factory=dict)   # last reported step metrics
    work_dir: Path | None = None            # Ray Train storage, metrics.jsonl, reference logps
    checkpoint: str | None = None           # latest checkpoint path

    @property
    def metrics_path(self) -> Path:
        """The per-step metrics file (one JSON line per logged step)."""
        assert self.work_dir is not None
        return self.work_dir / "metrics.jsonl"


def scaling_config(cfg: TrainConfig) -> Any:
    """Ray Train's ScalingConfig for ``cfg``: ``num_workers`` workers of ``resources_per_worker``
    (Ray Train's default, 1 CPU or 1 GPU, when empty)."""
    from ray.train import ScalingConfig

    return ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                         resources_per_worker=dict(cfg.resources_per_worker) or None)


def worker_bundles(cfg: TrainConfig) -> list[dict[str, float]]:
    """What ``cfg``'s worker group reserves, one bundle (resource -> amount) per worker, as
    Ray Train places it (a placement group of ``scaling_config(cfg).placement_strategy``, PACK)."""
    sc = scaling_config(cfg)
    one = {"CPU": sc.num_cpus_per_worker, "GPU": sc.num_gpus_per_worker,
           **sc.additional_resources_per_worker}
    return [{k: float(v) for k, v in one.items() if v} for _ in range(cfg.num_workers)]


def _start_ray() -> None:
    import ray

    from raysys.distributed.ray_init import init_ray

    if not ray.is_initialized():
        init_ray(dashboard=False)


def prebuild_cpu_comm_op() -> None:
    """Compile (or load from cache) DeepSpeed's CPU shared-memory comm op on the driver.

    Compiled inside a Ray Train worker, the ~1 min build can trip the worker health check;
    built here once, workers find it in TORCH_EXTENSIONS_DIR (which must be set). A lock a
    killed build left there is removed first.
    """
    import io

    from deepspeed.comm.torch import build_shm_op

    from raysys.training.build_locks import clear_stale_build_locks
    from raysys.training.worker import ensure_compiler

    ensure_compiler()
    clear_stale_build_locks(os.environ["TORCH_EXTENSIONS_DIR"])   # a killed build's lock: no hang
    with contextlib.redirect_stdout(io.StringIO()):   # keeps `raysys train` output to results
        build_shm_op()


# How often the Ray Train controller polls its workers. Ray's 2 s default is paid after every
# stage's last step (the controller learns the run ended at its next poll: 3.6 s measured from
# the final report to fit() returning, 0.8 s at 0.5 s) and at every checkpoint report. A poll is
# one small actor call per worker; a value set in the environment wins.
HEALTH_CHECK_INTERVAL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
HEALTH_CHECK_INTERVAL_S = "0.5"
# Ray Train starts a PreemptionWatcher process per stage that polls for nodes being taken away
# (spot instances). A private local instance is one node nothing can preempt, so there it is one
# more process importing ray.train per stage for nothing; a value set by the user wins.
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


def poll_interval_s(environ: Mapping[str, str]) -> str:
    """The controller's poll interval for the fit task: the environment's value, else 0.5 s.

    Checked here because the controller would fail on a bad value only after Ray Train started.
    """
    import math

    from raysys.config import ConfigError

    value = environ.get(HEALTH_CHECK_INTERVAL_ENV, HEALTH_CHECK_INTERVAL_S)
    try:
        ok = math.isfinite(float(value)) and float(value) > 0
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"environment variable {HEALTH_CHECK_INTERVAL_ENV}: expected a finite "
                          f"number of seconds > 0, got {value!r}")
    return value


def fit_env(address: str, environ: Mapping[str, str], local: bool) -> dict[str, str]:
    """The fit task's environment variables, which Ray Train's controller and the processes it
    starts inherit: this cluster's ``address``, the controller's poll interval, and the
    preemption watcher setting: ``environ``'s when set, else off on a private ``local``
    instance (Ray Train's default, on, elsewhere)."""
    env = {"RAY_ADDRESS": address, HEALTH_CHECK_INTERVAL_ENV: poll_interval_s(environ)}
    if PREEMPTION_WATCHER_ENV in environ:
        env[PREEMPTION_WATCHER_ENV] = environ[PREEMPTION_WATCHER_ENV]
    elif local:
        env[PREEMPTION_WATCHER_ENV] = "0"
    return env


def _fit_pinned_to_this_cluster(trainer: Any, progress: tuple | None = None) -> Any:
    """Run ``trainer.fit()`` in a task whose environment names this cluster's address.

    Ray Train's placement-group cleaner finds "the" cluster through the State API; on a
    machine running several local Ray instances it can resolve another one, not find the
    controller there, and remove this run's placement group mid-training. ``RAY_ADDRESS``
    in the task's runtime env is inherited by the controller and the cleaner, as is the
    controller's poll interval (``HEALTH_CHECK_INTERVAL_S``); see :func:`fit_env`.
    """
    import ray

    from raysys.distributed.ray_init import started_local_instance

    address = ray.get_runtime_context().gcs_address

    @ray.remote(num_cpus=0, max_retries=0)
    def fit(t: Any) -> Any:
        return t.fit()

    env = fit_env(address, os.environ, started_local_instance())
    ref = fit.options(runtime_env={"env_vars": env}).remote(trainer)
    return ray.get(ref) if progress is None else _wait_with_progress(ref, *progress)


def with_absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its ``model`` / ``data`` / ``out`` paths (local, as validated) made absolute:
    Ray Train runs each worker in its own working directory, where a relative path no longer
    points anywhere."""
    def absolute(p: str) -> str:
        return str(Path(p).expanduser().absolute())
    return replace(cfg, model=absolute(cfg.model), data=absolute(cfg.data), out=absolute(cfg.out))


def resolve_work_dir(cfg: TrainConfig, run_dir: str | Path | None) -> Path:
    """Where Ray Train storage and run-side files live: ``run_dir`` or ``<out>/../ray_train``."""
    base = Path(run_dir) if run_dir is not None else Path(cfg.out).expanduser().resolve().parent / "ray_train"
    return base.expanduser().resolve()


def _unwrap_worker_error(err: BaseException) -> BaseException:
    """A user error raised inside a worker, re-raised as itself rather than a group error."""
    from raysys.errors import USER_ERRORS

    failures = getattr(err, "worker_failures", None) or {}
    for exc in failures.values():
        cause = exc
        while cause is not None and not isinstance(cause, USER_ERRORS):
            cause = cause.__cause__ or getattr(cause, "cause", None)
        if cause is not None:
            return cause
    return err


def out_of_memory(err: BaseException) -> BaseException | None:
    """The ``torch.OutOfMemoryError`` (CUDA) or host ``MemoryError`` behind a failed fit, from a
    worker's failure or the error's own chain; None when memory was not the cause."""
    import torch

    kinds = (torch.OutOfMemoryError, MemoryError)
    seen: set[int] = set()
    todo = [err, *(getattr(err, "worker_failures", None) or {}).values()]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, kinds):
            return e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None),
                 *(getattr(e, "worker_failures", None) or {}).values()]
    return None


def out_of_memory_message(cfg: TrainConfig, err: BaseException) -> str:
    """One line for a training stage that ran out of memory, with the keys that lower it."""
    import torch

    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    where = "GPU" if isinstance(err, torch.OutOfMemoryError) else "host"
    return (f"training '{cfg.name}' ran out of {where} memory ({first}); lower "
            f"micro_batch_size ({cfg.micro_batch_size}, raise grad_accum to keep the batch) or "
            f"max_len ({cfg.max_len}), enable lora, or raise zero_stage ({cfg.zero_stage})")


@dataclass
class Prepared:
    """A training run checked and tokenized on the driver, before any worker starts."""

    cfg: TrainConfig                        # paths made absolute
    kind: Any                               # its TrainingKind
    examples: list[dict[str, Any]]
    work_dir: Path                          # Ray Train storage (or in-process checkpoints)
    state_dir: Path                         # metrics.jsonl, reference log-probs, trackers
    n_steps: int


def prepare(cfg: TrainConfig, run_dir: str | Path | None = None) -> Prepared:
    """Everything checked before workers start (config values, LoRA targets, trackers, every
    data row), the rows tokenized, DeepSpeed's CPU comm op built: one clear error for bad
    input instead of a worker-group stack trace. Shared by :func:`train` and the in-process
    trainer."""
    from raysys.data.io import DataError
    from raysys.models.loading import load_tokenizer
    from raysys.training.data import load_rows, tokenize_rows
    from raysys.training.kinds import get_kind
    from raysys.training.model_setup import validate_model_for_training
    from raysys.training.schedule import total_steps
    from raysys.training.trackers import check_trackers_installed

    cfg.require_run_fields()
    kind = get_kind(cfg.kind)
    validate_model_for_training(cfg)
    check_trackers_installed(cfg.trackers)      # a missing tracker package: before Ray starts
    poll_interval_s(os.environ)                 # a bad poll interval: before Ray starts too
    cfg = with_absolute_paths(cfg)
    rows = load_rows(cfg.data, cfg.kind)
    tokenizer = load_tokenizer(cfg.model, padding_side="right", trust_remote_code=cfg.trust_remote_code)
    examples, stats = tokenize_rows(cfg.kind, rows, tokenizer, cfg.max_len, cfg.overflow, cfg.data)
    global_batch = cfg.num_workers * cfg.micro_batch_size * cfg.grad_accum
    if len(examples) < global_batch:
        raise DataError(f"{cfg.data}: {len(examples)} examples, fewer than one global batch of "
                        f"{global_batch} (num_workers x micro_batch_size x grad_accum)")
    log.debug("training data: %s", stats)
    work_dir = resolve_work_dir(cfg, run_dir)
    state_dir = work_dir / f"{cfg.name}-files"
    state_dir.mkdir(parents=True, exist_ok=True)
    # A stable extensions dir: DeepSpeed's CPU comm op compiles once (~1 min), then is reused.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(default_extensions_dir()))
    if not cfg.use_gpu:
        prebuild_cpu_comm_op()
    return Prepared(cfg, kind, examples, work_dir, state_dir,
                    total_steps(len(examples), global_batch, cfg.epochs, cfg.max_steps))


def worker_config(p: Prepared, examples: Any) -> dict[str, Any]:
    """The config every worker's loop (``worker.run_worker``) reads; ``examples`` as the
    session delivers them (an ObjectRef for Ray Train)."""
    return {"cfg": to_dict(p.cfg), "kind": p.kind, "examples": examples,
            "work_dir": str(p.state_dir), "torch_extensions_dir": os.environ["TORCH_EXTENSIONS_DIR"]}


def train(cfg: TrainConfig, *, run_dir: str | Path | None = None,
          stall_timeout_s: float | None = None, storage: str = "auto") -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` with Ray Train; write ``cfg.out``; return the result.

    ``stall_timeout_s`` (a recipe's ``cluster.stall_timeout_s``) bounds every collective of the
    workers' process group (Ray Train's default: 1800 s), so a hung all-reduce fails the stage.
    ``storage`` (``cluster.storage``): how the model, the output, the metrics and Ray Train's
    checkpoints reach workers on other nodes (``raysys.distributed.storage.use_storage``).
    Raises ConfigError / DataError / ModelError for bad input before any worker starts.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from raysys.training.worker import train_loop_per_worker

    p = prepare(cfg, run_dir)
    cfg, work_dir, state_dir = p.cfg, p.work_dir, p.state_dir
    _start_ray()
    from raysys.distributed.storage import use_storage
    from raysys.distributed.store_fs import storage_filesystem

    # Nodes that do not share the driver's disk reach the model, the output's dir, the
    # metrics and the checkpoints (Ray Train's storage) through the run store.
    # The output's dir is served, not probed: probing would list whatever else lives there.
    through_ray = use_storage(storage, work_dir, [cfg.model],
                              outputs=[Path(cfg.out).parent]) == "ray"
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=worker_config(p, ray.put(p.examples)),
        scaling_config=scaling_config(cfg),
        torch_config=TorchConfig(timeout_s=max(1, int(stall_timeout_s or 1800))),
        run_config=RunConfig(
            storage_path=str(work_dir), name=cfg.name,
            storage_filesystem=storage_filesystem() if through_ray else None,
            checkpoint_config=CheckpointConfig(num_to_keep=max(1, cfg.keep_checkpoints)),
            failure_config=FailureConfig(max_failures=cfg.max_failures)),
    )
    try:
        result = _fit_pinned_to_this_cluster(
            trainer, (cfg.name, state_dir / "metrics.jsonl", p.n_steps, None, 2.0,
                      worker_bundles(cfg), stall_timeout_s or 1800.0))
    except Exception as e:  # noqa: BLE001 - re-raised: a user error as itself, else one line
        from ray.train import TrainingFailedError

        from raysys.errors import USER_ERRORS, StageError
        from raysys.training.trackers import fail_abandoned_runs

        # A worker killed outright ran no Python to end its MLflow run: the driver does.
        with contextlib.suppress(Exception):
            fail_abandoned_runs(cfg, state_dir)
        cause = getattr(e, "cause", None) or e
        inner = _unwrap_worker_error(cause)
        if isinstance(inner, USER_ERRORS):
            raise inner from None
        oom = out_of_memory(cause)
        if oom is not None:
            raise StageError(out_of_memory_message(cfg, oom)) from e
        if not isinstance(cause, TrainingFailedError):
            raise                       # not a lost worker: a bug keeps its traceback
        text = str(cause).strip()
        last = text.splitlines()[-1][:300] if text else type(cause).__name__
        if cfg.checkpoint_every:
            msg = (f"training '{cfg.name}' failed after {cfg.max_failures} worker restart(s) "
                   f"({type(cause).__name__}: {last}); re-running resumes from its latest "
                   f"checkpoint in {work_dir}")
        else:
            msg = (f"training '{cfg.name}' failed ({type(cause).__name__}: {last}); set "
                   "checkpoint_every and max_failures to survive a lost worker")
        raise StageError(msg) from e
    out = Path(cfg.out).expanduser().resolve()
    metrics = dict(result.metrics or {})
    completed = bool(metrics.get("done")) and out.is_dir()
    return TrainResult(out=out, completed=completed, metrics=metrics, work_dir=state_dir,
                       checkpoint=result.checkpoint.path if result.checkpoint else None)

