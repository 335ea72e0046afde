"""Live stage metrics for the Ray dashboard / Prometheus: progress, throughput, training loss.

Stages call :func:`stage_progress` (generation and map stages, on the driver, as parts land)
and :func:`training_step` (Ray Train rank 0, at each logged step). Both record Ray custom
metrics (``ray.util.metrics`` gauges) tagged by ``stage`` and ``run``; each node's metrics agent
exports them on its Prometheus endpoint (``ray start --metrics-export-port``, or the node's
``MetricsExportPort`` in ``ray.nodes()``) with Ray's ``ray_`` prefix, e.g.
``ray_raysys_stage_progress{stage="samples",run="w2s"}``, every
``metrics_report_interval_ms`` (10 s by default). ``cluster/grafana-raysys.json`` charts them.

Without an initialised Ray both calls return at once and never import Ray: a local stage or a
unit test pays nothing. A failing metrics backend is logged once and never fails a stage.
"""

from __future__ import annotations

import logging
import math
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TAG_KEYS = ("stage", "run")
PREFIX = "ray_"           # what Ray's exporter puts in front of every custom metric name
RUN_MARKER = "state.json"  # RunDir writes it at the root of every recipe run

# name -> description; every metric is a gauge (the last value is what a watcher wants).
METRICS: dict[str, str] = {
    "raysys_stage_progress": "Fraction of the stage done (input rows, or training steps).",
    "raysys_stage_rows_done": "Input rows with all their outputs written.",
    "raysys_stage_rows_total": "Input rows of the stage.",
    "raysys_stage_rows_per_s": "Output rows written per second since the stage (re)started.",
    "raysys_stage_tokens_per_s": "Generated (or trained) tokens per second.",
    "raysys_train_step": "Last logged optimizer step.",
    "raysys_train_loss": "Training loss at the last logged step.",
    "raysys_train_step_time_s": "Wall seconds of the last logged optimizer step.",
}

_gauges: dict[str, Any] = {}
_failed = False


def ray_active() -> bool:
    """True when this process has an initialised Ray (driver, task, actor, Ray Train worker).

    Looks in ``sys.modules`` first, so a process that never imported Ray stays without it."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _gauge(name: str) -> Any:
    """The process's gauge ``name``, created on first use (Ray must be initialised)."""
    g = _gauges.get(name)
    if g is None:
        from ray.util.metrics import Gauge

        g = _gauges[name] = Gauge(name, description=METRICS[name], tag_keys=TAG_KEYS)
    return g


def _record(values: dict[str, float | None], stage: str, run: str) -> None:
    """Set each gauge of ``values`` (None and non-finite values are skipped) for one stage/run."""
    global _failed
    if _failed or not ray_active():
        return
    tags = {"stage": str(stage), "run": str(run or "-")}
    try:
        for name, value in values.items():
            if value is not None and math.isfinite(value):
                _gauge(name).set(float(value), tags=tags)
    except Exception as e:  # noqa: BLE001 - monitoring must never fail the stage it watches
        _failed = True
        log.warning("live metrics disabled in this process: %s: %s", type(e).__name__, e)


def stage_progress(stage: str, done: int, total: int, rows_per_s: float,
                   tokens_per_s: float | None, *, run: str = "") -> None:
    """Record a generation/map stage's progress: ``done`` of ``total`` input rows finished,
    and its output rows and tokens per second so far. No-op without Ray."""
    _record({"raysys_stage_progress": done / total if total > 0 else 0.0,
             "raysys_stage_rows_done": done, "raysys_stage_rows_total": total,
             "raysys_stage_rows_per_s": rows_per_s, "raysys_stage_tokens_per_s": tokens_per_s},
            stage, run)


def training_step(stage: str, step: int, loss: float, step_time_s: float,
                  tokens_per_s: float | None, *, total_steps: int | None = None,
                  run: str = "") -> None:
    """Record a training stage's logged step (loss, step time, tokens/s; progress when
    ``total_steps`` is known). No-op without Ray."""
    values: dict[str, float | None] = {"raysys_train_step": step, "raysys_train_loss": loss,
                                       "raysys_train_step_time_s": step_time_s,
                                       "raysys_stage_tokens_per_s": tokens_per_s}
    if total_steps:
        values["raysys_stage_progress"] = step / total_steps
    _record(values, stage, run)


@lru_cache(maxsize=256)
def run_name(path: str | Path) -> str:
    """The ``run`` tag of a stage writing under ``path``: the name of the nearest ancestor
    holding a recipe's ``state.json``, else the name of ``path``'s parent (a standalone
    stage or training run)."""
    p = Path(path).expanduser().absolute()
    for d in (p, *p.parents):
        if (d / RUN_MARKER).is_file():
            return d.name
    return p.parent.name or "-"
