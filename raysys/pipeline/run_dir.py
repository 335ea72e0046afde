"""The driver loop's run directory: resolved config, ``state.json``, stages, resume.

Layout (see ARCHITECTURE.md)::

    <run_dir>/config.yaml        the resolved config the run used
    <run_dir>/state.json         each stage: status, start/end, seconds, rows, outputs, metrics
    <run_dir>/iter_<k>/<stage>/  part-*.parquet + _MANIFEST.json
    <run_dir>/models/<name>/     HF model dirs or LoRA adapters (+ ``_COMPLETE.json``)
    <run_dir>/metrics.jsonl      one JSON line per finished stage / evaluation
    <run_dir>/report.md          written by the recipe through ``raysys.pipeline.report``

A data stage is complete when its manifest exists; a model stage when its directory holds the
completion marker (written into a temp dir that is then renamed into place). Complete stages
are skipped on re-runs; incomplete ones are run again and the stage function finishes partial
work (sampling resumes by ``(problem_id, sample_idx)``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from raysys.data.io import atomic_write_json, atomic_write_text, read_manifest
from raysys.errors import StageError
# The layout, state.json and the checks of an existing run dir live in run_state; every name
# stays importable from here.
from raysys.pipeline.run_state import (CONFIG, LOCATION_KEYS, METRICS, MODEL_MARKER,  # noqa: F401
                                       REPORTED_METRICS, RUN_DIR_MARKERS, STAGE_STATUSES, STATE,
                                       _read_state, check_run, check_run_data, check_run_dir,
                                       check_run_state, config_diff, flatten, load_state,
                                       read_model_marker, state_problem)

StageFn = Callable[[Path], "dict[str, Any] | None"]

log = logging.getLogger(__name__)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class StageResult:
    """What a stage produced: where, how many rows, its metrics, and whether it was skipped."""

    name: str
    path: Path
    rows: int | None
    metrics: dict[str, Any]
    skipped: bool


class RunDir:
    """A resumable run directory; the recipe calls :meth:`stage` / :meth:`model_stage` in order.

    ``config`` is the resolved config as plain data. On an existing run dir it must equal the
    stored ``config.yaml`` (keys in ``ignore_keys`` aside) unless ``force`` is set; otherwise a
    :class:`StageError` names the differing keys before any stage runs.
    """

    def __init__(self, path: str | Path, config: dict[str, Any], *, force: bool = False,
                 ignore_keys: tuple[str, ...] = LOCATION_KEYS) -> None:
        # Absolute: stage and model paths go to Ray actors and Ray Train workers, which run in
        # their own working directories.
        self.path = check_run(path, config, force=force, ignore_keys=ignore_keys)
        self.config = config
        self.state: dict[str, Any] = _read_state(self.path / STATE)
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / CONFIG, yaml.safe_dump(self.config, sort_keys=False))
        self.state.setdefault("stages", {})
        self.state.setdefault("runs", [])
        # pid + host: `raysys status` tells a live run from one whose driver was killed
        self.state["runs"].append({"start": _now(), "end": None, "seconds": None,
                                   "pid": os.getpid(), "host": socket.gethostname()})
        self._t0 = time.perf_counter()
        self._save_state()

    # -- state ------------------------------------------------------------------------------

    def _save_state(self) -> None:
        atomic_write_json(self.path / STATE, self.state)

    def _record(self, key: str, **entry: Any) -> None:
        cur = self.state["stages"].get(key, {})
        cur.update(entry)
        self.state["stages"][key] = cur
        self._save_state()

    def log_metrics(self, name: str, metrics: dict[str, Any], **extra: Any) -> None:
        """Append one line to ``metrics.jsonl`` (read-modify-atomic-write: never half a line)."""
        p = self.path / METRICS
        old = p.read_text() if p.is_file() else ""
        line = json.dumps({"stage": name, "time": _now(), **extra, "metrics": metrics},
                          sort_keys=True, default=str)
        atomic_write_text(p, old + line + "\n")

    # -- stages -----------------------------------------------------------------------------

    def stage_dir(self, name: str, iteration: int = 0) -> Path:
        return self.path / f"iter_{iteration}" / name

    def model_dir(self, name: str) -> Path:
        return self.path / "models" / name

    def stage(self, name: str, *, fn: StageFn, iteration: int = 0, kind: str | None = None,
              phase: str = "sampling") -> StageResult:
        """Run data stage ``iter_<iteration>/<name>`` unless its manifest exists.

        ``fn(out_dir)`` must leave a complete stage (manifest written last) and may return
        metrics; they are merged with the manifest's ``metrics`` entry.
        """
        out = self.stage_dir(name, iteration)
        key = f"iter_{iteration}/{name}"
        manifest = read_manifest(out)
        if manifest is not None:
            return self._skip(key, name, out, manifest.get("rows"), manifest.get("metrics") or {})
        out.mkdir(parents=True, exist_ok=True)
        returned = self._run(key, name, out, fn, phase, kind)
        manifest = read_manifest(out)
        if manifest is None:
            self._record(key, status="failed", error="stage function returned without a manifest")
            raise StageError(f"{out}: stage '{name}' finished without writing _MANIFEST.json")
        if kind is not None and manifest.get("kind") != kind:
            self._record(key, status="failed", error=f"wrote kind {manifest.get('kind')!r}")
            raise StageError(f"{out}: stage '{name}' wrote kind {manifest.get('kind')!r}, "
                             f"expected {kind!r}")
        metrics = {**(manifest.get("metrics") or {}), **(returned or {})}
        return self._done(key, name, out, manifest.get("rows"), metrics)

    def model_stage(self, name: str, *, fn: StageFn, phase: str = "training") -> StageResult:
        """Produce ``models/<name>`` unless it is complete.

        ``fn(tmp_dir)`` writes a model (or adapter) dir at ``tmp_dir`` (which does not exist
        yet) and may return metrics; the marker is added and the dir renamed into place, so
        ``models/<name>`` exists only when whole.
        """
        out = self.model_dir(name)
        key = f"models/{name}"
        marker = out / MODEL_MARKER
        if marker.is_file():
            info = read_model_marker(marker)
            return self._skip(key, name, out, None, info.get("metrics") or {})
        tmp = out.parent / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        returned = self._run(key, name, tmp, fn, phase, "model")
        if not tmp.is_dir() or not any(tmp.iterdir()):
            self._record(key, status="failed", error="no model written")
            raise StageError(f"{tmp}: model stage '{name}' wrote nothing")
        metrics = dict(returned or {})
        atomic_write_json(tmp / MODEL_MARKER, {"name": name, "created": _now(), "metrics": metrics})
        shutil.rmtree(out, ignore_errors=True)   # a stale partial dir from an older layout
        tmp.rename(out)
        return self._done(key, name, out, None, metrics)

    def _run(self, key: str, name: str, out: Path, fn: StageFn, phase: str,
             kind: str | None) -> dict[str, Any] | None:
        self._record(key, status="running", start=_now(), end=None, seconds=None, phase=phase,
                     kind=kind, path=str(out.relative_to(self.path)) if out.is_relative_to(self.path)
                     else str(out))
        t0 = time.perf_counter()
        # The start goes to driver.log only: one console line per stage (its end) keeps the
        # quick demo's console short; a slow stage shows heartbeats with rate and ETA.
        log.debug("%s: start (%s)", key, phase)
        try:
            returned = fn(out)
        except BaseException as e:
            secs = time.perf_counter() - t0
            self._record(key, status="failed", end=_now(), seconds=round(secs, 3),
                         error=f"{type(e).__name__}: {e}"[:500])
            log.info("%s: %s after %.1fs", key,
                     "interrupted" if isinstance(e, KeyboardInterrupt) else "failed", secs)
            raise
        self.state["stages"][key]["seconds"] = round(time.perf_counter() - t0, 3)
        return returned

    def _done(self, key: str, name: str, out: Path, rows: int | None,
              metrics: dict[str, Any]) -> StageResult:
        rel = str(out.relative_to(self.path))
        self._record(key, status="complete", end=_now(), rows=rows, metrics=metrics, path=rel,
                     error=None)
        entry = self.state["stages"][key]
        self.log_metrics(name, metrics, key=key, rows=rows, seconds=entry.get("seconds"),
                         phase=entry.get("phase"))
        log.info(stage_end_line(key, rows, entry.get("seconds"), time.perf_counter() - self._t0,
                                metrics))
        return StageResult(name, out, rows, metrics, skipped=False)

    def _skip(self, key: str, name: str, out: Path, rows: int | None,
              metrics: dict[str, Any]) -> StageResult:
        entry = self.state["stages"].get(key, {})
        if entry.get("status") != "complete":
            # complete on disk but not in state (killed between the manifest and state.json)
            self._record(key, status="complete", rows=rows, metrics=metrics,
                         path=str(out.relative_to(self.path)), end=entry.get("end") or _now())
        log.info("%s: already complete%s, skipped", key, "" if rows is None else f" ({rows} rows)")
        return StageResult(name, out, rows, metrics, skipped=True)

    def finish(self) -> None:
        """Close this invocation's entry in ``state.json`` (driver wall time for the report)."""
        run = self.state["runs"][-1]
        run["end"] = _now()
        run["seconds"] = round(time.perf_counter() - self._t0, 3)
        self._save_state()

    def stages(self) -> Iterator[tuple[str, dict[str, Any]]]:
        yield from self.state["stages"].items()


def stage_end_line(key: str, rows: int | None, seconds: float | None, run_s: float,
                   metrics: dict[str, Any] | None = None) -> str:
    """The console's line for a finished stage: rows, its time, a training stage's last step,
    loss and rate, and the run's time so far."""
    from raysys.console import fmt_duration

    m = metrics or {}
    what = "done" if rows is None else f"done, {rows} rows"
    took = "" if seconds is None else f" in {seconds:.1f}s"
    train = ""
    if isinstance(m.get("step"), int) and isinstance(m.get("loss"), (int, float)):
        train = f", {m['step']} steps, loss {m['loss']:.4f}"
        if isinstance(m.get("samples_per_s"), (int, float)):
            train += f", {m['samples_per_s']:.1f} samples/s"
    return f"{key}: {what}{took}{train} (run {fmt_duration(run_s)})"
