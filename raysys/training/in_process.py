"""Training in this process, without Ray: the same worker loop Ray Train runs
(:func:`raysys.training.worker.run_worker`), as rank 0 of a world of one. For tiny models
(tests, the in-process recipe context): no worker start-up, no placement.

The driver-side checks and tokenization are :func:`raysys.training.trainer.prepare`'s; the
result is a :class:`~raysys.training.trainer.TrainResult` like :func:`trainer.train`'s.
Checkpoints (``checkpoint_every``, ``stop_after_steps``) go to ``<work_dir>/<name>/checkpoint``
(replaced whole, by a rename), so a rerun resumes from the latest as a Ray Train run does.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from raysys.distributed.generation import torch_threads
from raysys.training.config import TrainConfig
from raysys.training.trainer import TrainResult, prepare, worker_config


METRICS_FILE = "reported_metrics.json"


class LocalSession:
    """Rank 0 of 1: the examples as a list, the checkpoint kept in ``ckpt_dir``, the last
    reported metrics in :attr:`metrics`."""

    rank, world = 0, 1

    def __init__(self, examples: list[dict[str, Any]], ckpt_dir: Path) -> None:
        self._examples, self.ckpt_dir = examples, ckpt_dir
        # the metrics reported with the latest checkpoint (a finished run reports nothing new)
        saved = ckpt_dir / METRICS_FILE
        self.metrics: dict[str, Any] = json.loads(saved.read_text()) if saved.is_file() else {}

    def examples(self) -> list[dict[str, Any]]:
        return self._examples

    @contextmanager
    def checkpoint(self) -> Iterator[Path | None]:
        yield self.ckpt_dir if (self.ckpt_dir / "trainer_state.json").is_file() else None

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        self.metrics = dict(metrics)
        if checkpoint_dir is None:
            return
        tmp = self.ckpt_dir.with_name(self.ckpt_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(checkpoint_dir, tmp)
        (tmp / METRICS_FILE).write_text(json.dumps(self.metrics, default=str))
        old = self.ckpt_dir.with_name(self.ckpt_dir.name + ".old")
        if self.ckpt_dir.exists():
            self.ckpt_dir.rename(old)
        tmp.rename(self.ckpt_dir)
        shutil.rmtree(old, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def single_process_group() -> Iterator[None]:
    """The environment torch.distributed reads to form a world of one (gloo) in this process,
    set for the loop and restored after, so nothing started later (a local Ray) inherits it.
    The process group, once made, stays for later in-process stages."""
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0",
           "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def train(cfg: TrainConfig, *, run_dir: str | Path | None = None) -> TrainResult:
    """Train ``cfg`` in this process (one worker, CPU or this process's GPU); write ``cfg.out``.
    ``cfg.num_workers`` must be 1: a world of one is all this process is."""
    from raysys.config import ConfigError
    from raysys.training.worker import run_worker

    if cfg.num_workers != 1:
        raise ConfigError(f"num_workers: the in-process trainer runs one worker, got {cfg.num_workers}")
    p = prepare(cfg, run_dir)
    session = LocalSession(p.examples, p.work_dir / p.cfg.name / "checkpoint")
    session.ckpt_dir.parent.mkdir(parents=True, exist_ok=True)
    # a Ray Train worker's CPUs as the loop's torch threads (Ray sets them so for its workers)
    threads = int(p.cfg.resources_per_worker.get("CPU", 1)) if not p.cfg.use_gpu else None
    with single_process_group(), torch_threads(threads):
        run_worker(worker_config(p, None), session)
    out = Path(p.cfg.out).expanduser().resolve()
    completed = bool(session.metrics.get("done")) and out.is_dir()
    ckpt = session.ckpt_dir if session.ckpt_dir.is_dir() else None
    return TrainResult(out=out, completed=completed, metrics=session.metrics,
                       work_dir=p.state_dir, checkpoint=str(ckpt) if ckpt else None)
