"""A Ray Train worker killed mid-stage: with checkpoints and max_failures the run restarts from
its latest checkpoint and ends with the same weights as an uninterrupted run; without retries
it fails with one line saying what failed and how to resume."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from raysys.config import from_dict
from raysys.errors import StageError
from raysys.training.config import TrainConfig
from raysys.training.trainer import train

from conftest import sft_rows, write_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _cfg(tmp: Path, model: Path, data: Path, name: str, **kw: Any) -> TrainConfig:
    return from_dict(TrainConfig, {"kind": "sft", "model": str(model), "data": str(data),
                                   "out": str(tmp / name), "name": name, "max_steps": 40,
                                   "micro_batch_size": 8, "zero_stage": 0, "lr": 1e-3,
                                   "log_every": 1, "lora": {"enabled": False}, **kw})


def _kill_worker_after(metrics: Path, step: int, killed: list[int]) -> threading.Thread:
    """SIGKILL this Ray instance's Ray Train worker once ``metrics`` shows ``step`` lines (a
    descendant of this instance's raylet: no other Ray instance on the machine is touched)."""
    import psutil
    import ray

    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid

    def ours(p: psutil.Process) -> bool:
        # Ray starts workers with their raylet's pid in the environment (RAY_RAYLET_PID)
        return p.environ().get("RAY_RAYLET_PID") == str(raylet) or \
            any(parent.pid == raylet for parent in p.parents())

    def run() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= step:
                for p in psutil.process_iter(["cmdline"]):
                    try:
                        if any("RayTrainWorker" in c for c in (p.info["cmdline"] or [])) and ours(p):
                            os.kill(p.pid, signal.SIGKILL)
                            killed.append(p.pid)
                            return
                    except psutil.Error:
                        continue
            time.sleep(0.05)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_killed_worker_resumes_from_checkpoint_to_the_same_weights(
        ray_local: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(200, seed=5))
    ref = train(_cfg(tmp_path, tiny_model_dir, data, "ref"), run_dir=tmp_path / "rt")
    killed: list[int] = []
    cfg = _cfg(tmp_path, tiny_model_dir, data, "healed", checkpoint_every=5, max_failures=2)
    watcher = _kill_worker_after(tmp_path / "rt" / "healed-files" / "metrics.jsonl", 10, killed)
    healed = train(cfg, run_dir=tmp_path / "rt")
    watcher.join(timeout=5)
    assert killed, "the worker was never killed (it finished first?)"
    assert healed.completed
    a = load_file(str(ref.out / "model.safetensors"))
    b = load_file(str(healed.out / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_lost_worker_without_retries_is_one_clear_line(ray_local: Any, tiny_model_dir: Path,
                                                       tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(200, seed=5))
    killed: list[int] = []
    cfg = _cfg(tmp_path, tiny_model_dir, data, "lost", checkpoint_every=5, max_failures=0)
    watcher = _kill_worker_after(tmp_path / "rt" / "lost-files" / "metrics.jsonl", 8, killed)
    with pytest.raises(StageError, match=r"training 'lost' failed after 0 worker restart\(s\) .*"
                                         r"re-running resumes from its latest checkpoint"):
        train(cfg, run_dir=tmp_path / "rt")
    watcher.join(timeout=5)
    assert killed
    # and re-running does resume: it finishes from the checkpoint without starting over
    resumed = train(cfg, run_dir=tmp_path / "rt")
    assert resumed.completed
    steps = [int(ln.split('"step": ')[1].split(",")[0])
             for ln in (resumed.out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41))
