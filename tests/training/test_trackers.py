"""Experiment trackers: config checks, the driver's installed-package check, and TensorBoard
event files carrying exactly the step metrics rank 0 writes to metrics.jsonl."""

from __future__ import annotations

import importlib.util
import json
import math
import struct
import sys
from pathlib import Path

import pytest

from raysys.config import ConfigError, from_dict
from raysys.training.config import TrainConfig
from raysys.training.trackers import (TRACKER_PACKAGES, check_trackers_installed, open_trackers,
                                      scalar_metrics)

from conftest import sft_rows, write_jsonl


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the TensorBoard event files under ``log_dir``: tag -> [(step, value)].

    Event files are TFRecords: u64 length, u32 length crc, an ``Event`` proto, u32 data crc."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def f32(x: float) -> float:
    """``x`` rounded to float32, as a TensorBoard scalar stores it."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


@pytest.fixture
def missing_tracker(monkeypatch: pytest.MonkeyPatch) -> str:
    """A tracker whose package cannot be imported here: one not installed, else mlflow made
    unimportable for the test (``sys.modules[name] = None``, which ``find_spec`` and ``import``
    honour)."""
    for name, (module, _) in TRACKER_PACKAGES.items():
        if importlib.util.find_spec(module) is None:
            return name
    monkeypatch.setitem(sys.modules, TRACKER_PACKAGES["mlflow"][0], None)
    return "mlflow"


def test_unknown_tracker_names_its_index_and_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"^trackers\[1\]: expected one of tensorboard, wandb, "
                                          r"mlflow, got 'neptune'$"):
        from_dict(TrainConfig, {"trackers": ["tensorboard", "neptune"]})
    with pytest.raises(ConfigError, match=r"^train\.sft\.trackers\[1\]: 'mlflow' is listed twice"):
        from_dict(TrainConfig, {"trackers": ["mlflow", "mlflow"]}, "train.sft")
    assert from_dict(TrainConfig, {}).trackers == []


def test_a_tracker_without_its_package_says_what_to_install(missing_tracker: str) -> None:
    name = missing_tracker
    package = TRACKER_PACKAGES[name][1]
    check_trackers_installed([])                 # nothing asked: nothing to install
    with pytest.raises(ConfigError, match=rf"^trackers\[0\]: tracker '{name}' needs the "
                                          rf"'{package}' package.*pip install {package}"):
        check_trackers_installed([name])


def test_train_rejects_a_missing_tracker_package_before_ray_starts(
        missing_tracker: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    import ray

    from raysys.training.trainer import train

    name = missing_tracker
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(8))
    cfg = from_dict(TrainConfig, {"kind": "sft", "model": str(tiny_model_dir), "data": str(data),
                                  "out": str(tmp_path / "out"), "trackers": [name]})
    assert not ray.is_initialized()
    with pytest.raises(ConfigError, match=rf"^trackers\[0\]: tracker '{name}' needs"):
        train(cfg, run_dir=tmp_path / "ray_train")
    assert not ray.is_initialized() and not (tmp_path / "ray_train").exists()


def test_scalar_metrics_keep_finite_numbers_only() -> None:
    m = {"step": 3, "loss": 0.5, "lr": 1e-4, "grad_norm": None, "done": True,
         "tokens_per_s": float("nan"), "samples": 8, "name": "x"}
    assert scalar_metrics(m) == {"loss": 0.5, "lr": 1e-4, "samples": 8.0}


def test_tensorboard_events_hold_rank0_steps_and_other_ranks_log_nothing(tmp_path: Path) -> None:
    pytest.importorskip("tensorboardX")
    cfg = from_dict(TrainConfig, {"trackers": ["tensorboard"]})
    other = open_trackers(cfg, tmp_path / "rank1", rank=1)
    other.log(1, {"step": 1, "loss": 9.0})
    other.close()
    assert not (tmp_path / "rank1").exists()

    t = open_trackers(cfg, tmp_path, rank=0)
    t.log(1, {"step": 1, "loss": 2.25, "lr": 1e-4, "grad_norm": None})
    t.log(2, {"step": 2, "loss": 0.1, "lr": 5e-5, "grad_norm": 0.75})
    t.close()
    t.close()                                    # idempotent
    scalars = read_scalars(tmp_path / "tensorboard")
    assert scalars == {"loss": [(1, 2.25), (2, f32(0.1))], "lr": [(1, f32(1e-4)), (2, f32(5e-5))],
                       "grad_norm": [(2, 0.75)]}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_training_run_logs_the_metrics_jsonl_losses_to_tensorboard(
        ray_local, tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboardX")
    from raysys.training.trainer import train

    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(24))
    cfg = from_dict(TrainConfig, {"kind": "sft", "model": str(tiny_model_dir), "data": str(data),
                                  "out": str(tmp_path / "out"), "name": "tb", "max_steps": 3,
                                  "micro_batch_size": 4, "log_every": 1, "lr": 1e-3,
                                  "trackers": ["tensorboard"]})
    res = train(cfg, run_dir=tmp_path / "ray_train")
    lines = [json.loads(ln) for ln in res.metrics_path.read_text().splitlines()]
    assert res.completed and [m["step"] for m in lines] == [1, 2, 3]
    scalars = read_scalars(res.work_dir / "tensorboard")
    assert scalars["loss"] == [(m["step"], f32(m["loss"])) for m in lines]
    assert scalars["lr"] == [(m["step"], f32(m["lr"])) for m in lines]
    assert all(math.isfinite(v) and v > 0 for _, v in scalars["loss"])
